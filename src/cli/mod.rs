//! CLI mode: the same diagnosis for an operator at a terminal, with the habits of the AWS CLI
//! (`--profile`, `--region`, `--endpoint-url`, `--output`, `--debug`, `--color`).
//!
//! Exit codes, the same for every command (see [`Exit`]): 0 complete, 1 nothing could be done,
//! 2 usage, 3 partial. Reports go to stdout; warnings, skips and errors to stderr (JSON keeps
//! skips in its `skipped`). A reader that goes away (`| head`) is a normal end: output stops
//! and the exit code is 0, as in ripgrep.

mod term;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};

use crate::app::gather::{Options, Target};
use crate::app::remediate::{Guardrails, Mode};
use crate::app::{act, handle_events, Plan};
use crate::aws::{check_profile, load, AwsCloud, Source};
use crate::cli::term::ColorChoice;
use crate::core::outbox::Sinks;
use crate::core::render;
use crate::core::report::{RemediationStatus, Report, Skipped};
use crate::ports::{CallError, Cloud};
use crate::settings::{parse_duration, Settings};

/// The exit codes, as `--help` and README state them.
macro_rules! exit_codes {
    () => {
        "Exit codes (every command):
  0  complete
  1  nothing could be done: AWS unreachable, no requested instance found, a sink failed,
     or (check-permissions) a required call is not allowed
  2  usage: a bad flag or argument, an unreadable input, an invalid setting, an unknown profile
  3  partial: some regions, accounts or evidence could not be read, or a remediation failed;
     the run went on, and the output says what is missing"
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "kms-launch-doctor",
    version,
    about = "Finds out why an EC2 instance with KMS-encrypted volumes failed to start, and how to fix it.",
    after_help = concat!("Examples:
  kms-launch-doctor diagnose --instance-id i-0abcd1234ef567890 --region eu-west-1 --output text
  kms-launch-doctor scan --all-regions --profile prod
  kms-launch-doctor replay events/stopped.json
  kms-launch-doctor check-permissions --remediate apply

", exit_codes!(), "

Credentials, region and endpoint come from the standard AWS configuration (AWS_PROFILE, AWS_REGION,
AWS_ENDPOINT_URL, ~/.aws/config), or from --profile, --region and --endpoint-url.")
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags every command takes, before or after the command's name, as with `aws`.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Use this profile of ~/.aws/config and ~/.aws/credentials (default: AWS_PROFILE, else the default chain).
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Send every AWS request to this URL (an emulator, a VPC endpoint) instead of the AWS endpoints; wins over AWS_ENDPOINT_URL.
    #[arg(long = "endpoint-url", global = true, value_name = "URL", value_parser = endpoint_url)]
    pub endpoint_url: Option<String>,
    /// Log the tool's and the AWS SDK's debug messages on stderr (request signatures are left out).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Colour the output: auto (on a terminal, unless NO_COLOR is set or TERM=dumb), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The report contract (kms-launch-doctor.report/1).
    Json,
    /// Each finding for a person: what failed, why, what was done, what to do next.
    Text,
    /// One line per finding.
    Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanFormat {
    /// One line per failed launch, fitted to the terminal, and a summary line.
    Table,
    /// The report contract (kms-launch-doctor.report/1), with a `summary`.
    Json,
    /// Each failed launch for a person, then each distinct fix once ("Fixes"), then the summary.
    Text,
    /// Only the distinct fix commands, as a commented shell script to review before running.
    Script,
}

/// `preflight --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PreflightFormat {
    /// One line a check: verdict, region, instance or group, principal, first cause, keys.
    Table,
    /// The `kms-launch-doctor.preflight/1` report.
    Json,
    /// Each check for a person, with its causes and fix commands.
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
    /// Opt-in remediation: off, dry-run (report what apply would write), apply (see README: both the principal and the key must opt in).
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
    #[command(after_help = const_format_diagnose())]
    Diagnose {
        /// The instance to diagnose: i- and 8 or 17 hex digits (repeat for several).
        #[arg(long = "instance-id", required = true, value_parser = instance_id, value_name = "ID")]
        instance_ids: Vec<String>,
        /// Region of the instances (default: AWS_REGION or the profile's region).
        #[arg(long, value_parser = region, conflicts_with = "all_regions")]
        region: Option<String>,
        /// Look for the instances in every region enabled for the account (ec2:DescribeRegions).
        #[arg(long)]
        all_regions: bool,
        /// Output format (--output is the same flag, as in the AWS CLI).
        #[arg(long, visible_alias = "output", value_enum, default_value_t = Format::Json)]
        format: Format,
        /// How far back to search CloudTrail for the launch call (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        since: chrono::Duration,
        #[command(flatten)]
        actions: ActionArgs,
    },
    /// Find and diagnose every failed launch in one or more regions.
    #[command(after_help = const_format_scan())]
    Scan {
        /// A region to scan (repeat for several; default: AWS_REGION or the profile's region).
        #[arg(long = "region", value_parser = region, conflicts_with = "all_regions", value_name = "REGION")]
        regions: Vec<String>,
        /// Every region enabled for the account (ec2:DescribeRegions).
        #[arg(long)]
        all_regions: bool,
        /// How far back to search CloudTrail for the launch calls (CloudTrail keeps 90 days).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        since: chrono::Duration,
        /// Output format (--output is the same flag, as in the AWS CLI).
        #[arg(long, visible_alias = "output", value_enum, default_value_t = ScanFormat::Table)]
        format: ScanFormat,
        /// Table: print every column in full (whole ARNs, nothing cut), however wide.
        #[arg(long)]
        wide: bool,
        /// Opt-in remediation: off, dry-run (report what apply would write), apply.
        #[arg(long, env = "REMEDIATION_MODE", value_enum, default_value_t = Mode::Off)]
        remediate: Mode,
        /// Regions and calls in flight at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
        concurrency: u16,
        /// No progress bar on stderr (it shows only on a terminal anyway); warnings still show.
        #[arg(long, short)]
        quiet: bool,
        /// Every ACTIVE account of the organization (organizations:ListAccounts, from the
        /// management account or a delegated administrator), each entered through --role-name.
        #[arg(long, conflicts_with_all = ["accounts", "accounts_file"])]
        org: bool,
        /// These accounts (comma-separated or repeated), each entered through --role-name.
        #[arg(long, value_delimiter = ',', value_parser = crate::app::org::account_id, value_name = "ID[,ID...]", conflicts_with = "accounts_file")]
        accounts: Vec<String>,
        /// The accounts listed in a file, one id a line (# comments allowed).
        #[arg(long, value_name = "FILE")]
        accounts_file: Option<PathBuf>,
        /// The role assumed in each account (arn:<partition>:iam::<id>:role/<name>).
        #[arg(long, default_value = "kms-launch-doctor-scan", value_name = "NAME")]
        role_name: String,
        /// The external id the role's trust policy asks for (sts:ExternalId).
        #[arg(long, value_name = "ID")]
        external_id: Option<String>,
    },
    /// Will these principals be able to start these instances (and these Auto Scaling groups
    /// launch)? The checks a diagnosis makes, before the launch.
    #[command(after_help = const_format_preflight())]
    Preflight {
        /// An IAM user or role ARN whose StartInstances to check (repeat for several).
        #[arg(long = "principal", value_name = "ARN")]
        principals: Vec<String>,
        /// Check this instance (repeat for several; default: every stopped instance).
        #[arg(long = "instance-id", value_parser = instance_id, value_name = "ID", conflicts_with = "tag")]
        instance_ids: Vec<String>,
        /// Check the stopped instances with this tag.
        #[arg(long, value_parser = tag, value_name = "KEY=VALUE")]
        tag: Option<(String, String)>,
        /// Also check each Auto Scaling group's launch for its service-linked role.
        #[arg(long)]
        auto_scaling_groups: bool,
        /// A region to check (repeat for several; default: AWS_REGION or the profile's region).
        #[arg(long = "region", value_parser = region, conflicts_with = "all_regions", value_name = "REGION")]
        regions: Vec<String>,
        /// Every region enabled for the account (ec2:DescribeRegions).
        #[arg(long)]
        all_regions: bool,
        /// Output format (--output is the same flag, as in the AWS CLI).
        #[arg(long, visible_alias = "output", value_enum, default_value_t = PreflightFormat::Table)]
        format: PreflightFormat,
        /// Opt-in remediation of what will fail: off, dry-run, apply (the same opt-in rules).
        #[arg(long, env = "REMEDIATION_MODE", value_enum, default_value_t = Mode::Off)]
        remediate: Mode,
    },
    /// Can the current credentials make every call the tool needs? (IAM policy simulator)
    #[command(after_help = const_format_check())]
    CheckPermissions {
        /// Also require the calls of --remediate dry-run (reads) or apply (reads and writes).
        #[arg(long, value_enum, default_value_t = Mode::Off)]
        remediate: Mode,
        /// Also require ec2:DescribeRegions, which --all-regions needs.
        #[arg(long)]
        all_regions: bool,
        /// Region for the simulation's kms:ViaService (default: AWS_REGION or the profile's region).
        #[arg(long, value_parser = region)]
        region: Option<String>,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  kms-launch-doctor completions bash > /etc/bash_completion.d/kms-launch-doctor
  kms-launch-doctor completions zsh > \"${fpath[1]}/_kms-launch-doctor\"
  kms-launch-doctor completions fish > ~/.config/fish/completions/kms-launch-doctor.fish")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Run the Lambda handler's code path on events: an EventBridge event, a JSON list of
    /// them, or an SQS event as Lambda receives it.
    #[command(after_help = const_format_replay())]
    Replay {
        /// A file holding the event(s), or - for stdin.
        #[arg(value_name = "FILE")]
        event: PathBuf,
        /// Region for events that name none (default: AWS_REGION or the profile's region).
        #[arg(long, value_parser = region)]
        region: Option<String>,
        /// Output format (--output is the same flag, as in the AWS CLI).
        #[arg(long, visible_alias = "output", value_enum, default_value_t = Format::Json)]
        format: Format,
        #[command(flatten)]
        actions: ActionArgs,
    },
}

const fn const_format_diagnose() -> &'static str {
    "Examples:
  kms-launch-doctor diagnose --instance-id i-0abcd1234ef567890 --region eu-west-1 --output text
  kms-launch-doctor diagnose --instance-id i-0abcd1234ef567890 --all-regions --profile prod
  kms-launch-doctor diagnose --instance-id i-0abcd1234ef567890 --since 7d --remediate dry-run
  kms-launch-doctor diagnose --instance-id i-0abcd1234ef567890 --notify-topic arn:aws:sns:eu-west-1:123456789012:alerts

Exit codes: 0 complete, 1 nothing could be done (AWS unreachable, no requested instance found,
a sink failed), 2 usage, 3 partial (an instance not found, evidence that could not be read, a
remediation that failed)."
}

const fn const_format_scan() -> &'static str {
    "Examples:
  kms-launch-doctor scan --region eu-west-1
  kms-launch-doctor scan --all-regions --since 3d --output json > failures.json
  kms-launch-doctor scan --region us-east-1 --region us-west-2 --remediate dry-run
  kms-launch-doctor scan --all-regions --format script > fixes.sh   # review, then: sh fixes.sh
  COLUMNS=120 kms-launch-doctor scan --region eu-west-1 --wide

The table fits COLUMNS, else the terminal, else 80 columns (--wide: everything in full).
Exit codes: 0 complete, 1 no region could be searched, 2 usage, 3 partial (some regions or
evidence could not be read; they are named on stderr)."
}

const fn const_format_preflight() -> &'static str {
    "Examples:
  kms-launch-doctor preflight --principal arn:aws:iam::123456789012:role/scheduler --region eu-west-1
  kms-launch-doctor preflight --principal arn:aws:iam::123456789012:user/ops --tag team=batch --all-regions
  kms-launch-doctor preflight --auto-scaling-groups --region us-east-1 --output json

Exit codes: 0 complete (whatever the verdicts), 1 no region could be checked, 2 usage, 3 partial
(some instances, regions or evidence could not be read: verdict unknown or skipped)."
}

