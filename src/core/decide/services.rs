//! Launches EC2 or a service-linked role makes on the caller's behalf: EC2's infrastructure role, and Auto Scaling's or Spot's role that needs a key-policy grant.

use super::*;
use crate::core::cloudtrail::{Caller, DenySource, PrincipalKind, Record};
use crate::core::fixes;
use crate::core::policy::{KeyPolicy, Request, Tri, Verdict};
use crate::core::report::{CauseCode, Evidence, Remediation};

/// EC2's identity-only role, with which EC2 itself decrypts a volume's data key at launch.
pub(super) fn ec2_infrastructure_role(ctx: &Ctx<'_>) -> String {
    format!(
        "arn:{}:iam::{}:role/{}",
        ctx.f.instance.partition,
        ctx.f.instance.account,
        crate::core::cloudtrail::EC2_INFRASTRUCTURE_ROLE
    )
}

/// A KMS call by EC2's own identity for this instance was denied. No IAM policy applies to that
/// identity: only the key policy and SCPs can deny it, and CloudTrail's message says which.
pub(super) fn ec2_infrastructure_denied(
    ctx: &Ctx<'_>,
    view: &KeyView<'_>,
    denials: &[&Record],
    base: &[Evidence],
) -> Option<Diagnosis> {
    let ours: Vec<&Record> = denials
        .iter()
        .copied()
        .filter(|r| r.ec2_infrastructure_for.as_deref() == Some(ctx.f.instance.id.as_str()))
        .collect();
    let first = ours.first()?;
    let key = &view.facts.arn;
    let action = format!("kms:{}", first.event_name);
    let role = ec2_infrastructure_role(ctx);
    let in_scp = ours.iter().any(|r| r.explicit_deny_in() == Some(DenySource::ServiceControlPolicy));
    let mut extra = base.to_vec();
    extra.push(Evidence::Caller { principal_arn: None, principal_kind: PrincipalKind::Service });
    let (place, fixes) = if in_scp {
        (
            "a service control policy",
            vec![fixes::review_scp(&ctx.f.instance.account, Some(&role), key, std::slice::from_ref(&action))],
        )
    } else {
        let fixes = exempt_from_key_policy_denies(ctx, view, &role, &action);
        let fixes =
            if fixes.is_empty() { vec![fixes::review_deny(None, &ctx.f.instance.account, key, true)] } else { fixes };
        ("the policy of the key", fixes)
    };
    let summary = format!(
        "EC2's own identity ({role}, with which EC2 decrypts the volume's data key when the instance starts) was denied {action} on KMS key {} by {place}. No IAM policy applies to that identity, so the Deny must exempt it.",
        key_label(key)
    );
    Some((cause(ctx, CauseCode::Ec2InfrastructureDenied, Some(key), summary, extra), fixes))
}

