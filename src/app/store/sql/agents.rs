//! Agents and their connections.

use async_trait::async_trait;

use super::db::{Backend, Row, Sql};
use super::{SqlStore, conflict};
use crate::agent::protocol::Served;
use crate::app::agents::model::{Agent, Connection, Seen};
use crate::app::store::{AgentStore, Result, StoreError};

const AGENT_COLS: &str = "id, name, created_at, created_by, session, agent_id, reported_name, \
    version, protocol, instance_id, address, connected_at, disconnected_at, last_seen, \
    datasources, in_flight, queries, errors, p50_us, p99_us, last_error, \
    {now} - last_seen AS silent_ms";

fn agent_row(r: &impl Row) -> Result<Agent> {
    let session: Option<String> = r.try_get("session")?;
    let connection = match session {
        Some(session) => {
            let datasources: String = r.try_get("datasources")?;
            Some(Connection {
                session,
                agent_id: r
                    .try_get::<Option<String>, _>("agent_id")?
                    .unwrap_or_default(),
                reported_name: r
                    .try_get::<Option<String>, _>("reported_name")?
                    .unwrap_or_default(),
                version: r
                    .try_get::<Option<String>, _>("version")?
                    .unwrap_or_default(),
                protocol: r.try_get::<Option<i64>, _>("protocol")?.unwrap_or_default(),
                instance_id: r.try_get("instance_id")?,
                address: r
                    .try_get::<Option<String>, _>("address")?
                    .unwrap_or_default(),
                connected_at: r
                    .try_get::<Option<i64>, _>("connected_at")?
                    .unwrap_or_default(),
                disconnected_at: r.try_get("disconnected_at")?,
                last_seen: r.try_get("last_seen")?,
                datasources: serde_json::from_str::<Vec<Served>>(&datasources)
                    .map_err(|_| StoreError::Corrupt("agents.datasources"))?,
            })
        }
        None => None,
    };
    Ok(Agent {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        connection,
        silent_ms: r.try_get("silent_ms")?,
        in_flight: r.try_get("in_flight")?,
        queries: r.try_get("queries")?,
        errors: r.try_get("errors")?,
        p50_us: r.try_get("p50_us")?,
        p99_us: r.try_get("p99_us")?,
        last_error: r.try_get("last_error")?,
    })
}

#[async_trait]
impl<B: Backend> AgentStore for SqlStore<B> {
    async fn create_agent(
        &self,
        id: &str,
        name: &str,
        token_digest: &str,
        by: Option<&str>,
    ) -> Result<Agent> {
        static INSERT: Sql = Sql::new(&[
            "INSERT INTO agents (id, name, token_digest, created_at, created_by) \
             VALUES ($1, $2, $3, {now}, $4) RETURNING ",
            AGENT_COLS,
        ]);
        self.db
            .query(&INSERT)
            .bind(id)
            .bind(name)
            .bind(token_digest)
            .bind(by)
            .fetch_one()
            .await
            .map_err(|e| conflict(e, "name", || format!("an agent named {name}")))
            .and_then(|r| agent_row(&r))
    }

    async fn agents(&self) -> Result<Vec<Agent>> {
        static ALL: Sql = Sql::new(&["SELECT ", AGENT_COLS, " FROM agents ORDER BY name"]);
        self.db.query(&ALL).fetch_all_as(agent_row).await
    }

    async fn agent(&self, id_or_name: &str) -> Result<Option<Agent>> {
        static ONE: Sql = Sql::new(&[
            "SELECT ",
            AGENT_COLS,
            " FROM agents WHERE id = $1 OR name = $1",
        ]);
        self.db
            .query(&ONE)
            .bind(id_or_name)
            .fetch_optional_as(agent_row)
            .await
    }

    async fn agent_by_token(&self, token_digest: &str) -> Result<Option<Agent>> {
        static BY_TOKEN: Sql = Sql::new(&[
            "SELECT ",
            AGENT_COLS,
            " FROM agents WHERE token_digest = $1",
        ]);
        self.db
            .query(&BY_TOKEN)
            .bind(token_digest)
            .fetch_optional_as(agent_row)
            .await
    }

    async fn delete_agent(&self, id: &str) -> Result<bool> {
        let n = self
            .db
            .query("DELETE FROM agents WHERE id = $1")
            .bind(id)
            .execute()
            .await?;
        Ok(n > 0)
    }

    async fn agent_connected(&self, id: &str, c: &Connection) -> Result<bool> {
        static CONNECTED: Sql = Sql::new(&[
            "UPDATE agents SET session = $2, agent_id = $3, reported_name = $4, version = $5, \
             protocol = $6, instance_id = $7, address = $8, connected_at = {now}, \
             disconnected_at = NULL, last_seen = {now}, datasources = $9, in_flight = 0 \
             WHERE id = $1",
        ]);
        let datasources = serde_json::to_string(&c.datasources)
            .map_err(|_| StoreError::Corrupt("agents.datasources"))?;
        let n = self
            .db
            .query(&CONNECTED)
            .bind(id)
            .bind(&c.session)
            .bind(&c.agent_id)
            .bind(&c.reported_name)
            .bind(&c.version)
            .bind(c.protocol)
            .bind(&c.instance_id)
            .bind(&c.address)
            .bind(datasources)
            .execute()
            .await?;
        Ok(n > 0)
    }

    async fn agent_seen(&self, id: &str, session: &str, seen: &Seen) -> Result<bool> {
        static SEEN: Sql = Sql::new(&[
            "UPDATE agents SET last_seen = {now}, in_flight = $3, queries = $4, errors = $5, \
             p50_us = $6, p99_us = $7, last_error = $8 WHERE id = $1 AND session = $2",
        ]);
        let n = self
            .db
            .query(&SEEN)
            .bind(id)
            .bind(session)
            .bind(seen.in_flight)
            .bind(seen.queries)
            .bind(seen.errors)
            .bind(seen.p50_us)
            .bind(seen.p99_us)
            .bind(&seen.last_error)
            .execute()
            .await?;
        Ok(n > 0)
    }

    async fn agent_disconnected(&self, id: &str, session: &str, error: Option<&str>) -> Result<()> {
        static GONE: Sql = Sql::new(&[
            "UPDATE agents SET instance_id = NULL, disconnected_at = {now}, in_flight = 0, \
             last_error = COALESCE($3, last_error) WHERE id = $1 AND session = $2",
        ]);
        self.db
            .query(&GONE)
            .bind(id)
            .bind(session)
            .bind(error)
            .execute()
            .await?;
        Ok(())
    }
}
