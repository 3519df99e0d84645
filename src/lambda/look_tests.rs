//! The look schedule.

use super::*;
use crate::app::gather;
use crate::core::report::Finding;
use crate::settings::Settings;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

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
        state_reason: crate::core::facts::StateReason { code: "Client.InternalError".into(), message: String::new() },
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
