//! HTTP routes (docs/design.md §8.4). Handlers translate between HTTP and the library;
//! decisions stay in the pipeline and the auditor.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::audit::{Policy, VerdictKind};
use crate::event::{Event, LimitHit};
use crate::findings::{FindingQuery, Store, off_thread};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::reference::Digest;
use crate::reload::Reloader;
use crate::resolve::{Resolver, audit_or_settle};
use crate::sources::Disposition;
use crate::sources::pubsub_pull::PullStatus;
use crate::sources::pubsub_push;
use crate::sources::push_auth::PushVerifier;
use crate::sources::webhook::{Endpoints, WebhookKind};

/// Everything the routes share.
#[derive(Clone)]
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
            .map(|v| v.as_bytes())
            .and_then(|v| {
                v.get(..7)
                    .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
                    .map(|_| &v[7..])
            });
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
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/digests/{digest}", get(digest))
        .route("/v1/check", post(check))
        .route("/v1/findings", get(findings))
        .route(
            "/webhooks/{kind}",
            post(webhook).options(webhook_validation),
        )
        .route("/-/reload", post(reload));
    if state.push_enabled {
        router = router.route("/pubsub/push", post(pubsub_push));
    }
    let metrics = state.metrics.clone();
    router
        .with_state(state)
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

