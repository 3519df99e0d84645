//! End to end against the emulator: seed a scenario through the Rust SDKs and the emulator's
//! control routes, run the real binary, assert the report a user sees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use chrono::{Duration, Utc};
use common::runtime_api;
use common::*;
use serde_json::{json, Value};

fn ec2_full_access() -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]})
}

fn create_grant_allowed(key: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:CreateGrant", "Resource": key,
        "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}}]})
}

fn admin_only_key_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [{"Sid": "KeyAdministrators", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/KeyAdmin")}, "Action": "kms:*", "Resource": "*"}]})
    .to_string()
}

/// The article's scenario: user with full EC2 rights starts an instance whose volume is
/// encrypted with a key it may not create grants on.
struct Article {
    s: Scenario,
    key: String,
    user_arn: String,
    instance: String,
}

async fn article(name: &str) -> Article {
    article_in(Scenario::new(name).await).await
}

/// The article's scenario in a region of its own (for faults and call counts).
async fn article_isolated(name: &str) -> Article {
    article_in(Scenario::isolated(name).await).await
}

async fn article_in(s: Scenario) -> Article {
    let name = s.name.clone();
    let name = name.as_str();
    let key = s.key(None).await;
    let user = format!("{name}-test");
    let user_arn = s.user(&user, &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let identity = iam_user_identity(&user_arn, &user);
    s.trail(vec![
        s.launch_record("StartInstances", &instance, identity.clone(), Duration::minutes(3)),
        s.denied_grant(&key, identity, &user_arn, Duration::minutes(3) - Duration::seconds(2)),
    ]);
    Article { s, key, user_arn, instance }
}

#[tokio::test]
async fn article_scenario_caller_lacks_create_grant() {
    let a = article("article").await;
    let (code, report, stderr) = a.s.diagnose(&[&a.instance]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["schema"], "kms-launch-doctor.report/1");
    let f = only_finding(&report);
    assert_eq!(f["instance_id"], a.instance.as_str());
    assert_eq!(f["account"], ACCOUNT);
    assert_eq!(f["region"], a.s.region.as_str());
    assert_eq!(f["instance_state"], "stopped");
    assert_eq!(f["state_reason"]["code"], "Client.InternalError");
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
    assert_eq!(f["causes"][0]["key_arn"], a.key.as_str());
    assert_eq!(f["launch"]["api"], "StartInstances");
    assert_eq!(f["launch"]["caller"]["principal_arn"], a.user_arn.as_str());
    assert_eq!(f["launch"]["caller"]["principal_kind"], "user");
    assert_eq!(f["volumes"][0]["encrypted"], true);
    assert_eq!(f["volumes"][0]["kms_key_arn"], a.key.as_str());
    assert_eq!(f["keys"][0]["state"], "Enabled");
    assert_eq!(f["keys"][0]["iam_delegation"], true);
    assert_eq!(remediation_actions(f), ["put-user-policy"]);
    let r = &f["remediations"][0];
    let key_id = a.key.rsplit('/').next().unwrap();
    assert_eq!(r["policy_name"], format!("kms-launch-doctor-{key_id}"));
    assert_eq!(r["target"], a.user_arn.as_str());
    assert_eq!(
        r["policy_document"],
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:CreateGrant"], "Resource": [a.key],
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": true},
                          "StringEquals": {"kms:ViaService": format!("ec2.{}.amazonaws.com", a.s.region)}}}]})
    );
    assert!(r["commands"][0].as_str().unwrap().starts_with("aws iam put-user-policy --user-name article-test "));
    assert_eq!(f["missing_evidence"], json!([]));
    let evidence = f["causes"][0]["evidence"].as_array().unwrap();
    assert!(evidence.iter().any(|e| e["kind"] == "simulation" && e["decision"] == "implicitDeny"), "{evidence:#?}");
    assert!(evidence.iter().any(|e| e["kind"] == "cloudtrail-event"
        && e["event_name"] == "CreateGrant"
        && e["error_code"] == "AccessDenied"));
    assert!(evidence.iter().any(|e| e["kind"] == "state-reason"));
}