const fn const_format_check() -> &'static str {
    "Examples:
  kms-launch-doctor check-permissions
  kms-launch-doctor check-permissions --all-regions --remediate apply --profile prod

Exit codes: 0 every required call is allowed, 1 a required call is not allowed (the inline
policy that grants exactly the missing ones is printed) or AWS could not be reached, 2 usage."
}

const fn const_format_replay() -> &'static str {
    "Examples:
  kms-launch-doctor replay events/stopped.json --output text
  kms-launch-doctor replay events/sqs-batch.json
  aws events test-event-pattern ... | kms-launch-doctor replay -
  kms-launch-doctor replay events/stopped.json --remediate dry-run

Exit codes: 0 complete (events that are not failed launches are skipped), 1 nothing could be
done (AWS unreachable, no instance found, a sink failed), 2 usage (an unreadable file, or one
that is not JSON: the error names the file, line and column), 3 partial."
}

fn instance_id(s: &str) -> Result<String, String> {
    if crate::core::event::is_instance_id(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{:?} is not an EC2 instance id: expected i- and 8 or 17 hex digits (i-0123456789abcdef0)",
            crate::core::event::echo(s)
        ))
    }
}

fn tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{:?}: expected KEY=VALUE", crate::core::event::echo(s))),
    }
}

