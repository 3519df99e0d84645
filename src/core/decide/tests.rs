//! The pure core, cause by cause, from hand-written facts (no network).

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{caller_of, Record};
use crate::core::decide::{decide, finding_id};
use crate::core::facts::*;
use crate::core::report::{CauseCode, Finding, RemediationAction};

const ACCOUNT: &str = "123456789012";
const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
const USER: &str = "arn:aws:iam::123456789012:user/test";
const DELEGATING: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#;
const ADMIN_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/KeyAdmin"},"Action":"kms:*","Resource":"*"}]}"#;

fn key(arn: &str) -> KeyArn {
    KeyArn::parse(arn).unwrap()
}

fn record(name: &str, identity: Value, extra: Value) -> Record {
    let mut v = json!({"eventID": format!("ev-{name}"), "eventName": name, "eventTime": "2026-11-28T10:00:00Z",
        "userIdentity": identity, "requestParameters": {"instancesSet": {"items": [{"instanceId": "i-0abc"}]}}});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    Record::parse(&v.to_string()).unwrap()
}

fn user_identity() -> Value {
    json!({"type": "IAMUser", "arn": USER, "accountId": ACCOUNT, "userName": "test"})
}

fn enabled() -> KeyMetadata {
    KeyMetadata {
        state: KeyState::Enabled,
        manager: Some("CUSTOMER".into()),
        origin: Some("AWS_KMS".into()),
        deletion_date: None,
        valid_to: None,
        custom_key_store_id: None,
    }
}

/// The article's scenario: user/test started i-0abc, one volume on one key.
fn facts() -> Facts {
    Facts {
        instance: Instance {
            id: "i-0abc".into(),
            account: ACCOUNT.into(),
            partition: "aws".into(),
            region: "eu-west-1".into(),
            state: Some(EndState::Stopped),
            state_name: "stopped".into(),
            state_reason: None,
            attachments: vec![Attachment { volume_id: "vol-1".into(), device: "/dev/xvda".into() }],
            tags: vec![],
            image_id: None,
        },
        state: EndState::Stopped,
        state_reason: StateReason {
            code: "Client.InternalError".into(),
            message: "Client.InternalError: Client error on launch".into(),
        },
        observed_at: Utc.with_ymd_and_hms(2026, 11, 28, 10, 1, 0).unwrap(),
        volumes: vec![Volume {
            volume_id: "vol-1".into(),
            device: "/dev/xvda".into(),
            encrypted: Some(true),
            kms_key_arn: Some(key(KEY)),
        }],
        keys: vec![KeyFacts { arn: key(KEY), metadata: Some(enabled()), policy: Some(DELEGATING.into()) }],
        launch: Some(record("StartInstances", user_identity(), json!({}))),
        kms_denials: vec![],
        simulations: vec![sim(USER, "kms:CreateGrant", KEY, Decision::ImplicitDeny)],
        boundary_arn: None,
        key_sources: vec![(key(KEY), crate::core::report::KeySource::Volume)],
        missing: vec![],
    }
}

fn sim(principal: &str, action: &str, resource: &str, decision: Decision) -> Simulation {
    Simulation {
        principal_arn: principal.into(),
        action: action.into(),
        resource: resource.into(),
        decision,
        matched_statements: vec![],
        allowed_by_boundary: None,
        allowed_by_organizations: None,
    }
}

fn codes(f: &Finding) -> Vec<CauseCode> {
    f.causes.iter().map(|c| c.code).collect()
}

fn actions(f: &Finding) -> Vec<RemediationAction> {
    f.remediations.iter().map(|r| r.action).collect()
}

