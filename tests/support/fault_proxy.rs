//! A small HTTP proxy in front of a real registry, for fault injection: it
//! forwards every request to the registry and answers with what came back,
//! except for the requests a test told it to spoil (a tampered body, an
//! oversize body). It counts every request, and
//! [`FaultProxy::stop`] makes its port refuse connections.
//!
//! Every answer carries `Connection: close`, so a client never holds a
//! pooled connection: once stopped, the next request is refused at connect,
//! as with a registry that went away.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tokio::task::JoinHandle;

/// What to do to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The registry's answer with one space appended to the body: still
    /// valid JSON, but no longer the bytes of the requested digest (the
    /// headers, `Docker-Content-Digest` included, stay the registry's).
    Tamper,
    /// The registry's answer padded with spaces to this many bytes, with a
    /// `Content-Length` saying so.
    Oversize(usize),
}

#[derive(Default)]
struct Shared {
    /// (path substring, fault); the first match applies.
    rules: Mutex<Vec<(String, Fault)>>,
    /// The path of every request received.
    seen: Mutex<Vec<String>>,
}

pub struct FaultProxy {
    /// `127.0.0.1:<port>`: use it in place of the registry's host.
    pub host: String,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port (bound before this returns, so it is
    /// ready) and forwards to `upstream` (`host:port`, plain HTTP).
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let app = axum::Router::new().fallback(forward).with_state((
            shared.clone(),
            http,
            upstream.to_owned(),
        ));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            host,
            shared,
            server: Some(server),
        }
    }

    /// Spoils every request whose path contains `path_contains` (e.g. a
    /// digest) from now on, until [`FaultProxy::clear`].
    pub fn fault(&self, path_contains: &str, fault: Fault) {
        let mut rules = self.shared.rules.lock().unwrap();
        rules.push((path_contains.to_owned(), fault));
    }

    /// Forwards everything faithfully again.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Requests received so far whose path contains `path_contains`.
    pub fn requests(&self, path_contains: &str) -> usize {
        let seen = self.shared.seen.lock().unwrap();
        seen.iter()
            .filter(|path| path.contains(path_contains))
            .count()
    }

    /// Stops listening; connections to [`FaultProxy::host`] are refused
    /// from the time this returns.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // The listener is dropped with the task, before this resolves.
            let _ = server.await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

type ProxyState = (Arc<Shared>, reqwest::Client, String);

async fn forward(State((shared, http, upstream)): State<ProxyState>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    shared.seen.lock().unwrap().push(path.clone());
    let fault = {
        let rules = shared.rules.lock().unwrap();
        rules
            .iter()
            .find(|(needle, _)| path.contains(needle.as_str()))
            .map(|(_, fault)| fault.clone())
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut upstream_request = http
        .request(method.clone(), format!("http://{upstream}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST {
            upstream_request = upstream_request.header(name, value);
        }
    }
    let Ok(answer) = upstream_request.send().await else {
        return close(
            Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::empty())
                .unwrap(),
        );
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        // The body may change length; hyper frames what is sent (a HEAD
        // keeps the registry's length, since it has no body to frame).
        let framing = name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || (name == header::CONTENT_LENGTH && method != Method::HEAD);
        if !framing {
            response = response.header(name, value);
        }
    }
    let mut body = answer.bytes().await.unwrap_or_default().to_vec();
    match fault {
        Some(Fault::Tamper) => body.push(b' '),
        Some(Fault::Oversize(len)) => body.resize(len.max(body.len()), b' '),
        None => {}
    }
    close(response.body(Body::from(Bytes::from(body))).unwrap())
}

fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
