//! `diagnose`: the instances named, in one region or found across all of them.

use chrono::Utc;

use crate::app::act;
use crate::app::gather::{Options, Target};
use crate::aws::AwsCloud;
use crate::cli::args::DiagnoseArgs;
use crate::cli::args::Global;
use crate::cli::output::{finish, is_not_found, CliError, Exit, Stderr};
use crate::cli::setup::{cloud, plan, regions, report_calls};
use crate::core::report::{Report, Skipped};
use crate::ports::{CallError, Cloud};

pub(super) async fn run(err: &Stderr, global: &Global, args: DiagnoseArgs) -> Result<Exit, CliError> {
    let DiagnoseArgs { instance_ids, region, all_regions, format, since, actions } = args;
    let opts = Options { lookback: since, slack: chrono::Duration::zero(), ..Options::default() };
    let plan = plan(&actions, opts)?;
    let cloud = cloud(global, region.as_deref()).await?;
    let single = !all_regions;
    let regions = regions(&cloud, all_regions, region.into_iter().collect()).await?;
    let now = Utc::now();
    let mut report = if single {
        let region = regions.first().cloned().unwrap_or_default();
        let targets: Vec<Target> = instance_ids.iter().map(|id| Target::new(id.clone(), now)).collect();
        let mut report = crate::app::diagnose::diagnose(&cloud, &region, &targets, &plan.options).await?;
        for s in &mut report.skipped {
            if is_not_found(s) {
                s.reason.push_str(" (wrong region? try --region or --all-regions)");
            }
        }
        report
    } else {
        let (r, unreachable) = everywhere(&cloud, &regions, &instance_ids, now, &plan.options).await;
        if r.findings.is_empty() && !unreachable.is_empty() && unreachable.len() == regions.len() {
            for e in &unreachable {
                err.error(&e.to_string());
            }
            return Ok(Exit::Failed);
        }
        r
    };
    let mut failures = Vec::new();
    for f in &mut report.findings {
        failures.extend(act(&cloud, &plan, f).await.0);
    }
    report_calls(&cloud);
    Ok(finish(err, &report, &failures, format, global.color))
}

/// `diagnose --all-regions`: DescribeInstances for the ids in every region, then the diagnosis
/// in the regions where they are. Regions that cannot be asked are skipped, with the reason.
async fn everywhere(
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
                        report.skipped.push(Skipped::region(region, e.to_string()));
                        errors.push(e);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                report.skipped.push(Skipped::region(region, e.to_string()));
                errors.push(e);
            }
        }
    }
    let searched = regions.len() - errors.len();
    for id in ids.iter().filter(|id| !located.contains(id)) {
        report
            .skipped
            .push(Skipped::instance(id.clone(), format!("not found in any of the {searched} regions searched")));
    }
    (report, errors)
}
