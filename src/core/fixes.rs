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

use serde_json::{json, Value};

use crate::core::arn::{Arn, IamEntity, KeyArn};
use crate::core::cloudtrail::PrincipalKind;
use crate::core::report::{Remediation, RemediationAction, RemediationStatus};

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

/// Quotes a word for POSIX shells so that pasting it can never run anything else.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn cmd(words: &[&str]) -> String {
    words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ")
}

fn compact(v: &Value) -> String {
    v.to_string()
}

/// Put an inline identity policy on the principal (user or role).
pub fn put_identity_policy(
    principal_arn: &str,
    kind: PrincipalKind,
    key: &KeyArn,
    actions: &[String],
) -> Option<Remediation> {
    let arn = Arn::parse(principal_arn).ok()?;
    let document = identity_policy(key, actions);
    let name = policy_name(key);
    let doc = compact(&document);
    let (action, command) = match (IamEntity::of(&arn), kind) {
        (IamEntity::User { name: user, .. }, _) => (
            RemediationAction::PutUserPolicy,
            cmd(&[
                "aws",
                "iam",
                "put-user-policy",
                "--user-name",
                &user,
                "--policy-name",
                &name,
                "--policy-document",
                &doc,
            ]),
        ),
        (IamEntity::Role { name: role, .. }, PrincipalKind::Role) => (
            RemediationAction::PutRolePolicy,
            cmd(&[
                "aws",
                "iam",
                "put-role-policy",
                "--role-name",
                &role,
                "--policy-name",
                &name,
                "--policy-document",
                &doc,
            ]),
        ),
        _ => return None,
    };
    Some(Remediation {
        action,
        target: principal_arn.to_owned(),
        policy_name: Some(name),
        policy_document: Some(document),
        commands: vec![command],
        status: RemediationStatus::Proposed,
        verified: None,
        note: None,
        restart: None,
    })
}

/// A jq program over the JSON string GetInlinePolicyForPermissionSet returns (`""` or null
/// when the set has none): the current document with `$add`'s statements appended, each once,
/// so that whatever is there (guardrail Denies included) stays.
const MERGE_INLINE_POLICY: &str = r#"(. // "") as $p | if $p == "" then $add else ($p | fromjson) | ([.Statement] | flatten) as $old | .Statement = $old + [$add.Statement[] | select(. as $s | $old | index([$s]) | not)] end"#;

/// IAM Identity Center roles are managed by their permission set: edits to the role are undone.
pub fn update_permission_set(role_arn: &str, account: &str, key: &KeyArn, actions: &[String]) -> Option<Remediation> {
    let arn = Arn::parse(role_arn).ok()?;
    let IamEntity::Role { name, .. } = IamEntity::of(&arn) else { return None };
    let set = permission_set_name(&name)?;
    let document = identity_policy(key, actions);
    let doc = compact(&document);
    let commands = vec![
        "INSTANCE_ARN=$(aws sso-admin list-instances --query 'Instances[0].InstanceArn' --output text)".to_owned(),
        format!(
            "PERMISSION_SET_ARN=$(for ps in $(aws sso-admin list-permission-sets --instance-arn \"$INSTANCE_ARN\" --query 'PermissionSets[]' --output text); do [ \"$(aws sso-admin describe-permission-set --instance-arn \"$INSTANCE_ARN\" --permission-set-arn \"$ps\" --query 'PermissionSet.Name' --output text)\" = {} ] && echo \"$ps\"; done)",
            shell_quote(set)
        ),
        // put-inline-policy-to-permission-set replaces the whole inline policy (guardrail
        // Denies included, in every account the set is assigned to): read what is there, add
        // the statements, put the merged document back.
        "aws sso-admin get-inline-policy-for-permission-set --instance-arn \"$INSTANCE_ARN\" --permission-set-arn \"$PERMISSION_SET_ARN\" --query InlinePolicy --output json > permission-set-policy.json".to_owned(),
        format!("jq --argjson add {} {} permission-set-policy.json > permission-set-policy.merged.json", shell_quote(&doc), shell_quote(MERGE_INLINE_POLICY)),
        "[ -s permission-set-policy.merged.json ] && aws sso-admin put-inline-policy-to-permission-set --instance-arn \"$INSTANCE_ARN\" --permission-set-arn \"$PERMISSION_SET_ARN\" --inline-policy file://permission-set-policy.merged.json".to_owned(),
        format!(
            "aws sso-admin provision-permission-set --instance-arn \"$INSTANCE_ARN\" --permission-set-arn \"$PERMISSION_SET_ARN\" --target-type AWS_ACCOUNT --target-id {}",
            shell_quote(account)
        ),
    ];
    Some(Remediation {
        action: RemediationAction::UpdatePermissionSet,
        target: role_arn.to_owned(),
        policy_name: Some(set.to_owned()),
        policy_document: Some(document),
        commands,
        status: RemediationStatus::Proposed,
        verified: None,
        note: None,
        restart: None,
    })
}

