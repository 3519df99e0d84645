"""Call recording and fault injection (``calls``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from botocore.parsers import ResponseParserError

from .base import EmulatorTestCase


class FaultInjectionTests(EmulatorTestCase):
    def test_kms_error_is_json(self) -> None:
        kms = self.client("kms")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        self.control(
            "POST",
            "faults",
            {
                "service": "kms",
                "action": "GetKeyPolicy",
                "code": "AccessDeniedException",
                "message": "not allowed to read the key policy",
            },
        )
        error = self.assertClientError(
            "AccessDeniedException", kms.get_key_policy, KeyId=key_id, PolicyName="default"
        )
        self.assertEqual(error.response["Error"]["Message"], "not allowed to read the key policy")
        headers = error.response["ResponseMetadata"]["HTTPHeaders"]
        self.assertEqual(headers["content-type"], "application/x-amz-json-1.1")
        self.assertEqual(headers["x-amzn-errortype"], "AccessDeniedException")
        kms.describe_key(KeyId=key_id)  # other actions pass through

    def test_ec2_and_iam_errors_are_xml(self) -> None:
        self.control(
            "POST",
            "faults",
            {
                "service": "ec2",
                "action": "DescribeInstances",
                "code": "UnauthorizedOperation",
                "message": "You are not authorized",
            },
        )
        self.control(
            "POST",
            "faults",
            {
                "service": "iam",
                "action": "GetRole",
                "status": 403,
                "code": "AccessDenied",
                "message": "iam:GetRole denied",
            },
        )
        error = self.assertClientError("UnauthorizedOperation", self.client("ec2").describe_instances)
        self.assertEqual(error.response["Error"]["Message"], "You are not authorized")
        error = self.assertClientError("AccessDenied", self.client("iam").get_role, RoleName="r")
        self.assertEqual(error.response["Error"]["Message"], "iam:GetRole denied")
        self.assertEqual(error.response["ResponseMetadata"]["HTTPStatusCode"], 403)

    def test_times_region_and_body_match(self) -> None:
        kms_east, kms_west = self.client("kms"), self.client("kms", "eu-west-1")
        wanted = kms_west.create_key()["KeyMetadata"]["KeyId"]
        other = kms_west.create_key()["KeyMetadata"]["KeyId"]
        fault = self.control(
            "POST",
            "faults",
            {
                "service": "kms",
                "action": "DescribeKey",
                "region": "eu-west-1",
                "match": wanted,
                "code": "KMSInternalException",
                "times": 2,
            },
        )
        self.assertEqual([f["id"] for f in self.control("GET", "faults")["faults"]], [fault["id"]])
        kms_west.describe_key(KeyId=other)
        self.assertClientError("NotFoundException", kms_east.describe_key, KeyId=wanted)  # region scoped
        self.assertClientError("KMSInternalException", kms_west.describe_key, KeyId=wanted)
        self.assertEqual(self.control("GET", "faults")["faults"][0]["times"], 1)
        self.assertClientError("KMSInternalException", kms_west.describe_key, KeyId=wanted)
        kms_west.describe_key(KeyId=wanted)  # used up
        self.assertEqual(self.control("GET", "faults")["faults"], [])

    def test_malformed_http_and_delay(self) -> None:
        ec2 = self.client("ec2")
        self.control(
            "POST",
            "faults",
            {"service": "ec2", "action": "DescribeInstances", "kind": "malformed", "times": 1},
        )
        with self.assertRaises(ResponseParserError):
            ec2.describe_instances()
        self.control("POST", "faults", {"service": "ec2", "kind": "http", "status": 503, "times": 1})
        error = self.assertClientError("503", ec2.describe_instances)
        self.assertEqual(error.response["ResponseMetadata"]["HTTPStatusCode"], 503)
        self.control("POST", "faults", {"service": "ec2", "kind": "delay", "delay_seconds": 0.3, "times": 1})
        started = time.monotonic()
        ec2.describe_instances()
        self.assertGreaterEqual(time.monotonic() - started, 0.3)

    def test_malformed_json_keeps_content_type(self) -> None:
        self.control("POST", "faults", {"service": "kms", "action": "ListKeys", "kind": "malformed"})
        request = urllib.request.Request(
            self.url,
            data=b"{}",
            method="POST",
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "TrentService.ListKeys",
                "Authorization": "AWS4-HMAC-SHA256 Credential=kld/20261128/us-east-1/kms/aws4_request, "
                "SignedHeaders=host, Signature=0",
            },
        )
        with urllib.request.urlopen(request) as response:
            self.assertEqual(response.status, 200)
            self.assertIn("json", response.headers["Content-Type"])
            with self.assertRaises(ValueError):
                json.loads(response.read())

    def test_delete_faults(self) -> None:
        first = self.control("POST", "faults", {"service": "kms"})["id"]
        self.control("POST", "faults", {"service": "ec2"})
        self.control("DELETE", f"faults/{first}")
        self.control("DELETE", f"faults/{first}", expect=404)
        self.assertEqual([f["service"] for f in self.control("GET", "faults")["faults"]], ["ec2"])
        self.control("DELETE", "faults")
        self.assertEqual(self.control("GET", "faults")["faults"], [])
        self.control("POST", "faults", {"kind": "explode"}, expect=400)


class CallRecordingTests(EmulatorTestCase):
    def test_calls_are_recorded_and_filtered(self) -> None:
        self.client("kms").list_keys()
        self.client("ec2", "eu-west-1").describe_instances()
        self.client("cloudtrail").lookup_events()
        self.control("GET", "health")

        calls = self.control("GET", "calls")["calls"]
        self.assertEqual(
            [(c["service"], c["action"], c["region"]) for c in calls],
            [
                ("kms", "ListKeys", "us-east-1"),
                ("ec2", "DescribeInstances", "eu-west-1"),
                ("cloudtrail", "LookupEvents", "us-east-1"),
            ],
        )
        self.assertTrue(all(isinstance(c["time"], float) for c in calls))
        self.assertEqual(len(self.control("GET", "calls?service=ec2")["calls"]), 1)
        self.assertEqual(len(self.control("GET", "calls?region=us-east-1")["calls"]), 2)
        self.assertEqual(len(self.control("GET", "calls?service=kms&action=ListKeys")["calls"]), 1)
        self.assertEqual(self.control("GET", "calls?action=DescribeKey")["calls"], [])

        self.control("POST", "calls/reset")
        self.assertEqual(self.control("GET", "calls")["calls"], [])
