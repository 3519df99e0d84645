//! Lambda mode: the same diagnosis behind the Lambda Runtime API. Logs are JSON lines on
//! stdout (CloudWatch Logs), one per finding, so metric filters and Logs Insights can use them.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

use crate::app::handle_event;
use crate::aws::{load_config, AwsCloud};
use crate::config::Settings;

pub async fn run() -> Result<(), Error> {
    let settings = Settings::from_env();
    let cloud = AwsCloud::new(load_config(None).await);
    let region = cloud.default_region();
    let opts = settings.options();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let cloud = cloud.clone();
        let region = region.clone();
        let opts = opts.clone();
        async move {
            let report = handle_event(&cloud, &event.payload, region.as_deref(), &opts).await?;
            for f in &report.findings {
                log_finding(f);
            }
            Ok::<_, Error>(report)
        }
    }))
    .await
}

/// One JSON line per finding, with stable field names.
pub fn log_finding(f: &crate::report::Finding) {
    let line = json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": "INFO",
        "target": "kms_launch_doctor::finding",
        "message": "finding",
        "finding": f,
    });
    println!("{line}");
}
