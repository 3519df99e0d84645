//! The Lambda's SQS batch in-process, through the in-memory adapter: what is reported, deferred,
//! put back for the sinks that failed, retried whole, or given up on, and with how many calls.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::{handle, Invocation, Metrics};
use crate::app::Plan;
use crate::memory::{Memory, ACCOUNT, REGION};
use crate::settings::Settings;

const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
const USER: &str = "arn:aws:iam::123456789012:user/test";
const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:alerts";
const QUEUE: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/kld-events";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().with_timezone(&Utc)
}

/// The template's settings, with every sink on.
fn settings() -> Settings {
    let vars: BTreeMap<&str, &str> = [
        ("FINDINGS_TOPIC_ARN", TOPIC),
        ("SECURITY_HUB", "on"),
        ("FINDINGS_EVENT_BUS", "default"),
        ("EVENTS_QUEUE_URL", QUEUE),
        ("CLOUDTRAIL_WAIT_MINUTES", "20"),
    ]
    .into_iter()
    .collect();
    Settings::from_vars(&|name| vars.get(name).map(|v| (*v).to_owned())).unwrap()
}

fn state_change(instance: &str, time: DateTime<Utc>) -> Value {
    json!({
        "version": "0", "id": format!("evt-{instance}"), "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2", "account": ACCOUNT, "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": REGION, "resources": [format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}")],
        "detail": {"instance-id": instance, "state": "stopped"}
    })
}

/// An SQS message as Lambda receives it: `body`, first sent `sent` ago, received `count` times.
fn message(id: &str, body: &str, sent: DateTime<Utc>, count: u32) -> Value {
    json!({
        "messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": count.to_string(), "SentTimestamp": sent.timestamp_millis().to_string()},
        "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:kld-events"), "awsRegion": REGION
    })
}

fn batch(messages: Vec<Value>) -> Value {
    json!({ "Records": messages })
}

/// A failed launch of `instance`, its volume under [`KEY`], whose caller may not CreateGrant.
fn failure(aws: &Memory, instance: &str, with_records: bool) {
    aws.failed_instance(instance, KEY);
    if !aws.world().keys.contains_key(KEY) {
        aws.key(KEY);
    }
    if with_records {
        aws.start_instances(instance, USER, now() - Duration::minutes(6));
        aws.denied_create_grant(USER, KEY, now() - Duration::minutes(6) + Duration::seconds(2));
    }
}

struct Outcome {
    failed: Vec<String>,
    metrics: Metrics,
}

async fn run_at(aws: &Memory, payload: Value, stop_at: Option<std::time::Instant>) -> Outcome {
    let settings = settings();
    let plan =
        Plan { options: settings.options(), sinks: settings.sinks.clone(), guardrails: settings.guardrails.clone() };
    let mut metrics = Metrics::default();
    let response = handle(
        aws,
        payload,
        Invocation { region: Some(REGION), plan: &plan, settings: &settings, now: now(), stop_at },
        &mut metrics,
    )
    .await
    .unwrap();
    let failed = response["batchItemFailures"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Outcome { failed, metrics }
}

async fn run(aws: &Memory, payload: Value) -> Outcome {
    run_at(aws, payload, None).await
}

fn event_message(id: &str, instance: &str, sent_ago: Duration) -> Value {
    message(id, &state_change(instance, now() - sent_ago).to_string(), now() - sent_ago, 1)
}

#[tokio::test]
async fn a_failure_whose_caller_is_in_cloudtrail_is_reported_to_every_sink_and_done() {
    let aws = Memory::new();
    failure(&aws, "i-0abcd1234ef567890", true);
    let out = run(&aws, batch(vec![event_message("m1", "i-0abcd1234ef567890", Duration::minutes(1))])).await;
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(
        out.metrics.findings_by_cause.get("caller-lacks-create-grant"),
        Some(&1),
        "{:?}",
        out.metrics.findings_by_cause
    );
    let world = aws.world();
    assert_eq!(world.published.len(), 1);
    assert!(world.published[0].1.contains("i-0abcd1234ef567890"), "{:?}", world.published[0].1);
    assert_eq!(world.findings.len(), 1);
    assert_eq!(world.bus.len(), 1);
    assert!(world.sent.is_empty(), "nothing goes back on the queue: {:?}", world.sent);
}

#[tokio::test]
async fn a_failure_without_its_launch_record_is_deferred_with_what_was_learned() {
    let aws = Memory::new();
    failure(&aws, "i-0abcd1234ef567890", false);
    let out = run(&aws, batch(vec![event_message("m1", "i-0abcd1234ef567890", Duration::minutes(1))])).await;
    assert!(out.failed.is_empty(), "a deferred message is done: its successor carries it");
    assert_eq!(out.metrics.deferrals, 1);
    let world = aws.world();
    assert!(world.published.is_empty() && world.findings.is_empty(), "nothing reported before the wait is over");
    let [(body, delay)] = world.sent.as_slice() else { panic!("one deferred message: {:?}", world.sent) };
    assert_eq!(*delay, 30, "looked at again every 30 s");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["kms-launch-doctor"], "deferred/1");
    assert_eq!(body["snapshot"]["instance"]["id"], "i-0abcd1234ef567890", "the facts learned travel with it");
}

