//! Gathering: the AWS calls for one region's failed launches, turned into [`Facts`].
//!
//! The work is done in stages over all instances at once, so that nothing is asked twice: one
//! DescribeVolumes per 200 volumes, DescribeKey and GetKeyPolicy once per key, one
//! SimulatePrincipalPolicy per principal. CloudTrail is searched in one of two ways: for a few
//! instances, by each instance id (precise, two small queries per instance); for many (a scan,
//! a storm of events), by event name over one window, matched locally (a handful of queries
//! for the whole region). Independent calls run concurrently, at most `concurrency` at a time.
//!
//! A failed call becomes a [`Missing`] entry and the diagnosis goes on with what it has; only
//! DescribeInstances is essential (without it there is no launch failure to confirm).

mod gaps;
mod keys;
mod principals;
mod suppose;
#[cfg(test)]
mod tests;
mod trail;
mod volumes;

pub use suppose::{suppose, Supposed, SUPPOSED_EVENT_ID};

use gaps::Gaps;
use keys::{discover_keys, keyring, Keyring};
use principals::{boundaries, simulate_all};
use trail::{trail_evidence, Trail};
use volumes::{describe_volumes, volumes_of};

use crate::core::arn::KeyArn;
use crate::core::facts::{EndState, Facts, Instance, KeyFacts, Missing, StateReason, Volume};
use crate::core::report::{Finding, KeySource, Skipped};
use crate::ports::{CallError, Cloud};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info_span, Instrument};

/// An instance to diagnose, and when its state change was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub instance_id: String,
    pub observed_at: DateTime<Utc>,
    /// What an earlier look learned of the failed launch: decided on again as it was then, not
    /// on the instance's live state (it may have started since, or vanished).
    pub known: Option<Box<Snapshot>>,
}

impl Target {
    pub fn new(instance_id: String, observed_at: DateTime<Utc>) -> Self {
        Self { instance_id, observed_at, known: None }
    }
}

/// The facts of a failed launch that do not change while CloudTrail catches up: the instance
/// as it was, its volumes and the keys its launch needed. Carried by a deferred event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub instance: Instance,
    pub volumes: Vec<Volume>,
    pub key_sources: Vec<(KeyArn, KeySource)>,
}

impl Snapshot {
    /// From a finding: the instance as the finding saw it, its volumes, and its keys with the
    /// sources the evidence names (a key without one came from its volume).
    pub fn of(f: &Finding) -> Self {
        let mut key_sources: Vec<(KeyArn, KeySource)> = f
            .causes
            .iter()
            .flat_map(|c| &c.evidence)
            .filter_map(|e| match e {
                crate::core::report::Evidence::KeySource { key_arn, source } => {
                    Some((KeyArn::parse(key_arn).ok()?, *source))
                }
                _ => None,
            })
            .collect();
        for k in &f.keys {
            if !key_sources.iter().any(|(known, _)| *known == k.arn) {
                key_sources.push((k.arn.clone(), KeySource::Volume));
            }
        }
        key_sources.sort();
        key_sources.dedup();
        let instance = Instance {
            id: f.instance_id.clone(),
            account: f.account.clone(),
            partition: crate::core::arn::partition_of_region(&f.region).to_owned(),
            region: f.region.clone(),
            state: Some(f.instance_state),
            state_name: f.instance_state.as_str().to_owned(),
            state_reason: Some(f.state_reason.clone()),
            attachments: f
                .volumes
                .iter()
                .map(|v| crate::core::facts::Attachment { volume_id: v.volume_id.clone(), device: v.device.clone() })
                .collect(),
            tags: Vec::new(),
            image_id: None,
        };
        Self { instance, volumes: f.volumes.clone(), key_sources }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// How far before the state change to look for the launch call.
    pub lookback: Duration,
    /// How far after it (clock skew, a launch that took a while to fail).
    pub slack: Duration,
    /// Bound on LookupEvents pages per query, so a busy account cannot run up the bill.
    pub max_pages: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Above this many instances, CloudTrail is searched by event name over one window.
    pub window_threshold: usize,
    /// Stop starting CloudTrail pages past this instant (the Lambda invocation's deadline
    /// less a safety margin); what was not searched is missing evidence.
    pub deadline: Option<std::time::Instant>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lookback: Duration::hours(1),
            slack: Duration::minutes(5),
            max_pages: 10,
            concurrency: 4,
            window_threshold: 3,
            deadline: None,
        }
    }
}

