//! Causes on the caller's side: what IAM's simulator and the denied records say, explicit Denies, guardrails (boundaries, SCPs), and when the caller is unknown.

use super::*;
use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{Caller, DenySource, PrincipalKind, Record};
use crate::core::facts::Decision;
use crate::core::fixes;
use crate::core::policy::{Tri, Verdict};
use crate::core::report::{Cause, CauseCode, Evidence, Remediation};

pub(super) fn caller_unknown(ctx: &Ctx<'_>, key: &KeyArn, caller: Option<&Caller>, evidence: Vec<Evidence>) -> Cause {
    let f = ctx.f;
    let api = f.state.launch_api().as_str();
    let summary = match caller {
        Some(c) => format!(
            "The {api} caller ({} identity) could not be mapped to an IAM principal, so its permissions on KMS key {} could not be checked.",
            c.identity_type,
            key_label(key)
        ),
        None if f.missing.iter().any(|m| m.call == "cloudtrail:LookupEvents") => format!(
            "CloudTrail could not be searched, so the {api} caller and its permissions on KMS key {} are unknown.",
            key_label(key)
        ),
        None if !f.kms_denials.is_empty() => format!(
            "No {api} record naming {} was found in CloudTrail (records arrive about 5 minutes after the call). CloudTrail shows denied KMS calls on key {} (in the evidence), but a denied call never names the caller, so the caller's permissions could not be checked.",
            f.instance.id,
            key_label(key)
        ),
        None => format!(
            "No {api} record naming {} was found in CloudTrail (records arrive about 5 minutes after the call), so the caller's permissions on KMS key {} could not be checked.",
            f.instance.id,
            key_label(key)
        ),
    };
    let mut extra = evidence;
    if let Some(c) = caller {
        extra.push(Evidence::Caller { principal_arn: c.principal_arn.clone(), principal_kind: c.principal_kind });
    }
    cause(ctx, CauseCode::CallerUnknown, Some(key), summary, extra)
}

pub(super) fn simulations_for<'a>(
    ctx: &'a Ctx<'_>,
    key: &KeyArn,
    principal: &str,
) -> Vec<&'a crate::core::facts::Simulation> {
    let k = key.to_string();
    ctx.f.simulations.iter().filter(|s| s.resource == k && s.principal_arn == principal).collect()
}

pub(super) fn simulation_evidence(sims: &[&crate::core::facts::Simulation]) -> Vec<Evidence> {
    sims.iter()
        .map(|s| Evidence::Simulation {
            principal_arn: s.principal_arn.clone(),
            action: s.action.clone(),
            resource: s.resource.clone(),
            decision: s.decision,
            matched_statements: s.matched_statements.clone(),
            allowed_by_boundary: s.allowed_by_boundary,
            allowed_by_organizations: s.allowed_by_organizations,
        })
        .collect()
}

pub(super) fn policy_evidence(view: &KeyView<'_>, action: &str, v: &Verdict) -> Evidence {
    Evidence::KeyPolicy {
        key_arn: view.facts.arn.to_string(),
        action: action.to_owned(),
        delegates_to_iam: v.delegates_to_iam,
        allows_principal: v.allows_principal,
        denies_principal: v.denies_principal,
        statements: v.statements.clone(),
    }
}

/// One key of one launch with a known caller: what every caller-side check reads.
#[derive(Clone, Copy)]
pub(super) struct Attempt<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) view: &'a KeyView<'a>,
    pub(super) caller: &'a Caller,
    /// The launch's denied KMS calls on this key.
    pub(super) denials: &'a [&'a Record],
    /// The evidence every cause of this key starts from.
    pub(super) base: &'a [Evidence],
}

