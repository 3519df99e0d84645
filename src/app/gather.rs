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

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};
use tracing::{info_span, Instrument};

use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{LaunchApi, PrincipalKind, Record};
use crate::core::decide::{decide, needed_actions};
use crate::core::facts::{EndState, Facts, Instance, KeyFacts, KeyState, Missing, StateReason, Volume};
use crate::core::report::{Finding, KeySource, Report, Skipped};
use crate::ports::{CallError, Cloud, SimulationRequest, TrailKey, TrailQuery, VolumeInfo, VolumeKeys};

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
            state_name: match f.instance_state {
                EndState::Stopped => "stopped",
                EndState::Terminated => "terminated",
            }
            .to_owned(),
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

/// Diagnoses `targets` in one region. Only a failed DescribeInstances is an error.
pub async fn diagnose<C: Cloud>(
    cloud: &C,
    region: &str,
    targets: &[Target],
    opts: &Options,
) -> Result<Report, CallError> {
    let mut report = Report::default();
    let mut seen = BTreeSet::new();
    let targets: Vec<&Target> = targets.iter().filter(|t| seen.insert(t.instance_id.clone())).collect();
    if targets.is_empty() {
        return Ok(report);
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
            report.skipped.push(Skipped {
                instance_id: Some(target.instance_id.clone()),
                region: None,
                reason: format!("not found in {region}"),
                account: None,
            });
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
            Err(reason) => report.skipped.push(Skipped {
                instance_id: Some(instance.id.clone()),
                region: None,
                reason,
                account: None,
            }),
        }
    }
    report.findings = investigate(cloud, candidates, opts).await;
    Ok(report)
}

