//! CLI mode: the same diagnosis for an operator at a terminal.
//!
//! Exit codes: 0 the diagnosis ran (with or without findings), 1 AWS could not be reached or
//! would not describe the instances, 2 usage errors (including an unreadable event file).
//! A reader that goes away (`| head`) is a normal end: output stops and the exit code is 0.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{act, handle_event, Plan};
use crate::aws::{load_config, AwsCloud};
use crate::cloud::{CallError, Cloud};
use crate::config::{parse_duration, Settings};
use crate::deliver::Sinks;
use crate::gather::{self, Options, Target};
use crate::remediate::{Guardrails, Mode};
use crate::render;
use crate::report::Report;

#[derive(Debug, Parser)]
#[command(
    name = "kms-launch-doctor",
    version,
    about = "Finds out why an EC2 instance with KMS-encrypted volumes failed to start, and how to fix it.",
    after_help = "Examples:\n  kms-launch-doctor diagnose --instance-id i-0abcd1234ef567890 --region eu-west-1 --format text\n  kms-launch-doctor scan --all-regions\n  kms-launch-doctor replay events/stopped.json\n  kms-launch-doctor check-permissions\n\nExit codes: 0 the diagnosis ran, 1 AWS could not be reached (or a sink failed), 2 usage error.\nCredentials, region and endpoint come from the standard AWS configuration (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, …)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanFormat {
    Table,
    Json,
    Text,
}

/// What to do with findings besides printing them.
#[derive(Debug, Clone, clap::Args)]
pub struct ActionArgs {
    /// Publish each finding to this SNS topic.
    #[arg(long = "notify-topic", env = "FINDINGS_TOPIC_ARN", value_name = "TOPIC_ARN")]
    pub notify_topic: Option<String>,
    /// Import each finding into Security Hub (ASFF; repeated failures update one finding).
    #[arg(long = "security-hub", env = "SECURITY_HUB", value_parser = on_off, num_args = 0..=1, default_missing_value = "on", default_value = "off", value_name = "on|off")]
    pub security_hub: bool,
    /// Put each finding on this EventBridge bus (detail-type "EC2 Launch Failure Diagnosed").
    #[arg(long = "event-bus", env = "FINDINGS_EVENT_BUS", value_name = "BUS")]
    pub event_bus: Option<String>,
    /// Opt-in remediation: off, dry-run (report what apply would write), apply.
    #[arg(long, env = "REMEDIATION_MODE", value_enum, default_value_t = Mode::Off)]
    pub remediate: Mode,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" | "" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Diagnose stopped or terminated instances by id.
    Diagnose {
        /// The instance to diagnose (repeat for several).
        #[arg(long = "instance-id", required = true, value_parser = instance_id)]
        instance_ids: Vec<String>,
        /// Region of the instances (default: from the AWS configuration).
        #[arg(long, value_parser = region)]
        region: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// How far back to search CloudTrail for the launch call (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        since: chrono::Duration,
        #[command(flatten)]
        actions: ActionArgs,
    },
    /// Find and diagnose every failed launch in one or more regions.
    #[command(
        after_help = "Examples:\n  kms-launch-doctor scan --region eu-west-1\n  kms-launch-doctor scan --all-regions --since 3d --format json > failures.json\n  kms-launch-doctor scan --region us-east-1 --region us-west-2 --remediate dry-run"
    )]
    Scan {
        /// A region to scan (repeat for several; default: from the AWS configuration).
        #[arg(long = "region", value_parser = region, conflicts_with = "all_regions")]
        regions: Vec<String>,
        /// Every region enabled for the account (DescribeRegions).
        #[arg(long)]
        all_regions: bool,
        /// How far back to search CloudTrail for the launch calls (CloudTrail keeps 90 days).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        since: chrono::Duration,
        #[arg(long, value_enum, default_value_t = ScanFormat::Table)]
        format: ScanFormat,
        /// Opt-in remediation: off, dry-run (report what apply would write), apply.
        #[arg(long, env = "REMEDIATION_MODE", value_enum, default_value_t = Mode::Off)]
        remediate: Mode,
        /// Regions and calls in flight at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
        concurrency: u16,
        /// No progress on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Can the current credentials make every call the tool needs? (IAM policy simulator)
    #[command(
        after_help = "Examples:\n  kms-launch-doctor check-permissions\n  kms-launch-doctor check-permissions --remediate apply"
    )]
    CheckPermissions {
        /// Also check the calls `--remediate apply` makes.
        #[arg(long, value_enum, default_value_t = Mode::Off)]
        remediate: Mode,
        #[arg(long, value_parser = region)]
        region: Option<String>,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  kms-launch-doctor completions bash > /etc/bash_completion.d/kms-launch-doctor"
    )]
    Completions { shell: clap_complete::Shell },
    /// Run the Lambda handler's code path on an EventBridge event file.
    Replay {
        /// An "EC2 Instance State-change Notification" event, as EventBridge delivers it.
        event: PathBuf,
        /// Region when the event names none (default: from the AWS configuration).
        #[arg(long, value_parser = region)]
        region: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        #[command(flatten)]
        actions: ActionArgs,
    },
}

