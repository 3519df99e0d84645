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

use std::collections::{BTreeMap, BTreeSet};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{info_span, Instrument};

use crate::app::deliver;
use crate::app::gather::{self, Options, Target};
use crate::app::{handle_events, Plan};
use crate::aws::{load_config, AwsCloud};
use crate::core::event::Trigger;
use crate::core::outbox::Outbox;
use crate::core::report::Finding;
use crate::ports::{CallError, Cloud, Effects, FailureKind, IamWrites, Queue};
use crate::settings::Settings;

pub async fn run() -> Result<(), Error> {
    let settings = Settings::from_env().map_err(|e| format!("configuration: {e}"))?;
    let cloud = AwsCloud::new(load_config(None).await)
        .with_trail_rate(settings.cloudtrail_rate)
        .with_spoke_role(settings.spoke_role_name.clone());
    let region = cloud.default_region();
    let mut plan =
        Plan { options: settings.options(), sinks: settings.sinks.clone(), guardrails: settings.guardrails.clone() };
    if settings.spoke_role_name.is_some() {
        // Hub topology: every finding is delivered in the hub's account and region.
        let account = cloud.own_account().await.map_err(|e| format!("hub topology: the hub's account: {e}"))?;
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
            let left_ms = i64::try_from(event.context.deadline).unwrap_or(i64::MAX).saturating_sub(now.timestamp_millis());
            let stop_at = u64::try_from(left_ms)
                .ok()
                .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms))
                .and_then(|d| d.checked_sub(settings.deadline_margin));
            let stop_at = stop_at.or_else(|| (left_ms <= 0).then(std::time::Instant::now));
            let mut metrics = Metrics::default();
            let result = handle(&cloud, event.payload, region.as_deref(), &plan, &settings, now, stop_at, &mut metrics).await;
            for line in metric_lines(&metrics, cloud.take_trail_throttles(), Utc::now()) {
                println!("{line}");
            }
            if crate::aws::stats::CallCounter::enabled() {
                let calls: Value = serde_json::from_str(&crate::aws::stats::line(&cloud.take_call_counts())).unwrap_or_default();
                println!("{}", json!({"level": "INFO", "target": "kms_launch_doctor::stats", "message": "api calls", "stats": calls}));
            }
            result
        }
    }))
    .await
}

/// One invocation: an SQS batch, or a direct EventBridge event. `stop_at`: when to stop
/// starting work (the deadline less the safety margin).
#[allow(clippy::too_many_arguments)]
pub async fn handle<A: Cloud + Effects + IamWrites + Queue>(
    aws: &A,
    payload: Value,
    region: Option<&str>,
    plan: &Plan,
    settings: &Settings,
    now: DateTime<Utc>,
    stop_at: Option<std::time::Instant>,
    metrics: &mut Metrics,
) -> Result<Value, Error> {
    if is_schedule(&payload) {
        return scheduled_preflight(aws, region, plan, settings, metrics).await;
    }
    if is_sqs_batch(&payload) {
        let batch: SqsEvent = serde_json::from_value(payload).map_err(|e| format!("malformed SQS batch: {e}"))?;
        let response = handle_batch(aws, batch, region, plan, settings, now, stop_at, metrics).await;
        return Ok(serde_json::to_value(response)?);
    }
    let (report, failures) = handle_events(aws, vec![Ok(payload)], region, plan).await?;
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

/// An EventBridge scheduled rule's event (the template's `PreflightSchedule`).
fn is_schedule(payload: &Value) -> bool {
    payload.get("source").and_then(Value::as_str) == Some("aws.events")
        && payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
}

/// The scheduled preflight: every stopped instance of the function's region for
/// `PREFLIGHT_PRINCIPALS`, and every Auto Scaling group, checked; each launch that will fail
/// goes to the sinks as a warning (`EC2 Launch Will Fail`). Nothing is remediated here: a
/// schedule is not an operator asking for a change. A sink that fails fails the invocation, so
/// EventBridge tries again (Security Hub upserts by Id; SNS may repeat).
async fn scheduled_preflight<A: Cloud + Effects + IamWrites>(
    aws: &A,
    region: Option<&str>,
    plan: &Plan,
    settings: &Settings,
    metrics: &mut Metrics,
) -> Result<Value, Error> {
    let Some(region) = region else {
        return Err("scheduled preflight: no region configured".into());
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
    if let Some(first) = failures.first() {
        return Err(format!("preflight: {} sink(s) failed; first: {first}", failures.len()).into());
    }
    Ok(serde_json::to_value(ran.report)?)
}

fn is_sqs_batch(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|m| m.get("eventSource").and_then(Value::as_str) == Some("aws:sqs")))
}

/// Names the format of the messages the function puts on its own queue; an EventBridge event
/// never has this member, so the two cannot be confused.
const REDELIVERY_TAG: &str = "kms-launch-doctor";
const REDELIVERY_FORMAT: &str = "redelivery/1";
const DEFERRED_FORMAT: &str = "deferred/1";

