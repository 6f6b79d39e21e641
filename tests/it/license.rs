//! Licensing as an operator meets it, on real instances sharing a real PostgreSQL: seats up to
//! the key's servers plus allowance, the free tier beyond them (serving, one render worker, no
//! leader role), seats coming back when an instance is gone (after `license.release_after`, or
//! at once by an admin), a restarted instance taking its own seat back, keys that stop the
//! instance, and an expired key.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::support::app::{AppOptions, Instance, quire_command};
use crate::support::browser::Browser;
use crate::support::ha::HaCluster;
use crate::support::license::{key, key_for};
use crate::support::wait_for;

/// Longer than `FAST_HA`'s `stale_after` (4 s), as the configuration requires.
const RELEASE_AFTER: &str = "6s";

async fn readyz(inst: &Instance) -> Value {
    reqwest::get(format!("{}/readyz", inst.url))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json")
}

/// Waits until instance `i`'s `/readyz` says `tier`; answers the body.
async fn wait_tier(c: &HaCluster, i: usize, tier: &str, timeout: Duration) -> Value {
    let inst = &c.instances[i];
    wait_for(&format!("instance {i} to be {tier}"), timeout, || async {
        let r = readyz(inst).await;
        (r["license"] == tier).then_some(r)
    })
    .await
}

/// The running instances whose `/readyz` says `tier`, by index (killed ones answer nothing).
async fn with_tier(c: &HaCluster, tier: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for (i, inst) in c.instances.iter().enumerate() {
        let Ok(r) = reqwest::get(format!("{}/readyz", inst.url)).await else {
            continue;
        };
        if r.json::<Value>().await.is_ok_and(|r| r["license"] == tier) {
            found.push(i);
        }
    }
    found
}

fn licensed(key: &str) -> AppOptions {
    AppOptions::default()
        .env("QUIRE_LICENSE__KEY", key)
        .env("QUIRE_LICENSE__RELEASE_AFTER", RELEASE_AFTER)
}

fn events(license: &Value) -> Vec<(String, String, String)> {
    license["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("instance_name"), s("event"), s("actor"))
        })
        .collect()
}

