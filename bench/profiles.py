"""`make bench-profiles`: the release profile's trade-off, measured. Not part of `make bench`:
each variant is a full release build of every crate (15-25 minutes each, cold, on 2 cores).

    python3 bench/profiles.py build [VARIANT...]      # cold builds, timed (default: all variants)
    tests/emulator run -- .venv/bin/python bench/profiles.py measure

Each variant is a custom Cargo profile defined on the command line (`--config`), inheriting the
release profile in Cargo.toml and changing one or more settings, built in a target directory of
its own (target/bench-profiles/<profile>/: its own build lock, so that hours of builds do not
block `cargo test` in the same tree, and target/release is left alone). `measure` times every built variant, and the chosen release
build, against the emulator (the article's `diagnose`, and Lambda start-up). Results go to
bench/results/profiles.json, merged per variant, so a partial run keeps what it measured.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import steps  # noqa: E402

OUT = ROOT / "bench" / "results" / "profiles.json"
TARGET = ROOT / "target" / "bench-profiles"

# name -> (what it shows, settings overriding [profile.release]).
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "kld-o3": ("opt-level 3 instead of \"s\": speed over size", {"opt-level": 3}),
    "kld-abort": ("panic = \"abort\" (drops unwinding tables; a panic kills the process)", {"panic": "abort"}),
    "kld-cargo-default": ("Cargo's default release (opt-level 3, no LTO, 16 codegen units), stripped",
                          {"opt-level": 3, "lto": False, "codegen-units": 16}),
    "kld-fat": ("lto = \"fat\" instead of \"thin\"", {"lto": "fat"}),
}


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)


def build_argv(name: str) -> list[str]:
    argv = ["cargo", "build", "--locked", "--bin", steps.BIN, "--profile", name,
            "--config", f'profile.{name}.inherits="release"']
    for k, v in VARIANTS[name][1].items():
        argv += ["--config", f"profile.{name}.{k}={toml_value(v)}"]
    return argv


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {"variants": {}}


def save(data: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")


def build(names: list[str]) -> None:
    for name in names or list(VARIANTS):
        cold = not (TARGET / name).exists()
        step = steps.timed(build_argv(name), dict(os.environ, CARGO_TARGET_DIR=str(TARGET)))
        step["command"] = f"CARGO_TARGET_DIR={TARGET.relative_to(ROOT)} {step['command']}"
        binary = TARGET / name / steps.BIN
        data = load()
        entry = data["variants"].setdefault(name, {})
        entry.update({
            "what": VARIANTS[name][0],
            "settings": VARIANTS[name][1],
            "build": {**step, "cold": cold, "at": datetime.now(UTC).isoformat(timespec="seconds")},
            "binary": steps.describe(binary),
        })
        save(data)


def measure() -> None:
    import run  # needs boto3 and the emulator: under tests/emulator run

    data = load()
    candidates = {"release": steps.HOST_BIN, **{n: TARGET / n / steps.BIN for n in VARIANTS}}
    run.http("POST", "/_kld/reset", {})
    article = run.seed_user_scenario(run.REGION_ARTICLE, "test-profiles", 1)
    for name, binary in candidates.items():
        if not binary.exists():
            run.log(f"{name}: not built (python3 bench/profiles.py build {name})")
            continue
        run.log(f"{name}: diagnose x10, start-up x20")
        entry = data["variants"].setdefault(name, {})
        if name == "release":
            entry.update({"what": "the chosen release profile (Cargo.toml)", "settings": {},
                          "binary": steps.describe(binary)})
        entry["measured"] = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "diagnose": run.measure_diagnose_time(str(binary), article, 10),
            "startup": run.measure_startup(str(binary), 20),
        }
        save(data)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("build", "measure"):
        raise SystemExit(f"usage: {sys.argv[0]} build [{'|'.join(VARIANTS)}...] | measure")
    if sys.argv[1] == "build":
        unknown = [n for n in sys.argv[2:] if n not in VARIANTS]
        if unknown:
            raise SystemExit(f"unknown variant(s): {' '.join(unknown)}")
        t0 = time.perf_counter()
        build(sys.argv[2:])
        steps.log(f"built in {time.perf_counter() - t0:.0f} s: " + shlex.join(sys.argv[2:] or list(VARIANTS)))
    else:
        measure()
