//! Tests of the module above.

use super::*;

const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
const USER: &str = "arn:aws:iam::123456789012:user/test";

fn req(action: &'static str) -> Request<'static> {
    Request {
        principal_arn: USER,
        caller_arn: None,
        principal_account: "123456789012",
        key_arn: KEY,
        region: "eu-west-1",
        action,
        principal_type: Some("User"),
    }
}

fn verdict(policy: &str) -> Verdict {
    KeyPolicy::parse(policy).unwrap().evaluate(&req("kms:CreateGrant"))
}

#[test]
fn default_key_policy_delegates_to_iam() {
    let v = verdict(
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#,
    );
    assert_eq!(v.delegates_to_iam, Tri::Yes);
    assert_eq!(v.allows_principal, Tri::No);
    assert_eq!(v.denies_principal, Tri::No);
    assert_eq!(v.statements, vec!["Enable IAM User Permissions"]);
}

#[test]
fn bare_account_id_principal_also_delegates() {
    let v = verdict(
        r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["123456789012"]},"Action":["kms:Create*"],"Resource":"*"}}"#,
    );
    assert_eq!(v.delegates_to_iam, Tri::Yes);
}

#[test]
fn policy_naming_only_an_admin_does_not_delegate() {
    let v = verdict(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/KeyAdmin"},"Action":"kms:*","Resource":"*"}]}"#,
    );
    assert_eq!(v.delegates_to_iam, Tri::No);
    assert_eq!(v.allows_principal, Tri::No);
}

#[test]
fn naming_the_principal_allows_it() {
    let v = verdict(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:user/test"]},"Action":"kms:CreateGrant","Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}}]}"#,
    );
    assert_eq!(v.allows_principal, Tri::Yes);
}

#[test]
fn grant_condition_does_not_apply_to_decrypt() {
    let p = KeyPolicy::parse(r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/test"},"Action":["kms:CreateGrant","kms:Decrypt"],"Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}]}"#).unwrap();
    assert_eq!(p.evaluate(&req("kms:CreateGrant")).allows_principal, Tri::Yes);
    assert_eq!(p.evaluate(&req("kms:Decrypt")).allows_principal, Tri::No);
}

#[test]
fn aws_managed_ebs_key_policy_allows_via_ec2() {
    let v = verdict(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:CreateGrant","kms:DescribeKey"],"Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"123456789012","kms:ViaService":"ec2.eu-west-1.amazonaws.com"}}}]}"#,
    );
    assert_eq!(v.allows_principal, Tri::Yes);
}

#[test]
fn unknown_condition_keys_are_maybe() {
    let v = verdict(
        r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringNotEquals":{"aws:PrincipalOrgID":"o-123"}}}]}"#,
    );
    assert_eq!(v.denies_principal, Tri::Maybe);
}

#[test]
fn explicit_deny_on_create_grant() {
    let v = verdict(
        r#"{"Statement":[
        {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"},
        {"Sid":"NoGrants","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:user/test"},"NotAction":["kms:Describe*"],"Resource":"*"}]}"#,
    );
    assert_eq!(v.denies_principal, Tri::Yes);
    assert_eq!(v.delegates_to_iam, Tri::Yes);
    assert!(v.statements.contains(&"NoGrants".to_owned()));
}

#[test]
fn not_principal_deny_exempting_someone_else_covers_the_caller() {
    let v = verdict(
        r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::123456789012:role/Admin"]},"Action":"kms:CreateGrant","Resource":"*"}]}"#,
    );
    assert_eq!(v.denies_principal, Tri::Yes);
    // The account alone exempts nobody in it.
    let v = verdict(
        r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::123456789012:root"]},"Action":"kms:CreateGrant","Resource":"*"}]}"#,
    );
    assert_eq!(v.denies_principal, Tri::Yes);
    // The user's own ARN with its account: exempt.
    let v = verdict(
        r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::123456789012:user/test","arn:aws:iam::123456789012:root"]},"Action":"kms:CreateGrant","Resource":"*"}]}"#,
    );
    assert_eq!(v.denies_principal, Tri::No);
    // Its own ARN without the account: AWS says the Deny might still apply.
    let v = verdict(
        r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/test"},"Action":"kms:CreateGrant","Resource":"*"}]}"#,
    );
    assert_eq!(v.denies_principal, Tri::Maybe);
}

