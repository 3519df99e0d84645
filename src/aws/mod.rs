//! The AWS adapter: [`Cloud`] on the AWS SDKs. Credentials, region and endpoint come from the
//! standard aws-config chain, so `AWS_ENDPOINT_URL` points the tool at an emulator with no code
//! change. Every call has a timeout and bounded retries with backoff; CloudTrail's LookupEvents is
//! held to its 2 requests per second per region.

pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;
use tracing::Instrument;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::core::arn::KeyArn;
use crate::core::facts::{Attachment, Decision, EndState, Instance, KeyMetadata, KeyState, Simulation, StateReason};
use crate::ports::{
    CallError, Cloud, FailureKind, SimulationRequest, TrailEvent, TrailPage, TrailQuery, VolumeInfo, VolumeKeys,
};

/// Where the configuration comes from besides the environment: the CLI's `--region`,
/// `--profile` and `--endpoint-url`. Each, when set, wins over `AWS_REGION`, `AWS_PROFILE` and
/// `AWS_ENDPOINT_URL`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

impl Source {
    /// The profile in use and where it was named: `--profile`, else `AWS_PROFILE`.
    pub fn named_profile(&self) -> Option<(String, &'static str)> {
        match &self.profile {
            Some(p) => Some((p.clone(), "--profile")),
            None => std::env::var("AWS_PROFILE")
                .ok()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .map(|p| (p, "AWS_PROFILE")),
        }
    }
}

/// The configuration loaded last, for error messages that name the profile and the endpoint.
static SOURCE: std::sync::OnceLock<Source> = std::sync::OnceLock::new();

/// Checks, before any call, that a named profile exists and uses credentials this build can
/// load, so that a typo is an error naming the profile and not "no credentials" later.
/// `Err` is one sentence.
pub async fn check_profile(source: &Source) -> Result<(), String> {
    let Some((name, from)) = source.named_profile() else { return Ok(()) };
    let fs = aws_types::os_shim_internal::Fs::real();
    let env = aws_types::os_shim_internal::Env::real();
    let files = aws_runtime::env_config::file::EnvConfigFiles::default();
    let set = aws_config::profile::load(&fs, &env, &files, Some(name.clone().into())).await.map_err(|e| {
        format!("profile {name} (from {from}): the AWS config files could not be read: {}", one_line(&error_chain(&e)))
    })?;
    let Some(profile) = set.get_profile(&name) else {
        // "default" need not exist: credentials may come from the environment or a role.
        if name == "default" {
            return Ok(());
        }
        let known: Vec<&str> = set.profiles().collect();
        return Err(format!(
            "profile {name} (from {from}) is not in ~/.aws/config or ~/.aws/credentials (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE); {}",
            if known.is_empty() { "no profile is defined there".to_owned() } else { format!("profiles there: {}", known.join(", ")) }
        ));
    };
    let unsupported = ["sso_session", "sso_start_url", "credential_process", "login_session"]
        .into_iter()
        .find(|k| profile.get(k).is_some());
    if let Some(key) = unsupported {
        return Err(format!(
            "profile {name} (from {from}) gets its credentials through {key}, which this build of kms-launch-doctor does not support; export them first: eval \"$(aws configure export-credentials --profile {name} --format env)\""
        ));
    }
    Ok(())
}

/// Loads the shared SDK configuration: one HTTPS client (rustls + ring), bounded retries,
/// and timeouts so that an unreachable endpoint fails in seconds, not minutes.
pub async fn load_config(region: Option<&str>) -> SdkConfig {
    load(&Source { region: region.map(str::to_owned), ..Source::default() }).await
}

/// [`load_config`] with a profile and an endpoint URL, as the CLI's flags give them.
pub async fn load(source: &Source) -> SdkConfig {
    let _ = SOURCE.set(source.clone());
    let region = source.region.as_deref();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http.clone())
        // Bounded attempts with exponential backoff and jitter. (Adaptive mode's client-side rate
        // limiter, starting from no measured rate, held a call ~27 s after two throttles.)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(StdDuration::from_millis(200))
                .with_max_backoff(StdDuration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(StdDuration::from_secs(3))
                .operation_attempt_timeout(seconds_from_env("KLD_ATTEMPT_TIMEOUT_SECONDS", 10))
                .operation_timeout(seconds_from_env("KLD_OPERATION_TIMEOUT_SECONDS", 30))
                .build(),
        );
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_owned()));
    }
    if let Some(p) = &source.profile {
        // As with `aws --profile`: the profile's credentials, even when AWS_ACCESS_KEY_ID is
        // set (the default chain would take the environment's first).
        let providers = aws_config::provider_config::ProviderConfig::without_region()
            .with_http_client(http)
            .with_behavior_version(Some(BehaviorVersion::latest()))
            .with_region(region.map(|r| Region::new(r.to_owned())));
        loader = loader.profile_name(p).credentials_provider(
            aws_config::profile::ProfileFileCredentialsProvider::builder()
                .configure(&providers)
                .profile_name(p)
                .build(),
        );
    }
    if let Some(url) = &source.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// The endpoint each service was last sent a request to (`scheme://host:port`), so that a
/// connection error can name it: the SDK's own error does not.
static ENDPOINTS: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Records the endpoint of every request (see [`ENDPOINTS`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointRecorder;

impl aws_smithy_runtime_api::client::interceptors::Intercept for EndpointRecorder {
    fn name(&self) -> &'static str {
        "EndpointRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let Some(service) = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>() else { return Ok(()) };
        let uri = context.request().uri();
        // Scheme, host and port: never the path or the query (a presigned URL's signature).
        let base = match uri.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.split(['/', '?']).next().unwrap_or_default()),
            None => return Ok(()),
        };
        let mut map = match ENDPOINTS.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.insert(service.service().to_ascii_lowercase(), base);
        Ok(())
    }
}

/// The endpoint a call went to: the one last used for its service, else the configured one.
fn endpoint_of(call: &str) -> Option<String> {
    let service = match call.split(':').next().unwrap_or_default() {
        "events" => "eventbridge",
        other => other,
    };
    let recorded = match ENDPOINTS.lock() {
        Ok(m) => m.get(service).cloned(),
        Err(p) => p.into_inner().get(service).cloned(),
    };
    recorded
        .or_else(|| SOURCE.get().and_then(|s| s.endpoint_url.clone()))
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
}

/// "no AWS credentials found", naming the profile when one is in use.
fn no_credentials() -> String {
    match SOURCE.get().and_then(Source::named_profile) {
        Some((name, from)) => format!(
            "no AWS credentials found for profile {name} (from {from}): it has no keys, role or source that this build can use"
        ),
        None => "no AWS credentials found: set AWS_PROFILE (or --profile), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a role is available".to_owned(),
    }
}