/// A confirmed launch failure, waiting for its facts.
#[derive(Debug, Clone)]
struct Candidate {
    instance: Instance,
    state: EndState,
    reason: StateReason,
    observed_at: DateTime<Utc>,
    known: Option<Box<Snapshot>>,
}

/// Gathers the evidence for `targets` in one region. Only a failed DescribeInstances is an
/// error.
pub async fn launches<C: Cloud>(
    cloud: &C,
    region: &str,
    targets: &[Target],
    opts: &Options,
) -> Result<Evidence, CallError> {
    let mut skipped = Vec::new();
    let mut seen = BTreeSet::new();
    let targets: Vec<&Target> = targets.iter().filter(|t| seen.insert(t.instance_id.clone())).collect();
    if targets.is_empty() {
        return Ok(Evidence::default());
    }
    let mut candidates = Vec::new();
    // Those an earlier look confirmed are decided on what it saw.
    for target in targets.iter().filter(|t| t.known.is_some()) {
        if let Some(known) = &target.known {
            if let Ok((state, reason)) = confirm(&known.instance) {
                candidates.push(Candidate {
                    instance: known.instance.clone(),
                    state,
                    reason,
                    observed_at: target.observed_at,
                    known: Some(known.clone()),
                });
            }
        }
    }
    let targets: Vec<&Target> = targets.into_iter().filter(|t| t.known.is_none()).collect();
    let ids: Vec<String> = targets.iter().map(|t| t.instance_id.clone()).collect();
    let instances = if ids.is_empty() {
        Vec::new()
    } else {
        cloud
            .describe_instances(region, &ids)
            .instrument(info_span!("ec2.DescribeInstances", region, count = ids.len()))
            .await?
    };

    for target in targets {
        let Some(instance) = instances.iter().find(|i| i.id == target.instance_id) else {
            skipped.push(Skipped::instance(target.instance_id.clone(), format!("not found in {region}")));
            continue;
        };
        match confirm(instance) {
            Ok((state, reason)) => candidates.push(Candidate {
                instance: instance.clone(),
                state,
                reason,
                observed_at: target.observed_at,
                known: None,
            }),
            Err(reason) => skipped.push(Skipped::instance(instance.id.clone(), reason)),
        }
    }
    let mut evidence = investigate(cloud, candidates, opts).await;
    evidence.skipped = skipped;
    Ok(evidence)
}

/// Finds every failed launch in a region (server-side filters) and gathers their evidence
/// together, searching CloudTrail over the `since` window before `now`.
pub async fn region<C: Cloud>(
    cloud: &C,
    region: &str,
    since: Duration,
    now: DateTime<Utc>,
    opts: &Options,
) -> Result<Evidence, CallError> {
    let instances = cloud
        .describe_failed_instances(region)
        .instrument(info_span!("ec2.DescribeInstances", region, filtered = true))
        .await?;
    let candidates = instances
        .into_iter()
        .filter_map(|instance| {
            let (state, reason) = confirm(&instance).ok()?;
            Some(Candidate { instance, state, reason, observed_at: now, known: None })
        })
        .collect();
    let opts = Options { lookback: since, slack: Duration::zero(), window_threshold: 0, ..opts.clone() };
    Ok(investigate(cloud, candidates, &opts).await)
}

/// What gathering learned, before anything is decided: each launch's facts with the CloudTrail
/// window searched for it, the keys' aliases (names a person reads), and the instances not
/// looked at, with why.
#[derive(Debug, Default)]
pub struct Evidence {
    pub launches: Vec<(Facts, Option<crate::core::report::Window>)>,
    pub aliases: BTreeMap<KeyArn, Vec<String>>,
    pub skipped: Vec<Skipped>,
}

