"""`make bench`, the steps without the emulator: builds (timed, so BENCHMARKS.md can say when a
figure includes a cold build), the criterion benches, and the artifacts' sizes.

    python3 bench/steps.py build        # criterion bench binary, release host binary, arm64 bootstrap (if stale)
    python3 bench/steps.py criterion    # cargo bench --bench core, estimates collected
    python3 bench/steps.py artifacts    # sizes of the host binary and the arm64 bootstrap

Each writes a JSON file in bench/results/ (raw figures for bench/render.py). Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = "kms-launch-doctor"
HOST_BIN = ROOT / "target" / "release" / BIN
ARM64_BOOTSTRAP = ROOT / "target" / "lambda" / BIN / "bootstrap"
ARM64_BUILD = ["cargo", "lambda", "build", "--release", "--arm64", "--bin", BIN]
# cargo-lambda (and zig) from the lint venv, as `make build`: one toolchain path, one cache.
LINT_VENV_BIN = ROOT / ".venv-lint" / "bin"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(data, indent=2) + "\n")


def kind_of(compiled: int) -> str:
    return "no-op (warm)" if compiled == 0 else ("cold" if compiled > 50 else f"incremental ({compiled} crates)")


def timed(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Runs a build command, echoing its output, and counts the crates it compiled. Cargo's own
    commands get `--message-format=json-render-diagnostics`: the artifacts (fresh or not, and
    the executables) come from the JSON on stdout, the progress goes to stderr as usual."""
    cargo_json = argv[:2] in (["cargo", "build"], ["cargo", "bench"])
    full = [*argv, "--message-format=json-render-diagnostics"] if cargo_json else argv
    log("$ " + shlex.join(argv))
    t0 = time.perf_counter()
    p = subprocess.Popen(full, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                         stderr=None if cargo_json else subprocess.STDOUT)
    compiled = 0
    executables: list[str] = []
    assert p.stdout is not None
    for line in p.stdout:
        if cargo_json:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") == "compiler-artifact":
                compiled += 0 if msg.get("fresh") else 1
                if msg.get("executable"):
                    executables.append(msg["executable"])
        else:
            sys.stderr.write(line)
            if re.match(r"\s*Compiling ", line):
                compiled += 1
    rc = p.wait()
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{shlex.join(argv)} failed with exit code {rc}")
    return {"command": shlex.join(argv), "seconds": round(seconds, 1), "crates_compiled": compiled,
            "kind": kind_of(compiled), "executables": executables}


def build() -> None:
    steps = []
    # The bench build first: it also builds the binary (bench profile, dev-dependency features,
    # so not the shipped one) and links it to target/release/; the release build after it links
    # the shipped one back. Hence also `criterion` runs the bench executable, not `cargo bench`.
    steps.append({"step": "criterion bench binary (bench profile)",
                  **timed(["cargo", "bench", "--locked", "--bench", "core", "--no-run"])})
    steps.append({"step": "host release binary", **timed(["cargo", "build", "--release", "--locked", "--bin", BIN])})
    if not any(e.endswith(f"/release/{BIN}") for e in steps[-1]["executables"]):
        raise SystemExit(f"cargo build --release did not report target/release/{BIN}")
    # Cargo's fingerprints decide whether the arm64 bootstrap is stale: a no-op takes a second.
    subprocess.run(["rustup", "target", "add", "aarch64-unknown-linux-gnu"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    env = dict(os.environ, PATH=f"{LINT_VENV_BIN}:{os.environ.get('PATH', '')}")
    steps.append({"step": "arm64 bootstrap (cargo lambda)", **timed(ARM64_BUILD, env)})
    write("builds.json", {"at": datetime.now(UTC).isoformat(timespec="seconds"), "steps": steps})


def criterion() -> None:
    """`cargo bench --bench core`, by running the executable the build step reported (as cargo
    would, with `--bench`): `cargo bench` itself would link its own build of the binary over
    target/release/kms-launch-doctor, the one measured next."""
    builds = json.loads((RESULTS / "builds.json").read_text())
    exe = next(e for s in builds["steps"] for e in s.get("executables", []) if "/deps/core-" in e)
    argv = [exe, "--bench"]
    log("$ " + shlex.join(argv))
    t0, started = time.perf_counter(), time.time()
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    sys.stderr.write(p.stderr[-2000:])
    sys.stderr.write(p.stdout)
    if p.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed with exit code {p.returncode}")
    benches = {}
    # Each benchmark's latest run: target/criterion/<group>/<name>/new/{estimates,benchmark}.json.
    for est in sorted((ROOT / "target" / "criterion").glob("*/*/new/estimates.json")):
        meta = json.loads((est.parent / "benchmark.json").read_text())
        if est.stat().st_mtime < started:
            continue  # left over from an earlier run of a bench that no longer exists
        e = json.loads(est.read_text())
        benches[meta["full_id"]] = {
            "median_ns": e["median"]["point_estimate"],
            "median_ci_ns": [e["median"]["confidence_interval"]["lower_bound"],
                             e["median"]["confidence_interval"]["upper_bound"]],
            "mean_ns": e["mean"]["point_estimate"],
            "std_dev_ns": e["std_dev"]["point_estimate"],
        }
    write("criterion.json", {"at": datetime.now(UTC).isoformat(timespec="seconds"),
                             "command": "cargo bench --locked --bench core",
                             "ran": shlex.join(["target/release/deps/" + Path(exe).name, "--bench"]),
                             "seconds": round(time.perf_counter() - t0, 1), "benches": benches})


def describe(path: Path) -> dict:
    if not path.exists():
        return {"path": str(path.relative_to(ROOT)), "exists": False}
    kind = subprocess.run(["file", "-b", str(path)], capture_output=True, text=True).stdout.strip()
    return {"path": str(path.relative_to(ROOT)), "exists": True, "bytes": path.stat().st_size, "file": kind,
            "stripped": ", stripped" in kind,
            "built_at": datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")}


def artifacts() -> None:
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    write("artifacts.json", {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": manifest.get("profile", {}).get("release", {}),
        "host": describe(HOST_BIN),
        "arm64": describe(ARM64_BOOTSTRAP),
    })


if __name__ == "__main__":
    commands = {"build": build, "criterion": criterion, "artifacts": artifacts}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        raise SystemExit(f"usage: {sys.argv[0]} {'|'.join(commands)}")
    commands[sys.argv[1]]()
