//! Round robin and least connections spread load; no affinity.

use std::time::Duration;

use crate::support::lb::{Lb, TestUpstream};

#[tokio::test]
async fn round_robin_spreads_requests_by_weight() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let lb = Lb::start(
        &[
            ups[0].url(),
            ups[1].url(),
            format!("{} weight=2", ups[2].url()),
        ],
        &[("policy", "\"round_robin\"")],
    )
    .await;
    for i in 0..3 {
        lb.wait_health(i, "up").await;
    }
    for _ in 0..400 {
        assert_eq!(lb.get("/").await.0, 200);
    }
    let counts: Vec<usize> = ups.iter().map(|u| u.behaviour.handled()).collect();
    for (count, expected) in counts.iter().zip([100, 100, 200]) {
        assert!(count.abs_diff(expected) <= 10, "{counts:?}");
    }
    assert!(
        ups.iter().all(|u| u.behaviour.connections() <= 2),
        "upstream connections are reused"
    );
}

#[tokio::test]
async fn least_connections_avoids_the_busy_upstream() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let lb = Lb::start(&[a.url(), b.url()], &[("policy", "\"least_connections\"")]).await;
    lb.wait_health(0, "up").await;
    lb.wait_health(1, "up").await;

    let slow = tokio::spawn({
        let (http, url) = (lb.http.clone(), lb.url("/slow?ms=1500"));
        async move {
            http.get(url).send().await.unwrap().headers()["x-upstream"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut served = Vec::new();
    for _ in 0..10 {
        served.push(lb.get("/").await.1);
    }
    let busy = slow.await.unwrap();
    assert!(
        served.iter().all(|s| *s != busy),
        "{busy} was busy, yet served some of {served:?}"
    );
}
