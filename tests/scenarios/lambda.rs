//! The real binary in Lambda mode (against a Runtime API stub): SQS batches from the SAM
//! template's queue, late CloudTrail records, and sink failures.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::{ec2_full_access, sample_event};
use crate::common::runtime_api::RuntimeApi;
use crate::common::*;

/// `events/sqs-batch.json` carrying `event` in a real message of `queue`.
pub(crate) async fn sqs_batch(
    s: &Scenario,
    queue_url: &str,
    queue_arn: &str,
    event: &Value,
    receive_count: u32,
) -> Value {
    s.sqs.send_message().queue_url(queue_url).message_body(event.to_string()).send().await.unwrap();
    let got = s
        .sqs
        .receive_message()
        .queue_url(queue_url)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    batch_for(s, &got.messages()[0], queue_arn, receive_count)
}

/// `events/sqs-batch.json` carrying one received message, as Lambda's poller would.
fn batch_for(s: &Scenario, m: &aws_sdk_sqs::types::Message, queue_arn: &str, receive_count: u32) -> Value {
    let mut batch: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/sqs-batch.json")).unwrap()).unwrap();
    let rec = &mut batch["Records"][0];
    rec["messageId"] = json!(m.message_id().unwrap());
    rec["receiptHandle"] = json!(m.receipt_handle().unwrap());
    rec["body"] = json!(m.body().unwrap());
    rec["eventSourceARN"] = json!(queue_arn);
    rec["awsRegion"] = json!(s.region);
    rec["attributes"]["ApproximateReceiveCount"] = json!(receive_count.to_string());
    // SQS's own clock: when the queue first received the message.
    let sent = m
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp))
        .cloned()
        .unwrap_or_else(|| Utc::now().timestamp_millis().to_string());
    rec["attributes"]["SentTimestamp"] = json!(sent);
    batch
}

/// Makes the batch's messages look first received by SQS `ago` before now.
pub(crate) fn sent_ago(batch: &mut Value, ago: Duration) {
    for r in batch["Records"].as_array_mut().unwrap() {
        r["attributes"]["SentTimestamp"] = json!((Utc::now() - ago).timestamp_millis().to_string());
    }
}

/// What Lambda's poller does with a message the function did not report as failed.
async fn delete_handled(s: &Scenario, queue_url: &str, batch: &Value) {
    let handle = batch["Records"][0]["receiptHandle"].as_str().unwrap();
    s.sqs.delete_message().queue_url(queue_url).receipt_handle(handle).send().await.unwrap();
}

pub(crate) fn lines_with(stdout: &str, message: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["message"] == message).collect()
}

pub(crate) fn finding_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["message"] == "finding").collect()
}

/// Runs the binary in Lambda mode over `events`; returns the outcomes and its stdout.
pub(crate) fn invoke(region: &str, events: Vec<Value>, env: &[(&str, &str)]) -> (Vec<runtime_api::Outcome>, String) {
    let (outcomes, stdout, _) = invoke_all(region, events, env);
    (outcomes, stdout)
}

/// Runs the binary in Lambda mode over `events`; returns the outcomes, stdout and stderr.
/// Output is drained while the function runs: a full pipe would stall it.
fn invoke_all(region: &str, events: Vec<Value>, env: &[(&str, &str)]) -> (Vec<runtime_api::Outcome>, String, String) {
    use std::io::Read;
    fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    }
    let n = events.len();
    let budget: i64 =
        env.iter().find(|(k, _)| *k == "TEST_INVOCATION_BUDGET_MS").and_then(|(_, v)| v.parse().ok()).unwrap_or(60_000);
    let runtime = RuntimeApi::start_with_budget(events, budget);
    let mut child = lambda_process_with(&runtime, region, env);
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let mut outcomes = Vec::new();
    let mut timed_out = false;
    for _ in 0..n {
        match runtime.outcomes.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(o) => outcomes.push(o),
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    if timed_out {
        let tail: Vec<&str> = stdout.lines().rev().take(5).collect();
        panic!("no outcome for invocation {} within 120 s; last log lines:\n{}", outcomes.len(), tail.join("\n"));
    }
    (outcomes, stdout, stderr)
}

