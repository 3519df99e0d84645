//! The fault matrix: every AWS call the tool makes, under every fault the emulator can inject
//! (access denied, throttling, bare HTTP 429/503/500, a malformed body, a timeout), run through
//! the real binary. Each cell's outcome is observed and classified; the invariants the tool
//! promises are checked (exit 0, 1 or 3 only, no panic, no hang, missing evidence that names the
//! call and exit 3, a failed sink or remediation that says which call failed, a transient fault
//! retried away); and the observations become `docs/reliability.md`, which is compared with the file on
//! disk (`KLD_BLESS=1` rewrites it).
//!
//! Each path (diagnosis, sinks, remediation) has a region of its own and runs its cells one
//! after another there, on a thread of its own so that the paths run side by side. Every fault
//! is scoped to its cell by `match` (an instance id, volume id, key id, user name or finding id
//! in the request body) and removed after the cell. A fault that "never stops" is registered
//! with `times: 1000`: it cannot run out within a cell, and what is left of it says how many
//! attempts reached it.

use std::fmt::Write as _;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{article_in, Article};
use crate::common::*;

/// No run may take longer than this: it is killed, and the cell is a violation (a hang).
const RUN_BOUND: Duration = Duration::from_secs(60);
/// "Never stops" within a cell: far more than the tool's 4 attempts per call.
const ENDLESS: i64 = 1000;
/// The delay of a timeout fault: longer than the attempt timeout the tool runs with.
const DELAY_SECONDS: f64 = 2.0;
const TIMEOUT_ENV: &[(&str, &str)] = &[("KLD_ATTEMPT_TIMEOUT_SECONDS", "1"), ("KLD_OPERATION_TIMEOUT_SECONDS", "3")];
/// An unreachable endpoint must fail the CLI within this (enforced by killing it).
const UNREACHABLE_BOUND: Duration = Duration::from_secs(20);
/// The same, with the default timeouts (3 s connect, 10 s attempt, 30 s operation).
const UNREACHABLE_DEFAULT_BOUND: Duration = Duration::from_secs(45);
const TAG: &str = "kms-launch-doctor:auto-remediate";

/// How a service encodes its errors; it decides the error codes a fault uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// EC2's own query dialect: `UnauthorizedOperation`, `RequestLimitExceeded`.
    Ec2,
    /// JSON services (KMS, CloudTrail, Security Hub, EventBridge).
    Json,
    /// Query services with `<ErrorResponse>` (IAM, SNS).
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Denied,
    Throttled2,
    ThrottledEndless,
    Http429x2,
    Http503x2,
    Http500,
    Malformed,
    Timeout,
}

const FAULTS: [Fault; 8] = [
    Fault::Denied,
    Fault::Throttled2,
    Fault::ThrottledEndless,
    Fault::Http429x2,
    Fault::Http503x2,
    Fault::Http500,
    Fault::Malformed,
    Fault::Timeout,
];

impl Fault {
    /// Transient: the outcome must be the same as without the fault, after retries.
    fn transient(self) -> bool {
        matches!(self, Fault::Throttled2 | Fault::Http429x2 | Fault::Http503x2)
    }

    fn times(self) -> i64 {
        if self.transient() {
            2
        } else {
            ENDLESS
        }
    }

    /// The error code and HTTP status AWS uses for this fault in this protocol.
    fn code(self, proto: Proto) -> Option<(&'static str, u16)> {
        match (self, proto) {
            (Fault::Denied, Proto::Ec2) => Some(("UnauthorizedOperation", 403)),
            (Fault::Denied, Proto::Json) => Some(("AccessDeniedException", 400)),
            (Fault::Denied, Proto::Query) => Some(("AccessDenied", 403)),
            (Fault::Throttled2 | Fault::ThrottledEndless, Proto::Ec2) => Some(("RequestLimitExceeded", 503)),
            (Fault::Throttled2 | Fault::ThrottledEndless, Proto::Json) => Some(("ThrottlingException", 400)),
            (Fault::Throttled2 | Fault::ThrottledEndless, Proto::Query) => Some(("Throttling", 400)),
            _ => None,
        }
    }

    /// The emulator's fault spec (without service, action, region and match).
    fn spec(self, call: &str, proto: Proto) -> Value {
        let mut spec = match self {
            Fault::Denied | Fault::Throttled2 | Fault::ThrottledEndless => {
                let (code, status) = self.code(proto).unwrap();
                let message = if self == Fault::Denied {
                    format!("User: arn:aws:sts::{ACCOUNT}:assumed-role/kld/doctor is not authorized to perform: {call}")
                } else {
                    "Rate exceeded".to_owned()
                };
                json!({"kind": "error", "code": code, "status": status, "message": message})
            }
            Fault::Http429x2 => json!({"kind": "http", "status": 429}),
            Fault::Http503x2 => json!({"kind": "http", "status": 503}),
            Fault::Http500 => json!({"kind": "http", "status": 500}),
            Fault::Malformed => json!({"kind": "malformed"}),
            Fault::Timeout => json!({"kind": "delay", "delay_seconds": DELAY_SECONDS}),
        };
        spec["times"] = json!(self.times());
        spec
    }

    /// The table's description of what was injected.
    fn describe(self, proto: Proto) -> String {
        let coded = |what: &str, n: &str| {
            let (code, status) = self.code(proto).unwrap();
            format!("{what} `{code}` (HTTP {status}), {n}")
        };
        match self {
            Fault::Denied => coded("denied:", "every attempt"),
            Fault::Throttled2 => coded("throttled:", "2 attempts"),
            Fault::ThrottledEndless => coded("throttled:", "every attempt"),
            Fault::Http429x2 => "bare HTTP 429, 2 attempts".to_owned(),
            Fault::Http503x2 => "bare HTTP 503, 2 attempts".to_owned(),
            Fault::Http500 => "bare HTTP 500, every attempt".to_owned(),
            Fault::Malformed => "malformed body, every attempt".to_owned(),
            Fault::Timeout => format!("no answer for {DELAY_SECONDS} s, every attempt"),
        }
    }

