//! Fixes on the key's side: its policy (a statement for the caller, an account or a service-linked role), its state, its material, its key store; grants; a Deny to review.

use super::*;
use crate::core::arn::{Arn, IamEntity, KeyArn};
use crate::core::report::{Remediation, RemediationAction};
use serde_json::{json, Value};

/// `aws kms <verb>` on a key's policy (KMS knows only the name `default`), then `rest`.
fn key_policy_call(verb: &str, key: &KeyArn, rest: &[&str]) -> String {
    let k = key.to_string();
    let mut words = vec!["aws", "kms", verb, "--region", key.region(), "--key-id", &k, "--policy-name", "default"];
    words.extend_from_slice(rest);
    cmd(&words)
}

/// Prints a key's policy.
pub(super) fn get_key_policy_command(key: &KeyArn) -> String {
    key_policy_call("get-key-policy", key, &["--query", "Policy", "--output", "text"])
}

/// A key-policy edit for whoever administers the key: read the policy, change it with `jq`
/// (the statement is `$s`), put it back.
pub(super) fn key_policy_edit(key: &KeyArn, statement: Value, jq: &str) -> Remediation {
    let k = key.to_string();
    let stmt = compact(&statement);
    let commands = vec![
        format!("{} | jq --argjson s {} {jq} > key-policy.json", get_key_policy_command(key), shell_quote(&stmt)),
        key_policy_call("put-key-policy", key, &["--policy", "file://key-policy.json"]),
    ];
    Remediation::proposed(RemediationAction::AddKeyPolicyStatement, k, commands)
        .writing(Some("default".to_owned()), statement)
}

/// Add one statement to the key policy (for whoever administers the key).
pub fn add_key_policy_statement(key: &KeyArn, statement: Value) -> Remediation {
    key_policy_edit(key, statement, "'.Statement += [$s]'")
}

pub(super) fn key_command(action: RemediationAction, key: &KeyArn, commands: Vec<String>) -> Remediation {
    Remediation::proposed(action, key.to_string(), commands)
}

pub fn enable_key(key: &KeyArn) -> Remediation {
    let k = key.to_string();
    key_command(
        RemediationAction::EnableKey,
        key,
        vec![cmd(&["aws", "kms", "enable-key", "--region", key.region(), "--key-id", &k])],
    )
}

/// A cancelled deletion leaves the key Disabled, so enabling it is part of the fix.
pub fn cancel_key_deletion(key: &KeyArn) -> Remediation {
    let k = key.to_string();
    key_command(
        RemediationAction::CancelKeyDeletion,
        key,
        vec![
            cmd(&["aws", "kms", "cancel-key-deletion", "--region", key.region(), "--key-id", &k]),
            cmd(&["aws", "kms", "enable-key", "--region", key.region(), "--key-id", &k]),
        ],
    )
}

pub fn import_key_material(key: &KeyArn) -> Remediation {
    let k = key.to_string();
    key_command(
        RemediationAction::ImportKeyMaterial,
        key,
        vec![
            cmd(&[
                "aws",
                "kms",
                "get-parameters-for-import",
                "--region",
                key.region(),
                "--key-id",
                &k,
                "--wrapping-algorithm",
                "RSAES_OAEP_SHA_256",
                "--wrapping-key-spec",
                "RSA_2048",
            ]),
            "# wrap the SAME key material that was imported before with the returned public key, then:".to_owned(),
            cmd(&[
                "aws",
                "kms",
                "import-key-material",
                "--region",
                key.region(),
                "--key-id",
                &k,
                "--encrypted-key-material",
                "fileb://EncryptedKeyMaterial.bin",
                "--import-token",
                "fileb://ImportToken.bin",
                "--expiration-model",
                "KEY_MATERIAL_DOES_NOT_EXPIRE",
            ]),
        ],
    )
}

