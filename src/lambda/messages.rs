//! The queue's messages: an EventBridge event, a deferred look (`deferred/1`), an unfinished delivery (`redelivery/1`); SQS's attributes; and which event times are plausible.

use super::*;
use crate::app::gather;
use crate::core::event::Trigger;
use crate::core::outbox::Outbox;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Names the format of the messages the function puts on its own queue; an EventBridge event
/// never has this member, so the two cannot be confused.
pub(super) const REDELIVERY_TAG: &str = "kms-launch-doctor";

/// SQS's largest message (256 KiB). An outbox is a few kilobytes, bounded by the sinks' own
/// limits; one that would not fit is retried the old way (whole event) rather than lost.
pub(super) const SQS_MAX_BYTES: usize = 262_144;

/// The body of a redelivery message: what is left of one finding's delivery.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Redelivery {
    #[serde(rename = "kms-launch-doctor")]
    pub(super) format: String,
    pub(super) outbox: Outbox,
}

/// The body of a deferred event: the event as EventBridge sent it, what the first look learned
/// of the failure (so a later look decides on the same facts, whatever the instance has become
/// since), when SQS first received it, and how many looks it has had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Deferred {
    #[serde(rename = "kms-launch-doctor")]
    pub(super) format: String,
    pub(super) event: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) snapshot: Option<gather::Snapshot>,
    pub(super) first_received: DateTime<Utc>,
    pub(super) looks: u32,
    /// The finding already sent for this event at an earlier look (a key state that no caller
    /// could get past): a later look updates that same finding `Id` when the caller appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reported: Option<Reported>,
}

/// A finding sent before the launch record was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Reported {
    pub(super) finding_id: String,
    pub(super) digest: String,
}

/// A parsed queue message.
#[derive(Debug)]
pub(super) enum Work {
    Event(Trigger, Value),
    /// An instance reached `running`: its open findings resolve.
    Running(crate::core::event::Running),
    Deferred(Trigger, Box<Deferred>),
    Redelivery(Box<Outbox>),
}

/// Reads one message body. `Ok(None)`: not for us, skip it (retrying would not help).
/// `Err`: a message of ours we cannot read; it is kept (returned as a failure) so that the
/// dead-letter queue ends up holding it, payloads and all.
pub(super) fn parse_message(id: &str, body: Option<&str>) -> Result<Option<Work>, String> {
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

pub(super) fn receive_count(attributes: &std::collections::HashMap<String, String>) -> u32 {
    attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1)
}

/// When SQS first received the message: `SentTimestamp`, epoch milliseconds, set by SQS (a
/// sender cannot choose it).
pub(super) fn sent_timestamp(attributes: &std::collections::HashMap<String, String>) -> Option<DateTime<Utc>> {
    let ms: i64 = attributes.get("SentTimestamp")?.trim().parse().ok()?;
    DateTime::from_timestamp_millis(ms)
}

/// Why an event's claimed time cannot be right, if it cannot: in the future, or older than
/// the queue keeps a message (so it did not wait in our queue since it happened).
pub(super) fn implausible_time(time: Option<DateTime<Utc>>, now: DateTime<Utc>, retention: Duration) -> Option<String> {
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