#[tokio::test]
async fn article_scenario_needs_at_most_eight_calls() {
    let a = article_isolated("calls").await;
    a.s.reset_calls();
    let (code, report, _) = a.s.diagnose(&[&a.instance]);
    assert_eq!(code, 0);
    assert_eq!(cause_codes(only_finding(&report)), ["caller-lacks-create-grant"]);
    // IAM is global: its calls are signed for the tool's configured region, which is ours.
    let calls = a.s.calls();
    let count = |c: &str| calls.iter().filter(|x| *x == c).count();
    assert_eq!(count("ec2:DescribeInstances"), 1, "{calls:?}");
    assert_eq!(count("ec2:DescribeVolumes"), 1, "{calls:?}");
    assert_eq!(count("kms:DescribeKey"), 1, "{calls:?}");
    assert_eq!(count("kms:GetKeyPolicy"), 1, "{calls:?}");
    // The key's aliases, for the people reading the finding.
    assert_eq!(count("kms:ListAliases"), 1, "{calls:?}");
    assert!(count("cloudtrail:LookupEvents") <= 2, "{calls:?}");
    assert_eq!(count("iam:SimulatePrincipalPolicy"), 1, "{calls:?}");
    assert!(calls.len() <= 8, "{calls:?}");
}

#[tokio::test]
async fn a_bare_key_id_on_the_volume_is_reported_as_an_arn() {
    let s = Scenario::new("barekey").await;
    let key = s.key(None).await;
    let bare = key.rsplit('/').next().unwrap().to_owned();
    let user_arn = s.user("barekey-dev", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&bare)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "barekey-dev"),
        Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(f["volumes"][0]["kms_key_arn"], key.as_str());
    assert_eq!(f["keys"][0]["arn"], key.as_str());
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
}

#[tokio::test]
async fn text_format_reads_as_a_diagnosis() {
    let a = article("text").await;
    let out = run_tool(
        &[
            "diagnose".into(),
            "--region".into(),
            a.s.region.clone(),
            "--instance-id".into(),
            a.instance.clone(),
            "--format".into(),
            "text".into(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("{} in {}", a.instance, a.s.region)), "{text}");
    assert!(text.contains("Cause [caller-lacks-create-grant]"), "{text}");
    assert!(text.contains("$ aws iam put-user-policy --user-name text-test"), "{text}");
    assert!(text.contains("kms:GrantIsForAWSResource"), "{text}");
}

#[tokio::test]
async fn identity_allows_but_key_policy_does_not_delegate() {
    let s = Scenario::new("nodelegation").await;
    let key = s.key(Some(&admin_only_key_policy())).await;
    let user_arn = s.user("nodelegation-dev", &[("ec2-full", ec2_full_access())]).await;
    s.iam
        .put_user_policy()
        .user_name("nodelegation-dev")
        .policy_name("kms")
        .policy_document(create_grant_allowed(&key).to_string())
        .send()
        .await
        .unwrap();
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "nodelegation-dev"),
        Duration::minutes(2),
    )]);
    let (code, report, stderr) = s.diagnose(&[&instance]);
    assert_eq!(code, 0, "{stderr}");
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["key-policy-denies-caller"]);
    assert_eq!(f["keys"][0]["iam_delegation"], false);
    assert_eq!(remediation_actions(f), ["add-key-policy-statement"]);
    assert_eq!(f["remediations"][0]["target"], key.as_str());
    assert_eq!(f["remediations"][0]["policy_document"]["Principal"]["AWS"], user_arn.as_str());
}

#[tokio::test]
async fn explicit_deny_in_identity_policy() {
    let s = Scenario::new("deny").await;
    let key = s.key(None).await;
    let deny = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
        {"Sid": "NoKmsGrants", "Effect": "Deny", "Action": "kms:CreateGrant", "Resource": "*"}]});
    let user_arn = s.user("deny-dev", &[("ec2-full", ec2_full_access()), ("guardrail", deny)]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "deny-dev"),
        Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["explicit-deny"]);
    assert_eq!(remediation_actions(f), ["review-deny-statement"]);
    let evidence = f["causes"][0]["evidence"].as_array().unwrap();
    assert!(evidence.iter().any(|e| e["kind"] == "simulation" && e["decision"] == "explicitDeny"));
}

