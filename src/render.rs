//! `--format text`: the report for a person at a terminal. What failed, why, and the fix.

use std::fmt::Write;

use crate::report::{Finding, Report};

pub fn text(report: &Report) -> String {
    let mut out = String::new();
    if report.findings.is_empty() && report.skipped.is_empty() {
        out.push_str("Nothing to diagnose.\n");
    }
    for (i, f) in report.findings.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&finding_text(f, false));
    }
    if !report.skipped.is_empty() {
        if !report.findings.is_empty() {
            out.push('\n');
        }
        out.push_str("Skipped:\n");
        for s in &report.skipped {
            let _ = writeln!(out, "  {}: {}", s.instance_id.as_deref().unwrap_or("(event)"), s.reason);
        }
    }
    out
}

/// One finding for a person. `with_policies` adds each policy document in full (for e-mail,
/// where a reader may not paste commands).
pub fn finding_text(f: &Finding, with_policies: bool) -> String {
    let mut out = String::new();
    finding(&mut out, f, with_policies);
    out
}

fn finding(out: &mut String, f: &Finding, with_policies: bool) {
    let state = match f.instance_state {
        crate::facts::EndState::Stopped => "stopped",
        crate::facts::EndState::Terminated => "terminated",
    };
    let _ = writeln!(out, "{} in {} ({}) failed to launch and is {state}.", f.instance_id, f.region, f.account);
    let _ = writeln!(out, "  State reason: {} ({})", f.state_reason.code, f.state_reason.message);
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
        None => out.push_str("  Launched by:  unknown (no launch record found in CloudTrail)\n"),
    }
    for v in &f.volumes {
        let enc = match (v.encrypted, &v.kms_key_arn) {
            (Some(true), Some(k)) => format!("encrypted with {k}"),
            (Some(true), None) => "encrypted".to_owned(),
            (Some(false), _) => "not encrypted".to_owned(),
            (None, _) => "encryption unknown".to_owned(),
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
            k.arn,
            k.state.as_deref().unwrap_or("unknown"),
            k.manager.as_deref().unwrap_or("unknown"),
        );
    }
    out.push('\n');
    for c in &f.causes {
        let _ = writeln!(out, "  Cause [{}]: {}", c.code.as_str(), c.summary);
    }
    if !f.remediations.is_empty() {
        out.push_str("\n  Fix:\n");
        for r in &f.remediations {
            let _ = writeln!(out, "  - {} on {}", r.action.as_str().to_owned(), r.target);
            if let (true, Some(doc)) = (with_policies, &r.policy_document) {
                let pretty = serde_json::to_string_pretty(doc).unwrap_or_default();
                for line in pretty.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
            for c in &r.commands {
                let _ = writeln!(out, "    $ {c}");
            }
        }
    }
    if !f.missing_evidence.is_empty() {
        out.push_str("\n  Could not check:\n");
        for m in &f.missing_evidence {
            let _ = writeln!(out, "  - {} on {}: {}", m.call, m.target, m.reason);
        }
    }
    let _ = writeln!(out, "\n  Finding {} (observed {})", f.id, f.observed_at);
}
