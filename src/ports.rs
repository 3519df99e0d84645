//! The narrow view of AWS the use cases need, as traits: one implementation talks to the AWS
//! SDKs (`aws/`), one holds plain data for in-process tests (`memory/`). Each method is one API call
//! (one page, for LookupEvents) and returns domain types, never SDK types.
//!
//! May import: [`crate::core`] only: the ports speak the core's types, never an SDK's.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::core::arn::KeyArn;
use crate::core::facts::{Instance, KeyMetadata, Simulation};

/// How a call failed, in the terms that decide what we do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// AccessDenied, UnauthorizedOperation: our own role lacks a permission.
    Denied,
    /// The resource does not exist (InvalidInstanceID.NotFound, NotFoundException).
    NotFound,
    /// Still throttled after the SDK's retries.
    Throttled,
    /// No answer: connection refused, DNS, timeout. Nothing was learned about AWS.
    Unreachable,
    /// Anything else: a 500, a body we could not parse, a validation error.
    Other,
}

/// A failed call: which one, and why, in a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {message}")]
pub struct CallError {
    /// `service:Action`, e.g. `kms:GetKeyPolicy`.
    pub call: &'static str,
    pub kind: FailureKind,
    pub message: String,
}

/// A volume as DescribeVolumes reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub volume_id: String,
    /// `None` when the answer did not say (EC2 always does: the answer was cut short).
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
}

/// One CloudTrail LookupEvents result, before its record is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailEvent {
    pub event_id: Option<String>,
    pub cloud_trail_event: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrailPage {
    pub events: Vec<TrailEvent>,
    pub next_token: Option<String>,
}

/// What a LookupEvents query looks up (CloudTrail takes one attribute per query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailKey {
    /// Events naming a resource: an instance id, a key ARN.
    ResourceName(String),
    /// Events of one API: `StartInstances`, `CreateGrant`.
    EventName(String),
}

impl TrailKey {
    pub fn value(&self) -> &str {
        match self {
            Self::ResourceName(v) | Self::EventName(v) => v,
        }
    }
}

/// A LookupEvents query: one attribute over a time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailQuery {
    pub key: TrailKey,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A SimulatePrincipalPolicy request for the launch's KMS actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulationRequest {
    pub principal_arn: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    /// For `kms:ViaService = ec2.<region>.amazonaws.com`.
    pub region: String,
}

/// The encrypted volumes a launch template or an AMI describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeKeys {
    /// `KmsKeyId` values as AWS returns them (a key ARN, a key id or an alias).
    pub keys: Vec<String>,
    /// Some volume is encrypted without naming a key: it gets the account's EBS default key.
    pub default_key: bool,
    /// Some volume comes from an unencrypted snapshot (or none): encrypted by default, if on.
    pub unencrypted: bool,
    /// The AMI a launch template names.
    pub image_id: Option<String>,
}

/// An Auto Scaling group, as preflight needs it: what it launches from, and as whom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoScalingGroup {
    pub name: String,
    /// `AutoScalingGroupARN`.
    pub arn: Option<String>,
    /// `ServiceLinkedRoleARN`: the role Auto Scaling launches with (by default
    /// `AWSServiceRoleForAutoScaling`).
    pub service_linked_role_arn: Option<String>,
    /// The launch template (directly, or in a mixed instances policy).
    pub launch_template: Option<crate::core::cloudtrail::LaunchTemplateRef>,
    pub launch_configuration: Option<String>,
}

/// Which instances preflight checks: these ids (whatever their state), else every stopped
/// instance, with this tag if one is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceScope {
    pub ids: Vec<String>,
    pub tag: Option<(String, String)>,
}