/// A timeout in (fractional) seconds from the environment, within 0.1–300 s, else `default`.
fn seconds_from_env(name: &str, default: u64) -> StdDuration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| (0.1..=300.0).contains(s))
        .map(StdDuration::from_secs_f64)
        .unwrap_or(StdDuration::from_secs(default))
}

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

/// Token bucket: CloudTrail allows 2 LookupEvents per second per account and region.
#[derive(Debug)]
struct Bucket {
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
const TRAIL_BURST: f64 = 1.0;

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

    /// sts:AssumeRole into `role_arn`: a cloud acting in the role's account, with CloudTrail
    /// pacing of its own (the budget is per account and region) and this one's call counts.
    /// Returns when its credentials expire.
    pub async fn assume(
        &self,
        role_arn: &str,
        session_name: &str,
        external_id: Option<&str>,
    ) -> Result<(AwsCloud, Option<std::time::SystemTime>), CallError> {
        let out = self
            .sts()
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .set_external_id(external_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| call_error("sts:AssumeRole", e))?;
        let c = out.credentials().ok_or_else(|| other("sts:AssumeRole", "response has no credentials"))?;
        let expiry = std::time::SystemTime::try_from(*c.expiration()).ok();
        // The call above proves the account can be entered; the cloud's own credentials come
        // from a provider that assumes the role again whenever they near expiry (a session is
        // at most an hour when it chains from a role), so a scan of many accounts, or a hub
        // that keeps a member's cloud, never runs on expired credentials.
        let provider =
            aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name(session_name).configure(&self.config);
        let provider = match external_id {
            Some(id) => provider.external_id(id),
            None => provider,
        };
        let config = self
            .config
            .to_builder()
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                provider.build().await,
            ))
            .build();
        let mut cloud = Self::counted(config, self.counter.clone(), self.trail_throttles.clone());
        cloud.trail_rate = self.trail_rate;
        Ok((cloud, expiry))
    }

    fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&self.config)
                .interceptor(self.counter.clone())
                .interceptor(EndpointRecorder)
                .build(),
        )
    }

    /// organizations:ListAccounts, every page: the ids of the ACTIVE accounts (from the
    /// management account or a delegated administrator).
    pub async fn organization_accounts(&self) -> Result<Vec<String>, CallError> {
        let org = aws_sdk_organizations::Client::from_conf(
            aws_sdk_organizations::config::Builder::from(&self.config)
                .interceptor(self.counter.clone())
                .interceptor(EndpointRecorder)
                .build(),
        );
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = org
                .list_accounts()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| call_error("organizations:ListAccounts", e))?;
            for a in resp.accounts() {
                // `State` replaces the deprecated `Status`; either says ACTIVE.
                let active = match (a.state(), a.status()) {
                    (Some(s), _) => s.as_str() == "ACTIVE",
                    (None, Some(s)) => s.as_str() == "ACTIVE",
                    (None, None) => false,
                };
                if let (true, Some(id)) = (active, a.id()) {
                    out.push(id.to_owned());
                }
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// The account of the credentials in use (GetCallerIdentity once, then remembered).
    pub async fn own_account(&self) -> Result<String, CallError> {
        self.own_account
            .get_or_try_init(|| async {
                let arn = self.caller_arn().await?;
                crate::core::arn::Arn::parse(&arn)
                    .map(|a| a.account().to_owned())
                    .map_err(|e| other("sts:GetCallerIdentity", e.to_string()))
            })
            .await
            .cloned()
    }

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
    async fn trail_backoff(&self, region: &str) {
        let mut buckets = self.buckets.lock().await;
        if let Some(b) = buckets.get_mut(region) {
            b.tokens = b.tokens.min(0.0) - 1.0;
        }
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

    /// Waits for a LookupEvents slot in `region`.
    async fn trail_slot(&self, region: &str) {
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

/// Turns an SDK error into a [`CallError`] that says, in one line, what went wrong.
fn call_error<E>(call: &'static str, err: SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => FailureKind::Unreachable,
        _ => match err.code() {
            Some(c) if c.contains("AccessDenied") || c.contains("UnauthorizedOperation") || c == "AuthFailure" => {
                FailureKind::Denied
            }
            Some(c) if c.contains("NotFound") || c == "NoSuchEntity" => FailureKind::NotFound,
            Some(c) if c.contains("Throttl") || c == "RequestLimitExceeded" || c == "TooManyRequestsException" => {
                FailureKind::Throttled
            }
            _ => FailureKind::Other,
        },
    };
    let message = match (err.code(), err.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_owned(),
        _ => match &err {
            SdkError::TimeoutError(_) => "timed out".to_owned(),
            SdkError::DispatchFailure(_) => {
                let chain = error_chain(&err);
                if chain.contains("no credentials found") || chain.contains("credential provider") {
                    no_credentials()
                } else {
                    match endpoint_of(call) {
                        Some(url) => format!("could not reach the endpoint {url}: {chain}"),
                        None => format!("could not reach the endpoint: {chain}"),
                    }
                }
            }
            // No error code: say what the answer was, not the SDK's debug dump of it.
            SdkError::ResponseError(_) | SdkError::ServiceError(_) => {
                match err.raw_response().map(|r| r.status().as_u16()) {
                    Some(status) if (200..300).contains(&status) => format!("unreadable response (HTTP {status})"),
                    Some(status) => format!("HTTP {status} with no error code"),
                    None => format!("unreadable response: {}", error_chain(&err)),
                }
            }
            _ => error_chain(&err),
        },
    };
    CallError { call, kind, message: one_line(&message) }
}

/// Every page of a marker-paginated list: `page` takes the marker (none for the first page)
/// and returns that page's items and the next marker, if any.
async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, CallError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), CallError>>,
{
    let mut out = Vec::new();
    let mut marker = None;
    loop {
        let (items, next) = page(marker.take()).await?;
        out.extend(items);
        match next.filter(|m| !m.is_empty()) {
            Some(m) => marker = Some(m),
            None => return Ok(out),
        }
    }
}

/// What the SDK's standard retry strategy would retry: throttling (classified by the caller),
/// 429, 5xx, timeouts and connection failures.
fn is_transient<E>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        _ => err.raw_response().is_some_and(|r| {
            let status = r.status().as_u16();
            status == 429 || status >= 500
        }),
    }
}

/// `outer: inner: root cause`, without the Debug dump `DisplayErrorContext` appends.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn one_line(s: &str) -> String {
    const MAX: usize = 500;
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX {
        flat
    } else {
        format!("{}…", flat.chars().take(MAX).collect::<String>())
    }
}

fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn to_smithy(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(t.timestamp())
}

