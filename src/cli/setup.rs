//! What every command sets up the same way: the AWS configuration from the flags, the regions
//! to work in, the plan (sinks, remediation), and the call count on request.

use crate::app::gather::Options;
use crate::app::remediate::Guardrails;
use crate::app::Plan;
use crate::aws::{check_profile, load, AwsCloud, Source};
use crate::cli::args::{ActionArgs, Global};
use crate::cli::output::CliError;
use crate::core::outbox::Sinks;
use crate::ports::Cloud;
use crate::settings::Settings;

/// The environment's settings; an invalid one is a usage error naming the variable.
pub(super) fn settings() -> Result<Settings, CliError> {
    Settings::from_env().map_err(CliError::Usage)
}

/// The run's plan: environment settings, overridden by flags.
pub(super) fn plan(actions: &ActionArgs, options: Options) -> Result<Plan, CliError> {
    let settings = settings()?;
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

/// Loads the AWS configuration for the flags; a profile that does not exist is a usage error.
pub(super) async fn cloud(global: &Global, region: Option<&str>) -> Result<AwsCloud, CliError> {
    let source = Source {
        region: region.map(str::to_owned),
        profile: global.profile.clone(),
        endpoint_url: global.endpoint_url.clone(),
    };
    check_profile(&source).await.map_err(CliError::Usage)?;
    Ok(AwsCloud::new(load(&source).await))
}

/// The regions to work in: `--all-regions` (DescribeRegions), the given ones, or the default.
/// AWS not listing them fails the command; no region at all is a usage error.
pub(super) async fn regions(cloud: &AwsCloud, all: bool, given: Vec<String>) -> Result<Vec<String>, CliError> {
    if all {
        return Ok(cloud.describe_regions().await?);
    }
    if !given.is_empty() {
        return Ok(given);
    }
    cloud.default_region().map(|r| vec![r]).ok_or_else(no_region)
}

pub(super) fn no_region() -> CliError {
    CliError::Usage("no region: pass --region or --all-regions, or set AWS_REGION".to_owned())
}

/// With `KLD_CALL_STATS` set: one JSON line on stderr counting the AWS calls made.
pub(super) fn report_calls(cloud: &AwsCloud) {
    if crate::aws::stats::CallCounter::enabled() {
        eprintln!("{}", crate::aws::stats::line(&cloud.take_call_counts()));
    }
}
