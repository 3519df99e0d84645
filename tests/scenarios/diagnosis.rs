//! What AWS really shows (issue 14): key-policy evaluation as AWS does it, EC2's own identity,
//! service-linked roles with another account's key, Identity Center roles by path, terminated
//! launches whose volumes are gone, permissions boundaries and SCPs.

use chrono::Duration;
use serde_json::{json, Value};

use super::ec2_full_access;
use crate::common::*;

fn delegating_with(extra: Value) -> String {
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"},
        extra]})
    .to_string()
}

/// A stopped instance on `key`, started by a user allowed CreateGrant on it by IAM.
async fn started_by_allowed_user(s: &Scenario, name: &str, key: &str) -> (String, String) {
    let grants = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:CreateGrant", "Resource": key,
        "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}}]});
    let user = format!("{name}-dev");
    let user_arn = s.user(&user, &[("ec2-full", ec2_full_access()), ("grants", grants)]).await;
    let instance = s.instance(&[Some(key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, &user),
        Duration::minutes(2),
    )]);
    (user_arn, instance)
}

#[tokio::test]
async fn a_key_policy_deny_naming_the_account_blocks_every_user_of_it() {
    // IAM User Guide, Principal element: an account as principal means every identity in it.
    let s = Scenario::new("acctdeny").await;
    let policy = delegating_with(json!({"Sid": "NoGrantsForThisAccount", "Effect": "Deny",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:CreateGrant", "Resource": "*"}));
    let key = s.key(Some(&policy)).await;
    let (_, instance) = started_by_allowed_user(&s, "acctdeny", &key).await;
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["explicit-deny"], "{f:#}");
    assert!(f["causes"][0]["summary"].as_str().unwrap().contains("NoGrantsForThisAccount"), "{f:#}");
    assert_eq!(remediation_actions(f), ["review-deny-statement"]);
}

#[tokio::test]
async fn not_principal_exempts_only_the_principals_own_arn() {
    let s = Scenario::new("notprincipal").await;
    // Exempting the account alone exempts nobody: the user is denied.
    let account_only = delegating_with(json!({"Sid": "OnlyTheAccount", "Effect": "Deny",
        "NotPrincipal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:CreateGrant", "Resource": "*"}));
    let key = s.key(Some(&account_only)).await;
    let (user_arn, instance) = started_by_allowed_user(&s, "notprincipal", &key).await;
    let (_, report, _) = s.diagnose(&[&instance]);
    assert_eq!(cause_codes(only_finding(&report)), ["explicit-deny"], "{report:#}");

    // The user's own ARN and its account: exempt, so nothing in KMS stands in the way.
    let exempt = delegating_with(json!({"Sid": "AllButDev", "Effect": "Deny",
        "NotPrincipal": {"AWS": [user_arn, format!("arn:aws:iam::{ACCOUNT}:root")]}, "Action": "kms:CreateGrant", "Resource": "*"}));
    s.kms
        .put_key_policy()
        .key_id(key.rsplit('/').next().unwrap())
        .policy_name("default")
        .policy(exempt)
        .send()
        .await
        .unwrap();
    let (_, report, _) = s.diagnose(&[&instance]);
    assert_eq!(cause_codes(only_finding(&report)), ["no-kms-cause-found"], "{report:#}");
}

#[tokio::test]
async fn conditions_on_keys_known_for_the_caller_are_decided() {
    // A guard: deny kms:* unless aws:PrincipalArn is one of ours. For a caller that is not
    // listed it is a Deny (never "maybe"); for one that is, it is no obstacle.
    let s = Scenario::new("principalguard").await;
    let guard = |arns: Vec<String>| {
        delegating_with(
            json!({"Sid": "OnlyOurPrincipals", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": arns}}}),
        )
    };
    let key = s.key(Some(&guard(vec![format!("arn:aws:iam::{ACCOUNT}:role/Ops")]))).await;
    let (user_arn, instance) = started_by_allowed_user(&s, "principalguard", &key).await;
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["explicit-deny"], "{f:#}");
    let ev = f["causes"][0]["evidence"].as_array().unwrap();
    assert!(ev.iter().any(|e| e["kind"] == "key-policy" && e["denies_principal"] == "yes"), "{ev:#?}");

    s.kms
        .put_key_policy()
        .key_id(key.rsplit('/').next().unwrap())
        .policy_name("default")
        .policy(guard(vec![user_arn]))
        .send()
        .await
        .unwrap();
    let (_, report, _) = s.diagnose(&[&instance]);
    assert_eq!(cause_codes(only_finding(&report)), ["no-kms-cause-found"], "{report:#}");
}

/// CloudTrail's record of EC2's own identity being denied the volume's key at launch.
fn ec2_infrastructure_denial(s: &Scenario, instance: &str, key: &str, volume: &str, policy_type: &str) -> Value {
    let session = format!("arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-infrastructure/{instance}");
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "AssumedRole", "principalId": format!("AROAEXAMPLEEC2INFRA:{instance}"), "arn": session,
            "accountId": ACCOUNT,
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLEEC2INFRA",
                "arn": format!("arn:aws:iam::{ACCOUNT}:role/aws:ec2-infrastructure"), "accountId": ACCOUNT, "userName": "aws:ec2-infrastructure"}},
            "inScopeOf": {"issuerType": "AWS::EC2::Instance", "credentialsIssuedTo": format!("arn:aws:ec2:{}:{ACCOUNT}:instance/{instance}", s.region)}},
        "eventTime": rfc3339(chrono::Utc::now() - Duration::minutes(2) + Duration::seconds(3)),
        "eventSource": "kms.amazonaws.com", "eventName": "Decrypt", "awsRegion": s.region,
        "sourceIPAddress": "ec2.amazonaws.com", "userAgent": "ec2.amazonaws.com",
        "errorCode": "AccessDenied",
        "errorMessage": format!("User: {session} is not authorized to perform: kms:Decrypt on resource: {key} with an explicit deny in a {policy_type}"),
        "requestParameters": {"encryptionContext": {"aws:ebs:id": volume}, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        "responseElements": null, "requestID": uuid(), "eventID": uuid(), "readOnly": true,
        "resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": key}],
        "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": ACCOUNT
    })
}

