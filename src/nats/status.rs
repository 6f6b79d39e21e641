//! `quire nats status`: the local node's health, cluster routes and connected clients, read from
//! its monitoring endpoint and written for people.

use std::fmt::Write;

use super::monitor::{Connz, Monitor, MonitorError, Routez, Varz};

/// What the monitoring endpoint said, and whether the node is healthy.
pub struct Status {
    pub healthy: bool,
    pub text: String,
}

/// Asks the node behind `monitor`; an unreachable node is unhealthy, with the reason.
pub async fn status(monitor: &Monitor) -> Status {
    let health = monitor.healthz().await;
    let varz = match monitor.varz().await {
        Ok(v) => v,
        Err(e) => {
            return Status {
                healthy: false,
                text: format!("nats-server at {} does not answer: {e}", monitor.base()),
            };
        }
    };
    // Routes and clients are details: when one of them fails the rest still helps.
    let routez = monitor.routez().await;
    let connz = monitor.connz().await;
    Status {
        healthy: health.is_ok(),
        text: render(monitor.base(), &health, &varz, &routez, &connz),
    }
}

fn render(
    base: &str,
    health: &Result<(), MonitorError>,
    varz: &Varz,
    routez: &Result<Routez, MonitorError>,
    connz: &Result<Connz, MonitorError>,
) -> String {
    let mut out = String::new();
    let verdict = match health {
        Ok(()) => "healthy".to_owned(),
        Err(e) => format!("UNHEALTHY ({e})"),
    };
    let _ = writeln!(
        out,
        "nats-server {} {} at {base}: {verdict}",
        varz.server_name, varz.version
    );
    let _ = writeln!(out, "  uptime       {}", varz.uptime);
    let _ = writeln!(
        out,
        "  clients      {}:{}, {} connected",
        varz.host, varz.port, varz.connections
    );
    let cluster = varz.cluster.name.as_deref().unwrap_or("(none)");
    let _ = writeln!(
        out,
        "  cluster      {cluster}, {} route(s), {} configured route URL(s)",
        varz.routes,
        varz.cluster.urls.len()
    );
    match routez {
        Ok(r) => {
            for route in &r.routes {
                let name = route.remote_name.as_deref().unwrap_or(&route.remote_id);
                let rtt = route.rtt.as_deref().unwrap_or("-");
                let _ = writeln!(
                    out,
                    "    route      {}:{}  {name}  rtt {rtt}",
                    route.ip, route.port
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "    (routes unavailable: {e})");
        }
    }
    match connz {
        Ok(c) => {
            for conn in &c.connections {
                let name = conn
                    .name
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("(unnamed)");
                let lang = [conn.lang.as_deref(), conn.version.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                let _ = writeln!(
                    out,
                    "    client     cid {}  {}:{}  {name}  {lang}  {} sub(s)  up {}",
                    conn.cid, conn.ip, conn.port, conn.subscriptions, conn.uptime
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "    (clients unavailable: {e})");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::monitor::{Connection, Route, VarzCluster};

    #[test]
    fn shows_health_routes_and_clients() {
        let varz = Varz {
            server_name: "n1".into(),
            version: "2.9.10".into(),
            host: "0.0.0.0".into(),
            port: 4222,
            uptime: "5m3s".into(),
            connections: 1,
            routes: 1,
            cluster: VarzCluster {
                name: Some("quire".into()),
                cluster_port: 6222,
                urls: vec!["a:6222".into(), "b:6222".into()],
            },
            ..Default::default()
        };
        let routez = Routez {
            num_routes: 1,
            routes: vec![Route {
                remote_id: "NABC".into(),
                ip: "10.0.0.12".into(),
                port: 6222,
                rtt: Some("312µs".into()),
                ..Default::default()
            }],
        };
        let connz = Connz {
            num_connections: 1,
            connections: vec![Connection {
                cid: 5,
                ip: "10.0.0.21".into(),
                port: 51234,
                name: Some("quire-app-1".into()),
                lang: Some("rust".into()),
                version: Some("0.51.0".into()),
                uptime: "1m".into(),
                subscriptions: 3,
                ..Default::default()
            }],
        };
        let text = render(
            "http://127.0.0.1:8222",
            &Ok(()),
            &varz,
            &Ok(routez),
            &Ok(connz),
        );
        assert_eq!(
            text,
            "nats-server n1 2.9.10 at http://127.0.0.1:8222: healthy\n\
             \x20 uptime       5m3s\n\
             \x20 clients      0.0.0.0:4222, 1 connected\n\
             \x20 cluster      quire, 1 route(s), 2 configured route URL(s)\n\
             \x20   route      10.0.0.12:6222  NABC  rtt 312µs\n\
             \x20   client     cid 5  10.0.0.21:51234  quire-app-1  rust 0.51.0  3 sub(s)  up 1m\n"
        );

        let unhealthy = Err(MonitorError::Status {
            url: "u/healthz".into(),
            status: 503,
            body: "{}".into(),
        });
        let text = render(
            "b",
            &unhealthy,
            &varz,
            &Ok(Routez::default()),
            &Ok(Connz::default()),
        );
        assert!(
            text.starts_with("nats-server n1 2.9.10 at b: UNHEALTHY (u/healthz answered 503: {})"),
            "{text}"
        );
    }
}
