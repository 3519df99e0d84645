//! Preflight: will this principal be able to start these instances, and will these Auto Scaling
//! groups be able to launch? The same facts a diagnosis gathers (volumes, keys and their
//! policies, the principal's simulation with the launch's context keys, boundaries, SCPs),
//! decided by the same rules, for a launch that has not happened yet: the failure is found the
//! night before, not at the morning's StartInstances.
//!
//! The report is `kms-launch-doctor.preflight/1`: one check per (instance, principal) or
//! (group, its service-linked role), each with a verdict, and the causes and fixes a finding
//! would carry.

mod groups;
mod render;

pub use groups::*;
pub use render::*;

use crate::app::gather::{self, Options, Supposed, SUPPOSED_EVENT_ID};
use crate::core::arn::{Arn, IamEntity};
use crate::core::cloudtrail::Caller;
use crate::core::facts::{EndState, Missing};
use crate::core::report::{Cause, CauseCode, Evidence, Finding, KeyReport, Remediation, Skipped};
use crate::ports::{CallError, Cloud, InstanceScope};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::{info_span, Instrument};

pub const PREFLIGHT_SCHEMA: &str = "kms-launch-doctor.preflight/1";

/// What a launch would come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A cause stands in the way: the launch would fail as the diagnosis describes.
    WillFail,
    /// Every key the launch needs is usable by the principal.
    Ok,
    /// Evidence could not be read, so neither can be said.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WillFail => "will-fail",
            Self::Ok => "ok",
            Self::Unknown => "unknown",
        }
    }
}

/// One supposed launch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_scaling_group: Option<String>,
    pub region: String,
    pub account: String,
    pub principal_arn: String,
    pub keys: Vec<KeyReport>,
    pub verdict: Verdict,
    pub causes: Vec<Cause>,
    pub remediations: Vec<Remediation>,
    pub missing_evidence: Vec<Missing>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreflightReport {
    pub schema: &'static str,
    pub checks: Vec<Check>,
    pub skipped: Vec<Skipped>,
}

impl Default for PreflightReport {
    fn default() -> Self {
        Self { schema: PREFLIGHT_SCHEMA, checks: Vec::new(), skipped: Vec::new() }
    }
}

/// The identity a principal ARN launches as, classified as CloudTrail's `userIdentity` would
/// be (a role acts through a session; a service-linked or Identity Center role is told apart
/// by its path), so the diagnosis rules apply unchanged.
pub fn caller_for(principal_arn: &str) -> Result<Caller, String> {
    let arn = Arn::parse(principal_arn).map_err(|e| format!("{principal_arn:?}: {e}"))?;
    let identity = match IamEntity::of(&arn) {
        IamEntity::User { .. } => json!({"type": "IAMUser", "arn": arn.to_string(), "accountId": arn.account()}),
        IamEntity::Role { name, .. } => json!({
            "type": "AssumedRole",
            "arn": format!("arn:{}:sts::{}:assumed-role/{name}/kms-launch-doctor-preflight", arn.partition(), arn.account()),
            "accountId": arn.account(),
            "sessionContext": {"sessionIssuer": {"type": "Role", "arn": arn.to_string(), "accountId": arn.account()}},
        }),
        IamEntity::Root => json!({"type": "Root", "arn": arn.to_string(), "accountId": arn.account()}),
        _ => return Err(format!("{principal_arn:?} is not an IAM user, role or account root ARN")),
    };
    Ok(crate::core::cloudtrail::caller_of(&identity))
}

/// The verdict a decided finding gives a supposed launch.
pub fn verdict(f: &Finding) -> Verdict {
    let blocking = f.causes.iter().any(|c| !matches!(c.code, CauseCode::NoKmsCauseFound | CauseCode::CallerUnknown));
    if blocking {
        Verdict::WillFail
    } else if !f.missing_evidence.is_empty() || f.causes.iter().any(|c| c.code == CauseCode::CallerUnknown) {
        Verdict::Unknown
    } else {
        Verdict::Ok
    }
}

