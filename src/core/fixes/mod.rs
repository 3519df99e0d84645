//! The fixes: IAM policy documents, key-policy statements, and the exact `aws` commands a
//! person would run. Nothing here calls AWS.
//!
//! Every policy is scoped to one key ARN. `kms:CreateGrant` carries
//! `kms:GrantIsForAWSResource = true`, so the caller can only create grants for an AWS service
//! acting for it, never for an arbitrary grantee, and `kms:ViaService =
//! ec2.<region>.amazonaws.com`, so that service is EC2 and no other integrated service. The
//! grant condition key exists only on grant operations, so other actions (the data-key calls a
//! RunInstances needs) get their own statement, limited to use through EC2 with
//! `kms:ViaService` alone; putting the grant condition on them would produce a policy that
//! silently allows nothing.

mod identity;
mod key;
#[cfg(test)]
mod tests;

pub use identity::*;
pub use key::*;

use crate::core::arn::KeyArn;
use serde_json::{json, Value};

/// The inline policy name for a key: `kms-launch-doctor-<key id>`.
pub fn policy_name(key: &KeyArn) -> String {
    format!("kms-launch-doctor-{}", key.key_id())
}

fn grant_actions_first(actions: &[String]) -> (bool, Vec<String>) {
    let create_grant = actions.iter().any(|a| a.eq_ignore_ascii_case("kms:CreateGrant"));
    let others = actions.iter().filter(|a| !a.eq_ignore_ascii_case("kms:CreateGrant")).cloned().collect();
    (create_grant, others)
}

fn via_ec2(key: &KeyArn) -> String {
    format!("ec2.{}.amazonaws.com", key.region())
}

/// The condition on `kms:CreateGrant`: a grant for an AWS resource, asked for through EC2.
fn grant_for_ec2(key: &KeyArn) -> Value {
    json!({"Bool": {"kms:GrantIsForAWSResource": true}, "StringEquals": {"kms:ViaService": via_ec2(key)}})
}

/// The identity policy that lets a caller have EC2 use `key` on its behalf.
pub fn identity_policy(key: &KeyArn, actions: &[String]) -> Value {
    let (create_grant, others) = grant_actions_first(actions);
    let mut statements = Vec::new();
    if create_grant {
        statements.push(json!({
            "Effect": "Allow",
            "Action": ["kms:CreateGrant"],
            "Resource": [key.to_string()],
            "Condition": grant_for_ec2(key)
        }));
    }
    if !others.is_empty() {
        statements.push(json!({
            "Effect": "Allow",
            "Action": others,
            "Resource": [key.to_string()],
            "Condition": {"StringEquals": {"kms:ViaService": via_ec2(key)}}
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// Key-policy statements naming `principal`, for the key owner to add.
pub fn key_policy_statements(key: &KeyArn, principal: &str, actions: &[String]) -> Vec<Value> {
    let (create_grant, others) = grant_actions_first(actions);
    let mut out = Vec::new();
    if create_grant {
        out.push(json!({
            "Sid": "KmsLaunchDoctorAllowEc2Grants",
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": grant_for_ec2(key)
        }));
    }
    if !others.is_empty() {
        out.push(json!({
            "Sid": "KmsLaunchDoctorAllowUseViaEc2",
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": others,
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:ViaService": via_ec2(key)}}
        }));
    }
    out
}

/// What AWS documents a service-linked role needs in a key policy to launch instances with
/// encrypted volumes: use of the key, and grants for AWS resources.
pub fn service_linked_role_statements(principal: &str) -> Vec<Value> {
    vec![
        json!({
            "Sid": "AllowServiceLinkedRoleUseOfTheKey",
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
            "Resource": "*"
        }),
        json!({
            "Sid": "AllowAttachmentOfPersistentResources",
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}
        }),
    ]
}

/// Quotes a word for POSIX shells so that pasting it can never run anything else. shlex knows
/// the shells' corner cases (bash's `^` after a quote, non-ASCII blanks). A shell word cannot
/// hold a NUL at all: one from AWS is written as the two characters `\0`, which no IAM or KMS
/// name may contain, so the command fails rather than act on some other resource; quoting then
/// cannot fail.
pub fn shell_quote(word: &str) -> String {
    let word = word.replace('\0', "\\0");
    shlex::try_quote(&word).map_or_else(|_| "''".to_owned(), std::borrow::Cow::into_owned)
}

fn cmd(words: &[&str]) -> String {
    words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

fn compact(v: &Value) -> String {
    v.to_string()
}
