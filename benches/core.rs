//! The pure core, in nanoseconds per operation: deciding a finding from gathered facts, and
//! analysing a KMS key policy. No AWS, no I/O. `make bench` runs it and puts the figures in
//! BENCHMARKS.md; alone: `cargo bench --bench core`.
//!
//! The facts are the AWS Knowledge Center scenario of tests/fixtures/article.rs, the one
//! docs/samples is rendered from, plus a two-key variant and an explicit Deny.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use kms_launch_doctor::arn::KeyArn;
use kms_launch_doctor::cloudtrail::Record;
use kms_launch_doctor::decide::decide;
use kms_launch_doctor::facts::*;
use kms_launch_doctor::policy::{KeyPolicy, Request};
use serde_json::json;

#[path = "../tests/fixtures/article.rs"]
mod article;
use article::*;

const KEY2: &str = "arn:aws:kms:eu-west-1:123456789012:key/0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";

/// A realistic console-made key policy: delegation, key administrators, key users, grants for
/// AWS resources under a condition, and an organisation-wide Deny with conditions.
fn console_policy() -> String {
    json!({"Version": "2012-10-17", "Id": "key-consolepolicy-3", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "Allow access for Key Administrators", "Effect": "Allow",
         "Principal": {"AWS": ["arn:aws:iam::123456789012:role/KeyAdmin", "arn:aws:iam::123456789012:user/security"]},
         "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
                    "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"],
         "Resource": "*"},
        {"Sid": "Allow use of the key", "Effect": "Allow",
         "Principal": {"AWS": ["arn:aws:iam::123456789012:role/app", "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"]},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"],
         "Resource": "*"},
        {"Sid": "Allow attachment of persistent resources", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::123456789012:role/app"},
         "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
         "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}},
        {"Sid": "Deny outside the organisation", "Effect": "Deny", "Principal": "*", "Action": "kms:*",
         "Resource": "*", "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "o-exampleorg"},
                                        "Bool": {"aws:PrincipalIsAWSService": "false"}}},
        {"Sid": "Only through EC2", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:CreateGrant",
         "Resource": "*", "Condition": {"StringNotLike": {"kms:ViaService": ["ec2.*.amazonaws.com", "rds.*.amazonaws.com"]}}}
    ]})
    .to_string()
}

/// Two volumes on two keys; the second key has the six-statement console policy.
fn two_keys() -> Facts {
    let mut f = article();
    let key2 = KeyArn::parse(KEY2).unwrap();
    f.instance.attachments.push(Attachment { volume_id: "vol-0b2c3d4e5f6789012".into(), device: "/dev/xvdb".into() });
    f.volumes.push(Volume {
        volume_id: "vol-0b2c3d4e5f6789012".into(),
        device: "/dev/xvdb".into(),
        encrypted: Some(true),
        kms_key_arn: Some(key2),
    });
    f.keys.push(key_facts(KEY2, &console_policy()));
    f.kms_denials.push(denied(KEY2, "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b5a"));
    f.simulations.push(Simulation {
        principal_arn: USER.into(),
        action: "kms:CreateGrant".into(),
        resource: KEY2.into(),
        decision: Decision::ImplicitDeny,
        matched_statements: vec![],
        allowed_by_boundary: None,
        allowed_by_organizations: None,
    });
    f
}

/// A disabled key: decided from its state before any policy is read.
fn disabled_key() -> Facts {
    let mut f = article();
    if let Some(m) = f.keys[0].metadata.as_mut() {
        m.state = KeyState::Disabled;
    }
    f.simulations.clear();
    f
}

fn request(action: &str) -> Request<'_> {
    Request {
        principal_arn: USER,
        caller_arn: Some(USER),
        principal_account: "123456789012",
        key_arn: KEY,
        region: "eu-west-1",
        action,
        principal_type: Some("User"),
    }
}

fn bench_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    for (name, facts) in [("article", article()), ("two_keys", two_keys()), ("key_disabled", disabled_key())] {
        // Sanity: the benchmark decides what the tests say it decides.
        let finding = decide(&facts);
        assert!(!finding.causes.is_empty(), "{name}: no cause");
        g.bench_function(name, |b| b.iter(|| decide(black_box(&facts))));
    }
    g.finish();
}

fn bench_policy(c: &mut Criterion) {
    let console = console_policy();
    let mut g = c.benchmark_group("key_policy");
    g.bench_function("parse_default", |b| b.iter(|| KeyPolicy::parse(black_box(DEFAULT_POLICY)).unwrap()));
    g.bench_function("parse_console_6_statements", |b| b.iter(|| KeyPolicy::parse(black_box(&console)).unwrap()));
    let default = KeyPolicy::parse(DEFAULT_POLICY).unwrap();
    let parsed = KeyPolicy::parse(&console).unwrap();
    let req = request("kms:CreateGrant");
    g.bench_function("evaluate_default", |b| b.iter(|| default.evaluate(black_box(&req))));
    g.bench_function("evaluate_console_6_statements", |b| b.iter(|| parsed.evaluate(black_box(&req))));
    g.bench_function("parse_and_evaluate_console", |b| {
        b.iter(|| KeyPolicy::parse(black_box(&console)).unwrap().evaluate(black_box(&req)))
    });
    g.finish();
}

fn bench_cloudtrail(c: &mut Criterion) {
    let text = start_record_text();
    let mut g = c.benchmark_group("cloudtrail");
    g.bench_function("parse_start_instances_record", |b| b.iter(|| Record::parse(black_box(&text)).unwrap()));
    g.finish();
}

fn config() -> Criterion {
    // Short but stable: `make bench` must finish in minutes. Override on the command line
    // (`cargo bench --bench core -- --measurement-time 10`) for tighter intervals.
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decide, bench_policy, bench_cloudtrail
}
criterion_main!(benches);
