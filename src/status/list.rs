//! `/`: the index and sources summary, and the findings as a work queue:
//! open findings first, then acknowledged, then resolved, newest first
//! within each; narrowed by a plain GET form (verdict, repository, state,
//! since) that needs no script; each state paged by a cursor (`before`).

use std::fmt::Write as _;
use std::time::Duration;

use super::{ago_of, code, escape, page, query_string};
use crate::audit::{UnknownVerdict, VerdictKind};
use crate::event::Source;
use crate::findings::triage::UnknownState;
use crate::findings::{Finding, FindingId, FindingQuery, TriageState};
use crate::index::Stats;
use crate::reference::{ParseError, Repository};

/// Rows per state on one page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 25;
/// The most rows per state one page shows.
pub const MAX_LIMIT: usize = 200;

/// The time ranges the form offers; `since` accepts any duration.
const SINCE_CHOICES: [&str; 4] = ["1h", "24h", "7d", "30d"];

/// What the queue shows: every set filter must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub verdict: Option<VerdictKind>,
    pub repository: Option<Repository>,
    pub state: Option<TriageState>,
    /// Findings of events received within this long before now.
    pub since: Option<Since>,
    /// Only findings older than this one (the next page of a state).
    pub before: Option<FindingId>,
    pub limit: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            verdict: None,
            repository: None,
            state: None,
            since: None,
            before: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// A time range as typed (`24h`) and as a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub text: String,
    pub duration: Duration,
}

/// A query parameter the page cannot use; each names its parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("verdict: {0}")]
    Verdict(UnknownVerdict),
    #[error("repository: {0}")]
    Repository(ParseError),
    #[error("state: {0}")]
    State(UnknownState),
    #[error("since: {0:?} is not a duration such as 24h or 7d")]
    Since(String),
    #[error("before: {0:?} is not a finding id")]
    Before(String),
    #[error("limit: {0:?} is not a number from 1 to {MAX_LIMIT}")]
    Limit(String),
    #[error("unknown parameter {0:?}")]
    Unknown(String),
    #[error("parameter {0} is given more than once")]
    Repeated(&'static str),
}

impl Filter {
    /// The filter from the query's pairs. An empty value is an unset filter
    /// (what a form sends for "any"); every problem is reported.
    pub fn parse(params: &[(String, String)]) -> Result<Filter, Vec<FilterError>> {
        const KEYS: [&str; 6] = ["verdict", "repository", "state", "since", "before", "limit"];
        let mut filter = Filter::default();
        let mut errors = Vec::new();
        let mut seen = [false; KEYS.len()];
        for (key, value) in params {
            let Some(k) = KEYS.iter().position(|k| k == key) else {
                errors.push(FilterError::Unknown(crate::event::excerpt(key)));
                continue;
            };
            if std::mem::replace(&mut seen[k], true) {
                errors.push(FilterError::Repeated(KEYS[k]));
                continue;
            }
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let excerpt = || crate::event::excerpt(value);
            let result =
                match KEYS[k] {
                    "verdict" => value.parse().map(|v| filter.verdict = Some(v)).map_err(
                        |e: UnknownVerdict| {
                            FilterError::Verdict(UnknownVerdict(crate::event::excerpt(&e.0)))
                        },
                    ),
                    "repository" => value
                        .parse()
                        .map(|r| filter.repository = Some(r))
                        .map_err(FilterError::Repository),
                    "state" => value
                        .parse()
                        .map(|s| filter.state = Some(s))
                        .map_err(FilterError::State),
                    "since" => humantime::parse_duration(value)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .map(|duration| {
                            filter.since = Some(Since {
                                text: value.to_owned(),
                                duration,
                            })
                        })
                        .ok_or_else(|| FilterError::Since(excerpt())),
                    "before" => value
                        .parse()
                        .map(|id| filter.before = Some(FindingId(id)))
                        .map_err(|_| FilterError::Before(excerpt())),
                    _ => value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .map(|n| filter.limit = n)
                        .ok_or_else(|| FilterError::Limit(excerpt())),
                };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(filter)
        } else {
            Err(errors)
        }
    }

