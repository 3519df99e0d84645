"""`make bench`, the part that needs the AWS emulator: API calls per diagnosis, concurrency,
whole-process time of `diagnose`, Lambda start-up, a storm of 200 failures (`scan`, one SQS
batch, and as template.yaml delivers it until its queue is empty), and Cloud Custodian side by
side over the same 200 instances.

Runs under ``tests/emulator run --`` (which sets AWS_ENDPOINT_URL, KLD_EMULATOR_URL and fake
credentials; nothing here talks to real AWS) and writes one JSON file of raw figures, which
bench/render.py turns into BENCHMARKS.md:

    .venv/bin/python tests/emulator run -- .venv/bin/python bench/run.py \
        --bin target/release/kms-launch-doctor --custodian .venv-bench/bin/custodian \
        --out bench/results/run.json

Only the deployed storm (issue 15: the template's Timeout, batching and concurrency, run until
the queue is empty; a few minutes), to iterate on it without overwriting run.json:

    .venv/bin/python tests/emulator run -- .venv/bin/python bench/run.py \
        --bin target/debug/kms-launch-doctor --out /tmp/run.json --only deployed [--deployed quiet,noisy,heavy]

Seeding is tests/emulator/seed.py's (boto3 against moto, plus the emulator's /_kld/ control
routes; tests/demo.py seeds the same scenario) and, for the storm, follows tests/scenarios/lambda.rs. Call counts come from the tool's own SDK
interceptor (KLD_CALL_STATS=1) and are cross-checked against what the emulator recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from emulator.runtime_api import RuntimeApi  # noqa: E402
from emulator.seed import (  # noqa: E402
    ACCOUNT, denied_grant, failure_records, http, launch_record, post_records, recorded_calls, reset_calls,
    seed_launches, seed_role_scenario, seed_user_scenario, stamp, user_identity,
)
from schedule import pace, template_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# One region per scenario, so that call counts and CloudTrail windows never mix.
REGION_ARTICLE = "eu-west-1"
REGION_TWO_KEYS = "eu-west-2"
REGION_ROLE = "eu-west-3"
REGION_STORM = "ap-south-1"
STORM_SIZE = 200
REGION_NOISY = "ap-northeast-1"
NOISE_GRANTS, NOISE_STARTS = 1000, 300
# The storm as template.yaml delivers it (issue 15): regions of their own, so that their records
# can become visible at a moment the run chooses, and their LookupEvents are counted alone.
REGION_DEPLOYED = "ap-southeast-1"
REGION_DEPLOYED_NOISY = "ap-southeast-2"
# A busier hour still: the window query needs more pages (55: 44 CreateGrant, 10 StartInstances,
# 1 RunInstances) than fit before the deadline margin at the deployed pace (about 45 at 0.9/s). Not in `make bench` by default: every retry of a cut batch
# waits out the queue's visibility timeout (380 s), so it runs to the cap (--deployed heavy).
REGION_DEPLOYED_HEAVY = "ap-northeast-2"
HEAVY_GRANTS, HEAVY_STARTS = 2000, 300


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def secs(s: float | None) -> str:
    return "—" if s is None else f"{s:.1f} s"


# --- The emulator's call log (the control routes and the seeding are tests/emulator/seed.py) -------

def call_counts(calls: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter(f"{c['service']}:{c['action']}" for c in calls).items()))


# --- Seeding ----------------------------------------------------------------------------------

def seed_storm_instances(region: str, user: str) -> dict:
    """200 failed launches in one region on one key, by one user: the instances, in the failed
    state, and the caller; no CloudTrail records yet (failure_records, posted when the run wants
    them visible)."""
    return seed_launches(region, user, STORM_SIZE, key_description="storm key")


def seed_storm(region: str, user: str) -> dict:
    """200 failed launches in one region on one key, launched by one user within ~40 minutes
    (as tests/scenarios/lambda.rs a_storm_of_200_failures_is_diagnosed_within_cloudtrail_limits)."""
    storm = seed_storm_instances(region, user)
    post_records(region, failure_records(storm, datetime.now(UTC), lambda n: timedelta(minutes=1 + n % 40)))
    return storm


def seed_background(region: str, key_arn: str, grants: int, starts: int) -> dict:
    """Unrelated CloudTrail traffic in the same hour: successful CreateGrant calls (every launch
    or attach of an encrypted volume makes one) and StartInstances of healthy instances. The
    tool queries by event name and matches locally, so these cost pages (50 records each)."""
    now = datetime.now(UTC)
    ident = user_identity(f"arn:aws:iam::{ACCOUNT}:user/ops", "ops")
    events = []
    for n in range(grants):
        at = now - timedelta(seconds=30 + (n * 2917) % 3000)
        events.append({**denied_grant(region, key_arn, ident, ident["arn"], at), "errorCode": None, "errorMessage": None,
                       "responseElements": {"grantId": uuid.uuid4().hex, "keyId": key_arn}})
    for n in range(starts):
        at = now - timedelta(seconds=30 + (n * 1931) % 3000)
        events.append(launch_record(region, f"i-{n:017x}", ident, at))
    for e in events:
        if e.get("errorCode") is None:
            e.pop("errorCode", None)
            e.pop("errorMessage", None)
    post_records(region, events)
    return {"grants": grants, "starts": starts}


# --- Running processes ------------------------------------------------------------------------

@dataclass
class Proc:
    argv: list[str]
    rc: int
    wall: float
    maxrss_kb: int
    stdout: str
    stderr: str
    extra: dict = field(default_factory=dict)


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("AWS_LAMBDA_RUNTIME_API", "AWS_PROFILE", "RUST_LOG", "LOG_LEVEL"):
        env.pop(k, None)
    env.update({"KLD_CALL_STATS": "1", "NO_COLOR": "1", "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra or {})
    return env


GNU_TIME = "/usr/bin/time"


def vm_hwm_kb(pid: int) -> int | None:
    """The process's own peak RSS so far (VmHWM: per address space, so it starts afresh at exec)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def rss_method() -> str:
    return "GNU time %M" if Path(GNU_TIME).exists() else "VmHWM polled every 5 ms"