#[test]
fn article_scenario_is_caller_lacks_create_grant_with_the_articles_policy() {
    let f = decide(&facts());
    assert_eq!(codes(&f), vec![CauseCode::CallerLacksCreateGrant]);
    assert_eq!(f.causes[0].key_arn.as_ref().map(|k| k.to_string()).as_deref(), Some(KEY));
    assert_eq!(actions(&f), vec![RemediationAction::PutUserPolicy]);
    let r = &f.remediations[0];
    assert_eq!(r.target, USER);
    assert_eq!(r.policy_name.as_deref(), Some("kms-launch-doctor-8e3426b8-87b4-434c-ae74-8e63dadf354a"));
    assert_eq!(
        r.policy_document.as_ref().unwrap(),
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:CreateGrant"], "Resource": [KEY],
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": true},
                          "StringEquals": {"kms:ViaService": "ec2.eu-west-1.amazonaws.com"}}}]})
    );
    assert_eq!(f.keys[0].iam_delegation, Some(true));
    let launch = f.launch.as_ref().unwrap();
    assert_eq!(launch.caller.principal_arn.as_deref(), Some(USER));
    assert_eq!(f.id, finding_id(ACCOUNT, "eu-west-1", "i-0abc", Some(USER)));
}

#[test]
fn finding_json_follows_the_contract() {
    let v = serde_json::to_value(decide(&facts())).unwrap();
    for field in [
        "schema",
        "id",
        "account",
        "region",
        "instance_id",
        "instance_state",
        "state_reason",
        "observed_at",
        "launch",
        "volumes",
        "keys",
        "causes",
        "remediations",
        "missing_evidence",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["schema"], "kms-launch-doctor.finding/1");
    assert_eq!(v["instance_state"], "stopped");
    assert_eq!(v["observed_at"], "2026-11-28T10:01:00Z");
    assert_eq!(v["launch"]["api"], "StartInstances");
    assert_eq!(v["launch"]["caller"]["principal_kind"], "user");
    assert_eq!(v["launch"]["caller"]["identity_type"], "IAMUser");
    assert_eq!(v["causes"][0]["code"], "caller-lacks-create-grant");
    assert_eq!(v["remediations"][0]["action"], "put-user-policy");
    assert_eq!(v["remediations"][0]["status"], "proposed");
    assert_eq!(v["keys"][0]["state"], "Enabled");
    assert_eq!(v["keys"][0]["manager"], "CUSTOMER");
    assert_eq!(v["volumes"][0]["kms_key_arn"], KEY);
}

#[test]
fn identity_allows_but_key_policy_does_not_delegate() {
    let mut f = facts();
    f.keys[0].policy = Some(ADMIN_ONLY.into());
    f.simulations = vec![sim(USER, "kms:CreateGrant", KEY, Decision::Allowed)];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::KeyPolicyDeniesCaller]);
    assert!(
        out.causes[0].summary.contains("even though the caller's IAM policy allows it"),
        "{}",
        out.causes[0].summary
    );
    assert_eq!(actions(&out), vec![RemediationAction::AddKeyPolicyStatement]);
    assert_eq!(out.remediations[0].target, KEY);
    assert_eq!(out.remediations[0].policy_document.as_ref().unwrap()["Principal"]["AWS"], USER);
    assert_eq!(out.keys[0].iam_delegation, Some(false));
}

#[test]
fn key_policy_naming_the_caller_is_enough() {
    let mut f = facts();
    f.keys[0].policy = Some(format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{USER}"}},"Action":"kms:CreateGrant","Resource":"*"}}]}}"#
    ));
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::NoKmsCauseFound]);
    assert!(out.remediations.is_empty());
}

#[test]
fn identity_and_key_policy_both_allowing_is_no_kms_cause() {
    let mut f = facts();
    f.simulations = vec![sim(USER, "kms:CreateGrant", KEY, Decision::Allowed)];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::NoKmsCauseFound]);
    assert!(out.causes[0].key_arn.is_none());
}

#[test]
fn explicit_deny_from_simulation_or_key_policy() {
    let mut f = facts();
    f.simulations = vec![sim(USER, "kms:CreateGrant", KEY, Decision::ExplicitDeny)];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::ExplicitDeny]);
    assert_eq!(actions(&out), vec![RemediationAction::ReviewDenyStatement]);

    let mut f = facts();
    f.keys[0].policy = Some(r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"},
        {"Sid":"NoGrants","Effect":"Deny","Principal":"*","Action":"kms:CreateGrant","Resource":"*"}]}"#.into());
    f.simulations = vec![sim(USER, "kms:CreateGrant", KEY, Decision::Allowed)];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::ExplicitDeny]);
    assert!(out.causes[0].summary.contains("NoGrants"));
}