/// Finds every failed launch in a region (server-side filters) and diagnoses them together,
/// searching CloudTrail over the `since` window before `now`.
pub async fn scan_region<C: Cloud>(
    cloud: &C,
    region: &str,
    since: Duration,
    now: DateTime<Utc>,
    opts: &Options,
) -> Result<Vec<Finding>, CallError> {
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

/// Missing evidence that applies to every instance touching `target` (a key, a volume).
#[derive(Default)]
struct Gaps {
    by_target: BTreeMap<String, Vec<Missing>>,
    everyone: Vec<Missing>,
}

impl Gaps {
    fn note(&mut self, target: &str, m: Missing) {
        self.by_target.entry(target.to_owned()).or_default().push(m);
    }
    /// What is missing for one launch: of the instance, its volumes and its keys.
    fn for_launch(&self, instance: &Instance, volumes: &[Volume], keys: &[KeyArn]) -> Vec<Missing> {
        let mut missing = self.for_targets(
            std::iter::once(instance.id.as_str())
                .chain(volumes.iter().map(|v| v.volume_id.as_str()))
                .chain(keys.iter().map(|k| k.arn().resource()))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        for k in keys {
            for m in self.by_target.get(&k.to_string()).into_iter().flatten() {
                if !missing.contains(m) {
                    missing.push(m.clone());
                }
            }
        }
        missing
    }

    fn for_targets<'a>(&self, targets: impl Iterator<Item = &'a str>) -> Vec<Missing> {
        let mut out = self.everyone.clone();
        for t in targets {
            if let Some(ms) = self.by_target.get(t) {
                for m in ms {
                    if !out.contains(m) {
                        out.push(m.clone());
                    }
                }
            }
        }
        out
    }
}

async fn investigate<C: Cloud>(cloud: &C, candidates: Vec<Candidate>, opts: &Options) -> Vec<Finding> {
    if candidates.is_empty() {
        return Vec::new();
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
    conclude(&all_facts, windows, &aliases)
}

/// Decides each launch's facts. The moment of decision dates the findings: sinks date a
/// finding by it, never by when it is sent.
fn conclude(
    facts: &[Facts],
    windows: Vec<Option<crate::core::report::Window>>,
    aliases: &BTreeMap<KeyArn, Vec<String>>,
) -> Vec<Finding> {
    // Milliseconds: Security Hub ignores an update not dated after what it holds, and two
    // decisions on one failure (the first look, then the caller) can fall in one second.
    let decided = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    facts
        .iter()
        .zip(windows.into_iter().chain(std::iter::repeat(None)))
        .map(|(facts, window)| {
            let mut finding = decide(facts);
            for k in &mut finding.keys {
                k.aliases = aliases.get(&k.arn).cloned().unwrap_or_default();
            }
            finding.cloudtrail_window = window;
            finding.decided_at = Some(decided.clone());
            finding
        })
        .collect()
}

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
fn is_supposed(f: &Facts) -> bool {
    f.launch.as_ref().is_some_and(|l| l.event_id == SUPPOSED_EVENT_ID)
}

/// Preflight: the findings that the supposed launches would meet, gathered as a diagnosis
/// gathers (volumes, keys and key policies, the caller's simulation with the launch's context
/// keys, permissions boundaries), and decided by the same rules. No CloudTrail is read: the
/// launch has not happened.
pub async fn suppose<C: Cloud>(cloud: &C, launches: Vec<Supposed>, now: DateTime<Utc>, opts: &Options) -> Vec<Finding> {
    if launches.is_empty() {
        return Vec::new();
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
    conclude(&facts, Vec::new(), &aliases)
}

/// GetUser/GetRole for the principals whose simulation says their permissions boundary blocks
/// what the launch needs, once per principal: the fix names the boundary policy.
async fn boundaries<C: Cloud>(cloud: &C, facts: &mut [Facts], opts: &Options) {
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

/// DescribeVolumes for every attached volume, 200 ids per call.
async fn describe_volumes<C: Cloud>(
    cloud: &C,
    candidates: &[Candidate],
    opts: &Options,
    gaps: &mut Gaps,
) -> BTreeMap<String, VolumeInfo> {
    let Some(region) = candidates.first().map(|c| c.instance.region.clone()) else {
        return BTreeMap::new();
    };
    let ids: Vec<String> = candidates
        .iter()
        .filter(|c| c.known.is_none())
        .flat_map(|c| c.instance.attachments.iter().map(|a| a.volume_id.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let chunks: Vec<Vec<String>> = ids.chunks(200).map(<[String]>::to_vec).collect();
    type Described = (Vec<String>, Result<Vec<VolumeInfo>, CallError>);
    let results: Vec<Described> = stream::iter(chunks.into_iter().map(|chunk| {
        let region = region.clone();
        async move {
            let r = cloud
                .describe_volumes(&region, &chunk)
                .instrument(info_span!("ec2.DescribeVolumes", count = chunk.len()))
                .await;
            (chunk, r)
        }
    }))
    .buffered(opts.concurrency.max(1))
    .collect()
    .await;
    let mut out = BTreeMap::new();
    for (chunk, result) in results {
        match result {
            Ok(infos) => {
                // A volume left out of a successful answer: the answer was cut short.
                for id in chunk.iter().filter(|id| !infos.iter().any(|v| v.volume_id == **id)) {
                    let reason = "not in the response (partial or unreadable answer)".to_owned();
                    gaps.note(id, Missing { call: "ec2:DescribeVolumes".to_owned(), target: id.clone(), reason });
                }
                out.extend(infos.into_iter().map(|v| (v.volume_id.clone(), v)));
            }
            Err(e) => {
                for id in &chunk {
                    gaps.note(
                        id,
                        Missing { call: e.call.to_owned(), target: chunk.join(","), reason: e.message.clone() },
                    );
                }
            }
        }
    }
    out
}

fn volumes_of(instance: &Instance, infos: &BTreeMap<String, VolumeInfo>, gaps: &mut Gaps) -> Vec<Volume> {
    instance
        .attachments
        .iter()
        .map(|a| {
            let info = infos.get(&a.volume_id);
            let kms_key_arn = info.and_then(|v| v.kms_key_id.as_deref()).and_then(|id| {
                KeyArn::resolve(id, &instance.partition, &instance.region, &instance.account)
                    .map_err(|e| {
                        gaps.note(
                            &a.volume_id,
                            Missing {
                                call: "ec2:DescribeVolumes".to_owned(),
                                target: a.volume_id.clone(),
                                reason: e.to_string(),
                            },
                        )
                    })
                    .ok()
            });
            if info.is_some_and(|v| v.encrypted.is_none()) {
                let reason =
                    "the response does not say whether it is encrypted (partial or unreadable answer)".to_owned();
                gaps.note(
                    &a.volume_id,
                    Missing { call: "ec2:DescribeVolumes".to_owned(), target: a.volume_id.clone(), reason },
                );
            }
            Volume {
                volume_id: a.volume_id.clone(),
                device: a.device.clone(),
                encrypted: info.and_then(|v| v.encrypted),
                kms_key_arn,
            }
        })
        .collect()
}

/// Every key of a batch, asked once: its facts and aliases (what could not be read goes to
/// the gaps).
#[derive(Default)]
struct Keyring {
    facts: BTreeMap<KeyArn, KeyFacts>,
    aliases: BTreeMap<KeyArn, Vec<String>>,
}

async fn keyring<C: Cloud>(cloud: &C, keys: &[KeyArn], gaps: &mut Gaps, opts: &Options) -> Keyring {
    let gathered: Vec<KeyGathered> =
        stream::iter(keys.iter().map(|k| key_facts(cloud, k))).buffered(opts.concurrency.max(1)).collect().await;
    let mut ring = Keyring::default();
    for (facts, missing, names) in gathered {
        for m in missing {
            gaps.note(&facts.arn.to_string(), m);
        }
        ring.aliases.insert(facts.arn.clone(), names);
        ring.facts.insert(facts.arn.clone(), facts);
    }
    ring
}

/// What was learned about one key, what could not be, and its aliases.
type KeyGathered = (KeyFacts, Vec<Missing>, Vec<String>);

/// DescribeKey, GetKeyPolicy and ListAliases (names for people), concurrently.
async fn key_facts<C: Cloud>(cloud: &C, key: &KeyArn) -> KeyGathered {
    let span = info_span!("key", key_arn = %key);
    async move {
        let (meta, policy, aliases) = tokio::join!(
            cloud.describe_key(key).instrument(info_span!("kms.DescribeKey")),
            cloud.get_key_policy(key).instrument(info_span!("kms.GetKeyPolicy")),
            cloud.list_aliases(key).instrument(info_span!("kms.ListAliases")),
        );
        let mut missing = Vec::new();
        let mut note = |e: CallError| {
            missing.push(Missing { call: e.call.to_owned(), target: key.to_string(), reason: e.message })
        };
        let metadata = meta.map_err(&mut note).ok();
        let policy = policy.map_err(&mut note).ok();
        let aliases = aliases.map_err(&mut note).ok().unwrap_or_default();
        (KeyFacts { arn: key.clone(), metadata, policy }, missing, aliases)
    }
    .instrument(span)
    .await
}

/// KMS calls EC2 makes (or has the caller make) to use a volume's key.
fn is_kms_use(event_name: &str) -> bool {
    matches!(
        event_name,
        "CreateGrant" | "GenerateDataKeyWithoutPlaintext" | "GenerateDataKey" | "Decrypt" | "ReEncrypt" | "DescribeKey"
    )
}

/// What CloudTrail says about one instance.
#[derive(Default)]
struct Trail {
    launch: Option<Record>,
    denials: Vec<Record>,
    missing: Vec<Missing>,
    /// The window searched for the launch call.
    window: Option<crate::core::report::Window>,
}

fn window_of(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<crate::core::report::Window> {
    Some(crate::core::report::Window {
        start: crate::core::decide::rfc3339(start),
        end: crate::core::decide::rfc3339(end),
    })
}

async fn trail_evidence<C: Cloud>(
    cloud: &C,
    candidates: &[Candidate],
    volumes: &[Vec<Volume>],
    opts: &Options,
) -> Vec<Trail> {
    if candidates.len() > opts.window_threshold {
        window_trail(cloud, candidates, volumes, opts).await
    } else {
        stream::iter(candidates.iter().zip(volumes).map(|(c, v)| instance_trail(cloud, c, v, opts)))
            .buffered(opts.concurrency.max(1))
            .collect()
            .await
    }
}

/// The best launch record for an instance among `records` (newest first): a successful
/// StartInstances/RunInstances naming it, the API matching the end state first.
fn pick_launch<'a>(records: impl Iterator<Item = &'a Record> + Clone, c: &Candidate) -> Option<Record> {
    let names_it = |r: &&Record| {
        r.error_code.is_none()
            && r.instance_ids.contains(&c.instance.id)
            && r.event_time <= c.observed_at + Duration::minutes(5)
    };
    let expected = c.state.launch_api().as_str();
    records
        .clone()
        .filter(names_it)
        .find(|r| r.event_name == expected)
        .or_else(|| records.filter(names_it).find(|r| LaunchApi::parse(&r.event_name).is_some()))
        .cloned()
}

/// Denied KMS calls kept as evidence per instance.
const MAX_DENIALS: usize = 5;

/// The denied KMS calls that belong to this instance's launch, newest first, at most
/// [`MAX_DENIALS`]. A denial belongs to it when it names one of the instance's volumes (EC2's
/// grant constraint `aws:ebs:id`), when EC2's own identity made it for this instance, or when
/// the launch's caller (the same principal or session) made it within seconds to minutes of
/// the launch, as EC2's CreateGrant on the caller's behalf is. Without a launch record only the
/// first two can tie a denial to the instance: anyone else denied a KMS call on the same key
/// near the failure is unrelated, and never evidence, in instance and window mode alike.
fn relevant_denials<'a>(
    records: impl Iterator<Item = &'a Record>,
    launch: Option<&Record>,
    instance_id: &str,
    volumes: &[Volume],
) -> Vec<Record> {
    let mut out: Vec<Record> = records
        .filter(|r| {
            if !r.volume_ids.is_empty() {
                return r.volume_ids.iter().any(|id| volumes.iter().any(|v| v.volume_id == *id));
            }
            if r.acts_for_instance(instance_id) {
                return true;
            }
            let Some(l) = launch else { return false };
            let same = |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(a), Some(b)) if a == b);
            let same_caller =
                same(&r.caller.principal_arn, &l.caller.principal_arn) || same(&r.caller.arn, &l.caller.arn);
            same_caller
                && r.event_time >= l.event_time - Duration::seconds(5)
                && r.event_time <= l.event_time + Duration::minutes(3)
        })
        .cloned()
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.event_time));
    out.dedup_by(|a, b| a.event_id == b.event_id);
    out.truncate(MAX_DENIALS);
    out
}

fn record_key_matches(r: &Record, key: &KeyArn) -> bool {
    r.key
        .as_deref()
        .is_some_and(|k| k == key.to_string() || k == key.key_id() || k.ends_with(&format!("key/{}", key.key_id())))
}

/// Few instances: LookupEvents by instance id, then each key's denied calls right after the
/// launch (EC2 asks for the grant within seconds).
async fn instance_trail<C: Cloud>(cloud: &C, c: &Candidate, volumes: &[Volume], opts: &Options) -> Trail {
    let window = TrailQuery {
        key: TrailKey::ResourceName(c.instance.id.clone()),
        start: c.observed_at - opts.lookback,
        end: c.observed_at + opts.slack,
    };
    let region = c.instance.region.as_str();
    let (records, mut missing) = trail_records(cloud, region, &window, opts.max_pages, opts.deadline, |r| {
        r.error_code.is_none() && LaunchApi::parse(&r.event_name).is_some()
    })
    .await;
    let launch = pick_launch(records.iter(), c);
    let keys: Vec<KeyArn> =
        volumes.iter().filter_map(|v| v.kms_key_arn.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let pages = if launch.is_some() { opts.max_pages } else { opts.max_pages.min(2) };
    let denial_work = keys.iter().map(|k| {
        let q = match &launch {
            Some(r) => TrailQuery {
                key: TrailKey::ResourceName(k.to_string()),
                start: r.event_time - Duration::minutes(1),
                end: (r.event_time + Duration::minutes(15)).min(window.end.max(r.event_time)),
            },
            None => TrailQuery { key: TrailKey::ResourceName(k.to_string()), ..window.clone() },
        };
        async move {
            trail_records(cloud, k.region(), &q, pages, opts.deadline, |r| {
                r.is_access_denied() && is_kms_use(&r.event_name)
            })
            .await
        }
    });
    let mut found = Vec::new();
    for (mut d, mut m) in futures_util::future::join_all(denial_work).await {
        found.append(&mut d);
        missing.append(&mut m);
    }
    let denials = relevant_denials(found.iter(), launch.as_ref(), &c.instance.id, volumes);
    Trail { launch, denials, missing, window: window_of(window.start, window.end) }
}

/// Many instances: one query per event name over the whole window, matched locally.
async fn window_trail<C: Cloud>(
    cloud: &C,
    candidates: &[Candidate],
    volumes: &[Vec<Volume>],
    opts: &Options,
) -> Vec<Trail> {
    let Some(first) = candidates.first() else { return Vec::new() };
    let region = first.instance.region.as_str();
    let start = candidates.iter().map(|c| c.observed_at).min().unwrap_or(first.observed_at) - opts.lookback;
    let end = candidates.iter().map(|c| c.observed_at).max().unwrap_or(first.observed_at) + opts.slack;
    let query = |name: &str| TrailQuery { key: TrailKey::EventName(name.to_owned()), start, end };
    // Scans cover days: allow more pages than a single diagnosis.
    let pages = opts.max_pages.saturating_mul(5);
    let (q_start, q_run) = (query("StartInstances"), query("RunInstances"));
    let (starts, runs) = tokio::join!(
        trail_records(cloud, region, &q_start, pages, opts.deadline, |r| r.error_code.is_none()),
        trail_records(cloud, region, &q_run, pages, opts.deadline, |r| r.error_code.is_none()),
    );
    let mut launches: Vec<Record> = starts.0.into_iter().chain(runs.0).collect();
    launches.sort_by_key(|r| std::cmp::Reverse(r.event_time));
    // The denied grants come seconds after their launch: searched from the earliest launch
    // (or, for a failure whose launch is not found, a few minutes before its state change), not
    // over the whole lookback. In a busy account CreateGrant is the most frequent of the three
    // names (every attached volume makes one), so this is most of the pages saved.
    let grants_from = candidates
        .iter()
        .map(|c| pick_launch(launches.iter(), c).map_or(c.observed_at - opts.slack, |l| l.event_time))
        .min()
        .unwrap_or(start)
        .max(start)
        - Duration::minutes(1);
    let q_grant = TrailQuery { key: TrailKey::EventName("CreateGrant".to_owned()), start: grants_from.max(start), end };
    let grants = trail_records(cloud, region, &q_grant, pages, opts.deadline, Record::is_access_denied).await;
    let shared_missing: Vec<Missing> = [&starts.1, &runs.1, &grants.1].into_iter().flatten().cloned().collect();
    candidates
        .iter()
        .zip(volumes)
        .map(|(c, vols)| {
            let launch = pick_launch(launches.iter(), c);
            let keys: Vec<&KeyArn> = vols.iter().filter_map(|v| v.kms_key_arn.as_ref()).collect();
            let on_our_keys = grants.0.iter().filter(|r| keys.iter().any(|k| record_key_matches(r, k)));
            let denials = relevant_denials(on_our_keys, launch.as_ref(), &c.instance.id, vols);
            Trail { launch, denials, missing: shared_missing.clone(), window: window_of(start, end) }
        })
        .collect()
}

/// Pages through LookupEvents, keeping the records `keep` accepts (newest first). Records that
/// cannot be parsed are reported as missing evidence, not dropped silently.
async fn trail_records<C: Cloud>(
    cloud: &C,
    region: &str,
    query: &TrailQuery,
    max_pages: usize,
    deadline: Option<std::time::Instant>,
    keep: impl Fn(&Record) -> bool,
) -> (Vec<Record>, Vec<Missing>) {
    let mut kept = Vec::new();
    let mut missing = Vec::new();
    let mut token: Option<String> = None;
    let target = query.key.value().to_owned();
    for page_no in 0..max_pages {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            missing.push(Missing {
                call: "cloudtrail:LookupEvents".to_owned(),
                target: target.clone(),
                reason: "not searched (further): the invocation's deadline was near".to_owned(),
            });
            break;
        }
        let page = cloud
            .lookup_events(region, query, token.as_deref())
            .instrument(info_span!("cloudtrail.LookupEvents", lookup = %target, page = page_no))
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                missing.push(Missing { call: e.call.to_owned(), target: target.clone(), reason: e.message });
                break;
            }
        };
        for ev in page.events {
            let parsed = match ev.cloud_trail_event.as_deref() {
                Some(text) => Record::parse(text).map_err(|e| e.to_string()),
                None => Err("LookupEvents returned no CloudTrailEvent".to_owned()),
            };
            match parsed {
                Ok(r) if keep(&r) => kept.push(r),
                Ok(_) => {}
                Err(reason) => missing.push(Missing {
                    call: "cloudtrail:LookupEvents".to_owned(),
                    target: ev.event_id.unwrap_or_else(|| target.clone()),
                    reason: format!("unreadable CloudTrail record: {reason}"),
                }),
            }
        }
        // By instance id, the newest launch record is all that is needed.
        if !kept.is_empty() && matches!(&query.key, TrailKey::ResourceName(r) if r.starts_with("i-")) {
            break;
        }
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    kept.sort_by_key(|r| std::cmp::Reverse(r.event_time));
    (kept, missing)
}

