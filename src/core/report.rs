//! The report contract (`kms-launch-doctor.report/1`): what the CLI prints, the Lambda returns
//! and later sinks forward. Fields are only ever added; see README "Report contract".

use serde::Serialize;
use serde_json::Value;

use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{Caller, LaunchApi};
use crate::core::facts::{EndState, Missing, StateReason, Volume};

pub const REPORT_SCHEMA: &str = "kms-launch-doctor.report/1";
pub const FINDING_SCHEMA: &str = "kms-launch-doctor.finding/1";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub findings: Vec<Finding>,
    pub skipped: Vec<Skipped>,
    /// What a scan searched (additive to report/1; `scan` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<ScanSummary>,
    /// Findings resolved because their instance reached `running` (additive to report/1;
    /// `replay` of a `running` event, with Security Hub on).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<Resolved>,
}

impl Default for Report {
    fn default() -> Self {
        Self { schema: REPORT_SCHEMA, findings: Vec::new(), skipped: Vec::new(), summary: None, resolved: Vec::new() }
    }
}

/// A finding archived because its instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub finding_id: String,
    pub instance_id: String,
    pub region: String,
    /// RFC 3339: when the instance was seen running.
    pub resolved_at: String,
    /// Which sinks were told (Security Hub: the archive).
    pub delivered: Delivered,
}

/// What a scan covered: the regions searched, the accounts the failures belong to, the window
/// and the failures per cause. Skipped regions are in the report's `skipped`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanSummary {
    /// Regions whose failed launches were searched (those that could not be are in `skipped`).
    pub regions: Vec<String>,
    /// Accounts the failed instances belong to, as DescribeInstances reported them.
    pub accounts: Vec<String>,
    /// The CloudTrail window searched for the launch calls.
    pub window: Window,
    /// Failed launches per (first) cause code.
    pub findings_by_cause: std::collections::BTreeMap<String, usize>,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.findings.extend(other.findings);
        self.skipped.extend(other.skipped);
    }
}

/// An event or instance we looked at and chose not to diagnose, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub instance_id: Option<String>,
    /// For a region a scan could not search (additive to report/1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub reason: String,
    /// For an account a scan could not enter or search (additive to report/1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub schema: &'static str,
    /// Stable for account + region + instance + principal, so a repeated failure updates the
    /// same finding downstream instead of adding one.
    pub id: String,
    pub account: String,
    pub region: String,
    pub instance_id: String,
    /// The instance's `Name` tag, when it has one (additive to finding/1).
    pub instance_name: Option<String>,
    /// `HIGH`, `MEDIUM`, `LOW` or `INFORMATIONAL`, by the first cause: the rule SNS and
    /// Security Hub use (see [`CauseCode::severity`]; additive to finding/1).
    pub severity: &'static str,
    pub instance_state: EndState,
    pub state_reason: StateReason,
    /// RFC 3339.
    pub observed_at: String,
    pub launch: Option<Launch>,
    pub volumes: Vec<Volume>,
    pub keys: Vec<KeyReport>,
    pub causes: Vec<Cause>,
    pub remediations: Vec<Remediation>,
    pub missing_evidence: Vec<Missing>,
    /// The time window CloudTrail was searched for the launch call, when it was searched
    /// (additive to finding/1): a `caller-unknown` says where nothing was found.
    pub cloudtrail_window: Option<Window>,
    /// Which sinks the finding reached (additive to finding/1).
    pub delivered: Delivered,
    /// RFC 3339: when the finding was decided. Sinks date it by this, not by when it was sent,
    /// so a late or repeated delivery never passes for news (additive to finding/1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// A digest of what the finding says, set on what sinks receive: the same digest means the
    /// same content, so a subscriber can drop a repeat (additive to finding/1).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

/// A time window, both ends RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Launch {
    pub api: LaunchApi,
    pub event_id: String,
    /// RFC 3339.
    pub event_time: String,
    pub caller: Caller,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    pub arn: KeyArn,
    pub account: String,
    /// `AWS` or `CUSTOMER`; `null` when DescribeKey was not possible.
    pub manager: Option<String>,
    pub state: Option<String>,
    /// Does the key policy let IAM policies of the caller's account grant kms:CreateGrant?
    /// `null` when the policy could not be read or depends on conditions we cannot evaluate.
    pub iam_delegation: Option<bool>,
    /// The key's aliases (`alias/…`), from kms:ListAliases (additive to finding/1); empty when
    /// it has none or they could not be read (then `missing_evidence` says so).
    pub aliases: Vec<String>,
}

