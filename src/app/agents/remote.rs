//! Queries for agents connected to another instance, over NATS. The asking instance sends a
//! [`Request`] to the holding instance's subject as a NATS request (so an instance that is not
//! listening is known at once: "no responders"), and reads the answer from its own inbox: the
//! holder replies [`Reply::Accepted`] (naming where acknowledgements go), then sends the agent's
//! answer to the inbox as numbered [`Reply::Part`]s, each within the server's `max_payload`, never more than
//! [`WINDOW`] ahead of the acknowledgements, so a slow reader slows the holder instead of
//! making NATS drop messages. NATS carries hints elsewhere; here a lost message only fails one
//! attempt, which the router retries elsewhere or reports.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::hub::Hub;
use super::link::{Answer, Collector, RunError};
use crate::agent::protocol::Query;
use crate::connector::table::{Limits, Table};

/// Parts sent ahead of the acknowledgements.
const WINDOW: u64 = 8;
/// How long the asker waits for the holder to accept.
const ACCEPT_WITHIN: Duration = Duration::from_secs(3);
/// Added to the query's timeout for the whole answer to arrive.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    reply: String,
    /// The agent's row.
    agent: String,
    query: Query,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
enum Reply {
    Accepted {
        acks: String,
    },
    Part {
        seq: u64,
        answer: Answer,
    },
    /// The agent is not connected to the holder (any more).
    Missing,
    /// The agent's connection closed during the query.
    Lost,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ack {
    upto: u64,
}

/// The subject of the instance holding an agent's connection.
pub fn subject(prefix: &str, instance: &str) -> String {
    format!("{prefix}.agents.{instance}")
}

/// Runs `query` on agent `agent`, whose connection `holder` holds.
pub async fn run(
    client: &async_nats::Client,
    prefix: &str,
    holder: &str,
    agent: &str,
    query: Query,
    limits: &Limits,
) -> Result<Table, RunError> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|_| RunError::Missing)?;
    let request = Request {
        reply: inbox,
        agent: agent.to_owned(),
        query,
    };
    let payload = serde_json::to_vec(&request).map_err(|_| RunError::Missing)?;
    let accepted = tokio::time::timeout(
        ACCEPT_WITHIN,
        client.request(subject(prefix, holder), payload.into()),
    )
    .await;
    let acks = match accepted.map(|r| r.map(|m| serde_json::from_slice::<Reply>(&m.payload))) {
        Ok(Ok(Ok(Reply::Accepted { acks }))) => acks,
        _ => return Err(RunError::Missing),
    };
    let within = limits.timeout + GRACE;
    let mut table = Collector::new(limits);
    let mut expected = 0;
    loop {
        match next(&mut replies, within).await {
            Some(Reply::Part { seq, answer }) if seq == expected => {
                expected += 1;
                let ack = serde_json::to_vec(&Ack { upto: expected }).unwrap_or_default();
                let _ = client.publish(acks.clone(), ack.into()).await;
                if let Some(done) = table.feed(answer)? {
                    return Ok(done);
                }
            }
            // A part missing (NATS dropped it) or the holder gone: the answer is incomplete.
            _ => return Err(RunError::Lost),
        }
    }
}

async fn next(replies: &mut async_nats::Subscriber, within: Duration) -> Option<Reply> {
    let msg = tokio::time::timeout(within, replies.next()).await.ok()??;
    serde_json::from_slice(&msg.payload).ok()
}

/// Answers other instances' requests for the agents connected here, until the subscription
/// ends.
pub async fn serve(client: async_nats::Client, prefix: String, instance: String, hub: Arc<Hub>) {
    let mut requests = match client.subscribe(subject(&prefix, &instance)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take agent queries from other instances");
            return;
        }
    };
    while let Some(msg) = requests.next().await {
        let (Some(accept_to), Ok(request)) = (
            msg.reply.clone(),
            serde_json::from_slice::<Request>(&msg.payload),
        ) else {
            tracing::debug!("ignoring a malformed agent request");
            continue;
        };
        tokio::spawn(answer(
            client.clone(),
            hub.clone(),
            request,
            accept_to.to_string(),
        ));
    }
}

