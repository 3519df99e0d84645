"""CloudTrail: events stored through ``POST /_kld/cloudtrail/events`` and the LookupEvents
that reads them, throttled as AWS throttles it.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moto.cloudtrail.responses import CloudTrailResponse
from moto.core.exceptions import JsonRESTError
from moto.core.utils import utcnow

from .common import ControlError, as_list, dig, parse_timestamp


# --------------------------------------------------------------------------------------
# CloudTrail: stored events and LookupEvents
# --------------------------------------------------------------------------------------

LOOKUP_KEYS = (
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
)
MAX_LOOKUP_RESULTS = 50


@dataclass
class TrailEvent:
    """A stored event in the shape LookupEvents returns, plus its sort position."""

    seq: int
    event_time: float
    cloudtrail_event: str
    event_id: str
    event_name: str | None = None
    event_source: str | None = None
    username: str | None = None
    access_key_id: str | None = None
    read_only: str | None = None
    resources: list[dict[str, str]] = field(default_factory=list)

    @property
    def sort_key(self) -> tuple[float, int]:
        """Events are returned in descending sort_key order: newest first."""
        return (self.event_time, self.seq)

    def attribute_matches(self, key: str, value: str) -> bool:
        if key == "ResourceType":
            return any(r.get("ResourceType") == value for r in self.resources)
        if key == "ResourceName":
            return any(r.get("ResourceName") == value for r in self.resources)
        attribute = {
            "EventId": self.event_id,
            "EventName": self.event_name,
            "ReadOnly": self.read_only,
            "Username": self.username,
            "EventSource": self.event_source,
            "AccessKeyId": self.access_key_id,
        }[key]
        return attribute == value

    def to_api(self) -> dict[str, Any]:
        item = {
            "EventId": self.event_id,
            "EventName": self.event_name,
            "ReadOnly": self.read_only,
            "AccessKeyId": self.access_key_id,
            "EventTime": self.event_time,
            "EventSource": self.event_source,
            "Username": self.username,
            "Resources": self.resources,
            "CloudTrailEvent": self.cloudtrail_event,
        }
        return {k: v for k, v in item.items() if v is not None}


def record_username(identity: Any) -> str | None:
    """LookupEvents' Username: userName, the session name of an AssumedRole, "root"."""
    if not isinstance(identity, dict):
        return None
    if identity.get("userName"):
        return str(identity["userName"])
    kind = identity.get("type")
    if kind == "AssumedRole" and isinstance(identity.get("arn"), str):
        return identity["arn"].rsplit("/", 1)[-1]
    if kind == "Root":
        return "root"
    return None


def record_instance_ids(record: dict[str, Any]) -> list[str]:
    """Instance ids in ``requestParameters``/``responseElements`` ``instancesSet.items``."""
    ids = []
    for section in ("requestParameters", "responseElements"):
        for item in as_list(dig(record, section, "instancesSet", "items")):
            instance_id = dig(item, "instanceId")
            if isinstance(instance_id, str) and instance_id not in ids:
                ids.append(instance_id)
    return ids


def record_kms_key_arn(record: dict[str, Any], account_id: str, region: str) -> str | None:
    """ARN of ``requestParameters.keyId`` of a KMS record (aliases are not resolved)."""
    key_id = dig(record, "requestParameters", "keyId")
    if not isinstance(key_id, str) or key_id.startswith("alias/") or ":alias/" in key_id:
        return None
    if key_id.startswith("arn:"):
        return key_id
    account = record.get("recipientAccountId") or account_id
    return f"arn:aws:kms:{record.get('awsRegion') or region}:{account}:key/{key_id}"


def record_resources(record: dict[str, Any], account_id: str, region: str) -> list[dict[str, str]]:
    """Resources LookupEvents lists for a record: its own plus derived EC2/KMS ones."""
    resources: list[dict[str, str]] = []

    def add(resource_type: Any, name: Any) -> None:
        entry = {"ResourceType": str(resource_type), "ResourceName": str(name)}
        if name is not None and entry not in resources:
            resources.append(entry)

    for resource in as_list(record.get("resources")):
        if isinstance(resource, dict):
            add(resource.get("type"), resource.get("ARN"))
    if record.get("eventSource") == "ec2.amazonaws.com":
        for instance_id in record_instance_ids(record):
            add("AWS::EC2::Instance", instance_id)
    if record.get("eventSource") == "kms.amazonaws.com":
        key_arn = record_kms_key_arn(record, account_id, region)
        if key_arn and all(r["ResourceName"] != key_arn for r in resources):
            add("AWS::KMS::Key", key_arn)
    return resources


def read_only_text(value: Any) -> str | None:
    """``readOnly`` as LookupEvents reports it: the string "true" or "false"."""
    if value is None:
        return None
    return str(value).lower()


