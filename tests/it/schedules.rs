//! Schedules and email delivery with real parts: a real SMTP conversation with a test server, real
//! instances (and, for the chaos test, three of them on PostgreSQL and NATS while leaders die).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mail_parser::MimeHeaders;
use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, TestClient, invoice_data, pdf_text};
use crate::support::ha::HaCluster;
use crate::support::smtp::{Received, SmtpSink};
use crate::support::wait_for;

fn mail_env(sink: &SmtpSink) -> AppOptions {
    AppOptions::default()
        .env("QUIRE_MAIL__SMTP_URL", &sink.url())
        .env("QUIRE_MAIL__FROM", "Reports <reports@quire.test>")
        .env("QUIRE_MAIL__RETRY_INITIAL", "1s")
        .env("QUIRE_MAIL__RETRY_MAX", "2s")
}

fn every_second(name: &str, recipients: &[&str]) -> Value {
    json!({
        "name": name,
        "template": "invoice",
        "cron": "* * * * * *",
        "timezone": "Europe/Berlin",
        "data": invoice_data(),
        "recipients": recipients,
        "subject": "{schedule} for {date}",
    })
}

async fn create(api: &TestClient, body: Value) -> Value {
    let r = api.post("/api/v1/schedules", &body).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v
}

async fn set_enabled(api: &TestClient, schedule: &Value, mut body: Value, enabled: bool) {
    body["enabled"] = json!(enabled);
    let r = api
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/schedules/{}", schedule["id"].as_str().unwrap()),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn occurrences(api: &TestClient, schedule: &Value) -> Vec<Value> {
    let v = api
        .get_json(&format!(
            "/api/v1/schedules/{}/occurrences?limit=10000",
            schedule["id"].as_str().unwrap()
        ))
        .await;
    v.as_array().unwrap().clone()
}

fn pdf_of(m: &Received) -> Vec<u8> {
    let msg = mail_parser::MessageParser::default()
        .parse(&m.data)
        .expect("a MIME message");
    msg.attachments()
        .find(|a| a.is_content_type("application", "pdf"))
        .expect("a PDF attachment")
        .contents()
        .to_vec()
}