fn instance_of(region: &str, owner: &str, i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let id = i.instance_id()?.to_owned();
    let state_name =
        i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_else(|| "unknown".to_owned());
    let state_reason = i.state_reason().map(|r| StateReason {
        code: r.code().unwrap_or_default().to_owned(),
        message: r.message().unwrap_or_default().to_owned(),
    });
    let attachments = i
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            Some(Attachment {
                volume_id: m.ebs()?.volume_id()?.to_owned(),
                device: m.device_name().unwrap_or_default().to_owned(),
            })
        })
        .collect();
    Some(Instance {
        id,
        account: owner.to_owned(),
        partition: crate::core::arn::partition_of_region(region).to_owned(),
        region: region.to_owned(),
        state: EndState::parse(&state_name),
        state_name,
        state_reason,
        attachments,
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect(),
        image_id: i.image_id().map(str::to_owned),
    })
}

impl AwsCloud {
    async fn describe_instances_page(&self, region: &str, ids: &[String]) -> Result<Vec<Instance>, CallError> {
        let ec2 = self.clients(region).ec2;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = ec2
                .describe_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| call_error("ec2:DescribeInstances", e))?;
            for r in resp.reservations() {
                let owner = r.owner_id().unwrap_or_default();
                out.extend(r.instances().iter().filter_map(|i| instance_of(region, owner, i)));
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        // EC2 answers an unknown id with InvalidInstanceID.NotFound, never by leaving it out: an
        // id missing from a successful answer means the answer was cut short or unreadable.
        if let Some(absent) = ids.iter().find(|id| !out.iter().any(|i| i.id == **id)) {
            return Err(other(
                "ec2:DescribeInstances",
                format!("the response does not describe {absent} (partial or unreadable answer)"),
            ));
        }
        Ok(out)
    }

