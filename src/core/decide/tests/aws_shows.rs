//! What AWS really shows (issue 14): SCPs, permissions boundaries, grants EC2 makes for itself,
//! and the records and simulator answers that go with them.

use super::*;

fn guarded(f: &mut Facts, sim_decision: Decision, boundary: Option<bool>, organizations: Option<bool>) {
    let mut s = sim(USER, "kms:CreateGrant", KEY, sim_decision);
    s.allowed_by_boundary = boundary;
    s.allowed_by_organizations = organizations;
    f.simulations = vec![s];
}

#[test]
fn an_scp_that_does_not_allow_create_grant_is_scp_blocks_with_a_review() {
    let mut f = facts();
    guarded(&mut f, Decision::ImplicitDeny, None, Some(false));
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::ScpBlocks]);
    assert_eq!(actions(&out), vec![RemediationAction::ReviewScp]);
    assert!(out.causes[0].summary.contains("service control policy"), "{}", out.causes[0].summary);
    let cmds = out.remediations[0].commands.join("\n");
    assert!(cmds.contains("list-policies-for-target") && cmds.contains("list-parents") && cmds.contains(KEY), "{cmds}");
}

#[test]
fn cloudtrails_own_words_name_an_scp_without_a_simulation() {
    let mut f = facts();
    f.simulations.clear();
    f.kms_denials = vec![record(
        "CreateGrant",
        user_identity(),
        json!({"errorCode": "AccessDenied",
        "errorMessage": format!("User: {USER} is not authorized to perform: kms:CreateGrant on resource: {KEY} with an explicit deny in a service control policy"),
        "requestParameters": {"keyId": KEY}}),
    )];
    assert_eq!(codes(&decide(&f)), vec![CauseCode::ScpBlocks]);
}

#[test]
fn a_permissions_boundary_that_does_not_allow_it_is_its_own_cause_with_the_boundary_named() {
    let mut f = facts();
    guarded(&mut f, Decision::ImplicitDeny, Some(false), None);
    f.boundary_arn = Some("arn:aws:iam::123456789012:policy/DevBoundary".into());
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::PermissionsBoundaryBlocks]);
    assert_eq!(actions(&out), vec![RemediationAction::UpdatePermissionsBoundary, RemediationAction::PutUserPolicy]);
    let r = &out.remediations[0];
    assert_eq!(r.target, "arn:aws:iam::123456789012:policy/DevBoundary");
    let cmds = r.commands.join("\n");
    for step in ["get-policy ", "get-policy-version", "jq --argjson add", "create-policy-version", "--set-as-default"] {
        assert!(cmds.contains(step), "{step}: {cmds}");
    }
    // Allowed by the boundary (or no boundary at all): the ordinary missing-grant cause.
    guarded(&mut f, Decision::ImplicitDeny, Some(true), Some(true));
    assert_eq!(codes(&decide(&f)), vec![CauseCode::CallerLacksCreateGrant]);
}

#[test]
fn a_key_policy_deny_naming_the_account_covers_the_caller() {
    let mut f = facts();
    f.keys[0].policy = Some(
        json!({"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "NoGrantsHere", "Effect": "Deny", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:CreateGrant", "Resource": "*"}]})
        .to_string(),
    );
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::ExplicitDeny]);
    assert!(out.causes[0].summary.contains("NoGrantsHere"), "{}", out.causes[0].summary);
}

fn ec2_infrastructure_denial(message_tail: &str) -> Record {
    // The identity EC2 uses to decrypt a volume's data key at launch: the role
    // aws:ec2-infrastructure, its session named after the instance, inScopeOf naming it.
    record(
        "Decrypt",
        json!({"type": "AssumedRole", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-infrastructure/i-0abc"),
               "accountId": ACCOUNT,
               "inScopeOf": {"issuerType": "AWS::EC2::Instance", "credentialsIssuedTo": format!("arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-0abc")}}),
        json!({"errorCode": "AccessDenied",
               "errorMessage": format!("User: arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-infrastructure/i-0abc is not authorized to perform: kms:Decrypt on resource: {KEY} {message_tail}"),
               "requestParameters": {"keyId": KEY, "encryptionContext": {"aws:ebs:id": "vol-1"}}}),
    )
}

