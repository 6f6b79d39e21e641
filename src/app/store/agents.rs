//! Agents: their tokens (as digests) and the connections instances report for them.

use async_trait::async_trait;

use super::Result;
use crate::app::agents::model::{Agent, Connection, Seen};

#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Creates an agent with the digest of its token; `Conflict` on `name` when it is taken.
    async fn create_agent(
        &self,
        id: &str,
        name: &str,
        token_digest: &str,
        by: Option<&str>,
    ) -> Result<Agent>;
    /// Every agent, by name.
    async fn agents(&self) -> Result<Vec<Agent>>;
    /// An agent by id or name.
    async fn agent(&self, id_or_name: &str) -> Result<Option<Agent>>;
    /// The agent a token belongs to.
    async fn agent_by_token(&self, token_digest: &str) -> Result<Option<Agent>>;
    /// Deletes an agent, which revokes its token; false when there was none.
    async fn delete_agent(&self, id: &str) -> Result<bool>;
    /// Records a new connection (it replaces the one before); false when the agent is gone.
    async fn agent_connected(&self, id: &str, c: &Connection) -> Result<bool>;
    /// Records a round of a live connection (`last_seen` now); false when the agent is gone or
    /// a newer connection replaced `session`.
    async fn agent_seen(&self, id: &str, session: &str, seen: &Seen) -> Result<bool>;
    /// Records that connection `session` closed, unless a newer one replaced it.
    async fn agent_disconnected(&self, id: &str, session: &str, error: Option<&str>) -> Result<()>;
}
