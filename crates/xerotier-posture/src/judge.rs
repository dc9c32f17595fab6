//! One credential's state at one instant.
//!
//! Boundaries (exact, in milliseconds): with a max age, `due_at = created + max_age`; the state
//! is `ok` strictly before `due_at - due_soon`, `due_soon` from that instant, `overdue` from
//! `due_at` on. A credential that carries its own expiry (short-lived: an STS token, a
//! certificate, an API key created with a TTL) follows that instead: `due_soon` from
//! `expires_at - due_soon`, `expired` from `expires_at` on. Join keys have no `due_soon`: an
//! unconsumed one is `ok` until `join_key_max_unconsumed` has passed, then `overdue` (past its
//! own TTL it is dead and not listed at all, so its TTL is not judged here).

use std::fmt;
use std::str::FromStr;

use crate::{CredentialKind, PolicyError, Rule};

/// Worst last, so `max` finds the worst and sorting descending puts it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PostureState {
    Ok,
    DueSoon,
    Overdue,
    Expired,
}

impl PostureState {
    pub const ALL: [PostureState; 4] =
        [PostureState::Ok, PostureState::DueSoon, PostureState::Overdue, PostureState::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            PostureState::Ok => "ok",
            PostureState::DueSoon => "due_soon",
            PostureState::Overdue => "overdue",
            PostureState::Expired => "expired",
        }
    }

    /// Whether `--check` fails on it.
    pub fn is_failing(self) -> bool {
        matches!(self, PostureState::Overdue | PostureState::Expired)
    }
}

impl fmt::Display for PostureState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PostureState {
    type Err = PolicyError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        PostureState::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| PolicyError::State { value: value.to_string() })
    }
}

/// What is known of one credential's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    /// When the credential in use was created or last rotated.
    pub since: i64,
    /// Its own expiry, when it carries one.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// `now - since`, never negative.
    pub age_ms: i64,
    /// When it is overdue or expires; none without a max age or an expiry.
    pub due_at: Option<i64>,
    pub state: PostureState,
    /// Judged by its own expiry rather than the rule's max age.
    pub by_expiry: bool,
}

