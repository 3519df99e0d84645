//! What each sink receives, rendered from a finding: pure functions, so the documents in
//! `docs/` are generated from the same code and tests can check every field.

mod asff;

pub use asff::*;

use crate::core::report::{CauseCode, Evidence, Finding};
use std::collections::BTreeMap;

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
