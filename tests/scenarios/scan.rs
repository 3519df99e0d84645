//! `scan`, `check-permissions` and `completions` against the emulator.

use chrono::Duration;
use serde_json::{json, Value};

use super::{create_grant_allowed, ec2_full_access};
use crate::common::*;

fn scan(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all = vec!["scan".to_owned()];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = run_tool(&all, env);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A region with failures of several causes, user stops and a running instance.
#[tokio::test]
async fn scan_finds_exactly_the_failed_launches() {
    let s = Scenario::isolated("scanmix").await;
    let key = s.key(None).await;
    let disabled = s.key(None).await;
    s.kms.disable_key().key_id(disabled.rsplit('/').next().unwrap()).send().await.unwrap();
    let dev = s.user("scanmix-dev", &[("ec2-full", ec2_full_access())]).await;
    let ok_user = s.user("scanmix-ok", &[("ec2-full", ec2_full_access()), ("grant", create_grant_allowed(&key))]).await;
    let identity = |arn: &str, name: &str| iam_user_identity(arn, name);

    let lacks = s.instance(&[Some(&key)]).await;
    let dead_key = s.instance(&[Some(&disabled)]).await;
    let server_code = s.instance(&[Some(&key)]).await;
    let user_stopped = s.instance(&[Some(&key)]).await;
    let running = s.instance(&[Some(&key)]).await;
    s.fail_launch(&lacks, "stopped");
    s.fail_launch(&dead_key, "terminated");
    s.fail_launch_with(&server_code, "stopped", "Server.InternalError", "Client.InternalError: Client error on launch");
    s.ec2.stop_instances().instance_ids(&user_stopped).send().await.unwrap();
    s.trail(vec![
        s.launch_record("StartInstances", &lacks, identity(&dev, "scanmix-dev"), Duration::hours(5)),
        // Terminated: its volumes are gone; the request's block device mapping names the key.
        s.run_instances_record(
            &dead_key,
            identity(&dev, "scanmix-dev"),
            Duration::hours(30),
            "ami-12c6146b",
            vec![json!({"deviceName": "/dev/xvda", "ebs": {"volumeSize": 8, "encrypted": true, "kmsKeyId": disabled}})],
            None,
        ),
        s.launch_record("StartInstances", &server_code, identity(&ok_user, "scanmix-ok"), Duration::days(2)),
    ]);

    let (code, stdout, stderr) = scan(&["--region", &s.region, "--format", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "no progress when stderr is not a terminal: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let mut got: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["instance_id"].as_str().unwrap().to_owned(), f["causes"][0]["code"].as_str().unwrap().to_owned()))
        .collect();
    got.sort();
    let mut want = vec![
        (lacks.clone(), "caller-lacks-create-grant".to_owned()),
        (dead_key.clone(), "key-disabled".to_owned()),
        (server_code.clone(), "no-kms-cause-found".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want, "{stdout}");
    assert!(!stdout.contains(&user_stopped) && !stdout.contains(&running));

    // The table, for a person, at a width where every column fits.
    let (code, table, _) = scan(&["--region", &s.region, "--quiet"], &[("NO_COLOR", "1"), ("COLUMNS", "200")]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("INSTANCE") && lines[0].contains("CAUSE") && lines[0].contains("FIX"), "{table}");
    // A header, three rows, the summary line (wrapped to the width).
    assert!(
        lines[4].starts_with("3 failed launches (caller-lacks-create-grant 1, key-disabled 1, no-kms-cause-found 1)"),
        "{table}"
    );
    assert!(
        lines[4..].join(" ").split_whitespace().collect::<Vec<_>>().join(" ").ends_with("nothing skipped."),
        "{table}"
    );
    let row = lines.iter().find(|l| l.contains(&lacks)).unwrap();
    assert!(
        row.contains("stopped")
            && row.contains("user/scanmix-dev")
            && row.contains("caller-lacks-create-grant")
            && row.contains("put-user-policy"),
        "{row}"
    );
    assert!(!table.contains('\x1b'), "no colour when not a terminal");
}

#[tokio::test]
async fn fifty_failures_cost_at_most_three_cloudtrail_calls() {
    let s = Scenario::isolated("storm50").await;
    let key = s.key(None).await;
    let user_arn = s.user("storm50-dev", &[("ec2-full", ec2_full_access())]).await;
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};
    let run = s
        .ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(50)
        .max_count(50)
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(EbsBlockDevice::builder().volume_size(8).encrypted(true).kms_key_id(&key).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = run.instances().iter().map(|i| i.instance_id().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 50);
    let identity = iam_user_identity(&user_arn, "storm50-dev");
    let mut records = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        s.fail_launch(id, "stopped");
        let ago = Duration::minutes(10 + n as i64);
        records.push(s.launch_record("StartInstances", id, identity.clone(), ago));
        records.push(s.denied_grant(&key, identity.clone(), &user_arn, ago - Duration::seconds(2)));
    }
    s.trail(records);
    s.reset_calls();
    let (code, stdout, stderr) = scan(&["--region", &s.region, "--format", "json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 50);
    assert!(findings.iter().all(|f| f["causes"][0]["code"] == "caller-lacks-create-grant"), "{stdout}");
    let calls = s.calls();
    let count = |c: &str| calls.iter().filter(|x| *x == c).count();
    assert!(count("cloudtrail:LookupEvents") <= 3, "{calls:?}");
    assert_eq!(count("kms:DescribeKey"), 1, "each key once");
    assert_eq!(count("kms:GetKeyPolicy"), 1);
    assert_eq!(count("iam:SimulatePrincipalPolicy"), 1, "one simulation per principal");

    // In text, the one fix these 50 failures share is printed once, with what it unblocks.
    let (code, text, stderr) = scan(&["--region", &s.region, "--output", "text"], &[]);
    assert_eq!(code, 0, "{stderr}");
    eprintln!("scan --output text, 50 failures, one fix: {} bytes", text.len());
    assert_eq!(text.matches("$ aws ").count(), 1, "{text}");
    assert!(text.contains("Fixes (1 distinct, for 50 failed launches):"), "{text}");
}

#[tokio::test]
async fn a_failing_region_is_skipped_and_the_scan_goes_on() {
    let good = Scenario::isolated("scangood").await;
    let bad = Scenario::isolated("scanbad").await;
    let key = good.key(None).await;
    let instance = good.instance(&[Some(&key)]).await;
    good.fail_launch(&instance, "stopped");
    bad.fault(json!({"service": "ec2", "action": "DescribeInstances", "code": "UnauthorizedOperation", "message": "You are not authorized to perform this operation."}));
    let (code, stdout, stderr) = scan(&["--region", &good.region, "--region", &bad.region, "--format", "json"], &[]);
    assert_eq!(code, 3, "a region that could not be searched makes the scan partial: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["findings"].as_array().unwrap().len(), 1);
    assert_eq!(report["skipped"][0]["region"], bad.region.as_str());
    assert!(report["skipped"][0]["reason"].as_str().unwrap().contains("UnauthorizedOperation"));

    // Nothing searchable at all is a failure.
    let (code, _, stderr) = scan(&["--region", &bad.region], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("UnauthorizedOperation"), "{stderr}");
}

#[tokio::test]
async fn progress_shows_on_a_terminal_unless_quiet() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let s = Scenario::new("scantty").await;
    let tool = env!("CARGO_BIN_EXE_kms-launch-doctor");
    let run = |extra: &str| {
        let cmd = format!("{tool} scan --region {} --format json {extra}", s.region);
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("AWS_ENDPOINT_URL", emulator_url())
            .env("AWS_ACCESS_KEY_ID", "kld-emulator")
            .env("AWS_SECRET_ACCESS_KEY", "kld-emulator")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run("").contains("1/1 regions"), "progress on a terminal");
    assert!(!run("--quiet").contains("regions,"), "--quiet silences it");
}

#[tokio::test]
async fn check_permissions_reports_each_call() {
    let s = Scenario::new("perms").await;
    let read_only = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["ec2:Describe*", "kms:DescribeKey", "kms:GetKeyPolicy", "cloudtrail:LookupEvents", "iam:SimulatePrincipalPolicy"], "Resource": "*"}]});
    s.user("perms-operator", &[("read", read_only)]).await;
    let key = s.iam.create_access_key().user_name("perms-operator").send().await.unwrap();
    let key = key.access_key().unwrap();
    let out = run_tool(
        &["check-permissions".into(), "--remediate".into(), "apply".into(), "--region".into(), s.region.clone()],
        &[("AWS_ACCESS_KEY_ID", key.access_key_id()), ("AWS_SECRET_ACCESS_KEY", key.secret_access_key())],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Required calls (the remediation's) are not allowed: exit 1.
    assert_eq!(out.status.code(), Some(1), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("arn:aws:iam::{ACCOUNT}:user/perms-operator")), "{stdout}");
    let decision = |action: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{action} ")))
            .unwrap_or_else(|| panic!("{action} missing:\n{stdout}"))
            .to_owned()
    };
    assert!(decision("kms:GetKeyPolicy").contains("allowed"));
    assert!(decision("ec2:DescribeVolumes").contains("allowed"));
    assert!(decision("iam:PutUserPolicy").contains("implicitDeny"));
    let writes = stdout.find("--remediate apply (writes").unwrap();
    assert!(stdout.find("iam:PutUserPolicy ").unwrap() > writes, "listed under the command that needs it:\n{stdout}");
    // ec2:DescribeRegions only under --all-regions, not as something every diagnosis needs.
    let every = stdout.find("Every diagnosis").unwrap();
    let all_regions = stdout.find("--all-regions (diagnose, scan)").unwrap();
    let regions_line = stdout.find("ec2:DescribeRegions").unwrap();
    assert!(every < all_regions && regions_line > all_regions, "{stdout}");

    // The policy that grants exactly what is missing, and how to attach it.
    let start = stdout.find("{\n").unwrap();
    let end = stdout[start..].find("\n}\n").unwrap() + start + 2;
    let policy: Value = serde_json::from_str(&stdout[start..end]).unwrap();
    let mut granted: Vec<String> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()))
        .collect();
    granted.sort();
    let mut missing: Vec<String> = [
        "kms:ListAliases",
        "iam:ListUserTags",
        "iam:ListRoleTags",
        "iam:ListUserPolicies",
        "iam:ListRolePolicies",
        "iam:GetUserPolicy",
        "iam:GetRolePolicy",
        "kms:ListResourceTags",
        "iam:PutUserPolicy",
        "iam:PutRolePolicy",
        "ec2:StartInstances",
    ]
    .map(str::to_owned)
    .to_vec();
    missing.sort();
    assert_eq!(granted, missing, "{stdout}");
    assert!(stdout.contains("$ aws iam put-user-policy --user-name perms-operator --policy-name kms-launch-doctor-permissions --policy-document '{"), "{stdout}");

    // Grant it (as printed), and the same check passes with exit 0.
    s.iam
        .put_user_policy()
        .user_name("perms-operator")
        .policy_name("kms-launch-doctor-permissions")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
    let out = run_tool(
        &["check-permissions".into(), "--remediate".into(), "apply".into(), "--region".into(), s.region.clone()],
        &[("AWS_ACCESS_KEY_ID", key.access_key_id()), ("AWS_SECRET_ACCESS_KEY", key.secret_access_key())],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("Every required call is allowed."), "{stdout}");
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_tool(&["completions".into(), shell.into()], &[]);
        assert_eq!(out.status.code(), Some(0));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("kms-launch-doctor") && script.contains("check-permissions"), "{shell}");
    }
}

#[tokio::test]
async fn a_closed_pipe_ends_every_scan_format_quietly() {
    // `scan … | head`: the reader goes away; the scan ends with 0 and no panic, in every format.
    let s = Scenario::new("closedpipe").await;
    let key = s.key(None).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    for format in ["table", "json", "text"] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kms-launch-doctor"));
        cmd.args(["scan", "--region", &s.region, "--quiet", "--format", format])
            .env("AWS_ENDPOINT_URL", emulator_url())
            .env("AWS_ACCESS_KEY_ID", "kld-emulator")
            .env("AWS_SECRET_ACCESS_KEY", "kld-emulator")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert!(!stderr.contains("panicked"), "{format}: {stderr}");
    }
}