/// A key in a state that makes it unusable, however permissions are set.
async fn key_state_case(name: &str, prepare: impl AsyncFnOnce(&Scenario, &str)) -> Value {
    let s = Scenario::new(name).await;
    let key = s.key(None).await;
    prepare(&s, &key).await;
    let user = format!("{name}-dev");
    let user_arn = s.user(&user, &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, &user),
        Duration::minutes(2),
    )]);
    let (code, report, stderr) = s.diagnose(&[&instance]);
    assert_eq!(code, 0, "{stderr}");
    only_finding(&report).clone()
}

fn key_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn disabled_key() {
    let f = key_state_case("disabled", async |s, key| {
        s.kms.disable_key().key_id(key_id(key)).send().await.unwrap();
    })
    .await;
    assert_eq!(cause_codes(&f), ["key-disabled"]);
    assert_eq!(f["keys"][0]["state"], "Disabled");
    assert_eq!(remediation_actions(&f), ["enable-key"]);
}

#[tokio::test]
async fn key_pending_deletion() {
    let f = key_state_case("deletion", async |s, key| {
        s.kms.schedule_key_deletion().key_id(key_id(key)).pending_window_in_days(7).send().await.unwrap();
    })
    .await;
    assert_eq!(cause_codes(&f), ["key-pending-deletion"]);
    assert_eq!(remediation_actions(&f), ["cancel-key-deletion"]);
    let ev = &f["causes"][0]["evidence"];
    assert!(
        ev.as_array().unwrap().iter().any(|e| e["kind"] == "key-state" && e["deletion_date"].is_string()),
        "{ev:#}"
    );
}

#[tokio::test]
async fn key_pending_import() {
    let f = key_state_case("import", async |s, key| {
        s.emulator_key(json!({"key_id": key_id(key), "state": "PendingImport", "origin": "EXTERNAL"}));
    })
    .await;
    assert_eq!(cause_codes(&f), ["key-pending-import"]);
    assert_eq!(remediation_actions(&f), ["import-key-material"]);
}

#[tokio::test]
async fn key_unavailable() {
    let f = key_state_case("unavailable", async |s, key| {
        s.emulator_key(json!({"key_id": key_id(key), "state": "Unavailable", "origin": "AWS_CLOUDHSM"}));
    })
    .await;
    assert_eq!(cause_codes(&f), ["key-unavailable"]);
}

#[tokio::test]
async fn cross_account_key() {
    let s = Scenario::new("crossaccount").await;
    let foreign = s.emulator_key(json!({"account_id": "210987654321"}));
    let key = foreign["arn"].as_str().unwrap().to_owned();
    let user_arn = s.user("crossaccount-dev", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "crossaccount-dev"),
        Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["cross-account-key"]);
    assert_eq!(f["keys"][0]["account"], "210987654321");
    // GetKeyPolicy is not possible across accounts: the finding says so.
    let missing = f["missing_evidence"].as_array().unwrap();
    assert!(missing.iter().any(|m| m["call"] == "kms:GetKeyPolicy"), "{missing:?}");
    assert_eq!(remediation_actions(f), ["add-key-policy-statement", "put-user-policy"]);
}