/// An SQS batch (events/sqs-batch.json as template) carrying `events`, without a real queue.
pub(crate) fn batch_of(events: &[Value], region: &str) -> Value {
    let mut batch: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/sqs-batch.json")).unwrap()).unwrap();
    let template = batch["Records"][0].clone();
    let records: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut r = template.clone();
            r["messageId"] = json!(format!("msg-{i}-{}", e["detail"]["instance-id"].as_str().unwrap_or("x")));
            r["body"] = json!(e.to_string());
            r["awsRegion"] = json!(region);
            r["attributes"]["SentTimestamp"] = json!(Utc::now().timestamp_millis().to_string());
            r
        })
        .collect();
    batch["Records"] = json!(records);
    batch
}

pub(crate) fn event_for(instance: &str, region: &str, state: &str) -> Value {
    let mut e: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/stopped.json")).unwrap()).unwrap();
    e["detail"] = json!({"instance-id": instance, "state": state});
    e["region"] = json!(region);
    e["time"] = json!(rfc3339(Utc::now()));
    e["resources"] = json!([format!("arn:aws:ec2:{region}:{ACCOUNT}:instance/{instance}")]);
    e
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

    // First delivery: no StartInstances record in CloudTrail yet. The event goes back on the
    // queue as a deferred event carrying what this look learned; the message in hand is done.
    let first = sqs_batch(&s, &queue_url, &queue_arn, &event, 1).await;
    s.reset_calls();
    let (outcomes, stdout) = invoke(&s.region, vec![first.clone()], &[("EVENTS_QUEUE_URL", &queue_url)]);
    assert_eq!(outcomes[0].kind, "response");
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}));
    assert!(finding_lines(&stdout).is_empty(), "no finding before the record arrives:\n{stdout}");
    assert!(s.calls().iter().any(|c| c == "sqs:SendMessage"), "deferred by a message of its own");
    let deferred: Vec<Value> =
        queued(&s, &queue_url).into_iter().filter(|m| m["kms-launch-doctor"] == "deferred/1").collect();
    assert_eq!(deferred.len(), 1);

    // The record arrives; the deferred event comes back: one finding, no failure.
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "late-dev"),
        Duration::minutes(2),
    )]);
    let mut second = first;
    second["Records"][0]["body"] = json!(deferred[0].to_string());
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
    let mut batch = sqs_batch(&s, &queue_url, &queue_arn, &event, 9).await;
    // The budget runs from when SQS first received the event, 30 minutes ago.
    sent_ago(&mut batch, Duration::minutes(30));
    let (outcomes, stdout) =
        invoke(&s.region, vec![batch], &[("EVENTS_QUEUE_URL", &queue_url), ("CLOUDTRAIL_WAIT_MINUTES", "20")]);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}));
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["finding"]["causes"][0]["code"], "caller-unknown");
}

#[tokio::test]
async fn an_event_claiming_to_be_old_still_waits_for_cloudtrail() {
    // Issue 12: the wait is measured from SQS's SentTimestamp, not from the event's own `time`,
    // which a sender chooses. Forged 30 minutes old, received now: deferred, no finding.
    let s = Scenario::new("oldclaim").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let (queue_url, queue_arn) = s.queue("oldclaim-events").await;
    let mut event = event_for(&instance, &s.region, "stopped");
    event["time"] = json!(rfc3339(Utc::now() - Duration::minutes(30)));
    let batch = sqs_batch(&s, &queue_url, &queue_arn, &event, 1).await;
    let (outcomes, stdout) =
        invoke(&s.region, vec![batch], &[("EVENTS_QUEUE_URL", &queue_url), ("CLOUDTRAIL_WAIT_MINUTES", "20")]);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    assert!(finding_lines(&stdout).is_empty(), "{stdout}");
    let deferred: Vec<Value> =
        queued(&s, &queue_url).into_iter().filter(|m| m["kms-launch-doctor"] == "deferred/1").collect();
    assert_eq!(deferred.len(), 1, "deferred, not reported: {stdout}");
}

