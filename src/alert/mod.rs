//! Alerts: findings from the outbox, grouped into facts and delivered to
//! sinks (docs/design.md §8.2). `mod.rs` and `group` are the pure part — what
//! an alert is, which findings are one fact and when it is due, routing —
//! `sink` delivers, `dispatch` drives the outbox.
//!
//! One fact seen in many places (k8s.io promotes every image to ~25
//! regional registries, so one unpromoted push is ~25 events) is one alert
//! listing every repository it was seen at. One rogue push of an index is
//! one fact too: the findings of the platform images it lists, pushed with
//! it to the same repository, join the index's alert ([`group_after`]).

pub mod dispatch;
mod group;
pub mod memory;
pub mod sink;

pub use group::{Plan, group, group_after, plan, pushed_list};

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::VerdictKind;
use crate::findings::{Finding, FindingId};
use crate::index::Index;
use crate::reference::Repository;

/// How urgently a person must look; a routing key and an Alertmanager label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    /// Content nobody promoted, or promised content changed or gone, is
    /// critical: that is what the auditor exists to catch. The rest needs a
    /// look but is likely a mistake or an outage (a tag nobody listed, a
    /// digest in the wrong region, an event that could not be read).
    pub fn of(verdict: VerdictKind) -> Severity {
        use VerdictKind::*;
        match verdict {
            Unpromoted | UnpromotedAttachment | TagMoved | Deleted | Missing => Severity::Critical,
            _ => Severity::Warning,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What makes two findings the same fact: the verdict, the content and the
/// image as promoted — not the regional registry it was seen at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FactKey {
    pub verdict: VerdictKind,
    pub digest: Option<String>,
    pub tag: Option<String>,
    /// The repository below its destination prefix (`etcd` for
    /// `…/k8s-artifacts-prod/images/etcd`); the whole repository when no
    /// destination claims it; the event id when there is no repository
    /// (malformed events are never merged).
    pub image: String,
}

impl FactKey {
    pub fn of(finding: &Finding, index: &Index) -> FactKey {
        let image = match &finding.repository {
            Some(repo) => image_name(repo, index),
            None => format!("event {}", finding.key.event_id),
        };
        FactKey {
            verdict: finding.verdict,
            digest: finding.digest.as_ref().map(ToString::to_string),
            tag: finding.tag.as_ref().map(|t| t.as_str().to_owned()),
            image,
        }
    }

    /// A stable id for the fact: the same across updates, restarts and sinks.
    pub fn alert_id(&self) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}",
            self.verdict.as_str(),
            self.digest.as_deref().unwrap_or_default(),
            self.tag.as_deref().unwrap_or_default(),
            self.image
        );
        let digest = crate::reference::Digest::sha256_of(text.as_bytes()).to_string();
        digest["sha256:".len().."sha256:".len() + 16].to_owned()
    }
}

/// The image name below the longest destination prefix that claims `repo`.
fn image_name(repo: &Repository, index: &Index) -> String {
    index
        .image_path(repo)
        .map_or_else(|| repo.to_string(), str::to_owned)
}

/// One alert: a fact, where it was seen and why it matters. Read back from
/// the store's alert memory ([`memory`]) as well as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `image-auditor.alert.v1`: the documented webhook schema.
    pub schema: Cow<'static, str>,
    pub alert_id: String,
    /// `new`, or `updated` when the fact was alerted within the repeat
    /// window and has been seen again (the alert lists every place so far).
    pub status: AlertStatus,
    pub verdict: VerdictKind,
    pub severity: Severity,
    pub summary: String,
    pub image: String,
    pub digest: Option<String>,
    pub tag: Option<String>,
    /// Every repository the fact was seen at, sorted.
    pub repositories: Vec<String>,
    /// The events behind it.
    pub events: Vec<AlertEvent>,
    /// The auditor's reason for the first finding.
    pub reason: String,
    /// The matching manifest entries (file, line, image, tags, parent), or
    /// the text `not in any manifest`.
    pub evidence: Value,
    pub manifest_commit: Option<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub finding_ids: Vec<FindingId>,
    /// The platform images (entries of the pushed index) whose own findings
    /// joined this alert, sorted by platform and digest; empty for anything
    /// but an unpromoted index.
    pub children: Vec<AlertChild>,
    /// (repository, child digest) → platform, for every entry of the
    /// pushed lists behind this alert: what a late child finding may still
    /// join.
    #[serde(skip)]
    pub lists: BTreeMap<(String, String), Option<String>>,
    /// Who resolved the finding, when and why: set on `resolved` alerts only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

