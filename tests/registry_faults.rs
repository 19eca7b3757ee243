//! Fault injection: registries that rate-limit, fail, stall, lie about
//! content or send too much, and a cache edited behind the client's back.
//! Each case must end in the right kind of error (or a refetch), move the
//! counters, and never panic.

mod support;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use image_auditor::reference::{Digest, Repository};
use image_auditor::registry::{
    ErrorKind, ManifestKind, OCI_MANIFEST, Outcome, RegistryConfig, RequestKind, resolve_children,
};
use support::{client, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A small, valid OCI image manifest, distinct per `n`.
fn manifest(n: u32) -> (Vec<u8>, Digest) {
    let config = Digest::sha256_of(format!("config {n}").as_bytes());
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":8}},"layers":[]}}"#
    )
    .into_bytes();
    let digest = Digest::sha256_of(&body);
    (body, digest)
}

fn repo_on(server: &MockServer, path: &str) -> Repository {
    format!("{}/{path}", server.address()).parse().unwrap()
}

fn manifest_path(repo: &Repository, digest: &Digest) -> String {
    format!("/v2/{}/manifests/{digest}", repo.path())
}

fn ok(body: &[u8]) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("Content-Type", OCI_MANIFEST)
        .set_body_bytes(body.to_vec())
}

fn with_retries(max_retries: u32) -> RegistryConfig {
    RegistryConfig {
        max_retries,
        ..test_config(None)
    }
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_honoured_then_succeeds() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (body, digest) = manifest(1);
    Mock::given(method("GET"))
        .and(path(manifest_path(&repo, &digest)))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(manifest_path(&repo, &digest)))
        .respond_with(ok(&body))
        .mount(&server)
        .await;

    let c = client(with_retries(3));
    let m = c.fetch_manifest(&repo, &digest).await.unwrap();
    assert_eq!(m.kind, ManifestKind::Image { subject: None });
    let host = repo.host();
    let stats = c.stats();
    assert_eq!(
        stats.count(host, RequestKind::Manifest, Outcome::RateLimited),
        1
    );
    assert_eq!(stats.count(host, RequestKind::Manifest, Outcome::Ok), 1);
    assert_eq!(stats.retries, 1);
    assert_eq!(received(&server).await, 2);
}

#[tokio::test]
async fn retry_after_beyond_the_limit_fails_at_once_as_transient() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (_, digest) = manifest(2);
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .mount(&server)
        .await;

    let c = client(with_retries(3));
    let err = c.fetch_manifest(&repo, &digest).await.unwrap_err();
    assert_eq!(
        *err.kind(),
        ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(3600))
        }
    );
    assert!(err.is_transient());
    assert_eq!(c.stats().retries, 0);
    assert_eq!(received(&server).await, 1);
}

#[tokio::test]
async fn persistent_server_error_is_transient_after_bounded_retries() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (_, digest) = manifest(3);
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;

    let c = client(with_retries(2));
    let err = c.fetch_manifest(&repo, &digest).await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Server { status: 500 });
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(repo.host())
            && text.contains("test/app")
            && text.contains(&digest.to_string()),
        "{text}"
    );
    let stats = c.stats();
    assert_eq!(
        stats.count(repo.host(), RequestKind::Manifest, Outcome::ServerError),
        3
    );
    assert_eq!(stats.retries, 2);
    assert_eq!(received(&server).await, 3);
}

#[tokio::test]
async fn response_slower_than_the_timeout_is_transient() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (body, digest) = manifest(4);
    Mock::given(method("GET"))
        .respond_with(ok(&body).set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;

    let c = client(RegistryConfig {
        request_timeout: Duration::from_millis(200),
        ..with_retries(1)
    });
    let err = c.fetch_manifest(&repo, &digest).await.unwrap_err();
    assert_eq!(*err.kind(), ErrorKind::Timeout);
    assert!(err.is_transient());
    assert_eq!(
        c.stats()
            .count(repo.host(), RequestKind::Manifest, Outcome::Timeout),
        2
    );
}