    /// DescribeInstances, falling back to one id at a time when one id is unknown; ids EC2 does
    /// not know are left out.
    async fn describe_instances_by_id(&self, region: &str, ids: &[String]) -> Result<Vec<Instance>, CallError> {
        match self.describe_instances_page(region, ids).await {
            // One unknown id fails the whole call: ask for each id alone to keep the others.
            Err(e) if e.kind == FailureKind::NotFound && ids.len() > 1 => {
                let mut out = Vec::new();
                for id in ids {
                    match self.describe_instances_page(region, std::slice::from_ref(id)).await {
                        Ok(mut found) => out.append(&mut found),
                        Err(e) if e.kind == FailureKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            }
            Err(e) if e.kind == FailureKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    }
}

impl Cloud for AwsCloud {
    async fn describe_instances(&self, region: &str, ids: &[String]) -> Result<Vec<Instance>, CallError> {
        self.describe_instances_by_id(region, ids).await
    }

    async fn describe_failed_instances(&self, region: &str) -> Result<Vec<Instance>, CallError> {
        use aws_sdk_ec2::types::Filter;
        let ec2 = self.clients(region).ec2;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = ec2
                .describe_instances()
                .filters(Filter::builder().name("instance-state-name").values("stopped").values("terminated").build())
                // AWS has reported Code Server.InternalError with a Client.InternalError message.
                .filters(
                    Filter::builder()
                        .name("state-reason-code")
                        .values("Client.InternalError")
                        .values("Server.InternalError")
                        .build(),
                )
                .max_results(1000)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| call_error("ec2:DescribeInstances", e))?;
            for r in resp.reservations() {
                let owner = r.owner_id().unwrap_or_default();
                out.extend(r.instances().iter().filter_map(|i| instance_of(region, owner, i)));
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    async fn describe_regions(&self) -> Result<Vec<String>, CallError> {
        let region = self.default_region().unwrap_or_else(|| "us-east-1".to_owned());
        let resp = self
            .clients(&region)
            .ec2
            .describe_regions()
            .send()
            .await
            .map_err(|e| call_error("ec2:DescribeRegions", e))?;
        let mut out: Vec<String> = resp.regions().iter().filter_map(|r| r.region_name().map(str::to_owned)).collect();
        out.sort();
        Ok(out)
    }

    async fn describe_volumes(&self, region: &str, ids: &[String]) -> Result<Vec<VolumeInfo>, CallError> {
        let resp = self
            .clients(region)
            .ec2
            .describe_volumes()
            .set_volume_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| call_error("ec2:DescribeVolumes", e))?;
        Ok(resp
            .volumes()
            .iter()
            .filter_map(|v| {
                Some(VolumeInfo {
                    volume_id: v.volume_id()?.to_owned(),
                    encrypted: v.encrypted(),
                    kms_key_id: v.kms_key_id().map(str::to_owned),
                })
            })
            .collect())
    }

    async fn describe_key(&self, key: &KeyArn) -> Result<KeyMetadata, CallError> {
        let resp = self
            .clients(key.region())
            .kms
            .describe_key()
            .key_id(key.to_string())
            .send()
            .await
            .map_err(|e| call_error("kms:DescribeKey", e))?;
        let m = resp.key_metadata().ok_or(CallError {
            call: "kms:DescribeKey",
            kind: FailureKind::Other,
            message: "response has no KeyMetadata".to_owned(),
        })?;
        Ok(KeyMetadata {
            state: m.key_state().map(|s| KeyState::parse(s.as_str())).unwrap_or(KeyState::Other("unknown".to_owned())),
            manager: m.key_manager().map(|k| k.as_str().to_owned()),
            origin: m.origin().map(|o| o.as_str().to_owned()),
            deletion_date: m.deletion_date().and_then(to_chrono),
            valid_to: m.valid_to().and_then(to_chrono),
            custom_key_store_id: m.custom_key_store_id().map(str::to_owned),
        })
    }

    async fn get_key_policy(&self, key: &KeyArn) -> Result<String, CallError> {
        let resp = self
            .clients(key.region())
            .kms
            .get_key_policy()
            .key_id(key.to_string())
            .policy_name("default")
            .send()
            .await
            .map_err(|e| call_error("kms:GetKeyPolicy", e))?;
        resp.policy().map(str::to_owned).ok_or(CallError {
            call: "kms:GetKeyPolicy",
            kind: FailureKind::Other,
            message: "response has no Policy".to_owned(),
        })
    }

    async fn list_aliases(&self, key: &KeyArn) -> Result<Vec<String>, CallError> {
        let kms = self.clients(key.region()).kms;
        all_pages(|marker| {
            let req = kms.list_aliases().key_id(key.to_string()).set_marker(marker);
            async move {
                let r = req.send().await.map_err(|e| call_error("kms:ListAliases", e))?;
                let names = r.aliases().iter().filter_map(|a| a.alias_name().map(str::to_owned)).collect();
                Ok((names, r.truncated().then(|| r.next_marker().map(str::to_owned)).flatten()))
            }
        })
        .await
    }

    async fn lookup_events(
        &self,
        region: &str,
        query: &TrailQuery,
        next_token: Option<&str>,
    ) -> Result<TrailPage, CallError> {
        use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
        let (key, value) = match &query.key {
            crate::ports::TrailKey::ResourceName(v) => (LookupAttributeKey::ResourceName, v),
            crate::ports::TrailKey::EventName(v) => (LookupAttributeKey::EventName, v),
        };
        let attribute = LookupAttribute::builder().attribute_key(key).attribute_value(value).build().map_err(|e| {
            CallError { call: "cloudtrail:LookupEvents", kind: FailureKind::Other, message: e.to_string() }
        })?;
        // Up to 4 attempts, as for every other call, but each one waits for its slot.
        const ATTEMPTS: u32 = 4;
        let client = self.clients(region).cloudtrail;
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            self.trail_slot(region).await;
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
                        self.trail_throttles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.trail_backoff(region).await;
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

    async fn simulate(&self, request: &SimulationRequest) -> Result<Vec<Simulation>, CallError> {
        // kms:GrantIsForAWSResource exists only on grant operations: it goes with those alone,
        // so that a condition on it in some other statement is judged as AWS would (key absent).
        let (grants, others): (Vec<String>, Vec<String>) =
            request.actions.iter().cloned().partition(|a| crate::core::policy::is_grant_action(a));
        let mut out = Vec::new();
        for (actions, grant) in [(grants, true), (others, false)] {
            if !actions.is_empty() {
                out.extend(self.simulate_actions(request, actions, grant).await?);
            }
        }
        Ok(out)
    }

    async fn permissions_boundary(&self, principal_arn: &str) -> Result<Option<String>, CallError> {
        use crate::core::arn::{Arn, IamEntity};
        let entity =
            Arn::parse(principal_arn).map(|a| IamEntity::of(&a)).map_err(|e| other("iam:GetUser", e.to_string()))?;
        match entity {
            IamEntity::User { name, .. } => {
                let r = self.iam.get_user().user_name(name).send().await.map_err(|e| call_error("iam:GetUser", e))?;
                Ok(r.user()
                    .and_then(|u| u.permissions_boundary())
                    .and_then(|b| b.permissions_boundary_arn())
                    .map(str::to_owned))
            }
            IamEntity::Role { name, .. } => {
                let r = self.iam.get_role().role_name(name).send().await.map_err(|e| call_error("iam:GetRole", e))?;
                Ok(r.role()
                    .and_then(|u| u.permissions_boundary())
                    .and_then(|b| b.permissions_boundary_arn())
                    .map(str::to_owned))
            }
            _ => Ok(None),
        }
    }

    async fn key_arn(&self, region: &str, key_id: &str) -> Result<KeyArn, CallError> {
        let resp = self
            .clients(region)
            .kms
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| call_error("kms:DescribeKey", e))?;
        let arn = resp
            .key_metadata()
            .and_then(|m| m.arn())
            .ok_or_else(|| other("kms:DescribeKey", "response has no KeyMetadata.Arn"))?;
        KeyArn::parse(arn).map_err(|e| other("kms:DescribeKey", e.to_string()))
    }

    async fn launch_template_volumes(
        &self,
        region: &str,
        template: &crate::core::cloudtrail::LaunchTemplateRef,
    ) -> Result<VolumeKeys, CallError> {
        const CALL: &str = "ec2:DescribeLaunchTemplateVersions";
        let resp = self
            .clients(region)
            .ec2
            .describe_launch_template_versions()
            .set_launch_template_id(template.id.clone())
            .set_launch_template_name(if template.id.is_some() { None } else { template.name.clone() })
            .versions(template.version.clone().unwrap_or_else(|| "$Default".to_owned()))
            .send()
            .await
            .map_err(|e| call_error(CALL, e))?;
        let data = resp
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .ok_or_else(|| other(CALL, "no such launch template version"))?;
        let mut out = VolumeKeys { image_id: data.image_id().map(str::to_owned), ..VolumeKeys::default() };
        for ebs in data.block_device_mappings().iter().filter_map(|m| m.ebs()) {
            match (ebs.kms_key_id(), ebs.encrypted()) {
                (Some(k), _) if !k.is_empty() => out.keys.push(k.to_owned()),
                (_, Some(true)) => out.default_key = true,
                _ => out.unencrypted = true,
            }
        }
        Ok(out)
    }

    async fn image_volumes(&self, region: &str, image_id: &str) -> Result<VolumeKeys, CallError> {
        let ec2 = self.clients(region).ec2;
        let resp =
            ec2.describe_images().image_ids(image_id).send().await.map_err(|e| call_error("ec2:DescribeImages", e))?;
        let image =
            resp.images().first().ok_or_else(|| other("ec2:DescribeImages", format!("{image_id} not found")))?;
        let mut out = VolumeKeys::default();
        let mut snapshots = Vec::new();
        for ebs in image.block_device_mappings().iter().filter_map(|m| m.ebs()) {
            match (ebs.kms_key_id(), ebs.snapshot_id()) {
                (Some(k), _) if !k.is_empty() => out.keys.push(k.to_owned()),
                (_, Some(s)) => snapshots.push(s.to_owned()),
                _ => out.unencrypted = true,
            }
        }
        if !snapshots.is_empty() {
            let resp = ec2
                .describe_snapshots()
                .set_snapshot_ids(Some(snapshots))
                .send()
                .await
                .map_err(|e| call_error("ec2:DescribeSnapshots", e))?;
            for snap in resp.snapshots() {
                match snap.kms_key_id() {
                    Some(k) if snap.encrypted() == Some(true) && !k.is_empty() => out.keys.push(k.to_owned()),
                    _ => out.unencrypted = true,
                }
            }
        }
        Ok(out)
    }

    async fn ebs_default_key(&self, region: &str) -> Result<Option<String>, CallError> {
        let ec2 = self.clients(region).ec2;
        let on = ec2
            .get_ebs_encryption_by_default()
            .send()
            .await
            .map_err(|e| call_error("ec2:GetEbsEncryptionByDefault", e))?
            .ebs_encryption_by_default()
            .unwrap_or(false);
        if !on {
            return Ok(None);
        }
        let resp =
            ec2.get_ebs_default_kms_key_id().send().await.map_err(|e| call_error("ec2:GetEbsDefaultKmsKeyId", e))?;
        Ok(resp.kms_key_id().map(str::to_owned))
    }

    async fn account_id(&self) -> Result<String, CallError> {
        self.own_account().await
    }

    async fn in_account(&self, account: &str) -> Result<Option<Self>, CallError> {
        let Some(role) = self.spoke_role.clone() else { return Ok(None) };
        self.member(account, &role).await
    }
    async fn scoped_instances(
        &self,
        region: &str,
        scope: &crate::ports::InstanceScope,
    ) -> Result<Vec<Instance>, CallError> {
        use aws_sdk_ec2::types::Filter;
        /// EC2 takes at most 200 values in one filter.
        const FILTER_VALUES: usize = 200;
        let ec2 = self.clients(region).ec2;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut chunk = 0usize;
        loop {
            let mut req = ec2.describe_instances().set_next_token(token.take());
            if scope.ids.is_empty() {
                req = req
                    .filters(Filter::builder().name("instance-state-name").values("stopped").build())
                    .max_results(1000);
            } else {
                // A filter, not InstanceIds: one id that does not exist (or is in another
                // region) would fail the whole call with InvalidInstanceID.NotFound.
                let ids: Vec<String> =
                    scope.ids.iter().skip(chunk * FILTER_VALUES).take(FILTER_VALUES).cloned().collect();
                req = req.filters(Filter::builder().name("instance-id").set_values(Some(ids)).build());
            }
            if let Some((k, v)) = &scope.tag {
                req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
            }
            let resp = req.send().await.map_err(|e| call_error("ec2:DescribeInstances", e))?;
            for r in resp.reservations() {
                let owner = r.owner_id().unwrap_or_default();
                out.extend(r.instances().iter().filter_map(|i| instance_of(region, owner, i)));
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                // The next 200 ids.
                _ if (chunk + 1) * FILTER_VALUES < scope.ids.len() => chunk += 1,
                _ => return Ok(out),
            }
        }
    }

    async fn auto_scaling_groups(&self, region: &str) -> Result<Vec<crate::ports::AutoScalingGroup>, CallError> {
        let client = self.clients(region).autoscaling;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = client
                .describe_auto_scaling_groups()
                .max_records(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| call_error("autoscaling:DescribeAutoScalingGroups", e))?;
            for g in resp.auto_scaling_groups() {
                let spec = g.launch_template().or_else(|| {
                    g.mixed_instances_policy()
                        .and_then(|m| m.launch_template())
                        .and_then(|t| t.launch_template_specification())
                });
                out.push(crate::ports::AutoScalingGroup {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_owned(),
                    arn: g.auto_scaling_group_arn().map(str::to_owned),
                    service_linked_role_arn: g.service_linked_role_arn().map(str::to_owned),
                    launch_template: spec.map(|t| crate::core::cloudtrail::LaunchTemplateRef {
                        id: t.launch_template_id().map(str::to_owned),
                        name: t.launch_template_name().map(str::to_owned),
                        version: t.version().map(str::to_owned),
                    }),
                    launch_configuration: g.launch_configuration_name().map(str::to_owned),
                });
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    async fn launch_configuration_volumes(&self, region: &str, name: &str) -> Result<VolumeKeys, CallError> {
        const CALL: &str = "autoscaling:DescribeLaunchConfigurations";
        let resp = self
            .clients(region)
            .autoscaling
            .describe_launch_configurations()
            .launch_configuration_names(name)
            .send()
            .await
            .map_err(|e| call_error(CALL, e))?;
        let lc = resp.launch_configurations().first().ok_or_else(|| other(CALL, format!("{name} not found")))?;
        let mut out = VolumeKeys { image_id: lc.image_id().map(str::to_owned), ..VolumeKeys::default() };
        // A launch configuration cannot name a KMS key: an encrypted volume gets the account's
        // EBS default key, or its snapshot's key (AWS::AutoScaling::LaunchConfiguration
        // BlockDevice: "Encrypted", no KmsKeyId).
        for ebs in lc.block_device_mappings().iter().filter_map(|m| m.ebs()) {
            match ebs.encrypted() {
                Some(true) if ebs.snapshot_id().is_none() => out.default_key = true,
                Some(true) => {}
                _ => out.unencrypted = true,
            }
        }
        Ok(out)
    }
}

impl AwsCloud {
    /// Security Hub GetFindings with `filters`, 100 a page, each page to `page` until it says
    /// enough (false) or the pages end.
    async fn findings_pages(
        &self,
        region: &str,
        filters: aws_sdk_securityhub::types::AwsSecurityFindingFilters,
        mut page: impl FnMut(&[aws_sdk_securityhub::types::AwsSecurityFinding]) -> bool,
    ) -> Result<(), CallError> {
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .clients(region)
                .securityhub
                .get_findings()
                .filters(filters.clone())
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| call_error("securityhub:GetFindings", e))?;
            let more = page(resp.findings());
            match resp.next_token() {
                Some(t) if !t.is_empty() && more => token = Some(t.to_owned()),
                _ => return Ok(()),
            }
        }
    }

    /// The cloud acting in `account` through `role` there (hub topology), credentials cached
    /// until five minutes before they expire; `None` for this cloud's own account.
    async fn member(&self, account: &str, role: &str) -> Result<Option<Self>, CallError> {
        if self.own_account().await? == account {
            return Ok(None);
        }
        // Credentials are kept until five minutes before they expire.
        let fresh = |expiry: &Option<std::time::SystemTime>| {
            expiry.is_none_or(|t| t > std::time::SystemTime::now() + std::time::Duration::from_secs(300))
        };
        let cache_key = format!("{account}/{role}");
        if let Some((cloud, expiry)) = self.members.lock().await.get(&cache_key) {
            if fresh(expiry) {
                return Ok(Some(cloud.clone()));
            }
        }
        // The lock is not held across the STS call: one slow account must not hold up the
        // others (two lookups at once may both assume; the later entry wins).
        let partition = crate::core::arn::partition_of_region(&self.default_region().unwrap_or_default());
        let role_arn = format!("arn:{partition}:iam::{account}:role/{role}");
        let (cloud, expiry) = self
            .assume(&role_arn, "kms-launch-doctor-hub", None)
            .instrument(tracing::info_span!("sts.AssumeRole", account))
            .await?;
        self.members.lock().await.insert(cache_key, (cloud.clone(), expiry));
        Ok(Some(cloud))
    }

    /// One SimulatePrincipalPolicy (all its pages) for `actions` on the request's resources.
    async fn simulate_actions(
        &self,
        request: &SimulationRequest,
        actions: Vec<String>,
        grant: bool,
    ) -> Result<Vec<Simulation>, CallError> {
        use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum};
        let mut context = vec![ContextEntry::builder()
            .context_key_name("kms:ViaService")
            .context_key_type(ContextKeyTypeEnum::String)
            .context_key_values(format!("ec2.{}.amazonaws.com", request.region))
            .build()];
        if grant {
            context.push(
                ContextEntry::builder()
                    .context_key_name("kms:GrantIsForAWSResource")
                    .context_key_type(ContextKeyTypeEnum::Boolean)
                    .context_key_values("true")
                    .build(),
            );
        }
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let resp = self
                .iam
                .simulate_principal_policy()
                .policy_source_arn(&request.principal_arn)
                .set_action_names(Some(actions.clone()))
                .set_resource_arns(Some(request.resources.clone()))
                .set_context_entries(Some(context.clone()))
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| call_error("iam:SimulatePrincipalPolicy", e))?;
            for r in resp.evaluation_results() {
                let statement_ids = |st: &[aws_sdk_iam::types::Statement]| -> Vec<String> {
                    st.iter().filter_map(|s| s.source_policy_id().map(str::to_owned)).collect()
                };
                let organizations = r.organizations_decision_detail().map(|d| d.allowed_by_organizations());
                let boundary = r.permissions_boundary_decision_detail().map(|d| d.allowed_by_permissions_boundary());
                // Per-resource decisions, when IAM gives them, are the precise ones.
                let specific = r.resource_specific_results();
                if specific.is_empty() {
                    let Some(decision) = Decision::parse(r.eval_decision().as_str()) else { continue };
                    out.push(Simulation {
                        principal_arn: request.principal_arn.clone(),
                        action: r.eval_action_name().to_owned(),
                        resource: r.eval_resource_name().unwrap_or("*").to_owned(),
                        decision,
                        matched_statements: statement_ids(r.matched_statements()),
                        allowed_by_boundary: boundary,
                        allowed_by_organizations: organizations,
                    });
                }
                for s in specific {
                    let Some(decision) = Decision::parse(s.eval_resource_decision().as_str()) else { continue };
                    out.push(Simulation {
                        principal_arn: request.principal_arn.clone(),
                        action: r.eval_action_name().to_owned(),
                        resource: s.eval_resource_name().to_owned(),
                        decision,
                        matched_statements: statement_ids(s.matched_statements()),
                        allowed_by_boundary: s
                            .permissions_boundary_decision_detail()
                            .map(|d| d.allowed_by_permissions_boundary())
                            .or(boundary),
                        allowed_by_organizations: organizations,
                    });
                }
            }
            match resp.marker() {
                Some(m) if resp.is_truncated() && !m.is_empty() => marker = Some(m.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}

fn complete<T: aws_sdk_iam::operation::RequestId>(call: &'static str, out: T) -> Result<T, CallError> {
    if out.request_id().is_some_and(|id| !id.is_empty()) {
        Ok(out)
    } else {
        Err(other(call, "the response was cut short (no request id at its end)"))
    }
}

fn other(call: &'static str, message: impl Into<String>) -> CallError {
    CallError { call, kind: FailureKind::Other, message: message.into() }
}

/// The region of an ARN (an SNS topic is published to in its own region).
fn region_of(arn: &str) -> Option<String> {
    crate::core::arn::Arn::parse(arn).ok().map(|a| a.region().to_owned()).filter(|r| !r.is_empty())
}

/// The subset of a Security Hub finding this tool writes, read back (to archive it as it is).
fn from_sdk_finding(f: &aws_sdk_securityhub::types::AwsSecurityFinding) -> crate::core::message::Asff {
    use crate::core::message::{Asff, AsffCompliance, AsffRecommendation, AsffRemediation, AsffResource, AsffSeverity};
    let text = |s: Option<&str>| s.unwrap_or_default().to_owned();
    let recommendation = f.remediation().and_then(|r| r.recommendation());
    Asff {
        schema_version: text(f.schema_version()),
        id: text(f.id()),
        product_arn: text(f.product_arn()),
        generator_id: text(f.generator_id()),
        aws_account_id: text(f.aws_account_id()),
        types: f.types().to_vec(),
        created_at: text(f.created_at()),
        updated_at: text(f.updated_at()),
        first_observed_at: text(f.first_observed_at()),
        severity: AsffSeverity {
            label: f.severity().and_then(|s| s.label()).map(|l| l.as_str().to_owned()).unwrap_or_default(),
        },
        title: text(f.title()),
        description: text(f.description()),
        remediation: AsffRemediation {
            recommendation: AsffRecommendation {
                text: text(recommendation.and_then(|r| r.text())),
                url: text(recommendation.and_then(|r| r.url())),
            },
        },
        product_fields: f
            .product_fields()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        resources: f
            .resources()
            .iter()
            .map(|r| AsffResource {
                kind: text(r.r#type()),
                id: text(r.id()),
                partition: r.partition().map(|p| p.as_str().to_owned()).unwrap_or_default(),
                region: text(r.region()),
                details: r.details().and_then(|d| d.aws_kms_key()).map(|k| {
                    serde_json::json!({"AwsKmsKey": {
                        "KeyState": k.key_state(), "KeyManager": k.key_manager(),
                        "KeyId": k.key_id(), "AWSAccountId": k.aws_account_id(),
                    }})
                }),
            })
            .collect(),
        record_state: f.record_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        region: text(f.region()),
        compliance: f.compliance().and_then(|c| c.status()).map(|s| AsffCompliance { status: s.as_str().to_owned() }),
    }
}

fn to_sdk_finding(a: &crate::core::message::Asff) -> aws_sdk_securityhub::types::AwsSecurityFinding {
    use aws_sdk_securityhub::types::{
        AwsKmsKeyDetails, AwsSecurityFinding, Partition, Recommendation, RecordState, Remediation, Resource,
        ResourceDetails, Severity, SeverityLabel,
    };
    let resources = a
        .resources
        .iter()
        .map(|r| {
            let mut b = Resource::builder()
                .r#type(&r.kind)
                .id(&r.id)
                .partition(Partition::from(r.partition.as_str()))
                .region(&r.region);
            if let Some(k) = r.details.as_ref().and_then(|d| d.get("AwsKmsKey")) {
                let field = |name: &str| k.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
                b = b.details(
                    ResourceDetails::builder()
                        .aws_kms_key(
                            AwsKmsKeyDetails::builder()
                                .set_key_state(field("KeyState"))
                                .set_key_manager(field("KeyManager"))
                                .set_key_id(field("KeyId"))
                                .set_aws_account_id(field("AWSAccountId"))
                                .build(),
                        )
                        .build(),
                );
            }
            b.build()
        })
        .collect();
    AwsSecurityFinding::builder()
        .schema_version(&a.schema_version)
        .id(&a.id)
        .product_arn(&a.product_arn)
        .generator_id(&a.generator_id)
        .aws_account_id(&a.aws_account_id)
        .set_types(Some(a.types.clone()))
        .created_at(&a.created_at)
        .updated_at(&a.updated_at)
        .first_observed_at(&a.first_observed_at)
        .severity(Severity::builder().label(SeverityLabel::from(a.severity.label.as_str())).build())
        .title(&a.title)
        .description(&a.description)
        .remediation(
            Remediation::builder()
                .recommendation(
                    Recommendation::builder()
                        .text(&a.remediation.recommendation.text)
                        .url(&a.remediation.recommendation.url)
                        .build(),
                )
                .build(),
        )
        .set_product_fields(Some(a.product_fields.clone().into_iter().collect()))
        .set_resources(Some(resources))
        .record_state(RecordState::from(a.record_state.as_str()))
        .region(&a.region)
        .set_compliance(a.compliance.as_ref().map(|c| {
            aws_sdk_securityhub::types::Compliance::builder()
                .status(aws_sdk_securityhub::types::ComplianceStatus::from(c.status.as_str()))
                .build()
        }))
        .build()
}

impl crate::ports::Effects for AwsCloud {
    async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        body: &str,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Result<String, CallError> {
        use aws_sdk_sns::types::MessageAttributeValue;
        let region = region_of(topic_arn).or_else(|| self.default_region()).unwrap_or_default();
        let mut req = self.clients(&region).sns.publish().topic_arn(topic_arn).subject(subject).message(body);
        for (k, v) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| other("sns:Publish", e.to_string()))?;
            req = req.message_attributes(k, value);
        }
        let resp =
            req.send().await.map_err(|e| call_error("sns:Publish", e)).and_then(|r| complete("sns:Publish", r))?;
        resp.message_id().map(str::to_owned).ok_or_else(|| other("sns:Publish", "response has no MessageId"))
    }

    async fn existing_findings(
        &self,
        region: &str,
        product_arn: &str,
        ids: &[String],
    ) -> Result<std::collections::BTreeMap<String, (String, String)>, CallError> {
        use aws_sdk_securityhub::types::{AwsSecurityFindingFilters, StringFilter, StringFilterComparison};
        let eq = |v: &str| StringFilter::builder().value(v).comparison(StringFilterComparison::Equals).build();
        let filters = AwsSecurityFindingFilters::builder()
            .set_id(Some(ids.iter().map(|id| eq(id)).collect()))
            .product_arn(eq(product_arn))
            .build();
        let mut out = std::collections::BTreeMap::new();
        self.findings_pages(region, filters, |page| {
            // Match the Ids here too: a filter the service ignored must not borrow another
            // finding's dates.
            for f in page {
                if let Some(id) = f.id().filter(|id| ids.iter().any(|want| want == id)) {
                    let created = f.created_at().unwrap_or_default().to_owned();
                    let updated = f.updated_at().map(str::to_owned).unwrap_or_else(|| created.clone());
                    out.insert(id.to_owned(), (created, updated));
                }
            }
            out.len() < ids.len()
        })
        .await?;
        Ok(out)
    }

    async fn open_findings(
        &self,
        region: &str,
        product_arn: &str,
        resource_ids: &[String],
    ) -> Result<Vec<crate::core::message::Asff>, CallError> {
        use aws_sdk_securityhub::types::{AwsSecurityFindingFilters, StringFilter, StringFilterComparison};
        let filter = |v: &str, c: StringFilterComparison| StringFilter::builder().value(v).comparison(c).build();
        let filters = AwsSecurityFindingFilters::builder()
            .set_resource_id(Some(resource_ids.iter().map(|id| filter(id, StringFilterComparison::Equals)).collect()))
            .product_arn(filter(product_arn, StringFilterComparison::Equals))
            .generator_id(filter(crate::core::message::GENERATOR_PREFIX, StringFilterComparison::Prefix))
            .record_state(filter("ACTIVE", StringFilterComparison::Equals))
            .build();
        let mut out = Vec::new();
        self.findings_pages(region, filters, |page| {
            out.extend(page.iter().map(from_sdk_finding));
            true
        })
        .await?;
        Ok(out)
    }

    async fn import_findings(
        &self,
        region: &str,
        findings: &[crate::core::message::Asff],
    ) -> Result<Vec<(String, String)>, CallError> {
        let resp = self
            .clients(region)
            .securityhub
            .batch_import_findings()
            .set_findings(Some(findings.iter().map(to_sdk_finding).collect()))
            .send()
            .await
            .map_err(|e| call_error("securityhub:BatchImportFindings", e))?;
        Ok(resp
            .failed_findings()
            .iter()
            .map(|f| {
                (
                    f.id().unwrap_or_default().to_owned(),
                    format!("{}: {}", f.error_code().unwrap_or("?"), f.error_message().unwrap_or("?")),
                )
            })
            .collect())
    }

    async fn put_events(
        &self,
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
        let resp = self
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
                Some(r) => Err(format!(
                    "event rejected: {}: {}",
                    r.error_code().unwrap_or("?"),
                    r.error_message().unwrap_or("?")
                )),
                None => Err("no entry result".to_owned()),
            })
            .collect())
    }
}

