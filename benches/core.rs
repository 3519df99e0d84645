//! The pure core, in nanoseconds per operation: deciding a finding from gathered facts, and
//! analysing a KMS key policy. No AWS, no I/O. `make bench` runs it and puts the figures in
//! BENCHMARKS.md; alone: `cargo bench --bench core`.
//!
//! The facts are the AWS Knowledge Center scenario, built by hand as tests/docs_samples.rs does
//! (IAM user `test`, one volume, one customer managed key whose policy delegates to IAM, a
//! StartInstances record and a denied CreateGrant), plus a two-key variant and an explicit Deny.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use kms_launch_doctor::arn::KeyArn;
use kms_launch_doctor::cloudtrail::Record;
use kms_launch_doctor::decide::decide;
use kms_launch_doctor::facts::*;
use kms_launch_doctor::policy::{KeyPolicy, Request};
use serde_json::json;

const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
const KEY2: &str = "arn:aws:kms:eu-west-1:123456789012:key/0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const USER: &str = "arn:aws:iam::123456789012:user/test";
const INSTANCE: &str = "i-0abcd1234ef567890";

/// The default key policy: one statement delegating to IAM (the article's key).
const DEFAULT_POLICY: &str = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#;

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

fn identity() -> serde_json::Value {
    json!({"type": "IAMUser", "principalId": "AIDACKCEVSQ6C2EXAMPLE", "arn": USER, "accountId": "123456789012", "userName": "test"})
}

fn start_record_text() -> String {
    json!({"eventVersion": "1.09", "eventID": "2a6f8e1c-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "eventName": "StartInstances",
        "eventTime": "2026-11-28T10:00:05Z", "eventSource": "ec2.amazonaws.com", "awsRegion": "eu-west-1",
        "userIdentity": identity(), "sourceIPAddress": "203.0.113.10", "userAgent": "aws-cli/2.15.0",
        "requestParameters": {"instancesSet": {"items": [{"instanceId": INSTANCE}]}},
        "responseElements": {"instancesSet": {"items": [{"instanceId": INSTANCE,
            "currentState": {"code": 0, "name": "pending"}, "previousState": {"code": 80, "name": "stopped"}}]}}})
    .to_string()
}

fn denied(key: &str, id: &str) -> Record {
    Record::parse(&json!({"eventVersion": "1.09", "eventID": id, "eventName": "CreateGrant",
        "eventTime": "2026-11-28T10:00:07Z", "userIdentity": identity(), "errorCode": "AccessDenied",
        "errorMessage": format!("User: {USER} is not authorized to perform: kms:CreateGrant on resource: {key} because no identity-based policy allows the kms:CreateGrant action"),
        "requestParameters": {"keyId": key}}).to_string())
    .unwrap()
}

fn key_facts(arn: &str, policy: &str) -> KeyFacts {
    KeyFacts {
        arn: KeyArn::parse(arn).unwrap(),
        metadata: Some(KeyMetadata {
            state: KeyState::Enabled,
            manager: Some("CUSTOMER".into()),
            origin: Some("AWS_KMS".into()),
            deletion_date: None,
            valid_to: None,
            custom_key_store_id: None,
        }),
        policy: Some(policy.into()),
    }
}

/// The article's facts: one volume on one key, IAM user `test`, CreateGrant implicitly denied.
fn article() -> Facts {
    let key = KeyArn::parse(KEY).unwrap();
    Facts {
        instance: Instance {
            id: INSTANCE.into(),
            account: "123456789012".into(),
            partition: "aws".into(),
            region: "eu-west-1".into(),
            state: Some(EndState::Stopped),
            state_name: "stopped".into(),
            state_reason: None,
            attachments: vec![Attachment { volume_id: "vol-0a1b2c3d4e5f67890".into(), device: "/dev/xvda".into() }],
        },
        state: EndState::Stopped,
        state_reason: StateReason {
            code: "Client.InternalError".into(),
            message: "Client.InternalError: Client error on launch".into(),
        },
        observed_at: Utc.with_ymd_and_hms(2026, 11, 28, 10, 1, 12).unwrap(),
        volumes: vec![Volume {
            volume_id: "vol-0a1b2c3d4e5f67890".into(),
            device: "/dev/xvda".into(),
            encrypted: Some(true),
            kms_key_arn: Some(key.clone()),
        }],
        keys: vec![key_facts(KEY, DEFAULT_POLICY)],
        launch: Some(Record::parse(&start_record_text()).unwrap()),
        kms_denials: vec![denied(KEY, "9c8b7a6f-5e4d-4c3b-2a1f-0e9d8c7b6a59")],
        simulations: vec![Simulation {
            principal_arn: USER.into(),
            action: "kms:CreateGrant".into(),
            resource: KEY.into(),
            decision: Decision::ImplicitDeny,
            matched_statements: vec![],
        }],
        missing: vec![],
    }
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