fn region(s: &str) -> Result<String, String> {
    if crate::core::event::is_region(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{:?} is not a region name like eu-west-1", crate::core::event::echo(s)))
    }
}

fn endpoint_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(s.to_owned()),
        _ => Err(format!("{:?} is not an http:// or https:// URL", crate::core::event::echo(s))),
    }
}

/// How a run ended, from best to worst; the worst thing that happened decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: everything asked for was done.
    Complete,
    /// 3: the run went on, but some regions, accounts or evidence could not be read, or a
    /// remediation failed.
    Partial,
    /// 1: nothing could be done (AWS unreachable, no requested instance found, a sink failed).
    Failed,
    /// 0: the reader went away (`| head`). A normal end, as in ripgrep, whatever the run found:
    /// it outranks the others, so a closed pipe always ends quietly with 0.
    ReaderGone,
}

impl Exit {
    pub fn code(self) -> ExitCode {
        ExitCode::from(match self {
            Self::Complete | Self::ReaderGone => 0,
            Self::Failed => 1,
            Self::Partial => 3,
        })
    }
}

/// stderr, with `error:` / `warning:` coloured when stderr gets colour.
struct Stderr {
    colour: bool,
}

impl Stderr {
    fn line(&self, label: &str, colour: &str, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if self.colour {
            writeln!(err, "{colour}{label}:\x1b[0m {text}")
        } else {
            writeln!(err, "{label}: {text}")
        };
    }
    fn error(&self, text: &str) {
        self.line("error", "\x1b[1;31m", text);
    }
    fn warning(&self, text: &str) {
        self.line("warning", "\x1b[1;33m", text);
    }
    fn skipped(&self, text: &str) {
        self.line("skipped", "\x1b[2m", text);
    }
}

