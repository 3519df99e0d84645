//! The pure core: gathered [`Facts`] in, a [`Finding`] out. No I/O, no clock, no randomness,
//! so every cause can be tested from hand-written facts.
//!
//! Per key of an encrypted volume the checks run in the order a fix would have to happen:
//! a key that cannot be used at all (state) is reported before permissions; an explicit Deny
//! before missing Allows (adding an Allow would not help); a foreign key before the caller's
//! own policies; and only then whether the key policy or the caller's IAM policy is missing
//! the grant.

mod caller;
mod keys;
mod services;

use caller::*;
use keys::*;
use services::*;

use crate::core::arn::KeyArn;
use crate::core::cloudtrail::Caller;
use crate::core::facts::{EndState, Facts, KeyFacts};
use crate::core::fixes;
use crate::core::policy::{KeyPolicy, Request, Verdict};
use crate::core::report::{Cause, CauseCode, Evidence, Finding, KeyReport, Launch, Remediation, FINDING_SCHEMA};
use chrono::{DateTime, SecondsFormat, Utc};

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

type Diagnosis = (Cause, Vec<Remediation>);

fn cause(ctx: &Ctx<'_>, code: CauseCode, key: Option<&KeyArn>, summary: String, extra: Vec<Evidence>) -> Cause {
    let mut evidence = ctx.base.clone();
    evidence.extend(extra);
    Cause { code, key_arn: key.cloned(), summary, evidence }
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
