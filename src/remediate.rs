//! Opt-in auto-remediation: attach the scoped CreateGrant policy, and nothing else.
//!
//! Off by default. In `dry-run` every proposed fix is checked against the guardrails and
//! reported as `apply` would treat it, and nothing is written. In `apply` the only write is
//! PutUserPolicy/PutRolePolicy of the inline policy `kms-launch-doctor-<key id>` whose document
//! is exactly the finding's scoped statement, for a `caller-lacks-create-grant` cause, on a
//! same-account IAM user or role that opted in. It never overwrites a policy someone edited,
//! never writes past IAM's size quota, and proves the result with the policy simulator.

use serde_json::Value;

use crate::arn::{Arn, IamEntity, KeyArn};
use crate::cloud::{Cloud, IamWrites, Principal, SimulationRequest};
use crate::cloudtrail::PrincipalKind;
use crate::facts::{Decision, EndState};
use crate::policy::glob;
use crate::report::{CauseCode, Finding, Remediation, RemediationAction, RemediationStatus, Restart};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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
    /// `REMEDIATION_ALLOWED_KEYS`: when set, only keys matching one of these patterns.
    pub allowed_keys: Option<Vec<String>>,
    /// `RESTART_AFTER_REMEDIATION`: start the stopped instance after a verified fix.
    pub restart: bool,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            tag_key: DEFAULT_TAG_KEY.to_owned(),
            allowed_principals: Vec::new(),
            allowed_keys: None,
            restart: false,
        }
    }
}

