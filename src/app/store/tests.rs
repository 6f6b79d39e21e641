//! The store test suite. Each case takes a fresh, migrated `Store`; `every_case!` instantiates
//! every case for a backend, so SQLite and PostgreSQL are held to the same behaviour.

use super::*;
use crate::app::model::*;

fn version(files: &[(&str, &str)]) -> NewVersion {
    NewVersion {
        entry: "main.typ".into(),
        parameters: vec![ParamSpec {
            name: "title".into(),
            kind: ParamKind::String,
            label: None,
            required: false,
            default: Some(serde_json::json!("Hi")),
            choices: vec![],
        }],
        sample_data: Some("{}".into()),
        queries: vec![QuerySpec {
            name: "sales".into(),
            datasource: "warehouse".into(),
            text: "select :title".into(),
            params: Default::default(),
        }],
        files: files
            .iter()
            .map(|(p, c)| TemplateFile {
                path: p.to_string(),
                content: c.as_bytes().to_vec(),
            })
            .collect(),
        created_by: None,
    }
}

async fn new_job(s: &dyn Store, id: &str) -> (Job, JobEvent) {
    let (t, v) = match s.template("t").await.unwrap() {
        Some(t) => {
            let v = s.version(&t.id, t.latest_version).await.unwrap().unwrap();
            (t, v)
        }
        None => s
            .create_template("t", "", &version(&[("main.typ", "x")]))
            .await
            .unwrap(),
    };
    let job = NewJob {
        id: id.into(),
        template_id: t.id,
        template_name: t.name,
        template_version: v.version,
        data: "{\"a\":1}".into(),
        parameters: "{}".into(),
        created_by: None,
        agent_sources: None,
    };
    s.enqueue(&job, 100).await.unwrap()
}

pub async fn users_and_root(s: &dyn Store) {
    let root = s.upsert_root("root@example.com", "h1").await.unwrap();
    assert!(root.is_root && root.role == UserRole::Admin);
    let again = s.upsert_root("root@example.com", "h2").await.unwrap();
    assert_eq!(again.id, root.id);
    assert_eq!(again.password_hash, "h2");
    // A renamed root leaves the old account as a plain admin.
    let renamed = s.upsert_root("boss@example.com", "h3").await.unwrap();
    assert_ne!(renamed.id, root.id);
    assert!(!s.user(&root.id).await.unwrap().unwrap().is_root);
    assert_eq!(s.root_user().await.unwrap().unwrap().id, renamed.id);

    let u = s
        .create_user(&NewUser {
            email: "v@example.com".into(),
            password_hash: "x".into(),
            role: UserRole::Viewer,
        })
        .await
        .unwrap();
    let dup = s
        .create_user(&NewUser {
            email: "v@example.com".into(),
            password_hash: "y".into(),
            role: UserRole::Admin,
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict { .. })), "{dup:?}");
    let changed = s
        .update_user(
            &u.id,
            &UserChanges {
                role: Some(UserRole::Editor),
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.role, UserRole::Editor);
    assert!(changed.disabled);
    assert_eq!(changed.password_hash, "x");
    assert!(
        !s.delete_user(&renamed.id).await.unwrap(),
        "the root user cannot be deleted"
    );
    assert!(s.delete_user(&u.id).await.unwrap());
    assert_eq!(s.users().await.unwrap().len(), 2);
}

pub async fn first_root_only_once(s: &dyn Store) {
    assert!(
        s.create_first_root("first@example.com", "h1")
            .await
            .unwrap()
    );
    assert!(
        !s.create_first_root("second@example.com", "h2")
            .await
            .unwrap(),
        "only while there are no users"
    );
    assert!(
        !s.create_first_root("first@example.com", "h3")
            .await
            .unwrap()
    );
    let root = s.root_user().await.unwrap().unwrap();
    assert_eq!(
        (root.email.as_str(), root.password_hash.as_str()),
        ("first@example.com", "h1")
    );
}

pub async fn sessions_and_tokens(s: &dyn Store) {
    let u = s.upsert_root("root@example.com", "h").await.unwrap();
    let now = now_ms();
    let sess = Session {
        token_hash: "th".into(),
        user_id: u.id.clone(),
        csrf_token: "c".into(),
        created_at: now,
        expires_at: now + 1000,
    };
    s.create_session(&sess).await.unwrap();
    assert_eq!(s.session("th", now).await.unwrap().unwrap().1.id, u.id);
    assert!(
        s.session("th", now + 2000).await.unwrap().is_none(),
        "expired sessions are invisible"
    );
    s.delete_session("th").await.unwrap();
    assert!(s.session("th", now).await.unwrap().is_none());

    let t = ApiToken {
        id: "t1".into(),
        user_id: u.id.clone(),
        name: "ci".into(),
        prefix: "qt_ab".into(),
        created_at: now,
        last_used_at: None,
        expires_at: None,
    };
    s.create_token(&t, "hash1").await.unwrap();
    let (tok, user) = s.token_user("hash1", now).await.unwrap().unwrap();
    assert_eq!((tok.id.as_str(), user.id.as_str()), ("t1", u.id.as_str()));
    assert_eq!(s.tokens(&u.id).await.unwrap()[0].last_used_at, Some(now));
    assert!(s.token_user("nope", now).await.unwrap().is_none());
    assert!(!s.delete_token("someone-else", "t1").await.unwrap());
    assert!(s.delete_token(&u.id, "t1").await.unwrap());
    assert!(s.token_user("hash1", now).await.unwrap().is_none());
}