    fn env(self) -> &'static [(&'static str, &'static str)] {
        if self == Fault::Timeout {
            TIMEOUT_ENV
        } else {
            &[]
        }
    }
}

/// One AWS call of a path, and the substring of its request body that scopes a fault to the
/// cell's scenario.
struct Call {
    name: &'static str,
    proto: Proto,
    matching: String,
}

impl Call {
    fn new(name: &'static str, proto: Proto, matching: &str) -> Self {
        Self { name, proto, matching: matching.to_owned() }
    }
}

// ----------------------------------------------------------------------------------------------
// Faults through the emulator's control routes
// ----------------------------------------------------------------------------------------------

/// A fault registered for one cell; `finish` says how many requests it answered and removes it.
struct Injected {
    id: String,
    times: i64,
}

fn inject(region: &str, call: &Call, fault: Fault) -> Injected {
    let (service, action) = call.name.split_once(':').unwrap();
    let mut spec = fault.spec(call.name, call.proto);
    spec["service"] = json!(service);
    spec["action"] = json!(action);
    spec["region"] = json!(region);
    spec["match"] = json!(call.matching);
    let id = http("POST", "/_kld/faults", Some(&spec))["id"].as_str().unwrap().to_owned();
    Injected { id, times: fault.times() }
}

impl Injected {
    /// Requests the fault answered; then it is gone (used up, or removed here).
    fn finish(self) -> i64 {
        let all = http("GET", "/_kld/faults", None);
        let left = all["faults"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == self.id.as_str())
            .map(|f| f["times"].as_i64().unwrap());
        if left.is_some() {
            http("DELETE", &format!("/_kld/faults/{}", self.id), None);
        }
        self.times - left.unwrap_or(0)
    }
}

// ----------------------------------------------------------------------------------------------
// Running the binary with a bound
// ----------------------------------------------------------------------------------------------

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    killed: bool,
}

/// The binary under test, as it was when the matrix started: a hard link (else a copy), so that
/// a rebuild during the run (cargo replaces the file) cannot mix two versions in one matrix.
fn binary() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let original = std::path::PathBuf::from(env!("CARGO_BIN_EXE_kms-launch-doctor"));
        let snapshot = std::env::temp_dir().join(format!("kld-faults-{}-kms-launch-doctor", std::process::id()));
        let _ = std::fs::remove_file(&snapshot);
        if std::fs::hard_link(&original, &snapshot).is_ok() || std::fs::copy(&original, &snapshot).is_ok() {
            snapshot
        } else {
            original
        }
    })
}

/// Runs the real binary against `endpoint`, killing it after `bound`.
fn run_bounded(args: &[String], env: &[(&str, &str)], endpoint: &str, bound: Duration) -> Run {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "kld-emulator".to_owned()))
        .env(
            "AWS_SECRET_ACCESS_KEY",
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "kld-emulator".to_owned()),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("KLD_ATTEMPT_TIMEOUT_SECONDS")
        .env_remove("KLD_OPERATION_TIMEOUT_SECONDS")
        .env_remove("RUST_LOG")
        .env_remove("LOG_LEVEL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("run kms-launch-doctor");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > bound {
            killed = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    Run { code: status.code(), stdout: out.join().unwrap(), stderr: err.join().unwrap(), elapsed, killed }
}

