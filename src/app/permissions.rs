//! `check-permissions`: can the operator's credentials make every call the tool needs? Asks
//! IAM's policy simulator about the caller from GetCallerIdentity, lists each call under the
//! command that needs it, and prints the inline policy that would grant exactly the calls that
//! are missing.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::core::arn::{Arn, IamEntity};
use crate::core::facts::Decision;
use crate::ports::{CallError, Cloud, SimulationRequest};

/// Every diagnosis (`diagnose`, `scan`, `replay`): confirm, trace volumes and keys, name the
/// keys, find the caller, verify.
pub const READ_SET: &[&str] = &[
    "ec2:DescribeInstances",
    "ec2:DescribeVolumes",
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:ListAliases",
    "cloudtrail:LookupEvents",
    "iam:SimulatePrincipalPolicy",
];

/// `--all-regions` only: the account's enabled regions.
pub const ALL_REGIONS_SET: &[&str] = &["ec2:DescribeRegions"];

/// `--remediate dry-run` reads these (the opt-in tags, the existing inline policies); `apply`
/// also writes (and may restart).
pub const REMEDIATION_READS: &[&str] = &[
    "iam:ListUserTags",
    "iam:ListRoleTags",
    "iam:ListUserPolicies",
    "iam:ListRolePolicies",
    "iam:GetUserPolicy",
    "iam:GetRolePolicy",
    "kms:ListResourceTags",
];
pub const REMEDIATION_WRITES: &[&str] = &["iam:PutUserPolicy", "iam:PutRolePolicy", "ec2:StartInstances"];

/// What to check: the commands and flags the credentials are meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// `--all-regions` (ec2:DescribeRegions) is required, not just listed.
    pub all_regions: bool,
    pub remediation: crate::app::remediate::Mode,
}

/// One group of calls: who needs them, and whether this check requires them.
struct Group {
    title: &'static str,
    calls: &'static [&'static str],
    required: bool,
}

/// The outcome: the text to print, and whether a required call is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub text: String,
    pub missing_required: Vec<String>,
}

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

pub async fn check<C: Cloud>(cloud: &C, needs: Needs, region: &str) -> Result<Check, CallError> {
    use crate::app::remediate::Mode;
    let caller = cloud.caller_arn().await?;
    let Some(principal) = simulation_principal(&caller) else {
        return Ok(Check {
            text: format!("{caller} cannot be simulated (root or a federated session): it is not limited by IAM identity policies the simulator can read.\n"),
            missing_required: Vec::new(),
        });
    };
    let principal = cloud.role_with_path(&principal).await;
    let groups = [
        Group { title: "Every diagnosis (diagnose, scan, replay)", calls: READ_SET, required: true },
        Group { title: "--all-regions (diagnose, scan)", calls: ALL_REGIONS_SET, required: needs.all_regions },
        Group {
            title: "--remediate dry-run and apply (reads)",
            calls: REMEDIATION_READS,
            required: needs.remediation != Mode::Off,
        },
        Group {
            title: "--remediate apply (writes; StartInstances with RESTART_AFTER_REMEDIATION)",
            calls: REMEDIATION_WRITES,
            required: needs.remediation == Mode::Apply,
        },
    ];
    let actions: Vec<String> = groups.iter().flat_map(|g| g.calls.iter().map(|a| (*a).to_owned())).collect();
    let region = region.to_owned();
    let sims = cloud
        .simulate(&SimulationRequest {
            principal_arn: principal.clone(),
            actions: actions.clone(),
            resources: vec!["*".to_owned()],
            region,
        })
        .await?;
    let mut out = String::new();
    let _ = writeln!(out, "Credentials: {caller}\nSimulated:   {principal}");
    let width = actions.iter().map(String::len).max().unwrap_or(0);
    let mut missing_required: Vec<String> = Vec::new();
    let mut missing_optional: Vec<String> = Vec::new();
    for g in &groups {
        let _ = writeln!(out, "\n{}{}:", g.title, if g.required { "" } else { " (not required by this check)" });
        for a in g.calls {
            let decision = sims.iter().find(|s| s.action.eq_ignore_ascii_case(a)).map(|s| s.decision);
            let label = match decision {
                Some(Decision::Allowed) => "allowed",
                Some(Decision::ExplicitDeny) => "explicitDeny",
                Some(Decision::ImplicitDeny) => "implicitDeny",
                None => "unknown (the simulator gave no answer)",
            };
            if decision != Some(Decision::Allowed) {
                if g.required {
                    missing_required.push((*a).to_owned());
                } else {
                    missing_optional.push((*a).to_owned());
                }
            }
            let _ = writeln!(out, "  {a:<width$}  {label}");
        }
    }
    if missing_required.is_empty() {
        let _ = writeln!(out, "\nEvery required call is allowed.");
    } else {
        let _ = writeln!(
            out,
            "\n{} required call(s) not allowed: {}.\nThis inline policy grants exactly those (an explicit Deny, a permissions boundary or an SCP would still win):\n",
            missing_required.len(),
            missing_required.join(", ")
        );
        let doc = grant_policy(&missing_required);
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        if let Some(command) = attach_command(&principal, &doc) {
            let _ = writeln!(out, "\nTo attach it:\n  $ {command}");
        }
    }
    if !missing_optional.is_empty() {
        let _ = writeln!(
            out,
            "\nAlso not allowed, but not required by this check: {} (see the group it is listed under).",
            missing_optional.join(", ")
        );
    }
    Ok(Check { text: out, missing_required })
}

