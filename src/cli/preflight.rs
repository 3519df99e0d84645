//! `preflight`: will these principals be able to start these instances?

use crate::app::gather::Options;
use crate::app::preflight::{caller_for, is_partial, Scope};
use crate::app::remediate::Guardrails;
use crate::cli::args::{Global, PreflightArgs, PreflightFormat};
use crate::cli::output::{emit, CliError, Exit, Stderr};
use crate::cli::setup::{cloud, regions, report_calls, settings};
use crate::ports::InstanceScope;

pub(super) async fn run(err: &Stderr, global: &Global, args: PreflightArgs) -> Result<Exit, CliError> {
    let PreflightArgs {
        principals,
        instance_ids,
        tag,
        auto_scaling_groups,
        regions: given,
        all_regions,
        format,
        remediate,
    } = args;
    if principals.is_empty() && !auto_scaling_groups {
        return Err(CliError::Usage("nothing to check: pass --principal ARN, or --auto-scaling-groups".to_owned()));
    }
    if let Some(e) = principals.iter().find_map(|p| caller_for(p).err()) {
        return Err(CliError::Usage(e));
    }
    let settings = settings()?;
    let cloud = cloud(global, given.first().map(String::as_str)).await?;
    let regions = regions(&cloud, all_regions, given).await?;
    let scope = Scope { instances: InstanceScope { ids: instance_ids, tag }, principals, auto_scaling_groups };
    let guardrails = Guardrails { mode: remediate, ..settings.guardrails };
    let report = crate::app::preflight::run(&cloud, &regions, &scope, &guardrails, &Options::default()).await.report;
    report_calls(&cloud);
    let none =
        report.checks.is_empty() && report.skipped.iter().filter(|s| s.instance_id.is_none()).count() == regions.len();
    let outcome = if none {
        Exit::Failed
    } else if is_partial(&report) {
        Exit::Partial
    } else {
        Exit::Complete
    };
    let printed = match format {
        PreflightFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => emit(err, &format!("{s}\n")),
            Err(e) => {
                err.error(&e.to_string());
                Exit::Failed
            }
        },
        PreflightFormat::Table => emit(err, &crate::cli::table::preflight(&report)),
        PreflightFormat::Text => emit(err, &crate::app::preflight::text(&report)),
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
    Ok(outcome.max(printed))
}
