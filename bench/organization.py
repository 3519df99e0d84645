"""`make bench`, organization scale (issue 17): an organization `scan` across many accounts and
regions, and the hub function's storm across member accounts as template.yaml delivers it.

Runs under ``tests/emulator run --`` like bench/run.py (whose helpers it imports) and writes
one JSON file of raw figures that bench/render.py turns into BENCHMARKS.md's "Organization scale":

    .venv/bin/python tests/emulator run -- .venv/bin/python bench/organization.py \
        --bin target/release/kms-launch-doctor --out bench/results/org.json

1. Organization scan: --accounts member accounts (50) x --regions (3), each with the role
   `kms-launch-doctor-scan` (``POST /_kld/iam/role``), --failures failed launches (10) spread
   over some account-regions, each with its own key, IAM user and CloudTrail records in its own
   account and region (seeded with ``x-moto-account-id``), and one more account without the role
   (it must be in `skipped`). `scan --accounts ...` over the regions at the default --concurrency
   and at --high-concurrency, then `scan --org` as the organization's management account.
2. Hub storm: --hub-accounts members (20) with the spoke role `kms-launch-doctor-spoke`, each
   with --hub-failures failed launches (10) in one region; their EC2 state-change events (with
   `account` = the member) go on a real emulator queue and the SQS event source is played as
   bench/run.py's measure_deployed does (its run_event_source and Environment: the template's
   BatchSize, batching window, MaximumConcurrency, Timeout and environment), with
   SPOKE_ROLE_NAME set as the template sets it in hub topology. Then --hub-direct-runs (3) more
   times on fresh member accounts without the proxy below, so that no hop of ours sits between
   the functions and the emulator's CloudTrail throttle (their throttles: the function's EMF count).

The emulator's call log (``/_kld/calls``) has no account, and CloudTrail's limit is per account
and region, so the tool's AWS calls go through a small recording proxy here (AWS_ENDPOINT_URL of
the tool = the proxy, which forwards every request unchanged to the emulator): it attributes each
call to the account its credentials act in (the default key is 123456789012; a key STS AssumeRole
hands out belongs to the role's account, read from the AssumeRole answer) and to the region of
its SigV4 scope, and sees LookupEvents answered with ThrottlingException. The emulator's own log
is kept as a cross-check of the totals.
"""

from __future__ import annotations

# Not named org.py: the standard library's copy.py probes for Jython with `from org.python.core
# import PyStringMap`, and with bench/ first on sys.path any script here would import that file
# half-way through importing copy.

import argparse
import http.client as httpclient
import json
import os
import re
import shlex
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402
    EVENT_SOURCE_ACTIONS, Environment, call_counts, deployed_queues, emf_total, eventbridge_event,
    json_lines, log, queue_bodies, replay_throttle, rss_method, run_event_source, run_process, secs,
    settle_throttle, stats_line, storm_findings, summary, template_delivery, tool_env,
)
from emulator.seed import (  # noqa: E402  (run put tests/ on sys.path)
    ACCOUNT, client, failure_records, http, post_records, recorded_calls, reset_calls, seed_launches,
)
from schedule import pace  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCAN_ROLE = "kms-launch-doctor-scan"
SPOKE_ROLE = "kms-launch-doctor-spoke"
MANAGEMENT = "111122223333"
ORG_REGIONS = "eu-west-1,eu-central-1,ap-southeast-2"  # not us-east-1: IAM's SigV4 scope (global)
HUB_REGION = "eu-north-1"
GLOBAL = {"iam", "sts", "organizations"}  # not an account-region's calls


# --- A recording proxy in front of the emulator ---------------------------------------------

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


