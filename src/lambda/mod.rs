//! Lambda mode. The function is invoked either directly by EventBridge (one event) or by SQS
//! (a batch whose bodies are EventBridge events; the SAM template's path).
//!
//! CloudTrail delivers records about 5 minutes after a call (some much later), while the
//! state-change event arrives within seconds. From SQS, an event whose launch call is not in
//! CloudTrail yet is put back on the queue with what this look learned (a `deferred/1`
//! message) and looked at again every 30 s, until the caller is found or
//! `CLOUDTRAIL_WAIT_MINUTES` after SQS first received the message (its `SentTimestamp`) have
//! passed; only then is the finding emitted, as `caller-unknown`. A failure whose answer no
//! caller can change (a disabled key, one pending deletion or without key material) is
//! reported at the first look and updated, under the same finding `Id`, when its caller
//! appears. The wait is measured from SQS's own clock, not from the event's `time`, which
//! whoever wrote the event chose: an event claiming to be old must not skip the wait.
//! An event whose time is in the future, or older than the queue keeps messages, cannot have
//! come from the rule through the queue, and is skipped with a reason. A `running` event
//! resolves the instance's open findings (see [`crate::app::resolve`]).
//!
//! A sink can fail after others succeeded. Retrying the whole event would send the finding
//! again to the sinks that have it (SNS and EventBridge cannot tell a repeat), so instead the
//! unsent part of the delivery (its [`Outbox`]) goes back on the queue as a message of its own
//! and the event is done; that message's retries send it to the missing sinks only, and after
//! the queue's `maxReceiveCount` it rests in the dead-letter queue with the payloads in it.
//!
//! Logs are JSON lines on stdout (CloudWatch Logs), one per finding, with stable field names.
//!
//! May import: everything but `cli` and the in-memory adapter; the layering is checked by
//! `tests/architecture.rs`.

mod batch;
#[cfg(test)]
mod batch_tests;
mod error;
mod log;
#[cfg(test)]
mod look_tests;
mod looks;
mod messages;
mod requeue;
mod running;
mod schedule;
#[cfg(test)]
mod tests;

use batch::*;
use log::*;
use looks::*;
use messages::*;
use requeue::*;
use running::*;
use schedule::*;

use crate::app::{handle_events, Plan};
use crate::aws::{load_config, AwsCloud};
use crate::ports::{Cloud, Effects, IamWrites, Queue};
use crate::settings::Settings;
use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{DateTime, Duration, Utc};
use lambda_runtime::{service_fn, Error, LambdaEvent};

pub use error::HandlerError;
use serde_json::Value;
use std::collections::BTreeMap;

pub async fn run() -> Result<(), Error> {
    let settings = Settings::from_env().map_err(|e| HandlerError::Configuration(format!("configuration: {e}")))?;
    let cloud = AwsCloud::new(load_config(None).await)
        .with_trail_rate(settings.cloudtrail_rate)
        .with_spoke_role(settings.spoke_role_name.clone());
    let region = cloud.default_region();
    let mut plan =
        Plan { options: settings.options(), sinks: settings.sinks.clone(), guardrails: settings.guardrails.clone() };
    if settings.spoke_role_name.is_some() {
        // Hub topology: every finding is delivered in the hub's account and region.
        let account = cloud
            .own_account()
            .await
            .map_err(|e| HandlerError::Configuration(format!("hub topology: the hub's account: {e}")))?;
        let home_region = region.clone().ok_or("hub topology: no region configured")?;
        plan.sinks.home = Some(crate::core::outbox::Home { account, region: home_region });
    }
    tracing::info!(cloudtrail_calls_per_second = settings.cloudtrail_rate, remediation = ?plan.guardrails.mode, sns = plan.sinks.topic_arn.is_some(), security_hub = plan.sinks.security_hub, eventbridge = plan.sinks.event_bus.is_some(), "configured");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (cloud, region, plan, settings) = (cloud.clone(), region.clone(), plan.clone(), settings.clone());
        async move {
            // Stop starting work a margin before the invocation's deadline: the rest goes back
            // to the queue as batch item failures instead of being cut off by the timeout.
            let now = Utc::now();
            let left_ms =
                i64::try_from(event.context.deadline).unwrap_or(i64::MAX).saturating_sub(now.timestamp_millis());
            let stop_at = u64::try_from(left_ms)
                .ok()
                .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms))
                .and_then(|d| d.checked_sub(settings.deadline_margin));
            let stop_at = stop_at.or_else(|| (left_ms <= 0).then(std::time::Instant::now));
            let mut metrics = Metrics::default();
            let result = handle(
                &cloud,
                event.payload,
                Invocation { region: region.as_deref(), plan: &plan, settings: &settings, now, stop_at },
                &mut metrics,
            )
            .await;
            let calls = crate::aws::stats::CallCounter::enabled().then(|| cloud.take_call_counts());
            invocation_end(&metrics, cloud.take_trail_throttles(), calls.as_ref());
            result
        }
    }))
    .await
}

