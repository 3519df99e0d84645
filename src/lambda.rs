//! Lambda mode. The function is invoked either directly by EventBridge (one event) or by SQS
//! (a batch whose bodies are EventBridge events; the SAM template's path).
//!
//! CloudTrail delivers records about 5 minutes after a call, with no guarantee, while the
//! state-change event arrives within seconds. From SQS, a record whose launch call is not in
//! CloudTrail yet is returned as a batch item failure with its visibility extended (growing
//! backoff), until the caller is found or `CLOUDTRAIL_WAIT_MINUTES` after the state change
//! have passed; only then is the finding emitted, as `caller-unknown`. So no event is lost and
//! a failure yields one finding, not a premature one and a later one.
//!
//! Logs are JSON lines on stdout (CloudWatch Logs), one per finding, with stable field names.

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Duration, Utc};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

use crate::app::{act, handle_event, Plan};
use crate::aws::{load_config, AwsCloud};
use crate::cloud::{Cloud, Effects, IamWrites, Queue};
use crate::config::Settings;
use crate::event::Trigger;
use crate::gather::{self, Target};
use crate::report::Finding;

pub async fn run() -> Result<(), Error> {
    let settings = Settings::from_env().map_err(|e| format!("configuration: {e}"))?;
    let cloud = AwsCloud::new(load_config(None).await);
    let region = cloud.default_region();
    let plan =
        Plan { options: settings.options(), sinks: settings.sinks.clone(), guardrails: settings.guardrails.clone() };
    tracing::info!(remediation = ?plan.guardrails.mode, sns = plan.sinks.topic_arn.is_some(), security_hub = plan.sinks.security_hub, eventbridge = plan.sinks.event_bus.is_some(), "configured");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (cloud, region, plan, settings) = (cloud.clone(), region.clone(), plan.clone(), settings.clone());
        async move {
            let result = handle(&cloud, event.payload, region.as_deref(), &plan, &settings, Utc::now()).await;
            if crate::stats::CallCounter::enabled() {
                let calls: Value = serde_json::from_str(&crate::stats::line(&cloud.take_call_counts())).unwrap_or_default();
                println!("{}", json!({"level": "INFO", "target": "kms_launch_doctor::stats", "message": "api calls", "stats": calls}));
            }
            result
        }
    }))
    .await
}

/// One invocation: an SQS batch, or a direct EventBridge event.
pub async fn handle<A: Cloud + Effects + IamWrites + Queue>(
    aws: &A,
    payload: Value,
    region: Option<&str>,
    plan: &Plan,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Value, Error> {
    if is_sqs_batch(&payload) {
        let batch: SqsEvent = serde_json::from_value(payload).map_err(|e| format!("malformed SQS batch: {e}"))?;
        let response = handle_batch(aws, batch, region, plan, settings, now).await;
        return Ok(serde_json::to_value(response)?);
    }
    let (report, failures) = handle_event(aws, &payload, region, plan).await?;
    for f in &report.findings {
        log_finding(f);
    }
    if let Some(first) = failures.first() {
        // Fail the invocation so EventBridge retries; Security Hub upserts by Id, so a retry
        // does not add a second finding there.
        return Err(format!("{} sink(s) failed; first: {first}", failures.len()).into());
    }
    Ok(serde_json::to_value(report)?)
}

fn is_sqs_batch(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|m| m.get("eventSource").and_then(Value::as_str) == Some("aws:sqs")))
}

/// What to do with one queued event.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done,
    /// Not yet: retry after this many seconds.
    Defer(i32),
    /// Failed: let SQS retry it at its own pace (and dead-letter it eventually).
    Retry,
}

