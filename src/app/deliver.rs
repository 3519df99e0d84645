//! Delivering findings where operators look: SNS (people), Security Hub (security teams),
//! EventBridge (automation). Each sink is independent: one failing does not stop the others,
//! and the finding records which sinks it reached.

use std::collections::BTreeMap;

use tracing::{info_span, Instrument};

use crate::core::message;
use crate::core::outbox::{BusEvent, Outbox, Sinks};
use crate::core::report::{Delivered, Finding};
use crate::ports::{CallError, Effects};

/// Sends what the outbox holds. Each sink that succeeds is taken out of the outbox and
/// recorded in the returned [`Delivered`]; each failure is returned and stays in the outbox.
pub async fn send<E: Effects>(effects: &E, outbox: &mut Outbox, now: &str) -> (Delivered, Vec<CallError>) {
    let mut results = send_all(effects, std::slice::from_mut(outbox), now).await;
    results.pop().unwrap_or_default()
}

/// Security Hub's GetFindings takes at most 20 values per filter attribute; BatchImportFindings
/// at most 100 findings; PutEvents at most 10 entries (the APIs' limits).
const GET_FINDINGS_IDS: usize = 20;
const IMPORT_FINDINGS: usize = 100;
const PUT_EVENTS: usize = 10;

/// Sends many outboxes with as few calls as the sinks allow: one Publish each for SNS (a
/// message per finding), Security Hub's GetFindings for up to 20 Ids and BatchImportFindings
/// for up to 100 findings a call, EventBridge's PutEvents for up to 10 entries a call, per
/// region. What each outbox reached is taken out of it, as in [`send`].
pub async fn send_all<E: Effects>(effects: &E, outboxes: &mut [Outbox], now: &str) -> Vec<(Delivered, Vec<CallError>)> {
    let mut results: Vec<(Delivered, Vec<CallError>)> = outboxes.iter().map(|_| Default::default()).collect();
    // SNS: a message each.
    for (i, outbox) in outboxes.iter_mut().enumerate() {
        let Some(m) = &outbox.sns else { continue };
        let sent = effects
            .publish(&m.topic_arn, &m.subject, &m.body, &m.attributes)
            .instrument(info_span!("sns.Publish", finding_id = %outbox.finding_id))
            .await;
        if let Some(r) = results.get_mut(i) {
            match sent {
                Ok(id) => {
                    r.0.sns = Some(id);
                    outbox.sns = None;
                }
                Err(e) => r.1.push(e),
            }
        }
    }
    security_hub_all(effects, outboxes, &mut results, now).await;
    eventbridge_all(effects, outboxes, &mut results).await;
    for (outbox, (_, failures)) in outboxes.iter().zip(&results) {
        for e in failures {
            tracing::error!(finding_id = %outbox.finding_id, call = e.call, error = %e.message, "delivery failed");
        }
    }
    results
}

/// The indices of the outboxes holding a payload for a sink, by region.
fn by_region(outboxes: &[Outbox], has: impl Fn(&Outbox) -> bool) -> BTreeMap<String, Vec<usize>> {
    let mut map: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, o) in outboxes.iter().enumerate().filter(|(_, o)| has(o)) {
        map.entry(o.region.clone()).or_default().push(i);
    }
    map
}

