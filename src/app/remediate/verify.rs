//! After a write: whether the simulator now allows the launch's calls, and the opt-in restart.

use super::*;
use crate::core::arn::KeyArn;
use crate::core::facts::{Decision, EndState};
use crate::core::report::{CauseCode, Finding, Remediation, RemediationAction, RemediationStatus, Restart};
use crate::ports::{Cloud, IamWrites, SimulationRequest};
use serde_json::Value;

/// Whether the cause's simulation evidence shows every action on the key allowed.
pub(super) fn already_allowed(f: &Finding, key: &KeyArn) -> bool {
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
pub(super) async fn verify<C: Cloud>(
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
pub(super) async fn restart<C: Cloud, W: IamWrites>(cloud: &C, writes: &W, tag_key: &str, f: &mut Finding) {
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
