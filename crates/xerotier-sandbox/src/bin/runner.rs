//! `xerotier-tool-runner SPEC_JSON`: started by the XEM for every tool run, never by hand.
//! Applies the spec (limits, Landlock, the tool user's identity, no new privileges) and execs
//! the tool in place. `xerotier-tool-runner --probe SPEC_JSON` applies it and prints what
//! holds, as JSON, instead of running anything. Exit status 127: the tool was not started.

use std::process::ExitCode;

use xerotier_sandbox::LaunchSpec;
use xerotier_sandbox::launch::{self, LaunchError};

fn parse(text: Option<&String>) -> Result<LaunchSpec, LaunchError> {
    let text = text.ok_or_else(|| {
        LaunchError::Spec("usage: xerotier-tool-runner [--probe] SPEC_JSON".into())
    })?;
    serde_json::from_str(text).map_err(|e| LaunchError::Spec(e.to_string()))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let probing = args.first().is_some_and(|a| a == "--probe");
    let mut status = if probing { None } else { launch::open_status_pipe() };
    let spec = match parse(args.get(usize::from(probing))) {
        Ok(spec) => spec,
        Err(err) => {
            launch::report_failure(status.as_mut(), &err);
            return ExitCode::from(127);
        }
    };
    if probing {
        return match launch::probe(&spec) {
            Ok(report) => match serde_json::to_string(&report) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("xerotier-tool-runner: {err}");
                    ExitCode::from(127)
                }
            },
            Err(err) => {
                launch::report_failure(None, &err);
                ExitCode::from(127)
            }
        };
    }
    let err = launch::launch(&spec, status.as_ref());
    launch::report_failure(status.as_mut(), &err);
    ExitCode::from(127)
}
