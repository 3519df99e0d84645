//! What to do next, for a person: the fix applied now, the command to run, the restart; each distinct fix once.

use super::*;
use crate::core::arn::KeyArn;
use crate::core::facts::{Decision, EndState};
use crate::core::report::{CauseCode, Evidence, Finding, Remediation, RemediationAction, RemediationStatus, Report};
use std::collections::BTreeMap;

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
    pub(super) fn sentence(&self) -> String {
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

pub(super) fn policy_key(r: &Remediation) -> Option<String> {
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
