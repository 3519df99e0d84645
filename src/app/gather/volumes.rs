//! Volumes: one DescribeVolumes per 200, and each instance's volumes with their keys.

use super::*;
use crate::core::arn::KeyArn;
use crate::core::facts::{Instance, Missing, Volume};
use crate::ports::{CallError, Cloud, VolumeInfo};
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{info_span, Instrument};

/// DescribeVolumes for every attached volume, 200 ids per call.
pub(super) async fn describe_volumes<C: Cloud>(
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

pub(super) fn volumes_of(instance: &Instance, infos: &BTreeMap<String, VolumeInfo>, gaps: &mut Gaps) -> Vec<Volume> {
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