impl crate::ports::IamWrites for AwsCloud {
    async fn writes_in(&self, account: &str) -> Result<Option<Self>, CallError> {
        let Some(role) = self.spoke_role.as_deref() else { return Ok(None) };
        self.member(account, &format!("{role}-remediation")).await
    }

    async fn principal_tags(&self, principal: &crate::ports::Principal) -> Result<Vec<(String, String)>, CallError> {
        use crate::ports::Principal;
        all_pages(|marker| async move {
            let tags = |t: &[aws_sdk_iam::types::Tag]| -> Vec<(String, String)> {
                t.iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect()
            };
            match principal {
                Principal::User(n) => {
                    let r = self
                        .iam
                        .list_user_tags()
                        .user_name(n)
                        .set_marker(marker)
                        .send()
                        .await
                        .map_err(|e| call_error("iam:ListUserTags", e))
                        .and_then(|r| complete("iam:ListUserTags", r))?;
                    Ok((tags(r.tags()), r.is_truncated().then(|| r.marker().map(str::to_owned)).flatten()))
                }
                Principal::Role(n) => {
                    let r = self
                        .iam
                        .list_role_tags()
                        .role_name(n)
                        .set_marker(marker)
                        .send()
                        .await
                        .map_err(|e| call_error("iam:ListRoleTags", e))
                        .and_then(|r| complete("iam:ListRoleTags", r))?;
                    Ok((tags(r.tags()), r.is_truncated().then(|| r.marker().map(str::to_owned)).flatten()))
                }
            }
        })
        .await
    }

