"""The control-route dispatch, and the ``serve`` and ``run`` entry points (``server``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import unittest
import urllib.error
import urllib.request

from .base import EMULATOR, EmulatorTestCase


class ControlRouteTests(EmulatorTestCase):
    def test_health(self) -> None:
        self.assertEqual(self.control("GET", "health"), {"ok": True})

    def test_unknown_route_and_bad_body(self) -> None:
        self.assertIn("error", self.control("GET", "nope", expect=404))
        self.assertIn("error", self.control("POST", "faults", body=["not", "an", "object"], expect=400))


class CommandLineTests(unittest.TestCase):
    """The ``serve`` and ``run`` entry points, as make and cargo tests use them."""

    def serve(self, *args: str) -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(
            [sys.executable, EMULATOR, "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        line = process.stdout.readline().strip()
        self.assertRegex(line, r"^KLD_EMULATOR_URL=http://127\.0\.0\.1:\d+$")
        return process, line.split("=", 1)[1]

    def test_serve_until_sigterm(self) -> None:
        process, url = self.serve("--port", "0")
        with urllib.request.urlopen(f"{url}/_kld/health") as response:
            self.assertEqual(json.loads(response.read()), {"ok": True})
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=5), 0)
        self.assertEqual(process.stdout.read(), "")
        process.stdout.close()

    def test_serve_stops_when_parent_exits(self) -> None:
        parent = subprocess.Popen(["sleep", "60"])
        process, _ = self.serve("--parent-pid", str(parent.pid))
        parent.kill()
        parent.wait()
        self.assertEqual(process.wait(timeout=5), 0)
        process.stdout.close()

    def test_run_passes_environment_and_exit_code(self) -> None:
        script = (
            "import json, os, sys, boto3\n"
            "keys = boto3.client('kms').list_keys()['Keys']\n"
            "names = ['KLD_EMULATOR_URL', 'AWS_ENDPOINT_URL', 'AWS_ACCESS_KEY_ID', 'AWS_REGION',\n"
            "         'AWS_DEFAULT_REGION', 'AWS_EC2_METADATA_DISABLED',\n"
            "         'AWS_PROFILE', 'AWS_SESSION_TOKEN']\n"
            "print(json.dumps({'keys': keys, 'env': {n: os.environ.get(n) for n in names}}))\n"
            "sys.exit(3)\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_PROFILE="production", AWS_SESSION_TOKEN="secret", AWS_REGION="eu-west-1")
        result = subprocess.run(
            [sys.executable, EMULATOR, "run", "--", sys.executable, "-c", script],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 3, result.stderr)
        output = json.loads(result.stdout)
        self.assertEqual(output["keys"], [])
        seen = output["env"]
        self.assertTrue(seen["KLD_EMULATOR_URL"].startswith("http://127.0.0.1:"))
        self.assertEqual(seen["AWS_ENDPOINT_URL"], seen["KLD_EMULATOR_URL"])
        self.assertEqual(
            (seen["AWS_ACCESS_KEY_ID"], seen["AWS_REGION"], seen["AWS_DEFAULT_REGION"]),
            ("kld-emulator", "eu-west-1", "eu-west-1"),
        )
        self.assertEqual(seen["AWS_EC2_METADATA_DISABLED"], "true")
        self.assertIsNone(seen["AWS_PROFILE"])
        self.assertIsNone(seen["AWS_SESSION_TOKEN"])

    def test_run_reports_a_missing_command(self) -> None:
        result = subprocess.run(
            [sys.executable, EMULATOR, "run", "--", "/nonexistent/kld-command"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 127)