/// SQS's largest message (256 KiB). An outbox is a few kilobytes, bounded by the sinks' own
/// limits; one that would not fit is retried the old way (whole event) rather than lost.
const SQS_MAX_BYTES: usize = 262_144;

/// Account-regions diagnosed at once in a batch (each paces its own CloudTrail lookups).
const PLACE_CONCURRENCY: usize = 8;

/// Time kept after CloudTrail paging to remediate and deliver what it found.
const SETTLE_RESERVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Findings remediated at once (their deliveries then go out together).
const SETTLE_CONCURRENCY: usize = 4;

/// The body of a redelivery message: what is left of one finding's delivery.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Redelivery {
    #[serde(rename = "kms-launch-doctor")]
    format: String,
    outbox: Outbox,
}

/// The body of a deferred event: the event as EventBridge sent it, what the first look learned
/// of the failure (so a later look decides on the same facts, whatever the instance has become
/// since), when SQS first received it, and how many looks it has had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Deferred {
    #[serde(rename = "kms-launch-doctor")]
    format: String,
    event: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<gather::Snapshot>,
    first_received: DateTime<Utc>,
    looks: u32,
    /// The finding already sent for this event at an earlier look (a key state that no caller
    /// could get past): a later look updates that same finding `Id` when the caller appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reported: Option<Reported>,
}

/// A finding sent before the launch record was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reported {
    finding_id: String,
    digest: String,
}

/// A parsed queue message.
#[derive(Debug)]
enum Work {
    Event(Trigger, Value),
    /// An instance reached `running`: its open findings resolve.
    Running(crate::core::event::Running),
    Deferred(Trigger, Box<Deferred>),
    Redelivery(Box<Outbox>),
}

/// Reads one message body. `Ok(None)`: not for us, skip it (retrying would not help).
/// `Err`: a message of ours we cannot read; it is kept (returned as a failure) so that the
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
        return match format.as_str() {
            Some(REDELIVERY_FORMAT) => match serde_json::from_value::<Redelivery>(event) {
                Ok(r) => Ok(Some(Work::Redelivery(Box::new(r.outbox)))),
                Err(e) => Err(format!("unreadable redelivery: {e}")),
            },
            Some(DEFERRED_FORMAT) => {
                let d: Deferred =
                    serde_json::from_value(event).map_err(|e| format!("unreadable deferred event: {e}"))?;
                match crate::core::event::parse(&d.event) {
                    Ok(t) => Ok(Some(Work::Deferred(t, Box::new(d)))),
                    Err(s) => Err(format!("deferred event not readable as an event: {}", s.reason)),
                }
            }
            _ => Err(format!(
                "message format {format}, this version reads {REDELIVERY_FORMAT:?} and {DEFERRED_FORMAT:?}"
            )),
        };
    }
    match crate::core::event::classify(&event) {
        Ok(crate::core::event::Change::Ended(t)) => Ok(Some(Work::Event(t, event))),
        Ok(crate::core::event::Change::Running(r)) => Ok(Some(Work::Running(r))),
        Err(s) => {
            tracing::info!(message_id = %id, reason = %s.reason, instance_id = ?s.instance_id, "event skipped");
            Ok(None)
        }
    }
}

/// Where a batch's events are diagnosed together: (the account the event names, or empty;
/// the region).
type Place = (String, String);

/// One event of the batch, with its clock.
struct Item {
    message: SqsMessage,
    id: String,
    trigger: Trigger,
    /// The event as EventBridge sent it.
    event: Value,
    known: Option<Box<gather::Snapshot>>,
    /// When SQS first received the event (its own clock, not the event's claimed time).
    first_received: DateTime<Utc>,
    /// Looks so far, this one included.
    looks: u32,
    reported: Option<Reported>,
}

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

/// Whether the invocation has reached its stop point (deadline less the safety margin).
fn past(stop_at: Option<std::time::Instant>) -> bool {
    stop_at.is_some_and(|t| std::time::Instant::now() >= t)
}

