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

mod aws_shows;
mod records;

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