/// An identity policy granting exactly `actions`: the diagnosis's reads in one statement, the
/// remediation's calls in another (narrow that one to opted-in principals and instances with
/// a tag condition, as template.yaml does, if these credentials remediate for others).
pub fn grant_policy(actions: &[String]) -> Value {
    let (writes, reads): (Vec<&String>, Vec<&String>) = actions
        .iter()
        .partition(|a| REMEDIATION_READS.contains(&a.as_str()) || REMEDIATION_WRITES.contains(&a.as_str()));
    let mut statements = Vec::new();
    if !reads.is_empty() {
        statements.push(json!({"Sid": "KmsLaunchDoctorDiagnose", "Effect": "Allow", "Action": reads, "Resource": "*"}));
    }
    if !writes.is_empty() {
        statements
            .push(json!({"Sid": "KmsLaunchDoctorRemediate", "Effect": "Allow", "Action": writes, "Resource": "*"}));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// `aws iam put-user-policy` / `put-role-policy` with the policy, for a user or role.
fn attach_command(principal: &str, doc: &Value) -> Option<String> {
    use crate::core::fixes::shell_quote;
    let arn = Arn::parse(principal).ok()?;
    let entity = IamEntity::of(&arn);
    // An Identity Center role is managed by its permission set: an edit to it is undone.
    let who = entity.cli().filter(|w| !w.name.starts_with("AWSReservedSSO_"))?;
    let (verb, flag, name) = (format!("put-{}-policy", who.noun), who.flag, who.name);
    Some(format!(
        "aws iam {verb} {flag} {} --policy-name kms-launch-doctor-permissions --policy-document {}",
        shell_quote(name),
        shell_quote(&doc.to_string())
    ))
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

    #[test]
    fn the_grant_policy_has_exactly_the_missing_calls() {
        let doc = grant_policy(&["kms:ListAliases".to_owned(), "iam:PutUserPolicy".to_owned()]);
        assert_eq!(doc["Statement"][0]["Action"], json!(["kms:ListAliases"]));
        assert_eq!(doc["Statement"][1]["Action"], json!(["iam:PutUserPolicy"]));
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 2);
        let cmd = attach_command("arn:aws:iam::123456789012:role/team/Ops", &doc).unwrap();
        assert!(cmd.starts_with("aws iam put-role-policy --role-name Ops --policy-name kms-launch-doctor-permissions --policy-document '"), "{cmd}");
    }
}
