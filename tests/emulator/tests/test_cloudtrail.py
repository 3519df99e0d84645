"""LookupEvents over stored events, and the public records in tests/fixtures/cloudtrail (``cloudtrail``).
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta
from typing import Any

from emulator.common import dig
from .base import ACCOUNT, BASE_TIME, EmulatorTestCase, OTHER_ACCOUNT, TESTS, iso


class CloudTrailTests(EmulatorTestCase):
    INSTANCE = "i-0aaaaaaaaaaaaaaaa"
    KEY_ARN = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    def setUp(self) -> None:
        super().setUp()
        self.control("POST", "cloudtrail/throttle", {"enabled": False})
        self.trail = self.client("cloudtrail")

    def record(
        self, name: str, at: datetime, source: str = "ec2.amazonaws.com", **fields: Any
    ) -> dict[str, Any]:
        """A CloudTrail record as AWS delivers it."""
        return {
            "eventVersion": "1.09",
            "userIdentity": {
                "type": "IAMUser",
                "userName": "alice",
                "accessKeyId": "AKIAALICE",
                "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
            },
            "eventTime": iso(at),
            "eventSource": source,
            "eventName": name,
            "awsRegion": "us-east-1",
            "sourceIPAddress": "192.0.2.1",
            "userAgent": "aws-cli/2",
            "requestParameters": None,
            "responseElements": None,
            "requestID": "req-1",
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": ACCOUNT,
            **fields,
        }

    def store(self, *events: dict[str, Any], region: str = "us-east-1") -> list[str]:
        return self.control("POST", "cloudtrail/events", {"region": region, "events": list(events)})[
            "event_ids"
        ]

    def lookup(self, key: str | None = None, value: str | None = None, **kwargs: Any) -> dict[str, Any]:
        if key is not None:
            kwargs["LookupAttributes"] = [{"AttributeKey": key, "AttributeValue": value}]
        return self.trail.lookup_events(**kwargs)

    def test_lookup_by_resource_name_and_event_name_within_time_window(self) -> None:
        items = {"items": [{"instanceId": self.INSTANCE}]}
        self.store(
            self.record(
                "RunInstances", BASE_TIME - timedelta(hours=1), responseElements={"instancesSet": items}
            ),
            self.record("StartInstances", BASE_TIME, requestParameters={"instancesSet": items}),
            self.record(
                "StartInstances", BASE_TIME + timedelta(hours=1), requestParameters={"instancesSet": items}
            ),
            self.record("StartInstances", BASE_TIME + timedelta(hours=2)),
        )
        window = {"StartTime": BASE_TIME - timedelta(minutes=30), "EndTime": BASE_TIME + timedelta(hours=1)}

        events = self.lookup("ResourceName", self.INSTANCE, **window)["Events"]
        self.assertEqual([e["EventTime"] for e in events], [BASE_TIME + timedelta(hours=1), BASE_TIME])
        self.assertEqual(
            events[0]["Resources"], [{"ResourceType": "AWS::EC2::Instance", "ResourceName": self.INSTANCE}]
        )
        self.assertEqual(events[0]["Username"], "alice")
        self.assertEqual(events[0]["AccessKeyId"], "AKIAALICE")
        self.assertEqual(events[0]["ReadOnly"], "false")
        self.assertEqual(json.loads(events[0]["CloudTrailEvent"])["eventName"], "StartInstances")

        self.assertEqual(len(self.lookup("EventName", "StartInstances")["Events"]), 3)
        [run] = self.lookup(
            "ResourceName",
            self.INSTANCE,
            StartTime=BASE_TIME - timedelta(hours=1),
            EndTime=BASE_TIME - timedelta(hours=1),
        )["Events"]
        self.assertEqual(run["EventName"], "RunInstances")
        self.assertEqual(self.lookup("ResourceName", self.INSTANCE[:-1])["Events"], [])

    def test_kms_and_assumed_role_records(self) -> None:
        session = {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/launcher/i-session",
            "sessionContext": {"sessionIssuer": {"userName": "launcher"}},
        }
        key_id = self.KEY_ARN.rsplit("/", 1)[-1]
        self.store(
            self.record(
                "CreateGrant",
                BASE_TIME,
                source="kms.amazonaws.com",
                userIdentity=session,
                requestParameters={"keyId": key_id},
                errorCode="AccessDenied",
            )
        )
        [event] = self.lookup("ResourceName", self.KEY_ARN)["Events"]
        self.assertEqual(event["Username"], "i-session")
        self.assertEqual(
            event["Resources"], [{"ResourceType": "AWS::KMS::Key", "ResourceName": self.KEY_ARN}]
        )
        self.assertEqual(len(self.lookup("Username", "i-session")["Events"]), 1)
        self.assertEqual(len(self.lookup("EventSource", "kms.amazonaws.com")["Events"]), 1)
        self.assertEqual(len(self.lookup("ReadOnly", "false")["Events"]), 1)
        self.assertEqual(self.lookup("ReadOnly", "true")["Events"], [])

    def test_pagination_newest_first_with_stable_tokens(self) -> None:
        ids = self.store(
            *(self.record("StartInstances", BASE_TIME + timedelta(seconds=i)) for i in range(120))
        )
        first = self.lookup()
        self.assertEqual(len(first["Events"]), 50)
        self.assertEqual(first["Events"][0]["EventId"], ids[-1])
        self.store(self.record("StopInstances", BASE_TIME + timedelta(days=1)))  # newer: must not shift pages

        seen, token = list(first["Events"]), first["NextToken"]
        while token:
            page = self.lookup(NextToken=token)
            seen += page["Events"]
            token = page.get("NextToken")
        self.assertEqual([e["EventId"] for e in seen], list(reversed(ids)))
        times = [e["EventTime"] for e in seen]
        self.assertEqual(times, sorted(times, reverse=True))

        small = self.lookup(MaxResults=7)
        self.assertEqual(len(small["Events"]), 7)
        self.assertEqual(small["Events"][0]["EventName"], "StopInstances")

    def test_only_one_lookup_attribute_and_valid_parameters(self) -> None:
        self.assertClientError(
            "InvalidLookupAttributesException",
            self.trail.lookup_events,
            LookupAttributes=[
                {"AttributeKey": "EventName", "AttributeValue": "RunInstances"},
                {"AttributeKey": "Username", "AttributeValue": "alice"},
            ],
        )
        self.assertClientError("InvalidMaxResultsException", self.trail.lookup_events, MaxResults=51)
        self.assertClientError(
            "InvalidTimeRangeException",
            self.trail.lookup_events,
            StartTime=BASE_TIME,
            EndTime=BASE_TIME - timedelta(seconds=1),
        )
        self.assertClientError("InvalidNextTokenException", self.trail.lookup_events, NextToken="garbage!")

    def test_throttling_and_turning_it_off(self) -> None:
        self.control("POST", "cloudtrail/throttle", {"enabled": True})
        self.lookup()
        self.lookup()
        error = self.assertClientError("ThrottlingException", self.lookup)
        self.assertEqual(error.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertEqual(error.response["Error"]["Message"], "Rate exceeded")
        self.client("cloudtrail", "eu-west-1").lookup_events()  # another region has its own bucket
        time.sleep(0.6)
        self.lookup()  # refilled

        self.assertEqual(self.control("POST", "cloudtrail/throttle", {"enabled": False}), {"enabled": False})
        for _ in range(6):
            self.lookup()

    def test_raw_events_are_returned_verbatim(self) -> None:
        truncated = '{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","userName":"mal'
        garbage = "<html>\x00 not json \u202e"
        self.store(
            {
                "raw": truncated,
                "event_id": "raw-1",
                "event_name": "Decrypt",
                "event_time": iso(BASE_TIME),
                "event_source": "kms.amazonaws.com",
                "username": "mallory",
                "resources": [{"ResourceType": "AWS::KMS::Key", "ResourceName": self.KEY_ARN}],
            },
            {
                "raw": garbage,
                "event_name": "RunInstances",
                "event_time": iso(BASE_TIME + timedelta(minutes=1)),
            },
        )
        [event] = self.lookup("ResourceName", self.KEY_ARN)["Events"]
        self.assertEqual(event["CloudTrailEvent"], truncated)
        self.assertEqual((event["EventId"], event["Username"]), ("raw-1", "mallory"))
        [other] = self.lookup("EventName", "RunInstances")["Events"]
        self.assertEqual(other["CloudTrailEvent"], garbage)

    def test_events_are_scoped_to_account_and_region(self) -> None:
        self.store(self.record("RunInstances", BASE_TIME), region="eu-west-1")
        self.control(
            "POST",
            "cloudtrail/events",
            {
                "region": "us-east-1",
                "account_id": OTHER_ACCOUNT,
                "events": [self.record("RunInstances", BASE_TIME)],
            },
        )
        self.assertEqual(self.lookup()["Events"], [])
        self.assertEqual(len(self.client("cloudtrail", "eu-west-1").lookup_events()["Events"]), 1)


FIXTURES = os.path.join(TESTS, "fixtures", "cloudtrail")
PRINCIPAL_KINDS = {"user", "role", "service-linked-role", "sso-role", "root", "federated", "service", "unknown"}


def fixture(name: str) -> Any:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return json.load(handle)


class CloudTrailFixtureTests(EmulatorTestCase):
    """tests/fixtures/cloudtrail: well-formed, sourced, and usable through LookupEvents."""

    RECORD_FILES = (
        "run-instances-autoscaling-fleet.json",
        "run-instances-launch-template.json",
        "run-instances-encrypted-default-key.json",
        "kms-ec2-volume.json",
    )

    def test_identity_cases_cover_every_shape(self) -> None:
        cases = fixture("identities.json")
        self.assertEqual(len({c["name"] for c in cases}), len(cases))
        for case in cases:
            self.assertTrue(case["source"], case["name"])
            self.assertIn(case["expected"]["principal_kind"], PRINCIPAL_KINDS, case["name"])
            arn = case["expected"]["principal_arn"]
            self.assertTrue(arn is None or arn.startswith("arn:aws:iam::"), case["name"])
        types = {c["userIdentity"]["type"] for c in cases}
        self.assertLessEqual(
            {"IAMUser", "AssumedRole", "FederatedUser", "Root", "AWSService", "SAMLUser", "WebIdentityUser",
             "IdentityCenterUser"}, types,
        )
        issuers = [dig(c, "userIdentity", "sessionContext", "sessionIssuer", "arn") or "" for c in cases]
        self.assertTrue(any(re.search(r"/aws-reserved/sso\.amazonaws\.com/[a-z]{2}-[a-z]+-\d/", a) for a in issuers))
        self.assertTrue(any(re.search(r"/aws-reserved/sso\.amazonaws\.com/AWSReservedSSO_", a) for a in issuers))
        self.assertTrue(any("/aws-service-role/" in a for a in issuers))
        [in_scope] = [c for c in cases if "inScopeOf" in c["userIdentity"]]
        self.assertEqual(in_scope["userIdentity"]["inScopeOf"]["issuerType"], "AWS::EC2::Instance")
        self.assertEqual(in_scope["expected"], {"principal_kind": "service", "principal_arn": None})
        center = next(c for c in cases if c["userIdentity"]["type"] == "IdentityCenterUser")
        self.assertIn("onBehalfOf", center["userIdentity"])

    def test_records_are_sourced_and_found_by_lookup_events(self) -> None:
        trail = self.client("cloudtrail")
        self.control("POST", "cloudtrail/throttle", {"enabled": False})
        for name in self.RECORD_FILES:
            entries = fixture(name)
            for entry in entries:
                self.assertTrue(entry["source"], name)
                record = entry["record"]
                stored = self.control("POST", "cloudtrail/events",
                                      {"region": "us-east-1", "events": [record]})
                self.assertEqual(stored["event_ids"], [record["eventID"]])
                [event] = trail.lookup_events(
                    LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": record["eventID"]}]
                )["Events"]
                self.assertEqual(json.loads(event["CloudTrailEvent"])["eventName"], record["eventName"])
        # The launch-template record names its template; the fleet record only tags it.
        [template] = fixture("run-instances-launch-template.json")
        self.assertIn("launchTemplateId", template["record"]["requestParameters"]["launchTemplate"])
        [fleet] = fixture("run-instances-autoscaling-fleet.json")
        tags = fleet["record"]["responseElements"]["instancesSet"]["items"][0]["tagSet"]["items"]
        self.assertIn("aws:ec2launchtemplate:id", {t["key"] for t in tags})
        # EC2's KMS calls carry the volume in the encryption context.
        for entry in fixture("kms-ec2-volume.json"):
            params = entry["record"]["requestParameters"]
            context = params.get("encryptionContext") or dig(params, "constraints", "encryptionContextSubset")
            if entry["record"]["eventSource"] == "kms.amazonaws.com":
                self.assertIn("aws:ebs:id", context)

    def test_denied_messages_quote_the_documented_phrases(self) -> None:
        doc = fixture("denied-messages.json")
        self.assertIn("troubleshoot_access-denied", doc["source"])
        kinds = {(e["policy_type"], e["deny"]) for e in doc["examples"]}
        for policy_type in ("permissions-boundary", "resource-based-policy", "identity-based-policy", "session-policy"):
            self.assertIn((policy_type, "explicit"), kinds)
            self.assertIn((policy_type, "implicit"), kinds)
        for example in doc["examples"]:
            self.assertRegex(example["message"], r"^User: arn:aws:(iam|sts)::\d{12}:\S+ is not authorized to perform: ")
        by_type = {e["policy_type"]: e["message"] for e in doc["examples"]}
        self.assertIn("with an explicit deny in a service control policy", by_type["service-control-policy"])
        self.assertIn("with an explicit deny in a resource-based policy", by_type["resource-based-policy"])
