//! Opt-in remediation against the emulator: what apply writes, what it refuses, what it proves.

use serde_json::{json, Value};

use super::{article, ec2_full_access, Article};
use crate::common::*;

const TAG: &str = "kms-launch-doctor:auto-remediate";

/// Both sides opt in: the principal and the key carry the tag with value `true`.
async fn opt_in(a: &Article) {
    opt_in_with(a, TAG).await;
}

async fn opt_in_with(a: &Article, tag: &str) {
    opt_in_principal(a, tag).await;
    opt_in_key(&a.s, &a.key, tag).await;
}

async fn opt_in_principal(a: &Article, tag: &str) {
    let user = a.user_arn.rsplit('/').next().unwrap();
    a.s.iam
        .tag_user()
        .user_name(user)
        .tags(aws_sdk_iam::types::Tag::builder().key(tag).value("true").build().unwrap())
        .send()
        .await
        .unwrap();
}

pub(crate) async fn opt_in_key(s: &Scenario, key: &str, tag: &str) {
    s.kms
        .tag_resource()
        .key_id(key.rsplit('/').next().unwrap())
        .tags(aws_sdk_kms::types::Tag::builder().tag_key(tag).tag_value("true").build().unwrap())
        .send()
        .await
        .unwrap();
}

fn user_name(a: &Article) -> String {
    a.user_arn.rsplit('/').next().unwrap().to_owned()
}

fn policy_name(a: &Article) -> String {
    format!("kms-launch-doctor-{}", a.key.rsplit('/').next().unwrap())
}

/// The inline policy as IAM stores it, URL-decoded, or None.
async fn stored_policy(a: &Article) -> Option<Value> {
    let r = a.s.iam.get_user_policy().user_name(user_name(a)).policy_name(policy_name(a)).send().await.ok()?;
    let decoded = percent_encoding::percent_decode_str(r.policy_document()).decode_utf8().unwrap().into_owned();
    Some(serde_json::from_str(&decoded).unwrap())
}

fn expected_policy(key: &str) -> Value {
    let region = key.split(':').nth(3).unwrap();
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:CreateGrant"], "Resource": [key],
        "Condition": {"Bool": {"kms:GrantIsForAWSResource": true},
                      "StringEquals": {"kms:ViaService": format!("ec2.{region}.amazonaws.com")}}}]})
}

fn remediation(report: &Value) -> Value {
    let f = only_finding(report);
    let r = f["remediations"].as_array().unwrap();
    assert_eq!(r.len(), 1, "{:#}", f["remediations"]);
    r[0].clone()
}

#[tokio::test]
async fn apply_writes_exactly_the_scoped_policy_then_is_unchanged() {
    let a = article("apply").await;
    opt_in(&a).await;
    let (code, report, stderr) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let r = remediation(&report);
    assert_eq!(r["status"], "applied", "{r:#}");
    assert_eq!(r["verified"], true, "{r:#}");
    assert_eq!(stored_policy(&a).await, Some(expected_policy(&a.key)));
    // One structured audit line for the write: who, what, before, after.
    let audit: Vec<&str> = stderr.lines().filter(|l| l.contains("remediation write")).collect();
    assert_eq!(audit.len(), 1, "{stderr}");
    assert!(
        audit[0].contains(&a.user_arn)
            && audit[0].contains("iam:PutUserPolicy")
            && audit[0].contains("before")
            && audit[0].contains("after"),
        "{}",
        audit[0]
    );

    // The same failure diagnosed again: same finding, nothing written twice.
    let (code, again, stderr) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(only_finding(&again)["id"], only_finding(&report)["id"]);
    assert_eq!(cause_codes(only_finding(&again)), ["caller-lacks-create-grant"]);
    let r = remediation(&again);
    assert_eq!(r["status"], "unchanged", "{r:#}");
    assert_eq!(r["verified"], true);
    assert!(!stderr.contains("remediation write"), "{stderr}");
}

#[tokio::test]
async fn dry_run_reports_and_writes_nothing() {
    let a = article("dryrun").await;
    opt_in(&a).await;
    let (code, report, _) = a.s.diagnose_with(&[&a.instance], &[], &[("REMEDIATION_MODE", "dry-run")]);
    assert_eq!(code, 0);
    let r = remediation(&report);
    assert_eq!(r["status"], "proposed");
    assert!(r["note"].as_str().unwrap().starts_with("dry-run: apply would iam:PutUserPolicy"), "{r:#}");
    assert_eq!(r["policy_document"], expected_policy(&a.key));
    assert_eq!(stored_policy(&a).await, None);
}