#[test]
fn ec2s_own_identity_denied_by_a_key_policy_guard_gets_the_guard_exempting_it() {
    let mut f = facts();
    f.simulations = vec![sim(USER, "kms:CreateGrant", KEY, Decision::Allowed)];
    f.keys[0].policy = Some(
        json!({"Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "OnlyOurs", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [format!("arn:aws:iam::{ACCOUNT}:role/Ops")]}}}]})
        .to_string(),
    );
    f.kms_denials = vec![ec2_infrastructure_denial("with an explicit deny in a resource-based policy")];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::Ec2InfrastructureDenied]);
    // The launch caller stays the one the launch record names.
    assert_eq!(out.launch.as_ref().unwrap().caller.principal_arn.as_deref(), Some(USER));
    assert_eq!(actions(&out), vec![RemediationAction::AddKeyPolicyStatement]);
    let st = out.remediations[0].policy_document.as_ref().unwrap();
    assert_eq!(st["Sid"], "OnlyOurs");
    assert_eq!(
        st["Condition"]["ArnNotEquals"]["aws:PrincipalArn"],
        json!([
            format!("arn:aws:iam::{ACCOUNT}:role/Ops"),
            format!("arn:aws:iam::{ACCOUNT}:role/aws:ec2-infrastructure")
        ])
    );
    assert!(out.remediations[0].commands[0].contains(".[$i] = $s"), "{:?}", out.remediations[0].commands);

    // The same denial from an SCP: review it, the key policy is not at fault.
    f.kms_denials = vec![ec2_infrastructure_denial("with an explicit deny in a service control policy")];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::Ec2InfrastructureDenied]);
    assert_eq!(actions(&out), vec![RemediationAction::ReviewScp]);
}

#[test]
fn a_service_linked_role_and_a_foreign_key_get_both_steps() {
    let foreign = "arn:aws:kms:eu-west-1:210987654321:key/0b1c2d3e-aaaa-bbbb-cccc-1234567890ab";
    let mut f = facts();
    f.volumes[0].kms_key_arn = Some(key(foreign));
    f.keys = vec![KeyFacts { arn: key(foreign), metadata: Some(enabled()), policy: None }];
    f.key_sources = vec![(key(foreign), crate::core::report::KeySource::Volume)];
    let slr =
        format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling");
    f.launch = Some(record(
        "StartInstances",
        json!({"type": "AssumedRole", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/AWSServiceRoleForAutoScaling/AutoScaling"),
               "sessionContext": {"sessionIssuer": {"type": "Role", "arn": slr}}, "invokedBy": "autoscaling.amazonaws.com"}),
        json!({}),
    ));
    f.simulations.clear();
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CrossAccountKey]);
    assert_eq!(actions(&out), vec![RemediationAction::AddKeyPolicyStatement, RemediationAction::CreateGrant]);
    assert_eq!(
        out.remediations[0].policy_document.as_ref().unwrap()["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:root")
    );
    assert_eq!(
        out.remediations[1].commands[0],
        format!("aws kms create-grant --region eu-west-1 --key-id {foreign} --grantee-principal {slr} --operations Decrypt GenerateDataKeyWithoutPlaintext ReEncryptFrom ReEncryptTo CreateGrant DescribeKey")
    );
}

#[test]
fn a_terminated_instance_that_no_longer_shows_volumes_is_not_said_to_have_none() {
    let mut f = facts();
    f.state = EndState::Terminated;
    f.instance.attachments.clear();
    f.volumes.clear();
    f.keys.clear();
    f.key_sources.clear();
    f.simulations.clear();
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::NoKmsCauseFound]);
    assert!(out.causes[0].summary.contains("no longer shows its volumes"), "{}", out.causes[0].summary);
    assert!(!out.causes[0].summary.contains("has no EBS volumes"));

    // The key its RunInstances request named: diagnosed, and the evidence says where it came from.
    f.keys = vec![KeyFacts { arn: key(KEY), metadata: Some(enabled()), policy: Some(DELEGATING.into()) }];
    f.key_sources = vec![(key(KEY), crate::core::report::KeySource::RunInstancesRequest)];
    f.simulations = vec![sim(USER, "kms:CreateGrant", KEY, Decision::ImplicitDeny)];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerLacksCreateGrant]);
    let v = serde_json::to_value(&out.causes[0].evidence).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "key-source" && e["source"] == "run-instances-request" && e["key_arn"] == KEY),
        "{v:#}"
    );
}

#[test]
fn sso_roles_are_recognised_by_their_reserved_path_too() {
    let c = caller_of(
        &json!({"type": "AssumedRole", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/Renamed_Admin/alice"),
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": format!("arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/Renamed_Admin")}}}),
    );
    assert_eq!(c.principal_kind, crate::core::cloudtrail::PrincipalKind::SsoRole);
    let c = caller_of(
        &json!({"type": "AssumedRole", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-infrastructure/i-0abc")}),
    );
    assert_eq!((c.principal_kind, c.principal_arn), (crate::core::cloudtrail::PrincipalKind::Service, None));
}