#[test]
fn key_states_come_before_permissions() {
    for (state, code, action) in [
        (KeyState::Disabled, CauseCode::KeyDisabled, RemediationAction::EnableKey),
        (KeyState::PendingDeletion, CauseCode::KeyPendingDeletion, RemediationAction::CancelKeyDeletion),
        (KeyState::PendingImport, CauseCode::KeyPendingImport, RemediationAction::ImportKeyMaterial),
        (KeyState::Unavailable, CauseCode::KeyUnavailable, RemediationAction::ConnectCustomKeyStore),
    ] {
        let mut f = facts();
        f.keys[0].metadata = Some(KeyMetadata { state: state.clone(), ..enabled() });
        let out = decide(&f);
        assert_eq!(codes(&out), vec![code], "{state:?}");
        assert_eq!(actions(&out), vec![action], "{state:?}");
        assert!(out.remediations[0]
            .commands
            .iter()
            .all(|c| c.contains(KEY) || c.starts_with('#') || c.contains("describe-custom-key-stores")));
    }
}

#[test]
fn cross_account_key() {
    let foreign = "arn:aws:kms:eu-west-1:210987654321:key/11111111-2222-3333-4444-555555555555";
    let mut f = facts();
    f.volumes[0].kms_key_arn = Some(key(foreign));
    f.keys = vec![KeyFacts { arn: key(foreign), metadata: Some(enabled()), policy: None }];
    f.simulations = vec![sim(USER, "kms:CreateGrant", foreign, Decision::ImplicitDeny)];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CrossAccountKey]);
    assert_eq!(actions(&out), vec![RemediationAction::AddKeyPolicyStatement, RemediationAction::PutUserPolicy]);
    assert!(out.causes[0].summary.contains("210987654321"));
}

#[test]
fn service_linked_role_needs_a_key_policy_grant() {
    let mut f = facts();
    f.launch = Some(record(
        "StartInstances",
        json!({"type": "AssumedRole", "accountId": ACCOUNT,
        "arn": "arn:aws:sts::123456789012:assumed-role/AWSServiceRoleForAutoScaling/AutoScaling",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"}}}),
        json!({}),
    ));
    f.simulations.clear();
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::ServiceLinkedRoleNeedsKeyAccess]);
    assert_eq!(actions(&out), vec![RemediationAction::AddKeyPolicyStatement, RemediationAction::AddKeyPolicyStatement]);
    assert_eq!(out.launch.unwrap().caller.principal_kind, crate::core::cloudtrail::PrincipalKind::ServiceLinkedRole);
}

#[test]
fn service_caller_maps_to_its_service_linked_role() {
    let mut f = facts();
    f.launch = Some(record(
        "StartInstances",
        json!({"type": "AWSService", "invokedBy": "autoscaling.amazonaws.com"}),
        json!({}),
    ));
    f.simulations.clear();
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::ServiceLinkedRoleNeedsKeyAccess]);
    assert_eq!(
        out.remediations[0].policy_document.as_ref().unwrap()["Principal"]["AWS"],
        "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    );
}

#[test]
fn sso_role_gets_a_permission_set_fix() {
    let role = "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Developer_0123456789abcdef";
    let mut f = facts();
    f.launch = Some(record(
        "StartInstances",
        json!({"type": "AssumedRole", "accountId": ACCOUNT,
        "arn": "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Developer_0123456789abcdef/alice",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role}}}),
        json!({}),
    ));
    f.simulations = vec![sim(role, "kms:CreateGrant", KEY, Decision::ImplicitDeny)];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerLacksCreateGrant]);
    assert_eq!(actions(&out), vec![RemediationAction::UpdatePermissionSet]);
    assert_eq!(out.remediations[0].policy_name.as_deref(), Some("Developer"));
}

