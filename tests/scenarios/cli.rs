//! What an operator sees (issue 16): text that says what happened, tables that fit, exit codes
//! that mean something, aws-cli habits, every replay input shape. Each through the real binary
//! against the emulator, asserting stdout, stderr and the exit code separately.

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::remediation::opt_in_key;
use super::{article, article_in, ec2_full_access, sample_event, Article};
use crate::common::*;

const TAG: &str = "kms-launch-doctor:auto-remediate";

/// Runs the tool; (exit code, stdout, stderr).
fn tool(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = run_tool(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), env);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn diagnose_text(a: &Article, extra: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut args = vec!["diagnose", "--region", &a.s.region, "--instance-id", &a.instance, "--output", "text"];
    args.extend(extra);
    tool(&args, env)
}

fn user_name(a: &Article) -> String {
    a.user_arn.rsplit('/').next().unwrap().to_owned()
}

async fn tag_user(a: &Article) {
    a.s.iam
        .tag_user()
        .user_name(user_name(a))
        .tags(aws_sdk_iam::types::Tag::builder().key(TAG).value("true").build().unwrap())
        .send()
        .await
        .unwrap();
}

/// A shell command, for the lines of a Fix block.
fn start_command(a: &Article) -> String {
    format!("$ aws ec2 start-instances --instance-ids {} --region {}", a.instance, a.s.region)
}

// ---------------------------------------------------------------------------------------------
// Text that says what happened
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn text_says_what_each_remediation_did() {
    let a = article("textstatus").await;
    let user = user_name(&a);

    // Not opted in: refused, with why and how to opt in; nothing said to be fixed.
    let (code, text, stderr) = diagnose_text(&a, &["--remediate", "apply"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        text.contains(&format!(
            "- put-user-policy on {}: refused: user/{user} has not opted in: tag it {TAG}=true",
            a.user_arn
        )),
        "{text}"
    );
    assert!(!text.contains("start-instances") && !text.contains("Fixed"), "{text}");

    // Opted in: applied and verified, fixed by this run, and the next step is the restart.
    tag_user(&a).await;
    opt_in_key(&a.s, &a.key, TAG).await;
    let (code, text, stderr) = diagnose_text(&a, &["--remediate", "apply"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains(&format!("- put-user-policy on {}: applied, verified", a.user_arn)), "{text}");
    assert!(text.contains("Fixed by this run: kms:CreateGrant is now allowed for user/"), "{text}");
    assert!(text.contains(&start_command(&a)), "{text}");

    // Again: unchanged (in place), and fixed since the failure.
    let (code, text, _) = diagnose_text(&a, &["--remediate", "apply"], &[]);
    assert_eq!(code, 0);
    assert!(text.contains(": unchanged, verified: inline policy kms-launch-doctor-"), "{text}");
    assert!(text.contains("Fixed since the failure: kms:CreateGrant is now allowed for user/"), "{text}");
    assert!(text.contains(&start_command(&a)), "{text}");
}

#[tokio::test]
async fn a_failed_remediation_says_which_call_failed_and_the_run_is_partial() {
    let a = article_in(Scenario::isolated("textfailed").await).await;
    tag_user(&a).await;
    opt_in_key(&a.s, &a.key, TAG).await;
    a.s.fault(json!({"service": "iam", "action": "ListUserTags", "code": "AccessDenied", "status": 403,
        "message": "not authorized to perform: iam:ListUserTags", "match": user_name(&a)}));
    let (code, text, stderr) = diagnose_text(&a, &["--remediate", "apply"], &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(text.contains(": failed: iam:ListUserTags failed: AccessDenied"), "{text}");
    assert!(stderr.contains("warning: ") && stderr.contains("iam:ListUserTags failed"), "{stderr}");
}

#[tokio::test]
async fn after_a_fix_the_diagnosis_says_it_is_fixed_and_gives_the_start_command() {
    // With the denial on record: the cause stands, and it is fixed since.
    let a = article("fixedsince").await;
    let (_, report, _) = a.s.diagnose(&[&a.instance]);
    let doc = only_finding(&report)["remediations"][0]["policy_document"].to_string();
    a.s.iam.put_user_policy().user_name(user_name(&a)).policy_name("fix").policy_document(doc).send().await.unwrap();
    let (code, text, stderr) = diagnose_text(&a, &[], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("Cause [caller-lacks-create-grant]"), "{text}");
    assert!(
        text.contains(&format!("Fixed since the failure: kms:CreateGrant is now allowed for user/{}", user_name(&a))),
        "{text}"
    );
    assert!(text.contains(&start_command(&a)), "{text}");

    // Without a denial on record, the tool cannot know KMS was the cause: it says what is true
    // now, and still gives the next step, without claiming KMS was never the cause.
    let s = Scenario::new("allowednow").await;
    let key = s.key(None).await;
    let user_arn = s.user("allowednow-dev", &[("ec2-full", ec2_full_access())]).await;
    let grant = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:CreateGrant", "Resource": key}]});
    s.iam
        .put_user_policy()
        .user_name("allowednow-dev")
        .policy_name("grant")
        .policy_document(grant.to_string())
        .send()
        .await
        .unwrap();
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        iam_user_identity(&user_arn, "allowednow-dev"),
        Duration::minutes(2),
    )]);
    let (code, text, _) =
        tool(&["diagnose", "--region", &s.region, "--instance-id", &instance, "--output", "text"], &[]);
    assert_eq!(code, 0);
    assert!(text.contains("Cause [no-kms-cause-found]"), "{text}");
    assert!(!text.contains("KMS is not the cause"), "a guess is not a fact: {text}");
    assert!(text.contains("Allowed now: kms:CreateGrant is now allowed for user/allowednow-dev"), "{text}");
    assert!(
        text.contains(&format!("$ aws ec2 start-instances --instance-ids {instance} --region {}", s.region)),
        "{text}"
    );
}

