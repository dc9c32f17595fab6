//! Confirmation of irreversible and fleet-wide commands (revoking keys, agents' credentials and
//! join keys, rejecting candidates, withdrawing grants, cancelling an invocation, removing a
//! context): asked on the terminal; `--yes` (`-y`, `--force`) answers it in advance; without a
//! terminal and without `--yes` the command refuses, so a script never revokes by accident.
//! `--dry-run` never asks: it sends nothing.

use std::io::{BufRead, IsTerminal, Write};

use crate::exit::CliError;

/// How this invocation of xeroctl answers confirmation questions.
#[derive(Debug, Clone, Copy)]
pub struct Confirmation {
    /// `--yes`: every question is answered yes.
    pub assume_yes: bool,
    /// `--dry-run`: nothing is sent, so nothing needs confirming.
    pub dry_run: bool,
}

impl Confirmation {
    /// Asks whether to `action` (e.g. "revoke API key fleet-ops (key_…)"), with what it means in
    /// `consequence`; an error unless the operator confirmed (or `--yes`/`--dry-run`).
    pub fn confirm(&self, action: &str, consequence: &str) -> anyhow::Result<()> {
        if self.assume_yes || self.dry_run {
            return Ok(());
        }
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(CliError::NotConfirmed(format!(
                "refusing to {action} without confirmation: standard input is not a terminal to \
                 ask on; add --yes (or --force) to confirm. Nothing was sent."
            ))
            .into());
        }
        let mut stderr = std::io::stderr().lock();
        write!(stderr, "{consequence}\n{} [y/N] ", capitalized(action) + "?")?;
        stderr.flush()?;
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if is_yes(&answer) {
            return Ok(());
        }
        Err(CliError::NotConfirmed(format!("not confirmed: did not {action}. Nothing was sent."))
            .into())
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `y` or `yes`, in any case; anything else (an empty line too) is no.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y", "Y", "yes", "YES", " yes\n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "sure", "y es"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn yes_and_dry_run_never_ask() {
        let yes = Confirmation { assume_yes: true, dry_run: false };
        assert!(yes.confirm("revoke API key k", "k stops working").is_ok());
        let dry = Confirmation { assume_yes: false, dry_run: true };
        assert!(dry.confirm("revoke API key k", "k stops working").is_ok());
    }

    #[test]
    fn questions_start_with_a_capital() {
        assert_eq!(capitalized("revoke join key jk_1"), "Revoke join key jk_1");
        assert_eq!(capitalized(""), "");
    }
}
