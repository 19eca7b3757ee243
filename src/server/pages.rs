//! The status pages' handlers: they gather what a page shows (the store's
//! findings, the index's stats, the sources' last events) and hand it to
//! the pure renderers of [`crate::status`]; every answer carries
//! [`status::HEADERS`](crate::status::HEADERS).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::findings::{FindingId, now_ms, off_thread};
use crate::status::{self, filter, finding, list};

/// An HTML (or asset) answer with the pages' security headers.
fn answer(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    let mut response =
        (status, [(header::CONTENT_TYPE, content_type)], body.into()).into_response();
    for (name, value) in status::HEADERS {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    answer(status, "text/html; charset=utf-8", body)
}

/// `/`: the summary and the findings queue, open first.
pub async fn queue(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let now = now_ms();
    let (filter, errors) = match filter::Filter::parse(&params) {
        Ok(filter) => (filter, Vec::new()),
        Err(errors) => (filter::Filter::default(), errors),
    };
    let mut sections = Vec::new();
    if errors.is_empty() {
        let limit = filter.limit;
        let queries = filter.queries(now);
        let gathered = off_thread(&state.store, move |s| {
            queries
                .into_iter()
                .map(|(triage_state, q)| {
                    s.findings(&q)
                        .map(|found| list::Section::of(triage_state, found, limit))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        match gathered {
            Ok(found) => sections = found,
            Err(e) => return super::error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    let page = list::render(&list::ListPage {
        stats: &state.index.load().stats(),
        last_events: &state.pipeline.last_events(),
        filter: &filter,
        errors: &errors,
        sections: &sections,
        now_ms: now,
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    html(status, page)
}

/// `/findings/{id}`: one finding; 404 page when there is none.
pub async fn finding(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(number) = id.parse::<i64>() else {
        return html(StatusCode::NOT_FOUND, finding::not_found(&id));
    };
    match off_thread(&state.store, move |s| s.finding(FindingId(number))).await {
        Ok(Some(found)) => html(
            StatusCode::OK,
            finding::render(&finding::FindingPage {
                finding: &found,
                triage_enabled: state.triage.enabled(),
                now_ms: now_ms(),
            }),
        ),
        Ok(None) => html(StatusCode::NOT_FOUND, finding::not_found(&id)),
        Err(e) => super::error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

pub async fn triage_js() -> Response {
    answer(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        status::TRIAGE_JS,
    )
}

pub async fn style_css() -> Response {
    answer(StatusCode::OK, "text/css; charset=utf-8", status::STYLE_CSS)
}