#[allow(clippy::too_many_arguments)]
async fn handle_batch<A: Cloud + Effects + IamWrites + Queue>(
    aws: &A,
    batch: SqsEvent,
    region: Option<&str>,
    plan: &Plan,
    settings: &Settings,
    now: DateTime<Utc>,
    stop_at: Option<std::time::Instant>,
    metrics: &mut Metrics,
) -> SqsBatchResponse {
    // Parse every message; those we do not handle are done (retrying would not help).
    let mut response = SqsBatchResponse::default();
    let mut items: Vec<Item> = Vec::new();
    let mut redeliveries: Vec<(SqsMessage, String, Outbox)> = Vec::new();
    let mut running: Vec<(SqsMessage, String, crate::core::event::Running)> = Vec::new();
    let retention = settings.queue_retention;
    for message in batch.records {
        let Some(id) = message.message_id.clone() else {
            tracing::warn!("SQS record without messageId skipped");
            continue;
        };
        let received = receive_count(&message.attributes);
        let sent = sent_timestamp(&message.attributes).unwrap_or(now);
        let item = match parse_message(&id, message.body.as_deref()) {
            Ok(Some(Work::Event(trigger, event))) => {
                if let Some(reason) = implausible_time(trigger.time, now, retention) {
                    tracing::warn!(message_id = %id, instance_id = %trigger.instance_id, reason = %reason, "event skipped");
                    continue;
                }
                Item { message, id, trigger, event, known: None, first_received: sent, looks: received, reported: None }
            }
            Ok(Some(Work::Deferred(trigger, d))) => {
                let d = *d;
                Item {
                    message,
                    id,
                    trigger,
                    event: d.event,
                    known: d.snapshot.map(Box::new),
                    first_received: d.first_received.min(now),
                    looks: d.looks.saturating_add(received),
                    reported: d.reported,
                }
            }
            Ok(Some(Work::Redelivery(outbox))) => {
                redeliveries.push((message, id, *outbox));
                continue;
            }
            Ok(Some(Work::Running(r))) => {
                if let Some(reason) = implausible_time(r.time, now, retention) {
                    tracing::warn!(message_id = %id, instance_id = %r.instance_id, reason = %reason, "event skipped");
                    continue;
                }
                running.push((message, id, r));
                continue;
            }
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "kept for the dead-letter queue");
                response.batch_item_failures.push(failure(&id));
                continue;
            }
        };
        items.push(item);
    }

    for (message, id, outbox) in redeliveries {
        if past(stop_at) || !redeliver(aws, &message, &id, settings, outbox, now, metrics).await {
            response.batch_item_failures.push(failure(&id));
        }
    }

    // One diagnosis per account and region for the whole batch: keys, CloudTrail pages and
    // simulations are shared between its events (a storm of failures costs a handful of
    // calls), and one window query serves every event of the account-region. In hub topology
    // another account's facts are gathered through its spoke role.
    let place_of = |item: &Item| -> Option<Place> {
        let r = item.trigger.region.as_deref().or(region)?;
        Some((item.trigger.account.clone().unwrap_or_default(), r.to_owned()))
    };
    let mut by_place: BTreeMap<Place, Vec<Target>> = BTreeMap::new();
    for item in &items {
        let Some(place) = place_of(item) else {
            tracing::warn!(message_id = %item.id, "event names no region and none is configured: skipped");
            continue;
        };
        by_place.entry(place).or_default().push(Target {
            instance_id: item.trigger.instance_id.clone(),
            observed_at: item.trigger.time.unwrap_or(item.first_received),
            known: item.known.clone(),
        });
    }
    // CloudTrail paging stops early enough to settle what it found before the stop point: a
    // third of the time left, at most SETTLE_RESERVE. What it could not search is deferred
    // (a lookup cut short is no evidence of absence), so a busy window never holds back the
    // findings it did reach.
    let trail_stop = stop_at.map(|t| {
        let left = t.saturating_duration_since(std::time::Instant::now());
        t.checked_sub((left / 3).min(SETTLE_RESERVE)).unwrap_or(t)
    });
    let options = Options { deadline: trail_stop, window_threshold: 1, ..plan.options.clone() };
    // Account-regions are diagnosed side by side: each has its own CloudTrail budget, paced
    // per account and region, so a hub's storm across accounts is not served one at a time.
    let diagnosed: Vec<(Place, Option<Vec<Finding>>)> =
        stream::iter(by_place.iter().map(|(place, targets)| {
            let options = &options;
            async move {
                let (account, r) = place;
                if past(stop_at) {
                    tracing::warn!(region = %r, events = targets.len(), "the invocation's deadline is near: returned for a later try");
                    return (place.clone(), None);
                }
                let member = if account.is_empty() { Ok(None) } else { aws.in_account(account).await };
                let member = match member {
                    Ok(m) => m,
                    Err(e) if e.kind == FailureKind::Denied => {
                        // No spoke role there (or it does not trust the hub): retrying cannot
                        // help until someone deploys it, so the events are done, loudly.
                        tracing::warn!(account = %account, region = %r, events = targets.len(), error = %e, "cannot enter the account: its events are skipped (deploy the spoke stack there)");
                        return (place.clone(), Some(Vec::new()));
                    }
                    Err(e) => {
                        tracing::error!(account = %account, region = %r, error = %e, "could not enter the account: will retry");
                        return (place.clone(), None);
                    }
                };
                match crate::app::diagnose::diagnose(member.as_ref().unwrap_or(aws), r, targets, options).await {
                    Ok(report) => {
                        for s in &report.skipped {
                            tracing::info!(reason = %s.reason, instance_id = ?s.instance_id, "instance skipped");
                        }
                        (place.clone(), Some(report.findings))
                    }
                    Err(e) => {
                        tracing::error!(region = %r, error = %e, "diagnosis failed: will retry");
                        (place.clone(), None)
                    }
                }
            }
        }))
        .buffer_unordered(PLACE_CONCURRENCY)
        .collect()
        .await;
    let mut findings: BTreeMap<(Place, String), Finding> = BTreeMap::new();
    let mut failed_places = BTreeSet::new();
    for (place, result) in diagnosed {
        match result {
            Some(fs) => {
                for f in fs {
                    findings.insert((place.clone(), f.instance_id.clone()), f);
                }
            }
            None => {
                failed_places.insert(place);
            }
        }
    }

    // The same failure twice in one batch: the first message carries it, whatever becomes of
    // it (done, deferred or retried); the others are done, so it is acted on once.
    let mut seen = BTreeSet::new();
    let mut to_act: Vec<(Item, Finding)> = Vec::new();
    // Reported now, and looked at again later for the caller: (item, finding, next look).
    let mut early: Vec<(Item, Finding, i32)> = Vec::new();
    for item in items {
        let Some(place) = place_of(&item) else { continue };
        if failed_places.contains(&place) {
            response.batch_item_failures.push(failure(&item.id));
            continue;
        }
        let key = (place, item.trigger.instance_id.clone());
        let Some(finding) = findings.get(&key) else { continue };
        if !seen.insert(key) {
            continue;
        }
        if past(stop_at) {
            response.batch_item_failures.push(failure(&item.id));
            continue;
        }
        let mut finding = finding.clone();
        let mut item = item;
        if let Some(r) = item.reported.clone() {
            // The same failure, told again: an update of the finding already sent, which was
            // made before the caller was known. Only that Id is taken: a message of the queue
            // cannot point the update at another finding.
            let early_id =
                crate::core::decide::finding_id(&finding.account, &finding.region, &finding.instance_id, None);
            if r.finding_id == early_id {
                finding.id = early_id;
            } else {
                tracing::warn!(message_id = %item.id, reported = %r.finding_id, "a deferred event names a finding that is not its own: ignored");
                item.reported = None;
            }
        }
        match next_look(&finding, settings, now, item.first_received) {
            Some(seconds) if item.reported.is_none() && settled_without_caller(&finding) => {
                early.push((item, finding, seconds));
            }
            Some(seconds) => {
                metrics.deferrals += 1;
                if !defer(aws, &item, &finding, settings, seconds, now).await {
                    response.batch_item_failures.push(failure(&item.id));
                }
            }
            None if item.reported.is_some() && finding.launch.is_none() => {
                // Sent at the first look; CloudTrail had nothing to add within the wait.
                tracing::info!(message_id = %item.id, finding_id = %finding.id, instance_id = %item.trigger.instance_id, "reported at the first look; no launch record within the wait: nothing to update");
            }
            None => to_act.push((item, finding)),
        }
    }
    let early_ids: BTreeSet<String> = early.iter().map(|(item, _, _)| item.id.clone()).collect();
    let mut next_looks: BTreeMap<String, i32> = BTreeMap::new();
    for (item, finding, seconds) in early {
        next_looks.insert(item.id.clone(), seconds);
        to_act.push((item, finding));
    }

    // Remediate, a few findings at a time; then deliver them all together, with as few calls
    // as the sinks allow (Security Hub and EventBridge take findings in batches).
    let remediated: Vec<(Item, Finding)> = stream::iter(to_act.into_iter().map(|(item, mut f)| async move {
        crate::app::remediate::remediate_in_account(aws, &plan.guardrails, &mut f).await;
        (item, f)
    }))
    .buffer_unordered(SETTLE_CONCURRENCY)
    .collect()
    .await;
    let sent_at = crate::core::decide::rfc3339(now);
    let over = started_since(aws, &remediated).await;
    let mut outboxes: Vec<Outbox> = remediated
        .iter()
        .map(|(_, f)| {
            let mut o = Outbox::render(f, &plan.sinks, &sent_at);
            if over.contains(&f.instance_id) {
                // Decided on an earlier look's facts, but the instance has run since: the
                // record is kept, born resolved, so it does not (re)open after the `running`
                // event has passed.
                if let Some(a) = &mut o.security_hub {
                    a.record_state = "ARCHIVED".to_owned();
                    a.compliance = Some(crate::core::message::AsffCompliance { status: "PASSED".to_owned() });
                }
                tracing::info!(finding_id = %f.id, instance_id = %f.instance_id, "the instance runs since this failure: its finding is sent resolved");
            }
            o
        })
        .collect();
    let results = deliver::send_all(aws, &mut outboxes, &sent_at).await;
    for (((mut item, mut f), (delivered, failures)), unsent) in remediated.into_iter().zip(results).zip(outboxes) {
        f.delivered = delivered;
        log_finding(&f);
        record(metrics, &f, now, failures.len());
        if !failures.is_empty() && !requeue(aws, &item.message, &item.id, settings, &unsent).await {
            // Retried whole (an early report is then made again, to the same Id).
            response.batch_item_failures.push(failure(&item.id));
            continue;
        }
        if early_ids.contains(&item.id) {
            // Reported before its caller is known: look again for the launch record, carrying
            // the finding's Id so the caller comes as an update of it.
            item.reported = Some(Reported { finding_id: f.id.clone(), digest: crate::core::message::digest(&f) });
            let seconds = next_looks.get(&item.id).copied().unwrap_or(30);
            metrics.deferrals += 1;
            if !defer(aws, &item, &f, settings, seconds, now).await {
                response.batch_item_failures.push(failure(&item.id));
            }
        }
    }
    resolve_running(aws, running, region, plan, settings, now, stop_at, metrics, &mut response).await;
    response
}