pub async fn template_versions_are_immutable(s: &dyn Store) {
    let (t, v1) = s
        .create_template(
            "invoice",
            "d",
            &version(&[("main.typ", "one"), ("logo.svg", "<svg/>")]),
        )
        .await
        .unwrap();
    assert_eq!((t.latest_version, v1.version, v1.size), (1, 1, 9));
    let dup = s
        .create_template("invoice", "", &version(&[("main.typ", "x")]))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict { .. })));
    let (t2, v2) = s
        .add_version(&t.id, Some("new"), &version(&[("main.typ", "two")]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t2.latest_version, v2.version, t2.description.as_str()),
        (2, 2, "new")
    );
    assert_eq!(s.files(&t.id, 1).await.unwrap().len(), 2);
    assert_eq!(s.files(&t.id, 2).await.unwrap()[0].content, b"two");
    let v1 = s.version(&t.id, 1).await.unwrap().unwrap();
    assert_eq!(v1.parameters[0].name, "title");
    assert_eq!(v1.queries, version(&[]).queries);
    assert_eq!(s.template("invoice").await.unwrap().unwrap().id, t.id);
    assert_eq!(s.template(&t.id).await.unwrap().unwrap().name, "invoice");
    assert_eq!(s.versions(&t.id).await.unwrap().len(), 2);
    assert!(
        s.add_version("missing", None, &version(&[]))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.delete_template(&t.id).await.unwrap());
    assert!(s.files(&t.id, 1).await.unwrap().is_empty());
}

pub async fn job_lifecycle_with_events(s: &dyn Store) {
    let (job, first) = new_job(s, "j1").await;
    assert_eq!((job.state, first.seq), (JobState::Queued, 1));
    assert_eq!(s.queue_depth().await.unwrap(), 1);
    let (claimed, started) = s
        .claim("inst-a", "tok", 15_000, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.id.as_str(), claimed.state, started.seq),
        ("j1", JobState::Running, 2)
    );
    assert!(
        s.claim("inst-b", "tok2", 15_000, None)
            .await
            .unwrap()
            .is_none(),
        "a job is claimed once"
    );
    assert!(s.renew_claim("j1", "tok", 15_000).await.unwrap());
    assert!(!s.renew_claim("j1", "wrong", 15_000).await.unwrap());
    let p = Progress {
        stage: "compiling".into(),
        progress: 40,
        message: None,
        pages: None,
    };
    assert_eq!(s.progress("j1", "tok", &p).await.unwrap().unwrap().seq, 3);
    assert!(s.progress("j1", "wrong", &p).await.unwrap().is_none());
    let done = Outcome::Succeeded {
        pdf: b"%PDF-1.7".to_vec(),
        pages: 2,
    };
    let fin = s.finish("j1", "tok", &done, 60_000).await.unwrap().unwrap();
    assert_eq!(
        (fin.seq, fin.state, fin.pages, fin.output_size),
        (4, JobState::Succeeded, Some(2), Some(8))
    );
    assert!(
        s.finish("j1", "tok", &done, 60_000)
            .await
            .unwrap()
            .is_none(),
        "completion is idempotent"
    );
    assert_eq!(s.output("j1").await.unwrap().unwrap(), b"%PDF-1.7");
    let seqs: Vec<i64> = s
        .events_after("j1", 1)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    let j = s.job("j1").await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.progress, j.claim_token),
        (JobState::Succeeded, 100, None)
    );
    assert_eq!(
        s.cancel("j1", 1000).await.unwrap().unwrap().1,
        None,
        "a finished job cannot be cancelled"
    );
}

pub async fn failed_and_cancelled_jobs(s: &dyn Store) {
    new_job(s, "f").await;
    s.claim("i", "t", 15_000, None).await.unwrap().unwrap();
    let err = JobError {
        kind: "timeout".into(),
        message: "too slow".into(),
        diagnostics: vec![],
    };
    let ev = s
        .finish("f", "t", &Outcome::Failed(err.clone()), 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.state, ev.error.as_ref()),
        (JobState::Failed, Some(&err))
    );
    assert_eq!(s.job("f").await.unwrap().unwrap().error, Some(err));
    assert!(s.output("f").await.unwrap().is_none());

    new_job(s, "c").await;
    let (job, ev) = s.cancel("c", 1000).await.unwrap().unwrap();
    assert_eq!(
        (job.state, ev.unwrap().state),
        (JobState::Cancelled, JobState::Cancelled)
    );
    assert!(
        s.claim("i", "t2", 15_000, None).await.unwrap().is_none(),
        "cancelled jobs are not claimed"
    );
    assert!(s.cancel("missing", 1000).await.unwrap().is_none());
}

