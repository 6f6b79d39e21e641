//! One shape for the work of every leader role. A [`RoleWorker`] does one round of its work
//! given the [`Fence`] of the term it holds; [`RoleDriver`] drives the rounds: on a timer, on the
//! worker's own wake-up hint, only while this instance holds the role, and until draining
//! starts. The fence is taken fresh for every round, so a round never acts under a term it lost.

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::task::TaskTracker;

use super::leases::Roles;
use crate::app::model::{Fence, LeaderRole};
use crate::lifecycle::Shutdown;

#[async_trait]
pub trait RoleWorker: Send + Sync + 'static {
    /// The role whose holder does this work.
    const ROLE: LeaderRole;

    /// Rounds run at least this often while the role is held.
    fn every(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// Completes when there may be work before the next tick (a hint on the bus). Never, unless
    /// the worker listens for one.
    async fn woken(&self) {
        std::future::pending::<()>().await
    }

    /// One round of work. Writes check `fence` in their own transaction; long rounds check
    /// [`Roles::term`] again before each step that acts.
    async fn round(&mut self, fence: &Fence, shutdown: &Shutdown);
}

/// What drives the workers of every role on this instance.
pub struct RoleDriver {
    pub roles: Roles,
    pub instance: String,
    pub tasks: TaskTracker,
    pub shutdown: Shutdown,
}

impl RoleDriver {
    /// Runs `worker`'s rounds until draining starts.
    pub fn spawn<W: RoleWorker>(&self, mut worker: W) {
        let roles = self.roles.clone();
        let instance = self.instance.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(worker.every());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = worker.woken() => {}
                    _ = shutdown.draining() => return,
                }
                let Some(term) = roles.term(W::ROLE) else {
                    continue;
                };
                worker
                    .round(&Fence::new(W::ROLE, &instance, term), &shutdown)
                    .await;
            }
        });
    }
}
