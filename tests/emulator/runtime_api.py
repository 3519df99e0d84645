"""A Lambda Runtime API (2018-06-01) stub on 127.0.0.1: the one the benchmarks use in-process and
the Rust tests spawn (``python tests/emulator runtime-api``, below) to run the real binary in
Lambda mode. It needs no moto.

``GET /2018-06-01/runtime/invocation/next`` hands out the queued events one by one, with the
headers the runtime client needs; once the queue is empty it holds the request open until an
event is submitted (``submit()``, for a benchmark that plays the event source) or ``close()``.
Each invocation's ``Lambda-Runtime-Deadline-Ms`` is its delivery time plus ``timeout_seconds``,
the function's ``Timeout`` (900 s, Lambda's largest, unless the caller says otherwise): the
function plans its work against that deadline, so a benchmark of the deployed shape must give
the template's. Request ids are ``req-<n>``, in submission order. ``POST
.../invocation/<id>/response`` and ``.../error`` (and ``/init/error``) record the outcome and, if
the caller gave ``on_answer``, pass it on as it arrives. Each connection is served in its own thread (the runtime's HTTP client may
open a new connection for a response while an idle one stays open).

Times are ``time.perf_counter()`` values, so the caller can relate them to when it started the
process: ``first_next`` (the first ``invocation/next`` request: start-up is over),
``delivered[i]`` and ``completed[i]`` per invocation; ``deadline_ms[i]`` is the deadline it was
given (epoch milliseconds). The stub does not stop a function at its deadline: the caller
decides what an answer after it means (Lambda would have failed the invocation).

``python tests/emulator runtime-api [--timeout-seconds 900]`` (``main``) serves the events of one
line of stdin (a JSON list), prints ``KLD_RUNTIME_API=127.0.0.1:<port>`` (the value for
``AWS_LAMBDA_RUNTIME_API``), then one JSON line per answer, ``{"request_id", "kind", "body"}``
(``kind`` "response" or "error"), in the order they arrive, and stops when stdin closes: the
process that started it holds stdin open for as long as it wants the stub, so the stub never
outlives it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:kms-launch-doctor"


class RuntimeApi:
    def __init__(self, events: list[Any], timeout_seconds: float = 900.0,
                 on_answer: Callable[[str, str, Any], None] | None = None) -> None:
        self.timeout_seconds = timeout_seconds
        self.on_answer = on_answer
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.pending: deque[tuple[str, Any]] = deque()
        self.submitted = 0
        self.first_next: float | None = None
        self.delivered: dict[str, float] = {}
        self.deadline_ms: dict[str, int] = {}
        self.completed: dict[str, float] = {}
        self.outcomes: dict[str, tuple[str, Any]] = {}
        self.answered: dict[str, threading.Event] = {}
        self.all_done = threading.Event()
        self.first_next_seen = threading.Event()
        self.closing = threading.Event()
        for event in events:
            self.submit(event)
        if not events:
            self.all_done.set()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access logs
                pass

            def _reply(self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if not self.path.endswith("/runtime/invocation/next"):
                    self._reply(404, b'{"error": "not found"}')
                    return
                now = time.perf_counter()
                with api.wakeup:
                    if api.first_next is None:
                        api.first_next = now
                        api.first_next_seen.set()
                    # Nothing to do yet: hold the function here until an event is submitted or
                    # the benchmark stops it (as Lambda freezes an idle environment).
                    api.wakeup.wait_for(lambda: api.pending or api.closing.is_set())
                    if not api.pending:
                        self.close_connection = True
                        return
                    request_id, event = api.pending.popleft()
                    deadline = int(time.time() * 1000 + api.timeout_seconds * 1000)
                    api.delivered[request_id] = time.perf_counter()
                    api.deadline_ms[request_id] = deadline
                payload = json.dumps(event).encode()
                self._reply(200, payload, {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline),
                    "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
                })

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                now = time.perf_counter()
                parts = self.path.rstrip("/").split("/")
                kind = parts[-1]
                request_id = parts[-2] if len(parts) >= 2 else ""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                with api.lock:
                    api.completed[request_id] = now
                    api.outcomes[request_id] = (kind, body)
                    if api.on_answer is not None:
                        api.on_answer(request_id, kind, body)
                    answered = sum(1 for r in api.outcomes if r in api.answered)
                    if answered >= api.submitted or kind == "error" and request_id == "init":
                        api.all_done.set()
                    if request_id in api.answered:
                        api.answered[request_id].set()
                self._reply(202)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the function is killed mid-connection at the end of every run

        self.server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def submit(self, event: Any) -> str:
        """Queues one invocation; returns its request id (``req-<n>``, in submission order)."""
        with self.wakeup:
            request_id = f"req-{self.submitted}"
            self.submitted += 1
            self.answered[request_id] = threading.Event()
            self.pending.append((request_id, event))
            self.all_done.clear()
            self.wakeup.notify_all()
        return request_id

    def wait(self, request_id: str, timeout: float) -> tuple[str, Any] | None:
        """The invocation's outcome (``("response"|"error", body)``), or None if it has none
        after `timeout` seconds."""
        if not self.answered[request_id].wait(timeout):
            return None
        with self.lock:
            return self.outcomes[request_id]

    def close(self) -> None:
        with self.wakeup:
            self.closing.set()
            self.wakeup.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> RuntimeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``runtime-api``: the stub for another process (the Rust tests), over stdin and stdout."""
    parser = argparse.ArgumentParser(prog="emulator runtime-api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout-seconds", type=float, default=900.0,
                        help="each invocation's deadline after its delivery (the function's Timeout)")
    args = parser.parse_args(sys.argv[2:] if argv is None else argv)
    events = json.loads(sys.stdin.readline() or "[]")
    if not isinstance(events, list):
        parser.error("stdin's first line must be a JSON list of events")

    def report(request_id: str, kind: str, body: Any) -> None:
        print(json.dumps({"request_id": request_id, "kind": kind, "body": body}), flush=True)

    with RuntimeApi(events, args.timeout_seconds, on_answer=report) as api:
        print(f"KLD_RUNTIME_API={api.address}", flush=True)
        while sys.stdin.readline():  # until the caller closes stdin (or exits)
            pass
    return 0
