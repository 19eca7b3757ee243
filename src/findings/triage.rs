//! Triage: what people decided about a finding (docs/design.md §9b).
//!
//! A finding is `open` when recorded; someone may `acknowledge` it (seen,
//! being handled) and `resolve` it (dealt with). Each change records who,
//! when and a note. The rules are [`transition`], pure and table-tested;
//! the stores apply them inside the transaction that reads the current
//! state, so two people triaging at once cannot both win.
//!
//! Resolving is the one change sinks hear about: the alert of the finding
//! is resolved at every sink it was delivered to (see
//! [`Outbox::Resolutions`](super::Outbox::Resolutions)).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where a finding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriageState {
    Open,
    Acknowledged,
    Resolved,
}

impl TriageState {
    pub const ALL: [TriageState; 3] = [
        TriageState::Open,
        TriageState::Acknowledged,
        TriageState::Resolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TriageState::Open => "open",
            TriageState::Acknowledged => "acknowledged",
            TriageState::Resolved => "resolved",
        }
    }
}

impl fmt::Display for TriageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`TriageState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown triage state {0:?}: expected open, acknowledged or resolved")]
pub struct UnknownState(pub String);

impl FromStr for TriageState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TriageState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownState(crate::event::excerpt(s)))
    }
}

/// What someone does to a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriageAction {
    Acknowledge,
    Resolve,
}

impl TriageAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TriageAction::Acknowledge => "acknowledge",
            TriageAction::Resolve => "resolve",
        }
    }

    /// The state the action leads to.
    pub fn target(self) -> TriageState {
        match self {
            TriageAction::Acknowledge => TriageState::Acknowledged,
            TriageAction::Resolve => TriageState::Resolved,
        }
    }
}

impl fmt::Display for TriageAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finding's triage: its state and the last change (none while open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Triage {
    pub state: TriageState,
    /// Who made the last change: a configured token's name, or the email of
    /// a verified OIDC token, or the CLI's `--as`.
    pub by: Option<String>,
    /// When, Unix milliseconds.
    pub at_ms: Option<i64>,
    pub note: Option<String>,
}

impl Triage {
    pub fn open() -> Triage {
        Triage {
            state: TriageState::Open,
            by: None,
            at_ms: None,
            note: None,
        }
    }
}

impl Default for Triage {
    fn default() -> Self {
        Triage::open()
    }
}

/// What [`transition`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The state becomes the action's target; who, when and note are
    /// recorded.
    To(TriageState),
    /// Already there: nothing changes, the first who/when/note stand. A
    /// retried request is answered as the first was, and a second resolve
    /// sends no second resolution.
    Unchanged,
}

/// Acknowledging a resolved finding: it would reopen the alert's story
/// backwards, and the sinks have already been told it is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a finding that is {from}")]
pub struct Refused {
    pub from: TriageState,
    pub action: TriageAction,
}

/// The triage rules: open → acknowledged → resolved, open → resolved;
/// the same action twice is a no-op; acknowledging a resolved finding is
/// refused (there is no reopening: a fact seen again is a new finding).
pub fn transition(from: TriageState, action: TriageAction) -> Result<Transition, Refused> {
    use TriageAction::*;
    use TriageState::*;
    match (from, action) {
        (Open, Acknowledge) => Ok(Transition::To(Acknowledged)),
        (Open | Acknowledged, Resolve) => Ok(Transition::To(Resolved)),
        (Acknowledged, Acknowledge) | (Resolved, Resolve) => Ok(Transition::Unchanged),
        (Resolved, Acknowledge) => Err(Refused { from, action }),
    }
}

/// Longest note kept, in bytes.
pub const MAX_NOTE_BYTES: usize = 2000;
/// Longest name of who triaged, in bytes.
pub const MAX_ACTOR_BYTES: usize = 254;

/// A change someone asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageChange {
    pub action: TriageAction,
    pub by: String,
    pub note: String,
}

/// Why a [`TriageChange`] cannot be recorded as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadChange {
    #[error("who triages must be named (1 to {MAX_ACTOR_BYTES} bytes, no control characters)")]
    Actor,
    #[error("the note is longer than {MAX_NOTE_BYTES} bytes")]
    NoteTooLong,
    #[error("the note has control characters other than newlines and tabs")]
    NoteControl,
}

impl TriageChange {
    /// A change, checked: a name without control characters, a bounded note.
    pub fn new(
        action: TriageAction,
        by: impl Into<String>,
        note: impl Into<String>,
    ) -> Result<TriageChange, BadChange> {
        let (by, note) = (by.into(), note.into());
        if by.trim().is_empty() || by.len() > MAX_ACTOR_BYTES || by.chars().any(char::is_control) {
            return Err(BadChange::Actor);
        }
        if note.len() > MAX_NOTE_BYTES {
            return Err(BadChange::NoteTooLong);
        }
        if note
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(BadChange::NoteControl);
        }
        Ok(TriageChange { action, by, note })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_table() {
        use TriageAction::*;
        use TriageState::*;
        let table = [
            (Open, Acknowledge, Ok(Transition::To(Acknowledged))),
            (Open, Resolve, Ok(Transition::To(Resolved))),
            (Acknowledged, Acknowledge, Ok(Transition::Unchanged)),
            (Acknowledged, Resolve, Ok(Transition::To(Resolved))),
            (Resolved, Resolve, Ok(Transition::Unchanged)),
            (
                Resolved,
                Acknowledge,
                Err(Refused {
                    from: Resolved,
                    action: Acknowledge,
                }),
            ),
        ];
        for (from, action, expected) in table {
            assert_eq!(transition(from, action), expected, "{from} + {action}");
        }
        // Every pair is in the table.
        assert_eq!(table.len(), TriageState::ALL.len() * 2);
        assert_eq!(
            transition(Resolved, Acknowledge).unwrap_err().to_string(),
            "cannot acknowledge a finding that is resolved"
        );
    }

    #[test]
    fn states_parse_from_their_names_only() {
        for s in TriageState::ALL {
            assert_eq!(s.as_str().parse::<TriageState>(), Ok(s));
        }
        assert!("Open".parse::<TriageState>().is_err());
        assert!("closed".parse::<TriageState>().is_err());
    }

    #[test]
    fn changes_are_checked() {
        use TriageAction::Resolve;
        assert!(TriageChange::new(Resolve, "alice", "fixed\n\tby rollback").is_ok());
        let cases = [
            ("", "n", BadChange::Actor),
            ("  ", "n", BadChange::Actor),
            ("al\u{1b}[31mice", "n", BadChange::Actor),
            (&"x".repeat(MAX_ACTOR_BYTES + 1), "n", BadChange::Actor),
            (
                "alice",
                &"n".repeat(MAX_NOTE_BYTES + 1),
                BadChange::NoteTooLong,
            ),
            ("alice", "a\u{7}bell", BadChange::NoteControl),
        ];
        for (by, note, expected) in cases {
            assert_eq!(
                TriageChange::new(Resolve, by, note),
                Err(expected.clone()),
                "{by:?} {note:?}"
            );
        }
    }
}