#[test]
fn assumed_role_gets_a_role_policy() {
    let role = "arn:aws:iam::123456789012:role/Deployer";
    let mut f = facts();
    f.launch = Some(record(
        "StartInstances",
        json!({"type": "AssumedRole", "accountId": ACCOUNT,
        "arn": "arn:aws:sts::123456789012:assumed-role/Deployer/ci", "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role}}}),
        json!({}),
    ));
    f.simulations = vec![sim(role, "kms:CreateGrant", KEY, Decision::ImplicitDeny)];
    let out = decide(&f);
    assert_eq!(actions(&out), vec![RemediationAction::PutRolePolicy]);
    assert!(out.remediations[0].commands[0].starts_with("aws iam put-role-policy --role-name Deployer "));
}

#[test]
fn no_launch_record_is_caller_unknown_but_key_state_still_decides() {
    let mut f = facts();
    f.launch = None;
    f.simulations.clear();
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerUnknown]);
    assert_eq!(out.id, finding_id(ACCOUNT, "eu-west-1", "i-0abc", None));
    assert!(out.launch.is_none());

    f.keys[0].metadata = Some(KeyMetadata { state: KeyState::Disabled, ..enabled() });
    assert_eq!(codes(&decide(&f)), vec![CauseCode::KeyDisabled]);
}

#[test]
fn a_denied_create_grant_is_evidence_but_never_names_the_caller() {
    // Issue 12: whoever is denied a KMS call near a failed launch is not thereby its caller.
    let mut f = facts();
    f.launch = None;
    f.simulations.clear();
    f.kms_denials = vec![record(
        "CreateGrant",
        user_identity(),
        json!({"errorCode": "AccessDenied",
        "errorMessage": format!("User: {USER} is not authorized to perform: kms:CreateGrant on resource: {KEY} because no identity-based policy allows the kms:CreateGrant action"),
        "requestParameters": {"keyId": KEY}}),
    )];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerUnknown]);
    assert!(out.remediations.is_empty(), "{:?}", out.remediations);
    assert_eq!(out.id, finding_id(ACCOUNT, "eu-west-1", "i-0abc", None));
    assert!(out.causes[0].summary.contains("never names the caller"), "{}", out.causes[0].summary);
    assert!(out.causes[0].evidence.iter().any(
        |e| matches!(e, crate::core::report::Evidence::CloudtrailEvent { event_name, .. } if event_name == "CreateGrant")
    ));
}

#[test]
fn unreadable_key_policy_is_reported_and_simulation_still_decides() {
    let mut f = facts();
    f.keys[0].policy = None;
    f.missing.push(Missing {
        call: "kms:GetKeyPolicy".into(),
        target: KEY.into(),
        reason: "AccessDeniedException: no".into(),
    });
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerLacksCreateGrant]);
    assert!(out.causes[0].summary.contains("could not be read"));
    assert_eq!(out.keys[0].iam_delegation, None);
    assert_eq!(out.missing_evidence.len(), 1);
}

#[test]
fn two_keys_only_one_of_which_is_the_problem() {
    let good = "arn:aws:kms:eu-west-1:123456789012:key/99999999-0000-0000-0000-000000000000";
    let mut f = facts();
    f.volumes.push(Volume {
        volume_id: "vol-2".into(),
        device: "/dev/xvdb".into(),
        encrypted: Some(true),
        kms_key_arn: Some(key(good)),
    });
    f.keys.push(KeyFacts { arn: key(good), metadata: Some(enabled()), policy: Some(DELEGATING.into()) });
    f.simulations.push(sim(USER, "kms:CreateGrant", good, Decision::Allowed));
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerLacksCreateGrant]);
    assert_eq!(out.causes[0].key_arn.as_ref().unwrap().to_string(), KEY);
    assert_eq!(out.keys.len(), 2);
}

#[test]
fn run_instances_failure_needs_data_key_actions_too() {
    let mut f = facts();
    f.state = EndState::Terminated;
    f.launch = Some(record("RunInstances", user_identity(), json!({})));
    f.simulations = vec![
        sim(USER, "kms:CreateGrant", KEY, Decision::Allowed),
        sim(USER, "kms:GenerateDataKeyWithoutPlaintext", KEY, Decision::ImplicitDeny),
        sim(USER, "kms:Decrypt", KEY, Decision::ImplicitDeny),
    ];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerLacksCreateGrant]);
    let doc = out.remediations[0].policy_document.as_ref().unwrap();
    assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
    assert_eq!(doc["Statement"][0]["Action"], json!(["kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt"]));
    assert_eq!(out.launch.unwrap().api, crate::core::cloudtrail::LaunchApi::RunInstances);
}