class Proxy:
    """Forwards every request to the emulator unchanged and records, per call: the account its
    credentials act in, the region and service of its SigV4 scope, the action, the arrival time,
    the status, and whether it was a CloudTrail throttling answer."""

    def __init__(self, upstream: str, via: int | None = None) -> None:
        self.via = via  # which function process sends through this one (hub storm: one proxy each)
        u = urllib.parse.urlsplit(upstream)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.default_key = os.environ.get("AWS_ACCESS_KEY_ID", "kld-emulator")
        self.keys: dict[str, str] = {}
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def handle_any(self) -> None:
                t = time.time()
                length = self.headers.get("Content-Length")
                if length:
                    body = self.rfile.read(int(length))
                elif "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    body = read_chunked(self.rfile)
                else:
                    body = b""
                status, headers, data = proxy.forward(self.command, self.path, self.headers, body)
                proxy.note(t, self.path, self.headers, body, status, data)
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in HOP | {"content-length", "date", "server"}:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any  # noqa: N815

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], ConnectionError):  # not a client closing its connection
                    log(f"proxy: {sys.exc_info()[1]!r}")

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, list, bytes]:
        hdrs = {k: v for k, v in headers.items() if k.lower() not in HOP | {"expect"}}
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            fresh = conn is None
            if fresh:
                conn = self.local.conn = httpclient.HTTPConnection(self.host, self.port, timeout=300)
            try:
                conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            except (httpclient.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self.local.conn = None
                if fresh or attempt:  # only a kept-alive connection the emulator closed is retried
                    raise
        raise AssertionError("unreachable")

    def note(self, t: float, path: str, headers: Any, body: bytes, status: int, data: bytes) -> None:
        m = SCOPE.search(headers.get("Authorization") or "")
        key, region, service = (m.group(1), m.group(2), m.group(3)) if m else (None, None, None)
        target = headers.get("X-Amz-Target")
        if target:
            action = target.rsplit(".", 1)[-1]
        else:
            params = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            if body and "x-www-form-urlencoded" in (headers.get("Content-Type") or ""):
                params.update(urllib.parse.parse_qs(body.decode(errors="replace")))
            action = (params.get("Action") or [urllib.parse.urlsplit(path).path])[0]
        account = headers.get("x-moto-account-id") or self.keys.get(key or "") or (
            ACCOUNT if key == self.default_key else "?")
        if service == "sts" and action == "AssumeRole" and status == 200:
            k = re.search(rb"<AccessKeyId>([^<]+)</AccessKeyId>", data)
            a = re.search(rb"<Arn>arn:[\w-]+:sts::(\d{12}):assumed-role/", data)
            if k and a:
                with self.lock:
                    self.keys[k.group(1).decode()] = a.group(1).decode()
        with self.lock:
            self.calls.append({"time": t, "account": account, "region": region, "service": service, "action": action,
                               "status": status, "via": self.via,
                               "throttled": status == 400 and b"ThrottlingException" in data})

    def register(self, key: str, account: str) -> None:
        with self.lock:
            self.keys[key] = account

    def take(self) -> list[dict]:
        with self.lock:
            calls, self.calls = self.calls, []
        return calls

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_chunked(f: Any) -> bytes:
    out = b""
    while True:
        size = int(f.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while f.readline().strip():
                pass
            return out
        out += f.read(size)
        f.readline()


# --- Seeding in member accounts ---------------------------------------------------------------

def trust(*accounts: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]}, "Action": "sts:AssumeRole"}]}


def make_role(account: str, name: str, trusted: tuple[str, ...] = ()) -> None:
    body: dict[str, Any] = {"account_id": account, "name": name}
    if trusted:
        body["trust_policy"] = trust(*trusted)
    http("POST", "/_kld/iam/role", body)


# --- Reading what the proxy saw ---------------------------------------------------------------

