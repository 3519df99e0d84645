//! The evidence gathered about one failed launch: what the AWS calls returned, and what they
//! could not return. Everything here is plain data; [`crate::core::decide`] turns it into a finding.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{Caller, LaunchApi, Record};

/// The two states in which a failed launch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndState {
    Stopped,
    Terminated,
}

impl EndState {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stopped" => Some(Self::Stopped),
            "terminated" => Some(Self::Terminated),
            _ => None,
        }
    }

    /// The state's name, as EC2 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Terminated => "terminated",
        }
    }
    /// The API whose failure ends in this state: a failed start falls back to `stopped`, a
    /// failed run to `terminated`.
    pub fn launch_api(self) -> LaunchApi {
        match self {
            Self::Stopped => LaunchApi::StartInstances,
            Self::Terminated => LaunchApi::RunInstances,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReason {
    pub code: String,
    pub message: String,
}

impl StateReason {
    /// A launch failure: Code *or* Message starts with `Client.InternalError` (AWS has reported
    /// Code `Server.InternalError` with a `Client.InternalError: …` message).
    pub fn is_launch_failure(&self) -> bool {
        const MARK: &str = "Client.InternalError";
        self.code.starts_with(MARK) || self.message.starts_with(MARK)
    }
}

/// What DescribeInstances told us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub account: String,
    pub partition: String,
    pub region: String,
    /// `None` when the instance is in some other state (running, pending…).
    pub state: Option<EndState>,
    pub state_name: String,
    pub state_reason: Option<StateReason>,
    pub attachments: Vec<Attachment>,
    /// The instance's tags: remediation restarts only an instance that opted in.
    pub tags: Vec<(String, String)>,
    /// The AMI it was launched from.
    pub image_id: Option<String>,
}

impl Instance {
    /// The launch template EC2 tagged the instance with (`aws:ec2launchtemplate:id` and
    /// `aws:ec2launchtemplate:version`), if it was launched from one.
    pub fn launch_template(&self) -> Option<crate::core::cloudtrail::LaunchTemplateRef> {
        let tag = |k: &str| self.tags.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let id = tag("aws:ec2launchtemplate:id")?;
        Some(crate::core::cloudtrail::LaunchTemplateRef {
            id: Some(id),
            name: None,
            version: tag("aws:ec2launchtemplate:version"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub volume_id: String,
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub volume_id: String,
    pub device: String,
    /// `None` when DescribeVolumes could not be called.
    pub encrypted: Option<bool>,
    pub kms_key_arn: Option<KeyArn>,
}

/// KMS key states, as DescribeKey reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    PendingReplicaDeletion,
    PendingImport,
    Unavailable,
    Creating,
    Updating,
    Other(String),
}

impl KeyState {
    pub fn parse(s: &str) -> Self {
        match s {
            "Enabled" => Self::Enabled,
            "Disabled" => Self::Disabled,
            "PendingDeletion" => Self::PendingDeletion,
            "PendingReplicaDeletion" => Self::PendingReplicaDeletion,
            "PendingImport" => Self::PendingImport,
            "Unavailable" => Self::Unavailable,
            "Creating" => Self::Creating,
            "Updating" => Self::Updating,
            other => Self::Other(other.to_owned()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PendingDeletion => "PendingDeletion",
            Self::PendingReplicaDeletion => "PendingReplicaDeletion",
            Self::PendingImport => "PendingImport",
            Self::Unavailable => "Unavailable",
            Self::Creating => "Creating",
            Self::Updating => "Updating",
            Self::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMetadata {
    pub state: KeyState,
    /// `AWS` or `CUSTOMER`.
    pub manager: Option<String>,
    /// `AWS_KMS`, `EXTERNAL`, `AWS_CLOUDHSM`, `EXTERNAL_KEY_STORE`.
    pub origin: Option<String>,
    pub deletion_date: Option<DateTime<Utc>>,
    /// When imported key material expires.
    pub valid_to: Option<DateTime<Utc>>,
    pub custom_key_store_id: Option<String>,
}

/// What we learned about one key. `None` fields were not available; `missing` says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    pub arn: KeyArn,
    pub metadata: Option<KeyMetadata>,
    pub policy: Option<String>,
}

/// The decision of IAM's policy simulator for one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Decision {
    #[serde(rename = "allowed")]
    Allowed,
    #[serde(rename = "explicitDeny")]
    ExplicitDeny,
    #[serde(rename = "implicitDeny")]
    ImplicitDeny,
}

impl Decision {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allowed" => Some(Self::Allowed),
            "explicitDeny" => Some(Self::ExplicitDeny),
            "implicitDeny" => Some(Self::ImplicitDeny),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Simulation {
    pub principal_arn: String,
    pub action: String,
    pub resource: String,
    pub decision: Decision,
    pub matched_statements: Vec<String>,
    /// `PermissionsBoundaryDecisionDetail.AllowedByPermissionsBoundary`: present when the
    /// principal has a permissions boundary.
    pub allowed_by_boundary: Option<bool>,
    /// `OrganizationsDecisionDetail.AllowedByOrganizations`: present when the account is in
    /// an organization (the simulator evaluates its SCPs).
    pub allowed_by_organizations: Option<bool>,
}

/// Evidence we tried and failed to gather: which call, on what, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub call: String,
    pub target: String,
    pub reason: String,
}

/// Everything gathered for one failed launch.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub instance: Instance,
    pub state: EndState,
    pub state_reason: StateReason,
    pub observed_at: DateTime<Utc>,
    pub volumes: Vec<Volume>,
    pub keys: Vec<KeyFacts>,
    /// The StartInstances/RunInstances call that launched the instance.
    pub launch: Option<Record>,
    /// Denied KMS calls on the instance's keys in the launch window.
    pub kms_denials: Vec<Record>,
    pub simulations: Vec<Simulation>,
    /// The caller's permissions boundary (GetUser/GetRole), looked up when a simulation says
    /// the boundary blocks.
    pub boundary_arn: Option<String>,
    /// Where each key of the launch came from (the attached volumes, or for an instance that
    /// no longer shows them, the launch request, its template, the AMI, the EBS default key
    /// or CloudTrail).
    pub key_sources: Vec<(KeyArn, KeySource)>,
    pub missing: Vec<Missing>,
}

impl Facts {
    /// The caller whose permissions matter: the one the launch record names, and nobody else.
    /// A denied KMS call never stands in for it: whoever is denied a KMS call near a failed
    /// launch is not thereby the one who launched it, and remediation writes for the caller.
    pub fn caller(&self) -> Option<&Caller> {
        self.launch.as_ref().map(|r| &r.caller)
    }
}

/// Where a key of the launch came from, most direct first: the attached volume, the
/// RunInstances request, its launch template, the AMI's snapshots, the account's EBS default
/// key, or KMS calls EC2 made for the launch (CloudTrail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    Volume,
    RunInstancesRequest,
    LaunchTemplate,
    AmiSnapshot,
    EbsDefault,
    Cloudtrail,
}
