//! Delivering findings where operators look: SNS (people), Security Hub (security teams),
//! EventBridge (automation). Each sink is independent: one failing does not stop the others,
//! and the finding records which sinks it reached.

pub mod message;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracing::{info_span, Instrument};

use crate::cloud::{CallError, Effects};
use crate::report::Finding;

/// Which sinks are on. From `FINDINGS_TOPIC_ARN`, `SECURITY_HUB=on`, `FINDINGS_EVENT_BUS`, or
/// the CLI's `--notify-topic`, `--security-hub`, `--event-bus`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sinks {
    pub topic_arn: Option<String>,
    pub security_hub: bool,
    pub event_bus: Option<String>,
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

/// What each configured sink is to receive for one finding, rendered once.
///
/// Serializable because a delivery may outlive an invocation: when some sinks fail, the Lambda
/// handler puts the unsent part back on its queue, and the retry sends exactly these payloads
/// to exactly the sinks still missing. Nothing is diagnosed again, so a sink never gets the
/// same failure twice and the others are not left waiting on a new diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    pub finding_id: String,
    pub instance_id: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<SnsMessage>,
    /// Its `CreatedAt` and `UpdatedAt` are set when it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_hub: Option<message::Asff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventbridge: Option<BusEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnsMessage {
    pub topic_arn: String,
    pub subject: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusEvent {
    pub bus: String,
    pub detail: String,
    pub resources: Vec<String>,
}

impl Outbox {
    /// The payloads for every sink that is on, dated when the finding was decided (else `now`).
    pub fn render(finding: &Finding, sinks: &Sinks, now: &str) -> Self {
        let decided = finding.decided_at.as_deref().unwrap_or(now);
        Self {
            finding_id: finding.id.clone(),
            instance_id: finding.instance_id.clone(),
            region: finding.region.clone(),
            sns: sinks.topic_arn.as_ref().map(|topic| SnsMessage {
                topic_arn: topic.clone(),
                subject: message::sns_subject(finding),
                body: message::sns_body(finding),
                attributes: message::sns_attributes(finding),
            }),
            security_hub: sinks.security_hub.then(|| message::asff(finding, None, decided)),
            eventbridge: sinks.event_bus.as_ref().map(|bus| BusEvent {
                bus: bus.clone(),
                detail: message::eventbridge_detail(finding),
                resources: vec![message::instance_arn(finding)],
            }),
        }
    }

    /// True when every sink has what it should.
    pub fn is_empty(&self) -> bool {
        self.sns.is_none() && self.security_hub.is_none() && self.eventbridge.is_none()
    }

    /// The sinks still to be reached, by name (`sns`, `security_hub`, `eventbridge`).
    pub fn pending(&self) -> Vec<&'static str> {
        [
            ("sns", self.sns.is_some()),
            ("security_hub", self.security_hub.is_some()),
            ("eventbridge", self.eventbridge.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

/// Sends what the outbox holds. Each sink that succeeds is taken out of the outbox and
/// recorded in the returned [`Delivered`]; each failure is returned and stays in the outbox.
pub async fn send<E: Effects>(effects: &E, outbox: &mut Outbox, now: &str) -> (Delivered, Vec<CallError>) {
    let mut delivered = Delivered::default();
    let mut failures = Vec::new();
    let span = info_span!("deliver", finding_id = %outbox.finding_id);
    async {
        if let Some(m) = &outbox.sns {
            let sent = effects
                .publish(&m.topic_arn, &m.subject, &m.body, &m.attributes)
                .instrument(info_span!("sns.Publish"))
                .await;
            match sent {
                Ok(id) => {
                    delivered.sns = Some(id);
                    outbox.sns = None;
                }
                Err(e) => failures.push(e),
            }
        }
        if let Some(doc) = &outbox.security_hub {
            match security_hub(effects, doc, now).await {
                Ok(imported) => {
                    delivered.security_hub = Some(
                        match imported {
                            Imported::Upserted => "ok",
                            Imported::NewerKept => "newer finding kept",
                        }
                        .to_owned(),
                    );
                    outbox.security_hub = None;
                }
                Err(e) => failures.push(e),
            }
        }
        if let Some(e) = &outbox.eventbridge {
            let sent = effects
                .put_event(&outbox.region, &e.bus, &e.detail, &e.resources)
                .instrument(info_span!("events.PutEvents"))
                .await;
            match sent {
                Ok(id) => {
                    delivered.eventbridge = Some(id);
                    outbox.eventbridge = None;
                }
                Err(e) => failures.push(e),
            }
        }
    }
    .instrument(span)
    .await;
    for e in &failures {
        tracing::error!(finding_id = %outbox.finding_id, call = e.call, error = %e.message, "delivery failed");
    }
    (delivered, failures)
}

/// Sends one finding to every configured sink and records what it reached in
/// `finding.delivered`. Returns the failures (each names its call and why) and what is left
/// to send: empty unless something failed.
pub async fn deliver<E: Effects>(
    effects: &E,
    finding: &mut Finding,
    sinks: &Sinks,
    now: &str,
) -> (Vec<CallError>, Outbox) {
    let mut outbox = Outbox::render(finding, sinks, now);
    let (delivered, failures) = send(effects, &mut outbox, now).await;
    finding.delivered = delivered;
    (failures, outbox)
}

/// What a Security Hub delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imported {
    Upserted,
    /// Security Hub holds a finding with this Id decided later: it is kept.
    NewerKept,
}

/// Upserts the finding by its stable Id, keeping the first import's CreatedAt. Its UpdatedAt
/// is when the finding was decided, so a late redelivery or a replay of an older decision never
/// overwrites a newer one (RFC 3339 in UTC compares as text).
async fn security_hub<E: Effects>(effects: &E, doc: &message::Asff, now: &str) -> Result<Imported, CallError> {
    let existing = effects
        .existing_finding(&doc.region, &doc.product_arn, &doc.id)
        .instrument(info_span!("securityhub.GetFindings"))
        .await?;
    let mut doc = doc.clone();
    if doc.updated_at.is_empty() {
        doc.updated_at = now.to_owned();
    }
    if let Some((_, updated)) = &existing {
        if newer(updated, &doc.updated_at) {
            tracing::info!(finding_id = %doc.id, theirs = %updated, ours = %doc.updated_at, "Security Hub has a newer finding: kept");
            return Ok(Imported::NewerKept);
        }
    }
    doc.created_at = existing.map(|(c, _)| c).filter(|c| !c.is_empty()).unwrap_or_else(|| doc.updated_at.clone());
    effects.import_finding(&doc.region, &doc).instrument(info_span!("securityhub.BatchImportFindings")).await?;
    Ok(Imported::Upserted)
}

/// Whether timestamp `a` is later than `b` (RFC 3339; unparsable ones are never newer).
fn newer(a: &str, b: &str) -> bool {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a > b)
}