pub trait Cloud: Sync {
    /// DescribeInstances for these ids. Instances that no longer exist are absent from the
    /// result (not an error).
    fn describe_instances(
        &self,
        region: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Instance>, CallError>> + Send;
    /// Stopped and terminated instances whose state reason code is `Client.InternalError` or
    /// `Server.InternalError` (server-side filters; the caller confirms the message).
    fn describe_failed_instances(&self, region: &str) -> impl Future<Output = Result<Vec<Instance>, CallError>> + Send;
    fn describe_volumes(
        &self,
        region: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<VolumeInfo>, CallError>> + Send;
    /// Regions enabled for the account (DescribeRegions without opt-in-not-required filter).
    fn describe_regions(&self) -> impl Future<Output = Result<Vec<String>, CallError>> + Send;
    fn describe_key(&self, key: &KeyArn) -> impl Future<Output = Result<KeyMetadata, CallError>> + Send;
    fn get_key_policy(&self, key: &KeyArn) -> impl Future<Output = Result<String, CallError>> + Send;
    /// kms:ListAliases for one key: its alias names (`alias/…`). Only names a person reads; no
    /// decision depends on them. The default (a cloud without aliases) has none.
    fn list_aliases(&self, key: &KeyArn) -> impl Future<Output = Result<Vec<String>, CallError>> + Send {
        let _ = key;
        async { Ok(Vec::new()) }
    }
    /// One page of LookupEvents in `region`. Implementations keep to CloudTrail's 2 requests
    /// per second per region.
    fn lookup_events(
        &self,
        region: &str,
        query: &TrailQuery,
        next_token: Option<&str>,
    ) -> impl Future<Output = Result<TrailPage, CallError>> + Send;
    fn simulate(&self, request: &SimulationRequest) -> impl Future<Output = Result<Vec<Simulation>, CallError>> + Send;
    /// GetUser / GetRole: the principal's permissions boundary policy ARN, if it has one.
    fn permissions_boundary(
        &self,
        principal_arn: &str,
    ) -> impl Future<Output = Result<Option<String>, CallError>> + Send;
    /// DescribeKey of a key id, alias name or alias ARN: the key's ARN.
    fn key_arn(&self, region: &str, key_id: &str) -> impl Future<Output = Result<KeyArn, CallError>> + Send;
    /// DescribeLaunchTemplateVersions: the volumes of one version (`None`: the default).
    fn launch_template_volumes(
        &self,
        region: &str,
        template: &crate::core::cloudtrail::LaunchTemplateRef,
    ) -> impl Future<Output = Result<VolumeKeys, CallError>> + Send;
    /// DescribeImages, then DescribeSnapshots: the keys of the AMI's snapshots.
    fn image_volumes(&self, region: &str, image_id: &str)
        -> impl Future<Output = Result<VolumeKeys, CallError>> + Send;
    /// GetEbsEncryptionByDefault, then GetEbsDefaultKmsKeyId: the key new volumes get when
    /// encryption by default is on (`None` when it is off).
    fn ebs_default_key(&self, region: &str) -> impl Future<Output = Result<Option<String>, CallError>> + Send;
    /// DescribeInstances for preflight: the scope's instances, every page.
    fn scoped_instances(
        &self,
        region: &str,
        scope: &InstanceScope,
    ) -> impl Future<Output = Result<Vec<Instance>, CallError>> + Send {
        let _ = (region, scope);
        async { Err(unsupported("ec2:DescribeInstances")) }
    }
    /// GetCallerIdentity: the ARN of the credentials in use (no permission needed).
    fn caller_arn(&self) -> impl Future<Output = Result<String, CallError>> + Send {
        async { Err(unsupported("sts:GetCallerIdentity")) }
    }
    /// GetRole: a role's ARN with its path (`role/team/Ops`) for one that left the path out (an
    /// assumed role's ARN does); the ARN as given when it cannot be read.
    fn role_with_path(&self, role_arn: &str) -> impl Future<Output = String> + Send {
        let arn = role_arn.to_owned();
        async move { arn }
    }
    /// GetCallerIdentity: the account of the credentials in use (no permission needed).
    fn account_id(&self) -> impl Future<Output = Result<String, CallError>> + Send {
        async { Err(unsupported("sts:GetCallerIdentity")) }
    }
    /// The cloud that gathers facts in `account` (hub topology: through the spoke role there);
    /// `None`: this one (its own account, or no hub).
    fn in_account(&self, account: &str) -> impl Future<Output = Result<Option<Self>, CallError>> + Send
    where
        Self: Sized,
    {
        let _ = account;
        async { Ok(None) }
    }
    /// DescribeAutoScalingGroups: every group in the region, every page.
    fn auto_scaling_groups(
        &self,
        region: &str,
    ) -> impl Future<Output = Result<Vec<AutoScalingGroup>, CallError>> + Send {
        let _ = region;
        async { Err(unsupported("autoscaling:DescribeAutoScalingGroups")) }
    }
    /// DescribeLaunchConfigurations: the volumes and AMI of one launch configuration.
    fn launch_configuration_volumes(
        &self,
        region: &str,
        name: &str,
    ) -> impl Future<Output = Result<VolumeKeys, CallError>> + Send {
        let _ = (region, name);
        async { Err(unsupported("autoscaling:DescribeLaunchConfigurations")) }
    }
}

/// What a cloud without the call answers (test doubles that do not model it).
fn unsupported(call: &'static str) -> CallError {
    CallError { call, kind: FailureKind::Other, message: "not supported by this cloud".to_owned() }
}

/// The calls that change something outside: notifications and, when switched on, IAM.
/// Kept apart from [`Cloud`] so the read-only diagnosis cannot reach them.
pub trait Effects: Sync {
    /// SNS Publish; returns the message id.
    fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> impl Future<Output = Result<String, CallError>> + Send;
    /// Security Hub GetFindings by Id (one call, the Ids OR'd: at most 20, the filter's limit):
    /// each existing finding's (CreatedAt, UpdatedAt), by Id.
    fn existing_findings(
        &self,
        region: &str,
        product_arn: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<std::collections::BTreeMap<String, (String, String)>, CallError>> + Send;
    /// Security Hub GetFindings for the `ACTIVE` findings of this tool (`GeneratorId` prefix
    /// `kms-launch-doctor/`, `product_arn`) whose resources include one of `resource_ids` (at
    /// most 20, the filter's limit), every page: each as the document to import again.
    fn open_findings(
        &self,
        region: &str,
        product_arn: &str,
        resource_ids: &[String],
    ) -> impl Future<Output = Result<Vec<crate::core::message::Asff>, CallError>> + Send;
    /// Security Hub BatchImportFindings (at most 100): the Ids it rejected, each with why.
    fn import_findings(
        &self,
        region: &str,
        findings: &[crate::core::message::Asff],
    ) -> impl Future<Output = Result<Vec<(String, String)>, CallError>> + Send;
    /// EventBridge PutEvents (at most 10 entries): per entry, its event id or why it failed.
    fn put_events(
        &self,
        region: &str,
        entries: &[crate::core::outbox::BusEvent],
    ) -> impl Future<Output = Result<Vec<Result<String, String>>, CallError>> + Send;
}

/// An IAM user or role, by name: the only principals remediation ever writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(String),
    Role(String),
}

/// IAM and EC2 writes for opt-in remediation. Only inline policies, only by name.
pub trait IamWrites: Sync {
    fn principal_tags(
        &self,
        principal: &Principal,
    ) -> impl Future<Output = Result<Vec<(String, String)>, CallError>> + Send;
    /// KMS ListResourceTags: the key's tags (the key side of the opt-in).
    fn key_tags(&self, key: &KeyArn) -> impl Future<Output = Result<Vec<(String, String)>, CallError>> + Send;
    fn inline_policy_names(&self, principal: &Principal)
        -> impl Future<Output = Result<Vec<String>, CallError>> + Send;
    /// The URL-decoded document, or `None` when no such policy exists.
    fn inline_policy(
        &self,
        principal: &Principal,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, CallError>> + Send;
    fn put_inline_policy(
        &self,
        principal: &Principal,
        name: &str,
        document: &str,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// The writer for `account` (hub topology: the member's remediation role); `None`: this
    /// one (its own account, or no hub).
    fn writes_in(&self, account: &str) -> impl Future<Output = Result<Option<Self>, CallError>> + Send
    where
        Self: Sized,
    {
        let _ = account;
        async { Ok(None) }
    }
    /// StartInstances; returns the state EC2 reports next (`pending`).
    fn start_instance(&self, region: &str, instance_id: &str)
        -> impl Future<Output = Result<String, CallError>> + Send;
}

/// Queue control for late CloudTrail records.
pub trait Queue: Sync {
    /// ChangeMessageVisibility: the message comes back after `seconds`.
    fn defer(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        seconds: i32,
    ) -> impl Future<Output = Result<(), CallError>> + Send;
    /// SendMessage of `body`, visible after `delay_seconds`; returns the message id. Used only
    /// to put an unfinished delivery back on the function's own queue.
    fn send(
        &self,
        queue_url: &str,
        body: &str,
        delay_seconds: i32,
    ) -> impl Future<Output = Result<String, CallError>> + Send;
    /// GetQueueUrl for a queue ARN, when EVENTS_QUEUE_URL is not set.
    fn queue_url(&self, queue_arn: &str) -> impl Future<Output = Result<String, CallError>> + Send;
}