pub fn connect_custom_key_store(key: &KeyArn, store_id: Option<&str>) -> Remediation {
    let k = key.to_string();
    let mut commands = vec![cmd(&["aws", "kms", "describe-custom-key-stores", "--region", key.region()])];
    match store_id {
        Some(id) => commands.push(cmd(&[
            "aws",
            "kms",
            "connect-custom-key-store",
            "--region",
            key.region(),
            "--custom-key-store-id",
            id,
        ])),
        None => commands.push(cmd(&[
            "aws",
            "kms",
            "describe-key",
            "--region",
            key.region(),
            "--key-id",
            &k,
            "--query",
            "KeyMetadata.[KeyState,CustomKeyStoreId]",
        ])),
    }
    key_command(RemediationAction::ConnectCustomKeyStore, key, commands)
}

/// The KMS operations a service-linked role needs on a volume key, as AWS documents the grant
/// the launching account creates for it when the key belongs to another account.
pub const SERVICE_LINKED_GRANT_OPERATIONS: [&str; 6] =
    ["Decrypt", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo", "CreateGrant", "DescribeKey"];

/// A grant on another account's key for the launching account's service-linked role: run in
/// the launching account, once the key owner's policy allows that account.
pub fn create_grant(key: &KeyArn, grantee: &str) -> Remediation {
    let k = key.to_string();
    let mut words = vec![
        "aws",
        "kms",
        "create-grant",
        "--region",
        key.region(),
        "--key-id",
        &k,
        "--grantee-principal",
        grantee,
        "--operations",
    ];
    words.extend(SERVICE_LINKED_GRANT_OPERATIONS);
    Remediation::proposed(RemediationAction::CreateGrant, grantee.to_owned(), vec![cmd(&words)])
}

/// The key owner's statement letting another account use the key for EC2 volumes and give its
/// service-linked roles grants (the first of AWS's two steps for a foreign key).
pub fn allow_account_statement(key: &KeyArn, account_root: &str) -> Value {
    json!({
        "Sid": "KmsLaunchDoctorAllowAccountUseForEbs",
        "Effect": "Allow",
        "Principal": {"AWS": account_root},
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey", "kms:CreateGrant"],
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:ViaService": via_ec2(key)}}
    })
}

/// Replace statement `index` of a key policy (for whoever administers the key).
pub fn replace_key_policy_statement(key: &KeyArn, index: usize, statement: Value) -> Remediation {
    key_policy_edit(
        key,
        statement,
        &format!("--argjson i {index} '.Statement = ([.Statement] | flatten | .[$i] = $s)'"),
    )
}

/// An explicit Deny cannot be outvoted by an Allow: show where to look for it.
pub fn review_deny(principal_arn: Option<&str>, account: &str, key: &KeyArn, in_key_policy: bool) -> Remediation {
    let mut commands = Vec::new();
    let entity = principal_arn.and_then(|a| Arn::parse(a).ok()).map(|a| IamEntity::of(&a));
    if let Some(who) = entity.as_ref().and_then(IamEntity::cli) {
        let (noun, flag, name) = (who.noun, who.flag, who.name);
        commands.push(cmd(&["aws", "iam", &format!("list-{noun}-policies"), flag, name]));
        commands.push(cmd(&["aws", "iam", &format!("list-attached-{noun}-policies"), flag, name]));
        if noun == "user" {
            commands.push(cmd(&["aws", "iam", "list-groups-for-user", flag, name]));
        }
        let query = format!("{}.PermissionsBoundary", who.field);
        commands.push(cmd(&["aws", "iam", &format!("get-{noun}"), flag, name, "--query", &query]));
    }
    if in_key_policy || commands.is_empty() {
        commands.push(get_key_policy_command(key));
    }
    commands.push(cmd(&[
        "aws",
        "organizations",
        "list-policies-for-target",
        "--target-id",
        account,
        "--filter",
        "SERVICE_CONTROL_POLICY",
    ]));
    Remediation::proposed(
        RemediationAction::ReviewDenyStatement,
        principal_arn.map(str::to_owned).unwrap_or_else(|| key.to_string()),
        commands,
    )
}
