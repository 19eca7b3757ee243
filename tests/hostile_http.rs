//! The HTTP server against hostile clients, over real sockets to the real
//! `serve` process: what a client without credentials can make it hold
//! (bodies, sockets, header time) and what it can make it do (reloads).
//! Limits are asserted by counts — bytes sent, answers read, refusals in
//! `rejected_requests_total{reason}`, reloads run — never by elapsed time.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use image_auditor::config::HttpConfig;
use image_auditor::secret::TokenError;
use image_auditor::server::AdminAccess;
use serde_json::Value;
use support::registry::free_port;
use support::service::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WEBHOOK_TOKEN: &str = "hostile-webhook-token-0123456789";
const ADMIN_TOKEN: &str = "hostile-admin-token-0123456789";
const DISTRIBUTION_JSON: &str = "application/vnd.docker.distribution.events.v1+json";

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A service on the small fixture set, with a distribution webhook
/// endpoint and `http` settings added.
async fn start(dir: &Path, http: &str, extra: &str) -> Service {
    let extra = format!(
        "resolve: false\nwebhooks:\n  distribution:\n  - name: local\n    \
         registry: registry.example\n    token: {WEBHOOK_TOKEN}\n{extra}"
    );
    Service::start_with_http(
        free_port(),
        dir,
        &fixture("manifests-fixtures/rules/thin-basic"),
        http,
        &extra,
    )
    .await
}

/// Fails the test instead of hanging when the server never answers; the
/// bound is a guard, not a measurement.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("no progress within a minute: {what}"))
}

async fn connect(service: &Service) -> TcpStream {
    TcpStream::connect(("127.0.0.1", service.port))
        .await
        .unwrap()
}