pub async fn abandoned_jobs_return_then_give_up(s: &dyn Store) {
    new_job(s, "a").await;
    for round in 1..=2 {
        s.claim("dead", &format!("t{round}"), 15_000, None)
            .await
            .unwrap()
            .unwrap();
        let evs = s.requeue_abandoned(Abandoned::All, 3, 1000).await.unwrap();
        assert_eq!((evs.len(), evs[0].state), (1, JobState::Queued));
        assert_eq!(s.job("a").await.unwrap().unwrap().attempts, round);
    }
    s.claim("dead", "t3", 15_000, None).await.unwrap().unwrap();
    let evs = s.requeue_abandoned(Abandoned::All, 3, 1000).await.unwrap();
    assert_eq!(evs[0].state, JobState::Failed);
    assert_eq!(
        s.job("a").await.unwrap().unwrap().error.unwrap().kind,
        "attempts"
    );

    // Only expired claims count as abandoned for the janitor.
    new_job(s, "b").await;
    s.claim("live", "tb", 60_000, None).await.unwrap().unwrap();
    assert!(
        s.requeue_abandoned(Abandoned::Expired { stale_ms: 20_000 }, 3, 1000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.renew_claim("b", "tb", -1).await.unwrap());
    assert_eq!(
        s.requeue_abandoned(Abandoned::Expired { stale_ms: 20_000 }, 3, 1000)
            .await
            .unwrap()
            .len(),
        1
    );
    // The old holder's claim is void.
    assert!(
        s.finish(
            "b",
            "tb",
            &Outcome::Succeeded {
                pdf: vec![1],
                pages: 1
            },
            1
        )
        .await
        .unwrap()
        .is_none()
    );
}

pub async fn release_keeps_attempts(s: &dyn Store) {
    new_job(s, "r").await;
    s.claim("i", "t", 15_000, None).await.unwrap().unwrap();
    let ev = s
        .release("r", "t", "instance shutting down")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.state, ev.message.as_deref()),
        (JobState::Queued, Some("instance shutting down"))
    );
    let j = s.job("r").await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
}

