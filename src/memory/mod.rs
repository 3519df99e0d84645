//! The in-memory adapter: every port over plain data, for testing the use cases and the Lambda
//! batch in-process (`make unit`: no emulator, no network, milliseconds a test).
//!
//! A [`World`] holds what AWS would: instances, volumes, keys and their policies, CloudTrail
//! records, what IAM's simulator allows, the sinks' contents and the queue's actions. Every call
//! is logged by its `service:Action` name ([`Memory::calls`]), and any call can be made to fail
//! ([`Memory::fail`]). What it models is only what the ports promise (one page of 50 events,
//! newest first, for LookupEvents; upsert by Id for Security Hub); what AWS answers on the wire
//! is the emulator suite's job.
//!
//! May import: [`crate::core`] and [`crate::ports`].

mod ports;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::core::facts::{Attachment, EndState, Instance, KeyMetadata, KeyState, StateReason};
use crate::core::message::Asff;
use crate::core::outbox::BusEvent;
use crate::ports::{CallError, FailureKind, VolumeInfo};

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";

/// A key as KMS holds it.
#[derive(Debug, Clone)]
pub struct Key {
    pub metadata: KeyMetadata,
    pub policy: String,
    pub aliases: Vec<String>,
    /// `None`: ListResourceTags is denied.
    pub tags: Option<Vec<(String, String)>>,
}

/// One CloudTrail record, with the attributes LookupEvents filters on.
#[derive(Debug, Clone)]
pub struct TrailRecord {
    pub region: String,
    pub time: DateTime<Utc>,
    pub event_name: String,
    /// The names LookupEvents' `ResourceName` matches (instance ids, key ARNs).
    pub resources: Vec<String>,
    /// The record itself (`CloudTrailEvent`).
    pub json: String,
}

/// What the in-memory AWS holds. Public so a test can set up and read back anything.
#[derive(Debug, Default)]
pub struct World {
    pub account: String,
    pub regions: Vec<String>,
    pub instances: Vec<Instance>,
    pub volumes: Vec<(String, VolumeInfo)>,
    pub keys: BTreeMap<String, Key>,
    pub trail: Vec<TrailRecord>,
    /// (principal ARN, action) pairs IAM's simulator allows (on any resource), besides what an
    /// inline policy this tool wrote allows.
    pub allowed: BTreeSet<(String, String)>,
    /// (principal ARN, action) pairs a Deny outside the principal's inline policies refuses
    /// (an SCP, a boundary): it wins over any Allow.
    pub denied: BTreeSet<(String, String)>,
    pub boundaries: BTreeMap<String, String>,
    /// Tags and inline policies by principal name.
    pub principal_tags: BTreeMap<String, Vec<(String, String)>>,
    pub policies: BTreeMap<String, BTreeMap<String, String>>,
    pub started: Vec<String>,
    pub published: Vec<(String, String, String)>,
    pub findings: BTreeMap<String, Asff>,
    pub bus: Vec<BusEvent>,
    /// ChangeMessageVisibility (receipt handle, seconds) and SendMessage (body, delay).
    pub deferred: Vec<(String, i32)>,
    pub sent: Vec<(String, i32)>,
    /// Each LookupEvents query's attribute, in order (by instance or key, or by event name).
    pub lookups: Vec<crate::ports::TrailKey>,
    /// Every call made, in order, as `service:Action`.
    pub calls: Vec<String>,
    /// Calls that fail, every time: `service:Action` → the kind of failure.
    pub faults: BTreeMap<String, FailureKind>,
}

/// The ports over a [`World`].
#[derive(Debug, Default)]
pub struct Memory {
    world: Mutex<World>,
}

impl Memory {
    pub fn new() -> Self {
        Self {
            world: Mutex::new(World {
                account: ACCOUNT.to_owned(),
                regions: vec![REGION.to_owned()],
                ..World::default()
            }),
        }
    }

    /// The world, to set up or read back. Never held across an await.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }

    /// How many times `call` was made.
    pub fn count(&self, call: &str) -> usize {
        self.world().calls.iter().filter(|c| *c == call).count()
    }

    /// Makes `call` fail with `kind` from now on.
    pub fn fail(&self, call: &str, kind: FailureKind) {
        self.world().faults.insert(call.to_owned(), kind);
    }

