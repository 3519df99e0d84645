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

/// Diagnoses several events at once (`replay` of a list or an SQS event), as the Lambda does a
/// batch: events are grouped by region, an instance named twice is diagnosed once (at its
/// latest state change), and each finding is acted on. A region whose DescribeInstances
/// fails is skipped with the reason while the others go on; only when every region fails is it
/// an error.
pub async fn handle_events<A: Cloud + Effects + IamWrites>(
    aws: &A,
    events: Vec<Result<Value, crate::report::Skipped>>,
    default_region: Option<&str>,
    plan: &Plan,
) -> Result<(Report, Vec<CallError>), CallError> {
    use std::collections::BTreeMap;
    let mut report = Report::default();
    let mut by_region: BTreeMap<String, BTreeMap<String, chrono::DateTime<Utc>>> = BTreeMap::new();
    for e in events {
        let trigger = match e.and_then(|v| event::parse(&v)) {
            Ok(t) => t,
            Err(skipped) => {
                report.skipped.push(skipped);
                continue;
            }
        };
        let Some(region) = trigger.region.clone().or_else(|| default_region.map(str::to_owned)) else {
            report.skipped.push(crate::report::Skipped {
                instance_id: Some(trigger.instance_id),
                region: None,
                reason: "the event names no region and none is configured".to_owned(),
            });
            continue;
        };
        let time = trigger.time.unwrap_or_else(Utc::now);
        let latest = by_region.entry(region).or_default().entry(trigger.instance_id).or_insert(time);
        *latest = (*latest).max(time);
    }
    let regions = by_region.len();
    let mut errors = Vec::new();
    for (region, instances) in by_region {
        let targets: Vec<Target> =
            instances.into_iter().map(|(instance_id, observed_at)| Target::new(instance_id, observed_at)).collect();
        match gather::diagnose(aws, &region, &targets, &plan.options).await {
            Ok(r) => report.merge(r),
            Err(e) => {
                report.skipped.push(crate::report::Skipped {
                    instance_id: None,
                    region: Some(region.clone()),
                    reason: e.to_string(),
                });
                errors.push(e);
            }
        }
    }
    if regions > 0 && errors.len() == regions {
        if let Some(first) = errors.into_iter().next() {
            return Err(first);
        }
    }
    let mut failures = Vec::new();
    for f in &mut report.findings {
        failures.extend(act(aws, plan, f).await.0);
    }
    Ok((report, failures))
}