pub async fn queue_limit_and_listing(s: &dyn Store) {
    new_job(s, "q1").await;
    let (t, _) = (s.template("t").await.unwrap().unwrap(), ());
    let job = NewJob {
        id: "q2".into(),
        template_id: t.id.clone(),
        template_name: t.name.clone(),
        template_version: 1,
        data: "{}".into(),
        parameters: "{}".into(),
        created_by: Some("u1".into()),
        agent_sources: None,
    };
    assert!(matches!(
        s.enqueue(&job, 1).await,
        Err(StoreError::QueueFull(1))
    ));
    s.enqueue(&job, 10).await.unwrap();
    let mine = s
        .jobs(&JobFilter {
            created_by: Some("u1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].data, "", "listings leave data out");
    let all = s
        .jobs(&JobFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let queued = s
        .jobs(&JobFilter {
            state: Some(JobState::Queued),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
}

pub async fn purge_removes_expired_jobs(s: &dyn Store) {
    new_job(s, "p").await;
    s.claim("i", "t", 15_000, None).await.unwrap().unwrap();
    s.finish(
        "p",
        "t",
        &Outcome::Succeeded {
            pdf: vec![1],
            pages: 1,
        },
        -1,
    )
    .await
    .unwrap()
    .unwrap();
    new_job(s, "keep").await;
    assert_eq!(s.purge_expired().await.unwrap(), 1);
    assert!(s.job("p").await.unwrap().is_none());
    assert!(s.output("p").await.unwrap().is_none());
    assert!(s.events_after("p", 0).await.unwrap().is_empty());
    assert!(s.job("keep").await.unwrap().is_some());
}

pub async fn flags_round_trip(s: &dyn Store) {
    assert_eq!(s.flag("x").await.unwrap(), None);
    s.set_flag("x", "1").await.unwrap();
    s.set_flag("x", "2").await.unwrap();
    assert_eq!(s.flag("x").await.unwrap().as_deref(), Some("2"));
    assert_eq!(s.init_flag("y", "first").await.unwrap(), "first");
    assert_eq!(s.init_flag("y", "second").await.unwrap(), "first");
    assert_eq!(s.init_flag("x", "3").await.unwrap(), "2");
    assert_eq!(
        s.schema_version().await.unwrap(),
        migrate::SQLITE.last().unwrap().version
    );
}

pub async fn leases_move_between_holders_with_history(s: &dyn Store) {
    let a = s
        .acquire_lease("janitor", "inst-a", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.term, 1);
    assert!(
        s.acquire_lease("janitor", "inst-b", 60_000)
            .await
            .unwrap()
            .is_none(),
        "held roles are not taken"
    );
    let renewed = s
        .renew_lease("janitor", "inst-a", a.term, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.term, 1);
    assert!(
        s.renew_lease("janitor", "inst-b", a.term, 60_000)
            .await
            .unwrap()
            .is_none(),
        "only the holder renews"
    );
    assert!(s.release_lease("janitor", "inst-a", a.term).await.unwrap());
    let b = s
        .acquire_lease("janitor", "inst-b", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.term, 2, "every change of holder is a new term");
    // A lease that runs out is taken over; the old holder can no longer renew it.
    assert!(
        s.renew_lease("janitor", "inst-b", b.term, -1)
            .await
            .unwrap()
            .is_some()
    );
    let c = s
        .acquire_lease("janitor", "inst-c", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.term, 3);
    assert!(
        s.renew_lease("janitor", "inst-b", b.term, 60_000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.release_lease("janitor", "inst-b", b.term).await.unwrap());

    let mut history = s.lease_history(10).await.unwrap();
    history.retain(|h| h.role == "janitor");
    history.sort_by_key(|h| h.term);
    let summary: Vec<(i64, &str, Option<&str>)> = history
        .iter()
        .map(|h| (h.term, h.holder.as_str(), h.ended.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "inst-a", Some("released")),
            (2, "inst-b", Some("expired")),
            (3, "inst-c", None)
        ]
    );
    for w in history.windows(2) {
        assert!(
            w[0].held_until.unwrap() <= w[1].held_from,
            "tenures never overlap: {w:?}"
        );
    }
    let leases = s.leases().await.unwrap();
    let janitor = leases.iter().find(|l| l.role == "janitor").unwrap();
    assert_eq!(
        (janitor.holder.as_deref(), janitor.term),
        (Some("inst-c"), 3)
    );
    assert_eq!(leases.len(), 3);
}

pub async fn registry_heartbeats_and_drain_requests(s: &dyn Store) {
    let info = InstanceInfo {
        id: "web-1-abc".into(),
        name: "web-1".into(),
        version: "0.1.0".into(),
        build: "dev".into(),
        address: "10.0.0.1:8080".into(),
        started_at: now_ms(),
        key_fingerprint: "k".into(),
        license_fingerprint: "none".into(),
        license: "no key".into(),
        schema_version: 2,
    };
    s.register_instance(&info).await.unwrap();
    assert_eq!(
        s.heartbeat("web-1-abc", false, "connected").await.unwrap(),
        Some(false)
    );
    assert!(s.request_drain("web-1-abc", true).await.unwrap());
    assert!(!s.request_drain("nobody", true).await.unwrap());
    assert_eq!(
        s.heartbeat("web-1-abc", true, "connected").await.unwrap(),
        Some(true)
    );
    let (now, rows) = s.instances().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].info, info);
    assert!(rows[0].draining && rows[0].drain_requested);
    assert!((now - rows[0].heartbeat_at).abs() < 5_000);
    s.instance_stopped("web-1-abc").await.unwrap();
    assert!(s.instances().await.unwrap().1[0].stopped_at.is_some());
    assert_eq!(s.forget_instances(60_000).await.unwrap(), 0);
    assert_eq!(s.forget_instances(-1_000).await.unwrap(), 1);
    assert_eq!(
        s.heartbeat("web-1-abc", false, "off").await.unwrap(),
        None,
        "a forgotten instance must register again"
    );
}

fn seat_request(
    pool: &str,
    id: &str,
    name: &str,
    started_at: i64,
) -> crate::license::model::SeatRequest {
    crate::license::model::SeatRequest {
        pool: pool.into(),
        capacity: 2,
        instance_id: id.into(),
        instance_name: name.into(),
        started_at,
        alive_ms: 60_000,
        release_after_ms: 600_000,
    }
}

async fn register(s: &dyn Store, id: &str, name: &str, started_at: i64) {
    s.register_instance(&InstanceInfo {
        id: id.into(),
        name: name.into(),
        version: "0.1.0".into(),
        build: "dev".into(),
        address: "x".into(),
        started_at,
        key_fingerprint: "k".into(),
        license_fingerprint: "l".into(),
        license: "L-1 (Acme)".into(),
        schema_version: 2,
    })
    .await
    .unwrap();
}

pub async fn license_seats_are_granted_up_to_capacity_and_kept_by_name(s: &dyn Store) {
    use crate::license::model::{Outcome, SeatEventKind};
    for (id, name, started) in [
        ("a-1", "a", 1_000),
        ("b-1", "b", 1_000),
        ("c-1", "c", 1_000),
    ] {
        register(s, id, name, started).await;
    }
    let a = seat_request("L-1", "a-1", "a", 1_000);
    let first = s.activate_seat(&a).await.unwrap();
    assert_eq!((first.outcome, first.in_use), (Outcome::Taken, 1));
    assert_eq!(s.activate_seat(&a).await.unwrap().outcome, Outcome::Held);
    let b = seat_request("L-1", "b-1", "b", 1_000);
    assert_eq!(s.activate_seat(&b).await.unwrap().outcome, Outcome::Taken);
    let c = seat_request("L-1", "c-1", "c", 1_000);
    let full = s.activate_seat(&c).await.unwrap();
    assert_eq!((full.outcome, full.in_use), (Outcome::Full, 2));
    // Another licence's pool is counted apart.
    let other = seat_request("L-2", "c-1", "c", 1_000);
    assert_eq!(
        s.activate_seat(&other).await.unwrap().outcome,
        Outcome::Taken
    );
    assert_eq!(
        s.release_seats("c-1", SeatEventKind::Stopped, "c-1", None)
            .await
            .unwrap()
            .len(),
        1
    );

    // A newer process under b's name takes b's seat back (b's first process still counts as
    // alive); the older one then finds the name taken and does not take it back in turn.
    register(s, "b-2", "b", 2_000).await;
    let b2 = seat_request("L-1", "b-2", "b", 2_000);
    assert_eq!(
        s.activate_seat(&b2).await.unwrap().outcome,
        Outcome::TakenBack { from: "b-1".into() }
    );
    assert_eq!(
        s.activate_seat(&b).await.unwrap().outcome,
        Outcome::NameInUse {
            holder: "b-2".into()
        }
    );
    // A stopped holder yields to any process of its name.
    s.instance_stopped("b-2").await.unwrap();
    assert_eq!(
        s.activate_seat(&b).await.unwrap().outcome,
        Outcome::TakenBack { from: "b-2".into() }
    );

    // Seats unseen for release_after go back first (here: every seat, with a negative window).
    let expiring = crate::license::model::SeatRequest {
        release_after_ms: -1_000,
        ..c.clone()
    };
    let after = s.activate_seat(&expiring).await.unwrap();
    assert_eq!(after.outcome, Outcome::Taken);
    let mut expired: Vec<&str> = after
        .expired
        .iter()
        .map(|x| x.instance_name.as_str())
        .collect();
    expired.sort_unstable();
    assert_eq!(expired, ["a", "b"]);
    assert_eq!(after.in_use, 1);

    // An admin's release, by name or by holder id.
    let released = s
        .release_seats(
            "c",
            SeatEventKind::Released,
            "root@example.com",
            Some("by hand"),
        )
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert!(
        s.release_seats("c", SeatEventKind::Released, "x", None)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, seats) = s.seats().await.unwrap();
    assert!(seats.is_empty(), "{seats:?}");

    let history = s.seat_events(50).await.unwrap();
    let newest = &history[0];
    assert_eq!(
        (
            newest.event.as_str(),
            newest.actor.as_str(),
            newest.detail.as_deref(),
            newest.instance_name.as_str()
        ),
        ("released", "root@example.com", Some("by hand"), "c")
    );
    let kinds: Vec<&str> = history.iter().map(|e| e.event.as_str()).collect();
    for kind in ["taken", "taken back", "stopped", "expired", "released"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

/// Ten instances starting at once race for three seats, ten times over: exactly three win.
pub async fn the_last_seat_goes_to_exactly_one_instance(s: &dyn Store) {
    for round in 0..10 {
        let pool = format!("race-{round}");
        let requests: Vec<_> = (0..10)
            .map(|i| crate::license::model::SeatRequest {
                capacity: 3,
                ..seat_request(&pool, &format!("r{round}-{i}"), &format!("n{i}"), 1_000)
            })
            .collect();
        let outcomes =
            futures_util::future::join_all(requests.iter().map(|r| s.activate_seat(r))).await;
        let granted = outcomes
            .into_iter()
            .map(|o| o.unwrap())
            .filter(|a| a.outcome.licensed())
            .count();
        assert_eq!(granted, 3, "round {round}");
        let (_, seats) = s.seats().await.unwrap();
        assert_eq!(
            seats.iter().filter(|x| x.pool == pool).count(),
            3,
            "round {round}"
        );
    }
}

pub async fn stale_instances_lose_their_jobs(s: &dyn Store) {
    new_job(s, "s").await;
    let info = InstanceInfo {
        id: "gone".into(),
        name: "gone".into(),
        version: "0.1.0".into(),
        build: "dev".into(),
        address: "x".into(),
        started_at: 0,
        key_fingerprint: "k".into(),
        license_fingerprint: "none".into(),
        license: "no key".into(),
        schema_version: 2,
    };
    s.register_instance(&info).await.unwrap();
    s.claim("gone", "t", 600_000, None).await.unwrap().unwrap();
    assert!(
        s.requeue_abandoned(Abandoned::Expired { stale_ms: 60_000 }, 3, 1000)
            .await
            .unwrap()
            .is_empty()
    );
    // Silent "for" -1 s counts as stale now: the job comes back although its claim is young.
    let evs = s
        .requeue_abandoned(Abandoned::Expired { stale_ms: -1_000 }, 3, 1000)
        .await
        .unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].state, JobState::Queued);
}

pub async fn fire_times_are_recorded_once(s: &dyn Store) {
    let (t, v) = s
        .create_template("t", "", &version(&[("main.typ", "x")]))
        .await
        .unwrap();
    let spec = ScheduleSpec {
        name: "every minute".into(),
        template_id: t.id.clone(),
        template_name: t.name.clone(),
        cron: "* * * * *".into(),
        timezone: "UTC".into(),
        parameters: "{}".into(),
        data: "{}".into(),
        recipients: vec!["a@example.com".into()],
        subject: "s".into(),
        body: "b".into(),
        enabled: true,
        hold_for_review: false,
        jitter_ms: 0,
        misfire: Misfire::Latest,
        misfire_window_ms: 3_600_000,
        burst: None,
    };
    let sched = s.create_schedule(&spec, Some(60_000), None).await.unwrap();
    let grant = s
        .acquire_lease("scheduler", "me", 60_000)
        .await
        .unwrap()
        .unwrap();
    let fence = Fence {
        role: "scheduler",
        holder: "me".into(),
        term: grant.term,
    };
    let job = |id: &str| NewJob {
        id: id.into(),
        template_id: t.id.clone(),
        template_name: t.name.clone(),
        template_version: v.version,
        data: "{}".into(),
        parameters: "{}".into(),
        created_by: None,
        agent_sources: None,
    };
    let firing = |job_id: &str| Firing {
        fire_at: 60_000,
        job: Some(job(job_id)),
        error: None,
    };
    assert!(
        s.fire_schedule(&sched.id, 60_000, &[firing("j1")], Some(120_000), 0, &fence)
            .await
            .unwrap()
    );
    // The schedule moved on: firing from the old position is refused as a whole.
    assert!(
        !s.fire_schedule(&sched.id, 60_000, &[firing("j2")], Some(120_000), 0, &fence)
            .await
            .unwrap()
    );
    // Edited back to the fired time: the fire time is not recorded (or rendered) twice.
    s.update_schedule(&sched.id, &spec, Some(60_000))
        .await
        .unwrap();
    assert!(
        s.fire_schedule(&sched.id, 60_000, &[firing("j3")], Some(120_000), 0, &fence)
            .await
            .unwrap()
    );
    let occ = s.occurrences(&sched.id, 10).await.unwrap();
    assert_eq!(occ.len(), 1);
    assert_eq!(occ[0].job_id.as_deref(), Some("j1"));
    assert!(
        s.job("j3").await.unwrap().is_none(),
        "no job for a fire time already recorded"
    );
    // Another holder's fence writes nothing.
    let stale = Fence {
        role: "scheduler",
        holder: "someone".into(),
        term: grant.term,
    };
    assert!(
        !s.fire_schedule(&sched.id, 120_000, &[], Some(180_000), 0, &stale)
            .await
            .unwrap()
    );
}

pub async fn cache_versions_count_changes(s: &dyn Store) {
    assert_eq!(s.cache_version("fonts").await.unwrap(), 0);
    assert_eq!(s.bump_cache("fonts").await.unwrap(), 1);
    assert_eq!(s.bump_cache("fonts").await.unwrap(), 2);
    assert_eq!(s.cache_version("fonts").await.unwrap(), 2);
    let a = s.db_now().await.unwrap();
    assert!(
        (a - now_ms()).abs() < 5_000,
        "the database clock is the wall clock here"
    );
}

pub async fn datasource_files_are_replaced_and_go_with_their_source(s: &dyn Store) {
    let new = crate::app::datasource::model::NewDataSource {
        name: "uploads".into(),
        kind: crate::connector::DataSourceKind::Csv,
        settings: "{}".into(),
        secrets: None,
        created_by: None,
    };
    let ds = s.create_datasource("ds1", &new).await.unwrap();
    assert_eq!(s.datasource_file(&ds.id).await.unwrap(), None);
    s.put_datasource_file(&ds.id, b"a,b\n1,2\n").await.unwrap();
    s.put_datasource_file(&ds.id, b"a\n1\n").await.unwrap();
    assert_eq!(
        s.datasource_file(&ds.id).await.unwrap().as_deref(),
        Some(&b"a\n1\n"[..])
    );
    assert!(s.delete_datasource(&ds.id).await.unwrap());
    assert_eq!(s.datasource_file(&ds.id).await.unwrap(), None);
    // A file for no data source is refused.
    assert!(s.put_datasource_file("nope", b"x").await.is_err());
}

pub async fn jobs_needing_agents_are_claimed_only_where_they_are_reached(s: &dyn Store) {
    use crate::app::agents::reach::{pattern, reachable};
    let t = s
        .create_template("t", "", &version(&[("main.typ", "x")]))
        .await
        .unwrap()
        .0;
    let job = |id: &str, sources: &[&str]| NewJob {
        id: id.into(),
        template_id: t.id.clone(),
        template_name: t.name.clone(),
        template_version: 1,
        data: "{}".into(),
        parameters: "{}".into(),
        created_by: None,
        agent_sources: pattern(sources.iter().copied()),
    };
    s.enqueue(&job("needs-both", &["crm", "ware_house"]), 10)
        .await
        .unwrap();
    s.enqueue(&job("needs-crm", &["crm"]), 10).await.unwrap();
    s.enqueue(&job("plain", &[]), 10).await.unwrap();
    // Reaching neither: only the job without agents.
    let claim = |reach: Option<String>, token: &'static str| async move {
        s.claim("i", token, 15_000, reach.as_deref())
            .await
            .unwrap()
            .map(|(j, _)| j.id)
    };
    assert_eq!(
        claim(Some(reachable([])), "t1").await.as_deref(),
        Some("plain")
    );
    assert_eq!(
        claim(Some(reachable(["warexhouse", "crm"])), "t2")
            .await
            .as_deref(),
        Some("needs-crm")
    );
    assert_eq!(claim(Some(reachable(["crm"])), "t3").await, None);
    // NATS up: anything.
    assert_eq!(claim(None, "t4").await.as_deref(), Some("needs-both"));
}

pub async fn agents_record_connections_and_revocation(s: &dyn Store) {
    use crate::agent::protocol::Served;
    use crate::app::agents::model::{Connection, Seen, State};
    let a = s
        .create_agent("a1", "dc1", "digest-1", Some("root"))
        .await
        .unwrap();
    assert_eq!(a.state(15_000), State::Never);
    assert!(matches!(
        s.create_agent("a2", "dc1", "digest-2", None).await,
        Err(StoreError::Conflict { field: "name", .. })
    ));
    assert_eq!(
        s.agent_by_token("digest-1").await.unwrap().unwrap().id,
        "a1"
    );
    assert!(s.agent_by_token("nope").await.unwrap().is_none());
    let c = |session: &str| Connection {
        session: session.into(),
        agent_id: "proc".into(),
        reported_name: "db-host".into(),
        version: "1.0".into(),
        protocol: 1,
        instance_id: Some("inst".into()),
        address: "10.0.0.9".into(),
        connected_at: 0,
        disconnected_at: None,
        last_seen: None,
        datasources: vec![Served {
            name: "warehouse".into(),
            kind: "postgres".into(),
            server_version: Some("15".into()),
            error: None,
        }],
    };
    assert!(s.agent_connected("a1", &c("s1")).await.unwrap());
    let seen = Seen {
        in_flight: 2,
        queries: 10,
        errors: 1,
        p50_us: Some(1500),
        p99_us: Some(9000),
        last_error: Some("boom".into()),
    };
    assert!(s.agent_seen("a1", "s1", &seen).await.unwrap());
    let a = s.agent("dc1").await.unwrap().unwrap();
    assert_eq!(a.state(15_000), State::Connected);
    assert!(a.serves("warehouse", 15_000) && !a.serves("crm", 15_000));
    assert_eq!(
        (a.in_flight, a.queries, a.errors, a.p99_us),
        (2, 10, 1, Some(9000))
    );
    // A newer connection replaces the old one; the old one's late writes change nothing.
    assert!(s.agent_connected("a1", &c("s2")).await.unwrap());
    assert!(!s.agent_seen("a1", "s1", &seen).await.unwrap());
    s.agent_disconnected("a1", "s1", Some("late"))
        .await
        .unwrap();
    let a = s.agent("a1").await.unwrap().unwrap();
    assert_eq!(a.state(15_000), State::Connected);
    s.agent_disconnected("a1", "s2", Some("dropped"))
        .await
        .unwrap();
    let a = s.agent("a1").await.unwrap().unwrap();
    assert_eq!(a.state(15_000), State::Disconnected);
    assert_eq!(a.last_error.as_deref(), Some("dropped"));
    // Deleting revokes: the token finds nothing, a connection cannot be recorded.
    assert!(s.delete_agent("a1").await.unwrap());
    assert!(s.agent_by_token("digest-1").await.unwrap().is_none());
    assert!(!s.agent_connected("a1", &c("s3")).await.unwrap());
    assert!(s.agents().await.unwrap().is_empty());
}

pub async fn takeovers_are_recorded_once_per_timeline(s: &dyn Store) {
    use crate::app::dr::model::DrEvent;
    assert!(s.epoch().await.unwrap().is_none());
    assert!(!s.replication().await.unwrap().in_recovery);
    let first = s.record_takeover(2, Some("0/3000060"), "i1").await.unwrap();
    assert_eq!((first.epoch, first.timeline), (1, 2));
    // Another instance of the same region turning active: the same takeover.
    let again = s.record_takeover(2, Some("0/3000999"), "i2").await.unwrap();
    assert_eq!(again, first);
    let next = s.record_takeover(3, None, "i2").await.unwrap();
    assert_eq!(next.epoch, 2);
    assert_eq!(s.epoch().await.unwrap(), Some(next));
    for (id, at) in [("e1", 10), ("e2", 20)] {
        let e = DrEvent {
            id: id.into(),
            at,
            instance: "i1".into(),
            event: "active".into(),
            timeline: Some(2),
            wal: None,
            epoch: Some(1),
            detail: None,
        };
        s.record_dr_event(&e).await.unwrap();
    }
    let events = s.dr_events(10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e2", "e1"]
    );
}

/// Every case, for `$m!` to instantiate.
macro_rules! every_case {
    ($m:ident) => {
        $m! {
            users_and_root,
            first_root_only_once,
            sessions_and_tokens,
            template_versions_are_immutable,
            job_lifecycle_with_events,
            failed_and_cancelled_jobs,
            abandoned_jobs_return_then_give_up,
            release_keeps_attempts,
            queue_limit_and_listing,
            purge_removes_expired_jobs,
            flags_round_trip,
            leases_move_between_holders_with_history,
            registry_heartbeats_and_drain_requests,
            stale_instances_lose_their_jobs,
            fire_times_are_recorded_once,
            cache_versions_count_changes,
            datasource_files_are_replaced_and_go_with_their_source,
            jobs_needing_agents_are_claimed_only_where_they_are_reached,
            agents_record_connections_and_revocation,
            takeovers_are_recorded_once_per_timeline,
            license_seats_are_granted_up_to_capacity_and_kept_by_name,
            the_last_seat_goes_to_exactly_one_instance
        }
    };
}

mod sqlite {
    use super::*;

    async fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::open(&url, &crate::app::config::DatabaseConfig::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    /// One test per case.
    macro_rules! sqlite_tests {
        ($($case:ident),*) => {
            $(
                #[tokio::test]
                async fn $case() {
                    let (_guard, store) = open().await;
                    super::$case(&store).await;
                }
            )*
        };
    }

    every_case!(sqlite_tests);
}

/// The same cases on a real PostgreSQL: one server for all of them, a fresh database each.
mod postgres {
    use super::*;

    use super::super::pg_server as server;

    async fn open(pg: &server::Postgres) -> PgStore {
        let url = pg.fresh_database().await;
        let store = PgStore::open(
            &url,
            &crate::app::config::DatabaseConfig::default(),
            "quire store tests",
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    macro_rules! run_all {
        ($($case:ident),*) => {
            #[tokio::test]
            async fn every_case_on_postgres() {
                let pg = tokio::task::spawn_blocking(server::Postgres::start).await.unwrap();
                $(
                    let store = open(&pg).await;
                    eprintln!("postgres: {}", stringify!($case));
                    super::$case(&store).await;
                    store.close().await;
                )*
            }
        };
    }

    every_case!(run_all);

    macro_rules! run_all_through_pgbouncer {
        ($($case:ident),*) => {
            /// The same cases through PgBouncer in transaction mode (Debian's 1.18, which keeps no
            /// prepared statements across server connections).
            #[tokio::test]
            async fn every_case_through_pgbouncer() {
                let pg = tokio::task::spawn_blocking(server::Postgres::start).await.unwrap();
                let mut cfg = crate::app::config::DatabaseConfig::default();
                cfg.pgbouncer = true;
                $(
                    let direct = pg.fresh_database().await;
                    let db = direct.rsplit('/').next().unwrap().to_owned();
                    let bouncer = server::PgBouncer::start(&pg, &db);
                    let plain = crate::app::config::DatabaseConfig::default();
                    PgStore::open(&direct, &plain, "migrate")
                        .await
                        .unwrap()
                        .migrate()
                        .await
                        .unwrap();
                    let store = PgStore::open(&bouncer.url(&db), &cfg, "quire store tests")
                        .await
                        .unwrap();
                    eprintln!("pgbouncer: {}", stringify!($case));
                    super::$case(&store).await;
                    store.close().await;
                    drop(bouncer);
                )*
            }
        };
    }

    every_case!(run_all_through_pgbouncer);

    #[tokio::test]
    async fn instances_migrating_at_once_agree() {
        let pg = tokio::task::spawn_blocking(server::Postgres::start)
            .await
            .unwrap();
        let url = pg.fresh_database().await;
        let stores: Vec<PgStore> = futures_util::future::join_all((0..3).map(|_| async {
            PgStore::open(&url, &crate::app::config::DatabaseConfig::default(), "t")
                .await
                .unwrap()
        }))
        .await;
        let results = futures_util::future::join_all(stores.iter().map(|s| s.migrate())).await;
        for r in &results {
            assert!(r.is_ok(), "{r:?}");
        }
        assert_eq!(
            stores[0].schema_version().await.unwrap(),
            migrate::POSTGRES.last().unwrap().version
        );
    }
}
