//! Keys: DescribeKey, GetKeyPolicy and aliases once per key; and the keys a launch names besides its volumes (template, AMI, EBS default, CloudTrail).

use super::suppose::is_supposed;
use super::trail::{ec2_kms_calls, is_kms_use, relevant_denials, trail_records};
use super::*;
use crate::core::arn::KeyArn;
use crate::core::cloudtrail::LaunchApi;
use crate::core::facts::{EndState, Facts, KeyFacts, Missing};
use crate::core::report::KeySource;
use crate::ports::{CallError, Cloud, TrailKey, TrailQuery, VolumeKeys};
use chrono::Duration;
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info_span, Instrument};

/// Every key of a batch, asked once: its facts and aliases (what could not be read goes to
/// the gaps).
#[derive(Default)]
pub(super) struct Keyring {
    pub(super) facts: BTreeMap<KeyArn, KeyFacts>,
    pub(super) aliases: BTreeMap<KeyArn, Vec<String>>,
}

pub(super) async fn keyring<C: Cloud>(cloud: &C, keys: &[KeyArn], gaps: &mut Gaps, opts: &Options) -> Keyring {
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

/// DescribeKey, GetKeyPolicy and ListAliases (names for people), concurrently.
pub(super) async fn key_facts<C: Cloud>(cloud: &C, key: &KeyArn) -> KeyGathered {
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

/// Whether a finding must look beyond the attached volumes for its keys: a terminated instance
/// that shows none (AWS removes a terminated instance's block device mappings and deletes its
/// DeleteOnTermination volumes), or whose volumes are gone.
pub(super) fn needs_key_sources(f: &Facts) -> bool {
    f.state == EndState::Terminated
        && f.keys.is_empty()
        && (f.instance.attachments.is_empty() || f.volumes.iter().any(|v| v.encrypted.is_none()))
}

/// Answers asked once per region and batch: the same template, AMI or default key serves every
/// instance launched from it.
#[derive(Default)]
pub(super) struct SourceCache {
    pub(super) templates: BTreeMap<String, Result<VolumeKeys, CallError>>,
    pub(super) images: BTreeMap<String, Result<VolumeKeys, CallError>>,
    pub(super) default_key: BTreeMap<String, Result<Option<String>, CallError>>,
}

/// The keys a launch needed when the instance no longer shows its volumes, each with where it
/// came from, in this order: the RunInstances request's block device mappings, its launch
/// template, the AMI's snapshots, the account's EBS default key (when encryption by default
/// is on), and only when none of these names a key, the KMS calls EC2 made for the launch.
pub(super) async fn discover_keys<C: Cloud>(
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
pub(super) async fn key_sources<C: Cloud>(
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