#[tokio::test]
async fn body_that_does_not_match_its_digest_is_refused_and_not_cached() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (_, digest) = manifest(5);
    let (other_body, other_digest) = manifest(6);
    Mock::given(method("GET"))
        .respond_with(ok(&other_body))
        .mount(&server)
        .await;
    let cache = tempfile::tempdir().unwrap();

    let c = client(RegistryConfig {
        max_retries: 3,
        ..test_config(Some(cache.path()))
    });
    for _ in 0..2 {
        let err = c.fetch_manifest(&repo, &digest).await.unwrap_err();
        assert_eq!(
            *err.kind(),
            ErrorKind::DigestMismatch {
                actual: other_digest.clone()
            }
        );
        assert!(!err.is_transient());
    }
    // Not retried within a fetch, not cached between fetches.
    assert_eq!(received(&server).await, 2);
    let stats = c.stats();
    assert_eq!(
        stats.count(repo.host(), RequestKind::Manifest, Outcome::DigestMismatch),
        2
    );
    assert_eq!(stats.cache_writes, 0);
    assert!(
        !cache
            .path()
            .join("blobs/sha256")
            .join(digest.hex())
            .exists()
    );
    assert!(
        !cache
            .path()
            .join("blobs/sha256")
            .join(other_digest.hex())
            .exists()
    );
}

#[tokio::test]
async fn docker_content_digest_header_must_name_the_body() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (body, digest) = manifest(7);
    let (good_body, good_digest) = manifest(8);
    Mock::given(method("GET"))
        .and(path(manifest_path(&repo, &digest)))
        .respond_with(ok(&body).insert_header("Docker-Content-Digest", good_digest.to_string()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(manifest_path(&repo, &good_digest)))
        .respond_with(
            ok(&good_body).insert_header("Docker-Content-Digest", good_digest.to_string()),
        )
        .mount(&server)
        .await;
    let cache = tempfile::tempdir().unwrap();

    let c = client(test_config(Some(cache.path())));
    let err = c.fetch_manifest(&repo, &digest).await.unwrap_err();
    assert_eq!(
        *err.kind(),
        ErrorKind::HeaderDigestMismatch {
            header: good_digest.to_string()
        }
    );
    assert!(!err.is_transient());
    assert!(
        !cache
            .path()
            .join("blobs/sha256")
            .join(digest.hex())
            .exists()
    );
    // A truthful header is accepted.
    c.fetch_manifest(&repo, &good_digest).await.unwrap();
    let stats = c.stats();
    assert_eq!(
        stats.count(repo.host(), RequestKind::Manifest, Outcome::DigestMismatch),
        1
    );
    assert_eq!(
        stats.count(repo.host(), RequestKind::Manifest, Outcome::Ok),
        1
    );
    assert_eq!(stats.cache_writes, 1);
}

#[tokio::test]
async fn oversized_body_with_content_length_is_refused_unread() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (_, digest) = manifest(9);
    let huge = vec![b' '; 5 * 1024 * 1024];
    Mock::given(method("GET"))
        .respond_with(ok(&huge))
        .mount(&server)
        .await;

    let c = client(with_retries(3));
    let err = c.fetch_manifest(&repo, &digest).await.unwrap_err();
    assert_eq!(
        *err.kind(),
        ErrorKind::TooLarge {
            limit: 4 * 1024 * 1024
        }
    );
    assert!(!err.is_transient());
    assert_eq!(
        c.stats()
            .count(repo.host(), RequestKind::Manifest, Outcome::TooLarge),
        1
    );
    assert_eq!(received(&server).await, 1);
}

/// A server that answers one request with an endless chunked body (no
/// Content-Length) and reports how much it managed to send before the
/// client hung up, up to `cap`.
async fn endless_body_server(cap: u64) -> (String, tokio::task::JoinHandle<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let handle = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before sending a request");
            request.extend_from_slice(&buf[..n]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        if sock.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let chunk = [b' '; 64 * 1024];
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        let mut sent = 0;
        while sent < cap {
            if sock.write_all(&framed).await.is_err() {
                break;
            }
            sent += chunk.len() as u64;
        }
        sent
    });
    (host, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_streamed_body_is_not_read_to_the_end() {
    const CAP: u64 = 1024 * 1024 * 1024;
    let (host, server) = endless_body_server(CAP).await;
    let repo: Repository = format!("{host}/test/app").parse().unwrap();
    let (_, digest) = manifest(10);

    let c = client(with_retries(0));
    let err = c.fetch_manifest(&repo, &digest).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::TooLarge { .. }), "{err}");
    assert_eq!(
        c.stats()
            .count(&host, RequestKind::Manifest, Outcome::TooLarge),
        1
    );
    drop(c);
    // The client hung up: the server's writes failed long before its cap.
    let sent = server.await.unwrap();
    assert!(sent < CAP, "the server sent all {sent} bytes");
}

