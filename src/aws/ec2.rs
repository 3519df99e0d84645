//! EC2: instances, volumes, regions, launch templates, AMIs, EBS encryption by default, StartInstances.

use super::*;
use crate::core::facts::{Attachment, EndState, Instance, StateReason};
use crate::ports::{CallError, FailureKind, VolumeInfo, VolumeKeys};

pub(super) fn instance_of(region: &str, owner: &str, i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let id = i.instance_id()?.to_owned();
    let state_name =
        i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_else(|| "unknown".to_owned());
    let state_reason = i.state_reason().map(|r| StateReason {
        code: r.code().unwrap_or_default().to_owned(),
        message: r.message().unwrap_or_default().to_owned(),
    });
    let attachments = i
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            Some(Attachment {
                volume_id: m.ebs()?.volume_id()?.to_owned(),
                device: m.device_name().unwrap_or_default().to_owned(),
            })
        })
        .collect();
    Some(Instance {
        id,
        account: owner.to_owned(),
        partition: crate::core::arn::partition_of_region(region).to_owned(),
        region: region.to_owned(),
        state: EndState::parse(&state_name),
        state_name,
        state_reason,
        attachments,
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect(),
        image_id: i.image_id().map(str::to_owned),
    })
}

pub(super) async fn describe_instances(
    aws: &AwsCloud,
    region: &str,
    ids: &[String],
) -> Result<Vec<Instance>, CallError> {
    aws.describe_instances_by_id(region, ids).await
}

pub(super) async fn describe_failed_instances(aws: &AwsCloud, region: &str) -> Result<Vec<Instance>, CallError> {
    use aws_sdk_ec2::types::Filter;
    let request = aws
        .clients(region)
        .ec2
        .describe_instances()
        .filters(Filter::builder().name("instance-state-name").values("stopped").values("terminated").build())
        // AWS has reported Code Server.InternalError with a Client.InternalError message.
        .filters(
            Filter::builder()
                .name("state-reason-code")
                .values("Client.InternalError")
                .values("Server.InternalError")
                .build(),
        )
        .max_results(1000);
    instances_of(region, request).await
}

/// Every page of one DescribeInstances request (its ids or filters set), as domain instances.
async fn instances_of(
    region: &str,
    request: aws_sdk_ec2::operation::describe_instances::builders::DescribeInstancesFluentBuilder,
) -> Result<Vec<Instance>, CallError> {
    all_pages(|token| {
        let request = request.clone().set_next_token(token);
        async move {
            let resp = request.send().await.map_err(|e| call_error("ec2:DescribeInstances", e))?;
            let instances = resp
                .reservations()
                .iter()
                .flat_map(|r| {
                    let owner = r.owner_id().unwrap_or_default();
                    r.instances().iter().filter_map(move |i| instance_of(region, owner, i))
                })
                .collect();
            Ok((instances, resp.next_token().map(str::to_owned)))
        }
    })
    .await
}

pub(super) async fn describe_regions(aws: &AwsCloud) -> Result<Vec<String>, CallError> {
    let region = aws.default_region().unwrap_or_else(|| "us-east-1".to_owned());
    let resp =
        aws.clients(&region).ec2.describe_regions().send().await.map_err(|e| call_error("ec2:DescribeRegions", e))?;
    let mut out: Vec<String> = resp.regions().iter().filter_map(|r| r.region_name().map(str::to_owned)).collect();
    out.sort();
    Ok(out)
}

pub(super) async fn describe_volumes(
    aws: &AwsCloud,
    region: &str,
    ids: &[String],
) -> Result<Vec<VolumeInfo>, CallError> {
    let resp = aws
        .clients(region)
        .ec2
        .describe_volumes()
        .set_volume_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| call_error("ec2:DescribeVolumes", e))?;
    Ok(resp
        .volumes()
        .iter()
        .filter_map(|v| {
            Some(VolumeInfo {
                volume_id: v.volume_id()?.to_owned(),
                encrypted: v.encrypted(),
                kms_key_id: v.kms_key_id().map(str::to_owned),
            })
        })
        .collect())
}

pub(super) async fn launch_template_volumes(
    aws: &AwsCloud,
    region: &str,
    template: &crate::core::cloudtrail::LaunchTemplateRef,
) -> Result<VolumeKeys, CallError> {
    const CALL: &str = "ec2:DescribeLaunchTemplateVersions";
    let resp = aws
        .clients(region)
        .ec2
        .describe_launch_template_versions()
        .set_launch_template_id(template.id.clone())
        .set_launch_template_name(if template.id.is_some() { None } else { template.name.clone() })
        .versions(template.version.clone().unwrap_or_else(|| "$Default".to_owned()))
        .send()
        .await
        .map_err(|e| call_error(CALL, e))?;
    let data = resp
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
        .ok_or_else(|| other(CALL, "no such launch template version"))?;
    let mut out = VolumeKeys { image_id: data.image_id().map(str::to_owned), ..VolumeKeys::default() };
    for ebs in data.block_device_mappings().iter().filter_map(|m| m.ebs()) {
        match (ebs.kms_key_id(), ebs.encrypted()) {
            (Some(k), _) if !k.is_empty() => out.keys.push(k.to_owned()),
            (_, Some(true)) => out.default_key = true,
            _ => out.unencrypted = true,
        }
    }
    Ok(out)
}

