//! Operating the lb: bad config, status and metrics, drain on SIGTERM, TLS and SIGHUP.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::support::lb::{Lb, TestUpstream};
use crate::support::{quire_bin, wait_for};

/// Runs `quire lb` with a config file and environment; exit code and stderr.
fn run_lb(
    toml: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(quire_bin())
        .arg("lb")
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
        dir,
    )
}

#[test]
fn bad_config_is_rejected_naming_the_key_its_origin_and_what_is_valid() {
    let (code, err, _, _dir) = run_lb("", &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("lb.upstreams (from default): no upstreams"),
        "{err}"
    );

    let (code, err, path, _dir) = run_lb(
        "[lb]\n[[lb.upstreams]]\nurl = \"http://10.0.0.11:8080\"\nrole = \"standby\"\n",
        &[],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&format!("lb.upstreams.0.role (from {}:4)", path.display())),
        "{err}"
    );
    assert!(
        err.contains("`primary`") && err.contains("`backup`"),
        "{err}"
    );

    let (code, err, _, _dir) = run_lb("", &[("QUIRE_LB__UPSTREAMS", "https://10.0.0.11")]);
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("lb.upstreams (from env QUIRE_LB__UPSTREAMS)"),
        "{err}"
    );
    assert!(err.contains("https upstreams are not supported"), "{err}");

    let (code, err, _, _dir) = run_lb(
        "",
        &[
            ("QUIRE_LB__UPSTREAMS", "http://a:1"),
            ("QUIRE_LB__TIMEOUTS__CONNECT", "soon"),
        ],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("lb.timeouts.connect (from env QUIRE_LB__TIMEOUTS__CONNECT)"),
        "{err}"
    );
    assert!(err.contains("expected a duration like \"30s\""), "{err}");

    let (code, err, _, _dir) = run_lb(
        "[lb]\npolicy = \"random\"\nupstreams = \"http://a:1 weight=0\"\n",
        &[],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("lb.policy") && err.contains("`round_robin`"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, err, _, _dir) = run_lb(
        &format!("[lb]\nlisten = \"127.0.0.1:{port}\"\nupstreams = \"http://127.0.0.1:1\"\n"),
        &[],
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port} (lb.listen)")),
        "{err}"
    );
}

#[tokio::test]
async fn status_and_metrics_describe_upstreams() {
    let a = TestUpstream::start("a").await;
    let lb = Lb::start(&[a.url(), "http://127.0.0.1:1 backup".into()], &[]).await;
    lb.wait_health(0, "up").await;
    lb.wait_health(1, "down").await;
    for _ in 0..3 {
        lb.get("/").await;
    }
    let status = lb.status().await;
    assert_eq!(status["policy"], "failover");
    assert_eq!(status["draining"], false);
    assert_eq!(status["available"], 1);
    let up = &status["upstreams"][0];
    assert_eq!(
        (
            up["role"].as_str(),
            up["requests"].as_u64(),
            up["in_flight"].as_i64()
        ),
        (Some("primary"), Some(3), Some(0))
    );
    let down = &status["upstreams"][1];
    assert_eq!(down["available"], false);
    assert!(
        down["last_probe"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{down}"
    );

    let metrics = lb
        .http
        .get(lb.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let a_label = format!("upstream=\"{}\"", a.url());
    assert!(
        metrics.contains(&format!("quire_lb_upstream_requests_total{{{a_label}}} 3")),
        "{metrics}"
    );
    assert!(
        metrics.contains("quire_lb_upstream_up{upstream=\"http://127.0.0.1:1\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("quire_lb_responses_total{class=\"2xx\"} 3"),
        "{metrics}"
    );
    assert_eq!(
        lb.http
            .get(lb.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_drains_open_requests_then_exits() {
    let a = TestUpstream::start("a").await;
    let mut lb = Lb::start(&[a.url()], &[]).await;
    let slow = tokio::spawn({
        let (http, url) = (lb.http.clone(), lb.url("/slow?ms=1500"));
        async move { http.get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    lb.proc.terminate();

    let addr = lb.addr();
    wait_for(
        "the listener to close",
        Duration::from_secs(5),
        || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), 200, "the open request finished");
    let exit = tokio::task::spawn_blocking(move || lb.proc.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(exit.and_then(|s| s.code()), Some(0));
}

fn write_cert(dir: &std::path::Path) -> CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("tls.key.tmp"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("tls.crt.tmp"), cert.cert.pem()).unwrap();
    std::fs::rename(dir.join("tls.key.tmp"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.tmp"), dir.join("tls.crt")).unwrap();
    cert.cert.der().clone()
}

/// One HTTPS request; the certificate the server presented and the response text.
async fn https_get(
    port: u16,
    roots: &[CertificateDer<'static>],
    path: &str,
) -> (CertificateDer<'static>, String) {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    (presented, String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn tls_is_terminated_and_the_certificate_reloads_on_sighup() {
    let a = TestUpstream::start("a").await;
    let certs = tempfile::tempdir().unwrap();
    let first = write_cert(certs.path());
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    let mut lb = Lb::start(
        &[a.url()],
        &[
            ("tls.cert_file", &format!("\"{}\"", cert.display())),
            ("tls.key_file", &format!("\"{}\"", key.display())),
        ],
    )
    .await;

    let (presented, response) = https_get(lb.port, std::slice::from_ref(&first), "/echo").await;
    assert_eq!(presented, first);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"x-forwarded-proto\":\"https\""),
        "{response}"
    );

    let second = write_cert(certs.path());
    lb.proc.signal(rustix::process::Signal::HUP.as_raw());
    let roots = [first, second.clone()];
    wait_for("the new certificate", Duration::from_secs(5), || async {
        (https_get(lb.port, &roots, "/").await.0 == second).then_some(())
    })
    .await;
    assert!(lb.proc.is_running(), "SIGHUP must not end the process");
}
