//! Listing what a registry holds, for the inventory sweep: the catalog
//! (`GET /v2/_catalog?n=…`), a repository's tags (`GET /v2/<name>/tags/list?n=…`),
//! both following `Link: <…>; rel="next"` pagination, and what a tag or a
//! digest is in a repository (`HEAD`, or `GET` when the registry does not
//! state the digest).
//!
//! Every request goes through the client's budget, authentication, retries
//! and counters. A `Link` to another host is refused (a registry must not
//! send the client, and its credentials, elsewhere); bodies are capped.

use bytes::Bytes;
use reqwest::header::LINK;

use super::auth::CATALOG_PATH;
use super::client::{Inner, RegistryClient, Request, same_algorithm_digest};
use super::error::{ErrorKind, RegistryError, Target};
use super::http::{ReadError, read_capped, stated_digest, url_host};
use super::stats::{Outcome, RequestKind};
use crate::reference::{Digest, Repository, Tag};

/// Entries asked for per page when the caller has no opinion.
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// The size cap of one listing page. 1000 repository names of 200 bytes
/// are 200 KiB; 4 MiB leaves room without letting a registry exhaust memory.
pub const MAX_LIST_BYTES: u64 = 4 * 1024 * 1024;

/// Pages followed before giving up on a listing that never ends (a registry
/// whose `Link` goes round in circles).
pub const MAX_PAGES: usize = 100_000;

/// Everything a paginated listing returned, and how many pages it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// Requests made (one per page), for cost accounting.
    pub pages: usize,
    /// Entries the registry listed that are not valid names or tags; left
    /// out of `items` (and logged) rather than failing the listing.
    pub invalid: usize,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            pages: 0,
            invalid: 0,
        }
    }
}

#[derive(serde::Deserialize)]
struct CatalogPage {
    repositories: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct TagsPage {
    tags: Option<Vec<String>>,
}

impl RegistryClient {
    /// Every repository path `host`'s catalog lists, `page_size` per request.
    pub async fn catalog(
        &self,
        host: &str,
        page_size: usize,
    ) -> Result<Listing<String>, RegistryError> {
        let first = self
            .inner
            .url(host, &format!("_catalog?n={}", page_size.max(1)));
        let pages = self
            .inner
            .paginate(host, CATALOG_PATH, first, |body| {
                let page: CatalogPage = serde_json::from_slice(body)
                    .map_err(|e| ErrorKind::Unparseable(format!("catalog page: {e}")))?;
                Ok(page.repositories.unwrap_or_default())
            })
            .await
            .map_err(|kind| RegistryError::catalog(host, kind))?;
        let (names, pages) = pages;
        // Names are used as repository paths: keep only what parses as one.
        let mut listing = Listing {
            pages,
            ..Listing::default()
        };
        for name in names {
            if format!("{host}/{name}").parse::<Repository>().is_ok() {
                listing.items.push(name);
            } else {
                tracing::warn!(
                    host,
                    name,
                    "catalog lists an invalid repository name; skipped"
                );
                listing.invalid += 1;
            }
        }
        Ok(listing)
    }

    /// Every tag of `repository`, `page_size` per request, sorted (registries
    /// do not agree on an order). A repository the registry does not know is
    /// [`ErrorKind::NotFound`].
    pub async fn tags(
        &self,
        repository: &Repository,
        page_size: usize,
    ) -> Result<Listing<Tag>, RegistryError> {
        let host = repository.host();
        let first = self.inner.url(
            host,
            &format!("{}/tags/list?n={}", repository.path(), page_size.max(1)),
        );
        let (tags, pages) = self
            .inner
            .paginate(host, repository.path(), first, |body| {
                let page: TagsPage = serde_json::from_slice(body)
                    .map_err(|e| ErrorKind::Unparseable(format!("tag list page: {e}")))?;
                Ok(page.tags.unwrap_or_default())
            })
            .await
            .map_err(|kind| RegistryError::of(repository, Target::TagList, kind))?;
        let mut listing = Listing {
            pages,
            ..Listing::default()
        };
        for tag in tags {
            match tag.parse::<Tag>() {
                Ok(t) => listing.items.push(t),
                Err(_) => {
                    tracing::warn!(%repository, tag, "tag list has an invalid tag; skipped");
                    listing.invalid += 1;
                }
            }
        }
        listing.items.sort();
        listing.items.dedup();
        Ok(listing)
    }