#[tokio::test]
async fn a_schedule_mails_its_report_as_a_pdf() {
    let sink = SmtpSink::start().await;
    let app = Instance::start(mail_env(&sink)).await;
    let api = app.client().await;
    let body = every_second("Daily invoice", &["alice@example.com", "bob@example.com"]);
    let s = create(&api, body.clone()).await;
    assert_eq!(s["upcoming"].as_array().unwrap().len(), 5);
    let delivered = wait_for(
        "a delivered occurrence",
        Duration::from_secs(30),
        || async {
            occurrences(&api, &s)
                .await
                .into_iter()
                .find(|o| o["state"] == "delivered")
        },
    )
    .await;
    set_enabled(&api, &s, body, false).await;
    let mails = delivered["mails"].as_array().unwrap();
    assert_eq!(mails.len(), 2);
    for m in mails {
        assert_eq!(m["state"], "sent");
        assert!(m["last_reply"].as_str().unwrap().starts_with("250"), "{m}");
    }
    let received = sink.received();
    let ids: Vec<String> = mails
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        let m = received
            .iter()
            .find(|r| r.message_id().as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not received"));
        let text = pdf_text(&pdf_of(m));
        assert!(
            text.contains("Northwind Traders GmbH") && text.contains("EUR 3,216.60"),
            "{text}"
        );
        let parsed = mail_parser::MessageParser::default()
            .parse(&m.data)
            .unwrap();
        assert!(
            parsed
                .subject()
                .unwrap()
                .starts_with("Daily invoice for 20"),
            "{:?}",
            parsed.subject()
        );
        assert!(id.ends_with("@quire.test>"), "{id}");
    }
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("quire_mails_total{outcome=\"sent\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn held_occurrences_wait_for_an_approver() {
    let sink = SmtpSink::start().await;
    let app = Instance::start(mail_env(&sink)).await;
    let api = app.client().await;
    let mut body = every_second("Reviewed", &["carol@example.com"]);
    body["hold_for_review"] = json!(true);
    let s = create(&api, body.clone()).await;
    let held = wait_for("two held occurrences", Duration::from_secs(30), || async {
        let held: Vec<Value> = occurrences(&api, &s)
            .await
            .into_iter()
            .filter(|o| o["state"] == "held")
            .collect();
        (held.len() >= 2).then_some(held)
    })
    .await;
    set_enabled(&api, &s, body, false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sink.received().is_empty(), "nothing goes out before review");
    let approve = api
        .post(
            &format!(
                "/api/v1/occurrences/{}/approve",
                held[0]["id"].as_str().unwrap()
            ),
            &json!({}),
        )
        .await;
    assert_eq!(approve.status(), 200);
    let reject = api
        .post(
            &format!(
                "/api/v1/occurrences/{}/reject",
                held[1]["id"].as_str().unwrap()
            ),
            &json!({}),
        )
        .await;
    assert_eq!(reject.json::<Value>().await.unwrap()["state"], "rejected");
    let again = api
        .post(
            &format!(
                "/api/v1/occurrences/{}/reject",
                held[1]["id"].as_str().unwrap()
            ),
            &json!({}),
        )
        .await;
    assert_eq!(again.status(), 409);
    wait_for(
        "the approved one to be delivered",
        Duration::from_secs(30),
        || async {
            let o = api
                .get_json(&format!(
                    "/api/v1/occurrences/{}",
                    held[0]["id"].as_str().unwrap()
                ))
                .await;
            (o["state"] == "delivered").then_some(())
        },
    )
    .await;
    assert_eq!(sink.received().len(), 1);
    assert_eq!(sink.received()[0].to, vec!["carol@example.com"]);
}

#[tokio::test]
async fn a_down_smtp_server_delays_mail_but_loses_none() {
    let mut sink = SmtpSink::start().await;
    let app = Instance::start(mail_env(&sink)).await;
    let api = app.client().await;
    sink.stop();
    let body = every_second("Retried", &["dave@example.com"]);
    let s = create(&api, body.clone()).await;
    let first = wait_for(
        "an occurrence waiting for the mail server",
        Duration::from_secs(30),
        || async {
            // Two failed attempts: back in the queue (not mid-attempt) with the second counted.
            occurrences(&api, &s).await.into_iter().find(|o| {
                o["mails"].as_array().is_some_and(|m| {
                    m.iter()
                        .any(|m| m["attempts"].as_i64() >= Some(2) && m["state"] == "queued")
                })
            })
        },
    )
    .await;
    set_enabled(&api, &s, body, false).await;
    let mail = &first["mails"][0];
    assert!(
        mail["next_attempt_at"].is_string(),
        "a retry is scheduled: {mail}"
    );
    assert!(
        mail["last_reply"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connect"),
        "{mail}"
    );
    sink.resume().await;
    wait_for(
        "every occurrence delivered",
        Duration::from_secs(60),
        || async {
            occurrences(&api, &s)
                .await
                .iter()
                .all(|o| o["state"] == "delivered")
                .then_some(())
        },
    )
    .await;
    let all = occurrences(&api, &s).await;
    let got: Vec<Option<String>> = sink.received().iter().map(Received::message_id).collect();
    for o in &all {
        let id = o["mails"][0]["message_id"].as_str().unwrap();
        assert_eq!(
            got.iter().filter(|g| g.as_deref() == Some(id)).count(),
            1,
            "{id} exactly once"
        );
    }
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("quire_mails_total{outcome=\"retry\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_silent_smtp_server_times_out_and_the_mail_is_retried() {
    let sink = SmtpSink::start().await;
    sink.stall(true);
    let app = Instance::start(mail_env(&sink).env("QUIRE_MAIL__TIMEOUT", "2s")).await;
    let api = app.client().await;
    let body = every_second("Stalled", &["frank@example.com"]);
    let s = create(&api, body.clone()).await;
    let waiting = wait_for("a mail that timed out", Duration::from_secs(30), || async {
        occurrences(&api, &s).await.into_iter().find(|o| {
            o["mails"].as_array().is_some_and(|m| {
                m.iter().any(|m| {
                    m["last_reply"]
                        .as_str()
                        .is_some_and(|r| r.contains("no answer"))
                })
            })
        })
    })
    .await;
    set_enabled(&api, &s, body, false).await;
    sink.stall(false);
    let id = waiting["id"].as_str().unwrap().to_owned();
    wait_for(
        "the mail delivered once the server answers",
        Duration::from_secs(30),
        || async {
            let o = api.get_json(&format!("/api/v1/occurrences/{id}")).await;
            (o["state"] == "delivered").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_refused_recipient_fails_visibly_and_can_be_resent() {
    let sink = SmtpSink::start().await;
    sink.refuse_recipients(Some(
        "550 5.1.1 <nobody@example.com>: Recipient address rejected",
    ));
    let app = Instance::start(mail_env(&sink)).await;
    let api = app.client().await;
    let body = every_second("Refused", &["nobody@example.com"]);
    let s = create(&api, body.clone()).await;
    let failed = wait_for("a failed occurrence", Duration::from_secs(30), || async {
        occurrences(&api, &s)
            .await
            .into_iter()
            .find(|o| o["state"] == "failed")
    })
    .await;
    set_enabled(&api, &s, body, false).await;
    let mail = &failed["mails"][0];
    assert_eq!(mail["state"], "failed");
    assert!(
        mail["last_reply"]
            .as_str()
            .unwrap()
            .contains("Recipient address rejected"),
        "{mail}"
    );
    let listed = api.get_json("/api/v1/deliveries?state=failed").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == mail["id"])
    );
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("quire_mails_total{outcome=\"failed\"}"),
        "{metrics}"
    );

    sink.refuse_recipients(None);
    let r = api
        .post(
            &format!("/api/v1/deliveries/{}/resend", mail["id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    wait_for(
        "the resent mail to arrive",
        Duration::from_secs(30),
        || async {
            let o = api
                .get_json(&format!(
                    "/api/v1/occurrences/{}",
                    failed["id"].as_str().unwrap()
                ))
                .await;
            (o["state"] == "delivered").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn viewers_see_no_schedules_occurrences_or_deliveries() {
    let app = Instance::start(AppOptions::default()).await;
    let admin = app.client().await;
    let mut body = every_second("Secret recipients", &["ceo@example.com"]);
    body["enabled"] = json!(false);
    let s = create(&admin, body).await;
    let id = s["id"].as_str().unwrap();
    let viewer = admin.signed_in_user("v@test.local", "viewer").await;
    for path in [
        "/api/v1/schedules".to_owned(),
        format!("/api/v1/schedules/{id}"),
        format!("/api/v1/schedules/{id}/occurrences"),
        "/api/v1/deliveries".to_owned(),
    ] {
        let r = viewer.get(&path).await;
        assert_eq!(r.status(), 403, "{path}");
        assert!(
            !r.text().await.unwrap().contains("ceo@example.com"),
            "{path}"
        );
    }
    for page in [
        "/schedules".to_owned(),
        format!("/schedules/{id}"),
        "/deliveries".to_owned(),
    ] {
        let r = viewer.get(&page).await;
        assert_eq!(r.status(), 403, "{page}");
        assert!(
            !r.text().await.unwrap().contains("ceo@example.com"),
            "{page}"
        );
    }
    let jobs_page = viewer.get("/jobs").await.text().await.unwrap();
    assert!(
        !jobs_page.contains("href=\"/schedules\""),
        "no menu entry for viewers"
    );
    assert_eq!(
        admin.get(&format!("/api/v1/schedules/{id}")).await.status(),
        200
    );
}

#[tokio::test]
async fn schedule_input_is_checked() {
    let app = Instance::start(AppOptions::default()).await;
    let api = app.client().await;
    let mut body = every_second("Bad", &["a@example.com"]);
    for (field, value, expected) in [
        ("cron", json!("0 25 * * *"), "cron"),
        ("timezone", json!("Mars/Olympus"), "timezone"),
        ("template", json!("missing"), "template"),
        ("recipients", json!(["not-an-address"]), "recipients[0]"),
        ("recipients", json!([]), "recipients"),
        ("misfire", json!("sometimes"), "misfire"),
        ("jitter", json!("100000000000000000000000000d"), "jitter"),
        ("jitter", json!(format!("1{}", "0".repeat(400))), "jitter"),
        ("jitter", json!("2h"), "jitter"),
        ("misfire_window", json!("400d"), "misfire_window"),
        // A dry run compiles the first report: the invoice cannot render without its data.
        ("data", json!({}), "template"),
    ] {
        let good = body[field].clone();
        body[field] = value;
        let r = api.post("/api/v1/schedules", &body).await;
        let status = r.status();
        let problem = r.json::<Value>().await.unwrap();
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["field"], expected);
        body[field] = good;
    }
    // A new template version that would break a schedule using it is refused, and not saved.
    let mut weekly = every_second("Weekly", &["a@example.com"]);
    weekly["cron"] = json!("0 8 * * MON");
    create(&api, weekly).await;
    let broken = json!({"files": {"main.typ": "#let d = json(\"data.json\")\n#d.no_such_field"}});
    let r = api
        .request(reqwest::Method::PUT, "/api/v1/templates/invoice")
        .json(&broken)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let problem = r.json::<Value>().await.unwrap();
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["field"], "schedules", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("Weekly"),
        "{problem}"
    );
    let t = api.get_json("/api/v1/templates/invoice").await;
    assert_eq!(t["template"]["latest_version"], 1, "{t}");
    let preview = api
        .get_json("/api/v1/cron/preview?cron=30%202%20*%20*%20*&timezone=Europe/Berlin&count=3")
        .await;
    assert_eq!(preview["upcoming"].as_array().unwrap().len(), 3);
    // Mail settings from the console need an encryption key.
    let r = api
        .request(reqwest::Method::PUT, "/api/v1/settings/mail")
        .json(&json!({"smtp_url": "smtp://u:p@h", "from": "a@b.c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test]
async fn console_mail_settings_are_sealed_at_rest() {
    let sink = SmtpSink::start().await;
    let app = Instance::start(
        AppOptions::default().env("QUIRE_ENCRYPTION__KEY", "0123456789abcdef0123456789abcdef"),
    )
    .await;
    let api = app.client().await;
    let url = format!(
        "smtp://mailer:VeryS3cretPw@127.0.0.1:{}?tls=none",
        sink.port
    );
    let r = api
        .request(reqwest::Method::PUT, "/api/v1/settings/mail")
        .json(&json!({"smtp_url": url, "from": "ops@quire.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let shown = api.get_json("/api/v1/settings/mail").await;
    assert_eq!(
        (shown["source"].as_str(), shown["user"].as_str()),
        (Some("console"), Some("mailer"))
    );
    assert!(!shown.to_string().contains("VeryS3cretPw"));
    let db = std::fs::read(app.data_dir.join("quire.db")).unwrap();
    let wal = std::fs::read(app.data_dir.join("quire.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(12).any(|w| w == b"VeryS3cretPw"),
            "the password is not stored in the clear"
        );
    }
    let body = every_second("Console mail", &["erin@example.com"]);
    let s = create(&api, body.clone()).await;
    wait_for(
        "a mail through the console settings",
        Duration::from_secs(30),
        || async { (!sink.received().is_empty()).then_some(()) },
    )
    .await;
    set_enabled(&api, &s, body, false).await;
}

/// Three instances on PostgreSQL and NATS; a schedule fires every second for a minute while the
/// instances holding the scheduler and mailer roles are killed at random. Every fire time exists
/// exactly once and every recipient gets exactly one mail per occurrence, except within the
/// documented crash window: a mail the killed mailer had handed to the server but not yet
/// recorded as sent goes out again — at most one per kill, since the mailer sends one at a time.
#[tokio::test]
async fn every_occurrence_fires_once_while_leaders_die() {
    let sink = SmtpSink::start().await;
    let mut c = HaCluster::start(0).await;
    for _ in 0..3 {
        c.add(mail_env(&sink)).await;
    }
    let api = c.client(0).await;
    let body = every_second("Chaos", &["one@example.com", "two@example.com"]);
    let s = create(&api, body.clone()).await;
    let started = Instant::now();
    let mut kills = 0;
    let mut victim_seed = 7u64;
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let o = live(&c).await.get_json("/api/v1/cluster").await;
        let holders: Vec<String> = o["leases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["role"] != "janitor")
            .filter_map(|l| l["holder"].as_str().map(str::to_owned))
            .collect();
        let Some(victim) = holders
            .get((victim_seed % 2) as usize % holders.len().max(1))
            .cloned()
        else {
            continue;
        };
        victim_seed = victim_seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 1;
        let i = c.index_of(&victim).await;
        c.instances[i].proc.kill9();
        kills += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.instances[i].start_again().await;
    }
    let api = live(&c).await;
    set_enabled(&api, &s, body, false).await;
    wait_for(
        "every occurrence delivered",
        Duration::from_secs(120),
        || async {
            let occ = occurrences(&api, &s).await;
            occ.iter().all(|o| o["state"] == "delivered").then_some(())
        },
    )
    .await;

    let mut occ = occurrences(&api, &s).await;
    occ.sort_by_key(|o| o["fire_at"].as_str().unwrap().to_owned());
    let times: Vec<i64> = occ
        .iter()
        .map(|o| {
            o["fire_at"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
        })
        .collect();
    assert!(times.len() >= 55, "a minute of fire times: {}", times.len());
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], 1000, "every second exactly once: {w:?}");
    }
    let terms: std::collections::BTreeSet<i64> =
        occ.iter().map(|o| o["term"].as_i64().unwrap()).collect();
    assert!(
        terms.len() > 1,
        "scheduler leadership changed hands: {terms:?}"
    );

    let mut sent: HashMap<String, usize> = HashMap::new();
    for r in sink.received() {
        *sent.entry(r.message_id().expect("Message-ID")).or_default() += 1;
    }
    let mut duplicates = 0;
    for o in &occ {
        let mails = o["mails"].as_array().unwrap();
        assert_eq!(mails.len(), 2, "one row per recipient: {o}");
        for m in mails {
            let n = sent
                .get(m["message_id"].as_str().unwrap())
                .copied()
                .unwrap_or(0);
            assert!(n >= 1, "mail {} was received", m["message_id"]);
            duplicates += n - 1;
        }
    }
    assert!(
        duplicates <= kills,
        "{duplicates} duplicate mails for {kills} kills"
    );
    eprintln!(
        "chaos: {} occurrences, {kills} kills, {duplicates} duplicates, terms {terms:?}",
        occ.len()
    );
}

/// A client on a running instance.
async fn live(c: &HaCluster) -> TestClient {
    for inst in &c.instances {
        if let Ok(r) = reqwest::get(format!("{}/readyz", inst.url)).await
            && r.status() == 200
        {
            return inst.client().await;
        }
    }
    panic!("no instance is ready");
}
