//! The effective rule per credential kind: the stricter of the default table (SPEC 3.6), the
//! chosen profile and the deployment's overrides. A looser override never wins over the
//! default or the profile (a warning says so at start); each rule names its source and basis.

use std::collections::BTreeMap;

use crate::profile::ProfileRule;
use crate::{CredentialKind, DAY_MS, HOUR_MS, MINUTE_MS, Profile, format_duration};

/// How long before its due date a credential is `due_soon`, unless configured.
pub const DEFAULT_DUE_SOON_MS: i64 = 14 * DAY_MS;

/// The deployment's own values (router config `credential_policy.max_age`,
/// `join_key_max_unconsumed`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Routine max age per kind, milliseconds (never for join keys).
    pub max_age: BTreeMap<CredentialKind, i64>,
    /// The longest a join key may stay unconsumed, milliseconds.
    pub join_key_max_unconsumed: Option<i64>,
}

/// Everything the policy is resolved from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub profile: Option<Profile>,
    pub overrides: Overrides,
    pub due_soon_ms: i64,
    /// The deployment's documented cryptoperiod (e.g. `SEC-POL-7 §3, reviewed 2026-10-01`),
    /// shown as the basis wherever the regime delegates the period.
    pub cryptoperiod_ref: Option<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            profile: None,
            overrides: Overrides::default(),
            due_soon_ms: DEFAULT_DUE_SOON_MS,
            cryptoperiod_ref: None,
        }
    }
}

/// The rule one kind is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub kind: CredentialKind,
    /// Routine max age (join keys: longest unconsumed), milliseconds; none: no routine limit
    /// (a join key without `join_key_max_unconsumed` lives until its own TTL).
    pub max_age_ms: Option<i64>,
    /// How soon after a suspected leak it must be replaced (0: at once).
    pub emergency_deadline_ms: i64,
    /// Where the max age came from: `default`, `override`, or `<profile> <requirement>`.
    pub name: String,
    /// Why: a regime requirement, `delegated: <cryptoperiod_ref>`, `override` or `default`.
    pub basis: String,
}

/// The resolved policy: one rule per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub profile: Option<Profile>,
    pub due_soon_ms: i64,
    rules: Vec<Rule>,
    /// Overrides that lost to a stricter rule, and missing references a profile asks for.
    pub warnings: Vec<String>,
}

/// SPEC 3.6: routine max age and emergency deadline per kind.
fn default_rule(kind: CredentialKind) -> (Option<i64>, i64) {
    match kind {
        CredentialKind::ApiKey | CredentialKind::CurveKey => (Some(180 * DAY_MS), 15 * MINUTE_MS),
        CredentialKind::WorkspaceCredential => (Some(90 * DAY_MS), HOUR_MS),
        // Single use; an unconsumed one is revoked at once on suspicion.
        CredentialKind::JoinKey => (None, 0),
        CredentialKind::RouterKey => (Some(365 * DAY_MS), HOUR_MS),
    }
}

/// One candidate for a kind's max age, in tie-break order (the regime's number is named when
/// it equals the default; the default when an override only repeats it).
struct Candidate {
    max_age_ms: i64,
    name: String,
    basis: Option<String>,
}

impl Policy {
    pub fn resolve(config: &PolicyConfig) -> Policy {
        let mut warnings = Vec::new();
        let reference = config
            .cryptoperiod_ref
            .as_deref()
            .map_or_else(|| "no cryptoperiod_ref configured".to_string(), str::to_string);
        let rules = CredentialKind::ALL
            .into_iter()
            .map(|kind| resolve_kind(kind, config, &reference, &mut warnings))
            .collect();
        if config.profile.is_some() && config.cryptoperiod_ref.is_none() {
            warnings.push(format!(
                "credential_policy.profile {} delegates periods to the deployment, but no \
                 credential_policy.cryptoperiod_ref documents them",
                config.profile.map_or("", Profile::as_str)
            ));
        }
        Policy { profile: config.profile, due_soon_ms: config.due_soon_ms, rules, warnings }
    }

