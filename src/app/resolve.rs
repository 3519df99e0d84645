//! Findings that resolve. When an instance with an open finding reaches `running`, the failure
//! it reported is over: its Security Hub finding is archived (`RecordState` `ARCHIVED`,
//! `Compliance.Status` `PASSED`, the same `Id`), and SNS and EventBridge say so (subject
//! `Resolved: …`, detail-type `EC2 Launch Failure Resolved`).
//!
//! Security Hub is the record of which findings are open: without it nothing is known to
//! resolve, and a `running` event is done without a call (most instances that start never
//! failed). With it, the `running` events of a batch cost one GetFindings per region (their
//! instance ARNs OR'd, up to 20 a call, filtered to this tool's active findings) and, only
//! for instances that had one, a BatchImportFindings and the notifications.
//!
//! Security Hub is written first: once archived, a finding is not found open again, so a
//! retry of the event cannot archive twice. What SNS or EventBridge did not take is returned
//! as an [`Outbox`], which the Lambda handler queues like any unfinished delivery.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::{info_span, Instrument};

use crate::core::event::Running;
use crate::core::message::{self, Asff, AsffCompliance, GENERATOR_PREFIX};
use crate::core::outbox::{BusEvent, Outbox, Sinks, SnsMessage};
use crate::ports::{CallError, Effects};

/// GetFindings takes at most 20 values per filter attribute; BatchImportFindings 100 findings.
const RESOURCE_IDS_PER_CALL: usize = 20;
const IMPORT_FINDINGS: usize = 100;

/// One finding resolved because its instance runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub finding_id: String,
    pub instance_id: String,
    pub region: String,
    /// RFC 3339: when the instance was seen running.
    pub resolved_at: String,
    /// The archived document, as sent to Security Hub.
    pub archived: Asff,
    /// What SNS and EventBridge are still to receive (empty when all was sent).
    pub unsent: Outbox,
    pub failures: Vec<CallError>,
}

/// What resolving a set of `running` events came to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub resolved: Vec<Resolution>,
    /// Instances whose open findings could not be looked up or archived: retry their events.
    pub failed: BTreeMap<String, CallError>,
}

/// The instance's ARN, as Security Hub's `Resources[].Id` holds it.
fn instance_arn(region: &str, account: &str, instance_id: &str) -> String {
    format!("arn:{}:ec2:{region}:{account}:instance/{instance_id}", crate::core::arn::partition_of_region(region))
}

