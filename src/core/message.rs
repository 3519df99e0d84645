//! What each sink receives, rendered from a finding: pure functions, so the documents in
//! `docs/` are generated from the same code and tests can check every field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::arn::{Arn, IamEntity};
use crate::core::cloudtrail::PrincipalKind;
use crate::core::report::{CauseCode, Evidence, Finding};

pub const KNOWLEDGE_CENTER_URL: &str = "https://repost.aws/knowledge-center/kms-iam-ec2-permission";
/// Every finding this tool writes has a `GeneratorId` under this prefix.
pub const GENERATOR_PREFIX: &str = "kms-launch-doctor/";
pub const EVENT_SOURCE: &str = "kms-launch-doctor";
pub const EVENT_DETAIL_TYPE: &str = "EC2 Launch Failure Diagnosed";
/// An instance with an open finding reached `running`: the finding is resolved.
pub const RESOLVED_DETAIL_TYPE: &str = "EC2 Launch Failure Resolved";
/// Preflight found a launch that would fail (scheduled preflight in Lambda).
pub const WILL_FAIL_DETAIL_TYPE: &str = "EC2 Launch Will Fail";

/// SNS allows 256 KB per message, EventBridge 256 KB per entry; Security Hub 240 KB per finding.
pub const SNS_MAX_BYTES: usize = 256 * 1024;
pub const EVENTBRIDGE_MAX_BYTES: usize = 256 * 1024;
pub const ASFF_MAX_BYTES: usize = 240 * 1024;

/// The cause that matters most for a finding: the first one (causes come in key order, and a
/// finding with no problem key has exactly one, `no-kms-cause-found`).
pub fn primary(f: &Finding) -> CauseCode {
    f.causes.first().map(|c| c.code).unwrap_or(CauseCode::NoKmsCauseFound)
}

/// Severity: [`CauseCode::severity`], the rule the JSON finding's `severity` follows too.
pub fn severity(code: CauseCode) -> &'static str {
    code.severity()
}

fn who(f: &Finding) -> String {
    f.launch.as_ref().map(|l| l.caller.short_name()).unwrap_or_else(|| "unknown caller".to_owned())
}

fn short_key(arn: &str) -> String {
    let id = arn.rsplit('/').next().unwrap_or(arn);
    if id.len() > 8 {
        format!("{}...", id.get(..8).unwrap_or(id))
    } else {
        id.to_owned()
    }
}

/// Printable ASCII only, at most `max` characters.
pub(crate) fn ascii(s: &str, max: usize) -> String {
    let clean: String = s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    if clean.len() <= max {
        clean
    } else {
        format!("{}...", clean.get(..max.saturating_sub(3)).unwrap_or_default())
    }
}

fn headline(f: &Finding) -> String {
    let key = f.causes.first().and_then(|c| c.key_arn.as_ref()).map(|k| short_key(&k.to_string()));
    let key = key.as_deref().unwrap_or("?");
    let why = match primary(f) {
        CauseCode::CallerLacksCreateGrant => format!("{} lacks kms:CreateGrant on key {key}", who(f)),
        CauseCode::KeyPolicyDeniesCaller => format!("key {key} policy does not allow {}", who(f)),
        CauseCode::ExplicitDeny => format!("explicit Deny blocks {} on key {key}", who(f)),
        CauseCode::KeyDisabled => format!("KMS key {key} is disabled"),
        CauseCode::KeyPendingDeletion => format!("KMS key {key} is pending deletion"),
        CauseCode::KeyPendingImport => format!("KMS key {key} has no key material"),
        CauseCode::KeyUnavailable => format!("KMS key {key} is unavailable"),
        CauseCode::CrossAccountKey => format!("key {key} is in another account"),
        CauseCode::ServiceLinkedRoleNeedsKeyAccess => format!("service-linked role needs access to key {key}"),
        CauseCode::CallerUnknown => format!("caller unknown, key {key}"),
        CauseCode::NoKmsCauseFound => "no KMS cause found".to_owned(),
        CauseCode::PermissionsBoundaryBlocks => format!("permissions boundary of {} blocks key {key}", who(f)),
        CauseCode::ScpBlocks => format!("an SCP blocks {} on key {key}", who(f)),
        CauseCode::Ec2InfrastructureDenied => format!("key {key} policy denies EC2's own identity"),
    };
    let verb = match f.instance_state {
        crate::core::facts::EndState::Stopped => "failed to start",
        crate::core::facts::EndState::Terminated => "failed to launch",
    };
    format!("EC2 {} {verb}: {why}", f.instance_id)
}

/// SNS Publish: "Subjects must be ASCII text that begins with a letter, number, or
/// punctuation mark; must not include line breaks or control characters; and must be less
/// than 100 characters long." Less than 100: at most 99.
pub const SNS_SUBJECT_MAX: usize = 99;

