//! `xerotier-tool-runner --serve`: started by the XEM ahead of time, with a unix socket as
//! stdin; runs the one tool the XEM then sends (see the crate's documentation). Never run by
//! hand, but for the two forms that start nothing secret:
//! - `xerotier-tool-runner --probe SPEC_JSON` applies the spec and prints what holds, as JSON;
//! - `xerotier-tool-runner SPEC_JSON` applies the spec and execs its executable with this
//!   process's stdio and environment (benchmarks and tests).
//!
//! Exit status 127: the tool was not started (why: on the status pipe, else on stderr).

use std::process::ExitCode;

use xerotier_sandbox::LaunchSpec;
use xerotier_sandbox::launch::{self, LaunchError};

fn parse(text: Option<&String>) -> Result<LaunchSpec, LaunchError> {
    let text = text.ok_or_else(|| {
        LaunchError::Spec("usage: xerotier-tool-runner --serve | [--probe] SPEC_JSON".into())
    })?;
    serde_json::from_str(text).map_err(|e| LaunchError::Spec(e.to_string()))
}

fn probe(spec: &LaunchSpec) -> ExitCode {
    match launch::probe(spec).map(|report| serde_json::to_string(&report)) {
        Ok(Ok(json)) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("xerotier-tool-runner: {err}");
            ExitCode::from(127)
        }
        Err(err) => {
            launch::report_failure(None, &err);
            ExitCode::from(127)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--serve") {
        return ExitCode::from(launch::serve());
    }
    let probing = args.first().is_some_and(|a| a == "--probe");
    let spec = match parse(args.get(usize::from(probing))) {
        Ok(spec) => spec,
        Err(err) => {
            launch::report_failure(None, &err);
            return ExitCode::from(127);
        }
    };
    if probing {
        return probe(&spec);
    }
    let err = launch::launch(&spec, None, None);
    launch::report_failure(None, &err);
    ExitCode::from(127)
}
