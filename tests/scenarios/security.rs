//! Abuse of auto-remediation, tried as an attacker would (issue 12, docs/security.md): each
//! test makes the function meet someone who should not get a write, runs `apply`, and asserts
//! that nothing was written and that the finding says why.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::{article, ec2_full_access, Article};
use crate::common::*;

const TAG: &str = "kms-launch-doctor:auto-remediate";

async fn tag_user(s: &Scenario, user: &str, key: &str, value: &str) {
    s.iam
        .tag_user()
        .user_name(user)
        .tags(aws_sdk_iam::types::Tag::builder().key(key).value(value).build().unwrap())
        .send()
        .await
        .unwrap();
}

async fn tag_key(s: &Scenario, key_arn: &str, value: &str) {
    let id = key_arn.rsplit('/').next().unwrap();
    s.kms
        .tag_resource()
        .key_id(id)
        .tags(aws_sdk_kms::types::Tag::builder().tag_key(TAG).tag_value(value).build().unwrap())
        .send()
        .await
        .unwrap();
}

fn name_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

/// Every inline policy of `user` whose name the tool would use.
async fn tool_policies(s: &Scenario, user: &str) -> Vec<String> {
    let names = s.iam.list_user_policies().user_name(user).send().await.unwrap();
    names.policy_names().iter().filter(|n| n.starts_with("kms-launch-doctor-")).cloned().collect()
}

/// A denied kms:Decrypt on `key` by `who`, as CloudTrail records it, `ago` before now.
fn denied_decrypt(s: &Scenario, key: &str, who: &str, ago: Duration) -> Value {
    json!({
        "eventVersion": "1.09", "userIdentity": iam_user_identity(who, name_of(who)),
        "eventTime": rfc3339(Utc::now() - ago), "eventSource": "kms.amazonaws.com", "eventName": "Decrypt",
        "awsRegion": s.region, "sourceIPAddress": "198.51.100.7", "userAgent": "aws-cli/2.15.0",
        "errorCode": "AccessDenied",
        "errorMessage": format!("User: {who} is not authorized to perform: kms:Decrypt on resource: {key} because no identity-based policy allows the kms:Decrypt action"),
        "requestParameters": {"keyId": key, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        "responseElements": null, "requestID": uuid(), "eventID": uuid(), "readOnly": true,
        "resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": key}],
        "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": ACCOUNT
    })
}

/// Mallory: opted in (tag `true`), in the account, denied a KMS call on the failed launch's key
/// a few seconds after it; the key opted in too. She did not launch the instance.
async fn mallory(a: &Article) -> String {
    let arn = a.s.user(&format!("{}-mallory", a.s.name), &[]).await;
    tag_user(&a.s, name_of(&arn), TAG, "true").await;
    a.s.trail(vec![denied_decrypt(&a.s, &a.key, &arn, Duration::minutes(3) - Duration::seconds(4))]);
    arn
}

fn finding(report: &Value) -> &Value {
    only_finding(report)
}