#[test]
fn unencrypted_instance_is_no_kms_cause() {
    let mut f = facts();
    f.volumes[0].encrypted = Some(false);
    f.volumes[0].kms_key_arn = None;
    f.keys.clear();
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::NoKmsCauseFound]);
    assert!(out.causes[0].summary.contains("No attached EBS volume is encrypted"));
}

#[test]
fn root_caller_is_blocked_only_by_the_key_policy() {
    let root = json!({"type": "Root", "arn": "arn:aws:iam::123456789012:root", "accountId": ACCOUNT});
    let mut f = facts();
    f.launch = Some(record("StartInstances", root.clone(), json!({})));
    f.simulations.clear();
    assert_eq!(codes(&decide(&f)), vec![CauseCode::NoKmsCauseFound]);
    f.keys[0].policy = Some(ADMIN_ONLY.into());
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::KeyPolicyDeniesCaller]);
    assert_eq!(
        out.remediations[0].policy_document.as_ref().unwrap()["Principal"]["AWS"],
        "arn:aws:iam::123456789012:root"
    );
}

#[test]
fn caller_of_handles_federated_users() {
    let c = caller_of(
        &json!({"type": "FederatedUser", "arn": "arn:aws:sts::123456789012:federated-user/bob", "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/broker"}}}),
    );
    let mut f = facts();
    f.launch = Some(Record { caller: c, ..record("StartInstances", user_identity(), json!({})) });
    f.simulations = vec![sim("arn:aws:iam::123456789012:user/broker", "kms:CreateGrant", KEY, Decision::ImplicitDeny)];
    let out = decide(&f);
    assert_eq!(actions(&out), vec![RemediationAction::PutUserPolicy]);
    assert_eq!(out.remediations[0].target, "arn:aws:iam::123456789012:user/broker");
}

#[test]
fn decide_is_deterministic() {
    assert_eq!(decide(&facts()), decide(&facts()));
}

#[test]
fn a_denial_at_launch_that_iam_now_allows_is_still_the_cause() {
    let mut f = facts();
    f.simulations = vec![sim(USER, "kms:CreateGrant", KEY, Decision::Allowed)];
    f.kms_denials = vec![record(
        "CreateGrant",
        user_identity(),
        json!({"errorCode": "AccessDenied",
        "errorMessage": format!("User: {USER} is not authorized to perform: kms:CreateGrant on resource: {KEY}"),
        "requestParameters": {"keyId": KEY}}),
    )];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerLacksCreateGrant]);
    assert!(out.causes[0].summary.contains("allows it now"), "{}", out.causes[0].summary);
    assert_eq!(actions(&out), vec![RemediationAction::PutUserPolicy]);
}

#[test]
fn sns_subject_is_under_100_characters_for_a_long_role_path() {
    // SNS Publish: a subject "must be less than 100 characters long".
    let mut f = facts();
    let role = format!("arn:aws:iam::{ACCOUNT}:role/{}Deployer", "platform/continuous-delivery/".repeat(4));
    f.launch = Some(record(
        "StartInstances",
        json!({"type": "AssumedRole", "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/ci"),
               "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role}}}),
        json!({}),
    ));
    f.simulations = vec![sim(&role, "kms:CreateGrant", KEY, Decision::ImplicitDeny)];
    let out = decide(&f);
    assert_eq!(codes(&out), vec![CauseCode::CallerLacksCreateGrant]);
    let subject = crate::core::message::sns_subject(&out);
    assert_eq!(subject.len(), 99, "{subject}");
    assert!(subject.ends_with("...") && subject.is_ascii(), "{subject}");
}

// ---- Issue 14: what AWS really shows ------------------------------------------------------

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
