//! Why an invocation failed, typed: Lambda reports each as its `errorType` (CloudWatch and the
//! async invocation's failure destination show `SinksFailed`, not a Rust type path), and the
//! message says what to do.

use crate::ports::CallError;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// An environment variable is set but invalid; nothing is diagnosed until it is fixed.
    #[error("{0}")]
    Configuration(String),
    /// The payload says it is an SQS batch but is not one Lambda would send.
    #[error("malformed SQS batch: {0}")]
    MalformedBatch(String),
    /// A sink could not be reached; failing makes EventBridge retry (Security Hub upserts by
    /// Id, so a retry does not add a second finding there).
    #[error("{what}{count} sink(s) failed; first: {first}")]
    SinksFailed { what: &'static str, count: usize, first: CallError },
    /// An AWS call every event of the invocation needed failed.
    #[error(transparent)]
    Aws(#[from] CallError),
    /// The answer could not be written as JSON.
    #[error("cannot write the answer: {0}")]
    Answer(#[from] serde_json::Error),
}

impl HandlerError {
    /// The `errorType` Lambda reports: the variant's name.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Configuration(_) => "Configuration",
            Self::MalformedBatch(_) => "MalformedBatch",
            Self::SinksFailed { .. } => "SinksFailed",
            Self::Aws(_) => "AwsCallFailed",
            Self::Answer(_) => "Answer",
        }
    }

    /// Sinks that failed, if any did (`what` names the path: empty for a diagnosis).
    pub fn sinks(what: &'static str, failures: Vec<CallError>) -> Result<(), Self> {
        let count = failures.len();
        match failures.into_iter().next() {
            Some(first) => Err(Self::SinksFailed { what, count, first }),
            None => Ok(()),
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        Self { error_type: e.error_type().to_owned(), error_message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::FailureKind;

    #[test]
    fn lambda_sees_the_kind_of_failure_and_a_sentence() {
        let first = CallError { call: "sns:Publish", kind: FailureKind::Throttled, message: "Rate exceeded".into() };
        let e = HandlerError::sinks("", vec![first.clone(), first]).unwrap_err();
        let d = lambda_runtime::Diagnostic::from(e);
        assert_eq!(d.error_type, "SinksFailed");
        assert_eq!(d.error_message, "2 sink(s) failed; first: sns:Publish failed: Rate exceeded");
        assert!(HandlerError::sinks("preflight: ", vec![]).is_ok());
    }
}