/// The triage change a `resolved` alert reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub by: String,
    pub at_ms: i64,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertChild {
    /// `os/architecture[/variant]`, when the index says.
    pub platform: Option<String>,
    pub digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    New,
    Updated,
    /// The finding was resolved by a person ([`Alert::resolved`]): the
    /// sink's alert of the fact ends now.
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::New => "new",
            AlertStatus::Updated => "updated",
            AlertStatus::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The source's name (`distribution`, `pubsub_push`, …).
    pub source: Cow<'static, str>,
    pub id: String,
    pub repository: Option<String>,
    pub received_at_ms: i64,
}

impl Alert {
    /// The alert for findings that share `key` (at least one), with the
    /// findings of platform images that joined it ([`group_after`]).
    pub fn of(key: &FactKey, findings: &[&Finding], status: AlertStatus) -> Alert {
        // The fact's own findings speak for it; joined children only when
        // none is in this batch (an update of an alert sent earlier).
        let own = |f: &&&Finding| f.digest.as_ref().map(ToString::to_string) == key.digest;
        let first = findings.iter().find(own).unwrap_or(&findings[0]);
        let repositories: BTreeSet<String> = findings
            .iter()
            .filter_map(|f| f.repository.as_ref().map(ToString::to_string))
            .collect();
        let evidence = match &first.evidence {
            // The pushed list is told as `children`, not as manifest entries.
            Value::Array(a) => {
                let entries: Vec<Value> = a
                    .iter()
                    .filter(|e| e.get("pushed_list").is_none())
                    .cloned()
                    .collect();
                if entries.is_empty() {
                    Value::String("not in any manifest".into())
                } else {
                    Value::Array(entries)
                }
            }
            Value::Null => Value::String("not in any manifest".into()),
            other => other.clone(),
        };
        let mut lists = BTreeMap::new();
        for f in findings {
            let (Some(list), Some(repo)) = (pushed_list(f), &f.repository) else {
                continue;
            };
            for child in list.children {
                lists.insert((repo.to_string(), child.digest.to_string()), child.platform);
            }
        }
        let children: BTreeSet<AlertChild> = findings
            .iter()
            .filter(|f| !own(f))
            .filter_map(|f| f.digest.as_ref().map(ToString::to_string))
            .map(|digest| AlertChild {
                platform: platform_of(&lists, &digest),
                digest,
            })
            .collect();
        let mut alert = Alert {
            schema: Cow::Borrowed(memory::SCHEMA),
            alert_id: key.alert_id(),
            status,
            verdict: key.verdict,
            severity: Severity::of(key.verdict),
            summary: String::new(),
            image: key.image.clone(),
            digest: key.digest.clone(),
            tag: key.tag.clone(),
            repositories: repositories.into_iter().collect(),
            events: findings
                .iter()
                .map(|f| AlertEvent {
                    source: Cow::Borrowed(f.key.source.as_str()),
                    id: f.key.event_id.0.clone(),
                    repository: f.repository.as_ref().map(ToString::to_string),
                    received_at_ms: f.received_at_ms,
                })
                .collect(),
            reason: first.reason.clone(),
            evidence,
            manifest_commit: findings
                .iter()
                .rev()
                .find_map(|f| f.manifest_commit.clone()),
            first_seen_ms: findings.iter().map(|f| f.received_at_ms).min().unwrap_or(0),
            last_seen_ms: findings.iter().map(|f| f.received_at_ms).max().unwrap_or(0),
            finding_ids: findings.iter().map(|f| f.id).collect(),
            children: children.into_iter().collect(),
            lists,
            resolution: None,
        };
        alert.summary = alert.summary_text();
        alert
    }

    /// The alert that ends the alert of `key` at a sink: `finding`, of
    /// that fact, was resolved. Same id and labels as the alert it ends.
    pub fn resolved(key: &FactKey, finding: &Finding) -> Alert {
        let mut alert = Alert::of(key, &[finding], AlertStatus::Resolved);
        alert.resolution = Some(Resolution {
            by: finding.triage.by.clone().unwrap_or_default(),
            at_ms: finding.triage.at_ms.unwrap_or_default(),
            note: finding.triage.note.clone().unwrap_or_default(),
        });
        alert
    }

