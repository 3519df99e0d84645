//! A scan for a person: by region or by account, the fixes as a script to review, and the summary line.

use super::*;
use crate::core::report::{Finding, RemediationStatus, Report};
use crate::core::text::clean;
use std::fmt::Write;

/// At most `max` instance ids, then how many more.
pub(super) fn instance_list(fs: &[&Finding], max: usize) -> String {
    let mut ids: Vec<String> = fs.iter().take(max).map(|f| instance_label(f)).collect();
    if fs.len() > max {
        ids.push(format!("and {} more", fs.len() - max));
    }
    ids.join(", ")
}

/// `scan --format text`: each finding without its commands, then each distinct command once
/// ("Fixes"), then the summary line.
/// `scan_text` of a scan of several accounts: each account's failures and fixes under its own
/// heading (a fix runs with that account's credentials), then the summary.
pub fn scan_text_by_account(report: &Report) -> String {
    let accounts: std::collections::BTreeSet<&str> = report.findings.iter().map(|f| f.account.as_str()).collect();
    if accounts.is_empty() {
        return scan_text(report);
    }
    let mut out = String::new();
    for account in accounts {
        let part = Report {
            findings: report.findings.iter().filter(|f| f.account == account).cloned().collect(),
            ..Report::default()
        };
        let _ = writeln!(out, "== Account {account} ==");
        out.push_str(&scan_text(&part));
        out.push('\n');
    }
    if let Some(summary) = summary_line(report) {
        out.push_str(&summary);
        out.push('\n');
    }
    out
}

pub fn scan_text(report: &Report) -> String {
    let fixes = distinct_fixes(report);
    let number = |c: &str| fixes.iter().position(|x| x.command == c).map(|i| i + 1);
    let mut out = String::new();
    if report.findings.is_empty() {
        out.push_str("No failed launches found.\n");
    }
    for (i, f) in report.findings.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        head(&mut out, f);
        for c in &f.causes {
            let _ = writeln!(out, "  Cause [{}]: {}", c.code.as_str(), c.summary);
        }
        let fixed = fixed_now(f);
        if let Some(fixed) = &fixed {
            let _ = writeln!(out, "  {}", fixed.sentence());
        }
        for r in &f.remediations {
            let refs: Vec<String> = r.commands.iter().filter_map(|c| number(c)).map(|n| format!("[{n}]")).collect();
            let refs = if refs.is_empty() { String::new() } else { format!(" (see Fixes {})", refs.join(" ")) };
            let _ = writeln!(out, "  Fix: {} on {}: {}{refs}", r.action.as_str(), short_arn(&r.target), status(r));
        }
        if let Some(step) = fixed.as_ref().and_then(|_| next_step(f)) {
            let _ = writeln!(out, "  {step}");
        }
        if !f.missing_evidence.is_empty() {
            let calls: Vec<&str> = f.missing_evidence.iter().map(|m| m.call.as_str()).collect();
            let _ = writeln!(out, "  Could not check: {}", dedup(calls).join(", "));
        }
    }
    if !fixes.is_empty() {
        let _ = writeln!(out, "\nFixes ({} distinct, for {} failed launches):", fixes.len(), report.findings.len());
        for (i, fc) in fixes.iter().enumerate() {
            let _ = writeln!(
                out,
                "\n  [{}] {} on {}: unblocks {}",
                i + 1,
                fc.remediation.action.as_str(),
                short_arn(&fc.remediation.target),
                instance_list(&fc.instances, 5)
            );
            let _ = writeln!(out, "    $ {}", fc.command);
        }
    }
    if let Some(line) = summary_line(report) {
        let _ = writeln!(out, "\n{line}");
    }
    out
}

pub(super) fn dedup(items: Vec<&str>) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// `scan --format script`: the distinct fix commands as a shell script, each with a comment
/// saying what it does and which instances it unblocks, for a person to review before running.
pub fn script(report: &Report) -> String {
    let fixes = distinct_fixes(report);
    let mut out = String::from("#!/bin/sh\n");
    out.push_str("# kms-launch-doctor scan: the fixes for the failed launches below.\n");
    out.push_str("# Review every command before running it: each changes a policy in your account.\n");
    if let Some(line) = summary_line(report) {
        let _ = writeln!(out, "# {line}");
    }
    out.push_str("set -eu\n");
    if fixes.is_empty() {
        out.push_str("\n# Nothing to run: no fix command was proposed.\n");
    }
    for (i, fc) in fixes.iter().enumerate() {
        let causes = dedup(fc.instances.iter().flat_map(|f| f.causes.iter().map(|c| c.code.as_str())).collect());
        let _ = writeln!(
            out,
            "\n# [{}] {} on {} ({})",
            i + 1,
            fc.remediation.action.as_str(),
            clean(&fc.remediation.target),
            causes.join(", ")
        );
        let _ = writeln!(out, "# unblocks {}", instance_list(&fc.instances, 10));
        if fc.remediation.status != RemediationStatus::Proposed {
            let _ = writeln!(out, "# remediation said: {}", status(fc.remediation));
        }
        let _ = writeln!(out, "{}", fc.command);
    }
    out
}

/// The line that ends every scan: failures per cause, what was searched, what was skipped.
/// `None` for a report that is not a scan's.
pub fn summary_line(report: &Report) -> Option<String> {
    let s = report.summary.as_ref()?;
    let n = report.findings.len();
    let found = if n == 0 {
        "No failed launches".to_owned()
    } else {
        let causes: Vec<String> = s.findings_by_cause.iter().map(|(c, k)| format!("{c} {k}")).collect();
        format!("{n} failed launch{} ({})", if n == 1 { "" } else { "es" }, causes.join(", "))
    };
    let regions = match s.regions.len() {
        0 => "no region".to_owned(),
        1..=4 => s.regions.join(", "),
        k => format!("{k} regions"),
    };
    let accounts = match s.accounts.len() {
        0 => String::new(),
        1 => format!(", account {}", s.accounts.join("")),
        _ => format!(", accounts {}", s.accounts.join(", ")),
    };
    let skipped = if report.skipped.is_empty() {
        "nothing skipped".to_owned()
    } else {
        let what: Vec<String> = report
            .skipped
            .iter()
            .map(|k| k.region.clone().or_else(|| k.instance_id.clone()).unwrap_or_else(|| "-".to_owned()))
            .collect();
        format!("skipped {} ({}, see stderr)", what.len(), what.join(", "))
    };
    Some(format!("{found} in {regions}{accounts}; CloudTrail from {} to {}; {skipped}.", s.window.start, s.window.end))
}
