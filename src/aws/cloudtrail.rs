//! CloudTrail LookupEvents, one page a call, held to the region's pace.

use super::*;
use crate::ports::{CallError, FailureKind, TrailEvent, TrailPage, TrailQuery};

pub(super) async fn lookup_events(
    aws: &AwsCloud,
    region: &str,
    query: &TrailQuery,
    next_token: Option<&str>,
) -> Result<TrailPage, CallError> {
    use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
    let (key, value) = match &query.key {
        crate::ports::TrailKey::ResourceName(v) => (LookupAttributeKey::ResourceName, v),
        crate::ports::TrailKey::EventName(v) => (LookupAttributeKey::EventName, v),
    };
    let attribute = LookupAttribute::builder()
        .attribute_key(key)
        .attribute_value(value)
        .build()
        .map_err(|e| CallError { call: "cloudtrail:LookupEvents", kind: FailureKind::Other, message: e.to_string() })?;
    // Up to 4 attempts, as for every other call, but each one waits for its slot.
    const ATTEMPTS: u32 = 4;
    let client = aws.clients(region).cloudtrail;
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        aws.trail_slot(region).await;
        let sent = client
            .lookup_events()
            .lookup_attributes(attribute.clone())
            .start_time(to_smithy(query.start))
            .end_time(to_smithy(query.end))
            .max_results(50)
            .set_next_token(next_token.map(str::to_owned))
            .send()
            .await;
        match sent {
            Ok(r) => break r,
            Err(e) => {
                let transient = is_transient(&e);
                let err = call_error("cloudtrail:LookupEvents", e);
                if err.kind == FailureKind::Throttled {
                    aws.trail_throttles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    aws.trail_backoff(region).await;
                }
                if attempt >= ATTEMPTS || !(transient || err.kind == FailureKind::Throttled) {
                    return Err(err);
                }
            }
        }
    };
    Ok(TrailPage {
        events: resp
            .events()
            .iter()
            .map(|e| TrailEvent {
                event_id: e.event_id().map(str::to_owned),
                cloud_trail_event: e.cloud_trail_event().map(str::to_owned),
            })
            .collect(),
        next_token: resp.next_token().map(str::to_owned),
    })
}
