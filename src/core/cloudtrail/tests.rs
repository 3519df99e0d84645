//! Tests of the module above.

use super::*;
use serde_json::json;

fn record(identity: Value) -> String {
    json!({
        "eventVersion": "1.08", "userIdentity": identity, "eventTime": "2026-11-28T10:00:00Z",
        "eventSource": "ec2.amazonaws.com", "eventName": "StartInstances", "awsRegion": "eu-west-1",
        "requestParameters": {"instancesSet": {"items": [{"instanceId": "i-0abc"}]}},
        "responseElements": {"instancesSet": {"items": [{"instanceId": "i-0abc"}]}},
        "eventID": "e-1"
    })
    .to_string()
}

#[test]
fn iam_user_is_the_principal() {
    let r = Record::parse(&record(json!({"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/test", "accountId": "123456789012", "userName": "test"}))).unwrap();
    assert_eq!(r.caller.principal_kind, PrincipalKind::User);
    assert_eq!(r.caller.principal_arn.as_deref(), Some("arn:aws:iam::123456789012:user/test"));
    assert_eq!(r.instance_ids, vec!["i-0abc"]);
    assert_eq!(r.event_name, "StartInstances");
}

#[test]
fn assumed_role_maps_to_the_issuing_role() {
    let r = Record::parse(&record(
        json!({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/Ops/alice",
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::123456789012:role/team/Ops"}}}),
    ))
    .unwrap();
    assert_eq!(r.caller.principal_kind, PrincipalKind::Role);
    assert_eq!(r.caller.principal_arn.as_deref(), Some("arn:aws:iam::123456789012:role/team/Ops"));
    assert_eq!(r.caller.short_name(), "role/team/Ops");
}

#[test]
fn assumed_role_without_issuer_falls_back_to_session_arn() {
    let c = caller_of(&json!({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/Ops/alice"}));
    assert_eq!(c.principal_arn.as_deref(), Some("arn:aws:iam::123456789012:role/Ops"));
}

#[test]
fn service_linked_and_sso_roles_are_recognised() {
    let c = caller_of(
        &json!({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/AWSServiceRoleForAutoScaling/AutoScaling",
        "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"}}}),
    );
    assert_eq!(c.principal_kind, PrincipalKind::ServiceLinkedRole);
    let c = caller_of(
        &json!({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0123456789abcdef/alice",
        "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Admin_0123456789abcdef"}}}),
    );
    assert_eq!(c.principal_kind, PrincipalKind::SsoRole);
}

#[test]
fn federated_user_maps_to_the_federating_user_and_root_to_root() {
    let c = caller_of(&json!({"type": "FederatedUser", "arn": "arn:aws:sts::123456789012:federated-user/bob",
        "sessionContext": {"sessionIssuer": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/broker"}}}));
    assert_eq!(
        (c.principal_kind, c.principal_arn.as_deref()),
        (PrincipalKind::Federated, Some("arn:aws:iam::123456789012:user/broker"))
    );
    let c = caller_of(&json!({"type": "Root", "arn": "arn:aws:iam::123456789012:root", "accountId": "123456789012"}));
    assert_eq!(
        (c.principal_kind, c.principal_arn.as_deref()),
        (PrincipalKind::Root, Some("arn:aws:iam::123456789012:root"))
    );
}

#[test]
fn odd_identities_are_unknown_not_errors() {
    for id in [json!(null), json!("x"), json!({"type": 7}), json!({"type": "IAMUser", "arn": "not an arn"})] {
        let c = caller_of(&id);
        assert!(c.principal_arn.is_none(), "{id}");
    }
}

#[test]
fn ec2_infrastructure_identity_names_its_instance_and_an_instance_profile_does_not() {
    // Shapes from the CloudTrail userIdentity reference (inScopeOf) and public records of
    // instance credentials: role session named after the instance, credentialsIssuedTo its ARN.
    let ec2 = json!({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/aws:ec2-infrastructure/i-0abcd1234ef567890",
        "inScopeOf": {"issuerType": "AWS::EC2::Instance", "credentialsIssuedTo": "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abcd1234ef567890"}});
    assert_eq!(ec2_infrastructure_instance(&ec2).as_deref(), Some("i-0abcd1234ef567890"));
    let bare = json!({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/aws:ec2-infrastructure/i-0abcd1234ef567890"});
    assert_eq!(ec2_infrastructure_instance(&bare).as_deref(), Some("i-0abcd1234ef567890"));
    let profile = json!({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/AppRole/i-0abcd1234ef567890",
        "inScopeOf": {"issuerType": "AWS::EC2::Instance", "credentialsIssuedTo": "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abcd1234ef567890"}});
    assert_eq!(ec2_infrastructure_instance(&profile), None);
}

#[test]
fn truncated_or_incomplete_records_are_errors() {
    assert!(matches!(Record::parse("{\"eventID\": \"x\""), Err(RecordError::Json(_))));
    assert!(matches!(Record::parse("{}"), Err(RecordError::Missing("eventID"))));
    assert!(matches!(
        Record::parse(r#"{"eventID":"a","eventName":"b","eventTime":"yesterday"}"#),
        Err(RecordError::Missing(_))
    ));
}

#[test]
fn denied_kms_call_is_recognised() {
    let r = Record::parse(&json!({"eventID": "d-1", "eventName": "CreateGrant", "eventTime": "2026-11-28T10:00:01Z",
        "errorCode": "AccessDenied", "errorMessage": "User: arn:aws:iam::123456789012:user/test is not authorized to perform: kms:CreateGrant on resource: arn:aws:kms:eu-west-1:123456789012:key/k because no identity-based policy allows the kms:CreateGrant action",
        "requestParameters": {"keyId": "arn:aws:kms:eu-west-1:123456789012:key/k"},
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/test"}}).to_string()).unwrap();
    assert!(r.is_access_denied());
    assert!(!r.mentions_explicit_deny());
    assert_eq!(r.key.as_deref(), Some("arn:aws:kms:eu-west-1:123456789012:key/k"));
}
