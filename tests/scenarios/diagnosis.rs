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

// ---- Terminated launches: the volumes are gone, the keys are still found ------------------

/// A user with full EC2 rights and no KMS rights.
async fn launcher(s: &Scenario, name: &str) -> (String, Value) {
    let user = format!("{name}-dev");
    let arn = s.user(&user, &[("ec2-full", ec2_full_access())]).await;
    let identity = iam_user_identity(&arn, &user);
    (arn, identity)
}

/// An instance launched (by the test harness) on `image` with one volume encrypted with `key`,
/// deleted on termination, then failed as a terminated launch: AWS shows no volumes any more.
async fn terminated_on(s: &Scenario, image: &str, key: Option<&str>) -> String {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};
    let mut req = s.ec2.run_instances().image_id(image).min_count(1).max_count(1);
    if let Some(k) = key {
        req = req.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvdb")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(8)
                        .encrypted(true)
                        .kms_key_id(k)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        );
    }
    let id = req.send().await.unwrap().instances()[0].instance_id().unwrap().to_owned();
    s.fail_launch(&id, "terminated");
    id
}

fn shows_no_volumes(f: &Value) {
    assert_eq!(f["volumes"], json!([]), "AWS removes a terminated instance's block device mappings: {f:#}");
}

fn key_source(f: &Value) -> Vec<(String, String)> {
    f["causes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["evidence"].as_array().unwrap().iter())
        .filter(|e| e["kind"] == "key-source")
        .map(|e| (e["key_arn"].as_str().unwrap().to_owned(), e["source"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_terminated_launch_finds_its_key_in_the_run_instances_request() {
    let s = Scenario::new("termrequest").await;
    let key = s.key(None).await;
    let (arn, identity) = launcher(&s, "termrequest").await;
    let instance = terminated_on(&s, "ami-12c6146b", Some(&key)).await;
    let mapping = json!({"deviceName": "/dev/xvdb", "ebs": {"volumeSize": 8, "encrypted": true, "kmsKeyId": key, "deleteOnTermination": true}});
    s.trail(vec![s.run_instances_record(
        &instance,
        identity,
        Duration::minutes(2),
        "ami-12c6146b",
        vec![mapping],
        None,
    )]);
    let (_, report, stderr) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    shows_no_volumes(f);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"], "{f:#} {stderr}");
    assert_eq!(f["causes"][0]["key_arn"], key.as_str());
    assert_eq!(key_source(f), [(key.clone(), "run-instances-request".to_owned())]);
    assert_eq!(f["launch"]["caller"]["principal_arn"], arn.as_str());
}

#[tokio::test]
async fn a_terminated_launch_finds_its_key_in_the_launch_template() {
    use aws_sdk_ec2::types::{
        LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest, RequestLaunchTemplateData,
    };
    let s = Scenario::new("termtemplate").await;
    let key = s.key(None).await;
    let (_, identity) = launcher(&s, "termtemplate").await;
    let lt = s
        .ec2
        .create_launch_template()
        .launch_template_name(format!("termtemplate-{}", uuid()))
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .block_device_mappings(
                    LaunchTemplateBlockDeviceMappingRequest::builder()
                        .device_name("/dev/xvdb")
                        .ebs(
                            LaunchTemplateEbsBlockDeviceRequest::builder()
                                .volume_size(8)
                                .encrypted(true)
                                .kms_key_id(&key)
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let lt_id = lt.launch_template().unwrap().launch_template_id().unwrap().to_owned();
    let run = s
        .ec2
        .run_instances()
        .min_count(1)
        .max_count(1)
        .launch_template(
            aws_sdk_ec2::types::LaunchTemplateSpecification::builder().launch_template_id(&lt_id).version("1").build(),
        )
        .send()
        .await
        .unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_owned();
    s.fail_launch(&instance, "terminated");
    // The request names the template, as the real record in the fixtures does, and no keys.
    s.trail(vec![s.run_instances_record(
        &instance,
        identity,
        Duration::minutes(2),
        "ami-12c6146b",
        vec![],
        Some(json!({"launchTemplateId": lt_id, "version": "1"})),
    )]);
    let (_, report, stderr) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    shows_no_volumes(f);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"], "{f:#} {stderr}");
    assert!(key_source(f).contains(&(key.clone(), "launch-template".to_owned())), "{f:#}");
}

#[tokio::test]
async fn a_terminated_launch_finds_its_key_in_the_amis_snapshots() {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};
    let s = Scenario::new("termami").await;
    let key = s.key(None).await;
    let (_, identity) = launcher(&s, "termami").await;
    let zone = format!("{}a", s.region);
    let vol =
        s.ec2.create_volume().availability_zone(&zone).size(8).encrypted(true).kms_key_id(&key).send().await.unwrap();
    let snap = s.ec2.create_snapshot().volume_id(vol.volume_id().unwrap()).send().await.unwrap();
    let image = s
        .ec2
        .register_image()
        .name(format!("termami-{}", uuid()))
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(snap.snapshot_id().unwrap())
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let image_id = image.image_id().unwrap().to_owned();
    let instance = terminated_on(&s, &image_id, None).await;
    s.trail(vec![s.run_instances_record(&instance, identity, Duration::minutes(2), &image_id, vec![], None)]);
    let (_, report, stderr) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    shows_no_volumes(f);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"], "{f:#} {stderr}");
    assert_eq!(key_source(f), [(key.clone(), "ami-snapshot".to_owned())]);
}

#[tokio::test]
async fn a_terminated_launch_finds_the_ebs_default_key_when_encryption_by_default_is_on() {
    // Encryption by default is per account and region: a region of its own.
    let s = Scenario::isolated("termdefault").await;
    let key = s.key(None).await;
    let (_, identity) = launcher(&s, "termdefault").await;
    s.ec2.enable_ebs_encryption_by_default().send().await.unwrap();
    s.ec2.modify_ebs_default_kms_key_id().kms_key_id(&key).send().await.unwrap();
    let instance = terminated_on(&s, "ami-12c6146b", None).await;
    // The request asks for encryption without naming a key (the documented default-key case).
    let mapping =
        json!({"deviceName": "/dev/xvdb", "ebs": {"volumeSize": 8, "encrypted": true, "deleteOnTermination": true}});
    s.trail(vec![s.run_instances_record(
        &instance,
        identity,
        Duration::minutes(2),
        "ami-12c6146b",
        vec![mapping],
        None,
    )]);
    let (_, report, stderr) = s.diagnose(&[&instance]);
    s.ec2.disable_ebs_encryption_by_default().send().await.unwrap();
    let f = only_finding(&report);
    shows_no_volumes(f);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"], "{f:#} {stderr}");
    assert!(key_source(f).contains(&(key.clone(), "ebs-default".to_owned())), "{f:#}");
}

#[tokio::test]
async fn a_terminated_launch_finds_its_key_in_ec2s_kms_calls_when_nothing_else_names_it() {
    let s = Scenario::new("termtrail").await;
    let key = s.key(None).await;
    let (arn, identity) = launcher(&s, "termtrail").await;
    let instance = terminated_on(&s, "ami-12c6146b", None).await;
    let mut grant = s.denied_grant(&key, identity.clone(), &arn, Duration::minutes(2) - Duration::seconds(2));
    // As EC2 asks for the grant on the caller's behalf in current records.
    grant["userIdentity"]["invokedBy"] = json!("ec2-frontend-api.amazonaws.com");
    grant["sourceIPAddress"] = json!("ec2-frontend-api.amazonaws.com");
    grant["requestParameters"]["constraints"] =
        json!({"encryptionContextSubset": {"aws:ebs:id": "vol-0123456789abcdef0"}});
    s.trail(vec![
        s.run_instances_record(&instance, identity, Duration::minutes(2), "ami-12c6146b", vec![], None),
        grant,
    ]);
    let (_, report, stderr) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    shows_no_volumes(f);
    assert_eq!(cause_codes(f), ["caller-lacks-create-grant"], "{f:#} {stderr}");
    assert_eq!(key_source(f), [(key.clone(), "cloudtrail".to_owned())]);
}

#[tokio::test]
async fn a_terminated_launch_with_no_key_anywhere_is_not_said_to_have_had_no_volumes() {
    let s = Scenario::new("termnothing").await;
    let (_, identity) = launcher(&s, "termnothing").await;
    let instance = terminated_on(&s, "ami-12c6146b", None).await;
    s.trail(vec![s.run_instances_record(&instance, identity, Duration::minutes(2), "ami-12c6146b", vec![], None)]);
    let (_, report, _) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["no-kms-cause-found"]);
    let summary = f["causes"][0]["summary"].as_str().unwrap();
    assert!(summary.contains("no longer shows its volumes") && !summary.contains("has no EBS volumes"), "{summary}");
}

#[tokio::test]
async fn a_permissions_boundary_that_does_not_allow_create_grant_is_named_with_its_fix() {
    let s = Scenario::new("boundary").await;
    let key = s.key(None).await;
    let grants = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:CreateGrant", "Resource": key,
        "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}}]});
    let boundary_doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["ec2:*", "s3:*"], "Resource": "*"}]});
    let boundary = s
        .iam
        .create_policy()
        .policy_name(format!("boundary-{}", uuid()))
        .policy_document(boundary_doc.to_string())
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let role_arn = s.role("boundary-Deployer", "/", &[("ec2-full", ec2_full_access()), ("grants", grants)]).await;
    s.iam
        .put_role_permissions_boundary()
        .role_name("boundary-Deployer")
        .permissions_boundary(&boundary)
        .send()
        .await
        .unwrap();
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        assumed_role_identity(&role_arn, "boundary-Deployer", "ci"),
        Duration::minutes(2),
    )]);
    let (_, report, stderr) = s.diagnose(&[&instance]);
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["permissions-boundary-blocks"], "{f:#} {stderr}");
    let r = &f["remediations"][0];
    assert_eq!(r["action"], "update-permissions-boundary");
    assert_eq!(r["target"], boundary.as_str());
    let ev = f["causes"][0]["evidence"].as_array().unwrap();
    assert!(ev.iter().any(|e| e["kind"] == "simulation" && e["allowed_by_boundary"] == false), "{ev:#?}");
}

/// Organizations as its API does it (through the emulator): `member` joins an organization
/// managed by `management`, with SCPs enabled and `scp` attached to the member account.
fn join_organization_with_scp(region: &str, management: &str, member: &str, scp: &Value) {
    let org = |account: &str, action: &str, body: Value| {
        aws_json(account, region, "organizations", &format!("AWSOrganizationsV20161128.{action}"), &body)
    };
    org(management, "CreateOrganization", json!({"FeatureSet": "ALL"}));
    let roots = org(management, "ListRoots", json!({}));
    let root = roots["Roots"][0]["Id"].as_str().unwrap().to_owned();
    org(management, "EnablePolicyType", json!({"RootId": root, "PolicyType": "SERVICE_CONTROL_POLICY"}));
    let invite = org(management, "InviteAccountToOrganization", json!({"Target": {"Id": member, "Type": "ACCOUNT"}}));
    let handshake = invite["Handshake"]["Id"].as_str().unwrap().to_owned();
    org(member, "AcceptHandshake", json!({"HandshakeId": handshake}));
    let policy = org(
        management,
        "CreatePolicy",
        json!({"Name": "no-kms-grants", "Description": "test SCP", "Type": "SERVICE_CONTROL_POLICY", "Content": scp.to_string()}),
    );
    let id = policy["Policy"]["PolicySummary"]["Id"].as_str().unwrap().to_owned();
    org(management, "AttachPolicy", json!({"PolicyId": id, "TargetId": member}));
}

#[tokio::test]
async fn an_scp_that_denies_create_grant_is_scp_blocks_and_never_applied() {
    // An account of its own, joined to an organization: SCPs apply to every principal of it.
    let member = "444455556666";
    let s = Scenario::in_account("scpblock", member).await;
    join_organization_with_scp(
        &s.region,
        "111122223333",
        member,
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "kms:CreateGrant", "Resource": "*"}]}),
    );
    let key = s.key(None).await;
    let grants = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:CreateGrant", "Resource": key}]});
    let user_arn = s.user("scpblock-dev", &[("ec2-full", ec2_full_access()), ("grants", grants)]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let identity = json!({"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": user_arn, "accountId": member, "userName": "scpblock-dev"});
    s.trail(vec![s.launch_record("StartInstances", &instance, identity, Duration::minutes(2))]);
    let (code, report, stderr) = s.diagnose_with(
        &[&instance],
        &["--remediate", "apply", "--format", "json"],
        &[("REMEDIATION_ALLOWED_PRINCIPALS", "*")],
    );
    assert_eq!(code, 0, "{stderr}");
    let f = only_finding(&report);
    assert_eq!(f["account"], member);
    assert_eq!(cause_codes(f), ["scp-blocks"], "{f:#}");
    let ev = f["causes"][0]["evidence"].as_array().unwrap();
    assert!(ev.iter().any(|e| e["kind"] == "simulation" && e["allowed_by_organizations"] == false), "{ev:#?}");
    assert_eq!(remediation_actions(f), ["review-scp"]);
    let r = &f["remediations"][0];
    assert_eq!(r["status"], "refused", "{r:#}");
    assert!(r["commands"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().contains("list-policies-for-target")));
}
