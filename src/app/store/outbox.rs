//! The outbox: mails queued by occurrences, claimed and sent by the mailer role with retries.
//! The state of an occurrence follows its mails.

use async_trait::async_trait;

use super::Result;
use crate::app::model::{Fence, Mail, MailState, Millis};

/// Mails to send and their delivery.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims due queued mails for sending, under the mailer's fence.
    async fn claim_mails(&self, limit: i64, lease_ms: i64, fence: &Fence) -> Result<Vec<Mail>>;
    /// The server accepted the mail; recorded only while `holder`'s claim on it stands.
    async fn mail_sent(&self, id: &str, holder: &str, reply: &str) -> Result<()>;
    /// Sending failed: retry at `retry_at`, or give up when `None`; only under `holder`'s claim.
    async fn mail_failed(
        &self,
        id: &str,
        holder: &str,
        reply: &str,
        retry_at: Option<Millis>,
    ) -> Result<()>;
    /// Gives claimed mails that were not attempted back to the queue (drain, lost role).
    async fn release_mails(&self, ids: &[String], holder: &str) -> Result<()>;
    /// Mails left `sending` by a mailer that died: back to the queue. This is the crash window —
    /// the server may have accepted them — and why each mail has a stable Message-ID.
    async fn recover_mails(&self) -> Result<u64>;
    /// The mails of an occurrence, by recipient.
    async fn mails_of(&self, occurrence_id: &str) -> Result<Vec<Mail>>;
    /// Mails in a state (all when `None`), newest first.
    async fn mails(&self, state: Option<MailState>, limit: i64) -> Result<Vec<Mail>>;
    /// Queues a sent or failed mail again.
    async fn resend_mail(&self, id: &str) -> Result<Option<Mail>>;
}
