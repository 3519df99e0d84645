//! The scheduled preflight (the template's `PreflightSchedule`): will-fail findings to the sinks, nothing written.

use super::*;
use crate::app::deliver;
use crate::app::Plan;
use crate::core::outbox::Outbox;
use crate::ports::{CallError, Cloud, Effects, IamWrites};
use crate::settings::Settings;
use chrono::Utc;
use serde_json::{json, Value};

/// An EventBridge scheduled rule's event (the template's `PreflightSchedule`).
pub(super) fn is_schedule(payload: &Value) -> bool {
    payload.get("source").and_then(Value::as_str) == Some("aws.events")
        && payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
}

/// The scheduled preflight: every stopped instance of the function's region for
/// `PREFLIGHT_PRINCIPALS`, and every Auto Scaling group, checked; each launch that will fail
/// goes to the sinks as a warning (`EC2 Launch Will Fail`). Nothing is remediated here: a
/// schedule is not an operator asking for a change. A sink that fails fails the invocation, so
/// EventBridge tries again (Security Hub upserts by Id; SNS may repeat).
pub(super) async fn scheduled_preflight<A: Cloud + Effects + IamWrites>(
    aws: &A,
    region: Option<&str>,
    plan: &Plan,
    settings: &Settings,
    metrics: &mut Metrics,
) -> Result<Value, HandlerError> {
    let Some(region) = region else {
        return Err(HandlerError::Configuration("scheduled preflight: no region configured".to_owned()));
    };
    let scope = crate::app::preflight::Scope {
        instances: crate::ports::InstanceScope::default(),
        principals: settings.preflight_principals.clone(),
        auto_scaling_groups: true,
    };
    let off = crate::app::remediate::Guardrails { mode: crate::app::remediate::Mode::Off, ..plan.guardrails.clone() };
    let ran = crate::app::preflight::run(aws, &[region.to_owned()], &scope, &off, &plan.options).await;
    let now = crate::core::decide::rfc3339(Utc::now());
    let mut outboxes: Vec<Outbox> =
        ran.will_fail.iter().map(|s| crate::app::preflight::outbox(s, &plan.sinks, &now)).collect();
    let results = deliver::send_all(aws, &mut outboxes, &now).await;
    let failures: Vec<CallError> = results.into_iter().flat_map(|(_, errors)| errors).collect();
    metrics.delivery_failures += failures.len() as u64;
    for c in &ran.report.checks {
        let level = if c.verdict == crate::app::preflight::Verdict::WillFail { "WARN" } else { "INFO" };
        log_line(level, "kms_launch_doctor::preflight", "preflight check", json!({ "check": c }));
    }
    HandlerError::sinks("preflight: ", failures)?;
    Ok(serde_json::to_value(ran.report)?)
}