fn statuses(f: &Value) -> Vec<(String, String)> {
    f["remediations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["target"].as_str().unwrap_or("").to_owned(), r["status"].as_str().unwrap_or("").to_owned()))
        .collect()
}

#[tokio::test]
async fn an_opted_in_principal_that_did_not_launch_gets_nothing() {
    let a = article("notlauncher").await;
    tag_key(&a.s, &a.key, "true").await;
    let mallory = mallory(&a).await;
    let (code, report, stderr) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let f = finding(&report);
    // The caller is the one the launch record names; Mallory's denial is not evidence.
    assert_eq!(f["launch"]["caller"]["principal_arn"], a.user_arn.as_str());
    assert!(!f.to_string().contains(&mallory), "{f:#}");
    assert_eq!(statuses(f), [(a.user_arn.clone(), "refused".to_owned())]);
    assert!(f["remediations"][0]["note"].as_str().unwrap().contains("has not opted in"), "{f:#}");
    assert!(tool_policies(&a.s, name_of(&mallory)).await.is_empty());
    assert!(tool_policies(&a.s, name_of(&a.user_arn)).await.is_empty());
    assert!(!stderr.contains("remediation write"), "{stderr}");
}

#[tokio::test]
async fn without_a_launch_record_a_kms_denial_never_names_who_gets_a_policy() {
    // The reproduction of the review: no StartInstances record (late, throttled, missed), and an
    // opted-in user denied kms:Decrypt on the key near the failure. Instance and window mode.
    let s = Scenario::new("nolaunch").await;
    let key = s.key(None).await;
    tag_key(&s, &key, "true").await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let mallory = s.user("nolaunch-mallory", &[]).await;
    tag_user(&s, "nolaunch-mallory", TAG, "true").await;
    s.trail(vec![
        denied_decrypt(&s, &key, &mallory, Duration::minutes(2)),
        s.denied_grant(&key, iam_user_identity(&mallory, "nolaunch-mallory"), &mallory, Duration::minutes(2)),
    ]);
    let (code, report, stderr) = s.diagnose_with(&[&instance], &["--remediate", "apply"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let f = finding(&report);
    assert_eq!(cause_codes(f), ["caller-unknown"]);
    assert!(f["launch"].is_null());
    assert!(f["causes"][0]["summary"].as_str().unwrap().contains("No StartInstances record naming"), "{f:#}");
    assert_eq!(f["remediations"], json!([]));
    assert!(tool_policies(&s, "nolaunch-mallory").await.is_empty());

    let out = run_tool(
        &[
            "scan".into(),
            "--region".into(),
            s.region.clone(),
            "--format".into(),
            "json".into(),
            "--remediate".into(),
            "apply".into(),
        ],
        &[],
    );
    let (code, report, stderr) = parse_output(out);
    // The region is shared with other scenarios, whose evidence may be partial (exit 3).
    assert!(matches!(code, 0 | 3), "{stderr}");
    let mine: Vec<&Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["instance_id"] == instance.as_str()).collect();
    assert_eq!(mine.len(), 1, "{report:#}");
    assert_eq!(mine[0]["remediations"], json!([]));
    assert!(tool_policies(&s, "nolaunch-mallory").await.is_empty());
}

#[tokio::test]
async fn a_key_that_did_not_opt_in_is_not_granted() {
    let a = article("keynotopted").await;
    tag_user(&a.s, name_of(&a.user_arn), TAG, "true").await;
    let (_, report, _) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    let r = &finding(&report)["remediations"][0];
    assert_eq!(r["status"], "refused", "{r:#}");
    let note = r["note"].as_str().unwrap();
    assert!(
        note.contains(&format!("key {} has not opted in", a.key)) && note.contains("REMEDIATION_ALLOWED_KEYS"),
        "{note}"
    );
    assert!(tool_policies(&a.s, name_of(&a.user_arn)).await.is_empty());
}

#[tokio::test]
async fn a_principal_that_tags_itself_does_not_reach_a_key_that_did_not_opt_in() {
    let a = article("selftag").await;
    let user = name_of(&a.user_arn).to_owned();
    // The user may tag itself, and does so with its own credentials.
    let self_tag = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:TagUser", "Resource": a.user_arn}]});
    a.s.iam
        .put_user_policy()
        .user_name(&user)
        .policy_name("self-tag")
        .policy_document(self_tag.to_string())
        .send()
        .await
        .unwrap();
    let keys = a.s.iam.create_access_key().user_name(&user).send().await.unwrap();
    let k = keys.access_key().unwrap();
    let own = aws_sdk_iam::Client::from_conf(
        a.s.iam
            .config()
            .to_builder()
            .credentials_provider(aws_credential_types::Credentials::new(
                k.access_key_id(),
                k.secret_access_key(),
                None,
                None,
                "self",
            ))
            .build(),
    );
    own.tag_user()
        .user_name(&user)
        .tags(aws_sdk_iam::types::Tag::builder().key(TAG).value("true").build().unwrap())
        .send()
        .await
        .unwrap();
    let (_, report, _) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    let r = &finding(&report)["remediations"][0];
    assert_eq!(r["status"], "refused", "{r:#}");
    assert!(r["note"].as_str().unwrap().contains("has not opted in"), "{r:#}");
    assert!(tool_policies(&a.s, &user).await.is_empty());
}

#[tokio::test]
async fn a_tag_value_true_in_another_case_is_not_an_opt_in() {
    // IAM's StringEquals in the template's write condition is case-sensitive: `True` would be
    // accepted by a lenient check and then refused by IAM.
    for (user_value, key_value) in [("True", "true"), ("true", "TRUE")] {
        let a = article(&format!("case{}", user_value.to_ascii_lowercase() + key_value)).await;
        tag_user(&a.s, name_of(&a.user_arn), TAG, user_value).await;
        tag_key(&a.s, &a.key, key_value).await;
        let (_, report, _) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
        let r = &finding(&report)["remediations"][0];
        assert_eq!(r["status"], "refused", "{user_value}/{key_value}: {r:#}");
        assert!(r["note"].as_str().unwrap().contains("has not opted in"), "{r:#}");
        assert!(tool_policies(&a.s, name_of(&a.user_arn)).await.is_empty());
    }
}

#[tokio::test]
async fn an_edited_policy_of_ours_is_never_overwritten_even_with_both_opt_ins() {
    let a = article("editedboth").await;
    tag_user(&a.s, name_of(&a.user_arn), TAG, "true").await;
    tag_key(&a.s, &a.key, "true").await;
    let name = format!("kms-launch-doctor-{}", name_of(&a.key));
    let widened =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]});
    a.s.iam
        .put_user_policy()
        .user_name(name_of(&a.user_arn))
        .policy_name(&name)
        .policy_document(widened.to_string())
        .send()
        .await
        .unwrap();
    let (_, report, stderr) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    let r = &finding(&report)["remediations"][0];
    assert_eq!(r["status"], "refused", "{r:#}");
    assert!(r["note"].as_str().unwrap().contains("never overwritten"), "{r:#}");
    let got = a.s.iam.get_user_policy().user_name(name_of(&a.user_arn)).policy_name(&name).send().await.unwrap();
    let doc: Value =
        serde_json::from_str(&percent_encoding::percent_decode_str(got.policy_document()).decode_utf8().unwrap())
            .unwrap();
    assert_eq!(doc, widened);
    assert!(!stderr.contains("remediation write"), "{stderr}");
}