fn usage(err: &Stderr, msg: &str) -> ExitCode {
    err.error(msg);
    ExitCode::from(2)
}

/// Writes to stdout. A reader that went away (a closed pipe is how `| head` says it has
/// enough, as ripgrep treats it) ends the output quietly with `ReaderGone` (exit 0). Any other
/// write error is `Failed`. `print!` would panic on either.
fn emit(err: &Stderr, text: &str) -> Exit {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Exit::Complete,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::ReaderGone,
        Err(e) => {
            err.error(&format!("cannot write the output: {e}"));
            Exit::Failed
        }
    }
}

fn json(err: &Stderr, report: &Report) -> Exit {
    match serde_json::to_string_pretty(report) {
        Ok(s) => emit(err, &format!("{s}\n")),
        Err(e) => {
            err.error(&format!("could not render the report: {e}"));
            Exit::Failed
        }
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
            home: None,
        },
        guardrails: Guardrails { mode: actions.remediate, ..settings.guardrails },
    })
}

/// With `KLD_CALL_STATS` set: one JSON line on stderr counting the AWS calls made.
fn report_calls(cloud: &AwsCloud) {
    if crate::aws::stats::CallCounter::enabled() {
        eprintln!("{}", crate::aws::stats::line(&cloud.take_call_counts()));
    }
}

/// Sets up logging on stderr: with `--debug`, the tool's and the SDK's debug messages (request
/// signatures excluded); otherwise the tool's warnings and its remediation audit trail, and
/// nothing from the SDK (the credential chain's internals are noise to an operator).
/// `LOG_LEVEL` or `RUST_LOG` still choose, when set and `--debug` is not.
pub fn init_tracing(debug: bool, colour: bool) {
    use tracing_subscriber::EnvFilter;
    const QUIET: &str = "off,kms_launch_doctor=warn,kms_launch_doctor::audit=info";
    const DEBUG: &str = "debug,aws_sigv4=info,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info";
    let filter = if debug {
        EnvFilter::new(DEBUG)
    } else {
        let level = std::env::var("LOG_LEVEL").ok().map(|l| l.to_ascii_lowercase());
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level.as_deref().unwrap_or(QUIET)))
            .unwrap_or_else(|_| EnvFilter::new(QUIET))
    };
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).try_init();
}

/// The worst outcome the report shows: partial when evidence is missing, a region or an
/// instance could not be read, or a remediation failed.
fn report_outcome(report: &Report) -> Exit {
    let partial = report.findings.iter().any(|f| {
        !f.missing_evidence.is_empty() || f.remediations.iter().any(|r| r.status == RemediationStatus::Failed)
    }) || report.skipped.iter().any(|s| s.region.is_some() || s.account.is_some() || is_not_found(s));
    if partial {
        Exit::Partial
    } else {
        Exit::Complete
    }
}

fn is_not_found(s: &Skipped) -> bool {
    s.reason.starts_with("not found in ")
}