pub(super) fn explicit_deny(attempt: Attempt<'_>) -> Option<Diagnosis> {
    let Attempt { ctx, view, caller, denials, base } = attempt;
    let key = &view.facts.arn;
    let principal = caller.principal_arn.as_deref()?;
    let sims = simulations_for(ctx, key, principal);
    let denied_sims: Vec<_> = sims.iter().copied().filter(|s| s.decision == Decision::ExplicitDeny).collect();
    let policy_denies: Vec<(String, Verdict)> = ctx
        .actions
        .iter()
        .filter_map(|a| view.verdict(principal, caller, &ctx.f.instance.account, a).map(|v| (a.clone(), v)))
        .filter(|(_, v)| v.denies_principal == Tri::Yes)
        .collect();
    let trail_says = denials.iter().any(|r| r.mentions_explicit_deny());
    if denied_sims.is_empty() && policy_denies.is_empty() && !trail_says {
        return None;
    }
    // Attributed to where it is: the simulator's explicitDeny (the SCP and boundary cases are
    // decided before this) is an identity policy; CloudTrail's message names its policy type.
    let mut where_ = Vec::new();
    if !denied_sims.is_empty() {
        where_.push("an identity policy of the caller".to_owned());
    }
    if let Some((_, v)) = policy_denies.first() {
        where_.push(format!("the key policy (statement {})", v.statements.join(", ")));
    }
    for r in denials {
        let place = match r.explicit_deny_in() {
            Some(DenySource::IdentityPolicy) if denied_sims.is_empty() => "an identity policy of the caller",
            Some(DenySource::ResourcePolicy) if policy_denies.is_empty() => "the key policy",
            Some(DenySource::SessionPolicy) => "the caller's session policy",
            Some(DenySource::VpcEndpointPolicy) => "a VPC endpoint policy",
            Some(DenySource::ResourceControlPolicy) => "a resource control policy of the organization",
            _ => continue,
        };
        if !where_.iter().any(|w| w == place) {
            where_.push(place.to_owned());
        }
    }
    if where_.is_empty() {
        where_.push("a policy CloudTrail's error message does not name".to_owned());
    }
    let action = denied_sims.first().map(|s| s.action.clone()).unwrap_or_else(|| CREATE_GRANT.to_owned());
    let summary = format!(
        "An explicit Deny in {} blocks {action} on KMS key {} for {}; an Allow cannot override it, so the Deny must be narrowed.",
        where_.join(" and "),
        key_label(key),
        caller.short_name()
    );
    let mut extra = base.to_vec();
    extra.extend(simulation_evidence(&denied_sims));
    extra.extend(policy_denies.iter().map(|(a, v)| policy_evidence(view, a, v)));
    let fix = fixes::review_deny(Some(principal), &ctx.f.instance.account, key, !policy_denies.is_empty());
    Some((cause(ctx, CauseCode::ExplicitDeny, Some(key), summary, extra), vec![fix]))
}

/// An SCP, or the caller's permissions boundary, blocks what the launch needs: the simulator's
/// `OrganizationsDecisionDetail` / `PermissionsBoundaryDecisionDetail`, or CloudTrail's
/// "explicit deny in a service control policy / permissions boundary".
pub(super) fn guardrail_cause(attempt: Attempt<'_>) -> Option<Diagnosis> {
    let Attempt { ctx, view, caller, denials, base } = attempt;
    let key = &view.facts.arn;
    let principal = caller.principal_arn.as_deref();
    let sims = principal.map(|p| simulations_for(ctx, key, p)).unwrap_or_default();
    let blocked = |pred: &dyn Fn(&crate::core::facts::Simulation) -> bool| -> Vec<&crate::core::facts::Simulation> {
        sims.iter()
            .copied()
            .filter(|s| {
                s.decision != Decision::Allowed && ctx.actions.iter().any(|a| a.eq_ignore_ascii_case(&s.action))
            })
            .filter(|s| pred(s))
            .collect()
    };
    // CloudTrail's own words, explicit or not ("because no permissions boundary allows …").
    let trail = |source: DenySource| -> Vec<&Record> {
        denials
            .iter()
            .copied()
            .filter(|r| r.denied_by().map(|(s, _)| s) == Some(source) && r.ec2_infrastructure_for.is_none())
            .collect()
    };
    let actions_of = |sims: &[&crate::core::facts::Simulation], records: &[&Record]| -> Vec<String> {
        let mut out: Vec<String> = sims.iter().map(|s| s.action.clone()).collect();
        out.extend(records.iter().map(|r| format!("kms:{}", r.event_name)));
        out.sort();
        out.dedup();
        out
    };
    let who = caller.short_name();
    let account = &ctx.f.instance.account;

    let scp_sims = blocked(&|s| s.allowed_by_organizations == Some(false));
    let scp_trail = trail(DenySource::ServiceControlPolicy);
    if !scp_sims.is_empty() || !scp_trail.is_empty() {
        let actions = actions_of(&scp_sims, &scp_trail);
        let how = if scp_trail.is_empty() && scp_sims.iter().all(|s| s.decision == Decision::ImplicitDeny) {
            "does not allow"
        } else {
            "denies"
        };
        let summary = format!(
            "A service control policy of the organization {how} {} on KMS key {} for {who}; no IAM or key policy change in account {account} can get past it.",
            actions.join(", "),
            key_label(key)
        );
        let mut extra = base.to_vec();
        extra.extend(simulation_evidence(&scp_sims));
        let fix = fixes::review_scp(account, principal, key, &actions);
        return Some((cause(ctx, CauseCode::ScpBlocks, Some(key), summary, extra), vec![fix]));
    }

    let boundary_sims = blocked(&|s| s.allowed_by_boundary == Some(false));
    let boundary_trail = trail(DenySource::PermissionsBoundary);
    if boundary_sims.is_empty() && boundary_trail.is_empty() {
        return None;
    }
    let principal = principal?;
    let actions = actions_of(&boundary_sims, &boundary_trail);
    let boundary = ctx.f.boundary_arn.as_deref();
    let summary = format!(
        "{who}'s permissions boundary{} does not allow {} on KMS key {}, so it is denied whatever {who}'s identity policy allows; the boundary must allow it (and the identity policy too, if it does not already).",
        boundary.map(|b| format!(" ({b})")).unwrap_or_default(),
        actions.join(", "),
        key_label(key)
    );
    let mut extra = base.to_vec();
    extra.extend(simulation_evidence(&boundary_sims));
    let mut fixes = vec![fixes::update_permissions_boundary(boundary, principal, key, &actions)];
    fixes.extend(identity_fix(ctx, caller, key, &actions));
    Some((cause(ctx, CauseCode::PermissionsBoundaryBlocks, Some(key), summary, extra), fixes))
}