async fn handle_batch<A: Cloud + Effects + IamWrites + Queue>(
    aws: &A,
    batch: SqsEvent,
    region: Option<&str>,
    plan: &Plan,
    settings: &Settings,
    now: DateTime<Utc>,
) -> SqsBatchResponse {
    // Parse every message; those we do not handle are done (retrying would not help).
    let mut work: Vec<(SqsMessage, String, Trigger)> = Vec::new();
    for message in batch.records {
        let Some(id) = message.message_id.clone() else {
            tracing::warn!("SQS record without messageId skipped");
            continue;
        };
        let event = match message.body.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                tracing::warn!(message_id = %id, error = %e, "message body is not JSON: skipped");
                continue;
            }
            None => {
                tracing::warn!(message_id = %id, "message without body: skipped");
                continue;
            }
        };
        match crate::event::parse(&event) {
            Ok(t) => work.push((message, id, t)),
            Err(s) => {
                tracing::info!(message_id = %id, reason = %s.reason, instance_id = ?s.instance_id, "event skipped")
            }
        }
    }

    // One diagnosis per region for the whole batch: keys, CloudTrail pages and simulations
    // are shared between its events (a storm of failures costs a handful of calls).
    let mut by_region: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    for (_, id, t) in &work {
        let Some(r) = t.region.as_deref().or(region) else {
            tracing::warn!(message_id = %id, "event names no region and none is configured: skipped");
            continue;
        };
        by_region
            .entry(r.to_owned())
            .or_default()
            .push(Target { instance_id: t.instance_id.clone(), observed_at: t.time.unwrap_or(now) });
    }
    let mut findings: BTreeMap<(String, String), Finding> = BTreeMap::new();
    let mut failed_regions = BTreeSet::new();
    for (r, targets) in &by_region {
        match gather::diagnose(aws, r, targets, &plan.options).await {
            Ok(report) => {
                for s in &report.skipped {
                    tracing::info!(reason = %s.reason, instance_id = ?s.instance_id, "instance skipped");
                }
                for f in report.findings {
                    findings.insert((r.clone(), f.instance_id.clone()), f);
                }
            }
            Err(e) => {
                tracing::error!(region = %r, error = %e, "diagnosis failed: will retry");
                failed_regions.insert(r.clone());
            }
        }
    }

    let mut response = SqsBatchResponse::default();
    let mut emitted = BTreeSet::new();
    for (message, id, t) in work {
        let Some(r) = t.region.clone().or_else(|| region.map(str::to_owned)) else { continue };
        if failed_regions.contains(&r) {
            response.batch_item_failures.push(failure(&id));
            continue;
        }
        let key = (r, t.instance_id.clone());
        let Some(finding) = findings.get_mut(&key) else { continue };
        // The same failure twice in one batch: one finding.
        if emitted.contains(&key) {
            continue;
        }
        match settle(aws, finding, plan, settings, now, receive_count(&message.attributes)).await {
            Outcome::Done => {
                emitted.insert(key);
            }
            Outcome::Retry => response.batch_item_failures.push(failure(&id)),
            Outcome::Defer(seconds) => {
                defer(aws, &message, &id, settings, seconds).await;
                response.batch_item_failures.push(failure(&id));
            }
        }
    }
    response
}

/// Extends the message's visibility so it comes back after `seconds`.
async fn defer<A: Queue>(aws: &A, message: &SqsMessage, id: &str, settings: &Settings, seconds: i32) {
    if let Some(handle) = message.receipt_handle.as_deref() {
        let url = match (&settings.events_queue_url, message.event_source_arn.as_deref()) {
            (Some(u), _) => Ok(u.clone()),
            (None, Some(arn)) => aws.queue_url(arn).await,
            (None, None) => Err(crate::cloud::CallError {
                call: "sqs:GetQueueUrl",
                kind: crate::cloud::FailureKind::Other,
                message: "no queue URL".into(),
            }),
        };
        // Without the longer visibility the message still comes back, just sooner.
        if let Err(e) = match url {
            Ok(u) => aws.defer(&u, handle, seconds).await,
            Err(e) => Err(e),
        } {
            tracing::warn!(message_id = %id, error = %e, "could not extend visibility");
        }
    }
    tracing::info!(message_id = %id, retry_in_seconds = seconds, "launch record not in CloudTrail yet: retrying later");
}

fn failure(id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id.to_owned();
    f
}

fn receive_count(attributes: &std::collections::HashMap<String, String>) -> u32 {
    attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1)
}

/// Backoff for a deferred event: 1, 2, 4, 8 minutes, at most 15 (SQS allows 12 hours), and
/// never much past the deadline.
pub fn backoff(receive_count: u32, until_deadline: Duration) -> i32 {
    let exp = 60i64.saturating_mul(1i64 << receive_count.saturating_sub(1).min(10));
    let capped = exp.min(900).min(until_deadline.num_seconds() + 5).max(30);
    i32::try_from(capped).unwrap_or(900)
}

/// Waits for the launch record while the budget lasts (emitting nothing meanwhile), else
/// acts on the finding and logs it.
async fn settle<A: Cloud + Effects + IamWrites>(
    aws: &A,
    f: &mut Finding,
    plan: &Plan,
    settings: &Settings,
    now: DateTime<Utc>,
    receives: u32,
) -> Outcome {
    if f.launch.is_none() {
        let changed = DateTime::parse_from_rfc3339(&f.observed_at).map(|t| t.with_timezone(&Utc)).unwrap_or(now);
        let deadline = changed + settings.cloudtrail_wait;
        if now < deadline {
            return Outcome::Defer(backoff(receives, deadline - now));
        }
    }
    let failed = !act(aws, plan, f).await.is_empty();
    log_finding(f);
    if failed {
        Outcome::Retry
    } else {
        Outcome::Done
    }
}

/// One JSON line per finding, with stable field names.
pub fn log_finding(f: &Finding) {
    let line = json!({
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": "INFO",
        "target": "kms_launch_doctor::finding",
        "message": "finding",
        "finding": f,
    });
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_respects_the_deadline() {
        let far = Duration::hours(1);
        assert_eq!(backoff(1, far), 60);
        assert_eq!(backoff(2, far), 120);
        assert_eq!(backoff(4, far), 480);
        assert_eq!(backoff(9, far), 900);
        assert_eq!(backoff(u32::MAX, far), 900);
        assert_eq!(backoff(3, Duration::seconds(100)), 105);
        assert_eq!(backoff(3, Duration::seconds(1)), 30);
    }
}