/// `AWSReservedSSO_<permission set name>_<16 hex>` → the permission set name.
pub fn permission_set_name(role_name: &str) -> Option<&str> {
    let rest = role_name.strip_prefix("AWSReservedSSO_")?;
    let (name, suffix) = rest.rsplit_once('_')?;
    (!name.is_empty() && !suffix.is_empty()).then_some(name)
}

/// Prints a key's policy (GetKeyPolicy takes only the name `default`).
fn get_key_policy_command(key: &KeyArn) -> String {
    let k = key.to_string();
    cmd(&[
        "aws",
        "kms",
        "get-key-policy",
        "--region",
        key.region(),
        "--key-id",
        &k,
        "--policy-name",
        "default",
        "--query",
        "Policy",
        "--output",
        "text",
    ])
}

/// A key-policy edit for whoever administers the key: read the policy, change it with `jq`
/// (the statement is `$s`), put it back.
fn key_policy_edit(key: &KeyArn, statement: Value, jq: &str) -> Remediation {
    let k = key.to_string();
    let stmt = compact(&statement);
    let commands = vec![
        format!("{} | jq --argjson s {} {jq} > key-policy.json", get_key_policy_command(key), shell_quote(&stmt)),
        cmd(&[
            "aws",
            "kms",
            "put-key-policy",
            "--region",
            key.region(),
            "--key-id",
            &k,
            "--policy-name",
            "default",
            "--policy",
            "file://key-policy.json",
        ]),
    ];
    Remediation {
        action: RemediationAction::AddKeyPolicyStatement,
        target: k,
        policy_name: Some("default".to_owned()),
        policy_document: Some(statement),
        commands,
        status: RemediationStatus::Proposed,
        verified: None,
        note: None,
        restart: None,
    }
}

/// Add one statement to the key policy (for whoever administers the key).
pub fn add_key_policy_statement(key: &KeyArn, statement: Value) -> Remediation {
    key_policy_edit(key, statement, "'.Statement += [$s]'")
}

