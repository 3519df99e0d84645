//! The ports on the AWS SDKs: each call is boxed here, so a caller's future holds a pointer
//! to the SDK's (large) future, not the future itself, and the default thread stacks suffice.

use std::future::Future;

use super::*;
use crate::core::arn::KeyArn;
use crate::core::facts::{Instance, KeyMetadata, Simulation};
use crate::ports::{CallError, SimulationRequest, TrailPage, TrailQuery, VolumeInfo, VolumeKeys};

impl crate::ports::Cloud for AwsCloud {
    fn caller_arn(&self) -> impl Future<Output = Result<String, CallError>> + Send {
        Box::pin(AwsCloud::caller_arn(self))
    }

    fn role_with_path(&self, role_arn: &str) -> impl Future<Output = String> + Send {
        Box::pin(self.resolve_role_path(role_arn))
    }

    fn describe_instances(
        &self,
        region: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Instance>, CallError>> + Send {
        Box::pin(ec2::describe_instances(self, region, ids))
    }

    fn describe_failed_instances(&self, region: &str) -> impl Future<Output = Result<Vec<Instance>, CallError>> + Send {
        Box::pin(ec2::describe_failed_instances(self, region))
    }

    fn describe_regions(&self) -> impl Future<Output = Result<Vec<String>, CallError>> + Send {
        Box::pin(ec2::describe_regions(self))
    }

    fn describe_volumes(
        &self,
        region: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<VolumeInfo>, CallError>> + Send {
        Box::pin(ec2::describe_volumes(self, region, ids))
    }

    fn describe_key(&self, key: &KeyArn) -> impl Future<Output = Result<KeyMetadata, CallError>> + Send {
        Box::pin(kms::describe_key(self, key))
    }

    fn get_key_policy(&self, key: &KeyArn) -> impl Future<Output = Result<String, CallError>> + Send {
        Box::pin(kms::get_key_policy(self, key))
    }

    fn list_aliases(&self, key: &KeyArn) -> impl Future<Output = Result<Vec<String>, CallError>> + Send {
        Box::pin(kms::list_aliases(self, key))
    }

    fn lookup_events(
        &self,
        region: &str,
        query: &TrailQuery,
        next_token: Option<&str>,
    ) -> impl Future<Output = Result<TrailPage, CallError>> + Send {
        Box::pin(cloudtrail::lookup_events(self, region, query, next_token))
    }

    fn simulate(&self, request: &SimulationRequest) -> impl Future<Output = Result<Vec<Simulation>, CallError>> + Send {
        Box::pin(iam::simulate(self, request))
    }

    fn permissions_boundary(
        &self,
        principal_arn: &str,
    ) -> impl Future<Output = Result<Option<String>, CallError>> + Send {
        Box::pin(iam::permissions_boundary(self, principal_arn))
    }

    fn key_arn(&self, region: &str, key_id: &str) -> impl Future<Output = Result<KeyArn, CallError>> + Send {
        Box::pin(kms::key_arn(self, region, key_id))
    }

    fn launch_template_volumes(
        &self,
        region: &str,
        template: &crate::core::cloudtrail::LaunchTemplateRef,
    ) -> impl Future<Output = Result<VolumeKeys, CallError>> + Send {
        Box::pin(ec2::launch_template_volumes(self, region, template))
    }

    fn image_volumes(
        &self,
        region: &str,
        image_id: &str,
    ) -> impl Future<Output = Result<VolumeKeys, CallError>> + Send {
        Box::pin(ec2::image_volumes(self, region, image_id))
    }

    fn ebs_default_key(&self, region: &str) -> impl Future<Output = Result<Option<String>, CallError>> + Send {
        Box::pin(ec2::ebs_default_key(self, region))
    }

    fn account_id(&self) -> impl Future<Output = Result<String, CallError>> + Send {
        Box::pin(accounts::account_id(self))
    }

    fn in_account(&self, account: &str) -> impl Future<Output = Result<Option<Self>, CallError>> + Send {
        Box::pin(accounts::in_account(self, account))
    }

    fn scoped_instances(
        &self,
        region: &str,
        scope: &crate::ports::InstanceScope,
    ) -> impl Future<Output = Result<Vec<Instance>, CallError>> + Send {
        Box::pin(ec2::scoped_instances(self, region, scope))
    }

    fn auto_scaling_groups(
        &self,
        region: &str,
    ) -> impl Future<Output = Result<Vec<crate::ports::AutoScalingGroup>, CallError>> + Send {
        Box::pin(autoscaling::auto_scaling_groups(self, region))
    }

    fn launch_configuration_volumes(
        &self,
        region: &str,
        name: &str,
    ) -> impl Future<Output = Result<VolumeKeys, CallError>> + Send {
        Box::pin(autoscaling::launch_configuration_volumes(self, region, name))
    }
}

impl crate::ports::Effects for AwsCloud {
    fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, CallError>> + Send {
        Box::pin(notify::publish(self, topic_arn, subject, body, attributes))
    }

    fn existing_findings(
        &self,
        region: &str,
        product_arn: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<std::collections::BTreeMap<String, (String, String)>, CallError>> + Send {
        Box::pin(securityhub::existing_findings(self, region, product_arn, ids))
    }

    fn open_findings(
        &self,
        region: &str,
        product_arn: &str,
        resource_ids: &[String],
    ) -> impl Future<Output = Result<Vec<crate::core::message::Asff>, CallError>> + Send {
        Box::pin(securityhub::open_findings(self, region, product_arn, resource_ids))
    }

    fn import_findings(
        &self,
        region: &str,
        findings: &[crate::core::message::Asff],
    ) -> impl Future<Output = Result<Vec<(String, String)>, CallError>> + Send {
        Box::pin(securityhub::import_findings(self, region, findings))
    }

    fn put_events(
        &self,
        region: &str,
        entries: &[crate::core::outbox::BusEvent],
    ) -> impl Future<Output = Result<Vec<Result<String, String>>, CallError>> + Send {
        Box::pin(notify::put_events(self, region, entries))
    }
}

impl crate::ports::IamWrites for AwsCloud {
    fn writes_in(&self, account: &str) -> impl Future<Output = Result<Option<Self>, CallError>> + Send {
        Box::pin(accounts::writes_in(self, account))
    }

    fn principal_tags(
        &self,
        principal: &crate::ports::Principal,
    ) -> impl Future<Output = Result<Vec<(String, String)>, CallError>> + Send {
        Box::pin(iam::principal_tags(self, principal))
    }

    fn key_tags(&self, key: &KeyArn) -> impl Future<Output = Result<Vec<(String, String)>, CallError>> + Send {
        Box::pin(kms::key_tags(self, key))
    }

    fn inline_policy_names(
        &self,
        principal: &crate::ports::Principal,
    ) -> impl Future<Output = Result<Vec<String>, CallError>> + Send {
        Box::pin(iam::inline_policy_names(self, principal))
    }

    fn inline_policy(
        &self,
        principal: &crate::ports::Principal,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, CallError>> + Send {
        Box::pin(iam::inline_policy(self, principal, name))
    }

    fn put_inline_policy(
        &self,
        principal: &crate::ports::Principal,
        name: &str,
        document: &str,
    ) -> impl Future<Output = Result<(), CallError>> + Send {
        Box::pin(iam::put_inline_policy(self, principal, name, document))
    }

    fn start_instance(
        &self,
        region: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<String, CallError>> + Send {
        Box::pin(ec2::start_instance(self, region, instance_id))
    }
}

impl crate::ports::Queue for AwsCloud {
    fn defer(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        seconds: i32,
    ) -> impl Future<Output = Result<(), CallError>> + Send {
        Box::pin(sqs::defer(self, queue_url, receipt_handle, seconds))
    }

    fn send(
        &self,
        queue_url: &str,
        body: &str,
        delay_seconds: i32,
    ) -> impl Future<Output = Result<String, CallError>> + Send {
        Box::pin(sqs::send(self, queue_url, body, delay_seconds))
    }

    fn queue_url(&self, queue_arn: &str) -> impl Future<Output = Result<String, CallError>> + Send {
        Box::pin(sqs::queue_url(self, queue_arn))
    }
}
