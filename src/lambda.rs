//! Lambda mode. The function is invoked either directly by EventBridge (one event) or by SQS
//! (a batch whose bodies are EventBridge events; the SAM template's path).
//!
//! CloudTrail delivers records about 5 minutes after a call, with no guarantee, while the
//! state-change event arrives within seconds. From SQS, a record whose launch call is not in
//! CloudTrail yet is returned as a batch item failure with its visibility extended (growing
//! backoff), until the caller is found or `CLOUDTRAIL_WAIT_MINUTES` after SQS first received
//! the message (its `SentTimestamp`) have passed; only then is the finding emitted, as
//! `caller-unknown`. The wait is measured from SQS's own clock, not from the event's `time`,
//! which whoever wrote the event chose: an event claiming to be old must not skip the wait.
//! An event whose time is in the future, or older than the queue keeps messages, cannot have
//! come from the rule through the queue, and is skipped with a reason.
//!
//! A sink can fail after others succeeded. Retrying the whole event would send the finding
//! again to the sinks that have it (SNS and EventBridge cannot tell a repeat), so instead the
//! unsent part of the delivery (its [`Outbox`]) goes back on the queue as a message of its own
//! and the event is done; that message's retries send it to the missing sinks only, and after
//! the queue's `maxReceiveCount` it rests in the dead-letter queue with the payloads in it.
//!
//! Logs are JSON lines on stdout (CloudWatch Logs), one per finding, with stable field names.

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Duration, Utc};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{info_span, Instrument};

use crate::app::{act, handle_event, Plan};
use crate::aws::{load_config, AwsCloud};
use crate::cloud::{CallError, Cloud, Effects, FailureKind, IamWrites, Queue};
use crate::config::Settings;
use crate::deliver::{self, Outbox};
use crate::event::Trigger;
use crate::gather::{self, Target};
use crate::report::Finding;

pub async fn run() -> Result<(), Error> {
    let settings = Settings::from_env().map_err(|e| format!("configuration: {e}"))?;
    let cloud = AwsCloud::new(load_config(None).await).with_trail_rate(settings.cloudtrail_rate);
    let region = cloud.default_region();
    let plan =
        Plan { options: settings.options(), sinks: settings.sinks.clone(), guardrails: settings.guardrails.clone() };
    tracing::info!(cloudtrail_calls_per_second = settings.cloudtrail_rate, remediation = ?plan.guardrails.mode, sns = plan.sinks.topic_arn.is_some(), security_hub = plan.sinks.security_hub, eventbridge = plan.sinks.event_bus.is_some(), "configured");
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
    /// Acted on and logged, but these sinks are still to be reached.
    Unfinished(Box<Outbox>),
}

/// Names the format of the messages the function puts on its own queue; an EventBridge event
/// never has this member, so the two cannot be confused.
const REDELIVERY_TAG: &str = "kms-launch-doctor";
const REDELIVERY_FORMAT: &str = "redelivery/1";

/// SQS's largest message (256 KiB). An outbox is a few kilobytes, bounded by the sinks' own
/// limits; one that would not fit is retried the old way (whole event) rather than lost.
const SQS_MAX_BYTES: usize = 262_144;

/// The body of a redelivery message: what is left of one finding's delivery.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Redelivery {
    #[serde(rename = "kms-launch-doctor")]
    format: String,
    outbox: Outbox,
}

/// A parsed queue message.
#[derive(Debug)]
enum Work {
    Event(Trigger),
    Redelivery(Box<Outbox>),
}