/// A check from the finding of a supposed launch: the supposed launch record and the
/// instance's state reason are not evidence of anything, so they are left out.
pub fn check_of(f: Finding, principal_arn: &str, group: Option<String>) -> Check {
    let v = verdict(&f);
    let causes = if v == Verdict::Ok {
        Vec::new()
    } else {
        f.causes
            .into_iter()
            .filter(|c| c.code != CauseCode::NoKmsCauseFound)
            .map(|mut c| {
                c.evidence.retain(|e| match e {
                    Evidence::StateReason { .. } => false,
                    Evidence::CloudtrailEvent { event_id, .. } => event_id != SUPPOSED_EVENT_ID,
                    _ => true,
                });
                c
            })
            .collect()
    };
    Check {
        instance_id: group.is_none().then(|| f.instance_id.clone()),
        auto_scaling_group: group,
        region: f.region,
        account: f.account,
        principal_arn: principal_arn.to_owned(),
        keys: f.keys,
        verdict: v,
        causes,
        remediations: if v == Verdict::WillFail { f.remediations } else { Vec::new() },
        missing_evidence: f.missing_evidence,
    }
}

/// The findings of a region's supposed launches, each with its principal and group.
pub struct Supposition {
    pub finding: Finding,
    pub principal_arn: String,
    pub group: Option<Group>,
}

/// What to check in a region.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub instances: InstanceScope,
    /// Principals whose StartInstances is supposed; none: no instance is checked.
    pub principals: Vec<String>,
    pub auto_scaling_groups: bool,
}

/// A region's supposed launches, and what in it could not be checked.
pub type RegionChecks = (Vec<Supposition>, Vec<Skipped>);

