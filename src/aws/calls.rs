//! One SDK error or answer in the adapter's terms: a CallError that says which call and why, pagination, and time conversions.

use super::*;
use crate::ports::{CallError, FailureKind};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};

/// Turns an SDK error into a [`CallError`] that says, in one line, what went wrong.
pub(super) fn call_error<E>(call: &'static str, err: SdkError<E, HttpResponse>) -> CallError
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
pub(super) async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, CallError>
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
pub(super) fn is_transient<E>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        _ => err.raw_response().is_some_and(|r| {
            let status = r.status().as_u16();
            status == 429 || status >= 500
        }),
    }
}

/// `outer: inner: root cause`, without the Debug dump `DisplayErrorContext` appends.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
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

pub(super) fn one_line(s: &str) -> String {
    const MAX: usize = 500;
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX {
        flat
    } else {
        format!("{}…", flat.chars().take(MAX).collect::<String>())
    }
}

pub(super) fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

pub(super) fn to_smithy(t: DateTime<Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_secs(t.timestamp())
}

pub(super) fn complete<T: aws_sdk_iam::operation::RequestId>(call: &'static str, out: T) -> Result<T, CallError> {
    if out.request_id().is_some_and(|id| !id.is_empty()) {
        Ok(out)
    } else {
        Err(other(call, "the response was cut short (no request id at its end)"))
    }
}

pub(super) fn other(call: &'static str, message: impl Into<String>) -> CallError {
    CallError { call, kind: FailureKind::Other, message: message.into() }
}

/// The region of an ARN (an SNS topic is published to in its own region).
pub(super) fn region_of(arn: &str) -> Option<String> {
    crate::core::arn::Arn::parse(arn).ok().map(|a| a.region().to_owned()).filter(|r| !r.is_empty())
}