/// Runs one request on the agent's link here and streams its answer back.
async fn answer(client: async_nats::Client, hub: Arc<Hub>, request: Request, accept_to: String) {
    let reply = |r: &Reply| serde_json::to_vec(r).unwrap_or_default();
    let send_to = |to: String, r: Reply| {
        let (client, payload) = (client.clone(), reply(&r));
        async move { client.publish(to, payload.into()).await.is_ok() }
    };
    let send = |r: Reply| send_to(request.reply.clone(), r);
    let link = hub
        .links()
        .into_iter()
        .find(|l| l.who.agent == request.agent && !l.closed.is_cancelled());
    let Some(link) = link else {
        send_to(accept_to, Reply::Missing).await;
        return;
    };
    let timeout = Duration::from_millis(request.query.limits.timeout_ms) + GRACE;
    let acks = client.new_inbox();
    let Ok(mut acked) = client.subscribe(acks.clone()).await else {
        send_to(accept_to, Reply::Missing).await;
        return;
    };
    let Ok(mut answers) = link.open(request.query.clone()).await else {
        send_to(accept_to, Reply::Missing).await;
        return;
    };
    if !send_to(accept_to, Reply::Accepted { acks }).await {
        return;
    }
    let max = client.server_info().max_payload.max(64 * 1024);
    let (mut seq, mut upto) = (0u64, 0u64);
    loop {
        let Ok(part) = answers.next().await else {
            send(Reply::Lost).await;
            return;
        };
        let last = !matches!(part, Answer::Rows { .. });
        for piece in split(part, max - 1024) {
            while seq >= upto + WINDOW {
                match tokio::time::timeout(timeout, acked.next()).await {
                    Ok(Some(m)) => {
                        if let Ok(a) = serde_json::from_slice::<Ack>(&m.payload) {
                            upto = upto.max(a.upto);
                        }
                    }
                    // The asker is gone: stop (dropping the answers cancels the query).
                    _ => return,
                }
            }
            if !send(Reply::Part { seq, answer: piece }).await {
                return;
            }
            seq += 1;
        }
        if last {
            return;
        }
    }
}

/// Splits rows until each part's message fits in `max` bytes.
fn split(part: Answer, max: usize) -> Vec<Answer> {
    let size = |a: &Answer| {
        serde_json::to_vec(&Reply::Part {
            seq: u64::MAX,
            answer: a.clone(),
        })
        .map_or(0, |v| v.len())
    };
    match part {
        Answer::Rows { columns, mut rows }
            if rows.len() > 1 && size_of_rows(&columns, &rows, &size) > max =>
        {
            let tail = rows.split_off(rows.len() / 2);
            let mut out = split(Answer::Rows { columns, rows }, max);
            out.extend(split(
                Answer::Rows {
                    columns: None,
                    rows: tail,
                },
                max,
            ));
            out
        }
        other => vec![other],
    }
}

fn size_of_rows(
    columns: &Option<Vec<String>>,
    rows: &[Vec<serde_json::Value>],
    size: &impl Fn(&Answer) -> usize,
) -> usize {
    size(&Answer::Rows {
        columns: columns.clone(),
        rows: rows.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn large_parts_are_split_in_order_within_the_payload_limit() {
        let rows: Vec<Vec<serde_json::Value>> = (0..1000)
            .map(|i| vec![json!(i), json!("x".repeat(100))])
            .collect();
        let part = Answer::Rows {
            columns: Some(vec!["n".into(), "s".into()]),
            rows,
        };
        let pieces = split(part, 20_000);
        assert!(pieces.len() > 5, "{}", pieces.len());
        let mut seen = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let len = serde_json::to_vec(&Reply::Part {
                seq: 0,
                answer: p.clone(),
            })
            .unwrap()
            .len();
            assert!(len <= 20_000, "{len}");
            let Answer::Rows { columns, rows } = p else {
                panic!()
            };
            assert_eq!(columns.is_some(), i == 0, "columns only in the first part");
            seen.extend(rows.iter().map(|r| r[0].as_i64().unwrap()));
        }
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert_eq!(split(Answer::Done { truncated: false }, 10).len(), 1);
    }
}
