//! The text formats, for a person: what failed, why, what was done about it, and what to do
//! next. Pure functions of the report, so that e-mail (the SNS body), the terminal and the tests
//! read the same words.
//!
//! Only what the report establishes is said as a fact: an unknown caller is "unknown" with the
//! reason and the CloudTrail window searched, a fix is "applied" only when the write happened,
//! and "fixed" only when IAM's policy simulator allows the action now.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::core::arn::{Arn, KeyArn};
use crate::core::facts::{Decision, EndState};
use crate::core::report::{
    CauseCode, Evidence, Finding, KeyReport, Remediation, RemediationAction, RemediationStatus, Report,
};
use crate::core::text::clean;

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
    let state = end_state(f.instance_state);
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

pub fn end_state(s: EndState) -> &'static str {
    match s {
        EndState::Stopped => "stopped",
        EndState::Terminated => "terminated",
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

/// What is allowed now that was the cause: every cause is a missing grant, and for each key
/// IAM's policy simulator allows the actions now (in the diagnosis, or after this run's fix).
#[derive(Debug, PartialEq)]
pub struct Fixed {
    actions: Vec<String>,
    who: String,
    keys: Vec<String>,
    /// By this run's write (applied and verified), not found in place.
    by_this_run: bool,
    /// A `caller-lacks-create-grant` cause (the denial is on record), rather than no KMS cause
    /// found (nothing on record says KMS failed this launch).
    was_the_cause: bool,
}

impl Fixed {
    fn sentence(&self) -> String {
        let verb = if self.actions.len() == 1 { "is" } else { "are" };
        let what =
            format!("{} {verb} now allowed for {} on {}", self.actions.join(", "), self.who, self.keys.join(", "));
        match (self.was_the_cause, self.by_this_run) {
            (true, true) => format!("Fixed by this run: {what} (IAM's policy simulator, after the write)."),
            (true, false) => format!("Fixed since the failure: {what} (IAM's policy simulator)."),
            (false, _) => format!(
                "Allowed now: {what} (IAM's policy simulator). CloudTrail shows no KMS denial for this launch; if KMS caused it, that has been fixed since."
            ),
        }
    }
}

fn policy_key(r: &Remediation) -> Option<String> {
    let doc = r.policy_document.as_ref()?;
    doc.get("Statement")?.as_array()?.iter().find_map(|s| match s.get("Resource") {
        Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_str()).map(str::to_owned),
        Some(serde_json::Value::String(r)) => Some(r.clone()),
        _ => None,
    })
}

