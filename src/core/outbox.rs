//! What each sink is to receive for one finding: the sinks that are on, and the payloads
//! rendered for them once (SNS, Security Hub, EventBridge). Pure data; sending is
//! [`crate::app::deliver`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::message;
use crate::core::report::Finding;

/// Which sinks are on. From `FINDINGS_TOPIC_ARN`, `SECURITY_HUB=on`, `FINDINGS_EVENT_BUS`, or
/// the CLI's `--notify-topic`, `--security-hub`, `--event-bus`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sinks {
    pub topic_arn: Option<String>,
    pub security_hub: bool,
    pub event_bus: Option<String>,
    /// Hub topology: where every finding is delivered, whichever account and region it is
    /// about. Security Hub's BatchImportFindings takes a finding only for the caller's own
    /// account, into its product in the region called; the hub's bus is in the hub's region.
    pub home: Option<Home>,
}

/// The hub's account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub account: String,
    pub region: String,
}

impl Home {
    /// The account's default Security Hub product in its region (where findings are imported).
    pub fn product_arn(&self) -> String {
        let partition = crate::core::arn::partition_of_region(&self.region);
        format!("arn:{partition}:securityhub:{}:{}:product/{}/default", self.region, self.account, self.account)
    }
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
    /// The event's detail-type (a redelivery written before it was recorded is a diagnosis).
    #[serde(default = "diagnosed_detail_type")]
    pub detail_type: String,
    pub detail: String,
    pub resources: Vec<String>,
}

fn diagnosed_detail_type() -> String {
    message::EVENT_DETAIL_TYPE.to_owned()
}

impl Outbox {
    /// The payloads for every sink that is on, dated when the finding was decided (else `now`).
    pub fn render(finding: &Finding, sinks: &Sinks, now: &str) -> Self {
        let mut o = Self::render_here(finding, sinks, now);
        if let Some(home) = &sinks.home {
            // The finding keeps naming the member's instance, keys and principal in its
            // resources; the record itself belongs to the hub.
            o.region.clone_from(&home.region);
            if let Some(a) = &mut o.security_hub {
                a.aws_account_id.clone_from(&home.account);
                a.product_arn = home.product_arn();
                a.region.clone_from(&home.region);
            }
        }
        o
    }

    fn render_here(finding: &Finding, sinks: &Sinks, now: &str) -> Self {
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
                detail_type: message::EVENT_DETAIL_TYPE.to_owned(),
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
