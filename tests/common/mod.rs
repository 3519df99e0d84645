//! Test harness: the emulator (moto + tests/emulator/), scenario seeding through the Rust
//! SDKs and the emulator's control routes, and running the real binary.
//!
//! Under `make test` the emulator is already running (`KLD_EMULATOR_URL`); a bare `cargo test`
//! starts one per test binary, which exits with the binary (`--parent-pid`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use aws_config::{BehaviorVersion, Region};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

pub const ACCOUNT: &str = "123456789012";

/// Scenarios share a handful of regions: their instances, keys, CloudTrail records and
/// principals are their own (IAM is global, so tests name principals uniquely). A scenario that
/// injects faults or counts calls, which apply to a whole region, gets a region of its own.
const SHARED_REGIONS: &[&str] =
    &["us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1"];
const ISOLATED_REGIONS: &[&str] = &[
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "sa-east-1",
    "eu-south-1",
    "af-south-1",
    "ap-east-1",
    "me-south-1",
    "eu-central-2",
    "ap-south-2",
    "ap-southeast-3",
    "eu-south-2",
    "me-central-1",
    "il-central-1",
    "ca-west-1",
    "ap-southeast-4",
    "ap-east-2",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "mx-central-1",
];
static NEXT_SHARED: AtomicUsize = AtomicUsize::new(0);
static NEXT_ISOLATED: AtomicUsize = AtomicUsize::new(0);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The emulator's base URL, starting one if `make test` did not.
pub fn emulator_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("KLD_EMULATOR_URL") {
            return url;
        }
        let python = root().join(".venv/bin/python");
        assert!(python.exists(), "no emulator: run `make test` (it creates .venv and starts the emulator)");
        // Never waited on: it lives as long as this test binary and exits with it (--parent-pid).
        #[allow(clippy::zombie_processes)]
        let mut child = Command::new(python)
            .arg(root().join("tests/emulator"))
            .args(["serve", "--port", "0", "--parent-pid", &std::process::id().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator");
        let stdout = child.stdout.take().expect("emulator stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("emulator URL line");
        line.trim().strip_prefix("KLD_EMULATOR_URL=").expect("emulator printed its URL").to_owned()
    })
}

/// A minimal HTTP/1.1 JSON client for the emulator's control routes. The response is read up
/// to its Content-Length (not to the end of the connection, which a keep-alive server may hold
/// open); a stuck request fails with its route named.
pub fn http(method: &str, path: &str, body: Option<&Value>) -> Value {
    http_with(method, path, &[("Content-Type", "application/json")], body)
}

/// An AWS JSON-protocol call (`X-Amz-Target`) made as `account` through moto's
/// `x-moto-account-id` header, for APIs the tests have no SDK for (Organizations). The
/// Authorization header only carries the credential scope the emulator reads the service and
/// region from; moto does not check signatures.
pub fn aws_json(account: &str, region: &str, service: &str, target: &str, body: &Value) -> Value {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=kld-emulator/20261130/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    http_with(
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", target),
            ("x-moto-account-id", account),
            ("Authorization", &auth),
        ],
        Some(body),
    )
}