def per_place(calls: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The calls of each account-region (regional services only: IAM, STS and Organizations are global)."""
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for c in calls:
        if c["service"] not in GLOBAL:
            out[(c["account"], c["region"])].append(c)
    return out


def lookup_pace(calls: list[dict], t0: float) -> dict:
    """LookupEvents per account-region: the busiest one's pace, each one's total, throttles."""
    by_place: dict[str, list[float]] = defaultdict(list)
    throttled: Counter = Counter()
    timeline: dict[str, list] = defaultdict(list)
    for c in calls:
        if c["action"] == "LookupEvents":
            place = f"{c['account']}/{c['region']}"
            by_place[place].append(c["time"] - t0)
            throttled[place] += c["throttled"]
            timeline[place].append([round(c["time"] - t0, 3), c.get("via"), c["status"]])
    paces = {p: pace(ts) for p, ts in by_place.items()}
    totals = [v["total"] for v in paces.values()]
    busiest = max(paces, key=lambda p: (paces[p]["max_per_second"], paces[p]["total"]), default=None)
    return {
        "account_regions": len(paces),
        "total": sum(totals),
        "per_account_region": summary(totals) if totals else None,
        "max_per_second": max((v["max_per_second"] for v in paces.values()), default=0),
        "account_regions_over_2_per_second": sum(1 for v in paces.values() if v["max_per_second"] > 2),
        "per_minute_max": max((v["per_minute_max"] for v in paces.values()), default=0),
        "busiest": {"place": busiest, **{k: paces[busiest][k] for k in ("total", "max_per_second", "per_minute")}} if busiest else None,
        "throttled_seen": sum(throttled.values()),
        "throttled_replayed": sum(replay_throttle(ts) for ts in by_place.values()),
        # Where the pace went over 2 within 1 s or CloudTrail throttled: each call's time from t0,
        # the function process that sent it (hub storm) and its HTTP status.
        "over_or_throttled": {p: timeline[p] for p in sorted(paces)
                              if paces[p]["max_per_second"] > 2 or throttled[p]},
        "by_account_region": {p: {"total": v["total"], "max_per_second": v["max_per_second"],
                                  "per_minute_max": v["per_minute_max"], "throttled": throttled[p]}
                              for p, v in sorted(paces.items())},
    }


# --- 1. The organization scan -------------------------------------------------------------------

def shown(argv: list[str], accounts: list[str]) -> str:
    """The command as a person would read it, the long account list abbreviated."""
    text = shlex.join(["kms-launch-doctor", *argv[1:]])
    if accounts:
        text = text.replace(",".join(accounts), f"{accounts[0]},…,{accounts[-1]}")
    return "KLD_CALL_STATS=1 " + text


def measure_scan(binary: str, proxy: Proxy, label: str, how: list[str], env_extra: dict[str, str], org: dict,
                 accounts_asked: list[str]) -> dict:
    regions, seeded = org["regions"], org["seeded"]
    argv = [binary, "scan", *how, *[a for r in regions for a in ("--region", r)], "--format", "json", "--quiet"]
    settle_throttle()
    reset_calls()
    proxy.take()
    t0 = time.time()
    p = run_process(argv, tool_env({"AWS_ENDPOINT_URL": proxy.url, **env_extra}), timeout=1800)
    seen = proxy.take()
    emulated = recorded_calls()
    try:
        report = json.loads(p.stdout)
    except ValueError:
        report = {}
    findings = report.get("findings", [])
    tool = stats_line(p.stderr) or {}
    by_id = {(f.get("account"), f["instance_id"]): f for f in findings}
    checked, wrong = 0, []
    for s in seeded:
        f = by_id.get((s["account"], s["instance_id"]))
        got = None if f is None else {
            "region": f.get("region"), "caller": ((f.get("launch") or {}).get("caller") or {}).get("principal_arn"),
            "key": (f.get("keys") or [{}])[0].get("arn"), "cause": (f.get("causes") or [{}])[0].get("code")}
        want = {"region": s["region"], "caller": s["user_arn"], "key": s["key"], "cause": "caller-lacks-create-grant"}
        if got == want:
            checked += 1
        else:
            wrong.append({"account": s["account"], "instance_id": s["instance_id"], "want": want, "got": got})
    seeded_ids = {(s["account"], s["instance_id"]) for s in seeded}
    places = per_place(seen)
    failed_places = {(s["account"], s["region"]) for s in seeded}
    empty = [cs for pl, cs in places.items() if pl not in failed_places]
    shapes = Counter(json.dumps(call_counts(cs)) for cs in empty)
    busy = {f"{a}/{r}": call_counts(places.get((a, r), [])) for a, r in sorted(failed_places)}
    iam_by_account = Counter(c["account"] for c in seen if c["service"] == "iam")
    summ = report.get("summary") or {}
    skipped = report.get("skipped", [])
    return {
        "label": label,
        "command": shown(argv, accounts_asked),
        "rc": p.rc, "wall": p.wall, "maxrss_kb": p.maxrss_kb,
        "findings": len(findings), "seeded": len(seeded), "found_as_seeded": checked, "not_as_seeded": wrong,
        "findings_not_seeded": [{"account": f.get("account"), "instance_id": f["instance_id"]} for f in findings
                                if (f.get("account"), f["instance_id"]) not in seeded_ids],
        "causes": dict(Counter((f.get("causes") or [{}])[0].get("code") for f in findings)),
        "skipped": [{k: s.get(k) for k in ("account", "region", "reason")} for s in skipped],
        "summary_accounts": len(summ.get("accounts", [])), "summary_regions": summ.get("regions", []),
        "interceptor": tool.get("api_calls", {}), "total": tool.get("total"),
        "emulator_total": len(emulated), "emulator": call_counts(emulated),
        "proxy_total": len(seen), "proxy": call_counts(seen),
        "entry_calls": call_counts([c for c in seen if c["service"] in ("sts", "organizations")]),
        "assume_role_denied": sum(1 for c in seen if c["action"] == "AssumeRole" and c["status"] != 200),
        "account_regions_seen": len(places),
        "calls_per_account_region": summary([len(cs) for cs in places.values()]) if places else None,
        "empty_account_region_calls": [{"calls": json.loads(k), "account_regions": n} for k, n in shapes.most_common()],
        "failed_account_region_calls": busy,
        "iam_calls_of_failed_accounts": {a: iam_by_account[a] for a in sorted({s["account"] for s in seeded})},
        "iam_calls_other_accounts": sum(n for a, n in iam_by_account.items() if a not in {s["account"] for s in seeded}),
        "lookup_events": lookup_pace(seen, t0),
        "stderr_tail": p.stderr.strip().splitlines()[-5:],
    }


def seed_org(n_accounts: int, regions: list[str], n_failures: int, suffix: str) -> dict:
    members = [f"56{n:010d}" for n in range(1, n_accounts + 1)]
    closed = f"56{99_999_999:010d}"
    for a in members:
        make_role(a, SCAN_ROLE, (ACCOUNT, MANAGEMENT))
    # moto builds an account-region's EC2 backend (default AMIs, instance types) on its first
    # request, which takes a while: done here, so that the first scan does not pay for it alone.
    for a in [*members, MANAGEMENT]:
        for r in regions:
            client("ec2", r, a).describe_instances()
    seeded = []
    now = datetime.now(UTC)
    for i in range(n_failures):
        account, region = members[(i * 7) % n_accounts], regions[i % len(regions)]
        launches = seed_launches(region, f"org-ops-{i}-{suffix}", 1, account)
        post_records(region, failure_records(launches, now, lambda n: timedelta(minutes=4)), account)
        seeded.append({"account": account, "region": region, "instance_id": launches["instance_ids"][0],
                       "user_arn": launches["principal"], "key": launches["keys"][0]})
    return {"members": members, "closed": closed, "regions": regions, "seeded": seeded}


def make_organization(org: dict) -> dict:
    """The members (the account without the role too) join an organization whose management
    account is MANAGEMENT, by invitation; returns that account's credentials for `scan --org`."""
    mgmt = client("organizations", "us-east-1", MANAGEMENT)
    mgmt.create_organization(FeatureSet="ALL")
    for a in [*org["members"], org["closed"]]:
        hs = mgmt.invite_account_to_organization(Target={"Id": a, "Type": "ACCOUNT"})["Handshake"]["Id"]
        client("organizations", "us-east-1", a).accept_handshake(HandshakeId=hs)
    make_role(MANAGEMENT, "kld-test")
    c = boto3.client("sts", region_name="us-east-1").assume_role(
        RoleArn=f"arn:aws:iam::{MANAGEMENT}:role/kld-test", RoleSessionName="security-scanner")["Credentials"]
    return {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
            "AWS_SESSION_TOKEN": c["SessionToken"]}


# --- 2. The hub storm as template.yaml delivers it ----------------------------------------------

def seed_hub(n_accounts: int, per_account: int, region: str, suffix: str, prefix: str = "57") -> list[dict]:
    """Per member account: the spoke role and `per_account` failed launches by two users on two keys."""
    launches = []
    for n in range(1, n_accounts + 1):
        account = f"{prefix}{n:010d}"
        make_role(account, SPOKE_ROLE)
        half = per_account // 2
        for k, count in enumerate((half, per_account - half)):
            if count:
                launches.append(seed_launches(region, f"hub-ops-{n}-{k}-{suffix}", count, account))
    return launches


def member_event(instance: str, account: str, region: str) -> dict:
    e = eventbridge_event(instance, region)
    e["account"] = account
    e["resources"] = [f"arn:aws:ec2:{region}:{account}:instance/{instance}"]
    return e


def measure_hub(binary: str, launches: list[dict], tpl: dict, functions: int, cap_seconds: float,
                proxied: bool = True) -> dict:
    """The storm across member accounts. `proxied`: each function's calls go through its own
    recording proxy (per account-region figures); else straight to the emulator (no hop of ours
    in between; LookupEvents only per region, from the emulator's log, and the function's own
    throttle count)."""
    region = launches[0]["region"]
    sqs = boto3.client("sqs", region_name=region)
    dlq_url, url, arn, topic, inbox = deployed_queues(region, "kld-hub", tpl)
    env_extra = {**tpl["environment"], "CLOUDTRAIL_WAIT_MINUTES": str(tpl["CloudTrailWaitMinutes"]),
                 "EVENTS_QUEUE_URL": url, "FINDINGS_TOPIC_ARN": topic, "SPOKE_ROLE_NAME": SPOKE_ROLE}
    # One proxy per function process, so that each call says which process sent it.
    proxies = [Proxy(os.environ["KLD_EMULATOR_URL"], k) for k in range(functions)] if proxied else []
    envs = [Environment(binary, region, {**env_extra, **({"AWS_ENDPOINT_URL": proxies[k].url} if proxied else {})},
                        tpl["Timeout"]) for k in range(functions)]
    for e in envs:  # past start-up (the hub asks for its own account then): not part of the storm
        e.api.first_next_seen.wait(60)
    settle_throttle()
    reset_calls()
    for p in proxies:
        p.take()
    # The launch calls were made 1 to 3 minutes ago; every member's records become visible now.
    now = datetime.now(UTC)
    for ln in launches:
        post_records(ln["region"], failure_records(ln, now, lambda n: timedelta(seconds=60 + (n * 37) % 120)), ln["account"])
    t_visible = time.time()
    # The members' state changes reach the hub's queue interleaved, as a storm in many accounts at once.
    owner = {i: ln for ln in launches for i in ln["instance_ids"]}
    queues = [list(ln["instance_ids"]) for ln in launches]
    order = [q[k] for k in range(max(len(q) for q in queues)) for q in queues if k < len(q)]
    for i in range(0, len(order), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": json.dumps(member_event(x, owner[x]["account"], region))}
            for n, x in enumerate(order[i:i + 10])])
    run = run_event_source(envs, url, arn, region, tpl, t_visible, cap_seconds)
    t_end = run["drained_at"] or time.time()
    for e in envs:
        e.close()
    seen = sorted((c for p in proxies for c in p.take()), key=lambda c: c["time"])
    for p in proxies:
        p.close()
    calls = recorded_calls()
    invocations = run["invocations"]
    stdout, interceptor, findings, first_at = storm_findings(envs)
    right, wrong = set(), []
    for f in findings:
        ln = owner.get(f["instance_id"])
        got = (f.get("account"), ((f.get("launch") or {}).get("caller") or {}).get("principal_arn"),
               (f.get("keys") or [{}])[0].get("arn"))
        if ln and got == (ln["account"], ln["principal"], ln["keys"][0]):
            right.add(f["instance_id"])
        elif len(wrong) < 5:
            wrong.append({"instance_id": f["instance_id"], "got": got,
                          "want": (ln["account"], ln["principal"], ln["keys"][0]) if ln else None})
    by_id = Counter((f["id"], f.get("digest")) for f in findings)
    sns_attrs = [json.loads(b).get("MessageAttributes", {}) for b in queue_bodies(inbox, region)]
    sns_by_id = Counter((a.get("finding_id", {}).get("Value"), a.get("digest", {}).get("Value")) for a in sns_attrs)
    answered = [i["seconds"] for i in invocations if i["seconds"] is not None]
    own = [c for c in calls if not (c["service"] == "sqs" and c["action"] in EVENT_SOURCE_ACTIONS)]
    delays = sorted(first_at.values())
    assumes = [c for c in seen if c["action"] == "AssumeRole"]
    return {
        "region": region, "accounts": len({ln["account"] for ln in launches}), "failures": len(owner),
        "spoke_role": SPOKE_ROLE, "batch_size": tpl["BatchSize"], "functions": functions,
        "timeout_seconds": tpl["Timeout"], "cap_seconds": cap_seconds, "cap_hit": run["cap_hit"],
        "finished": run["drained_at"] is not None, "wall": t_end - t_visible,
        "batches": len(invocations),
        "timed_out": sum(1 for i in invocations if i["timed_out"]),
        "whole_batch_failed": sum(1 for i in invocations if i["whole_batch_failed"]),
        "invocation_seconds": summary(answered) if answered else None,
        "invocation_seconds_max": max(answered, default=None),
        "processes": sum(e.processes for e in envs),
        "maxrss_kb": max(e.peak_kb for e in envs),
        "findings": len(findings), "distinct_instances": len(first_at),
        "findings_as_seeded": len(right), "not_as_seeded": wrong,
        "missing_instances": len(set(owner) - set(first_at)),
        "accounts_with_findings": len({f.get("account") for f in findings}),
        "causes": dict(Counter((f.get("causes") or [{}])[0].get("code") for f in findings)),
        "batch_item_failures": sum(i["batch_item_failures"] for i in invocations),
        "deferrals": emf_total(stdout, "Deferrals"),
        "received": dict(sum((Counter(i["kinds"]) for i in invocations), Counter())),
        "received_again": sum(n for i in invocations for c, n in i["receive_counts"].items() if c > 1),
        "delivered_to_two_at_once": run["overlapping"],
        "left_in_queue": run["left_in_queue"], "dead_letter_queue": len(queue_bodies(dlq_url, region)),
        "duplicates": {
            "finding_lines_repeated": sum(n - 1 for n in by_id.values() if n > 1),
            "instances_with_several_findings": sum(1 for n in Counter(f["instance_id"] for f in findings).values() if n > 1),
            "sns_messages": len(sns_attrs),
            "sns_repeated": sum(n - 1 for n in sns_by_id.values() if n > 1),
            "sns_accounts": len({a.get("account", {}).get("Value") for a in sns_attrs}),
        },
        "assume_role": {"calls": len(assumes), "denied": sum(1 for c in assumes if c["status"] != 200),
                        "member_accounts_entered": len({c["account"] for c in seen if c["service"] not in GLOBAL} - {ACCOUNT})},
        "interceptor": dict(sorted(interceptor.items())), "total": sum(interceptor.values()),
        # In hub topology each process asks for its own account once at start-up, before the storm's
        # calls are recorded; the interceptor counts it in its first invocation's figures.
        "interceptor_startup": {"sts:GetCallerIdentity": sum(e.processes for e in envs)},
        "emulator": call_counts(own), "emulator_total": len(own), "proxy_total": len(seen), "proxy": call_counts(seen),
        "proxied": proxied,
        # Every member account's LookupEvents in the region together (the emulator's log has no
        # account): a total, not a pace against any one account-region's budget.
        "lookup_events_region": {"total": sum(1 for c in calls if c["action"] == "LookupEvents")},
        "lookup_events": {**(lookup_pace(seen, t_visible) if proxied else {}),
                          "throttled_client": emf_total(stdout, "CloudTrailThrottles"),
                          "calls_per_second_setting": tpl["CLOUDTRAIL_CALLS_PER_SECOND"]},
        "visibility_to_finding": ({**summary([d - t_visible for d in delays]),
                                   "p95": delays[max(0, -(-95 * len(delays) // 100) - 1)] - t_visible}
                                  if delays else None),
        "warnings": dict(Counter(f"{v.get('level')}: {v.get('message')}" for v in json_lines(stdout)
                                 if v.get("level") in ("WARN", "ERROR"))),
        "stderr_tail": [ln for e in envs for ln in "\n".join(e.stderr).strip().splitlines()[-3:]],
        "invocations": invocations,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "kms-launch-doctor"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "org.json"))
    ap.add_argument("--accounts", type=int, default=50, help="member accounts of the organization scan")
    ap.add_argument("--regions", default=ORG_REGIONS, help="regions of the organization scan (comma-separated)")
    ap.add_argument("--failures", type=int, default=10, help="failed launches spread over the scan's account-regions")
    ap.add_argument("--high-concurrency", type=int, default=16, help="the second scan's --concurrency (default run: 4)")
    ap.add_argument("--no-org", action="store_true", help="skip `scan --org` (no organization is created)")
    ap.add_argument("--hub-accounts", type=int, default=20, help="member accounts of the hub storm")
    ap.add_argument("--hub-failures", type=int, default=10, help="failed launches per member account in the hub storm")
    ap.add_argument("--hub-region", default=HUB_REGION)
    ap.add_argument("--hub-direct-runs", type=int, default=3,
                    help="the hub storm again this many times without the recording proxy (throttles as the function counts them)")
    ap.add_argument("--cap-minutes", type=float, default=20, help="stop the hub storm after this long if its queue is not empty")
    ap.add_argument("--only", choices=["scan", "hub"], help="run only one part")
    args = ap.parse_args()
    binary = str(Path(args.bin).resolve())
    regions = [r for r in args.regions.split(",") if r]
    suffix = uuid.uuid4().hex[:6]
    t_start = time.perf_counter()
    results: dict = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "binary": binary,
                     "loadavg_start": os.getloadavg(), "rss_method": rss_method(),
                     "method": "calls attributed to accounts by a recording proxy in front of the emulator "
                               "(AWS_ENDPOINT_URL of the tool); totals cross-checked with the emulator's log"}
    http("POST", "/_kld/reset", {})
    proxy = Proxy(os.environ["KLD_EMULATOR_URL"])
    try:
        if args.only in (None, "scan"):
            log(f"organization: {args.accounts} member accounts with {SCAN_ROLE}, {args.failures} failures over "
                f"{len(regions)} regions, one account without the role")
            t = time.perf_counter()
            org = seed_org(args.accounts, regions, args.failures, suffix)
            creds = None if args.no_org else make_organization(org)
            asked = [*org["members"], org["closed"]]
            results["org_seeding_seconds"] = time.perf_counter() - t
            scans = []
            for label, how, env in (
                    ("--accounts, default --concurrency (4)", ["--accounts", ",".join(asked)], {}),
                    (f"--accounts, --concurrency {args.high_concurrency}",
                     ["--accounts", ",".join(asked), "--concurrency", str(args.high_concurrency)], {}),
                    *([] if creds is None else [("--org, as the management account, default --concurrency",
                                                 ["--org"], creds)])):
                if creds:
                    proxy.register(creds["AWS_ACCESS_KEY_ID"], MANAGEMENT)
                log(f"scan {label}")
                r = measure_scan(binary, proxy, label, how, env, org, asked if "--accounts" in how else [])
                lk = r["lookup_events"]
                log(f"  rc {r['rc']}, {secs(r['wall'])}; {r['found_as_seeded']}/{r['seeded']} found as seeded, "
                    f"{r['findings']} findings, {len(r['skipped'])} skipped; {r['total']} calls "
                    f"({r['account_regions_seen']} account-regions); LookupEvents {lk['total']}, max {lk['max_per_second']}/s "
                    f"in one account-region, throttled {lk['throttled_seen']}")
                scans.append(r)
            results["org_scan"] = {"accounts": args.accounts, "regions": regions, "closed_account": org["closed"],
                                   "management_account": None if args.no_org else MANAGEMENT,
                                   "seeded": org["seeded"], "runs": scans}
        if args.only in (None, "hub"):
            tpl = template_delivery()
            functions = max(1, min(tpl["MaximumConcurrency"], -(-args.hub_accounts * args.hub_failures // tpl["BatchSize"])))
            log(f"hub storm: {args.hub_accounts} member accounts with {SPOKE_ROLE}, {args.hub_failures} failures each "
                f"in {args.hub_region}; {functions} functions at CLOUDTRAIL_CALLS_PER_SECOND {tpl['CLOUDTRAIL_CALLS_PER_SECOND']}")
            t = time.perf_counter()
            launches = seed_hub(args.hub_accounts, args.hub_failures, args.hub_region, suffix)
            results["hub_seeding_seconds"] = time.perf_counter() - t
            r = measure_hub(binary, launches, tpl, functions, args.cap_minutes * 60)
            r["template"] = {k: tpl[k] for k in ("BatchSize", "MaximumBatchingWindowInSeconds", "MaximumConcurrency",
                                                 "Timeout", "DelaySeconds", "VisibilityTimeout", "maxReceiveCount",
                                                 "CloudTrailWaitMinutes", "CLOUDTRAIL_CALLS_PER_SECOND",
                                                 "DEADLINE_MARGIN_SECONDS")}
            results["hub_storm"] = r
            lk, v = r["lookup_events"], r["visibility_to_finding"] or {}
            log(f"  {r['batches']} invocations, {r['timed_out']} timed out; {r['findings_as_seeded']}/{r['failures']} found "
                f"with their account and caller, repeated {r['duplicates']['finding_lines_repeated']}; LookupEvents {lk['total']} "
                f"over {lk['account_regions']} account-regions, max {lk['max_per_second']}/s in one, throttled "
                f"{lk['throttled_client']} (proxy saw {lk['throttled_seen']}); visibility->finding median "
                f"{secs(v.get('median'))}, worst {secs(v.get('max'))}; queue {'drained' if r['finished'] else 'NOT drained'} "
                f"after {secs(r['wall'])}")
            direct = []
            for k in range(args.hub_direct_runs):
                log(f"hub storm again without the proxy ({k + 1} of {args.hub_direct_runs}): new member accounts, "
                    "the functions straight to the emulator")
                fresh = seed_hub(args.hub_accounts, args.hub_failures, args.hub_region, suffix, prefix=f"{58 + k}")
                d = measure_hub(binary, fresh, tpl, functions, args.cap_minutes * 60, proxied=False)
                direct.append({key: d[key] for key in (
                    "accounts", "failures", "functions", "batches", "timed_out", "finished", "wall", "findings",
                    "findings_as_seeded", "missing_instances", "duplicates", "lookup_events", "lookup_events_region",
                    "visibility_to_finding", "invocation_seconds", "warnings")})
                log(f"  {d['timed_out']} timed out; {d['findings_as_seeded']}/{d['failures']} found; LookupEvents "
                    f"{d['lookup_events_region']['total']}, throttled {d['lookup_events']['throttled_client']} (EMF)")
            results["hub_storm_direct"] = direct
    finally:
        proxy.close()
    results["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - t_start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.out} in {results['seconds']:.0f} s")
    failures = []
    for r in (results.get("org_scan") or {}).get("runs", []):
        if r["found_as_seeded"] != r["seeded"]:
            failures.append(f"{r['label']}: {r['found_as_seeded']} of {r['seeded']} seeded failures found with their own account")
    hub = results.get("hub_storm")
    if hub and hub["findings_as_seeded"] != hub["failures"]:
        failures.append(f"hub storm: {hub['findings_as_seeded']} of {hub['failures']} found with their account and caller")
    for f in failures:
        log(f"ASSERTION: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
