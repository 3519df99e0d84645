//! The guardrails before any write: both sides opted in, the evidence names this launch and this caller, the statement is ours and scoped to the one key, and IAM's quota has room.

use crate::core::arn::{Arn, IamEntity, KeyArn};
use crate::core::cloudtrail::PrincipalKind;
use crate::core::report::{CauseCode, Finding, Remediation, RemediationAction};
use crate::ports::{IamWrites, Principal};
use serde_json::Value;

/// Whether `tags` carry the opt-in tag. IAM's `StringEquals` on `iam:ResourceTag/<key>` (the
/// template's condition on the write) and `aws:ResourceTag/<key>` compare case-sensitively,
/// so only `true` counts: `True` would pass here and then fail in IAM.
pub fn opted_in(tags: &[(String, String)], tag_key: &str) -> bool {
    tags.iter().any(|(k, v)| k == tag_key && v == "true")
}

/// Characters IAM counts toward the quota: everything but whitespace.
pub fn quota_size(doc: &str) -> usize {
    doc.chars().filter(|c| !c.is_whitespace()).count()
}

/// Why a remediation that is not an inline identity policy is never applied.
pub(super) fn never_applied(action: RemediationAction) -> &'static str {
    match action {
        RemediationAction::ReviewDenyStatement => {
            "an explicit Deny blocks the action; adding an Allow would not help, so nothing is applied"
        }
        RemediationAction::EnableKey
        | RemediationAction::CancelKeyDeletion
        | RemediationAction::ImportKeyMaterial
        | RemediationAction::ConnectCustomKeyStore => {
            "the key itself is unusable; key state changes are left to the key's administrators"
        }
        RemediationAction::AddKeyPolicyStatement => {
            "key policies are never edited automatically; the statement is for the key's administrators"
        }
        RemediationAction::UpdatePermissionSet => {
            "IAM Identity Center roles are managed by their permission set; change the permission set instead"
        }
        RemediationAction::UpdatePermissionsBoundary => {
            "permissions boundaries are guardrails set by administrators; they are never edited automatically"
        }
        RemediationAction::ReviewScp => "service control policies belong to the organization; they are never edited automatically",
        RemediationAction::CreateGrant => {
            "grants on another account's key are for the launching account's administrators; never created automatically"
        }
        RemediationAction::PutUserPolicy | RemediationAction::PutRolePolicy => "",
    }
}

/// The key a scoped policy is for: its single Resource.
pub(super) fn policy_key(doc: &Value) -> Option<KeyArn> {
    let resources: Vec<&str> = doc
        .get("Statement")?
        .as_array()?
        .iter()
        .flat_map(|s| match s.get("Resource") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>(),
            Some(Value::String(r)) => vec![r.as_str()],
            _ => Vec::new(),
        })
        .collect();
    let first = *resources.first()?;
    if resources.iter().any(|r| *r != first) {
        return None;
    }
    KeyArn::parse(first).ok()
}

pub(super) fn policy_actions(doc: &Value) -> Vec<String> {
    doc.get("Statement")
        .and_then(Value::as_array)
        .map(|st| {
            st.iter()
                .flat_map(|s| s.get("Action").and_then(Value::as_array).cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The guardrails that need no AWS call. `Err` is the refusal note.
pub(super) fn static_checks(f: &Finding, r: &Remediation) -> Result<(Principal, KeyArn), String> {
    if !matches!(r.action, RemediationAction::PutUserPolicy | RemediationAction::PutRolePolicy) {
        return Err(never_applied(r.action).to_owned());
    }
    let doc = r.policy_document.as_ref().ok_or("no policy document")?;
    let key = policy_key(doc).ok_or("the policy does not name exactly one key ARN")?;
    let cause = f.causes.iter().find(|c| c.key_arn.as_ref() == Some(&key)).map(|c| c.code);
    match cause {
        Some(CauseCode::CallerLacksCreateGrant) => {}
        Some(CauseCode::CrossAccountKey) => {
            return Err(format!(
                "the key belongs to account {}: cross-account fixes need the key owner too",
                key.account()
            ))
        }
        Some(other) => return Err(format!("only caller-lacks-create-grant is remediated, not {}", other.as_str())),
        None => return Err("no cause names this policy's key".to_owned()),
    }
    // Only the caller a launch record names is ever written for: a KMS denial, or anything
    // else, never stands in for it.
    let Some(launch) = f.launch.as_ref() else {
        return Err(format!(
            "no {} record naming {} was found in CloudTrail, so nobody is known to have launched it; nothing is written without one",
            f.instance_state.launch_api().as_str(),
            f.instance_id
        ));
    };
    if launch.caller.principal_arn.as_deref() != Some(r.target.as_str()) {
        return Err(format!(
            "{} is not the caller the launch record names ({}); only the launch caller is remediated",
            r.target,
            launch.caller.principal_arn.as_deref().unwrap_or("an unmapped identity")
        ));
    }
    if launch.caller.principal_kind == PrincipalKind::Federated {
        return Err("the caller is a federated user: its session policy also limits it, so a fix on the federating user may not help".to_owned());
    }
    let arn = Arn::parse(&r.target).map_err(|e| e.to_string())?;
    let principal = match IamEntity::of(&arn) {
        IamEntity::User { name, .. } => Principal::User(name),
        IamEntity::Role { path, name } => {
            if path.starts_with("/aws-service-role/") {
                return Err("service-linked roles cannot be edited".to_owned());
            }
            if crate::core::cloudtrail::role_kind(&path, &name) == PrincipalKind::SsoRole {
                return Err("IAM Identity Center roles are managed by their permission set".to_owned());
            }
            Principal::Role(name)
        }
        IamEntity::Root => return Err("the root user is never remediated".to_owned()),
        _ => return Err(format!("{} is not an IAM user or role", r.target)),
    };
    if arn.account() != key.account() || arn.account() != f.account {
        return Err(format!(
            "cross-account: principal in {}, key in {}, instance in {}",
            arn.account(),
            key.account(),
            f.account
        ));
    }
    Ok((principal, key))
}

/// Why the restart's own grant would be refused: the function's `kms:CreateGrant` is allowed
/// only on keys that carry the opt-in tag (the template's condition), so a key opted in by
/// `REMEDIATION_ALLOWED_KEYS` alone would fail the start exactly like the launch diagnosed.
pub(super) async fn untagged_key<W: IamWrites>(writes: &W, keys: &[KeyArn], tag_key: &str) -> Option<String> {
    for key in keys {
        match writes.key_tags(key).await {
            Ok(tags) if opted_in(&tags, tag_key) => {}
            Ok(_) => {
                return Some(format!(
                    "not started: key {key} carries no {tag_key}=true tag, and the restart's own kms:CreateGrant is allowed only on tagged keys"
                ))
            }
            Err(e) => return Some(format!("not started: {e}")),
        }
    }
    None
}
