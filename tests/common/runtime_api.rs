//! The Lambda Runtime API (2018-06-01) stub the real binary runs against in Lambda mode: the
//! benchmarks' stub, `tests/emulator/runtime_api.py`, spawned as `python tests/emulator
//! runtime-api`. It hands out the queued events one by one (request ids `req-<n>`), reports what
//! the function posts back, and holds the next `invocation/next` open once the queue is empty.
//! The stub lives as long as this handle: it exits when its stdin, held here, closes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::thread;

use serde_json::Value;

use super::root;

/// What the function posted for one invocation.
#[derive(Debug)]
pub struct Outcome {
    pub request_id: String,
    /// `response` or `error`.
    pub kind: String,
    pub body: Value,
}

pub struct RuntimeApi {
    pub address: String,
    pub outcomes: Receiver<Outcome>,
    stub: Child,
    stdin: Option<ChildStdin>,
}

impl RuntimeApi {
    pub fn start(events: Vec<Value>) -> Self {
        Self::start_with_budget(events, 60_000)
    }

    /// Each invocation's deadline (`Lambda-Runtime-Deadline-Ms`) is `budget_ms` after it is
    /// handed out, as Lambda sets it from the function's timeout.
    pub fn start_with_budget(events: Vec<Value>, budget_ms: i64) -> Self {
        // The stub needs no package beyond the standard library; the emulator's venv when there is one.
        let venv = root().join(".venv/bin/python");
        let python = if venv.exists() { venv } else { "python3".into() };
        let mut stub = Command::new(python)
            .arg(root().join("tests/emulator"))
            .args(["runtime-api", "--timeout-seconds", &(budget_ms as f64 / 1000.0).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Runtime API stub");
        let mut stdin = stub.stdin.take().expect("stub stdin");
        writeln!(stdin, "{}", Value::Array(events)).expect("send the events to the stub");
        let mut lines = BufReader::new(stub.stdout.take().expect("stub stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let address = first.strip_prefix("KLD_RUNTIME_API=").expect("the stub printed its address").to_owned();
        let (tx, rx) = channel();
        // One JSON line per answer, in the order the function posted them.
        thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let outcome = Outcome {
                    request_id: v["request_id"].as_str().unwrap_or_default().to_owned(),
                    kind: v["kind"].as_str().unwrap_or_default().to_owned(),
                    body: v["body"].clone(),
                };
                if tx.send(outcome).is_err() {
                    break;
                }
            }
        });
        Self { address, outcomes: rx, stub, stdin: Some(stdin) }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        drop(self.stdin.take()); // the stub's signal to stop
        let _ = self.stub.kill();
        let _ = self.stub.wait();
    }
}