    /// The digest `tag` points to in `repository`: the `Docker-Content-Digest`
    /// of a `HEAD` (one request), or, when the registry does not state it, of
    /// a `GET` whose body must hash to it. A tag (or repository) that does not
    /// exist is [`ErrorKind::NotFound`].
    pub async fn resolve_tag(
        &self,
        repository: &Repository,
        tag: &Tag,
    ) -> Result<Digest, RegistryError> {
        let inner = &self.inner;
        let error = |kind| RegistryError::of(repository, Target::Tag(tag.clone()), kind);
        let url = inner.manifest_url(repository, tag);
        let mut request = Request::manifest(repository, reqwest::Method::HEAD, &url);
        let head = inner
            .send(
                &request,
                |response| async move { Ok(header_digest(&response)) },
            )
            .await
            .map_err(error)?;
        if let Some(digest) = head {
            return Ok(digest);
        }
        request.method = reqwest::Method::GET;
        let limit = inner.config.max_manifest_bytes;
        inner
            .send(&request, |response| async move {
                let header = stated_digest(&response);
                let body = read_body(response, limit).await?;
                body_digest(header, &body)
            })
            .await
            .map_err(error)
    }

    /// Whether `repository` holds the manifest `digest` (a `HEAD` by digest):
    /// `Ok(false)` when the registry answers 404.
    pub async fn manifest_exists(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let inner = &self.inner;
        let url = inner.manifest_url(repository, digest);
        let request = Request::manifest(repository, reqwest::Method::HEAD, &url);
        let answer = inner
            .send(&request, |response| async move {
                match stated_digest(&response) {
                    // Another algorithm's digest cannot be compared without the body.
                    Some(text) => match text.parse::<Digest>() {
                        Ok(d) if d.algorithm() == digest.algorithm() && &d != digest => Err((
                            Outcome::DigestMismatch,
                            ErrorKind::HeaderDigestMismatch { header: text },
                        )),
                        _ => Ok(()),
                    },
                    None => Ok(()),
                }
            })
            .await;
        match answer {
            Ok(()) => Ok(true),
            Err(ErrorKind::NotFound) => Ok(false),
            Err(kind) => Err(RegistryError::new(repository, digest, kind)),
        }
    }
}

impl Inner {
    /// GETs `first` and every page its `Link: rel="next"` chain leads to on
    /// the same host, parsing each body with `parse`. Returns the entries in
    /// order and the number of pages.
    async fn paginate<T>(
        &self,
        host: &str,
        path: &str,
        first: String,
        parse: impl Fn(&[u8]) -> Result<Vec<T>, ErrorKind>,
    ) -> Result<(Vec<T>, usize), ErrorKind> {
        let mut items = Vec::new();
        let mut url = first;
        let mut pages = 0;
        loop {
            if pages >= MAX_PAGES {
                return Err(ErrorKind::TooManyPages(MAX_PAGES));
            }
            let request = Request {
                host,
                path,
                method: reqwest::Method::GET,
                url: &url,
                accept: Some("application/json"),
                kind: RequestKind::List,
            };
            let (body, link) = self
                .send(&request, |response| async move {
                    let link: Vec<String> = response
                        .headers()
                        .get_all(LINK)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect();
                    let body = read_body(response, MAX_LIST_BYTES).await?;
                    Ok((body, link))
                })
                .await?;
            pages += 1;
            items.extend(parse(&body)?);
            let next = link.iter().find_map(|v| next_link(v));
            match next {
                None => return Ok((items, pages)),
                Some(target) => url = follow(&url, &target, host)?,
            }
        }
    }
}

async fn read_body(response: reqwest::Response, limit: u64) -> Result<Bytes, (Outcome, ErrorKind)> {
    read_capped(response, limit).await.map_err(|e| match e {
        ReadError::TooLarge => (Outcome::TooLarge, ErrorKind::TooLarge { limit }),
        ReadError::Timeout => (Outcome::Timeout, ErrorKind::Timeout),
        ReadError::Network(e) => (Outcome::NetworkError, ErrorKind::Network(e)),
    })
}

/// The digest a response states in `Docker-Content-Digest`, if it states a
/// valid one.
fn header_digest(response: &reqwest::Response) -> Option<Digest> {
    stated_digest(response)?.parse().ok()
}

/// The digest of a manifest body fetched by tag: the stated digest when the
/// body hashes to it, else (no header) the body's sha256.
fn body_digest(header: Option<String>, body: &[u8]) -> Result<Digest, (Outcome, ErrorKind)> {
    match header {
        None => Ok(Digest::sha256_of(body)),
        Some(text) => match text.parse::<Digest>() {
            Ok(d) if d.verifies(body) => Ok(d),
            Ok(d) => Err((
                Outcome::DigestMismatch,
                ErrorKind::DigestMismatch {
                    actual: same_algorithm_digest(&d, body),
                },
            )),
            Err(_) => Err((
                Outcome::DigestMismatch,
                ErrorKind::HeaderDigestMismatch { header: text },
            )),
        },
    }
}

/// The target of the `rel="next"` link in one `Link` header value
/// (RFC 8288: `<uri>; param=value, <uri2>; …`).
pub(crate) fn next_link(value: &str) -> Option<String> {
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params_end = after[close + 1..]
            .find('<')
            .map_or(after.len(), |i| close + 1 + i);
        let params = &after[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.strip_prefix("rel=").is_some_and(|rel| {
                rel.trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next {
            return Some(target.to_owned());
        }
        rest = &after[params_end..];
    }
    None
}

/// Resolves a `Link` target against the page it came from, refusing any
/// other host (or a switch of scheme).
pub(crate) fn follow(current: &str, target: &str, host: &str) -> Result<String, ErrorKind> {
    let base = reqwest::Url::parse(current).map_err(|_| ErrorKind::BadLink(target.to_owned()))?;
    let next = base
        .join(target)
        .map_err(|_| ErrorKind::BadLink(target.to_owned()))?;
    if url_host(&next) != host || next.scheme() != base.scheme() {
        return Err(ErrorKind::ForeignLink {
            url: next.to_string(),
        });
    }
    Ok(next.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_among_others() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r/a>; rel="prev", <https://r/b>; rel=next"#).as_deref(),
            Some("https://r/b")
        );
        assert_eq!(next_link(r#"<https://r/a>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link("<unterminated"), None);
    }

    #[test]
    fn follow_resolves_relative_links_and_refuses_other_hosts() {
        let here = "http://127.0.0.1:5000/v2/_catalog?n=2";
        assert_eq!(
            follow(here, "/v2/_catalog?last=b&n=2", "127.0.0.1:5000").unwrap(),
            "http://127.0.0.1:5000/v2/_catalog?last=b&n=2"
        );
        assert_eq!(
            follow(here, "http://127.0.0.1:5000/v2/x", "127.0.0.1:5000").unwrap(),
            "http://127.0.0.1:5000/v2/x"
        );
        for foreign in [
            "http://evil.example/v2/_catalog",
            "http://127.0.0.1:5001/v2/_catalog",
            "https://127.0.0.1:5000/v2/_catalog",
            "//evil.example/v2/",
        ] {
            assert!(
                matches!(
                    follow(here, foreign, "127.0.0.1:5000"),
                    Err(ErrorKind::ForeignLink { .. })
                ),
                "{foreign}"
            );
        }
    }

    #[test]
    fn body_digest_checks_the_stated_digest() {
        let body = b"{}";
        let d = Digest::sha256_of(body);
        assert_eq!(body_digest(None, body).unwrap(), d);
        assert_eq!(body_digest(Some(d.to_string()), body).unwrap(), d);
        let other = Digest::sha256_of(b"x").to_string();
        assert!(body_digest(Some(other), body).is_err());
        assert!(body_digest(Some("nonsense".into()), body).is_err());
    }
}