pub fn http_with(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Value {
    let url = emulator_url();
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(hostport).expect("connect to emulator");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut length: Option<usize> = None;
    loop {
        let mut line = String::new();
        let n =
            reader.read_line(&mut line).unwrap_or_else(|e| panic!("{method} {path}: no answer from the emulator: {e}"));
        if n == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            }
        }
        head.push_str(&line);
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).unwrap_or_else(|e| panic!("{method} {path}: body cut short: {e}"));
        }
        None => {
            reader.read_to_end(&mut body).unwrap_or_else(|e| panic!("{method} {path}: body not ended: {e}"));
        }
    }
    let body = String::from_utf8_lossy(&body);
    assert!(head.starts_with("HTTP/1.1 2") || head.starts_with("HTTP/1.0 2"), "{method} {path} failed: {head}\n{body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One test's world: a region of its own and SDK clients pointed at the emulator.
pub struct Scenario {
    pub name: String,
    pub region: String,
    /// The account the scenario's resources live in (123456789012 unless `in_account`).
    pub account: String,
    /// Credentials acting in `account`, for the tool, when it is not the default one.
    pub credentials: Option<(String, String, String)>,
    pub ec2: aws_sdk_ec2::Client,
    pub kms: aws_sdk_kms::Client,
    pub iam: aws_sdk_iam::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub securityhub: aws_sdk_securityhub::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
}

impl Scenario {
    pub async fn new(name: &str) -> Self {
        let i = NEXT_SHARED.fetch_add(1, Ordering::SeqCst) % SHARED_REGIONS.len();
        Self::in_region(name, SHARED_REGIONS[i]).await
    }

    /// A scenario with a region to itself, for faults and call counts.
    pub async fn isolated(name: &str) -> Self {
        let i = NEXT_ISOLATED.fetch_add(1, Ordering::SeqCst);
        let region = ISOLATED_REGIONS.get(i).expect("more isolated scenarios than test regions: add regions");
        Self::in_region(name, region).await
    }

    /// A scenario in another account: its clients, and the tool, use
    /// credentials from STS AssumeRole on a role of that account, which moto makes act there.
    pub async fn in_account(name: &str, account: &str) -> Self {
        // The account isolates it: a shared region will do.
        let base = Self::new(name).await;
        Self::in_account_at(name, account, &base.region).await
    }

    /// [`Scenario::in_account`] in a given region (several accounts scanned in one region).
    pub async fn in_account_at(name: &str, account: &str, region: &str) -> Self {
        // STS AssumeRole needs the role to exist in the account and trust the caller, as in
        // AWS: the emulator's control route makes it (trusting 123456789012).
        http("POST", "/_kld/iam/role", Some(&json!({"account_id": account, "name": "kld-test"})));
        let base = Self::in_region(name, region).await;
        let sts_config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(base.region.clone()))
            .endpoint_url(emulator_url())
            .credentials_provider(emulator_credentials())
            .http_client(http_client())
            .load()
            .await;
        let out = aws_sdk_sts::Client::new(&sts_config)
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account}:role/kld-test"))
            .role_session_name(name)
            .send()
            .await
            .unwrap();
        let c = out.credentials().unwrap();
        let creds = (c.access_key_id().to_owned(), c.secret_access_key().to_owned(), c.session_token().to_owned());
        let provider =
            aws_credential_types::Credentials::new(&creds.0, &creds.1, Some(creds.2.clone()), None, "assumed");
        let mut s = Self::build(name, &base.region, provider).await;
        s.account = account.to_owned();
        s.credentials = Some(creds);
        s
    }

    async fn in_region(name: &str, region: &str) -> Self {
        Self::build(name, region, emulator_credentials()).await
    }

    async fn build(name: &str, region: &str, credentials: aws_credential_types::Credentials) -> Self {
        let region = region.to_owned();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .endpoint_url(emulator_url())
            .credentials_provider(credentials)
            .http_client(http_client())
            .load()
            .await;
        Self {
            name: name.to_owned(),
            region,
            account: ACCOUNT.to_owned(),
            credentials: None,
            ec2: aws_sdk_ec2::Client::new(&config),
            kms: aws_sdk_kms::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            sns: aws_sdk_sns::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
            events: aws_sdk_eventbridge::Client::new(&config),
            securityhub: aws_sdk_securityhub::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
        }
    }

    /// A customer managed key, with the default key policy unless one is given.
    pub async fn key(&self, policy: Option<&str>) -> String {
        let mut req = self.kms.create_key().description(format!("{} test key", self.name));
        if let Some(p) = policy {
            req = req.policy(p);
        }
        req.send().await.unwrap().key_metadata().unwrap().arn().unwrap().to_owned()
    }

    /// A key prepared by the emulator (another account, a state moto cannot reach by API).
    pub fn emulator_key(&self, spec: Value) -> Value {
        let mut spec = spec;
        spec["region"] = json!(self.region);
        http("POST", "/_kld/kms/key", Some(&spec))
    }

    /// An IAM user with inline policies; returns its ARN.
    pub async fn user(&self, name: &str, policies: &[(&str, Value)]) -> String {
        let arn = self.iam.create_user().user_name(name).send().await.unwrap().user().unwrap().arn().to_owned();
        for (pname, doc) in policies {
            self.iam
                .put_user_policy()
                .user_name(name)
                .policy_name(*pname)
                .policy_document(doc.to_string())
                .send()
                .await
                .unwrap();
        }
        arn
    }

    /// An IAM role (with a path) and inline policies; returns its ARN.
    pub async fn role(&self, name: &str, path: &str, policies: &[(&str, Value)]) -> String {
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
        let arn = self
            .iam
            .create_role()
            .role_name(name)
            .path(path)
            .assume_role_policy_document(trust.to_string())
            .send()
            .await
            .unwrap()
            .role()
            .unwrap()
            .arn()
            .to_owned();
        for (pname, doc) in policies {
            self.iam
                .put_role_policy()
                .role_name(name)
                .policy_name(*pname)
                .policy_document(doc.to_string())
                .send()
                .await
                .unwrap();
        }
        arn
    }

    /// An instance whose volumes are encrypted with the given keys (`None`: unencrypted).
    pub async fn instance(&self, volumes: &[Option<&str>]) -> String {
        use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice};
        let mappings = volumes
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let mut ebs = EbsBlockDevice::builder().volume_size(8).encrypted(key.is_some());
                if let Some(k) = key {
                    ebs = ebs.kms_key_id(*k);
                }
                BlockDeviceMapping::builder()
                    .device_name(format!("/dev/xvd{}", (b'a' + i as u8) as char))
                    .ebs(ebs.build())
                    .build()
            })
            .collect();
        let out = self
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .set_block_device_mappings(Some(mappings))
            .send()
            .await
            .unwrap();
        out.instances()[0].instance_id().unwrap().to_owned()
    }

    /// Leaves the instance as a failed launch does.
    pub fn fail_launch(&self, instance_id: &str, state: &str) {
        self.fail_launch_with(
            instance_id,
            state,
            "Client.InternalError",
            "Client.InternalError: Client error on launch",
        );
    }

    pub fn fail_launch_with(&self, instance_id: &str, state: &str, code: &str, message: &str) {
        http(
            "POST",
            "/_kld/ec2/launch-failure",
            Some(
                &json!({"region": self.region, "account_id": self.account, "instance_id": instance_id, "state": state, "code": code, "message": message}),
            ),
        );
    }

    pub fn trail(&self, events: Vec<Value>) {
        http(
            "POST",
            "/_kld/cloudtrail/events",
            Some(&json!({"region": self.region, "account_id": self.account, "events": events})),
        );
    }

    pub fn fault(&self, spec: Value) {
        let mut spec = spec;
        spec["region"] = json!(self.region);
        http("POST", "/_kld/faults", Some(&spec));
    }

    /// Calls the tool made in this scenario's region, by `service:Action`.
    pub fn calls(&self) -> Vec<String> {
        let v = http("GET", &format!("/_kld/calls?region={}", self.region), None);
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{}:{}", c["service"].as_str().unwrap(), c["action"].as_str().unwrap()))
            .collect()
    }

    pub fn reset_calls(&self) {
        http("POST", "/_kld/calls/reset", Some(&json!({})));
    }

    /// A CloudTrail StartInstances/RunInstances record by `identity`, `ago` before now.
    pub fn launch_record(&self, api: &str, instance_id: &str, identity: Value, ago: Duration) -> Value {
        json!({
            "eventVersion": "1.09", "userIdentity": identity, "eventTime": rfc3339(Utc::now() - ago),
            "eventSource": "ec2.amazonaws.com", "eventName": api, "awsRegion": self.region,
            "sourceIPAddress": "203.0.113.10", "userAgent": "aws-cli/2.15.0",
            "requestParameters": {"instancesSet": {"items": [{"instanceId": instance_id}]}},
            "responseElements": {"instancesSet": {"items": [{"instanceId": instance_id,
                "currentState": {"code": 0, "name": "pending"}, "previousState": {"code": 80, "name": "stopped"}}]}},
            "requestID": uuid(), "eventID": uuid(), "readOnly": false, "eventType": "AwsApiCall",
            "managementEvent": true, "recipientAccountId": ACCOUNT, "eventCategory": "Management"
        })
    }

    /// A RunInstances record as CloudTrail writes it for a request with these block device
    /// mappings (`[{"deviceName", "ebs": {"volumeSize", "encrypted", "kmsKeyId", …}}]`), image and
    /// optional launch template (`{"launchTemplateId", "version"}`), shaped after the real records
    /// in tests/fixtures/cloudtrail.
    pub fn run_instances_record(
        &self,
        instance_id: &str,
        identity: Value,
        ago: Duration,
        image_id: &str,
        mappings: Vec<Value>,
        template: Option<Value>,
    ) -> Value {
        let mut r = self.launch_record("RunInstances", instance_id, identity, ago);
        r["requestParameters"] = json!({
            "instancesSet": {"items": [{"imageId": image_id, "minCount": 1, "maxCount": 1}]},
            "blockDeviceMapping": if mappings.is_empty() { json!({}) } else { json!({"items": mappings}) },
            "instanceType": "t3.micro", "disableApiTermination": false,
            "clientToken": uuid()
        });
        if let Some(t) = template {
            r["requestParameters"]["launchTemplate"] = t;
        }
        r["responseElements"] = json!({"instancesSet": {"items": [{"instanceId": instance_id, "imageId": image_id,
            "currentState": {"code": 0, "name": "pending"}}]}, "requesterId": null, "ownerId": ACCOUNT});
        r
    }

    /// The denied CreateGrant CloudTrail records when EC2 asks for a grant on the caller's behalf.
    pub fn denied_grant(&self, key_arn: &str, identity: Value, principal_arn: &str, ago: Duration) -> Value {
        json!({
            "eventVersion": "1.09", "userIdentity": identity, "eventTime": rfc3339(Utc::now() - ago),
            "eventSource": "kms.amazonaws.com", "eventName": "CreateGrant", "awsRegion": self.region,
            "sourceIPAddress": "ec2.amazonaws.com", "userAgent": "ec2.amazonaws.com",
            "errorCode": "AccessDenied",
            "errorMessage": format!("User: {principal_arn} is not authorized to perform: kms:CreateGrant on resource: {key_arn} because no identity-based policy allows the kms:CreateGrant action"),
            "requestParameters": {"keyId": key_arn, "granteePrincipal": "ec2.amazonaws.com", "constraints": {}},
            "responseElements": null, "requestID": uuid(), "eventID": uuid(), "readOnly": false,
            "resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": key_arn}],
            "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": ACCOUNT
        })
    }

    /// An SQS queue; returns (url, arn).
    pub async fn queue(&self, name: &str) -> (String, String) {
        let url = self.sqs.create_queue().queue_name(name).send().await.unwrap().queue_url().unwrap().to_owned();
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let arn = attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
        (url, arn)
    }

    /// Every message now on the queue (bodies), waiting briefly for the first.
    pub async fn drain(&self, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
        let mut out = Vec::new();
        for _ in 0..5 {
            let r = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            let got = r.messages().to_vec();
            if got.is_empty() && !out.is_empty() {
                break;
            }
            out.extend(got);
        }
        out
    }

    /// An SNS topic with an SQS queue subscribed; returns (topic ARN, queue URL).
    pub async fn topic_with_queue(&self, name: &str) -> (String, String) {
        let topic = self.sns.create_topic().name(name).send().await.unwrap().topic_arn().unwrap().to_owned();
        let (url, arn) = self.queue(&format!("{name}-inbox")).await;
        self.sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(arn).send().await.unwrap();
        (topic, url)
    }

    /// A custom event bus whose rule for our source targets an SQS queue; returns (bus, queue URL).
    pub async fn bus_with_queue(&self, name: &str) -> (String, String) {
        self.events.create_event_bus().name(name).send().await.unwrap();
        let (url, arn) = self.queue(&format!("{name}-inbox")).await;
        self.events
            .put_rule()
            .name(format!("{name}-rule"))
            .event_bus_name(name)
            .event_pattern(json!({"source": ["kms-launch-doctor"]}).to_string())
            .send()
            .await
            .unwrap();
        self.events
            .put_targets()
            .rule(format!("{name}-rule"))
            .event_bus_name(name)
            .targets(aws_sdk_eventbridge::types::Target::builder().id("inbox").arn(arn).build().unwrap())
            .send()
            .await
            .unwrap();
        (name.to_owned(), url)
    }

    /// Runs `kms-launch-doctor diagnose` with extra arguments and environment.
    pub fn diagnose_with(&self, instance_ids: &[&str], extra: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
        let mut args = vec!["diagnose".to_owned(), "--region".to_owned(), self.region.clone()];
        for id in instance_ids {
            args.push("--instance-id".to_owned());
            args.push((*id).to_owned());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut env: Vec<(&str, &str)> = env.to_vec();
        if let Some((id, secret, token)) = &self.credentials {
            env.extend([
                ("AWS_ACCESS_KEY_ID", id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
                ("AWS_SESSION_TOKEN", token.as_str()),
            ]);
        }
        parse_output(run_tool(&args, &env))
    }

    /// Runs `kms-launch-doctor diagnose` and returns (exit code, report JSON, stderr).
    pub fn diagnose(&self, instance_ids: &[&str]) -> (i32, Value, String) {
        let mut args = vec![
            "diagnose".to_owned(),
            "--region".to_owned(),
            self.region.clone(),
            "--format".to_owned(),
            "json".to_owned(),
        ];
        for id in instance_ids {
            args.push("--instance-id".to_owned());
            args.push((*id).to_owned());
        }
        let out = run_tool(&args, &[]);
        parse_output(out)
    }
}

pub fn iam_user_identity(arn: &str, name: &str) -> Value {
    json!({"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": arn, "accountId": ACCOUNT, "accessKeyId": "AKIAEXAMPLE", "userName": name})
}

pub fn assumed_role_identity(role_arn: &str, role_name: &str, session: &str) -> Value {
    json!({"type": "AssumedRole", "principalId": format!("AROAEXAMPLE:{session}"),
        "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{session}"), "accountId": ACCOUNT,
        "accessKeyId": "ASIAEXAMPLE",
        "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE", "arn": role_arn, "accountId": ACCOUNT, "userName": role_name},
            "attributes": {"creationDate": rfc3339(Utc::now() - Duration::minutes(30)), "mfaAuthenticated": "false"}}})
}

