//! Waiting as a standby (or fenced) until the database is writable and this instance may act:
//! the role is checked every `dr.check_every`, and what a health probe or the console shows is
//! kept current meanwhile. Nothing here writes.

use tokio::sync::watch;

use super::Role;
use super::service::{Dr, Status};
use crate::lifecycle::{Notifier, Shutdown};

/// Waits until the instance is active; the status that made it so, or `None` when the process
/// began draining first. `shown` holds the latest status for the standby's health answers and
/// page. A fenced instance stays fenced even when its peer becomes unreachable: only its own
/// database turning into a replica (failback) makes it a standby, and only a promotion active.
pub async fn wait_active(
    dr: &Dr,
    shown: &watch::Sender<Option<Status>>,
    shutdown: &Shutdown,
    notifier: &Notifier,
) -> Option<Status> {
    let mut fenced = None;
    let mut last = "";
    loop {
        match dr.status().await {
            Ok(mut status) => {
                match (&status.role, &fenced) {
                    (Role::Fenced(by), _) => fenced = Some(by.clone()),
                    (Role::Active, Some(by)) => status.role = Role::Fenced(by.clone()),
                    (Role::Standby, _) => fenced = None,
                    (Role::Active, None) => return Some(status),
                }
                if status.role.name() != last {
                    last = status.role.name();
                    announce(&status, notifier);
                }
                shown.send_replace(Some(status));
            }
            Err(e) => tracing::warn!(error = %e, "could not read the database's role"),
        }
        tokio::select! {
            _ = tokio::time::sleep(dr.check_every()) => {}
            _ = shutdown.draining() => return None,
        }
    }
}

fn announce(status: &Status, notifier: &Notifier) {
    match &status.role {
        Role::Standby => {
            tracing::warn!(
                primary = status.replication.primary.as_deref().unwrap_or("unknown"),
                lag_seconds = status.replication.lag().unwrap_or(0.0),
                "the database is a replica: standing by until it is promoted"
            );
            notifier.status("standby: waiting for the database to be promoted");
        }
        Role::Fenced(by) => {
            tracing::error!(
                epoch = by.epoch,
                timeline = by.timeline,
                took_over_by = by.instance.as_deref().unwrap_or("?"),
                "fenced: the peer region took over after this one; this instance will not act"
            );
            notifier.status("fenced: the peer region took over");
        }
        Role::Active => {}
    }
}
