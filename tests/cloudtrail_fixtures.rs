//! Real CloudTrail records and `userIdentity` shapes (tests/fixtures/cloudtrail, each with its
//! public source): the caller mapping and the record fields the diagnosis reads must hold on
//! what AWS actually writes, not only on the shapes our emulator makes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use kms_launch_doctor::cloudtrail::{caller_of, DenySource, Record};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloudtrail").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A fixture record as LookupEvents would return it. Some publishers rewrote `eventTime` as
/// "YYYY-MM-DD hh:mm:ss"; CloudTrail writes ISO 8601 with `Z`, so that is restored.
fn record(case: &Value) -> Record {
    let mut r = case["record"].clone();
    if let Some(t) = r["eventTime"].as_str() {
        if !t.ends_with('Z') {
            r["eventTime"] = Value::String(format!("{}Z", t.replace(' ', "T").split('.').next().unwrap()));
        }
    }
    Record::parse(&r.to_string()).unwrap_or_else(|e| panic!("{}: {e}", case["source"]))
}

#[test]
fn every_real_identity_shape_maps_to_the_principal_a_fix_belongs_on() {
    let cases = fixture("identities.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 12, "{}", cases.len());
    for case in cases {
        let c = caller_of(&case["userIdentity"]);
        let expected = &case["expected"];
        assert_eq!(c.principal_kind.as_str(), expected["principal_kind"].as_str().unwrap(), "{}", case["name"]);
        assert_eq!(c.principal_arn.as_deref(), expected["principal_arn"].as_str(), "{}", case["name"]);
    }
}

#[test]
fn ec2s_kms_calls_for_a_volume_name_it_and_the_instance() {
    let cases = fixture("kms-ec2-volume.json");
    let records: Vec<Record> = cases.as_array().unwrap().iter().map(record).collect();
    for r in records.iter().filter(|r| r.event_name != "AttachVolume") {
        assert!(!r.volume_ids.is_empty(), "{} {}: no aws:ebs:id read", r.event_name, r.event_id);
    }
    // EC2's own identity (aws:ec2-infrastructure) decrypting for its instance, and a grant to it.
    let infra: Vec<&Record> = records.iter().filter(|r| r.ec2_infrastructure_for.is_some()).collect();
    assert!(!infra.is_empty());
    for r in &infra {
        assert!(r.caller.principal_arn.is_none() && r.caller.principal_kind.as_str() == "service", "{r:?}");
        assert!(r.acts_for_instance(r.ec2_infrastructure_for.as_deref().unwrap()));
    }
    assert!(records.iter().any(|r| r.event_name == "CreateGrant" && r.grant_for_instance.is_some()));
    // The caller's own calls made through EC2 are recognised as such, old and new wording alike.
    let through_ec2: Vec<&Record> =
        records.iter().filter(|r| r.ec2_infrastructure_for.is_none() && r.event_name != "AttachVolume").collect();
    assert!(!through_ec2.is_empty());
    for r in through_ec2 {
        assert!(r.via_ec2, "{} {} not seen as made through EC2", r.event_name, r.event_id);
    }
}

#[test]
fn run_instances_requests_give_their_template_image_and_default_encryption() {
    let template = fixture("run-instances-launch-template.json");
    let r = record(&template[0]);
    let t = r.launch_template.expect("launchTemplate");
    assert_eq!((t.id.as_deref(), t.version.as_deref()), (Some("lt-064c1a4dbc97b01fc"), Some("5")));
    assert_eq!(r.image_id.as_deref(), Some("ami-05074c40f29040248"));

    let default_key = fixture("run-instances-encrypted-default-key.json");
    for case in default_key.as_array().unwrap() {
        let r = record(case);
        assert!(r.request_default_key || !r.request_keys.is_empty(), "{}", case["source"]);
    }
    let fleet = fixture("run-instances-autoscaling-fleet.json");
    for case in fleet.as_array().unwrap() {
        let r = record(case);
        assert_eq!(r.caller.principal_kind.as_str(), "service-linked-role", "{}", case["source"]);
    }
}

#[test]
fn the_documented_denial_messages_name_their_policy_type() {
    let doc = fixture("denied-messages.json");
    let examples = doc["examples"].as_array().unwrap();
    assert!(examples.len() >= 10);
    for e in examples {
        let message = e["message"].as_str().unwrap();
        let r = Record::parse(
            &serde_json::json!({"eventID": "x", "eventName": "CreateGrant", "eventTime": "2026-11-28T10:00:00Z",
                "errorCode": "AccessDenied", "errorMessage": message})
            .to_string(),
        )
        .unwrap();
        let expected = match e["policy_type"].as_str().unwrap() {
            "service-control-policy" | "vpc-endpoint-policy-through-scp" => Some(DenySource::ServiceControlPolicy),
            "vpc-endpoint-policy" => Some(DenySource::VpcEndpointPolicy),
            "permissions-boundary" => Some(DenySource::PermissionsBoundary),
            "session-policy" => Some(DenySource::SessionPolicy),
            "resource-based-policy" => Some(DenySource::ResourcePolicy),
            "identity-based-policy" => Some(DenySource::IdentityPolicy),
            _ => None,
        };
        let Some(expected) = expected else { continue };
        assert_eq!(r.denied_by().map(|(s, _)| s), Some(expected), "{message}");
        let explicit = message.contains("explicit deny");
        assert_eq!(r.explicit_deny_in().is_some(), explicit, "{message}");
    }
}
