"""`make bench`, the schedule model (issue 18): a discrete-event simulation of the events queue,
its SQS event source and the function, for a storm of failed launches whose CloudTrail records
show up 1 to 15 minutes after the call (most near 5). It compares how long a finding takes
after its launch record becomes visible, and what that costs in LookupEvents, under the old
schedule (first look at the first receipt, then put off until CloudTrail "should" have the
record, then a doubling backoff) and the new one (a look every LOOK_INTERVAL).

Why a model and not the emulator: the interesting delays are minutes long and the storms large;
a model runs every size in a second, with the same seed every time. Its parameters are read from
the code (template.yaml and src/lambda/looks.rs), so it follows the code when the code changes:

    python3 bench/schedule.py [--out bench/results/schedule.json]

Standard library only (bench/run.py imports the template reader from here). Writes one JSON file
that bench/render.py turns into a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import re
import statistics
import sys
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "schedule.json"

SEED = 18  # the number: any fixed seed makes every run draw the same storm
STORM_SIZES = (20, 200, 1000)
STORM_SPREAD_SECONDS = 120.0  # the failures' state changes fall within 2 minutes
QUEUE_ARRIVAL_SECONDS = (1.0, 5.0)  # EventBridge puts each event on the queue within seconds
DELAY_MEDIAN, DELAY_SIGMA = 300.0, 0.45  # CloudTrail delay: lognormal, median 5 min
DELAY_MIN, DELAY_MAX = 60.0, 900.0  # ... clipped to 1 to 15 minutes
PAGE_SIZE = 50  # LookupEvents returns at most 50 records a page
INVOCATION_BASE_SECONDS = 1.0  # an invocation's other calls (EC2, KMS, IAM, SQS, SNS), measured ~1 s
LOOKUP_BUDGET_PER_MINUTE = 120  # CloudTrail: 2 LookupEvents per second per account and region
BACKGROUND = {"grants": 1000, "starts": 300}  # bench/run.py's busier account (NOISE_GRANTS, NOISE_STARTS)

# The old schedule, as src/lambda/looks.rs had it until issue 18 (hard-coded: it is gone from the code).
# Every receipt is a look (the batch is diagnosed before next_look decides); an event whose launch
# record is missing is deferred until min(event time, first receipt) + CLOUDTRAIL_DELIVERY
# (clamped to 30..900 s), and after that by backoff(looks) = min(60 * 2^(looks - 1), 900,
# until the wait deadline + 5), at least 30 s; looks counts this receipt and the earlier ones.
OLD_CLOUDTRAIL_DELIVERY = 330.0


# --- Reading the code -------------------------------------------------------------------------

def section(text: str, name: str) -> str:
    """A top-level section of template.yaml (`Resources:`), up to the next one."""
    m = re.search(rf"^{name}:\s*$(.*?)(?=^\S|\Z)", text, re.MULTILINE | re.DOTALL)
    return m.group(1) if m else ""


def block(text: str, key: str) -> str:
    """The lines indented under the least indented `key:` that opens a block (no value on its
    line): a resource named `key`, not a property of that name deeper in another one."""
    found = list(re.finditer(rf"^( *){re.escape(key)}:\s*(#.*)?$", text, re.MULTILINE))
    if not found:
        return ""
    m = min(found, key=lambda x: len(x.group(1)))
    indent = len(m.group(1))
    lines = []
    for line in text[m.end():].splitlines()[1:]:
        if line.strip() and not line.lstrip().startswith("#") and len(line) - len(line.lstrip()) <= indent:
            break
        lines.append(line)
    return "\n".join(lines)


def scalar(text: str, key: str) -> str | None:
    """The first `key: value` in `text` (quotes and a trailing comment removed)."""
    m = re.search(rf"^\s*{re.escape(key)}:\s*\"?([^\"#\n]*?)\"?\s*(#.*)?$", text, re.MULTILINE)
    return m.group(1).strip() if m and m.group(1).strip() else None


def number(text: str, key: str, default: float) -> float:
    v = scalar(text, key)
    try:
        return float(v) if v is not None else default
    except ValueError:
        return default


def template_settings(text: str | None = None) -> dict[str, Any]:
    """The delivery figures of template.yaml as it is now: the SQS event source (BatchSize,
    MaximumBatchingWindowInSeconds, ScalingConfig.MaximumConcurrency), the events queue
    (DelaySeconds, VisibilityTimeout, maxReceiveCount), the function (Timeout and the literal
    environment values, CLOUDTRAIL_CALLS_PER_SECOND and DEADLINE_MARGIN_SECONDS among them) and
    CloudTrailWaitMinutes' default. A figure the template leaves out gets AWS's or the code's
    default, and `defaulted` names it."""
    text = text if text is not None else (ROOT / "template.yaml").read_text()
    resources = section(text, "Resources")
    queue = block(resources, "EventsQueue")
    function = block(resources, "Function")
    source = block(function, "Events")
    wait = block(section(text, "Parameters"), "CloudTrailWaitMinutes")
    env = block(block(function, "Environment"), "Variables")
    literals = {}
    for m in re.finditer(r"^\s*([A-Z][A-Z0-9_]*):\s*(.+?)\s*$", env, re.MULTILINE):
        value = m.group(2).split(" #")[0].strip()
        if not value.startswith("!"):
            literals[m.group(1)] = value.strip("\"'")
    # (name, where, default): AWS's defaults for SQS and Lambda, the code's for the rest.
    wanted = {
        "BatchSize": (source, 10), "MaximumBatchingWindowInSeconds": (source, 0),
        "MaximumConcurrency": (source, 1000), "Timeout": (function, 3),
        "DelaySeconds": (queue, 0), "VisibilityTimeout": (queue, 30), "maxReceiveCount": (queue, 0),
        "CloudTrailWaitMinutes": (wait, 20),
    }
    out: dict[str, Any] = {"defaulted": []}
    for name, (where, default) in wanted.items():
        key = "Default" if name == "CloudTrailWaitMinutes" else name
        v = scalar(where, key)
        if v is None:
            out["defaulted"].append(name)
        out[name] = int(float(v)) if v is not None else default
    out["environment"] = literals
    rate = literals.get("CLOUDTRAIL_CALLS_PER_SECOND")
    out["CLOUDTRAIL_CALLS_PER_SECOND"] = float(rate) if rate else None  # None: the binary's default
    margin = literals.get("DEADLINE_MARGIN_SECONDS")
    out["DEADLINE_MARGIN_SECONDS"] = int(margin) if margin else 10
    return out


def look_interval(src: str | None = None) -> tuple[int, bool]:
    """The new schedule's `LOOK_INTERVAL: Duration = Duration::seconds(N)` in src/lambda/looks.rs, and
    whether it was found (if not, 30 s, the interval issue 18 asks for)."""
    src = src if src is not None else (ROOT / "src" / "lambda" / "looks.rs").read_text()
    m = re.search(r"const\s+LOOK_INTERVAL\s*:\s*Duration\s*=\s*Duration::seconds\(\s*(\d+)\s*\)", src)
    return (int(m.group(1)), True) if m else (30, False)


# --- The model --------------------------------------------------------------------------------

@dataclass
class Params:
    batch_size: int
    window: float
    concurrency: int
    queue_delay: float
    wait_budget: float
    rate: float  # LookupEvents per second, per function
    interval: float
    timeout: float
    margin: float
    background: dict[str, int] = field(default_factory=lambda: {"grants": 0, "starts": 0})


@dataclass
class Failure:
    """One failed launch: its launch call, its state change's arrival on the queue, when its
    two CloudTrail records (StartInstances, denied CreateGrant) become visible."""
    n: int
    call_at: float
    queued_at: float
    visible_at: float
    finding_at: float | None = None
    caller_known: bool | None = None
    findings: int = 0
    looks: int = 0


@dataclass
class Message:
    failure: Failure
    first_received: float  # SQS's SentTimestamp of the first message (a deferred one carries it)
    looks_before: int  # `looks` of the deferred body (0 for the EventBridge event)


@dataclass
class Poller:
    """One of MaximumConcurrency: gathers a batch, invokes a function, waits for it."""
    n: int
    state: str = "idle"  # idle | gathering | busy
    batch: list[Message] = field(default_factory=list)
    since: float = 0.0
    close_at: float = 0.0


def old_next_look(p: Params, now: float, observed: float, first_received: float, looks: int) -> float | None:
    """src/lambda/looks.rs's next_look before issue 18 (launch record missing, no lookup failure)."""
    deadline = first_received + p.wait_budget
    if now >= deadline:
        return None
    due = min(observed, first_received) + OLD_CLOUDTRAIL_DELIVERY
    if now < due:
        return float(min(max(int(due - now), 30), 900))
    until = int(deadline - now)
    exp = 60 * (1 << min(max(looks - 1, 0), 10))
    return float(max(min(exp, 900, until + 5), 30))


