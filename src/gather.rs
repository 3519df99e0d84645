//! Gathering: the AWS calls for one region's failed launches, made as concurrently as their
//! dependencies allow, turned into [`Facts`]. A failed call becomes a [`Missing`] entry and the
//! diagnosis goes on with what it has; only DescribeInstances is essential (without it there
//! is no launch failure to confirm).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use futures_util::future::join_all;
use tracing::{info_span, Instrument};

use crate::arn::KeyArn;
use crate::cloud::{CallError, Cloud, SimulationRequest, TrailQuery};
use crate::cloudtrail::{LaunchApi, PrincipalKind, Record};
use crate::decide::{decide, needed_actions};
use crate::facts::{EndState, Facts, Instance, KeyFacts, Missing, StateReason, Volume};
use crate::report::{Report, Skipped};

/// An instance to diagnose, and when its state change was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub instance_id: String,
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// How far before the state change to look for the launch call.
    pub lookback: Duration,
    /// How far after it (clock skew, a launch that took a while to fail).
    pub slack: Duration,
    /// Bound on LookupEvents pages per query, so a busy instance cannot run up the bill.
    pub max_pages: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { lookback: Duration::hours(1), slack: Duration::minutes(5), max_pages: 10 }
    }
}

/// Diagnoses `targets` in one region. Only a failed DescribeInstances is an error.
pub async fn diagnose<C: Cloud>(cloud: &C, region: &str, targets: &[Target], opts: &Options) -> Result<Report, CallError> {
    let mut report = Report::default();
    let mut seen = BTreeSet::new();
    let targets: Vec<&Target> = targets.iter().filter(|t| seen.insert(t.instance_id.clone())).collect();
    if targets.is_empty() {
        return Ok(report);
    }
    let ids: Vec<String> = targets.iter().map(|t| t.instance_id.clone()).collect();
    let instances = cloud
        .describe_instances(region, &ids)
        .instrument(info_span!("ec2.DescribeInstances", region, count = ids.len()))
        .await?;

    let mut work = Vec::new();
    for target in targets {
        let Some(instance) = instances.iter().find(|i| i.id == target.instance_id) else {
            report.skipped.push(Skipped {
                instance_id: Some(target.instance_id.clone()),
                reason: format!("instance no longer exists in {region} (DescribeInstances does not return it)"),
            });
            continue;
        };
        match confirm(instance) {
            Ok((state, reason)) => work.push(gather(cloud, instance, state, reason, target.observed_at, opts)),
            Err(reason) => report.skipped.push(Skipped { instance_id: Some(instance.id.clone()), reason }),
        }
    }
    for facts in join_all(work).await {
        report.findings.push(decide(&facts));
    }
    Ok(report)
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

async fn gather<C: Cloud>(
    cloud: &C,
    instance: &Instance,
    state: EndState,
    state_reason: StateReason,
    observed_at: DateTime<Utc>,
    opts: &Options,
) -> Facts {
    let span = info_span!("diagnose", instance_id = %instance.id, region = %instance.region);
    async move {
        let mut missing = Vec::new();
        let volumes = volumes(cloud, instance, &mut missing).await;
        let keys: Vec<KeyArn> = volumes
            .iter()
            .filter_map(|v| v.kms_key_arn.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let window = TrailQuery {
            resource_name: instance.id.clone(),
            start: observed_at - opts.lookback,
            end: observed_at + opts.slack,
        };

        let key_work = join_all(keys.iter().map(|k| key_facts(cloud, k)));
        let (key_results, (launch, mut launch_missing)) =
            tokio::join!(key_work, launch_record(cloud, instance, state, &window, opts));
        missing.append(&mut launch_missing);

        // EC2 asks KMS for the grant right after the launch call: search just after it when we
        // know when that was, else the whole window, with fewer pages.
        let denial_window = |key: &KeyArn| match &launch {
            Some(r) => TrailQuery {
                resource_name: key.to_string(),
                start: r.event_time - Duration::minutes(1),
                end: (r.event_time + Duration::minutes(15)).min(window.end),
            },
            None => TrailQuery { resource_name: key.to_string(), ..window.clone() },
        };
        let denial_opts = Options { max_pages: if launch.is_some() { opts.max_pages } else { opts.max_pages.min(2) }, ..opts.clone() };
        let denial_work = join_all(keys.iter().map(|k| {
            let q = denial_window(k);
            let o = &denial_opts;
            async move { trail_records(cloud, k.region(), &q, o, |r| r.is_access_denied() && is_kms_use(&r.event_name)).await }
        }))
        .await;

        let mut key_facts_list = Vec::new();
        for (facts, mut m) in key_results {
            key_facts_list.push(facts);
            missing.append(&mut m);
        }
        let mut kms_denials = Vec::new();
        for (mut denials, mut m) in denial_work {
            kms_denials.append(&mut denials);
            missing.append(&mut m);
        }
        kms_denials.sort_by(|a, b| b.event_time.cmp(&a.event_time));

        let mut facts = Facts {
            instance: instance.clone(),
            state,
            state_reason,
            observed_at,
            volumes,
            keys: key_facts_list,
            launch,
            kms_denials,
            simulations: Vec::new(),
            missing,
        };
        simulate(cloud, &mut facts).await;
        facts
    }
    .instrument(span)
    .await
}

async fn volumes<C: Cloud>(cloud: &C, instance: &Instance, missing: &mut Vec<Missing>) -> Vec<Volume> {
    let ids: Vec<String> = instance.attachments.iter().map(|a| a.volume_id.clone()).collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let described = cloud
        .describe_volumes(&instance.region, &ids)
        .instrument(info_span!("ec2.DescribeVolumes", count = ids.len()))
        .await;
    let infos = match described {
        Ok(v) => v,
        Err(e) => {
            missing.push(Missing { call: e.call.to_owned(), target: ids.join(","), reason: e.message });
            Vec::new()
        }
    };
    instance
        .attachments
        .iter()
        .map(|a| {
            let info = infos.iter().find(|v| v.volume_id == a.volume_id);
            let kms_key_arn = info.and_then(|v| v.kms_key_id.as_deref()).and_then(|id| {
                KeyArn::resolve(id, &instance.partition, &instance.region, &instance.account)
                    .map_err(|e| missing.push(Missing { call: "ec2:DescribeVolumes".to_owned(), target: a.volume_id.clone(), reason: e.to_string() }))
                    .ok()
            });
            Volume {
                volume_id: a.volume_id.clone(),
                device: a.device.clone(),
                encrypted: info.map(|v| v.encrypted),
                kms_key_arn,
            }
        })
        .collect()
}

/// DescribeKey and GetKeyPolicy, concurrently.
async fn key_facts<C: Cloud>(cloud: &C, key: &KeyArn) -> (KeyFacts, Vec<Missing>) {
    let span = info_span!("key", key_arn = %key);
    async move {
        let (meta, policy) = tokio::join!(
            cloud.describe_key(key).instrument(info_span!("kms.DescribeKey")),
            cloud.get_key_policy(key).instrument(info_span!("kms.GetKeyPolicy")),
        );
        let mut missing = Vec::new();
        let mut note = |e: CallError| missing.push(Missing { call: e.call.to_owned(), target: key.to_string(), reason: e.message });
        let metadata = meta.map_err(&mut note).ok();
        let policy = policy.map_err(&mut note).ok();
        (KeyFacts { arn: key.clone(), metadata, policy }, missing)
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

/// The latest successful StartInstances/RunInstances naming the instance in the window; the
/// API matching the end state wins over the other one.
async fn launch_record<C: Cloud>(cloud: &C, instance: &Instance, state: EndState, window: &TrailQuery, opts: &Options) -> (Option<Record>, Vec<Missing>) {
    let id = instance.id.clone();
    let (records, missing) = trail_records(cloud, &instance.region, window, opts, |r| {
        r.error_code.is_none() && LaunchApi::parse(&r.event_name).is_some() && r.instance_ids.iter().any(|i| *i == id)
    })
    .await;
    let expected = state.launch_api().as_str();
    let best = records.iter().find(|r| r.event_name == expected).or_else(|| records.first()).cloned();
    (best, missing)
}

/// Pages through LookupEvents, keeping the records `keep` accepts (newest first). Records that
/// cannot be parsed are reported as missing evidence, not dropped silently.
async fn trail_records<C: Cloud>(
    cloud: &C,
    region: &str,
    query: &TrailQuery,
    opts: &Options,
    keep: impl Fn(&Record) -> bool,
) -> (Vec<Record>, Vec<Missing>) {
    let mut kept = Vec::new();
    let mut missing = Vec::new();
    let mut token: Option<String> = None;
    for page_no in 0..opts.max_pages {
        let page = cloud
            .lookup_events(region, query, token.as_deref())
            .instrument(info_span!("cloudtrail.LookupEvents", resource = %query.resource_name, page = page_no))
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                missing.push(Missing { call: e.call.to_owned(), target: query.resource_name.clone(), reason: e.message });
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
                    target: ev.event_id.unwrap_or_else(|| query.resource_name.clone()),
                    reason: format!("unreadable CloudTrail record: {reason}"),
                }),
            }
        }
        // The newest matching launch record is all the launch query needs.
        if !kept.is_empty() && query.resource_name.starts_with("i-") {
            break;
        }
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    kept.sort_by(|a, b| b.event_time.cmp(&a.event_time));
    (kept, missing)
}

/// SimulatePrincipalPolicy for the caller on every key, once. Root (not limited by IAM) and
/// service-linked roles (their policy cannot be changed) are not simulated.
async fn simulate<C: Cloud>(cloud: &C, facts: &mut Facts) {
    let Some(caller) = facts.caller() else { return };
    let Some(principal) = caller.principal_arn.clone() else { return };
    if !matches!(
        caller.principal_kind,
        PrincipalKind::User | PrincipalKind::Role | PrincipalKind::SsoRole | PrincipalKind::Federated
    ) {
        return;
    }
    // Keys that cannot be used at all are diagnosed from their state; skip them here.
    let resources: Vec<String> = facts
        .keys
        .iter()
        .filter(|k| k.metadata.as_ref().is_none_or(|m| m.state == crate::facts::KeyState::Enabled))
        .map(|k| k.arn.to_string())
        .collect();
    if resources.is_empty() {
        return;
    }
    let request = SimulationRequest {
        principal_arn: principal.clone(),
        actions: needed_actions(facts.state),
        resources,
        region: facts.instance.region.clone(),
    };
    match cloud.simulate(&request).instrument(info_span!("iam.SimulatePrincipalPolicy", principal = %principal)).await {
        Ok(sims) => facts.simulations = sims,
        Err(e) => facts.missing.push(Missing { call: e.call.to_owned(), target: principal, reason: e.message }),
    }
}
