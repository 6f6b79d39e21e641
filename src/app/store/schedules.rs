//! Schedules and their occurrences: due schedules fire (an occurrence and a render job per fire
//! time) under the scheduler's fence, and rendered occurrences move on to review or delivery.

use async_trait::async_trait;

use super::Result;
use crate::app::model::{
    Fence, Firing, Millis, NewMail, Occurrence, OccurrenceState, Rendered, Schedule, ScheduleSpec,
};

/// Schedules and occurrences.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates a schedule; `Conflict` on `name` when the name is taken.
    async fn create_schedule(
        &self,
        spec: &ScheduleSpec,
        next_fire_at: Option<Millis>,
        by: Option<&str>,
    ) -> Result<Schedule>;
    /// Replaces a schedule's spec; `None` when there is no such schedule.
    async fn update_schedule(
        &self,
        id: &str,
        spec: &ScheduleSpec,
        next_fire_at: Option<Millis>,
    ) -> Result<Option<Schedule>>;
    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<Schedule>>;
    /// By id or by name.
    async fn schedule(&self, id_or_name: &str) -> Result<Option<Schedule>>;
    async fn delete_schedule(&self, id: &str) -> Result<bool>;
    /// Enabled schedules whose next fire time has come, with the database clock.
    async fn due_schedules(&self, limit: i64) -> Result<(Millis, Vec<Schedule>)>;
    /// In one transaction, under the scheduler's fence: records the firings (occurrences and
    /// their render jobs) and moves the schedule to `new_next`. False, with nothing written, when
    /// the fence no longer holds or the schedule moved on meanwhile (another leader fired it).
    async fn fire_schedule(
        &self,
        schedule_id: &str,
        expected_next: Millis,
        firings: &[Firing],
        new_next: Option<Millis>,
        skipped: i64,
        fence: &Fence,
    ) -> Result<bool>;
    /// A schedule's occurrences, newest fire time first.
    async fn occurrences(&self, schedule_id: &str, limit: i64) -> Result<Vec<Occurrence>>;
    async fn occurrence(&self, id: &str) -> Result<Option<Occurrence>>;
    /// Occurrences in `rendering` whose job has finished.
    async fn rendered_occurrences(&self, limit: i64) -> Result<Vec<Rendered>>;
    /// Moves a rendered occurrence on (to held, delivering with `mails`, or failed), under the
    /// scheduler's fence; false when it was moved already or the fence is gone.
    async fn settle_occurrence(
        &self,
        id: &str,
        state: OccurrenceState,
        mails: &[NewMail],
        error: Option<&str>,
        fence: &Fence,
    ) -> Result<bool>;
    /// Approves (queueing `mails`) or rejects a held occurrence; `None` when it is not held.
    async fn review_occurrence(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        mails: &[NewMail],
    ) -> Result<Option<Occurrence>>;
}