/// The account's default product ARN in a region (where `BatchImportFindings` writes).
fn product_arn(region: &str, account: &str) -> String {
    format!(
        "arn:{}:securityhub:{region}:{account}:product/{account}/default",
        crate::core::arn::partition_of_region(region)
    )
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Whether an open finding is about a failure that `running` at `ran_at` ends: it names the
/// instance and was first observed before the instance ran. A finding of a later failure (a
/// `running` event delivered late, or redriven) stays open.
pub fn resolved_by(open: &Asff, instance_arn: &str, ran_at: DateTime<Utc>) -> bool {
    let names = open.resources.iter().any(|r| r.id == instance_arn);
    let ours = open.generator_id.starts_with(GENERATOR_PREFIX) && open.record_state == "ACTIVE";
    let observed = parse_time(&open.first_observed_at).or_else(|| parse_time(&open.updated_at));
    names && ours && observed.is_some_and(|t| t <= ran_at)
}

/// The document that archives `open`: the same finding, `ARCHIVED` and `PASSED`, dated `now`
/// (Security Hub ignores an update dated before what it holds).
pub fn archived(open: &Asff, resolved_at: &str, now: &str) -> Asff {
    let mut a = open.clone();
    a.record_state = "ARCHIVED".to_owned();
    a.compliance = Some(AsffCompliance { status: "PASSED".to_owned() });
    // Strictly after what Security Hub holds, or the update is ignored ("If UpdatedAt on the
    // update matches or occurs before UpdatedAt on the existing finding, Security Hub ignores
    // the update request").
    a.updated_at = match (parse_time(&a.updated_at), parse_time(now)) {
        (Some(held), Some(ours)) if held >= ours => {
            (held + chrono::Duration::milliseconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }
        _ => now.to_owned(),
    };
    a.product_fields.insert("kms-launch-doctor/ResolvedAt".to_owned(), resolved_at.to_owned());
    a
}

/// An instance that runs: where it is, and its ARN (as the finding's resources name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub instance_id: String,
    pub account: String,
    pub region: String,
}

impl Place {
    fn arn(&self) -> String {
        instance_arn(&self.region, &self.account, &self.instance_id)
    }
}

/// SNS and EventBridge payloads for a resolution, delivered in `delivery_region` (the
/// instance's, or the hub's).
pub fn notice(a: &Asff, at: &Place, resolved_at: &str, sinks: &Sinks, delivery_region: &str) -> Outbox {
    let (instance_id, region, account) = (at.instance_id.as_str(), at.region.as_str(), at.account.as_str());
    let detail = json!({
        "status": "resolved",
        "finding_id": a.id,
        "instance_id": instance_id,
        "account": account,
        "region": region,
        "resolved_at": resolved_at,
        "title": a.title,
    });
    let body = format!(
        "Resolved: instance {instance_id} ({region}, account {account}) reached running at {resolved_at}.\n\
         The finding {} is archived in Security Hub.\n\nIt said: {}\n{}\n",
        a.id, a.title, a.description
    );
    let mut attributes = BTreeMap::new();
    attributes.insert("finding_id".to_owned(), a.id.clone());
    attributes.insert("status".to_owned(), "resolved".to_owned());
    attributes.insert("instance_id".to_owned(), instance_id.to_owned());
    attributes.insert("account".to_owned(), account.to_owned());
    Outbox {
        finding_id: a.id.clone(),
        instance_id: instance_id.to_owned(),
        region: delivery_region.to_owned(),
        sns: sinks.topic_arn.as_ref().map(|topic| SnsMessage {
            topic_arn: topic.clone(),
            // SNS subjects: ASCII, under 100 characters.
            subject: message::ascii(&format!("Resolved: {instance_id} is running ({region})"), 99),
            body,
            attributes,
        }),
        security_hub: None,
        eventbridge: sinks.event_bus.as_ref().map(|bus| BusEvent {
            bus: bus.clone(),
            detail_type: message::RESOLVED_DETAIL_TYPE.to_owned(),
            detail: detail.to_string(),
            resources: vec![at.arn()],
        }),
    }
}

/// Instance ARN -> (the instance, when it was seen running), for one Security Hub (account and
/// region) to ask.
type RanInstances = BTreeMap<String, (Place, DateTime<Utc>)>;

/// Resolves the open findings of instances that reached `running`. `default_region` stands in
/// for an event without one; an event without an account cannot name a finding and is passed
/// over (logged).
pub async fn resolve<E: Effects>(
    effects: &E,
    sinks: &Sinks,
    running: &[Running],
    default_region: Option<&str>,
    now: DateTime<Utc>,
) -> Outcome {
    let mut outcome = Outcome::default();
    if !sinks.security_hub {
        if !running.is_empty() {
            tracing::info!(events = running.len(), "running: Security Hub is off, so no finding is known to be open");
        }
        return outcome;
    }
    // Grouped by the Security Hub that holds the findings: each instance's own account and
    // region, or, in hub topology, the hub's for every instance (up to 20 ARNs a call across
    // accounts).
    let mut groups: BTreeMap<(String, String), RanInstances> = BTreeMap::new();
    for r in running {
        let (Some(region), Some(account)) = (r.region.as_deref().or(default_region), r.account.as_deref()) else {
            tracing::info!(instance_id = %r.instance_id, "running event without region or account: no finding to resolve");
            continue;
        };
        let at = r.time.unwrap_or(now);
        let place =
            Place { instance_id: r.instance_id.clone(), account: account.to_owned(), region: region.to_owned() };
        let holder = match &sinks.home {
            Some(h) => (h.region.clone(), h.account.clone()),
            None => (region.to_owned(), account.to_owned()),
        };
        let slot = groups.entry(holder).or_default().entry(place.arn()).or_insert((place, at));
        slot.1 = slot.1.max(at);
    }
    let now_text = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // (where it is imported, the archive, the instance, when it ran)
    let mut archives: Vec<(String, Asff, Place, String)> = Vec::new();
    for ((holder_region, holder_account), instances) in &groups {
        let product = product_arn(holder_region, holder_account);
        let arns: Vec<String> = instances.keys().cloned().collect();
        for chunk in arns.chunks(RESOURCE_IDS_PER_CALL) {
            let open = effects
                .open_findings(holder_region, &product, chunk)
                .instrument(info_span!("securityhub.GetFindings", region = %holder_region, instances = chunk.len()))
                .await;
            let open = match open {
                Ok(o) => o,
                Err(e) => {
                    for arn in chunk {
                        if let Some((place, _)) = instances.get(arn) {
                            outcome.failed.insert(place.instance_id.clone(), e.clone());
                        }
                    }
                    continue;
                }
            };
            for doc in open {
                // The filter is the service's; the decision is ours (a finding it should not
                // have returned is left alone).
                let Some((_, (place, at))) =
                    instances.iter().find(|(arn, (_, at))| chunk.contains(arn) && resolved_by(&doc, arn, *at))
                else {
                    continue;
                };
                let resolved_at = crate::core::decide::rfc3339(*at);
                archives.push((
                    holder_region.clone(),
                    archived(&doc, &resolved_at, &now_text),
                    place.clone(),
                    resolved_at,
                ));
            }
        }
    }
    let mut by_region: BTreeMap<String, Vec<(Asff, Place, String)>> = BTreeMap::new();
    for (region, doc, place, at) in archives {
        by_region.entry(region).or_default().push((doc, place, at));
    }
    let mut notices: Vec<(Resolution, Outbox)> = Vec::new();
    for (region, docs) in by_region {
        for batch in docs.chunks(IMPORT_FINDINGS) {
            let request: Vec<Asff> = batch.iter().map(|(d, _, _)| d.clone()).collect();
            let imported = effects
                .import_findings(&region, &request)
                .instrument(info_span!("securityhub.BatchImportFindings", region = %region, archive = request.len()))
                .await;
            for (doc, place, resolved_at) in batch {
                if let Some(e) = crate::app::deliver::import_failure(&imported, &doc.id) {
                    outcome.failed.insert(place.instance_id.clone(), e);
                    continue;
                }
                let outbox = notice(doc, place, resolved_at, sinks, &region);
                notices.push((
                    Resolution {
                        finding_id: doc.id.clone(),
                        instance_id: place.instance_id.clone(),
                        region: place.region.clone(),
                        resolved_at: resolved_at.clone(),
                        archived: doc.clone(),
                        unsent: outbox.clone(),
                        failures: Vec::new(),
                    },
                    outbox,
                ));
            }
        }
    }
    let mut outboxes: Vec<Outbox> = notices.iter().map(|(_, o)| o.clone()).collect();
    let results = crate::app::deliver::send_all(effects, &mut outboxes, &now_text).await;
    for (((mut resolution, _), (_, failures)), unsent) in notices.into_iter().zip(results).zip(outboxes) {
        resolution.unsent = unsent;
        resolution.failures = failures;
        outcome.resolved.push(resolution);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(first_observed: &str) -> Asff {
        let f: Asff = serde_json::from_value(json!({
            "SchemaVersion": "2018-10-08",
            "Id": "kld-0123456789abcdef",
            "ProductArn": "arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default",
            "GeneratorId": "kms-launch-doctor/caller-lacks-create-grant",
            "AwsAccountId": "123456789012",
            "Types": ["Software and Configuration Checks/AWS Security Best Practices/KMS Key Access"],
            "CreatedAt": "2026-11-30T12:00:00Z",
            "UpdatedAt": "2026-11-30T12:06:00Z",
            "FirstObservedAt": first_observed,
            "Severity": {"Label": "MEDIUM"},
            "Title": "i-0abcd1234ef567890 cannot start",
            "Description": "d",
            "Remediation": {"Recommendation": {"Text": "t", "Url": "u"}},
            "ProductFields": {},
            "Resources": [{"Type": "AwsEc2Instance", "Id": "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abcd1234ef567890",
                           "Partition": "aws", "Region": "eu-west-1"}],
            "RecordState": "ACTIVE",
            "Region": "eu-west-1"
        }))
        .unwrap();
        f
    }

    fn at(t: &str) -> DateTime<Utc> {
        parse_time(t).unwrap()
    }

    const ARN: &str = "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abcd1234ef567890";

    #[test]
    fn running_after_the_failure_resolves_it_and_only_for_that_instance() {
        let f = open("2026-11-30T12:00:00Z");
        assert!(resolved_by(&f, ARN, at("2026-11-30T13:00:00Z")));
        assert!(!resolved_by(
            &f,
            "arn:aws:ec2:eu-west-1:123456789012:instance/i-0fffffffffffffff0",
            at("2026-11-30T13:00:00Z")
        ));
        // A running event older than the failure (late, redriven) leaves the finding open.
        assert!(!resolved_by(&f, ARN, at("2026-11-30T11:59:00Z")));
        let mut archived_already = f.clone();
        archived_already.record_state = "ARCHIVED".into();
        assert!(!resolved_by(&archived_already, ARN, at("2026-11-30T13:00:00Z")));
        let mut foreign = f;
        foreign.generator_id = "aws-foundational-security-best-practices/v/1.0.0/EC2.1".into();
        assert!(!resolved_by(&foreign, ARN, at("2026-11-30T13:00:00Z")), "another product's finding is not ours");
    }

    #[test]
    fn the_archive_keeps_the_finding_and_marks_it_passed() {
        let f = open("2026-11-30T12:00:00Z");
        let a = archived(&f, "2026-11-30T13:00:00Z", "2026-11-30T13:00:02Z");
        assert_eq!((a.id.as_str(), a.record_state.as_str()), (f.id.as_str(), "ARCHIVED"));
        assert_eq!(a.compliance.as_ref().map(|c| c.status.as_str()), Some("PASSED"));
        assert_eq!((a.created_at.as_str(), a.updated_at.as_str()), ("2026-11-30T12:00:00Z", "2026-11-30T13:00:02Z"));
        assert_eq!(
            a.product_fields.get("kms-launch-doctor/ResolvedAt").map(String::as_str),
            Some("2026-11-30T13:00:00Z")
        );
        // Always dated after what Security Hub holds (it would ignore the update).
        let late = archived(&f, "2026-11-30T12:01:00Z", "2026-11-30T12:02:00Z");
        assert_eq!(late.updated_at, "2026-11-30T12:06:00.001Z");
        let same_second = archived(&f, "2026-11-30T12:06:00Z", "2026-11-30T12:06:00Z");
        assert_eq!(same_second.updated_at, "2026-11-30T12:06:00.001Z");
    }

    #[test]
    fn the_notice_says_resolved_to_each_sink_that_is_on() {
        let f = open("2026-11-30T12:00:00Z");
        let sinks = Sinks {
            topic_arn: Some("arn:aws:sns:eu-west-1:123456789012:t".into()),
            security_hub: true,
            event_bus: Some("default".into()),
            home: None,
        };
        let place = Place {
            instance_id: "i-0abcd1234ef567890".into(),
            account: "123456789012".into(),
            region: "eu-west-1".into(),
        };
        let o = notice(&f, &place, "2026-11-30T13:00:00Z", &sinks, "eu-west-1");
        let sns = o.sns.unwrap();
        assert!(sns.subject.starts_with("Resolved:") && sns.subject.len() < 100, "{}", sns.subject);
        assert_eq!(sns.attributes.get("finding_id"), Some(&f.id));
        assert_eq!(sns.attributes.get("status").map(String::as_str), Some("resolved"));
        let bus = o.eventbridge.unwrap();
        assert_eq!(bus.detail_type, "EC2 Launch Failure Resolved");
        assert_eq!(bus.resources, [ARN]);
        assert!(o.security_hub.is_none(), "Security Hub gets the archive, not a notice");
        let quiet = notice(&f, &place, "x", &Sinks::default(), "eu-west-1");
        assert!(quiet.is_empty());
    }
}