/// Upserts the findings by their stable Ids, keeping each first import's CreatedAt. UpdatedAt
/// is when a finding was decided, so a late redelivery or a replay of an older decision never
/// overwrites a newer one (RFC 3339 in UTC compares as time).
async fn security_hub_all<E: Effects>(
    effects: &E,
    outboxes: &mut [Outbox],
    results: &mut [(Delivered, Vec<CallError>)],
    now: &str,
) {
    for (region, indices) in by_region(outboxes, |o| o.security_hub.is_some()) {
        for chunk in indices.chunks(GET_FINDINGS_IDS) {
            let docs: Vec<(usize, message::Asff)> =
                chunk.iter().filter_map(|i| Some((*i, outboxes.get(*i)?.security_hub.clone()?))).collect();
            let Some((_, first)) = docs.first() else { continue };
            let ids: Vec<String> = docs.iter().map(|(_, d)| d.id.clone()).collect();
            let existing = effects
                .existing_findings(&region, &first.product_arn, &ids)
                .instrument(info_span!("securityhub.GetFindings", count = ids.len()))
                .await;
            let existing = match existing {
                Ok(e) => e,
                Err(e) => {
                    for (i, _) in &docs {
                        if let Some(r) = results.get_mut(*i) {
                            r.1.push(e.clone());
                        }
                    }
                    continue;
                }
            };
            let mut to_import: Vec<(usize, message::Asff)> = Vec::new();
            for (i, mut doc) in docs {
                if doc.updated_at.is_empty() {
                    doc.updated_at = now.to_owned();
                }
                match existing.get(&doc.id) {
                    Some((_, updated)) if newer(updated, &doc.updated_at) => {
                        tracing::info!(finding_id = %doc.id, theirs = %updated, ours = %doc.updated_at, "Security Hub has a newer finding: kept");
                        if let (Some(r), Some(o)) = (results.get_mut(i), outboxes.get_mut(i)) {
                            r.0.security_hub = Some("newer finding kept".to_owned());
                            o.security_hub = None;
                        }
                    }
                    found => {
                        doc.created_at = found
                            .map(|(c, _)| c.clone())
                            .filter(|c| !c.is_empty())
                            .unwrap_or_else(|| doc.updated_at.clone());
                        to_import.push((i, doc));
                    }
                }
            }
            for batch in to_import.chunks(IMPORT_FINDINGS) {
                let docs: Vec<message::Asff> = batch.iter().map(|(_, d)| d.clone()).collect();
                let imported = effects
                    .import_findings(&region, &docs)
                    .instrument(info_span!("securityhub.BatchImportFindings", count = docs.len()))
                    .await;
                for (i, doc) in batch {
                    let (Some(r), Some(o)) = (results.get_mut(*i), outboxes.get_mut(*i)) else { continue };
                    match import_failure(&imported, &doc.id) {
                        Some(e) => r.1.push(e),
                        None => {
                            r.0.security_hub = Some("ok".to_owned());
                            o.security_hub = None;
                        }
                    }
                }
            }
        }
    }
}

/// What went wrong for finding `id` in a BatchImportFindings answer: the whole call failed,
/// or Security Hub rejected that finding (with why); `None` when it was imported.
pub(crate) fn import_failure(imported: &Result<Vec<(String, String)>, CallError>, id: &str) -> Option<CallError> {
    match imported {
        Ok(rejected) => rejected.iter().find(|(r, _)| r == id).map(|(_, why)| CallError {
            call: "securityhub:BatchImportFindings",
            kind: crate::ports::FailureKind::Other,
            message: format!("finding rejected: {why}"),
        }),
        Err(e) => Some(e.clone()),
    }
}

/// Puts the findings' events on their buses, up to 10 a call per region.
async fn eventbridge_all<E: Effects>(
    effects: &E,
    outboxes: &mut [Outbox],
    results: &mut [(Delivered, Vec<CallError>)],
) {
    for (region, indices) in by_region(outboxes, |o| o.eventbridge.is_some()) {
        for chunk in indices.chunks(PUT_EVENTS) {
            let entries: Vec<(usize, BusEvent)> =
                chunk.iter().filter_map(|i| Some((*i, outboxes.get(*i)?.eventbridge.clone()?))).collect();
            let request: Vec<BusEvent> = entries.iter().map(|(_, e)| e.clone()).collect();
            let sent = effects
                .put_events(&region, &request)
                .instrument(info_span!("events.PutEvents", count = request.len()))
                .await;
            for (n, (i, _)) in entries.iter().enumerate() {
                let (Some(r), Some(o)) = (results.get_mut(*i), outboxes.get_mut(*i)) else { continue };
                let outcome = match &sent {
                    Ok(each) => {
                        each.get(n).cloned().unwrap_or_else(|| Err("no entry result".to_owned())).map_err(|why| {
                            CallError { call: "events:PutEvents", kind: crate::ports::FailureKind::Other, message: why }
                        })
                    }
                    Err(e) => Err(e.clone()),
                };
                match outcome {
                    Ok(id) => {
                        r.0.eventbridge = Some(id);
                        o.eventbridge = None;
                    }
                    Err(e) => r.1.push(e),
                }
            }
        }
    }
}

/// Sends one finding to every configured sink and records what it reached in
/// `finding.delivered`. Returns the failures (each names its call and why) and what is left
/// to send: empty unless something failed.
pub async fn deliver<E: Effects>(
    effects: &E,
    finding: &mut Finding,
    sinks: &Sinks,
    now: &str,
) -> (Vec<CallError>, Outbox) {
    let mut outbox = Outbox::render(finding, sinks, now);
    let (delivered, failures) = send(effects, &mut outbox, now).await;
    finding.delivered = delivered;
    (failures, outbox)
}

/// Whether timestamp `a` is later than `b` (RFC 3339; unparsable ones are never newer).
fn newer(a: &str, b: &str) -> bool {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a > b)
}
