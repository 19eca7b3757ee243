//! The repeat/update memory of "one fact, one alert", as kept in the
//! findings store ([`AlertMemory::alert_sent`](crate::findings::AlertMemory::alert_sent)):
//! for each sink, the last alert sent for each fact, with what an update
//! needs — every place, event and finding so far, and the pushed lists a
//! late platform image may still join. Stored, not held in the
//! dispatcher, so that a restart or another replica updates the alert
//! (same id, every place so far) instead of raising a new one.

use serde::{Deserialize, Serialize};

use super::{Alert, FactKey};
use crate::findings::SentAlert;

/// The webhook schema every alert carries.
pub const SCHEMA: &str = "image-auditor.alert.v1";

/// Why a remembered alert cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("remembered alert {fact}: {source}")]
pub struct MemoryError {
    pub fact: String,
    source: serde_json::Error,
}

/// What the store keeps per (sink, fact), as JSON.
#[derive(Serialize, Deserialize)]
struct Remembered {
    key: FactKey,
    alert: Alert,
    /// `Alert::lists`, which the webhook schema leaves out.
    lists: Vec<ListEntry>,
}

#[derive(Serialize, Deserialize)]
struct ListEntry {
    repository: String,
    digest: String,
    platform: Option<String>,
}

/// The alert sent for `key`, as the store keeps it.
pub fn remember(key: &FactKey, alert: &Alert) -> SentAlert {
    let remembered = Remembered {
        key: key.clone(),
        alert: alert.clone(),
        lists: alert
            .lists
            .iter()
            .map(|((repository, digest), platform)| ListEntry {
                repository: repository.clone(),
                digest: digest.clone(),
                platform: platform.clone(),
            })
            .collect(),
    };
    SentAlert {
        fact: alert.alert_id.clone(),
        first_seen_ms: alert.first_seen_ms,
        // Plain data with string keys: serialising cannot fail.
        body: serde_json::to_string(&remembered).expect("an alert serialises"),
    }
}

/// The fact and the alert the store remembered.
pub fn recall(sent: &SentAlert) -> Result<(FactKey, Alert), MemoryError> {
    let Remembered {
        key,
        mut alert,
        lists,
    } = serde_json::from_str(&sent.body).map_err(|source| MemoryError {
        fact: sent.fact.clone(),
        source,
    })?;
    alert.lists = lists
        .into_iter()
        .map(|e| ((e.repository, e.digest), e.platform))
        .collect();
    Ok((key, alert))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::alert::{AlertChild, AlertEvent, AlertStatus, Severity};
    use crate::audit::VerdictKind;
    use crate::findings::FindingId;

    #[test]
    fn an_alert_comes_back_as_it_was_sent_with_its_lists() {
        let key = FactKey {
            verdict: VerdictKind::Unpromoted,
            digest: Some(format!("sha256:{}", "a".repeat(64))),
            tag: Some("v9".into()),
            image: "etcd".into(),
        };
        let mut lists = BTreeMap::new();
        lists.insert(
            (
                "r.example/etcd".to_owned(),
                format!("sha256:{}", "b".repeat(64)),
            ),
            Some("linux/arm64".to_owned()),
        );
        let alert = Alert {
            schema: SCHEMA.into(),
            alert_id: key.alert_id(),
            status: AlertStatus::New,
            verdict: key.verdict,
            severity: Severity::Critical,
            summary: "unpromoted: etcd:v9 in 1 repository".into(),
            image: "etcd".into(),
            digest: key.digest.clone(),
            tag: key.tag.clone(),
            repositories: vec!["r.example/etcd".into()],
            events: vec![AlertEvent {
                source: "distribution".into(),
                id: "e1".into(),
                repository: Some("r.example/etcd".into()),
                received_at_ms: 5,
            }],
            reason: "not in any manifest".into(),
            evidence: serde_json::json!("not in any manifest"),
            manifest_commit: None,
            first_seen_ms: 5,
            last_seen_ms: 5,
            finding_ids: vec![FindingId(7)],
            children: vec![AlertChild {
                platform: Some("linux/arm64".into()),
                digest: format!("sha256:{}", "b".repeat(64)),
            }],
            lists,
            resolution: None,
        };
        let sent = remember(&key, &alert);
        assert_eq!(sent.fact, alert.alert_id);
        assert_eq!(sent.first_seen_ms, 5);
        let (back_key, back) = recall(&sent).unwrap();
        assert_eq!(back_key, key);
        assert_eq!(back, alert);
    }

    #[test]
    fn a_damaged_memory_is_an_error_naming_the_fact() {
        let sent = SentAlert {
            fact: "f1".into(),
            first_seen_ms: 0,
            body: "{\"key\": 1}".into(),
        };
        let err = recall(&sent).unwrap_err();
        assert!(
            err.to_string().starts_with("remembered alert f1: "),
            "{err}"
        );
    }
}
