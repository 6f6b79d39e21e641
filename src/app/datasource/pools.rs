//! The pools of this instance's database sources, created on first use and shared by every
//! render on this instance. A pool belongs to one version of its data source (its
//! `updated_at`): a changed data source gets a new pool and the old one is closed, whether the
//! change is learnt from a bus hint or from the row itself, which every query reads first.

use std::collections::HashMap;
use std::sync::Mutex;

use super::model::DataSource;
use crate::app::model::Millis;
use crate::connector::pool::{Pool, create};
use crate::connector::settings::Settings;
use crate::connector::table::QueryError;

#[derive(Default)]
pub struct Pools {
    by_id: Mutex<HashMap<String, (Millis, Pool)>>,
}

impl Pools {
    /// The pool for this version of `ds`, created (without connecting) when there is none.
    /// `None` for kinds that have no pool.
    pub fn get(&self, ds: &DataSource, settings: &Settings) -> Result<Option<Pool>, QueryError> {
        let mut by_id = self.lock();
        if let Some((version, pool)) = by_id.get(&ds.id)
            && *version == ds.updated_at
        {
            return Ok(Some(pool.clone()));
        }
        let Some(pool) = create(settings)? else {
            return Ok(None);
        };
        if let Some((_, old)) = by_id.insert(ds.id.clone(), (ds.updated_at, pool.clone())) {
            tokio::spawn(old.close());
        }
        Ok(Some(pool))
    }

    /// Closes every pool (a data source changed somewhere); the next query opens a new one.
    pub fn clear(&self) {
        for (_, (_, pool)) in self.lock().drain() {
            tokio::spawn(pool.close());
        }
    }

    /// Closes the pool of one data source.
    pub fn forget(&self, id: &str) {
        if let Some((_, pool)) = self.lock().remove(id) {
            tokio::spawn(pool.close());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Millis, Pool)>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}