/// Of the findings decided on an earlier look's snapshot, the instances that are pending or
/// running now (one DescribeInstances per account and region): their failure is over. A
/// lookup that fails leaves them as they are.
async fn started_since<A: Cloud>(aws: &A, settled: &[(Item, Finding)]) -> BTreeSet<String> {
    let mut by_place: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (item, f) in settled.iter().filter(|(item, _)| item.known.is_some()) {
        let account = item.trigger.account.clone().unwrap_or_default();
        by_place.entry((account, f.region.clone())).or_default().push(f.instance_id.clone());
    }
    let mut out = BTreeSet::new();
    for ((account, region), ids) in by_place {
        let member = if account.is_empty() { Ok(None) } else { aws.in_account(&account).await };
        let Ok(member) = member else { continue };
        let cloud = member.as_ref().unwrap_or(aws);
        match cloud
            .describe_instances(&region, &ids)
            .instrument(info_span!("ec2.DescribeInstances", running_since = true))
            .await
        {
            Ok(instances) => out.extend(
                instances.into_iter().filter(|i| matches!(i.state_name.as_str(), "pending" | "running")).map(|i| i.id),
            ),
            Err(e) => tracing::info!(region = %region, error = %e, "could not tell whether deferred instances run now"),
        }
    }
    out
}

