//! The code path shared by the Lambda handler and the CLI: diagnose, then act (remediate,
//! deliver) on each finding.

use chrono::Utc;
use serde_json::Value;

use crate::cloud::{CallError, Cloud, Effects, IamWrites};
use crate::deliver::{deliver, Outbox, Sinks};
use crate::event;
use crate::gather::{self, Options, Target};
use crate::remediate::{remediate, Guardrails};
use crate::report::{Finding, Report};

/// Everything that decides what a run does besides its input.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub options: Options,
    pub sinks: Sinks,
    pub guardrails: Guardrails,
}

/// Diagnoses one EventBridge event. Events we do not handle become `skipped` entries; only a
/// failed DescribeInstances (nothing could be confirmed) is an error, so Lambda retries it.
pub async fn diagnose_event<C: Cloud>(
    cloud: &C,
    event: &Value,
    default_region: Option<&str>,
    opts: &Options,
) -> Result<Report, CallError> {
    let trigger = match event::parse(event) {
        Ok(t) => t,
        Err(skipped) => {
            tracing::info!(reason = %skipped.reason, instance_id = ?skipped.instance_id, "event skipped");
            return Ok(Report { skipped: vec![skipped], ..Report::default() });
        }
    };
    let Some(region) = trigger.region.as_deref().or(default_region) else {
        return Ok(Report {
            skipped: vec![crate::report::Skipped {
                instance_id: Some(trigger.instance_id),
                region: None,
                reason: "the event names no region and none is configured".to_owned(),
            }],
            ..Report::default()
        });
    };
    let target = Target::new(trigger.instance_id.clone(), trigger.time.unwrap_or_else(Utc::now));
    let report = gather::diagnose(cloud, region, &[target], opts).await?;
    for s in &report.skipped {
        tracing::info!(reason = %s.reason, instance_id = ?s.instance_id, "instance skipped");
    }
    Ok(report)
}

/// Remediates (per the guardrails) and delivers (per the sinks) one finding. Returns the
/// delivery failures and what is left to send (empty unless a sink failed); remediation
/// outcomes are recorded in the finding itself.
pub async fn act<A: Cloud + Effects + IamWrites>(
    aws: &A,
    plan: &Plan,
    finding: &mut Finding,
) -> (Vec<CallError>, Outbox) {
    remediate(aws, aws, &plan.guardrails, finding).await;
    let now = crate::decide::rfc3339(Utc::now());
    deliver(aws, finding, &plan.sinks, &now).await
}

/// Diagnoses an event and acts on its findings: the Lambda path for a direct EventBridge
/// invocation, and `replay`.
pub async fn handle_event<A: Cloud + Effects + IamWrites>(
    aws: &A,
    event: &Value,
    default_region: Option<&str>,
    plan: &Plan,
) -> Result<(Report, Vec<CallError>), CallError> {
    let mut report = diagnose_event(aws, event, default_region, &plan.options).await?;
    let mut failures = Vec::new();
    for f in &mut report.findings {
        failures.extend(act(aws, plan, f).await.0);
    }
    Ok((report, failures))
}
