//! The ports over the in-memory [`World`]: each call logged, each fault injectable.

use std::collections::BTreeMap;

use crate::core::arn::KeyArn;
use crate::core::facts::{Decision, Instance, KeyMetadata, Simulation};
use crate::core::message::Asff;
use crate::core::outbox::BusEvent;
use crate::ports::{
    CallError, Cloud, Effects, FailureKind, IamWrites, Principal, Queue, SimulationRequest, TrailEvent, TrailKey,
    TrailPage, TrailQuery, VolumeInfo, VolumeKeys,
};

use super::{Memory, World};

fn name_of(principal: &Principal) -> &str {
    match principal {
        Principal::User(n) | Principal::Role(n) => n,
    }
}

/// LookupEvents' page size (its `MaxResults` limit).
const TRAIL_PAGE: usize = 50;

fn not_found(call: &'static str, what: &str) -> CallError {
    CallError { call, kind: FailureKind::NotFound, message: format!("{what} does not exist") }
}

/// Whether an inline policy in `world` allows `action` on `resource` for `principal`: a
/// statement with Effect Allow naming both (conditions are taken as met). Enough for the
/// remediation's own statement; IAM's evaluation proper is the emulator's.
fn policy_allows(world: &World, principal: &str, action: &str, resource: &str) -> bool {
    let name = principal.rsplit('/').next().unwrap_or_default();
    let names = |v: &serde_json::Value, x: &str| match v {
        serde_json::Value::String(s) => s == x || s == "*",
        serde_json::Value::Array(a) => a.iter().any(|s| s.as_str().is_some_and(|s| s == x || s == "*")),
        _ => false,
    };
    world.policies.get(name).into_iter().flat_map(BTreeMap::values).any(|doc| {
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap_or_default();
        let statements = match &doc["Statement"] {
            serde_json::Value::Array(a) => a.clone(),
            s => vec![s.clone()],
        };
        statements
            .iter()
            .any(|s| s["Effect"] == "Allow" && names(&s["Action"], action) && names(&s["Resource"], resource))
    })
}

impl Cloud for Memory {
    async fn describe_instances(&self, region: &str, ids: &[String]) -> Result<Vec<Instance>, CallError> {
        let world = self.call("ec2:DescribeInstances")?;
        Ok(world.instances.iter().filter(|i| i.region == region && ids.contains(&i.id)).cloned().collect())
    }

    async fn describe_failed_instances(&self, region: &str) -> Result<Vec<Instance>, CallError> {
        let world = self.call("ec2:DescribeInstances")?;
        Ok(world
            .instances
            .iter()
            .filter(|i| i.region == region && i.state.is_some())
            .filter(|i| i.state_reason.as_ref().is_some_and(|r| r.code.ends_with(".InternalError")))
            .cloned()
            .collect())
    }

