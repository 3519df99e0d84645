//! Auto Scaling groups: the launch each would make, as its service-linked role, from its template or configuration.

use super::*;
use crate::app::gather::Supposed;
use crate::core::cloudtrail::Caller;
use crate::core::facts::{EndState, Instance, Missing};
use crate::ports::Cloud;
use tracing::{info_span, Instrument};

/// An Auto Scaling group a check is about.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub arn: Option<String>,
}

pub(super) fn supposed(instance: Instance, state: EndState, caller: Caller) -> Supposed {
    Supposed { instance, state, caller, launch_template: None, image_id: None, default_key: false, missing: Vec::new() }
}

/// The account the region's resources belong to: an instance's owner, else the credentials'
/// (STS GetCallerIdentity).
pub(super) async fn account_of<C: Cloud>(cloud: &C, launches: &[(Supposed, String, Option<Group>)]) -> String {
    if let Some((l, _, _)) = launches.first() {
        return l.instance.account.clone();
    }
    cloud.account_id().await.unwrap_or_default()
}

/// A group's launch: a RunInstances by its service-linked role, from its launch template or
/// configuration. The stand-in instance has the group's name and no volumes.
pub(super) async fn group_launch<C: Cloud>(
    cloud: &C,
    region: &str,
    account: &str,
    g: crate::ports::AutoScalingGroup,
) -> (Supposed, String, Option<Group>) {
    let partition = crate::core::arn::partition_of_region(region);
    // DescribeAutoScalingGroups: ServiceLinkedRoleARN, by default AWSServiceRoleForAutoScaling.
    let role = g.service_linked_role_arn.clone().unwrap_or_else(|| {
        format!(
            "arn:{partition}:iam::{account}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
        )
    });
    let caller = caller_for(&role).unwrap_or_else(|_| Caller::unknown());
    let instance = Instance {
        id: g.name.clone(),
        account: account.to_owned(),
        partition: partition.to_owned(),
        region: region.to_owned(),
        state: Some(EndState::Terminated),
        state_name: "pending".to_owned(),
        state_reason: None,
        attachments: Vec::new(),
        tags: Vec::new(),
        image_id: None,
    };
    let mut launch = supposed(instance, EndState::Terminated, caller);
    launch.launch_template = g.launch_template.clone();
    if let (None, Some(lc)) = (&g.launch_template, &g.launch_configuration) {
        match cloud
            .launch_configuration_volumes(region, lc)
            .instrument(info_span!("autoscaling.DescribeLaunchConfigurations", name = %lc))
            .await
        {
            Ok(v) => {
                launch.image_id = v.image_id;
                launch.default_key = v.default_key || v.unencrypted;
            }
            Err(e) => launch.missing.push(Missing { call: e.call.to_owned(), target: lc.clone(), reason: e.message }),
        }
    }
    (launch, role, Some(Group { name: g.name, arn: g.arn }))
}