/// Reads one message body. `Ok(None)`: not for us, skip it (retrying would not help).
/// `Err`: a redelivery we cannot read; it is kept (returned as a failure) so that the
/// dead-letter queue ends up holding it, payloads and all.
fn parse_message(id: &str, body: Option<&str>) -> Result<Option<Work>, String> {
    let event = match body.map(serde_json::from_str::<Value>) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            tracing::warn!(message_id = %id, error = %e, "message body is not JSON: skipped");
            return Ok(None);
        }
        None => {
            tracing::warn!(message_id = %id, "message without body: skipped");
            return Ok(None);
        }
    };
    if let Some(format) = event.get(REDELIVERY_TAG) {
        if format.as_str() != Some(REDELIVERY_FORMAT) {
            return Err(format!("redelivery format {format}, this version reads {REDELIVERY_FORMAT:?}"));
        }
        return match serde_json::from_value::<Redelivery>(event) {
            Ok(r) => Ok(Some(Work::Redelivery(Box::new(r.outbox)))),
            Err(e) => Err(format!("unreadable redelivery: {e}")),
        };
    }
    match crate::event::parse(&event) {
        Ok(t) => Ok(Some(Work::Event(t))),
        Err(s) => {
            tracing::info!(message_id = %id, reason = %s.reason, instance_id = ?s.instance_id, "event skipped");
            Ok(None)
        }
    }
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
    let mut response = SqsBatchResponse::default();
    let mut work: Vec<(SqsMessage, String, Trigger)> = Vec::new();
    let retention = settings.queue_retention;
    let mut redeliveries: Vec<(SqsMessage, String, Outbox)> = Vec::new();
    for message in batch.records {
        let Some(id) = message.message_id.clone() else {
            tracing::warn!("SQS record without messageId skipped");
            continue;
        };
        match parse_message(&id, message.body.as_deref()) {
            Ok(Some(Work::Event(t))) => match implausible_time(t.time, now, retention) {
                Some(reason) => {
                    tracing::warn!(message_id = %id, instance_id = %t.instance_id, reason = %reason, "event skipped");
                }
                None => work.push((message, id, t)),
            },
            Ok(Some(Work::Redelivery(outbox))) => redeliveries.push((message, id, *outbox)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "kept for the dead-letter queue");
                response.batch_item_failures.push(failure(&id));
            }
        }
    }

    for (message, id, outbox) in redeliveries {
        if !redeliver(aws, &message, &id, settings, outbox, now).await {
            response.batch_item_failures.push(failure(&id));
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

    // The same failure twice in one batch: the first message carries it, whatever becomes of
    // it (done, deferred or retried); the others are done, so it is acted on once.
    let mut seen = BTreeSet::new();
    for (message, id, t) in work {
        let Some(r) = t.region.clone().or_else(|| region.map(str::to_owned)) else { continue };
        if failed_regions.contains(&r) {
            response.batch_item_failures.push(failure(&id));
            continue;
        }
        let key = (r, t.instance_id.clone());
        let Some(finding) = findings.get_mut(&key) else { continue };
        if !seen.insert(key) {
            continue;
        }
        let first_received = sent_timestamp(&message.attributes).unwrap_or(now);
        match settle(aws, finding, plan, settings, now, first_received, receive_count(&message.attributes)).await {
            Outcome::Done => {}
            Outcome::Unfinished(outbox) => {
                if !requeue(aws, &message, &id, settings, &outbox).await {
                    response.batch_item_failures.push(failure(&id));
                }
            }
            Outcome::Defer(seconds) => {
                defer(aws, &message, &id, settings, seconds).await;
                response.batch_item_failures.push(failure(&id));
            }
        }
    }
    response
}

/// The URL of the queue a message came from.
async fn queue_of<A: Queue>(aws: &A, message: &SqsMessage, settings: &Settings) -> Result<String, CallError> {
    match (&settings.events_queue_url, message.event_source_arn.as_deref()) {
        (Some(u), _) => Ok(u.clone()),
        (None, Some(arn)) => aws.queue_url(arn).await,
        (None, None) => {
            Err(CallError { call: "sqs:GetQueueUrl", kind: FailureKind::Other, message: "no queue URL".into() })
        }
    }
}

/// Extends the message's visibility so it comes back after `seconds`.
async fn defer<A: Queue>(aws: &A, message: &SqsMessage, id: &str, settings: &Settings, seconds: i32) {
    if let Some(handle) = message.receipt_handle.as_deref() {
        // Without the longer visibility the message still comes back, just sooner.
        let extended = match queue_of(aws, message, settings).await {
            Ok(u) => aws.defer(&u, handle, seconds).instrument(info_span!("sqs.ChangeMessageVisibility")).await,
            Err(e) => Err(e),
        };
        if let Err(e) = extended {
            tracing::warn!(message_id = %id, error = %e, "could not extend visibility");
        }
    }
    tracing::info!(message_id = %id, retry_in_seconds = seconds, "launch record not in CloudTrail yet: retrying later");
}

/// Puts the unsent part of a delivery on the queue as a message of its own. True when it is
/// there, so the message in hand is done; false when it could not be, and the message in hand
/// must be retried whole (nothing lost, but sinks already reached may get the finding again).
async fn requeue<A: Queue>(aws: &A, message: &SqsMessage, id: &str, settings: &Settings, outbox: &Outbox) -> bool {
    let body = match serde_json::to_string(&Redelivery { format: REDELIVERY_FORMAT.to_owned(), outbox: outbox.clone() })
    {
        Ok(b) if b.len() <= SQS_MAX_BYTES => b,
        Ok(b) => {
            tracing::warn!(message_id = %id, bytes = b.len(), "unsent delivery too large for SQS: retrying the whole event");
            return false;
        }
        Err(e) => {
            tracing::warn!(message_id = %id, error = %e, "unsent delivery not serializable: retrying the whole event");
            return false;
        }
    };
    let sent = match queue_of(aws, message, settings).await {
        Ok(url) => aws.send(&url, &body, settings.redelivery_delay).instrument(info_span!("sqs.SendMessage")).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(new_id) => {
            tracing::info!(message_id = %id, finding_id = %outbox.finding_id, pending = ?outbox.pending(), requeued_as = %new_id, retry_in_seconds = settings.redelivery_delay, "delivery unfinished: the rest is queued");
            true
        }
        Err(e) => {
            tracing::warn!(message_id = %id, finding_id = %outbox.finding_id, error = %e, "could not queue the unsent delivery: retrying the whole event");
            false
        }
    }
}

/// Sends a queued remainder of a delivery to the sinks it has not reached. True when the
/// message is done: everything sent, or what is left queued anew. False (retry this message)
/// when no sink succeeded, or the smaller remainder could not be queued.
async fn redeliver<A: Effects + Queue>(
    aws: &A,
    message: &SqsMessage,
    id: &str,
    settings: &Settings,
    mut outbox: Outbox,
    now: DateTime<Utc>,
) -> bool {
    let before = outbox.pending().len();
    let (delivered, failures) = deliver::send(aws, &mut outbox, &crate::decide::rfc3339(now)).await;
    let line = json!({
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": if failures.is_empty() { "INFO" } else { "WARN" },
        "target": "kms_launch_doctor::delivery",
        "message": "finding redelivered",
        "message_id": id,
        "finding_id": outbox.finding_id,
        "instance_id": outbox.instance_id,
        "region": outbox.region,
        "delivered": delivered,
        "pending": outbox.pending(),
        "errors": failures.iter().map(|e| format!("{}: {}", e.call, e.message)).collect::<Vec<_>>(),
    });
    println!("{line}");
    if outbox.is_empty() {
        true
    } else if outbox.pending().len() == before {
        // No progress: the same message comes back after its visibility timeout.
        false
    } else {
        requeue(aws, message, id, settings, &outbox).await
    }
}

fn failure(id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id.to_owned();
    f
}

fn receive_count(attributes: &std::collections::HashMap<String, String>) -> u32 {
    attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1)
}

