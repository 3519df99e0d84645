//! The AWS adapter: [`Cloud`] on the AWS SDKs. Credentials, region and endpoint come from the
//! standard aws-config chain, so `AWS_ENDPOINT_URL` points the tool at an emulator with no code
//! change. Every call has a timeout and bounded retries with backoff; CloudTrail's LookupEvents is
//! held to its 2 requests per second per region.
//!
//! May import: [`crate::core`] and [`crate::ports`] (it implements the ports); nothing imports
//! it but the entry points (`cli`, `lambda`) and `settings`.

mod accounts;
mod autoscaling;
mod calls;
mod cloudtrail;
mod config;
mod ec2;
mod iam;
mod kms;
mod notify;
mod pace;
mod ports;
mod securityhub;
mod sqs;
pub mod stats;

use calls::*;
pub use config::*;
pub use pace::TRAIL_RATE;
use pace::*;

use aws_config::retry::RetryConfig;
use aws_config::{Region, SdkConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct Clients {
    ec2: aws_sdk_ec2::Client,
    kms: aws_sdk_kms::Client,
    cloudtrail: aws_sdk_cloudtrail::Client,
    sns: aws_sdk_sns::Client,
    securityhub: aws_sdk_securityhub::Client,
    eventbridge: aws_sdk_eventbridge::Client,
    sqs: aws_sdk_sqs::Client,
    autoscaling: aws_sdk_autoscaling::Client,
}

/// A member account's cloud, and when its credentials expire.
type Entered = (AwsCloud, Option<std::time::SystemTime>);

/// [`Cloud`] backed by the AWS SDKs; clients are built once per region.
#[derive(Clone)]
pub struct AwsCloud {
    config: SdkConfig,
    counter: crate::aws::stats::CallCounter,
    iam: aws_sdk_iam::Client,
    clients: Arc<Mutex<HashMap<String, Clients>>>,
    buckets: Arc<tokio::sync::Mutex<HashMap<String, Bucket>>>,
    trail_rate: f64,
    /// LookupEvents answered with throttling since the last `take_trail_throttles`.
    trail_throttles: Arc<std::sync::atomic::AtomicU64>,
    /// Hub topology (`SPOKE_ROLE_NAME`): the role assumed in another account to gather its facts.
    spoke_role: Option<String>,
    /// The account of the credentials in use, once asked.
    own_account: Arc<tokio::sync::OnceCell<String>>,
    /// Member accounts entered so far, with when their credentials expire.
    members: Arc<tokio::sync::Mutex<HashMap<String, Entered>>>,
}

impl AwsCloud {
    pub fn new(config: SdkConfig) -> Self {
        Self::counted(config, crate::aws::stats::CallCounter::default(), Arc::default())
    }

    fn counted(
        config: SdkConfig,
        counter: crate::aws::stats::CallCounter,
        trail_throttles: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(&config)
                .interceptor(counter.clone())
                .interceptor(EndpointRecorder)
                .retry_classifier(crate::aws::stats::TooManyRequests)
                .build(),
        );
        Self {
            config,
            counter,
            iam,
            clients: Arc::default(),
            buckets: Arc::default(),
            trail_rate: TRAIL_RATE,
            trail_throttles,
            spoke_role: None,
            own_account: Arc::default(),
            members: Arc::default(),
        }
    }

    /// Hub topology: facts of another account's instances are gathered through this role in
    /// that account (`SPOKE_ROLE_NAME`); empty turns it off.
    pub fn with_spoke_role(mut self, role_name: Option<String>) -> Self {
        self.spoke_role = role_name.filter(|r| !r.is_empty());
        self
    }

    /// Calls made since the last time this was asked, per `service:Operation`.
    pub fn take_call_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.counter.take()
    }

    pub fn default_region(&self) -> Option<String> {
        self.config.region().map(|r| r.to_string())
    }

    fn clients(&self, region: &str) -> Clients {
        let mut map = match self.clients.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(region.to_owned())
            .or_insert_with(|| {
                let r = Region::new(region.to_owned());
                // Every regional client shares the loaded configuration and the call counter.
                macro_rules! regional {
                    ($sdk:ident) => {
                        $sdk::Client::from_conf(
                            $sdk::config::Builder::from(&self.config)
                                .interceptor(self.counter.clone())
                                .interceptor(EndpointRecorder)
                                .retry_classifier(crate::aws::stats::TooManyRequests)
                                .region(r.clone())
                                .build(),
                        )
                    };
                }
                Clients {
                    ec2: regional!(aws_sdk_ec2),
                    kms: regional!(aws_sdk_kms),
                    // No SDK retries: a retry would leave outside the pacing and spend the
                    // account-region's 2 LookupEvents per second behind its back. Retries go
                    // through `trail_slot` in `lookup_events` instead.
                    cloudtrail: aws_sdk_cloudtrail::Client::from_conf(
                        aws_sdk_cloudtrail::config::Builder::from(&self.config)
                            .interceptor(self.counter.clone())
                            .retry_config(RetryConfig::disabled())
                            .region(r.clone())
                            .build(),
                    ),
                    sns: regional!(aws_sdk_sns),
                    securityhub: regional!(aws_sdk_securityhub),
                    eventbridge: regional!(aws_sdk_eventbridge),
                    sqs: regional!(aws_sdk_sqs),
                    autoscaling: regional!(aws_sdk_autoscaling),
                }
            })
            .clone()
    }
}
