//! Delivering findings where operators look: SNS (people), Security Hub (security teams),
//! EventBridge (automation). Each sink is independent: one failing does not stop the others,
//! and the finding records which sinks it reached.

pub mod message;

use serde::Serialize;
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

impl Sinks {
    pub fn any(&self) -> bool {
        self.topic_arn.is_some() || self.security_hub || self.event_bus.is_some()
    }
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

/// Sends one finding to every configured sink, records what it reached in
/// `finding.delivered`, and returns the failures (each names its call and why).
pub async fn deliver<E: Effects>(effects: &E, finding: &mut Finding, sinks: &Sinks, now: &str) -> Vec<CallError> {
    let mut failures = Vec::new();
    let span = info_span!("deliver", finding_id = %finding.id);
    async {
        if let Some(topic) = &sinks.topic_arn {
            let attrs = message::sns_attributes(finding);
            let sent = effects
                .publish(topic, &message::sns_subject(finding), &message::sns_body(finding), &attrs)
                .instrument(info_span!("sns.Publish"))
                .await;
            match sent {
                Ok(id) => finding.delivered.sns = Some(id),
                Err(e) => failures.push(e),
            }
        }
        if sinks.security_hub {
            match security_hub(effects, finding, now).await {
                Ok(()) => finding.delivered.security_hub = Some("ok".to_owned()),
                Err(e) => failures.push(e),
            }
        }
        if let Some(bus) = &sinks.event_bus {
            let sent = effects
                .put_event(
                    &finding.region,
                    bus,
                    &message::eventbridge_detail(finding),
                    &[message::instance_arn(finding)],
                )
                .instrument(info_span!("events.PutEvents"))
                .await;
            match sent {
                Ok(id) => finding.delivered.eventbridge = Some(id),
                Err(e) => failures.push(e),
            }
        }
    }
    .instrument(span)
    .await;
    for e in &failures {
        tracing::error!(finding_id = %finding.id, call = e.call, error = %e.message, "delivery failed");
    }
    failures
}

/// Upserts the finding by its stable Id, keeping the first import's CreatedAt.
async fn security_hub<E: Effects>(effects: &E, finding: &Finding, now: &str) -> Result<(), CallError> {
    let product = message::product_arn(finding);
    let created = effects
        .finding_created_at(&finding.region, &product, &finding.id)
        .instrument(info_span!("securityhub.GetFindings"))
        .await?;
    let doc = message::asff(finding, created.as_deref(), now);
    effects.import_finding(&finding.region, &doc).instrument(info_span!("securityhub.BatchImportFindings")).await
}