/// When SQS first received the message: `SentTimestamp`, epoch milliseconds, set by SQS (a
/// sender cannot choose it).
fn sent_timestamp(attributes: &std::collections::HashMap<String, String>) -> Option<DateTime<Utc>> {
    let ms: i64 = attributes.get("SentTimestamp")?.trim().parse().ok()?;
    DateTime::from_timestamp_millis(ms)
}

/// How far ahead of our clock an event's time may be (clock skew between AWS's and ours).
const FUTURE_SKEW: Duration = Duration::minutes(5);

/// Why an event's claimed time cannot be right, if it cannot: in the future, or older than
/// the queue keeps a message (so it did not wait in our queue since it happened).
fn implausible_time(time: Option<DateTime<Utc>>, now: DateTime<Utc>, retention: Duration) -> Option<String> {
    let t = time?;
    if t > now + FUTURE_SKEW {
        Some(format!("event time {} is in the future (now {})", crate::decide::rfc3339(t), crate::decide::rfc3339(now)))
    } else if now - t > retention {
        Some(format!(
            "event time {} is older than the queue keeps messages ({} s): not a state change this queue received",
            crate::decide::rfc3339(t),
            retention.num_seconds()
        ))
    } else {
        None
    }
}

/// Backoff for a deferred event: 1, 2, 4, 8 minutes, at most 15 (SQS allows 12 hours), and
/// never much past the deadline.
pub fn backoff(receive_count: u32, until_deadline: Duration) -> i32 {
    let exp = 60i64.saturating_mul(1i64 << receive_count.saturating_sub(1).min(10));
    let capped = exp.min(900).min(until_deadline.num_seconds() + 5).max(30);
    i32::try_from(capped).unwrap_or(900)
}

