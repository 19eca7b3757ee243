//! The routes that take deliveries from outside: Pub/Sub push and registry
//! webhooks (and Event Grid's `OPTIONS` handshake). Each checks credentials
//! from the headers, reads the body within the limit, decodes it with the
//! source's parser, hands the deliveries to the pipeline and answers as the
//! dispositions say.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AppState, error, read_body};
use crate::audit::VerdictKind;
use crate::event::LimitHit;
use crate::metrics::Metrics;
use crate::sources::Disposition;
use crate::sources::pubsub_push;
use crate::sources::webhook::{Endpoint, WebhookKind};

/// A Pub/Sub push delivery: 2xx once the verdict is recorded (or the
/// message is malformed and recorded as such); 503 asks Pub/Sub to retry.
/// The token is checked before the body is read, so a client without one
/// cannot make the service hold bodies.
pub(super) async fn pubsub_push(
    State(state): State<Arc<AppState>>,
    mut request: Request,
) -> Response {
    if let Some(verifier) = &state.push_verifier
        && let Err(e) = verifier.verify_headers(request.headers()).await
    {
        state.metrics.rejected("unauthenticated");
        return error(e.status(), e.to_string());
    }
    // Taken, not cloned: reading the body needs only the extensions (the
    // body limit), and this is every push's path.
    let headers = std::mem::take(request.headers_mut());
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
            axum::Json(PushAnswer {
                verdict: handled.verdict,
                duplicate: handled.duplicate,
            }),
        )
            .into_response(),
        Disposition::Retry => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "undecided for now; deliver again",
        ),
    }
}

/// The body of a push's 200: `{"verdict": …, "duplicate": …}`.
#[derive(Serialize)]
struct PushAnswer {
    verdict: Option<VerdictKind>,
    duplicate: bool,
}

/// A registry webhook: 401 without the endpoint's token, 415 for a content
/// type the format is never sent with (both decided from the headers,
/// before the body is read), 413 for more events than the endpoint accepts
/// in one request, 400 for a body that is not a delivery of the format;
/// otherwise every event is decided and recorded, then 200 (or the format's
/// handshake reply). 503 when any event must be delivered again: the
/// registry resends the request, and the events already recorded are
/// recognised by their ids.
pub(super) async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    request: Request,
) -> Response {
    // Borrowed: everything read from them is decided before the body is.
    let (headers, uri) = (request.headers(), request.uri());
    let kind = match configured_kind(&state, &kind) {
        Ok(kind) => kind,
        Err(response) => return response,
    };
    let count = |outcome| state.metrics.webhook_request(kind.as_str(), outcome);
    let Some(endpoint) = authenticate(&state, kind, headers, uri) else {
        count("unauthorized");
        state.metrics.rejected("unauthenticated");
        let message = if headers.contains_key(header::AUTHORIZATION) {
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

/// The endpoint whose token the request carries (in `Authorization`, or
/// the query for kinds that allow it).
fn authenticate<'a>(
    state: &'a AppState,
    kind: WebhookKind,
    headers: &HeaderMap,
    uri: &Uri,
) -> Option<&'a Endpoint> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let query = query_token(uri);
    state
        .webhooks
        .authenticate_request(kind, authorization, query.as_deref())
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
pub(super) async fn webhook_validation(
    State(state): State<Arc<AppState>>,
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
    let Some(endpoint) = authenticate(&state, kind, &headers, &uri) else {
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