#[tokio::test]
async fn past_the_wait_without_a_launch_record_it_is_reported_as_caller_unknown() {
    let aws = Memory::new();
    failure(&aws, "i-0abcd1234ef567890", false);
    let out = run(&aws, batch(vec![event_message("m1", "i-0abcd1234ef567890", Duration::minutes(21))])).await;
    assert!(out.failed.is_empty());
    assert_eq!(out.metrics.deferrals, 0);
    assert_eq!(out.metrics.findings_by_cause.get("caller-unknown"), Some(&1), "{:?}", out.metrics.findings_by_cause);
    assert_eq!(aws.world().published.len(), 1);
}

#[tokio::test]
async fn a_sink_that_fails_gets_the_finding_later_and_the_others_are_not_sent_it_twice() {
    let aws = Memory::new();
    failure(&aws, "i-0abcd1234ef567890", true);
    aws.fail("sns:Publish", crate::ports::FailureKind::Throttled);
    let out = run(&aws, batch(vec![event_message("m1", "i-0abcd1234ef567890", Duration::minutes(1))])).await;
    assert!(out.failed.is_empty(), "the event is done; its unsent part is a message of its own");
    assert_eq!(out.metrics.delivery_failures, 1);
    let (body, delay) = aws.world().sent.first().cloned().expect("the unsent part is put back");
    assert_eq!(delay, 60, "KLD_REDELIVERY_DELAY_SECONDS");
    let redelivery: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(redelivery["kms-launch-doctor"], "redelivery/1");
    assert!(redelivery["outbox"]["sns"].is_object() && redelivery["outbox"]["security_hub"].is_null());
    assert!(redelivery["outbox"]["eventbridge"].is_null());

    // The retry: SNS is back; only SNS is sent to.
    aws.world().faults.clear();
    let imports = aws.count("securityhub:BatchImportFindings");
    let out = run(&aws, batch(vec![message("m2", &body, now(), 1)])).await;
    assert!(out.failed.is_empty());
    assert_eq!(aws.world().published.len(), 1);
    assert_eq!(aws.count("securityhub:BatchImportFindings"), imports, "Security Hub already has it");
    assert_eq!(aws.world().bus.len(), 1, "EventBridge already has it");
}

#[tokio::test]
async fn a_redelivery_that_fails_again_comes_back_whole_for_sqs_to_retry() {
    let aws = Memory::new();
    aws.fail("sns:Publish", crate::ports::FailureKind::Unreachable);
    let outbox = crate::core::outbox::Outbox {
        finding_id: "kld-1".into(),
        instance_id: "i-0abcd1234ef567890".into(),
        region: REGION.into(),
        sns: Some(crate::core::outbox::SnsMessage {
            topic_arn: TOPIC.into(),
            subject: "s".into(),
            body: "b".into(),
            attributes: BTreeMap::new(),
        }),
        security_hub: None,
        eventbridge: None,
    };
    let body = json!({"kms-launch-doctor": "redelivery/1", "outbox": outbox}).to_string();
    let out = run(&aws, batch(vec![message("m1", &body, now(), 3)])).await;
    assert_eq!(out.failed, ["m1"]);
    assert!(aws.world().sent.is_empty(), "not copied: the message itself comes back");
}

