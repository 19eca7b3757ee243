//! `/`: the index and sources summary, and the findings as a work queue:
//! open findings first, then acknowledged, then resolved, newest first
//! within each; narrowed by a plain GET form (verdict, repository, state,
//! since; see [`filter`](super::filter)) that needs no script; each state
//! paged by a cursor (`before`).

use std::fmt::Write as _;

use super::filter::{DEFAULT_LIMIT, Filter, FilterError, SINCE_CHOICES};
use super::{ago_of, code, escape, page};
use crate::audit::VerdictKind;
use crate::event::Source;
use crate::findings::{Finding, TriageState};
use crate::index::Stats;

/// The findings of one state on this page.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub state: TriageState,
    /// Newest first, at most the filter's limit.
    pub findings: Vec<Finding>,
    /// Whether older findings of this state match too.
    pub more: bool,
}

impl Section {
    /// The section from a query's answer (one row more than the limit when
    /// there are more).
    pub fn of(state: TriageState, mut findings: Vec<Finding>, limit: usize) -> Section {
        let more = findings.len() > limit;
        findings.truncate(limit);
        Section {
            state,
            findings,
            more,
        }
    }
}

/// Everything `/` shows.
pub struct ListPage<'a> {
    pub stats: &'a Stats,
    /// Each source's last delivery, Unix ms.
    pub last_events: &'a [(Source, i64)],
    pub filter: &'a Filter,
    /// What the query asked for that the page cannot use (then no sections).
    pub errors: &'a [FilterError],
    pub sections: &'a [Section],
    pub now_ms: i64,
}

/// The page.
pub fn render(p: &ListPage<'_>) -> String {
    let mut body = String::from("<h1>image-auditor</h1>\n");
    summary(&mut body, p.stats, p.last_events, p.now_ms);
    body.push_str("<h2>Findings</h2>\n");
    form(&mut body, p.filter);
    if !p.errors.is_empty() {
        body.push_str("<ul class=\"errors\" id=\"filter-errors\">\n");
        for e in p.errors {
            let _ = writeln!(body, "<li>{}</li>", escape(&e.to_string()));
        }
        body.push_str("</ul>\n");
    }
    for section in p.sections {
        queue_section(&mut body, p.filter, section, p.now_ms);
    }
    page("image-auditor", &body, false)
}

fn summary(body: &mut String, stats: &Stats, last_events: &[(Source, i64)], now_ms: i64) {
    let commit = stats.commit.as_deref().unwrap_or("(not from git)");
    let _ = write!(
        body,
        "<section class=\"summary\"><div><h2>Index</h2>\n<table>\n\
         <tr><th>commit</th><td><code>{}</code></td></tr>\n\
         <tr><th>generation</th><td>{}</td></tr>\n<tr><th>projects</th><td>{} ({} left out)</td></tr>\n\
         <tr><th>images</th><td>{}</td></tr>\n<tr><th>digests</th><td>{} ({} children learnt)</td></tr>\n\
         <tr><th>destinations</th><td>{}</td></tr>\n</table></div>\n<div><h2>Sources</h2>\n",
        escape(commit),
        stats.generation,
        stats.projects,
        stats.excluded_projects,
        stats.images,
        stats.digests,
        stats.children,
        stats.destinations
    );
    if last_events.is_empty() {
        body.push_str("<p>No event received since start.</p>\n");
    } else {
        body.push_str("<table>\n<tr><th>source</th><th>last event</th></tr>\n");
        for (source, at) in last_events {
            let _ = writeln!(
                body,
                "<tr><td>{}</td><td>{}</td></tr>",
                source.as_str(),
                ago_of(*at, now_ms)
            );
        }
        body.push_str("</table>\n");
    }
    body.push_str("</div></section>\n");
}