#[tokio::test]
async fn events_in_the_future_or_older_than_the_queue_keeps_them_are_skipped_with_a_reason() {
    let s = Scenario::new("badtime").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let mut future = event_for(&instance, &s.region, "stopped");
    future["time"] = json!(rfc3339(Utc::now() + Duration::hours(2)));
    let mut ancient = event_for(&instance, &s.region, "stopped");
    ancient["time"] = json!(rfc3339(Utc::now() - Duration::days(5)));
    for (event, why) in [(future, "in the future"), (ancient, "older than the queue keeps messages")] {
        let (outcomes, stdout) = invoke(&s.region, vec![batch_of(&[event], &s.region)], &[]);
        assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
        assert!(finding_lines(&stdout).is_empty(), "{stdout}");
        let skips = lines_with(&stdout, "event skipped");
        assert_eq!(skips.len(), 1, "{stdout}");
        assert_eq!(skips[0]["level"], "WARN");
        assert!(skips[0]["reason"].as_str().unwrap().contains(why), "{:#}", skips[0]);
    }
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

#[tokio::test]
async fn duplicate_and_reordered_events_give_one_finding_and_one_write() {
    let a = super::article_isolated("dupes").await;
    let user = a.user_arn.rsplit('/').next().unwrap().to_owned();
    a.s.iam
        .tag_user()
        .user_name(&user)
        .tags(aws_sdk_iam::types::Tag::builder().key("kms-launch-doctor:auto-remediate").value("true").build().unwrap())
        .send()
        .await
        .unwrap();
    super::remediation::opt_in_key(&a.s, &a.key, "kms-launch-doctor:auto-remediate").await;
    // A terminated event before the stopped one, and the stopped one twice.
    let events = [
        event_for(&a.instance, &a.s.region, "terminated"),
        event_for(&a.instance, &a.s.region, "stopped"),
        event_for(&a.instance, &a.s.region, "stopped"),
    ];
    let batch = batch_of(&events, &a.s.region);
    a.s.reset_calls();
    // The same batch delivered twice (SQS is at-least-once).
    let (outcomes, stdout) = invoke(&a.s.region, vec![batch.clone(), batch], &[("REMEDIATION_MODE", "apply")]);
    for o in &outcomes {
        assert_eq!(o.body, json!({"batchItemFailures": []}));
    }
    let lines = finding_lines(&stdout);
    let ids: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["finding"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one finding id: {stdout}");
    assert_eq!(lines.len(), 2, "one finding per delivery of the batch, not per event");
    let statuses: Vec<&str> =
        lines.iter().map(|l| l["finding"]["remediations"][0]["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["applied", "unchanged"]);
    let causes: std::collections::BTreeSet<&str> =
        lines.iter().map(|l| l["finding"]["causes"][0]["code"].as_str().unwrap()).collect();
    assert_eq!(causes.len(), 1, "no contradictory report");
    assert_eq!(a.s.calls().iter().filter(|c| *c == "iam:PutUserPolicy").count(), 1, "at most one policy write");
}

#[tokio::test]
async fn a_storm_of_200_failures_is_diagnosed_within_cloudtrail_limits() {
    let s = Scenario::isolated("storm200").await;
    let key = s.key(None).await;
    let user_arn = s.user("storm200-dev", &[("ec2-full", ec2_full_access())]).await;
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};
    let mut ids = Vec::new();
    for _ in 0..2 {
        let run = s
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(100)
            .max_count(100)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(EbsBlockDevice::builder().volume_size(8).encrypted(true).kms_key_id(&key).build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        ids.extend(run.instances().iter().map(|i| i.instance_id().unwrap().to_owned()));
    }
    let identity = iam_user_identity(&user_arn, "storm200-dev");
    let mut records = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        s.fail_launch(id, "stopped");
        let ago = Duration::minutes(1 + (n as i64 % 40));
        records.push(s.launch_record("StartInstances", id, identity.clone(), ago));
        records.push(s.denied_grant(&key, identity.clone(), &user_arn, ago - Duration::seconds(2)));
    }
    s.trail(records);
    // 200 events within a minute, as four SQS batches of 50.
    let events: Vec<Value> = ids.iter().map(|id| event_for(id, &s.region, "stopped")).collect();
    let batches: Vec<Value> = events.chunks(50).map(|c| batch_of(c, &s.region)).collect();
    s.reset_calls();
    let (outcomes, stdout) = invoke(&s.region, batches, &[]);
    assert!(outcomes.iter().all(|o| o.body == json!({"batchItemFailures": []})));
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|l| l["finding"]["causes"][0]["code"] == "caller-lacks-create-grant"));

    // CloudTrail stays within 2 requests per second: no one-second window holds more than two.
    let calls = http("GET", &format!("/_kld/calls?region={}&action=LookupEvents", s.region), None);
    let times: Vec<f64> = calls["calls"].as_array().unwrap().iter().map(|c| c["time"].as_f64().unwrap()).collect();
    assert!(!times.is_empty());
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 1.0).count();
        assert!(in_window <= 2, "{in_window} LookupEvents within one second: {times:?}");
    }
    // Each invocation pages through the window once per event name (StartInstances, RunInstances,
    // CreateGrant: 400 records here), whatever the number of events in its batch.
    assert!(times.len() <= 4 * 10, "at most 10 LookupEvents per invocation: {}", times.len());
}

