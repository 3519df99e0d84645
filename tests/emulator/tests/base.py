"""Shared by the emulator's self-test modules: one emulator per test class, started in-process on
a free port; each test starts from ``POST /_kld/reset`` (fresh moto state, no faults, no calls,
no events, throttling on). Clients never retry, so an injected fault is seen exactly once per
call.
"""

from __future__ import annotations

import json
import os
import unittest
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from emulator.server import EmulatorServer


ACCOUNT = "123456789012"
OTHER_ACCOUNT = "111122223333"
# The package directory: ``python EMULATOR serve|run`` is how make and cargo start it.
EMULATOR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(EMULATOR)
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
BASE_TIME = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


class EmulatorTestCase(unittest.TestCase):
    """Starts the emulator once; resets it before every test."""

    server: EmulatorServer
    url: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = EmulatorServer()
        cls.url = cls.server.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()

    def setUp(self) -> None:
        self.control("POST", "reset")

    def control(self, method: str, route: str, body: Any = None, expect: int = 200) -> Any:
        """Call ``/_kld/<route>`` and return its JSON, asserting the status code."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_kld/{route}", data=data, method=method)
        try:
            with urllib.request.urlopen(request) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        self.assertEqual(status, expect, payload)
        return json.loads(payload)

    def client(self, service: str, region: str = "us-east-1", account: str | None = None) -> Any:
        """A boto3 client; ``account`` makes moto act in that account (x-moto-account-id)."""
        client = boto3.client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id="kld-emulator",
            aws_secret_access_key="kld-emulator",
            config=NO_RETRIES,
        )
        if account is not None:
            client.meta.events.register(
                "before-sign.*.*", lambda request, **_: request.headers.__setitem__("x-moto-account-id", account)
            )
        return client

    def assertClientError(self, code: str, call: Any, *args: Any, **kwargs: Any) -> ClientError:
        with self.assertRaises(ClientError) as raised:
            call(*args, **kwargs)
        self.assertEqual(raised.exception.response["Error"]["Code"], code)
        return raised.exception


class IamTestCase(EmulatorTestCase):
    """Helpers for IAM simulations (no tests of its own)."""

    KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    def setUp(self) -> None:
        super().setUp()
        self.iam = self.client("iam")

    def user(self, name: str, *statements: dict[str, Any]) -> str:
        arn = self.iam.create_user(UserName=name)["User"]["Arn"]
        if statements:
            self.iam.put_user_policy(
                UserName=name, PolicyName=f"{name}-inline", PolicyDocument=policy(*statements)
            )
        return arn

    def role(self, name: str, *statements: dict[str, Any], boundary: str | None = None) -> str:
        extra = {"PermissionsBoundary": boundary} if boundary else {}
        arn = self.iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=policy(
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ),
            **extra,
        )["Role"]["Arn"]
        self.iam.put_role_policy(
            RoleName=name, PolicyName=f"{name}-inline", PolicyDocument=policy(*statements)
        )
        return arn

    def simulate(
        self,
        arn: str,
        *actions: str,
        resources: list[str] | None = None,
        context: dict[str, tuple[str, list[str]]] | None = None,
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"PolicySourceArn": arn, "ActionNames": list(actions)}
        if resources:
            kwargs["ResourceArns"] = resources
        if context:
            kwargs["ContextEntries"] = [
                {"ContextKeyName": k, "ContextKeyType": t, "ContextKeyValues": v}
                for k, (t, v) in context.items()
            ]
        return self.iam.simulate_principal_policy(**kwargs)["EvaluationResults"]

    def decision(self, arn: str, action: str, resource: str = "*", **kwargs: Any) -> str:
        [result] = self.simulate(arn, action, resources=[resource], **kwargs)
        return result["EvalDecision"]

    def raw_simulation(self, **kwargs: Any) -> str:
        """The response body of one SimulatePrincipalPolicy call, as moto serialized it."""
        bodies: list[str] = []
        handler = lambda http_response, **_: bodies.append(http_response.text)  # noqa: E731
        self.iam.meta.events.register("after-call.iam.SimulatePrincipalPolicy", handler)
        try:
            self.iam.simulate_principal_policy(**kwargs)
        finally:
            self.iam.meta.events.unregister("after-call.iam.SimulatePrincipalPolicy", handler)
        return bodies[0]

    def managed(self, name: str, *statements: dict[str, Any]) -> str:
        return self.iam.create_policy(PolicyName=name, PolicyDocument=policy(*statements))["Policy"]["Arn"]


# Accounts of the Organizations and STS tests.
MANAGEMENT = "111122223333"
MEMBER_ACCOUNT = "444455556666"
OUTSIDER = "999988887777"