    async fn key_tags(&self, key: &KeyArn) -> Result<Vec<(String, String)>, CallError> {
        let kms = self.clients(key.region()).kms;
        all_pages(|marker| {
            let req = kms.list_resource_tags().key_id(key.to_string()).set_marker(marker);
            async move {
                let r = req.send().await.map_err(|e| call_error("kms:ListResourceTags", e))?;
                let tags = r.tags().iter().map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned())).collect();
                Ok((tags, r.truncated().then(|| r.next_marker().map(str::to_owned)).flatten()))
            }
        })
        .await
    }

    async fn inline_policy_names(&self, principal: &crate::ports::Principal) -> Result<Vec<String>, CallError> {
        use crate::ports::Principal;
        all_pages(|marker| async move {
            match principal {
                Principal::User(n) => {
                    let r = self
                        .iam
                        .list_user_policies()
                        .user_name(n)
                        .set_marker(marker)
                        .send()
                        .await
                        .map_err(|e| call_error("iam:ListUserPolicies", e))
                        .and_then(|r| complete("iam:ListUserPolicies", r))?;
                    Ok((r.policy_names().to_vec(), r.is_truncated().then(|| r.marker().map(str::to_owned)).flatten()))
                }
                Principal::Role(n) => {
                    let r = self
                        .iam
                        .list_role_policies()
                        .role_name(n)
                        .set_marker(marker)
                        .send()
                        .await
                        .map_err(|e| call_error("iam:ListRolePolicies", e))
                        .and_then(|r| complete("iam:ListRolePolicies", r))?;
                    Ok((r.policy_names().to_vec(), r.is_truncated().then(|| r.marker().map(str::to_owned)).flatten()))
                }
            }
        })
        .await
    }

    async fn inline_policy(
        &self,
        principal: &crate::ports::Principal,
        name: &str,
    ) -> Result<Option<String>, CallError> {
        use crate::ports::Principal;
        let doc = match principal {
            Principal::User(n) => match self.iam.get_user_policy().user_name(n).policy_name(name).send().await {
                Ok(r) => Some(complete("iam:GetUserPolicy", r)?.policy_document().to_owned()),
                Err(e) => {
                    let e = call_error("iam:GetUserPolicy", e);
                    if e.kind == FailureKind::NotFound {
                        None
                    } else {
                        return Err(e);
                    }
                }
            },
            Principal::Role(n) => match self.iam.get_role_policy().role_name(n).policy_name(name).send().await {
                Ok(r) => Some(complete("iam:GetRolePolicy", r)?.policy_document().to_owned()),
                Err(e) => {
                    let e = call_error("iam:GetRolePolicy", e);
                    if e.kind == FailureKind::NotFound {
                        None
                    } else {
                        return Err(e);
                    }
                }
            },
        };
        // IAM returns policy documents URL-encoded (RFC 3986); the SDK does not decode them.
        Ok(doc.map(|d| percent_encoding::percent_decode_str(&d).decode_utf8_lossy().into_owned()))
    }

    async fn put_inline_policy(
        &self,
        principal: &crate::ports::Principal,
        name: &str,
        document: &str,
    ) -> Result<(), CallError> {
        use crate::ports::Principal;
        match principal {
            Principal::User(n) => {
                self.iam
                    .put_user_policy()
                    .user_name(n)
                    .policy_name(name)
                    .policy_document(document)
                    .send()
                    .await
                    .map_err(|e| call_error("iam:PutUserPolicy", e))
                    .and_then(|r| complete("iam:PutUserPolicy", r))?;
            }
            Principal::Role(n) => {
                self.iam
                    .put_role_policy()
                    .role_name(n)
                    .policy_name(name)
                    .policy_document(document)
                    .send()
                    .await
                    .map_err(|e| call_error("iam:PutRolePolicy", e))
                    .and_then(|r| complete("iam:PutRolePolicy", r))?;
            }
        }
        Ok(())
    }

    async fn start_instance(&self, region: &str, instance_id: &str) -> Result<String, CallError> {
        let r = self
            .clients(region)
            .ec2
            .start_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| call_error("ec2:StartInstances", e))?;
        r.starting_instances()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id))
            .and_then(|i| i.current_state())
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .ok_or_else(|| {
                other(
                    "ec2:StartInstances",
                    "the response does not say the instance is starting (partial or unreadable answer)",
                )
            })
    }
}

