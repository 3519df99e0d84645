//! The real binary in Lambda mode (against a Runtime API stub): SQS batches from the SAM
//! template's queue, late CloudTrail records, and sink failures.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::{ec2_full_access, sample_event};
use crate::common::runtime_api::RuntimeApi;
use crate::common::*;

/// `events/sqs-batch.json` carrying `event` in a real message of `queue`.
async fn sqs_batch(s: &Scenario, queue_url: &str, queue_arn: &str, event: &Value, receive_count: u32) -> Value {
    s.sqs.send_message().queue_url(queue_url).message_body(event.to_string()).send().await.unwrap();
    let got = s.sqs.receive_message().queue_url(queue_url).wait_time_seconds(2).send().await.unwrap();
    let m = &got.messages()[0];
    let mut batch: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/sqs-batch.json")).unwrap()).unwrap();
    let rec = &mut batch["Records"][0];
    rec["messageId"] = json!(m.message_id().unwrap());
    rec["receiptHandle"] = json!(m.receipt_handle().unwrap());
    rec["body"] = json!(event.to_string());
    rec["eventSourceARN"] = json!(queue_arn);
    rec["awsRegion"] = json!(s.region);
    rec["attributes"]["ApproximateReceiveCount"] = json!(receive_count.to_string());
    batch
}

fn finding_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["message"] == "finding").collect()
}

/// Runs the binary in Lambda mode over `events`; returns the outcomes and its stdout.
fn invoke(region: &str, events: Vec<Value>, env: &[(&str, &str)]) -> (Vec<runtime_api::Outcome>, String) {
    use std::io::Read;
    let n = events.len();
    let runtime = RuntimeApi::start(events);
    let mut child = lambda_process_with(&runtime, region, env);
    let outcomes: Vec<_> = (0..n)
        .map(|_| runtime.outcomes.recv_timeout(std::time::Duration::from_secs(90)).expect("an invocation outcome"))
        .collect();
    child.kill().unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let _ = child.wait();
    (outcomes, stdout)
}

use crate::common::runtime_api;

#[tokio::test]
async fn a_late_cloudtrail_record_is_retried_then_diagnosed_once() {
    let s = Scenario::isolated("late").await;
    let key = s.key(None).await;
    let user_arn = s.user("late-dev", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let (queue_url, queue_arn) = s.queue("late-events").await;
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &instance, &s.region)).unwrap())
            .unwrap();

    // First delivery: no StartInstances record in CloudTrail yet.
    let first = sqs_batch(&s, &queue_url, &queue_arn, &event, 1).await;
    let message_id = first["Records"][0]["messageId"].as_str().unwrap().to_owned();
    s.reset_calls();
    let (outcomes, stdout) = invoke(&s.region, vec![first], &[("EVENTS_QUEUE_URL", &queue_url)]);
    assert_eq!(outcomes[0].kind, "response");
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": [{"itemIdentifier": message_id}]}));
    assert!(finding_lines(&stdout).is_empty(), "no finding before the record arrives:\n{stdout}");
    assert!(s.calls().iter().any(|c| c == "sqs:ChangeMessageVisibility"), "visibility extended for backoff");

    // The record arrives; the message comes back: one finding, no failure.
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "late-dev"),
        Duration::minutes(2),
    )]);
    let second = sqs_batch(&s, &queue_url, &queue_arn, &event, 2).await;
    let (outcomes, stdout) = invoke(&s.region, vec![second], &[("EVENTS_QUEUE_URL", &queue_url)]);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}));
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["finding"]["causes"][0]["code"], "caller-lacks-create-grant");
    assert_eq!(lines[0]["finding"]["launch"]["caller"]["principal_arn"], user_arn.as_str());
}

#[tokio::test]
async fn after_the_wait_budget_the_finding_is_caller_unknown() {
    let s = Scenario::new("budget").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let (queue_url, queue_arn) = s.queue("budget-events").await;
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &instance, &s.region)).unwrap())
            .unwrap();
    event["time"] = json!(rfc3339(Utc::now() - Duration::minutes(30)));
    let batch = sqs_batch(&s, &queue_url, &queue_arn, &event, 9).await;
    let (outcomes, stdout) =
        invoke(&s.region, vec![batch], &[("EVENTS_QUEUE_URL", &queue_url), ("CLOUDTRAIL_WAIT_MINUTES", "20")]);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}));
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["finding"]["causes"][0]["code"], "caller-unknown");
}

#[tokio::test]
async fn unusable_messages_do_not_block_the_batch() {
    let s = Scenario::new("badbatch").await;
    let mut batch: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/sqs-batch.json")).unwrap()).unwrap();
    let template = batch["Records"][0].clone();
    let mut records = Vec::new();
    for (i, body) in [
        "{not json",
        &std::fs::read_to_string(root().join("events/not-ec2.json")).unwrap(),
        &std::fs::read_to_string(root().join("events/running.json")).unwrap(),
    ]
    .iter()
    .enumerate()
    {
        let mut r = template.clone();
        r["messageId"] = json!(format!("m-{i}"));
        r["body"] = json!(body);
        records.push(r);
    }
    batch["Records"] = json!(records);
    let (outcomes, stdout) = invoke(&s.region, vec![batch], &[]);
    assert_eq!(outcomes[0].kind, "response", "{:#}", outcomes[0].body);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}));
    assert!(finding_lines(&stdout).is_empty());
}

#[tokio::test]
async fn a_sink_failure_fails_a_direct_invocation_after_the_other_sinks_ran() {
    let a = super::article("lambdasink").await;
    let (bus, inbox) = a.s.bus_with_queue("kld-lambdasink-bus").await;
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &a.instance, &a.s.region)).unwrap())
            .unwrap();
    let missing = format!("arn:aws:sns:{}:{ACCOUNT}:missing", a.s.region);
    let (outcomes, _) =
        invoke(&a.s.region, vec![event], &[("FINDINGS_TOPIC_ARN", &missing), ("FINDINGS_EVENT_BUS", &bus)]);
    assert_eq!(outcomes[0].kind, "error", "{:#}", outcomes[0].body);
    assert!(outcomes[0].body.to_string().contains("sns:Publish"), "{:#}", outcomes[0].body);
    assert_eq!(a.s.drain(&inbox).await.len(), 1, "EventBridge still delivered");
}
