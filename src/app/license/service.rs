//! This instance's licence at run time: which pool of seats it draws from, whether it holds a
//! seat, and what that means for it. Activation runs at start and at every heartbeat; the
//! outcome is published as a [`Standing`] that the leader loop, the render pool and `/readyz`
//! follow. Nothing here ever stops the instance or refuses a request: an instance without a
//! seat keeps serving in the free tier (one render worker, no leader roles).
//!
//! Stale seats are released inside activation (any instance's, under the pool's lock) rather
//! than by a leader role: in a cluster whose only licensed instance died, every survivor is in
//! the free tier and holds no role, so a janitor-only release would never come.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::watch;

use crate::app::metrics::Metrics;
use crate::app::model::{Millis, millis};
use crate::app::render::RenderPool;
use crate::app::store::{Store, StoreError};
use crate::license::License;
use crate::license::Validity;
use crate::license::model::{
    Activation, Outcome, Seat, SeatEvent, SeatEventKind, SeatRequest, UNLICENSED_POOL,
    UNLICENSED_SEATS,
};
use crate::lifecycle::Shutdown;

/// How often a free-tier instance says so in its log.
const FREE_TIER_LOG_EVERY: Duration = Duration::from_secs(3600);
/// Seat events the HA page shows.
const HISTORY: i64 = 30;

/// What an instance runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Holds a seat of a valid licence.
    Licensed,
    /// Holds the one seat Quire has without a (valid) key: everything, on one server.
    SingleServer,
    /// Holds no seat: serves everything, with one render worker and no leader roles.
    FreeTier,
}

impl Tier {
    /// As `/readyz` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Licensed => "licensed",
            Tier::SingleServer => "single server",
            Tier::FreeTier => "free tier",
        }
    }
}

/// Where an instance draws its seat from, given its key and the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub pool: String,
    pub capacity: u32,
    /// What a seat of this pool makes the instance.
    pub seated: Tier,
    /// Why the licence needs attention (expiring, in grace, expired, not yet valid).
    pub notice: Option<String>,
}

/// The pool `license` (if any) draws from on the day of `now`: the licence's own while it
/// licenses, else the one seat of running without a key.
pub fn plan(license: Option<&License>, now: Timestamp) -> Plan {
    let unlicensed = |notice| Plan {
        pool: UNLICENSED_POOL.to_owned(),
        capacity: UNLICENSED_SEATS,
        seated: Tier::SingleServer,
        notice,
    };
    let Some(l) = license else {
        return unlicensed(None);
    };
    let c = l.claims();
    let name = format!("licence {} ({})", c.id, c.customer);
    let expires = c.expires_at.map(|d| d.to_string()).unwrap_or_default();
    let fallback = "instances run as without a key: one licensed, the others in the free tier";
    let licensed = |notice| Plan {
        pool: c.id.clone(),
        capacity: l.seats(),
        seated: Tier::Licensed,
        notice,
    };
    match l.state_at(now) {
        Validity::Valid => licensed(None),
        Validity::ExpiringSoon { days } => licensed(Some(format!(
            "{name} expires on {expires}: {days} day(s) left; renew it"
        ))),
        Validity::InGrace { days_left } => licensed(Some(format!(
            "{name} expired on {expires}: {days_left} day(s) of grace left, then {fallback}"
        ))),
        Validity::Expired => unlicensed(Some(format!(
            "{name} expired on {expires} and its grace period ended: {fallback}"
        ))),
        Validity::NotYetValid => unlicensed(Some(format!(
            "{name} is valid from {}: until then {fallback}",
            c.not_before
        ))),
    }
}

/// This instance's licence as last decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    pub tier: Tier,
    pub pool: String,
    pub capacity: u32,
    pub in_use: u32,
    /// Why the instance is in the free tier.
    pub reason: Option<String>,
    /// Why the licence needs attention.
    pub notice: Option<String>,
    /// False until the first activation answered.
    #[serde(skip)]
    decided: bool,
}

impl Standing {
    fn initial(plan: &Plan) -> Standing {
        Standing {
            tier: Tier::FreeTier,
            pool: plan.pool.clone(),
            capacity: plan.capacity,
            in_use: 0,
            reason: Some("no seat yet: the first activation has not run".to_owned()),
            notice: plan.notice.clone(),
            decided: false,
        }
    }

