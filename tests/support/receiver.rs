//! A local HTTP receiver for alert sinks: records every request (headers
//! and body) and answers 500 to the first `fail_first` of them, as a
//! receiver having a bad minute would.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the receiver answered.
    pub status: u16,
}

/// Run once, on the first request the receiver accepts, after recording
/// it and before answering: what happens to the sender while its alert has
/// arrived but the answer has not.
pub type Hook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Received>>>,
    fail_first: usize,
    hook: Arc<tokio::sync::Mutex<Option<Hook>>>,
}

pub struct Receiver {
    pub url: String,
    requests: Arc<Mutex<Vec<Received>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free loopback port inside the test's runtime.
    pub async fn start(fail_first: usize) -> Receiver {
        Self::start_with(fail_first, None).await
    }

    /// [`Receiver::start`], running `hook` on the first accepted request.
    pub async fn start_hooked(hook: Hook) -> Receiver {
        Self::start_with(0, Some(hook)).await
    }

    async fn start_with(fail_first: usize, hook: Option<Hook>) -> Receiver {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            requests: requests.clone(),
            fail_first,
            hook: Arc::new(tokio::sync::Mutex::new(hook)),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            requests,
            _task: task,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// The bodies of the requests answered 2xx, as JSON.
    pub fn accepted_json(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| r.status < 300)
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = {
        let mut requests = shared.requests.lock().unwrap();
        let status = if requests.len() < shared.fail_first {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        requests.push(Received {
            headers,
            body,
            status: status.as_u16(),
        });
        status
    };
    if status == StatusCode::OK {
        let hook = shared.hook.lock().await.take();
        if let Some(hook) = hook {
            hook().await;
        }
    }
    status
}
