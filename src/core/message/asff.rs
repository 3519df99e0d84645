//! The finding in the AWS Security Finding Format (Security Hub's BatchImportFindings).

use super::*;
use crate::core::arn::{Arn, IamEntity};
use crate::core::cloudtrail::PrincipalKind;
use crate::core::report::Finding;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub(super) fn partition(f: &Finding) -> &'static str {
    crate::core::arn::partition_of_region(&f.region)
}

pub fn product_arn(f: &Finding) -> String {
    format!("arn:{}:securityhub:{}:{}:product/{}/default", partition(f), f.region, f.account, f.account)
}

/// An AWS Security Finding Format document (the subset we fill), PascalCase like ASFF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Asff {
    pub schema_version: String,
    pub id: String,
    pub product_arn: String,
    pub generator_id: String,
    pub aws_account_id: String,
    pub types: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub first_observed_at: String,
    pub severity: AsffSeverity,
    pub title: String,
    pub description: String,
    pub remediation: AsffRemediation,
    pub product_fields: BTreeMap<String, String>,
    pub resources: Vec<AsffResource>,
    pub record_state: String,
    pub region: String,
    /// `PASSED` when the finding is resolved (the instance runs); absent while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance: Option<AsffCompliance>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffCompliance {
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffSeverity {
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffRemediation {
    pub recommendation: AsffRecommendation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffRecommendation {
    pub text: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffResource {
    #[serde(rename = "Type")]
    pub kind: String,
    pub id: String,
    pub partition: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

pub(super) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The ASFF finding. `created_at` is the first import's, kept across updates; `now` is this
/// import's UpdatedAt.
pub fn asff(f: &Finding, created_at: Option<&str>, now: &str) -> Asff {
    let code = primary(f);
    let summary = f.causes.iter().map(|c| c.summary.as_str()).collect::<Vec<_>>().join(" ");
    let fix = f
        .remediations
        .first()
        .map(|r| {
            let action = r.action.as_str().to_owned();
            format!(
                " Fix: {action} on {}{}",
                r.target,
                r.commands.first().map(|c| format!(": {c}")).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let mut resources = vec![AsffResource {
        kind: "AwsEc2Instance".to_owned(),
        id: instance_arn(f),
        partition: partition(f).to_owned(),
        region: f.region.clone(),
        details: None,
    }];
    for k in &f.keys {
        let mut details = serde_json::Map::new();
        if let Some(s) = &k.state {
            details.insert("KeyState".into(), Value::from(s.clone()));
        }
        if let Some(m) = &k.manager {
            details.insert("KeyManager".into(), Value::from(m.clone()));
        }
        details.insert("KeyId".into(), Value::from(k.arn.key_id()));
        details.insert("AWSAccountId".into(), Value::from(k.account.clone()));
        resources.push(AsffResource {
            kind: "AwsKmsKey".to_owned(),
            id: k.arn.to_string(),
            partition: partition(f).to_owned(),
            region: k.arn.region().to_owned(),
            details: Some(serde_json::json!({"AwsKmsKey": details})),
        });
    }
    if let Some(caller) = f.launch.as_ref().map(|l| &l.caller) {
        if let Some(p) = caller.principal_arn.as_deref().and_then(|p| Arn::parse(p).ok()) {
            let kind = match (IamEntity::of(&p), caller.principal_kind) {
                (IamEntity::User { .. }, _) => Some("AwsIamUser"),
                (IamEntity::Role { .. }, _) => Some("AwsIamRole"),
                (_, PrincipalKind::Root) => Some("Other"),
                _ => None,
            };
            if let Some(kind) = kind {
                resources.push(AsffResource {
                    kind: kind.to_owned(),
                    id: p.to_string(),
                    partition: partition(f).to_owned(),
                    region: f.region.clone(),
                    details: None,
                });
            }
        }
    }
    let codes = f.causes.iter().map(|c| c.code.as_str()).collect::<Vec<_>>().join(",");
    let product_fields = BTreeMap::from([
        ("ProviderName".to_owned(), "kms-launch-doctor".to_owned()),
        ("ProviderVersion".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("kms-launch-doctor/CauseCodes".to_owned(), codes),
        ("kms-launch-doctor/InstanceState".to_owned(), f.instance_state.as_str().to_owned()),
        ("kms-launch-doctor/StateReason".to_owned(), clip(&f.state_reason.message, 512)),
    ]);
    let mut a = Asff {
        schema_version: "2018-10-08".to_owned(),
        id: f.id.clone(),
        product_arn: product_arn(f),
        generator_id: format!("kms-launch-doctor/{}", code.as_str()),
        aws_account_id: f.account.clone(),
        types: vec!["Software and Configuration Checks/AWS Security Best Practices/KMS Key Access".to_owned()],
        created_at: created_at.unwrap_or(now).to_owned(),
        updated_at: now.to_owned(),
        first_observed_at: f.observed_at.clone(),
        severity: AsffSeverity { label: severity(code).to_owned() },
        title: clip(&headline(f), 256),
        description: clip(&format!("{summary}{fix}"), 1024),
        remediation: AsffRemediation {
            recommendation: AsffRecommendation {
                text: clip(&recommendation_text(f), 512),
                url: KNOWLEDGE_CENTER_URL.to_owned(),
            },
        },
        product_fields,
        resources,
        record_state: "ACTIVE".to_owned(),
        region: f.region.clone(),
        compliance: None,
    };
    // Security Hub takes 240 KB per finding; the fields above are bounded except resources.
    while serde_json::to_vec(&a).map(|v| v.len()).unwrap_or(0) > ASFF_MAX_BYTES && a.resources.len() > 1 {
        a.resources.pop();
    }
    a
}

pub(super) fn recommendation_text(f: &Finding) -> String {
    match f.remediations.first() {
        Some(r) => {
            let action = r.action.as_str().to_owned();
            let more = if f.remediations.len() > 1 {
                format!(" (and {} more)", f.remediations.len() - 1)
            } else {
                String::new()
            };
            format!("Apply {action} on {}{more}; the exact policy and aws commands are in the finding's SNS message and logs.", r.target)
        }
        None => f.causes.first().map(|c| c.summary.clone()).unwrap_or_default(),
    }
}
