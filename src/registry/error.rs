//! What can go wrong when asking a registry for a manifest, a tag or a
//! listing, split into transient failures (ask again later) and permanent
//! answers.

use std::fmt;
use std::time::Duration;

use crate::reference::{Digest, Repository, Tag};

/// A failed registry request: where, what, and whether asking again may help.
///
/// Boxed so that `Result<_, RegistryError>` stays one pointer wide on the
/// success path.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RegistryError(Box<Details>);

#[derive(Debug, Clone)]
struct Details {
    host: String,
    repository: String,
    target: Target,
    kind: ErrorKind,
}

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A manifest by digest.
    Manifest(Digest),
    /// A manifest by tag (resolving the tag to its digest).
    Tag(Tag),
    /// The repository's tag list (`/v2/<name>/tags/list`).
    TagList,
    /// The registry's repository list (`/v2/_catalog`).
    Catalog,
}

impl fmt::Display for Details {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, repository, kind) = (&self.host, &self.repository, &self.kind);
        match &self.target {
            Target::Manifest(digest) => write!(
                f,
                "registry {host} repository {repository} manifest {digest}: {kind}"
            ),
            Target::Tag(tag) => {
                write!(
                    f,
                    "registry {host} repository {repository} tag {tag}: {kind}"
                )
            }
            Target::TagList => {
                write!(
                    f,
                    "registry {host} repository {repository} tag list: {kind}"
                )
            }
            Target::Catalog => write!(f, "registry {host} catalog: {kind}"),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    #[error("network error: {0}")]
    Network(String),
    #[error("timed out")]
    Timeout,
    /// Not asked: the host failed at the network level repeatedly and is
    /// marked down until a probe request gets through.
    #[error(
        "host marked down after repeated network failures (last: {last_error}); not asked until a probe gets through"
    )]
    HostDown { last_error: String },
    #[error("rate limited (429){}", retry_after_text(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("server error {status}")]
    Server { status: u16 },
    #[error("authentication failed ({status}): {detail}")]
    Unauthorized { status: u16, detail: String },
    #[error("token service {realm}: {detail}")]
    TokenService { realm: String, detail: String },
    #[error("credentials unavailable: {0}")]
    Credentials(String),
    /// The manifest, tag or repository does not exist (404).
    #[error("not found (404)")]
    NotFound,
    #[error("unexpected status {status}")]
    UnexpectedStatus { status: u16 },
    #[error("body hashes to {actual}, not to the requested digest")]
    DigestMismatch { actual: Digest },
    #[error("Docker-Content-Digest header says {header:?}, not the requested digest")]
    HeaderDigestMismatch { header: String },
    #[error("body larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("unparseable manifest: {0}")]
    Unparseable(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest lists nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("no repository to ask")]
    NoCandidates,
    #[error("refusing to follow a Link to {url}: not the registry that was asked")]
    ForeignLink { url: String },
    #[error("unusable Link header {0:?}")]
    BadLink(String),
    #[error("pagination did not end after {0} pages")]
    TooManyPages(usize),
    #[error("no Docker-Content-Digest header in the answer")]
    NoDigestHeader,
}

fn retry_after_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {}s", d.as_secs_f64()),
        None => String::new(),
    }
}

impl RegistryError {
    pub(crate) fn new(repository: &Repository, digest: &Digest, kind: ErrorKind) -> Self {
        Self::of(repository, Target::Manifest(digest.clone()), kind)
    }

    /// A failed request about `target` in `repository`.
    pub(crate) fn of(repository: &Repository, target: Target, kind: ErrorKind) -> Self {
        Self(Box::new(Details {
            host: repository.host().to_owned(),
            repository: repository.path().to_owned(),
            target,
            kind,
        }))
    }

    /// A failed `/v2/_catalog` request to `host`.
    pub(crate) fn catalog(host: &str, kind: ErrorKind) -> Self {
        Self(Box::new(Details {
            host: host.to_owned(),
            repository: String::new(),
            target: Target::Catalog,
            kind,
        }))
    }

    /// An error that concerns no repository (nothing was asked).
    pub(crate) fn without_repository(digest: &Digest, kind: ErrorKind) -> Self {
        Self(Box::new(Details {
            host: String::new(),
            repository: String::new(),
            target: Target::Manifest(digest.clone()),
            kind,
        }))
    }

    /// `host[:port]` of the registry asked.
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// The repository path on that registry (without the host).
    pub fn repository(&self) -> &str {
        &self.0.repository
    }

    /// The manifest asked for, when one was asked for by digest.
    pub fn digest(&self) -> Option<&Digest> {
        match &self.0.target {
            Target::Manifest(d) => Some(d),
            _ => None,
        }
    }

    /// What was asked for.
    pub fn target(&self) -> &Target {
        &self.0.target
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// Whether asking again later may succeed. Callers turn a transient error
    /// into an `undecided` verdict, never into "unpromoted".
    ///
    /// Authentication and credential failures count as transient: a revoked
    /// or misconfigured credential says nothing about the image, and must
    /// surface as "cannot decide" until someone fixes it.
    pub fn is_transient(&self) -> bool {
        self.0.kind.is_transient()
    }

    /// Whether the registry said the manifest, tag or repository does not
    /// exist (a permanent answer, distinct from a failure).
    pub fn is_not_found(&self) -> bool {
        self.0.kind == ErrorKind::NotFound
    }
}

impl ErrorKind {
    pub fn is_transient(&self) -> bool {
        match self {
            ErrorKind::Network(_)
            | ErrorKind::Timeout
            | ErrorKind::HostDown { .. }
            | ErrorKind::RateLimited { .. }
            | ErrorKind::Server { .. }
            | ErrorKind::Unauthorized { .. }
            | ErrorKind::TokenService { .. }
            | ErrorKind::Credentials(_) => true,
            ErrorKind::NotFound
            | ErrorKind::UnexpectedStatus { .. }
            | ErrorKind::DigestMismatch { .. }
            | ErrorKind::HeaderDigestMismatch { .. }
            | ErrorKind::TooLarge { .. }
            | ErrorKind::Unparseable(_)
            | ErrorKind::UnsupportedMediaType(_)
            | ErrorKind::TooDeep(_)
            | ErrorKind::NoCandidates
            | ErrorKind::ForeignLink { .. }
            | ErrorKind::BadLink(_)
            | ErrorKind::TooManyPages(_)
            | ErrorKind::NoDigestHeader => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_host_repository_digest_and_cause() {
        let repo: Repository = "registry.example:5000/team/app".parse().unwrap();
        let digest = Digest::sha256_of(b"x");
        let e = RegistryError::new(&repo, &digest, ErrorKind::Server { status: 503 });
        let text = e.to_string();
        assert!(text.contains("registry.example:5000"), "{text}");
        assert!(text.contains("team/app"), "{text}");
        assert!(text.contains(&digest.to_string()), "{text}");
        assert!(text.contains("503"), "{text}");
        assert!(e.is_transient());
    }

    #[test]
    fn permanent_answers_are_not_transient() {
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::DigestMismatch {
                actual: Digest::sha256_of(b""),
            },
            ErrorKind::Unparseable("x".into()),
            ErrorKind::TooLarge { limit: 1 },
        ] {
            assert!(!kind.is_transient(), "{kind}");
        }
    }
}
