//! image-auditor: decides, by digest, whether every change to a production
//! container registry was promoted by a promotion manifest.
//!
//! See ARCHITECTURE.md for the map of modules and their invariants.

pub mod alert;
pub mod audit;
pub mod config;
pub mod event;
pub mod exceptions;
pub mod findings;
pub mod index;
pub mod listener;
pub mod log;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod pubsub;
pub mod reference;
pub mod registry;
pub mod reload;
pub mod resolve;
pub mod scan;
pub mod secret;
pub mod server;
pub mod service;
pub mod sources;
pub mod status;
pub mod wiring;