/// What one invocation works with besides its payload: where it runs, what it does, and until
/// when.
#[derive(Clone, Copy)]
pub struct Invocation<'a> {
    /// The function's own region: for events that name none.
    pub region: Option<&'a str>,
    pub plan: &'a Plan,
    pub settings: &'a Settings,
    /// The invocation's clock, read once.
    pub now: DateTime<Utc>,
    /// When to stop starting work: the deadline less the safety margin.
    pub stop_at: Option<std::time::Instant>,
}

/// One invocation: an SQS batch, or a direct EventBridge event.
pub async fn handle<A: Cloud + Effects + IamWrites + Queue>(
    aws: &A,
    payload: Value,
    inv: Invocation<'_>,
    metrics: &mut Metrics,
) -> Result<Value, HandlerError> {
    let Invocation { region, plan, settings, .. } = inv;
    if is_schedule(&payload) {
        return scheduled_preflight(aws, region, plan, settings, metrics).await;
    }
    if is_sqs_batch(&payload) {
        let batch: SqsEvent =
            serde_json::from_value(payload).map_err(|e| HandlerError::MalformedBatch(e.to_string()))?;
        let response = handle_batch(aws, batch, inv, metrics).await;
        return Ok(serde_json::to_value(response)?);
    }
    let (report, failures) = handle_events(aws, vec![Ok(payload)], region, plan).await?;
    for f in &report.findings {
        log_finding(f);
    }
    // Fails the invocation so that EventBridge retries.
    HandlerError::sinks("", failures)?;
    Ok(serde_json::to_value(report)?)
}

fn is_sqs_batch(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|m| m.get("eventSource").and_then(Value::as_str) == Some("aws:sqs")))
}

const REDELIVERY_FORMAT: &str = "redelivery/1";

const DEFERRED_FORMAT: &str = "deferred/1";

/// Account-regions diagnosed at once in a batch (each paces its own CloudTrail lookups).
const PLACE_CONCURRENCY: usize = 8;

/// Time kept after CloudTrail paging to remediate and deliver what it found.
const SETTLE_RESERVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Findings remediated at once (their deliveries then go out together).
const SETTLE_CONCURRENCY: usize = 4;

/// What an invocation did, for the metrics line.
#[derive(Debug, Default)]
pub struct Metrics {
    pub findings_by_cause: BTreeMap<String, u64>,
    pub deferrals: u64,
    pub delivery_failures: u64,
    /// Findings archived because their instance runs.
    pub resolved: u64,
    pub seconds_to_finding: Vec<f64>,
}

const METRIC_NAMESPACE: &str = "KmsLaunchDoctor";

/// How far ahead of our clock an event's time may be (clock skew between AWS's and ours).
const FUTURE_SKEW: Duration = Duration::minutes(5);
