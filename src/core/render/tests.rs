//! Tests of the module above.

use super::*;
use crate::core::facts::Decision;
use crate::core::report::CauseCode;
use crate::core::report::Evidence;
use crate::core::report::RemediationAction;
use crate::core::report::Restart;

fn remediation(status: RemediationStatus, verified: Option<bool>, note: Option<&str>) -> Remediation {
    Remediation {
        action: RemediationAction::PutUserPolicy,
        target: "arn:aws:iam::123456789012:user/test".into(),
        policy_name: Some("kms-launch-doctor-k".into()),
        policy_document: None,
        commands: vec![],
        status,
        verified,
        note: note.map(str::to_owned),
        restart: None::<Restart>,
    }
}

#[test]
fn each_status_says_what_happened() {
    assert_eq!(status(&remediation(RemediationStatus::Applied, Some(true), Some("x"))), "applied, verified");
    assert_eq!(
        status(&remediation(
            RemediationStatus::Refused,
            None,
            Some("arn:aws:iam::123456789012:user/test has not opted in: tag it kms-launch-doctor:auto-remediate=true")
        )),
        "refused: user/test has not opted in: tag it kms-launch-doctor:auto-remediate=true"
    );
    assert_eq!(
        status(&remediation(RemediationStatus::Failed, None, Some("iam:ListUserTags failed: AccessDenied"))),
        "failed: iam:ListUserTags failed: AccessDenied"
    );
    assert_eq!(status(&remediation(RemediationStatus::Proposed, None, None)), "proposed, not applied");
    assert!(status(&remediation(RemediationStatus::Applied, Some(false), Some("still denied")))
        .starts_with("applied, not verified"));
}

fn finding(code: CauseCode, sims: &[Decision], remediations: Vec<Remediation>) -> Finding {
    let key = KeyArn::parse("arn:aws:kms:eu-west-1:123456789012:key/k").unwrap();
    let user = "arn:aws:iam::123456789012:user/test";
    let mut f = crate::core::report::fixture::finding(user, &key);
    f.instance_id = "i-0abcdef01".into();
    f.instance_name = Some("web\x1b[2J-1".into());
    f.severity = code.severity();
    f.keys = vec![KeyReport {
        arn: key.clone(),
        account: "123456789012".into(),
        manager: Some("CUSTOMER".into()),
        state: Some("Enabled".into()),
        iam_delegation: Some(true),
        aliases: vec!["alias/ebs".into()],
    }];
    f.causes = vec![crate::core::report::Cause {
        code,
        key_arn: (code != CauseCode::NoKmsCauseFound).then(|| key.clone()),
        summary: "s".into(),
        evidence: sims
            .iter()
            .map(|d| Evidence::Simulation {
                principal_arn: user.into(),
                action: "kms:CreateGrant".into(),
                resource: key.to_string(),
                decision: *d,
                matched_statements: vec![],
                allowed_by_boundary: None,
                allowed_by_organizations: None,
            })
            .collect(),
    }];
    f.remediations = remediations;
    f
}

fn fix(status: RemediationStatus, verified: Option<bool>) -> Remediation {
    let mut r = remediation(status, verified, None);
    r.policy_document = Some(serde_json::json!({"Statement": [{"Action": ["kms:CreateGrant"],
        "Resource": ["arn:aws:kms:eu-west-1:123456789012:key/k"]}]}));
    r.commands = vec!["aws iam put-user-policy --user-name test".into()];
    r
}

#[test]
fn a_cause_fixed_since_the_failure_says_so_and_gives_the_start_command() {
    let f =
        finding(CauseCode::CallerLacksCreateGrant, &[Decision::Allowed], vec![fix(RemediationStatus::Proposed, None)]);
    let text = finding_text(&f, false);
    assert!(text.contains("Fixed since the failure: kms:CreateGrant is now allowed for user/test on arn:aws:kms:eu-west-1:123456789012:key/k (alias/ebs)"), "{text}");
    assert!(text.contains("$ aws ec2 start-instances --instance-ids i-0abcdef01 --region eu-west-1"), "{text}");
    assert!(text.contains("i-0abcdef01 (Name: web?[2J-1)"), "{text}");
}

#[test]
fn a_fix_applied_and_verified_is_fixed_by_this_run() {
    let f = finding(
        CauseCode::CallerLacksCreateGrant,
        &[Decision::ImplicitDeny],
        vec![fix(RemediationStatus::Applied, Some(true))],
    );
    let text = finding_text(&f, false);
    assert!(text.contains("Fixed by this run: kms:CreateGrant is now allowed"), "{text}");
    assert!(text.contains(": applied, verified"), "{text}");
    assert!(text.contains("start-instances"), "{text}");
}

#[test]
fn nothing_is_said_fixed_without_the_simulator_saying_so() {
    for f in [
        finding(
            CauseCode::CallerLacksCreateGrant,
            &[Decision::ImplicitDeny],
            vec![fix(RemediationStatus::Refused, None)],
        ),
        finding(CauseCode::CallerLacksCreateGrant, &[], vec![fix(RemediationStatus::Applied, Some(false))]),
        finding(CauseCode::KeyDisabled, &[Decision::Allowed], vec![]),
        finding(CauseCode::NoKmsCauseFound, &[], vec![]),
    ] {
        let text = finding_text(&f, false);
        assert!(fixed_now(&f).is_none(), "{text}");
        assert!(!text.contains("start-instances") && !text.contains("Fixed"), "{text}");
    }
}

#[test]
fn no_kms_cause_with_the_caller_allowed_now_suggests_a_restart_without_claiming_a_fix() {
    let f = finding(CauseCode::NoKmsCauseFound, &[Decision::Allowed], vec![]);
    let text = finding_text(&f, false);
    assert!(text.contains("Allowed now: kms:CreateGrant is now allowed for user/test"), "{text}");
    assert!(text.contains("if KMS caused it, that has been fixed since"), "{text}");
    assert!(!text.contains("Fixed since"), "{text}");
    assert!(text.contains("$ aws ec2 start-instances --instance-ids i-0abcdef01 --region eu-west-1"), "{text}");
}
