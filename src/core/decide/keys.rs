//! Causes on the key's side: its state, its policy (delegation to IAM, a cross-account key), and where it came from.

use super::*;
use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{Caller, PrincipalKind, Record};
use crate::core::facts::{Decision, KeyState};
use crate::core::fixes;
use crate::core::policy::Tri;
use crate::core::report::{CauseCode, Evidence, KeySource};

/// Does the key policy delegate kms:CreateGrant to the IAM policies of the caller's account
/// (of the key's own account when the caller is unknown)?
pub(super) fn iam_delegation(ctx: &Ctx<'_>, view: &KeyView<'_>, caller: Option<&Caller>) -> Option<bool> {
    let unknown = Caller::unknown();
    let caller = caller.unwrap_or(&unknown);
    let account = caller.account.clone().unwrap_or_else(|| view.facts.arn.account().to_owned());
    let root = format!("arn:{}:iam::{}:root", view.facts.arn.arn().partition(), account);
    let principal = caller.principal_arn.as_deref().unwrap_or(&root);
    let mut probe = caller.clone();
    probe.account = Some(account.clone());
    match view.verdict(principal, &probe, &ctx.f.instance.account, CREATE_GRANT)?.delegates_to_iam {
        Tri::Yes => Some(true),
        Tri::No => Some(false),
        Tri::Maybe => None,
    }
}

pub(super) fn key_cause(ctx: &Ctx<'_>, view: &KeyView<'_>, caller: Option<&Caller>) -> Option<Diagnosis> {
    let key = &view.facts.arn;
    if let Some(d) = key_state_cause(ctx, view) {
        return Some(d);
    }
    let denials: Vec<&Record> = ctx.f.kms_denials.iter().filter(|r| record_names_key(r, key)).collect();
    let mut launch_evidence: Vec<Evidence> =
        ctx.f.launch.iter().chain(denials.iter().copied()).map(record_evidence).collect();
    launch_evidence.extend(key_source_evidence(ctx, key));
    // EC2's own identity denied: no IAM policy of anyone's applies to it, whoever launched.
    if let Some(d) = ec2_infrastructure_denied(ctx, view, &denials, &launch_evidence) {
        return Some(d);
    }

    let Some(caller) = caller.filter(|c| c.principal_arn.is_some() || c.principal_kind == PrincipalKind::Service)
    else {
        return Some((caller_unknown(ctx, key, caller, launch_evidence), Vec::new()));
    };
    // Guardrails above IAM policies first: no identity or key policy change can get past them.
    let attempt = Attempt { ctx, view, caller, denials: &denials, base: &launch_evidence };
    if let Some(d) = guardrail_cause(attempt).or_else(|| explicit_deny(attempt)) {
        return Some(d);
    }
    if key.account() != ctx.f.instance.account {
        return Some(cross_account(ctx, view, caller, launch_evidence));
    }
    match caller.principal_kind {
        PrincipalKind::ServiceLinkedRole | PrincipalKind::Service => service_linked(ctx, view, caller, launch_evidence),
        PrincipalKind::Root => root_cause(ctx, view, caller, launch_evidence),
        _ => permission_cause(ctx, view, caller, &denials, launch_evidence),
    }
}

pub(super) fn record_names_key(r: &Record, key: &KeyArn) -> bool {
    r.key
        .as_deref()
        .is_some_and(|k| k == key.to_string() || k == key.key_id() || k.ends_with(&format!("key/{}", key.key_id())))
}

pub(super) fn record_evidence(r: &Record) -> Evidence {
    Evidence::CloudtrailEvent {
        event_id: r.event_id.clone(),
        event_name: r.event_name.clone(),
        event_time: rfc3339(r.event_time),
        caller_arn: r.caller.arn.clone(),
        error_code: r.error_code.clone(),
        error_message: r.error_message.clone(),
    }
}

pub(super) fn key_state_evidence(view: &KeyView<'_>) -> Vec<Evidence> {
    view.facts
        .metadata
        .as_ref()
        .map(|m| Evidence::KeyState {
            key_arn: view.facts.arn.to_string(),
            state: m.state.as_str().to_owned(),
            origin: m.origin.clone(),
            deletion_date: m.deletion_date.map(rfc3339),
            valid_to: m.valid_to.map(rfc3339),
        })
        .into_iter()
        .collect()
}

