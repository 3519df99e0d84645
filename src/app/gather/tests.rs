//! Gathering in-process, through the in-memory adapter: what is asked once for many launches,
//! how CloudTrail is searched, and which launches a failed call leaves without evidence.

use chrono::{DateTime, Duration, Utc};

use super::{launches, Options, Target};
use crate::memory::Memory;
use crate::ports::{FailureKind, TrailKey};

const KEY_A: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
const KEY_B: &str = "arn:aws:kms:eu-west-1:123456789012:key/1b2c3d4e-0000-4000-8000-000000000001";
const USER: &str = "arn:aws:iam::123456789012:user/test";

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn targets(ids: &[&str]) -> Vec<Target> {
    ids.iter().map(|id| Target::new((*id).to_owned(), now())).collect()
}

fn failure(aws: &Memory, id: &str, key: &str) {
    aws.failed_instance(id, key);
    if !aws.world().keys.contains_key(key) {
        aws.key(key);
    }
    aws.start_instances(id, USER, now() - Duration::minutes(5));
}

fn missing_calls(f: &crate::core::facts::Facts) -> Vec<&str> {
    f.missing.iter().map(|m| m.call.as_str()).collect()
}

#[tokio::test]
async fn a_key_that_cannot_be_read_leaves_only_its_own_launches_without_evidence() {
    let aws = Memory::new();
    failure(&aws, "i-0000000000000000a", KEY_A);
    failure(&aws, "i-0000000000000000b", KEY_B);
    aws.world().keys.remove(KEY_B);
    let evidence =
        launches(&aws, "eu-west-1", &targets(&["i-0000000000000000a", "i-0000000000000000b"]), &Options::default())
            .await
            .unwrap();
    let by_id = |id: &str| evidence.launches.iter().find(|(f, _)| f.instance.id == id).map(|(f, _)| f).unwrap();
    assert!(missing_calls(by_id("i-0000000000000000a")).is_empty(), "{:?}", by_id("i-0000000000000000a").missing);
    let b = missing_calls(by_id("i-0000000000000000b"));
    assert!(b.contains(&"kms:DescribeKey") && b.contains(&"kms:GetKeyPolicy"), "{b:?}");
    assert!(
        by_id("i-0000000000000000b").missing.iter().all(|m| m.target == KEY_B),
        "{:?}",
        by_id("i-0000000000000000b").missing
    );
}

#[tokio::test]
async fn a_failed_lookup_is_missing_evidence_for_every_launch_it_was_to_serve() {
    let aws = Memory::new();
    failure(&aws, "i-0000000000000000a", KEY_A);
    failure(&aws, "i-0000000000000000b", KEY_A);
    aws.fail("cloudtrail:LookupEvents", FailureKind::Throttled);
    let evidence =
        launches(&aws, "eu-west-1", &targets(&["i-0000000000000000a", "i-0000000000000000b"]), &Options::default())
            .await
            .unwrap();
    assert_eq!(evidence.launches.len(), 2);
    for (f, _) in &evidence.launches {
        assert!(f.launch.is_none());
        assert!(missing_calls(f).contains(&"cloudtrail:LookupEvents"), "{:?}", f.missing);
    }
}

#[tokio::test]
async fn only_a_failed_describe_instances_is_an_error() {
    let aws = Memory::new();
    failure(&aws, "i-0000000000000000a", KEY_A);
    aws.fail("ec2:DescribeInstances", FailureKind::Denied);
    let err = launches(&aws, "eu-west-1", &targets(&["i-0000000000000000a"]), &Options::default()).await.unwrap_err();
    assert_eq!(err.call, "ec2:DescribeInstances");
}

#[tokio::test]
async fn an_instance_that_is_not_there_or_did_not_fail_is_skipped_with_why() {
    let aws = Memory::new();
    failure(&aws, "i-0000000000000000a", KEY_A);
    aws.world().instances[0].state_reason = None;
    let evidence =
        launches(&aws, "eu-west-1", &targets(&["i-0000000000000000a", "i-0000000000000000c"]), &Options::default())
            .await
            .unwrap();
    assert!(evidence.launches.is_empty());
    let reasons: Vec<&str> = evidence.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons, ["not a launch failure: the instance has no state reason", "not found in eu-west-1"]);
}

#[tokio::test]
async fn few_launches_are_searched_by_instance_and_many_over_one_window() {
    let aws = Memory::new();
    let few = ["i-0000000000000000a", "i-0000000000000000b"];
    for id in few {
        failure(&aws, id, KEY_A);
    }
    let evidence = launches(&aws, "eu-west-1", &targets(&few), &Options::default()).await.unwrap();
    assert!(evidence.launches.iter().all(|(f, _)| f.launch.is_some()), "each caller found");
    let lookups = std::mem::take(&mut aws.world().lookups);
    assert!(lookups.iter().any(|k| *k == TrailKey::ResourceName(few[0].to_owned())), "{lookups:?}");
    assert!(!lookups.iter().any(|k| matches!(k, TrailKey::EventName(_))), "{lookups:?}");

    let many: Vec<String> = (0..10).map(|n| format!("i-1{n:016x}")).collect();
    for id in &many {
        failure(&aws, id, KEY_A);
    }
    let ids: Vec<&str> = many.iter().map(String::as_str).collect();
    let evidence = launches(&aws, "eu-west-1", &targets(&ids), &Options::default()).await.unwrap();
    assert!(evidence.launches.iter().all(|(f, _)| f.launch.is_some()), "each caller found in the window");
    let lookups = aws.world().lookups.clone();
    assert!(lookups.iter().all(|k| matches!(k, TrailKey::EventName(_))), "{lookups:?}");
    assert!(lookups.len() <= 3, "a handful of queries for the region, not two per instance: {lookups:?}");
}

#[tokio::test]
async fn volumes_are_described_two_hundred_at_a_time_and_each_key_once() {
    let aws = Memory::new();
    let ids: Vec<String> = (0..250).map(|n| format!("i-2{n:016x}")).collect();
    for id in &ids {
        failure(&aws, id, KEY_A);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let evidence = launches(&aws, "eu-west-1", &targets(&ids), &Options::default()).await.unwrap();
    assert_eq!(evidence.launches.len(), 250);
    assert_eq!(aws.count("ec2:DescribeVolumes"), 2);
    assert_eq!(aws.count("kms:DescribeKey"), 1);
    assert_eq!(aws.count("kms:GetKeyPolicy"), 1);
}