fn key_command(action: RemediationAction, key: &KeyArn, commands: Vec<String>) -> Remediation {
    Remediation {
        action,
        target: key.to_string(),
        policy_name: None,
        policy_document: None,
        commands,
        status: RemediationStatus::Proposed,
        verified: None,
        note: None,
        restart: None,
    }
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

/// A jq program appending `$add`'s statements to a policy document read from a file, each once
/// (the same merge as [`MERGE_INLINE_POLICY`], for a document that is already JSON).
const APPEND_STATEMENTS: &str = r#"([.Statement] | flatten) as $old | .Statement = $old + [$add.Statement[] | select(. as $s | $old | index([$s]) | not)]"#;

/// The caller's permissions boundary must allow what its identity policy allows: a new default
/// version of the boundary policy with the scoped statement added. A boundary is a guardrail
/// its administrators own, so this is for them to run (never applied automatically).
pub fn update_permissions_boundary(
    boundary_arn: Option<&str>,
    principal_arn: &str,
    key: &KeyArn,
    actions: &[String],
) -> Remediation {
    let document = identity_policy(key, actions);
    let doc = compact(&document);
    let mut commands = Vec::new();
    match boundary_arn {
        Some(b) => commands.push(format!("BOUNDARY_ARN={}", shell_quote(b))),
        None => {
            let lookup = Arn::parse(principal_arn).ok().map(|a| IamEntity::of(&a)).and_then(|e| match e {
                IamEntity::User { name, .. } => Some(format!(
                    "BOUNDARY_ARN=$({})",
                    cmd(&[
                        "aws",
                        "iam",
                        "get-user",
                        "--user-name",
                        &name,
                        "--query",
                        "User.PermissionsBoundary.PermissionsBoundaryArn",
                        "--output",
                        "text"
                    ])
                )),
                IamEntity::Role { name, .. } => Some(format!(
                    "BOUNDARY_ARN=$({})",
                    cmd(&[
                        "aws",
                        "iam",
                        "get-role",
                        "--role-name",
                        &name,
                        "--query",
                        "Role.PermissionsBoundary.PermissionsBoundaryArn",
                        "--output",
                        "text"
                    ])
                )),
                _ => None,
            });
            commands.extend(lookup);
        }
    }
    if boundary_arn.is_some_and(|b| b.contains(":iam::aws:policy/")) {
        commands.push(
            "# an AWS managed policy cannot be edited: attach a customer managed boundary that allows the statement instead".to_owned(),
        );
    }
    commands.extend([
        "VERSION=$(aws iam get-policy --policy-arn \"$BOUNDARY_ARN\" --query Policy.DefaultVersionId --output text)".to_owned(),
        "aws iam get-policy-version --policy-arn \"$BOUNDARY_ARN\" --version-id \"$VERSION\" --query PolicyVersion.Document --output json > boundary.json".to_owned(),
        format!("jq --argjson add {} {} boundary.json > boundary.merged.json", shell_quote(&doc), shell_quote(APPEND_STATEMENTS)),
        "# a managed policy keeps at most 5 versions: if this fails with LimitExceeded, delete the oldest non-default version first".to_owned(),
        "[ -s boundary.merged.json ] && aws iam create-policy-version --policy-arn \"$BOUNDARY_ARN\" --policy-document file://boundary.merged.json --set-as-default".to_owned(),
    ]);
    Remediation {
        action: RemediationAction::UpdatePermissionsBoundary,
        target: boundary_arn.unwrap_or(principal_arn).to_owned(),
        policy_name: None,
        policy_document: Some(document),
        commands,
        status: RemediationStatus::Proposed,
        verified: None,
        note: None,
        restart: None,
    }
}

/// A service control policy blocks the action: where to look, for the organization's
/// administrators (run from the management or a delegated administrator account). SCPs are
/// inherited from the root and every OU above the account, so all of them are listed.
pub fn review_scp(account: &str, principal_arn: Option<&str>, key: &KeyArn, actions: &[String]) -> Remediation {
    let who = principal_arn.unwrap_or("the caller");
    let list = |target: &str| {
        format!(
            "for p in $({}); do aws organizations describe-policy --policy-id \"$p\" --query Policy.Content --output text; done",
            cmd(&["aws", "organizations", "list-policies-for-target", "--target-id", target, "--filter", "SERVICE_CONTROL_POLICY", "--query", "Policies[].Id", "--output", "text"])
        )
    };
    Remediation {
        action: RemediationAction::ReviewScp,
        target: key.to_string(),
        policy_name: None,
        policy_document: None,
        commands: vec![
            format!(
                "# find the SCP statement that denies, or fails to allow, {} on {key} for {who} in account {account}",
                actions.join(", ")
            ),
            list(account),
            format!(
                "for parent in $({}); do {}; done",
                cmd(&[
                    "aws",
                    "organizations",
                    "list-parents",
                    "--child-id",
                    account,
                    "--query",
                    "Parents[].Id",
                    "--output",
                    "text"
                ]),
                list("$parent").replace("'$parent'", "\"$parent\"")
            ),
        ],
        status: RemediationStatus::Proposed,
        verified: None,
        note: None,
        restart: None,
    }
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
    Remediation {
        action: RemediationAction::CreateGrant,
        target: grantee.to_owned(),
        policy_name: None,
        policy_document: None,
        commands: vec![cmd(&words)],
        status: RemediationStatus::Proposed,
        verified: None,
        note: None,
        restart: None,
    }
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
    if let Some(entity) = principal_arn.and_then(|a| Arn::parse(a).ok()).map(|a| IamEntity::of(&a)) {
        match entity {
            IamEntity::User { name, .. } => {
                commands.push(cmd(&["aws", "iam", "list-user-policies", "--user-name", &name]));
                commands.push(cmd(&["aws", "iam", "list-attached-user-policies", "--user-name", &name]));
                commands.push(cmd(&["aws", "iam", "list-groups-for-user", "--user-name", &name]));
                commands.push(cmd(&[
                    "aws",
                    "iam",
                    "get-user",
                    "--user-name",
                    &name,
                    "--query",
                    "User.PermissionsBoundary",
                ]));
            }
            IamEntity::Role { name, .. } => {
                commands.push(cmd(&["aws", "iam", "list-role-policies", "--role-name", &name]));
                commands.push(cmd(&["aws", "iam", "list-attached-role-policies", "--role-name", &name]));
                commands.push(cmd(&[
                    "aws",
                    "iam",
                    "get-role",
                    "--role-name",
                    &name,
                    "--query",
                    "Role.PermissionsBoundary",
                ]));
            }
            _ => {}
        }
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
    Remediation {
        action: RemediationAction::ReviewDenyStatement,
        target: principal_arn.map(str::to_owned).unwrap_or_else(|| key.to_string()),
        policy_name: None,
        policy_document: None,
        commands,
        status: RemediationStatus::Proposed,
        verified: None,
        note: None,
        restart: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyArn {
        KeyArn::parse("arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a").unwrap()
    }

    #[test]
    fn create_grant_policy_is_the_articles_policy_limited_to_ec2() {
        let expected: Value = serde_json::from_str(
            r#"{"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": ["kms:CreateGrant"],
            "Resource": ["arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a"],
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": true},
                          "StringEquals": {"kms:ViaService": "ec2.eu-west-1.amazonaws.com"}}}]}"#,
        )
        .unwrap();
        assert_eq!(identity_policy(&key(), &["kms:CreateGrant".into()]), expected);
    }

    #[test]
    fn data_key_actions_get_a_via_service_statement() {
        let p = identity_policy(&key(), &["kms:CreateGrant".into(), "kms:Decrypt".into()]);
        let st = p["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[1]["Action"], json!(["kms:Decrypt"]));
        assert_eq!(st[1]["Condition"]["StringEquals"]["kms:ViaService"], "ec2.eu-west-1.amazonaws.com");
    }

    #[test]
    fn put_user_policy_command_is_exact() {
        let r = put_identity_policy(
            "arn:aws:iam::123456789012:user/test",
            PrincipalKind::User,
            &key(),
            &["kms:CreateGrant".into()],
        )
        .unwrap();
        assert_eq!(r.action, RemediationAction::PutUserPolicy);
        assert_eq!(r.policy_name.as_deref(), Some("kms-launch-doctor-8e3426b8-87b4-434c-ae74-8e63dadf354a"));
        assert!(r.commands[0].starts_with("aws iam put-user-policy --user-name test --policy-name kms-launch-doctor-8e3426b8-87b4-434c-ae74-8e63dadf354a --policy-document '{"));
    }

    #[test]
    fn quoting_neutralises_shell_syntax() {
        assert_eq!(shell_quote("plain-name_1"), "plain-name_1");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote("a;b c"), "'a;b c'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn permission_set_commands_merge_into_the_current_inline_policy_before_putting_it() {
        let r = update_permission_set(
            "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Ops_0123456789abcdef",
            "123456789012",
            &key(),
            &["kms:CreateGrant".into()],
        )
        .unwrap();
        let at = |needle: &str| {
            r.commands.iter().position(|c| c.contains(needle)).unwrap_or_else(|| panic!("{needle}: {:#?}", r.commands))
        };
        let (get, merge, put, provision) = (
            at("get-inline-policy-for-permission-set"),
            at("jq --argjson add"),
            at("put-inline-policy-to-permission-set"),
            at("provision-permission-set"),
        );
        assert!(get < merge && merge < put && put < provision, "{:#?}", r.commands);
        assert!(r.commands[put].contains("file://permission-set-policy.merged.json"), "{}", r.commands[put]);
        assert!(
            r.commands[put].starts_with("[ -s "),
            "an empty merge must not replace the policy: {}",
            r.commands[put]
        );
    }

    #[test]
    fn permission_set_name_comes_from_the_role_name() {
        assert_eq!(
            permission_set_name("AWSReservedSSO_AdministratorAccess_0123456789abcdef"),
            Some("AdministratorAccess")
        );
        assert_eq!(permission_set_name("AWSReservedSSO_Data_Eng_0123456789abcdef"), Some("Data_Eng"));
        assert_eq!(permission_set_name("Admin"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const ACTIONS: [&str; 3] = ["kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt"];

    fn key_arn() -> impl Strategy<Value = KeyArn> {
        (
            prop_oneof!["aws", "aws-cn", "aws-us-gov"],
            "[a-z]{2}-[a-z]{4,9}-[1-9]",
            "[0-9]{12}",
            "[a-f0-9-]{1,64}|mrk-[a-f0-9]{32}",
        )
            .prop_filter_map("a valid key ARN", |(p, r, a, id)| {
                KeyArn::parse(&format!("arn:{p}:kms:{r}:{a}:key/{id}")).ok()
            })
    }

    proptest! {
        /// For any key ARN and any non-empty subset of the launch actions, the identity policy
        /// allows those actions, on that key only, each under its condition, and nothing else.
        #[test]
        fn identity_policy_allows_only_the_listed_actions_on_that_key(key in key_arn(), mask in 1u8..8) {
            let actions: Vec<String> = ACTIONS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, a)| (*a).to_owned()).collect();
            let doc = identity_policy(&key, &actions);
            prop_assert_eq!(&doc["Version"], "2012-10-17");
            let statements = doc["Statement"].as_array().unwrap();
            let mut granted = Vec::new();
            for st in statements {
                prop_assert_eq!(&st["Effect"], "Allow");
                prop_assert_eq!(&st["Resource"], &json!([key.to_string()]));
                prop_assert!(st.get("NotAction").is_none() && st.get("NotResource").is_none());
                let acts: Vec<String> = st["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
                for a in &acts {
                    prop_assert!(!a.contains('*'));
                    if a == "kms:CreateGrant" {
                        prop_assert_eq!(&st["Condition"], &json!({"Bool": {"kms:GrantIsForAWSResource": true}, "StringEquals": {"kms:ViaService": format!("ec2.{}.amazonaws.com", key.region())}}));
                    } else {
                        prop_assert_eq!(&st["Condition"], &json!({"StringEquals": {"kms:ViaService": format!("ec2.{}.amazonaws.com", key.region())}}));
                    }
                }
                granted.extend(acts);
            }
            granted.sort();
            let mut wanted = actions.clone();
            wanted.sort();
            prop_assert_eq!(granted, wanted);
        }
    }
}
