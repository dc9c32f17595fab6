//! `xeroctl keys end-grace`: end a rotated key's grace window now, or once its previous value
//! has been unused for a while, and follow the state until it has ended.

use std::time::Duration;

use serde_json::json;
use xerotier_proto::api_keys::{ApiKeyView, EndGraceResponse, GraceEnd, MAX_WHEN_QUIET_SECONDS};

use super::Ctx;
use super::keys::{BASE, KIND, resolve};
use crate::cli::KeySelector;
use crate::client::Call;
use crate::exit;
use crate::output;

/// How often `--follow` reads the key again.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

pub async fn run(
    ctx: &Ctx,
    selector: KeySelector,
    when_quiet: Option<String>,
    follow: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let when_quiet_seconds =
        when_quiet.as_deref().map(|text| parse_quiet(text, "--when-quiet")).transpose()?;
    let (id, label) = resolve(ctx, &selector).await?;
    let dry_run = ctx.client.is_dry_run();
    if when_quiet_seconds.is_none() {
        ctx.confirm.confirm(
            &format!("end the grace window of API key {label}"),
            "Its previous value stops working at once on every replica: callers still using it \
             are refused (see their last use with `xeroctl keys show`).",
        )?;
    }
    let body = json!({
        "when_quiet_seconds": when_quiet_seconds,
        "dry_run": dry_run,
        "reason": reason,
    });
    // A dry run is asked of the router (it changes nothing there): the answer says whether the
    // window would end now or wait, which depends on the evidence only the router has.
    let answer: EndGraceResponse =
        ctx.client.fetch(Call::post(format!("{BASE}/{id}/end-grace"), body)).await?;
    ctx.out.object(&answer, KIND, &answer.key.id, || {
        print_answer(&answer);
        Ok(())
    })?;
    if follow && !dry_run && answer.state == GraceEnd::Waiting {
        follow_until_ended(ctx, &id).await?;
    }
    Ok(())
}

fn print_answer(answer: &EndGraceResponse) {
    let key = &answer.key;
    let prefix = if answer.dry_run { "# dry run: nothing changed\nwould have " } else { "" };
    match answer.state {
        GraceEnd::Ended => println!(
            "{prefix}ended the grace window of API key {} ({}): its previous value is refused \
             from now on.",
            key.name, key.id
        ),
        GraceEnd::Waiting => println!(
            "{prefix}scheduled the end of the grace window of API key {} ({}) for when its \
             previous value has been unused for {}.",
            key.name,
            key.id,
            answer
                .key
                .grace_end_when_quiet_seconds
                .map_or_else(|| "the given period".to_string(), |s| format!("{s}s")),
        ),
    }
    print_state(key);
}

fn print_state(key: &ApiKeyView) {
    output::fields(&[
        ("previous value valid until", output::or_dash(key.previous_value_valid_until.as_deref())),
        ("grace uses", key.grace_uses.to_string()),
        ("last old-value use", output::or_dash(key.grace_last_used_at.as_deref())),
        ("last old-value use from", output::or_dash(key.grace_last_used_from.as_deref())),
        ("grace end", scheduled(key)),
    ]);
}

/// The scheduled end as `keys show` prints it.
pub fn scheduled(key: &ApiKeyView) -> String {
    match (&key.grace_end_when_quiet_seconds, &key.grace_end_requested_at) {
        (Some(quiet), Some(since)) => {
            format!("when quiet for {quiet}s (waiting since {since})")
        }
        (Some(quiet), None) => format!("when quiet for {quiet}s"),
        _ => "-".to_string(),
    }
}

/// Reads the key every [`FOLLOW_EVERY`] and prints its state when it changes, until the
/// previous value is no longer accepted.
async fn follow_until_ended(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let mut last_seen = None;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let key: ApiKeyView = ctx.client.fetch(Call::get(format!("{BASE}/{id}"))).await?;
        if key.previous_value_valid_until.is_none() {
            if ctx.out.is_text() {
                println!("grace window ended; the previous value is refused.");
            }
            return Ok(());
        }
        let seen = (key.grace_uses, key.grace_last_used_at.clone());
        if last_seen.as_ref() != Some(&seen) && ctx.out.is_text() {
            println!(
                "waiting: {} old-value uses, last {}",
                key.grace_uses,
                output::or_dash(key.grace_last_used_at.as_deref())
            );
        }
        last_seen = Some(seen);
    }
}

/// A duration given as a whole number and one unit, `s`, `m`, `h` or `d` (`90s`, `10m`, `2h`,
/// `1d`), as seconds within 1..=30 days. Anything else is a usage error, never a guess.
pub fn parse_quiet(text: &str, flag: &str) -> anyhow::Result<u64> {
    let bad = || {
        exit::usage(format!(
            "{flag} {text:?} is not a duration: a whole number and s, m, h or d (e.g. 90s, 10m, 2h)"
        ))
    };
    let text = text.trim();
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at_checked(split).ok_or_else(bad)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = number.parse::<u64>().ok().and_then(|n| n.checked_mul(unit_secs)).ok_or_else(bad)?;
    if secs == 0 || secs > MAX_WHEN_QUIET_SECONDS {
        return Err(exit::usage(format!(
            "{flag} {text:?} is out of range: from 1s to {}d",
            MAX_WHEN_QUIET_SECONDS / 86_400
        )));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_durations_take_one_unit_of_s_m_h_d() {
        assert_eq!(parse_quiet("90s", "f").unwrap(), 90);
        assert_eq!(parse_quiet("10m", "f").unwrap(), 600);
        assert_eq!(parse_quiet("2h", "f").unwrap(), 7_200);
        assert_eq!(parse_quiet("30d", "f").unwrap(), 30 * 86_400);
        for hostile in [
            "",
            "s",
            "5x",
            "-5s",
            "5",
            "0s",
            "31d",
            "1000000000000s",
            "99999999999999999999d",
            "1h30m",
            " 5 s",
            "５s",
        ] {
            assert!(parse_quiet(hostile, "f").is_err(), "{hostile:?} must be refused");
        }
    }
}