#[tokio::test]
async fn names_aliases_and_severity_are_shown() {
    let a = article("named").await;
    let key_id = a.key.rsplit('/').next().unwrap();
    a.s.kms.create_alias().alias_name("alias/named-ebs").target_key_id(key_id).send().await.unwrap();
    a.s.ec2
        .create_tags()
        .resources(&a.instance)
        .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value("web-1").build())
        .send()
        .await
        .unwrap();
    let (code, report, stderr) = a.s.diagnose(&[&a.instance]);
    assert_eq!(code, 0, "{stderr}");
    let f = only_finding(&report);
    assert_eq!(f["instance_name"], "web-1");
    assert_eq!(f["keys"][0]["aliases"], json!(["alias/named-ebs"]));
    assert_eq!(f["severity"], "MEDIUM", "a permission gap, as SNS and Security Hub say");
    let (_, text, _) = diagnose_text(&a, &[], &[]);
    assert!(text.starts_with(&format!("{} (Name: web-1) in {}", a.instance, a.s.region)), "{text}");
    assert!(text.contains(&format!("Key:          {} (alias/named-ebs) state Enabled", a.key)), "{text}");
    let (_, table, _) = tool(
        &["diagnose", "--region", &a.s.region, "--instance-id", &a.instance, "--output", "table"],
        &[("COLUMNS", "200")],
    );
    assert!(table.contains("web-1") && table.contains("alias/named-ebs"), "{table}");
}

#[tokio::test]
async fn severity_follows_the_cause() {
    let s = Scenario::new("severity").await;
    let key = s.key(None).await;
    s.kms.disable_key().key_id(key.rsplit('/').next().unwrap()).send().await.unwrap();
    let dead = s.instance(&[Some(&key)]).await;
    s.fail_launch(&dead, "stopped");
    let unknown = s.instance(&[Some(&s.key(None).await)]).await;
    s.fail_launch(&unknown, "stopped");
    let (_, report, _) = s.diagnose(&[&dead, &unknown]);
    let by_id =
        |id: &str| report["findings"].as_array().unwrap().iter().find(|f| f["instance_id"] == id).unwrap().clone();
    assert_eq!(by_id(&dead)["severity"], "HIGH");
    assert_eq!(by_id(&unknown)["severity"], "LOW");
}

// ---------------------------------------------------------------------------------------------
// Tables that fit, summaries, fixes once, scripts
// ---------------------------------------------------------------------------------------------

