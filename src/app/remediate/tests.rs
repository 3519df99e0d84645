//! Unit tests of the guardrails' pure checks.

use super::*;
use crate::core::arn::KeyArn;

#[test]
fn modes_parse() {
    assert_eq!(Mode::parse("apply"), Some(Mode::Apply));
    assert_eq!(Mode::parse(" DRY-RUN "), Some(Mode::DryRun));
    assert_eq!(Mode::parse(""), Some(Mode::Off));
    assert_eq!(Mode::parse("yes"), None);
}

#[test]
fn quota_excludes_whitespace() {
    assert_eq!(quota_size("{ \"a\" :\n 1 }"), 7);
}

#[test]
fn policy_key_requires_one_key() {
    let k = "arn:aws:kms:eu-west-1:123456789012:key/abc";
    let doc = crate::core::fixes::identity_policy(
        &KeyArn::parse(k).unwrap(),
        &["kms:CreateGrant".into(), "kms:Decrypt".into()],
    );
    assert_eq!(policy_key(&doc).map(|k| k.to_string()).as_deref(), Some(k));
    assert_eq!(policy_actions(&doc), vec!["kms:CreateGrant", "kms:Decrypt"]);
    let two = serde_json::json!({"Statement": [{"Resource": [k]}, {"Resource": "*"}]});
    assert!(policy_key(&two).is_none());
}
