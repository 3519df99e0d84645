//! The pure core: gathered [`Facts`] in, a [`Finding`] out. No I/O, no clock, no randomness,
//! so every cause can be tested from hand-written facts.
//!
//! Per key of an encrypted volume the checks run in the order a fix would have to happen:
//! a key that cannot be used at all (state) is reported before permissions; an explicit Deny
//! before missing Allows (adding an Allow would not help); a foreign key before the caller's
//! own policies; and only then whether the key policy or the caller's IAM policy is missing
//! the grant.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{Caller, DenySource, PrincipalKind, Record};
use crate::core::facts::{Decision, EndState, Facts, KeyFacts, KeyState};
use crate::core::fixes;
use crate::core::policy::{KeyPolicy, Request, Tri, Verdict};
use crate::core::report::{
    Cause, CauseCode, Evidence, Finding, KeyReport, KeySource, Launch, Remediation, FINDING_SCHEMA,
};

pub const CREATE_GRANT: &str = "kms:CreateGrant";

/// The KMS actions a launch needs from the caller. A start only needs the grant (EC2 then
/// decrypts through it); a run also creates and decrypts the volume's data key on the caller's
/// behalf.
pub fn needed_actions(state: EndState) -> Vec<String> {
    match state {
        EndState::Stopped => vec![CREATE_GRANT.to_owned()],
        EndState::Terminated => {
            vec![CREATE_GRANT.to_owned(), "kms:GenerateDataKeyWithoutPlaintext".to_owned(), "kms:Decrypt".to_owned()]
        }
    }
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A finding id that is stable for account + region + instance + principal (FNV-1a, which
/// unlike `DefaultHasher` is the same in every build).
pub fn finding_id(account: &str, region: &str, instance_id: &str, principal: Option<&str>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [account, region, instance_id, principal.unwrap_or("unknown-principal")] {
        for b in part.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("kld-{h:016x}")
}

/// A key as a person reads it in a sentence.
fn key_label(key: &KeyArn) -> String {
    format!("{} ({})", key.key_id(), key.account())
}

/// One key, seen from one principal.
struct KeyView<'a> {
    facts: &'a KeyFacts,
    /// The parsed policy, or why there is none.
    policy: Result<KeyPolicy, String>,
}

impl<'a> KeyView<'a> {
    fn new(facts: &'a KeyFacts) -> Self {
        let policy = match &facts.policy {
            Some(text) => KeyPolicy::parse(text).map_err(|e| e.to_string()),
            None => Err("the key policy could not be read".to_owned()),
        };
        Self { facts, policy }
    }

    fn verdict(&self, principal_arn: &str, caller: &Caller, account: &str, action: &str) -> Option<Verdict> {
        let policy = self.policy.as_ref().ok()?;
        Some(policy.evaluate(&Request {
            principal_arn,
            caller_arn: caller.arn.as_deref(),
            principal_account: caller.account.as_deref().unwrap_or(account),
            key_arn: &self.facts.arn.to_string(),
            region: self.facts.arn.region(),
            action,
            principal_type: principal_type(caller),
        }))
    }
}

/// `aws:PrincipalType` for a caller, as AWS sets it: `Account` for root, `User`,
/// `AssumedRole`, `FederatedUser` (IAM User Guide, global condition context keys).
fn principal_type(caller: &Caller) -> Option<&'static str> {
    match caller.identity_type.as_str() {
        "Root" => Some("Account"),
        "IAMUser" => Some("User"),
        "AssumedRole" => Some("AssumedRole"),
        "FederatedUser" => Some("FederatedUser"),
        _ => None,
    }
}

struct Ctx<'a> {
    f: &'a Facts,
    actions: Vec<String>,
    base: Vec<Evidence>,
}