/// A region with three failed launches by one long-named user on one key, and one on a
/// disabled key.
async fn storm(name: &str) -> (Scenario, Vec<String>, String) {
    let s = Scenario::isolated(name).await;
    let key = s.key(None).await;
    let dead = s.key(None).await;
    s.kms.disable_key().key_id(dead.rsplit('/').next().unwrap()).send().await.unwrap();
    let user = format!("{name}-a-rather-long-deployment-pipeline-user");
    let user_arn = s.user(&user, &[("ec2-full", ec2_full_access())]).await;
    let mut ids = Vec::new();
    let mut records = Vec::new();
    for n in 0..3 {
        let i = s.instance(&[Some(&key)]).await;
        s.fail_launch(&i, "stopped");
        records.push(s.launch_record(
            "StartInstances",
            &i,
            iam_user_identity(&user_arn, &user),
            Duration::hours(1 + n),
        ));
        ids.push(i);
    }
    let i = s.instance(&[Some(&dead)]).await;
    s.fail_launch(&i, "terminated");
    // Terminated: its volumes are gone; the RunInstances request names the key.
    records.push(s.run_instances_record(
        &i,
        iam_user_identity(&user_arn, &user),
        Duration::hours(6),
        "ami-12c6146b",
        vec![json!({"deviceName": "/dev/xvda", "ebs": {"volumeSize": 8, "encrypted": true, "kmsKeyId": dead}})],
        None,
    ));
    ids.push(i);
    s.trail(records);
    (s, ids, user_arn)
}

