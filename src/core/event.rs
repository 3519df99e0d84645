//! The trigger: EventBridge "EC2 Instance State-change Notification" events.
//!
//! Anything that is not such an event for a `stopped` or `terminated` instance is skipped with
//! a reason a person can act on. The Lambda runtime hands us arbitrary JSON, so parsing starts
//! from a `serde_json::Value` and never fails the invocation.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::facts::EndState;
use crate::core::report::Skipped;

pub const SOURCE: &str = "aws.ec2";
pub const DETAIL_TYPE: &str = "EC2 Instance State-change Notification";

#[derive(Debug, Clone, Deserialize, Serialize)]
struct StateChange {
    #[serde(rename = "instance-id")]
    instance_id: String,
    state: String,
}

/// A state change worth diagnosing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub instance_id: String,
    pub state: EndState,
    pub region: Option<String>,
    pub account: Option<String>,
    pub time: Option<DateTime<Utc>>,
    pub event_id: Option<String>,
}

/// Longest string we echo back from an event into a skip reason.
const ECHO: usize = 80;

pub fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(ECHO).collect::<String>())
    }
}

/// EC2 instance ids: `i-` and 8 (older instances) or 17 lowercase hex digits.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|rest| {
        matches!(rest.len(), 8 | 17) && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The events in a replay input: one EventBridge event, a JSON array of them, or an SQS event
/// as Lambda receives it (each record's body one event). A part that cannot be used becomes a
/// skip entry that names it; nothing fails.
pub fn unpack(input: &Value) -> Vec<Result<Value, Skipped>> {
    let skip = |reason: String| Err(Skipped { instance_id: None, region: None, reason, account: None });
    if let Some(events) = input.as_array() {
        return events.iter().cloned().map(Ok).collect();
    }
    let records = input.get("Records").and_then(Value::as_array);
    let Some(records) =
        records.filter(|r| r.iter().any(|m| m.get("eventSource").and_then(Value::as_str) == Some("aws:sqs")))
    else {
        return vec![Ok(input.clone())];
    };
    records
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let id = m.get("messageId").and_then(Value::as_str).map(echo).unwrap_or_else(|| format!("#{}", n + 1));
            let Some(body) = m.get("body").and_then(Value::as_str) else {
                return skip(format!("SQS message {id}: no body"));
            };
            match serde_json::from_str::<Value>(body) {
                Ok(v) if v.get("kms-launch-doctor").is_some() => skip(format!(
                    "SQS message {id}: a redelivery of findings to sinks, not an event (the Lambda function sends those to itself)"
                )),
                Ok(v) => Ok(v),
                Err(e) => skip(format!("SQS message {id}: the body is not JSON ({})", echo(&e.to_string()))),
            }
        })
        .collect()
}

/// An instance that reached `running`: whatever we reported of its failed launch is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub instance_id: String,
    pub region: Option<String>,
    pub account: Option<String>,
    pub time: Option<DateTime<Utc>>,
}

/// What a state-change event asks of us: diagnose a launch that ended, or resolve the
/// findings of an instance that now runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Ended(Trigger),
    Running(Running),
}

/// Parses one event; `Err` carries the skip entry. A `running` event is skipped here (it is
/// not a failure to diagnose); [`classify`] tells it apart.
pub fn parse(event: &Value) -> Result<Trigger, Skipped> {
    match classify(event)? {
        Change::Ended(t) => Ok(t),
        Change::Running(r) => Err(Skipped::instance(
            r.instance_id,
            "state \"running\" is not one a failed launch ends in (stopped, terminated)".to_owned(),
        )),
    }
}

/// Parses one event into what it asks: a failure to diagnose (`stopped`, `terminated`) or a
/// resolution (`running`). Any other event or state is a skip entry with the reason.
pub fn classify(event: &Value) -> Result<Change, Skipped> {
    let skip =
        |instance_id: Option<String>, reason: String| Skipped { instance_id, region: None, reason, account: None };
    let source = event.get("source").and_then(Value::as_str);
    let detail_type = event.get("detail-type").and_then(Value::as_str);
    match (source, detail_type) {
        (Some(SOURCE), Some(DETAIL_TYPE)) => {}
        (Some(s), Some(d)) => {
            return Err(skip(
                None,
                format!(
                    "not an EC2 instance state-change notification (source {:?}, detail-type {:?})",
                    echo(s),
                    echo(d)
                ),
            ))
        }
        _ => return Err(skip(None, "not an EventBridge event (no source or detail-type)".to_owned())),
    }
    let parsed: EventBridgeEvent<StateChange> = serde_json::from_value(event.clone())
        .map_err(|e| skip(None, format!("malformed state-change event: {}", echo(&e.to_string()))))?;
    let detail = parsed.detail;
    if !is_instance_id(&detail.instance_id) {
        return Err(skip(
            None,
            format!("malformed state-change event: {:?} is not an instance id", echo(&detail.instance_id)),
        ));
    }
    let region = parsed.region.filter(|r| is_region(r));
    let account = parsed.account.filter(|a| crate::core::arn::is_account_id(a));
    if detail.state == "running" {
        return Ok(Change::Running(Running { instance_id: detail.instance_id, region, account, time: parsed.time }));
    }
    let Some(state) = EndState::parse(&detail.state) else {
        return Err(skip(
            Some(detail.instance_id),
            format!(
                "state {:?} is neither one a failed launch ends in (stopped, terminated) nor running",
                echo(&detail.state)
            ),
        ));
    };
    Ok(Change::Ended(Trigger {
        instance_id: detail.instance_id,
        state,
        region,
        account,
        time: parsed.time,
        event_id: parsed.id,
    }))
}