#[tokio::test]
async fn service_linked_role_launch() {
    let s = Scenario::new("slr").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "terminated");
    let role =
        format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling");
    // Terminated: AWS shows no volumes; the Auto Scaling request names the key.
    s.trail(vec![s.run_instances_record(
        &instance,
        assumed_role_identity(&role, "AWSServiceRoleForAutoScaling", "AutoScaling"),
        Duration::minutes(2),
        "ami-12c6146b",
        vec![json!({"deviceName": "/dev/xvda", "ebs": {"volumeSize": 8, "encrypted": true, "kmsKeyId": key}})],
        None,
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["service-linked-role-needs-key-access"]);
    assert_eq!(f["launch"]["caller"]["principal_kind"], "service-linked-role");
    assert_eq!(f["launch"]["api"], "RunInstances");
    assert_eq!(remediation_actions(f), ["add-key-policy-statement", "add-key-policy-statement"]);
    assert_eq!(f["remediations"][1]["policy_document"]["Principal"]["AWS"], role.as_str());
}

#[tokio::test]
async fn assumed_role_caller_gets_a_role_policy() {
    let s = Scenario::new("assumed").await;
    let key = s.key(None).await;
    let role_arn = s.role("assumed-Deployer", "/team/", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        assumed_role_identity(&role_arn, "assumed-Deployer", "ci-run-42"),
        Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
    assert_eq!(f["launch"]["caller"]["identity_type"], "AssumedRole");
    assert_eq!(f["launch"]["caller"]["principal_arn"], role_arn.as_str());
    assert_eq!(f["launch"]["caller"]["principal_kind"], "role");
    assert_eq!(remediation_actions(f), ["put-role-policy"]);
    assert!(f["remediations"][0]["commands"][0]
        .as_str()
        .unwrap()
        .starts_with("aws iam put-role-policy --role-name assumed-Deployer "));
}

#[tokio::test]
async fn sso_role_caller_gets_a_permission_set_fix() {
    let s = Scenario::new("sso").await;
    let key = s.key(None).await;
    let name = "AWSReservedSSO_SsoDevelopers_0123456789abcdef";
    let role_arn = s.role(name, "/aws-reserved/sso.amazonaws.com/", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        assumed_role_identity(&role_arn, name, "alice@example.com"),
        Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
    assert_eq!(f["launch"]["caller"]["principal_kind"], "sso-role");
    assert_eq!(remediation_actions(f), ["update-permission-set"]);
    assert_eq!(f["remediations"][0]["policy_name"], "SsoDevelopers");
}

#[tokio::test]
async fn user_initiated_stop_is_skipped() {
    let s = Scenario::new("userstop").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.ec2.stop_instances().instance_ids(&instance).send().await.unwrap();
    let (code, report, _) = s.diagnose(&[&instance]);
    assert_eq!(code, 0);
    assert_eq!(report["findings"], json!([]));
    assert_eq!(report["skipped"][0]["instance_id"], instance.as_str());
    assert!(report["skipped"][0]["reason"].as_str().unwrap().contains("UserInitiatedShutdown"), "{report:#}");
}

#[tokio::test]
async fn running_and_missing_instances_are_skipped() {
    let s = Scenario::new("skips").await;
    let running = s.instance(&[None]).await;
    let (code, report, _) = s.diagnose(&[&running, "i-0000000000000dead"]);
    // One instance diagnosed (not a launch failure), one not found: partial.
    assert_eq!(code, 3);
    assert_eq!(report["findings"], json!([]));
    let reasons: Vec<&str> =
        report["skipped"].as_array().unwrap().iter().map(|s| s["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("running")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with(&format!("not found in {}", s.region))), "{reasons:?}");
}

#[tokio::test]
async fn run_instances_failure_simulates_data_key_actions() {
    let s = Scenario::new("runfail").await;
    let key = s.key(None).await;
    let user_arn =
        s.user("runfail-dev", &[("ec2-full", ec2_full_access()), ("grants", create_grant_allowed("*"))]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "terminated");
    s.trail(vec![s.run_instances_record(
        &instance,
        iam_user_identity(&user_arn, "runfail-dev"),
        Duration::minutes(2),
        "ami-12c6146b",
        vec![json!({"deviceName": "/dev/xvda", "ebs": {"volumeSize": 8, "encrypted": true, "kmsKeyId": key}})],
        None,
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(f["instance_state"], "terminated");
    assert_eq!(f["launch"]["api"], "RunInstances");
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
    // CreateGrant is allowed; the data-key actions are what is missing.
    let doc = &f["remediations"][0]["policy_document"];
    assert_eq!(doc["Statement"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["Statement"][0]["Action"], json!(["kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt"]));
    assert_eq!(
        doc["Statement"][0]["Condition"]["StringEquals"]["kms:ViaService"],
        format!("ec2.{}.amazonaws.com", s.region)
    );
}

#[tokio::test]
async fn two_keys_only_one_is_the_problem() {
    let s = Scenario::new("twokeys").await;
    let good = s.key(None).await;
    let bad = s.key(None).await;
    let user_arn =
        s.user("twokeys-dev", &[("ec2-full", ec2_full_access()), ("good-key", create_grant_allowed(&good))]).await;
    let instance = s.instance(&[Some(&good), Some(&bad)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "twokeys-dev"),
        Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(f["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(f["keys"].as_array().unwrap().len(), 2);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
    assert_eq!(f["causes"][0]["key_arn"], bad.as_str());
    assert_eq!(f["remediations"][0]["policy_document"]["Statement"][0]["Resource"], json!([bad]));
}

#[tokio::test]
async fn missing_cloudtrail_records_give_caller_unknown() {
    let s = Scenario::new("notrail").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    // A record that is not JSON is reported, not trusted and not fatal.
    s.trail(vec![json!({"raw": "{\"eventID\": \"x\", \"userIdentity\": {\"type\":", "event_id": "raw-1", "event_name": "StartInstances",
        "event_time": rfc3339(Utc::now() - Duration::minutes(1)), "resources": [{"ResourceType": "AWS::EC2::Instance", "ResourceName": instance}]})]);
    let (code, report, _) = s.diagnose(&[&instance]);
    // The unreadable record is evidence that could not be read: a partial result.
    assert_eq!(code, 3);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["caller-unknown"]);
    assert_eq!(f["launch"], Value::Null);
    assert_eq!(f["causes"][0]["key_arn"], key.as_str());
    let missing = f["missing_evidence"].as_array().unwrap();
    assert!(
        missing.iter().any(|m| m["target"] == "raw-1" && m["reason"].as_str().unwrap().contains("unreadable")),
        "{missing:?}"
    );
}

#[tokio::test]
async fn denied_get_key_policy_still_gives_a_finding() {
    let a = article_isolated("nopolicy").await;
    a.s.fault(json!({"service": "kms", "action": "GetKeyPolicy", "code": "AccessDeniedException",
        "message": "User: arn:aws:sts::123456789012:assumed-role/kld/fn is not authorized to perform: kms:GetKeyPolicy"}));
    let (code, report, _) = a.s.diagnose(&[&a.instance]);
    assert_eq!(code, 3, "evidence that could not be read makes the run partial");
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
    assert_eq!(f["keys"][0]["iam_delegation"], Value::Null);
    let missing = &f["missing_evidence"][0];
    assert_eq!(missing["call"], "kms:GetKeyPolicy");
    assert_eq!(missing["target"], a.key.as_str());
    assert!(missing["reason"].as_str().unwrap().starts_with("AccessDeniedException"), "{missing:#}");
}

#[tokio::test]
async fn denied_cloudtrail_and_simulation_are_missing_evidence() {
    let a = article_isolated("blind").await;
    a.s.fault(json!({"service": "cloudtrail", "action": "LookupEvents", "code": "AccessDeniedException", "message": "not authorized to perform: cloudtrail:LookupEvents"}));
    let (code, report, _) = a.s.diagnose(&[&a.instance]);
    assert_eq!(code, 3, "evidence that could not be read makes the run partial");
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["caller-unknown"]);
    assert!(f["causes"][0]["summary"].as_str().unwrap().contains("CloudTrail could not be searched"));
    assert!(f["missing_evidence"].as_array().unwrap().iter().any(|m| m["call"] == "cloudtrail:LookupEvents"));
}

#[tokio::test]
async fn server_internal_error_code_with_client_message_is_a_launch_failure() {
    let s = Scenario::new("servercode").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch_with(&instance, "stopped", "Server.InternalError", "Client.InternalError: Client error on launch");
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(f["state_reason"]["code"], "Server.InternalError");
}

#[tokio::test]
async fn unencrypted_instance_is_no_kms_cause() {
    let s = Scenario::new("plain").await;
    let user_arn = s.user("plain-dev", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[None]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "plain-dev"),
        Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["no-kms-cause-found"]);
    assert_eq!(f["keys"], json!([]));
    assert_eq!(f["remediations"], json!([]));
}

#[tokio::test]
async fn denied_describe_instances_exits_1_with_one_line() {
    let s = Scenario::isolated("noec2").await;
    s.fault(json!({"service": "ec2", "action": "DescribeInstances", "code": "UnauthorizedOperation", "message": "You are not authorized to perform this operation."}));
    let (code, report, stderr) = s.diagnose(&["i-0123456789abcdef0"]);
    assert_eq!(code, 1);
    assert_eq!(report, Value::Null);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ec2:DescribeInstances failed: UnauthorizedOperation"), "{stderr}");
}

#[test]
fn unreachable_endpoint_exits_1() {
    let out = run_tool(
        &[
            "diagnose".into(),
            "--region".into(),
            "eu-west-1".into(),
            "--instance-id".into(),
            "i-0123456789abcdef0".into(),
        ],
        &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not reach the endpoint"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["diagnose"],
        vec!["diagnose", "--instance-id", "vol-123"],
        vec!["replay", "/no/such/file.json"],
        vec!["frobnicate"],
    ] {
        let out = run_tool(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// `events/stopped.json` with this scenario's instance, region and a current time.
fn sample_event(file: &str, instance: &str, region: &str) -> std::path::PathBuf {
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events").join(file)).unwrap()).unwrap();
    v["detail"]["instance-id"] = json!(instance);
    v["region"] = json!(region);
    v["time"] = json!(rfc3339(Utc::now()));
    v["resources"] = json!([format!("arn:aws:ec2:{region}:{ACCOUNT}:instance/{instance}")]);
    let path = std::env::temp_dir().join(format!("kld-{}-{instance}.json", std::process::id()));
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

#[tokio::test]
async fn replay_runs_the_lambda_code_path() {
    let a = article("replay").await;
    let event = sample_event("stopped.json", &a.instance, &a.s.region);
    let (code, report, stderr) = parse_output(run_tool(&["replay".into(), event.display().to_string()], &[]));
    assert_eq!(code, 0, "{stderr}");
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
    assert_eq!(f["launch"]["caller"]["principal_arn"], a.user_arn.as_str());
}

#[test]
fn replay_skips_events_it_does_not_handle() {
    for (file, expect) in [
        ("running.json", "\"running\""),
        ("not-ec2.json", "not an EC2 instance state-change notification"),
        ("missing-fields.json", "malformed state-change event"),
    ] {
        let (code, report, stderr) = parse_output(run_tool(
            &["replay".into(), root().join("events").join(file).display().to_string()],
            &[("AWS_REGION", "eu-west-1")],
        ));
        assert_eq!(code, 0, "{file}: {stderr}");
        assert_eq!(report["findings"], json!([]), "{file}");
        let reason = report["skipped"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(expect), "{file}: {reason}");
    }
}

#[tokio::test]
async fn lambda_mode_returns_the_report_and_logs_each_finding() {
    use std::io::Read;
    let a = article("lambda").await;
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &a.instance, &a.s.region)).unwrap())
            .unwrap();
    let other: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/not-ec2.json")).unwrap()).unwrap();
    let runtime = runtime_api::RuntimeApi::start(vec![event, other]);
    let mut child = lambda_process(&runtime, &a.s.region);
    let wait = std::time::Duration::from_secs(60);
    let first = runtime.outcomes.recv_timeout(wait).expect("a response to the first invocation");
    let second = runtime.outcomes.recv_timeout(wait).expect("a response to the second invocation");
    child.kill().unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let _ = child.wait();

    assert_eq!((first.request_id.as_str(), first.kind.as_str()), ("req-0", "response"), "{:#}", first.body);
    let f = only_finding(&first.body);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"]);
    assert_eq!(second.kind, "response");
    assert_eq!(second.body["findings"], json!([]));
    assert!(second.body["skipped"][0]["reason"].as_str().unwrap().contains("not an EC2"));

    // One JSON log line per finding, carrying the finding itself.
    let finding_lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "finding")
        .collect();
    assert_eq!(finding_lines.len(), 1, "{stdout}");
    assert_eq!(finding_lines[0]["finding"]["id"], f["id"]);
    assert!(stdout.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "every log line is JSON:\n{stdout}");
}

#[path = "scenarios/sinks.rs"]
mod sinks;

#[path = "scenarios/remediation.rs"]
mod remediation;

#[path = "scenarios/lambda.rs"]
mod lambda;

#[path = "scenarios/scan.rs"]
mod scan;

#[path = "scenarios/faults.rs"]
mod faults;

#[path = "scenarios/security.rs"]
mod security;

#[path = "scenarios/cli.rs"]
mod cli;

#[path = "scenarios/diagnosis.rs"]
mod diagnosis;

#[path = "scenarios/lifecycle.rs"]
mod lifecycle;

#[path = "scenarios/preflight.rs"]
mod preflight;

#[path = "scenarios/organization.rs"]
mod organization;