/// Resolves the open findings of the batch's `running` instances, all at once. A message whose
/// lookup or archive failed comes back (batch item failure); one whose notices did not all go
/// out has the rest queued as a redelivery.
#[allow(clippy::too_many_arguments)]
async fn resolve_running<A: Effects + Queue>(
    aws: &A,
    running: Vec<(SqsMessage, String, crate::core::event::Running)>,
    region: Option<&str>,
    plan: &Plan,
    settings: &Settings,
    now: DateTime<Utc>,
    stop_at: Option<std::time::Instant>,
    metrics: &mut Metrics,
    response: &mut SqsBatchResponse,
) {
    if running.is_empty() {
        return;
    }
    if past(stop_at) {
        response.batch_item_failures.extend(running.iter().map(|(_, id, _)| failure(id)));
        return;
    }
    let events: Vec<crate::core::event::Running> = running.iter().map(|(_, _, r)| r.clone()).collect();
    let outcome = crate::app::resolve::resolve(aws, &plan.sinks, &events, region, now).await;
    let mut unsent: BTreeMap<String, Vec<Outbox>> = BTreeMap::new();
    for r in outcome.resolved {
        log_resolution(&r);
        metrics.resolved += 1;
        metrics.delivery_failures += r.failures.len() as u64;
        if !r.unsent.is_empty() {
            unsent.entry(r.instance_id.clone()).or_default().push(r.unsent);
        }
    }
    let mut done = BTreeSet::new();
    for (message, id, r) in running {
        if !done.insert(r.instance_id.clone()) {
            continue;
        }
        if let Some(e) = outcome.failed.get(&r.instance_id) {
            tracing::warn!(message_id = %id, instance_id = %r.instance_id, error = %e, "could not resolve: will retry");
            response.batch_item_failures.push(failure(&id));
            continue;
        }
        for outbox in unsent.remove(&r.instance_id).unwrap_or_default() {
            if !requeue(aws, &message, &id, settings, &outbox).await {
                response.batch_item_failures.push(failure(&id));
                break;
            }
        }
    }
}

/// One JSON line per resolved finding.
fn log_resolution(r: &crate::app::resolve::Resolution) {
    let fields = json!({
        "finding_id": r.finding_id,
        "instance_id": r.instance_id,
        "region": r.region,
        "resolved_at": r.resolved_at,
        "pending": r.unsent.pending(),
        "errors": r.failures.iter().map(|e| format!("{}: {}", e.call, e.message)).collect::<Vec<_>>(),
    });
    log_line("INFO", "kms_launch_doctor::resolve", "finding resolved", fields);
}

