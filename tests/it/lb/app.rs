//! `quire lb` in front of real `quire app` instances of one HA cluster (PostgreSQL and NATS): a
//! user works through the lb while the primary instance dies, comes back and drains.

use std::time::Duration;

use crate::support::app::{ROOT_EMAIL, ROOT_PASSWORD, TestClient, invoice_data};
use crate::support::ha::HaCluster;
use crate::support::lb::Lb;

/// Renders the example invoice through `api` and follows its progress over a WebSocket; returns
/// the PDF.
async fn render_following_progress(api: &TestClient) -> Vec<u8> {
    let job = api.render("invoice", invoice_data()).await;
    let id = job["id"].as_str().expect("job id").to_owned();
    let events = api.follow_ws(&id, 0, 1000).await;
    let last = events.last().expect("progress events");
    assert_eq!(last["final"], true, "{events:?}");
    let done = api.wait_job(&id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    api.pdf(&id).await
}

#[tokio::test]
async fn a_user_behind_the_lb_rides_through_a_kill_and_a_drain_of_the_primary() {
    let mut c = HaCluster::start(2).await;
    let (primary, backup) = (c.instances[0].url.clone(), c.instances[1].url.clone());
    let lb = Lb::start(
        &[primary, format!("{backup} backup")],
        &[("policy", "\"failover\"")],
    )
    .await;
    lb.wait_health(0, "up").await;
    lb.wait_health(1, "up").await;
    let session = TestClient::login(&lb.url(""), ROOT_EMAIL, ROOT_PASSWORD).await;
    let api = session.token_client("through-lb").await;
    let pdf = render_following_progress(&api).await;
    assert!(pdf.starts_with(b"%PDF"));

    // kill -9 of the primary: reads keep succeeding (retried on the backup), and a new WebSocket
    // follows a new render there.
    let reader = tokio::spawn({
        let api = session.token_client("reader").await;
        async move {
            let mut failures = Vec::new();
            for _ in 0..60 {
                let r = api.get("/api/v1/templates").await;
                if r.status() != 200 {
                    failures.push(r.status().as_u16());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            failures
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.instances[0].proc.kill9();
    assert_eq!(reader.await.unwrap(), Vec::<u16>::new(), "no failed GET");
    lb.wait_health(0, "down").await;
    assert!(render_following_progress(&api).await.starts_with(b"%PDF"));

    // The primary comes back, then drains: its /readyz turns 503, the lb stops sending it new
    // requests, and a render asked for meanwhile is served by the backup.
    c.instances[0].start_again().await;
    lb.wait_health(0, "up").await;
    c.instances[0].proc.terminate();
    lb.wait_health(0, "down").await;
    assert!(render_following_progress(&api).await.starts_with(b"%PDF"));
    let status = lb.status().await;
    assert_eq!(status["upstreams"][1]["health"], "up", "{status}");
}
