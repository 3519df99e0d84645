//! Who may make the function write: every opt-in and every way evidence can fail to name this launch.

use super::*;
use crate::core::arn::KeyArn;
use crate::core::cloudtrail::PrincipalKind;
use crate::core::report::CauseCode;
use crate::core::report::Remediation;
use crate::core::report::RemediationAction;

const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";

/// A finding for `principal` whose cause is `code`, with the usual put-*-policy fix.
fn case(principal: &str, kind: PrincipalKind, code: CauseCode, key: &str) -> (Finding, Remediation) {
    let key = KeyArn::parse(key).unwrap();
    let fix =
        crate::core::fixes::put_identity_policy(principal, PrincipalKind::User, &key, &["kms:CreateGrant".into()])
            .or_else(|| {
                crate::core::fixes::put_identity_policy(
                    principal,
                    PrincipalKind::Role,
                    &key,
                    &["kms:CreateGrant".into()],
                )
            })
            .unwrap_or_else(|| {
                let mut r = crate::core::fixes::enable_key(&key);
                r.action = RemediationAction::PutUserPolicy;
                r.target = principal.to_owned();
                r.policy_name = Some(crate::core::fixes::policy_name(&key));
                r.policy_document = Some(crate::core::fixes::identity_policy(&key, &["kms:CreateGrant".into()]));
                r
            });
    let mut f = crate::core::report::fixture::finding(principal, &key);
    if let Some(l) = f.launch.as_mut() {
        l.caller.principal_kind = kind;
    }
    if let Some(c) = f.causes.first_mut() {
        c.code = code;
    }
    f.remediations = vec![fix.clone()];
    (f, fix)
}

fn refusal(principal: &str, kind: PrincipalKind, code: CauseCode, key: &str) -> String {
    let (f, r) = case(principal, kind, code, key);
    static_checks(&f, &r).err().unwrap_or_default()
}

#[test]
fn same_account_user_with_missing_grant_passes() {
    let (f, r) =
        case("arn:aws:iam::123456789012:user/test", PrincipalKind::User, CauseCode::CallerLacksCreateGrant, KEY);
    let (p, k) = static_checks(&f, &r).unwrap();
    assert_eq!(p, Principal::User("test".into()));
    assert_eq!(k.to_string(), KEY);
}

#[test]
fn every_guardrail_refuses_with_a_reason() {
    let user = "arn:aws:iam::123456789012:user/test";
    assert!(refusal("arn:aws:iam::123456789012:root", PrincipalKind::Root, CauseCode::CallerLacksCreateGrant, KEY)
        .contains("root"));
    assert!(refusal(
        "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
        PrincipalKind::ServiceLinkedRole,
        CauseCode::CallerLacksCreateGrant,
        KEY
    )
    .contains("service-linked"));
    assert!(refusal(
        "arn:aws:iam::123456789012:role/AWSReservedSSO_Admin_0123456789abcdef",
        PrincipalKind::SsoRole,
        CauseCode::CallerLacksCreateGrant,
        KEY
    )
    .contains("permission set"));
    assert!(refusal(
        "arn:aws:iam::123456789012:user/broker",
        PrincipalKind::Federated,
        CauseCode::CallerLacksCreateGrant,
        KEY
    )
    .contains("federated"));
    assert!(refusal(
        "arn:aws:iam::210987654321:user/test",
        PrincipalKind::User,
        CauseCode::CallerLacksCreateGrant,
        KEY
    )
    .contains("cross-account"));
    assert!(refusal(
        user,
        PrincipalKind::User,
        CauseCode::CallerLacksCreateGrant,
        "arn:aws:kms:eu-west-1:210987654321:key/x"
    )
    .contains("cross-account"));
    assert!(refusal(user, PrincipalKind::User, CauseCode::CrossAccountKey, KEY).contains("key owner"));
    assert!(refusal(user, PrincipalKind::User, CauseCode::ExplicitDeny, KEY).contains("explicit-deny"));
    assert!(refusal(user, PrincipalKind::User, CauseCode::KeyDisabled, KEY).contains("key-disabled"));
}

#[test]
fn non_iam_fixes_are_never_applied() {
    let key = KeyArn::parse(KEY).unwrap();
    let (f, _) = case("arn:aws:iam::123456789012:user/test", PrincipalKind::User, CauseCode::KeyDisabled, KEY);
    for r in [
        crate::core::fixes::enable_key(&key),
        crate::core::fixes::cancel_key_deletion(&key),
        crate::core::fixes::review_deny(None, "123456789012", &key, true),
    ] {
        assert!(static_checks(&f, &r).is_err());
    }
}

#[test]
fn only_the_caller_a_launch_record_names_is_remediated() {
    let user = "arn:aws:iam::123456789012:user/test";
    let (mut f, r) = case(user, PrincipalKind::User, CauseCode::CallerLacksCreateGrant, KEY);
    if let Some(l) = f.launch.as_mut() {
        l.caller.principal_arn = Some("arn:aws:iam::123456789012:user/someone-else".into());
    }
    assert!(static_checks(&f, &r).unwrap_err().contains("is not the caller the launch record names"));
    f.launch = None;
    assert!(static_checks(&f, &r).unwrap_err().contains("no StartInstances record naming i-0abc"));
}
