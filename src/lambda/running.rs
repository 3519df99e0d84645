//! `running` events: the instance's open findings are archived (see crate::app::resolve), and a finding decided on old facts is sent born resolved.

use super::*;
use crate::core::outbox::Outbox;
use crate::core::report::Finding;
use crate::ports::{Cloud, Effects, Queue};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsMessage};

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info_span, Instrument};

/// Of the findings decided on an earlier look's snapshot, the instances that are pending or
/// running now (one DescribeInstances per account and region): their failure is over. A
/// lookup that fails leaves them as they are.
pub(super) async fn started_since<A: Cloud>(aws: &A, settled: &[(Item, Finding)]) -> BTreeSet<String> {
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
pub(super) async fn resolve_running<A: Effects + Queue>(
    aws: &A,
    running: Vec<(SqsMessage, String, crate::core::event::Running)>,
    inv: Invocation<'_>,
    metrics: &mut Metrics,
    response: &mut SqsBatchResponse,
) {
    let Invocation { region, plan, settings, now, stop_at } = inv;
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
pub(super) fn log_resolution(r: &crate::app::resolve::Resolution) {
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