#[tokio::test]
async fn an_unreadable_redelivery_is_kept_for_the_dead_letter_queue() {
    let aws = Memory::new();
    let body = r#"{"kms-launch-doctor":"redelivery/2","outbox":{}}"#;
    let out = run(&aws, batch(vec![message("m1", body, now(), 1)])).await;
    assert_eq!(out.failed, ["m1"]);
    assert!(aws.calls().is_empty(), "{:?}", aws.calls());
}

#[tokio::test]
async fn messages_that_are_not_ours_are_done_without_a_call() {
    let aws = Memory::new();
    let not_ec2 = json!({"detail-type": "Other", "source": "aws.s3"}).to_string();
    let out = run(&aws, batch(vec![message("m1", &not_ec2, now(), 1), message("m2", "{not json", now(), 1)])).await;
    assert!(out.failed.is_empty());
    assert!(aws.calls().is_empty(), "{:?}", aws.calls());
}

#[tokio::test]
async fn a_region_ec2_cannot_answer_for_is_retried() {
    let aws = Memory::new();
    failure(&aws, "i-0abcd1234ef567890", true);
    aws.fail("ec2:DescribeInstances", crate::ports::FailureKind::Unreachable);
    let out = run(&aws, batch(vec![event_message("m1", "i-0abcd1234ef567890", Duration::minutes(1))])).await;
    assert_eq!(out.failed, ["m1"]);
    assert!(aws.world().published.is_empty());
}

#[tokio::test]
async fn the_same_failure_twice_in_a_batch_is_reported_once() {
    let aws = Memory::new();
    failure(&aws, "i-0abcd1234ef567890", true);
    let out = run(
        &aws,
        batch(vec![
            event_message("m1", "i-0abcd1234ef567890", Duration::minutes(1)),
            event_message("m2", "i-0abcd1234ef567890", Duration::minutes(1)),
        ]),
    )
    .await;
    assert!(out.failed.is_empty());
    assert_eq!(aws.world().published.len(), 1);
}

#[tokio::test]
async fn at_the_deadline_every_message_goes_back_untouched() {
    let aws = Memory::new();
    failure(&aws, "i-0abcd1234ef567890", true);
    let out = run_at(
        &aws,
        batch(vec![event_message("m1", "i-0abcd1234ef567890", Duration::minutes(1))]),
        Some(std::time::Instant::now()),
    )
    .await;
    assert_eq!(out.failed, ["m1"]);
    assert!(aws.world().published.is_empty());
    assert_eq!(aws.count("ec2:DescribeInstances"), 0);
}

#[tokio::test]
async fn a_storm_in_one_region_costs_a_handful_of_calls() {
    let aws = Memory::new();
    let ids: Vec<String> = (0..40).map(|n| format!("i-{n:017x}")).collect();
    for id in &ids {
        failure(&aws, id, true);
    }
    let messages =
        ids.iter().enumerate().map(|(n, id)| event_message(&format!("m{n}"), id, Duration::minutes(1))).collect();
    let out = run(&aws, batch(messages)).await;
    assert!(out.failed.is_empty());
    assert_eq!(out.metrics.findings_by_cause.get("caller-lacks-create-grant"), Some(&40));
    assert_eq!(aws.count("ec2:DescribeInstances"), 1);
    assert_eq!(aws.count("ec2:DescribeVolumes"), 1);
    assert_eq!(aws.count("kms:DescribeKey"), 1, "one key, asked once");
    assert_eq!(aws.count("iam:SimulatePrincipalPolicy"), 1, "one caller, simulated once");
    let lookups = aws.world().lookups.clone();
    assert!(
        lookups.iter().all(|k| matches!(k, crate::ports::TrailKey::EventName(_))),
        "a storm is searched by event name over one window, not instance by instance: {lookups:?}"
    );
    // Security Hub's GetFindings takes 20 Ids a call, PutEvents 10 entries: 40 findings, 2 and 4.
    assert_eq!(aws.count("securityhub:GetFindings"), 2);
    assert_eq!(aws.count("securityhub:BatchImportFindings"), 2);
    assert_eq!(aws.count("events:PutEvents"), 4);
}