#[tokio::test]
async fn the_scan_table_fits_80_columns_and_wide_prints_everything() {
    let (s, ids, user_arn) = storm("scanwidth").await;
    let (code, table, stderr) = tool(&["scan", "--region", &s.region, "--quiet"], &[("COLUMNS", "80")]);
    assert_eq!(code, 0, "{stderr}");
    let widest = table.lines().map(|l| l.chars().count()).max().unwrap();
    eprintln!("widest line at COLUMNS=80: {widest}\n{table}");
    assert!(widest <= 80, "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("INSTANCE"), "{table}");
    for id in &ids {
        assert!(table.contains(id.as_str()), "instance ids are never cut: {table}");
    }
    assert!(table.contains('…'), "long cells are cut with …: {table}");
    assert!(!table.contains("arn:aws:"), "ARNs are shown by their resource part: {table}");
    // The summary ends the table: failures per cause, where, the window, what was skipped.
    let summary = lines[5..].join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(summary.starts_with("4 failed launches (caller-lacks-create-grant 3, key-disabled 1) in "), "{table}");
    assert!(summary.contains(&s.region) && summary.contains("account 123456789012"), "{table}");
    assert!(summary.contains("CloudTrail from ") && summary.ends_with("nothing skipped."), "{table}");

    let (code, wide, _) = tool(&["scan", "--region", &s.region, "--quiet", "--wide"], &[("COLUMNS", "80")]);
    assert_eq!(code, 0);
    assert!(wide.contains(&user_arn), "--wide prints whole ARNs: {wide}");
    assert!(!wide.contains('…'), "--wide cuts nothing: {wide}");
    assert!(wide.lines().next().unwrap().contains("SINCE"), "{wide}");
}

#[tokio::test]
async fn an_empty_scan_says_where_and_when_it_searched() {
    let s = Scenario::isolated("scanempty").await;
    let (code, table, stderr) = tool(&["scan", "--region", &s.region, "--since", "3d"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let text = table.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.starts_with(&format!("No failed launches in {}; CloudTrail from ", s.region)), "{table}");
    assert!(text.ends_with("nothing skipped."), "{table}");
    assert!(stderr.is_empty(), "{stderr}");
    let (_, json_out, _) = tool(&["scan", "--region", &s.region, "--since", "3d", "--output", "json"], &[]);
    let report: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(report["summary"]["regions"], json!([s.region]));
    let start = chrono::DateTime::parse_from_rfc3339(report["summary"]["window"]["start"].as_str().unwrap()).unwrap();
    let end = chrono::DateTime::parse_from_rfc3339(report["summary"]["window"]["end"].as_str().unwrap()).unwrap();
    assert_eq!(end - start, Duration::days(3));
}

#[tokio::test]
async fn scan_text_lists_each_fix_once_and_the_script_only_the_commands() {
    let (s, ids, _) = storm("scanfixes").await;
    let (code, text, stderr) = tool(&["scan", "--region", &s.region, "--output", "text"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        text.matches("$ aws iam put-user-policy").count(),
        1,
        "one put-user-policy for three instances:\n{text}"
    );
    assert_eq!(text.matches("$ aws kms enable-key").count(), 1, "{text}");
    let fixes = text.find("\nFixes (2 distinct, for 4 failed launches):").expect("a Fixes section");
    let section = &text[fixes..];
    for id in &ids {
        assert!(section.contains(id.as_str()), "{id} is listed with the fix that unblocks it: {section}");
    }
    assert!(text.trim_end().ends_with("nothing skipped."), "the summary line ends it: {text}");

    let (code, script, _) = tool(&["scan", "--region", &s.region, "--format", "script"], &[]);
    assert_eq!(code, 0);
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    let commands: Vec<&str> =
        script.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#') && *l != "set -eu").collect();
    assert_eq!(commands.len(), 2, "only the distinct commands:\n{script}");
    assert!(commands.iter().all(|c| c.starts_with("aws ")), "{script}");
    for id in &ids {
        assert!(script.contains(id.as_str()), "each command's comment names what it unblocks: {script}");
    }
    let check = Command::new("sh").args(["-n", "-c", &script]).output().unwrap();
    assert!(check.status.success(), "the script parses: {}", String::from_utf8_lossy(&check.stderr));
}

// ---------------------------------------------------------------------------------------------
// Exit codes, stderr vs stdout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn partial_scans_exit_3_and_say_why_on_stderr() {
    let good = Scenario::isolated("exitgood").await;
    let bad = Scenario::isolated("exitbad").await;
    let key = good.key(None).await;
    let instance = good.instance(&[Some(&key)]).await;
    good.fail_launch(&instance, "stopped");
    bad.fault(json!({"service": "ec2", "action": "DescribeInstances", "code": "UnauthorizedOperation", "message": "You are not authorized to perform this operation."}));

    // Table: the table and its summary on stdout, the failing region on stderr, exit 3.
    let (code, stdout, stderr) =
        tool(&["scan", "--region", &good.region, "--region", &bad.region], &[("COLUMNS", "250")]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.contains(&instance) && !stdout.contains("UnauthorizedOperation"), "{stdout}");
    assert!(stdout.contains(&format!("skipped 1 ({}, see stderr)", bad.region)), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "warning: region {} could not be searched: ec2:DescribeInstances failed: UnauthorizedOperation",
            bad.region
        )),
        "{stderr}"
    );
    // JSON: the same in `skipped`, nothing on stderr.
    let (code, stdout, stderr) =
        tool(&["scan", "--region", &good.region, "--region", &bad.region, "--output", "json"], &[]);
    assert_eq!(code, 3);
    assert!(stderr.is_empty(), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["skipped"][0]["region"], bad.region.as_str());
    // No region searchable: nothing could be done.
    let (code, _, stderr) = tool(&["scan", "--region", &bad.region], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("error: ") && stderr.contains("UnauthorizedOperation"), "{stderr}");

    // CloudTrail denied: every caller is unknown, and stderr says why.
    good.fault(json!({"service": "cloudtrail", "action": "LookupEvents", "code": "AccessDeniedException", "message": "not authorized to perform: cloudtrail:LookupEvents"}));
    let (code, stdout, stderr) = tool(&["scan", "--region", &good.region], &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.contains("unknown"), "{stdout}");
    assert!(
        stderr.contains("warning: could not read cloudtrail:LookupEvents (so the caller is unknown) for 1 failed launch: AccessDeniedException"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_instance_in_another_region_is_not_found_there() {
    let s = Scenario::new("elsewhere").await;
    let instance = s.instance(&[None]).await;
    s.fail_launch(&instance, "stopped");
    let other = if s.region == "eu-west-1" { "eu-west-2" } else { "eu-west-1" };
    for format in ["json", "text"] {
        let (code, stdout, stderr) =
            tool(&["diagnose", "--region", other, "--instance-id", &instance, "--output", format], &[]);
        assert_eq!(code, 1, "{format}: {stdout}");
        assert_eq!(
            stderr.trim(),
            format!("error: {instance}: not found in {other} (wrong region? try --region or --all-regions)"),
            "{format}"
        );
        if format == "json" {
            let report: Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(report["skipped"][0]["instance_id"], instance.as_str());
        }
    }
    // --all-regions finds it where it is.
    let (code, stdout, stderr) = tool(&["diagnose", "--all-regions", "--instance-id", &instance], &[]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(only_finding(&report)["region"], s.region.as_str());
}

// ---------------------------------------------------------------------------------------------
// aws-cli conventions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn output_is_format_and_endpoint_url_and_profile_are_honoured() {
    let a = article("awsflags").await;
    let (_, by_format, _) =
        tool(&["diagnose", "--region", &a.s.region, "--instance-id", &a.instance, "--format", "text"], &[]);
    let (_, by_output, _) =
        tool(&["diagnose", "--region", &a.s.region, "--instance-id", &a.instance, "--output", "text"], &[]);
    let strip = |t: &str| t.lines().filter(|l| !l.contains("Finding kld-")).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&by_format), strip(&by_output));
    assert!(by_output.contains("Cause [caller-lacks-create-grant]"));

    // A profile with its own keys and region, and the endpoint by flag: no AWS_* variables.
    let dir = std::env::temp_dir().join(format!("kld-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config"), format!("[profile emu]\nregion = {}\n", a.s.region)).unwrap();
    std::fs::write(
        dir.join("credentials"),
        "[emu]\naws_access_key_id = kld-emulator\naws_secret_access_key = kld-emulator\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kms-launch-doctor"))
        .args(["--profile", "emu", "diagnose", "--instance-id", &a.instance, "--endpoint-url", emulator_url()])
        .env_clear()
        .env("HOME", &dir)
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let (code, report, stderr) = parse_output(out);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(cause_codes(only_finding(&report)), ["caller-lacks-create-grant"]);
}