#[tokio::test]
async fn off_by_default() {
    let a = article("offdefault").await;
    opt_in(&a).await;
    let (_, report, _) = a.s.diagnose(&[&a.instance]);
    let r = remediation(&report);
    assert_eq!(r["status"], "proposed");
    assert_eq!(r["note"], Value::Null);
    assert_eq!(stored_policy(&a).await, None);
}

#[tokio::test]
async fn a_principal_that_did_not_opt_in_is_refused() {
    let a = article("noconsent").await;
    let (_, report, _) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    let r = remediation(&report);
    assert_eq!(r["status"], "refused");
    assert!(r["note"].as_str().unwrap().contains("has not opted in"), "{r:#}");
    assert_eq!(stored_policy(&a).await, None);

    // The allowed-principals pattern opts the principal in without a tag; the key must opt in
    // too, by its tag or an allowed-keys pattern, and a pattern for another key does not.
    let pattern = format!("arn:aws:iam::{ACCOUNT}:user/noconsent-*");
    let (_, report, _) = a.s.diagnose_with(
        &[&a.instance],
        &["--remediate", "apply"],
        &[
            ("REMEDIATION_ALLOWED_PRINCIPALS", &pattern),
            ("REMEDIATION_ALLOWED_KEYS", "arn:aws:kms:*:*:key/not-this-one"),
        ],
    );
    let r = remediation(&report);
    assert_eq!(r["status"], "refused");
    assert!(r["note"].as_str().unwrap().contains("REMEDIATION_ALLOWED_KEYS"), "{r:#}");
    assert_eq!(stored_policy(&a).await, None);
    let keys = format!("arn:aws:kms:{}:{ACCOUNT}:key/*", a.s.region);
    let (_, report, _) = a.s.diagnose_with(
        &[&a.instance],
        &["--remediate", "apply"],
        &[("REMEDIATION_ALLOWED_PRINCIPALS", &pattern), ("REMEDIATION_ALLOWED_KEYS", &keys)],
    );
    assert_eq!(remediation(&report)["status"], "applied");
    assert_eq!(stored_policy(&a).await, Some(expected_policy(&a.key)));
}

#[tokio::test]
async fn a_custom_tag_key_is_honoured() {
    let a = article("customtag").await;
    opt_in_with(&a, "team:autofix").await;
    let (_, report, _) =
        a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[("REMEDIATION_TAG_KEY", "team:autofix")]);
    assert_eq!(remediation(&report)["status"], "applied");
}

#[tokio::test]
async fn an_edited_policy_is_never_overwritten() {
    let a = article("edited").await;
    opt_in(&a).await;
    let edited = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": a.key}]});
    a.s.iam
        .put_user_policy()
        .user_name(user_name(&a))
        .policy_name(policy_name(&a))
        .policy_document(edited.to_string())
        .send()
        .await
        .unwrap();
    let (_, report, _) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    let r = remediation(&report);
    assert_eq!(r["status"], "refused");
    assert!(r["note"].as_str().unwrap().contains("different content"), "{r:#}");
    assert_eq!(stored_policy(&a).await, Some(edited));
}

#[tokio::test]
async fn the_inline_quota_is_checked_before_writing() {
    let a = article("quota").await;
    opt_in(&a).await;
    // A user close to IAM's 2,048-character inline quota (whitespace excluded).
    let filler: Vec<String> = (0..55).map(|i| format!("ec2:DescribeInstanceAttribute{i:03}")).collect();
    let big = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": filler, "Resource": "*"}]});
    assert!((1900..2048).contains(&big.to_string().len()), "{}", big.to_string().len());
    a.s.iam
        .put_user_policy()
        .user_name(user_name(&a))
        .policy_name("big")
        .policy_document(big.to_string())
        .send()
        .await
        .unwrap();
    let (_, report, _) = a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[]);
    let r = remediation(&report);
    assert_eq!(r["status"], "refused");
    assert!(r["note"].as_str().unwrap().contains("quota"), "{r:#}");
    assert_eq!(stored_policy(&a).await, None);
}