def run_process(argv: list[str], env: dict[str, str], timeout: float = 600) -> Proc:
    """Runs argv to completion: wall time from just before exec to its exit, and its peak RSS.

    Not wait4's rusage of the child: Linux carries the forking process's high-water mark across
    exec into ru_maxrss, so a child of this Python process would report at least the Python
    process's RSS. GNU time (fork from a small process, then wait4) reports the command's own;
    without it, /proc/<pid>/status VmHWM is polled (a peak in the last 5 ms could be missed)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        use_time = Path(GNU_TIME).exists()
        full = [GNU_TIME, "-f", "%M", "-o", rss_file.name, *argv] if use_time else argv
        peak = [0]
        t0 = time.perf_counter()
        p = subprocess.Popen(full, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                v = vm_hwm_kb(p.pid)
                if v:
                    peak[0] = max(peak[0], v)
                done.wait(0.005)

        poller = None if use_time else threading.Thread(target=poll, daemon=True)
        if poller:
            poller.start()
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        wall = time.perf_counter() - t0
        done.set()
        if use_time:
            lines = [ln for ln in Path(rss_file.name).read_text().splitlines() if ln.strip().isdigit()]
            peak[0] = int(lines[-1]) if lines else 0
        out.seek(0)
        err.seek(0)
        return Proc(argv, rc, wall, peak[0], out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def json_lines(text: str):
    """The JSON objects among `text`'s lines (the tool's structured logs and reports)."""
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            yield v


def log_lines(text: str, message: str) -> list[dict]:
    """The structured log lines whose `message` is `message`, in order."""
    return [v for v in json_lines(text) if v.get("message") == message]


def stats_line(text: str) -> dict | None:
    """The tool's call counts: the CLI's `{"api_calls": ..., "total": N}` on stderr, or Lambda's
    `{"message": "api calls", "stats": {...}}` on stdout (the last one)."""
    found = None
    for v in json_lines(text):
        if "api_calls" in v:
            found = v
        elif v.get("message") == "api calls":
            found = v.get("stats")
    return found


def summary(values: list[float]) -> dict:
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def lookup_windows(calls: list[dict]) -> int:
    """The most LookupEvents calls the emulator received within any one second."""
    times = sorted(c["time"] for c in calls if c["action"] == "LookupEvents")
    return max((sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times)), default=0)


def lookup_min_gap(calls: list[dict]) -> float | None:
    """The shortest time between two LookupEvents calls as the emulator received them."""
    times = sorted(c["time"] for c in calls if c["action"] == "LookupEvents")
    return min((b - a for a, b in zip(times, times[1:])), default=None)


def settle_throttle() -> None:
    """CloudTrail's 2 requests/s bucket (the emulator enforces it like AWS) refills in 1 s: start
    every measured run as a user's first run would."""
    time.sleep(1.1)


# --- Measurements -----------------------------------------------------------------------------

def diagnose_argv(binary: str, s: dict) -> list[str]:
    return [binary, "diagnose", "--instance-id", s["instance_id"], "--region", s["region"], "--format", "json"]


def measure_calls(binary: str, name: str, s: dict) -> dict:
    settle_throttle()
    reset_calls()
    p = run_process(diagnose_argv(binary, s), tool_env())
    emulated = recorded_calls()
    report = json.loads(p.stdout)
    finding = report["findings"][0]
    tool = stats_line(p.stderr) or {}
    return {
        "scenario": name,
        "command": "KLD_CALL_STATS=1 " + shlex.join(["kms-launch-doctor", *p.argv[1:]]),
        "rc": p.rc,
        "interceptor": tool.get("api_calls", {}),
        "total": tool.get("total"),
        "emulator": call_counts(emulated),
        "emulator_total": len(emulated),
        "cause": [c["code"] for c in finding["causes"]],
        "caller": (finding.get("launch") or {}).get("caller", {}).get("principal_arn"),
        "fix": [r["action"] for r in finding["remediations"]],
        "keys": len(finding["keys"]),
    }


def measure_waves(binary: str, s: dict, delay: float) -> dict:
    """Every call delayed by `delay` s in the emulator: calls arriving together are concurrent,
    and the number of waves is the critical path in round trips."""
    settle_throttle()
    http("POST", "/_kld/faults", {"kind": "delay", "delay_seconds": delay})
    try:
        reset_calls()
        p = run_process(diagnose_argv(binary, s), tool_env())
        calls = recorded_calls()
    finally:
        http("DELETE", "/_kld/faults")
    calls.sort(key=lambda c: c["time"])
    waves: list[list[dict]] = []
    for c in calls:
        if waves and c["time"] - waves[-1][0]["time"] < delay / 2:
            waves[-1].append(c)
        else:
            waves.append([c])
    t0 = calls[0]["time"] if calls else 0.0
    return {
        "delay_seconds": delay,
        "wall": p.wall,
        "waves": [{"at": round(w[0]["time"] - t0, 3), "calls": [f"{c['service']}:{c['action']}" for c in w]}
                  for w in waves],
    }


def measure_diagnose_time(binary: str, s: dict, runs: int) -> dict:
    argv = diagnose_argv(binary, s)
    settle_throttle()
    run_process(argv, tool_env())  # warm-up (not counted)
    walls, rss, totals = [], [], []
    for _ in range(runs):
        settle_throttle()
        p = run_process(argv, tool_env())
        assert p.rc == 0, p.stderr
        walls.append(p.wall)
        rss.append(p.maxrss_kb)
        totals.append((stats_line(p.stderr) or {}).get("total"))
    return {"command": "KLD_CALL_STATS=1 " + shlex.join(["kms-launch-doctor", *argv[1:]]), "wall": summary(walls),
            "maxrss_kb": summary(rss), "calls_per_run": sorted(set(t for t in totals if t is not None))}