    /// The store queries for one page, in the order the page shows them:
    /// one per state (open first), each asking for one row more than
    /// shown, to know whether an older page exists.
    pub fn queries(&self, now_ms: i64) -> Vec<(TriageState, FindingQuery)> {
        let since_ms = self.since.as_ref().map(|s| {
            now_ms.saturating_sub(i64::try_from(s.duration.as_millis()).unwrap_or(i64::MAX))
        });
        let states = match self.state {
            Some(s) => vec![s],
            None => TriageState::ALL.to_vec(),
        };
        states
            .into_iter()
            .map(|state| {
                let query = FindingQuery {
                    verdict: self.verdict,
                    digest: None,
                    repository: self.repository.clone(),
                    state: Some(state),
                    since_ms,
                    before: self.before,
                    limit: Some(self.limit + 1),
                };
                (state, query)
            })
            .collect()
    }

    /// The query string of this filter with `state` and `before` replaced.
    fn link(&self, state: Option<TriageState>, before: Option<FindingId>) -> String {
        let mut pairs = Vec::new();
        if let Some(v) = self.verdict {
            pairs.push(("verdict", v.as_str().to_owned()));
        }
        if let Some(r) = &self.repository {
            pairs.push(("repository", r.to_string()));
        }
        if let Some(s) = state {
            pairs.push(("state", s.as_str().to_owned()));
        }
        if let Some(s) = &self.since {
            pairs.push(("since", s.text.clone()));
        }
        if let Some(b) = before {
            pairs.push(("before", b.to_string()));
        }
        if self.limit != DEFAULT_LIMIT {
            pairs.push(("limit", self.limit.to_string()));
        }
        format!("/{}", query_string(pairs))
    }
}

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
    use super::*;
    use crate::event::{EndpointName, EventId};
    use crate::findings::Triage;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    pub(super) fn finding(id: i64, state: TriageState) -> Finding {
        Finding {
            id: FindingId(id),
            created_at_ms: 1_000,
            received_at_ms: 1_000,
            source: Source::PubsubPush,
            endpoint: EndpointName::only(),
            event_id: EventId(format!("m-{id}")),
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
    fn filters_parse_and_empty_values_are_unset() {
        let f = Filter::parse(&params(&[
            ("verdict", "unpromoted"),
            ("repository", "r.example/prod/app"),
            ("state", ""),
            ("since", "24h"),
            ("before", "17"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(f.verdict, Some(VerdictKind::Unpromoted));
        assert_eq!(f.repository.unwrap().as_str(), "r.example/prod/app");
        assert_eq!(f.state, None);
        assert_eq!(f.since.unwrap().duration, Duration::from_secs(86_400));
        assert_eq!(f.before, Some(FindingId(17)));
        assert_eq!(f.limit, 5);
        assert_eq!(Filter::parse(&[]).unwrap(), Filter::default());
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let cases: [(&[(&str, &str)], &str); 8] = [
            (&[("verdict", "nope")], "verdict: unknown verdict \"nope\""),
            (&[("repository", "UPPER/x")], "repository: "),
            (&[("state", "closed")], "state: unknown triage state"),
            (&[("since", "yesterday")], "since: \"yesterday\""),
            (&[("since", "0s")], "since: \"0s\""),
            (&[("limit", "0")], "limit: \"0\""),
            (&[("before", "x")], "before: \"x\""),
            (&[("sort", "asc")], "unknown parameter \"sort\""),
        ];
        for (pairs, expected) in cases {
            let errors = Filter::parse(&params(pairs)).unwrap_err();
            assert_eq!(errors.len(), 1, "{pairs:?}");
            assert!(
                errors[0].to_string().starts_with(expected),
                "{pairs:?}: {}",
                errors[0]
            );
        }
        let twice = Filter::parse(&params(&[("state", "open"), ("state", "resolved")]));
        assert_eq!(twice, Err(vec![FilterError::Repeated("state")]));
        let both = Filter::parse(&params(&[("verdict", "x"), ("limit", "100000")]));
        assert_eq!(both.unwrap_err().len(), 2);
    }

    #[test]
    fn queries_go_open_first_and_ask_one_more() {
        let filter = Filter {
            since: Some(Since {
                text: "1h".into(),
                duration: Duration::from_secs(3600),
            }),
            limit: 10,
            ..Filter::default()
        };
        let queries = filter.queries(10_000_000);
        let states: Vec<_> = queries.iter().map(|(s, _)| *s).collect();
        assert_eq!(states, TriageState::ALL);
        for (state, q) in &queries {
            assert_eq!(q.state, Some(*state));
            assert_eq!(q.limit, Some(11));
            assert_eq!(q.since_ms, Some(10_000_000 - 3_600_000));
        }
        let one = Filter {
            state: Some(TriageState::Resolved),
            ..Filter::default()
        };
        assert_eq!(one.queries(0).len(), 1);
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
