//! The text formats, for a person: what failed, why, what was done about it, and what to do
//! next. Pure functions of the report, so that e-mail (the SNS body), the terminal and the tests
//! read the same words.
//!
//! Only what the report establishes is said as a fact: an unknown caller is "unknown" with the
//! reason and the CloudTrail window searched, a fix is "applied" only when the write happened,
//! and "fixed" only when IAM's policy simulator allows the action now.

mod next_steps;
mod scan;
#[cfg(test)]
mod tests;

pub use next_steps::*;
pub use scan::*;

use crate::core::arn::{Arn, KeyArn};
use crate::core::report::{Finding, KeyReport, Remediation, RemediationStatus, Report};
use crate::core::text::clean;
use std::fmt::Write;

/// `diagnose` and `replay` in `--format text`: each finding in full. Skipped instances and
/// events are the caller's to print (on stderr).
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    if report.findings.is_empty() {
        out.push_str("No failed launch to diagnose.\n");
    }
    for (i, f) in report.findings.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&finding_text(f, false));
    }
    out
}

/// One finding for a person. `with_policies` adds each policy document in full (for e-mail,
/// where a reader may not paste commands).
pub fn finding_text(f: &Finding, with_policies: bool) -> String {
    let mut out = String::new();
    head(&mut out, f);
    out.push('\n');
    for c in &f.causes {
        let _ = writeln!(out, "  Cause [{}]: {}", c.code.as_str(), c.summary);
    }
    let fixed = fixed_now(f);
    if let Some(fixed) = &fixed {
        let _ = writeln!(out, "\n  {}", fixed.sentence());
    }
    if !f.remediations.is_empty() {
        out.push_str("\n  Fix:\n");
        for r in &f.remediations {
            let _ = writeln!(out, "  - {} on {}: {}", r.action.as_str(), r.target, status(r));
            if let (true, Some(doc)) = (with_policies, &r.policy_document) {
                let pretty = serde_json::to_string_pretty(doc).unwrap_or_default();
                for line in pretty.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
            for c in &r.commands {
                let _ = writeln!(out, "    $ {c}");
            }
            if let Some(restart) = &r.restart {
                let _ = writeln!(out, "    Restart: {}", restart_text(restart));
            }
        }
    }
    if let Some(step) = fixed.as_ref().and_then(|_| next_step(f)) {
        let _ = writeln!(out, "\n  {step}");
    }
    missing(&mut out, f);
    let _ = writeln!(out, "\n  Finding {} (observed {}, severity {})", f.id, f.observed_at, f.severity);
    out
}

/// The header lines: the instance, the state reason, the caller, volumes and keys.
fn head(out: &mut String, f: &Finding) {
    let state = f.instance_state.as_str();
    let _ = writeln!(out, "{} in {} ({}) failed to launch and is {state}.", instance_label(f), f.region, f.account);
    let _ = writeln!(out, "  State reason: {} ({})", clean(&f.state_reason.code), clean(&f.state_reason.message));
    match &f.launch {
        Some(l) => {
            let _ = writeln!(
                out,
                "  Launched by:  {} via {} at {} (CloudTrail event {})",
                l.caller.principal_arn.as_deref().or(l.caller.arn.as_deref()).unwrap_or(&l.caller.identity_type),
                l.api.as_str(),
                l.event_time,
                l.event_id
            );
        }
        None => {
            let _ = writeln!(out, "  Launched by:  unknown: {}", unknown_caller(f));
        }
    }
    for v in &f.volumes {
        let enc = match (v.encrypted, &v.kms_key_arn) {
            (Some(true), Some(k)) => format!("encrypted with {}", key_label(f, k)),
            (Some(true), None) => "encrypted".to_owned(),
            (Some(false), _) => "not encrypted".to_owned(),
            (None, _) => "encryption unknown (DescribeVolumes gave no answer)".to_owned(),
        };
        let _ = writeln!(out, "  Volume:       {} {} {enc}", v.volume_id, v.device);
    }
    for k in &f.keys {
        let delegation = match k.iam_delegation {
            Some(true) => "delegates to IAM",
            Some(false) => "does not delegate to IAM",
            None => "IAM delegation unknown",
        };
        let _ = writeln!(
            out,
            "  Key:          {} state {}, {} managed, policy {delegation}",
            key_label(f, &k.arn),
            k.state.as_deref().unwrap_or("unknown"),
            k.manager.as_deref().unwrap_or("unknown"),
        );
    }
}

fn missing(out: &mut String, f: &Finding) {
    if !f.missing_evidence.is_empty() {
        out.push_str("\n  Could not check:\n");
        for m in &f.missing_evidence {
            let _ = writeln!(out, "  - {} on {}: {}", m.call, m.target, clean(&m.reason));
        }
    }
}

/// The instance id, with its `Name` tag when it has one.
pub fn instance_label(f: &Finding) -> String {
    match f.instance_name.as_deref().filter(|n| !n.trim().is_empty()) {
        Some(name) => format!("{} (Name: {})", f.instance_id, clean(name)),
        None => f.instance_id.clone(),
    }
}

/// The key's ARN, with its aliases when it has any.
pub fn key_label(f: &Finding, key: &KeyArn) -> String {
    let aliases = key_report(f, key).map(|k| k.aliases.as_slice()).unwrap_or_default();
    if aliases.is_empty() {
        key.to_string()
    } else {
        format!("{key} ({})", clean(&aliases.join(", ")))
    }
}

fn key_report<'a>(f: &'a Finding, key: &KeyArn) -> Option<&'a KeyReport> {
    f.keys.iter().find(|k| k.arn == *key)
}

