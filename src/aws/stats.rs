//! Counting AWS calls, per service and operation, with an SDK interceptor: every HTTP attempt
//! (retries included) is a request someone pays for and a unit of rate limit. Printed when
//! `KLD_CALL_STATS` is set (the benchmarks read it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    /// `service:Operation` → attempts, since the last [`CallCounter::take`].
    pub fn take(&self) -> BTreeMap<String, u64> {
        match self.0.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    pub fn enabled() -> bool {
        std::env::var_os("KLD_CALL_STATS").is_some_and(|v| !v.is_empty())
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            let key = format!("{}:{}", m.service().to_ascii_lowercase(), m.name());
            let mut map = match self.0.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *map.entry(key).or_insert(0) += 1;
        }
        Ok(())
    }
}

/// The JSON line the benchmarks read: `{"api_calls": {...}, "total": N}`.
pub fn line(counts: &BTreeMap<String, u64>) -> String {
    summary(counts).to_string()
}

/// The calls by name and their total, as a JSON value (the Lambda nests it in its log line).
pub fn summary(counts: &BTreeMap<String, u64>) -> serde_json::Value {
    serde_json::json!({"api_calls": counts, "total": counts.values().sum::<u64>()})
}

/// Retries a bare HTTP 429 as throttling. The SDK retries 500/502/503/504 and throttling error
/// codes, but a 429 without a recognised error code (a proxy, a gateway) would otherwise fail
/// at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct TooManyRequests;

impl aws_smithy_runtime_api::client::retries::classifiers::ClassifyRetry for TooManyRequests {
    fn classify_retry(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::InterceptorContext,
    ) -> aws_smithy_runtime_api::client::retries::classifiers::RetryAction {
        use aws_smithy_runtime_api::client::retries::classifiers::RetryAction;
        match ctx.response() {
            Some(r) if r.status().as_u16() == 429 => RetryAction::throttling_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "TooManyRequests"
    }
}
