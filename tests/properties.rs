//! Property tests: the parsers that read outside input never panic, whatever the input, and
//! every command placed in a report is safe to paste.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use kms_launch_doctor::cloudtrail::{caller_of, Record};
use kms_launch_doctor::event;
use kms_launch_doctor::policy::{KeyPolicy, Request};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON, biased towards the field names the parsers look for.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("source".to_owned()),
        Just("detail-type".to_owned()),
        Just("detail".to_owned()),
        Just("instance-id".to_owned()),
        Just("state".to_owned()),
        Just("time".to_owned()),
        Just("region".to_owned()),
        Just("Statement".to_owned()),
        Just("Effect".to_owned()),
        Just("Principal".to_owned()),
        Just("NotPrincipal".to_owned()),
        Just("AWS".to_owned()),
        Just("Action".to_owned()),
        Just("NotAction".to_owned()),
        Just("Resource".to_owned()),
        Just("Condition".to_owned()),
        Just("userIdentity".to_owned()),
        Just("type".to_owned()),
        Just("arn".to_owned()),
        Just("sessionContext".to_owned()),
        Just("sessionIssuer".to_owned()),
        Just("eventID".to_owned()),
        Just("eventName".to_owned()),
        Just("eventTime".to_owned()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        prop_oneof![
            Just("aws.ec2".to_owned()),
            Just("EC2 Instance State-change Notification".to_owned()),
            Just("stopped".to_owned()),
            Just("i-0abcd1234ef567890".to_owned()),
            Just("*".to_owned()),
            Just("Allow".to_owned()),
            Just("Deny".to_owned()),
            Just("kms:*".to_owned()),
            Just("AssumedRole".to_owned()),
            Just("arn:aws:iam::123456789012:root".to_owned()),
            Just("arn:aws:sts::123456789012:assumed-role/r/s".to_owned()),
            Just("2026-11-28T10:00:00Z".to_owned()),
            ".{0,40}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request(action: &str) -> Request<'_> {
    Request {
        principal_arn: "arn:aws:iam::123456789012:user/test",
        caller_arn: Some("arn:aws:iam::123456789012:user/test"),
        principal_account: "123456789012",
        key_arn: "arn:aws:kms:eu-west-1:123456789012:key/k",
        region: "eu-west-1",
        action,
        principal_type: Some("User"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn event_parser_never_panics(v in json_value()) {
        let _ = event::parse(&v);
        let _ = event::parse(&json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": v}));
    }

    #[test]
    fn event_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = event::parse_bytes(&bytes);
    }

    #[test]
    fn cloudtrail_parser_never_panics(v in json_value(), text in ".{0,200}") {
        let _ = Record::parse(&v.to_string());
        let _ = Record::parse(&text);
        let _ = caller_of(&v);
        let _ = caller_of(&json!({"type": "AssumedRole", "arn": text, "sessionContext": {"sessionIssuer": {"arn": v}}}));
    }

    #[test]
    fn key_policy_analyser_never_panics(v in json_value(), statement in json_value(), text in ".{0,200}") {
        for doc in [v.to_string(), json!({"Statement": [statement.clone()]}).to_string(), json!({"Statement": statement}).to_string(), text] {
            if let Ok(p) = KeyPolicy::parse(&doc) {
                let _ = p.evaluate(&request("kms:CreateGrant"));
                let _ = p.evaluate(&request("kms:Decrypt"));
            }
        }
    }

    #[test]
    fn key_policy_with_legal_shapes_always_parses(
        effect in prop_oneof![Just("Allow"), Just("Deny")],
        principal in prop_oneof![
            Just(json!("*")),
            Just(json!({"AWS": "*"})),
            Just(json!({"AWS": "arn:aws:iam::123456789012:root"})),
            Just(json!({"AWS": ["123456789012", "arn:aws:iam::123456789012:user/test"]})),
            Just(json!({"Service": "ec2.amazonaws.com"})),
        ],
        not_principal in any::<bool>(),
        action in prop_oneof![Just(json!("kms:*")), Just(json!(["kms:Create*", "kms:Decrypt"])), Just(json!("*"))],
        not_action in any::<bool>(),
        condition in prop_oneof![
            Just(json!(null)),
            Just(json!({"Bool": {"kms:GrantIsForAWSResource": true}})),
            Just(json!({"StringEquals": {"kms:ViaService": ["ec2.eu-west-1.amazonaws.com"], "kms:CallerAccount": "123456789012"}})),
            Just(json!({"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-x/*"}})),
            Just(json!({"NumericLessThan": {"aws:MultiFactorAuthAge": 3600}})),
            Just(json!({"Null": {"kms:GrantIsForAWSResource": "false"}})),
        ],
    ) {
        let mut st = json!({"Effect": effect, "Resource": "*"});
        st[if not_principal { "NotPrincipal" } else { "Principal" }] = principal;
        st[if not_action { "NotAction" } else { "Action" }] = action;
        if !condition.is_null() {
            st["Condition"] = condition;
        }
        let p = KeyPolicy::parse(&json!({"Version": "2012-10-17", "Statement": [st]}).to_string());
        prop_assert!(p.is_ok(), "{p:?}");
        let _ = p.unwrap().evaluate(&request("kms:CreateGrant"));
    }

    /// Whatever a hostile CloudTrail record puts in a principal's name, the suggested command,
    /// read by a POSIX shell, is exactly the intended words.
    #[test]
    fn quoted_words_survive_a_shell(word in "[^\\x00]{0,30}") {
        let quoted = kms_launch_doctor::fixes::shell_quote(&word);
        let out = std::process::Command::new("sh").arg("-c").arg(format!("printf '%s' {quoted}")).output().unwrap();
        prop_assert_eq!(String::from_utf8_lossy(&out.stdout), word);
    }
}

#[test]
fn commands_for_hostile_names_run_nothing_else() {
    use kms_launch_doctor::arn::KeyArn;
    use kms_launch_doctor::cloudtrail::PrincipalKind;
    let key = KeyArn::parse("arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a").unwrap();
    // IAM names cannot contain these, but CloudTrail records are outside input.
    let marker = std::env::temp_dir().join(format!("kld-pwned-{}", std::process::id()));
    let marker_name = marker.file_name().unwrap().to_string_lossy().into_owned();
    let substitution = format!("$(touch {marker_name})");
    let backticks = format!("`touch {marker_name}`");
    for name in ["it's", substitution.as_str(), backticks.as_str(), "a;b", "two words", "x\ny", "$HOME"] {
        let arn = format!("arn:aws:iam::123456789012:user/{name}");
        let r =
            kms_launch_doctor::fixes::put_identity_policy(&arn, PrincipalKind::User, &key, &["kms:CreateGrant".into()])
                .unwrap();
        let command = &r.commands[0];
        // Replace the program with one that echoes its arguments, one per line.
        let echoed = command.replacen("aws iam put-user-policy", "printf '%s\\n'", 1);
        let out =
            std::process::Command::new("sh").arg("-c").arg(&echoed).current_dir(std::env::temp_dir()).output().unwrap();
        let words: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        assert_eq!(words.first().map(String::as_str), Some("--user-name"), "{command}");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.starts_with(&format!("--user-name\n{name}\n--policy-name\n")), "{command} -> {printed}");
        assert!(!marker.exists(), "{command} ran a command substitution");
        let doc_idx = words.iter().position(|w| w == "--policy-document").unwrap();
        let doc: Value = serde_json::from_str(&words[doc_idx + 1..].join("\n")).unwrap();
        assert_eq!(&doc, r.policy_document.as_ref().unwrap());
    }
}