    fn decided(plan: &Plan, activation: &Activation, instance_name: &str) -> Standing {
        let reason = match &activation.outcome {
            Outcome::Full => Some(format!(
                "all {} seats of {} are in use",
                plan.capacity,
                pool_name(&plan.pool)
            )),
            Outcome::NameInUse { holder } => Some(format!(
                "another running instance named {instance_name:?} ({holder}) holds this name's seat; \
                 give each instance its own instance_name"
            )),
            _ => None,
        };
        Standing {
            tier: if activation.outcome.licensed() {
                plan.seated
            } else {
                Tier::FreeTier
            },
            pool: plan.pool.clone(),
            capacity: plan.capacity,
            in_use: activation.in_use,
            reason,
            notice: plan.notice.clone(),
            decided: true,
        }
    }

    /// Whether this instance may take leader roles.
    pub fn may_lead(&self) -> bool {
        self.tier != Tier::FreeTier
    }
}

fn pool_name(pool: &str) -> String {
    if pool == UNLICENSED_POOL {
        "running without a licence key".to_owned()
    } else {
        format!("licence {pool}")
    }
}

/// Activation's timing.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How often the seat is activated (the heartbeat interval).
    pub every: Duration,
    /// A seat holder silent this long is gone (the registry's `stale_after`).
    pub alive: Duration,
    /// Seats unseen this long are released (`license.release_after`).
    pub release_after: Duration,
}

/// Who this instance is, as seats know it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub started_at: Millis,
}

#[derive(Clone)]
pub struct Licensing {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    pool: RenderPool,
    metrics: Arc<Metrics>,
    license: Option<License>,
    me: Identity,
    settings: Settings,
    standing: watch::Sender<Standing>,
}