#[tokio::test]
async fn no_credential_reaches_the_logs() {
    let a = super::article("secrets").await;
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &a.instance, &a.s.region)).unwrap())
            .unwrap();
    let secret = format!("kld-secret-{}", std::process::id());
    let token = format!("kld-token-{}", std::process::id());
    for level in ["info", "debug"] {
        let (outcomes, stdout, stderr) = invoke_all(
            &a.s.region,
            vec![event.clone()],
            &[("AWS_SECRET_ACCESS_KEY", secret.as_str()), ("AWS_SESSION_TOKEN", token.as_str()), ("LOG_LEVEL", level)],
        );
        assert_eq!(outcomes[0].kind, "response");
        for out in [&stdout, &stderr] {
            assert!(!out.contains(&secret) && !out.contains(&token), "a credential was logged at {level}");
        }
        // Only the caller's own policy document (the fix) appears; the key policy is never logged.
        assert!(!stdout.contains("\"kms:*\""), "the key policy was logged at {level}");
    }
}

/// One sink fails after another succeeded: the event is done, the unsent part waits on the
/// queue, and its retries reach only the sink that lacks the finding, once.
#[tokio::test]
async fn a_failed_sink_is_retried_alone_and_no_sink_gets_the_finding_twice() {
    let a = super::article_isolated("redeliver").await;
    let s = &a.s;
    let (topic, sns_inbox) = s.topic_with_queue("kld-redeliver-topic").await;
    let (bus, bus_inbox) = s.bus_with_queue("kld-redeliver-bus").await;
    let (queue_url, queue_arn) = s.queue("redeliver-events").await;
    let env = [
        ("FINDINGS_TOPIC_ARN", topic.as_str()),
        ("FINDINGS_EVENT_BUS", bus.as_str()),
        ("EVENTS_QUEUE_URL", queue_url.as_str()),
        ("KLD_REDELIVERY_DELAY_SECONDS", "0"),
    ];
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &a.instance, &s.region)).unwrap())
            .unwrap();
    let denied = json!({"service": "events", "action": "PutEvents", "code": "AccessDeniedException",
        "message": "not authorized to perform events:PutEvents", "times": 1});

    // EventBridge refuses; SNS takes it. The event is done (not a batch failure).
    let first = sqs_batch(s, &queue_url, &queue_arn, &event, 1).await;
    s.fault(denied.clone());
    let (outcomes, stdout) = invoke(&s.region, vec![first.clone()], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    delete_handled(s, &queue_url, &first).await;
    let findings = finding_lines(&stdout);
    assert_eq!(findings.len(), 1, "{stdout}");
    let finding_id = findings[0]["finding"]["id"].as_str().unwrap().to_owned();
    assert!(findings[0]["finding"]["delivered"]["sns"].is_string(), "{:#}", findings[0]);
    assert!(findings[0]["finding"]["delivered"].get("eventbridge").is_none(), "{:#}", findings[0]);
    assert_eq!(s.drain(&sns_inbox).await.len(), 1);
    assert!(s.drain(&bus_inbox).await.is_empty());

    // What waits on the queue is the unsent EventBridge entry, not the event.
    let queued = s.sqs.receive_message().queue_url(&queue_url).wait_time_seconds(2).send().await.unwrap();
    assert_eq!(queued.messages().len(), 1, "exactly the remainder is queued");
    let body: Value = serde_json::from_str(queued.messages()[0].body().unwrap()).unwrap();
    assert_eq!(body["kms-launch-doctor"], "redelivery/1", "{body:#}");
    assert_eq!(body["outbox"]["finding_id"], finding_id.as_str());
    assert!(body["outbox"].get("sns").is_none(), "SNS has it already: {body:#}");
    assert!(body["outbox"]["eventbridge"]["detail"].is_string(), "{body:#}");

    // Still refused: no progress, so the same message is a batch failure and nothing is
    // queued in its place.
    let second = batch_for(s, &queued.messages()[0], &queue_arn, 1);
    let second_id = second["Records"][0]["messageId"].as_str().unwrap().to_owned();
    s.fault(denied);
    s.reset_calls();
    let (outcomes, stdout) = invoke(&s.region, vec![second.clone()], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": [{"itemIdentifier": second_id}]}), "{stdout}");
    assert!(!s.calls().iter().any(|c| c == "sqs:SendMessage"), "nothing requeued without progress");
    assert!(finding_lines(&stdout).is_empty(), "the finding is not logged again:\n{stdout}");
    assert!(s.drain(&sns_inbox).await.is_empty(), "SNS not sent again");

    // The same message comes back and EventBridge takes it: done, nothing left, SNS untouched.
    s.reset_calls();
    let (outcomes, stdout) = invoke(&s.region, vec![second], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let redelivered = lines_with(&stdout, "finding redelivered");
    assert_eq!(redelivered.len(), 1, "{stdout}");
    assert_eq!(redelivered[0]["finding_id"], finding_id.as_str());
    assert_eq!(redelivered[0]["pending"], json!([]));
    assert!(finding_lines(&stdout).is_empty(), "the finding is logged once, on the first attempt");
    assert!(!s.calls().iter().any(|c| c.starts_with("ec2:") || c.starts_with("cloudtrail:")), "not diagnosed again");
    let events = s.drain(&bus_inbox).await;
    assert_eq!(events.len(), 1);
    let event: Value = serde_json::from_str(events[0].body().unwrap()).unwrap();
    assert_eq!(event["detail"]["id"], finding_id.as_str(), "{event:#}");
    assert!(s.drain(&sns_inbox).await.is_empty(), "SNS got the finding once in all");
}

/// When the unsent part cannot be queued, nothing is dropped: the whole event is retried.
#[tokio::test]
async fn if_the_unsent_part_cannot_be_queued_the_event_is_retried_whole() {
    let a = super::article_isolated("requeuefail").await;
    let s = &a.s;
    let (bus, bus_inbox) = s.bus_with_queue("kld-requeuefail-bus").await;
    let (queue_url, queue_arn) = s.queue("requeuefail-events").await;
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &a.instance, &s.region)).unwrap())
            .unwrap();
    let batch = sqs_batch(s, &queue_url, &queue_arn, &event, 1).await;
    let message_id = batch["Records"][0]["messageId"].as_str().unwrap().to_owned();
    s.fault(json!({"service": "events", "action": "PutEvents", "code": "AccessDeniedException", "times": 1}));
    s.fault(json!({"service": "sqs", "action": "SendMessage", "code": "AccessDenied", "times": 1}));
    let (outcomes, stdout) = invoke(
        &s.region,
        vec![batch],
        &[("FINDINGS_EVENT_BUS", &bus), ("EVENTS_QUEUE_URL", &queue_url), ("KLD_REDELIVERY_DELAY_SECONDS", "0")],
    );
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": [{"itemIdentifier": message_id}]}), "{stdout}");
    assert!(stdout.contains("could not queue the unsent delivery"), "{stdout}");
    assert!(s.drain(&bus_inbox).await.is_empty());
}

