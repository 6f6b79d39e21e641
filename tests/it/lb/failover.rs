//! Failover to a backup and back, and a draining instance.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::lb::{Lb, ProcUpstream, TestUpstream};
use crate::support::wait_for;

#[tokio::test]
async fn fails_over_to_the_backup_when_the_primary_dies_and_back_when_it_recovers() {
    let logs = tempfile::tempdir().unwrap();
    let mut primary = ProcUpstream::start("primary", logs.path()).await;
    let backup = ProcUpstream::start("backup", logs.path()).await;
    let lb = Lb::start(
        &[primary.url(), format!("{} backup", backup.url())],
        &[("policy", "\"failover\""), ("slow_start", "\"500ms\"")],
    )
    .await;

    for _ in 0..5 {
        assert_eq!(lb.get("/").await, (200, "primary".into()));
    }

    primary.kill9();
    for _ in 0..20 {
        assert_eq!(
            lb.get("/").await,
            (200, "backup".into()),
            "every request succeeds, on the backup"
        );
    }
    lb.wait_health(0, "down").await;

    primary.restart().await;
    lb.wait_health(0, "up").await;
    wait_for(
        "traffic back on the primary",
        Duration::from_secs(5),
        || async {
            let mut served = Vec::new();
            for _ in 0..10 {
                served.push(lb.get("/").await.1);
            }
            served.iter().all(|s| s == "primary").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_draining_instance_gets_no_new_requests_but_finishes_open_ones() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let lb = Lb::start(&[a.url(), format!("{} backup", b.url())], &[]).await;
    lb.wait_health(0, "up").await;

    let slow = tokio::spawn({
        let (http, url) = (lb.http.clone(), lb.url("/slow?ms=1500"));
        async move { http.get(url).send().await.unwrap() }
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", lb.addr()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    a.behaviour.draining.store(true, Ordering::SeqCst);
    lb.wait_health(0, "down").await;
    for _ in 0..5 {
        assert_eq!(lb.get("/").await, (200, "b".into()));
    }

    let slow = slow.await.unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(
        slow.headers()["x-upstream"],
        "a",
        "the open request finished on the draining instance"
    );
    assert_eq!(
        crate::lb::websocket::echo(&mut ws, "still here").await,
        "a:still here",
        "its WebSocket too"
    );
}