pub fn decide(f: &Facts) -> Finding {
    let ctx = Ctx {
        f,
        actions: needed_actions(f.state),
        base: vec![Evidence::StateReason {
            code: f.state_reason.code.clone(),
            message: f.state_reason.message.clone(),
        }],
    };
    let caller = f.caller();
    let views: Vec<KeyView<'_>> = f.keys.iter().map(KeyView::new).collect();

    let mut causes = Vec::new();
    let mut remediations = Vec::new();
    for view in &views {
        if let Some((cause, fixes)) = key_cause(&ctx, view, caller) {
            causes.push(cause);
            for fix in fixes {
                if !remediations.contains(&fix) {
                    remediations.push(fix);
                }
            }
        }
    }
    if causes.is_empty() {
        causes.push(no_cause(&ctx, caller));
    }

    let keys = views
        .iter()
        .map(|v| KeyReport {
            arn: v.facts.arn.clone(),
            account: v.facts.arn.account().to_owned(),
            manager: v.facts.metadata.as_ref().and_then(|m| m.manager.clone()),
            state: v.facts.metadata.as_ref().map(|m| m.state.as_str().to_owned()),
            iam_delegation: iam_delegation(&ctx, v, caller),
            aliases: Vec::new(),
        })
        .collect();

    let principal = caller.and_then(|c| c.principal_arn.as_deref());
    Finding {
        schema: FINDING_SCHEMA,
        id: finding_id(&f.instance.account, &f.instance.region, &f.instance.id, principal),
        account: f.instance.account.clone(),
        region: f.instance.region.clone(),
        instance_id: f.instance.id.clone(),
        instance_name: f.instance.tags.iter().find(|(k, _)| k == "Name").map(|(_, v)| v.clone()),
        severity: crate::core::report::CauseCode::severity_of(&causes),
        instance_state: f.state,
        state_reason: f.state_reason.clone(),
        observed_at: rfc3339(f.observed_at),
        launch: f.launch.as_ref().and_then(|r| {
            Some(Launch {
                api: crate::core::cloudtrail::LaunchApi::parse(&r.event_name)?,
                event_id: r.event_id.clone(),
                event_time: rfc3339(r.event_time),
                caller: r.caller.clone(),
            })
        }),
        volumes: f.volumes.clone(),
        keys,
        causes,
        remediations,
        missing_evidence: f.missing.clone(),
        cloudtrail_window: None,
        delivered: Default::default(),
        decided_at: None,
        digest: String::new(),
    }
}