// ---- Issue 15: deadlines, facts that survive the wait, CloudTrail's budget, ordered findings --

/// What the function has put on its queue (delayed messages included).
fn queued(s: &Scenario, queue_url: &str) -> Vec<Value> {
    let name = queue_url.rsplit('/').next().unwrap();
    let got = http("GET", &format!("/_kld/sqs/messages?queue_name={name}&region={}", s.region), None);
    got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str(m["body"].as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn with_no_time_left_every_event_goes_back_unfinished_before_the_deadline() {
    let s = Scenario::isolated("deadline").await;
    let key = s.key(None).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        let i = s.instance(&[Some(&key)]).await;
        s.fail_launch(&i, "stopped");
        events.push(event_for(&i, &s.region, "stopped"));
    }
    let batch = batch_of(&events, &s.region);
    let ids: Vec<Value> =
        batch["Records"].as_array().unwrap().iter().map(|r| json!({"itemIdentifier": r["messageId"]})).collect();
    // The deadline 5 s after the invocation starts, and a 5 s safety margin: nothing may start.
    s.reset_calls();
    let started = std::time::Instant::now();
    let (outcomes, stdout) = invoke(
        &s.region,
        vec![batch.clone()],
        &[("TEST_INVOCATION_BUDGET_MS", "5000"), ("DEADLINE_MARGIN_SECONDS", "5")],
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "answered after the deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(outcomes[0].kind, "response");
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": ids}), "{stdout}");
    assert!(finding_lines(&stdout).is_empty(), "{stdout}");
    assert!(!s.calls().iter().any(|c| c == "cloudtrail:LookupEvents"), "{:?}", s.calls());

    // With time, the same batch is diagnosed (and deferred: no launch record yet).
    let (queue_url, _) = s.queue("deadline-events").await;
    let (outcomes, stdout) = invoke(&s.region, vec![batch], &[("EVENTS_QUEUE_URL", &queue_url)]);
    assert_eq!(outcomes[0].kind, "response", "{stdout}");
    assert_eq!(
        lines_with(&stdout, "launch record not in CloudTrail yet: deferred with what is known").len(),
        3,
        "{stdout}"
    );
}

#[tokio::test]
async fn a_deferred_event_whose_instance_has_started_since_still_yields_its_finding() {
    let s = Scenario::new("deferstart").await;
    let key = s.key(None).await;
    let user_arn = s.user("deferstart-dev", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let (queue_url, queue_arn) = s.queue("deferstart-events").await;
    let event = event_for(&instance, &s.region, "stopped");
    let first = sqs_batch(&s, &queue_url, &queue_arn, &event, 1).await;
    let env = [("EVENTS_QUEUE_URL", queue_url.as_str())];
    let (outcomes, stdout) = invoke(&s.region, vec![first.clone()], &env);
    // Deferred by a message of its own: the one in hand is done.
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    assert!(finding_lines(&stdout).is_empty(), "{stdout}");
    let deferred: Vec<Value> =
        queued(&s, &queue_url).into_iter().filter(|m| m["kms-launch-doctor"] == "deferred/1").collect();
    assert_eq!(deferred.len(), 1, "{deferred:#?}");
    assert_eq!(deferred[0]["snapshot"]["instance"]["id"], instance.as_str());
    assert_eq!(deferred[0]["snapshot"]["volumes"][0]["kms_key_arn"], key.as_str());

    // Meanwhile someone started the instance again, and the launch record arrived.
    s.ec2.start_instances().instance_ids(&instance).send().await.unwrap();
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "deferstart-dev"),
        Duration::minutes(2),
    )]);
    let mut later = first;
    later["Records"][0]["body"] = json!(deferred[0].to_string());
    later["Records"][0]["messageId"] = json!("deferred-1");
    let env = [("EVENTS_QUEUE_URL", queue_url.as_str()), ("SECURITY_HUB", "on")];
    let (outcomes, stdout) = invoke(&s.region, vec![later], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), 1, "the finding, decided on what the first look saw: {stdout}");
    let f = &lines[0]["finding"];
    assert_eq!(f["instance_state"], "stopped");
    assert_eq!(f["causes"][0]["code"], "caller-lacks-create-grant", "{f:#}");
    assert_eq!(f["launch"]["caller"]["principal_arn"], user_arn.as_str());
    // The instance runs now: the record is kept, but born resolved (its `running` event has
    // passed, and nothing would archive it later).
    let all = s.securityhub.get_findings().send().await.unwrap();
    let record = all.findings().iter().find(|x| x.id() == f["id"].as_str()).expect("in Security Hub");
    assert_eq!(record.record_state().unwrap().as_str(), "ARCHIVED");
    assert_eq!(record.compliance().and_then(|c| c.status()).unwrap().as_str(), "PASSED");
}