#[tokio::test]
async fn seats_beyond_the_key_fall_back_to_the_free_tier_and_come_back_without_a_restart() {
    let key = key("L-ha", 2, 1);
    let mut c = HaCluster::start(0).await;
    for _ in 0..4 {
        c.add(licensed(&key)).await;
    }

    // Two servers plus one of allowance: the fourth instance to start is in the free tier.
    for i in 0..3 {
        wait_tier(&c, i, "licensed", Duration::from_secs(10)).await;
    }
    let free = wait_tier(&c, 3, "free tier", Duration::from_secs(10)).await;
    assert_eq!(free["status"], "ready", "the free tier serves: {free}");
    assert_eq!(free["render_workers"]["size"], 1, "{free}");
    let on_free = c.client(3).await;
    let leader = c
        .wait_single_leader(&on_free, Duration::from_secs(20), None)
        .await;
    assert_ne!(leader, c.id(3).await, "a free-tier instance leads no role");
    assert_eq!(readyz(&c.instances[3]).await["roles"], json!([]));
    // It renders: the free tier never refuses a request.
    on_free.render_invoice_now().await;
    let metrics = on_free.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("quire_license_free_tier 1"), "{metrics}");
    assert!(metrics.contains("quire_license_seats 3"), "{metrics}");
    assert!(
        c.instances[3].log().contains("free tier"),
        "the free tier is logged at start"
    );
    let lic = on_free.get_json("/api/v1/license").await;
    assert_eq!(lic["license"]["customer"], "Test Customer", "{lic}");
    assert_eq!(lic["standing"]["tier"], "free_tier", "{lic}");
    assert!(
        lic["standing"]["reason"]
            .as_str()
            .unwrap()
            .contains("all 3 seats of licence L-ha are in use"),
        "{lic}"
    );
    assert_eq!(lic["seats"].as_array().unwrap().len(), 3, "{lic}");
    let overview = on_free.get_json("/api/v1/cluster").await;
    assert_eq!(overview["license"]["seats"], lic["seats"]);
    assert!(
        overview["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["license"] == "L-ha (Test Customer)"),
        "{overview}"
    );

    // The HA page, in a real browser: the badge on the free-tier instance, and the warning.
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path(), &c.instances[3].data_dir).await;
    let web = &browser.client;
    web.goto(&format!("{}/cluster", c.instances[3].url))
        .await
        .unwrap();
    crate::app_console::sign_in(web).await;
    let free_id = c.id(3).await;
    let page = wait_for(
        "the HA page to show the licence",
        Duration::from_secs(20),
        || async {
            let text = web
                .find(Locator::Css("main"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.contains(&format!(
                "{free_id} holds no licence seat: it runs in the free tier"
            )) && text.contains(
                "Licence L-ha for Test Customer: 3 of 3 seats in use (2 servers + 1 allowance)",
            ))
            .then_some(text)
        },
    )
    .await;
    let row = web
        .find(Locator::XPath(&format!(
            "//table[@id='instances']//tr[contains(., '{free_id}')]"
        )))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row.contains("free tier"), "{row}\n{page}");
    drop(browser);

    // A licensed instance dies: after release_after its seat goes to the free-tier one, which
    // takes all its workers and may lead, without a restart.
    let dead_name = format!("app-{}", c.instances[1].port);
    c.instances[1].proc.kill9();
    let now_licensed = wait_tier(&c, 3, "licensed", Duration::from_secs(30)).await;
    assert_eq!(now_licensed["render_workers"]["size"], 2, "{now_licensed}");
    let lic = on_free.get_json("/api/v1/license").await;
    assert!(
        events(&lic)
            .iter()
            .any(|(name, event, _)| *name == dead_name && event == "expired"),
        "{lic}"
    );

    // Another dies and a fifth instance starts in the free tier; an admin releases the dead
    // one's seat at once, recorded with who did it, and the fifth takes it.
    let gone = format!("app-{}", c.instances[2].port);
    c.instances[2].proc.kill9();
    let fifth = c.add(licensed(&key)).await;
    wait_tier(&c, fifth, "free tier", Duration::from_secs(10)).await;
    let admin = c.client(0).await;
    let r = admin
        .post(&format!("/api/v1/license/seats/{gone}/release"), &json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["released"][0]["instance_name"],
        gone.as_str(),
        "{body}"
    );
    wait_tier(&c, fifth, "licensed", Duration::from_secs(10)).await;
    let lic = admin.get_json("/api/v1/license").await;
    assert!(
        events(&lic).iter().any(|(name, event, actor)| *name == gone
            && event == "released"
            && actor == crate::support::app::ROOT_EMAIL),
        "{lic}"
    );
    let missing = admin
        .post("/api/v1/license/seats/no-such-instance/release", &json!({}))
        .await;
    assert_eq!(missing.status(), 404);
    let problem: Value = missing.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-instance"),
        "{problem}"
    );

    // Every seat is in use; a licensed instance restarted under its name takes its own back.
    let own = format!("app-{}", c.instances[0].port);
    c.instances[0].restart().await;
    wait_tier(&c, 0, "licensed", Duration::from_secs(10)).await;
    let lic = admin.get_json("/api/v1/license").await;
    assert!(
        events(&lic)
            .iter()
            .any(|(name, event, _)| *name == own && event == "taken back"),
        "{lic}"
    );
    assert_eq!(with_tier(&c, "licensed").await.len(), 3);
}

#[tokio::test]
async fn instances_starting_together_take_exactly_the_seats_there_are() {
    let mut c = HaCluster::start(0).await;
    for round in 0..10 {
        let key = key(&format!("L-race-{round}"), 2, 1);
        let options: Vec<AppOptions> = (0..10)
            .map(|_| licensed(&key).env("QUIRE_RENDER__WORKERS", "1"))
            .collect();
        let started = futures_util::future::join_all(
            options.into_iter().map(|o| Instance::start(c.options(o))),
        )
        .await;
        let before = c.instances.len();
        c.instances.extend(started);
        // Every instance has activated once it is ready: no later grant can change the count.
        let mut tiers = Vec::new();
        for inst in &c.instances[before..] {
            tiers.push(readyz(inst).await["license"].as_str().unwrap().to_owned());
        }
        let granted = tiers.iter().filter(|t| *t == "licensed").count();
        assert_eq!(granted, 3, "round {round}: {tiers:?}");
        let lic = c.client(before).await.get_json("/api/v1/license").await;
        let seats = lic["seats"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["pool"] == format!("L-race-{round}").as_str())
            .count();
        assert_eq!(seats, 3, "round {round}: {lic}");
        for inst in c.instances.drain(before..) {
            inst.proc.terminate();
        }
    }
}

