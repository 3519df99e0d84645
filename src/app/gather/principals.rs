//! The caller's side: one SimulatePrincipalPolicy per principal, and permissions boundaries.

use super::*;
use crate::core::cloudtrail::PrincipalKind;
use crate::core::decide::needed_actions;
use crate::core::facts::{Facts, KeyState, Missing};
use crate::ports::{CallError, Cloud, SimulationRequest};
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info_span, Instrument};

/// GetUser/GetRole for the principals whose simulation says their permissions boundary blocks
/// what the launch needs, once per principal: the fix names the boundary policy.
pub(super) async fn boundaries<C: Cloud>(cloud: &C, facts: &mut [Facts], opts: &Options) {
    let principals: BTreeSet<String> = facts
        .iter()
        .flat_map(|f| f.simulations.iter())
        .filter(|s| s.allowed_by_boundary == Some(false))
        .map(|s| s.principal_arn.clone())
        .collect();
    let results: Vec<(String, Result<Option<String>, CallError>)> =
        stream::iter(principals.into_iter().map(|p| async move {
            let r = cloud
                .permissions_boundary(&p)
                .instrument(info_span!("iam.GetPermissionsBoundary", principal = %p))
                .await;
            (p, r)
        }))
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    for (principal, result) in results {
        for f in
            facts.iter_mut().filter(|f| f.caller().and_then(|c| c.principal_arn.as_deref()) == Some(principal.as_str()))
        {
            match &result {
                Ok(b) => f.boundary_arn = b.clone(),
                Err(e) => f.missing.push(Missing {
                    call: e.call.to_owned(),
                    target: principal.clone(),
                    reason: e.message.clone(),
                }),
            }
        }
    }
}

/// SimulatePrincipalPolicy once per principal, over every key of its instances. Root (not
/// limited by IAM) and service-linked roles (their policy cannot be changed) are not simulated;
/// keys that cannot be used at all are diagnosed from their state.
pub(super) async fn simulate_all<C: Cloud>(cloud: &C, facts: &mut [Facts], opts: &Options) {
    let mut requests: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>, String)> = BTreeMap::new();
    for f in facts.iter() {
        let Some(caller) = f.caller() else { continue };
        let Some(principal) = caller.principal_arn.clone() else { continue };
        if !matches!(
            caller.principal_kind,
            PrincipalKind::User | PrincipalKind::Role | PrincipalKind::SsoRole | PrincipalKind::Federated
        ) {
            continue;
        }
        let entry =
            requests.entry(principal).or_insert_with(|| (BTreeSet::new(), BTreeSet::new(), f.instance.region.clone()));
        entry.0.extend(needed_actions(f.state));
        entry.1.extend(
            f.keys
                .iter()
                .filter(|k| k.metadata.as_ref().is_none_or(|m| m.state == KeyState::Enabled))
                .map(|k| k.arn.to_string()),
        );
    }
    let requests: Vec<SimulationRequest> = requests
        .into_iter()
        .filter(|(_, (_, resources, _))| !resources.is_empty())
        .map(|(principal, (actions, resources, region))| SimulationRequest {
            principal_arn: principal,
            actions: actions.into_iter().collect(),
            resources: resources.into_iter().collect(),
            region,
        })
        .collect();
    let results: Vec<(SimulationRequest, Result<Vec<crate::core::facts::Simulation>, CallError>)> =
        stream::iter(requests.into_iter().map(|req| async move {
            let r = cloud
                .simulate(&req)
                .instrument(info_span!("iam.SimulatePrincipalPolicy", principal = %req.principal_arn))
                .await;
            (req, r)
        }))
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    for (req, result) in results {
        for f in facts.iter_mut() {
            if f.caller().and_then(|c| c.principal_arn.as_deref()) != Some(req.principal_arn.as_str()) {
                continue;
            }
            match &result {
                Ok(sims) => {
                    let mine: BTreeSet<String> = f.keys.iter().map(|k| k.arn.to_string()).collect();
                    let actions = needed_actions(f.state);
                    f.simulations = sims
                        .iter()
                        .filter(|s| {
                            mine.contains(&s.resource) && actions.iter().any(|a| a.eq_ignore_ascii_case(&s.action))
                        })
                        .cloned()
                        .collect();
                    // Every (action, key) asked about must have an answer.
                    let unanswered = req.resources.iter().filter(|r| mine.contains(*r)).any(|r| {
                        actions.iter().any(|a| {
                            !f.simulations.iter().any(|s| s.resource == *r && s.action.eq_ignore_ascii_case(a))
                        })
                    });
                    if unanswered {
                        f.missing.push(Missing {
                            call: "iam:SimulatePrincipalPolicy".to_owned(),
                            target: req.principal_arn.clone(),
                            reason: "the response lacks some decisions (partial or unreadable answer)".to_owned(),
                        });
                    }
                }
                Err(e) => f.missing.push(Missing {
                    call: e.call.to_owned(),
                    target: req.principal_arn.clone(),
                    reason: e.message.clone(),
                }),
            }
        }
    }
}