#[tokio::test]
async fn a_throttled_cloudtrail_defers_instead_of_reporting_caller_unknown() {
    let s = Scenario::new("trailthrottle").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let (queue_url, queue_arn) = s.queue("trailthrottle-events").await;
    let mut event = event_for(&instance, &s.region, "stopped");
    event["time"] = json!(rfc3339(Utc::now() - Duration::minutes(25)));
    let mut batch = sqs_batch(&s, &queue_url, &queue_arn, &event, 6).await;
    // Past the 20-minute budget, but CloudTrail answered every attempt with throttling.
    sent_ago(&mut batch, Duration::minutes(25));
    // Only this instance's lookups (its id is in the request), in a shared region.
    let fault = http(
        "POST",
        "/_kld/faults",
        Some(&json!({"service": "cloudtrail", "action": "LookupEvents", "region": s.region,
        "match": instance, "code": "ThrottlingException", "message": "Rate exceeded"})),
    );
    let (outcomes, stdout) =
        invoke(&s.region, vec![batch], &[("EVENTS_QUEUE_URL", &queue_url), ("CLOUDTRAIL_WAIT_MINUTES", "20")]);
    http("DELETE", &format!("/_kld/faults/{}", fault["id"].as_str().unwrap()), None);
    assert_eq!(outcomes[0].kind, "response");
    assert!(finding_lines(&stdout).is_empty(), "no caller-unknown from a lookup that failed: {stdout}");
    assert!(queued(&s, &queue_url).iter().any(|m| m["kms-launch-doctor"] == "deferred/1"), "deferred");
    // The metrics line counts the throttles and the deferral.
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert!(emf.iter().any(|m| m["CloudTrailThrottles"].as_u64().unwrap_or(0) >= 1 && m["Deferrals"] == 1), "{emf:#?}");
}