def new_next_look(p: Params, now: float, first_received: float) -> float | None:
    """src/lambda/looks.rs's next_look after issue 18: every LOOK_INTERVAL until the budget's end,
    the last look landing on it."""
    end = first_received + p.wait_budget
    if now >= end:
        return None
    return float(max(int(min(p.interval, end - now)), 1))


def draw_storm(n: int, rng: random.Random) -> list[Failure]:
    out = []
    for i in range(n):
        call = rng.uniform(0.0, STORM_SPREAD_SECONDS)
        delay = min(max(rng.lognormvariate(math.log(DELAY_MEDIAN), DELAY_SIGMA), DELAY_MIN), DELAY_MAX)
        out.append(Failure(i, call, call + rng.uniform(*QUEUE_ARRIVAL_SECONDS), call + delay))
    return out


def window_pages(visible_records: int, background: dict[str, int]) -> int:
    """One window query as gather.rs's window_trail makes it: StartInstances, RunInstances and
    CreateGrant by event name, each paged 50 at a time (an empty query still costs a call)."""
    def pages(n: int) -> int:
        return max(1, math.ceil(n / PAGE_SIZE))
    return pages(visible_records + background["starts"]) + pages(0) + pages(visible_records + background["grants"])


def simulate(p: Params, schedule: str, storm: list[Failure]) -> dict[str, Any]:
    """Runs the storm through the queue, the event source and the function under `schedule`
    ("old" or "new"); returns the figures and checks the model's totals."""
    storm = [Failure(f.n, f.call_at, f.queued_at, f.visible_at) for f in storm]
    visible_sorted = sorted(f.visible_at for f in storm)
    seq = itertools.count()
    heap: list[tuple[float, int, str, Any]] = []
    for f in storm:
        heapq.heappush(heap, (f.queued_at + p.queue_delay, next(seq), "visible", Message(f, f.queued_at, 0)))
    fifo: deque[Message] = deque()
    pollers = [Poller(i) for i in range(p.concurrency)]
    lookups: list[float] = []
    invocations: list[dict[str, Any]] = []
    messages_sent = len(storm)

    def invoke(poller: Poller, t: float) -> None:
        batch, poller.batch, poller.state = poller.batch, [], "busy"
        visible = bisect_right(visible_sorted, t)
        pages = 2 if len(batch) == 1 else window_pages(visible, p.background)  # one: by instance, then key
        lookups.extend(t + j / p.rate for j in range(pages))
        seconds = INVOCATION_BASE_SECONDS + (pages - 1) / p.rate
        found = [m for m in batch if m.failure.visible_at <= t]  # the query sees what is visible at its start
        invocations.append({"at": t, "events": len(batch), "pages": pages, "seconds": seconds})
        heapq.heappush(heap, (t + seconds, next(seq), "end", (poller, t, batch, {id(m) for m in found})))

    def dispatch(t: float) -> None:
        while fifo:
            gathering = sorted((q for q in pollers if q.state == "gathering"), key=lambda q: q.since)
            if gathering:
                g = gathering[0]
                g.batch.append(fifo.popleft())
                if len(g.batch) >= p.batch_size:
                    invoke(g, t)
                continue
            idle = next((q for q in pollers if q.state == "idle"), None)
            if idle is None:
                return
            idle.state, idle.batch, idle.since = "gathering", [fifo.popleft()], t
            idle.close_at = t + p.window
            if len(idle.batch) >= p.batch_size or p.window <= 0:
                while p.window <= 0 and fifo and len(idle.batch) < p.batch_size:
                    idle.batch.append(fifo.popleft())
                invoke(idle, t)
            else:
                heapq.heappush(heap, (idle.close_at, next(seq), "close", idle))

    while heap:
        t, _, kind, x = heapq.heappop(heap)
        if kind == "visible":
            fifo.append(x)
        elif kind == "close":
            if x.state == "gathering" and x.close_at == t:
                invoke(x, t)
        else:
            poller, started, batch, found = x
            for m in batch:
                f = m.failure
                looks = m.looks_before + 1
                f.looks = looks
                if id(m) in found:
                    f.finding_at, f.caller_known = t, True
                    f.findings += 1
                    continue
                observed = f.call_at  # the state change follows the launch call within seconds
                if schedule == "old":
                    delay = old_next_look(p, started, observed, m.first_received, looks)
                else:
                    delay = new_next_look(p, started, m.first_received)
                if delay is None:
                    f.finding_at, f.caller_known = t, False
                    f.findings += 1
                else:
                    messages_sent += 1
                    heapq.heappush(heap, (t + min(delay, 900.0), next(seq), "visible", Message(f, m.first_received, looks)))
            poller.state = "idle"
        dispatch(t)

    # Self-check: every failure ends with exactly one finding, every message was received once.
    assert not fifo and all(q.state == "idle" and not q.batch for q in pollers), "messages left behind"
    assert all(f.findings == 1 for f in storm), "a failure without exactly one finding"
    assert sum(i["events"] for i in invocations) == messages_sent, "messages received != messages sent"
    assert len(lookups) == sum(i["pages"] for i in invocations)
    known = [f for f in storm if f.caller_known]
    unknown = [f for f in storm if not f.caller_known]
    assert len(known) + len(unknown) == len(storm)
    assert all(f.finding_at is not None and f.finding_at >= f.visible_at for f in known), "a finding before its record"
    assert all(f.finding_at is not None and f.finding_at >= f.queued_at + p.wait_budget for f in unknown), \
        "caller-unknown before the wait budget ended"
    delays = sorted(f.finding_at - f.visible_at for f in known)  # type: ignore[operator]
    return {
        "schedule": schedule,
        "failures": len(storm),
        "findings": len(known) + len(unknown),
        "caller_unknown": len(unknown),
        "visibility_to_finding": stats(delays),
        "call_to_finding": stats(sorted(f.finding_at - f.call_at for f in storm)),  # type: ignore[operator]
        "looks_per_failure": {"mean": statistics.fmean(f.looks for f in storm), "max": max(f.looks for f in storm)},
        "messages": messages_sent,
        "invocations": len(invocations),
        "invocation_seconds_max": max(i["seconds"] for i in invocations),
        "invocations_past_the_stop": sum(1 for i in invocations if i["seconds"] > p.timeout - p.margin),
        "lookup_events": pace(lookups),
        "last_finding_at": max(f.finding_at for f in storm),  # type: ignore[type-var]
    }


def stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"n": len(values), "median": statistics.median(values),
            "p95": values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)], "max": values[-1],
            "min": values[0]}


def pace(times: list[float]) -> dict[str, Any]:
    """LookupEvents of the one account-region: in all, per minute (whole minutes from the storm's
    start; the mean over the minutes from the first call to the last), and the most in any 1 s."""
    times = sorted(times)
    if not times:
        return {"total": 0, "per_minute_max": 0, "per_minute_mean": 0.0, "max_per_second": 0, "per_minute": []}
    minutes = [0] * (int(times[-1] // 60) + 1)
    for t in times:
        minutes[int(t // 60)] += 1
    first = int(times[0] // 60)
    active = minutes[first:]
    j, most = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return {"total": len(times), "per_minute_max": max(minutes), "per_minute_mean": sum(active) / len(active),
            "max_per_second": most, "per_minute": minutes,
            "within_budget": max(minutes) <= LOOKUP_BUDGET_PER_MINUTE}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    tpl = template_settings()
    interval, found = look_interval()
    rate = tpl["CLOUDTRAIL_CALLS_PER_SECOND"] or 1.5  # the binary's default (src/aws/pace.rs TRAIL_RATE)
    concurrency = tpl["MaximumConcurrency"]
    base = Params(batch_size=tpl["BatchSize"], window=float(tpl["MaximumBatchingWindowInSeconds"]),
                  concurrency=concurrency, queue_delay=float(tpl["DelaySeconds"]),
                  wait_budget=60.0 * tpl["CloudTrailWaitMinutes"], rate=rate, interval=float(interval),
                  timeout=float(tpl["Timeout"]), margin=float(tpl["DEADLINE_MARGIN_SECONDS"]))
    notes = []
    if not found:
        notes.append("LOOK_INTERVAL not found in src/lambda/looks.rs: the new schedule assumes 30 s")
    if tpl["defaulted"]:
        notes.append("not in template.yaml, AWS's or the code's default used: " + ", ".join(tpl["defaulted"]))
    if concurrency * rate > 2:
        notes.append(f"{concurrency} functions x {rate}/s exceed CloudTrail's 2/s: the model does not throttle")
    scenarios = []
    for size, background in [*((n, None) for n in STORM_SIZES), (200, BACKGROUND)]:
        rng = random.Random(args.seed * 100_003 + size)
        storm = draw_storm(size, rng)
        p = Params(**{**base.__dict__, "background": dict(background or {"grants": 0, "starts": 0})})
        runs = {s: simulate(p, s, storm) for s in ("old", "new")}
        delays = sorted(f.visible_at - f.call_at for f in storm)
        scenarios.append({"failures": size, "background": background, "cloudtrail_delay": stats(delays), **runs})
    out = {
        "seed": args.seed,
        "parameters": {
            "from_template": {k: tpl[k] for k in ("BatchSize", "MaximumBatchingWindowInSeconds", "MaximumConcurrency",
                                                  "DelaySeconds", "CloudTrailWaitMinutes", "Timeout",
                                                  "CLOUDTRAIL_CALLS_PER_SECOND", "DEADLINE_MARGIN_SECONDS")},
            "look_interval_seconds": interval, "look_interval_from_code": found,
            "old_first_look_after_seconds": OLD_CLOUDTRAIL_DELIVERY,
            "storm_spread_seconds": STORM_SPREAD_SECONDS, "queue_arrival_seconds": QUEUE_ARRIVAL_SECONDS,
            "cloudtrail_delay": {"distribution": "lognormal", "median": DELAY_MEDIAN, "sigma": DELAY_SIGMA,
                                 "clipped_to": [DELAY_MIN, DELAY_MAX]},
            "page_size": PAGE_SIZE, "invocation_base_seconds": INVOCATION_BASE_SECONDS,
            "lookup_budget_per_minute": LOOKUP_BUDGET_PER_MINUTE,
        },
        "notes": notes,
        "scenarios": scenarios,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for s in scenarios:
        label = f"{s['failures']} failures" + (" + background" if s["background"] else "")
        for name in ("old", "new"):
            r = s[name]
            d = r["visibility_to_finding"] or {}
            print(f"{label:>24} {name}: visibility->finding median {d.get('median', 0):5.0f} s, p95 {d.get('p95', 0):5.0f} s, "
                  f"worst {d.get('max', 0):5.0f} s; caller-unknown {r['caller_unknown']}; LookupEvents {r['lookup_events']['total']} "
                  f"(max {r['lookup_events']['per_minute_max']}/min, mean {r['lookup_events']['per_minute_mean']:.1f}/min)",
                  file=sys.stderr)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
