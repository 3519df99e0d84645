//! The samples in docs/samples are what a user receives from each sink, rendered by the same
//! code from the Knowledge Center scenario. This test fails when they are stale; run it with
//! `KLD_BLESS=1` to rewrite them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use kms_launch_doctor::decide::decide;
use kms_launch_doctor::message;
use serde_json::json;

#[path = "fixtures/article.rs"]
mod fixture;

fn article() -> kms_launch_doctor::report::Finding {
    decide(&fixture::article())
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
    assert!(message::sns_subject(&f).len() < 100);
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

/// One finding per cause code and remediation action added for what AWS really shows (SCPs,
/// permissions boundaries, EC2's own identity, a service-linked role with another account's
/// key, a terminated launch's key sources), decided by the same code from the article's facts.
#[test]
fn cause_samples() {
    use kms_launch_doctor::facts::Decision;
    use kms_launch_doctor::report::KeySource;
    let base = fixture::article;
    let mut cases = Vec::new();

    let mut f = base();
    f.simulations[0].allowed_by_organizations = Some(false);
    f.simulations[0].decision = Decision::ExplicitDeny;
    cases.push(("scp-blocks", f));

    let mut f = base();
    f.simulations[0].allowed_by_boundary = Some(false);
    f.boundary_arn = Some("arn:aws:iam::123456789012:policy/DeveloperBoundary".into());
    cases.push(("permissions-boundary-blocks", f));

    let mut f = base();
    f.simulations[0].decision = Decision::Allowed;
    f.kms_denials = vec![kms_launch_doctor::cloudtrail::Record::parse(
        &json!({"eventVersion": "1.09", "eventID": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a", "eventName": "Decrypt",
            "eventTime": "2026-11-28T10:00:09Z", "eventSource": "kms.amazonaws.com",
            "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::123456789012:assumed-role/aws:ec2-infrastructure/{}", fixture::INSTANCE),
                "accountId": "123456789012",
                "inScopeOf": {"issuerType": "AWS::EC2::Instance", "credentialsIssuedTo": format!("arn:aws:ec2:eu-west-1:123456789012:instance/{}", fixture::INSTANCE)}},
            "errorCode": "AccessDenied",
            "errorMessage": format!("User: arn:aws:sts::123456789012:assumed-role/aws:ec2-infrastructure/{} is not authorized to perform: kms:Decrypt on resource: {} with an explicit deny in a resource-based policy", fixture::INSTANCE, fixture::KEY),
            "requestParameters": {"encryptionContext": {"aws:ebs:id": "vol-0a1b2c3d4e5f67890"}},
            "resources": [{"accountId": "123456789012", "type": "AWS::KMS::Key", "ARN": fixture::KEY}]})
        .to_string(),
    )
    .unwrap()];
    f.keys[0].policy = Some(
        json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "OnlyOurPrincipals", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"ArnNotEquals": {"aws:PrincipalArn": ["arn:aws:iam::123456789012:role/Ops"]}}}]})
        .to_string(),
    );
    cases.push(("ec2-infrastructure-denied", f));

    let foreign = "arn:aws:kms:eu-west-1:210987654321:key/0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
    let mut f = base();
    let slr = "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling";
    let mut launch: serde_json::Value = serde_json::from_str(&fixture::start_record_text()).unwrap();
    launch["userIdentity"] = json!({"type": "AssumedRole", "arn": "arn:aws:sts::123456789012:assumed-role/AWSServiceRoleForAutoScaling/AutoScaling",
        "accountId": "123456789012", "sessionContext": {"sessionIssuer": {"type": "Role", "arn": slr}}, "invokedBy": "autoscaling.amazonaws.com"});
    f.launch = Some(kms_launch_doctor::cloudtrail::Record::parse(&launch.to_string()).unwrap());
    f.volumes[0].kms_key_arn = Some(kms_launch_doctor::arn::KeyArn::parse(foreign).unwrap());
    f.keys = vec![fixture::key_facts(foreign, fixture::DEFAULT_POLICY)];
    f.keys[0].policy = None;
    f.key_sources = vec![(kms_launch_doctor::arn::KeyArn::parse(foreign).unwrap(), KeySource::Volume)];
    f.kms_denials.clear();
    f.simulations.clear();
    cases.push(("cross-account-key-service-linked-role", f));

    let mut f = base();
    f.state = kms_launch_doctor::facts::EndState::Terminated;
    f.instance.attachments.clear();
    f.volumes.clear();
    f.key_sources = vec![(kms_launch_doctor::arn::KeyArn::parse(fixture::KEY).unwrap(), KeySource::LaunchTemplate)];
    cases.push(("terminated-launch-key-from-launch-template", f));

    let mut out = serde_json::Map::new();
    for (name, facts) in cases {
        let finding = decide(&facts);
        out.insert(name.to_owned(), serde_json::to_value(&finding).unwrap());
    }
    check("findings-by-cause.json", &(serde_json::to_string_pretty(&serde_json::Value::Object(out)).unwrap() + "\n"));
}