/// SimulatePrincipalPolicy once per principal, over every key of its instances. Root (not
/// limited by IAM) and service-linked roles (their policy cannot be changed) are not simulated;
/// keys that cannot be used at all are diagnosed from their state.
async fn simulate_all<C: Cloud>(cloud: &C, facts: &mut [Facts], opts: &Options) {
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

/// Whether a finding must look beyond the attached volumes for its keys: a terminated instance
/// that shows none (AWS removes a terminated instance's block device mappings and deletes its
/// DeleteOnTermination volumes), or whose volumes are gone.
fn needs_key_sources(f: &Facts) -> bool {
    f.state == EndState::Terminated
        && f.keys.is_empty()
        && (f.instance.attachments.is_empty() || f.volumes.iter().any(|v| v.encrypted.is_none()))
}

/// Answers asked once per region and batch: the same template, AMI or default key serves every
/// instance launched from it.
#[derive(Default)]
struct SourceCache {
    templates: BTreeMap<String, Result<VolumeKeys, CallError>>,
    images: BTreeMap<String, Result<VolumeKeys, CallError>>,
    default_key: BTreeMap<String, Result<Option<String>, CallError>>,
}

/// The keys a launch needed when the instance no longer shows its volumes, each with where it
/// came from, in this order: the RunInstances request's block device mappings, its launch
/// template, the AMI's snapshots, the account's EBS default key (when encryption by default
/// is on), and only when none of these names a key, the KMS calls EC2 made for the launch.
async fn discover_keys<C: Cloud>(
    cloud: &C,
    facts: &mut [Facts],
    key_map: &mut BTreeMap<KeyArn, KeyFacts>,
    aliases: &mut BTreeMap<KeyArn, Vec<String>>,
    opts: &Options,
) {
    let mut cache = SourceCache::default();
    let mut new_keys = BTreeSet::new();
    for f in facts.iter_mut().filter(|f| needs_key_sources(f)) {
        let found = key_sources(cloud, f, &mut cache, opts).await;
        for (key, source) in found {
            if !key_map.contains_key(&key) {
                new_keys.insert(key.clone());
            }
            if !f.key_sources.contains(&(key.clone(), source)) {
                f.key_sources.push((key, source));
            }
        }
    }
    let fetched: Vec<(KeyFacts, Vec<Missing>, Vec<String>)> =
        stream::iter(new_keys.iter().map(|k| key_facts(cloud, k))).buffered(opts.concurrency.max(1)).collect().await;
    let mut key_missing: BTreeMap<KeyArn, Vec<Missing>> = BTreeMap::new();
    for (kf, missing, names) in fetched {
        aliases.insert(kf.arn.clone(), names);
        key_missing.insert(kf.arn.clone(), missing);
        key_map.insert(kf.arn.clone(), kf);
    }
    for f in facts.iter_mut() {
        let keys: Vec<KeyArn> =
            f.key_sources.iter().map(|(k, _)| k.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        for k in &keys {
            if f.keys.iter().any(|kf| kf.arn == *k) {
                continue;
            }
            if let Some(kf) = key_map.get(k) {
                f.keys.push(kf.clone());
            }
            for m in key_missing.get(k).into_iter().flatten() {
                if !f.missing.contains(m) {
                    f.missing.push(m.clone());
                }
            }
            if is_supposed(f) {
                continue;
            }
            // The denied KMS calls on this key that belong to the launch.
            let window = match &f.launch {
                Some(l) => (l.event_time - Duration::minutes(1), l.event_time + Duration::minutes(15)),
                None => (f.observed_at - opts.lookback, f.observed_at + opts.slack),
            };
            let q = TrailQuery { key: TrailKey::ResourceName(k.to_string()), start: window.0, end: window.1 };
            let (records, mut missing) =
                trail_records(cloud, k.region(), &q, opts.max_pages.min(2), opts.deadline, |r| {
                    r.is_access_denied() && is_kms_use(&r.event_name)
                })
                .await;
            let mut denials = relevant_denials(records.iter(), f.launch.as_ref(), &f.instance.id, &f.volumes);
            denials.retain(|d| !f.kms_denials.iter().any(|known| known.event_id == d.event_id));
            f.kms_denials.append(&mut denials);
            f.missing.append(&mut missing);
        }
    }
}

/// One instance's keys from the sources, resolved to ARNs (ids and aliases via DescribeKey).
async fn key_sources<C: Cloud>(
    cloud: &C,
    f: &mut Facts,
    cache: &mut SourceCache,
    opts: &Options,
) -> Vec<(KeyArn, KeySource)> {
    let region = f.instance.region.clone();
    let mut raw: Vec<(String, KeySource)> = Vec::new();
    let mut wants_default = false;
    let launch = f.launch.clone().filter(|l| l.event_name == LaunchApi::RunInstances.as_str());
    if let Some(l) = &launch {
        raw.extend(l.request_keys.iter().map(|k| (k.clone(), KeySource::RunInstancesRequest)));
        wants_default |= l.request_default_key;
    }
    let template = launch.as_ref().and_then(|l| l.launch_template.clone()).or_else(|| f.instance.launch_template());
    let mut image = launch.as_ref().and_then(|l| l.image_id.clone());
    if let Some(t) = template {
        let label = format!(
            "{}@{}",
            t.id.as_deref().or(t.name.as_deref()).unwrap_or("?"),
            t.version.as_deref().unwrap_or("$Default")
        );
        if !cache.templates.contains_key(&label) {
            let r = cloud
                .launch_template_volumes(&region, &t)
                .instrument(info_span!("ec2.DescribeLaunchTemplateVersions", template = %label))
                .await;
            cache.templates.insert(label.clone(), r);
        }
        match cache.templates.get(&label) {
            Some(Ok(v)) => {
                raw.extend(v.keys.iter().map(|k| (k.clone(), KeySource::LaunchTemplate)));
                wants_default |= v.default_key || v.unencrypted;
                image = image.or_else(|| v.image_id.clone());
            }
            Some(Err(e)) => {
                f.missing.push(Missing { call: e.call.to_owned(), target: label, reason: e.message.clone() })
            }
            None => {}
        }
    }
    if let Some(image_id) = image.or_else(|| f.instance.image_id.clone()) {
        if !cache.images.contains_key(&image_id) {
            let r = cloud
                .image_volumes(&region, &image_id)
                .instrument(info_span!("ec2.DescribeImages", image = %image_id))
                .await;
            cache.images.insert(image_id.clone(), r);
        }
        match cache.images.get(&image_id) {
            Some(Ok(v)) => {
                raw.extend(v.keys.iter().map(|k| (k.clone(), KeySource::AmiSnapshot)));
                wants_default |= v.unencrypted;
            }
            Some(Err(e)) => {
                f.missing.push(Missing { call: e.call.to_owned(), target: image_id.clone(), reason: e.message.clone() })
            }
            None => {}
        }
    }
    if wants_default || raw.is_empty() {
        if !cache.default_key.contains_key(&region) {
            let r = cloud.ebs_default_key(&region).instrument(info_span!("ec2.GetEbsDefaultKmsKeyId")).await;
            cache.default_key.insert(region.clone(), r);
        }
        match cache.default_key.get(&region) {
            Some(Ok(Some(k))) => raw.push((k.clone(), KeySource::EbsDefault)),
            Some(Ok(None)) | None => {}
            Some(Err(e)) => {
                f.missing.push(Missing { call: e.call.to_owned(), target: region.clone(), reason: e.message.clone() })
            }
        }
    }
    if raw.is_empty() && !is_supposed(f) {
        raw.extend(ec2_kms_calls(cloud, f, opts).await.into_iter().map(|k| (k, KeySource::Cloudtrail)));
    }
    let mut out: Vec<(KeyArn, KeySource)> = Vec::new();
    for (id, source) in raw {
        let resolved = match KeyArn::resolve(&id, &f.instance.partition, &region, &f.instance.account) {
            Ok(k) => Ok(k),
            // An alias (name or ARN): DescribeKey knows its key.
            Err(_) => cloud.key_arn(&region, &id).instrument(info_span!("kms.DescribeKey", alias = %id)).await,
        };
        match resolved {
            Ok(k) if !out.contains(&(k.clone(), source)) => out.push((k, source)),
            Ok(_) => {}
            Err(e) => f.missing.push(Missing { call: e.call.to_owned(), target: id, reason: e.message }),
        }
    }
    out
}

/// The keys of the KMS calls EC2 made for this launch: by the launch caller through EC2, by
/// EC2's own identity for the instance, or naming one of its volumes (`aws:ebs:id`), within
/// minutes of the launch.
async fn ec2_kms_calls<C: Cloud>(cloud: &C, f: &mut Facts, opts: &Options) -> Vec<String> {
    let (start, end) = match &f.launch {
        Some(l) => (l.event_time - Duration::minutes(1), l.event_time + Duration::minutes(5)),
        None => (f.observed_at - opts.lookback, f.observed_at + opts.slack),
    };
    let mut keys = Vec::new();
    for name in ["CreateGrant", "GenerateDataKeyWithoutPlaintext", "Decrypt"] {
        let q = TrailQuery { key: TrailKey::EventName(name.to_owned()), start, end };
        let launch = f.launch.clone();
        let instance = f.instance.id.clone();
        let volumes = f.volumes.clone();
        let (records, missing) =
            trail_records(cloud, &f.instance.region, &q, opts.max_pages.min(2), opts.deadline, move |r| {
                let by_caller = launch.as_ref().is_some_and(|l| {
                    r.via_ec2
                        && matches!((&r.caller.principal_arn, &l.caller.principal_arn), (Some(a), Some(b)) if a == b)
                });
                let ours = r.volume_ids.iter().any(|v| volumes.iter().any(|x| x.volume_id == *v));
                by_caller || ours || r.acts_for_instance(&instance)
            })
            .await;
        f.missing.extend(missing);
        for r in &records {
            if let Some(k) = &r.key {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            if r.is_access_denied() && !f.kms_denials.iter().any(|d| d.event_id == r.event_id) {
                f.kms_denials.push(r.clone());
            }
        }
        if !keys.is_empty() {
            break;
        }
    }
    keys
}
