//! CloudTrail records: who launched the instance, and which KMS calls were denied.
//!
//! A record's `userIdentity` says who *made* the call; a fix belongs on the IAM entity behind
//! it. For an assumed role that is the role (the session issuer), not the session; for a
//! federated user it is the federating IAM user. Records are read as loose JSON because their
//! shape varies by identity type and event version: a field we cannot find is `None`, never a
//! failure.

mod callers;
#[cfg(test)]
mod tests;

pub use callers::*;

use crate::core::arn::Arn;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// The API that launched the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum LaunchApi {
    StartInstances,
    RunInstances,
}

impl LaunchApi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartInstances => "StartInstances",
            Self::RunInstances => "RunInstances",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "StartInstances" => Some(Self::StartInstances),
            "RunInstances" => Some(Self::RunInstances),
            _ => None,
        }
    }
}

/// Where a fix for this caller belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrincipalKind {
    User,
    Role,
    ServiceLinkedRole,
    SsoRole,
    Root,
    Federated,
    Service,
    Unknown,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Role => "role",
            Self::ServiceLinkedRole => "service-linked-role",
            Self::SsoRole => "sso-role",
            Self::Root => "root",
            Self::Federated => "federated",
            Self::Service => "service",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// `userIdentity.type` as CloudTrail wrote it (`IAMUser`, `AssumedRole`, …).
    pub identity_type: String,
    /// `userIdentity.arn`: the identity that made the call (a session, for roles).
    pub arn: Option<String>,
    /// The IAM entity a fix belongs on.
    pub principal_arn: Option<String>,
    pub principal_kind: PrincipalKind,
    #[serde(skip)]
    pub account: Option<String>,
    /// For a service caller: the service that acted (`autoscaling.amazonaws.com`).
    #[serde(skip)]
    pub invoked_by: Option<String>,
}

impl Caller {
    pub fn unknown() -> Self {
        Self {
            identity_type: "Unknown".to_owned(),
            arn: None,
            principal_arn: None,
            principal_kind: PrincipalKind::Unknown,
            account: None,
            invoked_by: None,
        }
    }

    /// A short human name: `user/test`, `role/Admin`, `root`.
    pub fn short_name(&self) -> String {
        let arn = self.principal_arn.as_deref().or(self.arn.as_deref());
        match arn.and_then(|a| Arn::parse(a).ok()) {
            Some(a) => a.resource().to_owned(),
            None => self.invoked_by.clone().unwrap_or_else(|| "an unknown caller".to_owned()),
        }
    }
}

/// One CloudTrail record, reduced to what the diagnosis uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub event_id: String,
    pub event_name: String,
    pub event_time: DateTime<Utc>,
    pub caller: Caller,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Instance ids named in the request or response.
    #[serde(skip)]
    pub instance_ids: Vec<String>,
    /// Key named in the request (`keyId`) or the record's resources.
    #[serde(skip)]
    pub key: Option<String>,
    /// EBS volumes named in a grant's encryption-context constraint (`aws:ebs:id`): EC2's
    /// CreateGrant for a volume carries it, which ties a KMS record to one instance.
    #[serde(skip)]
    pub volume_ids: Vec<String>,
    /// The instance whose launch EC2's own identity acted for, when the caller is that
    /// identity (role `aws:ec2-infrastructure`, session named after the instance, or
    /// `userIdentity.inScopeOf.credentialsIssuedTo` naming it).
    #[serde(skip)]
    pub ec2_infrastructure_for: Option<String>,
    /// What a RunInstances request asked for: the keys its block device mappings name, and
    /// whether one asked for encryption without naming a key (the account's EBS default key).
    #[serde(skip)]
    pub request_keys: Vec<String>,
    #[serde(skip)]
    pub request_default_key: bool,
    /// The launch template a RunInstances request names.
    #[serde(skip)]
    pub launch_template: Option<LaunchTemplateRef>,
    /// The AMI a RunInstances request names.
    #[serde(skip)]
    pub image_id: Option<String>,
    /// EC2 made the call on the caller's behalf (`invokedBy`, `sourceIPAddress` or
    /// `userAgent` is `ec2.amazonaws.com`), as for the grant and data key of a launch.
    #[serde(skip)]
    pub via_ec2: bool,
    /// The instance a CreateGrant's grantee (EC2's identity for it) names.
    #[serde(skip)]
    pub grant_for_instance: Option<String>,
}