/// `Some` when the finding's permission cause is fixed by now (see [`Fixed`]).
pub fn fixed_now(f: &Finding) -> Option<Fixed> {
    let who = f.launch.as_ref().map(|l| l.caller.short_name())?;
    let grants = f.causes.iter().all(|c| c.code == CauseCode::CallerLacksCreateGrant);
    let no_cause = f.causes.len() == 1 && f.causes.iter().all(|c| c.code == CauseCode::NoKmsCauseFound);
    if f.causes.is_empty() || !(grants || no_cause) {
        return None;
    }
    let mut actions: Vec<String> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut by_this_run = false;
    let add = |list: &mut Vec<String>, v: String| {
        if !list.contains(&v) {
            list.push(v);
        }
    };
    for c in &f.causes {
        let sims: Vec<(&str, &str, Decision)> = c
            .evidence
            .iter()
            .filter_map(|e| match e {
                Evidence::Simulation { action, resource, decision, .. } => {
                    Some((action.as_str(), resource.as_str(), *decision))
                }
                _ => None,
            })
            .collect();
        if no_cause {
            // Every key's simulation, all allowed.
            if sims.is_empty() || sims.iter().any(|s| s.2 != Decision::Allowed) {
                return None;
            }
            for (a, r, _) in &sims {
                add(&mut actions, (*a).to_owned());
                add(&mut keys, KeyArn::parse(r).map(|k| key_label(f, &k)).unwrap_or_else(|_| (*r).to_owned()));
            }
            continue;
        }
        let key = c.key_arn.as_ref()?;
        let fixes: Vec<&Remediation> = f
            .remediations
            .iter()
            .filter(|r| matches!(r.action, RemediationAction::PutUserPolicy | RemediationAction::PutRolePolicy))
            .filter(|r| policy_key(r).as_deref() == Some(key.to_string().as_str()))
            .collect();
        let verified = fixes.iter().find(|r| {
            matches!(r.status, RemediationStatus::Applied | RemediationStatus::Unchanged) && r.verified == Some(true)
        });
        let allowed_in_diagnosis = !sims.is_empty() && sims.iter().all(|s| s.2 == Decision::Allowed);
        match verified {
            Some(r) => {
                by_this_run |= r.status == RemediationStatus::Applied;
                let doc_actions = r
                    .policy_document
                    .as_ref()
                    .and_then(|d| d.get("Statement"))
                    .and_then(|s| s.as_array())
                    .map(|st| {
                        st.iter()
                            .flat_map(|s| s.get("Action").and_then(|a| a.as_array()).cloned().unwrap_or_default())
                            .filter_map(|a| a.as_str().map(str::to_owned))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                for a in doc_actions {
                    add(&mut actions, a);
                }
            }
            None if allowed_in_diagnosis => {
                for (a, _, _) in &sims {
                    add(&mut actions, (*a).to_owned());
                }
            }
            None => return None,
        }
        add(&mut keys, key_label(f, key));
    }
    if actions.is_empty() {
        return None;
    }
    Some(Fixed { actions, who, keys, by_this_run, was_the_cause: grants })
}

/// The command that gets a fixed instance running again, unless this run restarted it.
pub fn next_step(f: &Finding) -> Option<String> {
    if f.remediations.iter().any(|r| r.restart.as_ref().is_some_and(|s| s.ok)) {
        return None;
    }
    Some(match f.instance_state {
        EndState::Stopped => format!(
            "Next step: start the instance again (it stays stopped until someone does):\n    $ {}",
            start_command(f)
        ),
        EndState::Terminated => {
            "Next step: launch a replacement (the instance is terminated and cannot be started again).".to_owned()
        }
    })
}

/// `aws ec2 start-instances` for the finding's instance.
pub fn start_command(f: &Finding) -> String {
    use crate::core::fixes::shell_quote;
    format!(
        "aws ec2 start-instances --instance-ids {} --region {}",
        shell_quote(&f.instance_id),
        shell_quote(&f.region)
    )
}

/// The distinct fix commands of a report, each with the findings (instances) it unblocks, in
/// the order they first appear. Remediations already in place (applied or unchanged) are left
/// out: there is nothing left to run for them.
pub struct FixCommand<'a> {
    pub remediation: &'a Remediation,
    pub command: &'a str,
    pub instances: Vec<&'a Finding>,
}

pub fn distinct_fixes(report: &Report) -> Vec<FixCommand<'_>> {
    let mut out: Vec<FixCommand<'_>> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &report.findings {
        for r in &f.remediations {
            if matches!(r.status, RemediationStatus::Applied | RemediationStatus::Unchanged) {
                continue;
            }
            for c in &r.commands {
                match index.get(c.as_str()) {
                    Some(&i) => {
                        if let Some(fc) = out.get_mut(i) {
                            if !fc.instances.iter().any(|g| g.instance_id == f.instance_id && g.region == f.region) {
                                fc.instances.push(f);
                            }
                        }
                    }
                    None => {
                        index.insert(c.as_str(), out.len());
                        out.push(FixCommand { remediation: r, command: c.as_str(), instances: vec![f] });
                    }
                }
            }
        }
    }
    out
}

