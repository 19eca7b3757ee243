//! Which findings are one fact, and when a fact is due: the pure decisions
//! of a sink's dispatcher, including the platform images of an unpromoted
//! index joining the index's fact.

use std::collections::HashMap;

use serde::Deserialize;

use super::{Alert, FactKey};
use crate::audit::{PushedList, VerdictKind};
use crate::findings::{Finding, FindingId};
use crate::index::Index;

/// Groups findings into facts, in order of first appearance ([`group_after`]
/// with no alert sent before).
pub fn group<'a>(findings: &'a [Finding], index: &Index) -> Vec<(FactKey, Vec<&'a Finding>)> {
    group_after(findings, index, std::iter::empty())
}

/// Groups findings into facts, in order of first appearance.
///
/// An `unpromoted` finding of a platform image joins the fact of an
/// `unpromoted` index that lists it and was pushed to the same repository:
/// one held with it in `findings`, or else one whose alert was `sent`
/// (within the repeat window), which it then updates. Nothing else joins:
/// a child of an index that is promoted, or that explains something at
/// another repository, is a fact of its own. Where several indexes list a
/// child, the longest list wins, and nested lists lead to the outermost.
pub fn group_after<'a, 's>(
    findings: &'a [Finding],
    index: &Index,
    sent: impl IntoIterator<Item = (&'s FactKey, &'s Alert)>,
) -> Vec<(FactKey, Vec<&'a Finding>)> {
    let own: Vec<FactKey> = findings.iter().map(|f| FactKey::of(f, index)).collect();
    // (repository, child digest) -> the fact of the list that names it,
    // and how many entries that list has.
    let mut claims: HashMap<(String, String), (FactKey, usize)> = HashMap::new();
    for (f, key) in findings.iter().zip(&own) {
        let (Some(list), Some(repo)) = (lead_list(f), &f.repository) else {
            continue;
        };
        let len = list.children.len();
        for child in list.children {
            let place = (repo.to_string(), child.digest.to_string());
            match claims.get(&place) {
                Some((_, longest)) if *longest >= len => {}
                _ => {
                    claims.insert(place, (key.clone(), len));
                }
            }
        }
    }
    // A list being held now is the push at hand; one alerted before only
    // takes what no held list names.
    for (key, alert) in sent {
        if key.verdict != VerdictKind::Unpromoted {
            continue;
        }
        for place in alert.lists.keys() {
            claims
                .entry(place.clone())
                .or_insert_with(|| (key.clone(), alert.lists.len()));
        }
    }

    let mut groups: Vec<(FactKey, Vec<&Finding>)> = Vec::new();
    let mut positions: HashMap<FactKey, usize> = HashMap::new();
    for (f, key) in findings.iter().zip(own) {
        let key = joined(f, key, &claims);
        match positions.get(&key) {
            Some(&at) => groups[at].1.push(f),
            None => {
                positions.insert(key.clone(), groups.len());
                groups.push((key, vec![f]));
            }
        }
    }
    groups
}

/// The fact `f` belongs to: its own (`key`), or the outermost list's that
/// names it at its repository.
fn joined(
    f: &Finding,
    key: FactKey,
    claims: &HashMap<(String, String), (FactKey, usize)>,
) -> FactKey {
    let (VerdictKind::Unpromoted, Some(repo)) = (f.verdict, &f.repository) else {
        return key;
    };
    let repo = repo.to_string();
    let mut key = key;
    // Each step goes one list out; real indexes nest once, and the bound
    // keeps stored evidence that names a cycle from looping.
    for _ in 0..crate::registry::MAX_NESTING {
        let Some(digest) = &key.digest else {
            break;
        };
        match claims.get(&(repo.clone(), digest.clone())) {
            Some((outer, _)) if *outer != key => key = outer.clone(),
            _ => break,
        }
    }
    key
}

/// The list recorded with `f`, when `f` is an unpromoted index that may
/// gather its platform images.
fn lead_list(f: &Finding) -> Option<PushedList> {
    if f.verdict != VerdictKind::Unpromoted {
        return None;
    }
    pushed_list(f).filter(|l| !l.children.is_empty())
}

/// What the resolver recorded about a pushed index in `f`'s evidence (the
/// `{"pushed_list": …}` entry), if anything.
pub fn pushed_list(f: &Finding) -> Option<PushedList> {
    f.evidence
        .as_array()?
        .iter()
        .find_map(|e| PushedList::deserialize(e.get("pushed_list")?).ok())
}

/// What one pass of a dispatcher does with the findings it holds.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Facts to send now, each with its findings (joined children included).
    pub due: Vec<(FactKey, Vec<&'a Finding>)>,
    /// Findings to keep holding.
    pub waiting: Vec<FindingId>,
}

/// Which held facts are due at `now_ms`: those whose oldest finding has
/// waited `group_wait_ms` (every one when `stopping`). A child that joined
/// an index counts as the fact's, so whichever of the two came first starts
/// the wait, and no finding is held longer than one `group_wait`.
pub fn plan<'a, 's>(
    held: &'a [Finding],
    index: &Index,
    sent: impl IntoIterator<Item = (&'s FactKey, &'s Alert)>,
    now_ms: i64,
    group_wait_ms: i64,
    stopping: bool,
) -> Plan<'a> {
    let mut plan = Plan {
        due: Vec::new(),
        waiting: Vec::new(),
    };
    for (key, members) in group_after(held, index, sent) {
        let oldest = members
            .iter()
            .map(|f| f.created_at_ms)
            .min()
            .unwrap_or(now_ms);
        if !stopping && now_ms - oldest < group_wait_ms {
            plan.waiting.extend(members.iter().map(|f| f.id));
        } else {
            plan.due.push((key, members));
        }
    }
    plan
}
