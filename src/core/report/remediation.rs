//! What was (or would be) done about it: each fix, its status, and the restart.

use serde::Serialize;
use serde_json::Value;

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

impl Remediation {
    /// A fix proposed for `target` (the principal for IAM changes, the key otherwise), with the
    /// commands that apply it; nothing done yet.
    pub fn proposed(action: RemediationAction, target: impl Into<String>, commands: Vec<String>) -> Self {
        Self {
            action,
            target: target.into(),
            policy_name: None,
            policy_document: None,
            commands,
            status: RemediationStatus::Proposed,
            verified: None,
            note: None,
            restart: None,
        }
    }

    /// The same fix, naming the policy it writes.
    pub fn writing(mut self, policy_name: Option<String>, document: Value) -> Self {
        self.policy_name = policy_name;
        self.policy_document = Some(document);
        self
    }
}