/// Warnings on stderr for what a text or table reader would otherwise not see: skipped
/// regions, instances and events, and each kind of evidence that could not be read.
fn warn_about(err: &Stderr, report: &Report) {
    for s in &report.skipped {
        match (&s.region, &s.instance_id) {
            (Some(r), _) if s.account.is_some() => err.warning(&format!(
                "account {} region {r} could not be searched: {}",
                s.account.as_deref().unwrap_or_default(),
                s.reason
            )),
            (None, None) if s.account.is_some() => err.warning(&format!(
                "account {} could not be searched: {}",
                s.account.as_deref().unwrap_or_default(),
                s.reason
            )),
            (Some(r), _) => err.warning(&format!("region {r} could not be searched: {}", s.reason)),
            (None, Some(i)) if is_not_found(s) => err.warning(&format!("{i}: {}", s.reason)),
            (None, Some(i)) => err.skipped(&format!("{i}: {}", s.reason)),
            (None, None) => err.skipped(&s.reason),
        }
    }
    // Each (call, reason) once, with how many findings it touched.
    let mut seen: Vec<(String, String, usize)> = Vec::new();
    for f in &report.findings {
        let mut mine: Vec<(&str, &str)> = Vec::new();
        for m in &f.missing_evidence {
            if !mine.contains(&(m.call.as_str(), m.reason.as_str())) {
                mine.push((m.call.as_str(), m.reason.as_str()));
            }
        }
        for (call, reason) in mine {
            match seen.iter_mut().find(|(c, r, _)| c == call && r == reason) {
                Some(e) => e.2 += 1,
                None => seen.push((call.to_owned(), reason.to_owned(), 1)),
            }
        }
    }
    const MAX: usize = 10;
    for (call, reason, n) in seen.iter().take(MAX) {
        let what = match call.as_str() {
            "cloudtrail:LookupEvents" => " (so the caller is unknown)",
            "iam:SimulatePrincipalPolicy" => " (so the caller's IAM permissions are unknown)",
            _ => "",
        };
        err.warning(&format!(
            "could not read {call}{what} for {n} failed launch{}: {}",
            if *n == 1 { "" } else { "es" },
            crate::core::text::clean(reason)
        ));
    }
    if seen.len() > MAX {
        err.warning(&format!("{} more kinds of evidence could not be read (see --output json)", seen.len() - MAX));
    }
    for f in &report.findings {
        for r in f.remediations.iter().filter(|r| r.status == RemediationStatus::Failed) {
            err.warning(&format!("{}: remediation {} {}", f.instance_id, r.action.as_str(), render::status(r)));
        }
    }
}

/// Loads the AWS configuration for the flags; `Err` is the exit code of a bad profile.
async fn cloud(err: &Stderr, global: &Global, region: Option<&str>) -> Result<AwsCloud, ExitCode> {
    let source = Source {
        region: region.map(str::to_owned),
        profile: global.profile.clone(),
        endpoint_url: global.endpoint_url.clone(),
    };
    if let Err(e) = check_profile(&source).await {
        return Err(usage(err, &e));
    }
    Ok(AwsCloud::new(load(&source).await))
}

/// The regions to work in: `--all-regions` (DescribeRegions), the given ones, or the default.
async fn regions(cloud: &AwsCloud, all: bool, given: Vec<String>) -> Result<Vec<String>, RegionsError> {
    if all {
        return cloud.describe_regions().await.map_err(RegionsError::Aws);
    }
    if !given.is_empty() {
        return Ok(given);
    }
    cloud.default_region().map(|r| vec![r]).ok_or(RegionsError::None)
}

/// [`regions`], or the exit code that ends the command: 1 when AWS could not list them, 2
/// when no region was given and none is configured.
async fn regions_or_exit(
    err: &Stderr,
    cloud: &AwsCloud,
    all: bool,
    given: Vec<String>,
) -> Result<Vec<String>, ExitCode> {
    match regions(cloud, all, given).await {
        Ok(r) => Ok(r),
        Err(RegionsError::Aws(e)) => {
            err.error(&e.to_string());
            Err(Exit::Failed.code())
        }
        Err(RegionsError::None) => Err(usage(err, "no region: pass --region or --all-regions, or set AWS_REGION")),
    }
}