#[tokio::test]
async fn a_forged_old_event_cannot_hurry_a_write_and_a_late_record_after_the_budget_writes_nothing() {
    // Both sides opted in; the launch record is not in CloudTrail. An event whose `time` claims
    // to be 30 minutes old is still deferred (the wait runs from SQS's SentTimestamp); once the
    // budget has really passed the finding is caller-unknown and nothing is written, even when
    // an opted-in user's KMS denial is there; the record arriving later changes nothing already
    // sent.
    let s = Scenario::new("latebudget").await;
    let key = s.key(None).await;
    tag_key(&s, &key, "true").await;
    let user_arn = s.user("latebudget-dev", &[("ec2-full", ec2_full_access())]).await;
    tag_user(&s, "latebudget-dev", TAG, "true").await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![denied_decrypt(&s, &key, &user_arn, Duration::minutes(2))]);
    let (queue_url, queue_arn) = s.queue("latebudget-events").await;
    let mut event = super::lambda::event_for(&instance, &s.region, "stopped");
    event["time"] = json!(rfc3339(Utc::now() - Duration::minutes(30)));
    let env =
        [("EVENTS_QUEUE_URL", queue_url.as_str()), ("REMEDIATION_MODE", "apply"), ("CLOUDTRAIL_WAIT_MINUTES", "20")];

    let batch = super::lambda::sqs_batch(&s, &queue_url, &queue_arn, &event, 1).await;
    let (_, stdout) = super::lambda::invoke(&s.region, vec![batch.clone()], &env);
    assert!(super::lambda::finding_lines(&stdout).is_empty(), "deferred, not final: {stdout}");
    assert_eq!(
        super::lambda::lines_with(&stdout, "launch record not in CloudTrail yet: deferred with what is known").len(),
        1,
        "{stdout}"
    );

    let mut late = batch;
    super::lambda::sent_ago(&mut late, Duration::minutes(25));
    let (outcomes, stdout) = super::lambda::invoke(&s.region, vec![late], &env);
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let lines = super::lambda::finding_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    let f = &lines[0]["finding"];
    assert_eq!(f["causes"][0]["code"], "caller-unknown");
    assert!(f["causes"][0]["summary"].as_str().unwrap().contains("No StartInstances record naming"), "{f:#}");
    assert_eq!(f["remediations"], json!([]));
    assert!(tool_policies(&s, "latebudget-dev").await.is_empty());
}
