//! Retries: safe ones happen, unsafe ones never do.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::lb::{Lb, ProcUpstream, TestUpstream, checksum};

#[tokio::test]
async fn gets_during_a_kill9_of_an_upstream_all_succeed() {
    let logs = tempfile::tempdir().unwrap();
    let mut a = ProcUpstream::start("a", logs.path()).await;
    let b = ProcUpstream::start("b", logs.path()).await;
    let lb = Lb::start(&[a.url(), b.url()], &[("policy", "\"round_robin\"")]).await;
    lb.wait_health(0, "up").await;
    lb.wait_health(1, "up").await;

    let until = Instant::now() + Duration::from_millis(1500);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (http, url) = (lb.http.clone(), lb.url("/slow?ms=20"));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while Instant::now() < until {
                    statuses.push(
                        http.get(&url)
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0),
                    );
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill9();
    let mut total = 0;
    for c in clients {
        let statuses = c.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    assert!(total > 40, "only {total} requests");
    assert!(a.behaviour().handled() > 0 && b.behaviour().handled() > 0);
}

#[tokio::test]
async fn a_post_sent_to_a_dying_upstream_is_not_replayed() {
    let logs = tempfile::tempdir().unwrap();
    let mut a = ProcUpstream::start("a", logs.path()).await;
    let b = ProcUpstream::start("b", logs.path()).await;
    let lb = Lb::start(&[a.url(), format!("{} backup", b.url())], &[]).await;
    lb.wait_health(0, "up").await;

    let post = tokio::spawn({
        let (http, url) = (lb.http.clone(), lb.url("/post?ms=2000"));
        async move { http.post(url).body("charge the card").send().await.unwrap() }
    });
    crate::support::wait_for("the POST to reach a", Duration::from_secs(5), || async {
        (a.behaviour().posts() == 1).then_some(())
    })
    .await;
    a.kill9();
    let response = post.await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        response.headers().get("quire-not-processed").is_none(),
        "it may have been processed"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (a.behaviour().posts(), b.behaviour().posts()),
        (1, 0),
        "executed once, never replayed"
    );
}

#[tokio::test]
async fn a_refused_connection_retries_any_method_with_a_large_body() {
    let logs = tempfile::tempdir().unwrap();
    let mut a = ProcUpstream::start("a", logs.path()).await;
    let b = TestUpstream::start("b").await;
    // Probes every minute: after the kill the lb still believes in `a` and connects to it.
    let lb = Lb::start(
        &[a.url(), b.url()],
        &[
            ("policy", "\"round_robin\""),
            ("health.interval", "\"60s\""),
        ],
    )
    .await;
    a.kill9();

    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..6 {
        let r = lb
            .http
            .post(lb.url("/echo"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let echo: serde_json::Value = r.json().await.unwrap();
        assert_eq!(echo["upstream"], "b");
        assert_eq!(echo["body_len"], body.len() as u64);
        assert_eq!(
            echo["body_sum"],
            checksum(&body),
            "the whole body arrived intact"
        );
    }
    let status = lb.status().await;
    assert!(
        status["upstreams"][0]["failures"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

#[tokio::test]
async fn a_request_the_instance_did_not_process_is_retried_even_as_post() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let lb = Lb::start(&[a.url(), format!("{} backup", b.url())], &[]).await;
    lb.wait_health(0, "up").await;
    a.behaviour.refusing.store(true, Ordering::SeqCst);

    let r = lb
        .http
        .post(lb.url("/post"))
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "b");
    assert_eq!(
        (
            a.behaviour.refused.load(Ordering::SeqCst),
            a.behaviour.posts(),
            b.behaviour.posts()
        ),
        (1, 0, 1)
    );
    let status = lb.status().await;
    assert_eq!(
        status["upstreams"][0]["health"], "down",
        "marked draining at once: {status}"
    );
}

#[tokio::test]
async fn failing_upstreams_are_ejected_and_gets_retried_elsewhere() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let lb = Lb::start(
        &[a.url(), b.url()],
        &[
            ("policy", "\"round_robin\""),
            ("passive.failures", "2"),
            ("passive.ejection_time", "\"30s\""),
        ],
    )
    .await;
    lb.wait_health(0, "up").await;
    a.behaviour.failing.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(lb.get("/").await, (200, "b".into()));
    }
    let status = lb.status().await;
    let a_status = &status["upstreams"][0];
    assert_eq!(a_status["ejections"], 1, "{status}");
    assert!(
        a_status["ejected_for_ms"].as_u64().unwrap() > 20_000,
        "{status}"
    );
    assert_eq!(a_status["available"], false);
    assert_eq!(
        a_status["failures"], 2,
        "no request went to a once it was ejected: {status}"
    );
}

#[tokio::test]
async fn the_upstream_error_is_passed_through_when_no_retry_is_possible() {
    let a = TestUpstream::start("a").await;
    let lb = Lb::start(&[a.url()], &[]).await;
    a.behaviour.failing.store(true, Ordering::SeqCst);
    let r = lb.http.get(lb.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-upstream"], "a", "the upstream's own answer");
    let status = lb.status().await;
    assert_eq!(
        status["upstreams"][0]["available"], true,
        "the last upstream is never ejected: {status}"
    );
}
