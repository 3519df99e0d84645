//! The code path shared by the Lambda handler and the CLI: diagnose, then act (remediate,
//! deliver) on each finding.

use chrono::Utc;
use serde_json::Value;

use crate::app::deliver::deliver;
use crate::app::gather::{self, Evidence, Options, Target};
use crate::app::remediate::{remediate, Guardrails};
use crate::core::decide::decide;
use crate::core::event;
use crate::core::outbox::{Outbox, Sinks};
use crate::core::report::{Finding, Report};
use crate::ports::{CallError, Cloud, Effects, IamWrites};

/// Everything that decides what a run does besides its input.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub options: Options,
    pub sinks: Sinks,
    pub guardrails: Guardrails,
}

/// Diagnoses `targets` in one region: gathers their evidence, then decides. Only a failed
/// DescribeInstances is an error.
pub async fn diagnose<C: Cloud>(
    cloud: &C,
    region: &str,
    targets: &[Target],
    opts: &Options,
) -> Result<Report, CallError> {
    let mut evidence = gather::launches(cloud, region, targets, opts).await?;
    let skipped = std::mem::take(&mut evidence.skipped);
    Ok(Report { findings: conclude(evidence), skipped, ..Report::default() })
}

/// Every failed launch in a region (server-side filters), diagnosed together, CloudTrail
/// searched over the `since` window before `now`.
pub async fn scan_region<C: Cloud>(
    cloud: &C,
    region: &str,
    since: chrono::Duration,
    now: chrono::DateTime<Utc>,
    opts: &Options,
) -> Result<Vec<Finding>, CallError> {
    Ok(conclude(gather::region(cloud, region, since, now, opts).await?))
}

/// Decides each launch's facts. The moment of decision dates the findings: sinks date a
/// finding by it, never by when it is sent.
pub fn conclude(evidence: Evidence) -> Vec<Finding> {
    // Milliseconds: Security Hub ignores an update not dated after what it holds, and two
    // decisions on one failure (the first look, then the caller) can fall in one second.
    let decided = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let Evidence { launches, aliases, .. } = evidence;
    launches
        .into_iter()
        .map(|(facts, window)| {
            let mut finding = decide(&facts);
            for k in &mut finding.keys {
                k.aliases = aliases.get(&k.arn).cloned().unwrap_or_default();
            }
            finding.cloudtrail_window = window;
            finding.decided_at = Some(decided.clone());
            finding
        })
        .collect()
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
    let now = crate::core::decide::rfc3339(Utc::now());
    deliver(aws, finding, &plan.sinks, &now).await
}

/// Diagnoses events and acts on their findings (`replay`, and the Lambda invoked directly by
/// EventBridge), as the Lambda does a batch from SQS: `running` events resolve open findings; events are grouped by region, an instance named twice is diagnosed once (at its
/// latest state change), and each finding is acted on. A region whose DescribeInstances
/// fails is skipped with the reason while the others go on; only when every region fails is it
/// an error.
pub async fn handle_events<A: Cloud + Effects + IamWrites>(
    aws: &A,
    events: Vec<Result<Value, crate::core::report::Skipped>>,
    default_region: Option<&str>,
    plan: &Plan,
) -> Result<(Report, Vec<CallError>), CallError> {
    use std::collections::BTreeMap;
    let mut report = Report::default();
    let mut by_region: BTreeMap<String, BTreeMap<String, chrono::DateTime<Utc>>> = BTreeMap::new();
    let mut running = Vec::new();
    for e in events {
        let trigger = match e.and_then(|v| event::classify(&v)) {
            Ok(event::Change::Ended(t)) => t,
            Ok(event::Change::Running(r)) => {
                running.push(r);
                continue;
            }
            Err(skipped) => {
                report.skipped.push(skipped);
                continue;
            }
        };
        let Some(region) = trigger.region.clone().or_else(|| default_region.map(str::to_owned)) else {
            report.skipped.push(crate::core::report::Skipped::instance(
                trigger.instance_id,
                "the event names no region and none is configured".to_owned(),
            ));
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
        match diagnose(aws, &region, &targets, &plan.options).await {
            Ok(r) => report.merge(r),
            Err(e) => {
                report.skipped.push(crate::core::report::Skipped::region(region.clone(), e.to_string()));
                errors.push(e);
            }
        }
    }
    let mut failures = Vec::new();
    if !plan.sinks.security_hub {
        // Open findings are kept in Security Hub: without it, none is known to resolve.
        report.skipped.extend(running.drain(..).map(|r| {
            crate::core::report::Skipped::instance(
                r.instance_id,
                "state \"running\" resolves open findings, which are kept in Security Hub: it is off",
            )
        }));
    }
    if !running.is_empty() {
        let outcome = crate::app::resolve::resolve(aws, &plan.sinks, &running, default_region, Utc::now()).await;
        for r in outcome.resolved {
            let mut delivered =
                crate::core::report::Delivered { security_hub: Some("archived".to_owned()), ..Default::default() };
            // What the notices reached: a sink still in the outbox was not.
            if r.unsent.sns.is_none() && plan.sinks.topic_arn.is_some() {
                delivered.sns = Some("sent".to_owned());
            }
            if r.unsent.eventbridge.is_none() && plan.sinks.event_bus.is_some() {
                delivered.eventbridge = Some("sent".to_owned());
            }
            failures.extend(r.failures);
            report.resolved.push(crate::core::report::Resolved {
                finding_id: r.finding_id,
                instance_id: r.instance_id,
                region: r.region,
                resolved_at: r.resolved_at,
                delivered,
            });
        }
        failures.extend(outcome.failed.into_values());
    }
    if regions > 0 && errors.len() == regions {
        if let Some(first) = errors.into_iter().next() {
            return Err(first);
        }
    }
    for f in &mut report.findings {
        failures.extend(act(aws, plan, f).await.0);
    }
    Ok((report, failures))
}
