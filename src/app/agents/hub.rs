//! The agents connected to this instance, and which of them takes a query: one serving the
//! source with the fewest queries in flight, not one that was told to leave unless it is the
//! only one, ties taken in turn so that equal agents share the load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::link::Link;

#[derive(Default)]
pub struct Hub {
    links: Mutex<Vec<Arc<Link>>>,
    turn: AtomicUsize,
}

impl Hub {
    pub fn add(&self, link: Arc<Link>) {
        self.lock().push(link);
    }

    pub fn remove(&self, session: &str) {
        self.lock().retain(|l| l.who.session != session);
    }

    /// Every connection here.
    pub fn links(&self) -> Vec<Arc<Link>> {
        self.lock().clone()
    }

    /// Whether an agent connected here serves `source`.
    pub fn serves(&self, source: &str) -> bool {
        self.lock().iter().any(|l| l.serves(source))
    }

    /// The connection a query for `source` goes to, skipping the agents in `tried`.
    pub fn pick(&self, source: &str, tried: &[String]) -> Option<Arc<Link>> {
        let links = self.lock();
        let candidates: Vec<&Arc<Link>> = links
            .iter()
            .filter(|l| l.serves(source) && !tried.contains(&l.who.agent))
            .collect();
        let best = candidates
            .iter()
            .map(|l| (l.is_leaving(), l.in_flight()))
            .min()?;
        let equal: Vec<&&Arc<Link>> = candidates
            .iter()
            .filter(|l| (l.is_leaving(), l.in_flight()) == best)
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Some((*equal[turn % equal.len()]).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Link>>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::{Query, WireLimits};
    use crate::app::agents::link::Identity;
    use crate::connector::table::Overflow;

    fn link(agent: &str, sources: &[&str]) -> Arc<Link> {
        let (link, rx) = Link::new(Identity {
            agent: agent.into(),
            name: agent.into(),
            session: format!("s-{agent}"),
            agent_id: agent.into(),
            sources: sources.iter().map(|s| (*s).to_owned()).collect(),
        });
        // The writer is gone in these tests; keep its queue open.
        std::mem::forget(rx);
        link
    }

    fn query() -> Query {
        Query {
            id: 0,
            source: "db".into(),
            text: "select 1".into(),
            values: Default::default(),
            limits: WireLimits {
                max_rows: 1,
                max_bytes: 1,
                timeout_ms: 1,
                overflow: Overflow::Fail,
            },
            origin: "t".into(),
        }
    }

    #[tokio::test]
    async fn the_least_busy_serving_agent_is_picked_and_equals_take_turns() {
        let hub = Hub::default();
        let (a, b) = (link("a", &["db"]), link("b", &["db", "crm"]));
        hub.add(a.clone());
        hub.add(b.clone());
        hub.add(link("c", &["crm"]));
        let picks: Vec<String> = (0..4)
            .map(|_| hub.pick("db", &[]).unwrap().who.agent.clone())
            .collect();
        assert_eq!(picks.iter().filter(|p| *p == "a").count(), 2, "{picks:?}");
        assert_eq!(picks.iter().filter(|p| *p == "b").count(), 2, "{picks:?}");
        let _busy = a.open(query()).await.unwrap();
        for _ in 0..3 {
            assert_eq!(hub.pick("db", &[]).unwrap().who.agent, "b");
        }
        assert_eq!(hub.pick("db", &["b".into()]).unwrap().who.agent, "a");
        b.leave("draining");
        assert_eq!(hub.pick("db", &[]).unwrap().who.agent, "a");
        assert!(hub.pick("nothing", &[]).is_none());
        hub.remove("s-a");
        assert_eq!(
            hub.pick("db", &[]).unwrap().who.agent,
            "b",
            "a leaving agent is the last resort"
        );
    }
}