async fn readyz(State(state): State<AppState>) -> Response {
    let index = state.index.load();
    let stats = index.stats();
    let reload_stuck = state.reloader.stuck();
    let sources = reload_stuck.is_none()
        && state
            .pull_status
            .as_ref()
            .is_none_or(PullStatus::is_connected);
    let body = json!({
        "ready": sources,
        "reload_stuck": reload_stuck,
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

async fn metrics(State(state): State<AppState>) -> Response {
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

async fn digest(State(state): State<AppState>, Path(digest): Path<String>) -> Response {
    let digest: Digest = match digest.parse() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let index = state.index.load();
    let placements: Vec<_> = index
        .placements(&digest)
        .into_iter()
        .map(|p| {
            let image = index.promotion_image(p.promotion);
            let manifest = index.manifest(index.image_manifest(image));
            let name = index.image_name(image);
            json!({
                "project": manifest.project,
                "file": manifest.images_file.display().to_string(),
                "line": index.promotion_line(p.promotion),
                "image": name,
                "digest": index.promotion_digest(p.promotion),
                "tags": index.promotion_tags(p.promotion).collect::<Vec<_>>(),
                "parent": match p.how {
                    crate::index::How::Direct => None,
                    crate::index::How::Child { parent } => Some(parent),
                },
                "repositories": manifest.destinations.iter()
                    .map(|d| format!("{d}/{name}")).collect::<Vec<_>>(),
            })
        })
        .collect();
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
async fn check(State(state): State<AppState>, request: Request) -> Response {
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
    for text in &request.references {
        let event = match Event::hypothetical_push(text) {
            Ok(event) => event,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let index = state.index.load_full();
        let (_, result) =
            audit_or_settle(state.resolver.as_deref(), &index, &event, &state.policy).await;
        results.push(json!({
            "reference": text,
            "verdict": result.verdict.kind,
            "alert": result.verdict.kind.alerts(),
            "reason": result.verdict.reason,
            "evidence": result.verdict.evidence,
        }));
    }
    axum::Json(json!({ "results": results })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingsParams {
    verdict: Option<String>,
    digest: Option<String>,
    repository: Option<String>,
    /// Unix milliseconds.
    since: Option<i64>,
    /// A finding id: only older findings (the next page).
    before: Option<i64>,
    limit: Option<usize>,
}

async fn findings(State(state): State<AppState>, Query(params): Query<FindingsParams>) -> Response {
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
    let query = FindingQuery {
        verdict,
        digest,
        repository,
        since_ms: params.since,
        before: params.before.map(crate::findings::FindingId),
        limit: params.limit,
    };
    match off_thread(&state.store, move |s| s.findings(&query)).await {
        Ok(findings) => axum::Json(json!({ "findings": findings })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// A Pub/Sub push delivery: 2xx once the verdict is recorded (or the
/// message is malformed and recorded as such); 503 asks Pub/Sub to retry.
/// The token is checked before the body is read, so a client without one
/// cannot make the service hold bodies.
async fn pubsub_push(State(state): State<AppState>, request: Request) -> Response {
    if let Some(verifier) = &state.push_verifier
        && let Err(e) = verifier.verify_headers(request.headers()).await
    {
        state.metrics.rejected("unauthenticated");
        return error(e.status(), e.to_string());
    }
    let headers = request.headers().clone();
    let body = match read_body(&state, request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let delivery = match pubsub_push::decode(&headers, &body) {
        Ok(d) => d,
        Err(e) => {
            count_limit_hit(&state.metrics, e.limit());
            return error(e.status(), e.to_string());
        }
    };
    let handled = state.pipeline.handle(delivery).await;
    match handled.disposition {
        // 200: the emulator treats 202 (and, reportedly, 204) as a failure.
        Disposition::Ack => (
            StatusCode::OK,
            axum::Json(json!({ "verdict": handled.verdict, "duplicate": handled.duplicate })),
        )
            .into_response(),
        Disposition::Retry => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "undecided for now; deliver again",
        ),
    }
}

/// A registry webhook: 401 without the endpoint's token, 415 for a content
/// type the format is never sent with (both decided from the headers,
/// before the body is read), 413 for more events than the endpoint accepts
/// in one request, 400 for a body that is not a delivery of the format;
/// otherwise every event is decided and recorded, then 200 (or the format's
/// handshake reply). 503 when any event must be delivered again: the
/// registry resends the request, and the events already recorded are
/// recognised by their ids.
async fn webhook(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let uri = request.uri().clone();
    let kind = match configured_kind(&state, &kind) {
        Ok(kind) => kind,
        Err(response) => return response,
    };
    let count = |outcome| state.metrics.webhook_request(kind.as_str(), outcome);
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let query = query_token(&uri);
    let Some(endpoint) = state
        .webhooks
        .authenticate_request(kind, authorization, query.as_deref())
    else {
        count("unauthorized");
        state.metrics.rejected("unauthenticated");
        let message = if authorization.is_some() {
            "the Authorization header does not carry this endpoint's token"
        } else {
            "missing Authorization header: send the endpoint's token as `Bearer <token>`"
        };
        return error(StatusCode::UNAUTHORIZED, message);
    };
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if !essence.as_deref().is_some_and(|e| kind.accepts(e)) {
        count("unsupported_media_type");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {:?} is not one {} webhooks are sent with",
                essence.unwrap_or_default(),
                kind.as_str()
            ),
        );
    }
    let body = match read_body(&state, request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(e) = endpoint.check_event_count(&body) {
        count("rejected");
        state.metrics.rejected("too_many_events");
        tracing::warn!(source = kind.as_str(), endpoint = %endpoint.name, error = %e,
            "webhook request refused");
        return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
    }
    let parsed = match kind.parse(&body, endpoint) {
        Ok(parsed) => parsed,
        Err(rejected) => {
            count("rejected");
            count_limit_hit(&state.metrics, rejected.limit());
            tracing::warn!(source = kind.as_str(), endpoint = %endpoint.name, error = %rejected,
                "webhook request rejected");
            return error(StatusCode::BAD_REQUEST, rejected.to_string());
        }
    };
    for ignored in &parsed.ignored {
        state
            .metrics
            .webhook_ignored(kind.as_str(), ignored.why.as_str());
    }
    let handled = futures::future::join_all(
        parsed
            .deliveries
            .into_iter()
            .map(|d| state.pipeline.handle(d.at(&endpoint.name))),
    )
    .await;
    if handled.iter().any(|h| h.disposition == Disposition::Retry) {
        count("retry");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "some events are undecided for now; deliver again",
        );
    }
    count("accepted");
    match parsed.reply {
        Some(reply) => axum::Json(reply).into_response(),
        None => axum::Json(json!({
            "decided": handled.iter().map(|h| json!({
                "verdict": h.verdict, "duplicate": h.duplicate,
            })).collect::<Vec<_>>(),
            "ignored": parsed.ignored.len(),
        }))
        .into_response(),
    }
}

/// Counts a request a parser limit refused (the pipeline counts the
/// limits of malformed events).
fn count_limit_hit(metrics: &Metrics, limit: Option<LimitHit>) {
    if let Some(limit) = limit {
        metrics.rejected(limit.reason());
    }
}

/// The webhook kind named by the path, if any endpoint of it is
/// configured; otherwise the 404 to answer.
// The 404 is built once here; it is the rare path, so its size does not matter.
#[allow(clippy::result_large_err)]
fn configured_kind(state: &AppState, kind: &str) -> Result<WebhookKind, Response> {
    WebhookKind::from_path(kind)
        .filter(|k| state.webhooks.is_configured(*k))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("no webhook endpoint {kind:?} is configured"),
            )
        })
}

/// The `access_token` query parameter, for kinds whose sender cannot set a
/// header on every request.
fn query_token(uri: &Uri) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenQuery {
        access_token: Option<String>,
    }
    Query::<TokenQuery>::try_from_uri(uri)
        .ok()
        .and_then(|Query(q)| q.access_token)
}

/// The CloudEvents abuse-protection handshake (`OPTIONS`), which Event Grid
/// sends before delivering CloudEvents: 200 with `WebHook-Allowed-Origin`
/// (the requested origin) and `WebHook-Allowed-Rate` (the requested rate,
/// or `*`: nothing here throttles by rate) is consent. Consent is given only
/// to a request carrying the endpoint's token, as the `access_token` query
/// parameter of the subscribed URL (the handshake has no custom headers):
/// otherwise anyone could point a subscription here and have Event Grid
/// send us a stream of requests we then refuse. 401 without it, and 405 for
/// kinds whose senders never validate this way.
async fn webhook_validation(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let kind = match configured_kind(&state, &kind) {
        Ok(kind) => kind,
        Err(response) => return response,
    };
    if !kind.validates_with_options() {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} webhooks are delivered by POST only", kind.as_str()),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let count = |outcome| state.metrics.webhook_request(kind.as_str(), outcome);
    let Some(origin) = headers.get("webhook-request-origin").cloned() else {
        count("rejected");
        return error(
            StatusCode::BAD_REQUEST,
            "not a CloudEvents validation request: the WebHook-Request-Origin header is missing",
        );
    };
    let rate = match headers.get("webhook-request-rate") {
        None => HeaderValue::from_static("*"),
        Some(rate) => match rate.to_str().ok().and_then(|r| r.parse::<u32>().ok()) {
            Some(n) if n > 0 => rate.clone(),
            _ => {
                count("rejected");
                return error(
                    StatusCode::BAD_REQUEST,
                    "WebHook-Request-Rate must be a positive number of requests per minute",
                );
            }
        },
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let query = query_token(&uri);
    let Some(endpoint) = state
        .webhooks
        .authenticate_request(kind, authorization, query.as_deref())
    else {
        count("unauthorized");
        return error(
            StatusCode::UNAUTHORIZED,
            "no consent without the endpoint's token: subscribe the URL with \
             ?access_token=<token>",
        );
    };
    count("validated");
    tracing::info!(source = kind.as_str(), endpoint = %endpoint.name,
        origin = %crate::sources::json::shown(&String::from_utf8_lossy(origin.as_bytes())),
        "webhook validation handshake answered");
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert("webhook-allowed-origin", origin);
    out.insert("webhook-allowed-rate", rate);
    out.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    response
}

/// Syncs the manifest origin and swaps in a new index built from it (even
/// when its version did not change). 200 with the outcome; 503 when the
/// set could not be loaded (the live index stays). Requests that arrive
/// while a reload runs share the next one (see [`Reloader::request`]).
async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err((status, message)) = state.admin.check(&headers) {
        state.metrics.rejected("admin_unauthorized");
        return error(status, message);
    }
    match state.reloader.request().await {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The human-readable status page (docs/design.md §8.4).
async fn status_page(State(state): State<AppState>) -> Response {
    let query = FindingQuery {
        limit: Some(20),
        ..FindingQuery::default()
    };
    let findings = match off_thread(&state.store, move |s| s.findings(&query)).await {
        Ok(findings) => findings,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let page = crate::status::render(
        &state.index.load().stats(),
        &state.pipeline.last_events(),
        &findings,
        crate::findings::now_ms(),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}