#[tokio::test]
async fn edited_cache_file_is_detected_counted_and_refetched() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (body, digest) = manifest(11);
    Mock::given(method("GET"))
        .respond_with(ok(&body))
        .mount(&server)
        .await;
    let cache = tempfile::tempdir().unwrap();
    let blob = cache.path().join("blobs/sha256").join(digest.hex());

    client(test_config(Some(cache.path())))
        .fetch_manifest(&repo, &digest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&blob).unwrap(), body);

    let edited = String::from_utf8(body.clone())
        .unwrap()
        .replace("\"layers\":[]", "\"layers\":[ ]");
    let truncated = body[..body.len() / 2].to_vec();
    for (n, tampered) in [edited.into_bytes(), truncated].into_iter().enumerate() {
        std::fs::write(&blob, &tampered).unwrap();
        let c = client(test_config(Some(cache.path())));
        let m = c.fetch_manifest(&repo, &digest).await.unwrap();
        assert!(!m.from_cache);
        assert_eq!(&m.bytes[..], &body[..]);
        let stats = c.stats();
        assert_eq!(
            (
                stats.cache_corruptions,
                stats.cache_misses,
                stats.cache_hits
            ),
            (1, 1, 0)
        );
        assert_eq!(stats.total(RequestKind::Manifest), 1);
        assert_eq!(
            std::fs::read(&blob).unwrap(),
            body,
            "refetched copy restored"
        );
        assert_eq!(received(&server).await, n + 2);
    }

    // Repaired: the next start needs no request.
    let c = client(test_config(Some(cache.path())));
    assert!(c.fetch_manifest(&repo, &digest).await.unwrap().from_cache);
    assert!(c.stats().requests.is_empty());
}

/// Answers only once the test opens the gate, so that every concurrent
/// caller is known to be waiting before the response exists.
struct Gated {
    body: Vec<u8>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Respond for Gated {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        ok(&self.body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_one_digest_send_one_request() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let (body, digest) = manifest(12);
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    Mock::given(method("GET"))
        .respond_with(Gated {
            body: body.clone(),
            gate: gate.clone(),
        })
        .mount(&server)
        .await;

    let c = client(test_config(None));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, repo, digest) = (c.clone(), repo.clone(), digest.clone());
        tasks.spawn(async move { c.fetch_manifest(&repo, &digest).await });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.stats().coalesced < 7 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let joined_in_time = c.stats().coalesced == 7;
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert!(
        joined_in_time,
        "callers did not join one fetch: {:?}",
        c.stats()
    );

    while let Some(result) = tasks.join_next().await {
        assert_eq!(&result.unwrap().unwrap().bytes[..], &body[..]);
    }
    assert_eq!(c.stats().total(RequestKind::Manifest), 1);
    assert_eq!(received(&server).await, 1);
}

#[tokio::test]
async fn a_transient_failure_anywhere_outweighs_not_found_elsewhere() {
    let server = MockServer::start().await;
    let source = repo_on(&server, "staging/app");
    let destination = repo_on(&server, "prod/app");
    let (_, digest) = manifest(13);
    Mock::given(method("GET"))
        .and(path(manifest_path(&source, &digest)))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(manifest_path(&destination, &digest)))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;

    let c = client(with_retries(0));
    for candidates in [
        [source.clone(), destination.clone()],
        [destination.clone(), source.clone()],
    ] {
        let err = resolve_children(&c, &candidates, &digest)
            .await
            .unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::Server { status: 503 });
        assert!(
            err.is_transient(),
            "the image may exist: undecided, not unpromoted"
        );
        assert_eq!(err.repository(), "staging/app");
    }
}

#[tokio::test]
async fn verified_but_unparseable_manifest_is_a_permanent_error() {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    let body = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
    let digest = Digest::sha256_of(body);
    Mock::given(method("GET"))
        .respond_with(ok(body))
        .mount(&server)
        .await;

    let c = client(test_config(None));
    let err = c.fetch_manifest(&repo, &digest).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::UnsupportedMediaType(_)),
        "{err}"
    );
    assert!(!err.is_transient());
}
