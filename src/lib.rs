//! kms-launch-doctor: why did this EC2 instance fail to start, and what is the fix?
//!
//! The crate is a functional core with a thin shell:
//! - gathering ([`gather`] through the [`cloud::Cloud`] trait, [`aws`] for the SDKs) collects
//!   [`facts::Facts`];
//! - deciding ([`decide`], with [`policy`] and [`cloudtrail`]) is pure: facts in, a
//!   [`report::Finding`] out;
//! - the entry points ([`cli`], [`lambda`], both through [`app`]) print or return the
//!   [`report::Report`].

// No panics on data from outside, by construction: outside tests these are errors.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod app;
pub mod arn;
pub mod aws;
pub mod cli;
pub mod cloud;
pub mod cloudtrail;
pub mod config;
pub mod decide;
pub mod deliver;
pub mod event;
pub mod facts;
pub mod gather;
pub mod lambda;
pub mod org;
pub mod permissions;
pub mod policy;
pub mod preflight;
pub mod remediate;
pub mod remedy;
pub mod render;
pub mod report;
pub mod resolve;
pub mod scan;
pub mod stats;
pub mod term;

#[cfg(test)]
mod decide_tests;

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
