//! Registry access: the only code that talks to container registries.
//!
//! [`RegistryClient::fetch_manifest`] returns a manifest by digest, verified
//! against that digest, from a content-addressed on-disk cache or from the
//! registry (OCI distribution API) within a request budget. The `children`
//! helpers build on it to list the children of manifest lists and to read
//! the subject of attachments. The listing calls (`catalog`, `tags`,
//! `resolve_tag`, `manifest_exists`) serve the inventory sweep; `resolve_tag`
//! also tells the resolver what a tag-only event's tag points to.
//!
//! Errors say whether asking again may help ([`RegistryError::is_transient`]):
//! callers turn transient errors into "undecided", never into "unpromoted".

mod auth;
mod breaker;
mod cache;
mod children;
mod client;
mod config;
mod credentials;
mod error;
mod fetch;
mod google;
mod http;
mod limit;
mod list;
mod media;
mod stats;

pub use children::{
    ChildLink, MAX_NESTING, Pushed, attachment_subject, fetch_from_any, read_pushed,
    resolve_children,
};
pub use client::{RegistryClient, SetupError};
pub use config::{
    BreakerConfig, GoogleAuthConfig, GoogleTokenSource, HostConfig, RateLimit, RegistryConfig,
    RegistryConfigError,
};
pub use credentials::{CredentialsError, DockerConfigProblem};
pub use error::{ErrorKind, RegistryError, Target};
pub use fetch::FetchedManifest;
pub(crate) use limit::TokenBucket;
pub use list::{DEFAULT_PAGE_SIZE, Listing, MAX_LIST_BYTES, MAX_PAGES};
pub use media::{
    ACCEPT, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, IndexChild, ManifestKind, OCI_INDEX,
    OCI_MANIFEST, Platform, parse as parse_manifest,
};
pub use stats::{Outcome, RequestKind, StatsSnapshot};