/// Does the key policy delegate kms:CreateGrant to the IAM policies of the caller's account
/// (of the key's own account when the caller is unknown)?
fn iam_delegation(ctx: &Ctx<'_>, view: &KeyView<'_>, caller: Option<&Caller>) -> Option<bool> {
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

type Diagnosis = (Cause, Vec<Remediation>);

fn cause(ctx: &Ctx<'_>, code: CauseCode, key: Option<&KeyArn>, summary: String, extra: Vec<Evidence>) -> Cause {
    let mut evidence = ctx.base.clone();
    evidence.extend(extra);
    Cause { code, key_arn: key.cloned(), summary, evidence }
}

fn key_cause(ctx: &Ctx<'_>, view: &KeyView<'_>, caller: Option<&Caller>) -> Option<Diagnosis> {
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
    if let Some(d) = guardrail_cause(ctx, view, caller, &denials, &launch_evidence) {
        return Some(d);
    }
    if let Some(d) = explicit_deny(ctx, view, caller, &denials, &launch_evidence) {
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

fn record_names_key(r: &Record, key: &KeyArn) -> bool {
    r.key
        .as_deref()
        .is_some_and(|k| k == key.to_string() || k == key.key_id() || k.ends_with(&format!("key/{}", key.key_id())))
}

fn record_evidence(r: &Record) -> Evidence {
    Evidence::CloudtrailEvent {
        event_id: r.event_id.clone(),
        event_name: r.event_name.clone(),
        event_time: rfc3339(r.event_time),
        caller_arn: r.caller.arn.clone(),
        error_code: r.error_code.clone(),
        error_message: r.error_message.clone(),
    }
}

fn key_state_evidence(view: &KeyView<'_>) -> Vec<Evidence> {
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

fn key_state_cause(ctx: &Ctx<'_>, view: &KeyView<'_>) -> Option<Diagnosis> {
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

fn caller_unknown(ctx: &Ctx<'_>, key: &KeyArn, caller: Option<&Caller>, evidence: Vec<Evidence>) -> Cause {
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

fn simulations_for<'a>(ctx: &'a Ctx<'_>, key: &KeyArn, principal: &str) -> Vec<&'a crate::core::facts::Simulation> {
    let k = key.to_string();
    ctx.f.simulations.iter().filter(|s| s.resource == k && s.principal_arn == principal).collect()
}

fn simulation_evidence(sims: &[&crate::core::facts::Simulation]) -> Vec<Evidence> {
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

fn policy_evidence(view: &KeyView<'_>, action: &str, v: &Verdict) -> Evidence {
    Evidence::KeyPolicy {
        key_arn: view.facts.arn.to_string(),
        action: action.to_owned(),
        delegates_to_iam: v.delegates_to_iam,
        allows_principal: v.allows_principal,
        denies_principal: v.denies_principal,
        statements: v.statements.clone(),
    }
}

fn explicit_deny(
    ctx: &Ctx<'_>,
    view: &KeyView<'_>,
    caller: &Caller,
    denials: &[&Record],
    base: &[Evidence],
) -> Option<Diagnosis> {
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

/// Where the launch needed this key from (`key-source` evidence).
fn key_source_evidence(ctx: &Ctx<'_>, key: &KeyArn) -> Vec<Evidence> {
    let mut sources: Vec<KeySource> = ctx.f.key_sources.iter().filter(|(k, _)| k == key).map(|(_, s)| *s).collect();
    sources.sort();
    sources.dedup();
    sources.into_iter().map(|source| Evidence::KeySource { key_arn: key.to_string(), source }).collect()
}

/// EC2's identity-only role, with which EC2 itself decrypts a volume's data key at launch.
fn ec2_infrastructure_role(ctx: &Ctx<'_>) -> String {
    format!(
        "arn:{}:iam::{}:role/{}",
        ctx.f.instance.partition,
        ctx.f.instance.account,
        crate::core::cloudtrail::EC2_INFRASTRUCTURE_ROLE
    )
}

/// A KMS call by EC2's own identity for this instance was denied. No IAM policy applies to that
/// identity: only the key policy and SCPs can deny it, and CloudTrail's message says which.
fn ec2_infrastructure_denied(
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
fn exempt_from_key_policy_denies(ctx: &Ctx<'_>, view: &KeyView<'_>, principal: &str, action: &str) -> Vec<Remediation> {
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

/// An SCP, or the caller's permissions boundary, blocks what the launch needs: the simulator's
/// `OrganizationsDecisionDetail` / `PermissionsBoundaryDecisionDetail`, or CloudTrail's
/// "explicit deny in a service control policy / permissions boundary".
fn guardrail_cause(
    ctx: &Ctx<'_>,
    view: &KeyView<'_>,
    caller: &Caller,
    denials: &[&Record],
    base: &[Evidence],
) -> Option<Diagnosis> {
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
fn identity_fix(ctx: &Ctx<'_>, caller: &Caller, key: &KeyArn, actions: &[String]) -> Option<Remediation> {
    let principal = caller.principal_arn.as_deref()?;
    match caller.principal_kind {
        PrincipalKind::User | PrincipalKind::Role | PrincipalKind::Federated => {
            fixes::put_identity_policy(principal, caller.principal_kind, key, actions)
        }
        PrincipalKind::SsoRole => fixes::update_permission_set(principal, &ctx.f.instance.account, key, actions),
        _ => None,
    }
}

fn cross_account(ctx: &Ctx<'_>, view: &KeyView<'_>, caller: &Caller, base: Vec<Evidence>) -> Diagnosis {
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

/// The service-linked role AWS uses for a launching service, when CloudTrail only recorded the
/// service.
fn service_linked_role_for(service: &str, partition: &str, account: &str) -> Option<String> {
    let (path, name) = match service {
        "autoscaling.amazonaws.com" => ("autoscaling.amazonaws.com", "AWSServiceRoleForAutoScaling"),
        "spot.amazonaws.com" => ("spot.amazonaws.com", "AWSServiceRoleForEC2Spot"),
        "spotfleet.amazonaws.com" => ("spotfleet.amazonaws.com", "AWSServiceRoleForEC2SpotFleet"),
        "ec2fleet.amazonaws.com" => ("ec2fleet.amazonaws.com", "AWSServiceRoleForEC2Fleet"),
        _ => return None,
    };
    Some(format!("arn:{partition}:iam::{account}:role/aws-service-role/{path}/{name}"))
}

fn service_linked(ctx: &Ctx<'_>, view: &KeyView<'_>, caller: &Caller, base: Vec<Evidence>) -> Option<Diagnosis> {
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

/// The root user is not limited by IAM policies, only by the key policy.
fn root_cause(ctx: &Ctx<'_>, view: &KeyView<'_>, caller: &Caller, base: Vec<Evidence>) -> Option<Diagnosis> {
    let principal = caller.principal_arn.as_deref()?;
    let v = view.verdict(principal, caller, &ctx.f.instance.account, CREATE_GRANT)?;
    if v.delegates_to_iam.is_possible() || v.allows_principal.is_possible() {
        return None;
    }
    let key = &view.facts.arn;
    let mut extra = base;
    extra.push(policy_evidence(view, CREATE_GRANT, &v));
    let summary = format!(
        "The policy of KMS key {} does not allow the account root to use it, so even the root user cannot have EC2 create a grant.",
        key_label(key)
    );
    let fix = fixes::add_key_policy_statement(
        key,
        crate::core::policy::delegation_statement(key.arn().partition(), key.account()),
    );
    Some((cause(ctx, CauseCode::KeyPolicyDeniesCaller, Some(key), summary, extra), vec![fix]))
}

/// Users, roles, SSO roles and federated users: is it the key policy or the IAM policy?
fn permission_cause(
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

fn no_cause(ctx: &Ctx<'_>, caller: Option<&Caller>) -> Cause {
    let f = ctx.f;
    let encrypted_with_kms = f.volumes.iter().filter(|v| v.kms_key_arn.is_some()).count();
    let searched = f.state == EndState::Terminated && f.keys.is_empty();
    let summary = if searched && f.instance.attachments.is_empty() {
        // A terminated instance no longer shows its volumes: that is no proof it had none.
        "The instance no longer shows its volumes (AWS removes a terminated instance's block device mappings), and neither the launch request, its launch template, the AMI's snapshots, the EBS default key nor CloudTrail named a KMS key for it, so no KMS cause was found.".to_owned()
    } else if f.volumes.is_empty() && f.instance.attachments.is_empty() {
        "The instance has no EBS volumes, so KMS is not the cause of this launch failure.".to_owned()
    } else if encrypted_with_kms == 0 && f.missing.iter().all(|m| m.call != "ec2:DescribeVolumes") {
        "No attached EBS volume is encrypted with a KMS key, so KMS is not the cause of this launch failure.".to_owned()
    } else if !f.missing.is_empty() {
        "No KMS cause was found in the evidence that could be gathered; see missing_evidence for what could not be checked.".to_owned()
    } else {
        // Allowed *now*: whether it was at the launch, nothing on record says.
        return cause(
            ctx,
            CauseCode::NoKmsCauseFound,
            None,
            format!(
                "Every KMS key of the instance's volumes is enabled and {} may create grants on it now, and CloudTrail shows no KMS call denied for this launch, so KMS does not stop the instance now.",
                caller.map(Caller::short_name).unwrap_or_else(|| "the caller".to_owned())
            ),
            simulation_evidence(&f.simulations.iter().collect::<Vec<_>>()),
        );
    };
    cause(ctx, CauseCode::NoKmsCauseFound, None, summary, Vec::new())
}

#[cfg(test)]
mod tests;
