//! CloudTrail's LookupEvents allowance (2 per second per account and region), as a token bucket per region.

use super::*;
use std::time::Duration as StdDuration;
use tokio::time::Instant;

/// Token bucket: CloudTrail allows 2 LookupEvents per second per account and region.
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Under the limit with a margin: requests leave ~670 ms apart, so that however late one
/// arrives (a loaded machine, a slow network), CloudTrail does not see three in one second.
/// (At 1.8/s a loaded test machine once delivered three within a second.) Processes running
/// side by side share the account's 2/s, so the Lambda takes its share from the template
/// (`CLOUDTRAIL_CALLS_PER_SECOND`, see [`AwsCloud::with_trail_rate`]).
pub const TRAIL_RATE: f64 = 1.5;

/// No burst.
pub(super) const TRAIL_BURST: f64 = 1.0;

impl AwsCloud {
    /// LookupEvents per second per region for this process. With N processes at once (the
    /// SQS event source's MaximumConcurrency), each must keep under 2/N, or CloudTrail
    /// throttles them all and the retries make it worse.
    pub fn with_trail_rate(mut self, per_second: f64) -> Self {
        if per_second.is_finite() && per_second > 0.0 {
            self.trail_rate = per_second;
        }
        self
    }

    /// Throttled LookupEvents attempts since the last time this was asked.
    pub fn take_trail_throttles(&self) -> u64 {
        self.trail_throttles.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// After a throttle, the region's bucket starts from empty: the next attempt waits a
    /// full interval, and so does every other lookup of this process in that region.
    pub(super) async fn trail_backoff(&self, region: &str) {
        let mut buckets = self.buckets.lock().await;
        if let Some(b) = buckets.get_mut(region) {
            b.tokens = b.tokens.min(0.0) - 1.0;
        }
    }

    /// Waits for a LookupEvents slot in `region`.
    pub(super) async fn trail_slot(&self, region: &str) {
        loop {
            let wait = {
                let mut buckets = self.buckets.lock().await;
                let now = Instant::now();
                let b = buckets.entry(region.to_owned()).or_insert(Bucket { tokens: TRAIL_BURST, last: now });
                b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * self.trail_rate).min(TRAIL_BURST);
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return;
                }
                StdDuration::from_secs_f64((1.0 - b.tokens) / self.trail_rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}
