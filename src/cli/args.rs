//! The command line: every flag and command, apart from running them (the commands' modules).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::remediate::Mode;
use crate::cli::term::ColorChoice;
use crate::settings::parse_duration;

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
    #[arg(long = "security-hub", env = "SECURITY_HUB", value_parser = crate::settings::switch, num_args = 0..=1, default_missing_value = "on", default_value = "off", value_name = "on|off")]
    pub security_hub: bool,
    /// Put each finding on this EventBridge bus (detail-type "EC2 Launch Failure Diagnosed").
    #[arg(long = "event-bus", env = "FINDINGS_EVENT_BUS", value_name = "BUS")]
    pub event_bus: Option<String>,
    /// Opt-in remediation: off, dry-run (report what apply would write), apply (see README: both the principal and the key must opt in).
    #[arg(long, env = "REMEDIATION_MODE", value_parser = mode(), ignore_case = true, default_value = "off")]
    pub remediate: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Diagnose stopped or terminated instances by id.
    #[command(after_help = const_format_diagnose())]
    Diagnose(DiagnoseArgs),
    /// Find and diagnose every failed launch in one or more regions.
    #[command(after_help = const_format_scan())]
    Scan(ScanArgs),
    /// Will these principals be able to start these instances (and these Auto Scaling groups
    /// launch)? The checks a diagnosis makes, before the launch.
    #[command(after_help = const_format_preflight())]
    Preflight(PreflightArgs),
    /// Can the current credentials make every call the tool needs? (IAM policy simulator)
    #[command(after_help = const_format_check())]
    CheckPermissions(CheckPermissionsArgs),
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
    Replay(ReplayArgs),
}

/// `diagnose`'s flags.
#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// The instance to diagnose: i- and 8 or 17 hex digits (repeat for several).
    #[arg(long = "instance-id", required = true, value_parser = instance_id, value_name = "ID")]
    pub instance_ids: Vec<String>,
    /// Region of the instances (default: AWS_REGION or the profile's region).
    #[arg(long, value_parser = region, conflicts_with = "all_regions")]
    pub region: Option<String>,
    /// Look for the instances in every region enabled for the account (ec2:DescribeRegions).
    #[arg(long)]
    pub all_regions: bool,
    /// Output format (--output is the same flag, as in the AWS CLI).
    #[arg(long, visible_alias = "output", value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// How far back to search CloudTrail for the launch call (e.g. 30m, 24h, 7d).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: chrono::Duration,
    #[command(flatten)]
    pub actions: ActionArgs,
}

/// `scan`'s flags.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// A region to scan (repeat for several; default: AWS_REGION or the profile's region).
    #[arg(long = "region", value_parser = region, conflicts_with = "all_regions", value_name = "REGION")]
    pub regions: Vec<String>,
    /// Every region enabled for the account (ec2:DescribeRegions).
    #[arg(long)]
    pub all_regions: bool,
    /// How far back to search CloudTrail for the launch calls (CloudTrail keeps 90 days).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: chrono::Duration,
    /// Output format (--output is the same flag, as in the AWS CLI).
    #[arg(long, visible_alias = "output", value_enum, default_value_t = ScanFormat::Table)]
    pub format: ScanFormat,
    /// Table: print every column in full (whole ARNs, nothing cut), however wide.
    #[arg(long)]
    pub wide: bool,
    /// Opt-in remediation: off, dry-run (report what apply would write), apply.
    #[arg(long, env = "REMEDIATION_MODE", value_parser = mode(), ignore_case = true, default_value = "off")]
    pub remediate: Mode,
    /// Regions and calls in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub concurrency: u16,
    /// No progress bar on stderr (it shows only on a terminal anyway); warnings still show.
    #[arg(long, short)]
    pub quiet: bool,
    /// Every ACTIVE account of the organization (organizations:ListAccounts, from the
    /// management account or a delegated administrator), each entered through --role-name.
    #[arg(long, conflicts_with_all = ["accounts", "accounts_file"])]
    pub org: bool,
    /// These accounts (comma-separated or repeated), each entered through --role-name.
    #[arg(long, value_delimiter = ',', value_parser = crate::app::org::account_id, value_name = "ID[,ID...]", conflicts_with = "accounts_file")]
    pub accounts: Vec<String>,
    /// The accounts listed in a file, one id a line (# comments allowed).
    #[arg(long, value_name = "FILE")]
    pub accounts_file: Option<PathBuf>,
    /// The role assumed in each account (arn:<partition>:iam::<id>:role/<name>).
    #[arg(long, default_value = "kms-launch-doctor-scan", value_name = "NAME")]
    pub role_name: String,
    /// The external id the role's trust policy asks for (sts:ExternalId).
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
}