/// The identity-side fix for a principal: an inline policy, or the permission set for SSO.
pub(super) fn identity_fix(ctx: &Ctx<'_>, caller: &Caller, key: &KeyArn, actions: &[String]) -> Option<Remediation> {
    let principal = caller.principal_arn.as_deref()?;
    match caller.principal_kind {
        PrincipalKind::User | PrincipalKind::Role | PrincipalKind::Federated => {
            fixes::put_identity_policy(principal, caller.principal_kind, key, actions)
        }
        PrincipalKind::SsoRole => fixes::update_permission_set(principal, &ctx.f.instance.account, key, actions),
        _ => None,
    }
}

/// Users, roles, SSO roles and federated users: is it the key policy or the IAM policy?
pub(super) fn permission_cause(
    ctx: &Ctx<'_>,
    view: &KeyView<'_>,
    caller: &Caller,
    denials: &[&Record],
    base: Vec<Evidence>,
) -> Option<Diagnosis> {
    let key = &view.facts.arn;
    let principal = caller.principal_arn.as_deref()?;
    let account = &ctx.f.instance.account;
    let sims = simulations_for(ctx, key, principal);
    let sim_of = |a: &str| sims.iter().find(|s| s.action.eq_ignore_ascii_case(a)).map(|s| s.decision);

    let mut blocked_by_key = Vec::new();
    let mut missing_in_iam = Vec::new();
    let mut verdicts = Vec::new();
    for action in &ctx.actions {
        let verdict = view.verdict(principal, caller, account, action);
        let sim = sim_of(action);
        match &verdict {
            // The key policy alone grants it (same account): IAM does not matter.
            Some(v) if v.allows_principal == Tri::Yes => {}
            Some(v) if v.delegates_to_iam.is_possible() || v.allows_principal.is_possible() => {
                if sim == Some(Decision::ImplicitDeny) {
                    missing_in_iam.push(action.clone());
                }
            }
            Some(_) => blocked_by_key.push(action.clone()),
            // Key policy unknown: IAM's answer is all we have.
            None => {
                if sim == Some(Decision::ImplicitDeny) {
                    missing_in_iam.push(action.clone());
                }
            }
        }
        if let Some(v) = verdict {
            verdicts.push((action.clone(), v));
        }
    }

    let mut extra = base;
    extra.extend(simulation_evidence(&sims));
    extra.extend(verdicts.iter().map(|(a, v)| policy_evidence(view, a, v)));
    let who = caller.short_name();

    if !blocked_by_key.is_empty() {
        let iam_allows = blocked_by_key.iter().all(|a| sim_of(a) == Some(Decision::Allowed));
        let summary = format!(
            "The policy of KMS key {} neither delegates to IAM nor names {who}, so {} is denied {}.",
            key_label(key),
            blocked_by_key.join(", "),
            if iam_allows { "even though the caller's IAM policy allows it" } else { "whatever IAM policies say" }
        );
        let fixes = fixes::key_policy_statements(key, principal, &blocked_by_key)
            .into_iter()
            .map(|st| fixes::add_key_policy_statement(key, st))
            .collect();
        return Some((cause(ctx, CauseCode::KeyPolicyDeniesCaller, Some(key), summary, extra), fixes));
    }

    // Without a simulation, CloudTrail's denied KMS calls are the evidence.
    if missing_in_iam.is_empty() && sims.is_empty() {
        let denied_actions: Vec<String> = denials
            .iter()
            .filter(|r| r.caller.principal_arn.as_deref() == Some(principal) || r.caller.principal_arn.is_none())
            .map(|r| format!("kms:{}", r.event_name))
            .filter(|a| ctx.actions.iter().any(|n| n.eq_ignore_ascii_case(a)))
            .collect();
        for a in denied_actions {
            if !missing_in_iam.contains(&a) {
                missing_in_iam.push(a);
            }
        }
    }
    if missing_in_iam.is_empty() {
        // IAM (and the key policy) allow the caller, yet KMS denied it: something we cannot
        // see from here stands in the way (a policy with conditions we could not evaluate).
        if view.policy.is_err()
            && sims.iter().all(|s| s.decision == Decision::Allowed)
            && !sims.is_empty()
            && !denials.is_empty()
        {
            let summary = format!(
                "{who}'s IAM policy allows kms:CreateGrant on KMS key {}, yet KMS denied it: the key policy (which could not be read) must not grant {who} access.",
                key_label(key)
            );
            let fixes = fixes::key_policy_statements(key, principal, &ctx.actions)
                .into_iter()
                .map(|st| fixes::add_key_policy_statement(key, st))
                .collect();
            return Some((cause(ctx, CauseCode::KeyPolicyDeniesCaller, Some(key), summary, extra), fixes));
        }
        // IAM allows it now, but CloudTrail shows KMS denied this caller at launch, and the key
        // policy defers to IAM: the caller's IAM policy changed since (a fix, perhaps ours).
        // The finding still explains that launch, so a retried or repeated diagnosis of the
        // same failure gives the same answer.
        let denied_then: Vec<String> = denials
            .iter()
            .filter(|r| r.caller.principal_arn.as_deref() == Some(principal) && !r.mentions_explicit_deny())
            .map(|r| format!("kms:{}", r.event_name))
            .filter(|a| ctx.actions.iter().any(|n| n.eq_ignore_ascii_case(a)))
            .fold(Vec::new(), |mut acc, a| {
                if !acc.contains(&a) {
                    acc.push(a);
                }
                acc
            });
        if view.policy.is_ok()
            && !denied_then.is_empty()
            && !sims.is_empty()
            && sims.iter().all(|s| s.decision == Decision::Allowed)
        {
            let summary = format!(
                "{who} was not allowed {} on KMS key {} when it called {} (CloudTrail recorded the denial); its IAM policy allows it now, so the fix below may already be in place.",
                denied_then.join(", "),
                key_label(key),
                ctx.f.state.launch_api().as_str()
            );
            let fixes = identity_fix(ctx, caller, key, &denied_then).into_iter().collect();
            return Some((cause(ctx, CauseCode::CallerLacksCreateGrant, Some(key), summary, extra), fixes));
        }
        return None;
    }
    let caveat = if view.policy.is_err() {
        " (the key policy could not be read, so this assumes it delegates to IAM)"
    } else {
        ""
    };
    let summary = format!(
        "{who} is not allowed {} on KMS key {}: EC2 needs that to decrypt the volume's data key, so {} failed{caveat}.",
        missing_in_iam.join(", "),
        key_label(key),
        ctx.f.state.launch_api().as_str()
    );
    let fixes = identity_fix(ctx, caller, key, &missing_in_iam).into_iter().collect();
    Some((cause(ctx, CauseCode::CallerLacksCreateGrant, Some(key), summary, extra), fixes))
}
