//! IAM: SimulatePrincipalPolicy, permissions boundaries, principal tags and inline policies (the only IAM writes).

use super::*;
use crate::core::facts::{Decision, Simulation};
use crate::ports::{CallError, FailureKind, SimulationRequest};

pub(super) async fn simulate(aws: &AwsCloud, request: &SimulationRequest) -> Result<Vec<Simulation>, CallError> {
    // kms:GrantIsForAWSResource exists only on grant operations: it goes with those alone,
    // so that a condition on it in some other statement is judged as AWS would (key absent).
    let (grants, others): (Vec<String>, Vec<String>) =
        request.actions.iter().cloned().partition(|a| crate::core::policy::is_grant_action(a));
    let mut out = Vec::new();
    for (actions, grant) in [(grants, true), (others, false)] {
        if !actions.is_empty() {
            out.extend(aws.simulate_actions(request, actions, grant).await?);
        }
    }
    Ok(out)
}

pub(super) async fn permissions_boundary(aws: &AwsCloud, principal_arn: &str) -> Result<Option<String>, CallError> {
    use crate::core::arn::{Arn, IamEntity};
    let entity =
        Arn::parse(principal_arn).map(|a| IamEntity::of(&a)).map_err(|e| other("iam:GetUser", e.to_string()))?;
    match entity {
        IamEntity::User { name, .. } => {
            let r = aws.iam.get_user().user_name(name).send().await.map_err(|e| call_error("iam:GetUser", e))?;
            Ok(r.user()
                .and_then(|u| u.permissions_boundary())
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_owned))
        }
        IamEntity::Role { name, .. } => {
            let r = aws.iam.get_role().role_name(name).send().await.map_err(|e| call_error("iam:GetRole", e))?;
            Ok(r.role()
                .and_then(|u| u.permissions_boundary())
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_owned))
        }
        _ => Ok(None),
    }
}

pub(super) async fn principal_tags(
    aws: &AwsCloud,
    principal: &crate::ports::Principal,
) -> Result<Vec<(String, String)>, CallError> {
    use crate::ports::Principal;
    all_pages(|marker| async move {
        let tags = |t: &[aws_sdk_iam::types::Tag]| -> Vec<(String, String)> {
            t.iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect()
        };
        match principal {
            Principal::User(n) => {
                let r = aws
                    .iam
                    .list_user_tags()
                    .user_name(n)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| call_error("iam:ListUserTags", e))
                    .and_then(|r| complete("iam:ListUserTags", r))?;
                Ok((tags(r.tags()), r.is_truncated().then(|| r.marker().map(str::to_owned)).flatten()))
            }
            Principal::Role(n) => {
                let r = aws
                    .iam
                    .list_role_tags()
                    .role_name(n)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| call_error("iam:ListRoleTags", e))
                    .and_then(|r| complete("iam:ListRoleTags", r))?;
                Ok((tags(r.tags()), r.is_truncated().then(|| r.marker().map(str::to_owned)).flatten()))
            }
        }
    })
    .await
}

pub(super) async fn inline_policy_names(
    aws: &AwsCloud,
    principal: &crate::ports::Principal,
) -> Result<Vec<String>, CallError> {
    use crate::ports::Principal;
    all_pages(|marker| async move {
        match principal {
            Principal::User(n) => {
                let r = aws
                    .iam
                    .list_user_policies()
                    .user_name(n)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| call_error("iam:ListUserPolicies", e))
                    .and_then(|r| complete("iam:ListUserPolicies", r))?;
                Ok((r.policy_names().to_vec(), r.is_truncated().then(|| r.marker().map(str::to_owned)).flatten()))
            }
            Principal::Role(n) => {
                let r = aws
                    .iam
                    .list_role_policies()
                    .role_name(n)
                    .set_marker(marker)
                    .send()
                    .await
                    .map_err(|e| call_error("iam:ListRolePolicies", e))
                    .and_then(|r| complete("iam:ListRolePolicies", r))?;
                Ok((r.policy_names().to_vec(), r.is_truncated().then(|| r.marker().map(str::to_owned)).flatten()))
            }
        }
    })
    .await
}