/// The cause codes: a closed set, part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CauseCode {
    CallerLacksCreateGrant,
    KeyPolicyDeniesCaller,
    ExplicitDeny,
    KeyDisabled,
    KeyPendingDeletion,
    KeyPendingImport,
    KeyUnavailable,
    CrossAccountKey,
    ServiceLinkedRoleNeedsKeyAccess,
    CallerUnknown,
    NoKmsCauseFound,
    /// The identity policy allows the action; the caller's permissions boundary does not.
    PermissionsBoundaryBlocks,
    /// A service control policy denies the action or does not allow it.
    ScpBlocks,
    /// EC2's own identity (`aws:ec2-infrastructure`) was denied the volume's key.
    Ec2InfrastructureDenied,
}

impl CauseCode {
    pub const ALL: [CauseCode; 14] = [
        Self::CallerLacksCreateGrant,
        Self::KeyPolicyDeniesCaller,
        Self::ExplicitDeny,
        Self::KeyDisabled,
        Self::KeyPendingDeletion,
        Self::KeyPendingImport,
        Self::KeyUnavailable,
        Self::CrossAccountKey,
        Self::ServiceLinkedRoleNeedsKeyAccess,
        Self::CallerUnknown,
        Self::NoKmsCauseFound,
        Self::PermissionsBoundaryBlocks,
        Self::ScpBlocks,
        Self::Ec2InfrastructureDenied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CallerLacksCreateGrant => "caller-lacks-create-grant",
            Self::KeyPolicyDeniesCaller => "key-policy-denies-caller",
            Self::ExplicitDeny => "explicit-deny",
            Self::KeyDisabled => "key-disabled",
            Self::KeyPendingDeletion => "key-pending-deletion",
            Self::KeyPendingImport => "key-pending-import",
            Self::KeyUnavailable => "key-unavailable",
            Self::CrossAccountKey => "cross-account-key",
            Self::ServiceLinkedRoleNeedsKeyAccess => "service-linked-role-needs-key-access",
            Self::CallerUnknown => "caller-unknown",
            Self::NoKmsCauseFound => "no-kms-cause-found",
            Self::PermissionsBoundaryBlocks => "permissions-boundary-blocks",
            Self::ScpBlocks => "scp-blocks",
            Self::Ec2InfrastructureDenied => "ec2-infrastructure-denied",
        }
    }

    /// Severity, and why:
    /// - HIGH: the key itself is unusable (disabled, pending deletion, no key material,
    ///   unavailable). Every instance and volume on that key is down, and a key pending
    ///   deletion means data loss once the waiting period ends.
    /// - MEDIUM: a permission gap (caller, key policy, explicit Deny, cross-account,
    ///   service-linked role). The instance is down until an IAM or key-policy change; nothing
    ///   is exposed.
    /// - LOW: the caller is unknown, so the cause is not established.
    /// - INFORMATIONAL: KMS is not the cause.
    pub fn severity(self) -> &'static str {
        match self {
            Self::KeyDisabled | Self::KeyPendingDeletion | Self::KeyPendingImport | Self::KeyUnavailable => "HIGH",
            Self::CallerLacksCreateGrant
            | Self::KeyPolicyDeniesCaller
            | Self::ExplicitDeny
            | Self::CrossAccountKey
            | Self::ServiceLinkedRoleNeedsKeyAccess
            | Self::PermissionsBoundaryBlocks
            | Self::ScpBlocks
            | Self::Ec2InfrastructureDenied => "MEDIUM",
            Self::CallerUnknown => "LOW",
            Self::NoKmsCauseFound => "INFORMATIONAL",
        }
    }

    /// The severity of a finding with these causes: that of the first (causes come in key
    /// order; a finding with no problem key has exactly one, `no-kms-cause-found`).
    pub fn severity_of(causes: &[Cause]) -> &'static str {
        causes.first().map_or(Self::NoKmsCauseFound, |c| c.code).severity()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    pub code: CauseCode,
    pub key_arn: Option<KeyArn>,
    pub summary: String,
    pub evidence: Vec<Evidence>,
}

