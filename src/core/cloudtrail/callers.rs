//! Who a record says made the call: the principal behind an assumed role, EC2's infrastructure, a service.

use super::*;
use crate::core::arn::{Arn, IamEntity};
use serde_json::Value;

/// An instance id as CloudTrail writes it (`i-` and a short alphanumeric tail). Read leniently:
/// this is AWS's record, not input to validate.
pub(super) fn looks_like_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|t| (1..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The instance EC2's infrastructure identity acted for, if that is who made the call. The
/// session is `assumed-role/aws:ec2-infrastructure/<instance id>`; CloudTrail also names the
/// instance in `inScopeOf.credentialsIssuedTo` (an `arn:…:ec2:…:instance/<id>`). An instance
/// profile's role carries `inScopeOf` too, so the role name must be EC2's own.
pub(super) fn ec2_infrastructure_instance(identity: &Value) -> Option<String> {
    let arn = identity.get("arn").and_then(Value::as_str)?;
    let (_, resource) = arn.split_once(":assumed-role/")?;
    let (role, session) = resource.split_once('/')?;
    if role != EC2_INFRASTRUCTURE_ROLE {
        return None;
    }
    let scoped = identity
        .pointer("/inScopeOf/credentialsIssuedTo")
        .and_then(Value::as_str)
        .and_then(|a| a.split_once(":instance/"))
        .map(|(_, id)| id.to_owned());
    let from_session = looks_like_instance_id(session).then(|| session.to_owned());
    scoped.filter(|id| looks_like_instance_id(id)).or(from_session)
}

/// Maps `userIdentity` to the IAM entity a fix belongs on.
pub fn caller_of(identity: &Value) -> Caller {
    let s = |p: &str| identity.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let identity_type = s("/type").unwrap_or_else(|| "Unknown".to_owned());
    let arn = s("/arn");
    let account = s("/accountId");
    let invoked_by = s("/invokedBy");
    let issuer = s("/sessionContext/sessionIssuer/arn");
    let (principal_arn, principal_kind) = match identity_type.as_str() {
        "IAMUser" => match arn.as_deref().and_then(|a| Arn::parse(a).ok()) {
            Some(a) if matches!(IamEntity::of(&a), IamEntity::User { .. }) => {
                (Some(a.to_string()), PrincipalKind::User)
            }
            _ => (None, PrincipalKind::Unknown),
        },
        "AssumedRole" => role_behind(issuer.as_deref(), arn.as_deref()),
        "FederatedUser" => match issuer.as_deref().and_then(|a| Arn::parse(a).ok()) {
            Some(a) if matches!(IamEntity::of(&a), IamEntity::User { .. }) => {
                (Some(a.to_string()), PrincipalKind::Federated)
            }
            _ => (None, PrincipalKind::Federated),
        },
        "Root" => {
            let root = arn
                .as_deref()
                .and_then(|a| Arn::parse(a).ok())
                .filter(|a| IamEntity::of(a) == IamEntity::Root)
                .map(|a| a.to_string())
                .or_else(|| {
                    account
                        .as_deref()
                        .filter(|a| crate::core::arn::is_account_id(a))
                        .map(|a| format!("arn:aws:iam::{a}:root"))
                });
            (root, PrincipalKind::Root)
        }
        "AWSService" => (None, PrincipalKind::Service),
        // Identities federated from outside IAM, before (or without) an IAM role session:
        // nothing in IAM to simulate or fix for them.
        "SAMLUser" | "WebIdentityUser" | "IdentityCenterUser" => (None, PrincipalKind::Federated),
        _ => (None, PrincipalKind::Unknown),
    };
    Caller { identity_type, arn, principal_arn, principal_kind, account, invoked_by }
}

/// The role behind an assumed-role session: the session issuer when CloudTrail recorded it,
/// else the role named in the session ARN (whose path we then cannot know).
pub(super) fn role_behind(issuer: Option<&str>, session_arn: Option<&str>) -> (Option<String>, PrincipalKind) {
    let from_issuer = issuer.and_then(|a| Arn::parse(a).ok()).and_then(|a| match IamEntity::of(&a) {
        IamEntity::Role { path, name } => Some((a.to_string(), path, name)),
        _ => None,
    });
    let from_session = || {
        let a = Arn::parse(session_arn?).ok()?;
        match IamEntity::of(&a) {
            IamEntity::AssumedRole { role_name, .. } => Some((
                format!("arn:{}:iam::{}:role/{}", a.partition(), a.account(), role_name),
                "/".to_owned(),
                role_name,
            )),
            _ => None,
        }
    };
    match from_issuer.or_else(from_session) {
        // AWS-internal identities are never IAM principals: nothing to simulate or fix there.
        Some((_, path, name)) if role_kind(&path, &name) == PrincipalKind::Service => (None, PrincipalKind::Service),
        Some((arn, path, name)) => (Some(arn), role_kind(&path, &name)),
        None => (None, PrincipalKind::Unknown),
    }
}

/// Service-linked roles live under `/aws-service-role/`; IAM Identity Center creates roles
/// named `AWSReservedSSO_<permission set>_<suffix>` under `/aws-reserved/sso.amazonaws.com/`
/// (with or without a region segment), and either mark is enough. A role name with `:` (IAM
/// names cannot contain one), such as EC2's `aws:ec2-infrastructure`, is AWS's own identity.
pub fn role_kind(path: &str, name: &str) -> PrincipalKind {
    if name.contains(':') {
        PrincipalKind::Service
    } else if path.starts_with("/aws-service-role/") {
        PrincipalKind::ServiceLinkedRole
    } else if name.starts_with("AWSReservedSSO_") || path.starts_with("/aws-reserved/sso.amazonaws.com/") {
        PrincipalKind::SsoRole
    } else {
        PrincipalKind::Role
    }
}
