//! The report contract (`kms-launch-doctor.report/1`): what the CLI prints, the Lambda returns
//! and later sinks forward. Fields are only ever added; see README "Report contract".

mod causes;
#[cfg(test)]
pub mod fixture;
mod remediation;

pub use causes::*;
pub use remediation::*;

use crate::core::arn::KeyArn;
use crate::core::cloudtrail::{Caller, LaunchApi};
pub use crate::core::facts::KeySource;
use crate::core::facts::{EndState, Missing, StateReason, Volume};
use serde::Serialize;

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

impl Skipped {
    /// An instance (or the event about it) not diagnosed, and why.
    pub fn instance(id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { instance_id: Some(id.into()), region: None, reason: reason.into(), account: None }
    }

    /// A region that could not be searched, and why.
    pub fn region(region: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { instance_id: None, region: Some(region.into()), reason: reason.into(), account: None }
    }

    /// An account that could not be entered or searched, and why.
    pub fn account(account: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { instance_id: None, region: None, reason: reason.into(), account: Some(account.into()) }
    }

    /// Where it was: this region.
    pub fn in_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Where it was: this account.
    pub fn in_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }
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
