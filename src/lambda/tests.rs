//! In-process tests of the batch's pure parts.

use super::*;
use crate::core::outbox::Outbox;
use chrono::{DateTime, Duration, Utc};

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
    assert!(implausible_time(Some(now - Duration::days(5)), now, retention).unwrap().contains("older than the queue"));
}
