//! What goes back on the queue: a deferred look (ChangeMessageVisibility), an unfinished delivery (SendMessage), and a redelivery's retry.

use super::*;
use crate::app::deliver;
use crate::app::gather;
use crate::core::outbox::Outbox;
use crate::core::report::Finding;
use crate::ports::{CallError, Effects, FailureKind, Queue};
use crate::settings::Settings;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsMessage};
use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info_span, Instrument};

/// The URL of the queue a message came from.
pub(super) async fn queue_of<A: Queue>(
    aws: &A,
    message: &SqsMessage,
    settings: &Settings,
) -> Result<String, CallError> {
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
pub(super) async fn defer<A: Queue>(
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
pub(super) async fn requeue<A: Queue>(
    aws: &A,
    message: &SqsMessage,
    id: &str,
    settings: &Settings,
    outbox: &Outbox,
) -> bool {
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
pub(super) async fn redeliver<A: Effects + Queue>(
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

pub(super) fn failure(id: &str) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id.to_owned();
    f
}
