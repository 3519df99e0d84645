//! One binary, two modes: a Lambda function when the Lambda Runtime API is there, else a CLI.
#![recursion_limit = "256"]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    kms_launch_doctor::init_tracing(lambda);
    if lambda {
        match kms_launch_doctor::lambda::run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "lambda runtime stopped");
                ExitCode::FAILURE
            }
        }
    } else {
        kms_launch_doctor::cli::main().await
    }
}