/// Preflight of one region. `Err` only when nothing in it could be listed.
pub async fn region<C: Cloud>(
    cloud: &C,
    region: &str,
    scope: &Scope,
    now: DateTime<Utc>,
    opts: &Options,
) -> Result<RegionChecks, CallError> {
    let mut skipped = Vec::new();
    let mut launches: Vec<(Supposed, String, Option<Group>)> = Vec::new();
    let callers: Vec<(String, Caller)> = scope
        .principals
        .iter()
        .filter_map(|p| match caller_for(p) {
            Ok(c) => Some((p.clone(), c)),
            Err(reason) => {
                skipped.push(Skipped::region(region, reason));
                None
            }
        })
        .collect();
    let mut listed = false;
    let mut first_error = None;
    if !callers.is_empty() {
        match cloud
            .scoped_instances(region, &scope.instances)
            .instrument(info_span!("ec2.DescribeInstances", region, preflight = true))
            .await
        {
            Ok(instances) => {
                listed = true;
                for i in instances {
                    if i.state == Some(EndState::Terminated) || i.state_name == "shutting-down" {
                        skipped.push(
                            Skipped::instance(
                                i.id.clone(),
                                format!("instance is {}: it cannot be started", i.state_name),
                            )
                            .in_region(region.to_owned()),
                        );
                        continue;
                    }
                    for (arn, caller) in &callers {
                        launches.push((supposed(i.clone(), EndState::Stopped, caller.clone()), arn.clone(), None));
                    }
                }
            }
            Err(e) => first_error = Some(e),
        }
    }
    if scope.auto_scaling_groups {
        match cloud
            .auto_scaling_groups(region)
            .instrument(info_span!("autoscaling.DescribeAutoScalingGroups", region))
            .await
        {
            Ok(groups) => {
                listed = true;
                let account = account_of(cloud, &launches).await;
                for g in groups {
                    launches.push(group_launch(cloud, region, &account, g).await);
                }
            }
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if let (false, Some(e)) = (listed, first_error.clone()) {
        return Err(e);
    }
    if let Some(e) = first_error {
        skipped.push(Skipped::region(region.to_owned(), e.to_string()));
    }
    let meta: Vec<(String, Option<Group>)> = launches.iter().map(|(_, p, g)| (p.clone(), g.clone())).collect();
    let findings = crate::app::diagnose::conclude(
        gather::suppose(cloud, launches.into_iter().map(|(l, _, _)| l).collect(), now, opts).await,
    );
    Ok((
        findings
            .into_iter()
            .zip(meta)
            .map(|(finding, (principal_arn, group))| Supposition { finding, principal_arn, group })
            .collect(),
        skipped,
    ))
}

/// Exit status: `0` complete, `3` partial (anything skipped or unknown).
pub fn is_partial(report: &PreflightReport) -> bool {
    !report.skipped.is_empty() || report.checks.iter().any(|c| c.verdict == Verdict::Unknown)
}

/// A preflight run: the report, and the launches that will fail as findings (for the sinks).
#[derive(Default)]
pub struct Ran {
    pub report: PreflightReport,
    pub will_fail: Vec<Supposition>,
}

/// Preflight of every region (a few at once): the checks of each, remediated per the
/// guardrails (never restarted: nothing failed), and what could not be checked.
pub async fn run<C: Cloud + crate::ports::IamWrites>(
    cloud: &C,
    regions: &[String],
    scope: &Scope,
    guardrails: &crate::app::remediate::Guardrails,
    opts: &Options,
) -> Ran {
    use futures_util::stream::{self, StreamExt};
    let now = Utc::now();
    let guardrails = crate::app::remediate::Guardrails { restart: false, ..guardrails.clone() };
    let results: Vec<(String, Result<RegionChecks, CallError>)> =
        stream::iter(regions.iter().map(|r| async move { (r.clone(), region(cloud, r, scope, now, opts).await) }))
            .buffered(opts.concurrency.max(1))
            .collect()
            .await;
    let mut report = PreflightReport::default();
    let mut will_fail = Vec::new();
    for (r, result) in results {
        match result {
            Ok((suppositions, skipped)) => {
                report.skipped.extend(skipped);
                for mut s in suppositions {
                    let fails = verdict(&s.finding) == Verdict::WillFail;
                    if fails {
                        crate::app::remediate::remediate(cloud, cloud, &guardrails, &mut s.finding).await;
                    }
                    report.checks.push(check_of(
                        s.finding.clone(),
                        &s.principal_arn,
                        s.group.as_ref().map(|g| g.name.clone()),
                    ));
                    if fails {
                        will_fail.push(s);
                    }
                }
            }
            Err(e) => report.skipped.push(Skipped::region(r, e.to_string())),
        }
    }
    // Ids asked for by name and found in no region.
    for id in &scope.instances.ids {
        let checked = report.checks.iter().any(|c| c.instance_id.as_deref() == Some(id.as_str()));
        let skipped = report.skipped.iter().any(|s| s.instance_id.as_deref() == Some(id.as_str()));
        if !checked && !skipped && !scope.principals.is_empty() {
            report.skipped.push(Skipped::instance(id.clone(), format!("not found in {}", regions.join(", "))));
        }
    }
    Ran { report, will_fail }
}

/// What the sinks receive for a launch that will fail: the finding's own payloads, under an
/// `Id` of its own (a preflight warning never overwrites, nor is archived with, the finding of
/// a real failure), titled as a warning, typed as a configuration check, and for a group,
/// about the group.
pub fn outbox(s: &Supposition, sinks: &crate::core::outbox::Sinks, now: &str) -> crate::core::outbox::Outbox {
    use crate::core::message;
    let mut f = s.finding.clone();
    f.id = format!("{}-preflight", f.id);
    let target = match &s.group {
        Some(g) => format!("Auto Scaling group {}", g.name),
        None => f.instance_id.clone(),
    };
    let code = message::primary(&f);
    let headline = format!("Preflight: {target} will fail to launch ({}) as {}", code.as_str(), s.principal_arn);
    let mut o = crate::core::outbox::Outbox::render(&f, sinks, now);
    if let Some(sns) = &mut o.sns {
        sns.subject = message::ascii(&format!("Preflight: {target} will fail to launch ({})", code.as_str()), 99);
        sns.body =
            format!("{headline}.\nNothing has failed yet: this is the check made before the launch.\n\n{}", sns.body);
        sns.attributes.insert("kind".to_owned(), "preflight".to_owned());
    }
    let resource = s.group.as_ref().and_then(|g| g.arn.clone());
    if let Some(a) = &mut o.security_hub {
        a.generator_id = format!("kms-launch-doctor-preflight/{}", code.as_str());
        a.types = vec!["Software and Configuration Checks/Preflight/KMS Key Access".to_owned()];
        a.title = message::ascii(&headline, 256);
        if let (Some(arn), Some(first)) = (&resource, a.resources.first_mut()) {
            first.kind = "AwsAutoScalingAutoScalingGroup".to_owned();
            first.id.clone_from(arn);
        }
    }
    if let Some(e) = &mut o.eventbridge {
        e.detail_type = message::WILL_FAIL_DETAIL_TYPE.to_owned();
        if let Some(arn) = resource {
            e.resources = vec![arn];
        }
    }
    o
}
