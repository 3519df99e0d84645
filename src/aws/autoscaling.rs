//! Auto Scaling: groups and launch configurations, for preflight.

use super::*;
use crate::ports::{CallError, VolumeKeys};

pub(super) async fn auto_scaling_groups(
    aws: &AwsCloud,
    region: &str,
) -> Result<Vec<crate::ports::AutoScalingGroup>, CallError> {
    let client = aws.clients(region).autoscaling;
    all_pages(|token| {
        let request = client.describe_auto_scaling_groups().max_records(100).set_next_token(token);
        async move {
            let resp = request.send().await.map_err(|e| call_error("autoscaling:DescribeAutoScalingGroups", e))?;
            let groups = resp
                .auto_scaling_groups()
                .iter()
                .map(|g| {
                    let spec = g.launch_template().or_else(|| {
                        g.mixed_instances_policy()
                            .and_then(|m| m.launch_template())
                            .and_then(|t| t.launch_template_specification())
                    });
                    crate::ports::AutoScalingGroup {
                        name: g.auto_scaling_group_name().unwrap_or_default().to_owned(),
                        arn: g.auto_scaling_group_arn().map(str::to_owned),
                        service_linked_role_arn: g.service_linked_role_arn().map(str::to_owned),
                        launch_template: spec.map(|t| crate::core::cloudtrail::LaunchTemplateRef {
                            id: t.launch_template_id().map(str::to_owned),
                            name: t.launch_template_name().map(str::to_owned),
                            version: t.version().map(str::to_owned),
                        }),
                        launch_configuration: g.launch_configuration_name().map(str::to_owned),
                    }
                })
                .collect();
            Ok((groups, resp.next_token().map(str::to_owned)))
        }
    })
    .await
}

pub(super) async fn launch_configuration_volumes(
    aws: &AwsCloud,
    region: &str,
    name: &str,
) -> Result<VolumeKeys, CallError> {
    const CALL: &str = "autoscaling:DescribeLaunchConfigurations";
    let resp = aws
        .clients(region)
        .autoscaling
        .describe_launch_configurations()
        .launch_configuration_names(name)
        .send()
        .await
        .map_err(|e| call_error(CALL, e))?;
    let lc = resp.launch_configurations().first().ok_or_else(|| other(CALL, format!("{name} not found")))?;
    let mut out = VolumeKeys { image_id: lc.image_id().map(str::to_owned), ..VolumeKeys::default() };
    // A launch configuration cannot name a KMS key: an encrypted volume gets the account's
    // EBS default key, or its snapshot's key (AWS::AutoScaling::LaunchConfiguration
    // BlockDevice: "Encrypted", no KmsKeyId).
    for ebs in lc.block_device_mappings().iter().filter_map(|m| m.ebs()) {
        match ebs.encrypted() {
            Some(true) if ebs.snapshot_id().is_none() => out.default_key = true,
            Some(true) => {}
            _ => out.unencrypted = true,
        }
    }
    Ok(out)
}