    /// Logs the call and answers with its fault, if one is set; else the world to answer from.
    fn call(&self, name: &'static str) -> Result<MutexGuard<'_, World>, CallError> {
        let mut world = self.world();
        world.calls.push(name.to_owned());
        if let Some(&kind) = world.faults.get(name) {
            return Err(CallError { call: name, kind, message: format!("{kind:?} (injected)") });
        }
        Ok(world)
    }

    /// A stopped instance whose launch failed (`Client.InternalError`), with one volume
    /// encrypted under `key`; the volume is added too.
    pub fn failed_instance(&self, id: &str, key: &str) -> Instance {
        let volume_id = format!("vol-{}", id.trim_start_matches("i-"));
        let instance = Instance {
            id: id.to_owned(),
            account: ACCOUNT.to_owned(),
            partition: "aws".to_owned(),
            region: REGION.to_owned(),
            state: Some(EndState::Stopped),
            state_name: "stopped".to_owned(),
            state_reason: Some(StateReason {
                code: "Client.InternalError".to_owned(),
                message: "Client.InternalError: Client error on launch".to_owned(),
            }),
            attachments: vec![Attachment { volume_id: volume_id.clone(), device: "/dev/xvda".to_owned() }],
            tags: Vec::new(),
            image_id: None,
        };
        let mut world = self.world();
        world.volumes.push((
            REGION.to_owned(),
            VolumeInfo { volume_id, encrypted: Some(true), kms_key_id: Some(key.to_owned()) },
        ));
        world.instances.push(instance.clone());
        instance
    }

    /// An enabled customer managed key whose policy delegates to IAM (the account-root `kms:*`
    /// statement), so the caller's IAM policies decide.
    pub fn key(&self, arn: &str) {
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"}]
        })
        .to_string();
        let metadata = KeyMetadata {
            state: KeyState::Enabled,
            manager: Some("CUSTOMER".to_owned()),
            origin: Some("AWS_KMS".to_owned()),
            deletion_date: None,
            valid_to: None,
            custom_key_store_id: None,
        };
        self.world().keys.insert(arn.to_owned(), Key { metadata, policy, aliases: Vec::new(), tags: Some(Vec::new()) });
    }

    /// The caller's StartInstances of `instance`, at `time`, as CloudTrail records it.
    pub fn start_instances(&self, instance: &str, user_arn: &str, time: DateTime<Utc>) {
        let json = serde_json::json!({
            "eventVersion": "1.08",
            "eventID": format!("start-{instance}-{}", time.timestamp_millis()),
            "eventTime": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "eventSource": "ec2.amazonaws.com",
            "eventName": "StartInstances",
            "awsRegion": REGION,
            "recipientAccountId": ACCOUNT,
            "userIdentity": {"type": "IAMUser", "arn": user_arn, "accountId": ACCOUNT,
                "principalId": "AIDAEXAMPLE", "userName": user_arn.rsplit('/').next().unwrap_or_default()},
            "requestParameters": {"instancesSet": {"items": [{"instanceId": instance}]}},
            "responseElements": {"instancesSet": {"items": [{"instanceId": instance,
                "currentState": {"code": 0, "name": "pending"}, "previousState": {"code": 80, "name": "stopped"}}]}},
        });
        self.world().trail.push(TrailRecord {
            region: REGION.to_owned(),
            time,
            event_name: "StartInstances".to_owned(),
            resources: vec![instance.to_owned()],
            json: json.to_string(),
        });
    }

    /// The denied CreateGrant EC2 made for the caller's launch, on `key`.
    pub fn denied_create_grant(&self, user_arn: &str, key: &str, time: DateTime<Utc>) {
        let json = serde_json::json!({
            "eventVersion": "1.08",
            "eventID": format!("grant-{}", time.timestamp_millis()),
            "eventTime": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "eventSource": "kms.amazonaws.com",
            "eventName": "CreateGrant",
            "awsRegion": REGION,
            "recipientAccountId": ACCOUNT,
            "sourceIPAddress": "ec2.amazonaws.com",
            "invokedBy": "ec2.amazonaws.com",
            "userIdentity": {"type": "IAMUser", "arn": user_arn, "accountId": ACCOUNT,
                "invokedBy": "ec2.amazonaws.com"},
            "errorCode": "AccessDenied",
            "errorMessage": format!("User: {user_arn} is not authorized to perform: kms:CreateGrant on resource: {key} because no identity-based policy allows the kms:CreateGrant action"),
            "requestParameters": {"keyId": key, "constraints": {"encryptionContextSubset": {"aws:ebs:id": "vol-0"}},
                "granteePrincipal": "ec2.eu-west-1.amazonaws.com", "operations": ["Decrypt"]},
            "resources": [{"ARN": key, "type": "AWS::KMS::Key"}],
        });
        self.world().trail.push(TrailRecord {
            region: REGION.to_owned(),
            time,
            event_name: "CreateGrant".to_owned(),
            resources: vec![key.to_owned()],
            json: json.to_string(),
        });
    }
}
