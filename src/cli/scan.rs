//! `scan`: every failed launch in the regions (and accounts) asked for.

use chrono::Utc;

use crate::app::gather::Options;
use crate::app::org::Regions;
use crate::app::remediate::Guardrails;
use crate::app::scan::Member;
use crate::app::{act, Plan};
use crate::aws::AwsCloud;
use crate::cli::args::{Global, ScanArgs, ScanFormat};
use crate::cli::output::{emit, json, report_outcome, warn_about, CliError, Exit, Stderr};
use crate::cli::progress::Progress;
use crate::cli::setup::{cloud, no_region, regions, report_calls, settings};
use crate::cli::table::TableStyle;
use crate::core::outbox::Sinks;
use crate::core::render;
use crate::core::report::Report;
use crate::ports::Cloud;
use futures_util::stream::{self, StreamExt};

pub(super) async fn run(err: &Stderr, global: &Global, args: ScanArgs) -> Result<Exit, CliError> {
    let settings = settings()?;
    let cloud = cloud(global, args.regions.first().map(String::as_str)).await?;
    let many = args.org || !args.accounts.is_empty() || args.accounts_file.is_some();
    let opts = Options { concurrency: usize::from(args.concurrency), ..Options::default() };
    let now = Utc::now();
    let guardrails = Guardrails { mode: args.remediate, ..settings.guardrails };
    let report = if many {
        across_accounts(&cloud, &args, &opts, &guardrails, now).await?
    } else {
        let regions = regions(&cloud, args.all_regions, args.regions.clone()).await?;
        let progress = Progress::regions(regions.len(), args.quiet);
        let mut report = crate::app::scan::scan(&cloud, &regions, args.since, now, &opts, &progress).await;
        progress.finish();
        let plan = Plan { options: opts.clone(), sinks: Sinks::default(), guardrails };
        for f in &mut report.findings {
            act(&cloud, &plan, f).await;
        }
        report
    };
    report_calls(&cloud);
    let none_searched = report.summary.as_ref().is_some_and(|s| s.regions.is_empty());
    let outcome = if none_searched { Exit::Failed } else { report_outcome(&report) };
    let printed = match args.format {
        ScanFormat::Json => json(err, &report),
        ScanFormat::Text if many => emit(err, &render::scan_text_by_account(&report)),
        ScanFormat::Text => emit(err, &render::scan_text(&report)),
        ScanFormat::Script => emit(err, &render::script(&report)),
        ScanFormat::Table => {
            let style = TableStyle {
                width: crate::cli::term::width(),
                wide: args.wide,
                colour: global.color.stdout(),
                now,
                accounts: many,
            };
            emit(err, &crate::cli::table::table(&report, &style))
        }
    };
    if none_searched {
        for s in report.skipped.iter().filter(|s| s.region.is_some() || s.account.is_some()) {
            let place = [s.account.as_deref(), s.region.as_deref()].into_iter().flatten().collect::<Vec<_>>();
            err.error(&format!("{}: {}", place.join(" "), s.reason));
        }
    } else if args.format != ScanFormat::Json {
        warn_about(err, &report);
    }
    Ok(outcome.max(printed))
}

/// `--org`, `--accounts`, `--accounts-file`: each account entered through `--role-name`, its
/// regions scanned under one concurrency bound, and each finding remediated (when asked) with
/// its own account's role.
async fn across_accounts(
    cloud: &AwsCloud,
    args: &ScanArgs,
    opts: &Options,
    guardrails: &Guardrails,
    now: chrono::DateTime<Utc>,
) -> Result<Report, CliError> {
    let accounts = if args.org {
        cloud
            .organization_accounts()
            .await
            .map_err(|e| CliError::Failed(format!("cannot list the organization's accounts: {e}")))?
    } else if let Some(path) = &args.accounts_file {
        std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::app::org::accounts_file(&t))
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
    } else {
        args.accounts.clone()
    };
    let region_choice = if args.all_regions {
        Regions::All
    } else if !args.regions.is_empty() {
        Regions::Given(args.regions.clone())
    } else {
        Regions::Given(vec![cloud.default_region().ok_or_else(no_region)?])
    };
    let members =
        members(cloud, &accounts, &args.role_name, args.external_id.as_deref(), &region_choice, opts.concurrency).await;
    let sizes: Vec<(String, usize)> =
        members.iter().map(|m| (m.account.clone(), m.regions.as_ref().map_or(0, Vec::len))).collect();
    let progress = Progress::accounts(&sizes, args.quiet);
    let mut report = crate::app::scan::scan_members(&members, args.since, now, opts, &progress).await;
    progress.finish();
    // The role's permissions decide, and a denied write says so in the finding.
    for f in &mut report.findings {
        if let Some(Ok(member)) = members.iter().find(|m| m.account == f.account).map(|m| m.cloud.as_ref()) {
            crate::app::remediate::remediate(member, member, guardrails, f).await;
            let why = format!("the role {} in {} may not make this change", args.role_name, f.account);
            crate::app::remediate::refuse_denied(f, &why);
        }
    }
    Ok(report)
}

/// Enters every account (a few at once): its cloud through `role_name`, and the regions to
/// scan there.
async fn members(
    cloud: &AwsCloud,
    accounts: &[String],
    role_name: &str,
    external_id: Option<&str>,
    regions: &Regions,
    concurrency: usize,
) -> Vec<Member<AwsCloud>> {
    let partition = crate::core::arn::partition_of_region(&cloud.default_region().unwrap_or_default());
    let session = match cloud.caller_arn().await {
        Ok(arn) => crate::app::org::session_name(&arn),
        Err(_) => "kms-launch-doctor-scan".to_owned(),
    };
    let session = session.as_str();
    let own = cloud.own_account().await.ok();
    let own = own.as_deref();
    stream::iter(accounts.iter().map(|account| async move {
        let role_arn = format!("arn:{partition}:iam::{account}:role/{role_name}");
        // The caller's own account with its own credentials (the management account, where a
        // StackSet puts no role).
        let entered = if own == Some(account.as_str()) {
            Ok(cloud.clone())
        } else {
            cloud.assume(&role_arn, session, external_id).await.map(|(c, _)| c)
        };
        let member_cloud = entered.map_err(|e| format!("could not assume {role_arn}: {e}"));
        let regions = match (&member_cloud, regions) {
            (Err(e), _) => Err(e.clone()),
            (Ok(_), Regions::Given(list)) => Ok(list.clone()),
            (Ok(c), Regions::All) => {
                c.describe_regions().await.map_err(|e| format!("could not list the regions of {account}: {e}"))
            }
        };
        Member { account: account.clone(), cloud: member_cloud, regions }
    }))
    .buffered(concurrency.max(1))
    .collect()
    .await
}
