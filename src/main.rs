//! One binary, two modes: a Lambda function when the Lambda Runtime API is there, else a CLI.
#![recursion_limit = "256"]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::ExitCode;

/// The SDK's futures and response types (Security Hub findings above all) are large and deep in
/// unoptimised builds; the async code runs on threads with room for them. The memory is only
/// reserved, not used.
const STACK: usize = 64 * 1024 * 1024;

fn main() -> ExitCode {
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    // The CLI sets up its logging once its flags are read (--debug, --color).
    if lambda {
        kms_launch_doctor::init_tracing(true);
    }
    let run = move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(STACK).build()?;
        Ok::<_, std::io::Error>(runtime.block_on(async {
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
        }))
    };
    let outcome = std::thread::Builder::new().name("main-async".into()).stack_size(STACK).spawn(run).map(|h| h.join());
    match outcome {
        Ok(Ok(Ok(code))) => code,
        Ok(Ok(Err(e))) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
        Ok(Err(_)) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: cannot start the main thread: {e}");
            ExitCode::FAILURE
        }
    }
}