/// Each Deny statement of the key policy that covers `principal` for `action`, rewritten to
/// exempt it: added to the statement's negated `aws:PrincipalArn` condition if it has one (the
/// usual "deny unless it is one of ours" guard), else under a new `ArnNotEquals` on that key.
pub(super) fn exempt_from_key_policy_denies(
    ctx: &Ctx<'_>,
    view: &KeyView<'_>,
    principal: &str,
    action: &str,
) -> Vec<Remediation> {
    let Some(doc) = view.facts.policy.as_deref().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()) else {
        return Vec::new();
    };
    let statements: Vec<serde_json::Value> = match doc.get("Statement") {
        Some(serde_json::Value::Array(items)) => items.clone(),
        Some(single @ serde_json::Value::Object(_)) => vec![single.clone()],
        _ => return Vec::new(),
    };
    let key = view.facts.arn.to_string();
    let request = Request {
        principal_arn: principal,
        caller_arn: Some(principal),
        principal_account: &ctx.f.instance.account,
        key_arn: &key,
        region: view.facts.arn.region(),
        action,
        principal_type: Some("AssumedRole"),
    };
    let mut fixes = Vec::new();
    for (i, st) in statements.iter().enumerate() {
        if st.get("Effect").and_then(serde_json::Value::as_str) != Some("Deny") {
            continue;
        }
        let one = serde_json::json!({"Statement": [st]}).to_string();
        let Ok(policy) = KeyPolicy::parse(&one) else { continue };
        if !policy.evaluate(&request).denies_principal.is_possible() {
            continue;
        }
        let mut fixed = st.clone();
        let Some(obj) = fixed.as_object_mut() else { continue };
        let conditions = obj.entry("Condition").or_insert_with(|| serde_json::json!({}));
        let Some(conditions) = conditions.as_object_mut() else { continue };
        let negated = ["ArnNotEquals", "ArnNotLike", "StringNotEquals", "StringNotLike", "StringNotEqualsIgnoreCase"];
        let existing = negated.iter().find_map(|op| {
            let block = conditions.get(*op)?.as_object()?;
            block.keys().find(|k| k.eq_ignore_ascii_case("aws:PrincipalArn")).map(|k| ((*op).to_owned(), k.clone()))
        });
        let (op, k) = existing.unwrap_or_else(|| ("ArnNotEquals".to_owned(), "aws:PrincipalArn".to_owned()));
        let block = conditions.entry(op).or_insert_with(|| serde_json::json!({}));
        if let Some(block) = block.as_object_mut() {
            let values = match block.remove(&k) {
                Some(serde_json::Value::Array(v)) => v,
                Some(other) => vec![other],
                None => Vec::new(),
            };
            let mut values = values;
            values.push(serde_json::Value::String(principal.to_owned()));
            block.insert(k, serde_json::Value::Array(values));
        }
        fixes.push(fixes::replace_key_policy_statement(&view.facts.arn, i, fixed));
    }
    fixes
}

/// The service-linked role AWS uses for a launching service, when CloudTrail only recorded the
/// service.
pub(super) fn service_linked_role_for(service: &str, partition: &str, account: &str) -> Option<String> {
    let (path, name) = match service {
        "autoscaling.amazonaws.com" => ("autoscaling.amazonaws.com", "AWSServiceRoleForAutoScaling"),
        "spot.amazonaws.com" => ("spot.amazonaws.com", "AWSServiceRoleForEC2Spot"),
        "spotfleet.amazonaws.com" => ("spotfleet.amazonaws.com", "AWSServiceRoleForEC2SpotFleet"),
        "ec2fleet.amazonaws.com" => ("ec2fleet.amazonaws.com", "AWSServiceRoleForEC2Fleet"),
        _ => return None,
    };
    Some(format!("arn:{partition}:iam::{account}:role/aws-service-role/{path}/{name}"))
}

pub(super) fn service_linked(
    ctx: &Ctx<'_>,
    view: &KeyView<'_>,
    caller: &Caller,
    base: Vec<Evidence>,
) -> Option<Diagnosis> {
    let key = &view.facts.arn;
    let principal = caller.principal_arn.clone().or_else(|| {
        service_linked_role_for(caller.invoked_by.as_deref()?, &ctx.f.instance.partition, &ctx.f.instance.account)
    });
    let mut extra = base;
    if let Some(p) = principal.as_deref() {
        let verdicts: Vec<(String, Verdict)> = ctx
            .actions
            .iter()
            .filter_map(|a| view.verdict(p, caller, &ctx.f.instance.account, a).map(|v| (a.clone(), v)))
            .collect();
        if verdicts.len() == ctx.actions.len() && verdicts.iter().all(|(_, v)| v.allows_principal == Tri::Yes) {
            return None;
        }
        extra.extend(verdicts.iter().map(|(a, v)| policy_evidence(view, a, v)));
    }
    extra.push(Evidence::Caller { principal_arn: principal.clone(), principal_kind: caller.principal_kind });
    let who = principal
        .as_deref()
        .and_then(|p| crate::core::arn::Arn::parse(p).ok())
        .map(|a| a.resource().rsplit('/').next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| caller.short_name());
    let summary = format!(
        "The instance was launched by the service-linked role {who}, whose permissions cannot be edited; the policy of KMS key {} must allow it to use the key and create grants.",
        key_label(key)
    );
    let fixes = principal
        .iter()
        .flat_map(|p| fixes::service_linked_role_statements(p))
        .map(|st| fixes::add_key_policy_statement(key, st))
        .collect();
    Some((cause(ctx, CauseCode::ServiceLinkedRoleNeedsKeyAccess, Some(key), summary, extra), fixes))
}
