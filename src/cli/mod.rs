//! CLI mode: the same diagnosis for an operator at a terminal, with the habits of the AWS CLI
//! (`--profile`, `--region`, `--endpoint-url`, `--output`, `--debug`, `--color`).
//!
//! Exit codes, the same for every command (see [`Exit`]): 0 complete, 1 nothing could be done,
//! 2 usage, 3 partial. Reports go to stdout; warnings, skips and errors to stderr (JSON keeps
//! skips in its `skipped`). A reader that goes away (`| head`) is a normal end: output stops
//! and the exit code is 0, as in ripgrep.
//!
//! May import: everything but `lambda` and the in-memory adapter; the layering is checked by
//! `tests/architecture.rs`.

mod args;
mod diagnose;
mod output;
mod preflight;
mod progress;
mod replay;
mod scan;
mod setup;
mod table;
pub(crate) mod term;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::args::{CheckPermissionsArgs, Cli, Command};
use crate::cli::output::{emit, init_tracing, CliError, Exit, Stderr};

pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let colour_err = cli.global.color.stderr();
    init_tracing(cli.global.debug, colour_err);
    let err = Stderr { colour: colour_err };
    let global = &cli.global;
    let outcome = match cli.command {
        Command::Diagnose(args) => diagnose::run(&err, global, args).await,
        Command::Scan(args) => scan::run(&err, global, args).await,
        Command::Preflight(args) => preflight::run(&err, global, args).await,
        Command::CheckPermissions(args) => check_permissions(&err, global, args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kms-launch-doctor", &mut script);
            Ok(emit(&err, &String::from_utf8_lossy(&script)))
        }
        Command::Replay(args) => replay::run(&err, global, args).await,
    };
    match outcome {
        Ok(exit) => exit.code(),
        Err(e) => {
            err.error(&e.to_string());
            e.exit_code()
        }
    }
}

/// `check-permissions`: the IAM policy simulator on every call the tool makes.
async fn check_permissions(err: &Stderr, global: &args::Global, args: CheckPermissionsArgs) -> Result<Exit, CliError> {
    let CheckPermissionsArgs { remediate, all_regions, region } = args;
    let cloud = setup::cloud(global, region.as_deref()).await?;
    let needs = crate::app::permissions::Needs { all_regions, remediation: remediate };
    let region = cloud.default_region().unwrap_or_else(|| "us-east-1".to_owned());
    let check = crate::app::permissions::check(&cloud, needs, &region).await?;
    let printed = emit(err, &check.text);
    let outcome = if check.missing_required.is_empty() { Exit::Complete } else { Exit::Failed };
    Ok(outcome.max(printed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::endpoint_url;
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_described_and_every_command_has_examples() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let help = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains("Examples:"), "{} --help has no examples", sub.get_name());
            for arg in sub.get_arguments() {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{} {} has no description", sub.get_name(), arg.get_id());
            }
        }
        for arg in cli.get_arguments() {
            if arg.get_id() != "help" && arg.get_id() != "version" {
                assert!(arg.get_help().is_some(), "{} has no description", arg.get_id());
            }
        }
        cli.debug_assert();
    }

    #[test]
    fn exits_order_from_best_to_worst() {
        assert_eq!(Exit::Complete.max(Exit::Partial), Exit::Partial);
        assert_eq!(Exit::Partial.max(Exit::Failed), Exit::Failed);
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3  partial"), "{help}");
    }

    #[test]
    fn endpoint_urls_must_be_http() {
        assert!(endpoint_url("http://127.0.0.1:5000").is_ok());
        assert!(endpoint_url("https://vpce.example").is_ok());
        assert!(endpoint_url("127.0.0.1:5000").is_err());
        assert!(endpoint_url("http://").is_err());
    }
}
