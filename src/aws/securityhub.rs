//! Security Hub: findings read, imported and converted from and to the SDK's shape.

use super::*;
use crate::ports::CallError;

/// The subset of a Security Hub finding this tool writes, read back (to archive it as it is).
pub(super) fn from_sdk_finding(f: &aws_sdk_securityhub::types::AwsSecurityFinding) -> crate::core::message::Asff {
    use crate::core::message::{Asff, AsffCompliance, AsffRecommendation, AsffRemediation, AsffResource, AsffSeverity};
    let text = |s: Option<&str>| s.unwrap_or_default().to_owned();
    let recommendation = f.remediation().and_then(|r| r.recommendation());
    Asff {
        schema_version: text(f.schema_version()),
        id: text(f.id()),
        product_arn: text(f.product_arn()),
        generator_id: text(f.generator_id()),
        aws_account_id: text(f.aws_account_id()),
        types: f.types().to_vec(),
        created_at: text(f.created_at()),
        updated_at: text(f.updated_at()),
        first_observed_at: text(f.first_observed_at()),
        severity: AsffSeverity {
            label: f.severity().and_then(|s| s.label()).map(|l| l.as_str().to_owned()).unwrap_or_default(),
        },
        title: text(f.title()),
        description: text(f.description()),
        remediation: AsffRemediation {
            recommendation: AsffRecommendation {
                text: text(recommendation.and_then(|r| r.text())),
                url: text(recommendation.and_then(|r| r.url())),
            },
        },
        product_fields: f
            .product_fields()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        resources: f
            .resources()
            .iter()
            .map(|r| AsffResource {
                kind: text(r.r#type()),
                id: text(r.id()),
                partition: r.partition().map(|p| p.as_str().to_owned()).unwrap_or_default(),
                region: text(r.region()),
                details: r.details().and_then(|d| d.aws_kms_key()).map(|k| {
                    serde_json::json!({"AwsKmsKey": {
                        "KeyState": k.key_state(), "KeyManager": k.key_manager(),
                        "KeyId": k.key_id(), "AWSAccountId": k.aws_account_id(),
                    }})
                }),
            })
            .collect(),
        record_state: f.record_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        region: text(f.region()),
        compliance: f.compliance().and_then(|c| c.status()).map(|s| AsffCompliance { status: s.as_str().to_owned() }),
    }
}

pub(super) fn to_sdk_finding(a: &crate::core::message::Asff) -> aws_sdk_securityhub::types::AwsSecurityFinding {
    use aws_sdk_securityhub::types::{
        AwsKmsKeyDetails, AwsSecurityFinding, Partition, Recommendation, RecordState, Remediation, Resource,
        ResourceDetails, Severity, SeverityLabel,
    };
    let resources = a
        .resources
        .iter()
        .map(|r| {
            let mut b = Resource::builder()
                .r#type(&r.kind)
                .id(&r.id)
                .partition(Partition::from(r.partition.as_str()))
                .region(&r.region);
            if let Some(k) = r.details.as_ref().and_then(|d| d.get("AwsKmsKey")) {
                let field = |name: &str| k.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
                b = b.details(
                    ResourceDetails::builder()
                        .aws_kms_key(
                            AwsKmsKeyDetails::builder()
                                .set_key_state(field("KeyState"))
                                .set_key_manager(field("KeyManager"))
                                .set_key_id(field("KeyId"))
                                .set_aws_account_id(field("AWSAccountId"))
                                .build(),
                        )
                        .build(),
                );
            }
            b.build()
        })
        .collect();
    AwsSecurityFinding::builder()
        .schema_version(&a.schema_version)
        .id(&a.id)
        .product_arn(&a.product_arn)
        .generator_id(&a.generator_id)
        .aws_account_id(&a.aws_account_id)
        .set_types(Some(a.types.clone()))
        .created_at(&a.created_at)
        .updated_at(&a.updated_at)
        .first_observed_at(&a.first_observed_at)
        .severity(Severity::builder().label(SeverityLabel::from(a.severity.label.as_str())).build())
        .title(&a.title)
        .description(&a.description)
        .remediation(
            Remediation::builder()
                .recommendation(
                    Recommendation::builder()
                        .text(&a.remediation.recommendation.text)
                        .url(&a.remediation.recommendation.url)
                        .build(),
                )
                .build(),
        )
        .set_product_fields(Some(a.product_fields.clone().into_iter().collect()))
        .set_resources(Some(resources))
        .record_state(RecordState::from(a.record_state.as_str()))
        .region(&a.region)
        .set_compliance(a.compliance.as_ref().map(|c| {
            aws_sdk_securityhub::types::Compliance::builder()
                .status(aws_sdk_securityhub::types::ComplianceStatus::from(c.status.as_str()))
                .build()
        }))
        .build()
}

pub(super) async fn existing_findings(
    aws: &AwsCloud,
    region: &str,
    product_arn: &str,
    ids: &[String],
) -> Result<std::collections::BTreeMap<String, (String, String)>, CallError> {
    use aws_sdk_securityhub::types::{AwsSecurityFindingFilters, StringFilter, StringFilterComparison};
    let eq = |v: &str| StringFilter::builder().value(v).comparison(StringFilterComparison::Equals).build();
    let filters = AwsSecurityFindingFilters::builder()
        .set_id(Some(ids.iter().map(|id| eq(id)).collect()))
        .product_arn(eq(product_arn))
        .build();
    let mut out = std::collections::BTreeMap::new();
    aws.findings_pages(region, filters, |page| {
        // Match the Ids here too: a filter the service ignored must not borrow another
        // finding's dates.
        for f in page {
            if let Some(id) = f.id().filter(|id| ids.iter().any(|want| want == id)) {
                let created = f.created_at().unwrap_or_default().to_owned();
                let updated = f.updated_at().map(str::to_owned).unwrap_or_else(|| created.clone());
                out.insert(id.to_owned(), (created, updated));
            }
        }
        out.len() < ids.len()
    })
    .await?;
    Ok(out)
}

pub(super) async fn open_findings(
    aws: &AwsCloud,
    region: &str,
    product_arn: &str,
    resource_ids: &[String],
) -> Result<Vec<crate::core::message::Asff>, CallError> {
    use aws_sdk_securityhub::types::{AwsSecurityFindingFilters, StringFilter, StringFilterComparison};
    let filter = |v: &str, c: StringFilterComparison| StringFilter::builder().value(v).comparison(c).build();
    let filters = AwsSecurityFindingFilters::builder()
        .set_resource_id(Some(resource_ids.iter().map(|id| filter(id, StringFilterComparison::Equals)).collect()))
        .product_arn(filter(product_arn, StringFilterComparison::Equals))
        .generator_id(filter(crate::core::message::GENERATOR_PREFIX, StringFilterComparison::Prefix))
        .record_state(filter("ACTIVE", StringFilterComparison::Equals))
        .build();
    let mut out = Vec::new();
    aws.findings_pages(region, filters, |page| {
        out.extend(page.iter().map(from_sdk_finding));
        true
    })
    .await?;
    Ok(out)
}

pub(super) async fn import_findings(
    aws: &AwsCloud,
    region: &str,
    findings: &[crate::core::message::Asff],
) -> Result<Vec<(String, String)>, CallError> {
    let resp = aws
        .clients(region)
        .securityhub
        .batch_import_findings()
        .set_findings(Some(findings.iter().map(to_sdk_finding).collect()))
        .send()
        .await
        .map_err(|e| call_error("securityhub:BatchImportFindings", e))?;
    Ok(resp
        .failed_findings()
        .iter()
        .map(|f| {
            (
                f.id().unwrap_or_default().to_owned(),
                format!("{}: {}", f.error_code().unwrap_or("?"), f.error_message().unwrap_or("?")),
            )
        })
        .collect())
}

impl AwsCloud {
    /// Security Hub GetFindings with `filters`, 100 a page, each page to `page` until it says
    /// enough (false) or the pages end.
    pub(super) async fn findings_pages(
        &self,
        region: &str,
        filters: aws_sdk_securityhub::types::AwsSecurityFindingFilters,
        mut page: impl FnMut(&[aws_sdk_securityhub::types::AwsSecurityFinding]) -> bool,
    ) -> Result<(), CallError> {
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .clients(region)
                .securityhub
                .get_findings()
                .filters(filters.clone())
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| call_error("securityhub:GetFindings", e))?;
            let more = page(resp.findings());
            match resp.next_token() {
                Some(t) if !t.is_empty() && more => token = Some(t.to_owned()),
                _ => return Ok(()),
            }
        }
    }
}