    /// The alert for a group that is due: new, or an update of `previous`,
    /// the alert already sent for the same fact within the repeat window.
    pub fn next(key: &FactKey, findings: &[&Finding], previous: Option<&Alert>) -> Alert {
        match previous {
            Some(previous) => {
                previous.updated_with(&Alert::of(key, findings, AlertStatus::Updated))
            }
            None => Alert::of(key, findings, AlertStatus::New),
        }
    }

    /// This alert, seen again: every place, event, finding and platform
    /// image so far.
    fn updated_with(&self, newer: &Alert) -> Alert {
        let mut merged = newer.clone();
        let mut repositories = self.repositories.clone();
        repositories.extend(newer.repositories.iter().cloned());
        repositories.sort();
        repositories.dedup();
        merged.repositories = repositories;
        // An update after a handover may carry findings the alert in
        // flight already listed (they came back after their claim lease):
        // each is listed once.
        // `events` and `finding_ids` are parallel (one event per finding).
        let listed: HashSet<FindingId> = self.finding_ids.iter().copied().collect();
        let fresh: Vec<(FindingId, &AlertEvent)> = newer
            .finding_ids
            .iter()
            .copied()
            .zip(&newer.events)
            .filter(|(id, _)| !listed.contains(id))
            .collect();
        merged.events = self
            .events
            .iter()
            .chain(fresh.iter().map(|(_, e)| *e))
            .cloned()
            .collect();
        merged.finding_ids = self
            .finding_ids
            .iter()
            .copied()
            .chain(fresh.iter().map(|(id, _)| *id))
            .collect();
        merged.lists = self.lists.clone();
        merged.lists.extend(newer.lists.clone());
        // A child joining an alert sent earlier comes without its index:
        // its platform is in what that index listed.
        let children: BTreeSet<AlertChild> = self
            .children
            .iter()
            .chain(&newer.children)
            .map(|c| AlertChild {
                platform: c
                    .platform
                    .clone()
                    .or_else(|| platform_of(&merged.lists, &c.digest)),
                digest: c.digest.clone(),
            })
            .collect();
        merged.children = children.into_iter().collect();
        merged.first_seen_ms = self.first_seen_ms.min(newer.first_seen_ms);
        merged.evidence = self.evidence.clone();
        merged.reason = self.reason.clone();
        merged.status = AlertStatus::Updated;
        merged.summary = merged.summary_text();
        merged
    }

    /// `unpromoted: etcd:3.5@sha256:4ad90a11b553 in 25 repositories`, or
    /// for an index and the platform images pushed with it
    /// `unpromoted: etcd:v9@sha256:4ad90a11b553 (index + 5 platform images) in 25 repositories`.
    pub fn summary_text(&self) -> String {
        let what = match (&self.digest, &self.tag) {
            (Some(d), Some(t)) => format!("{}:{t}@{}", self.image, short(d)),
            (Some(d), None) => format!("{}@{}", self.image, short(d)),
            (None, Some(t)) => format!("{}:{t}", self.image),
            (None, None) => self.image.clone(),
        };
        let with = match self.children.len() {
            0 => String::new(),
            1 => " (index + 1 platform image)".to_owned(),
            n => format!(" (index + {n} platform images)"),
        };
        let places = self.repositories.len();
        format!(
            "{}: {what}{with} in {places} {}",
            self.verdict.as_str(),
            if places == 1 {
                "repository"
            } else {
                "repositories"
            }
        )
    }
}

/// The platform any of `lists` gives `digest`.
fn platform_of(lists: &BTreeMap<(String, String), Option<String>>, digest: &str) -> Option<String> {
    lists
        .iter()
        .find_map(|((_, d), platform)| (d == digest).then(|| platform.clone()).flatten())
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// Which findings a sink is for (`verdicts` and `min_severity` of a sink's
/// configuration); empty means every verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub verdicts: Vec<VerdictKind>,
    pub min_severity: Option<Severity>,
}

impl Route {
    pub fn matches(&self, verdict: VerdictKind) -> bool {
        (self.verdicts.is_empty() || self.verdicts.contains(&verdict))
            && self
                .min_severity
                .is_none_or(|min| Severity::of(verdict) >= min)
    }
}
