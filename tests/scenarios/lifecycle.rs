//! Findings that resolve and findings that do not wait (issue 18): a `running` event archives
//! the instance's open Security Hub finding and says so on SNS and EventBridge; a key no caller
//! could get past is reported at the first look, before CloudTrail has the launch record.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::article;
use super::lambda::{batch_of, event_for, finding_lines, invoke, lines_with, sqs_batch};
use crate::common::*;

async fn hub_finding(s: &Scenario, id: &str) -> Option<aws_sdk_securityhub::types::AwsSecurityFinding> {
    let all = s.securityhub.get_findings().send().await.unwrap();
    all.findings().iter().find(|f| f.id() == Some(id)).cloned()
}

fn write_events(s: &Scenario, name: &str, events: &[Value]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("kld-{name}-{}-{}.json", s.region, uuid()));
    std::fs::write(&path, Value::Array(events.to_vec()).to_string()).unwrap();
    path
}

fn replay(s: &Scenario, file: &std::path::Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args: Vec<String> = ["replay", file.to_str().unwrap(), "--region", &s.region, "--format", "json"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    parse_output(run_tool(&args, &[]))
}

#[tokio::test]
async fn a_running_instance_archives_its_finding_and_leaves_others_open() {
    let a = article("resolve").await;
    let other = article("resolveother").await;
    let (topic, inbox) = a.s.topic_with_queue("kld-resolve-alerts").await;
    let (bus, bus_inbox) = a.s.bus_with_queue("kld-resolve-bus").await;
    // Both failures reported to Security Hub.
    let (code, report, stderr) = a.s.diagnose_with(&[&a.instance], &["--security-hub"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let id = only_finding(&report)["id"].as_str().unwrap().to_owned();
    let (code, report, stderr) = other.s.diagnose_with(&[&other.instance], &["--security-hub"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let other_id = only_finding(&report)["id"].as_str().unwrap().to_owned();
    assert_eq!(hub_finding(&a.s, &id).await.unwrap().record_state().unwrap().as_str(), "ACTIVE");

    // The first instance runs now (the operator fixed the key policy and started it).
    let mut running = event_for(&a.instance, &a.s.region, "running");
    running["time"] = json!(rfc3339(Utc::now() + Duration::seconds(1)));
    let file = write_events(&a.s, "running", &[running]);
    let (code, report, stderr) =
        replay(&a.s, &file, &["--security-hub", "--notify-topic", &topic, "--event-bus", &bus]);
    assert_eq!(code, 0, "{stderr}");
    assert!(report["findings"].as_array().unwrap().is_empty(), "{report:#}");
    let resolved = report["resolved"].as_array().unwrap();
    assert_eq!(resolved.len(), 1, "{report:#}");
    assert_eq!(resolved[0]["finding_id"], id.as_str());
    assert_eq!(resolved[0]["instance_id"], a.instance.as_str());

    let archived = hub_finding(&a.s, &id).await.unwrap();
    assert_eq!(archived.record_state().unwrap().as_str(), "ARCHIVED");
    assert_eq!(archived.compliance().and_then(|c| c.status()).unwrap().as_str(), "PASSED");
    let untouched = hub_finding(&other.s, &other_id).await.unwrap();
    assert_eq!(untouched.record_state().unwrap().as_str(), "ACTIVE", "another instance's finding stays open");

    let msgs = a.s.drain(&inbox).await;
    assert_eq!(msgs.len(), 1);
    let env: Value = serde_json::from_str(msgs[0].body().unwrap()).unwrap();
    assert!(env["Subject"].as_str().unwrap().starts_with("Resolved:"), "{env:#}");
    assert_eq!(env["MessageAttributes"]["finding_id"]["Value"], id.as_str());
    let events = a.s.drain(&bus_inbox).await;
    assert_eq!(events.len(), 1);
    let ev: Value = serde_json::from_str(events[0].body().unwrap()).unwrap();
    assert_eq!(ev["detail-type"], "EC2 Launch Failure Resolved");
    assert_eq!(ev["detail"]["finding_id"], id.as_str());

    // Told again (a redelivery): nothing is open any more, so nothing is sent.
    let (code, report, stderr) =
        replay(&a.s, &file, &["--security-hub", "--notify-topic", &topic, "--event-bus", &bus]);
    assert_eq!(code, 0, "{stderr}");
    assert!(report.get("resolved").is_none(), "{report:#}");
    assert!(a.s.drain(&inbox).await.is_empty());
}

#[tokio::test]
async fn running_events_of_a_batch_cost_one_lookup_and_instances_without_findings_cost_nothing_more() {
    let a = article("resolvebatch").await;
    let (code, report, stderr) = a.s.diagnose_with(&[&a.instance], &["--security-hub"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let id = only_finding(&report)["id"].as_str().unwrap().to_owned();
    // Five instances start; only one had a finding.
    let mut events = vec![event_for(&a.instance, &a.s.region, "running")];
    for _ in 0..4 {
        let i = a.s.instance(&[None]).await;
        events.push(event_for(&i, &a.s.region, "running"));
    }
    for e in &mut events {
        e["time"] = json!(rfc3339(Utc::now() + Duration::seconds(1)));
    }
    let batch = batch_of(&events, &a.s.region);
    let (outcomes, stdout) = invoke(&a.s.region, vec![batch], &[("SECURITY_HUB", "on"), ("KLD_CALL_STATS", "1")]);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let resolved = lines_with(&stdout, "finding resolved");
    assert_eq!(resolved.len(), 1, "{stdout}");
    assert_eq!(resolved[0]["finding_id"], id.as_str());
    let stats = &lines_with(&stdout, "api calls")[0]["stats"]["api_calls"];
    assert_eq!(stats["securityhub:GetFindings"], 1, "{stats:#}");
    assert_eq!(stats["securityhub:BatchImportFindings"], 1, "{stats:#}");
    assert!(stats.get("ec2:DescribeInstances").is_none(), "running events diagnose nothing: {stats:#}");
    assert_eq!(hub_finding(&a.s, &id).await.unwrap().record_state().unwrap().as_str(), "ARCHIVED");
}

#[tokio::test]
async fn a_disabled_key_is_reported_at_the_first_look_and_the_caller_added_later_to_the_same_finding() {
    let s = Scenario::new("earlykey").await;
    let key = s.key(None).await;
    s.kms.disable_key().key_id(key.rsplit('/').next().unwrap()).send().await.unwrap();
    let user_arn = s.user("earlykey-dev", &[("ec2-full", super::ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let (queue_url, queue_arn) = s.queue("earlykey-events").await;
    let event = event_for(&instance, &s.region, "stopped");
    let first = sqs_batch(&s, &queue_url, &queue_arn, &event, 1).await;
    let env = [("EVENTS_QUEUE_URL", queue_url.as_str()), ("SECURITY_HUB", "on")];

    // No CloudTrail record at all: the finding goes out now, and the event waits for the caller.
    let (outcomes, stdout) = invoke(&s.region, vec![first.clone()], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let early = finding_lines(&stdout);
    assert_eq!(early.len(), 1, "{stdout}");
    let f = &early[0]["finding"];
    assert_eq!(f["causes"][0]["code"], "key-disabled", "{f:#}");
    assert!(f["launch"].is_null());
    let id = f["id"].as_str().unwrap().to_owned();
    assert!(hub_finding(&s, &id).await.is_some(), "in Security Hub at the first look");
    let name = queue_url.rsplit('/').next().unwrap();
    let got = http("GET", &format!("/_kld/sqs/messages?queue_name={name}&region={}", s.region), None);
    let deferred: Vec<Value> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str::<Value>(m["body"].as_str().unwrap()).unwrap())
        .filter(|m| m["kms-launch-doctor"] == "deferred/1")
        .collect();
    assert_eq!(deferred.len(), 1, "still waiting for the caller: {deferred:#?}");
    assert_eq!(deferred[0]["reported"]["finding_id"], id.as_str());

    // The launch record arrives: the same finding, now naming the caller.
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "earlykey-dev"),
        Duration::minutes(1),
    )]);
    let mut later = first;
    later["Records"][0]["body"] = json!(deferred[0].to_string());
    later["Records"][0]["messageId"] = json!("deferred-early");
    let (outcomes, stdout) = invoke(&s.region, vec![later], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let update = finding_lines(&stdout);
    assert_eq!(update.len(), 1, "{stdout}");
    let f = &update[0]["finding"];
    assert_eq!(f["id"], id.as_str(), "an update of the finding already sent");
    assert_eq!(f["launch"]["caller"]["principal_arn"], user_arn.as_str());
    assert_eq!(f["causes"][0]["code"], "key-disabled");
    let hub = hub_finding(&s, &id).await.unwrap();
    assert!(
        hub.resources().iter().any(|r| r.id() == Some(user_arn.as_str())),
        "Security Hub's finding now names the caller"
    );
}

#[tokio::test]
async fn a_deferred_message_cannot_point_its_update_at_another_finding() {
    let s = Scenario::new("forgedid").await;
    let key = s.key(None).await;
    s.kms.disable_key().key_id(key.rsplit('/').next().unwrap()).send().await.unwrap();
    let user_arn = s.user("forgedid-dev", &[("ec2-full", super::ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let (queue_url, queue_arn) = s.queue("forgedid-events").await;
    let first = sqs_batch(&s, &queue_url, &queue_arn, &event_for(&instance, &s.region, "stopped"), 1).await;
    let env = [("EVENTS_QUEUE_URL", queue_url.as_str())];
    let (_, stdout) = invoke(&s.region, vec![first.clone()], &env);
    let early_id = finding_lines(&stdout)[0]["finding"]["id"].as_str().unwrap().to_owned();
    let name = queue_url.rsplit('/').next().unwrap();
    let got = http("GET", &format!("/_kld/sqs/messages?queue_name={name}&region={}", s.region), None);
    let mut deferred: Value = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str::<Value>(m["body"].as_str().unwrap()).unwrap())
        .find(|m| m["kms-launch-doctor"] == "deferred/1")
        .unwrap();
    // Whoever can write to the queue points the update at someone else's finding.
    let victim = "kld-0123456789abcdef";
    deferred["reported"]["finding_id"] = json!(victim);
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "forgedid-dev"),
        Duration::minutes(1),
    )]);
    let mut later = first;
    later["Records"][0]["body"] = json!(deferred.to_string());
    later["Records"][0]["messageId"] = json!("forged");
    let (_, stdout) = invoke(&s.region, vec![later], &env);
    assert_eq!(
        lines_with(&stdout, "a deferred event names a finding that is not its own: ignored").len(),
        1,
        "{stdout}"
    );
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    let id = lines[0]["finding"]["id"].as_str().unwrap();
    assert_ne!(id, victim, "the forged Id was used");
    assert_ne!(id, early_id, "an unverified message is not taken for the early report's update");
}
