//! The instance registry: every process registers a fresh id with its version, address, start
//! time and fingerprints of the settings all instances must share, then heartbeats on the
//! database clock. The overview computes who is active, stale or stopped, and what an operator
//! should be warned about.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::availability::Availability;
use crate::app::bus::{Bus, Hint};
use crate::app::config::AppConfig;
use crate::app::model::{Handover, InstanceInfo, InstanceRow, Lease, Millis, millis};
use crate::app::store::{Store, StoreError};
use crate::config::Secret;
use crate::lifecycle::Shutdown;

/// The flag holding the cluster's random fingerprint salt, set by the first instance to start.
pub const SALT_FLAG: &str = "fingerprint_salt";

/// A fingerprint of a secret: enough to tell two apart, useless to recover it. Keyed with the
/// cluster's salt, so a fingerprint seen on the HA page cannot be checked against guessed keys
/// without the database, nor matched across clusters.
pub fn fingerprint(secret: Option<&Secret>, salt: &str) -> String {
    let Some(s) = secret else {
        return "none".to_owned();
    };
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(salt.as_bytes()) else {
        return "none".to_owned();
    };
    mac.update(s.expose().as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..6])
}

/// The instance's name: `instance_name`, else its id without the random suffix (the host name
/// or App Service's `WEBSITE_INSTANCE_ID`), so a restarted process keeps it.
pub fn instance_name(config: &AppConfig, id: &str) -> String {
    config
        .instance_name
        .clone()
        .unwrap_or_else(|| id.rsplit_once('-').map_or(id, |(n, _)| n).to_owned())
}

/// What this process registers.
pub fn describe(
    config: &AppConfig,
    id: &str,
    address: String,
    started_at: Millis,
    schema_version: i64,
    salt: &str,
    license: String,
) -> InstanceInfo {
    InstanceInfo {
        id: id.to_owned(),
        name: instance_name(config, id),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        build: option_env!("QUIRE_GIT_REV").unwrap_or("dev").to_owned(),
        address,
        started_at,
        key_fingerprint: fingerprint(config.encryption.key.as_ref(), salt),
        license_fingerprint: fingerprint(config.license.key.as_ref(), salt),
        license,
        schema_version,
    }
}

/// Heartbeats until stop; follows admin drain requests read back from the registry (the NATS
/// hint only makes them faster). Marks the instance stopped on the way out.
pub fn spawn_heartbeat(
    store: Arc<dyn Store>,
    info: InstanceInfo,
    availability: Availability,
    bus: Bus,
    every: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hints = bus.hints();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => beat(store.as_ref(), &info, &availability, &bus, &shutdown).await,
                hint = hints.recv() => {
                    if let Ok(Hint::Drain { id, drain }) = hint && id == info.id {
                        apply_drain(&availability, drain);
                    }
                }
                _ = shutdown.stopped() => break,
            }
        }
        if let Err(e) = store.instance_stopped(&info.id).await {
            tracing::debug!(error = %e, "could not mark the instance stopped");
        }
    })
}

async fn beat(
    store: &dyn Store,
    info: &InstanceInfo,
    availability: &Availability,
    bus: &Bus,
    shutdown: &Shutdown,
) {
    let draining = !availability.is_open() || shutdown.is_draining();
    match store.heartbeat(&info.id, draining, bus.nats_state()).await {
        Ok(Some(requested)) => apply_drain(availability, requested),
        // Forgotten while it could not reach the database: register again.
        Ok(None) => {
            if let Err(e) = store.register_instance(info).await {
                tracing::warn!(error = %e, "could not register the instance again");
            }
        }
        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
    }
}

fn apply_drain(availability: &Availability, drain: bool) {
    if availability.set_admin_drain(drain) {
        if drain {
            tracing::warn!(
                "drained by an admin: no new work, leader roles released, readiness off"
            );
        } else {
            tracing::info!("resumed by an admin: taking work again");
        }
    }
}

/// Timing thresholds of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub stale_after: Duration,
}

/// One instance as the HA page shows it.
#[derive(Debug, Clone)]
pub struct InstanceStatus {
    pub id: String,
    pub name: String,
    pub version: String,
    pub build: String,
    pub address: String,
    /// `active`, `stale` or `stopped`.
    pub state: &'static str,
    pub you: bool,
    pub started_at: Millis,
    pub uptime_seconds: i64,
    pub last_heartbeat: Millis,
    pub heartbeat_age_ms: i64,
    pub draining: bool,
    pub drain_requested: bool,
    pub nats: String,
    pub roles: Vec<String>,
    pub key_fingerprint: String,
    pub license_fingerprint: String,
    /// The licence it runs with: id and customer, or `no key`.
    pub license: String,
    pub schema_version: i64,
}

