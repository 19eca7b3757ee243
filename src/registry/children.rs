//! What a promoted digest contains: the children of manifest lists (nested
//! lists included), and the subject of an attachment.

use std::collections::{HashSet, VecDeque};

use super::client::RegistryClient;
use super::error::{ErrorKind, RegistryError};
use super::fetch::FetchedManifest;
use super::media::{DOCKER_MANIFEST_LIST, IndexChild, ManifestKind, OCI_INDEX, Platform};
use crate::reference::{Digest, Repository};

/// How deep lists may nest under the digest being resolved. Real images
/// nest at most one level; the bound stops a hostile registry from walking
/// the resolver through an endless chain of generated indexes.
pub const MAX_NESTING: usize = 8;

/// One entry of a list: `child` is listed by `parent`. For nested lists the
/// parent is the inner list, which is itself a child of the resolved digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildLink {
    pub child: Digest,
    pub parent: Digest,
    pub media_type: String,
    pub platform: Option<Platform>,
}

/// Fetches `digest` from the first of `candidates` that has it (the source
/// registry first, then destinations). Returns the index of the repository
/// that answered.
///
/// When none has it, the error is the most useful one seen: a transient
/// error first (the manifest may well exist, so the caller cannot decide),
/// then a permanent error other than "not found" (bad content somewhere),
/// and "not found" only when every candidate said so.
pub async fn fetch_from_any(
    client: &RegistryClient,
    candidates: &[Repository],
    digest: &Digest,
) -> Result<(usize, FetchedManifest), RegistryError> {
    let mut worst: Option<RegistryError> = None;
    for (i, repository) in candidates.iter().enumerate() {
        match client.fetch_manifest(repository, digest).await {
            Ok(manifest) => return Ok((i, manifest)),
            Err(e) => {
                let rank = |e: &RegistryError| match e {
                    e if e.is_transient() => 2,
                    e if !e.is_not_found() => 1,
                    _ => 0,
                };
                if worst.as_ref().is_none_or(|w| rank(&e) > rank(w)) {
                    worst = Some(e);
                }
            }
        }
    }
    Err(worst.unwrap_or_else(|| RegistryError::without_repository(digest, ErrorKind::NoCandidates)))
}

/// Every (child, parent) pair under `digest`: empty for a single image, the
/// entries of a list, and recursively the entries of lists it lists.
///
/// Only lists are fetched: the cost is one request per list, never one per
/// platform image. Nested lists are asked of the repository that answered
/// first, then of the other candidates.
pub async fn resolve_children(
    client: &RegistryClient,
    candidates: &[Repository],
    digest: &Digest,
) -> Result<Vec<ChildLink>, RegistryError> {
    let (answered, top) = fetch_from_any(client, candidates, digest).await?;
    let mut order = candidates.to_vec();
    order[..=answered].rotate_right(1);

    let mut links = Vec::new();
    let mut fetched = HashSet::from([digest.clone()]);
    let mut queue = VecDeque::from([(top, 0)]);
    while let Some((manifest, depth)) = queue.pop_front() {
        let ManifestKind::Index { children } = manifest.kind else {
            continue;
        };
        for child in children {
            let is_list = matches!(child.media_type.as_str(), OCI_INDEX | DOCKER_MANIFEST_LIST);
            if is_list && fetched.insert(child.digest.clone()) {
                if depth + 1 >= MAX_NESTING {
                    let kind = ErrorKind::TooDeep(MAX_NESTING);
                    return Err(RegistryError::new(&order[0], &child.digest, kind));
                }
                let (_, nested) = fetch_from_any(client, &order, &child.digest).await?;
                queue.push_back((nested, depth + 1));
            }
            links.push(ChildLink {
                child: child.digest,
                parent: manifest.digest.clone(),
                media_type: child.media_type,
                platform: child.platform,
            });
        }
    }
    Ok(links)
}

/// The subject of `digest` as found in `repository`: how an OCI 1.1
/// attachment (signature, attestation, SBOM) pushed under an unknown digest
/// is recognised. `None` for an ordinary image or list.
pub async fn attachment_subject(
    client: &RegistryClient,
    repository: &Repository,
    digest: &Digest,
) -> Result<Option<Digest>, RegistryError> {
    Ok(match read_pushed(client, repository, digest).await? {
        Pushed::Attachment { subject } => Some(subject),
        Pushed::Image | Pushed::List { .. } => None,
    })
}

/// What a pushed manifest is, as far as judging its push goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// An image (or artifact) attached to nothing.
    Image,
    /// An OCI 1.1 attachment of `subject`.
    Attachment { subject: Digest },
    /// An index or manifest list, with the entries it names directly
    /// (nested lists are not read: the entries alone cost no request).
    List { children: Vec<IndexChild> },
}

/// Reads the manifest `digest` pushed to `repository` (one request, or
/// none when cached) and says what it is.
pub async fn read_pushed(
    client: &RegistryClient,
    repository: &Repository,
    digest: &Digest,
) -> Result<Pushed, RegistryError> {
    let manifest = client.fetch_manifest(repository, digest).await?;
    Ok(match manifest.kind {
        ManifestKind::Index { children } => Pushed::List { children },
        ManifestKind::Image {
            subject: Some(subject),
        } => Pushed::Attachment { subject },
        ManifestKind::Image { subject: None } => Pushed::Image,
    })
}
