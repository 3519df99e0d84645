//! Organization scale (issue 17): `scan --accounts` and `scan --org` enter each account through
//! sts:AssumeRole and find each failure in its own account with its own caller and key; an
//! account that cannot be entered is skipped; the hub function diagnoses a member account's
//! event through that account's spoke role, and a storm across 20 accounts keeps within each
//! account-region's CloudTrail budget.

use chrono::Duration;
use serde_json::{json, Value};

use super::ec2_full_access;
use super::lambda::{batch_of, finding_lines, invoke};
use crate::common::*;

/// A role in `account` that the default credentials' account (123456789012) may assume.
fn role_in(account: &str, name: &str) {
    http("POST", "/_kld/iam/role", Some(&json!({"account_id": account, "name": name})));
}

/// A role in `account` that principals of `trusted` may assume (its root as principal).
fn role_trusting(account: &str, name: &str, trusted: &str) {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{trusted}:root")}, "Action": "sts:AssumeRole"}]});
    http("POST", "/_kld/iam/role", Some(&json!({"account_id": account, "name": name, "trust_policy": trust})));
}

fn user_identity(account: &str, arn: &str, name: &str) -> Value {
    json!({"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": arn, "accountId": account, "userName": name})
}

/// A failed launch in the scenario's account: a user who may not create grants started an
/// instance on a key of that account. Returns (instance, user ARN, key ARN).
async fn failure_in(s: &Scenario, user: &str) -> (String, String, String) {
    let key = s.key(None).await;
    let user_arn = s.user(user, &[("ec2-full", ec2_full_access())]).await;
    let instance = s.instance(&[Some(&key)]).await;
    s.fail_launch(&instance, "stopped");
    s.trail(vec![s.launch_record(
        "StartInstances",
        &instance,
        user_identity(&s.account, &user_arn, user),
        Duration::minutes(3),
    )]);
    (instance, user_arn, key)
}

fn scan(region: &str, extra: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let mut args: Vec<String> = ["scan", "--region", region, "--format", "json", "--quiet", "--since", "1h"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    parse_output(run_tool(&args, env))
}

fn findings_of<'a>(report: &'a Value, account: &str) -> Vec<&'a Value> {
    report["findings"].as_array().unwrap().iter().filter(|f| f["account"] == account).collect()
}

#[tokio::test]
async fn scan_accounts_finds_each_failure_in_its_own_account_and_skips_one_it_cannot_enter() {
    let (a, b, closed) = ("530000000001", "530000000002", "530000000003");
    let sa = Scenario::in_account("orga", a).await;
    let (ia, ua, ka) = failure_in(&sa, "orga-ops").await;
    let region = sa.region.clone();
    // b's failure in a's region too, so one --region covers both.
    let sb = Scenario::in_account_at("orgb", b, &region).await;
    let (ib, ub, kb) = failure_in(&sb, "orgb-ops").await;
    for acct in [a, b] {
        role_in(acct, "kms-launch-doctor-scan");
    }
    let accounts = format!("{a},{b},{closed}");
    let (code, report, stderr) = scan(&region, &["--accounts", &accounts], &[]);
    assert_eq!(code, 3, "partial: one account could not be entered. {stderr}");
    let fa = findings_of(&report, a);
    assert!(fa.iter().any(|f| f["instance_id"] == ia.as_str()), "{report:#}");
    let f = fa.iter().find(|f| f["instance_id"] == ia.as_str()).unwrap();
    assert_eq!(f["launch"]["caller"]["principal_arn"], ua.as_str());
    assert_eq!(f["keys"][0]["arn"], ka.as_str());
    assert_eq!(f["causes"][0]["code"], "caller-lacks-create-grant", "{f:#}");
    let fb = findings_of(&report, b);
    let f = fb.iter().find(|f| f["instance_id"] == ib.as_str()).expect("b's failure");
    assert_eq!(f["launch"]["caller"]["principal_arn"], ub.as_str());
    assert_eq!(f["keys"][0]["arn"], kb.as_str());
    assert!(findings_of(&report, "123456789012").is_empty(), "only the accounts asked for");
    let skipped = report["skipped"].as_array().unwrap();
    assert!(
        skipped.iter().any(|x| x["account"] == closed && x["reason"].as_str().unwrap().contains("AssumeRole")),
        "{skipped:#?}"
    );
    let summary = &report["summary"];
    assert_eq!(summary["accounts"], json!([a, b]), "{summary:#}");
}