#[tokio::test]
async fn ec2s_own_identity_denied_by_the_key_policy_is_named_and_the_guard_exempts_it() {
    let s = Scenario::new("ec2infra").await;
    let policy = delegating_with(
        json!({"Sid": "OnlyOurPrincipals", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt",
        "Resource": "*", "Condition": {"StringNotEquals": {"aws:PrincipalArn": [format!("arn:aws:iam::{ACCOUNT}:role/Ops")]}}}),
    );
    let key = s.key(Some(&policy)).await;
    let (user_arn, instance) = started_by_allowed_user(&s, "ec2infra", &key).await;
    let d = s.ec2.describe_instances().instance_ids(&instance).send().await.unwrap();
    let volume =
        d.reservations()[0].instances()[0].block_device_mappings()[0].ebs().unwrap().volume_id().unwrap().to_owned();
    s.trail(vec![ec2_infrastructure_denial(&s, &instance, &key, &volume, "resource-based policy")]);
    let (_, report, stderr) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["ec2-infrastructure-denied"], "{f:#} {stderr}");
    // The launch caller stays the one from the launch record; EC2's identity is never simulated.
    assert_eq!(f["launch"]["caller"]["principal_arn"], user_arn.as_str());
    assert!(!stderr.contains("NoSuchEntity"), "{stderr}");
    assert_eq!(remediation_actions(f), ["add-key-policy-statement"]);
    let st = &f["remediations"][0]["policy_document"];
    assert_eq!(st["Sid"], "OnlyOurPrincipals");
    assert_eq!(
        st["Condition"]["StringNotEquals"]["aws:PrincipalArn"],
        json!([
            format!("arn:aws:iam::{ACCOUNT}:role/Ops"),
            format!("arn:aws:iam::{ACCOUNT}:role/aws:ec2-infrastructure")
        ])
    );

    // The same denial by an SCP: review the SCP, the key policy is not at fault.
    let s2 = Scenario::new("ec2infrascp").await;
    let key2 = s2.key(None).await;
    let (_, instance2) = started_by_allowed_user(&s2, "ec2infrascp", &key2).await;
    let d = s2.ec2.describe_instances().instance_ids(&instance2).send().await.unwrap();
    let volume2 =
        d.reservations()[0].instances()[0].block_device_mappings()[0].ebs().unwrap().volume_id().unwrap().to_owned();
    s2.trail(vec![ec2_infrastructure_denial(&s2, &instance2, &key2, &volume2, "service control policy")]);
    let (_, report, _) = s2.diagnose(&[&instance2]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["ec2-infrastructure-denied"], "{f:#}");
    assert_eq!(remediation_actions(f), ["review-scp"]);
}

#[tokio::test]
async fn a_service_linked_role_with_another_accounts_key_gets_the_two_steps() {
    let s = Scenario::new("slrforeign").await;
    let foreign = s.emulator_key(json!({"account_id": "210987654321"}));
    let key = foreign["arn"].as_str().unwrap().to_owned();
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let role =
        format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        assumed_role_identity(&role, "AWSServiceRoleForAutoScaling", "AutoScaling"),
        Duration::minutes(2),
    )]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["cross-account-key"], "{f:#}");
    assert_eq!(remediation_actions(f), ["add-key-policy-statement", "create-grant"]);
    assert_eq!(f["remediations"][0]["policy_document"]["Principal"]["AWS"], format!("arn:aws:iam::{ACCOUNT}:root"));
    assert_eq!(
        f["remediations"][1]["commands"][0],
        format!("aws kms create-grant --region {} --key-id {key} --grantee-principal {role} --operations Decrypt GenerateDataKeyWithoutPlaintext ReEncryptFrom ReEncryptTo CreateGrant DescribeKey", s.region)
    );
}

#[tokio::test]
async fn identity_center_roles_count_by_their_reserved_path() {
    // A permission-set role under /aws-reserved/sso.amazonaws.com/ (here with a region segment)
    // is managed by Identity Center whatever its name says.
    let s = Scenario::new("ssopath").await;
    let key = s.key(None).await;
    let name = "ssopath-PlatformAdmins";
    let role_arn = s
        .role(name, &format!("/aws-reserved/sso.amazonaws.com/{}/", s.region), &[("ec2-full", ec2_full_access())])
        .await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        assumed_role_identity(&role_arn, name, "alice@example.com"),
        Duration::minutes(2),
    )]);
    let (_, report, _) =
        s.diagnose_with(&[&instance], &["--remediate", "apply"], &[("REMEDIATION_ALLOWED_PRINCIPALS", "*")]);
    let f = only_finding(&report);
    assert_eq!(f["launch"]["caller"]["principal_kind"], "sso-role", "{f:#}");
    // Never an inline policy on the role (Identity Center would undo it): nothing written.
    let actions = remediation_actions(f);
    assert!(!actions.iter().any(|a| a == "put-role-policy"), "{f:#}");
    assert!(f["remediations"].as_array().unwrap().iter().all(|r| r["status"] != "applied"), "{f:#}");
    let policies = s.iam.list_role_policies().role_name(name).send().await.unwrap();
    assert_eq!(policies.policy_names(), ["ec2-full"]);
}