#[tokio::test]
async fn a_stale_redelivery_never_overwrites_a_newer_security_hub_finding() {
    let a = super::article("stalehub").await;
    let (queue_url, queue_arn) = a.s.queue("stalehub-events").await;
    let env = [("SECURITY_HUB", "on"), ("EVENTS_QUEUE_URL", queue_url.as_str())];
    let event = event_for(&a.instance, &a.s.region, "stopped");

    // First decision (T1): Security Hub refuses it once, so its delivery goes back on the queue.
    // Only this finding's import (its instance id is in the request), in a shared region.
    a.s.fault(json!({"service": "securityhub", "action": "BatchImportFindings", "region": a.s.region, "times": 1,
        "match": a.instance, "status": 400, "code": "InvalidInputException", "message": "refused once"}));
    let first = sqs_batch(&a.s, &queue_url, &queue_arn, &event, 1).await;
    let (outcomes, stdout) = invoke(&a.s.region, vec![first.clone()], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let stale: Vec<Value> =
        queued(&a.s, &queue_url).into_iter().filter(|m| m["kms-launch-doctor"] == "redelivery/1").collect();
    assert_eq!(stale.len(), 1, "{stdout}");
    let t1 = stale[0]["outbox"]["security_hub"]["UpdatedAt"].as_str().unwrap().to_owned();

    // A later decision of the same finding (T2 > T1) reaches Security Hub.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (outcomes, stdout) = invoke(&a.s.region, vec![first.clone()], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let id = finding_lines(&stdout)[0]["finding"]["id"].as_str().unwrap().to_owned();
    let stored = |found: &aws_sdk_securityhub::operation::get_findings::GetFindingsOutput| {
        found
            .findings()
            .iter()
            .find(|f| f.id() == Some(id.as_str()))
            .map(|f| f.updated_at().unwrap_or_default().to_owned())
    };
    let t2 = stored(&a.s.securityhub.get_findings().send().await.unwrap()).unwrap();
    assert!(t2 > t1, "{t2} after {t1}");

    // Now the stale remainder is delivered: it must not overwrite the newer finding.
    let mut redelivery = first;
    redelivery["Records"][0]["body"] = json!(stale[0].to_string());
    redelivery["Records"][0]["messageId"] = json!("stale-1");
    let (outcomes, stdout) = invoke(&a.s.region, vec![redelivery], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    assert_eq!(stored(&a.s.securityhub.get_findings().send().await.unwrap()).unwrap(), t2);
    let log = lines_with(&stdout, "finding redelivered");
    assert_eq!(log[0]["delivered"]["security_hub"], "newer finding kept", "{stdout}");
}

#[tokio::test]
async fn a_batch_of_findings_reaches_security_hub_and_eventbridge_in_few_calls() {
    // 12 failures settled together: Security Hub's GetFindings takes 20 Ids a call and
    // BatchImportFindings 100 findings, EventBridge's PutEvents 10 entries.
    // The function counts its own calls (KLD_CALL_STATS): a shared region will do.
    let s = Scenario::new("sinkbatch").await;
    let key = s.key(None).await;
    let user_arn = s.user("sinkbatch-dev", &[("ec2-full", ec2_full_access())]).await;
    let (bus, _) = s.bus_with_queue("sinkbatch-bus").await;
    let mut events = Vec::new();
    let mut records = Vec::new();
    for _ in 0..12 {
        let i = s.instance(&[Some(&key)]).await;
        s.fail_launch(&i, "stopped");
        records.push(s.launch_record(
            "StartInstances",
            &i,
            iam_user_identity(&user_arn, "sinkbatch-dev"),
            Duration::minutes(3),
        ));
        events.push(event_for(&i, &s.region, "stopped"));
    }
    s.trail(records);
    let (outcomes, stdout) = invoke(
        &s.region,
        vec![batch_of(&events, &s.region)],
        &[("SECURITY_HUB", "on"), ("FINDINGS_EVENT_BUS", &bus), ("KLD_CALL_STATS", "1")],
    );
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), 12, "{stdout}");
    assert!(
        lines.iter().all(|l| l["finding"]["delivered"]["security_hub"] == "ok"
            && l["finding"]["delivered"]["eventbridge"].is_string()),
        "{stdout}"
    );
    let stats = lines_with(&stdout, "api calls");
    let calls = &stats[0]["stats"]["api_calls"];
    assert_eq!(calls["securityhub:GetFindings"], 1, "{calls:#}");
    assert_eq!(calls["securityhub:BatchImportFindings"], 1, "{calls:#}");
    assert_eq!(calls["eventbridge:PutEvents"], 2, "{calls:#}");
    let found = s.securityhub.get_findings().send().await.unwrap();
    let ids: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["finding"]["id"].as_str().unwrap()).collect();
    assert_eq!(found.findings().iter().filter(|f| f.id().is_some_and(|id| ids.contains(id))).count(), 12);
}