#[tokio::test]
async fn colour_follows_the_flag_no_color_and_term() {
    let (s, _, _) = storm("colour").await;
    let escapes = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["scan", "--region", &s.region];
        args.extend(extra);
        tool(&args, env).1.contains('\x1b')
    };
    assert!(!escapes(&[], &[]), "auto: no colour into a pipe");
    assert!(escapes(&[], &["--color", "always"]), "always");
    assert!(escapes(&[("NO_COLOR", "1")], &["--color", "always"]), "an explicit flag wins over NO_COLOR");
    assert!(!escapes(&[("NO_COLOR", "1")], &[]), "NO_COLOR");
    assert!(!escapes(&[], &["--color", "never"]), "never");
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped the terminal half: util-linux `script` is not installed");
        return;
    }
    let on_terminal = |term: &str| {
        let cmd = format!("{} scan --region {} --quiet", env!("CARGO_BIN_EXE_kms-launch-doctor"), s.region);
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("TERM", term)
            .env_remove("NO_COLOR")
            .env("AWS_ENDPOINT_URL", emulator_url())
            .env("AWS_ACCESS_KEY_ID", "kld-emulator")
            .env("AWS_SECRET_ACCESS_KEY", "kld-emulator")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("\x1b[1m")
    };
    assert!(on_terminal("xterm"), "auto: colour on a terminal");
    assert!(!on_terminal("dumb"), "TERM=dumb: none");
}

