"""`make run`: seed the AWS Knowledge Center scenario in the emulator, then diagnose it.

An IAM user `test` with full EC2 permissions starts an instance whose root volume is
encrypted with a customer managed KMS key; the user may not kms:CreateGrant on that key, so
EC2 cannot get its grant, the instance goes pending and falls back to stopped with
`Client.InternalError: Client error on launch`, and CloudTrail records the denied
CreateGrant (seeded by tests/emulator/seed.py, which bench/ shares). Runs under
`tests/emulator run`, which sets AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from emulator.seed import seed_user_scenario  # noqa: E402

REGION = "eu-west-1"


def main() -> int:
    instance = seed_user_scenario(REGION, "test")["instance_id"]
    print(f"Seeded the Knowledge Center scenario: user/test started {instance} in {REGION}; it fell back to stopped.\n", flush=True)
    tool = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug" / "kms-launch-doctor"  # where `make run` built it
    cmd = [str(tool), "diagnose", "--instance-id", instance, "--region", REGION, "--format", "text"]
    print("$ kms-launch-doctor " + " ".join(cmd[1:]) + "\n", flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