/// Judges one credential of `rule.kind` at `now`.
pub fn judge(rule: &Rule, due_soon_ms: i64, subject: Subject, now: i64) -> Judgement {
    let age_ms = now.saturating_sub(subject.since).max(0);
    let expiry = if rule.kind == CredentialKind::JoinKey { None } else { subject.expires_at };
    if let Some(expires_at) = expiry {
        let state = if now >= expires_at {
            PostureState::Expired
        } else if now >= expires_at.saturating_sub(due_soon_ms) {
            PostureState::DueSoon
        } else {
            PostureState::Ok
        };
        return Judgement { age_ms, due_at: Some(expires_at), state, by_expiry: true };
    }
    let Some(max_age_ms) = rule.max_age_ms else {
        return Judgement { age_ms, due_at: None, state: PostureState::Ok, by_expiry: false };
    };
    let due_at = subject.since.saturating_add(max_age_ms);
    let warns = rule.kind != CredentialKind::JoinKey;
    let state = if now >= due_at {
        PostureState::Overdue
    } else if warns && now >= due_at.saturating_sub(due_soon_ms) {
        PostureState::DueSoon
    } else {
        PostureState::Ok
    };
    Judgement { age_ms, due_at: Some(due_at), state, by_expiry: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DAY_MS, HOUR_MS, Overrides, Policy, PolicyConfig, Profile};

    /// An injected clock in miniature: the instants the test looks at.
    const CREATED: i64 = 1_780_000_000_000;

    fn state_at(policy: &Policy, kind: CredentialKind, subject: Subject, now: i64) -> PostureState {
        judge(policy.rule(kind), policy.due_soon_ms, subject, now).state
    }

    #[test]
    fn every_kind_flips_ok_due_soon_overdue_exactly_at_its_boundary() {
        let policy = Policy::resolve(&PolicyConfig {
            profile: Some(Profile::FedrampHigh),
            cryptoperiod_ref: Some("ref".into()),
            ..PolicyConfig::default()
        });
        let subject = Subject { since: CREATED, expires_at: None };
        for kind in CredentialKind::ALL {
            let rule = policy.rule(kind);
            let max = rule.max_age_ms.unwrap_or_default();
            let due_at = CREATED + max;
            let due_soon_start = due_at - policy.due_soon_ms;
            if kind == CredentialKind::JoinKey {
                // 24 h unconsumed under fedramp-high; no due_soon stage.
                assert_eq!(max, 24 * HOUR_MS);
                assert_eq!(state_at(&policy, kind, subject, CREATED), PostureState::Ok);
                assert_eq!(state_at(&policy, kind, subject, due_at - 1), PostureState::Ok);
                assert_eq!(state_at(&policy, kind, subject, due_at), PostureState::Overdue);
                continue;
            }
            let at = |now| state_at(&policy, kind, subject, now);
            assert_eq!(at(CREATED), PostureState::Ok, "{kind}");
            assert_eq!(at(due_soon_start - 1), PostureState::Ok, "{kind}");
            assert_eq!(at(due_soon_start), PostureState::DueSoon, "{kind}");
            assert_eq!(at(due_at - 1), PostureState::DueSoon, "{kind}");
            assert_eq!(at(due_at), PostureState::Overdue, "{kind}");
            assert_eq!(at(due_at + 365 * DAY_MS), PostureState::Overdue, "{kind}");
            let judged = judge(rule, policy.due_soon_ms, subject, due_at);
            assert_eq!((judged.age_ms, judged.due_at), (max, Some(due_at)), "{kind}");
        }
    }

    #[test]
    fn a_credential_with_its_own_expiry_follows_it() {
        let policy = Policy::resolve(&PolicyConfig::default());
        let expires_at = CREATED + 30 * DAY_MS;
        let subject = Subject { since: CREATED, expires_at: Some(expires_at) };
        for kind in [CredentialKind::WorkspaceCredential, CredentialKind::ApiKey] {
            let judged = |now| judge(policy.rule(kind), policy.due_soon_ms, subject, now);
            assert_eq!(judged(expires_at - 14 * DAY_MS - 1).state, PostureState::Ok);
            assert_eq!(judged(expires_at - 14 * DAY_MS).state, PostureState::DueSoon);
            assert_eq!(judged(expires_at - 1).state, PostureState::DueSoon);
            assert_eq!(judged(expires_at).state, PostureState::Expired);
            let at = judged(expires_at);
            assert_eq!((at.due_at, at.by_expiry), (Some(expires_at), true));
        }
        // An hour-long token with a 14-day window is due_soon from the start: say so plainly.
        let short = Subject { since: CREATED, expires_at: Some(CREATED + HOUR_MS) };
        let rule = policy.rule(CredentialKind::WorkspaceCredential);
        assert_eq!(judge(rule, policy.due_soon_ms, short, CREATED).state, PostureState::DueSoon);
        // A join key's TTL is not judged (past it, it is not listed at all).
        let join = Subject { since: CREATED, expires_at: Some(CREATED + 1) };
        let rule = policy.rule(CredentialKind::JoinKey);
        assert_eq!(judge(rule, policy.due_soon_ms, join, CREATED + 2).state, PostureState::Ok);
    }

    #[test]
    fn a_small_override_and_window_move_the_boundaries() {
        let policy = Policy::resolve(&PolicyConfig {
            overrides: Overrides {
                max_age: [(CredentialKind::ApiKey, 2_000)].into_iter().collect(),
                join_key_max_unconsumed: Some(60_000),
            },
            due_soon_ms: 500,
            ..PolicyConfig::default()
        });
        let s = Subject { since: CREATED, expires_at: None };
        let api = |now| state_at(&policy, CredentialKind::ApiKey, s, now);
        assert_eq!(api(CREATED + 1_499), PostureState::Ok);
        assert_eq!(api(CREATED + 1_500), PostureState::DueSoon);
        assert_eq!(api(CREATED + 1_999), PostureState::DueSoon);
        assert_eq!(api(CREATED + 2_000), PostureState::Overdue);
        let join = |now| state_at(&policy, CredentialKind::JoinKey, s, now);
        assert_eq!(join(CREATED + 59_999), PostureState::Ok);
        assert_eq!(join(CREATED + 60_000), PostureState::Overdue);
    }

    #[test]
    fn ages_never_go_negative_and_states_order_worst_last() {
        let policy = Policy::resolve(&PolicyConfig::default());
        let s = Subject { since: CREATED, expires_at: None };
        let judged =
            judge(policy.rule(CredentialKind::CurveKey), policy.due_soon_ms, s, CREATED - 5);
        assert_eq!(judged.age_ms, 0);
        assert!(PostureState::Expired > PostureState::Overdue);
        assert!(PostureState::Overdue > PostureState::DueSoon);
        assert!(PostureState::DueSoon > PostureState::Ok);
        assert_eq!("due_soon".parse::<PostureState>(), Ok(PostureState::DueSoon));
        assert!("late".parse::<PostureState>().is_err());
        assert!("password".parse::<CredentialKind>().is_err());
        assert!("pci".parse::<Profile>().is_err());
    }
}
