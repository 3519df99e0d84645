//! Opt-in auto-remediation: attach the scoped CreateGrant policy, and nothing else.
//!
//! Off by default. In `dry-run` every proposed fix is checked against the guardrails and
//! reported as `apply` would treat it, and nothing is written. In `apply` the only write is
//! PutUserPolicy/PutRolePolicy of the inline policy `kms-launch-doctor-<key id>` whose document
//! is exactly the finding's scoped statement, for a `caller-lacks-create-grant` cause, on a
//! same-account IAM user or role that the launch record names as the caller. Both sides must
//! opt in: the principal (tag or `REMEDIATION_ALLOWED_PRINCIPALS`) and the key (tag or
//! `REMEDIATION_ALLOWED_KEYS`), so that whoever can tag a principal cannot thereby reach every
//! key that delegates to IAM. It never overwrites a policy someone edited, never writes past
//! IAM's size quota, and proves the result with a policy simulation made after the write.
//!
//! See docs/security.md for who can trigger each write and which guard stops what.

use serde_json::Value;

use crate::core::arn::{Arn, IamEntity, KeyArn};
use crate::core::cloudtrail::PrincipalKind;
use crate::core::facts::{Decision, EndState};
use crate::core::policy::glob;
use crate::core::report::{CauseCode, Finding, Remediation, RemediationAction, RemediationStatus, Restart};
use crate::ports::{Cloud, IamWrites, Principal, SimulationRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Off,
    DryRun,
    Apply,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "off" => Some(Self::Off),
            "dry-run" | "dryrun" => Some(Self::DryRun),
            "apply" => Some(Self::Apply),
            _ => None,
        }
    }
}

pub const DEFAULT_TAG_KEY: &str = "kms-launch-doctor:auto-remediate";

/// IAM's inline policy quotas: the sum of a principal's inline policies, whitespace excluded.
pub const USER_INLINE_QUOTA: usize = 2048;
pub const ROLE_INLINE_QUOTA: usize = 10240;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guardrails {
    pub mode: Mode,
    /// `REMEDIATION_TAG_KEY`: the principal opts in with this tag set to `true`.
    pub tag_key: String,
    /// `REMEDIATION_ALLOWED_PRINCIPALS`: ARN patterns that opt in without a tag.
    pub allowed_principals: Vec<String>,
    /// `REMEDIATION_ALLOWED_KEYS`: key ARN patterns that opt in without a tag.
    pub allowed_keys: Vec<String>,
    /// `RESTART_AFTER_REMEDIATION`: start the stopped instance after a verified fix.
    pub restart: bool,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            tag_key: DEFAULT_TAG_KEY.to_owned(),
            allowed_principals: Vec::new(),
            allowed_keys: Vec::new(),
            restart: false,
        }
    }
}

