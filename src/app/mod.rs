//! `quire app`: the report service.

pub mod model;
pub mod render;
pub mod store;

use std::sync::Arc;

use crate::config::Config;
use crate::lifecycle::Lifecycle;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

pub async fn migrate(config: &Config) -> Result<(), AppError> {
    let store = store::open(config).await?;
    store.migrate().await?;
    Ok(())
}

pub async fn run(config: Arc<Config>, instance: String, lifecycle: Lifecycle) -> Result<(), AppError> {
    let _ = (config, instance, lifecycle);
    Ok(())
}
