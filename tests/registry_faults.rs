//! Fault injection: registries that rate-limit, fail, stall, lie about
//! content or send too much, a cache edited behind the client's back, and
//! registries that cannot be reached at all (the circuit breaker). Each
//! case must end in the right kind of error (or a refetch), move the
//! counters, and never panic.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use image_auditor::audit::{Policy, VerdictKind};
use image_auditor::event::Event;
use image_auditor::index::Index;
use image_auditor::manifest;
use image_auditor::reference::{Digest, Repository};
use image_auditor::registry::{
    BreakerConfig, ErrorKind, ManifestKind, OCI_MANIFEST, Outcome, RegistryConfig, RegistryError,
    RequestKind, StatsSnapshot, resolve_children,
};
use image_auditor::resolve::Resolver;
use support::fixtures::push_event;
use support::registry::{Workbench, push_tag};
use support::service::Service;
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

/// A mock registry answering every GET with `response`, and the
/// repository `test/app` on it.
async fn answering(response: impl Respond + 'static) -> (MockServer, Repository) {
    let server = MockServer::start().await;
    let repo = repo_on(&server, "test/app");
    Mock::given(method("GET"))
        .respond_with(response)
        .mount(&server)
        .await;
    (server, repo)
}

/// One fetch of `digest` from `repo` by a fresh client of `config`, which
/// must fail: the error, and the client's counters after it.
async fn failed_fetch(
    config: RegistryConfig,
    repo: &Repository,
    digest: &Digest,
) -> (RegistryError, StatsSnapshot) {
    let c = client(config);
    let err = c.fetch_manifest(repo, digest).await.unwrap_err();
    (err, c.stats())
}

/// Where the client's cache in `cache` keeps the manifest `digest`.
fn cache_blob(cache: &Path, digest: &Digest) -> PathBuf {
    cache.join("blobs/sha256").join(digest.hex())
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
    let (_, digest) = manifest(2);
    let (server, repo) =
        answering(ResponseTemplate::new(429).insert_header("Retry-After", "3600")).await;

    let (err, stats) = failed_fetch(with_retries(3), &repo, &digest).await;
    assert_eq!(
        *err.kind(),
        ErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(3600))
        }
    );
    assert!(err.is_transient());
    assert_eq!(stats.retries, 0);
    assert_eq!(received(&server).await, 1);
}

#[tokio::test]
async fn persistent_server_error_is_transient_after_bounded_retries() {
    let (_, digest) = manifest(3);
    let (server, repo) = answering(ResponseTemplate::new(500)).await;

    let (err, stats) = failed_fetch(with_retries(2), &repo, &digest).await;
    assert_eq!(*err.kind(), ErrorKind::Server { status: 500 });
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(repo.host())
            && text.contains("test/app")
            && text.contains(&digest.to_string()),
        "{text}"
    );
    assert_eq!(
        stats.count(repo.host(), RequestKind::Manifest, Outcome::ServerError),
        3
    );
    assert_eq!(stats.retries, 2);
    assert_eq!(received(&server).await, 3);
}

#[tokio::test]
async fn response_slower_than_the_timeout_is_transient() {
    let (body, digest) = manifest(4);
    let (_server, repo) = answering(ok(&body).set_delay(Duration::from_secs(10))).await;

    let config = RegistryConfig {
        request_timeout: Duration::from_millis(200),
        ..with_retries(1)
    };
    let (err, stats) = failed_fetch(config, &repo, &digest).await;
    assert_eq!(*err.kind(), ErrorKind::Timeout);
    assert!(err.is_transient());
    assert_eq!(
        stats.count(repo.host(), RequestKind::Manifest, Outcome::Timeout),
        2
    );
}

