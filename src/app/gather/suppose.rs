//! Preflight's launches: supposed, not found in CloudTrail, and gathered as a diagnosis gathers.

use super::*;
use crate::core::arn::KeyArn;
use crate::core::cloudtrail::Record;
use crate::core::facts::{EndState, Facts, Instance, Missing, StateReason, Volume};
use crate::core::report::KeySource;
use crate::ports::Cloud;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// The event id of a launch that preflight supposes (no CloudTrail record has it).
pub const SUPPOSED_EVENT_ID: &str = "preflight";

/// A launch supposed by preflight: this instance (for an Auto Scaling group, a stand-in that
/// has the group's keys and no volumes), launched by this caller.
#[derive(Debug, Clone)]
pub struct Supposed {
    pub instance: Instance,
    /// `Stopped`: a StartInstances; `Terminated`: a RunInstances (the KMS actions each needs).
    pub state: EndState,
    pub caller: crate::core::cloudtrail::Caller,
    /// A RunInstances' launch template and AMI, and whether a volume it asks for gets the EBS
    /// default key: where a group's keys come from (as for a terminated instance's launch).
    pub launch_template: Option<crate::core::cloudtrail::LaunchTemplateRef>,
    pub image_id: Option<String>,
    pub default_key: bool,
    /// What could not be learned about the launch before it was supposed.
    pub missing: Vec<Missing>,
}

/// Whether the facts are of a launch preflight supposes (then no CloudTrail is read).
pub(super) fn is_supposed(f: &Facts) -> bool {
    f.launch.as_ref().is_some_and(|l| l.event_id == SUPPOSED_EVENT_ID)
}

/// Preflight: the findings that the supposed launches would meet, gathered as a diagnosis
/// gathers (volumes, keys and key policies, the caller's simulation with the launch's context
/// keys, permissions boundaries), and decided by the same rules. No CloudTrail is read: the
/// launch has not happened.
pub async fn suppose<C: Cloud>(cloud: &C, launches: Vec<Supposed>, now: DateTime<Utc>, opts: &Options) -> Evidence {
    if launches.is_empty() {
        return Evidence::default();
    }
    let candidates: Vec<Candidate> = launches
        .iter()
        .map(|l| Candidate {
            instance: l.instance.clone(),
            state: l.state,
            reason: l.instance.state_reason.clone().unwrap_or_else(|| StateReason {
                code: SUPPOSED_EVENT_ID.to_owned(),
                message: "a launch supposed by preflight".to_owned(),
            }),
            observed_at: now,
            known: None,
        })
        .collect();
    let mut gaps = Gaps::default();
    let infos = describe_volumes(cloud, &candidates, opts, &mut gaps).await;
    let volumes: Vec<Vec<Volume>> = candidates.iter().map(|c| volumes_of(&c.instance, &infos, &mut gaps)).collect();
    let keys: Vec<KeyArn> =
        volumes.iter().flatten().filter_map(|v| v.kms_key_arn.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let Keyring { facts: mut key_map, mut aliases } = keyring(cloud, &keys, &mut gaps, opts).await;
    let mut facts: Vec<Facts> = launches
        .into_iter()
        .zip(candidates)
        .zip(volumes)
        .map(|((l, c), vols)| {
            let inst_keys: Vec<KeyArn> =
                vols.iter().filter_map(|v| v.kms_key_arn.clone()).collect::<BTreeSet<_>>().into_iter().collect();
            let mut missing = gaps.for_launch(&c.instance, &vols, &inst_keys);
            missing.extend(l.missing);
            let launch = Record {
                event_id: SUPPOSED_EVENT_ID.to_owned(),
                event_name: c.state.launch_api().as_str().to_owned(),
                event_time: now,
                caller: l.caller,
                error_code: None,
                error_message: None,
                instance_ids: vec![c.instance.id.clone()],
                key: None,
                volume_ids: Vec::new(),
                ec2_infrastructure_for: None,
                request_keys: Vec::new(),
                request_default_key: l.default_key,
                launch_template: l.launch_template,
                image_id: l.image_id,
                via_ec2: false,
                grant_for_instance: None,
            };
            Facts {
                keys: inst_keys.iter().filter_map(|k| key_map.get(k).cloned()).collect(),
                instance: c.instance,
                state: c.state,
                state_reason: c.reason,
                observed_at: now,
                volumes: vols,
                launch: Some(launch),
                kms_denials: Vec::new(),
                simulations: Vec::new(),
                boundary_arn: None,
                key_sources: inst_keys.iter().map(|k| (k.clone(), KeySource::Volume)).collect(),
                missing,
            }
        })
        .collect();
    // A group's launch has no volumes yet: its keys come from its template, AMI and the EBS
    // default key, found as for a terminated instance's launch.
    discover_keys(cloud, &mut facts, &mut key_map, &mut aliases, opts).await;
    simulate_all(cloud, &mut facts, opts).await;
    boundaries(cloud, &mut facts, opts).await;
    Evidence { launches: facts.into_iter().map(|f| (f, None)).collect(), aliases, skipped: Vec::new() }
}