/// Runs `quire app` with `env` until it exits; its exit code and stderr.
async fn app_exit(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = quire_command(&["app"]);
    cmd.env("QUIRE_DATA_DIR", dir.path())
        .env("QUIRE_HTTP__LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run quire app");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_tampered_key_or_an_unknown_signer_stops_the_instance_naming_the_setting() {
    let good = key("L-tamper", 1, 1);
    // One byte of the claims changed: the signature no longer matches.
    let mut bytes = good.clone().into_bytes();
    let at = good.find('.').unwrap() + 5;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let (code, err) = app_exit(&[("QUIRE_LICENSE__KEY", &tampered)]).await;
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("license.key (from env QUIRE_LICENSE__KEY)"),
        "{err}"
    );
    assert!(
        err.contains("signature does not match") || err.contains("malformed"),
        "{err}"
    );
    let signature = tampered.rsplit('.').next().unwrap();
    assert!(!err.contains(signature), "the key is never printed: {err}");

    // Signed by a key this build does not know (the vendor's next kid, say).
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let claims = quire::license::Claims {
        kid: "prod-9".into(),
        id: "L-stranger".into(),
        customer: "Someone".into(),
        issued_at: jiff::civil::date(2026, 1, 1),
        not_before: jiff::civil::date(2026, 1, 1),
        expires_at: None,
        servers: 1,
        allowance: 1,
        features: vec![],
    };
    let unknown = quire::license::issue(&claims, &stranger).unwrap();
    let (code, err) = app_exit(&[("LicenseConfiguration__Key", &unknown)]).await;
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("license.key (from env LicenseConfiguration__Key (alias))"),
        "{err}"
    );
    assert!(
        err.contains("\"prod-9\", which this build does not trust"),
        "{err}"
    );
}

#[tokio::test]
async fn the_reference_alias_sets_the_key_and_one_instance_without_a_key_runs_everything() {
    let alias = Instance::start(
        AppOptions::default().env("LicenseConfiguration__Key", &key("L-alias", 1, 1)),
    )
    .await;
    let r = readyz(&alias).await;
    assert_eq!(r["license"], "licensed", "{r}");
    let lic = alias.client().await.get_json("/api/v1/license").await;
    assert_eq!(lic["license"]["id"], "L-alias", "{lic}");
    assert_eq!(lic["standing"]["capacity"], 2, "{lic}");

    let keyless = Instance::start(AppOptions::default()).await;
    let r = readyz(&keyless).await;
    assert_eq!(r["license"], "single server", "{r}");
    assert_eq!(r["render_workers"]["size"], 2, "{r}");
    let lic = keyless.client().await.get_json("/api/v1/license").await;
    assert_eq!(lic["license"], Value::Null, "{lic}");
}

#[tokio::test]
async fn an_expired_key_runs_as_without_a_key_and_warns() {
    let today = jiff::Zoned::now().date();
    let expired_on = today.checked_sub(jiff::Span::new().days(60)).unwrap();
    let issued = today.checked_sub(jiff::Span::new().days(400)).unwrap();
    let key = key_for("L-old", 5, 1, issued, Some(expired_on));
    let mut c = HaCluster::start(0).await;
    c.add(licensed(&key)).await;
    c.add(licensed(&key)).await;
    // Past its grace the key licenses nothing: one instance runs everything, as without a key,
    // and the other is in the free tier.
    wait_tier(&c, 0, "single server", Duration::from_secs(10)).await;
    wait_tier(&c, 1, "free tier", Duration::from_secs(10)).await;
    let admin = c.client(1).await;
    let lic = admin.get_json("/api/v1/license").await;
    let notice = lic["standing"]["notice"].as_str().unwrap_or("");
    assert!(
        notice.contains(&format!(
            "licence L-old (Test Customer) expired on {expired_on}"
        )) && notice.contains("grace period ended"),
        "{lic}"
    );
    assert!(c.instances[1].log().contains("grace period ended"));
    let metrics = admin.get("/metrics").await.text().await.unwrap();
    let end = expired_on
        .tomorrow()
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second();
    assert!(
        metrics.contains(&format!(
            "quire_license_expiry_timestamp_seconds{{license=\"L-old\"}} {end}"
        )),
        "{metrics}"
    );
}
