"""The middleware's view of AWS requests: which call it is (service, action, region), the log of
recorded calls (``GET /_kld/calls``) and the faults injected into them (``POST /_kld/faults``).
"""

from __future__ import annotations

import http
import io
import itertools
import json
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

from moto.core.request import Request as MotoRequest
from moto.core.routing import get_service_router
from werkzeug.wrappers import Response

from .common import ControlError, new_request_id


# --------------------------------------------------------------------------------------
# Call recording
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One AWS request as seen by the middleware."""

    service: str | None
    action: str | None
    region: str | None
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "action": self.action, "region": self.region, "time": self.time}


class CallLog:
    """Thread-safe, append-only list of recorded calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    def add(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def query(self, service: str | None, region: str | None, action: str | None) -> list[Call]:
        with self._lock:
            calls = list(self._calls)
        wanted = {"service": service, "region": region, "action": action}
        return [c for c in calls if all(v is None or getattr(c, k) == v for k, v in wanted.items())]


def signing_scope(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """(service, region) from the SigV4 ``Credential=AKID/date/region/service/aws4_request``."""
    match = re.search(
        r"Credential=[^/,\s]+/\d+/([^/,\s]+)/([^/,\s]+)/aws4_request", environ.get("HTTP_AUTHORIZATION", "")
    )
    if not match:
        return None, None
    return match.group(2), match.group(1)


def request_action(environ: dict[str, Any], body: bytes, service: str | None) -> str | None:
    """The API action: X-Amz-Target, else the query ``Action`` parameter, else the REST route."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1]
    for source in (environ.get("QUERY_STRING", ""), form_text(environ, body)):
        action = parse_qs(source).get("Action")
        if action:
            return action[0]
    return rest_action(environ, body, service)


def form_text(environ: dict[str, Any], body: bytes) -> str:
    """The body as text if it is a form (query protocol), else the empty string."""
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return body.decode("utf-8", errors="replace")
    return ""


def rest_action(environ: dict[str, Any], body: bytes, service: str | None) -> str | None:
    """Operation name of a REST-protocol request, found with moto's botocore-model router."""
    if not service:
        return None
    try:
        operation, _ = get_service_router(service).match(MotoRequest(dict(environ)))
        return operation.name
    except Exception:  # unknown service, no matching route: the action stays unknown
        return None
    finally:
        environ["wsgi.input"] = io.BytesIO(body)


# --------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------

FAULT_KINDS = ("error", "malformed", "delay", "http")
DEFAULT_FAULT_STATUS = {"error": 400, "malformed": 200, "delay": 200, "http": 500}


@dataclass
class Fault:
    """A registered fault; ``None`` selectors match anything."""

    id: str
    kind: str = "error"
    service: str | None = None
    action: str | None = None
    region: str | None = None
    match: str | None = None
    status: int = 400
    code: str = "InjectedFault"
    message: str = "Fault injected by the kld emulator"
    times: int | None = None
    delay_seconds: float = 0.0
    body: str | None = None

    @classmethod
    def from_spec(cls, fault_id: str, spec: dict[str, Any]) -> Fault:
        """Build a fault from the ``POST /_kld/faults`` JSON, validating it."""
        kind = spec.get("kind", "error")
        if kind not in FAULT_KINDS:
            raise ControlError(400, f"kind must be one of {FAULT_KINDS}")
        times = spec.get("times")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ControlError(400, "times must be a positive integer")
        fault = cls(
            id=fault_id,
            kind=kind,
            status=int(spec.get("status", DEFAULT_FAULT_STATUS[kind])),
            times=times,
            delay_seconds=float(spec.get("delay_seconds", 0.0)),
        )
        for name in ("service", "action", "region", "match", "code", "message", "body"):
            if spec.get(name) is not None:
                setattr(fault, name, str(spec[name]))
        return fault

    def applies_to(self, call: Call, body_text: str) -> bool:
        return (
            (self.service is None or (call.service or "").lower() == self.service.lower())
            and (self.action is None or call.action == self.action)
            and (self.region is None or call.region == self.region)
            and (self.match is None or self.match in body_text)
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FaultRegistry:
    """Faults in registration order; ``take`` finds the first match and uses it up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        with self._lock:
            fault = Fault.from_spec(f"fault-{next(self._ids)}", spec)
            self._faults.append(fault)
            return fault

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) < before

    def take(self, call: Call, body_text: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(call, body_text):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None


def wire_protocol(environ: dict[str, Any], service: str | None) -> str:
    """How the request was encoded: "json", "ec2", "query", "rest-xml" or "rest-json"."""
    content_type = environ.get("CONTENT_TYPE", "")
    if "x-amz-json" in content_type or environ.get("HTTP_X_AMZ_TARGET"):
        return "json"
    if service == "ec2":
        return "ec2"
    if content_type.startswith("application/x-www-form-urlencoded"):
        return "query"
    if service in ("s3", "route53", "cloudfront"):
        return "rest-xml"
    return "rest-json"


def error_response(fault: Fault, protocol: str, environ: dict[str, Any]) -> Response:
    """An AWS error in the request's protocol, parseable by botocore and the Rust SDK."""
    request_id = new_request_id()
    code, message = xml_escape(fault.code), xml_escape(fault.message)
    headers = {"x-amzn-RequestId": request_id}
    if protocol in ("json", "rest-json"):
        body = json.dumps({"__type": fault.code, "message": fault.message})
        headers["x-amzn-ErrorType"] = fault.code
    elif protocol == "ec2":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
    elif protocol == "query":
        error_type = "Sender" if fault.status < 500 else "Receiver"
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
            f"<Type>{error_type}</Type><Code>{code}</Code><Message>{message}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    else:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        )
    return Response(
        body, status=fault.status, headers=headers, content_type=protocol_content_type(protocol, environ)
    )


def protocol_content_type(protocol: str, environ: dict[str, Any]) -> str:
    """Content type of a response in ``protocol``; JSON requests are answered in their version."""
    if protocol == "json":
        request_type = environ.get("CONTENT_TYPE", "")
        return request_type if "x-amz-json" in request_type else "application/x-amz-json-1.1"
    return {
        "rest-json": "application/json",
        "ec2": "text/xml;charset=UTF-8",
        "query": "text/xml",
        "rest-xml": "application/xml",
    }[protocol]


def http_failure_response(fault: Fault) -> Response:
    """A bare HTTP failure, as a load balancer in front of AWS would send it."""
    try:
        phrase = http.HTTPStatus(fault.status).phrase
    except ValueError:
        phrase = "Error"
    body = (
        fault.body
        if fault.body is not None
        else (
            f"<html><head><title>{fault.status} {phrase}</title></head>"
            f"<body><h1>{fault.status} {phrase}</h1></body></html>"
        )
    )
    return Response(body, status=fault.status, content_type="text/html")


def truncate_body(body: bytes) -> bytes:
    """Cut a response in half so that no parser accepts it; never return a valid body."""
    if len(body) < 2:
        return b"<"
    return body[: len(body) // 2]
