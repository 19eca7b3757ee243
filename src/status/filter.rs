//! The queue's filters: the query parameters of `/` (what the GET form
//! sends) parsed into a [`Filter`], every problem named by its parameter;
//! the store queries one page needs (open first, one per state, paged by
//! a cursor); the links that keep the filters.

use std::time::Duration;

use super::query_string;
use crate::audit::{UnknownVerdict, VerdictKind};
use crate::findings::triage::UnknownState;
use crate::findings::{FindingId, FindingQuery, TriageState};
use crate::reference::{ParseError, Repository};

/// Rows per state on one page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 25;
/// The most rows per state one page shows.
pub const MAX_LIMIT: usize = 200;

/// The time ranges the form offers; `since` accepts any duration.
pub(super) const SINCE_CHOICES: [&str; 4] = ["1h", "24h", "7d", "30d"];

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
            let result = match KEYS[k] {
                "verdict" => value
                    .parse()
                    .map(|v| filter.verdict = Some(v))
                    .map_err(FilterError::Verdict),
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
    pub(super) fn link(&self, state: Option<TriageState>, before: Option<FindingId>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
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
}