enum RegionsError {
    Aws(CallError),
    None,
}

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
    let global = cli.global.clone();
    match cli.command {
        Command::Diagnose { instance_ids, region, all_regions, format, since, actions } => {
            let opts = Options { lookback: since, slack: chrono::Duration::zero(), ..Options::default() };
            let plan = match plan(&actions, opts) {
                Ok(p) => p,
                Err(e) => return usage(&err, &e),
            };
            let cloud = match cloud(&err, &global, region.as_deref()).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            let single = !all_regions;
            let regions = match regions(&cloud, all_regions, region.into_iter().collect()).await {
                Ok(r) => r,
                Err(RegionsError::Aws(e)) => {
                    err.error(&e.to_string());
                    return Exit::Failed.code();
                }
                Err(RegionsError::None) => {
                    return usage(&err, "no region: pass --region or --all-regions, or set AWS_REGION")
                }
            };
            let now = Utc::now();
            let mut report = if single {
                let region = regions.first().cloned().unwrap_or_default();
                let targets: Vec<Target> = instance_ids.iter().map(|id| Target::new(id.clone(), now)).collect();
                match crate::app::diagnose::diagnose(&cloud, &region, &targets, &plan.options).await {
                    Ok(r) => r,
                    Err(e) => {
                        err.error(&e.to_string());
                        return Exit::Failed.code();
                    }
                }
            } else {
                let (r, unreachable) = diagnose_everywhere(&cloud, &regions, &instance_ids, now, &plan.options).await;
                if r.findings.is_empty() && !unreachable.is_empty() && unreachable.len() == regions.len() {
                    for e in &unreachable {
                        err.error(&e.to_string());
                    }
                    return Exit::Failed.code();
                }
                r
            };
            if single {
                for s in &mut report.skipped {
                    if is_not_found(s) {
                        s.reason.push_str(" (wrong region? try --region or --all-regions)");
                    }
                }
            }
            let mut failures = Vec::new();
            for f in &mut report.findings {
                failures.extend(act(&cloud, &plan, f).await.0);
            }
            report_calls(&cloud);
            finish(&err, &report, &failures, format, global.color)
        }
        Command::Scan {
            regions: given,
            all_regions,
            since,
            format,
            wide,
            remediate,
            concurrency,
            quiet,
            org,
            accounts,
            accounts_file,
            role_name,
            external_id,
        } => {
            let settings = match Settings::from_env() {
                Ok(s) => s,
                Err(e) => return usage(&err, &e),
            };
            let cloud = match cloud(&err, &global, given.first().map(String::as_str)).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            let many = org || !accounts.is_empty() || accounts_file.is_some();
            let opts = Options { concurrency: usize::from(concurrency), ..Options::default() };
            let now = Utc::now();
            let guardrails = Guardrails { mode: remediate, ..settings.guardrails };
            let report = if many {
                let accounts = if org {
                    match cloud.organization_accounts().await {
                        Ok(a) => a,
                        Err(e) => {
                            err.error(&format!("cannot list the organization's accounts: {e}"));
                            return Exit::Failed.code();
                        }
                    }
                } else if let Some(path) = &accounts_file {
                    match std::fs::read_to_string(path)
                        .map_err(|e| e.to_string())
                        .and_then(|t| crate::app::org::accounts_file(&t))
                    {
                        Ok(a) => a,
                        Err(e) => return usage(&err, &format!("{}: {e}", path.display())),
                    }
                } else {
                    accounts
                };
                let region_choice = if all_regions {
                    crate::app::org::Regions::All
                } else if !given.is_empty() {
                    crate::app::org::Regions::Given(given)
                } else {
                    match cloud.default_region() {
                        Some(r) => crate::app::org::Regions::Given(vec![r]),
                        None => return usage(&err, "no region: pass --region or --all-regions, or set AWS_REGION"),
                    }
                };
                let members = crate::app::org::members(
                    &cloud,
                    &accounts,
                    &role_name,
                    external_id.as_deref(),
                    &region_choice,
                    opts.concurrency,
                )
                .await;
                let sizes: Vec<(String, usize)> =
                    members.iter().map(|m| (m.account.clone(), m.regions.as_ref().map_or(0, Vec::len))).collect();
                let progress = crate::app::scan::OrgProgress::new(&sizes, quiet);
                let mut report = crate::app::scan::scan_members(&members, since, now, &opts, &progress).await;
                // Each finding is remediated (when asked) with its own account's role: the
                // role's permissions decide, and a denied write says so in the finding.
                for f in &mut report.findings {
                    if let Some(Ok(member)) = members.iter().find(|m| m.account == f.account).map(|m| m.cloud.as_ref())
                    {
                        crate::app::remediate::remediate(member, member, &guardrails, f).await;
                        let why = format!("the role {role_name} in {} may not make this change", f.account);
                        crate::app::remediate::refuse_denied(f, &why);
                    }
                }
                report
            } else {
                let regions = match regions_or_exit(&err, &cloud, all_regions, given).await {
                    Ok(r) => r,
                    Err(code) => return code,
                };
                let progress = crate::app::scan::Progress::new(regions.len(), quiet);
                let mut report = crate::app::scan::scan(&cloud, &regions, since, now, &opts, &progress).await;
                let plan = Plan { options: opts.clone(), sinks: Sinks::default(), guardrails };
                for f in &mut report.findings {
                    act(&cloud, &plan, f).await;
                }
                report
            };
            report_calls(&cloud);
            let none_searched = report.summary.as_ref().is_some_and(|s| s.regions.is_empty());
            let outcome = if none_searched { Exit::Failed } else { report_outcome(&report) };
            let printed = match format {
                ScanFormat::Json => json(&err, &report),
                ScanFormat::Text if many => emit(&err, &render::scan_text_by_account(&report)),
                ScanFormat::Text => emit(&err, &render::scan_text(&report)),
                ScanFormat::Script => emit(&err, &render::script(&report)),
                ScanFormat::Table => {
                    let style = crate::app::scan::TableStyle {
                        width: crate::cli::term::width(),
                        wide,
                        colour: global.color.stdout(),
                        now,
                        accounts: many,
                    };
                    emit(&err, &crate::app::scan::table(&report, &style))
                }
            };
            if none_searched {
                for s in report.skipped.iter().filter(|s| s.region.is_some() || s.account.is_some()) {
                    let place = [s.account.as_deref(), s.region.as_deref()].into_iter().flatten().collect::<Vec<_>>();
                    err.error(&format!("{}: {}", place.join(" "), s.reason));
                }
            } else if format != ScanFormat::Json {
                warn_about(&err, &report);
            }
            outcome.max(printed).code()
        }
        Command::Preflight {
            principals,
            instance_ids,
            tag,
            auto_scaling_groups,
            regions: given,
            all_regions,
            format,
            remediate,
        } => {
            if principals.is_empty() && !auto_scaling_groups {
                return usage(&err, "nothing to check: pass --principal ARN, or --auto-scaling-groups");
            }
            if let Some(e) = principals.iter().find_map(|p| crate::app::preflight::caller_for(p).err()) {
                return usage(&err, &e);
            }
            let settings = match Settings::from_env() {
                Ok(s) => s,
                Err(e) => return usage(&err, &e),
            };
            let cloud = match cloud(&err, &global, given.first().map(String::as_str)).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            let regions = match regions_or_exit(&err, &cloud, all_regions, given).await {
                Ok(r) => r,
                Err(code) => return code,
            };
            let scope = crate::app::preflight::Scope {
                instances: crate::ports::InstanceScope { ids: instance_ids, tag },
                principals,
                auto_scaling_groups,
            };
            let guardrails = Guardrails { mode: remediate, ..settings.guardrails };
            let report =
                crate::app::preflight::run(&cloud, &regions, &scope, &guardrails, &Options::default()).await.report;
            report_calls(&cloud);
            let none = report.checks.is_empty()
                && report.skipped.iter().filter(|s| s.instance_id.is_none()).count() == regions.len();
            let outcome = if none {
                Exit::Failed
            } else if crate::app::preflight::is_partial(&report) {
                Exit::Partial
            } else {
                Exit::Complete
            };
            let printed = match format {
                PreflightFormat::Json => match serde_json::to_string_pretty(&report) {
                    Ok(s) => emit(&err, &format!("{s}\n")),
                    Err(e) => {
                        err.error(&e.to_string());
                        Exit::Failed
                    }
                },
                PreflightFormat::Table => emit(&err, &crate::app::preflight::table(&report)),
                PreflightFormat::Text => emit(&err, &crate::app::preflight::text(&report)),
            };
            if format != PreflightFormat::Json {
                for s in &report.skipped {
                    err.skipped(&format!(
                        "{}{}: {}",
                        s.instance_id.as_deref().unwrap_or(""),
                        s.region.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
                        s.reason
                    ));
                }
            }
            outcome.max(printed).code()
        }
        Command::CheckPermissions { remediate, all_regions, region } => {
            let cloud = match cloud(&err, &global, region.as_deref()).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            let needs = crate::app::permissions::Needs { all_regions, remediation: remediate };
            match crate::app::permissions::check(&cloud, needs).await {
                Ok(check) => {
                    let printed = emit(&err, &check.text);
                    let outcome = if check.missing_required.is_empty() { Exit::Complete } else { Exit::Failed };
                    outcome.max(printed).code()
                }
                Err(e) => {
                    err.error(&e.to_string());
                    Exit::Failed.code()
                }
            }
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kms-launch-doctor", &mut script);
            emit(&err, &String::from_utf8_lossy(&script)).code()
        }
        Command::Replay { event, region, format, actions } => {
            let (name, bytes) = match read_input(&event) {
                Ok(v) => v,
                Err(e) => return usage(&err, &e),
            };
            let value: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return usage(&err, &json_error(&name, &e)),
            };
            let options = match Settings::from_env() {
                Ok(s) => s.options(),
                Err(e) => return usage(&err, &e),
            };
            let plan = match plan(&actions, options) {
                Ok(p) => p,
                Err(e) => return usage(&err, &e),
            };
            let cloud = match cloud(&err, &global, region.as_deref()).await {
                Ok(c) => c,
                Err(code) => return code,
            };
            let default_region = region.or_else(|| cloud.default_region());
            let outcome =
                handle_events(&cloud, crate::core::event::unpack(&value), default_region.as_deref(), &plan).await;
            report_calls(&cloud);
            match outcome {
                Ok((report, failures)) => finish(&err, &report, &failures, format, global.color),
                Err(e) => {
                    err.error(&e.to_string());
                    Exit::Failed.code()
                }
            }
        }
    }
}

