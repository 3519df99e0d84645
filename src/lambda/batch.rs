//! An SQS batch: parse, diagnose once per account and region, then for each failure report, defer or retry, and settle (remediate, deliver) what is decided.

use super::*;
use crate::app::deliver;
use crate::app::gather::{self, Options, Target};
use crate::core::event::Trigger;
use crate::core::outbox::Outbox;
use crate::core::report::Finding;
use crate::ports::{Cloud, Effects, FailureKind, IamWrites, Queue};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Where a batch's events are diagnosed together: (the account the event names, or empty;
/// the region).
pub(super) type Place = (String, String);

/// One event of the batch, with its clock.
pub(super) struct Item {
    pub(super) message: SqsMessage,
    pub(super) id: String,
    pub(super) trigger: Trigger,
    /// The event as EventBridge sent it.
    pub(super) event: Value,
    pub(super) known: Option<Box<gather::Snapshot>>,
    /// When SQS first received the event (its own clock, not the event's claimed time).
    pub(super) first_received: DateTime<Utc>,
    /// Looks so far, this one included.
    pub(super) looks: u32,
    pub(super) reported: Option<Reported>,
}

/// Whether the invocation has reached its stop point (deadline less the safety margin).
pub(super) fn past(stop_at: Option<std::time::Instant>) -> bool {
    stop_at.is_some_and(|t| std::time::Instant::now() >= t)
}

pub(super) async fn handle_batch<A: Cloud + Effects + IamWrites + Queue>(
    aws: &A,
    batch: SqsEvent,
    inv: Invocation<'_>,
    metrics: &mut Metrics,
) -> SqsBatchResponse {
    let Invocation { region, plan, settings, now, stop_at } = inv;
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
    resolve_running(aws, running, inv, metrics, &mut response).await;
    response
}
