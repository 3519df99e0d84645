//! The samples in docs/samples are what a user receives from each sink, rendered by the same
//! code from the Knowledge Center scenario. This test fails when they are stale; run it with
//! `KLD_BLESS=1` to rewrite them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use chrono::{TimeZone, Utc};
use kms_launch_doctor::arn::KeyArn;
use kms_launch_doctor::cloudtrail::Record;
use kms_launch_doctor::decide::decide;
use kms_launch_doctor::deliver::message;
use kms_launch_doctor::facts::*;
use serde_json::json;

const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
const USER: &str = "arn:aws:iam::123456789012:user/test";

fn article() -> kms_launch_doctor::report::Finding {
    let identity = json!({"type": "IAMUser", "principalId": "AIDACKCEVSQ6C2EXAMPLE", "arn": USER, "accountId": "123456789012", "userName": "test"});
    let start = Record::parse(&json!({"eventVersion": "1.09", "eventID": "2a6f8e1c-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "eventName": "StartInstances",
        "eventTime": "2026-11-28T10:00:05Z", "userIdentity": identity,
        "requestParameters": {"instancesSet": {"items": [{"instanceId": "i-0abcd1234ef567890"}]}}}).to_string()).unwrap();
    let denied = Record::parse(&json!({"eventVersion": "1.09", "eventID": "9c8b7a6f-5e4d-4c3b-2a1f-0e9d8c7b6a59", "eventName": "CreateGrant",
        "eventTime": "2026-11-28T10:00:07Z", "userIdentity": identity, "errorCode": "AccessDenied",
        "errorMessage": format!("User: {USER} is not authorized to perform: kms:CreateGrant on resource: {KEY} because no identity-based policy allows the kms:CreateGrant action"),
        "requestParameters": {"keyId": KEY}}).to_string()).unwrap();
    let key = KeyArn::parse(KEY).unwrap();
    let facts = Facts {
        instance: Instance {
            id: "i-0abcd1234ef567890".into(),
            account: "123456789012".into(),
            partition: "aws".into(),
            region: "eu-west-1".into(),
            state: Some(EndState::Stopped),
            state_name: "stopped".into(),
            state_reason: None,
            attachments: vec![Attachment { volume_id: "vol-0a1b2c3d4e5f67890".into(), device: "/dev/xvda".into() }],
        },
        state: EndState::Stopped,
        state_reason: StateReason { code: "Client.InternalError".into(), message: "Client.InternalError: Client error on launch".into() },
        observed_at: Utc.with_ymd_and_hms(2026, 11, 28, 10, 1, 12).unwrap(),
        volumes: vec![Volume { volume_id: "vol-0a1b2c3d4e5f67890".into(), device: "/dev/xvda".into(), encrypted: Some(true), kms_key_arn: Some(key.clone()) }],
        keys: vec![KeyFacts {
            arn: key,
            metadata: Some(KeyMetadata { state: KeyState::Enabled, manager: Some("CUSTOMER".into()), origin: Some("AWS_KMS".into()), deletion_date: None, valid_to: None, custom_key_store_id: None }),
            policy: Some(r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#.into()),
        }],
        launch: Some(start),
        kms_denials: vec![denied],
        simulations: vec![Simulation { principal_arn: USER.into(), action: "kms:CreateGrant".into(), resource: KEY.into(), decision: Decision::ImplicitDeny, matched_statements: vec![] }],
        missing: vec![],
    };
    decide(&facts)
}

fn check(file: &str, rendered: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/samples").join(file);
    if std::env::var_os("KLD_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, rendered).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "{} is stale: run `KLD_BLESS=1 cargo test --test docs_samples` and commit it",
        path.display()
    );
}

#[test]
fn sns_message_sample() {
    let f = article();
    let attrs = message::sns_attributes(&f);
    let mut text = format!("Subject: {}\n", message::sns_subject(&f));
    for (k, v) in &attrs {
        text.push_str(&format!("MessageAttribute {k} (String): {v}\n"));
    }
    text.push('\n');
    text.push_str(&message::sns_body(&f));
    assert!(message::sns_subject(&f).len() <= 100);
    check("sns-message.txt", &text);
}

#[test]
fn security_hub_sample() {
    let f = article();
    let asff = message::asff(&f, Some("2026-11-28T10:07:00Z"), "2026-11-28T10:07:00Z");
    check("security-hub-finding.json", &(serde_json::to_string_pretty(&asff).unwrap() + "\n"));
}

#[test]
fn eventbridge_sample() {
    let f = article();
    let detail: serde_json::Value = serde_json::from_str(&message::eventbridge_detail(&f)).unwrap();
    let event = json!({
        "version": "0", "id": "3f1a6c0e-7d2b-4e8f-9a5c-1b2d3e4f5a6b", "detail-type": message::EVENT_DETAIL_TYPE,
        "source": message::EVENT_SOURCE, "account": f.account, "time": "2026-11-28T10:07:00Z", "region": f.region,
        "resources": [message::instance_arn(&f)], "detail": detail
    });
    check("eventbridge-event.json", &(serde_json::to_string_pretty(&event).unwrap() + "\n"));
}

#[test]
fn oversized_findings_are_truncated_with_a_marker_not_rejected() {
    let mut f = article();
    let filler = kms_launch_doctor::report::Evidence::Note { text: "x".repeat(10_000) };
    f.causes[0].evidence.extend(std::iter::repeat_n(filler, 100));
    assert!(serde_json::to_vec(&f).unwrap().len() > 900_000);
    let detail = message::eventbridge_detail(&f);
    assert!(detail.len() <= message::EVENTBRIDGE_MAX_BYTES);
    assert!(detail.contains("truncated to fit the payload limit"));
    assert!(message::sns_body(&f).len() <= message::SNS_MAX_BYTES);
    let asff = message::asff(&f, None, "2026-11-28T10:07:00Z");
    assert!(serde_json::to_vec(&asff).unwrap().len() <= message::ASFF_MAX_BYTES);
    assert!(asff.description.chars().count() <= 1024 && asff.title.chars().count() <= 256);
}