#[tokio::test]
async fn debug_logs_go_to_stderr_and_never_the_secret() {
    let a = article("debuglogs").await;
    let (code, stdout, stderr) = tool(
        &["diagnose", "--region", &a.s.region, "--instance-id", &a.instance, "--debug"],
        &[("AWS_SECRET_ACCESS_KEY", "kld-very-secret-value")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(serde_json::from_str::<Value>(&stdout).is_ok(), "stdout stays the report");
    assert!(stderr.lines().filter(|l| l.contains("DEBUG")).count() > 10, "{stderr}");
    assert!(stderr.contains("aws_smithy_runtime") || stderr.contains("aws_config"), "the SDK's logs: {stderr}");
    assert!(!stderr.contains("kld-very-secret-value"), "the secret is never logged");
    let (_, _, quiet) = tool(&["diagnose", "--region", &a.s.region, "--instance-id", &a.instance], &[]);
    assert!(quiet.is_empty(), "without --debug, nothing from the SDK: {quiet}");
}

// ---------------------------------------------------------------------------------------------
// replay: every input shape
// ---------------------------------------------------------------------------------------------

fn replay(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms-launch-doctor"));
    cmd.arg("replay")
        .args(args)
        .env("AWS_ENDPOINT_URL", emulator_url())
        .env("AWS_ACCESS_KEY_ID", "kld-emulator")
        .env("AWS_SECRET_ACCESS_KEY", "kld-emulator")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_temp(name: &str, v: &Value) -> String {
    let path = std::env::temp_dir().join(format!("kld-{}-{name}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string_pretty(v).unwrap()).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn replay_takes_an_event_a_list_an_sqs_event_or_stdin() {
    let a = article("replayshapes").await;
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &a.instance, &a.s.region)).unwrap())
            .unwrap();
    let not_ec2: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/not-ec2.json")).unwrap()).unwrap();
    let finding_of = |out: &(i32, String, String)| {
        assert_eq!(out.0, 0, "{}", out.2);
        let report: Value = serde_json::from_str(&out.1).unwrap();
        assert_eq!(cause_codes(only_finding(&report)), ["caller-lacks-create-grant"], "{report:#}");
        report
    };

    finding_of(&replay(&[&write_temp("one", &event)], None));
    let report = finding_of(&replay(&[&write_temp("list", &json!([event, not_ec2]))], None));
    assert!(report["skipped"][0]["reason"].as_str().unwrap().contains("not an EC2 instance state-change"));

    // The repository's own SQS sample, with this scenario's event as the body.
    let mut sqs: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/sqs-batch.json")).unwrap()).unwrap();
    sqs["Records"][0]["body"] = json!(event.to_string());
    finding_of(&replay(&[&write_temp("sqs", &sqs)], None));
    finding_of(&replay(&["-"], Some(&event.to_string())));

    // The sample itself is read as an SQS event: its instance is not in the emulator.
    let (code, _, stderr) = replay(&[&root().join("events/sqs-batch.json").display().to_string()], None);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("i-0abcd1234ef567890: not found in eu-west-1"), "{stderr}");
}

#[test]
fn replay_parse_errors_name_the_file_and_the_position() {
    let file = root().join("events/malformed.json").display().to_string();
    let (code, stdout, stderr) = replay(&[&file], None);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(stderr.starts_with(&format!("error: {file}:1:")) && stderr.contains("not valid JSON"), "{stderr}");
    let (code, _, stderr) = replay(&["-"], Some("{\n  \"source\": aws.ec2\n}"));
    assert_eq!(code, 2);
    assert!(stderr.starts_with("error: <stdin>:2:13: not valid JSON"), "{stderr}");
}

#[tokio::test]
async fn replay_caller_unknown_says_which_cloudtrail_window_was_searched() {
    let s = Scenario::new("replaywindow").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(sample_event("stopped.json", &instance, &s.region)).unwrap())
            .unwrap();
    let when = Utc::now() - Duration::hours(3);
    event["time"] = json!(rfc3339(when));
    let file = write_temp("window", &event);
    let (code, stdout, stderr) = replay(&[&file], None);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let f = only_finding(&report);
    assert_eq!(cause_codes(f), ["caller-unknown"]);
    let (start, end) = (rfc3339(when - Duration::minutes(60)), rfc3339(when + Duration::minutes(5)));
    assert_eq!(f["cloudtrail_window"], json!({"start": start, "end": end}));
    let (_, text, _) = replay(&[&file, "--output", "text"], None);
    assert!(
        text.contains(&format!(
            "Launched by:  unknown: no StartInstances record naming {instance} in CloudTrail from {start} to {end}"
        )),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// A closed pipe, for every new output
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_closed_pipe_ends_every_new_output_quietly() {
    let a = article("closedpipe2").await;
    let runs: Vec<Vec<&str>> = vec![
        vec!["diagnose", "--region", &a.s.region, "--instance-id", &a.instance, "--output", "text"],
        vec!["diagnose", "--region", &a.s.region, "--instance-id", &a.instance, "--output", "table"],
        vec!["scan", "--region", &a.s.region, "--format", "script"],
        vec!["scan", "--region", &a.s.region, "--wide"],
        vec!["check-permissions", "--region", &a.s.region],
    ];
    for args in runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kms-launch-doctor"))
            .args(&args)
            .env("AWS_ENDPOINT_URL", emulator_url())
            .env("AWS_ACCESS_KEY_ID", "kld-emulator")
            .env("AWS_SECRET_ACCESS_KEY", "kld-emulator")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        // The run's own outcome stands: a shared region may hold others' partial evidence (3),
        // and the emulator's default credentials may lack permissions (check-permissions: 1).
        assert!(matches!(out.status.code(), Some(0 | 1 | 3)), "{args:?}: {:?} {stderr}", out.status.code());
    }
}
