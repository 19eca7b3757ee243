//! The baseline of the push benchmark (docs/design.md §10): the least an axum server
//! can do for `POST /pubsub/push` — read the body, answer 204. Run by
//! `benches/scripts/push-wrk.sh`; not part of the service.
//!
//! ```text
//! cargo run --release --example minimal_axum -- 127.0.0.1:8091
//! ```

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8091".into());
    let app = Router::new().route(
        "/pubsub/push",
        post(|_body: Bytes| async { StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
    axum::serve(listener, app).await.expect("serve");
}