/// Counts a settled finding for the metrics line.
fn record(metrics: &mut Metrics, f: &Finding, now: DateTime<Utc>, delivery_failures: usize) {
    let cause = f.causes.first().map(|c| c.code.as_str()).unwrap_or("none").to_owned();
    *metrics.findings_by_cause.entry(cause).or_default() += 1;
    metrics.delivery_failures += delivery_failures as u64;
    if let Ok(observed) = DateTime::parse_from_rfc3339(&f.observed_at) {
        metrics.seconds_to_finding.push((now - observed.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0);
    }
}

/// Lines in CloudWatch Embedded Metric Format (namespace `KmsLaunchDoctor`): CloudWatch makes
/// metrics of them from the function's own log group, no API call or permission needed.
pub fn metric_lines(m: &Metrics, trail_throttles: u64, at: DateTime<Utc>) -> Vec<Value> {
    let ts = at.timestamp_millis();
    let mut metrics = vec![
        json!({"Name": "Deferrals", "Unit": "Count"}),
        json!({"Name": "DeliveryFailures", "Unit": "Count"}),
        json!({"Name": "CloudTrailThrottles", "Unit": "Count"}),
        json!({"Name": "Resolved", "Unit": "Count"}),
    ];
    let mut first = serde_json::Map::new();
    first.insert("Deferrals".into(), json!(m.deferrals));
    first.insert("DeliveryFailures".into(), json!(m.delivery_failures));
    first.insert("CloudTrailThrottles".into(), json!(trail_throttles));
    first.insert("Resolved".into(), json!(m.resolved));
    // EMF takes up to 100 values for a metric; with none, the metric is left out of the line.
    if !m.seconds_to_finding.is_empty() {
        metrics.push(json!({"Name": "SecondsToFinding", "Unit": "Seconds"}));
        first.insert(
            "SecondsToFinding".into(),
            json!(m.seconds_to_finding.iter().take(100).copied().collect::<Vec<f64>>()),
        );
    }
    first.insert(
        "_aws".into(),
        json!({"Timestamp": ts, "CloudWatchMetrics": [{"Namespace": METRIC_NAMESPACE, "Dimensions": [[]], "Metrics": metrics}]}),
    );
    let mut lines = vec![Value::Object(first)];
    for (cause, n) in &m.findings_by_cause {
        lines.push(json!({
            "_aws": {"Timestamp": ts, "CloudWatchMetrics": [{"Namespace": METRIC_NAMESPACE, "Dimensions": [["Cause"]],
                "Metrics": [{"Name": "Findings", "Unit": "Count"}]}]},
            "Cause": cause,
            "Findings": n,
        }));
    }
    lines
}

const METRIC_NAMESPACE: &str = "KmsLaunchDoctor";

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

/// Puts the event back on the queue for a later look, carrying what this look learned, and
/// says whether that worked (the message in hand is then done). If it cannot be sent, the
/// message in hand is kept instead, its visibility extended: nothing is lost either way.
async fn defer<A: Queue>(
    aws: &A,
    item: &Item,
    f: &Finding,
    settings: &Settings,
    seconds: i32,
    now: DateTime<Utc>,
) -> bool {
    let body = Deferred {
        format: DEFERRED_FORMAT.to_owned(),
        event: item.event.clone(),
        snapshot: Some(gather::Snapshot::of(f)),
        first_received: item.first_received,
        looks: item.looks,
        reported: item.reported.clone(),
    };
    let delay = seconds.clamp(0, 900);
    let sent = match (serde_json::to_string(&body), queue_of(aws, &item.message, settings).await) {
        (Ok(b), Ok(url)) if b.len() <= SQS_MAX_BYTES => {
            aws.send(&url, &b, delay).instrument(info_span!("sqs.SendMessage", deferred = true)).await.map(|_| url)
        }
        (Ok(_), Ok(_)) => Err(CallError {
            call: "sqs:SendMessage",
            kind: FailureKind::Other,
            message: "deferred event too large".into(),
        }),
        (Err(e), _) => Err(CallError { call: "sqs:SendMessage", kind: FailureKind::Other, message: e.to_string() }),
        (_, Err(e)) => Err(e),
    };
    let waited = (now - item.first_received).num_seconds();
    match sent {
        Ok(_) => {
            tracing::info!(message_id = %item.id, instance_id = %item.trigger.instance_id, retry_in_seconds = delay, looks = item.looks, waited_seconds = waited, "launch record not in CloudTrail yet: deferred with what is known");
            true
        }
        Err(e) => {
            tracing::warn!(message_id = %item.id, error = %e, "could not queue the deferred event: the message itself comes back");
            if let Some(handle) = item.message.receipt_handle.as_deref() {
                let extended = match queue_of(aws, &item.message, settings).await {
                    Ok(u) => aws.defer(&u, handle, delay).instrument(info_span!("sqs.ChangeMessageVisibility")).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = extended {
                    tracing::warn!(message_id = %item.id, error = %e, "could not extend visibility");
                }
            }
            false
        }
    }
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
    metrics: &mut Metrics,
) -> bool {
    let before = outbox.pending().len();
    let (delivered, failures) = deliver::send(aws, &mut outbox, &crate::core::decide::rfc3339(now)).await;
    metrics.delivery_failures += failures.len() as u64;
    let fields = json!({
        "message_id": id,
        "finding_id": outbox.finding_id,
        "instance_id": outbox.instance_id,
        "region": outbox.region,
        "delivered": delivered,
        "pending": outbox.pending(),
        "errors": failures.iter().map(|e| format!("{}: {}", e.call, e.message)).collect::<Vec<_>>(),
    });
    let level = if failures.is_empty() { "INFO" } else { "WARN" };
    log_line(level, "kms_launch_doctor::delivery", "finding redelivered", fields);
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
        Some(format!(
            "event time {} is in the future (now {})",
            crate::core::decide::rfc3339(t),
            crate::core::decide::rfc3339(now)
        ))
    } else if now - t > retention {
        Some(format!(
            "event time {} is older than the queue keeps messages ({} s): not a state change this queue received",
            crate::core::decide::rfc3339(t),
            retention.num_seconds()
        ))
    } else {
        None
    }
}

/// How long a pending event waits between looks for its launch record. CloudTrail shows most
/// records about 5 minutes after the call and some much later (1 to 15 minutes is common), and
/// an operator wants the alert within a minute of the record showing: a look every 30 s, plus
/// the event source's batching window (at most 20 s in the template) and one look's work, keeps
/// that under 60 s. It is affordable because one window query serves every pending event of the
/// account-region in a batch, and deferred events of one batch come back together: a storm
/// costs a few LookupEvents a minute, not one per event (`make bench`, the schedule model).
const LOOK_INTERVAL: Duration = Duration::seconds(30);

/// When to look again for the launch record, or `None` to settle now. The wait budget runs
/// from when SQS first received the event; until it ends the event is looked at every
/// [`LOOK_INTERVAL`], from its first receipt on. A lookup that failed (throttled, cut off by
/// the deadline) is no evidence of absence: it is tried again, up to twice the budget, rather
/// than reported as `caller-unknown`.
fn next_look(f: &Finding, settings: &Settings, now: DateTime<Utc>, first_received: DateTime<Utc>) -> Option<i32> {
    if f.launch.is_some() {
        return None;
    }
    let deadline = first_received + settings.cloudtrail_wait;
    let hard_limit = first_received + settings.cloudtrail_wait * 2;
    let lookup_failed = f.missing_evidence.iter().any(|m| m.call == "cloudtrail:LookupEvents");
    let end = if now < deadline {
        deadline
    } else if lookup_failed && now < hard_limit {
        hard_limit
    } else {
        return None;
    };
    // The last look lands on the budget's end, not a whole interval past it.
    let wait = LOOK_INTERVAL.min(end - now).num_seconds().max(1);
    i32::try_from(wait).ok()
}

/// Whether a finding's answer can no longer change with CloudTrail: every cause is the state of
/// a key (disabled, pending deletion, without key material, its key store unavailable), which no
/// caller could have got past. Such a finding is reported at the first look; the caller is
/// added when its record appears, as an update of the same finding `Id`.
fn settled_without_caller(f: &Finding) -> bool {
    use crate::core::report::CauseCode as C;
    !f.causes.is_empty()
        && f.causes
            .iter()
            .all(|c| matches!(c.code, C::KeyDisabled | C::KeyPendingDeletion | C::KeyPendingImport | C::KeyUnavailable))
}

/// One JSON line per finding, with stable field names.
pub fn log_finding(f: &Finding) {
    log_line("INFO", "kms_launch_doctor::finding", "finding", json!({ "finding": f }));
}

/// One JSON log line on stdout (CloudWatch Logs): timestamp, level, target and message, then
/// `fields` (an object) in their order.
fn log_line(level: &str, target: &str, message: &str, fields: Value) {
    let mut line = serde_json::Map::new();
    line.insert("timestamp".into(), json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    line.insert("level".into(), json!(level));
    line.insert("target".into(), json!(target));
    line.insert("message".into(), json!(message));
    if let Value::Object(extra) = fields {
        line.extend(extra);
    }
    println!("{}", Value::Object(line));
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
            eventbridge: Some(crate::core::outbox::BusEvent {
                bus: "default".into(),
                detail_type: crate::core::message::EVENT_DETAIL_TYPE.into(),
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
        let event = include_str!("../../events/stopped.json");
        assert!(matches!(parse_message("m", Some(event)), Ok(Some(Work::Event(_, _)))));
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
}

#[cfg(test)]
mod look_tests {
    use super::*;

    fn finding(observed: &str, launch: bool, lookup_failed: bool) -> Finding {
        let mut f = crate::core::decide::decide(&crate::core::facts::Facts {
            instance: crate::core::facts::Instance {
                id: "i-0abcd1234ef567890".into(),
                account: "123456789012".into(),
                partition: "aws".into(),
                region: "eu-west-1".into(),
                state: Some(crate::core::facts::EndState::Stopped),
                state_name: "stopped".into(),
                state_reason: None,
                attachments: vec![],
                tags: vec![],
                image_id: None,
            },
            state: crate::core::facts::EndState::Stopped,
            state_reason: crate::core::facts::StateReason {
                code: "Client.InternalError".into(),
                message: String::new(),
            },
            observed_at: DateTime::parse_from_rfc3339(observed).unwrap().with_timezone(&Utc),
            volumes: vec![],
            keys: vec![],
            launch: None,
            kms_denials: vec![],
            simulations: vec![],
            boundary_arn: None,
            key_sources: vec![],
            missing: vec![],
        });
        if launch {
            f.launch = Some(crate::core::report::Launch {
                api: crate::core::cloudtrail::LaunchApi::StartInstances,
                event_id: "e".into(),
                event_time: observed.into(),
                caller: crate::core::cloudtrail::Caller::unknown(),
            });
        }
        if lookup_failed {
            f.missing_evidence.push(crate::core::facts::Missing {
                call: "cloudtrail:LookupEvents".into(),
                target: "i-0abcd1234ef567890".into(),
                reason: "ThrottlingException: Rate exceeded".into(),
            });
        }
        f
    }

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn settings() -> Settings {
        let mut s = Settings::from_env().unwrap();
        s.cloudtrail_wait = Duration::minutes(20);
        s
    }

    #[test]
    fn a_pending_event_is_looked_at_every_interval_until_the_budget_ends() {
        let s = settings();
        let f = finding("2026-11-30T12:00:00Z", false, false);
        // Received at 12:00:05: looked at on receipt, then every 30 s.
        assert_eq!(next_look(&f, &s, at("2026-11-30T12:00:06Z"), at("2026-11-30T12:00:05Z")), Some(30));
        assert_eq!(next_look(&f, &s, at("2026-11-30T12:09:00Z"), at("2026-11-30T12:00:05Z")), Some(30));
        // The last look lands on the budget's end (12:20:05), not past it.
        assert_eq!(next_look(&f, &s, at("2026-11-30T12:19:55Z"), at("2026-11-30T12:00:05Z")), Some(10));
        // With the launch record there is nothing to wait for.
        let found = finding("2026-11-30T12:00:00Z", true, false);
        assert_eq!(next_look(&found, &s, at("2026-11-30T12:01:05Z"), at("2026-11-30T12:00:05Z")), None);
    }

    #[test]
    fn past_the_budget_only_a_failed_lookup_is_tried_again_up_to_a_hard_limit() {
        let s = settings();
        let quiet = finding("2026-11-30T12:00:00Z", false, false);
        assert_eq!(next_look(&quiet, &s, at("2026-11-30T12:21:00Z"), at("2026-11-30T12:00:05Z")), None);
        let throttled = finding("2026-11-30T12:00:00Z", false, true);
        assert_eq!(next_look(&throttled, &s, at("2026-11-30T12:21:00Z"), at("2026-11-30T12:00:05Z")), Some(30));
        assert_eq!(next_look(&throttled, &s, at("2026-11-30T12:41:00Z"), at("2026-11-30T12:00:05Z")), None);
    }

    #[test]
    fn only_a_key_state_settles_without_the_caller() {
        let mut f = finding("2026-11-30T12:00:00Z", false, false);
        assert!(!settled_without_caller(&f), "caller-unknown waits for CloudTrail");
        let cause = |code| crate::core::report::Cause { code, key_arn: None, summary: String::new(), evidence: vec![] };
        f.causes = vec![
            cause(crate::core::report::CauseCode::KeyDisabled),
            cause(crate::core::report::CauseCode::KeyPendingImport),
        ];
        assert!(settled_without_caller(&f));
        f.causes.push(cause(crate::core::report::CauseCode::CallerLacksCreateGrant));
        assert!(!settled_without_caller(&f), "a permission cause depends on who launched");
    }

    #[test]
    fn a_deferred_event_reads_back_with_its_snapshot() {
        let f = finding("2026-11-30T12:00:00Z", false, false);
        let event: Value = serde_json::from_str(include_str!("../../events/stopped.json")).unwrap();
        let d = Deferred {
            format: DEFERRED_FORMAT.into(),
            event,
            snapshot: Some(gather::Snapshot::of(&f)),
            first_received: at("2026-11-30T12:00:05Z"),
            looks: 2,
            reported: Some(Reported { finding_id: "kld-0123456789abcdef".into(), digest: "d".into() }),
        };
        let body = serde_json::to_string(&d).unwrap();
        match parse_message("m", Some(&body)) {
            Ok(Some(Work::Deferred(t, back))) => {
                assert_eq!(t.instance_id, "i-0abcd1234ef567890");
                assert_eq!(*back, d);
            }
            other => panic!("not read as a deferred event: {other:?}"),
        }
        let broken = r#"{"kms-launch-doctor":"deferred/1","event":{}}"#;
        assert!(parse_message("m", Some(broken)).unwrap_err().contains("deferred"));
    }

    #[test]
    fn metrics_are_embedded_metric_format() {
        let mut m = Metrics { deferrals: 2, delivery_failures: 1, ..Metrics::default() };
        m.findings_by_cause.insert("key-disabled".into(), 3);
        m.seconds_to_finding = vec![61.5];
        let lines = metric_lines(&m, 4, at("2026-11-30T12:00:00Z"));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["SecondsToFinding"], json!([61.5]));
        let quiet = metric_lines(&Metrics::default(), 0, at("2026-11-30T12:00:00Z"));
        assert!(quiet[0].get("SecondsToFinding").is_none(), "{:#}", quiet[0]);
        assert_eq!(quiet[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().len(), 4);
        assert_eq!(lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "KmsLaunchDoctor");
        assert_eq!((lines[0]["Deferrals"].as_u64(), lines[0]["CloudTrailThrottles"].as_u64()), (Some(2), Some(4)));
        assert_eq!(lines[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Cause"]]));
        assert_eq!((lines[1]["Cause"].as_str(), lines[1]["Findings"].as_u64()), (Some("key-disabled"), Some(3)));
    }
}