/// Comma-separated patterns; empty entries ignored.
pub fn patterns(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
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
fn static_checks(g: &Guardrails, f: &Finding, r: &Remediation) -> Result<(Principal, KeyArn), String> {
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
    let caller_kind = f.launch.as_ref().map(|l| l.caller.principal_kind);
    if caller_kind == Some(PrincipalKind::Federated) {
        return Err("the caller is a federated user: its session policy also limits it, so a fix on the federating user may not help".to_owned());
    }
    let arn = Arn::parse(&r.target).map_err(|e| e.to_string())?;
    let principal = match IamEntity::of(&arn) {
        IamEntity::User { name, .. } => Principal::User(name),
        IamEntity::Role { path, name } => {
            if path.starts_with("/aws-service-role/") {
                return Err("service-linked roles cannot be edited".to_owned());
            }
            if name.starts_with("AWSReservedSSO_") {
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
    if let Some(allowed) = &g.allowed_keys {
        let k = key.to_string();
        if !allowed.iter().any(|p| glob(p, &k, true)) {
            return Err(format!("key {k} is not in REMEDIATION_ALLOWED_KEYS"));
        }
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
        restart(writes, f).await;
    }
}

async fn one<C: Cloud, W: IamWrites>(cloud: &C, writes: &W, g: &Guardrails, f: &Finding, r: &mut Remediation) {
    let refuse = |r: &mut Remediation, note: String| {
        r.status = RemediationStatus::Refused;
        r.note = Some(note);
    };
    let fail = |r: &mut Remediation, e: crate::cloud::CallError| {
        r.status = RemediationStatus::Failed;
        r.note = Some(e.to_string());
    };
    let (principal, key) = match static_checks(g, f, r) {
        Ok(v) => v,
        Err(note) => return refuse(r, note),
    };
    let (Some(name), Some(doc)) = (r.policy_name.clone(), r.policy_document.clone()) else {
        return refuse(r, "no policy name or document".to_owned());
    };

    // Opt-in: an allowed-principals pattern, else the tag.
    let by_pattern = g.allowed_principals.iter().any(|p| glob(p, &r.target, true));
    if !by_pattern {
        match writes.principal_tags(&principal).await {
            Ok(tags) => {
                let opted_in = tags.iter().any(|(k, v)| *k == g.tag_key && v.eq_ignore_ascii_case("true"));
                if !opted_in {
                    return refuse(
                        r,
                        format!(
                            "{} has not opted in: tag it {}=true or list it in REMEDIATION_ALLOWED_PRINCIPALS",
                            r.target, g.tag_key
                        ),
                    );
                }
            }
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
    if already_allowed(f, &key) {
        r.status = RemediationStatus::Unchanged;
        r.verified = Some(true);
        r.note = Some(format!(
            "IAM already allows {} on the key through another policy; nothing written",
            policy_actions(&doc).join(", ")
        ));
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
            "dry-run: apply would {call} {name} on {} ({total} of {quota} characters); nothing was written",
            r.target
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
    let sims: Vec<&crate::facts::Decision> = f
        .causes
        .iter()
        .filter(|c| c.key_arn.as_ref() == Some(key))
        .flat_map(|c| &c.evidence)
        .filter_map(|e| match e {
            crate::report::Evidence::Simulation { resource, decision, .. } if *resource == k => Some(decision),
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

/// Starts the instance once every cause was a missing grant and every fix is verified.
async fn restart<W: IamWrites>(writes: &W, f: &mut Finding) {
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
    let outcome = match writes.start_instance(&f.region, &f.instance_id).await {
        Ok(state) => Restart { ok: true, detail: format!("StartInstances: {} is {state}", f.instance_id) },
        Err(e) => Restart { ok: false, detail: e.to_string() },
    };
    tracing::info!(target: "kms_launch_doctor::audit", finding_id = %f.id, who = %f.instance_id, what = "ec2:StartInstances", before = "stopped", after = %outcome.detail, result = if outcome.ok { "applied" } else { "failed" }, "restart");
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
        let doc = crate::remedy::identity_policy(
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
    use crate::report::Remediation;

    const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";

    /// A finding for `principal` whose cause is `code`, with the usual put-*-policy fix.
    fn case(principal: &str, kind: PrincipalKind, code: CauseCode, key: &str) -> (Finding, Remediation) {
        let key = KeyArn::parse(key).unwrap();
        let fix = crate::remedy::put_identity_policy(principal, PrincipalKind::User, &key, &["kms:CreateGrant".into()])
            .or_else(|| {
                crate::remedy::put_identity_policy(principal, PrincipalKind::Role, &key, &["kms:CreateGrant".into()])
            })
            .unwrap_or_else(|| {
                let mut r = crate::remedy::enable_key(&key);
                r.action = RemediationAction::PutUserPolicy;
                r.target = principal.to_owned();
                r.policy_name = Some(crate::remedy::policy_name(&key));
                r.policy_document = Some(crate::remedy::identity_policy(&key, &["kms:CreateGrant".into()]));
                r
            });
        let caller = crate::cloudtrail::Caller {
            identity_type: "IAMUser".into(),
            arn: Some(principal.into()),
            principal_arn: Some(principal.into()),
            principal_kind: kind,
            account: Some("123456789012".into()),
            invoked_by: None,
        };
        let f = Finding {
            schema: crate::report::FINDING_SCHEMA,
            id: "kld-test".into(),
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            instance_id: "i-0abc".into(),
            instance_state: EndState::Stopped,
            state_reason: crate::facts::StateReason { code: "Client.InternalError".into(), message: String::new() },
            observed_at: "2026-11-28T10:00:00Z".into(),
            launch: Some(crate::report::Launch {
                api: crate::cloudtrail::LaunchApi::StartInstances,
                event_id: "e".into(),
                event_time: "2026-11-28T10:00:00Z".into(),
                caller,
            }),
            volumes: vec![],
            keys: vec![],
            causes: vec![crate::report::Cause { code, key_arn: Some(key), summary: String::new(), evidence: vec![] }],
            remediations: vec![fix.clone()],
            missing_evidence: vec![],
            delivered: Default::default(),
        };
        (f, fix)
    }

    fn refusal(principal: &str, kind: PrincipalKind, code: CauseCode, key: &str) -> String {
        let (f, r) = case(principal, kind, code, key);
        static_checks(&Guardrails { mode: Mode::Apply, ..Guardrails::default() }, &f, &r).err().unwrap_or_default()
    }

    #[test]
    fn same_account_user_with_missing_grant_passes() {
        let (f, r) =
            case("arn:aws:iam::123456789012:user/test", PrincipalKind::User, CauseCode::CallerLacksCreateGrant, KEY);
        let (p, k) = static_checks(&Guardrails::default(), &f, &r).unwrap();
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
            crate::remedy::enable_key(&key),
            crate::remedy::cancel_key_deletion(&key),
            crate::remedy::review_deny(None, "123456789012", &key, true),
        ] {
            assert!(static_checks(&Guardrails::default(), &f, &r).is_err());
        }
    }

    #[test]
    fn allowed_keys_limit_what_is_written() {
        let (f, r) =
            case("arn:aws:iam::123456789012:user/test", PrincipalKind::User, CauseCode::CallerLacksCreateGrant, KEY);
        let only_other =
            Guardrails { allowed_keys: Some(vec!["arn:aws:kms:*:*:key/other".into()]), ..Guardrails::default() };
        assert!(static_checks(&only_other, &f, &r).unwrap_err().contains("REMEDIATION_ALLOWED_KEYS"));
        let this_one = Guardrails {
            allowed_keys: Some(vec!["arn:aws:kms:eu-west-1:123456789012:key/*".into()]),
            ..Guardrails::default()
        };
        assert!(static_checks(&this_one, &f, &r).is_ok());
    }
}
