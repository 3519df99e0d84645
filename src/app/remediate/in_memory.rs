//! The remediation path in-process, against the in-memory adapter: which opt-ins it needs, what it writes, what it proves, and when it restarts.

use std::collections::BTreeMap;

use super::*;
use crate::core::arn::KeyArn;
use crate::core::cloudtrail::PrincipalKind;
use crate::core::facts::Decision;
use crate::memory::Memory;

const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
const USER: &str = "arn:aws:iam::123456789012:user/test";
const TAG: &str = DEFAULT_TAG_KEY;

/// What a test varies; [`World::memory`] makes the in-memory AWS of it.
#[derive(Default, Clone)]
struct World {
    principal_tags: Vec<(String, String)>,
    /// `None`: ListResourceTags is denied.
    key_tags: Option<Vec<(String, String)>>,
    instance_tags: Vec<(String, String)>,
    /// Whether a simulation allows CreateGrant before any write; and whether the written
    /// policy then takes effect (false: a Deny elsewhere, an SCP or a boundary, still refuses).
    allowed_before: bool,
    allowed_after_write: bool,
}

impl World {
    fn memory(&self) -> Memory {
        let aws = Memory::new();
        aws.failed_instance("i-0abc", KEY);
        aws.key(KEY);
        let mut world = aws.world();
        if let Some(i) = world.instances.iter_mut().find(|i| i.id == "i-0abc") {
            i.tags.clone_from(&self.instance_tags);
        }
        if let Some(k) = world.keys.get_mut(KEY) {
            k.tags.clone_from(&self.key_tags);
        }
        world.principal_tags.insert("test".into(), self.principal_tags.clone());
        let pair = (USER.to_owned(), "kms:CreateGrant".to_owned());
        if self.allowed_before {
            world.allowed.insert(pair.clone());
        }
        if !self.allowed_after_write && !self.allowed_before {
            world.denied.insert(pair);
        }
        drop(world);
        aws
    }
}

/// The inline policies written to the user.
fn policies(aws: &Memory) -> BTreeMap<String, String> {
    aws.world().policies.get("test").cloned().unwrap_or_default()
}

fn tag(v: &str) -> Vec<(String, String)> {
    vec![(TAG.to_owned(), v.to_owned())]
}

/// Both sides opted in; the write makes the simulation allow CreateGrant.
fn opted_in_world() -> World {
    World { principal_tags: tag("true"), key_tags: Some(tag("true")), allowed_after_write: true, ..World::default() }
}

fn finding() -> Finding {
    let key = KeyArn::parse(KEY).unwrap();
    let mut f = crate::core::report::fixture::finding(USER, &key);
    f.remediations =
        vec![crate::core::fixes::put_identity_policy(USER, PrincipalKind::User, &key, &["kms:CreateGrant".into()])
            .unwrap()];
    f
}

async fn run(world: &Memory, g: &Guardrails) -> Remediation {
    let mut f = finding();
    remediate(world, world, g, &mut f).await;
    f.remediations.remove(0)
}

fn apply() -> Guardrails {
    Guardrails { mode: Mode::Apply, ..Guardrails::default() }
}

#[tokio::test]
async fn both_sides_opted_in_is_applied_and_verified_after_the_write() {
    let w = opted_in_world().memory();
    let r = run(&w, &apply()).await;
    assert_eq!((r.status, r.verified), (RemediationStatus::Applied, Some(true)), "{r:?}");
    let written = policies(&w).get(&crate::core::fixes::policy_name(&KeyArn::parse(KEY).unwrap())).cloned();
    assert_eq!(written.map(|d| serde_json::from_str::<Value>(&d).unwrap()), r.policy_document);
}

#[tokio::test]
async fn a_key_that_did_not_opt_in_is_refused_and_nothing_written() {
    for key_tags in [vec![], tag("True"), tag("yes"), vec![("other".to_owned(), "true".to_owned())]] {
        let w = World { key_tags: Some(key_tags.clone()), ..opted_in_world() }.memory();
        let r = run(&w, &apply()).await;
        assert_eq!(r.status, RemediationStatus::Refused, "{key_tags:?}");
        assert!(
            r.note.as_deref().unwrap().contains(
                "has not opted in: tag it kms-launch-doctor:auto-remediate=true or list it in REMEDIATION_ALLOWED_KEYS"
            ),
            "{r:?}"
        );
        assert!(policies(&w).is_empty());
    }
}