    async fn describe_volumes(&self, region: &str, ids: &[String]) -> Result<Vec<VolumeInfo>, CallError> {
        let world = self.call("ec2:DescribeVolumes")?;
        Ok(world
            .volumes
            .iter()
            .filter(|(r, v)| r == region && ids.contains(&v.volume_id))
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn describe_regions(&self) -> Result<Vec<String>, CallError> {
        Ok(self.call("ec2:DescribeRegions")?.regions.clone())
    }

    async fn describe_key(&self, key: &KeyArn) -> Result<KeyMetadata, CallError> {
        let world = self.call("kms:DescribeKey")?;
        world
            .keys
            .get(&key.to_string())
            .map(|k| k.metadata.clone())
            .ok_or_else(|| not_found("kms:DescribeKey", &key.to_string()))
    }

    async fn get_key_policy(&self, key: &KeyArn) -> Result<String, CallError> {
        let world = self.call("kms:GetKeyPolicy")?;
        world
            .keys
            .get(&key.to_string())
            .map(|k| k.policy.clone())
            .ok_or_else(|| not_found("kms:GetKeyPolicy", &key.to_string()))
    }

    async fn list_aliases(&self, key: &KeyArn) -> Result<Vec<String>, CallError> {
        let world = self.call("kms:ListAliases")?;
        Ok(world.keys.get(&key.to_string()).map(|k| k.aliases.clone()).unwrap_or_default())
    }

    async fn lookup_events(
        &self,
        region: &str,
        query: &TrailQuery,
        next_token: Option<&str>,
    ) -> Result<TrailPage, CallError> {
        let mut world = self.call("cloudtrail:LookupEvents")?;
        if next_token.is_none() {
            world.lookups.push(query.key.clone());
        }
        let mut hits: Vec<_> = world
            .trail
            .iter()
            .filter(|r| r.region == region && r.time >= query.start && r.time <= query.end)
            .filter(|r| match &query.key {
                TrailKey::ResourceName(v) => r.resources.contains(v),
                TrailKey::EventName(v) => &r.event_name == v,
            })
            .collect();
        // Newest first, as LookupEvents returns them.
        hits.sort_by_key(|r| std::cmp::Reverse(r.time));
        let from: usize = next_token.and_then(|t| t.parse().ok()).unwrap_or(0);
        let events = hits
            .iter()
            .skip(from)
            .take(TRAIL_PAGE)
            .map(|r| TrailEvent { event_id: None, cloud_trail_event: Some(r.json.clone()) })
            .collect();
        let next = from + TRAIL_PAGE;
        Ok(TrailPage { events, next_token: (next < hits.len()).then(|| next.to_string()) })
    }

    async fn simulate(&self, request: &SimulationRequest) -> Result<Vec<Simulation>, CallError> {
        let world = self.call("iam:SimulatePrincipalPolicy")?;
        let mut out = Vec::new();
        for action in &request.actions {
            for resource in &request.resources {
                let pair = (request.principal_arn.clone(), action.clone());
                let denied = world.denied.contains(&pair);
                let allowed =
                    world.allowed.contains(&pair) || policy_allows(&world, &request.principal_arn, action, resource);
                out.push(Simulation {
                    principal_arn: request.principal_arn.clone(),
                    action: action.clone(),
                    resource: resource.clone(),
                    decision: match (denied, allowed) {
                        (true, _) => Decision::ExplicitDeny,
                        (false, true) => Decision::Allowed,
                        (false, false) => Decision::ImplicitDeny,
                    },
                    matched_statements: Vec::new(),
                    allowed_by_boundary: None,
                    allowed_by_organizations: None,
                });
            }
        }
        Ok(out)
    }

    async fn permissions_boundary(&self, principal_arn: &str) -> Result<Option<String>, CallError> {
        let call = if principal_arn.contains(":user/") { "iam:GetUser" } else { "iam:GetRole" };
        Ok(self.call(call)?.boundaries.get(principal_arn).cloned())
    }

    async fn key_arn(&self, _region: &str, key_id: &str) -> Result<KeyArn, CallError> {
        let world = self.call("kms:DescribeKey")?;
        let found = world.keys.keys().find(|arn| arn.ends_with(&format!("/{key_id}")) || *arn == key_id);
        found.and_then(|a| KeyArn::parse(a).ok()).ok_or_else(|| not_found("kms:DescribeKey", key_id))
    }

    async fn launch_template_volumes(
        &self,
        _region: &str,
        _template: &crate::core::cloudtrail::LaunchTemplateRef,
    ) -> Result<VolumeKeys, CallError> {
        drop(self.call("ec2:DescribeLaunchTemplateVersions")?);
        Ok(VolumeKeys::default())
    }

    async fn image_volumes(&self, _region: &str, _image_id: &str) -> Result<VolumeKeys, CallError> {
        drop(self.call("ec2:DescribeImages")?);
        Ok(VolumeKeys::default())
    }

    async fn ebs_default_key(&self, _region: &str) -> Result<Option<String>, CallError> {
        drop(self.call("ec2:GetEbsEncryptionByDefault")?);
        Ok(None)
    }

    async fn account_id(&self) -> Result<String, CallError> {
        Ok(self.call("sts:GetCallerIdentity")?.account.clone())
    }
}

impl Effects for Memory {
    async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        body: &str,
        _attributes: &BTreeMap<String, String>,
    ) -> Result<String, CallError> {
        let mut world = self.call("sns:Publish")?;
        world.published.push((topic_arn.to_owned(), subject.to_owned(), body.to_owned()));
        Ok(format!("msg-{}", world.published.len()))
    }

    async fn existing_findings(
        &self,
        _region: &str,
        _product_arn: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, (String, String)>, CallError> {
        let world = self.call("securityhub:GetFindings")?;
        Ok(ids
            .iter()
            .filter_map(|id| world.findings.get(id).map(|a| (id.clone(), (a.created_at.clone(), a.updated_at.clone()))))
            .collect())
    }

    async fn open_findings(
        &self,
        _region: &str,
        _product_arn: &str,
        resource_ids: &[String],
    ) -> Result<Vec<Asff>, CallError> {
        let world = self.call("securityhub:GetFindings")?;
        Ok(world
            .findings
            .values()
            .filter(|a| {
                a.record_state == "ACTIVE" && a.generator_id.starts_with(crate::core::message::GENERATOR_PREFIX)
            })
            .filter(|a| a.resources.iter().any(|r| resource_ids.contains(&r.id)))
            .cloned()
            .collect())
    }

    async fn import_findings(&self, _region: &str, findings: &[Asff]) -> Result<Vec<(String, String)>, CallError> {
        let mut world = self.call("securityhub:BatchImportFindings")?;
        for f in findings {
            world.findings.insert(f.id.clone(), f.clone());
        }
        Ok(Vec::new())
    }

    async fn put_events(&self, _region: &str, entries: &[BusEvent]) -> Result<Vec<Result<String, String>>, CallError> {
        let mut world = self.call("events:PutEvents")?;
        let mut ids = Vec::new();
        for e in entries {
            world.bus.push(e.clone());
            ids.push(Ok(format!("event-{}", world.bus.len())));
        }
        Ok(ids)
    }
}

impl IamWrites for Memory {
    async fn principal_tags(&self, principal: &Principal) -> Result<Vec<(String, String)>, CallError> {
        let call = match principal {
            Principal::User(_) => "iam:ListUserTags",
            Principal::Role(_) => "iam:ListRoleTags",
        };
        Ok(self.call(call)?.principal_tags.get(name_of(principal)).cloned().unwrap_or_default())
    }

    async fn key_tags(&self, key: &KeyArn) -> Result<Vec<(String, String)>, CallError> {
        let world = self.call("kms:ListResourceTags")?;
        match world.keys.get(&key.to_string()).map(|k| k.tags.clone()) {
            Some(Some(tags)) => Ok(tags),
            Some(None) => Err(CallError {
                call: "kms:ListResourceTags",
                kind: FailureKind::Denied,
                message: "AccessDeniedException".to_owned(),
            }),
            None => Err(not_found("kms:ListResourceTags", &key.to_string())),
        }
    }

    async fn inline_policy_names(&self, principal: &Principal) -> Result<Vec<String>, CallError> {
        let world = self.call("iam:ListInlinePolicies")?;
        Ok(world.policies.get(name_of(principal)).map(|p| p.keys().cloned().collect()).unwrap_or_default())
    }

    async fn inline_policy(&self, principal: &Principal, name: &str) -> Result<Option<String>, CallError> {
        let world = self.call("iam:GetInlinePolicy")?;
        Ok(world.policies.get(name_of(principal)).and_then(|p| p.get(name)).cloned())
    }

    async fn put_inline_policy(&self, principal: &Principal, name: &str, document: &str) -> Result<(), CallError> {
        let mut world = self.call("iam:PutInlinePolicy")?;
        world.policies.entry(name_of(principal).to_owned()).or_default().insert(name.to_owned(), document.to_owned());
        Ok(())
    }

    async fn start_instance(&self, _region: &str, instance_id: &str) -> Result<String, CallError> {
        let mut world = self.call("ec2:StartInstances")?;
        world.started.push(instance_id.to_owned());
        Ok("pending".to_owned())
    }
}

impl Queue for Memory {
    async fn defer(&self, _queue_url: &str, receipt_handle: &str, seconds: i32) -> Result<(), CallError> {
        self.call("sqs:ChangeMessageVisibility")?.deferred.push((receipt_handle.to_owned(), seconds));
        Ok(())
    }

    async fn send(&self, _queue_url: &str, body: &str, delay_seconds: i32) -> Result<String, CallError> {
        let mut world = self.call("sqs:SendMessage")?;
        world.sent.push((body.to_owned(), delay_seconds));
        Ok(format!("sent-{}", world.sent.len()))
    }

    async fn queue_url(&self, queue_arn: &str) -> Result<String, CallError> {
        drop(self.call("sqs:GetQueueUrl")?);
        let name = queue_arn.rsplit(':').next().unwrap_or_default();
        Ok(format!("https://sqs.{}.amazonaws.com/{}/{name}", super::REGION, super::ACCOUNT))
    }
}