/// Everything the HA page shows; `http::cluster` gives it its JSON shape.
#[derive(Debug, Clone)]
pub struct Overview {
    pub now: Millis,
    pub you: String,
    pub instances: Vec<InstanceStatus>,
    pub leases: Vec<LeaseStatus>,
    pub handovers: Vec<HandoverSpan>,
    pub warnings: Vec<String>,
}

/// A leader role's lease now.
#[derive(Debug, Clone)]
pub struct LeaseStatus {
    pub role: String,
    pub holder: Option<String>,
    pub term: i64,
    pub expires_at: Millis,
    pub acquired_at: Option<Millis>,
}

/// One holder's time in a role.
#[derive(Debug, Clone)]
pub struct HandoverSpan {
    pub role: String,
    pub term: i64,
    pub holder: String,
    pub from: Millis,
    pub until: Option<Millis>,
    pub ended: Option<String>,
}

/// Asks instance `id` to drain (or resume): recorded in the registry, which the instance reads
/// back at its next heartbeat, and hinted on the bus so it acts at once. False when there is no
/// such instance.
pub async fn request_drain(
    store: &dyn Store,
    bus: &Bus,
    id: &str,
    drain: bool,
) -> Result<bool, StoreError> {
    if !store.request_drain(id, drain).await? {
        return Ok(false);
    }
    bus.request_drain(id, drain);
    Ok(true)
}

/// Everything the HA Instances page shows.
pub async fn overview(
    store: &dyn Store,
    me: &str,
    t: Thresholds,
    ha: bool,
) -> Result<Overview, StoreError> {
    let (now, rows) = store.instances().await?;
    let leases = store.leases().await?;
    let history = store.lease_history(30).await?;
    let stale_ms = millis(t.stale_after);
    let instances: Vec<InstanceStatus> = rows
        .iter()
        .map(|r| status(r, &leases, now, stale_ms, me))
        .collect();
    let warnings = warnings(&instances, ha);
    Ok(Overview {
        now,
        you: me.to_owned(),
        instances,
        leases: leases
            .into_iter()
            .map(|l| LeaseStatus {
                role: l.role,
                holder: l.holder.filter(|_| l.expires_at > now),
                term: l.term,
                expires_at: l.expires_at,
                acquired_at: l.acquired_at,
            })
            .collect(),
        handovers: history.into_iter().map(handover_span).collect(),
        warnings,
    })
}

fn handover_span(h: Handover) -> HandoverSpan {
    HandoverSpan {
        role: h.role,
        term: h.term,
        holder: h.holder,
        from: h.held_from,
        until: h.held_until,
        ended: h.ended,
    }
}

fn status(
    r: &InstanceRow,
    leases: &[Lease],
    now: Millis,
    stale_ms: i64,
    me: &str,
) -> InstanceStatus {
    let age = now - r.heartbeat_at;
    let state = if r.stopped_at.is_some() {
        "stopped"
    } else if age > stale_ms {
        "stale"
    } else {
        "active"
    };
    let roles = leases
        .iter()
        .filter(|l| l.holder.as_deref() == Some(r.info.id.as_str()) && l.expires_at > now)
        .map(|l| l.role.clone())
        .collect();
    InstanceStatus {
        id: r.info.id.clone(),
        name: r.info.name.clone(),
        version: r.info.version.clone(),
        build: r.info.build.clone(),
        address: r.info.address.clone(),
        state,
        you: r.info.id == me,
        started_at: r.info.started_at,
        uptime_seconds: (now - r.info.started_at).max(0) / 1000,
        last_heartbeat: r.heartbeat_at,
        heartbeat_age_ms: age.max(0),
        draining: r.draining,
        drain_requested: r.drain_requested,
        nats: r.nats.clone(),
        roles,
        key_fingerprint: r.info.key_fingerprint.clone(),
        license_fingerprint: r.info.license_fingerprint.clone(),
        license: r.info.license.clone(),
        schema_version: r.info.schema_version,
    }
}