def lambda_env(api: RuntimeApi, region: str) -> dict[str, str]:
    return tool_env({
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "kms-launch-doctor",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": region,
    })


def run_lambda(binary: str, events: list[Any], region: str, timeout: float = 300,
               env_extra: dict[str, str] | None = None) -> Proc:
    """Starts the binary in Lambda mode against a Runtime API stub serving `events`; returns once
    every invocation has an outcome (or, with no events, once it asked for the first one), after
    stopping it. `extra` has the stub's timings relative to exec."""
    with RuntimeApi(events) as api, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        env = {**lambda_env(api, region), **(env_extra or {})}
        t0 = time.perf_counter()
        p = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        waited = api.first_next_seen if not events else api.all_done
        finished = waited.wait(timeout)
        t_done = time.perf_counter()
        peak = vm_hwm_kb(p.pid) or 0  # alive until now: its own high-water mark, exactly
        p.send_signal(signal.SIGKILL)
        p.wait()
        out.seek(0)
        err.seek(0)
        extra = {
            "finished": finished,
            "startup": (api.first_next - t0) if api.first_next is not None else None,
            "invocations": [{"request_id": rid, "seconds": api.completed[rid] - api.delivered[rid],
                             "outcome": api.outcomes[rid][0], "body": api.outcomes[rid][1]}
                            for rid in sorted(api.completed) if rid in api.delivered],
        }
        return Proc([binary], p.returncode, t_done - t0, peak, out.read().decode(errors="replace"),
                    err.read().decode(errors="replace"), extra)


def measure_startup(binary: str, runs: int) -> dict:
    values = []
    for _ in range(runs):
        p = run_lambda(binary, [], "us-east-1", timeout=30)
        assert p.extra["startup"] is not None, p.stdout + p.stderr
        values.append(p.extra["startup"])
    return {"what": "exec to the first GET /2018-06-01/runtime/invocation/next", "seconds": summary(values)}