#[tokio::test]
async fn body_that_does_not_match_its_digest_is_refused_and_not_cached() {
    let (_, digest) = manifest(5);
    let (other_body, other_digest) = manifest(6);
    let (server, repo) = answering(ok(&other_body)).await;
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
    assert!(!cache_blob(cache.path(), &digest).exists());
    assert!(!cache_blob(cache.path(), &other_digest).exists());
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
    assert!(!cache_blob(cache.path(), &digest).exists());
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
    let (_, digest) = manifest(9);
    let huge = vec![b' '; 5 * 1024 * 1024];
    let (server, repo) = answering(ok(&huge)).await;

    let (err, stats) = failed_fetch(with_retries(3), &repo, &digest).await;
    assert_eq!(
        *err.kind(),
        ErrorKind::TooLarge {
            limit: 4 * 1024 * 1024
        }
    );
    assert!(!err.is_transient());
    assert_eq!(
        stats.count(repo.host(), RequestKind::Manifest, Outcome::TooLarge),
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

    // The client is gone once the fetch returns.
    let (err, stats) = failed_fetch(with_retries(0), &repo, &digest).await;
    assert!(matches!(err.kind(), ErrorKind::TooLarge { .. }), "{err}");
    assert_eq!(
        stats.count(&host, RequestKind::Manifest, Outcome::TooLarge),
        1
    );
    // The client hung up: the server's writes failed long before its cap.
    let sent = server.await.unwrap();
    assert!(sent < CAP, "the server sent all {sent} bytes");
}

#[tokio::test]
async fn edited_cache_file_is_detected_counted_and_refetched() {
    let (body, digest) = manifest(11);
    let (server, repo) = answering(ok(&body)).await;
    let cache = tempfile::tempdir().unwrap();
    let blob = cache_blob(cache.path(), &digest);

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
    let (body, digest) = manifest(12);
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let (server, repo) = answering(Gated {
        body: body.clone(),
        gate: gate.clone(),
    })
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
    let body = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
    let digest = Digest::sha256_of(body);
    let (_server, repo) = answering(ok(body)).await;

    let (err, _) = failed_fetch(test_config(None), &repo, &digest).await;
    assert!(
        matches!(err.kind(), ErrorKind::UnsupportedMediaType(_)),
        "{err}"
    );
    assert!(!err.is_transient());
}

// ---------------------------------------------------------------------------
// Circuit breaker: registries that cannot be reached at all.

/// Promoted digests of the one image, and destinations it is promoted to:
/// the shape that made one unknown digest cost ~150 s with nothing
/// reachable (every digest tried at every repository, with retries).
const DIGESTS: usize = 20;
const DESTINATIONS: usize = 20;
/// Manifests the resolver reads at once (`resolve::CONCURRENCY`): the
/// requests that may already be on their way to a host when it is marked
/// down.
const IN_FLIGHT: u64 = 8;

/// A thin-layout manifest set with one project promoting `app` under
/// `digests` from `<source>/staging` to `<host>/prod` of every destination.
fn one_image_project(
    dir: &Path,
    source: &str,
    destinations: &[String],
    digests: &[Digest],
) -> Index {
    let project = dir.join("manifests/demo/promoter-manifest.yaml");
    let images = dir.join("images/demo/images.yaml");
    std::fs::create_dir_all(project.parent().unwrap()).unwrap();
    std::fs::create_dir_all(images.parent().unwrap()).unwrap();
    let mut registries = format!("registries:\n- name: {source}/staging\n  src: true\n");
    for host in destinations {
        registries.push_str(&format!("- name: {host}/prod\n"));
    }
    std::fs::write(&project, registries).unwrap();
    let mut dmap = String::from("- name: app\n  dmap:\n");
    for (i, digest) in digests.iter().enumerate() {
        dmap.push_str(&format!("    \"{digest}\": [\"v{i}\"]\n"));
    }
    std::fs::write(&images, dmap).unwrap();
    let set = manifest::load(dir).unwrap();
    let errors: Vec<String> = set.errors().map(|p| p.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let index = Index::build(&set, 1);
    assert_eq!(index.stats().digests, digests.len());
    index
}

/// Requests to `host` that were sent and failed at the network level.
fn network_failures(stats: &StatsSnapshot, host: &str) -> u64 {
    [Outcome::NetworkError, Outcome::Timeout]
        .into_iter()
        .map(|o| stats.count(host, RequestKind::Manifest, o))
        .sum()
}

/// One unknown digest of an image with `DIGESTS` promoted digests at
/// `DESTINATIONS` destinations, no host of which can be reached: the event
/// is `undecided`, each host is asked at most (failures that mark it down +
/// requests already in flight), and a second event asks none of them.
async fn unknown_digest_with_every_host_down(hosts: &[String]) {
    assert_eq!(hosts.len(), 1 + DESTINATIONS);
    let work = tempfile::tempdir().unwrap();
    let index = one_image_project(work.path(), &hosts[0], &hosts[1..], &promoted_digests());
    let config = RegistryConfig {
        // No probe during the test: every count below is exact or bounded
        // whatever the speed of the machine.
        breaker: BreakerConfig {
            failures: 3,
            cooldown: Duration::from_secs(3600),
        },
        // Some resolvers let lookups of unknown names hang rather than fail:
        // those end as connect timeouts, which count the same; a short one
        // only keeps the test quick.
        connect_timeout: Duration::from_secs(1),
        ..test_config(None)
    };
    let failures = u64::from(config.breaker.failures);
    let resolver = Resolver::new(client(config));
    let at = format!("{}/prod/app", hosts[1]).parse().unwrap();
    let event = push_event(at, &Digest::sha256_of(b"pushed while nothing answers"));
    let policy = Policy::default();

    let (_, result) = resolver.settle(&index, &event, &policy).await;
    assert_eq!(
        result.verdict.kind,
        VerdictKind::Undecided,
        "{:?}",
        result.verdict
    );
    let first = resolver.client().stats();
    for host in hosts {
        let sent = network_failures(&first, host);
        // Without the breaker: DIGESTS × (1 + max_retries) = 80 per host.
        assert!(
            (failures..failures + IN_FLIGHT).contains(&sent),
            "{host}: {sent} requests sent, at most {} expected",
            failures + IN_FLIGHT - 1
        );
        assert!(resolver.client().host_down_until(host).is_some(), "{host}");
    }
    assert!(first.total(RequestKind::Manifest) > first.requests_sent());

    // The next event (what `serve` does for every request during the
    // outage) asks nobody: it is refused at once, still undecided.
    let (_, result) = resolver.settle(&index, &event, &policy).await;
    assert_eq!(result.verdict.kind, VerdictKind::Undecided);
    assert!(
        result.verdict.reason.contains("marked down"),
        "{}",
        result.verdict.reason
    );
    let second = resolver.client().stats();
    for host in hosts {
        assert_eq!(
            network_failures(&second, host),
            network_failures(&first, host),
            "{host}"
        );
    }
    assert_eq!(second.requests_sent(), first.requests_sent());
    assert!(
        second.count(&hosts[0], RequestKind::Manifest, Outcome::CircuitOpen)
            > first.count(&hosts[0], RequestKind::Manifest, Outcome::CircuitOpen)
    );
}

fn promoted_digests() -> Vec<Digest> {
    (0..DIGESTS)
        .map(|i| Digest::sha256_of(format!("promoted {i}").as_bytes()))
        .collect()
}

/// A source and `DESTINATIONS` hosts on loopback ports that were bound,
/// then closed: connections to them are refused.
fn refused_hosts() -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..=DESTINATIONS)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn refused_connections_mark_hosts_down_and_bound_requests() {
    unknown_digest_with_every_host_down(&refused_hosts()).await;
}

#[tokio::test]
async fn unresolvable_names_mark_hosts_down_and_bound_requests() {
    // `.invalid` never resolves (RFC 2606).
    let hosts: Vec<String> = (0..=DESTINATIONS)
        .map(|i| format!("region-{i}.registry.invalid"))
        .collect();
    unknown_digest_with_every_host_down(&hosts).await;
}

/// The real registry goes down and comes back: the breaker opens, probes
/// once per cool-down while it is still down, and the first probe after the
/// restart closes it, so resolution gives exact verdicts again.
#[tokio::test]
async fn a_registry_that_comes_back_is_probed_and_used_again() {
    let Workbench {
        mut reg,
        work,
        mut layout,
    } = Workbench::start();
    let [list, amd64, arm64] = layout.two_platform_index();
    layout.tag(&list, "1.0");
    let pushed = push_tag(&layout, "1.0", &reg.host, "staging/app");
    assert_eq!(pushed, list.digest);
    let host = reg.host.clone();
    let index = one_image_project(
        &work.path().join("manifests"),
        &host,
        std::slice::from_ref(&host),
        std::slice::from_ref(&list.digest),
    );
    let config = RegistryConfig {
        breaker: BreakerConfig {
            failures: 2,
            cooldown: Duration::from_secs(3),
        },
        ..test_config(None)
    };
    let resolver = Resolver::new(client(config));
    let policy = Policy::default();
    let child = push_event(reg.repo("prod/app"), &amd64.digest);
    let settle = |event: &Event| {
        let resolver = &resolver;
        let (index, policy, event) = (&index, &policy, event.clone());
        async move { resolver.settle(index, &event, policy).await.1.verdict }
    };
    let count = |outcome| {
        resolver
            .client()
            .stats()
            .count(&host, RequestKind::Manifest, outcome)
    };

    reg.stop();
    // Two refused connections to staging mark the host down; prod, the
    // other candidate, is not asked.
    assert_eq!(settle(&child).await.kind, VerdictKind::Undecided);
    assert_eq!(count(Outcome::NetworkError), 2);
    assert_eq!(count(Outcome::CircuitOpen), 1);
    let down_until = resolver.client().host_down_until(&host).expect("down");

    // Within the cool-down nothing is sent.
    assert_eq!(settle(&child).await.kind, VerdictKind::Undecided);
    assert_eq!(count(Outcome::NetworkError), 2);
    assert_eq!(count(Outcome::CircuitOpen), 3);

    // After it, one probe: still refused, so down for another cool-down.
    tokio::time::sleep_until(down_until).await;
    assert_eq!(settle(&child).await.kind, VerdictKind::Undecided);
    assert_eq!(count(Outcome::NetworkError), 3);
    assert_eq!(count(Outcome::CircuitOpen), 4);
    let down_until = resolver.client().host_down_until(&host).expect("down");

    reg.restart();
    tokio::time::sleep_until(down_until).await;
    // The probe reads the promoted list from staging, and the host is up.
    let verdict = settle(&child).await;
    assert_eq!(verdict.kind, VerdictKind::PromotedChild, "{verdict:?}");
    assert_eq!(count(Outcome::Ok), 1);
    assert_eq!(resolver.client().host_down_until(&host), None);
    // The other child is known now; an unknown digest is asked of the
    // registry (404), which makes a negative verdict possible again.
    let other = settle(&push_event(reg.repo("prod/app"), &arm64.digest)).await;
    assert_eq!(other.kind, VerdictKind::PromotedChild);
    let unknown = Digest::sha256_of(b"never pushed");
    let verdict = settle(&push_event(reg.repo("prod/app"), &unknown)).await;
    assert_eq!(verdict.kind, VerdictKind::Unpromoted, "{verdict:?}");
    assert_eq!(count(Outcome::NotFound), 1);
    assert_eq!(
        (count(Outcome::NetworkError), count(Outcome::CircuitOpen)),
        (3, 4)
    );
}

/// `image_auditor_registry_requests_total` of a running service, by (host,
/// outcome).
async fn registry_requests(service: &Service) -> BTreeMap<(String, String), u64> {
    let text = service.metrics().await;
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        line[start..].split('"').next().unwrap().to_owned()
    };
    text.lines()
        .filter(|l| l.starts_with("image_auditor_registry_requests_total{"))
        .map(|l| {
            let value = l.rsplit(' ').next().unwrap().parse().unwrap();
            ((label(l, "host"), label(l, "outcome")), value)
        })
        .collect()
}

