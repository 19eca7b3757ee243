//! The parts every command that records decisions shares (`serve`, `scan`):
//! the findings store, the registry client and the resolver over it, the
//! metrics, and the pipeline over them, built one way.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::audit::Policy;
use crate::findings::{self, Store, StoreError, StoreLocation};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::registry::{RegistryClient, RegistryConfig, SetupError};
use crate::resolve::Resolver;

/// Why the shared parts cannot be built. The cause is part of the message
/// rather than a `source`, so that printing the whole chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("opening the findings store: {error}")]
    Store { error: StoreError },
    #[error("registry client: {error}")]
    Registry { error: SetupError },
}

pub struct Wiring {
    pub store: Arc<dyn Store>,
    /// Present when registries may be read.
    pub client: Option<RegistryClient>,
    pub resolver: Option<Arc<Resolver>>,
    pub metrics: Arc<Metrics>,
}

impl Wiring {
    /// Opens the findings store at `store` and, given `registry`, the
    /// registry client, which must be built inside a tokio runtime. Blocks:
    /// from async code, open the store off the async threads and use
    /// [`Wiring::with_store`].
    pub fn open(
        store: &StoreLocation,
        registry: Option<RegistryConfig>,
    ) -> Result<Wiring, WiringError> {
        let store = findings::open(store).map_err(|error| WiringError::Store { error })?;
        Self::with_store(store, registry)
    }

    /// The shared parts around an open store (`scan --baseline` decides
    /// into a store in memory, so that nothing it finds is recorded or
    /// alerted).
    pub fn with_store(
        store: Arc<dyn Store>,
        registry: Option<RegistryConfig>,
    ) -> Result<Wiring, WiringError> {
        let client = registry
            .map(|config| {
                RegistryClient::new(config).map_err(|error| WiringError::Registry { error })
            })
            .transpose()?;
        let metrics = Arc::new(Metrics::new(client.clone()));
        let resolver = client.clone().map(|client| Arc::new(Resolver::new(client)));
        Ok(Wiring {
            store,
            client,
            resolver,
            metrics,
        })
    }

    /// The pipeline deciding against `index` with these parts.
    pub fn pipeline(
        &self,
        index: Arc<ArcSwap<Index>>,
        policy: Policy,
        undecided_retry_for: Duration,
    ) -> Pipeline {
        Pipeline::new(
            index,
            self.resolver.clone(),
            self.store.clone(),
            policy,
            self.metrics.clone(),
            undecided_retry_for,
        )
    }
}