#[tokio::test]
async fn tag_values_compare_as_iam_does() {
    let w = World { principal_tags: tag("True"), ..opted_in_world() }.memory();
    let r = run(&w, &apply()).await;
    assert_eq!(r.status, RemediationStatus::Refused);
    assert!(r.note.as_deref().unwrap().contains("has not opted in"), "{r:?}");
    assert!(policies(&w).is_empty());
}

#[tokio::test]
async fn allowed_keys_opt_a_key_in_without_a_tag() {
    let w = World { key_tags: Some(vec![]), ..opted_in_world() }.memory();
    let g = Guardrails { allowed_keys: vec!["arn:aws:kms:eu-west-1:123456789012:key/*".into()], ..apply() };
    assert_eq!(run(&w, &g).await.status, RemediationStatus::Applied);
    let w = World { key_tags: Some(vec![]), ..opted_in_world() }.memory();
    let g = Guardrails { allowed_keys: vec!["arn:aws:kms:*:*:key/other".into()], ..apply() };
    assert_eq!(run(&w, &g).await.status, RemediationStatus::Refused);
}

#[tokio::test]
async fn unreadable_key_tags_fail_apply_and_are_a_caveat_in_dry_run() {
    let w = World { key_tags: None, ..opted_in_world() }.memory();
    let r = run(&w, &apply()).await;
    assert_eq!(r.status, RemediationStatus::Failed, "{r:?}");
    assert!(policies(&w).is_empty());
    let r = run(&w, &Guardrails { mode: Mode::DryRun, ..Guardrails::default() }).await;
    assert_eq!(r.status, RemediationStatus::Proposed);
    assert!(r.note.as_deref().unwrap().contains("the key's opt-in tag could not be read"), "{r:?}");
}

#[tokio::test]
async fn a_fix_that_does_not_verify_after_the_write_is_not_verified_and_not_restarted() {
    let w = World { allowed_after_write: false, instance_tags: tag("true"), ..opted_in_world() }.memory();
    let g = Guardrails { restart: true, ..apply() };
    let r = run(&w, &g).await;
    assert_eq!((r.status, r.verified), (RemediationStatus::Applied, Some(false)), "{r:?}");
    assert!(r.restart.is_none());
    assert!(w.world().started.is_empty());
}

#[tokio::test]
async fn already_allowed_is_verified_by_a_new_simulation_not_the_diagnosis() {
    // The diagnosis's evidence says allowed; the simulation made now says denied.
    let w = World { allowed_before: false, ..opted_in_world() }.memory();
    let mut f = finding();
    f.causes[0].evidence.push(crate::core::report::Evidence::Simulation {
        principal_arn: USER.into(),
        action: "kms:CreateGrant".into(),
        resource: KEY.into(),
        decision: Decision::Allowed,
        matched_statements: vec![],
        allowed_by_boundary: None,
        allowed_by_organizations: None,
    });
    remediate(&w, &w, &apply(), &mut f).await;
    let r = &f.remediations[0];
    assert_eq!((r.status, r.verified), (RemediationStatus::Unchanged, Some(false)), "{r:?}");
    assert_eq!(w.count("iam:SimulatePrincipalPolicy"), 1);
    assert!(policies(&w).is_empty());
}

#[tokio::test]
async fn restart_only_an_instance_that_opted_in() {
    let g = Guardrails { restart: true, ..apply() };
    let w = opted_in_world().memory();
    let r = run(&w, &g).await;
    let restart = r.restart.unwrap();
    assert!(!restart.ok && restart.detail.contains("instance i-0abc has not opted in"), "{restart:?}");
    assert!(w.world().started.is_empty());

    let w = World { instance_tags: tag("true"), ..opted_in_world() }.memory();
    let r = run(&w, &g).await;
    assert!(r.restart.unwrap().ok);
    assert_eq!(w.world().started, vec!["i-0abc".to_owned()]);

    // A key opted in by pattern only: the fix is written, but the restart's own grant
    // would be refused (the template allows it on tagged keys), so no start is tried.
    let w = World { instance_tags: tag("true"), key_tags: Some(vec![]), ..opted_in_world() }.memory();
    let g = Guardrails { allowed_keys: vec![KEY.into()], ..g };
    let r = run(&w, &g).await;
    assert_eq!(r.status, RemediationStatus::Applied);
    let restart = r.restart.unwrap();
    assert!(
        !restart.ok && restart.detail.contains("carries no kms-launch-doctor:auto-remediate=true tag"),
        "{restart:?}"
    );
    assert!(w.world().started.is_empty());
}