/// `serve` during an outage of every registry: `POST /v1/check` answers
/// `undecided`, the hosts are asked only until their breakers open, and
/// later requests ask nobody, so none is held until `http.request_timeout`.
#[tokio::test]
async fn serve_answers_without_asking_hosts_that_are_down() {
    let hosts = refused_hosts();
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    one_image_project(&manifests, &hosts[0], &hosts[1..], &promoted_digests());
    let service = Service::start(
        work.path(),
        &manifests,
        "registry:\n  backoff_base: 10ms\n  backoff_max: 50ms\n  breaker:\n    failures: 3\n    cooldown: 1h\n",
    )
    .await;
    let http = reqwest::Client::new();
    let check = |n: usize| {
        let reference = format!(
            "{}/prod/app@{}",
            hosts[1],
            Digest::sha256_of(format!("unknown {n}").as_bytes())
        );
        let request = http
            .post(service.url("/v1/check"))
            .json(&serde_json::json!({ "references": [reference] }));
        async move {
            let answer: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            answer["results"][0]["verdict"].as_str().unwrap().to_owned()
        }
    };
    let sent = |counts: &BTreeMap<(String, String), u64>, host: &str| {
        ["network_error", "timeout"]
            .map(|o| {
                counts
                    .get(&(host.to_owned(), o.to_owned()))
                    .copied()
                    .unwrap_or(0)
            })
            .iter()
            .sum::<u64>()
    };
    let refused = |counts: &BTreeMap<(String, String), u64>| {
        counts
            .iter()
            .filter(|((_, o), _)| o == "circuit_open")
            .map(|(_, n)| n)
            .sum::<u64>()
    };

    assert_eq!(check(0).await, "undecided");
    let first = registry_requests(&service).await;
    for host in &hosts {
        let n = sent(&first, host);
        assert!((3..3 + IN_FLIGHT).contains(&n), "{host}: {n} requests sent");
    }
    for n in 1..=3 {
        assert_eq!(check(n).await, "undecided");
    }
    let later = registry_requests(&service).await;
    for host in &hosts {
        assert_eq!(sent(&later, host), sent(&first, host), "{host}");
    }
    // Each check is refused once per promoted digest by the source.
    assert!(refused(&later) >= refused(&first) + 3 * DIGESTS as u64);
}