/// `preflight`'s flags.
#[derive(Debug, clap::Args)]
pub struct PreflightArgs {
    /// An IAM user or role ARN whose StartInstances to check (repeat for several).
    #[arg(long = "principal", value_name = "ARN")]
    pub principals: Vec<String>,
    /// Check this instance (repeat for several; default: every stopped instance).
    #[arg(long = "instance-id", value_parser = instance_id, value_name = "ID", conflicts_with = "tag")]
    pub instance_ids: Vec<String>,
    /// Check the stopped instances with this tag.
    #[arg(long, value_parser = tag, value_name = "KEY=VALUE")]
    pub tag: Option<(String, String)>,
    /// Also check each Auto Scaling group's launch for its service-linked role.
    #[arg(long)]
    pub auto_scaling_groups: bool,
    /// A region to check (repeat for several; default: AWS_REGION or the profile's region).
    #[arg(long = "region", value_parser = region, conflicts_with = "all_regions", value_name = "REGION")]
    pub regions: Vec<String>,
    /// Every region enabled for the account (ec2:DescribeRegions).
    #[arg(long)]
    pub all_regions: bool,
    /// Output format (--output is the same flag, as in the AWS CLI).
    #[arg(long, visible_alias = "output", value_enum, default_value_t = PreflightFormat::Table)]
    pub format: PreflightFormat,
    /// Opt-in remediation of what will fail: off, dry-run, apply (the same opt-in rules).
    #[arg(long, env = "REMEDIATION_MODE", value_parser = mode(), ignore_case = true, default_value = "off")]
    pub remediate: Mode,
}

/// `checkpermissions`'s flags.
#[derive(Debug, clap::Args)]
pub struct CheckPermissionsArgs {
    /// Also require the calls of --remediate dry-run (reads) or apply (reads and writes).
    #[arg(long, value_parser = mode(), ignore_case = true, default_value = "off")]
    pub remediate: Mode,
    /// Also require ec2:DescribeRegions, which --all-regions needs.
    #[arg(long)]
    pub all_regions: bool,
    /// Region for the simulation's kms:ViaService (default: AWS_REGION or the profile's region).
    #[arg(long, value_parser = region)]
    pub region: Option<String>,
}

/// `replay`'s flags.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A file holding the event(s), or - for stdin.
    #[arg(value_name = "FILE")]
    pub event: PathBuf,
    /// Region for events that name none (default: AWS_REGION or the profile's region).
    #[arg(long, value_parser = region)]
    pub region: Option<String>,
    /// Output format (--output is the same flag, as in the AWS CLI).
    #[arg(long, visible_alias = "output", value_enum, default_value_t = Format::Json)]
    pub format: Format,
    #[command(flatten)]
    pub actions: ActionArgs,
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

pub(super) fn instance_id(s: &str) -> Result<String, String> {
    if crate::core::event::is_instance_id(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{:?} is not an EC2 instance id: expected i- and 8 or 17 hex digits (i-0123456789abcdef0)",
            crate::core::event::echo(s)
        ))
    }
}

pub(super) fn tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{:?}: expected KEY=VALUE", crate::core::event::echo(s))),
    }
}

pub(super) fn region(s: &str) -> Result<String, String> {
    if crate::core::event::is_region(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{:?} is not a region name like eu-west-1", crate::core::event::echo(s)))
    }
}

pub(super) fn endpoint_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(s.to_owned()),
        _ => Err(format!("{:?} is not an http:// or https:// URL", crate::core::event::echo(s))),
    }
}

/// `--remediate`: the values `--help` and the shell completions offer, any case, `dryrun` too;
/// read by the same parser as `REMEDIATION_MODE` ([`Mode::parse`]), so both accept the same.
fn mode() -> impl clap::builder::TypedValueParser<Value = Mode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("off"),
        PossibleValue::new("dry-run").alias("dryrun"),
        PossibleValue::new("apply"),
    ])
    .map(|s| Mode::parse(&s).unwrap_or_default())
}
