//! The samples in docs/samples are what a user receives from each sink, rendered by the same
//! code from the Knowledge Center scenario. This test fails when they are stale; run it with
//! `KLD_BLESS=1` to rewrite them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use kms_launch_doctor::decide::decide;
use kms_launch_doctor::deliver::message;
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