/// Everything the HA page and `GET /api/v1/license` show.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The licence this instance runs with (none without a key).
    pub license: Option<LicenseView>,
    /// This instance's standing.
    pub standing: Standing,
    pub now: Millis,
    pub seats: Vec<SeatView>,
    pub history: Vec<SeatEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LicenseView {
    pub id: String,
    pub customer: String,
    pub servers: u32,
    pub allowance: u32,
    pub expires_at: Option<String>,
    pub not_before: String,
    pub features: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeatView {
    #[serde(flatten)]
    pub seat: Seat,
    /// Unseen for longer than an instance may be silent: its holder is gone, and an admin may
    /// release it before `license.release_after` does.
    pub stale: bool,
    /// When it will be released unless seen again.
    pub releases_at: Millis,
}

/// Why a manual release failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("no seat is held under instance {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Licensing {
    pub fn new(
        store: Arc<dyn Store>,
        pool: RenderPool,
        metrics: Arc<Metrics>,
        license: Option<License>,
        me: Identity,
        settings: Settings,
    ) -> Licensing {
        let initial = Standing::initial(&plan(license.as_ref(), Timestamp::now()));
        let (standing, _) = watch::channel(initial);
        let licensing = Licensing {
            inner: Arc::new(Inner {
                store,
                pool,
                metrics,
                license,
                me,
                settings,
                standing,
            }),
        };
        licensing.publish_expiry();
        licensing
    }

    /// This instance's standing now.
    pub fn standing(&self) -> Standing {
        self.inner.standing.borrow().clone()
    }

    /// Completes when the standing changes.
    pub fn subscribe(&self) -> watch::Receiver<Standing> {
        self.inner.standing.subscribe()
    }

    /// Activates this instance's seat once; logs the outcome.
    pub async fn activate(&self) {
        let plan = plan(self.inner.license.as_ref(), Timestamp::now());
        let previous = self.standing();
        if previous.pool != plan.pool && previous.tier != Tier::FreeTier {
            // The licence stopped (or started) licensing: the old pool's seat goes back.
            let detail = format!("now drawing from {}", pool_name(&plan.pool));
            if let Err(e) = self
                .inner
                .store
                .release_seats(
                    &self.inner.me.id,
                    SeatEventKind::Released,
                    &self.inner.me.id,
                    Some(&detail),
                )
                .await
            {
                tracing::warn!(error = %e, "could not release the seat of the previous licence");
            }
        }
        let request = self.request(&plan);
        match self.inner.store.activate_seat(&request).await {
            Ok(activation) => self.decide(&plan, &activation),
            // Keep the standing: a database that does not answer is no reason to change tier.
            Err(e) => tracing::warn!(error = %e, "licence activation failed"),
        }
    }

    fn request(&self, plan: &Plan) -> SeatRequest {
        let me = &self.inner.me;
        SeatRequest {
            pool: plan.pool.clone(),
            capacity: plan.capacity,
            instance_id: me.id.clone(),
            instance_name: me.name.clone(),
            started_at: me.started_at,
            alive_ms: millis(self.inner.settings.alive),
            release_after_ms: millis(self.inner.settings.release_after),
        }
    }

    fn decide(&self, plan: &Plan, activation: &Activation) {
        for seat in &activation.expired {
            tracing::warn!(
                instance = %seat.instance_name,
                holder = %seat.instance_id,
                "released the licence seat of an instance silent for longer than license.release_after"
            );
        }
        let standing = Standing::decided(plan, activation, &self.inner.me.name);
        let m = &self.inner.metrics;
        m.license_free_tier
            .set(i64::from(standing.tier == Tier::FreeTier));
        m.license_seats.set(i64::from(standing.capacity));
        m.license_seats_in_use.set(i64::from(standing.in_use));
        self.inner.pool.set_limit(match standing.tier {
            Tier::FreeTier => 1,
            _ => usize::MAX,
        });
        self.inner.standing.send_if_modified(|current| {
            let tier_changed = current.tier != standing.tier;
            // The first decision is logged by whoever started the instance (`log_standing`).
            if tier_changed && current.decided {
                log_tier(&standing);
            }
            *current = standing;
            // Waking the leader loop on a seat count alone is pointless.
            tier_changed
        });
    }

    /// The expiry as a metric, so alerting needs no log scraping.
    fn publish_expiry(&self) {
        let Some(l) = &self.inner.license else {
            return;
        };
        let Some(end) = l.claims().expires_at.and_then(|d| d.tomorrow().ok()) else {
            return;
        };
        if let Ok(ts) = end.to_zoned(jiff::tz::TimeZone::UTC) {
            self.inner
                .metrics
                .license_expiry
                .get_or_create(&crate::app::metrics::LicenseLabels {
                    license: l.claims().id.clone(),
                })
                .set(ts.timestamp().as_second());
        }
    }

    /// Activates at every heartbeat until shutdown; says hourly that the instance is in the
    /// free tier or that the licence needs attention. Releases the seat when
    /// the instance stops, so a replacement needs no grace period.
    pub fn spawn(&self, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.settings.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut said = Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => this.activate().await,
                    _ = shutdown.stopped() => break,
                }
                let s = this.standing();
                if said.elapsed() >= FREE_TIER_LOG_EVERY
                    && (s.tier == Tier::FreeTier || s.notice.is_some())
                {
                    said = Instant::now();
                    this.log_standing();
                }
            }
            let me = &this.inner.me.id;
            if let Err(e) = this
                .inner
                .store
                .release_seats(me, SeatEventKind::Stopped, me, None)
                .await
            {
                tracing::debug!(error = %e, "could not release the licence seat");
            }
        })
    }

    /// Says what the instance runs as: at start, and hourly (a free tier and a licence that
    /// needs attention are never silent for long).
    pub fn log_standing(&self) {
        let s = self.standing();
        if let Some(notice) = &s.notice {
            tracing::warn!(notice = %notice, "the licence needs attention");
        }
        log_tier(&s);
    }

    /// The licence, the seats and their history, for the HA page and the API.
    pub async fn overview(&self) -> Result<Overview, StoreError> {
        let (now, seats) = self.inner.store.seats().await?;
        let history = self.inner.store.seat_events(HISTORY).await?;
        let alive = millis(self.inner.settings.alive);
        let release = millis(self.inner.settings.release_after);
        Ok(Overview {
            license: self.inner.license.as_ref().map(view),
            standing: self.standing(),
            now,
            seats: seats
                .into_iter()
                .map(|seat| SeatView {
                    stale: now - seat.seen_at > alive,
                    releases_at: seat.seen_at + release,
                    seat,
                })
                .collect(),
            history,
        })
    }

    /// An admin releases the seat of instance name or id `instance` at once; recorded with who.
    pub async fn release(&self, instance: &str, by: &str) -> Result<Vec<Seat>, ReleaseError> {
        let released = self
            .inner
            .store
            .release_seats(
                instance,
                SeatEventKind::Released,
                by,
                Some("released by an admin"),
            )
            .await?;
        if released.is_empty() {
            return Err(ReleaseError::NotFound(instance.to_owned()));
        }
        tracing::warn!(instance, by, "licence seat released by an admin");
        Ok(released)
    }

    /// How the HA page names the licence of this instance.
    pub fn label(&self) -> String {
        self.inner.license.as_ref().map_or_else(
            || "no key".to_owned(),
            |l| format!("{} ({})", l.claims().id, l.claims().customer),
        )
    }
}