/// `diagnose --all-regions`: DescribeInstances for the ids in every region, then the diagnosis
/// in the regions where they are. Regions that cannot be asked are skipped, with the reason.
async fn diagnose_everywhere(
    cloud: &AwsCloud,
    regions: &[String],
    ids: &[String],
    now: chrono::DateTime<Utc>,
    opts: &Options,
) -> (Report, Vec<CallError>) {
    use futures_util::stream::{self, StreamExt};
    let found: Vec<(String, Result<Vec<String>, CallError>)> = stream::iter(regions.iter().map(|r| async move {
        let res = cloud.describe_instances(r, ids).await.map(|is| is.into_iter().map(|i| i.id).collect());
        (r.clone(), res)
    }))
    .buffered(opts.concurrency.max(1))
    .collect()
    .await;
    let mut report = Report::default();
    let mut errors = Vec::new();
    let mut located: Vec<&String> = Vec::new();
    for (region, res) in found {
        match res {
            Ok(here) if !here.is_empty() => {
                let targets: Vec<Target> = ids
                    .iter()
                    .filter(|id| here.contains(id) && !located.contains(id))
                    .map(|id| Target::new(id.clone(), now))
                    .collect();
                located.extend(ids.iter().filter(|id| here.contains(id)));
                match crate::app::diagnose::diagnose(cloud, &region, &targets, opts).await {
                    Ok(r) => report.merge(r),
                    Err(e) => {
                        report.skipped.push(Skipped {
                            instance_id: None,
                            region: Some(region),
                            reason: e.to_string(),
                            account: None,
                        });
                        errors.push(e);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                report.skipped.push(Skipped {
                    instance_id: None,
                    region: Some(region),
                    reason: e.to_string(),
                    account: None,
                });
                errors.push(e);
            }
        }
    }
    let searched = regions.len() - errors.len();
    for id in ids.iter().filter(|id| !located.contains(id)) {
        report.skipped.push(Skipped {
            instance_id: Some(id.clone()),
            region: None,
            reason: format!("not found in any of the {searched} regions searched"),
            account: None,
        });
    }
    (report, errors)
}

/// Prints a diagnosis (`diagnose`, `replay`) and decides its exit code: failed when a sink
/// failed or no requested instance was found, partial when the report shows something missing.
fn finish(err: &Stderr, report: &Report, failures: &[CallError], format: Format, color: ColorChoice) -> ExitCode {
    let printed = match format {
        Format::Json => json(err, report),
        Format::Text => emit(err, &render::text(report)),
        Format::Table => {
            let style = crate::app::scan::TableStyle {
                width: crate::cli::term::width(),
                wide: false,
                colour: color.stdout(),
                now: Utc::now(),
                accounts: false,
            };
            emit(err, &crate::app::scan::table(report, &style))
        }
    };
    let not_found: Vec<&Skipped> = report.skipped.iter().filter(|s| is_not_found(s)).collect();
    // Every instance asked about (by id or by event) is missing: nothing could be done.
    let none_found = report.findings.is_empty()
        && !not_found.is_empty()
        && report.skipped.iter().filter(|s| s.instance_id.is_some()).all(is_not_found);
    if none_found {
        for s in &not_found {
            err.error(&format!("{}: {}", s.instance_id.as_deref().unwrap_or("-"), s.reason));
        }
    } else if format != Format::Json {
        warn_about(err, report);
    }
    for e in failures {
        err.error(&e.to_string());
    }
    let outcome = if !failures.is_empty() || none_found { Exit::Failed } else { report_outcome(report) };
    outcome.max(printed).code()
}

/// The bytes of `path`, or of stdin for `-`, with the name to use in messages.
fn read_input(path: &std::path::Path) -> Result<(String, Vec<u8>), String> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes).map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(("<stdin>".to_owned(), bytes));
    }
    let name = path.display().to_string();
    std::fs::read(path).map(|b| (name.clone(), b)).map_err(|e| format!("cannot read {name}: {e}"))
}

/// `file:line:column: not valid JSON: what`, as compilers say it.
fn json_error(name: &str, e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text.split(" at line ").next().unwrap_or(&text);
    format!("{name}:{}:{}: not valid JSON: {what}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn json_errors_name_the_file_and_position() {
        let e = serde_json::from_slice::<serde_json::Value>(b"{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        assert_eq!(json_error("events/x.json", &e), "events/x.json:3:3: not valid JSON: key must be a string");
    }

    #[test]
    fn endpoint_urls_must_be_http() {
        assert!(endpoint_url("http://127.0.0.1:5000").is_ok());
        assert!(endpoint_url("https://vpce.example").is_ok());
        assert!(endpoint_url("127.0.0.1:5000").is_err());
        assert!(endpoint_url("http://").is_err());
    }
}
