//! A finding, for the tests of whatever reads one (rendering, remediation, delivery).

use crate::core::arn::KeyArn;
use crate::core::cloudtrail::PrincipalKind;
use crate::core::facts::EndState;
use crate::core::report::CauseCode;
use crate::core::report::Finding;

/// A stopped instance's finding whose cause is a missing grant on `key`, launched by `user`.
pub fn finding(user: &str, key: &KeyArn) -> Finding {
    Finding {
        schema: crate::core::report::FINDING_SCHEMA,
        id: "kld-test".into(),
        account: "123456789012".into(),
        region: "eu-west-1".into(),
        instance_id: "i-0abc".into(),
        instance_name: None,
        severity: "MEDIUM",
        instance_state: EndState::Stopped,
        state_reason: crate::core::facts::StateReason { code: "Client.InternalError".into(), message: String::new() },
        observed_at: "2026-11-28T10:00:00Z".into(),
        launch: Some(crate::core::report::Launch {
            api: crate::core::cloudtrail::LaunchApi::StartInstances,
            event_id: "e".into(),
            event_time: "2026-11-28T10:00:00Z".into(),
            caller: crate::core::cloudtrail::Caller {
                identity_type: "IAMUser".into(),
                arn: Some(user.into()),
                principal_arn: Some(user.into()),
                principal_kind: PrincipalKind::User,
                account: Some("123456789012".into()),
                invoked_by: None,
            },
        }),
        volumes: vec![],
        keys: vec![],
        causes: vec![crate::core::report::Cause {
            code: CauseCode::CallerLacksCreateGrant,
            key_arn: Some(key.clone()),
            summary: String::new(),
            evidence: vec![],
        }],
        remediations: vec![],
        missing_evidence: vec![],
        cloudtrail_window: None,
        delivered: Default::default(),
        decided_at: None,
        digest: String::new(),
    }
}