/// One fact behind a cause, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Evidence {
    StateReason {
        code: String,
        message: String,
    },
    CloudtrailEvent {
        event_id: String,
        event_name: String,
        event_time: String,
        caller_arn: Option<String>,
        error_code: Option<String>,
        error_message: Option<String>,
    },
    Simulation {
        principal_arn: String,
        action: String,
        resource: String,
        decision: crate::core::facts::Decision,
        matched_statements: Vec<String>,
        /// Whether the caller's permissions boundary allows it (absent: no boundary).
        #[serde(skip_serializing_if = "Option::is_none")]
        allowed_by_boundary: Option<bool>,
        /// Whether the organization's SCPs allow it (absent: not in an organization).
        #[serde(skip_serializing_if = "Option::is_none")]
        allowed_by_organizations: Option<bool>,
    },
    KeyState {
        key_arn: String,
        state: String,
        origin: Option<String>,
        deletion_date: Option<String>,
        valid_to: Option<String>,
    },
    KeyPolicy {
        key_arn: String,
        action: String,
        delegates_to_iam: crate::core::policy::Tri,
        allows_principal: crate::core::policy::Tri,
        denies_principal: crate::core::policy::Tri,
        statements: Vec<String>,
    },
    KeyAccount {
        key_account: String,
        instance_account: String,
    },
    Caller {
        principal_arn: Option<String>,
        principal_kind: crate::core::cloudtrail::PrincipalKind,
    },
    Note {
        text: String,
    },
    /// Where the tool learned that the launch needed this key.
    KeySource {
        key_arn: String,
        source: KeySource,
    },
}

pub use crate::core::facts::KeySource;

/// The fixes a person (or, later, the opt-in remediation) can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemediationAction {
    PutUserPolicy,
    PutRolePolicy,
    AddKeyPolicyStatement,
    EnableKey,
    CancelKeyDeletion,
    UpdatePermissionSet,
    ImportKeyMaterial,
    ConnectCustomKeyStore,
    ReviewDenyStatement,
    /// A new default version of the caller's permissions boundary with the scoped statement.
    UpdatePermissionsBoundary,
    /// An SCP blocks the action: for the organization's administrators; never applied.
    ReviewScp,
    /// A KMS grant for a service-linked role on another account's key.
    CreateGrant,
}

impl RemediationAction {
    /// The contract's name for the action (`put-user-policy`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PutUserPolicy => "put-user-policy",
            Self::PutRolePolicy => "put-role-policy",
            Self::AddKeyPolicyStatement => "add-key-policy-statement",
            Self::EnableKey => "enable-key",
            Self::CancelKeyDeletion => "cancel-key-deletion",
            Self::UpdatePermissionSet => "update-permission-set",
            Self::ImportKeyMaterial => "import-key-material",
            Self::ConnectCustomKeyStore => "connect-custom-key-store",
            Self::ReviewDenyStatement => "review-deny-statement",
            Self::UpdatePermissionsBoundary => "update-permissions-boundary",
            Self::ReviewScp => "review-scp",
            Self::CreateGrant => "create-grant",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RemediationStatus {
    /// Not applied (remediation off, or dry-run: this is what apply would write).
    Proposed,
    /// Written by this run.
    Applied,
    /// Already in place, exactly as it would be written.
    Unchanged,
    /// A guardrail stopped it; `note` says which.
    Refused,
    /// An AWS call failed; `note` says which.
    Failed,
}

impl RemediationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proposed => "proposed",
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// The StartInstances after a verified fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    pub ok: bool,
    /// The state EC2 reported, or the error.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Remediation {
    pub action: RemediationAction,
    /// The ARN the change applies to: the principal for IAM changes, the key otherwise.
    pub target: String,
    pub policy_name: Option<String>,
    pub policy_document: Option<Value>,
    /// Shell commands, each safe to paste: every value taken from AWS is quoted.
    pub commands: Vec<String>,
    pub status: RemediationStatus,
    /// After an applied or unchanged fix: does IAM's simulator now allow the action?
    pub verified: Option<bool>,
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
}

/// Which sinks a finding reached: the SNS message id, `ok` for Security Hub, the EventBridge
/// event id. A sink that was off or failed is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delivered {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_hub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eventbridge: Option<String>,
}
