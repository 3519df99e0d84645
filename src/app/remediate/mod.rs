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

mod checks;
#[cfg(test)]
mod guardrail_tests;
#[cfg(test)]
mod in_memory;
#[cfg(test)]
mod tests;
mod verify;

use checks::*;
use verify::*;

use crate::core::policy::glob;
use crate::core::report::{Finding, Remediation, RemediationStatus};
use crate::ports::{Cloud, IamWrites, Principal};
use serde_json::Value;

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
