//! What crosses the proxy: headers, bodies, timeouts, limits.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use crate::support::lb::{Lb, TestUpstream, raw_request};

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_removed() {
    let up = TestUpstream::start("a").await;
    let lb = Lb::start(&[up.url()], &[]).await;
    let (status, headers, body) = raw_request(
        lb.addr(),
        "GET /echo?x=1 HTTP/1.1\r\nHost: reports.example.com\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Proto: https\r\nX-Request-Id: trace-123\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "x-request-id"),
        Some("trace-123"),
        "the id comes back to the client"
    );
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seen = &echo["headers"];
    assert_eq!(echo["target"], "/echo?x=1");
    assert_eq!(
        seen["host"], "reports.example.com",
        "the client's Host is kept"
    );
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "an untrusted client's X-Forwarded-For is replaced"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "reports.example.com");
    assert_eq!(seen["x-request-id"], "trace-123");
    assert_eq!(seen["x-kept"], "yes");
    for gone in [
        "connection",
        "x-drop",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }

    let r = lb.http.get(lb.url("/echo")).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(id.len(), 32, "a generated id");
    assert_eq!(echo["headers"]["x-request-id"], id.as_str());

    for _ in 0..20 {
        lb.get("/").await;
    }
    assert!(
        up.behaviour.connections() <= 2,
        "{} upstream connections for 22 requests",
        up.behaviour.connections()
    );
    crate::support::wait_for("the access log line", Duration::from_secs(5), || async {
        let log = lb.log();
        log.lines()
            .any(|l| {
                l.contains("quire::lb::access")
                    && l.contains("request_id=trace-123")
                    && l.contains("status=200")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_connection_list_cannot_strip_the_headers_the_lb_adds() {
    let up = TestUpstream::start("a").await;
    let lb = Lb::start(&[up.url()], &[]).await;
    let (status, headers, body) = raw_request(
        lb.addr(),
        "GET /echo HTTP/1.1\r\nHost: reports.example.com\r\nConnection: close, X-Forwarded-For, \
         X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id, Host\r\nX-Forwarded-For: 6.6.6.6\r\n\
         X-Request-Id: trace-456\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seen = &echo["headers"];
    assert_eq!(
        seen["host"], "reports.example.com",
        "Connection cannot name Host: {seen}"
    );
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_eq!(seen["x-forwarded-host"], "reports.example.com", "{seen}");
    let id = header(&headers, "x-request-id").expect("a request id for the client");
    assert_eq!(
        seen["x-request-id"], id,
        "the upstream and the client see one id"
    );
    assert_ne!(id, "trace-456", "the client made its own id hop-by-hop");
    assert!(seen.get("connection").is_none(), "{seen}");
}

#[tokio::test]
async fn two_host_headers_get_400_and_end_the_connection() {
    let up = TestUpstream::start("a").await;
    let lb = Lb::start(&[up.url()], &[]).await;
    let start = Instant::now();
    // hyper itself passes both Host lines on. The pipelined second request must not be read
    // either: the lb closes the connection after the 400.
    let (status, headers, body) = raw_request(
        lb.addr(),
        "GET /echo HTTP/1.1\r\nHost: reports.example.com\r\nHost: internal.example\r\n\r\n\
         GET /echo HTTP/1.1\r\nHost: reports.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert!(
        !body.contains("HTTP/1.1"),
        "the pipelined request was answered: {body}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the connection stayed open for {:?}",
        start.elapsed()
    );
    assert_eq!(up.behaviour.handled(), 0, "an upstream saw the request");
}

#[tokio::test]
async fn a_trusted_proxy_extends_the_forwarding_chain() {
    let up = TestUpstream::start("a").await;
    let lb = Lb::start(&[up.url()], &[("trusted_proxies", "[\"127.0.0.1/32\"]")]).await;
    let r = lb
        .http
        .get(lb.url("/echo"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "reports.example.com")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        "198.51.100.7, 127.0.0.1"
    );
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echo["headers"]["x-forwarded-host"], "reports.example.com");
    crate::support::wait_for(
        "the client address in the access log",
        Duration::from_secs(5),
        || async { lb.log().contains("client=198.51.100.7").then_some(()) },
    )
    .await;
}

/// The lb's peak resident memory, from /proc.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test]
async fn hundred_megabyte_bodies_stream_both_ways_without_being_buffered() {
    let up = TestUpstream::start("a").await;
    let lb = Lb::start(&[up.url()], &[]).await;

    let r = lb.http.get(lb.url("/big?mb=100")).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], (100u64 << 20).to_string());
    let mut stream = r.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, 100 << 20);

    let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let upload =
        futures_util::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = lb
        .http
        .post(lb.url("/echo"))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["body_len"], 100u64 << 20);
    assert_eq!(
        echo["headers"]["transfer-encoding"], "chunked",
        "a chunked upload stays chunked"
    );

    let peak = peak_rss_mib(lb.proc.pid());
    assert!(
        peak < 40,
        "the lb peaked at {peak} MiB while 200 MiB went through it"
    );
}

#[tokio::test]
async fn a_slow_first_byte_gets_504_and_a_stalled_body_is_cut() {
    let up = TestUpstream::start("a").await;
    let lb = Lb::start(
        &[up.url()],
        &[
            ("timeouts.first_byte", "\"300ms\""),
            ("timeouts.read", "\"500ms\""),
        ],
    )
    .await;

    let start = Instant::now();
    let r = lb.http.get(lb.url("/slow?ms=3000")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let r = lb.http.get(lb.url("/stall")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the head came in time");
    assert!(r.bytes().await.is_err(), "the body must not look complete");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "cut after {took:?}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431_and_idle_clients_are_closed() {
    let up = TestUpstream::start("a").await;
    let lb = Lb::start(
        &[up.url()],
        &[
            ("max_header_size", "\"8KiB\""),
            ("timeouts.client_idle", "\"500ms\""),
        ],
    )
    .await;

    let big = "x".repeat(16 * 1024);
    let (status, _, _) = raw_request(
        lb.addr(),
        &format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 431);
    assert_eq!(up.behaviour.handled(), 0);

    let mut idle = tokio::net::TcpStream::connect(lb.addr()).await.unwrap();
    let start = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "closed after {:?}",
        start.elapsed()
    );
}
