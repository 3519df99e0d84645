"""Self-test of tests/emulator.py: every control route and every gap it fills in moto.

Run from the repository root:
    .venv/bin/python -m unittest tests/test_emulator.py -v

One emulator runs in-process on a free port for the whole module; each test starts from
``POST /_kld/reset`` (fresh moto state, no faults, no calls, no events, throttling on).
Clients never retry, so an injected fault is seen exactly once per call.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import emulator  # noqa: E402  (the harness under test lives next to this file)

ACCOUNT = "123456789012"
OTHER_ACCOUNT = "111122223333"
EMULATOR_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emulator.py")
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

    server: emulator.EmulatorServer
    url: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = emulator.EmulatorServer()
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

    def client(self, service: str, region: str = "us-east-1") -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id="kld-emulator",
            aws_secret_access_key="kld-emulator",
            config=NO_RETRIES,
        )

    def assertClientError(self, code: str, call: Any, *args: Any, **kwargs: Any) -> ClientError:
        with self.assertRaises(ClientError) as raised:
            call(*args, **kwargs)
        self.assertEqual(raised.exception.response["Error"]["Code"], code)
        return raised.exception


class ControlRouteTests(EmulatorTestCase):
    def test_health(self) -> None:
        self.assertEqual(self.control("GET", "health"), {"ok": True})

    def test_unknown_route_and_bad_body(self) -> None:
        self.assertIn("error", self.control("GET", "nope", expect=404))
        self.assertIn("error", self.control("POST", "faults", body=["not", "an", "object"], expect=400))


class Ec2LaunchFailureTests(EmulatorTestCase):
    def launch_encrypted_instance(self, region: str) -> tuple[str, str]:
        key_id = self.client("kms", region).create_key()["KeyMetadata"]["KeyId"]
        instance = self.client("ec2", region).run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "Encrypted": True, "KmsKeyId": key_id}}
            ],
        )["Instances"][0]
        return instance["InstanceId"], key_id

    def describe(self, region: str, **filters: str) -> list[dict[str, Any]]:
        response = self.client("ec2", region).describe_instances(
            Filters=[{"Name": name.replace("_", "-"), "Values": [value]} for name, value in filters.items()]
        )
        return [i for r in response["Reservations"] for i in r["Instances"]]

    def test_stopped_launch_failure_shows_reason_and_keeps_volumes(self) -> None:
        instance_id, key_id = self.launch_encrypted_instance("us-east-1")
        result = self.control(
            "POST",
            "ec2/launch-failure",
            {
                "region": "us-east-1",
                "instance_id": instance_id,
                "state": "stopped",
                "transition_reason": "Server.InternalError (2026-11-28 10:00:00 GMT)",
            },
        )
        self.assertEqual(result["state"], {"name": "stopped", "code": 80})

        [instance] = self.describe("us-east-1", instance_state_name="stopped")
        self.assertEqual(instance["State"], {"Code": 80, "Name": "stopped"})
        self.assertEqual(
            instance["StateReason"],
            {"Code": "Client.InternalError", "Message": "Client.InternalError: Client error on launch"},
        )
        self.assertEqual(instance["StateTransitionReason"], "Server.InternalError (2026-11-28 10:00:00 GMT)")
        [mapping] = instance["BlockDeviceMappings"]
        self.assertEqual(mapping["Ebs"]["Status"], "attached")
        [volume] = self.client("ec2").describe_volumes(VolumeIds=[mapping["Ebs"]["VolumeId"]])["Volumes"]
        self.assertTrue(volume["Encrypted"])
        self.assertIn(key_id, volume["KmsKeyId"])

    def test_terminated_launch_failure_in_another_region_with_filters(self) -> None:
        instance_id, _ = self.launch_encrypted_instance("eu-west-1")
        self.control(
            "POST",
            "ec2/launch-failure",
            {
                "region": "eu-west-1",
                "instance_id": instance_id,
                "state": "terminated",
                "code": "Client.InvalidKMSKey.InvalidState",
                "message": "Client.InvalidKMSKey.InvalidState: The KMS key provided is in an incorrect state",
            },
        )

        for filters in (
            {"instance_state_name": "terminated"},
            {"state_reason_code": "Client.InvalidKMSKey.InvalidState"},
            {
                "state_reason_message": "Client.InvalidKMSKey.InvalidState: "
                "The KMS key provided is in an incorrect state"
            },
        ):
            [instance] = self.describe("eu-west-1", **filters)
            self.assertEqual(instance["InstanceId"], instance_id)
        self.assertEqual(instance["State"], {"Code": 48, "Name": "terminated"})
        self.assertEqual(instance["StateTransitionReason"], instance["StateReason"]["Message"])
        self.assertEqual(len(instance["BlockDeviceMappings"]), 1)
        self.assertEqual(self.describe("eu-west-1", instance_state_name="running"), [])
        self.assertEqual(self.describe("us-east-1"), [])

    def test_unknown_instance_is_404(self) -> None:
        answer = self.control(
            "POST",
            "ec2/launch-failure",
            {"region": "us-east-1", "instance_id": "i-0123456789abcdef0"},
            expect=404,
        )
        self.assertIn("i-0123456789abcdef0", answer["error"])


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


class SimulatePrincipalPolicyTests(EmulatorTestCase):
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

    def test_allow_with_bool_condition_satisfied(self) -> None:
        arn = self.user(
            "alice",
            allow("kms:CreateGrant", self.KEY_ARN, Condition={"Bool": {"kms:GrantIsForAWSResource": True}}),
        )
        [result] = self.simulate(
            arn,
            "kms:CreateGrant",
            resources=[self.KEY_ARN],
            context={"kms:GrantIsForAWSResource": ("boolean", ["true"])},
        )
        self.assertEqual(result["EvalDecision"], "allowed")
        self.assertEqual(result["EvalResourceName"], self.KEY_ARN)
        self.assertEqual(
            result["MatchedStatements"], [{"SourcePolicyId": "alice-inline", "SourcePolicyType": "user"}]
        )
        self.assertEqual(result["MissingContextValues"], [])
        self.assertEqual(result["ResourceSpecificResults"][0]["EvalResourceDecision"], "allowed")
        self.assertEqual(
            self.decision(
                arn,
                "kms:CreateGrant",
                self.KEY_ARN,
                context={"kms:GrantIsForAWSResource": ("boolean", ["false"])},
            ),
            "implicitDeny",
        )

    def test_missing_condition_key_is_implicit_deny_and_reported(self) -> None:
        arn = self.user(
            "bob",
            allow(
                "kms:Decrypt", Condition={"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}
            ),
        )
        [result] = self.simulate(arn, "kms:Decrypt")
        self.assertEqual(result["EvalDecision"], "implicitDeny")
        self.assertEqual(result["EvalResourceName"], "*")
        self.assertEqual(result["MissingContextValues"], ["kms:ViaService"])
        self.assertNotIn("ResourceSpecificResults", result)

    def test_explicit_deny_wins_over_allow(self) -> None:
        self.iam.create_group(GroupName="no-decrypt")
        self.iam.put_group_policy(
            GroupName="no-decrypt",
            PolicyName="deny-decrypt",
            PolicyDocument=policy(deny("kms:Decrypt", self.KEY_ARN)),
        )
        arn = self.user("carol", allow("kms:*"))
        self.iam.add_user_to_group(GroupName="no-decrypt", UserName="carol")
        [result] = self.simulate(arn, "kms:Decrypt", resources=[self.KEY_ARN])
        self.assertEqual(result["EvalDecision"], "explicitDeny")
        self.assertEqual(
            result["MatchedStatements"], [{"SourcePolicyId": "deny-decrypt", "SourcePolicyType": "group"}]
        )
        self.assertEqual(self.decision(arn, "kms:Encrypt", self.KEY_ARN), "allowed")

    def test_not_action(self) -> None:
        arn = self.user("dave", {"Effect": "Allow", "NotAction": ["iam:*", "ec2:Run*"], "Resource": "*"})
        results = self.simulate(
            arn, "kms:Decrypt", "iam:CreateUser", "ec2:RunInstances", "EC2:StartInstances"
        )
        self.assertEqual(
            [r["EvalDecision"] for r in results], ["allowed", "implicitDeny", "implicitDeny", "allowed"]
        )

    def test_resource_wildcards(self) -> None:
        arn = self.user(
            "erin",
            allow("kms:Decrypt", f"arn:aws:kms:*:{ACCOUNT}:key/*"),
            allow("ec2:StartInstances", "arn:aws:ec2:us-east-1:*:instance/i-0?"),
        )
        other_key = f"arn:aws:kms:eu-west-1:{OTHER_ACCOUNT}:key/abc"
        self.assertEqual(
            self.decision(arn, "kms:Decrypt", self.KEY_ARN.replace("us-east-1", "eu-west-1")), "allowed"
        )
        self.assertEqual(self.decision(arn, "kms:Decrypt", other_key), "implicitDeny")
        self.assertEqual(self.decision(arn, "kms:Decrypt", self.KEY_ARN.upper()), "implicitDeny")
        instance = f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0"
        self.assertEqual(self.decision(arn, "ec2:StartInstances", instance + "a"), "allowed")
        self.assertEqual(self.decision(arn, "ec2:StartInstances", instance + "ab"), "implicitDeny")

    def test_group_policies_and_attached_managed_policies(self) -> None:
        managed = self.iam.create_policy(
            PolicyName="kms-use",
            PolicyDocument=policy(allow(["kms:Decrypt", "kms:GenerateDataKey*"], self.KEY_ARN)),
        )["Policy"]["Arn"]
        group_managed = self.iam.create_policy(
            PolicyName="kms-grants", PolicyDocument=policy(allow("kms:CreateGrant", self.KEY_ARN))
        )["Policy"]["Arn"]
        self.iam.create_group(GroupName="launchers")
        self.iam.put_group_policy(
            GroupName="launchers", PolicyName="describe", PolicyDocument=policy(allow("kms:DescribeKey"))
        )
        self.iam.attach_group_policy(GroupName="launchers", PolicyArn=group_managed)
        arn = self.user("frank")
        self.iam.attach_user_policy(UserName="frank", PolicyArn=managed)
        self.iam.add_user_to_group(GroupName="launchers", UserName="frank")

        results = self.simulate(
            arn,
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:DescribeKey",
            "kms:CreateGrant",
            "kms:ReEncryptFrom",
            resources=[self.KEY_ARN],
        )
        self.assertEqual(
            [r["EvalDecision"] for r in results], ["allowed", "allowed", "allowed", "implicitDeny"]
        )
        self.assertEqual(
            results[0]["MatchedStatements"],
            [{"SourcePolicyId": "kms-use", "SourcePolicyType": "user-managed"}],
        )
        self.assertEqual(
            results[1]["MatchedStatements"], [{"SourcePolicyId": "describe", "SourcePolicyType": "group"}]
        )
        group_arn = f"arn:aws:iam::{ACCOUNT}:group/launchers"
        self.assertEqual(self.decision(group_arn, "kms:CreateGrant", self.KEY_ARN), "allowed")
        self.assertEqual(self.decision(group_arn, "kms:Decrypt", self.KEY_ARN), "implicitDeny")

    def test_role_inline_policy_with_context(self) -> None:
        arn = self.role(
            "instance-role",
            allow(
                "kms:Decrypt",
                self.KEY_ARN,
                Condition={
                    "StringEqualsIgnoreCase": {"KMS:ViaService": "EC2.us-east-1.amazonaws.com"},
                    "ArnLike": {"aws:SourceArn": "arn:aws:ec2:*:*:instance/*"},
                },
            ),
        )
        context = {
            "kms:viaservice": ("string", ["ec2.us-east-1.amazonaws.com"]),
            "aws:SourceArn": ("string", [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-1"]),
        }
        [result] = self.simulate(arn, "kms:Decrypt", resources=[self.KEY_ARN], context=context)
        self.assertEqual(result["EvalDecision"], "allowed")
        self.assertEqual(
            result["MatchedStatements"],
            [{"SourcePolicyId": "instance-role-inline", "SourcePolicyType": "role"}],
        )

    def test_role_permissions_boundary_limits_and_policy_inputs_add(self) -> None:
        boundary = self.iam.create_policy(
            PolicyName="boundary", PolicyDocument=policy(allow(["kms:Decrypt", "kms:CreateGrant"]))
        )["Policy"]["Arn"]
        arn = self.role("bounded", allow("kms:*"), boundary=boundary)
        [decrypt, encrypt] = self.simulate(arn, "kms:Decrypt", "kms:Encrypt")
        self.assertEqual((decrypt["EvalDecision"], encrypt["EvalDecision"]), ("allowed", "implicitDeny"))
        self.assertEqual(
            encrypt["PermissionsBoundaryDecisionDetail"], {"AllowedByPermissionsBoundary": False}
        )

        [grant] = self.iam.simulate_principal_policy(
            PolicySourceArn=arn,
            ActionNames=["kms:CreateGrant"],
            PolicyInputList=[policy(deny("kms:CreateGrant"))],
        )["EvaluationResults"]
        self.assertEqual(grant["EvalDecision"], "explicitDeny")
        self.assertEqual(grant["MatchedStatements"], [{"SourcePolicyId": "PolicyInputList.1"}])

    def test_unknown_principal_is_no_such_entity(self) -> None:
        error = self.assertClientError(
            "NoSuchEntity", self.simulate, f"arn:aws:iam::{ACCOUNT}:role/ghost", "kms:Decrypt"
        )
        self.assertEqual(error.response["ResponseMetadata"]["HTTPStatusCode"], 404)


class ConditionEvaluationTests(unittest.TestCase):
    """The IAM condition rules, checked directly on the evaluator (no server needed)."""

    def passes(self, condition: dict[str, Any], **context: list[str]) -> bool:
        lowered = {k.replace("__", ":").lower(): v for k, v in context.items()}
        return emulator.evaluate_conditions(condition, lowered)[0]

    def test_absent_keys(self) -> None:
        self.assertFalse(self.passes({"StringEquals": {"aws:PrincipalTag/team": "a"}}))
        self.assertTrue(self.passes({"StringNotEquals": {"aws:PrincipalTag/team": "a"}}))
        self.assertTrue(self.passes({"StringEqualsIfExists": {"aws:PrincipalTag/team": "a"}}))
        self.assertTrue(self.passes({"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}))
        self.assertFalse(self.passes({"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}))
        self.assertTrue(self.passes({"Null": {"aws:TagKeys": "true"}}))
        self.assertFalse(self.passes({"Null": {"aws:TagKeys": "false"}}))

    def test_values_are_or_keys_and_operators_are_and(self) -> None:
        condition = {
            "StringEquals": {"kms:CallerAccount": ["1", "2"], "kms:ViaService": "ec2.x"},
            "Bool": {"aws:SecureTransport": "true"},
        }
        self.assertTrue(
            self.passes(
                condition, kms__CallerAccount=["2"], kms__ViaService=["ec2.x"], aws__SecureTransport=["TRUE"]
            )
        )
        self.assertFalse(
            self.passes(
                condition, kms__CallerAccount=["3"], kms__ViaService=["ec2.x"], aws__SecureTransport=["true"]
            )
        )
        self.assertFalse(
            self.passes(
                condition, kms__CallerAccount=["1"], kms__ViaService=["ec2.x"], aws__SecureTransport=["false"]
            )
        )

    def test_operators(self) -> None:
        self.assertTrue(
            self.passes({"StringLike": {"k": "ec2.*.amazonaws.com"}}, k=["ec2.eu-west-1.amazonaws.com"])
        )
        self.assertFalse(self.passes({"StringNotLike": {"k": "ec2.*"}}, k=["ec2.x"]))
        self.assertTrue(
            self.passes({"ArnNotLike": {"k": "arn:aws:iam::*:role/admin"}}, k=["arn:aws:iam::1:role/dev"])
        )
        self.assertTrue(self.passes({"NumericLessThanEquals": {"k": "10"}}, k=["10"]))
        self.assertFalse(self.passes({"NumericGreaterThan": {"k": 10}}, k=["ten"]))
        self.assertTrue(
            self.passes({"DateGreaterThan": {"k": "2026-01-01T00:00:00Z"}}, k=["2026-11-28T10:00:00Z"])
        )
        self.assertTrue(self.passes({"IpAddress": {"k": "10.0.0.0/8"}}, k=["10.1.2.3"]))
        self.assertTrue(self.passes({"ForAllValues:StringLike": {"k": ["a*", "b*"]}}, k=["ab", "bc"]))
        self.assertFalse(self.passes({"ForAllValues:StringLike": {"k": ["a*"]}}, k=["ab", "bc"]))
        self.assertTrue(self.passes({"ForAnyValue:StringNotEquals": {"k": ["a"]}}, k=["a", "b"]))

    def test_missing_keys_are_reported_except_for_null(self) -> None:
        _, missing = emulator.evaluate_conditions(
            {"StringEquals": {"kms:ViaService": "x"}, "Null": {"aws:TagKeys": "true"}}, {}
        )
        self.assertEqual(missing, {"kms:ViaService"})

    def test_policy_documents_may_be_url_encoded(self) -> None:
        document = {"Statement": [allow("kms:Decrypt")]}
        encoded = urllib.request.quote(json.dumps(document))
        self.assertEqual(emulator.parse_policy_document(encoded, "p"), document)

    def test_timestamps(self) -> None:
        expected = BASE_TIME.timestamp()
        for value in (expected, str(expected), "2026-11-28T10:00:00Z", "2026-11-28T10:00:00"):
            self.assertEqual(emulator.parse_timestamp(value), expected)


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


class KmsTests(EmulatorTestCase):
    def test_cross_account_describe_key_by_arn_but_not_get_key_policy(self) -> None:
        foreign = self.control(
            "POST",
            "kms/key",
            {"region": "us-east-1", "account_id": OTHER_ACCOUNT, "description": "shared EBS key"},
        )
        self.assertEqual(foreign["account_id"], OTHER_ACCOUNT)
        kms = self.client("kms")
        metadata = kms.describe_key(KeyId=foreign["arn"])["KeyMetadata"]
        self.assertEqual((metadata["AWSAccountId"], metadata["Arn"]), (OTHER_ACCOUNT, foreign["arn"]))
        self.assertEqual(metadata["Description"], "shared EBS key")
        self.assertClientError("NotFoundException", kms.describe_key, KeyId=foreign["key_id"])
        self.assertClientError(
            "AccessDeniedException", kms.get_key_policy, KeyId=foreign["arn"], PolicyName="default"
        )
        missing = foreign["arn"].rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
        self.assertClientError("NotFoundException", kms.describe_key, KeyId=missing)

        own = kms.create_key()["KeyMetadata"]
        self.assertIn("Statement", kms.get_key_policy(KeyId=own["Arn"], PolicyName="default")["Policy"])

    def test_key_state_origin_and_policy_changes(self) -> None:
        kms = self.client("kms")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        key_policy = policy(allow("kms:*"))
        self.control(
            "POST",
            "kms/key",
            {
                "region": "us-east-1",
                "key_id": key_id,
                "state": "PendingImport",
                "origin": "EXTERNAL",
                "policy": key_policy,
            },
        )
        metadata = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        self.assertEqual(
            (metadata["KeyState"], metadata["Origin"], metadata["Enabled"]),
            ("PendingImport", "EXTERNAL", False),
        )
        self.assertEqual(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"], key_policy)

        created = self.control("POST", "kms/key", {"region": "eu-west-1", "origin": "EXTERNAL"})
        west = self.client("kms", "eu-west-1").describe_key(KeyId=created["key_id"])["KeyMetadata"]
        self.assertEqual(west["KeyState"], "PendingImport")
        self.control(
            "POST",
            "kms/key",
            {"region": "eu-west-1", "key_id": created["key_id"], "state": "PendingDeletion"},
        )
        west = self.client("kms", "eu-west-1").describe_key(KeyId=created["arn"])["KeyMetadata"]
        self.assertEqual(west["KeyState"], "PendingDeletion")
        self.assertIn("DeletionDate", west)

        self.control("POST", "kms/key", {"region": "us-east-1", "key_id": created["key_id"]}, expect=404)
        self.control("POST", "kms/key", {"region": "us-east-1", "state": "Melted"}, expect=400)


class SnsTests(EmulatorTestCase):
    def test_publish_subject_must_be_under_100_ascii_characters(self) -> None:
        # https://docs.aws.amazon.com/sns/latest/api/API_Publish.html (Subject constraints).
        sns = self.client("sns")
        topic = sns.create_topic(Name="subjects")["TopicArn"]
        sns.publish(TopicArn=topic, Message="m", Subject="x" * 99)
        for bad in ("x" * 100, "line\nbreak", "caf\u00e9", " leading space"):
            with self.subTest(subject=bad):
                self.assertClientError("InvalidParameter", sns.publish, TopicArn=topic, Message="m", Subject=bad)
        sns.publish(TopicArn=topic, Message="no subject at all")


class KmsTagTests(EmulatorTestCase):
    def test_list_resource_tags_by_key_arn_or_id(self) -> None:
        # https://docs.aws.amazon.com/kms/latest/APIReference/API_ListResourceTags.html: KeyId is
        # a key ID or key ARN. moto 5.2.5 answers both; this pins that for remediation's key opt-in.
        kms = self.client("kms")
        meta = kms.create_key()["KeyMetadata"]
        kms.tag_resource(KeyId=meta["KeyId"], Tags=[{"TagKey": "kms-launch-doctor:auto-remediate", "TagValue": "true"}])
        for key in (meta["KeyId"], meta["Arn"]):
            tags = kms.list_resource_tags(KeyId=key)["Tags"]
            self.assertEqual(tags, [{"TagKey": "kms-launch-doctor:auto-remediate", "TagValue": "true"}])


class CommandLineTests(unittest.TestCase):
    """The ``serve`` and ``run`` entry points, as make and cargo tests use them."""

    def serve(self, *args: str) -> tuple[subprocess.Popen[str], str]:
        process = subprocess.Popen(
            [sys.executable, EMULATOR_PY, "serve", *args],
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
            [sys.executable, EMULATOR_PY, "run", "--", sys.executable, "-c", script],
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
            [sys.executable, EMULATOR_PY, "run", "--", "/nonexistent/kld-command"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 127)


if __name__ == "__main__":
    unittest.main()
