//! Fixes on the caller's side: its inline policy, an IAM Identity Center permission set, its permissions boundary, an SCP to review.

use super::*;
use crate::core::arn::{Arn, IamEntity, KeyArn};
use crate::core::cloudtrail::PrincipalKind;
use crate::core::report::{Remediation, RemediationAction};

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
    let entity = IamEntity::of(&arn);
    // A role is written only when the record says it acted as the role (not a user's ARN
    // that happens to look like one).
    let who = entity.cli().filter(|w| w.noun == "user" || kind == PrincipalKind::Role)?;
    let action = if who.noun == "user" { RemediationAction::PutUserPolicy } else { RemediationAction::PutRolePolicy };
    let verb = format!("put-{}-policy", who.noun);
    let command = cmd(&["aws", "iam", &verb, who.flag, who.name, "--policy-name", &name, "--policy-document", &doc]);
    Some(Remediation::proposed(action, principal_arn.to_owned(), vec![command]).writing(Some(name), document))
}

/// A jq program over the JSON string GetInlinePolicyForPermissionSet returns (`""` or null
/// when the set has none): the current document with `$add`'s statements appended, each once,
/// so that whatever is there (guardrail Denies included) stays.
pub(super) const MERGE_INLINE_POLICY: &str = r#"(. // "") as $p | if $p == "" then $add else ($p | fromjson) | ([.Statement] | flatten) as $old | .Statement = $old + [$add.Statement[] | select(. as $s | $old | index([$s]) | not)] end"#;

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
    Some(
        Remediation::proposed(RemediationAction::UpdatePermissionSet, role_arn.to_owned(), commands)
            .writing(Some(set.to_owned()), document),
    )
}

/// `AWSReservedSSO_<permission set name>_<16 hex>` → the permission set name.
pub fn permission_set_name(role_name: &str) -> Option<&str> {
    let rest = role_name.strip_prefix("AWSReservedSSO_")?;
    let (name, suffix) = rest.rsplit_once('_')?;
    (!name.is_empty() && !suffix.is_empty()).then_some(name)
}

/// A jq program appending `$add`'s statements to a policy document read from a file, each once
/// (the same merge as [`MERGE_INLINE_POLICY`], for a document that is already JSON).
pub(super) const APPEND_STATEMENTS: &str = r#"([.Statement] | flatten) as $old | .Statement = $old + [$add.Statement[] | select(. as $s | $old | index([$s]) | not)]"#;

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
            let entity = Arn::parse(principal_arn).ok().map(|a| IamEntity::of(&a));
            let lookup = entity.as_ref().and_then(IamEntity::cli).map(|who| {
                let verb = format!("get-{}", who.noun);
                let query = format!("{}.PermissionsBoundary.PermissionsBoundaryArn", who.field);
                format!(
                    "BOUNDARY_ARN=$({})",
                    cmd(&["aws", "iam", &verb, who.flag, who.name, "--query", &query, "--output", "text"])
                )
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
    Remediation::proposed(
        RemediationAction::UpdatePermissionsBoundary,
        boundary_arn.unwrap_or(principal_arn).to_owned(),
        commands,
    )
    .writing(None, document)
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
    Remediation::proposed(
        RemediationAction::ReviewScp,
        key.to_string(),
        vec![
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
    )
}