/// Comma-separated patterns; empty entries ignored.
pub fn patterns(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

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
fn never_applied(action: RemediationAction) -> &'static str {
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
fn policy_key(doc: &Value) -> Option<KeyArn> {
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

fn policy_actions(doc: &Value) -> Vec<String> {
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
fn static_checks(f: &Finding, r: &Remediation) -> Result<(Principal, KeyArn), String> {
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

/// Applies the guardrails and, in `apply`, the fix, to every remediation of the finding.
pub async fn remediate<C: Cloud, W: IamWrites>(cloud: &C, writes: &W, g: &Guardrails, f: &mut Finding) {
    if g.mode == Mode::Off {
        return;
    }
    let snapshot = f.clone();
    for r in &mut f.remediations {
        one(cloud, writes, g, &snapshot, r).await;
    }
    if g.restart && g.mode == Mode::Apply {
        restart(cloud, writes, &g.tag_key, f).await;
    }
}

/// Remediates with the credentials of the finding's account: the cloud's own, or in hub
/// topology the member account's remediation role (`<SPOKE_ROLE_NAME>-remediation`), reading
/// through its spoke role. Never the hub's own credentials for another account's principal:
/// a principal of the same name in the hub account is someone else. An account that cannot
/// be entered for writing refuses every fix, with the reason.
pub async fn remediate_in_account<A: Cloud + IamWrites>(aws: &A, g: &Guardrails, f: &mut Finding) {
    if g.mode == Mode::Off {
        return;
    }
    let reads = aws.in_account(&f.account).await;
    if g.mode == Mode::DryRun {
        // A dry run writes nothing: the spoke's read role reads the tags and policies.
        return match reads {
            Ok(None) => remediate(aws, aws, g, f).await,
            Ok(Some(reads)) => remediate(&reads, &reads, g, f).await,
            Err(e) => refuse_all(f, &format!("account {} cannot be entered for remediation: {e}", f.account)),
        };
    }
    let writes = aws.writes_in(&f.account).await;
    match (reads, writes) {
        (Ok(None), Ok(None)) => remediate(aws, aws, g, f).await,
        (Ok(Some(reads)), Ok(Some(writes))) => remediate(&reads, &writes, g, f).await,
        (Err(e), _) | (_, Err(e)) => {
            refuse_all(f, &format!("account {} cannot be entered for remediation: {e}", f.account))
        }
        _ => refuse_all(f, &format!("account {} has no remediation role for this function", f.account)),
    }
}

/// A write the credentials in use may not make (IAM answered AccessDenied) is a refusal, not a
/// failure of the tool: across accounts, the member role's permissions decide (`scan --org
/// --remediate`). The note keeps IAM's reason.
pub fn refuse_denied(f: &mut Finding, why: &str) {
    for r in &mut f.remediations {
        let denied = r.note.as_deref().is_some_and(|n| n.contains("AccessDenied") || n.contains("not authorized"));
        if r.status == RemediationStatus::Failed && denied {
            r.status = RemediationStatus::Refused;
            r.note = Some(format!("{why}: {}", r.note.as_deref().unwrap_or_default()));
        }
    }
}

fn refuse_all(f: &mut Finding, note: &str) {
    for r in &mut f.remediations {
        r.status = RemediationStatus::Refused;
        r.note = Some(note.to_owned());
    }
}

async fn one<C: Cloud, W: IamWrites>(cloud: &C, writes: &W, g: &Guardrails, f: &Finding, r: &mut Remediation) {
    let refuse = |r: &mut Remediation, note: String| {
        r.status = RemediationStatus::Refused;
        r.note = Some(note);
    };
    let fail = |r: &mut Remediation, e: crate::ports::CallError| {
        r.status = RemediationStatus::Failed;
        r.note = Some(e.to_string());
    };
    let (principal, key) = match static_checks(f, r) {
        Ok(v) => v,
        Err(note) => return refuse(r, note),
    };
    let (Some(name), Some(doc)) = (r.policy_name.clone(), r.policy_document.clone()) else {
        return refuse(r, "no policy name or document".to_owned());
    };

    // Opt-in, principal side: an allowed-principals pattern, else the tag.
    let by_pattern = g.allowed_principals.iter().any(|p| glob(p, &r.target, true));
    if !by_pattern {
        match writes.principal_tags(&principal).await {
            Ok(tags) if opted_in(&tags, &g.tag_key) => {}
            Ok(_) => {
                return refuse(
                    r,
                    format!(
                        "{} has not opted in: tag it {}=true or list it in REMEDIATION_ALLOWED_PRINCIPALS",
                        r.target, g.tag_key
                    ),
                )
            }
            Err(e) => return fail(r, e),
        }
    }

    // Opt-in, key side: an allowed-keys pattern, else the key's own tag. In dry-run the role
    // may lack kms:ListResourceTags (the template grants it with apply only): say so.
    let mut caveat = None;
    let k = key.to_string();
    if !g.allowed_keys.iter().any(|p| glob(p, &k, true)) {
        match writes.key_tags(&key).await {
            Ok(tags) if opted_in(&tags, &g.tag_key) => {}
            Ok(_) => {
                return refuse(
                    r,
                    format!(
                        "key {k} has not opted in: tag it {}=true or list it in REMEDIATION_ALLOWED_KEYS",
                        g.tag_key
                    ),
                )
            }
            Err(e) if g.mode == Mode::DryRun => caveat = Some(format!("the key's opt-in tag could not be read ({e})")),
            Err(e) => return fail(r, e),
        }
    }

    let document = doc.to_string();
    let before = match writes.inline_policy(&principal, &name).await {
        Ok(b) => b,
        Err(e) => return fail(r, e),
    };
    if let Some(existing) = &before {
        let same = serde_json::from_str::<Value>(existing).ok().as_ref() == Some(&doc);
        if !same {
            return refuse(r, format!("inline policy {name} already exists with different content (edited by someone?); it is never overwritten"));
        }
        r.status = RemediationStatus::Unchanged;
        r.note = Some(format!("inline policy {name} is already in place"));
        r.verified = verify(cloud, &r.target, &key, &doc, &mut r.note).await;
        return;
    }

    // The diagnosis already showed IAM allows it now (by another policy): nothing to write.
    // Verified only by a simulation made now, not by the diagnosis's own.
    if already_allowed(f, &key) {
        r.status = RemediationStatus::Unchanged;
        r.note = Some(format!(
            "IAM already allows {} on the key through another policy; nothing written",
            policy_actions(&doc).join(", ")
        ));
        r.verified = verify(cloud, &r.target, &key, &doc, &mut r.note).await;
        return;
    }

    // Quota: every inline policy of the principal, plus this one, whitespace excluded.
    let quota = match principal {
        Principal::User(_) => USER_INLINE_QUOTA,
        Principal::Role(_) => ROLE_INLINE_QUOTA,
    };
    let names = match writes.inline_policy_names(&principal).await {
        Ok(n) => n,
        Err(e) => return fail(r, e),
    };
    let mut used = 0;
    for n in names.iter().filter(|n| **n != name) {
        match writes.inline_policy(&principal, n).await {
            Ok(Some(d)) => used += quota_size(&d),
            Ok(None) => {}
            Err(e) => return fail(r, e),
        }
    }
    let total = used + quota_size(&document);
    if total > quota {
        return refuse(
            r,
            format!("would exceed IAM's inline policy quota for {}: {total} of {quota} characters", r.target),
        );
    }

    let call = match principal {
        Principal::User(_) => "iam:PutUserPolicy",
        Principal::Role(_) => "iam:PutRolePolicy",
    };
    if g.mode == Mode::DryRun {
        r.status = RemediationStatus::Proposed;
        r.note = Some(format!(
            "dry-run: apply would {call} {name} on {} ({total} of {quota} characters); nothing was written{}",
            r.target,
            caveat.map(|c| format!("; {c}")).unwrap_or_default()
        ));
        return;
    }
    let result = writes.put_inline_policy(&principal, &name, &document).await;
    tracing::info!(
        target: "kms_launch_doctor::audit",
        finding_id = %f.id,
        who = %r.target,
        what = %format!("{call} {name}"),
        before = "null",
        after = %document,
        result = %match &result { Ok(()) => "applied".to_owned(), Err(e) => format!("failed: {e}") },
        "remediation write"
    );
    if let Err(e) = result {
        return fail(r, e);
    }
    r.status = RemediationStatus::Applied;
    r.note = Some(format!("{call} {name} on {}", r.target));
    r.verified = verify(cloud, &r.target, &key, &doc, &mut r.note).await;
}

/// Whether the cause's simulation evidence shows every action on the key allowed.
fn already_allowed(f: &Finding, key: &KeyArn) -> bool {
    let k = key.to_string();
    let sims: Vec<&crate::core::facts::Decision> = f
        .causes
        .iter()
        .filter(|c| c.key_arn.as_ref() == Some(key))
        .flat_map(|c| &c.evidence)
        .filter_map(|e| match e {
            crate::core::report::Evidence::Simulation { resource, decision, .. } if *resource == k => Some(decision),
            _ => None,
        })
        .collect();
    !sims.is_empty() && sims.iter().all(|d| **d == Decision::Allowed)
}

/// Simulates the policy's actions again; `Some(true)` only when all are now allowed.
async fn verify<C: Cloud>(
    cloud: &C,
    principal: &str,
    key: &KeyArn,
    doc: &Value,
    note: &mut Option<String>,
) -> Option<bool> {
    let request = SimulationRequest {
        principal_arn: principal.to_owned(),
        actions: policy_actions(doc),
        resources: vec![key.to_string()],
        region: key.region().to_owned(),
    };
    let add = |note: &mut Option<String>, text: String| {
        *note = Some(match note.take() {
            Some(n) => format!("{n}; {text}"),
            None => text,
        });
    };
    match cloud.simulate(&request).await {
        Ok(sims) if !sims.is_empty() && sims.iter().all(|s| s.decision == Decision::Allowed) => Some(true),
        Ok(sims) => {
            let blocked: Vec<String> = sims
                .iter()
                .filter(|s| s.decision != Decision::Allowed)
                .map(|s| format!("{} ({:?})", s.action, s.decision))
                .collect();
            let explicit = sims.iter().any(|s| s.decision == Decision::ExplicitDeny);
            add(
                note,
                format!(
                    "still denied after the fix: {}; {}",
                    blocked.join(", "),
                    if explicit {
                        "an explicit Deny also applies"
                    } else {
                        "a permissions boundary or a service control policy may also block it"
                    }
                ),
            );
            Some(false)
        }
        Err(e) => {
            add(note, format!("could not verify: {e}"));
            None
        }
    }
}

/// Why the restart's own grant would be refused: the function's `kms:CreateGrant` is allowed
/// only on keys that carry the opt-in tag (the template's condition), so a key opted in by
/// `REMEDIATION_ALLOWED_KEYS` alone would fail the start exactly like the launch diagnosed.
async fn untagged_key<W: IamWrites>(writes: &W, keys: &[KeyArn], tag_key: &str) -> Option<String> {
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

/// Starts the instance once every cause was a missing grant and every fix is verified.
async fn restart<C: Cloud, W: IamWrites>(cloud: &C, writes: &W, tag_key: &str, f: &mut Finding) {
    if f.instance_state != EndState::Stopped {
        return;
    }
    let all_grants = !f.causes.is_empty() && f.causes.iter().all(|c| c.code == CauseCode::CallerLacksCreateGrant);
    let fixed: Vec<&Remediation> = f
        .remediations
        .iter()
        .filter(|r| matches!(r.action, RemediationAction::PutUserPolicy | RemediationAction::PutRolePolicy))
        .collect();
    let all_verified = !fixed.is_empty()
        && fixed.iter().all(|r| {
            matches!(r.status, RemediationStatus::Applied | RemediationStatus::Unchanged) && r.verified == Some(true)
        });
    if !(all_grants && all_verified) {
        return;
    }
    let fixed_keys: Vec<KeyArn> =
        fixed.iter().filter_map(|r| r.policy_document.as_ref().and_then(policy_key)).collect();
    // The instance must opt in too (the template allows StartInstances only under the same
    // tag), and still be the stopped instance it was: read it again, now.
    let not_started = |detail: String| Some(Restart { ok: false, detail: format!("not started: {detail}") });
    let refusal = match cloud.describe_instances(&f.region, std::slice::from_ref(&f.instance_id)).await {
        Err(e) => not_started(e.to_string()),
        Ok(found) => match found.iter().find(|i| i.id == f.instance_id) {
            None => not_started(format!("{} no longer exists", f.instance_id)),
            Some(i) if i.state != Some(EndState::Stopped) => {
                not_started(format!("{} is {} now", f.instance_id, i.state_name))
            }
            Some(i) if !opted_in(&i.tags, tag_key) => not_started(format!(
                "instance {} has not opted in (tag it {tag_key}=true to allow restarts)",
                f.instance_id
            )),
            Some(_) => untagged_key(writes, &fixed_keys, tag_key).await.map(|d| Restart { ok: false, detail: d }),
        },
    };
    let outcome = match refusal {
        Some(r) => r,
        None => {
            let outcome = match writes.start_instance(&f.region, &f.instance_id).await {
                Ok(state) => Restart { ok: true, detail: format!("StartInstances: {} is {state}", f.instance_id) },
                Err(e) => Restart { ok: false, detail: e.to_string() },
            };
            tracing::info!(target: "kms_launch_doctor::audit", finding_id = %f.id, who = %f.instance_id, what = "ec2:StartInstances", before = "stopped", after = %outcome.detail, result = if outcome.ok { "applied" } else { "failed" }, "restart");
            outcome
        }
    };
    if let Some(r) = f
        .remediations
        .iter_mut()
        .find(|r| matches!(r.action, RemediationAction::PutUserPolicy | RemediationAction::PutRolePolicy))
    {
        r.restart = Some(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("apply"), Some(Mode::Apply));
        assert_eq!(Mode::parse(" DRY-RUN "), Some(Mode::DryRun));
        assert_eq!(Mode::parse(""), Some(Mode::Off));
        assert_eq!(Mode::parse("yes"), None);
    }

    #[test]
    fn quota_excludes_whitespace() {
        assert_eq!(quota_size("{ \"a\" :\n 1 }"), 7);
    }

    #[test]
    fn policy_key_requires_one_key() {
        let k = "arn:aws:kms:eu-west-1:123456789012:key/abc";
        let doc = crate::core::fixes::identity_policy(
            &KeyArn::parse(k).unwrap(),
            &["kms:CreateGrant".into(), "kms:Decrypt".into()],
        );
        assert_eq!(policy_key(&doc).map(|k| k.to_string()).as_deref(), Some(k));
        assert_eq!(policy_actions(&doc), vec!["kms:CreateGrant", "kms:Decrypt"]);
        let two = serde_json::json!({"Statement": [{"Resource": [k]}, {"Resource": "*"}]});
        assert!(policy_key(&two).is_none());
    }
}

#[cfg(test)]
mod guardrail_tests {
    use super::*;
    use crate::core::report::Remediation;

    const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";

    /// A finding for `principal` whose cause is `code`, with the usual put-*-policy fix.
    fn case(principal: &str, kind: PrincipalKind, code: CauseCode, key: &str) -> (Finding, Remediation) {
        let key = KeyArn::parse(key).unwrap();
        let fix =
            crate::core::fixes::put_identity_policy(principal, PrincipalKind::User, &key, &["kms:CreateGrant".into()])
                .or_else(|| {
                    crate::core::fixes::put_identity_policy(
                        principal,
                        PrincipalKind::Role,
                        &key,
                        &["kms:CreateGrant".into()],
                    )
                })
                .unwrap_or_else(|| {
                    let mut r = crate::core::fixes::enable_key(&key);
                    r.action = RemediationAction::PutUserPolicy;
                    r.target = principal.to_owned();
                    r.policy_name = Some(crate::core::fixes::policy_name(&key));
                    r.policy_document = Some(crate::core::fixes::identity_policy(&key, &["kms:CreateGrant".into()]));
                    r
                });
        let mut f = super::guardrail_tests_support::finding(principal, &key);
        if let Some(l) = f.launch.as_mut() {
            l.caller.principal_kind = kind;
        }
        if let Some(c) = f.causes.first_mut() {
            c.code = code;
        }
        f.remediations = vec![fix.clone()];
        (f, fix)
    }

    fn refusal(principal: &str, kind: PrincipalKind, code: CauseCode, key: &str) -> String {
        let (f, r) = case(principal, kind, code, key);
        static_checks(&f, &r).err().unwrap_or_default()
    }

    #[test]
    fn same_account_user_with_missing_grant_passes() {
        let (f, r) =
            case("arn:aws:iam::123456789012:user/test", PrincipalKind::User, CauseCode::CallerLacksCreateGrant, KEY);
        let (p, k) = static_checks(&f, &r).unwrap();
        assert_eq!(p, Principal::User("test".into()));
        assert_eq!(k.to_string(), KEY);
    }

    #[test]
    fn every_guardrail_refuses_with_a_reason() {
        let user = "arn:aws:iam::123456789012:user/test";
        assert!(refusal("arn:aws:iam::123456789012:root", PrincipalKind::Root, CauseCode::CallerLacksCreateGrant, KEY)
            .contains("root"));
        assert!(refusal(
            "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
            PrincipalKind::ServiceLinkedRole,
            CauseCode::CallerLacksCreateGrant,
            KEY
        )
        .contains("service-linked"));
        assert!(refusal(
            "arn:aws:iam::123456789012:role/AWSReservedSSO_Admin_0123456789abcdef",
            PrincipalKind::SsoRole,
            CauseCode::CallerLacksCreateGrant,
            KEY
        )
        .contains("permission set"));
        assert!(refusal(
            "arn:aws:iam::123456789012:user/broker",
            PrincipalKind::Federated,
            CauseCode::CallerLacksCreateGrant,
            KEY
        )
        .contains("federated"));
        assert!(refusal(
            "arn:aws:iam::210987654321:user/test",
            PrincipalKind::User,
            CauseCode::CallerLacksCreateGrant,
            KEY
        )
        .contains("cross-account"));
        assert!(refusal(
            user,
            PrincipalKind::User,
            CauseCode::CallerLacksCreateGrant,
            "arn:aws:kms:eu-west-1:210987654321:key/x"
        )
        .contains("cross-account"));
        assert!(refusal(user, PrincipalKind::User, CauseCode::CrossAccountKey, KEY).contains("key owner"));
        assert!(refusal(user, PrincipalKind::User, CauseCode::ExplicitDeny, KEY).contains("explicit-deny"));
        assert!(refusal(user, PrincipalKind::User, CauseCode::KeyDisabled, KEY).contains("key-disabled"));
    }

    #[test]
    fn non_iam_fixes_are_never_applied() {
        let key = KeyArn::parse(KEY).unwrap();
        let (f, _) = case("arn:aws:iam::123456789012:user/test", PrincipalKind::User, CauseCode::KeyDisabled, KEY);
        for r in [
            crate::core::fixes::enable_key(&key),
            crate::core::fixes::cancel_key_deletion(&key),
            crate::core::fixes::review_deny(None, "123456789012", &key, true),
        ] {
            assert!(static_checks(&f, &r).is_err());
        }
    }

    #[test]
    fn only_the_caller_a_launch_record_names_is_remediated() {
        let user = "arn:aws:iam::123456789012:user/test";
        let (mut f, r) = case(user, PrincipalKind::User, CauseCode::CallerLacksCreateGrant, KEY);
        if let Some(l) = f.launch.as_mut() {
            l.caller.principal_arn = Some("arn:aws:iam::123456789012:user/someone-else".into());
        }
        assert!(static_checks(&f, &r).unwrap_err().contains("is not the caller the launch record names"));
        f.launch = None;
        assert!(static_checks(&f, &r).unwrap_err().contains("no StartInstances record naming i-0abc"));
    }
}

/// The remediation path in-process, against an in-memory IAM/KMS/EC2: which opt-ins it needs,
/// what it writes, what it proves, and when it restarts.
#[cfg(test)]
mod in_memory {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::core::facts::{Instance, KeyMetadata, Simulation};
    use crate::ports::{CallError, FailureKind, TrailPage, TrailQuery, VolumeInfo};

    const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
    const USER: &str = "arn:aws:iam::123456789012:user/test";
    const TAG: &str = DEFAULT_TAG_KEY;

    #[derive(Default)]
    struct World {
        principal_tags: Vec<(String, String)>,
        /// `None`: ListResourceTags is denied.
        key_tags: Option<Vec<(String, String)>>,
        instance_tags: Vec<(String, String)>,
        /// Whether a simulation allows CreateGrant: before any write, and after one.
        allowed_before: bool,
        allowed_after_write: bool,
        policies: Mutex<BTreeMap<String, String>>,
        started: Mutex<Vec<String>>,
        simulations: Mutex<u32>,
    }

    fn unused(call: &'static str) -> CallError {
        CallError { call, kind: FailureKind::Other, message: "not part of remediation".into() }
    }

    impl Cloud for World {
        async fn describe_instances(&self, region: &str, ids: &[String]) -> Result<Vec<Instance>, CallError> {
            Ok(ids
                .iter()
                .map(|id| Instance {
                    id: id.clone(),
                    account: "123456789012".into(),
                    partition: "aws".into(),
                    region: region.into(),
                    state: Some(EndState::Stopped),
                    state_name: "stopped".into(),
                    state_reason: None,
                    attachments: vec![],
                    tags: self.instance_tags.clone(),
                    image_id: None,
                })
                .collect())
        }
        async fn describe_failed_instances(&self, _: &str) -> Result<Vec<Instance>, CallError> {
            Err(unused("ec2:DescribeInstances"))
        }
        async fn describe_volumes(&self, _: &str, _: &[String]) -> Result<Vec<VolumeInfo>, CallError> {
            Err(unused("ec2:DescribeVolumes"))
        }
        async fn describe_regions(&self) -> Result<Vec<String>, CallError> {
            Err(unused("ec2:DescribeRegions"))
        }
        async fn describe_key(&self, _: &KeyArn) -> Result<KeyMetadata, CallError> {
            Err(unused("kms:DescribeKey"))
        }
        async fn get_key_policy(&self, _: &KeyArn) -> Result<String, CallError> {
            Err(unused("kms:GetKeyPolicy"))
        }
        async fn lookup_events(&self, _: &str, _: &TrailQuery, _: Option<&str>) -> Result<TrailPage, CallError> {
            Err(unused("cloudtrail:LookupEvents"))
        }
        async fn permissions_boundary(&self, _: &str) -> Result<Option<String>, CallError> {
            Err(unused("iam:GetUser"))
        }
        async fn key_arn(&self, _: &str, _: &str) -> Result<KeyArn, CallError> {
            Err(unused("kms:DescribeKey"))
        }
        async fn launch_template_volumes(
            &self,
            _: &str,
            _: &crate::core::cloudtrail::LaunchTemplateRef,
        ) -> Result<crate::ports::VolumeKeys, CallError> {
            Err(unused("ec2:DescribeLaunchTemplateVersions"))
        }
        async fn image_volumes(&self, _: &str, _: &str) -> Result<crate::ports::VolumeKeys, CallError> {
            Err(unused("ec2:DescribeImages"))
        }
        async fn ebs_default_key(&self, _: &str) -> Result<Option<String>, CallError> {
            Err(unused("ec2:GetEbsEncryptionByDefault"))
        }
        async fn simulate(&self, request: &SimulationRequest) -> Result<Vec<Simulation>, CallError> {
            *self.simulations.lock().unwrap() += 1;
            let written = !self.policies.lock().unwrap().is_empty();
            let allowed = if written { self.allowed_after_write } else { self.allowed_before };
            Ok(request
                .actions
                .iter()
                .map(|a| Simulation {
                    principal_arn: request.principal_arn.clone(),
                    action: a.clone(),
                    resource: KEY.into(),
                    decision: if allowed { Decision::Allowed } else { Decision::ImplicitDeny },
                    matched_statements: vec![],
                    allowed_by_boundary: None,
                    allowed_by_organizations: None,
                })
                .collect())
        }
    }

    impl IamWrites for World {
        async fn principal_tags(&self, _: &Principal) -> Result<Vec<(String, String)>, CallError> {
            Ok(self.principal_tags.clone())
        }
        async fn key_tags(&self, _: &KeyArn) -> Result<Vec<(String, String)>, CallError> {
            self.key_tags.clone().ok_or(CallError {
                call: "kms:ListResourceTags",
                kind: FailureKind::Denied,
                message: "AccessDeniedException".into(),
            })
        }
        async fn inline_policy_names(&self, _: &Principal) -> Result<Vec<String>, CallError> {
            Ok(self.policies.lock().unwrap().keys().cloned().collect())
        }
        async fn inline_policy(&self, _: &Principal, name: &str) -> Result<Option<String>, CallError> {
            Ok(self.policies.lock().unwrap().get(name).cloned())
        }
        async fn put_inline_policy(&self, _: &Principal, name: &str, document: &str) -> Result<(), CallError> {
            self.policies.lock().unwrap().insert(name.into(), document.into());
            Ok(())
        }
        async fn start_instance(&self, _: &str, id: &str) -> Result<String, CallError> {
            self.started.lock().unwrap().push(id.into());
            Ok("pending".into())
        }
    }

    fn tag(v: &str) -> Vec<(String, String)> {
        vec![(TAG.to_owned(), v.to_owned())]
    }

    /// Both sides opted in; the write makes the simulation allow CreateGrant.
    fn opted_in_world() -> World {
        World {
            principal_tags: tag("true"),
            key_tags: Some(tag("true")),
            allowed_after_write: true,
            ..World::default()
        }
    }

    fn finding() -> Finding {
        let key = KeyArn::parse(KEY).unwrap();
        let mut f = super::guardrail_tests_support::finding(USER, &key);
        f.remediations =
            vec![crate::core::fixes::put_identity_policy(USER, PrincipalKind::User, &key, &["kms:CreateGrant".into()])
                .unwrap()];
        f
    }

    async fn run(world: &World, g: &Guardrails) -> Remediation {
        let mut f = finding();
        remediate(world, world, g, &mut f).await;
        f.remediations.remove(0)
    }

    fn apply() -> Guardrails {
        Guardrails { mode: Mode::Apply, ..Guardrails::default() }
    }

    #[tokio::test]
    async fn both_sides_opted_in_is_applied_and_verified_after_the_write() {
        let w = opted_in_world();
        let r = run(&w, &apply()).await;
        assert_eq!((r.status, r.verified), (RemediationStatus::Applied, Some(true)), "{r:?}");
        let written =
            w.policies.lock().unwrap().get(&crate::core::fixes::policy_name(&KeyArn::parse(KEY).unwrap())).cloned();
        assert_eq!(written.map(|d| serde_json::from_str::<Value>(&d).unwrap()), r.policy_document);
    }

    #[tokio::test]
    async fn a_key_that_did_not_opt_in_is_refused_and_nothing_written() {
        for key_tags in [vec![], tag("True"), tag("yes"), vec![("other".to_owned(), "true".to_owned())]] {
            let w = World { key_tags: Some(key_tags.clone()), ..opted_in_world() };
            let r = run(&w, &apply()).await;
            assert_eq!(r.status, RemediationStatus::Refused, "{key_tags:?}");
            assert!(r.note.as_deref().unwrap().contains("has not opted in: tag it kms-launch-doctor:auto-remediate=true or list it in REMEDIATION_ALLOWED_KEYS"), "{r:?}");
            assert!(w.policies.lock().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn tag_values_compare_as_iam_does() {
        let w = World { principal_tags: tag("True"), ..opted_in_world() };
        let r = run(&w, &apply()).await;
        assert_eq!(r.status, RemediationStatus::Refused);
        assert!(r.note.as_deref().unwrap().contains("has not opted in"), "{r:?}");
        assert!(w.policies.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn allowed_keys_opt_a_key_in_without_a_tag() {
        let w = World { key_tags: Some(vec![]), ..opted_in_world() };
        let g = Guardrails { allowed_keys: vec!["arn:aws:kms:eu-west-1:123456789012:key/*".into()], ..apply() };
        assert_eq!(run(&w, &g).await.status, RemediationStatus::Applied);
        let w = World { key_tags: Some(vec![]), ..opted_in_world() };
        let g = Guardrails { allowed_keys: vec!["arn:aws:kms:*:*:key/other".into()], ..apply() };
        assert_eq!(run(&w, &g).await.status, RemediationStatus::Refused);
    }

    #[tokio::test]
    async fn unreadable_key_tags_fail_apply_and_are_a_caveat_in_dry_run() {
        let w = World { key_tags: None, ..opted_in_world() };
        let r = run(&w, &apply()).await;
        assert_eq!(r.status, RemediationStatus::Failed, "{r:?}");
        assert!(w.policies.lock().unwrap().is_empty());
        let r = run(&w, &Guardrails { mode: Mode::DryRun, ..Guardrails::default() }).await;
        assert_eq!(r.status, RemediationStatus::Proposed);
        assert!(r.note.as_deref().unwrap().contains("the key's opt-in tag could not be read"), "{r:?}");
    }

    #[tokio::test]
    async fn a_fix_that_does_not_verify_after_the_write_is_not_verified_and_not_restarted() {
        let w = World { allowed_after_write: false, instance_tags: tag("true"), ..opted_in_world() };
        let g = Guardrails { restart: true, ..apply() };
        let r = run(&w, &g).await;
        assert_eq!((r.status, r.verified), (RemediationStatus::Applied, Some(false)), "{r:?}");
        assert!(r.restart.is_none());
        assert!(w.started.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn already_allowed_is_verified_by_a_new_simulation_not_the_diagnosis() {
        // The diagnosis's evidence says allowed; the simulation made now says denied.
        let w = World { allowed_before: false, ..opted_in_world() };
        let mut f = finding();
        f.causes[0].evidence.push(crate::core::report::Evidence::Simulation {
            principal_arn: USER.into(),
            action: "kms:CreateGrant".into(),
            resource: KEY.into(),
            decision: Decision::Allowed,
            matched_statements: vec![],
            allowed_by_boundary: None,
            allowed_by_organizations: None,
        });
        remediate(&w, &w, &apply(), &mut f).await;
        let r = &f.remediations[0];
        assert_eq!((r.status, r.verified), (RemediationStatus::Unchanged, Some(false)), "{r:?}");
        assert_eq!(*w.simulations.lock().unwrap(), 1);
        assert!(w.policies.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn restart_only_an_instance_that_opted_in() {
        let g = Guardrails { restart: true, ..apply() };
        let w = opted_in_world();
        let r = run(&w, &g).await;
        let restart = r.restart.unwrap();
        assert!(!restart.ok && restart.detail.contains("instance i-0abc has not opted in"), "{restart:?}");
        assert!(w.started.lock().unwrap().is_empty());

        let w = World { instance_tags: tag("true"), ..opted_in_world() };
        let r = run(&w, &g).await;
        assert!(r.restart.unwrap().ok);
        assert_eq!(*w.started.lock().unwrap(), vec!["i-0abc".to_owned()]);

        // A key opted in by pattern only: the fix is written, but the restart's own grant
        // would be refused (the template allows it on tagged keys), so no start is tried.
        let w = World { instance_tags: tag("true"), key_tags: Some(vec![]), ..opted_in_world() };
        let g = Guardrails { allowed_keys: vec![KEY.into()], ..g };
        let r = run(&w, &g).await;
        assert_eq!(r.status, RemediationStatus::Applied);
        let restart = r.restart.unwrap();
        assert!(
            !restart.ok && restart.detail.contains("carries no kms-launch-doctor:auto-remediate=true tag"),
            "{restart:?}"
        );
        assert!(w.started.lock().unwrap().is_empty());
    }
}

#[cfg(test)]
mod guardrail_tests_support {
    use super::*;

    /// A stopped instance's finding whose cause is a missing grant on `key`, launched by `user`.
    pub fn finding(user: &str, key: &KeyArn) -> Finding {
        Finding {
            schema: crate::core::report::FINDING_SCHEMA,
            id: "kld-test".into(),
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            instance_id: "i-0abc".into(),
            instance_name: None,
            severity: "MEDIUM",
            instance_state: EndState::Stopped,
            state_reason: crate::core::facts::StateReason {
                code: "Client.InternalError".into(),
                message: String::new(),
            },
            observed_at: "2026-11-28T10:00:00Z".into(),
            launch: Some(crate::core::report::Launch {
                api: crate::core::cloudtrail::LaunchApi::StartInstances,
                event_id: "e".into(),
                event_time: "2026-11-28T10:00:00Z".into(),
                caller: crate::core::cloudtrail::Caller {
                    identity_type: "IAMUser".into(),
                    arn: Some(user.into()),
                    principal_arn: Some(user.into()),
                    principal_kind: PrincipalKind::User,
                    account: Some("123456789012".into()),
                    invoked_by: None,
                },
            }),
            volumes: vec![],
            keys: vec![],
            causes: vec![crate::core::report::Cause {
                code: CauseCode::CallerLacksCreateGrant,
                key_arn: Some(key.clone()),
                summary: String::new(),
                evidence: vec![],
            }],
            remediations: vec![],
            missing_evidence: vec![],
            cloudtrail_window: None,
            delivered: Default::default(),
            decided_at: None,
            digest: String::new(),
        }
    }
}
