//! Tests of the module above.

use super::*;
use crate::core::cloudtrail::PrincipalKind;
use crate::core::report::RemediationAction;

fn key() -> KeyArn {
    KeyArn::parse("arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a").unwrap()
}

#[test]
fn create_grant_policy_is_the_articles_policy_limited_to_ec2() {
    let expected: Value = serde_json::from_str(
        r#"{"Version": "2012-10-17",
      "Statement": [{"Effect": "Allow", "Action": ["kms:CreateGrant"],
        "Resource": ["arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a"],
        "Condition": {"Bool": {"kms:GrantIsForAWSResource": true},
                      "StringEquals": {"kms:ViaService": "ec2.eu-west-1.amazonaws.com"}}}]}"#,
    )
    .unwrap();
    assert_eq!(identity_policy(&key(), &["kms:CreateGrant".into()]), expected);
}

#[test]
fn data_key_actions_get_a_via_service_statement() {
    let p = identity_policy(&key(), &["kms:CreateGrant".into(), "kms:Decrypt".into()]);
    let st = p["Statement"].as_array().unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st[1]["Action"], json!(["kms:Decrypt"]));
    assert_eq!(st[1]["Condition"]["StringEquals"]["kms:ViaService"], "ec2.eu-west-1.amazonaws.com");
}

#[test]
fn put_user_policy_command_is_exact() {
    let r = put_identity_policy(
        "arn:aws:iam::123456789012:user/test",
        PrincipalKind::User,
        &key(),
        &["kms:CreateGrant".into()],
    )
    .unwrap();
    assert_eq!(r.action, RemediationAction::PutUserPolicy);
    assert_eq!(r.policy_name.as_deref(), Some("kms-launch-doctor-8e3426b8-87b4-434c-ae74-8e63dadf354a"));
    assert!(r.commands[0].starts_with("aws iam put-user-policy --user-name test --policy-name kms-launch-doctor-8e3426b8-87b4-434c-ae74-8e63dadf354a --policy-document '{"));
}

#[test]
fn quoting_neutralises_shell_syntax() {
    assert_eq!(shell_quote("plain-name_1"), "plain-name_1");
    assert_eq!(shell_quote("it's"), r#""it's""#);
    // The shell reads the word `a\0b c`: a NUL cannot reach it, nor is it dropped.
    assert_eq!(shell_quote("a\0b c"), r#""a\\0b c""#);
    assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    assert_eq!(shell_quote("a;b c"), "'a;b c'");
    assert_eq!(shell_quote(""), "''");
}

#[test]
fn permission_set_commands_merge_into_the_current_inline_policy_before_putting_it() {
    let r = update_permission_set(
        "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Ops_0123456789abcdef",
        "123456789012",
        &key(),
        &["kms:CreateGrant".into()],
    )
    .unwrap();
    let at = |needle: &str| {
        r.commands.iter().position(|c| c.contains(needle)).unwrap_or_else(|| panic!("{needle}: {:#?}", r.commands))
    };
    let (get, merge, put, provision) = (
        at("get-inline-policy-for-permission-set"),
        at("jq --argjson add"),
        at("put-inline-policy-to-permission-set"),
        at("provision-permission-set"),
    );
    assert!(get < merge && merge < put && put < provision, "{:#?}", r.commands);
    assert!(r.commands[put].contains("file://permission-set-policy.merged.json"), "{}", r.commands[put]);
    assert!(r.commands[put].starts_with("[ -s "), "an empty merge must not replace the policy: {}", r.commands[put]);
}

#[test]
fn permission_set_name_comes_from_the_role_name() {
    assert_eq!(permission_set_name("AWSReservedSSO_AdministratorAccess_0123456789abcdef"), Some("AdministratorAccess"));
    assert_eq!(permission_set_name("AWSReservedSSO_Data_Eng_0123456789abcdef"), Some("Data_Eng"));
    assert_eq!(permission_set_name("Admin"), None);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const ACTIONS: [&str; 3] = ["kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt"];

    fn key_arn() -> impl Strategy<Value = KeyArn> {
        (
            prop_oneof!["aws", "aws-cn", "aws-us-gov"],
            "[a-z]{2}-[a-z]{4,9}-[1-9]",
            "[0-9]{12}",
            "[a-f0-9-]{1,64}|mrk-[a-f0-9]{32}",
        )
            .prop_filter_map("a valid key ARN", |(p, r, a, id)| {
                KeyArn::parse(&format!("arn:{p}:kms:{r}:{a}:key/{id}")).ok()
            })
    }

    proptest! {
        /// For any key ARN and any non-empty subset of the launch actions, the identity policy
        /// allows those actions, on that key only, each under its condition, and nothing else.
        #[test]
        fn identity_policy_allows_only_the_listed_actions_on_that_key(key in key_arn(), mask in 1u8..8) {
            let actions: Vec<String> = ACTIONS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, a)| (*a).to_owned()).collect();
            let doc = identity_policy(&key, &actions);
            prop_assert_eq!(&doc["Version"], "2012-10-17");
            let statements = doc["Statement"].as_array().unwrap();
            let mut granted = Vec::new();
            for st in statements {
                prop_assert_eq!(&st["Effect"], "Allow");
                prop_assert_eq!(&st["Resource"], &json!([key.to_string()]));
                prop_assert!(st.get("NotAction").is_none() && st.get("NotResource").is_none());
                let acts: Vec<String> = st["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
                for a in &acts {
                    prop_assert!(!a.contains('*'));
                    if a == "kms:CreateGrant" {
                        prop_assert_eq!(&st["Condition"], &json!({"Bool": {"kms:GrantIsForAWSResource": true}, "StringEquals": {"kms:ViaService": format!("ec2.{}.amazonaws.com", key.region())}}));
                    } else {
                        prop_assert_eq!(&st["Condition"], &json!({"StringEquals": {"kms:ViaService": format!("ec2.{}.amazonaws.com", key.region())}}));
                    }
                }
                granted.extend(acts);
            }
            granted.sort();
            let mut wanted = actions.clone();
            wanted.sort();
            prop_assert_eq!(granted, wanted);
        }
    }
}