def eventbridge_event(instance: str, region: str) -> dict:
    e = json.loads((ROOT / "events" / "stopped.json").read_text())
    e["id"] = str(uuid.uuid4())
    e["detail"] = {"instance-id": instance, "state": "stopped"}
    e["region"] = region
    e["time"] = stamp(datetime.now(UTC))
    e["resources"] = [f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{instance}"]
    return e


def sqs_batch(instances: list[str], region: str) -> dict:
    batch = json.loads((ROOT / "events" / "sqs-batch.json").read_text())
    template = batch["Records"][0]
    records = []
    for i, instance in enumerate(instances):
        r = json.loads(json.dumps(template))
        r["messageId"] = f"msg-{i}-{instance}"
        r["body"] = json.dumps(eventbridge_event(instance, region))
        r["awsRegion"] = region
        records.append(r)
    batch["Records"] = records
    return batch


def finding_lines(stdout: str) -> list[dict]:
    return [v["finding"] for v in log_lines(stdout, "finding")]


def measure_sqs(binary: str, storm: dict, size: int, runs: int) -> dict:
    region = storm["region"]
    results = []
    for _ in range(runs):
        settle_throttle()
        reset_calls()
        p = run_lambda(binary, [sqs_batch(storm["instance_ids"][:size], region)], region)
        calls = recorded_calls()
        inv = p.extra["invocations"][0] if p.extra["invocations"] else {}
        findings = finding_lines(p.stdout)
        results.append({
            "finished": p.extra["finished"],
            "outcome": inv.get("outcome"),
            "batch_item_failures": len((inv.get("body") or {}).get("batchItemFailures", [])) if isinstance(inv.get("body"), dict) else None,
            "invocation_seconds": inv.get("seconds"),
            "exec_to_response_seconds": p.wall,
            "maxrss_kb": p.maxrss_kb,
            "findings": len(findings),
            "causes": dict(Counter(f["causes"][0]["code"] for f in findings if f.get("causes"))),
            "interceptor": (stats_line(p.stdout) or {}).get("api_calls", {}),
            "total": (stats_line(p.stdout) or {}).get("total"),
            "emulator": call_counts(calls),
            "lookup_events_max_per_second": lookup_windows(calls),
            "lookup_events_min_gap_seconds": lookup_min_gap(calls),
        })
    first = results[0]
    return {
        "records": size,
        "command": f"Lambda mode (AWS_LAMBDA_RUNTIME_API=<stub>, 256 MB) invoked with one SQS event of {size} record(s)",
        "runs": results,
        "invocation_seconds": summary([r["invocation_seconds"] for r in results if r["invocation_seconds"] is not None]),
        "maxrss_kb": summary([r["maxrss_kb"] for r in results]),
        "interceptor": first["interceptor"],
        "total": first["total"],
        "emulator": first["emulator"],
        "findings": first["findings"],
        "causes": first["causes"],
        "lookup_events_max_per_second": max(r["lookup_events_max_per_second"] for r in results),
        "lookup_events_min_gap_seconds": min((r["lookup_events_min_gap_seconds"] for r in results
                                              if r["lookup_events_min_gap_seconds"] is not None), default=None),
    }


def custodian_policy(path: Path) -> str:
    text = """\
# Cloud Custodian's view of the same storm: stopped EC2 instances whose state reason is a launch
# failure and that have an encrypted EBS volume. The filters match the ones `scan` sends
# server-side (instance-state-name, state-reason-code) plus the encryption check.
policies:
  - name: kms-launch-failures
    resource: ec2
    filters:
      - "State.Name": stopped
      - type: value
        key: StateReason.Code
        op: in
        value: [Client.InternalError, Server.InternalError]
      - type: ebs
        key: Encrypted
        value: true
"""
    path.write_text(text)
    return text


def measure_storm(binary: str, custodian: str | None, storm: dict, runs: int, work: Path) -> dict:
    region = storm["region"]
    scan_argv = [binary, "scan", "--region", region, "--format", "json", "--quiet"]
    policy_file = work / "custodian-policy.yml"
    policy_text = custodian_policy(policy_file)
    c7n_out = work / "custodian-out"
    c7n_argv = [custodian, "run", "--cache-period", "0", "-s", str(c7n_out), "-r", region, str(policy_file)] if custodian else None
    c7n_env = dict(os.environ, AWS_DEFAULT_REGION=region, AWS_REGION=region)
    c7n_env.pop("AWS_PROFILE", None)

    scans, c7ns = [], []
    first_scan: dict = {}
    first_c7n: dict = {}
    for i in range(runs):
        settle_throttle()
        reset_calls()
        p = run_process(scan_argv, tool_env())
        calls = recorded_calls()
        assert p.rc == 0, p.stderr
        scans.append(p)
        if i == 0:
            report = json.loads(p.stdout)
            findings = report["findings"]
            first_scan = {
                "findings": len(findings),
                "instances": sorted(f["instance_id"] for f in findings),
                "causes": dict(Counter(f["causes"][0]["code"] for f in findings if f["causes"])),
                "callers": dict(Counter((f.get("launch") or {}).get("caller", {}).get("principal_arn") for f in findings)),
                "fixes": dict(Counter(r["action"] for f in findings for r in f["remediations"])),
                "interceptor": (stats_line(p.stderr) or {}).get("api_calls", {}),
                "total": (stats_line(p.stderr) or {}).get("total"),
                "emulator": call_counts(calls),
                "lookup_events_max_per_second": lookup_windows(calls),
                "lookup_events_min_gap_seconds": lookup_min_gap(calls),
            }
        if c7n_argv:
            reset_calls()
            if c7n_out.exists():
                subprocess.run(["rm", "-rf", str(c7n_out)], check=True)
            q = run_process(c7n_argv, c7n_env)
            calls = recorded_calls()
            c7ns.append(q)
            if i == 0:
                res_file = c7n_out / "kms-launch-failures" / "resources.json"
                found = json.loads(res_file.read_text()) if res_file.exists() else []
                first_c7n = {
                    "rc": q.rc,
                    "found": len(found),
                    "instances": sorted(r["InstanceId"] for r in found),
                    "emulator": call_counts(calls),
                    "total": len(calls),
                    "stderr_tail": q.stderr.strip().splitlines()[-5:],
                }
    storm_ids = sorted(storm["instance_ids"])
    out: dict = {
        "region": region,
        "instances": len(storm_ids),
        "scan": {
            "command": "KLD_CALL_STATS=1 " + shlex.join(["kms-launch-doctor", *scan_argv[1:]]),
            "wall": summary([p.wall for p in scans]),
            "maxrss_kb": summary([p.maxrss_kb for p in scans]),
            "same_instances_as_seeded": first_scan.get("instances") == storm_ids,
            **{k: v for k, v in first_scan.items() if k != "instances"},
        },
    }
    if c7n_argv:
        out["custodian"] = {
            "command": shlex.join(["custodian", *c7n_argv[1:]]).replace(str(work), "<tmp>"),
            "policy": policy_text,
            "wall": summary([q.wall for q in c7ns]),
            "maxrss_kb": summary([q.maxrss_kb for q in c7ns]),
            "same_instances_as_seeded": first_c7n.get("instances") == storm_ids,
            **{k: v for k, v in first_c7n.items() if k != "instances"},
        }
        out["ratio_scan_over_custodian"] = out["scan"]["wall"]["median"] / out["custodian"]["wall"]["median"]
    return out


def all_stats_lines(stdout: str) -> list[dict]:
    return [v.get("stats") or {} for v in log_lines(stdout, "api calls")]


# --- The storm as template.yaml delivers it (issue 15) ---------------------------------------

# SQS calls the benchmark makes itself, as EventBridge (SendMessageBatch) and as the event source
# mapping (ReceiveMessage, DeleteMessageBatch). The function sends with SendMessage only (deferred
# events, redeliveries), so these are left out of the emulator's count of the function's calls.
EVENT_SOURCE_ACTIONS = {"ReceiveMessage", "DeleteMessageBatch", "SendMessageBatch"}
POLL_SECONDS = 0.5  # an idle poller's pause between polls (and checks whether the queue is empty)
DEFERRED_TAG = "kms-launch-doctor"  # src/lambda/messages.rs REDELIVERY_TAG: its own messages on the queue


def template_delivery() -> dict:
    """template.yaml's delivery figures as it has them now (bench/schedule.py reads them, so that
    the model and this run follow the same template): the SQS event source (BatchSize,
    MaximumBatchingWindowInSeconds, MaximumConcurrency), the events queue (DelaySeconds,
    VisibilityTimeout, maxReceiveCount), the function's Timeout and literal environment
    (CLOUDTRAIL_CALLS_PER_SECOND, DEADLINE_MARGIN_SECONDS), CloudTrailWaitMinutes' default."""
    return template_settings()


def queue_bodies(url: str, region: str) -> list[str]:
    """Every message of a queue, delayed and in flight included (the emulator's peek route)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    query = urllib.parse.urlencode({"queue_name": name, "region": region})
    return [m["body"] for m in http("GET", f"/_kld/sqs/messages?{query}")["messages"]]


def sqs_record(m: dict, arn: str, region: str) -> dict:
    """A received message as the SQS event source hands it to the function: SQS's own
    attributes (ApproximateReceiveCount, SentTimestamp, ...), nothing made up."""
    attrs = m.get("Attributes", {})
    return {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": {k: attrs[k] for k in ("ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                                 "ApproximateFirstReceiveTimestamp") if k in attrs},
            "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
            "eventSourceARN": arn, "awsRegion": region}


def body_kind(body: str) -> str:
    """`event` (from EventBridge), or the format of one of the function's own messages."""
    try:
        v = json.loads(body)
    except ValueError:
        return "unreadable"
    return str(v.get(DEFERRED_TAG, "event")) if isinstance(v, dict) else "unreadable"


class Environment:
    """One Lambda execution environment: the binary in Lambda mode behind its own Runtime API
    stub, whose deadline is the delivery time plus the template's Timeout, invoked one batch at
    a time. An answer after the deadline is a timeout: Lambda would have stopped the function
    there and failed the whole batch, and the next invocation gets a new environment, so the
    process is replaced (what it did before the deadline, it did: its logs are kept)."""

    GRACE = 2.0  # past the deadline, how long an answer is still waited for (to time it)

    def __init__(self, binary: str, region: str, env_extra: dict[str, str], timeout: float) -> None:
        self.binary, self.region, self.env_extra, self.timeout = binary, region, env_extra, timeout
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.peak_kb = 0
        self.processes = 0
        self._start()

    def _start(self) -> None:
        self.api = RuntimeApi([], timeout_seconds=self.timeout)
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        env = {**lambda_env(self.api, self.region), **self.env_extra}
        self.proc = subprocess.Popen([self.binary], env=env, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err)
        self.processes += 1

    def _stop(self) -> None:
        self.peak_kb = max(self.peak_kb, vm_hwm_kb(self.proc.pid) or 0)
        self.proc.kill()
        self.proc.wait()
        self.api.close()
        for f, into in ((self.out, self.stdout), (self.err, self.stderr)):
            f.seek(0)
            into.append(f.read().decode(errors="replace"))
            f.close()

    def invoke(self, event: dict) -> dict:
        """One invocation: its outcome, its duration (delivery to answer) and whether it timed out."""
        rid = self.api.submit(event)
        limit = time.perf_counter() + 60  # start-up of a new process is not the invocation's time
        while rid not in self.api.delivered and self.proc.poll() is None and time.perf_counter() < limit:
            time.sleep(0.005)
        delivered = self.api.delivered.get(rid)
        outcome = None
        if delivered is not None:
            while outcome is None and self.proc.poll() is None \
                    and time.perf_counter() < delivered + self.timeout + self.GRACE:
                outcome = self.api.wait(rid, 0.25)
        seconds = self.api.completed[rid] - delivered if outcome is not None and delivered is not None else None
        timed_out = seconds is None or seconds > self.timeout
        crashed = outcome is None and self.proc.poll() is not None
        if timed_out:
            self._stop()
            self._start()
        return {"seconds": seconds, "timed_out": timed_out, "crashed": crashed,
                "outcome": outcome[0] if outcome else ("crash" if crashed else "timeout"),
                "body": outcome[1] if outcome else None}

    def close(self) -> None:
        self._stop()


def run_event_source(envs: list[Environment], url: str, arn: str, region: str, tpl: dict, t0: float,
                     cap_seconds: float) -> dict:
    """Plays the SQS event source mapping against the emulator's queue until it is empty (delayed
    and in-flight messages included) or `cap_seconds` have passed: one poller per environment
    (MaximumConcurrency), each gathering a batch of up to BatchSize for up to
    MaximumBatchingWindowInSeconds after its first message, invoking, then deleting what the
    function did not return as a batch item failure. A failed or timed-out invocation deletes
    nothing: its whole batch comes back after the queue's visibility timeout, as in Lambda."""
    sqs = boto3.client("sqs", region_name=region)
    batch_size, window = tpl["BatchSize"], tpl["MaximumBatchingWindowInSeconds"]
    invocations: list[dict] = []
    lock = threading.Lock()
    # moto's ReceiveMessage is not thread-safe: two at once can both take the same visible
    # message (seen here: 3 of 200, each then diagnosed and sent twice). SQS itself delivers a
    # message twice only rarely (at-least-once), so the pollers take turns: short polls, one at a
    # time, and a pause between empty ones instead of a long poll.
    receiving = threading.Lock()
    stop = threading.Event()
    state: dict[str, Any] = {"cap_hit": False, "drained_at": None}
    in_flight: dict[str, int] = {}  # message id -> invocations holding it now
    state["overlapping"] = 0

    def gather() -> list[dict]:
        batch: list[dict] = []
        close_at: float | None = None
        while len(batch) < batch_size and not stop.is_set():
            if close_at is not None and time.time() >= close_at:
                break
            with receiving:
                got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(10, batch_size - len(batch)),
                                          WaitTimeSeconds=0, AttributeNames=["All"]).get("Messages", [])
            if not got:
                if close_at is None:
                    return batch
                time.sleep(min(POLL_SECONDS, max(0.0, close_at - time.time())))
                continue
            if close_at is None:
                close_at = time.time() + window
            batch += got
        return batch

    def poller(k: int, env: Environment) -> None:
        while not stop.is_set():
            if time.time() - t0 >= cap_seconds:
                state["cap_hit"] = True
                stop.set()
                break
            batch = gather()
            if not batch:
                # In flight counts: a running invocation's batch is still on the queue.
                if not queue_bodies(url, region):
                    state["drained_at"] = state["drained_at"] or time.time()
                    stop.set()
                else:
                    time.sleep(POLL_SECONDS)
                continue
            ids = {m["MessageId"] for m in batch}
            with lock:
                state["overlapping"] += sum(1 for i in ids if in_flight.get(i))
                for i in ids:
                    in_flight[i] = in_flight.get(i, 0) + 1
            kinds = Counter(body_kind(m["Body"]) for m in batch)
            started = time.time()
            r = env.invoke({"Records": [sqs_record(m, arn, region) for m in batch]})
            body = r["body"] if isinstance(r["body"], dict) else {}
            failed = [f.get("itemIdentifier") for f in body.get("batchItemFailures") or []]
            # Lambda fails the whole batch for an error, a timeout, or a failure naming no message of it.
            whole = r["outcome"] != "response" or r["timed_out"] or any(f not in ids for f in failed)
            done = [] if whole else [m for m in batch if m["MessageId"] not in set(failed)]
            for i in range(0, len(done), 10):
                sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                                                                for n, m in enumerate(done[i:i + 10])])
            log(f"  +{started - t0:.0f} s function {k}: {len(batch)} messages {dict(kinds)} -> {r['outcome']} "
                f"after {secs(r['seconds'])}{' TIMED OUT' if r['timed_out'] else ''}, {len(failed)} batch item failures")
            with lock:
                for i in ids:
                    in_flight[i] -= 1
                invocations.append({
                    "function": k, "at": round(started - t0, 3), "records": len(batch), "kinds": dict(kinds),
                    "receive_counts": dict(Counter(int(m["Attributes"].get("ApproximateReceiveCount", "1")) for m in batch)),
                    "seconds": r["seconds"], "timed_out": r["timed_out"], "outcome": r["outcome"],
                    "batch_item_failures": len(failed), "whole_batch_failed": whole,
                })

    threads = [threading.Thread(target=poller, args=(k, e), daemon=True) for k, e in enumerate(envs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    invocations.sort(key=lambda i: i["at"])
    left = queue_bodies(url, region)
    return {"invocations": invocations, "cap_hit": state["cap_hit"], "drained_at": state["drained_at"],
            "left_in_queue": dict(Counter(body_kind(b) for b in left)), "overlapping": state["overlapping"]}


def replay_throttle(times: list[float], per_second: float = 2.0) -> int:
    """LookupEvents the emulator throttled, replayed from the arrival times it recorded: its
    token bucket (capacity 2, refilled 2/s, per account and region, full at the start of the
    run) does not log its refusals. Close, not exact: the bucket reads its own clock a moment
    after the arrival is recorded."""
    tokens, last, throttled = per_second, None, 0
    for t in sorted(times):
        if last is not None:
            tokens = min(per_second, tokens + (t - last) * per_second)
        last = t
        if tokens >= 1:
            tokens -= 1
        else:
            throttled += 1
    return throttled


def emf_total(stdout: str, metric: str) -> int:
    """A count metric summed over the function's EMF lines (one per invocation)."""
    return sum(int(v.get(metric) or 0) for v in json_lines(stdout) if "_aws" in v and metric in v)


def epoch(stamp_text: str) -> float:
    return datetime.fromisoformat(stamp_text.replace("Z", "+00:00")).timestamp()


def storm_findings(envs: list[Environment]) -> tuple[str, Counter, list[dict], dict[str, float]]:
    """What a storm's functions wrote: their stdout, the interceptor's call counts summed, the
    findings logged, and when each instance's first finding was logged (epoch seconds)."""
    stdout = "\n".join(s for e in envs for s in e.stdout)
    interceptor: Counter = Counter()
    for st in all_stats_lines(stdout):
        interceptor.update(st.get("api_calls", {}))
    lines = log_lines(stdout, "finding")
    first_at: dict[str, float] = {}
    for v in lines:
        i = v["finding"]["instance_id"]
        first_at[i] = min(first_at.get(i, float("inf")), epoch(v["timestamp"]))
    return stdout, interceptor, [v["finding"] for v in lines], first_at


def deployed_queues(region: str, prefix: str, tpl: dict) -> tuple[str, str, str, str, str]:
    """What template.yaml deploys around the function, named `<prefix>-...-<random>`: the events
    queue with the template's attributes and its dead-letter queue, and the findings topic with a
    queue subscribed (the inbox, to count what SNS got). Returns (dlq_url, url, arn, topic, inbox)."""
    sqs, sns = boto3.client("sqs", region_name=region), boto3.client("sns", region_name=region)
    tag = uuid.uuid4().hex[:6]

    def arn_of(url: str) -> str:
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    dlq_url = sqs.create_queue(QueueName=f"{prefix}-dlq-{tag}")["QueueUrl"]
    attrs = {"VisibilityTimeout": str(tpl["VisibilityTimeout"]), "DelaySeconds": str(tpl["DelaySeconds"])}
    if tpl["maxReceiveCount"]:
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn_of(dlq_url), "maxReceiveCount": tpl["maxReceiveCount"]})
    url = sqs.create_queue(QueueName=f"{prefix}-events-{tag}", Attributes=attrs)["QueueUrl"]
    topic = sns.create_topic(Name=f"{prefix}-findings-{tag}")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"{prefix}-inbox-{tag}")["QueueUrl"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn_of(inbox))
    return dlq_url, url, arn_of(url), topic, inbox