/// Waits for the launch record while the budget lasts (emitting nothing meanwhile), else
/// acts on the finding and logs it. The budget runs from when SQS first received the event.
async fn settle<A: Cloud + Effects + IamWrites>(
    aws: &A,
    f: &mut Finding,
    plan: &Plan,
    settings: &Settings,
    now: DateTime<Utc>,
    first_received: DateTime<Utc>,
    receives: u32,
) -> Outcome {
    if f.launch.is_none() {
        let deadline = first_received.min(now) + settings.cloudtrail_wait;
        if now < deadline {
            return Outcome::Defer(backoff(receives, deadline - now));
        }
    }
    let (failures, unsent) = act(aws, plan, f).await;
    log_finding(f);
    if failures.is_empty() {
        Outcome::Done
    } else {
        Outcome::Unfinished(Box::new(unsent))
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

    fn outbox() -> Outbox {
        Outbox {
            finding_id: "kld-1".into(),
            instance_id: "i-0abc".into(),
            region: "eu-west-1".into(),
            sns: None,
            security_hub: None,
            eventbridge: Some(deliver::BusEvent {
                bus: "default".into(),
                detail: r#"{"finding":{}}"#.into(),
                resources: vec!["arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc".into()],
            }),
        }
    }

    #[test]
    fn a_redelivery_reads_back_as_the_outbox_it_was_written_from() {
        let body = serde_json::to_string(&Redelivery { format: REDELIVERY_FORMAT.into(), outbox: outbox() }).unwrap();
        assert!(body.starts_with(r#"{"kms-launch-doctor":"redelivery/1","#), "{body}");
        match parse_message("m", Some(&body)) {
            Ok(Some(Work::Redelivery(o))) => {
                assert_eq!(*o, outbox());
                assert_eq!(o.pending(), ["eventbridge"]);
            }
            _ => panic!("not read as a redelivery: {body}"),
        }
    }

    #[test]
    fn an_unreadable_redelivery_is_kept_not_skipped() {
        let newer = r#"{"kms-launch-doctor":"redelivery/2","outbox":{}}"#;
        assert!(parse_message("m", Some(newer)).unwrap_err().contains("redelivery/2"));
        let broken = r#"{"kms-launch-doctor":"redelivery/1","outbox":{"finding_id":1}}"#;
        assert!(parse_message("m", Some(broken)).unwrap_err().starts_with("unreadable redelivery"));
    }

    #[test]
    fn events_and_strangers_are_told_apart_from_redeliveries() {
        let event = include_str!("../events/stopped.json");
        assert!(matches!(parse_message("m", Some(event)), Ok(Some(Work::Event(_)))));
        assert!(matches!(parse_message("m", Some(r#"{"detail-type":"Other"}"#)), Ok(None)));
        assert!(matches!(parse_message("m", Some("{not json")), Ok(None)));
        assert!(matches!(parse_message("m", None), Ok(None)));
    }

    #[test]
    fn the_wait_runs_from_sqs_sent_timestamp_and_implausible_times_are_refused() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().with_timezone(&Utc);
        let mut attrs = std::collections::HashMap::new();
        assert_eq!(sent_timestamp(&attrs), None);
        attrs.insert("SentTimestamp".to_owned(), (now.timestamp_millis() - 60_000).to_string());
        assert_eq!(sent_timestamp(&attrs), Some(now - Duration::minutes(1)));
        attrs.insert("SentTimestamp".to_owned(), "yesterday".to_owned());
        assert_eq!(sent_timestamp(&attrs), None);

        let retention = Duration::days(4);
        assert_eq!(implausible_time(None, now, retention), None);
        assert_eq!(implausible_time(Some(now - Duration::days(3)), now, retention), None);
        assert_eq!(implausible_time(Some(now + Duration::minutes(4)), now, retention), None);
        assert!(implausible_time(Some(now + Duration::hours(1)), now, retention).unwrap().contains("in the future"));
        assert!(implausible_time(Some(now - Duration::days(5)), now, retention)
            .unwrap()
            .contains("older than the queue"));
    }

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