/// Is this a launch failure? `Err` says why not.
pub fn confirm(instance: &Instance) -> Result<(EndState, StateReason), String> {
    let Some(state) = instance.state else {
        return Err(format!("instance is {}, not stopped or terminated", instance.state_name));
    };
    match &instance.state_reason {
        Some(r) if r.is_launch_failure() => Ok((state, r.clone())),
        Some(r) => Err(format!("not a launch failure: state reason {} ({})", r.code, r.message)),
        None => Err("not a launch failure: the instance has no state reason".to_owned()),
    }
}

async fn investigate<C: Cloud>(cloud: &C, candidates: Vec<Candidate>, opts: &Options) -> Evidence {
    if candidates.is_empty() {
        return Evidence::default();
    }
    let mut gaps = Gaps::default();
    let volume_infos = describe_volumes(cloud, &candidates, opts, &mut gaps).await;

    // Volumes per instance, and every key once.
    let mut volumes: Vec<Vec<Volume>> = Vec::new();
    let mut keys = BTreeSet::new();
    for c in &candidates {
        let vols = match &c.known {
            Some(k) => k.volumes.clone(),
            None => volumes_of(&c.instance, &volume_infos, &mut gaps),
        };
        keys.extend(vols.iter().filter_map(|v| v.kms_key_arn.clone()));
        keys.extend(c.known.iter().flat_map(|k| k.key_sources.iter().map(|(arn, _)| arn.clone())));
        volumes.push(vols);
    }
    let keys: Vec<KeyArn> = keys.into_iter().collect();
    // The keys and CloudTrail do not depend on each other: ask both at once.
    let (keyring, trails): (Keyring, Vec<Trail>) =
        tokio::join!(keyring(cloud, &keys, &mut gaps, opts), trail_evidence(cloud, &candidates, &volumes, opts));
    let Keyring { facts: mut key_map, mut aliases } = keyring;
    let windows: Vec<Option<crate::core::report::Window>> = trails.iter().map(|t| t.window.clone()).collect();

    let mut all_facts: Vec<Facts> = candidates
        .into_iter()
        .zip(volumes)
        .zip(trails)
        .map(|((c, vols), trail)| {
            let known_sources: Vec<(KeyArn, KeySource)> =
                c.known.as_ref().map(|k| k.key_sources.clone()).unwrap_or_default();
            let inst_keys: Vec<KeyArn> = vols
                .iter()
                .filter_map(|v| v.kms_key_arn.clone())
                .chain(known_sources.iter().map(|(k, _)| k.clone()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut missing = gaps.for_launch(&c.instance, &vols, &inst_keys);
            missing.extend(trail.missing);
            Facts {
                keys: inst_keys.iter().filter_map(|k| key_map.get(k).cloned()).collect(),
                instance: c.instance,
                state: c.state,
                state_reason: c.reason,
                observed_at: c.observed_at,
                volumes: vols,
                launch: trail.launch,
                kms_denials: trail.denials,
                simulations: Vec::new(),
                boundary_arn: None,
                key_sources: if known_sources.is_empty() {
                    inst_keys.iter().map(|k| (k.clone(), KeySource::Volume)).collect()
                } else {
                    known_sources
                },
                missing,
            }
        })
        .collect();

    discover_keys(cloud, &mut all_facts, &mut key_map, &mut aliases, opts).await;
    simulate_all(cloud, &mut all_facts, opts).await;
    boundaries(cloud, &mut all_facts, opts).await;
    Evidence { launches: all_facts.into_iter().zip(windows).collect(), aliases, skipped: Vec::new() }
}

/// What was learned about one key, what could not be, and its aliases.
type KeyGathered = (KeyFacts, Vec<Missing>, Vec<String>);

/// Denied KMS calls kept as evidence per instance.
const MAX_DENIALS: usize = 5;