    pub fn rule(&self, kind: CredentialKind) -> &Rule {
        let index = CredentialKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.rules[index]
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

fn resolve_kind(
    kind: CredentialKind,
    config: &PolicyConfig,
    reference: &str,
    warnings: &mut Vec<String>,
) -> Rule {
    let (default_max, emergency_deadline_ms) = default_rule(kind);
    let mut delegated = None;
    let mut candidates = Vec::new();
    if let Some(profile) = config.profile {
        match profile.rule(kind) {
            ProfileRule::Number { max_age_ms, requirement } => candidates.push(Candidate {
                max_age_ms,
                name: format!("{profile} {requirement}"),
                basis: Some(format!("{profile} {requirement}")),
            }),
            ProfileRule::Delegated { requirement } => {
                delegated = Some(format!("delegated ({profile} {requirement}): {reference}"));
            }
        }
    }
    if let Some(max_age_ms) = default_max {
        candidates.push(Candidate { max_age_ms, name: "default".into(), basis: None });
    }
    let override_ms = match kind {
        CredentialKind::JoinKey => config.overrides.join_key_max_unconsumed,
        _ => config.overrides.max_age.get(&kind).copied(),
    };
    let stricter_before = candidates.iter().map(|c| c.max_age_ms).min();
    if let Some(max_age_ms) = override_ms {
        candidates.push(Candidate { max_age_ms, name: "override".into(), basis: None });
    }
    // The first of the smallest: candidates are in tie-break order.
    let winner = candidates.iter().fold(None::<&Candidate>, |best, c| match best {
        Some(b) if b.max_age_ms <= c.max_age_ms => Some(b),
        _ => Some(c),
    });
    if let (Some(over), Some(stricter)) = (override_ms, stricter_before)
        && over > stricter
    {
        let source = winner.map_or("default", |w| w.name.as_str());
        warnings.push(format!(
            "credential_policy override for {kind} ({}) is looser than {source} ({}); the \
             stricter rule applies",
            format_duration(over),
            format_duration(stricter)
        ));
    }
    let Some(winner) = winner else {
        return Rule {
            kind,
            max_age_ms: None,
            emergency_deadline_ms,
            name: "default".into(),
            basis: delegated.unwrap_or_else(|| "default".into()),
        };
    };
    let basis = match &winner.basis {
        Some(regime) => regime.clone(),
        None => delegated.unwrap_or_else(|| winner.name.clone()),
    };
    Rule {
        kind,
        max_age_ms: Some(winner.max_age_ms),
        emergency_deadline_ms,
        name: winner.name.clone(),
        basis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(profile: Option<Profile>, overrides: &[(CredentialKind, i64)]) -> Policy {
        Policy::resolve(&PolicyConfig {
            profile,
            overrides: Overrides {
                max_age: overrides.iter().copied().collect(),
                join_key_max_unconsumed: None,
            },
            cryptoperiod_ref: Some("SEC-POL-7 §3".into()),
            ..PolicyConfig::default()
        })
    }

    fn summary(rule: &Rule) -> (Option<i64>, &str, &str) {
        (rule.max_age_ms, rule.name.as_str(), rule.basis.as_str())
    }

    #[test]
    fn the_default_table_is_spec_3_6() {
        let policy = Policy::resolve(&PolicyConfig::default());
        use CredentialKind as K;
        let table: Vec<_> = K::ALL
            .into_iter()
            .map(|k| (k, policy.rule(k).max_age_ms, policy.rule(k).emergency_deadline_ms))
            .collect();
        assert_eq!(
            table,
            vec![
                (K::ApiKey, Some(180 * DAY_MS), 15 * MINUTE_MS),
                (K::CurveKey, Some(180 * DAY_MS), 15 * MINUTE_MS),
                (K::WorkspaceCredential, Some(90 * DAY_MS), HOUR_MS),
                (K::JoinKey, None, 0),
                (K::RouterKey, Some(365 * DAY_MS), HOUR_MS),
            ]
        );
        assert!(policy.rules().iter().all(|r| r.name == "default" && r.basis == "default"));
        assert!(policy.warnings.is_empty());
        assert_eq!(policy.due_soon_ms, 14 * DAY_MS);
    }

    #[test]
    fn each_profile_tightens_only_where_its_regime_states_a_number() {
        use CredentialKind as K;
        let cases = [
            (
                Profile::PciDss4,
                K::ApiKey,
                (Some(180 * DAY_MS), "default", "delegated (pci-dss-4 8.6.3): SEC-POL-7 §3"),
            ),
            (
                Profile::PciDss4,
                K::CurveKey,
                (Some(180 * DAY_MS), "default", "delegated (pci-dss-4 3.7.4): SEC-POL-7 §3"),
            ),
            (
                Profile::PciDss4,
                K::WorkspaceCredential,
                (Some(90 * DAY_MS), "default", "delegated (pci-dss-4 8.6.3): SEC-POL-7 §3"),
            ),
            (
                Profile::PciDss4,
                K::JoinKey,
                (None, "default", "delegated (pci-dss-4 8.3.5): SEC-POL-7 §3"),
            ),
            (
                Profile::Hipaa,
                K::ApiKey,
                (Some(180 * DAY_MS), "default", "delegated (hipaa 164.312(d)): SEC-POL-7 §3"),
            ),
            (
                Profile::Hipaa,
                K::RouterKey,
                (
                    Some(365 * DAY_MS),
                    "default",
                    "delegated (hipaa 164.312(a)(2)(iv)): SEC-POL-7 §3",
                ),
            ),
            (
                Profile::FedrampModerate,
                K::JoinKey,
                (Some(96 * HOUR_MS), "fedramp-moderate AC-2(2)", "fedramp-moderate AC-2(2)"),
            ),
            (
                Profile::FedrampModerate,
                K::CurveKey,
                (Some(180 * DAY_MS), "default", "delegated (fedramp-moderate SC-12): SEC-POL-7 §3"),
            ),
            (
                Profile::FedrampModerate,
                K::ApiKey,
                (
                    Some(180 * DAY_MS),
                    "default",
                    "delegated (fedramp-moderate IA-5(f)): SEC-POL-7 §3",
                ),
            ),
            (
                Profile::FedrampHigh,
                K::JoinKey,
                (Some(24 * HOUR_MS), "fedramp-high AC-2(2)", "fedramp-high AC-2(2)"),
            ),
            (
                Profile::FedrampHigh,
                K::WorkspaceCredential,
                (Some(90 * DAY_MS), "default", "delegated (fedramp-high IA-5(f)): SEC-POL-7 §3"),
            ),
            (
                Profile::CisCloud,
                K::ApiKey,
                (
                    Some(90 * DAY_MS),
                    "cis-cloud access keys rotated ≤ 90 d",
                    "cis-cloud access keys rotated ≤ 90 d",
                ),
            ),
            (
                Profile::CisCloud,
                K::CurveKey,
                (
                    Some(180 * DAY_MS),
                    "default",
                    "delegated (cis-cloud no period stated): SEC-POL-7 §3",
                ),
            ),
        ];
        for (profile, kind, expected) in cases {
            let policy = with(Some(profile), &[]);
            assert_eq!(summary(policy.rule(kind)), expected, "{profile} {kind}");
            assert!(policy.warnings.is_empty(), "{:?}", policy.warnings);
        }
        // Emergency deadlines are the product's in every profile.
        for profile in Profile::ALL {
            let policy = with(Some(profile), &[]);
            assert_eq!(policy.rule(K::CurveKey).emergency_deadline_ms, 15 * MINUTE_MS);
            assert_eq!(policy.rule(K::WorkspaceCredential).emergency_deadline_ms, HOUR_MS);
            assert_eq!(policy.rule(K::RouterKey).emergency_deadline_ms, HOUR_MS);
            assert_eq!(policy.rule(K::JoinKey).emergency_deadline_ms, 0);
        }
    }

    #[test]
    fn a_stricter_override_wins_and_a_looser_one_loses_with_a_warning() {
        use CredentialKind as K;
        let policy = with(Some(Profile::CisCloud), &[(K::ApiKey, 30 * DAY_MS)]);
        assert_eq!(summary(policy.rule(K::ApiKey)), (Some(30 * DAY_MS), "override", "override"));
        assert!(policy.warnings.is_empty());

        let policy = with(Some(Profile::CisCloud), &[(K::ApiKey, 365 * DAY_MS)]);
        let rule = policy.rule(K::ApiKey);
        assert_eq!(rule.name, "cis-cloud access keys rotated ≤ 90 d");
        assert_eq!(rule.max_age_ms, Some(90 * DAY_MS));
        assert_eq!(policy.warnings.len(), 1, "{:?}", policy.warnings);
        assert!(policy.warnings[0].contains("api_key (365d) is looser"), "{:?}", policy.warnings);

        // Under a delegating profile the override is the deployment's own period.
        let policy = with(Some(Profile::FedrampHigh), &[(K::CurveKey, 30 * DAY_MS)]);
        assert_eq!(
            summary(policy.rule(K::CurveKey)),
            (Some(30 * DAY_MS), "override", "delegated (fedramp-high SC-12): SEC-POL-7 §3")
        );
        // Looser than the default, no profile: the default stays.
        let policy = with(None, &[(K::WorkspaceCredential, 400 * DAY_MS)]);
        assert_eq!(
            summary(policy.rule(K::WorkspaceCredential)),
            (Some(90 * DAY_MS), "default", "default")
        );
        assert_eq!(policy.warnings.len(), 1);
        // An override equal to the default names the default.
        let policy = with(None, &[(K::ApiKey, 180 * DAY_MS)]);
        assert_eq!(policy.rule(K::ApiKey).name, "default");
    }

    #[test]
    fn join_key_overrides_and_profiles_take_the_shorter() {
        let config = |profile, max| PolicyConfig {
            profile: Some(profile),
            overrides: Overrides { join_key_max_unconsumed: max, ..Overrides::default() },
            cryptoperiod_ref: Some("ref".into()),
            ..PolicyConfig::default()
        };
        let high = Policy::resolve(&config(Profile::FedrampHigh, Some(48 * HOUR_MS)));
        assert_eq!(high.rule(CredentialKind::JoinKey).max_age_ms, Some(24 * HOUR_MS));
        assert_eq!(high.warnings.len(), 1);
        let moderate = Policy::resolve(&config(Profile::FedrampModerate, Some(HOUR_MS)));
        let rule = moderate.rule(CredentialKind::JoinKey);
        assert_eq!((rule.max_age_ms, rule.name.as_str()), (Some(HOUR_MS), "override"));
    }

    #[test]
    fn a_profile_without_a_cryptoperiod_reference_is_warned_about() {
        let policy = Policy::resolve(&PolicyConfig {
            profile: Some(Profile::PciDss4),
            ..PolicyConfig::default()
        });
        assert!(
            policy.warnings.iter().any(|w| w.contains("cryptoperiod_ref")),
            "{:?}",
            policy.warnings
        );
        assert!(
            policy.rule(CredentialKind::ApiKey).basis.ends_with("no cryptoperiod_ref configured")
        );
    }
}
