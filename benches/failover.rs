//! `scripts/bench failover`: how fast leadership and progress move between HA instances, measured
//! on real processes (PostgreSQL, nats-server, three `quire app` instances) with the default
//! lease timings:
//! - graceful handover: SIGTERM the leader, time until every role is held by a survivor;
//! - crash failover: SIGKILL the leader, same measurement (goal: ≤ 20 s);
//! - progress fan-out: a WebSocket follower on one instance, jobs running on another; delay from
//!   an event being recorded to the follower receiving it, with NATS and with NATS down.
//!
//! `--quick` uses short leases and fewer rounds.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use support::app::{TestClient, invoice_data};
use support::ha::{FAST_HA, HaCluster, set_draining};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (timings, rounds, jobs): (&[(&str, &str)], usize, usize) = if quick {
        (FAST_HA, 2, 20)
    } else {
        (&[], 3, 60)
    };
    println!(
        "failover benchmark ({}): 3 instances, PostgreSQL, nats-server",
        if quick {
            "quick, FAST_HA leases"
        } else {
            "default leases: 15s, renew 5s, margin 2s"
        }
    );
    let mut c = HaCluster::start_with(3, timings).await;

    let graceful = handovers(&mut c, rounds, 15).await;
    let crash = handovers(&mut c, rounds, 9).await;
    let (with_nats, without_nats) = fan_out(&mut c, jobs).await;

    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>10}",
        "measurement", "p50", "p99/max", "goal"
    );
    row("graceful handover (SIGTERM leader)", &graceful, "< 1 s");
    row("crash failover (SIGKILL leader)", &crash, "≤ 20 s");
    row("progress fan-out, NATS up", &with_nats, "—");
    row(
        "progress fan-out, NATS down (DB poll)",
        &without_nats,
        "≤ 2 s",
    );
}

fn row(name: &str, samples: &[Duration], goal: &str) {
    let mut s = samples.to_vec();
    s.sort();
    let pick = |q: f64| {
        s.get(((s.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{:<40} {:>10} {:>10} {:>10}   (n = {})",
        name,
        fmt(pick(0.5)),
        fmt(pick(0.99)),
        goal,
        s.len()
    );
}

/// Event times have millisecond resolution, so lags below 1 ms print as 0 ms.
fn fmt(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Holder of each role, from the cluster overview (`None` for a free role).
async fn holders(api: &TestClient) -> Vec<(String, Option<String>)> {
    let o = api.get_json("/api/v1/cluster").await;
    o["leases"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    (
                        l["role"].as_str().unwrap_or("").to_owned(),
                        l["holder"].as_str().map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Stops the holder of the `janitor` role `rounds` times with `signal`, timing until every role it
/// held is held by another instance; the stopped instance is started again before the next
/// round.
async fn handovers(c: &mut HaCluster, rounds: usize, signal: i32) -> Vec<Duration> {
    let mut out = Vec::new();
    for round in 0..rounds {
        let watcher = c.client(0).await;
        let leader = support::wait_for("a janitor", Duration::from_secs(60), || async {
            holders(&watcher)
                .await
                .into_iter()
                .find(|(r, _)| r == "janitor")
                .and_then(|(_, h)| h)
        })
        .await;
        let held: Vec<String> = holders(&watcher)
            .await
            .into_iter()
            .filter(|(_, h)| h.as_deref() == Some(&leader))
            .map(|(r, _)| r)
            .collect();
        let i = c.index_of(&leader).await;
        let watcher = c.client((i + 1) % c.instances.len()).await;
        let t0 = Instant::now();
        c.instances[i].proc.signal(signal);
        support::wait_for("the roles to move", Duration::from_secs(60), || async {
            let now = holders(&watcher).await;
            held.iter()
                .all(|role| {
                    now.iter()
                        .any(|(r, h)| r == role && h.as_ref().is_some_and(|h| *h != leader))
                })
                .then_some(())
        })
        .await;
        let took = t0.elapsed();
        println!(
            "  {} round {}: {} moved in {}",
            if signal == 9 { "crash" } else { "graceful" },
            round + 1,
            held.join(", "),
            fmt(took)
        );
        out.push(took);
        let _ = c.instances[i].proc.wait_exit(Duration::from_secs(60));
        c.instances[i].start_again().await;
    }
    out
}

/// Follower on instance 0 (drained, so it runs nothing), jobs on the others.
async fn fan_out(c: &mut HaCluster, jobs: usize) -> (Vec<Duration>, Vec<Duration>) {
    let admin = c.client(0).await;
    let id0 = c.id(0).await;
    set_draining(&admin, &id0, true).await;
    let api = admin.token_client("bench").await;
    let with = lags(&api, jobs).await;
    c.nats.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let without = lags(&api, jobs / 3).await;
    c.nats.restart().await;
    (with, without)
}

async fn lags(api: &TestClient, jobs: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    for _ in 0..jobs {
        let job = api.render("invoice", invoice_data()).await;
        let url = format!(
            "{}/api/v1/renders/{}/events",
            api.base.replace("http://", "ws://"),
            job["id"].as_str().unwrap_or("")
        );
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", api.token().unwrap_or(""))
                .parse()
                .expect("header"),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket");
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await
        {
            let tokio_tungstenite::tungstenite::Message::Text(t) = msg else {
                continue;
            };
            let Ok(ev) = serde_json::from_str::<Value>(&t) else {
                break;
            };
            // The first events were recorded before the follower connected.
            if ev["seq"].as_i64().unwrap_or(0) > 2 {
                let at: jiff::Timestamp = ev["at"]
                    .as_str()
                    .unwrap_or("")
                    .parse()
                    .unwrap_or(jiff::Timestamp::now());
                let ms = jiff::Timestamp::now().as_millisecond() - at.as_millisecond();
                out.push(Duration::from_millis(ms.max(0) as u64));
            }
            if ev["final"] == true {
                break;
            }
        }
    }
    out
}