impl crate::ports::Queue for AwsCloud {
    async fn defer(&self, queue_url: &str, receipt_handle: &str, seconds: i32) -> Result<(), CallError> {
        self.clients(&self.queue_region(queue_url))
            .sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| call_error("sqs:ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn send(&self, queue_url: &str, body: &str, delay_seconds: i32) -> Result<String, CallError> {
        let resp = self
            .clients(&self.queue_region(queue_url))
            .sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .delay_seconds(delay_seconds)
            .send()
            .await
            .map_err(|e| call_error("sqs:SendMessage", e))?;
        resp.message_id().map(str::to_owned).ok_or_else(|| other("sqs:SendMessage", "response has no MessageId"))
    }

    async fn queue_url(&self, queue_arn: &str) -> Result<String, CallError> {
        let arn = crate::core::arn::Arn::parse(queue_arn).map_err(|e| other("sqs:GetQueueUrl", e.to_string()))?;
        let resp = self
            .clients(arn.region())
            .sqs
            .get_queue_url()
            .queue_name(arn.resource())
            .queue_owner_aws_account_id(arn.account())
            .send()
            .await
            .map_err(|e| call_error("sqs:GetQueueUrl", e))?;
        resp.queue_url().map(str::to_owned).ok_or_else(|| other("sqs:GetQueueUrl", "response has no QueueUrl"))
    }
}

impl AwsCloud {
    /// The region of a queue URL, whose host names it (`sqs.<region>.amazonaws.com`); ours
    /// for any other host (an emulator's).
    fn queue_region(&self, queue_url: &str) -> String {
        queue_url
            .split('/')
            .nth(2)
            .and_then(|host| host.split('.').nth(1))
            .filter(|r| crate::core::event::is_region(r))
            .map(str::to_owned)
            .or_else(|| self.default_region())
            .unwrap_or_default()
    }

    /// GetCallerIdentity: the ARN of the credentials in use.
    pub async fn caller_arn(&self) -> Result<String, CallError> {
        let r = self.sts().get_caller_identity().send().await.map_err(|e| call_error("sts:GetCallerIdentity", e))?;
        r.arn().map(str::to_owned).ok_or_else(|| other("sts:GetCallerIdentity", "response has no Arn"))
    }

    /// A session ARN does not carry its role's path: ask IAM for the real ARN, when allowed.
    pub async fn resolve_role_path(&self, role_arn: &str) -> String {
        let Some(name) =
            crate::core::arn::Arn::parse(role_arn).ok().and_then(|a| match crate::core::arn::IamEntity::of(&a) {
                crate::core::arn::IamEntity::Role { name, path } if path == "/" => Some(name),
                _ => None,
            })
        else {
            return role_arn.to_owned();
        };
        match self.iam.get_role().role_name(name).send().await {
            Ok(r) => r.role().map(|r| r.arn().to_owned()).unwrap_or_else(|| role_arn.to_owned()),
            Err(_) => role_arn.to_owned(),
        }
    }
}