fn instance_id(s: &str) -> Result<String, String> {
    if crate::event::is_instance_id(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{:?} is not an EC2 instance id (i-0123456789abcdef0)", crate::event::echo(s)))
    }
}

fn region(s: &str) -> Result<String, String> {
    if crate::event::is_region(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{:?} is not a region name like eu-west-1", crate::event::echo(s)))
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn aws_failure(e: &CallError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

/// Writes to stdout. `Err` carries the exit code to end with: 0 when the reader went away
/// (a closed pipe is how `| head` says it has enough, as ripgrep treats it), 1 for any other
/// write error. `print!` would panic on either.
fn emit(text: &str) -> Result<(), ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot write the output: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn print(report: &Report, format: Format) -> Result<(), ExitCode> {
    match format {
        Format::Json => match serde_json::to_string_pretty(report) {
            Ok(s) => emit(&format!("{s}\n")),
            Err(e) => {
                eprintln!("error: could not render the report: {e}");
                Err(ExitCode::from(1))
            }
        },
        Format::Text => emit(&render::text(report)),
    }
}

/// The run's plan: environment settings, overridden by flags.
fn plan(actions: &ActionArgs, options: Options) -> Result<Plan, String> {
    let settings = Settings::from_env()?;
    let blank = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    Ok(Plan {
        options,
        sinks: Sinks {
            topic_arn: blank(&actions.notify_topic),
            security_hub: actions.security_hub,
            event_bus: blank(&actions.event_bus),
        },
        guardrails: Guardrails { mode: actions.remediate, ..settings.guardrails },
    })
}

/// With `KLD_CALL_STATS` set: one JSON line on stderr counting the AWS calls made.
fn report_calls(cloud: &AwsCloud) {
    if crate::stats::CallCounter::enabled() {
        eprintln!("{}", crate::stats::line(&cloud.take_call_counts()));
    }
}

/// Prints the report; delivery failures go to stderr, one line each, and make the exit code 1.
fn finish(report: &Report, failures: &[CallError], format: Format) -> ExitCode {
    if let Err(code) = print(report, format) {
        return code;
    }
    for e in failures {
        eprintln!("error: {e}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Diagnose { instance_ids, region, format, since, actions } => {
            let opts = Options { lookback: since, slack: chrono::Duration::zero(), ..Options::default() };
            let plan = match plan(&actions, opts) {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            let cloud = AwsCloud::new(load_config(region.as_deref()).await);
            let Some(region) = region.or_else(|| cloud.default_region()) else {
                return usage("no region: pass --region or set AWS_REGION");
            };
            let now = Utc::now();
            let targets: Vec<Target> = instance_ids.into_iter().map(|id| Target::new(id, now)).collect();
            let mut report = match gather::diagnose(&cloud, &region, &targets, &plan.options).await {
                Ok(r) => r,
                Err(e) => return aws_failure(&e),
            };
            let mut failures = Vec::new();
            for f in &mut report.findings {
                failures.extend(act(&cloud, &plan, f).await.0);
            }
            report_calls(&cloud);
            finish(&report, &failures, format)
        }
        Command::Scan { regions, all_regions, since, format, remediate, concurrency, quiet } => {
            let cloud = AwsCloud::new(load_config(regions.first().map(String::as_str)).await);
            let regions = if all_regions {
                match cloud.describe_regions().await {
                    Ok(r) => r,
                    Err(e) => return aws_failure(&e),
                }
            } else if regions.is_empty() {
                match cloud.default_region() {
                    Some(r) => vec![r],
                    None => return usage("no region: pass --region, --all-regions or set AWS_REGION"),
                }
            } else {
                regions
            };
            let settings = match Settings::from_env() {
                Ok(s) => s,
                Err(e) => return usage(&e),
            };
            let opts = Options { concurrency: usize::from(concurrency), ..Options::default() };
            let progress = crate::scan::Progress::new(regions.len(), quiet);
            let mut report = crate::scan::scan(&cloud, &regions, since, Utc::now(), &opts, &progress).await;
            if report.findings.is_empty() && !report.skipped.is_empty() && report.skipped.len() == regions.len() {
                // Nothing could be searched at all.
                for s in &report.skipped {
                    eprintln!("error: {}: {}", s.region.as_deref().unwrap_or("-"), s.reason);
                }
                return ExitCode::from(1);
            }
            let plan = Plan {
                options: opts,
                sinks: Sinks::default(),
                guardrails: Guardrails { mode: remediate, ..settings.guardrails },
            };
            for f in &mut report.findings {
                act(&cloud, &plan, f).await;
            }
            report_calls(&cloud);
            let printed = match format {
                ScanFormat::Json => print(&report, Format::Json),
                ScanFormat::Text => print(&report, Format::Text),
                ScanFormat::Table => emit(&crate::scan::table(&report, crate::scan::use_colour())),
            };
            printed.err().unwrap_or(ExitCode::SUCCESS)
        }
        Command::CheckPermissions { remediate, region } => {
            let cloud = AwsCloud::new(load_config(region.as_deref()).await);
            match crate::permissions::check(&cloud, remediate == Mode::Apply).await {
                Ok(table) => emit(&table).err().unwrap_or(ExitCode::SUCCESS),
                Err(e) => aws_failure(&e),
            }
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kms-launch-doctor", &mut script);
            emit(&String::from_utf8_lossy(&script)).err().unwrap_or(ExitCode::SUCCESS)
        }
        Command::Replay { event, region, format, actions } => {
            let bytes = match std::fs::read(&event) {
                Ok(b) => b,
                Err(e) => return usage(&format!("cannot read {}: {e}", event.display())),
            };
            let value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    // Malformed input is skipped, as the Lambda would, not a crash.
                    let report = Report {
                        skipped: vec![crate::report::Skipped {
                            instance_id: None,
                            region: None,
                            reason: format!("malformed JSON: {e}"),
                        }],
                        ..Report::default()
                    };
                    return print(&report, format).err().unwrap_or(ExitCode::SUCCESS);
                }
            };
            let options = match Settings::from_env() {
                Ok(s) => s.options(),
                Err(e) => return usage(&e),
            };
            let plan = match plan(&actions, options) {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            let cloud = AwsCloud::new(load_config(region.as_deref()).await);
            let default_region = region.or_else(|| cloud.default_region());
            let outcome = handle_event(&cloud, &value, default_region.as_deref(), &plan).await;
            report_calls(&cloud);
            match outcome {
                Ok((report, failures)) => finish(&report, &failures, format),
                Err(e) => aws_failure(&e),
            }
        }
    }
}
