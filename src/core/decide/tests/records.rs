//! What CloudTrail records and the simulator say when they disagree, keys that cannot be read,
//! several keys, RunInstances, and callers of every kind.

use super::*;

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
