//! Findings delivered to SNS, Security Hub and EventBridge, read back as a user would.

use serde_json::{json, Value};

use super::article;
use crate::common::*;

fn sns_envelope(m: &aws_sdk_sqs::types::Message) -> Value {
    serde_json::from_str(m.body().unwrap()).unwrap()
}

async fn hub_findings(s: &Scenario, id: &str) -> Vec<aws_sdk_securityhub::types::AwsSecurityFinding> {
    let all = s.securityhub.get_findings().send().await.unwrap();
    all.findings().iter().filter(|f| f.id() == Some(id)).cloned().collect()
}

#[tokio::test]
async fn every_sink_receives_the_finding_once() {
    let a = article("sinks").await;
    let (topic, topic_inbox) = a.s.topic_with_queue("kld-sinks-alerts").await;
    let (bus, bus_inbox) = a.s.bus_with_queue("kld-sinks-bus").await;
    // Topic from the environment, the other two from flags.
    let (code, report, stderr) =
        a.s.diagnose_with(&[&a.instance], &["--security-hub", "--event-bus", &bus], &[("FINDINGS_TOPIC_ARN", &topic)]);
    assert_eq!(code, 0, "{stderr}");
    let f = only_finding(&report);
    let id = f["id"].as_str().unwrap();
    assert!(f["delivered"]["sns"].is_string(), "{:#}", f["delivered"]);
    assert_eq!(f["delivered"]["security_hub"], "ok");
    assert!(f["delivered"]["eventbridge"].is_string());

    // SNS: subject, body for a person, attributes for filter policies.
    let msgs = a.s.drain(&topic_inbox).await;
    assert_eq!(msgs.len(), 1);
    let env = sns_envelope(&msgs[0]);
    let subject = env["Subject"].as_str().unwrap();
    assert!(subject.len() <= 100 && subject.is_ascii(), "{subject}");
    assert!(subject.starts_with(&format!("EC2 {} failed to start: ", a.instance)), "{subject}");
    assert!(subject.contains("lacks kms:CreateGrant"), "{subject}");
    assert_eq!(env["MessageId"], f["delivered"]["sns"]);
    let body = env["Message"].as_str().unwrap();
    for needle in [
        a.instance.as_str(),
        a.user_arn.as_str(),
        a.key.as_str(),
        "state Enabled",
        "Cause [caller-lacks-create-grant]",
        "\"kms:GrantIsForAWSResource\": true",
        "$ aws iam put-user-policy",
        "Knowledge Center: https://repost.aws/",
    ] {
        assert!(body.contains(needle), "body lacks {needle:?}:\n{body}");
    }
    let attrs = &env["MessageAttributes"];
    assert_eq!(attrs["cause"]["Value"], "caller-lacks-create-grant");
    assert_eq!(attrs["account"]["Value"], ACCOUNT);
    assert_eq!(attrs["instance_id"]["Value"], a.instance.as_str());
    assert_eq!(attrs["severity"]["Value"], "MEDIUM");

    // Security Hub: a valid ASFF finding under the stable id.
    let found = hub_findings(&a.s, id).await;
    assert_eq!(found.len(), 1);
    let h = &found[0];
    assert_eq!(h.schema_version(), Some("2018-10-08"));
    assert_eq!(
        h.product_arn(),
        Some(format!("arn:aws:securityhub:{}:{ACCOUNT}:product/{ACCOUNT}/default", a.s.region).as_str())
    );
    assert_eq!(h.generator_id(), Some("kms-launch-doctor/caller-lacks-create-grant"));
    assert_eq!(h.aws_account_id(), Some(ACCOUNT));
    assert!(h.types().iter().all(|t| t.starts_with("Software and Configuration Checks/")));
    assert_eq!(h.severity().and_then(|s| s.label()).map(|l| l.as_str()), Some("MEDIUM"));
    assert!(h.title().unwrap().len() <= 256 && h.description().unwrap().len() <= 1024);
    let kinds: Vec<&str> = h.resources().iter().filter_map(|r| r.r#type()).collect();
    assert_eq!(kinds, ["AwsEc2Instance", "AwsKmsKey", "AwsIamUser"]);
    assert_eq!(h.resources()[1].id(), Some(a.key.as_str()));
    assert_eq!(h.resources()[2].id(), Some(a.user_arn.as_str()));
    let rec = h.remediation().and_then(|r| r.recommendation()).unwrap();
    assert_eq!(rec.url(), Some("https://repost.aws/knowledge-center/kms-iam-ec2-permission"));
    assert!(rec.text().unwrap().contains("put-user-policy"));
    let pf = h.product_fields().unwrap();
    assert_eq!(pf["ProviderName"], "kms-launch-doctor");
    assert_eq!(pf["kms-launch-doctor/CauseCodes"], "caller-lacks-create-grant");
    assert!(h.created_at().is_some() && h.updated_at().is_some());

    // EventBridge: the report contract's finding as Detail, the instance as resource.
    let events = a.s.drain(&bus_inbox).await;
    assert_eq!(events.len(), 1);
    let ev: Value = serde_json::from_str(events[0].body().unwrap()).unwrap();
    assert_eq!(ev["source"], "kms-launch-doctor");
    assert_eq!(ev["detail-type"], "EC2 Launch Failure Diagnosed");
    assert_eq!(ev["detail"]["id"], id);
    assert_eq!(ev["detail"]["schema"], "kms-launch-doctor.finding/1");
    assert_eq!(ev["detail"]["causes"][0]["code"], "caller-lacks-create-grant");
    assert_eq!(ev["resources"], json!([format!("arn:aws:ec2:{}:{ACCOUNT}:instance/{}", a.s.region, a.instance)]));
    assert_eq!(ev["id"], f["delivered"]["eventbridge"]);
}

#[tokio::test]
async fn a_repeated_failure_updates_one_security_hub_finding() {
    let a = article("rerun").await;
    let (_, first, _) = a.s.diagnose_with(&[&a.instance], &["--security-hub"], &[]);
    let id = only_finding(&first)["id"].as_str().unwrap().to_owned();
    let before = hub_findings(&a.s, &id).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, second, stderr) = a.s.diagnose_with(&[&a.instance], &["--security-hub"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(only_finding(&second)["id"], id.as_str());
    let after = hub_findings(&a.s, &id).await;
    assert_eq!(after.len(), 1, "one finding, updated");
    assert_eq!(after[0].created_at(), before[0].created_at(), "CreatedAt kept");
    assert!(
        after[0].updated_at() > before[0].updated_at(),
        "{:?} then {:?}",
        before[0].updated_at(),
        after[0].updated_at()
    );
}

#[tokio::test]
async fn a_failing_sink_does_not_stop_the_others() {
    let a = article("badsink").await;
    let missing_topic = format!("arn:aws:sns:{}:{ACCOUNT}:no-such-topic", a.s.region);
    let (bus, bus_inbox) = a.s.bus_with_queue("kld-badsink-bus").await;
    let (code, report, stderr) = a.s.diagnose_with(
        &[&a.instance],
        &["--notify-topic", &missing_topic, "--security-hub", "--event-bus", &bus],
        &[],
    );
    assert_eq!(code, 1, "a sink failure is a failure");
    assert!(stderr.contains("sns:Publish failed"), "{stderr}");
    let f = only_finding(&report);
    assert!(f["delivered"].get("sns").is_none(), "{:#}", f["delivered"]);
    assert_eq!(f["delivered"]["security_hub"], "ok");
    assert!(f["delivered"]["eventbridge"].is_string());
    assert_eq!(a.s.drain(&bus_inbox).await.len(), 1);

    let (code, _, stderr) = a.s.diagnose_with(&[&a.instance], &["--event-bus", "no-such-bus"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("events:PutEvents failed"), "{stderr}");
}

#[tokio::test]
async fn no_finding_sends_nothing() {
    let s = Scenario::new("quiet").await;
    let (topic, inbox) = s.topic_with_queue("kld-quiet-alerts").await;
    let running = s.instance(&[None]).await;
    let (code, report, _) = s.diagnose_with(&[&running], &["--notify-topic", &topic], &[]);
    assert_eq!(code, 0);
    assert_eq!(report["findings"], json!([]));
    assert!(s.drain(&inbox).await.is_empty());
}
