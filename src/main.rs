//! One binary, two modes: a Lambda function when the Lambda Runtime API is there, else a CLI.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::ExitCode;

/// Tokio's documented default, set explicitly so that `RUST_MIN_STACK` (which the test harness
/// raises for its own threads) cannot hide an overflow here. It suffices because the AWS adapter
/// boxes each SDK call's future (`aws/ports.rs`): no caller's future holds one inline.
const WORKER_STACK: usize = 2 * 1024 * 1024;

fn main() -> ExitCode {
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    // The CLI sets up its logging once its flags are read (--debug, --color).
    if lambda {
        kms_launch_doctor::init_tracing(true);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(WORKER_STACK).build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        if lambda {
            match kms_launch_doctor::lambda_run().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "lambda runtime stopped");
                    ExitCode::FAILURE
                }
            }
        } else {
            kms_launch_doctor::cli_main().await
        }
    })
}
