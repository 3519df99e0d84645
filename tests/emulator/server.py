"""The server: moto patched in-process, the WSGI middleware (control routes, call recording,
faults) around moto's app, werkzeug serving it, and the command line (``serve``, ``run``).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from .calls import (
    Call,
    CallLog,
    Fault,
    FaultRegistry,
    error_response,
    http_failure_response,
    protocol_content_type,
    request_action,
    signing_scope,
    truncate_body,
    wire_protocol,
)
from .cloudtrail import TRAIL_STORE, patch_cloudtrail
from .common import CONTROL_PREFIX, ControlError, DEFAULT_REGION, LOG
from .ec2 import apply_launch_failure, patch_autoscaling, patch_ec2, patch_ec2_filters
from .iam import patch_iam_users, patch_simulation
from .kms import patch_kms, upsert_kms_key
from .messaging import patch_sns, peek_sqs_messages
from .organizations import patch_organizations, reset_organizations
from .securityhub import patch_securityhub
from .sts import patch_sts, upsert_iam_role


def install_patches() -> None:
    """Patch moto in-process; must run before the server handles requests.

    Idempotent: the originals each patch wraps were captured when its module was imported.
    """
    patch_ec2_filters()
    patch_ec2()
    patch_cloudtrail()
    patch_simulation()
    patch_iam_users()
    patch_organizations()
    patch_sts()
    patch_kms()
    patch_sns()
    patch_securityhub()
    patch_autoscaling()

# --------------------------------------------------------------------------------------
# Control routes and the WSGI middleware
# --------------------------------------------------------------------------------------


class Emulator:
    """The WSGI app: control routes, call recording and faults around moto's app."""

    def __init__(self, moto_app: Callable[..., Any]):
        self.moto_app = moto_app
        self.calls = CallLog()
        self.faults = FaultRegistry()
        self.routes: dict[tuple[str, str], Callable[[Request], Any]] = {
            ("GET", "health"): lambda request: {"ok": True},
            ("POST", "reset"): self.reset,
            ("POST", "ec2/launch-failure"): lambda request: apply_launch_failure(json_body(request)),
            ("POST", "cloudtrail/events"): self.store_trail_events,
            ("POST", "cloudtrail/throttle"): self.set_throttle,
            ("POST", "kms/key"): lambda request: upsert_kms_key(json_body(request)),
            ("POST", "iam/role"): lambda request: upsert_iam_role(json_body(request)),
            ("GET", "calls"): self.list_calls,
            ("GET", "sqs/messages"): lambda request: peek_sqs_messages(request.args),
            ("POST", "calls/reset"): self.reset_calls,
            ("GET", "faults"): lambda request: {"faults": [f.to_dict() for f in self.faults.list()]},
            ("POST", "faults"): lambda request: {"id": self.faults.add(json_body(request)).id},
            ("DELETE", "faults"): self.clear_faults,
        }

    # -- WSGI entry point ------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self.control(Request(environ))(environ, start_response)
        if path.startswith("/moto-api"):
            return self.moto_app(environ, start_response)
        return self.aws_request(environ, start_response)

    def aws_request(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Record the call, then apply the first matching fault or hand over to moto."""
        body = buffer_body(environ)
        service, region = signing_scope(environ)
        call = Call(service, request_action(environ, body, service), region, time.time())
        self.calls.add(call)
        fault = self.faults.take(call, body.decode("utf-8", errors="replace"))
        if fault is None:
            return self.moto_app(environ, start_response)
        if fault.kind == "delay":
            time.sleep(fault.delay_seconds)
            return self.moto_app(environ, start_response)
        protocol = wire_protocol(environ, service)
        if fault.kind == "error":
            response = error_response(fault, protocol, environ)
        elif fault.kind == "http":
            response = http_failure_response(fault)
        else:
            response = self.malformed_response(fault, environ, protocol)
        return response(environ, start_response)

    def malformed_response(self, fault: Fault, environ: dict[str, Any], protocol: str) -> Response:
        """moto's real answer cut in half (or the fault's body), with a status of 200."""
        answer = Response.from_app(self.moto_app, environ)
        body = fault.body.encode() if fault.body is not None else truncate_body(answer.get_data())
        return Response(body, status=fault.status, content_type=protocol_content_type(protocol, environ))

    # -- control routes ---------------------------------------------------------------

    def control(self, request: Request) -> Response:
        """Dispatch ``/_kld/<route>``; handler results are sent as JSON."""
        route = request.path[len(CONTROL_PREFIX) :].strip("/")
        try:
            if request.method == "DELETE" and route.startswith("faults/"):
                result = self.delete_fault(route[len("faults/") :])
            elif (request.method, route) in self.routes:
                result = self.routes[(request.method, route)](request)
            else:
                raise ControlError(404, f"no control route {request.method} {request.path}")
            return json_response(result)
        except ControlError as error:
            return json_response({"error": error.message}, error.status)
        except (KeyError, ValueError, TypeError) as error:  # malformed control input
            return json_response({"error": f"bad request: {error!r}"}, 400)

    def reset(self, request: Request) -> dict[str, Any]:
        moto_api_backend.reset()
        reset_organizations()
        TRAIL_STORE.reset()
        self.calls.clear()
        self.faults.clear()
        return {"ok": True}

    def store_trail_events(self, request: Request) -> dict[str, Any]:
        spec = json_body(request)
        events = spec.get("events")
        if not isinstance(events, list):
            raise ControlError(400, "events must be a list")
        ids = TRAIL_STORE.store(
            spec.get("account_id", DEFAULT_ACCOUNT_ID), spec.get("region", DEFAULT_REGION), events
        )
        return {"stored": len(ids), "event_ids": ids}

    def set_throttle(self, request: Request) -> dict[str, Any]:
        TRAIL_STORE.throttle_enabled = bool(json_body(request).get("enabled", True))
        return {"enabled": TRAIL_STORE.throttle_enabled}

    def list_calls(self, request: Request) -> dict[str, Any]:
        args = request.args
        calls = self.calls.query(args.get("service"), args.get("region"), args.get("action"))
        return {"calls": [c.to_dict() for c in calls]}

    def reset_calls(self, request: Request) -> dict[str, Any]:
        self.calls.clear()
        return {"ok": True}

    def clear_faults(self, request: Request) -> dict[str, Any]:
        self.faults.clear()
        return {"ok": True}

    def delete_fault(self, fault_id: str) -> dict[str, Any]:
        if not self.faults.remove(fault_id):
            raise ControlError(404, f"no fault {fault_id}")
        return {"ok": True}


def buffer_body(environ: dict[str, Any]) -> bytes:
    """Read the whole request body and put it back so moto can read it again."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):  # chunked: werkzeug already de-chunks
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def json_body(request: Request) -> dict[str, Any]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise ControlError(400, "request body must be a JSON object")
    return body


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")

