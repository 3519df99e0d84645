//! kms-launch-doctor: why did this EC2 instance fail to start, and what is the fix?
//!
//! The crate is a pipeline, one folder a stage, each importing only the stages before it:
//!
//! ```text
//!  core/   facts, ARNs, CloudTrail records, key policies, decide, fixes, the report (pure)
//!    ↑
//!  ports   the narrow traits the use cases need, in core's types
//!    ↑                         ↑
//!  aws/    the SDK adapter     memory/  the in-memory adapter (tests)
//!    ↑                         
//!  app/    use cases: gather → decide → remediate → deliver; scan, preflight, resolve, org
//!    ↑
//!  cli/, lambda/   the two entry points
//! ```
//!
//! Modules are crate-private; what tests, benches and the binary use is re-exported below.

// No panics on data from outside, by construction: outside tests these are errors.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod app;
mod aws;
mod cli;
mod core;
mod lambda;
#[cfg(test)]
mod memory;
mod ports;
mod settings;

pub use crate::core::{arn, cloudtrail, decide, event, facts, fixes, message, policy, report};
pub use cli::main as cli_main;
pub use lambda::run as lambda_run;

/// Sets up tracing once: JSON lines on stdout in Lambda, terse text on stderr for the CLI.
pub fn init_tracing(lambda: bool) {
    use tracing_subscriber::EnvFilter;
    // The CLI is quiet but for warnings and the remediation audit trail.
    let default = if lambda { "info" } else { "warn,kms_launch_doctor::audit=info" };
    let level = std::env::var("LOG_LEVEL").ok().map(|l| l.to_ascii_lowercase());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.as_deref().unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if lambda {
        builder.json().flatten_event(true).with_current_span(false).without_time().with_ansi(false).init();
    } else {
        use std::io::IsTerminal;
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        builder.with_writer(std::io::stderr).with_ansi(colour).init();
    }
}
