//! SNS Publish and EventBridge PutEvents.

use super::*;
use crate::ports::CallError;

pub(super) async fn publish(
    aws: &AwsCloud,
    topic_arn: &str,
    subject: &str,
    body: &str,
    attributes: &std::collections::BTreeMap<String, String>,
) -> Result<String, CallError> {
    use aws_sdk_sns::types::MessageAttributeValue;
    let region = region_of(topic_arn).or_else(|| aws.default_region()).unwrap_or_default();
    let mut req = aws.clients(&region).sns.publish().topic_arn(topic_arn).subject(subject).message(body);
    for (k, v) in attributes {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .map_err(|e| other("sns:Publish", e.to_string()))?;
        req = req.message_attributes(k, value);
    }
    let resp = req.send().await.map_err(|e| call_error("sns:Publish", e)).and_then(|r| complete("sns:Publish", r))?;
    resp.message_id().map(str::to_owned).ok_or_else(|| other("sns:Publish", "response has no MessageId"))
}

pub(super) async fn put_events(
    aws: &AwsCloud,
    region: &str,
    entries: &[crate::core::outbox::BusEvent],
) -> Result<Vec<Result<String, String>>, CallError> {
    use aws_sdk_eventbridge::types::PutEventsRequestEntry;
    let request: Vec<PutEventsRequestEntry> = entries
        .iter()
        .map(|e| {
            PutEventsRequestEntry::builder()
                .source(crate::core::message::EVENT_SOURCE)
                .detail_type(&e.detail_type)
                .detail(&e.detail)
                .set_resources(Some(e.resources.clone()))
                .event_bus_name(&e.bus)
                .build()
        })
        .collect();
    let resp = aws
        .clients(region)
        .eventbridge
        .put_events()
        .set_entries(Some(request))
        .send()
        .await
        .map_err(|e| call_error("events:PutEvents", e))?;
    // One result per entry, in order (PutEvents API reference).
    Ok((0..entries.len())
        .map(|i| match resp.entries().get(i) {
            Some(r) if r.error_code().is_none() => {
                r.event_id().map(str::to_owned).ok_or_else(|| "response has no EventId".to_owned())
            }
            Some(r) => {
                Err(format!("event rejected: {}: {}", r.error_code().unwrap_or("?"), r.error_message().unwrap_or("?")))
            }
            None => Err("no entry result".to_owned()),
        })
        .collect())
}