/// Why the caller is unknown, and where CloudTrail was searched.
fn unknown_caller(f: &Finding) -> String {
    if let Some(m) = f.missing_evidence.iter().find(|m| m.call == "cloudtrail:LookupEvents") {
        return format!("CloudTrail could not be searched ({})", clean(&m.reason));
    }
    let api = f.instance_state.launch_api().as_str();
    match &f.cloudtrail_window {
        Some(w) => format!(
            "no {api} record naming {} in CloudTrail from {} to {} (records arrive about 5 minutes after the call)",
            f.instance_id, w.start, w.end
        ),
        None => format!("no {api} record naming {} was found in CloudTrail", f.instance_id),
    }
}

/// The resource part of an ARN (`user/test`), or the text itself when it is not one.
pub fn short_arn(s: &str) -> String {
    match Arn::parse(s) {
        Ok(a) => a.resource().to_owned(),
        Err(_) => s.to_owned(),
    }
}

/// What happened to a remediation, in a few words: `applied, verified`, `unchanged`,
/// `refused: <why>`, `failed: <call and error>`, `proposed, not applied`.
pub fn status(r: &Remediation) -> String {
    let note = r.note.as_deref().map(|n| clean(&n.replace(&r.target, &short_arn(&r.target))));
    match r.status {
        RemediationStatus::Proposed => match note {
            Some(n) => format!("proposed: {n}"),
            None => "proposed, not applied".to_owned(),
        },
        RemediationStatus::Applied => match (r.verified, note) {
            (Some(true), _) => "applied, verified".to_owned(),
            (Some(false), Some(n)) => format!("applied, not verified: {n}"),
            (None, Some(n)) => format!("applied, could not verify: {n}"),
            (_, None) => "applied, not verified".to_owned(),
        },
        RemediationStatus::Unchanged => match (r.verified, note) {
            (Some(true), Some(n)) => format!("unchanged, verified: {n}"),
            (Some(true), None) => "unchanged, verified".to_owned(),
            (_, Some(n)) => format!("unchanged, not verified: {n}"),
            (_, None) => "unchanged".to_owned(),
        },
        RemediationStatus::Refused => format!("refused: {}", note.unwrap_or_else(|| "no reason recorded".to_owned())),
        RemediationStatus::Failed => format!("failed: {}", note.unwrap_or_else(|| "no reason recorded".to_owned())),
    }
}

fn restart_text(r: &crate::core::report::Restart) -> String {
    if r.ok {
        format!("started ({})", clean(&r.detail))
    } else {
        clean(&r.detail)
    }
}
