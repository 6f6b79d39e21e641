//! The `mailer` role: sends queued mails one at a time, retrying with backoff on transient
//! failures, and records the server's reply per recipient. A mail is claimed (`sending`) before
//! the SMTP conversation and marked `sent` after it; if the process dies in between, the claim
//! lapses and the mail is sent again — the one window for a duplicate, which the stable
//! Message-ID lets mail clients recognise.

use std::sync::Arc;

use async_trait::async_trait;

use super::MailSettings;
use crate::app::bus::Bus;
use crate::app::cluster::Roles;
use crate::app::cluster::worker::RoleWorker;
use crate::app::config::MailConfig;
use crate::app::metrics::Metrics;
use crate::app::model::{Fence, LeaderRole, Mail, millis, now_ms};
use crate::app::secrets::Sealer;
use crate::app::store::Store;
use crate::lifecycle::Shutdown;

/// A claimed mail may be resent after this long without an answer.
const CLAIM_MS: i64 = 5 * 60_000;
/// Mails claimed per round; the role is re-checked before each send.
const BATCH: i64 = 5;

pub struct Mailer {
    pub store: Arc<dyn Store>,
    pub roles: Roles,
    pub bus: Bus,
    pub metrics: Arc<Metrics>,
    pub config: MailConfig,
    pub sealer: Sealer,
    /// Whether "no SMTP server" was already logged, so it is said once, not every second.
    pub warned_unconfigured: bool,
}

#[async_trait]
impl RoleWorker for Mailer {
    const ROLE: LeaderRole = LeaderRole::Mailer;

    async fn woken(&self) {
        self.bus.mail_woken().await
    }

    async fn round(&mut self, fence: &Fence, shutdown: &Shutdown) {
        match super::settings(self.store.as_ref(), &self.config, &self.sealer).await {
            Ok(Some(settings)) => {
                self.warned_unconfigured = false;
                self.send_batch(&settings, fence, shutdown).await;
            }
            Ok(None) => {
                if !self.warned_unconfigured {
                    tracing::warn!(
                        "mail is queued but no SMTP server is configured (mail.smtp_url or the console's mail settings)"
                    );
                    self.warned_unconfigured = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "mail settings unusable"),
        }
    }
}

impl Mailer {
    async fn send_batch(&self, settings: &MailSettings, fence: &Fence, shutdown: &Shutdown) {
        match self.store.recover_mails().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                mails = n,
                "mails left sending by a stopped mailer go out again (possible duplicates)"
            ),
            Err(e) => tracing::warn!(error = %e, "could not recover mails"),
        }
        let mails = match self.store.claim_mails(BATCH, CLAIM_MS, fence).await {
            Ok(m) => m,
            Err(e) => return tracing::warn!(error = %e, "could not claim mails"),
        };
        for (i, mail) in mails.iter().enumerate() {
            // Stop before the lease can have run out, and on shutdown; what was not attempted
            // goes straight back to the queue for whoever mails next.
            if self.roles.term(LeaderRole::Mailer) != Some(fence.term) || shutdown.is_draining() {
                let rest: Vec<String> = mails[i..].iter().map(|m| m.id.clone()).collect();
                if let Err(e) = self.store.release_mails(&rest, &fence.holder).await {
                    tracing::warn!(error = %e, "could not hand back claimed mails; their claims will lapse");
                }
                return;
            }
            self.deliver(settings, mail, &fence.holder).await;
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .mail
            .get_or_create(&crate::app::metrics::OutcomeLabels { outcome })
            .inc();
    }

    async fn deliver(&self, settings: &MailSettings, mail: &Mail, holder: &str) {
        let pdf = match &mail.job_id {
            Some(job) => match self.store.output(job).await {
                Ok(pdf) => pdf,
                Err(e) => {
                    tracing::warn!(mail = %mail.id, error = %e, "could not read the PDF; will retry");
                    let _ = self
                        .store
                        .release_mails(std::slice::from_ref(&mail.id), holder)
                        .await;
                    return;
                }
            },
            None => None,
        };
        if mail.job_id.is_some() && pdf.is_none() {
            return self
                .give_up(
                    mail,
                    holder,
                    "the report's PDF is gone (past render.retention)",
                )
                .await;
        }
        match super::send(settings, mail, pdf, self.config.timeout.get()).await {
            Ok(reply) => {
                self.count("sent");
                tracing::info!(mail = %mail.id, to = %mail.recipient, reply = %reply, "mail sent");
                if let Err(e) = self.store.mail_sent(&mail.id, holder, &reply).await {
                    // The server has it; if this record is lost the mail goes out again.
                    tracing::error!(mail = %mail.id, error = %e, "mail sent but not recorded");
                }
            }
            Err(f) if f.transient && mail.attempts < i64::from(self.config.max_attempts) => {
                let retry_at = now_ms() + backoff(&self.config, mail.attempts);
                self.count("retry");
                tracing::warn!(mail = %mail.id, to = %mail.recipient, attempt = mail.attempts, error = %f.message, "mail not sent; will retry");
                if let Err(e) = self
                    .store
                    .mail_failed(&mail.id, holder, &f.message, Some(retry_at))
                    .await
                {
                    tracing::warn!(mail = %mail.id, error = %e, "could not record the failure");
                }
            }
            Err(f) => self.give_up(mail, holder, &f.message).await,
        }
    }

    async fn give_up(&self, mail: &Mail, holder: &str, reason: &str) {
        self.count("failed");
        tracing::error!(mail = %mail.id, to = %mail.recipient, attempts = mail.attempts, error = %reason, "mail failed for good");
        if let Err(e) = self.store.mail_failed(&mail.id, holder, reason, None).await {
            tracing::warn!(mail = %mail.id, error = %e, "could not record the failure");
        }
    }
}

/// Delay before attempt `attempts + 1`: `retry_initial` doubling per attempt, at most `retry_max`.
pub fn backoff(config: &MailConfig, attempts: i64) -> i64 {
    let initial = millis(config.retry_initial.get());
    let max = millis(config.retry_max.get());
    let exp = attempts.clamp(1, 30) - 1;
    initial.saturating_mul(1 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Span;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let c = MailConfig {
            retry_initial: Span::secs(30),
            retry_max: Span::secs(300),
            ..MailConfig::default()
        };
        let delays: Vec<i64> = (1..=6).map(|a| backoff(&c, a) / 1000).collect();
        assert_eq!(delays, vec![30, 60, 120, 240, 300, 300]);
    }
}
