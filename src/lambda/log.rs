//! The function's structured lines on stdout (CloudWatch Logs): findings, resolutions, metrics (EMF).

use super::*;
use crate::core::report::Finding;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Counts a settled finding for the metrics line.
pub(super) fn record(metrics: &mut Metrics, f: &Finding, now: DateTime<Utc>, delivery_failures: usize) {
    let cause = f.causes.first().map(|c| c.code.as_str()).unwrap_or("none").to_owned();
    *metrics.findings_by_cause.entry(cause).or_default() += 1;
    metrics.delivery_failures += delivery_failures as u64;
    if let Ok(observed) = DateTime::parse_from_rfc3339(&f.observed_at) {
        metrics.seconds_to_finding.push((now - observed.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0);
    }
}

/// Lines in CloudWatch Embedded Metric Format (namespace `KmsLaunchDoctor`): CloudWatch makes
/// metrics of them from the function's own log group, no API call or permission needed.
pub fn metric_lines(m: &Metrics, trail_throttles: u64, at: DateTime<Utc>) -> Vec<Value> {
    let ts = at.timestamp_millis();
    let mut metrics = vec![
        json!({"Name": "Deferrals", "Unit": "Count"}),
        json!({"Name": "DeliveryFailures", "Unit": "Count"}),
        json!({"Name": "CloudTrailThrottles", "Unit": "Count"}),
        json!({"Name": "Resolved", "Unit": "Count"}),
    ];
    let mut first = serde_json::Map::new();
    first.insert("Deferrals".into(), json!(m.deferrals));
    first.insert("DeliveryFailures".into(), json!(m.delivery_failures));
    first.insert("CloudTrailThrottles".into(), json!(trail_throttles));
    first.insert("Resolved".into(), json!(m.resolved));
    // EMF takes up to 100 values for a metric; with none, the metric is left out of the line.
    if !m.seconds_to_finding.is_empty() {
        metrics.push(json!({"Name": "SecondsToFinding", "Unit": "Seconds"}));
        first.insert(
            "SecondsToFinding".into(),
            json!(m.seconds_to_finding.iter().take(100).copied().collect::<Vec<f64>>()),
        );
    }
    first.insert(
        "_aws".into(),
        json!({"Timestamp": ts, "CloudWatchMetrics": [{"Namespace": METRIC_NAMESPACE, "Dimensions": [[]], "Metrics": metrics}]}),
    );
    let mut lines = vec![Value::Object(first)];
    for (cause, n) in &m.findings_by_cause {
        lines.push(json!({
            "_aws": {"Timestamp": ts, "CloudWatchMetrics": [{"Namespace": METRIC_NAMESPACE, "Dimensions": [["Cause"]],
                "Metrics": [{"Name": "Findings", "Unit": "Count"}]}]},
            "Cause": cause,
            "Findings": n,
        }));
    }
    lines
}

/// One JSON line per finding, with stable field names.
pub fn log_finding(f: &Finding) {
    log_line("INFO", "kms_launch_doctor::finding", "finding", json!({ "finding": f }));
}

/// One JSON log line on stdout (CloudWatch Logs): timestamp, level, target and message, then
/// `fields` (an object) in their order.
pub(super) fn log_line(level: &str, target: &str, message: &str, fields: Value) {
    let mut line = serde_json::Map::new();
    line.insert("timestamp".into(), json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    line.insert("level".into(), json!(level));
    line.insert("target".into(), json!(target));
    line.insert("message".into(), json!(message));
    if let Value::Object(extra) = fields {
        line.extend(extra);
    }
    write(&Value::Object(line).to_string());
}

/// The function's one writer of stdout: every line CloudWatch Logs gets goes through here.
pub(super) fn write(line: &str) {
    println!("{line}");
}

/// The invocation's metrics (EMF) and, with `KLD_CALL_STATS`, its AWS call counts.
pub(super) fn invocation_end(metrics: &Metrics, throttles: u64, calls: Option<&BTreeMap<String, u64>>) {
    for line in metric_lines(metrics, throttles, Utc::now()) {
        write(&line.to_string());
    }
    if let Some(calls) = calls {
        log_line(
            "INFO",
            "kms_launch_doctor::stats",
            "api calls",
            json!({ "stats": crate::aws::stats::summary(calls) }),
        );
    }
}