/// The filter form: GET to `/`, so filtering needs no script.
fn form(body: &mut String, filter: &Filter) {
    body.push_str("<form method=\"get\" action=\"/\" id=\"filters\" class=\"filters\">\n");
    let verdicts = VerdictKind::ALL
        .into_iter()
        .filter(|k| k.alerts())
        .map(|k| (k.as_str().to_owned(), filter.verdict == Some(k)));
    select(body, "verdict", "verdict", verdicts);
    let _ = writeln!(
        body,
        "<label>repository <input type=\"text\" name=\"repository\" size=\"32\" value=\"{}\" \
         placeholder=\"host/path\"></label>",
        escape(
            &filter
                .repository
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        )
    );
    let states = TriageState::ALL
        .into_iter()
        .map(|s| (s.as_str().to_owned(), filter.state == Some(s)));
    select(body, "state", "state", states);
    let mut since: Vec<(String, bool)> = SINCE_CHOICES
        .iter()
        .map(|c| {
            (
                (*c).to_owned(),
                filter.since.as_ref().is_some_and(|s| s.text == *c),
            )
        })
        .collect();
    if let Some(s) = &filter.since
        && !SINCE_CHOICES.contains(&s.text.as_str())
    {
        since.push((s.text.clone(), true));
    }
    select(body, "received within", "since", since.into_iter());
    if filter.limit != DEFAULT_LIMIT {
        let _ = writeln!(
            body,
            "<input type=\"hidden\" name=\"limit\" value=\"{}\">",
            filter.limit
        );
    }
    body.push_str("<button type=\"submit\">Filter</button> <a href=\"/\">clear</a>\n</form>\n");
}

/// A `<select>` with an "any" choice (the empty value) first.
fn select(
    body: &mut String,
    label: &str,
    name: &str,
    options: impl Iterator<Item = (String, bool)>,
) {
    let _ = write!(
        body,
        "<label>{label} <select name=\"{name}\"><option value=\"\">any</option>"
    );
    for (value, selected) in options {
        let value = escape(&value);
        let selected = if selected { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{value}\"{selected}>{value}</option>");
    }
    body.push_str("</select></label>\n");
}

fn queue_section(body: &mut String, filter: &Filter, section: &Section, now_ms: i64) {
    let state = section.state.as_str();
    let _ = writeln!(
        body,
        "<h3 id=\"{state}\">{} ({}{})</h3>",
        capitalised(state),
        section.findings.len(),
        if section.more { "+" } else { "" }
    );
    if section.findings.is_empty() {
        let _ = writeln!(body, "<p class=\"none\">No {state} findings match.</p>");
        return;
    }
    let _ = writeln!(
        body,
        "<table class=\"queue\" data-state=\"{state}\">\n<tr><th>id</th><th>received</th>\
         <th>verdict</th><th>repository</th><th>tag</th><th>digest</th><th>reason</th>\
         <th>triage</th></tr>"
    );
    for f in &section.findings {
        let triage = match &f.triage.by {
            Some(by) => format!("{} by {}", f.triage.state, escape(by)),
            None => f.triage.state.to_string(),
        };
        let excepted = match &f.excepted_by {
            Some(e) => format!(" <span class=\"excepted\">excepted by {}</span>", escape(e)),
            None => String::new(),
        };
        let digest = f.digest.as_ref().map(ToString::to_string);
        let _ = writeln!(
            body,
            "<tr class=\"finding\" data-id=\"{id}\" data-state=\"{state}\">\
             <td><a href=\"/findings/{id}\">#{id}</a></td><td class=\"nowrap\">{}</td><td>{}</td>\
             <td>{}</td><td class=\"nowrap\">{}</td><td class=\"nowrap\" title=\"{}\">{}</td>\
             <td>{}{excepted}</td><td>{triage}</td></tr>",
            ago_of(f.received_at_ms, now_ms),
            f.verdict.as_str(),
            code(f.repository.as_ref().map(|r| r.as_str())),
            code(f.tag.as_ref().map(|t| t.as_str())),
            escape(digest.as_deref().unwrap_or_default()),
            code(digest.as_deref().map(short_digest)),
            escape(&f.reason),
            id = f.id,
        );
    }
    body.push_str("</table>\n");
    if section.more
        && let Some(last) = section.findings.last()
    {
        let _ = writeln!(
            body,
            "<p><a class=\"older\" href=\"{}\">older {state} findings</a></p>",
            escape(&filter.link(Some(section.state), Some(last.id)))
        );
    }
}

