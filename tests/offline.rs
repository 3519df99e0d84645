//! The CLI without any AWS to talk to: it must fail fast, with one line, and exit 1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::Command;
use std::time::{Duration, Instant};

fn tool() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms-launch-doctor"));
    for var in
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_LAMBDA_RUNTIME_API"]
    {
        cmd.env_remove(var);
    }
    // Nothing answers here: neither the API endpoint nor instance metadata (never the real one).
    let home = std::env::temp_dir().join(format!("kld-offline-home-{}", std::process::id()));
    cmd.env("HOME", home)
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    cmd
}

#[test]
fn no_credentials_fail_fast_with_one_line() {
    let started = Instant::now();
    let out =
        tool().args(["diagnose", "--region", "eu-west-1", "--instance-id", "i-0123456789abcdef0"]).output().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no AWS credentials found"), "{stderr}");
    assert!(out.stdout.is_empty());
    // A bound, not a benchmark: minutes of waiting on instance metadata would be a bug.
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

#[test]
fn unreachable_endpoint_fails_within_the_timeouts() {
    let started = Instant::now();
    let out = tool()
        .env("AWS_ACCESS_KEY_ID", "kld-offline")
        .env("AWS_SECRET_ACCESS_KEY", "kld-offline")
        .args(["scan", "--region", "eu-west-1", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not reach the endpoint"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
}

/// Runs the tool with its stdout already closed (a reader that went away, as `| head` does once
/// it has its lines): every format must end quietly with 0, never with a panic.
fn with_closed_stdout(cmd: &mut Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let out = with_closed_stdout(tool().args(["completions", shell]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{shell}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{shell}: {stderr}");
    }
    // Usage errors still say so (stderr is open) and keep their exit code.
    let out = with_closed_stdout(tool().args(["diagnose", "--instance-id", "nope"]));
    assert_eq!(out.status.code(), Some(2));
}
