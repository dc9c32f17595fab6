//! Compliance profiles, as `COMPLIANCE.md` reads the regimes: a profile states a number only
//! where the regime itself states one; everywhere else the regime delegates the period
//! (the "cryptoperiod") to the organisation, and the profile says so, pointing at the
//! deployment's own documented period (`cryptoperiod_ref`).
//!
//! Human passwords: this product has none, and no profile may invent an age-based expiry for
//! them. FedRAMP IA-5(1) (after NIST SP 800-63B) forbids forced periodic rotation of users'
//! memorized secrets, and PCI DSS 8.3.9's 90 days applies only to a password that is the sole
//! factor of a human login, so neither becomes a rule here. No regime sets emergency deadlines:
//! the 15-minute / 1-hour deadlines are this product's in every profile.

use std::fmt;
use std::str::FromStr;

use crate::{CredentialKind, DAY_MS, HOUR_MS, PolicyError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    PciDss4,
    Hipaa,
    FedrampModerate,
    FedrampHigh,
    CisCloud,
}

/// What a profile says about one kind's routine period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileRule {
    /// The regime states this maximum (milliseconds) in this requirement.
    Number { max_age_ms: i64, requirement: &'static str },
    /// The regime leaves the period to the organisation, in this requirement.
    Delegated { requirement: &'static str },
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::PciDss4,
        Profile::Hipaa,
        Profile::FedrampModerate,
        Profile::FedrampHigh,
        Profile::CisCloud,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::PciDss4 => "pci-dss-4",
            Profile::Hipaa => "hipaa",
            Profile::FedrampModerate => "fedramp-moderate",
            Profile::FedrampHigh => "fedramp-high",
            Profile::CisCloud => "cis-cloud",
        }
    }

    /// The profile's word on one kind (join keys: the longest an unconsumed one may live).
    pub fn rule(self, kind: CredentialKind) -> ProfileRule {
        use CredentialKind as K;
        use ProfileRule::{Delegated, Number};
        match (self, kind) {
            // PCI DSS v4.0.1: 3.7.4/3.7.5 leave cryptoperiods to the key owner; 8.6.3 leaves
            // application and system account secrets to a targeted risk analysis; 8.3.5
            // (changed after first use) is what single-use join keys already are.
            (Profile::PciDss4, K::ApiKey) => Delegated { requirement: "8.6.3" },
            (Profile::PciDss4, K::CurveKey | K::RouterKey) => Delegated { requirement: "3.7.4" },
            (Profile::PciDss4, K::WorkspaceCredential) => Delegated { requirement: "8.6.3" },
            (Profile::PciDss4, K::JoinKey) => Delegated { requirement: "8.3.5" },
            // HIPAA: no rotation period anywhere in 164.308/164.312.
            (Profile::Hipaa, K::RouterKey) => Delegated { requirement: "164.312(a)(2)(iv)" },
            (Profile::Hipaa, _) => Delegated { requirement: "164.312(d)" },
            // FedRAMP Rev 5: IA-5(f) and SC-12 delegate; AC-2(2) disables temporary accounts
            // at most 96 h (Moderate) / 24 h (High) after creation: the analogue for an
            // unconsumed join key.
            (Profile::FedrampModerate, K::JoinKey) => {
                Number { max_age_ms: 96 * HOUR_MS, requirement: "AC-2(2)" }
            }
            (Profile::FedrampHigh, K::JoinKey) => {
                Number { max_age_ms: 24 * HOUR_MS, requirement: "AC-2(2)" }
            }
            (Profile::FedrampModerate | Profile::FedrampHigh, K::CurveKey | K::RouterKey) => {
                Delegated { requirement: "SC-12" }
            }
            (Profile::FedrampModerate | Profile::FedrampHigh, _) => {
                Delegated { requirement: "IA-5(f)" }
            }
            // CIS AWS / GCP Foundations: access keys and API keys rotated every 90 days.
            (Profile::CisCloud, K::ApiKey) => {
                Number { max_age_ms: 90 * DAY_MS, requirement: "access keys rotated ≤ 90 d" }
            }
            (Profile::CisCloud, _) => Delegated { requirement: "no period stated" },
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = PolicyError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == value)
            .ok_or_else(|| PolicyError::Profile { value: value.to_string() })
    }
}
