//! CloudTrail: the launch call and the denied KMS calls near it, by instance (few) or over one window (many).

use super::*;
use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{LaunchApi, Record};
use crate::core::facts::{Facts, Missing, Volume};
use crate::ports::{Cloud, TrailKey, TrailQuery};
use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};
use std::collections::BTreeSet;
use tracing::{info_span, Instrument};

/// KMS calls EC2 makes (or has the caller make) to use a volume's key.
pub(super) fn is_kms_use(event_name: &str) -> bool {
    matches!(
        event_name,
        "CreateGrant" | "GenerateDataKeyWithoutPlaintext" | "GenerateDataKey" | "Decrypt" | "ReEncrypt" | "DescribeKey"
    )
}

/// What CloudTrail says about one instance.
#[derive(Default)]
pub(super) struct Trail {
    pub(super) launch: Option<Record>,
    pub(super) denials: Vec<Record>,
    pub(super) missing: Vec<Missing>,
    /// The window searched for the launch call.
    pub(super) window: Option<crate::core::report::Window>,
}

pub(super) fn window_of(start: DateTime<Utc>, end: DateTime<Utc>) -> Option<crate::core::report::Window> {
    Some(crate::core::report::Window {
        start: crate::core::decide::rfc3339(start),
        end: crate::core::decide::rfc3339(end),
    })
}

pub(super) async fn trail_evidence<C: Cloud>(
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
pub(super) fn pick_launch<'a>(records: impl Iterator<Item = &'a Record> + Clone, c: &Candidate) -> Option<Record> {
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

/// The denied KMS calls that belong to this instance's launch, newest first, at most
/// [`MAX_DENIALS`]. A denial belongs to it when it names one of the instance's volumes (EC2's
/// grant constraint `aws:ebs:id`), when EC2's own identity made it for this instance, or when
/// the launch's caller (the same principal or session) made it within seconds to minutes of
/// the launch, as EC2's CreateGrant on the caller's behalf is. Without a launch record only the
/// first two can tie a denial to the instance: anyone else denied a KMS call on the same key
/// near the failure is unrelated, and never evidence, in instance and window mode alike.
pub(super) fn relevant_denials<'a>(
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

pub(super) fn record_key_matches(r: &Record, key: &KeyArn) -> bool {
    r.key
        .as_deref()
        .is_some_and(|k| k == key.to_string() || k == key.key_id() || k.ends_with(&format!("key/{}", key.key_id())))
}

/// Few instances: LookupEvents by instance id, then each key's denied calls right after the
/// launch (EC2 asks for the grant within seconds).
pub(super) async fn instance_trail<C: Cloud>(cloud: &C, c: &Candidate, volumes: &[Volume], opts: &Options) -> Trail {
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
pub(super) async fn window_trail<C: Cloud>(
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
pub(super) async fn trail_records<C: Cloud>(
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

/// The keys of the KMS calls EC2 made for this launch: by the launch caller through EC2, by
/// EC2's own identity for the instance, or naming one of its volumes (`aws:ebs:id`), within
/// minutes of the launch.
pub(super) async fn ec2_kms_calls<C: Cloud>(cloud: &C, f: &mut Facts, opts: &Options) -> Vec<String> {
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
