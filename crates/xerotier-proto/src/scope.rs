use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an API key may call: `execution` is all of `/v1/exec/*`, `management` all of
/// `/v1/management/*`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Execution,
    Management,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Execution, Scope::Management];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Execution => "execution",
            Scope::Management => "management",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown scope {0:?}: expected one of execution, management")]
pub struct ScopeParseError(pub String);

impl FromStr for Scope {
    type Err = ScopeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "execution" => Ok(Scope::Execution),
            "management" => Ok(Scope::Management),
            other => Err(ScopeParseError(other.to_string())),
        }
    }
}

/// A set of scopes, kept sorted and without duplicates so that its text form is canonical.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(mut scopes: Vec<Scope>) -> Self {
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// Comma-separated canonical form, as stored.
    pub fn to_csv(&self) -> String {
        self.0.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    }

    pub fn from_csv(csv: &str) -> Result<Self, ScopeParseError> {
        csv.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Scopes::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_is_canonical() {
        let scopes = Scopes::from_csv("management, execution,management").unwrap();
        assert_eq!(scopes.to_csv(), "execution,management");
        assert!(scopes.contains(Scope::Execution));
        assert_eq!(Scopes::from_csv("admin"), Err(ScopeParseError("admin".into())));
    }
}