#[tokio::test]
async fn restart_after_a_verified_fix() {
    let a = article("restart").await;
    opt_in(&a).await;
    // Without the instance's own opt-in, the fix is applied and the instance left alone.
    let (_, report, _) =
        a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[("RESTART_AFTER_REMEDIATION", "true")]);
    let r = remediation(&report);
    assert_eq!((r["status"].as_str(), r["verified"].as_bool()), (Some("applied"), Some(true)), "{r:#}");
    assert_eq!(r["restart"]["ok"], false, "{r:#}");
    assert!(r["restart"]["detail"].as_str().unwrap().contains("has not opted in"), "{r:#}");
    let d = a.s.ec2.describe_instances().instance_ids(&a.instance).send().await.unwrap();
    assert_eq!(d.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str(), "stopped");
    a.s.ec2
        .create_tags()
        .resources(&a.instance)
        .tags(aws_sdk_ec2::types::Tag::builder().key(TAG).value("true").build())
        .send()
        .await
        .unwrap();
    let (_, report, stderr) =
        a.s.diagnose_with(&[&a.instance], &["--remediate", "apply"], &[("RESTART_AFTER_REMEDIATION", "true")]);
    let r = remediation(&report);
    // The policy is in place from the first run; verified again now, then the restart.
    assert_eq!((r["status"].as_str(), r["verified"].as_bool()), (Some("unchanged"), Some(true)), "{r:#}");
    assert_eq!(r["restart"]["ok"], true, "{r:#} {stderr}");
    let d = a.s.ec2.describe_instances().instance_ids(&a.instance).send().await.unwrap();
    let state = d.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_owned();
    assert!(["pending", "running"].contains(&state.as_str()), "{state}");
}

#[tokio::test]
async fn a_role_gets_a_role_policy() {
    let s = Scenario::new("roleapply").await;
    let key = s.key(None).await;
    let role_arn = s.role("roleapply-Deployer", "/", &[("ec2-full", ec2_full_access())]).await;
    s.iam
        .tag_role()
        .role_name("roleapply-Deployer")
        .tags(aws_sdk_iam::types::Tag::builder().key(TAG).value("true").build().unwrap())
        .send()
        .await
        .unwrap();
    opt_in_key(&s, &key, TAG).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        assumed_role_identity(&role_arn, "roleapply-Deployer", "ci"),
        chrono::Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose_with(&[&instance], &["--remediate", "apply"], &[]);
    let r = remediation(&report);
    assert_eq!(
        (r["action"].as_str(), r["status"].as_str(), r["verified"].as_bool()),
        (Some("put-role-policy"), Some("applied"), Some(true)),
        "{r:#}"
    );
    let name = format!("kms-launch-doctor-{}", key.rsplit('/').next().unwrap());
    let got = s.iam.get_role_policy().role_name("roleapply-Deployer").policy_name(name).send().await.unwrap();
    let doc: Value =
        serde_json::from_str(&percent_encoding::percent_decode_str(got.policy_document()).decode_utf8().unwrap())
            .unwrap();
    assert_eq!(doc, expected_policy(&key));
}

#[tokio::test]
async fn causes_an_allow_cannot_fix_are_refused() {
    // A key-state cause and an SSO role: nothing is written, each says why.
    let s = Scenario::new("refusals").await;
    let key = s.key(None).await;
    s.kms.disable_key().key_id(key.rsplit('/').next().unwrap()).send().await.unwrap();
    let name = "AWSReservedSSO_Refusals_0123456789abcdef";
    let role_arn = s.role(name, "/aws-reserved/sso.amazonaws.com/", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        assumed_role_identity(&role_arn, name, "bob"),
        chrono::Duration::minutes(2),
    )]);
    let (_, report, _) =
        s.diagnose_with(&[&instance], &["--remediate", "apply"], &[("REMEDIATION_ALLOWED_PRINCIPALS", "*")]);
    let r = remediation(&report);
    assert_eq!((r["action"].as_str(), r["status"].as_str()), (Some("enable-key"), Some("refused")));
    assert!(r["note"].as_str().unwrap().contains("key itself is unusable"));

    s.kms.enable_key().key_id(key.rsplit('/').next().unwrap()).send().await.unwrap();
    let (_, report, _) =
        s.diagnose_with(&[&instance], &["--remediate", "apply"], &[("REMEDIATION_ALLOWED_PRINCIPALS", "*")]);
    let r = remediation(&report);
    assert_eq!((r["action"].as_str(), r["status"].as_str()), (Some("update-permission-set"), Some("refused")));
    let roles = s.iam.list_role_policies().role_name(name).send().await.unwrap();
    assert_eq!(roles.policy_names(), ["ec2-full"]);
}
