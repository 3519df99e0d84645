//! Where the SDK configuration comes from: the environment, the CLI's --region/--profile/--endpoint-url, and the endpoints actually called.

use super::*;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::time::Duration as StdDuration;

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
pub(super) static SOURCE: std::sync::OnceLock<Source> = std::sync::OnceLock::new();

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
pub(super) static ENDPOINTS: std::sync::Mutex<std::collections::BTreeMap<String, String>> =
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
pub(super) fn endpoint_of(call: &str) -> Option<String> {
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
pub(super) fn no_credentials() -> String {
    match SOURCE.get().and_then(Source::named_profile) {
        Some((name, from)) => format!(
            "no AWS credentials found for profile {name} (from {from}): it has no keys, role or source that this build can use"
        ),
        None => "no AWS credentials found: set AWS_PROFILE (or --profile), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a role is available".to_owned(),
    }
}

/// A timeout in (fractional) seconds from the environment, within 0.1–300 s, else `default`.
pub(super) fn seconds_from_env(name: &str, default: u64) -> StdDuration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| (0.1..=300.0).contains(s))
        .map(StdDuration::from_secs_f64)
        .unwrap_or(StdDuration::from_secs(default))
}