pub(super) fn key_state_cause(ctx: &Ctx<'_>, view: &KeyView<'_>) -> Option<Diagnosis> {
    let meta = view.facts.metadata.as_ref()?;
    let key = &view.facts.arn;
    let label = key_label(key);
    let (code, summary, fixes) = match &meta.state {
        KeyState::Enabled => return None,
        KeyState::Disabled => (
            CauseCode::KeyDisabled,
            format!("KMS key {label} is disabled, so EC2 cannot decrypt the data key of the volume it encrypts."),
            vec![fixes::enable_key(key)],
        ),
        KeyState::PendingDeletion | KeyState::PendingReplicaDeletion => (
            CauseCode::KeyPendingDeletion,
            format!(
                "KMS key {label} is scheduled for deletion{}; it cannot be used until the deletion is cancelled and the key enabled.",
                meta.deletion_date.map(|d| format!(" on {}", rfc3339(d))).unwrap_or_default()
            ),
            vec![fixes::cancel_key_deletion(key)],
        ),
        KeyState::PendingImport => (
            CauseCode::KeyPendingImport,
            format!("KMS key {label} has no key material (imported material expired or was deleted); the same material must be imported again."),
            vec![fixes::import_key_material(key)],
        ),
        other => (
            CauseCode::KeyUnavailable,
            format!(
                "KMS key {label} is {} and cannot be used{}.",
                other.as_str(),
                if meta.custom_key_store_id.is_some() { " (its custom key store is probably disconnected)" } else { "" }
            ),
            if matches!(other, KeyState::Unavailable) {
                vec![fixes::connect_custom_key_store(key, meta.custom_key_store_id.as_deref())]
            } else {
                Vec::new()
            },
        ),
    };
    Some((cause(ctx, code, Some(key), summary, key_state_evidence(view)), fixes))
}

/// Where the launch needed this key from (`key-source` evidence).
pub(super) fn key_source_evidence(ctx: &Ctx<'_>, key: &KeyArn) -> Vec<Evidence> {
    let mut sources: Vec<KeySource> = ctx.f.key_sources.iter().filter(|(k, _)| k == key).map(|(_, s)| *s).collect();
    sources.sort();
    sources.dedup();
    sources.into_iter().map(|source| Evidence::KeySource { key_arn: key.to_string(), source }).collect()
}

pub(super) fn cross_account(ctx: &Ctx<'_>, view: &KeyView<'_>, caller: &Caller, base: Vec<Evidence>) -> Diagnosis {
    let key = &view.facts.arn;
    let mut extra = base;
    extra.push(Evidence::KeyAccount {
        key_account: key.account().to_owned(),
        instance_account: ctx.f.instance.account.clone(),
    });
    let mut fixes = Vec::new();
    let actions = ctx.actions.clone();
    let slr = match caller.principal_kind {
        PrincipalKind::ServiceLinkedRole => caller.principal_arn.clone(),
        PrincipalKind::Service => service_linked_role_for(
            caller.invoked_by.as_deref().unwrap_or_default(),
            &ctx.f.instance.partition,
            &ctx.f.instance.account,
        ),
        _ => None,
    };
    if let Some(role) = slr {
        // AWS's two steps for a service-linked role and another account's key: the key owner
        // allows the launching account, then the launching account grants its role.
        let root = format!("arn:{}:iam::{}:root", ctx.f.instance.partition, ctx.f.instance.account);
        fixes.push(fixes::add_key_policy_statement(key, fixes::allow_account_statement(key, &root)));
        fixes.push(fixes::create_grant(key, &role));
        let summary = format!(
            "KMS key {} belongs to account {}, and the instance was launched by the service-linked role {role}: the key owner must allow account {} to use the key, and that account must then create a grant for the role.",
            key_label(key),
            key.account(),
            ctx.f.instance.account
        );
        extra.push(Evidence::Caller {
            principal_arn: Some(role.clone()),
            principal_kind: PrincipalKind::ServiceLinkedRole,
        });
        return (cause(ctx, CauseCode::CrossAccountKey, Some(key), summary, extra), fixes);
    }
    if let Some(principal) = caller.principal_arn.as_deref() {
        let sims = simulations_for(ctx, key, principal);
        extra.extend(simulation_evidence(&sims));
        for st in fixes::key_policy_statements(key, principal, &actions) {
            fixes.push(fixes::add_key_policy_statement(key, st));
        }
        // Both halves, always: the key owner's statement, and the caller's identity policy in
        // its own account (the actions the simulator denies, or all of them when it allows or
        // was not asked; an identity policy already in place then reads `unchanged`).
        let missing: Vec<String> =
            sims.iter().filter(|s| s.decision != Decision::Allowed).map(|s| s.action.clone()).collect();
        let iam_actions = if missing.is_empty() { actions.clone() } else { missing };
        fixes.extend(identity_fix(ctx, caller, key, &iam_actions));
    }
    let summary = format!(
        "KMS key {} belongs to account {}, not the instance's account {}: the key policy there must allow {} kms:CreateGrant, and {}'s own IAM policy must allow it on that key ARN.",
        key_label(key),
        key.account(),
        ctx.f.instance.account,
        caller.short_name(),
        caller.short_name()
    );
    (cause(ctx, CauseCode::CrossAccountKey, Some(key), summary, extra), fixes)
}