/// A launch template as a RunInstances request names it: by id or by name, and a version
/// (`$Default`, `$Latest` or a number; absent means the default version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplateRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
}

/// Where CloudTrail's AccessDenied message says an explicit Deny stands ("... with an
/// explicit deny in a service control policy"), as the IAM user guide's "Access denied error
/// messages" page words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenySource {
    IdentityPolicy,
    ResourcePolicy,
    PermissionsBoundary,
    ServiceControlPolicy,
    ResourceControlPolicy,
    SessionPolicy,
    VpcEndpointPolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("CloudTrail record is not valid JSON: {0}")]
    Json(String),
    #[error("CloudTrail record lacks {0}")]
    Missing(&'static str),
}

impl Record {
    /// Parses the `CloudTrailEvent` JSON string of a LookupEvents result. The envelope's
    /// event id, name and time are the fallback when the record lacks them.
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        let v: Value = serde_json::from_str(text).map_err(|e| RecordError::Json(e.to_string()))?;
        if !v.is_object() {
            return Err(RecordError::Json("not an object".to_owned()));
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let event_id = s("eventID").ok_or(RecordError::Missing("eventID"))?;
        let event_name = s("eventName").ok_or(RecordError::Missing("eventName"))?;
        let event_time = s("eventTime")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or(RecordError::Missing("a valid eventTime"))?;
        let caller = v.get("userIdentity").map(caller_of).unwrap_or_else(Caller::unknown);
        let mut instance_ids = Vec::new();
        for part in ["requestParameters", "responseElements"] {
            if let Some(items) = v.pointer(&format!("/{part}/instancesSet/items")).and_then(Value::as_array) {
                for item in items {
                    if let Some(id) = item.get("instanceId").and_then(Value::as_str) {
                        if !instance_ids.iter().any(|i| i == id) {
                            instance_ids.push(id.to_owned());
                        }
                    }
                }
            }
        }
        let key = v.pointer("/requestParameters/keyId").and_then(Value::as_str).map(str::to_owned).or_else(|| {
            v.get("resources")?.as_array()?.iter().find_map(|r| {
                let is_key = r.get("type").and_then(Value::as_str) == Some("AWS::KMS::Key");
                is_key.then(|| r.get("ARN").and_then(Value::as_str).map(str::to_owned)).flatten()
            })
        });
        // EC2's KMS calls for a volume carry its id in the encryption context: in a grant's
        // constraints (`encryptionContextSubset`/`encryptionContextEquals`) for CreateGrant, in
        // `encryptionContext` for GenerateDataKeyWithoutPlaintext and Decrypt (KMS developer
        // guide, "How Amazon EBS uses AWS KMS"; the records in tests/fixtures/cloudtrail).
        let mut volume_ids: Vec<String> = Vec::new();
        let contexts = v
            .pointer("/requestParameters/constraints")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|c| c.values())
            .chain(v.pointer("/requestParameters/encryptionContext"));
        for context in contexts {
            if let Some(id) = context.get("aws:ebs:id").and_then(Value::as_str) {
                if !volume_ids.iter().any(|v| v == id) {
                    volume_ids.push(id.to_owned());
                }
            }
        }
        let ec2_infrastructure_for = v.get("userIdentity").and_then(ec2_infrastructure_instance);
        // EC2 calling KMS for the caller shows as `ec2.amazonaws.com` or, in current records,
        // `ec2-frontend-api.amazonaws.com` (invokedBy, sourceIPAddress, userAgent); older
        // records say "AWS Internal", which counts only with a volume in the context.
        let ec2 =
            |x: Option<String>| x.is_some_and(|x| x == "ec2.amazonaws.com" || x == "ec2-frontend-api.amazonaws.com");
        let via_ec2 = ec2(caller.invoked_by.clone())
            || ec2(s("sourceIPAddress"))
            || ec2(s("userAgent"))
            || (caller.invoked_by.as_deref() == Some("AWS Internal") && !volume_ids.is_empty());
        // A grant to EC2's identity names the instance: `<account>:aws:ec2-infrastructure:<id>`.
        let grant_for_instance = v
            .pointer("/requestParameters/granteePrincipal")
            .and_then(Value::as_str)
            .and_then(|g| g.rsplit_once(":aws:ec2-infrastructure:"))
            .map(|(_, id)| id.to_owned())
            .filter(|id| looks_like_instance_id(id));
        let mappings = v.pointer("/requestParameters/blockDeviceMapping/items").and_then(Value::as_array);
        let mut request_keys = Vec::new();
        let mut request_default_key = false;
        for ebs in mappings.into_iter().flatten().filter_map(|m| m.get("ebs")) {
            match ebs.get("kmsKeyId").and_then(Value::as_str) {
                Some(k) if !k.is_empty() => request_keys.push(k.to_owned()),
                _ => {
                    request_default_key |= ebs.get("encrypted").is_some_and(|e| e == &Value::Bool(true) || e == "true")
                }
            }
        }
        let launch_template = v.pointer("/requestParameters/launchTemplate").filter(|t| t.is_object()).map(|t| {
            let s = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_owned);
            LaunchTemplateRef { id: s("launchTemplateId"), name: s("launchTemplateName"), version: s("version") }
        });
        let image_id = v
            .pointer("/requestParameters/instancesSet/items")
            .and_then(Value::as_array)
            .and_then(|items| items.iter().find_map(|i| i.get("imageId").and_then(Value::as_str)))
            .map(str::to_owned);
        Ok(Self {
            event_id,
            event_name,
            event_time,
            caller,
            error_code: s("errorCode"),
            error_message: s("errorMessage"),
            instance_ids,
            key,
            volume_ids,
            ec2_infrastructure_for,
            request_keys,
            request_default_key,
            launch_template,
            image_id,
            via_ec2,
            grant_for_instance,
        })
    }

    /// An AccessDenied error (`AccessDenied`, `AccessDeniedException`, `Client.UnauthorizedOperation`…).
    pub fn is_access_denied(&self) -> bool {
        self.error_code.as_deref().is_some_and(|c| c.contains("AccessDenied") || c.contains("UnauthorizedOperation"))
    }

    /// Whether the record names this instance as the one EC2 acted for: made by EC2's own
    /// identity for it, or a grant to that identity.
    pub fn acts_for_instance(&self, instance_id: &str) -> bool {
        self.ec2_infrastructure_for.as_deref() == Some(instance_id)
            || self.grant_for_instance.as_deref() == Some(instance_id)
    }

    /// Whether the denial message blames an explicit Deny.
    pub fn mentions_explicit_deny(&self) -> bool {
        self.error_message.as_deref().is_some_and(|m| m.contains("explicit deny"))
    }

    /// Which policy type the denial message names for an explicit Deny, if it names one.
    pub fn explicit_deny_in(&self) -> Option<DenySource> {
        self.denied_by().filter(|(_, explicit)| *explicit).map(|(source, _)| source)
    }

    /// The policy type an AccessDenied message blames, and whether the denial was explicit:
    /// "… with an explicit deny in a <type>" or "… because no <type> allows the <action>
    /// action", as the IAM User Guide's "Access denied error message examples" word them
    /// (tests/fixtures/cloudtrail/denied-messages.json). AWS names only one policy type; an SCP
    /// denial always reads as explicit, and "… transitively through a service control policy"
    /// is the SCP's doing.
    pub fn denied_by(&self) -> Option<(DenySource, bool)> {
        let m = self.error_message.as_deref()?.to_ascii_lowercase();
        if m.contains("through a service control policy") {
            return Some((DenySource::ServiceControlPolicy, true));
        }
        let (rest, explicit) = match (m.split_once("explicit deny in "), m.split_once("because no ")) {
            (Some((_, rest)), _) => (rest, true),
            (None, Some((_, rest))) => (rest, false),
            (None, None) => return None,
        };
        let rest = rest.trim_start_matches("a ").trim_start_matches("an ").trim_start_matches("the ");
        [
            ("service control policy", DenySource::ServiceControlPolicy),
            ("resource control policy", DenySource::ResourceControlPolicy),
            ("resource-based policy", DenySource::ResourcePolicy),
            ("identity-based policy", DenySource::IdentityPolicy),
            ("permissions boundary", DenySource::PermissionsBoundary),
            ("session policy", DenySource::SessionPolicy),
            ("sessions policy", DenySource::SessionPolicy),
            ("vpc endpoint policy", DenySource::VpcEndpointPolicy),
        ]
        .into_iter()
        .find_map(|(words, source)| rest.starts_with(words).then_some((source, explicit)))
    }
}

/// EC2's identity-only role, with which EC2 itself decrypts a volume's data key at launch.
pub const EC2_INFRASTRUCTURE_ROLE: &str = "aws:ec2-infrastructure";
