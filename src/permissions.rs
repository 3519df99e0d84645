//! `check-permissions`: can the operator's credentials make every call the tool needs?
//! Asks IAM's policy simulator about the caller from GetCallerIdentity.

use std::fmt::Write;

use crate::arn::{Arn, IamEntity};
use crate::aws::AwsCloud;
use crate::cloud::{CallError, Cloud, SimulationRequest};
use crate::facts::Decision;

/// Always needed: confirm, trace volumes and keys, find the caller, verify.
pub const READ_SET: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:DescribeVolumes",
    "ec2:DescribeRegions",
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "cloudtrail:LookupEvents",
    "iam:SimulatePrincipalPolicy",
];

/// Needed by `--remediate apply` (and the restart it may do).
pub const WRITE_SET: &[&str] = &[
    "iam:ListUserTags",
    "iam:ListRoleTags",
    "iam:ListUserPolicies",
    "iam:ListRolePolicies",
    "iam:GetUserPolicy",
    "iam:GetRolePolicy",
    "iam:PutUserPolicy",
    "iam:PutRolePolicy",
    "kms:ListResourceTags",
    "ec2:StartInstances",
];

/// The IAM entity to simulate for a caller ARN: the role behind an assumed-role session.
pub fn simulation_principal(caller_arn: &str) -> Option<String> {
    let arn = Arn::parse(caller_arn).ok()?;
    match IamEntity::of(&arn) {
        IamEntity::User { .. } | IamEntity::Role { .. } => Some(arn.to_string()),
        IamEntity::AssumedRole { role_name, .. } => {
            Some(format!("arn:{}:iam::{}:role/{role_name}", arn.partition(), arn.account()))
        }
        _ => None,
    }
}

pub async fn check(cloud: &AwsCloud, remediation: bool) -> Result<String, CallError> {
    let caller = cloud.caller_arn().await?;
    let Some(principal) = simulation_principal(&caller) else {
        return Ok(format!("{caller} cannot be simulated (root or a federated session): it is not limited by IAM identity policies the simulator can read.\n"));
    };
    let principal = cloud.resolve_role_path(&principal).await;
    let mut actions: Vec<String> = READ_SET.iter().map(|a| (*a).to_owned()).collect();
    if remediation {
        actions.extend(WRITE_SET.iter().map(|a| (*a).to_owned()));
    }
    let region = cloud.default_region().unwrap_or_else(|| "us-east-1".to_owned());
    let sims = cloud
        .simulate(&SimulationRequest {
            principal_arn: principal.clone(),
            actions: actions.clone(),
            resources: vec!["*".to_owned()],
            region,
        })
        .await?;
    let mut out = String::new();
    let _ = writeln!(out, "Credentials: {caller}\nSimulated:   {principal}\n");
    let width = actions.iter().map(String::len).max().unwrap_or(0);
    let _ = writeln!(out, "{:<width$}  {:<12}  NEEDED FOR", "ACTION", "DECISION");
    let mut denied = 0;
    for a in &actions {
        let decision = sims.iter().find(|s| s.action.eq_ignore_ascii_case(a)).map(|s| s.decision);
        let label = match decision {
            Some(Decision::Allowed) => "allowed",
            Some(Decision::ExplicitDeny) => "explicitDeny",
            Some(Decision::ImplicitDeny) => "implicitDeny",
            None => "unknown",
        };
        if decision != Some(Decision::Allowed) {
            denied += 1;
        }
        let why = if READ_SET.contains(&a.as_str()) { "diagnosis" } else { "--remediate apply" };
        let _ = writeln!(out, "{a:<width$}  {label:<12}  {why}");
    }
    let _ = writeln!(
        out,
        "\n{}",
        if denied == 0 {
            "Every call is allowed.".to_owned()
        } else {
            format!("{denied} call(s) not allowed: findings will list what could not be checked.")
        }
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_map_to_their_role() {
        assert_eq!(
            simulation_principal("arn:aws:sts::123456789012:assumed-role/Ops/alice").as_deref(),
            Some("arn:aws:iam::123456789012:role/Ops")
        );
        assert_eq!(
            simulation_principal("arn:aws:iam::123456789012:user/bob").as_deref(),
            Some("arn:aws:iam::123456789012:user/bob")
        );
        assert_eq!(simulation_principal("arn:aws:iam::123456789012:root"), None);
    }
}