#[test]
fn a_deny_naming_the_account_covers_every_principal_of_it() {
    for principal in [r#""arn:aws:iam::123456789012:root""#, r#""123456789012""#] {
        let v = verdict(&format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::123456789012:root"}},"Action":"kms:*","Resource":"*"}},
            {{"Sid":"NoGrants","Effect":"Deny","Principal":{{"AWS":{principal}}},"Action":"kms:CreateGrant","Resource":"*"}}]}}"#
        ));
        assert_eq!(v.denies_principal, Tri::Yes, "{principal}");
    }
    // Another account's root does not cover this one.
    let v = verdict(
        r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::210987654321:root"},"Action":"kms:*","Resource":"*"}]}"#,
    );
    assert_eq!(v.denies_principal, Tri::No);
}

#[test]
fn known_condition_keys_are_decided_not_maybe() {
    // A guard that lets only named principals use the key: decided for a known caller.
    let guard = |arns: &str| {
        format!(
            r#"{{"Statement":[{{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{{"ArnNotEquals":{{"aws:PrincipalArn":{arns}}}}}}}]}}"#
        )
    };
    assert_eq!(verdict(&guard(r#"["arn:aws:iam::123456789012:role/Ops"]"#)).denies_principal, Tri::Yes);
    assert_eq!(verdict(&guard(r#"["arn:aws:iam::123456789012:user/test"]"#)).denies_principal, Tri::No);
    for (cond, expected) in [
        (r#"{"StringEquals":{"aws:PrincipalType":"User"}}"#, Tri::Yes),
        (r#"{"StringEquals":{"aws:PrincipalType":"AssumedRole"}}"#, Tri::No),
        (r#"{"StringEquals":{"aws:PrincipalAccount":"123456789012"}}"#, Tri::Yes),
        (r#"{"StringEquals":{"kms:CallerAccount":"210987654321"}}"#, Tri::No),
        (r#"{"StringEquals":{"kms:ViaService":"ec2.eu-west-1.amazonaws.com"}}"#, Tri::Yes),
    ] {
        let v = verdict(&format!(
            r#"{{"Statement":[{{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{cond}}}]}}"#
        ));
        assert_eq!(v.denies_principal, expected, "{cond}");
    }
}

#[test]
fn resource_naming_another_key_does_not_cover() {
    let v = verdict(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"arn:aws:kms:eu-west-1:123456789012:key/other"}]}"#,
    );
    assert_eq!(v.delegates_to_iam, Tri::No);
}

#[test]
fn rejects_illegal_documents_with_an_error() {
    assert!(matches!(KeyPolicy::parse("{"), Err(PolicyError::Json(_))));
    assert!(matches!(KeyPolicy::parse("[]"), Err(PolicyError::Shape(_))));
    assert!(matches!(
        KeyPolicy::parse(r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"*"}]}"#),
        Err(PolicyError::Shape(_))
    ));
    assert!(matches!(
        KeyPolicy::parse(r#"{"Statement":[{"Effect":"Allow","Principal":7,"Action":"*"}]}"#),
        Err(PolicyError::Shape(_))
    ));
}

#[test]
fn glob_matches_iam_wildcards() {
    assert!(glob("kms:Create*", "kms:CreateGrant", false));
    assert!(glob("KMS:*", "kms:CreateGrant", false));
    assert!(glob("kms:?reateGrant", "kms:CreateGrant", false));
    assert!(!glob("kms:Decrypt", "kms:CreateGrant", false));
    assert!(glob("*", "", true));
    assert!(glob("a*b*c", "aXXbYYc", true));
    assert!(!glob("a*b*c", "aXXbYY", true));
    assert!(!glob("arn:aws:kms:*:key/A", "arn:aws:kms:x:key/a", true));
}
