//! Why a launch failed, as the contract names it: the cause codes and the evidence behind each.

use crate::core::arn::KeyArn;
pub use crate::core::facts::KeySource;
use serde::Serialize;

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
