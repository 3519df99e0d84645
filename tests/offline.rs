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

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config directory with one profile, `real`.
fn profiles() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kld-offline-profiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config"),
        "[profile real]\nregion = eu-west-1\n[profile sso]\nsso_session = corp\nsso_account_id = 123456789012\n",
    )
    .unwrap();
    std::fs::write(dir.join("credentials"), "[real]\naws_access_key_id = x\naws_secret_access_key = y\n").unwrap();
    dir
}

#[test]
fn a_missing_profile_is_an_error_that_names_it() {
    let dir = profiles();
    let args = ["diagnose", "--region", "eu-west-1", "--instance-id", "i-0123456789abcdef0"];
    let with_files = |cmd: &mut Command| {
        cmd.env("AWS_CONFIG_FILE", dir.join("config")).env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"));
    };
    let mut cmd = tool();
    with_files(&mut cmd);
    let (code, stdout, stderr) = run(cmd.args(["--profile", "nosuch"]).args(args));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: profile nosuch (from --profile) is not in ~/.aws/config"), "{stderr}");
    assert!(stderr.contains("profiles there: ") && stderr.contains("real"), "{stderr}");

    let mut cmd = tool();
    with_files(&mut cmd);
    let (code, _, stderr) = run(cmd.env("AWS_PROFILE", "nosuch").args(args));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("error: profile nosuch (from AWS_PROFILE) is not in"), "{stderr}");

    // A profile this build cannot sign in with says so, and how to get around it.
    let mut cmd = tool();
    with_files(&mut cmd);
    let (code, _, stderr) = run(cmd.args(["--profile", "sso"]).args(args));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("profile sso (from --profile) gets its credentials through sso_session"), "{stderr}");
    assert!(stderr.contains("aws configure export-credentials --profile sso"), "{stderr}");
}

#[test]
fn connection_errors_name_the_endpoint_and_debug_shows_the_credential_chain() {
    let (code, _, stderr) = run(tool()
        .env("AWS_ACCESS_KEY_ID", "kld-offline")
        .env("AWS_SECRET_ACCESS_KEY", "kld-offline")
        .args(["diagnose", "--region", "eu-west-1", "--instance-id", "i-0123456789abcdef0"])
        .args(["--endpoint-url", "http://127.0.0.1:9"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("could not reach the endpoint http://127.0.0.1:9: "), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // No credentials anywhere: the chain reaches instance metadata; only --debug shows it.
    let (code, _, quiet) =
        run(tool().args(["diagnose", "--region", "eu-west-1", "--instance-id", "i-0123456789abcdef0"]));
    assert_eq!(code, 1);
    assert_eq!(quiet.trim().lines().count(), 1, "{quiet}");
    let (code, _, debug) =
        run(tool().args(["--debug", "diagnose", "--region", "eu-west-1", "--instance-id", "i-0123456789abcdef0"]));
    assert_eq!(code, 1);
    assert!(debug.lines().count() > 5 && debug.contains("DEBUG"), "{debug}");
    assert!(debug.lines().last().unwrap_or_default().contains("no AWS credentials found"), "{debug}");
}

#[test]
fn instance_ids_are_validated() {
    for bad in ["i-12345", "i-0123456789ABCDEF0", "i-0123456789abcdef", "vol-0123456789abcdef0"] {
        let (code, stdout, stderr) = run(tool().args(["diagnose", "--region", "eu-west-1", "--instance-id", bad]));
        assert_eq!(code, 2, "{bad}");
        assert!(stdout.is_empty());
        assert!(stderr.contains("is not an EC2 instance id: expected i- and 8 or 17 hex digits"), "{bad}: {stderr}");
    }
}

#[test]
fn every_command_has_examples_and_describes_every_flag() {
    let (code, top, _) = run(tool().arg("--help"));
    assert_eq!(code, 0);
    for line in ["Exit codes (every command):", "3  partial", "--profile", "--endpoint-url", "--debug", "--color"] {
        assert!(top.contains(line), "{line}:\n{top}");
    }
    for sub in ["diagnose", "scan", "replay", "check-permissions", "completions"] {
        let (code, help, _) = run(tool().args([sub, "--help"]));
        assert_eq!(code, 0, "{sub}");
        assert!(help.contains("Examples:\n  kms-launch-doctor "), "{sub}:\n{help}");
        // Every option is described: on its line, or on the next one.
        let lines: Vec<&str> = help.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if !(t.starts_with("--") || (t.starts_with('-') && t.chars().nth(2) == Some(','))) {
                continue;
            }
            let same = t.split("  ").filter(|p| !p.trim().is_empty()).count() >= 2;
            let next = lines.get(n + 1).map(|l| l.trim()).unwrap_or_default();
            assert!(same || (!next.is_empty() && !next.starts_with('-')), "{sub}: {line} has no description");
        }
    }
    let (_, help, _) = run(tool().args(["diagnose", "--help"]));
    assert!(help.contains("--format <FORMAT>") && help.contains("[alias: --output]"), "{help}");
}

#[test]
fn the_readme_says_how_to_install_and_what_exit_codes_mean() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let install = readme.find("## Install").expect("an Install section");
    let section = &readme[install..];
    for step in
        ["cargo install --locked --path .", "make install", "completions bash", "completions zsh", "completions fish"]
    {
        assert!(section.contains(step), "Install lacks {step}");
    }
    for code in ["| `0` |", "| `1` |", "| `2` |", "| `3` |"] {
        assert!(readme.contains(code), "README's exit codes lack {code}");
    }
    let makefile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Makefile")).unwrap();
    assert!(makefile.contains("\ninstall:") && makefile.contains("install --locked --path ."), "make install");
}
