//! HTTP routes (docs/design.md §8.4). Handlers translate between HTTP and the library;
//! decisions stay in the pipeline and the auditor. The routes that take
//! deliveries from outside (Pub/Sub push, registry webhooks) are in
//! `ingest`; the status pages' handlers in `pages`; here are the router,
//! health, lookups, check, findings and admin.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

mod ingest;
mod pages;

use crate::audit::{Policy, VerdictKind};
use crate::event::Event;
use crate::findings::{FindingQuery, Store, off_thread};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::reference::Digest;
use crate::reload::Reloader;
use crate::resolve::{Resolver, audit_or_settle};
use crate::sources::pubsub_pull::PullStatus;
use crate::sources::push_auth::PushVerifier;
use crate::sources::webhook::Endpoints;

/// Everything the routes share.
pub struct AppState {
    pub index: Arc<ArcSwap<Index>>,
    pub pipeline: Arc<Pipeline>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub resolver: Option<Arc<Resolver>>,
    pub policy: Policy,
    pub push_enabled: bool,
    pub push_verifier: Option<Arc<PushVerifier>>,
    /// The streaming-pull source, when one is configured.
    pub pull_status: Option<PullStatus>,
    pub webhooks: Arc<Endpoints>,
    pub reloader: Arc<Reloader>,
    pub admin: Arc<AdminAccess>,
    /// Who may acknowledge and resolve findings.
    pub triage: Arc<crate::triage::TriageAccess>,
}

/// Who may call the admin endpoints.
pub enum AdminAccess {
    /// Requests carrying `Authorization: Bearer <token>`.
    Token(Box<[u8]>),
    /// Anyone who can connect: no token is configured and the service
    /// listens on loopback only.
    Open,
    /// Nobody: no token is configured and the service listens beyond
    /// loopback, where anyone could make it rebuild its index at will.
    Disabled,
}

impl AdminAccess {
    fn check(&self, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
        let expected = match self {
            AdminAccess::Open => return Ok(()),
            AdminAccess::Disabled => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "admin endpoints are disabled: set http.admin.token (or token_env), \
                     or listen on a loopback address",
                ));
            }
            AdminAccess::Token(token) => token,
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| crate::secret::bearer(v.as_bytes()));
        match presented {
            Some(p) if bool::from(subtle::ConstantTimeEq::ct_eq(p, &expected[..])) => Ok(()),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                "admin endpoints need `Authorization: Bearer <http.admin.token>`",
            )),
        }
    }
}

pub fn router(state: AppState, body_limit: usize, timeout: std::time::Duration) -> Router {
    let mut router = Router::new()
        .route("/", get(pages::queue))
        .route("/findings/{id}", get(pages::finding))
        .route(crate::status::TRIAGE_JS_PATH, get(pages::triage_js))
        .route(crate::status::STYLE_CSS_PATH, get(pages::style_css))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/digests/{digest}", get(digest))
        .route("/v1/check", post(check))
        .route("/v1/findings", get(findings))
        .route(
            "/v1/findings/{id}/acknowledge",
            post(crate::triage::acknowledge),
        )
        .route("/v1/findings/{id}/resolve", post(crate::triage::resolve))
        .route(
            "/webhooks/{kind}",
            post(ingest::webhook).options(ingest::webhook_validation),
        )
        .route("/-/reload", post(reload));
    if state.push_enabled {
        router = router.route("/pubsub/push", post(ingest::pubsub_push));
    }
    let metrics = state.metrics.clone();
    router
        .with_state(Arc::new(state))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let metrics = metrics.clone();
                async move {
                    match tokio::time::timeout(timeout, next.run(request)).await {
                        Ok(response) => response,
                        Err(_) => {
                            metrics.rejected("request_timeout");
                            error(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the request took longer than http.request_timeout",
                            )
                        }
                    }
                }
            },
        ))
}