/// The first line of the next response, or None when the server closed
/// the connection without one.
async fn status_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return None,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
        }
    }
    Some(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `GET /healthz` on a new connection: the status line, or None when the
/// connection was refused.
async fn healthz(service: &Service) -> Option<String> {
    let mut stream = connect(service).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: auditor\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    status_line(&mut stream).await
}

/// `image_auditor_rejected_requests_total{reason}`, 0 before it first bites.
async fn rejected(service: &Service, reason: &str) -> u64 {
    let text = service.metrics().await;
    let series = format!("image_auditor_rejected_requests_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

fn rss_bytes(service: &Service) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", service.pid())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

async fn generation(service: &Service) -> u64 {
    let readyz: Value = reqwest::get(service.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    readyz["index"]["generation"].as_u64().unwrap()
}

/// Request headers announcing `length` bytes of body.
fn post_head(path: &str, content_type: &str, authorization: Option<&str>, length: usize) -> String {
    let authorization = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: auditor\r\nContent-Type: {content_type}\r\n\
         {authorization}Content-Length: {length}\r\n"
    )
}

#[tokio::test]
async fn unauthenticated_bodies_are_refused_from_the_headers_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (_jwks, push_auth) = support::token::keyless_push_auth().await;
    // A request timeout far beyond the guard: only refusing from the
    // headers can answer these requests in time.
    let service = start(dir.path(), "  request_timeout: 1h\n", &push_auth).await;

    // Each client announces almost the body limit and sends 1 KiB of it.
    const ANNOUNCED: usize = 1_000_000;
    const SENT: usize = 1024;
    let heads = [
        post_head("/webhooks/distribution", DISTRIBUTION_JSON, None, ANNOUNCED),
        post_head(
            "/webhooks/distribution",
            DISTRIBUTION_JSON,
            Some("Bearer wrong-token-0123456789abcdef"),
            ANNOUNCED,
        ),
        post_head("/pubsub/push", "application/json", None, ANNOUNCED),
        post_head(
            "/pubsub/push",
            "application/json",
            Some("Bearer not.a.jwt"),
            ANNOUNCED,
        ),
    ];
    let rss_before = rss_bytes(&service);
    const CLIENTS: usize = 200;
    let mut streams = Vec::new();
    for i in 0..CLIENTS {
        let mut stream = connect(&service).await;
        stream
            .write_all(format!("{}\r\n", heads[i % heads.len()]).as_bytes())
            .await
            .unwrap();
        stream.write_all(&[b' '; SENT]).await.unwrap();
        streams.push(stream);
    }
    // Every client is answered while it has sent SENT of ANNOUNCED bytes,
    // and all of them are still connected while the memory is read.
    for (i, stream) in streams.iter_mut().enumerate() {
        let status = within("an answer to an unauthenticated body", status_line(stream)).await;
        assert_eq!(
            status.as_deref(),
            Some("HTTP/1.1 401 Unauthorized"),
            "client {i}"
        );
    }
    let grown = rss_bytes(&service).saturating_sub(rss_before);
    assert!(
        grown < 32 * 1024 * 1024,
        "RSS grew by {grown} bytes for {CLIENTS} refused clients"
    );
    drop(streams);

    // With `Expect: 100-continue` the client waits for the server to ask
    // for the body: it never does, the refusal is the first answer.
    for head in &heads {
        let mut stream = connect(&service).await;
        stream
            .write_all(format!("{head}Expect: 100-continue\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let status = within("an answer without the body", status_line(&mut stream)).await;
        assert_eq!(
            status.as_deref(),
            Some("HTTP/1.1 401 Unauthorized"),
            "{head}"
        );
    }
    assert_eq!(
        rejected(&service, "unauthenticated").await,
        (CLIENTS + heads.len()) as u64
    );
}

#[tokio::test]
async fn an_idle_flood_is_shed_for_healthz_and_connections_over_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    const CAP: usize = 4;
    let service = start(
        dir.path(),
        &format!("  max_connections: {CAP}\n  header_read_timeout: 1h\n"),
        "",
    )
    .await;

    // Sockets that never send anything, far more than the cap: each new
    // connection closes the oldest idle one, so /healthz still answers.
    const FLOOD: usize = 64;
    let mut idle = Vec::new();
    for _ in 0..FLOOD {
        idle.push(connect(&service).await);
    }
    let status = within("/healthz during an idle flood", healthz(&service)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    // The flood and /healthz were accepted by one server holding CAP.
    assert!(rejected(&service, "idle_connection_shed").await >= (FLOOD + 1 - CAP) as u64);
    let flood_closed = {
        let mut closed = 0;
        for stream in &mut idle[..FLOOD - CAP] {
            if within("a shed connection to close", until_closed(stream))
                .await
                .is_empty()
            {
                closed += 1;
            }
        }
        closed
    };
    assert_eq!(flood_closed, FLOOD - CAP, "shed connections are closed");
    drop(idle);

    // CAP authorised requests in the middle of their bodies: the server
    // asked for each body (100 Continue), so each connection is busy.
    let mut busy = Vec::new();
    for _ in 0..CAP {
        let mut stream = connect(&service).await;
        let head = post_head(
            "/webhooks/distribution",
            DISTRIBUTION_JSON,
            Some(&format!("Bearer {WEBHOOK_TOKEN}")),
            100,
        );
        stream
            .write_all(format!("{head}Expect: 100-continue\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let status = within("the server to ask for the body", status_line(&mut stream)).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 100 Continue"));
        busy.push(stream);
    }
    // Nothing to shed: a new connection is closed unanswered.
    assert_eq!(
        within("a refusal over the cap", healthz(&service)).await,
        None
    );
    // One busy client gives up; its slot frees and /healthz answers again.
    drop(busy.pop());
    let answered = within("/healthz after a slot freed", async {
        loop {
            if let Some(status) = healthz(&service).await {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(answered, "HTTP/1.1 200 OK");
    drop(busy);
    assert!(rejected(&service, "connections").await >= 1);
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(dir.path(), "  header_read_timeout: 200ms\n", "").await;

    // Half a request head, never finished.
    let mut slow = connect(&service).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: aud")
        .await
        .unwrap();
    let sent = within("a slow header to be cut off", until_closed(&mut slow)).await;
    assert!(
        !String::from_utf8_lossy(&sent).contains(" 200 "),
        "{sent:?}"
    );
    // Nothing at all.
    let mut silent = connect(&service).await;
    within(
        "a silent connection to be closed",
        until_closed(&mut silent),
    )
    .await;
    // One request, then idle on keep-alive: closed as well, but not
    // counted as a refusal.
    let mut kept = connect(&service).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: auditor\r\n\r\n")
        .await
        .unwrap();
    let answer = within(
        "an idle keep-alive connection to close",
        until_closed(&mut kept),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"),
        "{answer}"
    );

    assert_eq!(rejected(&service, "header_timeout").await, 2);
}

#[tokio::test]
async fn reloads_need_the_admin_token_and_a_flood_of_them_runs_at_most_two() {
    let dir = tempfile::tempdir().unwrap();
    // The full k8s.io set: each reload takes long enough for the flood
    // to arrive while the first one runs.
    let service = Service::start_with_http(
        free_port(),
        dir.path(),
        &fixture(image_auditor::config::DEFAULT_MANIFESTS),
        &format!("  admin:\n    token: {ADMIN_TOKEN}\n"),
        "resolve: false\n",
    )
    .await;
    let before = generation(&service).await;
    let client = reqwest::Client::new();
    for authorization in [None, Some("Bearer wrong-admin-token-0123456789")] {
        let mut request = client.post(service.url("/-/reload"));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
    }
    assert_eq!(rejected(&service, "admin_unauthorized").await, 2);
    assert_eq!(generation(&service).await, before);

    // Connect every client first, then send all requests at once.
    const FLOOD: usize = 40;
    let mut streams = Vec::new();
    for _ in 0..FLOOD {
        streams.push(connect(&service).await);
    }
    let request = format!(
        "POST /-/reload HTTP/1.1\r\nHost: auditor\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    for stream in &mut streams {
        stream.write_all(request.as_bytes()).await.unwrap();
    }
    for stream in &mut streams {
        let status = within("a reload to answer", status_line(stream)).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    }
    let runs = generation(&service).await - before;
    assert!(
        (1..=2).contains(&runs),
        "{FLOOD} concurrent reload requests ran {runs} reloads"
    );
}

#[test]
fn admin_endpoints_without_a_token_are_open_on_loopback_only() {
    let mut http = HttpConfig::default();
    let no_env = |_: &str| None;
    assert!(matches!(http.admin_access(no_env), Ok(AdminAccess::Open)));
    http.listen = "0.0.0.0:8080".parse().unwrap();
    assert!(matches!(
        http.admin_access(no_env),
        Ok(AdminAccess::Disabled)
    ));
    http.admin.token_env = Some("ADMIN_TOKEN".into());
    assert_eq!(
        http.admin_access(no_env).err(),
        Some(TokenError::EnvUnset("ADMIN_TOKEN".into()))
    );
    let env = |_: &str| Some(ADMIN_TOKEN.to_string());
    assert!(matches!(http.admin_access(env), Ok(AdminAccess::Token(_))));
    http.admin.token = Some("short".into());
    assert_eq!(http.admin_access(env).err(), Some(TokenError::Both));
    http.admin.token_env = None;
    assert_eq!(http.admin_access(env).err(), Some(TokenError::TooShort));
}

#[test]
fn limits_that_would_refuse_every_client_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = fixture("manifests-fixtures/rules/thin-basic");
    for (http, option) in [
        ("max_connections: 0", "http.max_connections"),
        ("header_read_timeout: 0s", "http.header_read_timeout"),
        (
            "admin: {token_env: IMAGE_AUDITOR_TEST_UNSET_ADMIN}",
            "http.admin",
        ),
    ] {
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            format!(
                "manifests: {}\ndata_dir: {}\nhttp: {{{http}}}\n",
                manifests.display(),
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let error = image_auditor::config::Config::load(Some(&path))
            .err()
            .unwrap_or_else(|| panic!("{http} was accepted"))
            .to_string();
        assert!(error.contains(option), "{http}: {error}");
    }
}
