//! Live progress: events in order with increasing sequence numbers, the final one carrying the
//! outcome; a reconnect with ?after=SEQ resumes without gaps or repeats; SSE and polling work too.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, invoice_data};

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn progress_events_arrive_in_order_and_resume_after_reconnect() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    let t = api.get_json("/api/v1/templates/listing").await;
    let job = api
        .post(
            "/api/v1/renders",
            &json!({"template": "listing", "data": t["version"]["sample_data"]}),
        )
        .await;
    let id = job.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Disconnect after two events, then resume from the last one seen.
    let first = api.follow_ws(&id, 0, 2).await;
    assert_eq!(seqs(&first), vec![1, 2]);
    let rest = api.follow_ws(&id, 2, 100).await;
    let all: Vec<Value> = first.into_iter().chain(rest).collect();
    let numbers = seqs(&all);
    assert_eq!(
        numbers,
        (1..=numbers.len() as i64).collect::<Vec<_>>(),
        "no gaps, no repeats"
    );
    let stages: Vec<&str> = all.iter().map(|e| e["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        vec![
            "queued",
            "starting",
            "fetching data",
            "compiling",
            "writing PDF",
            "storing",
            "done"
        ]
    );
    let progress: Vec<i64> = all
        .iter()
        .map(|e| e["progress"].as_i64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let last = all.last().unwrap();
    assert_eq!(
        (
            last["final"].as_bool(),
            last["state"].as_str(),
            last["progress"].as_i64()
        ),
        (Some(true), Some("succeeded"), Some(100))
    );
    assert_eq!(last["pdf"], format!("/api/v1/renders/{id}/pdf"));
    assert!(last["pages"].as_i64().unwrap() > 1);

    // A follower that connects after the end gets the history and the final event.
    let replay = api.follow_ws(&id, 0, 100).await;
    assert_eq!(seqs(&replay), numbers);
    let tail = api.follow_ws(&id, numbers.len() as i64 - 1, 100).await;
    assert_eq!(seqs(&tail), vec![numbers.len() as i64]);
}

#[tokio::test]
async fn sse_and_polling_deliver_the_same_events() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    let job = api.render("invoice", invoice_data()).await;
    let id = job["id"].as_str().unwrap();
    let sse = api
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/renders/{id}/events"),
        )
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(Duration::from_secs(60), sse.text())
        .await
        .expect("SSE ends after the final event")
        .unwrap();
    let ids: Vec<i64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    assert!(body.contains("event: final"), "{body}");
    let polled = api
        .get_json(&format!("/api/v1/renders/{id}/events?after=2"))
        .await;
    assert_eq!(
        seqs(polled.as_array().unwrap()),
        (3..=ids.len() as i64).collect::<Vec<_>>()
    );
    // Last-Event-ID resumes SSE the way browsers do.
    let resumed = api
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/renders/{id}/events"),
        )
        .header("accept", "text/event-stream")
        .header("last-event-id", (ids.len() - 1).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(resumed.lines().filter(|l| l.starts_with("id: ")).count(), 1);
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_render() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await.token_client("t").await;
    api.create_template(
        "spin",
        json!({"main.typ": "#for i in range(100000) { for j in range(100000) { } }"}),
    )
    .await;
    let job = api.render("spin", json!({})).await;
    let id = job["id"].as_str().unwrap();
    crate::support::wait_for("the job to run", Duration::from_secs(30), || async {
        (api.get_json(&format!("/api/v1/renders/{id}")).await["stage"] == "compiling").then_some(())
    })
    .await;
    let r = api
        .request(reqwest::Method::DELETE, &format!("/api/v1/renders/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = api.follow_ws(id, 0, 100).await;
    let last = events.last().unwrap();
    assert_eq!(last["state"], "cancelled");
    // The worker was freed: a new render runs at once.
    api.render_invoice_now().await;
    let again = api
        .request(reqwest::Method::DELETE, &format!("/api/v1/renders/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
}
