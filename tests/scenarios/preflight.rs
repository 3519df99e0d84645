//! `preflight` (issue 18): the checks a diagnosis makes, before the launch, for instances a
//! principal would start and for Auto Scaling groups' service-linked role.

use serde_json::{json, Value};

use super::{create_grant_allowed, ec2_full_access};
use crate::common::*;

fn preflight(s: &Scenario, args: &[&str]) -> (i32, Value, String) {
    let mut all: Vec<String> =
        ["preflight", "--region", &s.region, "--format", "json"].iter().map(|a| a.to_string()).collect();
    all.extend(args.iter().map(|a| a.to_string()));
    parse_output(run_tool(&all, &[]))
}

fn check<'a>(report: &'a Value, field: &str, value: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c[field] == value)
        .unwrap_or_else(|| panic!("no check for {value}: {report:#}"))
}

fn codes(check: &Value) -> Vec<&str> {
    check["causes"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn preflight_tells_which_instances_a_principal_could_not_start() {
    let s = Scenario::new("preflight").await;
    let blocked_key = s.key(None).await;
    let disabled_key = s.key(None).await;
    s.kms.disable_key().key_id(disabled_key.rsplit('/').next().unwrap()).send().await.unwrap();
    let foreign = s.emulator_key(json!({"account_id": "210987654321"}));
    let foreign_key = foreign["arn"].as_str().unwrap().to_owned();
    let granted_key = s.key(None).await;
    let user = s
        .user("preflight-ops", &[("ec2-full", ec2_full_access()), ("grants", create_grant_allowed(&granted_key))])
        .await;
    let plain = s.instance(&[None]).await;
    let blocked = s.instance(&[Some(&blocked_key)]).await;
    let disabled = s.instance(&[Some(&disabled_key)]).await;
    let abroad = s.instance(&[Some(&foreign_key)]).await;
    let fine = s.instance(&[Some(&granted_key)]).await;
    let all = [&plain, &blocked, &disabled, &abroad, &fine];
    s.ec2.stop_instances().set_instance_ids(Some(all.iter().map(|i| i.to_string()).collect())).send().await.unwrap();

    let mut args = vec!["--principal", user.as_str()];
    for i in all {
        args.extend(["--instance-id", i.as_str()]);
    }
    let (code, report, stderr) = preflight(&s, &args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["schema"], "kms-launch-doctor.preflight/1");
    assert_eq!(report["checks"].as_array().unwrap().len(), 5, "{report:#}");

    let c = check(&report, "instance_id", &plain);
    assert_eq!((c["verdict"].as_str(), c["keys"].as_array().unwrap().len()), (Some("ok"), 0), "{c:#}");
    assert_eq!(c["principal_arn"], user.as_str());
    assert_eq!((c["region"].as_str(), c["account"].as_str()), (Some(s.region.as_str()), Some(ACCOUNT)));

    let c = check(&report, "instance_id", &blocked);
    assert_eq!(c["verdict"], "will-fail", "{c:#}");
    assert_eq!(codes(c), ["caller-lacks-create-grant"], "{c:#}");
    assert_eq!(c["remediations"][0]["action"], "put-user-policy");
    assert_eq!(c["remediations"][0]["target"], user.as_str());
    assert_eq!(c["keys"][0]["arn"], blocked_key.as_str());
    // No supposed launch passes for evidence.
    let evidence = c["causes"][0]["evidence"].as_array().unwrap();
    assert!(evidence.iter().all(|e| e["kind"] != "cloudtrail-event" && e["kind"] != "state-reason"), "{evidence:#?}");
    assert!(evidence.iter().any(|e| e["kind"] == "simulation"), "{evidence:#?}");

    let c = check(&report, "instance_id", &disabled);
    assert_eq!((c["verdict"].as_str(), codes(c)), (Some("will-fail"), vec!["key-disabled"]), "{c:#}");
    let c = check(&report, "instance_id", &abroad);
    assert_eq!((c["verdict"].as_str(), codes(c)), (Some("will-fail"), vec!["cross-account-key"]), "{c:#}");
    let c = check(&report, "instance_id", &fine);
    assert_eq!(c["verdict"], "ok", "{c:#}");
    assert!(c["causes"].as_array().unwrap().is_empty() && c["remediations"].as_array().unwrap().is_empty());

    // An instance that is not there: skipped, and the run is partial (exit 3).
    let (code, report, _) =
        preflight(&s, &["--principal", &user, "--instance-id", &blocked, "--instance-id", "i-0123456789abcdef0"]);
    assert_eq!(code, 3, "{report:#}");
    assert!(
        report["skipped"].as_array().unwrap().iter().any(|x| x["instance_id"] == "i-0123456789abcdef0"),
        "{report:#}"
    );
}

#[tokio::test]
async fn preflight_without_anything_to_check_is_a_usage_error() {
    let s = Scenario::new("preflightusage").await;
    let (code, _, stderr) = preflight(&s, &[]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = preflight(&s, &["--principal", "arn:aws:s3:::bucket"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not an IAM user, role"), "{stderr}");
}

#[tokio::test]
async fn preflight_checks_an_auto_scaling_groups_keys_for_its_service_linked_role() {
    let s = Scenario::new("preflightasg").await;
    let slr =
        format!("arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling");
    // The default key policy names nobody but the account: the service-linked role's own
    // policy cannot be edited, so it cannot use the key (EC2 Auto Scaling User Guide,
    // "Required AWS KMS key policy for use with encrypted volumes").
    let closed = s.key(None).await;
    let open_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "Allow service-linked role use of the customer managed key", "Effect": "Allow", "Principal": {"AWS": slr},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"], "Resource": "*"},
        {"Sid": "Allow attachment of persistent resources", "Effect": "Allow", "Principal": {"AWS": slr},
         "Action": "kms:CreateGrant", "Resource": "*", "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}}]});
    let open = s.key(Some(&open_policy.to_string())).await;
    let mut groups = Vec::new();
    for (label, key) in [("closed", &closed), ("open", &open)] {
        use aws_sdk_ec2::types::{
            LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest, RequestLaunchTemplateData,
        };
        let name = format!("kld-{}-{label}-{}", s.name, uuid());
        let lt = s
            .ec2
            .create_launch_template()
            .launch_template_name(&name)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id("ami-12c6146b")
                    .block_device_mappings(
                        LaunchTemplateBlockDeviceMappingRequest::builder()
                            .device_name("/dev/xvda")
                            .ebs(
                                LaunchTemplateEbsBlockDeviceRequest::builder()
                                    .volume_size(8)
                                    .encrypted(true)
                                    .kms_key_id(key)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let lt_id = lt.launch_template().unwrap().launch_template_id().unwrap().to_owned();
        s.autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&name)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(lt_id)
                    .version("$Default")
                    .build(),
            )
            .min_size(0)
            .max_size(0)
            .desired_capacity(0)
            .availability_zones(format!("{}a", s.region))
            .send()
            .await
            .unwrap();
        groups.push(name);
    }
    let (code, report, stderr) = preflight(&s, &["--auto-scaling-groups"]);
    assert!(code == 0 || code == 3, "{stderr}");
    let c = check(&report, "auto_scaling_group", &groups[0]);
    assert_eq!(c["verdict"], "will-fail", "{c:#}");
    assert_eq!(codes(c), ["service-linked-role-needs-key-access"], "{c:#}");
    assert_eq!(c["principal_arn"], slr.as_str());
    assert_eq!(c["keys"][0]["arn"], closed.as_str());
    assert!(c.get("instance_id").is_none(), "{c:#}");
    assert_eq!(c["remediations"][0]["action"], "add-key-policy-statement");
    let c = check(&report, "auto_scaling_group", &groups[1]);
    assert_eq!(c["verdict"], "ok", "{c:#}");
    assert_eq!(c["keys"][0]["arn"], open.as_str());
}

#[tokio::test]
async fn the_scheduled_preflight_warns_the_sinks_of_a_launch_that_will_fail() {
    let s = Scenario::new("preflightsched").await;
    let key = s.key(None).await;
    let user = s.user("preflightsched-ops", &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.ec2.stop_instances().instance_ids(&instance).send().await.unwrap();
    let (bus, inbox) = s.bus_with_queue("kld-preflightsched-bus").await;
    // The scheduled rule's event (EventBridge User Guide, "Schedule expressions" sample event).
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/scheduled-preflight.json")).unwrap())
            .unwrap();
    event["region"] = json!(s.region);
    let (outcomes, stdout) = super::lambda::invoke(
        &s.region,
        vec![event],
        &[
            ("PREFLIGHT_PRINCIPALS", user.as_str()),
            ("FINDINGS_EVENT_BUS", bus.as_str()),
            ("SECURITY_HUB", "on"),
            // Remediation on and every principal and key opted in: a schedule still writes
            // nothing (nobody launched anything; only an operator's command may ask).
            ("REMEDIATION_MODE", "apply"),
            ("REMEDIATION_ALLOWED_PRINCIPALS", "*"),
            ("REMEDIATION_ALLOWED_KEYS", "*"),
        ],
    );
    assert_eq!(outcomes[0].kind, "response", "{stdout}");
    let written = s.iam.list_user_policies().user_name("preflightsched-ops").send().await.unwrap();
    assert_eq!(written.policy_names(), ["ec2-full"], "the schedule wrote a policy");
    let report = &outcomes[0].body;
    assert_eq!(report["schema"], "kms-launch-doctor.preflight/1");
    let c = check(report, "instance_id", &instance);
    assert_eq!(c["verdict"], "will-fail", "{c:#}");
    assert_eq!(c["principal_arn"], user.as_str());

    let events: Vec<Value> =
        s.drain(&inbox).await.iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect();
    let mine: Vec<&Value> = events.iter().filter(|e| e["detail"]["instance_id"] == instance.as_str()).collect();
    assert_eq!(mine.len(), 1, "{events:#?}");
    assert_eq!(mine[0]["detail-type"], "EC2 Launch Will Fail");
    let id = mine[0]["detail"]["id"].as_str().unwrap();
    assert!(id.ends_with("-preflight"), "its own Id, apart from a real failure's: {id}");
    let all = s.securityhub.get_findings().send().await.unwrap();
    let hub = all.findings().iter().find(|f| f.id() == Some(id)).expect("in Security Hub");
    assert!(hub.generator_id().unwrap().starts_with("kms-launch-doctor-preflight/"));
    assert!(hub.types()[0].starts_with("Software and Configuration Checks/"), "{:?}", hub.types());
}
