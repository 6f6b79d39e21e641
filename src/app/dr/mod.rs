//! Disaster recovery: every instance takes its role from its database. On a replica it is a
//! **standby** (`standby.rs`: writes nothing, serves health, metrics and one console page, and
//! turns active the moment its database is promoted); on a writable database it is **active**,
//! unless its peer region's database is writable too and took over after it, which **fences**
//! it. `service.rs` decides the role and records takeovers (an epoch per timeline) and the role
//! history; `peer.rs` reads the other region's database.

pub mod model;
pub mod peer;
pub mod service;
pub mod standby;

use model::Epoch;

/// What an instance does, as its database decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// The database is writable: the instance serves and works.
    Active,
    /// The database is a replica: the instance waits and writes nothing.
    Standby,
    /// The database is writable but the peer region took over after it (`by`).
    Fenced(Epoch),
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Fenced(_) => "fenced",
        }
    }
}

/// `quire dr status`: the text, and the exit status a runbook tests (0 active and healthy, 3
/// standby, 1 fenced or failing).
pub async fn status_report(config: &crate::app::config::AppConfig) -> (String, u8) {
    let store = match crate::app::store::open(config, "quire dr status").await {
        Ok(s) => s,
        Err(e) => {
            return (
                format!(
                    "role: unknown
error: {e}
"
                ),
                1,
            );
        }
    };
    let metrics = std::sync::Arc::new(crate::app::metrics::Metrics::new("dr-status"));
    let dr = service::Dr::new(&config.dr, store.clone(), "dr-status", metrics);
    let report = match dr.status().await {
        Ok(s) => {
            let code = match &s.role {
                Role::Active => 0,
                Role::Standby => 3,
                Role::Fenced(_) => 1,
            };
            (describe(&s), code)
        }
        Err(e) => (
            format!(
                "role: unknown
error: {e}
"
            ),
            1,
        ),
    };
    store.close().await;
    report
}

fn describe(s: &service::Status) -> String {
    let r = &s.replication;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut out = format!(
        "role: {}
timeline: {}
wal: {}
replication lag: {}{}
epoch: {}
",
        s.role.name(),
        opt(r.timeline.map(|t| t.to_string())),
        opt(r.wal.clone()),
        opt(r.lag().map(|l| format!("{l:.1} s"))),
        if s.lag_warning {
            " (above dr.lag_warning)"
        } else {
            ""
        },
        opt(s.epoch.as_ref().map(|e| e.epoch.to_string())),
    );
    if let Some(p) = &r.primary {
        out.push_str(&format!(
            "primary: {p}
"
        ));
    }
    for replica in &r.replicas {
        out.push_str(&format!(
            "replica: {} {} replay lag {}
",
            replica.name,
            replica.address.as_deref().unwrap_or("?"),
            opt(replica.replay_lag_seconds.map(|l| format!("{l:.2} s")))
        ));
    }
    out.push_str(&match (&s.peer, &s.role) {
        (None, _) => "peer: not configured
"
        .into(),
        (Some(Err(e)), _) => format!(
            "peer: unreachable ({e})
"
        ),
        (Some(Ok(p)), _) => format!(
            "peer: {} epoch {}
",
            if p.writable { "writable" } else { "replica" },
            opt(p.epoch.as_ref().map(|e| e.epoch.to_string()))
        ),
    });
    if let Role::Fenced(by) = &s.role {
        out.push_str(&format!(
            "fenced by: epoch {} (timeline {}, instance {})
",
            by.epoch,
            by.timeline,
            by.instance.as_deref().unwrap_or("?")
        ));
    }
    out
}

/// Exit status of an active instance whose role changed (its database became a replica, or it
/// was fenced): `EX_TEMPFAIL`, so its supervisor starts it again, in the role it now has.
pub const EXIT_ROLE_CHANGED: u8 = 75;