#[tokio::test]
async fn scan_org_lists_the_organizations_active_accounts() {
    let (management, m1, m2) = ("520000000001", "520000000002", "520000000003");
    let region = Scenario::new("orgregion").await.region;
    let org = |account: &str, action: &str, body: Value| {
        aws_json(account, &region, "organizations", &format!("AWSOrganizationsV20161128.{action}"), &body)
    };
    org(management, "CreateOrganization", json!({"FeatureSet": "ALL"}));
    for m in [m1, m2] {
        let invite = org(management, "InviteAccountToOrganization", json!({"Target": {"Id": m, "Type": "ACCOUNT"}}));
        let handshake = invite["Handshake"]["Id"].as_str().unwrap().to_owned();
        org(m, "AcceptHandshake", json!({"HandshakeId": handshake}));
    }
    let s1 = Scenario::in_account_at("orgm1", m1, &region).await;
    let (i1, u1, _) = failure_in(&s1, "orgm1-ops").await;
    // The management account and m1 have the scan role, trusting the management account; m2
    // does not.
    for acct in [management, m1] {
        role_trusting(acct, "kms-launch-doctor-scan", management);
    }
    let mgmt = Scenario::in_account_at("orgmgmt", management, &region).await;
    let (id, secret, token) = mgmt.credentials.clone().unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_SESSION_TOKEN", token.as_str()),
    ];
    let (code, report, stderr) = scan(&region, &["--org"], &env);
    assert_eq!(code, 3, "{stderr}");
    let f = findings_of(&report, m1).into_iter().find(|f| f["instance_id"] == i1.as_str()).unwrap_or_else(|| {
        panic!("m1's failure: {:#}", json!({"skipped": report["skipped"], "summary": report["summary"]}))
    });
    assert_eq!(f["launch"]["caller"]["principal_arn"], u1.as_str());
    let skipped = report["skipped"].as_array().unwrap();
    assert!(skipped.iter().any(|x| x["account"] == m2), "{skipped:#?}");
    assert!(!skipped.iter().any(|x| x["account"] == m1 || x["account"] == management), "{skipped:#?}");

    // Text groups by account; the table gains an ACCOUNT column.
    let mut args: Vec<String> =
        ["scan", "--region", &region, "--org", "--quiet", "--format", "table"].iter().map(|a| a.to_string()).collect();
    let out = run_tool(&args, &env);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap_or_default().starts_with("ACCOUNT"), "{table}");
    let last = args.len() - 1;
    args[last] = "text".into();
    let out = run_tool(&args, &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("== Account {m1} ==")), "{text}");
}

fn member_event(instance: &str, account: &str, region: &str) -> Value {
    let mut e = super::lambda::event_for(instance, region, "stopped");
    e["account"] = json!(account);
    e["resources"] = json!([format!("arn:aws:ec2:{region}:{account}:instance/{instance}")]);
    e
}