/// `sha256:` and the first 12 hex digits: enough to tell digests apart on
/// a row; the whole digest is on the finding's page.
fn short_digest(d: &str) -> &str {
    d.get(..19).unwrap_or(d)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{EndpointName, EventId};
    use crate::findings::{DedupeKey, FindingId, Triage};
    use crate::status::filter::Since;

    pub(super) fn finding(id: i64, state: TriageState) -> Finding {
        Finding {
            id: FindingId(id),
            created_at_ms: 1_000,
            received_at_ms: 1_000,
            key: DedupeKey {
                source: Source::PubsubPush,
                endpoint: EndpointName::only(),
                event_id: EventId(format!("m-{id}")),
            },
            action: None,
            repository: Some("r.example/prod/app".parse().unwrap()),
            digest: None,
            tag: None,
            verdict: VerdictKind::Unpromoted,
            reason: "not promoted".into(),
            evidence: serde_json::json!([]),
            manifest_commit: None,
            index_generation: 1,
            excepted_by: None,
            triage: Triage {
                state,
                ..Triage::open()
            },
            deliveries: Vec::new(),
        }
    }

    #[test]
    fn a_section_knows_when_there_is_more() {
        let rows = |n| {
            (0..n)
                .map(|i| finding(100 - i, TriageState::Open))
                .collect()
        };
        let s = Section::of(TriageState::Open, rows(3), 2);
        assert!(s.more);
        assert_eq!(s.findings.len(), 2);
        assert!(!Section::of(TriageState::Open, rows(2), 2).more);
    }

    #[test]
    fn the_queue_links_rows_and_older_pages_and_keeps_the_filters() {
        let stats = Stats::default();
        let filter = Filter {
            verdict: Some(VerdictKind::Unpromoted),
            repository: Some("r.example/prod/app".parse().unwrap()),
            ..Filter::default()
        };
        let sections = [
            Section {
                state: TriageState::Open,
                findings: vec![finding(9, TriageState::Open), finding(7, TriageState::Open)],
                more: true,
            },
            Section::of(TriageState::Acknowledged, Vec::new(), 25),
        ];
        let html = render(&ListPage {
            stats: &stats,
            last_events: &[],
            filter: &filter,
            errors: &[],
            sections: &sections,
            now_ms: 61_000,
        });
        assert!(html.contains("<a href=\"/findings/9\">#9</a>"), "{html}");
        assert!(html.find("/findings/9").unwrap() < html.find("/findings/7").unwrap());
        assert!(
            html.contains(
                "href=\"/?verdict=unpromoted&amp;repository=r.example%2Fprod%2Fapp&amp;state=open&amp;before=7\""
            ),
            "{html}"
        );
        assert!(html.contains("No acknowledged findings match."), "{html}");
        assert!(
            html.contains("<option value=\"unpromoted\" selected>"),
            "{html}"
        );
        assert!(html.contains("value=\"r.example/prod/app\""), "{html}");
        assert!(
            !html.contains("<script"),
            "the list needs no script: {html}"
        );
    }

    #[test]
    fn hostile_text_is_escaped_in_text_and_attributes() {
        let mut f = finding(3, TriageState::Acknowledged);
        f.reason = "<script>alert(1)</script>".into();
        f.triage.by = Some("\"><img src=x onerror=alert(2)>".into());
        f.excepted_by = Some("<b>x.yaml</b>:3".into());
        let stats = Stats {
            commit: Some("<i>c</i>".into()),
            ..Stats::default()
        };
        let filter = Filter {
            since: Some(Since {
                text: "\"><svg onload=alert(3)>".into(),
                duration: Duration::from_secs(1),
            }),
            ..Filter::default()
        };
        let html = render(&ListPage {
            stats: &stats,
            last_events: &[],
            filter: &filter,
            errors: &[FilterError::Since("<u>x</u>".into())],
            sections: &[Section::of(TriageState::Acknowledged, vec![f], 25)],
            now_ms: 0,
        });
        for raw in ["<script>", "<img", "<b>", "<i>", "<svg", "<u>"] {
            assert!(!html.contains(raw), "{raw} in {html}");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("acknowledged by &quot;&gt;&lt;img"));
    }
}