fn diagnose_args(region: &str, instance: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["diagnose", "--region", region, "--instance-id", instance, "--format", "json"].map(str::to_owned).to_vec();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// What one path observed: the table rows, the invariants broken, and how long each cell took.
#[derive(Default)]
struct Observed {
    rows: Vec<Row>,
    violations: Vec<String>,
    timings: Vec<(String, Duration)>,
}

impl Observed {
    fn violation(&mut self, what: &str, text: String) {
        self.violations.push(format!("{what}: {text}"));
    }

    /// The invariants of every run: it ended by itself within the bound, with 0, 1 or 3, no panic.
    /// Returns whether the run can be classified at all.
    fn sane(&mut self, what: &str, run: &Run) -> bool {
        self.timings.push((what.to_owned(), run.elapsed));
        if run.killed {
            self.violation(what, format!("still running after {} s, killed (a hang)", RUN_BOUND.as_secs()));
            return false;
        }
        if run.stderr.contains("panicked") || run.code == Some(101) {
            self.violation(what, format!("panic: {}", first_line(&run.stderr)));
            return false;
        }
        if !matches!(run.code, Some(0) | Some(1) | Some(3)) {
            self.violation(what, format!("exit {:?}", run.code));
            return false;
        }
        true
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// The CLI's own `error: …` lines (tracing lines carry a timestamp and a level first).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ")).collect()
}

// ----------------------------------------------------------------------------------------------
// Normalising what was observed, so that the table is the same from run to run
// ----------------------------------------------------------------------------------------------

/// Marks a reason that is the SDK's debug rendering of the raw response (see the legend).
const DUMP: &str = "†";

/// A failure reason reduced to what does not change between runs: the error code, or the kind
/// of failure when there is no code.
fn norm_reason(reason: &str) -> String {
    let reason = reason.trim().trim_start_matches("error: ");
    let reason = match reason.split_once(" failed: ") {
        Some((call, rest)) if call.contains(':') && !call.contains(' ') => rest,
        _ => reason,
    };
    let head = reason.split(':').next().unwrap_or_default().trim();
    let is_code = !head.is_empty()
        && head.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    if is_code {
        return format!("`{head}`");
    }
    for known in ["timed out", "unreadable response", "could not reach the endpoint"] {
        if reason.starts_with(known) {
            return known.to_owned();
        }
    }
    // No error code: what follows is the SDK's debug rendering of the error and raw response.
    let status = reason
        .find("StatusCode(")
        .map(|at| reason[at + "StatusCode(".len()..].chars().take_while(char::is_ascii_digit).collect::<String>());
    let unparseable = ["DeserializeError", "XmlDecodeError", "error parsing XML", "unexpected token", "unexpected EOF"]
        .iter()
        .any(|m| reason.contains(m));
    match (status, unparseable) {
        (Some(s), true) => format!("HTTP {s}, body not parseable, no error code {DUMP}"),
        (Some(s), false) => format!("HTTP {s}, no error code {DUMP}"),
        (None, true) => format!("body not parseable {DUMP}"),
        (None, false) => scrub_ids(head),
    }
}

/// Ids and ARNs in a free-text reason, replaced by placeholders.
fn scrub_ids(text: &str) -> String {
    let hex_id = |s: &str, prefix: &str| {
        s.strip_prefix(prefix).is_some_and(|rest| rest.len() >= 8 && rest.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let uuid = |s: &str| s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    text.split(' ')
        .map(|word| {
            let core =
                word.trim_matches(|c: char| matches!(c, '(' | ')' | '[' | ']' | ',' | ';' | '.' | '\'' | '"' | '`'));
            let placeholder = if core.starts_with("arn:") {
                Some("<arn>")
            } else if hex_id(core, "i-") {
                Some("<instance>")
            } else if hex_id(core, "vol-") {
                Some("<volume>")
            } else if hex_id(core, "kld-") {
                Some("<finding>")
            } else if uuid(core) {
                Some("<uuid>")
            } else {
                None
            };
            match placeholder {
                Some(p) if !core.is_empty() => word.replacen(core, p, 1),
                _ => word.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `error: ec2:DescribeInstances failed:` of an error line, in backticks.
fn error_prefix(line: &str) -> String {
    match line.split_once(" failed: ") {
        Some((head, _)) => format!("`{head} failed:`"),
        None => format!("`{}`", line.split(':').next().unwrap_or_default()),
    }
}

fn md(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn attempts(n: i64) -> String {
    if n == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{n} attempts")
    }
}

/// "N attempts", or for a timeout (where the count depends on backoff jitter) what happened.
fn tries(fault: Fault, used: i64) -> String {
    if fault == Fault::Timeout {
        "every attempt timed out".to_owned()
    } else {
        attempts(used)
    }
}

/// Outcome and details of a cell whose result is the same as without the fault.
fn unchanged(fault: Fault, used: i64, tail: &str) -> (String, String) {
    if fault == Fault::Malformed {
        (format!("the truncated body was read as complete: {tail}"), attempts(used))
    } else {
        (format!("success after retries: {tail}"), format!("{} failed, then success", attempts(used)))
    }
}

/// Replaces this scenario's ids in a text with placeholders.
fn scrub(text: &str, a: &Article) -> String {
    text.replace(&a.key, "<key>")
        .replace(&key_id(a), "<key-id>")
        .replace(&a.user_arn, "<user>")
        .replace(&user_name(a), "<user-name>")
        .replace(&a.instance, "<instance>")
        .replace(&a.s.region, "<region>")
}

/// A remediation note or restart detail: a failure as `call failed: code`, else scrubbed.
fn norm_note(text: &str, a: &Article) -> String {
    match text.split_once(" failed: ") {
        Some((call, _)) if call.contains(':') && !call.contains(' ') => {
            format!("`{call} failed:` {}", norm_reason(text))
        }
        _ => scrub(text, a),
    }
}

/// What a finding says, without ids and times: the basis for "the same outcome as without the
/// fault", and for the table.
fn signature(f: &Value, a: &Article) -> Value {
    let arr = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let evidence = |c: &Value| -> Vec<String> {
        arr(&c["evidence"])
            .iter()
            .map(|e| match e["kind"].as_str() {
                Some("simulation") => format!("simulation ({})", e["decision"].as_str().unwrap_or("?")),
                k => k.unwrap_or("?").to_owned(),
            })
            .collect()
    };
    json!({
        "causes": arr(&f["causes"]).iter().map(|c| c["code"].clone()).collect::<Vec<_>>(),
        "evidence": arr(&f["causes"]).iter().map(evidence).collect::<Vec<_>>(),
        "launch": f["launch"]["api"],
        "caller": f["launch"]["caller"]["principal_kind"],
        "volumes": arr(&f["volumes"]).iter().map(|v| json!([v["encrypted"], v["kms_key_arn"].is_string()])).collect::<Vec<_>>(),
        "keys": arr(&f["keys"]).iter().map(|k| json!([k["state"], k["manager"], k["iam_delegation"]])).collect::<Vec<_>>(),
        "remediations": arr(&f["remediations"]).iter().map(|r| json!({
            "action": r["action"], "status": r["status"], "verified": r["verified"],
            "note": r["note"].as_str().map(|n| norm_note(n, a)),
            "restart": r["restart"]["ok"], "restart_detail": r["restart"]["detail"].as_str().map(|n| norm_note(n, a)),
        })).collect::<Vec<_>>(),
        "missing": arr(&f["missing_evidence"]).iter().map(|m| json!([m["call"], m["reason"].as_str().map(norm_reason)])).collect::<Vec<_>>(),
        "delivered": f["delivered"].as_object().map(|d| d.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(),
    })
}

fn the_finding(report: &Value) -> Option<&Value> {
    match report["findings"].as_array().map(Vec::as_slice) {
        Some([f]) => Some(f),
        _ => None,
    }
}

fn cause_list(sig: &Value) -> String {
    let causes: Vec<String> =
        sig["causes"].as_array().unwrap().iter().map(|c| format!("`{}`", c.as_str().unwrap_or("?"))).collect();
    causes.join(", ")
}

fn evidence_list(sig: &Value) -> String {
    let kinds: Vec<String> = sig["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c.as_array().cloned().unwrap_or_default())
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    if kinds.is_empty() {
        "none".to_owned()
    } else {
        kinds.join(", ")
    }
}

fn missing_list(sig: &Value) -> String {
    let items: Vec<String> = sig["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("`{}` {}", m[0].as_str().unwrap_or("?"), m[1].as_str().unwrap_or("?")))
        .collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join("; ")
    }
}

/// Why the report has no finding: its `skipped` reasons, scrubbed.
fn skipped_list(report: &Value, a: &Article) -> String {
    let reasons: Vec<String> = report["skipped"]
        .as_array()
        .map(|s| s.iter().filter_map(|x| x["reason"].as_str()).map(|r| format!("skipped: {}", scrub(r, a))).collect())
        .unwrap_or_default();
    if reasons.is_empty() {
        "no report".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// One cell of the matrix as the table shows it.
struct Row {
    call: &'static str,
    fault: String,
    outcome: String,
    details: String,
}

impl Row {
    fn new(call: &'static str, fault: String, outcome: impl Into<String>, details: impl Into<String>) -> Self {
        Self { call, fault, outcome: outcome.into(), details: details.into() }
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from("| call | fault injected | outcome | details |\n|---|---|---|---|\n");
    for r in rows {
        let call = if r.call.contains(':') { format!("`{}`", r.call) } else { r.call.to_owned() };
        writeln!(out, "| {call} | {} | {} | {} |", md(&r.fault), md(&r.outcome), md(&r.details)).unwrap();
    }
    out
}

// ----------------------------------------------------------------------------------------------
// Scenarios
// ----------------------------------------------------------------------------------------------

/// Another scenario in the same region (its own user name; faults stay this region's).
fn sibling(s: &Scenario, name: &str) -> Scenario {
    Scenario {
        name: name.to_owned(),
        region: s.region.clone(),
        account: s.account.clone(),
        credentials: s.credentials.clone(),
        ec2: s.ec2.clone(),
        kms: s.kms.clone(),
        iam: s.iam.clone(),
        sns: s.sns.clone(),
        sqs: s.sqs.clone(),
        events: s.events.clone(),
        securityhub: s.securityhub.clone(),
        autoscaling: s.autoscaling.clone(),
    }
}

fn key_id(a: &Article) -> String {
    a.key.rsplit('/').next().unwrap().to_owned()
}

fn user_name(a: &Article) -> String {
    a.user_arn.rsplit('/').next().unwrap().to_owned()
}

/// Everything remediation's opt-ins ask for: the principal, the key and (for the restart) the
/// instance carry the tag with value `true`.
async fn opt_in(a: &Article) {
    a.s.iam
        .tag_user()
        .user_name(user_name(a))
        .tags(aws_sdk_iam::types::Tag::builder().key(TAG).value("true").build().unwrap())
        .send()
        .await
        .unwrap();
    a.s.kms
        .tag_resource()
        .key_id(key_id(a))
        .tags(aws_sdk_kms::types::Tag::builder().tag_key(TAG).tag_value("true").build().unwrap())
        .send()
        .await
        .unwrap();
    a.s.ec2
        .create_tags()
        .resources(&a.instance)
        .tags(aws_sdk_ec2::types::Tag::builder().key(TAG).value("true").build())
        .send()
        .await
        .unwrap();
}

/// A pause after each run. The tool spaces its LookupEvents 500 ms apart and the emulator,
/// like CloudTrail, allows 2 a second per region, so back-to-back runs stay under the limit;
/// but requests held by a timeout fault reach moto only after the delay, and held LookupEvents
/// would take the next cell's slots.
fn settle(call: &Call, fault: Fault) {
    let pause =
        if fault == Fault::Timeout && call.name == "cloudtrail:LookupEvents" { DELAY_SECONDS + 0.5 } else { 0.2 };
    std::thread::sleep(Duration::from_secs_f64(pause));
}

/// Injects `fault` on `call`, runs the tool, and returns the run and the requests the fault
/// answered; `None` (with the violation recorded and a row pushed) if the run is not sane.
fn run_cell(
    obs: &mut Observed,
    what: &str,
    region: &str,
    call: &Call,
    fault: Fault,
    args: &[String],
    env: &[(&str, &str)],
) -> Option<(Run, i64)> {
    let injected = inject(region, call, fault);
    let env: Vec<(&str, &str)> = env.iter().chain(fault.env()).copied().collect();
    let run = run_bounded(args, &env, emulator_url(), RUN_BOUND);
    let used = injected.finish();
    settle(call, fault);
    eprintln!(
        "[{what}] exit {:?} in {:.1} s, {used} requests faulted: {}",
        run.code,
        run.elapsed.as_secs_f64(),
        first_line(&run.stderr).chars().take(160).collect::<String>()
    );
    if !obs.sane(what, &run) {
        let outcome =
            if run.killed { format!("killed after {} s", RUN_BOUND.as_secs()) } else { format!("exit {:?}", run.code) };
        obs.rows.push(Row::new(call.name, fault.describe(call.proto), outcome, first_line(&run.stderr)));
        return None;
    }
    if used < 1 {
        obs.violation(what, "the fault was never hit (test setup)".to_owned());
    }
    Some((run, used))
}

// ----------------------------------------------------------------------------------------------
// Diagnosis
// ----------------------------------------------------------------------------------------------

async fn diagnosis_path() -> Observed {
    let mut obs = Observed::default();
    let a = article_in(Scenario::isolated("kldfd").await).await;
    let args = diagnose_args(&a.s.region, &a.instance, &[]);
    let base_run = run_bounded(&args, &[], emulator_url(), RUN_BOUND);
    assert!(obs.sane("diagnosis without faults", &base_run) && base_run.code == Some(0), "{}", base_run.stderr);
    let base_report: Value = serde_json::from_str(&base_run.stdout).unwrap();
    let base = signature(only_finding(&base_report), &a);
    assert_eq!(base["missing"], json!([]), "{base_report:#}");
    let volume = base_report["findings"][0]["volumes"][0]["volume_id"].as_str().unwrap().to_owned();
    obs.rows.push(Row::new(
        "(none)",
        "no fault".to_owned(),
        "finding, exit 0",
        format!("causes {}; evidence: {}; missing evidence: none", cause_list(&base), evidence_list(&base)),
    ));

    // LookupEvents is asked by instance id first (the launch record); that request is faulted.
    let calls = [
        Call::new("ec2:DescribeInstances", Proto::Ec2, &a.instance),
        Call::new("ec2:DescribeVolumes", Proto::Ec2, &volume),
        Call::new("kms:DescribeKey", Proto::Json, &key_id(&a)),
        Call::new("kms:GetKeyPolicy", Proto::Json, &key_id(&a)),
        Call::new("kms:ListAliases", Proto::Json, &key_id(&a)),
        Call::new("cloudtrail:LookupEvents", Proto::Json, &a.instance),
        Call::new("iam:SimulatePrincipalPolicy", Proto::Query, &user_name(&a)),
    ];
    for call in &calls {
        for fault in FAULTS {
            let what = format!("diagnosis: {} / {fault:?}", call.name);
            let Some((run, used)) = run_cell(&mut obs, &what, &a.s.region, call, fault, &args, &[]) else { continue };
            let essential = call.name == "ec2:DescribeInstances";
            let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let report: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
            let sig = the_finding(&report).map(|f| signature(f, &a));
            let names_call = the_finding(&report).is_some_and(|f| {
                f["missing_evidence"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["call"] == call.name && m["reason"].as_str().is_some_and(|r| !r.trim().is_empty()))
            });
            let one_line = run.code == Some(1)
                && lines.len() == 1
                && lines[0].starts_with(&format!("error: {} failed: ", call.name))
                && run.stdout.trim().is_empty();
            let (outcome, details) = match (&sig, run.code) {
                (_, Some(1)) => (
                    if one_line { "exit 1, one line on stderr, no report".to_owned() } else { "exit 1".to_owned() },
                    format!(
                        "{} {}; {}",
                        error_prefix(first_line(&run.stderr)),
                        norm_reason(first_line(&run.stderr)),
                        tries(fault, used)
                    ),
                ),
                (None, _) => (
                    format!("exit {}, no finding", run.code.unwrap_or(-1)),
                    format!("{}; {}", skipped_list(&report, &a), tries(fault, used)),
                ),
                (Some(s), _) if *s == base => unchanged(fault, used, "the same finding as without the fault"),
                (Some(s), _) => {
                    let evidence = if s["evidence"] == base["evidence"] {
                        String::new()
                    } else {
                        format!("evidence: {}; ", evidence_list(s))
                    };
                    (
                        format!(
                            "finding, exit {}, missing evidence {}",
                            run.code.unwrap_or(-1),
                            if names_call { "names the call" } else { "does not name the call" }
                        ),
                        format!(
                            "causes {}; {evidence}missing evidence: {}; {}",
                            cause_list(s),
                            missing_list(s),
                            tries(fault, used)
                        ),
                    )
                }
            };
            let ok = match (essential, fault.transient()) {
                (_, true) => run.code == Some(0) && sig.as_ref() == Some(&base),
                (true, false) => one_line,
                // Evidence that could not be read: the finding all the same, and a partial run.
                (false, false) => run.code == Some(3) && sig.is_some() && names_call,
            };
            if !ok {
                obs.violation(&what, format!("{outcome} ({details})"));
            }
            obs.rows.push(Row::new(call.name, fault.describe(call.proto), outcome, details));
        }
    }
    obs
}

// ----------------------------------------------------------------------------------------------
// Sinks
// ----------------------------------------------------------------------------------------------

const SINKS: [&str; 3] = ["sns", "security_hub", "eventbridge"];

fn sink_of(call: &str) -> &'static str {
    match call {
        "sns:Publish" => "sns",
        "events:PutEvents" => "eventbridge",
        _ => "security_hub",
    }
}

async fn sinks_path() -> Observed {
    let mut obs = Observed::default();
    let a = article_in(Scenario::isolated("kldfs").await).await;
    let topic = a.s.sns.create_topic().name("kldfs-alerts").send().await.unwrap().topic_arn().unwrap().to_owned();
    a.s.events.create_event_bus().name("kldfs-bus").send().await.unwrap();
    let args = diagnose_args(
        &a.s.region,
        &a.instance,
        &["--notify-topic", &topic, "--security-hub", "--event-bus", "kldfs-bus"],
    );
    let base_run = run_bounded(&args, &[], emulator_url(), RUN_BOUND);
    assert!(obs.sane("sinks without faults", &base_run) && base_run.code == Some(0), "{}", base_run.stderr);
    let base_report: Value = serde_json::from_str(&base_run.stdout).unwrap();
    let base_finding = only_finding(&base_report);
    let base = signature(base_finding, &a);
    assert_eq!(base["delivered"], json!(SINKS), "{base_report:#}");
    let finding_id = base_finding["id"].as_str().unwrap().to_owned();
    obs.rows.push(Row::new(
        "(none)",
        "no fault".to_owned(),
        "delivered to all three sinks, exit 0",
        "delivered: sns, security_hub, eventbridge",
    ));

    // SNS and EventBridge carry the instance id in the message; Security Hub's calls the finding id.
    let calls = [
        Call::new("sns:Publish", Proto::Query, &a.instance),
        Call::new("securityhub:GetFindings", Proto::Json, &finding_id),
        Call::new("securityhub:BatchImportFindings", Proto::Json, &finding_id),
        Call::new("events:PutEvents", Proto::Json, &a.instance),
    ];
    for call in &calls {
        for fault in FAULTS {
            let what = format!("sinks: {} / {fault:?}", call.name);
            let Some((run, used)) = run_cell(&mut obs, &what, &a.s.region, call, fault, &args, &[]) else { continue };
            let report: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
            let sig = the_finding(&report).map(|f| signature(f, &a));
            let errors = error_lines(&run.stderr);
            let sink = sink_of(call.name);
            let delivered: Vec<String> = sig
                .as_ref()
                .map(|s| s["delivered"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            let has = |s: &str| delivered.iter().any(|d| d == s);
            let others_delivered = SINKS.iter().filter(|s| **s != sink).all(|s| has(s));
            let (outcome, details) = match &sig {
                None => (format!("exit {}, no finding", run.code.unwrap_or(-1)), first_line(&run.stderr).to_owned()),
                Some(s) if *s == base && run.code == Some(0) => {
                    unchanged(fault, used, "delivered to all three sinks, exit 0")
                }
                Some(_) => {
                    let lost: Vec<&str> = SINKS.iter().copied().filter(|s| !has(s)).collect();
                    let why: Vec<String> =
                        errors.iter().map(|e| format!("{} {}", error_prefix(e), norm_reason(e))).collect();
                    (
                        format!(
                            "exit {}; {} not delivered{}",
                            run.code.unwrap_or(-1),
                            if lost.is_empty() { "nothing".to_owned() } else { lost.join(", ") },
                            if others_delivered { ", the others delivered" } else { "" }
                        ),
                        format!(
                            "{}; {}",
                            if why.is_empty() { "no error line".to_owned() } else { why.join("; ") },
                            tries(fault, used)
                        ),
                    )
                }
            };
            let ok = if fault.transient() {
                run.code == Some(0) && sig.as_ref() == Some(&base) && errors.is_empty()
            } else {
                run.code == Some(1)
                    && errors.len() == 1
                    && errors[0].starts_with(&format!("error: {} failed: ", call.name))
                    && sig.is_some()
                    && !has(sink)
                    && others_delivered
            };
            if !ok {
                obs.violation(&what, format!("{outcome} ({details})"));
            }
            obs.rows.push(Row::new(call.name, fault.describe(call.proto), outcome, details));
        }
    }
    obs
}

// ----------------------------------------------------------------------------------------------
// Remediation
// ----------------------------------------------------------------------------------------------

/// A fresh opted-in article for one cell (apply writes, so no cell can reuse another's).
async fn remediation_article(region: &Scenario, n: usize) -> Article {
    let a = article_in(sibling(region, &format!("kldfr{n:02}"))).await;
    opt_in(&a).await;
    a
}

fn remediation_of(sig: &Value) -> Value {
    sig["remediations"].as_array().and_then(|r| r.first()).cloned().unwrap_or(Value::Null)
}

async fn remediation_path() -> Observed {
    let mut obs = Observed::default();
    let region = Scenario::isolated("kldfr").await;
    let env: &[(&str, &str)] = &[("RESTART_AFTER_REMEDIATION", "true")];
    let a = remediation_article(&region, 0).await;
    let base_run = run_bounded(
        &diagnose_args(&a.s.region, &a.instance, &["--remediate", "apply"]),
        env,
        emulator_url(),
        RUN_BOUND,
    );
    assert!(obs.sane("remediation without faults", &base_run) && base_run.code == Some(0), "{}", base_run.stderr);
    let base_report: Value = serde_json::from_str(&base_run.stdout).unwrap();
    let base = signature(only_finding(&base_report), &a);
    let base_r = remediation_of(&base);
    assert_eq!(
        (&base_r["status"], &base_r["verified"], &base_r["restart"]),
        (&json!("applied"), &json!(true), &json!(true)),
        "{base_report:#}"
    );
    obs.rows.push(Row::new(
        "(none)",
        "no fault".to_owned(),
        "`applied`, verified, instance restarted, exit 0",
        format!(
            "note: {}; restart: {}",
            base_r["note"].as_str().unwrap_or(""),
            base_r["restart_detail"].as_str().unwrap_or("")
        ),
    ));

    let calls: [(&'static str, Proto); 6] = [
        ("iam:ListUserTags", Proto::Query),
        ("kms:ListResourceTags", Proto::Json),
        ("iam:GetUserPolicy", Proto::Query),
        ("iam:ListUserPolicies", Proto::Query),
        ("iam:PutUserPolicy", Proto::Query),
        ("ec2:StartInstances", Proto::Ec2),
    ];
    let mut n = 0;
    for (name, proto) in calls {
        for fault in FAULTS {
            n += 1;
            let what = format!("remediation: {name} / {fault:?}");
            let a = remediation_article(&region, n).await;
            let matching = if name.starts_with("iam:") {
                user_name(&a)
            } else if name.starts_with("kms:") {
                key_id(&a)
            } else {
                a.instance.clone()
            };
            let call = Call::new(name, proto, &matching);
            let args = diagnose_args(&a.s.region, &a.instance, &["--remediate", "apply"]);
            let Some((run, used)) = run_cell(&mut obs, &what, &a.s.region, &call, fault, &args, env) else { continue };
            let report: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
            let sig = the_finding(&report).map(|f| signature(f, &a));
            let r = sig.as_ref().map(remediation_of).unwrap_or(Value::Null);
            let status = r["status"].as_str().unwrap_or("?");
            let note = r["note"].as_str().unwrap_or("");
            let detail = r["restart_detail"].as_str().unwrap_or("");
            let names = |text: &str| text.starts_with(&format!("`{name} failed:`"));
            let (outcome, details) = match &sig {
                None => (format!("exit {}, no finding", run.code.unwrap_or(-1)), first_line(&run.stderr).to_owned()),
                Some(s) if *s == base && run.code == Some(0) => {
                    unchanged(fault, used, "`applied`, verified, instance restarted")
                }
                Some(_) => {
                    let mut outcome = format!("remediation `{status}`");
                    if status == "applied" || status == "unchanged" {
                        write!(outcome, ", verified {}", r["verified"]).unwrap();
                    }
                    if !r["restart"].is_null() {
                        write!(outcome, ", restart.ok {}", r["restart"]).unwrap();
                    }
                    if names(note) || names(detail) {
                        outcome.push_str(", names the call");
                    }
                    write!(outcome, ", exit {}", run.code.unwrap_or(-1)).unwrap();
                    let mut details = format!("note: {note}");
                    if !detail.is_empty() {
                        write!(details, "; restart: {detail}").unwrap();
                    }
                    write!(details, "; {}", tries(fault, used)).unwrap();
                    (outcome, details)
                }
            };
            // A remediation call that failed makes the run partial (3); a failed restart is
            // reported in the finding, and the fix itself was applied (0).
            let want = if fault.transient() || name == "ec2:StartInstances" { 0 } else { 3 };
            let ok = run.code == Some(want)
                && sig.is_some()
                && if fault.transient() {
                    sig.as_ref() == Some(&base)
                } else if name == "ec2:StartInstances" {
                    status == "applied" && r["restart"] == json!(false) && names(detail)
                } else {
                    status == "failed" && names(note)
                };
            if !ok {
                obs.violation(&what, format!("{outcome} ({details})"));
            }
            obs.rows.push(Row::new(name, fault.describe(proto), outcome, details));
        }
    }
    obs
}

// ----------------------------------------------------------------------------------------------
// Unreachable endpoint
// ----------------------------------------------------------------------------------------------

fn unreachable_path() -> Observed {
    let mut obs = Observed::default();
    // Refused: a port that was free a moment ago. Silent: a listener that never answers (the
    // kernel accepts the connection; nobody reads or writes).
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    /// (what the endpoint does, its port, extra environment, timeouts in force, time bound)
    type Case<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], &'a str, Duration);
    let cases: [Case; 3] = [
        ("connection refused", refused, &[], "default", UNREACHABLE_BOUND),
        ("accepts, never answers", silent_port, TIMEOUT_ENV, "attempt 1 s, operation 3 s", UNREACHABLE_BOUND),
        ("accepts, never answers", silent_port, &[], "default", UNREACHABLE_DEFAULT_BOUND),
    ];
    let args = diagnose_args("eu-west-1", "i-0123456789abcdef0", &[]);
    for (endpoint, port, env, timeouts, bound) in cases {
        let what = format!("unreachable: {endpoint}, {timeouts} timeouts");
        let run = run_bounded(&args, env, &format!("http://127.0.0.1:{port}"), bound);
        obs.timings.push((what.clone(), run.elapsed));
        eprintln!("[{what}] exit {:?} in {:.1} s: {}", run.code, run.elapsed.as_secs_f64(), first_line(&run.stderr));
        let lines: Vec<&str> = run.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let one = lines.len() == 1 && lines[0].starts_with("error: ec2:DescribeInstances failed: ");
        if run.killed {
            obs.violation(&what, format!("still running after {} s, killed", bound.as_secs()));
        } else if run.code != Some(1) || !one || run.stderr.contains("panicked") {
            obs.violation(&what, format!("exit {:?}, stderr:\n{}", run.code, run.stderr));
        }
        obs.rows.push(Row::new(
            endpoint,
            format!("timeouts: {timeouts}"),
            if run.killed {
                format!("killed after {} s", bound.as_secs())
            } else if one {
                format!("exit {}, one line on stderr, within {} s", run.code.unwrap_or(-1), bound.as_secs())
            } else {
                format!("exit {}", run.code.unwrap_or(-1))
            },
            format!("`error: ec2:DescribeInstances failed:` {}", norm_reason(first_line(&run.stderr))),
        ));
    }
    drop(silent);
    obs
}

// ----------------------------------------------------------------------------------------------
// docs/reliability.md
// ----------------------------------------------------------------------------------------------

fn document(diagnosis: &[Row], sinks: &[Row], remediation: &[Row], unreachable: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("# Reliability: the fault matrix\n\n");
    out.push_str("<!-- Generated by tests/scenarios/faults.rs from what the tool did. Do not edit by hand. -->\n\n");
    writeln!(
        out,
        "What `kms-launch-doctor` does when an AWS call fails. For every call the tool makes, the real binary \
was run against the emulator (`tests/emulator/`) with one fault injected on that call \
(`POST /_kld/faults`, scoped to the scenario by a substring of the request body):\n\n\
- **denied**: an access-denied error, on every attempt;\n\
- **throttled**: a throttling error, on 2 attempts (then the call goes through), or on every attempt;\n\
- **bare HTTP 429 / 503** (an HTML body, no error code), on 2 attempts; **bare HTTP 500**, on every attempt;\n\
- **malformed body**: the real answer cut in half, with HTTP 200, on every attempt;\n\
- **no answer**: the request is held for {DELAY_SECONDS} s, on every attempt, with the tool run under \
`KLD_ATTEMPT_TIMEOUT_SECONDS=1` and `KLD_OPERATION_TIMEOUT_SECONDS=3` (otherwise the defaults: 3 s \
connect, 10 s attempt, 30 s operation, at most 4 attempts).\n\n\
Error codes are the ones each protocol uses: EC2 `UnauthorizedOperation` / `RequestLimitExceeded`; \
the JSON services (KMS, CloudTrail, Security Hub, EventBridge) `AccessDeniedException` / \
`ThrottlingException`; IAM and SNS `AccessDenied` / `Throttling`. \"Every attempt\" means a fault that \
does not run out ({ENDLESS} requests); \"attempts\" counts the requests that reached it. LookupEvents is \
faulted on its first request, by instance id (the launch record).\n"
    )
    .unwrap();
    writeln!(
        out,
        "Every outcome below is observed, not expected. The test checks the invariants on each cell: the exit \
code is 0, 1 or 3, nothing panics, every run ends by itself within {} s (it is killed and the test fails \
otherwise); a failed DescribeInstances exits 1 with one line on stderr; any other failed diagnosis call \
still gives the finding, with a `missing_evidence` entry naming the call and why, and exits 3 (partial); \
a failed sink exits 1 naming the call while the other sinks still deliver; a failed remediation call \
leaves the remediation `failed` with a note naming the call and exits 3 (for StartInstances, \
`restart.ok` false, exit 0: the fix was applied); and a transient fault \
(throttled, 429 or 503, twice) gives the same outcome as no fault, after retries. Reasons are reduced to their error \
code, and ids to placeholders, so that the tables do not change between runs.\n",
        RUN_BOUND.as_secs()
    )
    .unwrap();
    out.push_str("Regenerate after a change in behaviour, and commit the result:\n\n");
    out.push_str("```sh\nKLD_BLESS=1 cargo test --test scenarios faults::\n```\n");
    let sections: [(&str, &[Row]); 3] = [
        ("Diagnosis (`diagnose`, the Knowledge Center scenario)", diagnosis),
        ("Sinks (`--notify-topic`, `--security-hub` and `--event-bus` together)", sinks),
        ("Remediation (`--remediate apply` on an opted-in user, `RESTART_AFTER_REMEDIATION=true`)", remediation),
    ];
    for (title, rows) in sections {
        let t = table(rows);
        write!(out, "\n## {title}\n\n{t}").unwrap();
        if t.contains(DUMP) {
            write!(
                out,
                "\n{DUMP} The response had no error code, and the reason the tool reports is the SDK's debug \
rendering of the error and the raw response (status, headers, body), cut at 500 characters.\n"
            )
            .unwrap();
        }
    }
    out.push_str("\n## Unreachable endpoint\n\n");
    out.push_str("`diagnose` with `AWS_ENDPOINT_URL` pointing at a local port; the bound is enforced by killing the process.\n\n");
    out.push_str("| endpoint | timeouts | outcome | stderr |\n|---|---|---|---|\n");
    for r in unreachable {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            md(r.call),
            md(r.fault.trim_start_matches("timeouts: ")),
            md(&r.outcome),
            md(&r.details)
        )
        .unwrap();
    }
    out
}

/// Compares docs/reliability.md with `doc`; with `KLD_BLESS=1`, writes it. `Err` says why not.
fn check_doc(doc: &str) -> Result<(), String> {
    let path = root().join("docs/reliability.md");
    if std::env::var_os("KLD_BLESS").is_some() {
        std::fs::write(&path, doc).unwrap();
        return Ok(());
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk == doc {
        return Ok(());
    }
    let diff: Vec<String> = on_disk
        .lines()
        .zip(doc.lines())
        .filter(|(a, b)| a != b)
        .take(10)
        .map(|(a, b)| format!("- {a}\n+ {b}"))
        .collect();
    Err(format!(
        "{} is stale: run `KLD_BLESS=1 cargo test --test scenarios faults::` and commit it\n{}",
        path.display(),
        diff.join("\n")
    ))
}

fn on_thread<F>(name: &str, path: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<Observed>
where
    F: std::future::Future<Output = Observed>,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(16 * 1024 * 1024)
        .spawn(move || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(path()))
        .unwrap()
}

/// The whole matrix: the three paths side by side, each in its own region, then the document.
#[test]
fn fault_matrix() {
    let started = Instant::now();
    emulator_url();
    let bin = binary();
    let diagnosis = on_thread("faults-diagnosis", diagnosis_path);
    let sinks = on_thread("faults-sinks", sinks_path);
    let remediation = on_thread("faults-remediation", remediation_path);
    let unreachable = on_thread("faults-unreachable", || async { unreachable_path() });
    let join =
        |h: std::thread::JoinHandle<Observed>| h.join().unwrap_or_else(|_| panic!("a fault-matrix path panicked"));
    let (diagnosis, sinks, remediation, unreachable) =
        (join(diagnosis), join(sinks), join(remediation), join(unreachable));

    if bin != std::path::Path::new(env!("CARGO_BIN_EXE_kms-launch-doctor")) {
        let _ = std::fs::remove_file(bin);
    }

    let doc = document(&diagnosis.rows, &sinks.rows, &remediation.rows, &unreachable.rows);
    let doc_check = check_doc(&doc);
    let all = [&diagnosis, &sinks, &remediation, &unreachable];
    let mut slow: Vec<&(String, Duration)> = all.iter().flat_map(|o| &o.timings).collect();
    slow.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    eprintln!("fault matrix: {:?} in all; slowest cells:", started.elapsed());
    for (what, d) in slow.iter().take(15) {
        eprintln!("  {:>6.1} s  {what}", d.as_secs_f64());
    }
    let violations: Vec<&String> = all.iter().flat_map(|o| &o.violations).collect();
    let mut problems = String::new();
    if !violations.is_empty() {
        writeln!(problems, "{} cells break the tool's promises:", violations.len()).unwrap();
        for v in &violations {
            writeln!(problems, "- {v}").unwrap();
        }
    }
    if let Err(e) = doc_check {
        problems.push_str(&e);
    }
    assert!(problems.is_empty(), "{problems}");
}

/// The table's determinism rests on this: reasons lose their ids, times and messages.
#[test]
fn reasons_are_normalised_to_what_does_not_change() {
    let cases = [
        (
            "error: ec2:DescribeInstances failed: UnauthorizedOperation: User: arn:aws:sts::123456789012:assumed-role/kld/doctor is not authorized",
            "`UnauthorizedOperation`",
        ),
        ("kms:GetKeyPolicy failed: timed out", "timed out"),
        (
            "service error: unhandled error: Error (ServiceError(ServiceError { source: Unhandled(Unhandled { source: ErrorMetadata { code: None } }), raw: Response { status: StatusCode(429), headers: {\"date\": \"Sat, 28 Nov 2026 13:38:13 GMT\"} …",
            "HTTP 429, no error code †",
        ),
        (
            "service error: unhandled error: Error at offset 0: unexpected token '<' (ServiceError(… DeserializeError … raw: Response { status: StatusCode(200) …",
            "HTTP 200, body not parseable, no error code †",
        ),
        (
            "error: ec2:DescribeInstances failed: the response does not describe i-3e80b2530171d2eab (partial or unreadable answer)",
            "the response does not describe <instance> (partial or unreadable answer)",
        ),
        (
            "could not reach the endpoint: dispatch failure: io error: tcp connect error: Connection refused (os error 111)",
            "could not reach the endpoint",
        ),
    ];
    for (reason, expected) in cases {
        assert_eq!(norm_reason(reason), expected, "{reason}");
    }
}
