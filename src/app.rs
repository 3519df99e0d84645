//! The code path shared by the Lambda handler and `replay`: one event in, one report out.

use chrono::Utc;
use serde_json::Value;

use crate::cloud::{CallError, Cloud};
use crate::event;
use crate::gather::{self, Options, Target};
use crate::report::Report;

/// Diagnoses one EventBridge event. Events we do not handle become `skipped` entries; only a
/// failed DescribeInstances (nothing could be confirmed) is an error, so Lambda retries it.
pub async fn handle_event<C: Cloud>(cloud: &C, event: &Value, default_region: Option<&str>, opts: &Options) -> Result<Report, CallError> {
    let trigger = match event::parse(event) {
        Ok(t) => t,
        Err(skipped) => {
            tracing::info!(reason = %skipped.reason, instance_id = ?skipped.instance_id, "event skipped");
            return Ok(Report { skipped: vec![skipped], ..Report::default() });
        }
    };
    let Some(region) = trigger.region.as_deref().or(default_region) else {
        return Ok(Report {
            skipped: vec![crate::report::Skipped {
                instance_id: Some(trigger.instance_id),
                reason: "the event names no region and none is configured".to_owned(),
            }],
            ..Report::default()
        });
    };
    let target = Target { instance_id: trigger.instance_id.clone(), observed_at: trigger.time.unwrap_or_else(Utc::now) };
    let report = gather::diagnose(cloud, region, &[target], opts).await?;
    for s in &report.skipped {
        tracing::info!(reason = %s.reason, instance_id = ?s.instance_id, "instance skipped");
    }
    Ok(report)
}