fn log_tier(s: &Standing) {
    match s.tier {
        Tier::FreeTier => tracing::warn!(
            reason = s.reason.as_deref().unwrap_or(""),
            "free tier: this instance keeps serving with one render worker and no leader roles"
        ),
        tier => tracing::info!(
            tier = tier.as_str(),
            pool = %s.pool,
            seats_in_use = s.in_use,
            seats = s.capacity,
            "licence seat held: all render workers, leader roles allowed"
        ),
    }
}

fn view(l: &License) -> LicenseView {
    let c = l.claims();
    LicenseView {
        id: c.id.clone(),
        customer: c.customer.clone(),
        servers: c.servers,
        allowance: c.allowance,
        expires_at: c.expires_at.map(|d| d.to_string()),
        not_before: c.not_before.to_string(),
        features: c.features.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::signing::{test_claims, test_license};
    use jiff::civil::{Date, date};

    fn license(expires_at: Option<Date>) -> License {
        test_license(&crate::license::Claims {
            id: "L-7".to_owned(),
            not_before: date(2026, 2, 1),
            expires_at,
            servers: 2,
            ..test_claims()
        })
    }

    fn at(ts: &str) -> Timestamp {
        ts.parse().unwrap()
    }

    #[test]
    fn without_a_key_one_seat_runs_everything() {
        let p = plan(None, at("2026-06-01T00:00:00Z"));
        assert_eq!(p.pool, UNLICENSED_POOL);
        assert_eq!(p.capacity, 1);
        assert_eq!(p.seated, Tier::SingleServer);
        assert_eq!(p.notice, None);
    }

    #[test]
    fn a_valid_licence_draws_servers_plus_allowance_from_its_own_pool() {
        let l = license(None);
        let p = plan(Some(&l), at("2026-06-01T00:00:00Z"));
        assert_eq!(
            (p.pool.as_str(), p.capacity, p.seated),
            ("L-7", 3, Tier::Licensed)
        );
        assert_eq!(p.notice, None);
    }

    #[test]
    fn expiring_and_grace_license_with_a_notice_then_fall_back_to_no_key() {
        let l = license(Some(date(2026, 6, 30)));
        let soon = plan(Some(&l), at("2026-06-20T00:00:00Z"));
        assert_eq!(soon.pool, "L-7");
        assert!(
            soon.notice
                .unwrap()
                .contains("expires on 2026-06-30: 11 day(s) left")
        );
        let grace = plan(Some(&l), at("2026-07-05T00:00:00Z"));
        assert_eq!(grace.pool, "L-7");
        assert!(grace.notice.unwrap().contains("10 day(s) of grace left"));
        let expired = plan(Some(&l), at("2026-07-20T00:00:00Z"));
        assert_eq!(expired.pool, UNLICENSED_POOL);
        assert_eq!(expired.seated, Tier::SingleServer);
        assert!(expired.notice.unwrap().contains("grace period ended"));
    }

    #[test]
    fn a_licence_not_yet_valid_runs_as_without_a_key() {
        let l = license(None);
        let p = plan(Some(&l), at("2026-01-15T00:00:00Z"));
        assert_eq!(p.pool, UNLICENSED_POOL);
        assert!(p.notice.unwrap().contains("valid from 2026-02-01"));
    }

    #[test]
    fn the_standing_says_why_an_instance_is_in_the_free_tier() {
        let p = plan(Some(&license(None)), at("2026-06-01T00:00:00Z"));
        let full = Activation {
            outcome: Outcome::Full,
            in_use: 3,
            expired: vec![],
        };
        let s = Standing::decided(&p, &full, "node4");
        assert_eq!(s.tier, Tier::FreeTier);
        assert!(!s.may_lead());
        assert_eq!(
            s.reason.as_deref(),
            Some("all 3 seats of licence L-7 are in use")
        );
        let twin = Activation {
            outcome: Outcome::NameInUse {
                holder: "node4-abc".into(),
            },
            in_use: 1,
            expired: vec![],
        };
        assert!(
            Standing::decided(&p, &twin, "node4")
                .reason
                .unwrap()
                .contains("give each instance its own instance_name")
        );
        let held = Activation {
            outcome: Outcome::Held,
            in_use: 3,
            expired: vec![],
        };
        let s = Standing::decided(&p, &held, "node1");
        assert_eq!((s.tier, s.reason.as_deref()), (Tier::Licensed, None));
        assert!(s.may_lead());
    }
}