pub(super) async fn image_volumes(aws: &AwsCloud, region: &str, image_id: &str) -> Result<VolumeKeys, CallError> {
    let ec2 = aws.clients(region).ec2;
    let resp =
        ec2.describe_images().image_ids(image_id).send().await.map_err(|e| call_error("ec2:DescribeImages", e))?;
    let image = resp.images().first().ok_or_else(|| other("ec2:DescribeImages", format!("{image_id} not found")))?;
    let mut out = VolumeKeys::default();
    let mut snapshots = Vec::new();
    for ebs in image.block_device_mappings().iter().filter_map(|m| m.ebs()) {
        match (ebs.kms_key_id(), ebs.snapshot_id()) {
            (Some(k), _) if !k.is_empty() => out.keys.push(k.to_owned()),
            (_, Some(s)) => snapshots.push(s.to_owned()),
            _ => out.unencrypted = true,
        }
    }
    if !snapshots.is_empty() {
        let resp = ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(snapshots))
            .send()
            .await
            .map_err(|e| call_error("ec2:DescribeSnapshots", e))?;
        for snap in resp.snapshots() {
            match snap.kms_key_id() {
                Some(k) if snap.encrypted() == Some(true) && !k.is_empty() => out.keys.push(k.to_owned()),
                _ => out.unencrypted = true,
            }
        }
    }
    Ok(out)
}

pub(super) async fn ebs_default_key(aws: &AwsCloud, region: &str) -> Result<Option<String>, CallError> {
    let ec2 = aws.clients(region).ec2;
    let on = ec2
        .get_ebs_encryption_by_default()
        .send()
        .await
        .map_err(|e| call_error("ec2:GetEbsEncryptionByDefault", e))?
        .ebs_encryption_by_default()
        .unwrap_or(false);
    if !on {
        return Ok(None);
    }
    let resp = ec2.get_ebs_default_kms_key_id().send().await.map_err(|e| call_error("ec2:GetEbsDefaultKmsKeyId", e))?;
    Ok(resp.kms_key_id().map(str::to_owned))
}

pub(super) async fn scoped_instances(
    aws: &AwsCloud,
    region: &str,
    scope: &crate::ports::InstanceScope,
) -> Result<Vec<Instance>, CallError> {
    use aws_sdk_ec2::types::Filter;
    /// EC2 takes at most 200 values in one filter.
    const FILTER_VALUES: usize = 200;
    let ec2 = aws.clients(region).ec2;
    // A filter, not InstanceIds: one id that does not exist (or is in another region) would
    // fail the whole call with InvalidInstanceID.NotFound.
    let chunks: Vec<Option<&[String]>> =
        if scope.ids.is_empty() { vec![None] } else { scope.ids.chunks(FILTER_VALUES).map(Some).collect() };
    let mut out = Vec::new();
    for chunk in chunks {
        let mut request = match chunk {
            None => ec2
                .describe_instances()
                .filters(Filter::builder().name("instance-state-name").values("stopped").build())
                .max_results(1000),
            Some(ids) => ec2
                .describe_instances()
                .filters(Filter::builder().name("instance-id").set_values(Some(ids.to_vec())).build()),
        };
        if let Some((k, v)) = &scope.tag {
            request = request.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
        }
        out.extend(instances_of(region, request).await?);
    }
    Ok(out)
}

pub(super) async fn start_instance(aws: &AwsCloud, region: &str, instance_id: &str) -> Result<String, CallError> {
    let r = aws
        .clients(region)
        .ec2
        .start_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| call_error("ec2:StartInstances", e))?;
    r.starting_instances()
        .iter()
        .find(|i| i.instance_id() == Some(instance_id))
        .and_then(|i| i.current_state())
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned())
        .ok_or_else(|| {
            other(
                "ec2:StartInstances",
                "the response does not say the instance is starting (partial or unreadable answer)",
            )
        })
}

impl AwsCloud {
    pub(super) async fn describe_instances_page(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<Vec<Instance>, CallError> {
        let request = self.clients(region).ec2.describe_instances().set_instance_ids(Some(ids.to_vec()));
        let out = instances_of(region, request).await?;
        // EC2 answers an unknown id with InvalidInstanceID.NotFound, never by leaving it out: an
        // id missing from a successful answer means the answer was cut short or unreadable.
        if let Some(absent) = ids.iter().find(|id| !out.iter().any(|i| i.id == **id)) {
            return Err(other(
                "ec2:DescribeInstances",
                format!("the response does not describe {absent} (partial or unreadable answer)"),
            ));
        }
        Ok(out)
    }

    /// DescribeInstances, falling back to one id at a time when one id is unknown; ids EC2 does
    /// not know are left out.
    pub(super) async fn describe_instances_by_id(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<Vec<Instance>, CallError> {
        match self.describe_instances_page(region, ids).await {
            // One unknown id fails the whole call: ask for each id alone to keep the others.
            Err(e) if e.kind == FailureKind::NotFound && ids.len() > 1 => {
                let mut out = Vec::new();
                for id in ids {
                    match self.describe_instances_page(region, std::slice::from_ref(id)).await {
                        Ok(mut found) => out.append(&mut found),
                        Err(e) if e.kind == FailureKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            }
            Err(e) if e.kind == FailureKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    }
}