/// Reads the body of a request whose headers were accepted, within the
/// body limit.
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, Response> {
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                state.metrics.rejected("body_too_large");
            }
            rejection.into_response()
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// How long `/readyz` waits for the store to answer.
const STORE_CHECK_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let index = state.index.load();
    let stats = index.stats();
    let reload_stuck = state.reloader.stuck();
    // A store that cannot record makes every delivery come back: not ready,
    // with the reason.
    let store_error =
        match tokio::time::timeout(STORE_CHECK_WITHIN, off_thread(&state.store, |s| s.check()))
            .await
        {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "the findings store did not answer within {} s",
                STORE_CHECK_WITHIN.as_secs()
            )),
        };
    let sources = reload_stuck.is_none()
        && store_error.is_none()
        && state
            .pull_status
            .as_ref()
            .is_none_or(PullStatus::is_connected);
    let body = json!({
        "ready": sources,
        "reload_stuck": reload_stuck,
        "store": {
            "backend": state.store.backend(),
            "available": store_error.is_none(),
            "error": store_error,
        },
        "index": stats,
        "pubsub_pull": state.pull_status.as_ref().map(|s| json!({
            "connected": s.is_connected(),
            "stats": format!("{:?}", s.stats()),
        })),
    });
    let status = if sources {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.observe_index(&state.index.load());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn digest(State(state): State<Arc<AppState>>, Path(digest): Path<String>) -> Response {
    let digest: Digest = match digest.parse() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let placements = state.index.load().placement_reports(&digest);
    let status = if placements.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    (
        status,
        axum::Json(json!({ "digest": digest, "placements": placements })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    references: Vec<String>,
}

/// Verdicts for hypothetical pushes; nothing is recorded.
async fn check(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let body = match read_body(&state, request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request: CheckRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"references\": [\"host/path:tag@digest\", …]}}: {e}"),
            );
        }
    };
    if request.references.len() > 1000 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "at most 1000 references per request",
        );
    }
    let mut results = Vec::with_capacity(request.references.len());
    let exceptions = state.pipeline.exceptions();
    let today = crate::exceptions::Date::today();
    for text in &request.references {
        let event = match Event::hypothetical_push(text) {
            Ok(event) => event,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let index = state.index.load_full();
        let (_, result) =
            audit_or_settle(state.resolver.as_deref(), &index, &event, &state.policy).await;
        let lookup = exceptions.lookup(
            &crate::exceptions::Subject {
                repository: &event.repository,
                digest: event.digest.as_ref(),
                tag: event.tag.as_ref(),
                verdict: result.verdict.kind,
            },
            today,
        );
        let mut answer = json!({
            "reference": text,
            "verdict": result.verdict.kind,
            "alert": result.verdict.kind.alerts() && lookup.applies().is_none(),
            "reason": result.verdict.reason,
            "evidence": result.verdict.evidence,
        });
        if let Some(shown) = crate::exceptions::Shown::of(lookup) {
            answer["exception"] = json!(shown);
        }
        results.push(answer);
    }
    axum::Json(json!({ "results": results })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsParams {
    verdict: Option<String>,
    digest: Option<String>,
    repository: Option<String>,
    /// `open`, `acknowledged` or `resolved`.
    state: Option<String>,
    /// Unix milliseconds.
    since: Option<i64>,
    /// A finding id: only older findings (the next page).
    before: Option<i64>,
    limit: Option<usize>,
}

async fn findings(
    State(state): State<Arc<AppState>>,
    Query(params): Query<FindingsParams>,
) -> Response {
    let verdict = match params.verdict.as_deref().map(str::parse::<VerdictKind>) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(unknown)) => return error(StatusCode::BAD_REQUEST, unknown.to_string()),
    };
    let digest = match params
        .digest
        .as_deref()
        .map(str::parse::<Digest>)
        .transpose()
    {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let repository = match params.repository.as_deref().map(str::parse).transpose() {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e}")),
    };
    let triage_state = match params.state.as_deref().map(str::parse).transpose() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{e}")),
    };
    let query = FindingQuery {
        verdict,
        digest,
        repository,
        state: triage_state,
        since_ms: params.since,
        before: params.before.map(crate::findings::FindingId),
        limit: params.limit,
    };
    match off_thread(&state.store, move |s| s.findings(&query)).await {
        Ok(findings) => axum::Json(json!({ "findings": findings })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Syncs the manifest origin and swaps in a new index built from it (even
/// when its version did not change). 200 with the outcome; 503 when the
/// set could not be loaded (the live index stays). Requests that arrive
/// while a reload runs share the next one (see [`Reloader::request`]).
async fn reload(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err((status, message)) = state.admin.check(&headers) {
        state.metrics.rejected("admin_unauthorized");
        return error(status, message);
    }
    match state.reloader.request().await {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