# --------------------------------------------------------------------------------------
# Server lifecycle and command line
# --------------------------------------------------------------------------------------


class EmulatorServer:
    """moto + the emulator middleware on a threaded werkzeug server in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> str:
        """Bind (port 0 = a free port), start serving and return the base URL."""
        install_patches()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        app = Emulator(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="kld-emulator", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

def emulator_environment(url: str, base: dict[str, str]) -> dict[str, str]:
    """The environment a command run against the emulator gets."""
    env = dict(base)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    env.setdefault("AWS_REGION", region)
    env.setdefault("AWS_DEFAULT_REGION", region)
    env.update(
        {
            "KLD_EMULATOR_URL": url,
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "kld-emulator",
            "AWS_SECRET_ACCESS_KEY": "kld-emulator",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(host: str, port: int, parent_pid: int | None) -> int:
    """``serve`` mode: run until SIGTERM/SIGINT or until ``parent_pid`` goes away."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    watch_reparenting = parent_pid is not None and parent_pid == os.getppid()
    with EmulatorServer(host, port) as server:
        print(f"KLD_EMULATOR_URL={server.url}", flush=True)
        sys.stdout = sys.stderr  # keep stdout to the single URL line
        while not stop.wait(1.0):
            if parent_pid is not None and (
                not pid_alive(parent_pid) or (watch_reparenting and os.getppid() != parent_pid)
            ):
                LOG.warning("parent process %s is gone; stopping", parent_pid)
                break
    return 0


def exit_status(returncode: int) -> int:
    """A shell-style exit status: 128+N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def run_command(command: list[str], host: str, port: int) -> int:
    """``run`` mode: CMD against a fresh emulator; always stops the server."""
    if not command:
        LOG.error("run: no command given (usage: python tests/emulator run -- CMD ARGS...)")
        return 2
    with EmulatorServer(host, port) as server:
        sys.stdout.flush()
        sys.stdout = sys.stderr  # CMD owns stdout; anything moto prints goes to stderr
        try:
            child = subprocess.Popen(command, env=emulator_environment(server.url, dict(os.environ)))
        except OSError as error:
            LOG.error("run: cannot start %s: %s", command[0], error)
            return 127
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
        try:
            return exit_status(child.wait())
        except KeyboardInterrupt:  # the child got the same Ctrl-C; give it time to exit
            try:
                return exit_status(child.wait(timeout=10))
            except subprocess.TimeoutExpired:
                child.kill()
                return exit_status(child.wait())
        finally:
            signal.signal(signal.SIGTERM, previous)
            if child.poll() is None:
                child.kill()
                child.wait()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="moto-based AWS emulator for kms-launch-doctor tests")
    modes = parser.add_subparsers(dest="mode", required=True)
    serve_parser = modes.add_parser("serve", help="run the emulator until signalled")
    serve_parser.add_argument("--parent-pid", type=int, help="stop when this process exits")
    run_parser = modes.add_parser("run", help="run a command against a fresh emulator")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    for mode in (serve_parser, run_parser):
        mode.add_argument("--host", default="127.0.0.1")
        mode.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    if args.mode == "run" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="kld-emulator: %(levelname)s %(message)s"
    )
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.mode == "serve":
        return serve(args.host, args.port, args.parent_pid)
    return run_command(args.command, args.host, args.port)