def measure_deployed(binary: str, storm: dict, tpl: dict, functions: int, cap_seconds: float,
                     background: dict | None = None) -> dict:
    """Issue 15: the storm as template.yaml delivers it, at the deployed pace, with the
    template's timeout. The storm's CloudTrail records become visible at t_visible and the 200
    state changes go on a queue with the events queue's attributes right after (as EventBridge
    puts them there); then the event source runs `functions` (MaximumConcurrency) environments
    until the queue is empty: first deliveries, batch item failures back after their visibility
    timeout, deferred events and redeliveries the function sends back after their delay. Each
    environment paces its own CloudTrail calls; the emulator's 2/s bucket is per account and
    region, shared, as in AWS. A topic subscribed by a queue counts what SNS got per finding."""
    region = storm["region"]
    sqs = boto3.client("sqs", region_name=region)
    dlq_url, url, arn, topic, inbox = deployed_queues(region, "kld-bench", tpl)
    noise = seed_background(region, storm["keys"][0], background["grants"], background["starts"]) if background else None
    env_extra = {**tpl["environment"], "CLOUDTRAIL_WAIT_MINUTES": str(tpl["CloudTrailWaitMinutes"]),
                 "EVENTS_QUEUE_URL": url, "FINDINGS_TOPIC_ARN": topic}
    envs = [Environment(binary, region, env_extra, tpl["Timeout"]) for _ in range(functions)]
    settle_throttle()
    reset_calls()
    # The launch calls were made 1 to 3 minutes ago; their records become visible now.
    post_records(region, failure_records(storm, datetime.now(UTC), lambda n: timedelta(seconds=60 + n % 120)))
    t_visible = time.time()
    ids = storm["instance_ids"]
    for i in range(0, len(ids), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": json.dumps(eventbridge_event(x, region))}
                                                      for n, x in enumerate(ids[i:i + 10])])
    run = run_event_source(envs, url, arn, region, tpl, t_visible, cap_seconds)
    t_end = run["drained_at"] or time.time()
    for e in envs:
        e.close()
    calls = recorded_calls()
    invocations = run["invocations"]
    stdout, interceptor, findings, first_at = storm_findings(envs)
    by_id = Counter((f["id"], f.get("digest")) for f in findings)
    sns_attrs = [json.loads(b).get("MessageAttributes", {}) for b in queue_bodies(inbox, region)]
    sns_by_id = Counter((a.get("finding_id", {}).get("Value"), a.get("digest", {}).get("Value")) for a in sns_attrs)
    lookups = [c["time"] - t_visible for c in calls if c["action"] == "LookupEvents" and c["region"] == region]
    answered = [i["seconds"] for i in invocations if i["seconds"] is not None]
    own = [c for c in calls if not (c["service"] == "sqs" and c["action"] in EVENT_SOURCE_ACTIONS)]
    delays = sorted(first_at.values())
    return {
        "batch_size": tpl["BatchSize"], "functions": functions, "batches": len(invocations),
        "finished": run["drained_at"] is not None,
        "wall": t_end - t_visible,
        "invocation_seconds": summary(answered) if answered else None,
        "maxrss_kb": max(e.peak_kb for e in envs),
        "interceptor": dict(sorted(interceptor.items())), "total": sum(interceptor.values()),
        "emulator": call_counts(own),
        "lookup_events_max_per_second": lookup_windows([c for c in calls if c["region"] == region]),
        "findings": len(findings),
        "distinct_instances": len(first_at),
        "causes": dict(Counter(f["causes"][0]["code"] for f in findings if f.get("causes"))),
        "batch_item_failures": sum(i["batch_item_failures"] for i in invocations),
        # Issue 15's figures.
        "region": region, "background": noise, "cap_seconds": cap_seconds, "cap_hit": run["cap_hit"],
        "left_in_queue": run["left_in_queue"], "dead_letter_queue": len(queue_bodies(dlq_url, region)),
        "timeout_seconds": tpl["Timeout"],
        "timed_out": sum(1 for i in invocations if i["timed_out"]),
        "whole_batch_failed": sum(1 for i in invocations if i["whole_batch_failed"]),
        "processes": sum(e.processes for e in envs),
        "invocation_seconds_max": max(answered, default=None),
        "received": dict(sum((Counter(i["kinds"]) for i in invocations), Counter())),
        "received_again": sum(n for i in invocations for c, n in i["receive_counts"].items() if c > 1),
        # A message handed to a second invocation while the first still held it (the emulator's
        # receive race, or SQS's rare second delivery): each can make a finding twice.
        "delivered_to_two_at_once": run["overlapping"],
        "deferrals": emf_total(stdout, "Deferrals"),
        "missing_instances": len(set(ids) - set(first_at)),
        "caller_unknown": sum(1 for f in findings if any(c.get("code") == "caller-unknown" for c in f.get("causes", []))),
        "duplicates": {
            "finding_lines_repeated": sum(n - 1 for n in by_id.values() if n > 1),
            "instances_with_several_findings": sum(1 for n in Counter(f["instance_id"] for f in findings).values() if n > 1),
            "sns_messages": len(sns_attrs),
            "sns_repeated": sum(n - 1 for n in sns_by_id.values() if n > 1),
            "examples": [k[0] for k, n in by_id.items() if n > 1][:3],
        },
        "lookup_events": {**pace(lookups), "throttled_client": emf_total(stdout, "CloudTrailThrottles"),
                          "throttled_replayed": replay_throttle(lookups)},
        "visibility_to_finding": ({**summary([d - t_visible for d in delays]),
                                   "p95": delays[max(0, -(-95 * len(delays) // 100) - 1)] - t_visible}
                                  if delays else None),
        "invocations": invocations,
    }


def measure_noisy(binary: str, storm: dict, noise: dict) -> dict:
    """One `scan` and one SQS batch of 200 over the storm region plus unrelated CloudTrail traffic."""
    region = storm["region"]
    settle_throttle()
    reset_calls()
    p = run_process([binary, "scan", "--region", region, "--format", "json", "--quiet"], tool_env())
    calls = recorded_calls()
    findings = json.loads(p.stdout)["findings"]
    scan = {"wall": p.wall, "maxrss_kb": p.maxrss_kb, "findings": len(findings),
            "causes": dict(Counter(f["causes"][0]["code"] for f in findings if f["causes"])),
            "interceptor": (stats_line(p.stderr) or {}).get("api_calls", {}),
            "total": (stats_line(p.stderr) or {}).get("total"), "emulator": call_counts(calls)}
    sqs = measure_sqs(binary, storm, STORM_SIZE, 1)
    return {"region": region, "background": noise, "scan": scan,
            "sqs": {k: sqs[k] for k in ("invocation_seconds", "maxrss_kb", "interceptor", "total", "findings", "causes")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "kms-launch-doctor"))
    ap.add_argument("--custodian", default=str(ROOT / ".venv-bench" / "bin" / "custodian"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "run.json"))
    ap.add_argument("--diagnose-runs", type=int, default=15)
    ap.add_argument("--startup-runs", type=int, default=25)
    ap.add_argument("--storm-runs", type=int, default=5)
    ap.add_argument("--sqs-runs", type=int, default=3)
    ap.add_argument("--only", choices=["deployed"],
                    help="run only this part (to iterate on it; bench/render.py needs a full run.json, so use --out /tmp/...)")
    ap.add_argument("--deployed", default="quiet,noisy",
                    help="the deployed-storm variants to run: quiet (the storm alone), noisy (with background CloudTrail "
                         "traffic, --deployed-noise), heavy (2000 CreateGrant and 300 StartInstances of background: "
                         "more window pages than fit in one invocation; runs to the cap)")
    ap.add_argument("--deployed-cap-minutes", type=float, default=20,
                    help="stop a deployed-storm variant after this long even if its queue is not empty (the output says so)")
    ap.add_argument("--deployed-noise", default=f"{NOISE_GRANTS},{NOISE_STARTS}",
                    help="background of the noisy variant: successful CreateGrant records, healthy StartInstances records")
    args = ap.parse_args()
    binary = str(Path(args.bin).resolve())
    custodian = args.custodian if Path(args.custodian).exists() else None
    variants = [v for v in args.deployed.split(",") if v]
    grants, starts = (int(x) for x in args.deployed_noise.split(","))
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    results: dict = {"started": started.isoformat(timespec="seconds"), "binary": binary,
                     "loadavg_start": os.getloadavg(), "rss_method": rss_method()}

    with tempfile.TemporaryDirectory(prefix="kld-bench-") as tmp:
        work = Path(tmp)
        http("POST", "/_kld/reset", {})
        suffix = uuid.uuid4().hex[:6]
        deployed = {}
        if args.only is None:
            log("seeding: the article's scenario, two keys, an assumed role, a storm of 200")
            article = seed_user_scenario(REGION_ARTICLE, f"test-{suffix}", 1)
            two_keys = seed_user_scenario(REGION_TWO_KEYS, f"two-keys-{suffix}", 2)
            role = seed_role_scenario(REGION_ROLE, f"launcher-{suffix}")
            storm = seed_storm(REGION_STORM, f"storm-{suffix}")
        log(f"seeding: the deployed storm's instances ({', '.join(variants) or 'none'}; records later)")
        if "quiet" in variants:
            deployed["quiet"] = seed_storm_instances(REGION_DEPLOYED, f"deployed-{suffix}")
        if "noisy" in variants:
            deployed["noisy"] = seed_storm_instances(REGION_DEPLOYED_NOISY, f"deployed-noisy-{suffix}")
        if "heavy" in variants:
            deployed["heavy"] = seed_storm_instances(REGION_DEPLOYED_HEAVY, f"deployed-heavy-{suffix}")
        results["seeding_seconds"] = time.perf_counter() - t_start

        if args.only is None:
            log("API calls per diagnosis")
            results["calls"] = [measure_calls(binary, "article: one volume, one key, IAM user", article),
                                measure_calls(binary, "two volumes on two keys, IAM user", two_keys),
                                measure_calls(binary, "assumed-role caller, one key", role)]
            log("concurrency (every call delayed 300 ms)")
            results["waves"] = measure_waves(binary, article, 0.3)
            log(f"diagnose whole-process time x{args.diagnose_runs}")
            results["diagnose"] = measure_diagnose_time(binary, article, args.diagnose_runs)
            log(f"Lambda start-up x{args.startup_runs}")
            results["startup"] = measure_startup(binary, args.startup_runs)
            log(f"storm: scan x{args.storm_runs}" + (" and Cloud Custodian" if custodian else " (no custodian)"))
            results["storm"] = measure_storm(binary, custodian, storm, args.storm_runs, work)
            log(f"storm: one SQS batch of {STORM_SIZE} x{args.sqs_runs}, and of 1 x{args.sqs_runs}")
            results["sqs_storm"] = measure_sqs(binary, storm, STORM_SIZE, args.sqs_runs)
            results["sqs_one"] = measure_sqs(binary, storm, 1, args.sqs_runs)
        tpl = template_delivery()
        functions = max(1, min(tpl["MaximumConcurrency"], -(-STORM_SIZE // tpl["BatchSize"])))
        template = {k: tpl[k] for k in ("BatchSize", "MaximumBatchingWindowInSeconds", "MaximumConcurrency", "Timeout",
                                        "DelaySeconds", "VisibilityTimeout", "maxReceiveCount", "CloudTrailWaitMinutes",
                                        "CLOUDTRAIL_CALLS_PER_SECOND", "DEADLINE_MARGIN_SECONDS")}
        for name, key, noise in (("quiet", "sqs_deployed", None),
                                 ("noisy", "sqs_deployed_noisy", {"grants": grants, "starts": starts}),
                                 ("heavy", "sqs_deployed_heavy", {"grants": HEAVY_GRANTS, "starts": HEAVY_STARTS})):
            if name not in deployed:
                continue
            log(f"storm as template.yaml delivers it ({name}): SQS batches of up to {tpl['BatchSize']} within "
                f"{tpl['MaximumBatchingWindowInSeconds']} s, {functions} concurrent functions, Timeout {tpl['Timeout']} s, "
                f"queue delay {tpl['DelaySeconds']} s, until the queue is empty (at most {args.deployed_cap_minutes:g} min)")
            results[key] = {**measure_deployed(binary, deployed[name], tpl, functions, args.deployed_cap_minutes * 60, noise),
                            "template": template}
            r = results[key]
            v = r["visibility_to_finding"] or {}
            log(f"  {r['batches']} invocations, {r['timed_out']} timed out, longest {secs(r['invocation_seconds_max'])}; "
                f"findings {r['findings']} for {r['distinct_instances']} instances, repeated {r['duplicates']['finding_lines_repeated']} "
                f"(SNS {r['duplicates']['sns_messages']}, repeated {r['duplicates']['sns_repeated']}); LookupEvents "
                f"{r['lookup_events']['total']}, max {r['lookup_events']['max_per_second']}/s, {r['lookup_events']['per_minute_max']}/min, "
                f"throttled {r['lookup_events']['throttled_client']}; visibility->finding median {secs(v.get('median'))}, "
                f"worst {secs(v.get('max'))}; queue {'drained' if r['finished'] else 'NOT drained (cap)'} after {secs(r['wall'])}")
        if args.only is None:
            log("storm with background CloudTrail traffic: scan x1, SQS batch x1")
            noisy = seed_storm(REGION_NOISY, f"noisy-{suffix}")
            noise = seed_background(REGION_NOISY, noisy["keys"][0], NOISE_GRANTS, NOISE_STARTS)
            results["storm_noisy"] = measure_noisy(binary, noisy, noise)

    results["loadavg_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - t_start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.out} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