#[tokio::test]
async fn the_hub_diagnoses_a_member_accounts_event_through_its_spoke_role() {
    let (member, no_spoke) = ("540000000001", "540000000002");
    let s = Scenario::in_account("hub", member).await;
    let (instance, user, key) = failure_in(&s, "hub-ops").await;
    role_in(member, "kms-launch-doctor-spoke");
    let lost = "i-0123456789abcdef1";
    let batch =
        batch_of(&[member_event(&instance, member, &s.region), member_event(lost, no_spoke, &s.region)], &s.region);
    // A user of the same name in the hub's own account, opted in: someone else entirely.
    let hub = Scenario::in_account_at("hubview", ACCOUNT, &s.region).await;
    hub.user("hub-ops", &[("ec2-full", ec2_full_access())]).await;
    // The function runs with the hub's credentials (123456789012), remediation on and every
    // principal and key opted in, but the member has no remediation role.
    let (outcomes, stdout) = invoke(
        &s.region,
        vec![batch],
        &[
            ("SPOKE_ROLE_NAME", "kms-launch-doctor-spoke"),
            ("SECURITY_HUB", "on"),
            ("REMEDIATION_MODE", "apply"),
            ("REMEDIATION_ALLOWED_PRINCIPALS", "*"),
            ("REMEDIATION_ALLOWED_KEYS", "*"),
        ],
    );
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    let f = &lines[0]["finding"];
    assert_eq!(f["account"], member);
    // Nothing written anywhere: the fix is refused (no remediation role in the member), and the
    // hub's same-named user is untouched.
    assert_eq!(f["remediations"][0]["status"], "refused", "{f:#}");
    for cloud in [&s, &hub] {
        let written = cloud.iam.list_user_policies().user_name("hub-ops").send().await.unwrap();
        assert_eq!(written.policy_names(), ["ec2-full"], "a policy was written in {}", cloud.account);
    }
    // Security Hub takes findings for the caller's own account only: the record is the hub's,
    // about the member's instance.
    assert_eq!(f["delivered"]["security_hub"], "ok", "{f:#}");
    let all = hub.securityhub.get_findings().send().await.unwrap();
    let record = all.findings().iter().find(|x| x.id() == f["id"].as_str()).expect("in the hub's Security Hub");
    assert_eq!(record.aws_account_id(), Some(ACCOUNT));
    let instance_arn = format!("arn:aws:ec2:{}:{member}:instance/{instance}", s.region);
    assert!(record.resources().iter().any(|r| r.id() == Some(instance_arn.as_str())), "{record:?}");
    assert_eq!(f["launch"]["caller"]["principal_arn"], user.as_str());
    assert_eq!(f["keys"][0]["arn"], key.as_str());
    assert_eq!(f["causes"][0]["code"], "caller-lacks-create-grant", "{f:#}");
    // An account without the spoke role: STS refuses, which no retry can change until the
    // spoke stack is there; the event is done with a warning, never diagnosed with the hub's
    // own credentials.
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let warned = super::lambda::lines_with(
        &stdout,
        "cannot enter the account: its events are skipped (deploy the spoke stack there)",
    );
    assert_eq!(warned.len(), 1, "{stdout}");
    assert_eq!(warned[0]["account"], no_spoke);
}

#[tokio::test]
async fn a_storm_across_20_accounts_stays_within_each_account_regions_cloudtrail_budget() {
    let mut events = Vec::new();
    let mut expected = 0;
    let mut region = String::new();
    for n in 0..20 {
        let account = format!("5500000000{n:02}");
        let s = if region.is_empty() {
            let s = Scenario::in_account(&format!("storm{n}"), &account).await;
            region = s.region.clone();
            s
        } else {
            Scenario::in_account_at(&format!("storm{n}"), &account, &region).await
        };
        role_in(&account, "kms-launch-doctor-spoke");
        for k in 0..4 {
            let (instance, _, _) = failure_in(&s, &format!("storm{n}-ops{k}")).await;
            events.push(member_event(&instance, &account, &region));
            expected += 1;
        }
    }
    let batch = batch_of(&events, &region);
    let started = std::time::Instant::now();
    let (outcomes, stdout) = invoke(
        &region,
        vec![batch],
        &[
            ("SPOKE_ROLE_NAME", "kms-launch-doctor-spoke"),
            ("CLOUDTRAIL_CALLS_PER_SECOND", "0.9"),
            ("KLD_CALL_STATS", "1"),
        ],
    );
    assert_eq!(outcomes[0].body, json!({"batchItemFailures": []}), "{stdout}");
    let lines = finding_lines(&stdout);
    assert_eq!(lines.len(), expected, "{stdout}");
    assert!(lines.iter().all(|l| l["finding"]["launch"]["caller"]["principal_arn"].is_string()), "every caller found");
    // The emulator throttles past 2 LookupEvents a second in any account-region, as CloudTrail
    // does: none was throttled.
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("CloudTrailThrottles").is_some())
        .collect();
    assert_eq!(emf[0]["CloudTrailThrottles"], 0, "{emf:#?}");
    let stats = &super::lambda::lines_with(&stdout, "api calls")[0]["stats"]["api_calls"];
    let lookups = stats["cloudtrail:LookupEvents"].as_u64().unwrap();
    // One window query per event name and account-region serves its four failures.
    assert!(lookups <= 3 * 20, "window queries shared by each account-region's failures: {lookups} ({stats:#})");
    eprintln!("storm across 20 accounts: {expected} failures, {lookups} LookupEvents, {:?}", started.elapsed());
}