/// What an operator should look at: mixed versions, settings that differ between instances,
/// NATS trouble, instances gone silent.
pub fn warnings(instances: &[InstanceStatus], ha: bool) -> Vec<String> {
    let active: Vec<&InstanceStatus> = instances.iter().filter(|i| i.state == "active").collect();
    let mut out = Vec::new();
    let distinct = |f: fn(&InstanceStatus) -> &str| {
        let mut v: Vec<&str> = active.iter().map(|i| f(i)).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let versions = distinct(|i| i.version.as_str());
    if versions.len() > 1 {
        out.push(format!(
            "version skew: instances run {}",
            versions.join(", ")
        ));
    }
    if distinct(|i| i.key_fingerprint.as_str()).len() > 1 {
        out.push(
            "settings mismatch: instances have different encryption keys (encryption.key)"
                .to_owned(),
        );
    }
    if distinct(|i| i.license_fingerprint.as_str()).len() > 1 {
        let keys = distinct(|i| i.license.as_str());
        out.push(format!(
            "settings mismatch: instances have different licence keys (license.key): {}",
            keys.join("; ")
        ));
    }
    let mut schemas: Vec<i64> = active.iter().map(|i| i.schema_version).collect();
    schemas.sort_unstable();
    schemas.dedup();
    if schemas.len() > 1 {
        out.push(format!(
            "schema versions differ: {schemas:?} (a rolling upgrade in progress?)"
        ));
    }
    if ha {
        let degraded: Vec<&str> = active
            .iter()
            .filter(|i| i.nats != "connected")
            .map(|i| i.id.as_str())
            .collect();
        if !degraded.is_empty() {
            out.push(format!(
                "NATS degraded on {}: progress and wake-ups fall back to the database",
                degraded.join(", ")
            ));
        }
    }
    let stale: Vec<&str> = instances
        .iter()
        .filter(|i| i.state == "stale")
        .map(|i| i.id.as_str())
        .collect();
    if !stale.is_empty() {
        out.push(format!(
            "stale instances (no heartbeat): {}",
            stale.join(", ")
        ));
    }
    out
}

/// `x.y.z` versions compare numerically, part by part.
pub fn newer(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    };
    parts(a) > parts(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, version: &str, key: &str, state: &'static str, nats: &str) -> InstanceStatus {
        InstanceStatus {
            id: id.into(),
            name: id.into(),
            version: version.into(),
            build: "dev".into(),
            address: "a".into(),
            state,
            you: false,
            started_at: 0,
            uptime_seconds: 0,
            last_heartbeat: 0,
            heartbeat_age_ms: 0,
            draining: false,
            drain_requested: false,
            nats: nats.into(),
            roles: vec![],
            key_fingerprint: key.into(),
            license_fingerprint: "none".into(),
            license: "no key".into(),
            schema_version: 2,
        }
    }

    #[test]
    fn different_licence_keys_are_named_by_licence_not_key() {
        let mut a = inst("a", "0.1.0", "k1", "active", "connected");
        let mut b = inst("b", "0.1.0", "k1", "active", "connected");
        (a.license_fingerprint, a.license) = ("f1".into(), "L-1 (Acme)".into());
        (b.license_fingerprint, b.license) = ("f2".into(), "L-2 (Acme)".into());
        let w = warnings(&[a, b], true);
        assert!(
            w.iter().any(
                |w| w.ends_with("different licence keys (license.key): L-1 (Acme); L-2 (Acme)")
            ),
            "{w:?}"
        );
    }

    #[test]
    fn warns_about_skew_mismatch_nats_and_stale() {
        let all = vec![
            inst("a", "0.1.0", "k1", "active", "connected"),
            inst("b", "0.2.0", "k2", "active", "disconnected"),
            inst("c", "0.1.0", "k1", "stale", "connected"),
        ];
        let w = warnings(&all, true);
        assert!(w.iter().any(|w| w.starts_with("version skew")), "{w:?}");
        assert!(
            w.iter().any(|w| w.contains("different encryption keys")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|w| w.starts_with("NATS degraded on b")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.contains("stale instances (no heartbeat): c")),
            "{w:?}"
        );
        let fine = vec![
            inst("a", "0.1.0", "k1", "active", "connected"),
            inst("b", "0.1.0", "k1", "active", "connected"),
        ];
        assert!(warnings(&fine, true).is_empty());
    }

    #[test]
    fn versions_compare_numerically_and_fingerprints_hide_secrets() {
        assert!(newer("0.10.0", "0.9.3"));
        assert!(!newer("0.1.0", "0.1.0"));
        let key = Secret::new("0123456789abcdef0123456789abcdef");
        let f = fingerprint(Some(&key), "salt-a");
        assert_eq!(f.len(), 12);
        assert!(!f.contains("0123456789"));
        assert_eq!(
            f,
            fingerprint(Some(&key), "salt-a"),
            "stable within a cluster"
        );
        assert_ne!(
            f,
            fingerprint(Some(&key), "salt-b"),
            "keyed by the cluster's salt"
        );
        let other = Secret::new("fedcba9876543210fedcba9876543210");
        assert_ne!(f, fingerprint(Some(&other), "salt-a"));
        assert_eq!(fingerprint(None, "salt-a"), "none");
    }
}