/// Parses the raw bytes of an event file or request.
pub fn parse_bytes(bytes: &[u8]) -> Result<Trigger, Skipped> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => parse(&v),
        Err(e) => Err(Skipped {
            instance_id: None,
            region: None,
            reason: format!("malformed JSON: {}", echo(&e.to_string())),
            account: None,
        }),
    }
}

/// `us-east-1`-shaped: lowercase letters, digits and dashes.
pub fn is_region(s: &str) -> bool {
    (4..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(detail: Value) -> Value {
        json!({"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": DETAIL_TYPE,
               "source": "aws.ec2", "account": "123456789012", "time": "2026-11-28T10:01:00Z",
               "region": "eu-west-1", "resources": ["arn:aws:ec2:eu-west-1:123456789012:instance/i-0abcd1234ef567890"],
               "detail": detail})
    }

    #[test]
    fn stopped_event_is_a_trigger() {
        let t = parse(&event(json!({"instance-id": "i-0abcd1234ef567890", "state": "stopped"}))).unwrap();
        assert_eq!(t.instance_id, "i-0abcd1234ef567890");
        assert_eq!(t.state, EndState::Stopped);
        assert_eq!(t.region.as_deref(), Some("eu-west-1"));
        assert_eq!(t.time.map(|t| t.to_rfc3339()), Some("2026-11-28T10:01:00+00:00".to_owned()));
    }

    #[test]
    fn other_states_are_skipped_with_the_instance() {
        let s = parse(&event(json!({"instance-id": "i-0abcd1234ef567890", "state": "running"}))).unwrap_err();
        assert_eq!(s.instance_id.as_deref(), Some("i-0abcd1234ef567890"));
        assert!(s.reason.contains("\"running\""));
    }

    #[test]
    fn wrong_shapes_are_skipped_not_errors() {
        for bad in [
            json!({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}),
            json!([]),
            json!(null),
            event(json!({"instance-id": 7, "state": "stopped"})),
            event(json!({"state": "stopped"})),
            event(json!({"instance-id": "i-0abc; rm -rf /", "state": "stopped"})),
            event(json!({"instance-id": "i-12345", "state": "stopped"})),
            event(json!("x".repeat(100_000))),
        ] {
            let s = parse(&bad).unwrap_err();
            assert!(s.reason.len() < 400, "{}", s.reason);
        }
        assert!(parse_bytes(b"{not json").unwrap_err().reason.starts_with("malformed JSON"));
    }

    #[test]
    fn running_is_a_resolution_and_other_states_are_skipped() {
        let running = event(json!({"instance-id": "i-0abcd1234ef567890", "state": "running"}));
        match classify(&running).unwrap() {
            Change::Running(r) => {
                assert_eq!(r.instance_id, "i-0abcd1234ef567890");
                assert!(r.time.is_some() && r.region.is_some() && r.account.is_some(), "{r:?}");
            }
            other => panic!("not a resolution: {other:?}"),
        }
        assert!(matches!(
            classify(&event(json!({"instance-id": "i-0abcd1234ef567890", "state": "stopped"}))),
            Ok(Change::Ended(_))
        ));
        let pending = classify(&event(json!({"instance-id": "i-0abcd1234ef567890", "state": "pending"}))).unwrap_err();
        assert!(pending.reason.contains("pending"), "{}", pending.reason);
    }

    #[test]
    fn instance_ids_are_i_and_8_or_17_hex_digits() {
        for ok in ["i-0123abcd", "i-0abcd1234ef567890"] {
            assert!(is_instance_id(ok), "{ok}");
        }
        for bad in ["i-12345", "i-0123abcg", "i-0ABCD1234EF567890", "i-0abcd1234ef5678901", "vol-0123abcd", "i-", ""] {
            assert!(!is_instance_id(bad), "{bad}");
        }
    }

    #[test]
    fn replay_inputs_unpack_to_events() {
        let one = event(json!({"instance-id": "i-0abcd1234ef567890", "state": "stopped"}));
        assert_eq!(unpack(&one).len(), 1);
        assert_eq!(unpack(&json!([one.clone(), one.clone()])).len(), 2);
        let sqs = json!({"Records": [
            {"messageId": "m1", "eventSource": "aws:sqs", "body": one.to_string()},
            {"messageId": "m2", "eventSource": "aws:sqs", "body": "{nope"},
            {"messageId": "m3", "eventSource": "aws:sqs", "body": "{\"kms-launch-doctor\": \"redelivery/1\"}"}]});
        let parts = unpack(&sqs);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].as_ref().unwrap(), &one);
        assert!(parts[1].as_ref().unwrap_err().reason.starts_with("SQS message m2: the body is not JSON"));
        assert!(parts[2].as_ref().unwrap_err().reason.contains("redelivery"));
    }
}