/// At most `max` instance ids, then how many more.
fn instance_list(fs: &[&Finding], max: usize) -> String {
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

fn dedup(items: Vec<&str>) -> Vec<&str> {
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
        let causes: Vec<&str> = fc.instances.iter().flat_map(|f| f.causes.iter().map(|c| c.code.as_str())).fold(
            Vec::new(),
            |mut acc, c| {
                if !acc.contains(&c) {
                    acc.push(c);
                }
                acc
            },
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::report::{Launch, Restart};

    fn remediation(status: RemediationStatus, verified: Option<bool>, note: Option<&str>) -> Remediation {
        Remediation {
            action: RemediationAction::PutUserPolicy,
            target: "arn:aws:iam::123456789012:user/test".into(),
            policy_name: Some("kms-launch-doctor-k".into()),
            policy_document: None,
            commands: vec![],
            status,
            verified,
            note: note.map(str::to_owned),
            restart: None::<Restart>,
        }
    }

    #[test]
    fn each_status_says_what_happened() {
        assert_eq!(status(&remediation(RemediationStatus::Applied, Some(true), Some("x"))), "applied, verified");
        assert_eq!(
            status(&remediation(
                RemediationStatus::Refused,
                None,
                Some("arn:aws:iam::123456789012:user/test has not opted in: tag it kms-launch-doctor:auto-remediate=true")
            )),
            "refused: user/test has not opted in: tag it kms-launch-doctor:auto-remediate=true"
        );
        assert_eq!(
            status(&remediation(RemediationStatus::Failed, None, Some("iam:ListUserTags failed: AccessDenied"))),
            "failed: iam:ListUserTags failed: AccessDenied"
        );
        assert_eq!(status(&remediation(RemediationStatus::Proposed, None, None)), "proposed, not applied");
        assert!(status(&remediation(RemediationStatus::Applied, Some(false), Some("still denied")))
            .starts_with("applied, not verified"));
    }

    fn finding(code: CauseCode, sims: &[Decision], remediations: Vec<Remediation>) -> Finding {
        let key = KeyArn::parse("arn:aws:kms:eu-west-1:123456789012:key/k").unwrap();
        let user = "arn:aws:iam::123456789012:user/test";
        Finding {
            schema: crate::core::report::FINDING_SCHEMA,
            id: "kld-test".into(),
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            instance_id: "i-0abcdef01".into(),
            instance_name: Some("web\x1b[2J-1".into()),
            severity: code.severity(),
            instance_state: EndState::Stopped,
            state_reason: crate::core::facts::StateReason {
                code: "Client.InternalError".into(),
                message: String::new(),
            },
            observed_at: "2026-11-28T10:00:00Z".into(),
            launch: Some(Launch {
                api: crate::core::cloudtrail::LaunchApi::StartInstances,
                event_id: "e".into(),
                event_time: "2026-11-28T10:00:00Z".into(),
                caller: crate::core::cloudtrail::Caller {
                    identity_type: "IAMUser".into(),
                    arn: Some(user.into()),
                    principal_arn: Some(user.into()),
                    principal_kind: crate::core::cloudtrail::PrincipalKind::User,
                    account: Some("123456789012".into()),
                    invoked_by: None,
                },
            }),
            volumes: vec![],
            keys: vec![KeyReport {
                arn: key.clone(),
                account: "123456789012".into(),
                manager: Some("CUSTOMER".into()),
                state: Some("Enabled".into()),
                iam_delegation: Some(true),
                aliases: vec!["alias/ebs".into()],
            }],
            causes: vec![crate::core::report::Cause {
                code,
                key_arn: (code != CauseCode::NoKmsCauseFound).then(|| key.clone()),
                summary: "s".into(),
                evidence: sims
                    .iter()
                    .map(|d| Evidence::Simulation {
                        principal_arn: user.into(),
                        action: "kms:CreateGrant".into(),
                        resource: key.to_string(),
                        decision: *d,
                        matched_statements: vec![],
                        allowed_by_boundary: None,
                        allowed_by_organizations: None,
                    })
                    .collect(),
            }],
            remediations,
            missing_evidence: vec![],
            cloudtrail_window: None,
            delivered: Default::default(),
            decided_at: None,
            digest: String::new(),
        }
    }

    fn fix(status: RemediationStatus, verified: Option<bool>) -> Remediation {
        let mut r = remediation(status, verified, None);
        r.policy_document = Some(serde_json::json!({"Statement": [{"Action": ["kms:CreateGrant"],
            "Resource": ["arn:aws:kms:eu-west-1:123456789012:key/k"]}]}));
        r.commands = vec!["aws iam put-user-policy --user-name test".into()];
        r
    }

    #[test]
    fn a_cause_fixed_since_the_failure_says_so_and_gives_the_start_command() {
        let f = finding(
            CauseCode::CallerLacksCreateGrant,
            &[Decision::Allowed],
            vec![fix(RemediationStatus::Proposed, None)],
        );
        let text = finding_text(&f, false);
        assert!(text.contains("Fixed since the failure: kms:CreateGrant is now allowed for user/test on arn:aws:kms:eu-west-1:123456789012:key/k (alias/ebs)"), "{text}");
        assert!(text.contains("$ aws ec2 start-instances --instance-ids i-0abcdef01 --region eu-west-1"), "{text}");
        assert!(text.contains("i-0abcdef01 (Name: web?[2J-1)"), "{text}");
    }

    #[test]
    fn a_fix_applied_and_verified_is_fixed_by_this_run() {
        let f = finding(
            CauseCode::CallerLacksCreateGrant,
            &[Decision::ImplicitDeny],
            vec![fix(RemediationStatus::Applied, Some(true))],
        );
        let text = finding_text(&f, false);
        assert!(text.contains("Fixed by this run: kms:CreateGrant is now allowed"), "{text}");
        assert!(text.contains(": applied, verified"), "{text}");
        assert!(text.contains("start-instances"), "{text}");
    }

    #[test]
    fn nothing_is_said_fixed_without_the_simulator_saying_so() {
        for f in [
            finding(
                CauseCode::CallerLacksCreateGrant,
                &[Decision::ImplicitDeny],
                vec![fix(RemediationStatus::Refused, None)],
            ),
            finding(CauseCode::CallerLacksCreateGrant, &[], vec![fix(RemediationStatus::Applied, Some(false))]),
            finding(CauseCode::KeyDisabled, &[Decision::Allowed], vec![]),
            finding(CauseCode::NoKmsCauseFound, &[], vec![]),
        ] {
            let text = finding_text(&f, false);
            assert!(fixed_now(&f).is_none(), "{text}");
            assert!(!text.contains("start-instances") && !text.contains("Fixed"), "{text}");
        }
    }

    #[test]
    fn no_kms_cause_with_the_caller_allowed_now_suggests_a_restart_without_claiming_a_fix() {
        let f = finding(CauseCode::NoKmsCauseFound, &[Decision::Allowed], vec![]);
        let text = finding_text(&f, false);
        assert!(text.contains("Allowed now: kms:CreateGrant is now allowed for user/test"), "{text}");
        assert!(text.contains("if KMS caused it, that has been fixed since"), "{text}");
        assert!(!text.contains("Fixed since"), "{text}");
        assert!(text.contains("$ aws ec2 start-instances --instance-ids i-0abcdef01 --region eu-west-1"), "{text}");
    }
}