/// SNS subject: plain ASCII, at most [`SNS_SUBJECT_MAX`] characters.
pub fn sns_subject(f: &Finding) -> String {
    ascii(&headline(f), SNS_SUBJECT_MAX)
}

/// SNS body: for a person reading e-mail or chat.
pub fn sns_body(f: &Finding) -> String {
    let mut text = crate::core::render::finding_text(f, true);
    text.push_str(&format!("\nKnowledge Center: {KNOWLEDGE_CENTER_URL}\n"));
    truncate_text(text, SNS_MAX_BYTES - 1024)
}

/// Message attributes for subscription filter policies.
pub fn sns_attributes(f: &Finding) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cause".to_owned(), primary(f).as_str().to_owned()),
        ("account".to_owned(), f.account.clone()),
        ("instance_id".to_owned(), f.instance_id.clone()),
        ("severity".to_owned(), severity(primary(f)).to_owned()),
        // A subscriber drops repeats by these: the same id and digest, the same news.
        ("finding_id".to_owned(), f.id.clone()),
        ("digest".to_owned(), digest(f)),
    ])
}

/// What the finding says, hashed (FNV-1a over its JSON): not when it was observed or decided,
/// nor which sinks it reached. Two deliveries with the same `finding_id` and `digest` carry
/// the same content.
pub fn digest(f: &Finding) -> String {
    let mut g = f.clone();
    g.delivered = Default::default();
    g.decided_at = None;
    g.digest = String::new();
    g.observed_at = String::new();
    let bytes = serde_json::to_vec(&g).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn truncate_text(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let marker = "\n[... truncated: the full finding is in the function's logs]\n";
    let mut end = max.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(marker);
    s
}

/// A copy of the finding whose JSON fits in `max` bytes: evidence lists, then commands and
/// missing evidence, are cut with a marker saying how much was left out. Never fails.
pub fn fit(f: &Finding, max: usize) -> Finding {
    let size = |f: &Finding| serde_json::to_vec(f).map(|v| v.len()).unwrap_or(usize::MAX);
    if size(f) <= max {
        return f.clone();
    }
    for keep in [8usize, 4, 2, 1, 0] {
        let mut g = f.clone();
        for c in &mut g.causes {
            if c.evidence.len() > keep {
                let dropped = c.evidence.len() - keep;
                c.evidence.truncate(keep);
                c.evidence.push(Evidence::Note {
                    text: format!("{dropped} more evidence items truncated to fit the payload limit"),
                });
            }
        }
        if keep <= 1 {
            for r in &mut g.remediations {
                if r.commands.len() > 1 {
                    r.commands.truncate(1);
                    r.commands.push("# more commands truncated to fit the payload limit".to_owned());
                }
            }
            if g.missing_evidence.len() > keep {
                g.missing_evidence.truncate(keep);
            }
            if g.volumes.len() > 32 {
                g.volumes.truncate(32);
            }
        }
        if size(&g) <= max {
            return g;
        }
    }
    // Pathological: keep only what identifies the finding and its causes.
    let mut g = f.clone();
    g.volumes.clear();
    g.keys.clear();
    g.missing_evidence.clear();
    g.remediations.clear();
    for c in &mut g.causes {
        c.evidence = vec![Evidence::Note { text: "evidence truncated to fit the payload limit".to_owned() }];
        c.summary = crate::core::event::echo(&c.summary);
    }
    g.causes.truncate(16);
    g
}

/// The EventBridge `Detail`: the finding JSON of the report contract, within 256 KB.
pub fn eventbridge_detail(f: &Finding) -> String {
    let mut f = f.clone();
    f.digest = digest(&f);
    // Leave room for the envelope (source, detail-type, resources, bus).
    serde_json::to_string(&fit(&f, EVENTBRIDGE_MAX_BYTES - 4096)).unwrap_or_else(|_| "{}".to_owned())
}

pub fn instance_arn(f: &Finding) -> String {
    format!("arn:{}:ec2:{}:{}:instance/{}", partition(f), f.region, f.account, f.instance_id)
}

fn partition(f: &Finding) -> &'static str {
    if f.region.starts_with("cn-") {
        "aws-cn"
    } else if f.region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
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

fn clip(s: &str, max: usize) -> String {
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
        (
            "kms-launch-doctor/InstanceState".to_owned(),
            match f.instance_state {
                crate::core::facts::EndState::Stopped => "stopped".to_owned(),
                crate::core::facts::EndState::Terminated => "terminated".to_owned(),
            },
        ),
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

fn recommendation_text(f: &Finding) -> String {
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