pub fn uuid() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id(),
        n,
        Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64 & 0xffff_ffff_ffff
    )
}

/// Credentials for the emulator, from the environment `make test` sets, else a fixed
/// placeholder the emulator accepts (it checks nothing).
fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

fn emulator_credentials() -> aws_credential_types::Credentials {
    let id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "kld-emulator".to_owned());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "kld-emulator".to_owned());
    aws_credential_types::Credentials::new(id, secret, None, None, "emulator")
}

/// Runs the real binary against the emulator.
pub fn run_tool(args: &[String], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms-launch-doctor"));
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", emulator_url())
        .env("AWS_ACCESS_KEY_ID", std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "kld-emulator".to_owned()))
        .env(
            "AWS_SECRET_ACCESS_KEY",
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "kld-emulator".to_owned()),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_LAMBDA_RUNTIME_API");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kms-launch-doctor")
}

pub fn parse_output(out: Output) -> (i32, Value, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// The one finding of a report, after checking there is exactly one.
pub fn only_finding(report: &Value) -> &Value {
    let findings = report["findings"].as_array().unwrap_or_else(|| panic!("no findings array in {report:#}"));
    assert_eq!(findings.len(), 1, "expected one finding in {report:#}");
    &findings[0]
}

pub fn cause_codes(finding: &Value) -> Vec<String> {
    finding["causes"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap().to_owned()).collect()
}

pub fn remediation_actions(finding: &Value) -> Vec<String> {
    finding["remediations"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap().to_owned()).collect()
}

pub mod runtime_api;

/// Starts the real binary in Lambda mode against a Runtime API stub serving `events`.
pub fn lambda_process(runtime: &runtime_api::RuntimeApi, region: &str) -> std::process::Child {
    lambda_process_with(runtime, region, &[])
}

pub fn lambda_process_with(
    runtime: &runtime_api::RuntimeApi,
    region: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kms-launch-doctor"));
    cmd.envs(env.iter().copied());
    cmd.env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", "kms-launch-doctor")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", region)
        .env("AWS_ENDPOINT_URL", emulator_url())
        .env("AWS_ACCESS_KEY_ID", std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "kld-emulator".to_owned()))
        .env(
            "AWS_SECRET_ACCESS_KEY",
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "kld-emulator".to_owned()),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kms-launch-doctor in Lambda mode")
}
