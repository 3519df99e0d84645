//! A minimal Lambda Runtime API (2018-06-01) on 127.0.0.1, enough to run the real binary in
//! Lambda mode: it hands out the queued events one by one, records what the function posts
//! back, and holds the next `invocation/next` open once the queue is empty.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::Value;

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
}

impl RuntimeApi {
    pub fn start(events: Vec<Value>) -> Self {
        Self::start_with_budget(events, 60_000)
    }

    /// Each invocation's deadline (`Lambda-Runtime-Deadline-Ms`) is `budget_ms` after it is
    /// handed out, as Lambda sets it from the function's timeout.
    pub fn start_with_budget(events: Vec<Value>, budget_ms: i64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (tx, rx) = channel();
        let queue = Arc::new(Mutex::new(events.into_iter().enumerate()));
        // One thread per connection: the runtime's HTTP client may open a new connection for a
        // response while an idle one stays open.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let (queue, tx) = (Arc::clone(&queue), tx.clone());
                thread::spawn(move || serve(stream, &queue, &tx, budget_ms));
            }
        });
        Self { address, outcomes: rx }
    }
}

type Queue = Arc<Mutex<std::iter::Enumerate<std::vec::IntoIter<Value>>>>;

fn read_request(stream: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

/// Serves requests on one connection; once the queue is empty, a `next` is held open.
fn serve(mut stream: TcpStream, queue: &Queue, tx: &Sender<Outcome>, budget_ms: i64) {
    while let Some((method, path, body)) = read_request(&mut stream) {
        if method == "GET" && path.ends_with("/invocation/next") {
            let next = queue.lock().map(|mut q| q.next()).ok().flatten();
            let Some((n, event)) = next else {
                // Hold the function here until the test kills it.
                thread::sleep(std::time::Duration::from_secs(600));
                return;
            };
            let payload = event.to_string();
            let deadline = chrono::Utc::now().timestamp_millis() + budget_ms;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: req-{n}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:kms-launch-doctor\r\nLambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000\r\nContent-Length: {}\r\n\r\n{payload}",
                payload.len()
            );
        } else if method == "POST" {
            let segments: Vec<&str> = path.split('/').collect();
            let kind = segments.last().copied().unwrap_or_default().to_owned();
            let request_id = segments.get(segments.len().saturating_sub(2)).copied().unwrap_or_default().to_owned();
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let _ = tx.send(Outcome { request_id, kind, body });
            let _ = write!(stream, "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{{}}");
        } else {
            let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    }
}