pub(super) async fn inline_policy(
    aws: &AwsCloud,
    principal: &crate::ports::Principal,
    name: &str,
) -> Result<Option<String>, CallError> {
    use crate::ports::Principal;
    let doc = match principal {
        Principal::User(n) => match aws.iam.get_user_policy().user_name(n).policy_name(name).send().await {
            Ok(r) => Some(complete("iam:GetUserPolicy", r)?.policy_document().to_owned()),
            Err(e) => {
                let e = call_error("iam:GetUserPolicy", e);
                if e.kind == FailureKind::NotFound {
                    None
                } else {
                    return Err(e);
                }
            }
        },
        Principal::Role(n) => match aws.iam.get_role_policy().role_name(n).policy_name(name).send().await {
            Ok(r) => Some(complete("iam:GetRolePolicy", r)?.policy_document().to_owned()),
            Err(e) => {
                let e = call_error("iam:GetRolePolicy", e);
                if e.kind == FailureKind::NotFound {
                    None
                } else {
                    return Err(e);
                }
            }
        },
    };
    // IAM returns policy documents URL-encoded (RFC 3986); the SDK does not decode them.
    Ok(doc.map(|d| percent_encoding::percent_decode_str(&d).decode_utf8_lossy().into_owned()))
}

pub(super) async fn put_inline_policy(
    aws: &AwsCloud,
    principal: &crate::ports::Principal,
    name: &str,
    document: &str,
) -> Result<(), CallError> {
    use crate::ports::Principal;
    match principal {
        Principal::User(n) => {
            aws.iam
                .put_user_policy()
                .user_name(n)
                .policy_name(name)
                .policy_document(document)
                .send()
                .await
                .map_err(|e| call_error("iam:PutUserPolicy", e))
                .and_then(|r| complete("iam:PutUserPolicy", r))?;
        }
        Principal::Role(n) => {
            aws.iam
                .put_role_policy()
                .role_name(n)
                .policy_name(name)
                .policy_document(document)
                .send()
                .await
                .map_err(|e| call_error("iam:PutRolePolicy", e))
                .and_then(|r| complete("iam:PutRolePolicy", r))?;
        }
    }
    Ok(())
}

impl AwsCloud {
    /// One SimulatePrincipalPolicy (all its pages) for `actions` on the request's resources.
    pub(super) async fn simulate_actions(
        &self,
        request: &SimulationRequest,
        actions: Vec<String>,
        grant: bool,
    ) -> Result<Vec<Simulation>, CallError> {
        use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum};
        let mut context = vec![ContextEntry::builder()
            .context_key_name("kms:ViaService")
            .context_key_type(ContextKeyTypeEnum::String)
            .context_key_values(format!("ec2.{}.amazonaws.com", request.region))
            .build()];
        if grant {
            context.push(
                ContextEntry::builder()
                    .context_key_name("kms:GrantIsForAWSResource")
                    .context_key_type(ContextKeyTypeEnum::Boolean)
                    .context_key_values("true")
                    .build(),
            );
        }
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let resp = self
                .iam
                .simulate_principal_policy()
                .policy_source_arn(&request.principal_arn)
                .set_action_names(Some(actions.clone()))
                .set_resource_arns(Some(request.resources.clone()))
                .set_context_entries(Some(context.clone()))
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| call_error("iam:SimulatePrincipalPolicy", e))?;
            for r in resp.evaluation_results() {
                let statement_ids = |st: &[aws_sdk_iam::types::Statement]| -> Vec<String> {
                    st.iter().filter_map(|s| s.source_policy_id().map(str::to_owned)).collect()
                };
                let organizations = r.organizations_decision_detail().map(|d| d.allowed_by_organizations());
                let boundary = r.permissions_boundary_decision_detail().map(|d| d.allowed_by_permissions_boundary());
                // Per-resource decisions, when IAM gives them, are the precise ones.
                let specific = r.resource_specific_results();
                if specific.is_empty() {
                    let Some(decision) = Decision::parse(r.eval_decision().as_str()) else { continue };
                    out.push(Simulation {
                        principal_arn: request.principal_arn.clone(),
                        action: r.eval_action_name().to_owned(),
                        resource: r.eval_resource_name().unwrap_or("*").to_owned(),
                        decision,
                        matched_statements: statement_ids(r.matched_statements()),
                        allowed_by_boundary: boundary,
                        allowed_by_organizations: organizations,
                    });
                }
                for s in specific {
                    let Some(decision) = Decision::parse(s.eval_resource_decision().as_str()) else { continue };
                    out.push(Simulation {
                        principal_arn: request.principal_arn.clone(),
                        action: r.eval_action_name().to_owned(),
                        resource: s.eval_resource_name().to_owned(),
                        decision,
                        matched_statements: statement_ids(s.matched_statements()),
                        allowed_by_boundary: s
                            .permissions_boundary_decision_detail()
                            .map(|d| d.allowed_by_permissions_boundary())
                            .or(boundary),
                        allowed_by_organizations: organizations,
                    });
                }
            }
            match resp.marker() {
                Some(m) if resp.is_truncated() && !m.is_empty() => marker = Some(m.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}
