//! The outbox. Mails are claimed under the mailer's fence; each change of a mail's state also moves
//! its occurrence on (`follow_mails`), in the same transaction.

use async_trait::async_trait;

use super::SqlStore;
use super::cluster::fenced;
use super::db::{Backend, Row, Sql, Tx};
use crate::app::model::{Fence, Mail, MailState, Millis, NewMail};
use crate::app::store::{OutboxStore, Result, StoreError};

const MAIL_COLS: &str = "id, occurrence_id, job_id, recipient, subject, body, attachment_name, \
    message_id, state, attempts, next_attempt_at, last_reply, sent_at, created_at";

fn mail_row(r: &impl Row) -> Result<Mail> {
    let state: String = r.try_get("state")?;
    Ok(Mail {
        id: r.try_get("id")?,
        occurrence_id: r.try_get("occurrence_id")?,
        job_id: r.try_get("job_id")?,
        recipient: r.try_get("recipient")?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        attachment_name: r.try_get("attachment_name")?,
        message_id: r.try_get("message_id")?,
        state: MailState::parse(&state).ok_or(StoreError::Corrupt("outbox.state"))?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_reply: r.try_get("last_reply")?,
        sent_at: r.try_get("sent_at")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Queues mails, due now.
pub(super) async fn insert_mails<B: Backend>(tx: &mut Tx<B>, mails: &[NewMail]) -> Result<()> {
    static INSERT: Sql = Sql::new(&[
        "INSERT INTO outbox (id, occurrence_id, job_id, recipient, subject, body, \
         attachment_name, message_id, state, attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, {now}, {now}, {now})",
    ]);
    for m in mails {
        tx.query(&INSERT)
            .bind(&m.id)
            .bind(&m.occurrence_id)
            .bind(&m.job_id)
            .bind(&m.recipient)
            .bind(&m.subject)
            .bind(&m.body)
            .bind(&m.attachment_name)
            .bind(&m.message_id)
            .execute()
            .await?;
    }
    Ok(())
}

/// Moves an occurrence on after a change of its mails: delivering while any is on its way,
/// failed if any (or a burst row) failed for good, delivered when all are sent.
pub(super) async fn follow_mails<B: Backend>(tx: &mut Tx<B>, occurrence_id: &str) -> Result<()> {
    tx.query(
        "UPDATE occurrences SET state = CASE \
         WHEN EXISTS (SELECT 1 FROM outbox WHERE occurrence_id = $1 \
         AND state IN ('queued', 'sending')) THEN 'delivering' \
         WHEN EXISTS (SELECT 1 FROM outbox WHERE occurrence_id = $1 AND state = 'failed') \
         OR EXISTS (SELECT 1 FROM burst_items WHERE occurrence_id = $1 AND state = 'failed') \
         THEN 'failed' ELSE 'delivered' END \
         WHERE id = $1 AND state IN ('delivering', 'delivered', 'failed')",
    )
    .bind(occurrence_id)
    .execute()
    .await?;
    Ok(())
}

/// `follow_mails` for a mail row just changed: `row`, if any, holds its occurrence id.
async fn follow_changed<B: Backend>(tx: &mut Tx<B>, row: Option<B::Row>) -> Result<()> {
    let occurrence: Option<String> = match row {
        Some(r) => r.try_get(0)?,
        None => None,
    };
    if let Some(occurrence) = occurrence {
        follow_mails(tx, &occurrence).await?;
    }
    Ok(())
}

#[async_trait]
impl<B: Backend> OutboxStore for SqlStore<B> {
    async fn claim_mails(&self, limit: i64, lease_ms: i64, fence: &Fence) -> Result<Vec<Mail>> {
        let mut tx = self.db.begin_write().await?;
        if !fenced(&mut tx, fence).await? {
            return Ok(Vec::new());
        }
        static DUE: Sql = Sql::new(&[
            "SELECT id FROM outbox WHERE state = 'queued' AND next_attempt_at <= {now} \
             ORDER BY next_attempt_at, id LIMIT $1 {skip_locked}",
        ]);
        let ids = tx.query(&DUE).bind(limit).fetch_all().await?;
        static CLAIM: Sql = Sql::new(&[
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_by = $2, \
             claim_expires_at = {now} + $3, updated_at = {now} WHERE id = $1 RETURNING ",
            MAIL_COLS,
        ]);
        let mut out = Vec::with_capacity(ids.len());
        for r in ids {
            let id: String = r.try_get(0)?;
            let row = tx
                .query(&CLAIM)
                .bind(&id)
                .bind(&fence.holder)
                .bind(lease_ms)
                .fetch_one()
                .await?;
            out.push(mail_row(&row)?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn mail_sent(&self, id: &str, holder: &str, reply: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        static SENT: Sql = Sql::new(&[
            "UPDATE outbox SET state = 'sent', sent_at = {now}, last_reply = $2, \
             claimed_by = NULL, claim_expires_at = NULL, updated_at = {now} \
             WHERE id = $1 AND state = 'sending' AND claimed_by = $3 RETURNING occurrence_id",
        ]);
        let row = tx
            .query(&SENT)
            .bind(id)
            .bind(reply)
            .bind(holder)
            .fetch_optional()
            .await?;
        follow_changed(&mut tx, row).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mail_failed(
        &self,
        id: &str,
        holder: &str,
        reply: &str,
        retry_at: Option<Millis>,
    ) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        static FAILED: Sql = Sql::new(&[
            "UPDATE outbox SET state = CASE WHEN $3 IS NULL THEN 'failed' ELSE 'queued' END, \
             next_attempt_at = COALESCE($3, next_attempt_at), last_reply = $2, \
             claimed_by = NULL, claim_expires_at = NULL, updated_at = {now} \
             WHERE id = $1 AND state = 'sending' AND claimed_by = $4 RETURNING occurrence_id",
        ]);
        let row = tx
            .query(&FAILED)
            .bind(id)
            .bind(reply)
            .bind(retry_at)
            .bind(holder)
            .fetch_optional()
            .await?;
        follow_changed(&mut tx, row).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_mails(&self, ids: &[String], holder: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        static RELEASE: Sql = Sql::new(&[
            "UPDATE outbox SET state = 'queued', attempts = attempts - 1, claimed_by = NULL, \
             claim_expires_at = NULL, updated_at = {now} \
             WHERE id = $1 AND state = 'sending' AND claimed_by = $2",
        ]);
        for id in ids {
            tx.query(&RELEASE).bind(id).bind(holder).execute().await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn recover_mails(&self) -> Result<u64> {
        static RECOVER: Sql = Sql::new(&[
            "UPDATE outbox SET state = 'queued', claimed_by = NULL, claim_expires_at = NULL, \
             updated_at = {now} WHERE state = 'sending' AND claim_expires_at < {now}",
        ]);
        self.db.query(&RECOVER).execute().await
    }

    async fn mails_of(&self, occurrence_id: &str) -> Result<Vec<Mail>> {
        static OF_OCCURRENCE: Sql = Sql::new(&[
            "SELECT ",
            MAIL_COLS,
            " FROM outbox WHERE occurrence_id = $1 ORDER BY recipient",
        ]);
        self.db
            .query(&OF_OCCURRENCE)
            .bind(occurrence_id)
            .fetch_all_as(mail_row)
            .await
    }

    async fn mails(&self, state: Option<MailState>, limit: i64) -> Result<Vec<Mail>> {
        static IN_STATE: Sql = Sql::new(&[
            "SELECT ",
            MAIL_COLS,
            " FROM outbox WHERE ($1 IS NULL OR state = $1) ORDER BY created_at DESC, id LIMIT $2",
        ]);
        self.db
            .query(&IN_STATE)
            .bind(state.map(MailState::as_str))
            .bind(limit)
            .fetch_all_as(mail_row)
            .await
    }

    async fn resend_mail(&self, id: &str) -> Result<Option<Mail>> {
        let mut tx = self.db.begin_write().await?;
        static RESEND: Sql = Sql::new(&[
            "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = {now}, \
             updated_at = {now} WHERE id = $1 AND state IN ('sent', 'failed') RETURNING ",
            MAIL_COLS,
        ]);
        let row = tx.query(&RESEND).bind(id).fetch_optional().await?;
        let Some(row) = row else { return Ok(None) };
        let mail = mail_row(&row)?;
        if let Some(occurrence) = &mail.occurrence_id {
            follow_mails(&mut tx, occurrence).await?;
        }
        tx.commit().await?;
        Ok(Some(mail))
    }
}