def event_from_record(seq: int, record: dict[str, Any], account_id: str, region: str) -> TrailEvent:
    """A TrailEvent from a full CloudTrail record (missing eventID/eventTime are filled in)."""
    record = dict(record)
    record.setdefault("eventID", str(uuid.uuid4()))
    record.setdefault("eventTime", utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"))
    return TrailEvent(
        seq=seq,
        event_time=parse_timestamp(record["eventTime"]),
        cloudtrail_event=json.dumps(record, separators=(",", ":")),
        event_id=str(record["eventID"]),
        event_name=record.get("eventName"),
        event_source=record.get("eventSource"),
        username=record_username(record.get("userIdentity")),
        access_key_id=dig(record, "userIdentity", "accessKeyId"),
        read_only=read_only_text(record.get("readOnly")),
        resources=record_resources(record, account_id, region),
    )


def event_from_raw(seq: int, spec: dict[str, Any]) -> TrailEvent:
    """A TrailEvent whose CloudTrailEvent is an arbitrary (possibly broken) string."""
    return TrailEvent(
        seq=seq,
        event_time=parse_timestamp(spec["event_time"]) if spec.get("event_time") is not None else time.time(),
        cloudtrail_event=str(spec["raw"]),
        event_id=str(spec.get("event_id") or uuid.uuid4()),
        event_name=spec.get("event_name"),
        event_source=spec.get("event_source"),
        username=spec.get("username"),
        access_key_id=spec.get("access_key_id"),
        read_only=read_only_text(spec.get("read_only")),
        resources=[
            {"ResourceType": str(r.get("ResourceType")), "ResourceName": str(r.get("ResourceName"))}
            for r in as_list(spec.get("resources"))
            if isinstance(r, dict)
        ],
    )


class TokenBucket:
    """Classic token bucket: ``capacity`` burst, refilled at ``rate`` tokens per second."""

    def __init__(self, capacity: float, rate: float):
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class TrailStore:
    """CloudTrail events and LookupEvents throttling, per (account, region)."""

    RATE_PER_SECOND = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], list[TrailEvent]] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._seq = itertools.count(1)
        self.throttle_enabled = True

    def reset(self) -> None:
        with self._lock:
            self._events.clear()
            self._buckets.clear()
            self.throttle_enabled = True

    def store(self, account_id: str, region: str, items: list[Any]) -> list[str]:
        """Store control-route event items; returns their event ids."""
        events = []
        for item in items:
            if not isinstance(item, dict):
                raise ControlError(400, "every event must be a JSON object")
            seq = next(self._seq)
            if "raw" in item:
                events.append(event_from_raw(seq, item))
            else:
                events.append(event_from_record(seq, item, account_id, region))
        with self._lock:
            self._events.setdefault((account_id, region), []).extend(events)
        return [e.event_id for e in events]

    def events(self, account_id: str, region: str) -> list[TrailEvent]:
        """Events of one account and region, newest first."""
        with self._lock:
            events = list(self._events.get((account_id, region), []))
        return sorted(events, key=lambda e: e.sort_key, reverse=True)

    def allow_lookup(self, account_id: str, region: str) -> bool:
        """Take a LookupEvents token; False means the call must be throttled."""
        with self._lock:
            if not self.throttle_enabled:
                return True
            bucket = self._buckets.setdefault(
                (account_id, region), TokenBucket(self.RATE_PER_SECOND, self.RATE_PER_SECOND)
            )
            return bucket.take()


TRAIL_STORE = TrailStore()


def lookup_filter(request: dict[str, Any]) -> Callable[[TrailEvent], bool]:
    """Predicate for the request's (at most one) LookupAttribute."""
    attributes = request.get("LookupAttributes") or []
    if len(attributes) > 1:
        raise JsonRESTError("InvalidLookupAttributesException", "You can only specify one lookup attribute.")
    if not attributes:
        return lambda event: True
    key, value = attributes[0].get("AttributeKey"), attributes[0].get("AttributeValue")
    if key not in LOOKUP_KEYS or value is None:
        raise JsonRESTError(
            "InvalidLookupAttributesException", f"Invalid lookup attribute key {key!r} or missing value."
        )
    return lambda event: event.attribute_matches(key, str(value))


def lookup_time_window(request: dict[str, Any]) -> tuple[float, float]:
    """Inclusive [StartTime, EndTime] in epoch seconds."""
    try:
        start = (
            parse_timestamp(request["StartTime"]) if request.get("StartTime") is not None else float("-inf")
        )
        end = parse_timestamp(request["EndTime"]) if request.get("EndTime") is not None else float("inf")
    except ValueError:
        raise JsonRESTError(
            "InvalidTimeRangeException", "StartTime or EndTime is not a valid time."
        ) from None
    if start > end:
        raise JsonRESTError("InvalidTimeRangeException", "Start time must be before end time.")
    return start, end


def lookup_page_size(request: dict[str, Any]) -> int:
    size = request.get("MaxResults", MAX_LOOKUP_RESULTS)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_LOOKUP_RESULTS:
        raise JsonRESTError("InvalidMaxResultsException", "Value of MaxResults is not valid.")
    return size


def encode_next_token(event: TrailEvent) -> str:
    """Token = position of the last returned event; newer events never shift it."""
    raw = json.dumps({"t": event.event_time, "s": event.seq}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_next_token(token: str) -> tuple[float, int]:
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(position["t"]), int(position["s"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise JsonRESTError("InvalidNextTokenException", "Invalid NextToken.") from None


def lookup_events(self: CloudTrailResponse) -> str:
    """CloudTrailResponse.lookup_events: LookupEvents over events stored via the control route."""
    if not TRAIL_STORE.allow_lookup(self.current_account, self.region):
        raise JsonRESTError("ThrottlingException", "Rate exceeded")
    try:
        request = json.loads(self.body or "{}")
    except ValueError:
        raise JsonRESTError("SerializationException", "Request body is not valid JSON.") from None
    matches = lookup_filter(request)
    start, end = lookup_time_window(request)
    page_size = lookup_page_size(request)
    events = [
        e
        for e in TRAIL_STORE.events(self.current_account, self.region)
        if start <= e.event_time <= end and matches(e)
    ]
    if request.get("NextToken"):
        after = decode_next_token(request["NextToken"])
        events = [e for e in events if e.sort_key < after]
    page = events[:page_size]
    response: dict[str, Any] = {"Events": [e.to_api() for e in page]}
    if len(events) > page_size:
        response["NextToken"] = encode_next_token(page[-1])
    return json.dumps(response)


def patch_cloudtrail() -> None:
    """Install LookupEvents (idempotent)."""
    CloudTrailResponse.lookup_events = lookup_events
