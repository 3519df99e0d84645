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
import re
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
from emulator import dig  # noqa: E402

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
        self.assertEqual(instance["BlockDeviceMappings"], [])
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

    def test_terminated_launch_failure_deletes_delete_on_termination_volumes_and_detaches_others(self) -> None:
        ec2 = self.client("ec2")
        key_id = self.client("kms").create_key()["KeyMetadata"]["KeyId"]
        instance = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True,
                                                     "Encrypted": True, "KmsKeyId": key_id}},
                {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 4, "DeleteOnTermination": False,
                                                     "Encrypted": True, "KmsKeyId": key_id}},
            ],
        )["Instances"][0]
        volumes = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}
        result = self.control(
            "POST", "ec2/launch-failure", {"region": "us-east-1", "instance_id": instance["InstanceId"],
                                           "state": "terminated"},
        )
        self.assertEqual(result["volumes"], {"deleted": [volumes["/dev/xvda"]], "detached": [volumes["/dev/xvdb"]]})
        [described] = self.describe("us-east-1", instance_state_name="terminated")
        self.assertEqual(described["BlockDeviceMappings"], [])
        self.assertEqual(described["ImageId"], "ami-12c6146b")
        self.assertClientError("InvalidVolume.NotFound", ec2.describe_volumes, VolumeIds=[volumes["/dev/xvda"]])
        [kept] = ec2.describe_volumes(VolumeIds=[volumes["/dev/xvdb"]])["Volumes"]
        self.assertEqual((kept["State"], kept["Attachments"]), ("available", []))
        self.assertTrue(kept["Encrypted"])
        self.assertIn(key_id, kept["KmsKeyId"])

    def test_terminated_launch_from_template_keeps_image_and_template_tags(self) -> None:
        ec2 = self.client("ec2")
        key_arn = self.client("kms").create_key()["KeyMetadata"]["Arn"]
        template = ec2.create_launch_template(
            LaunchTemplateName="workers",
            LaunchTemplateData={
                "ImageId": "ami-12c6146b",
                "BlockDeviceMappings": [
                    {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 8, "Encrypted": True, "KmsKeyId": key_arn,
                                                         "DeleteOnTermination": True}}
                ],
            },
        )["LaunchTemplate"]
        [version] = ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"])[
            "LaunchTemplateVersions"
        ]
        self.assertEqual(version["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]["KmsKeyId"], key_arn)
        instance = ec2.run_instances(
            MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"], "Version": "1"}
        )["Instances"][0]
        [data_volume] = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"] if m["DeviceName"] == "/dev/xvdb"]
        [volume] = ec2.describe_volumes(VolumeIds=[data_volume])["Volumes"]
        self.assertEqual((volume["Encrypted"], volume["KmsKeyId"]), (True, key_arn))

        self.control("POST", "ec2/launch-failure", {"region": "us-east-1", "instance_id": instance["InstanceId"],
                                                     "state": "terminated"})
        [described] = self.describe("us-east-1")
        self.assertEqual(described["BlockDeviceMappings"], [])
        self.assertEqual(described["ImageId"], "ami-12c6146b")
        tags = {t["Key"]: t["Value"] for t in described["Tags"]}
        self.assertEqual(tags["aws:ec2launchtemplate:id"], template["LaunchTemplateId"])
        self.assertEqual(tags["aws:ec2launchtemplate:version"], "1")
        self.assertClientError("InvalidVolume.NotFound", ec2.describe_volumes, VolumeIds=[data_volume])


class EbsEncryptionTests(EmulatorTestCase):
    def test_default_kms_key_is_the_aws_managed_alias_until_modified_and_after_reset(self) -> None:
        ec2, kms = self.client("ec2"), self.client("kms")
        self.assertEqual(ec2.get_ebs_default_kms_key_id()["KmsKeyId"], "alias/aws/ebs")
        key = kms.create_key()["KeyMetadata"]
        kms.create_alias(AliasName="alias/ebs-default", TargetKeyId=key["KeyId"])
        self.assertEqual(ec2.modify_ebs_default_kms_key_id(KmsKeyId="alias/ebs-default")["KmsKeyId"], key["Arn"])
        self.assertEqual(ec2.get_ebs_default_kms_key_id()["KmsKeyId"], key["Arn"])
        # Per account and region.
        self.assertEqual(self.client("ec2", "eu-west-1").get_ebs_default_kms_key_id()["KmsKeyId"], "alias/aws/ebs")
        other = self.client("ec2", account=OTHER_ACCOUNT)
        self.assertEqual(other.get_ebs_default_kms_key_id()["KmsKeyId"], "alias/aws/ebs")

        managed = ec2.reset_ebs_default_kms_key_id()["KmsKeyId"]
        self.assertEqual(managed, kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"])
        self.assertRegex(managed, rf"^arn:aws:kms:us-east-1:{ACCOUNT}:key/")
        self.assertEqual(ec2.get_ebs_default_kms_key_id()["KmsKeyId"], "alias/aws/ebs")

    def test_encryption_by_default_encrypts_new_volumes_with_the_default_key(self) -> None:
        ec2, kms = self.client("ec2"), self.client("kms")
        self.assertFalse(ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"])
        plain = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")
        self.assertFalse(plain["Encrypted"])
        self.assertTrue(ec2.enable_ebs_encryption_by_default()["EbsEncryptionByDefault"])
        self.assertTrue(ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"])
        default_key = kms.create_key()["KeyMetadata"]["Arn"]
        ec2.modify_ebs_default_kms_key_id(KmsKeyId=default_key)
        volume = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")
        self.assertEqual((volume["Encrypted"], volume["KmsKeyId"]), (True, default_key))
        explicit = kms.create_key()["KeyMetadata"]["Arn"]
        chosen = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", KmsKeyId=explicit)
        self.assertEqual(chosen["KmsKeyId"], explicit)
        instance = ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 2}}],
        )["Instances"][0]
        ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
        for launched in ec2.describe_volumes(VolumeIds=ids)["Volumes"]:
            self.assertEqual((launched["Encrypted"], launched["KmsKeyId"]), (True, default_key))
        # Existing volumes are untouched ("no effect on existing EBS volumes").
        [still_plain] = ec2.describe_volumes(VolumeIds=[plain["VolumeId"]])["Volumes"]
        self.assertFalse(still_plain["Encrypted"])

    def test_encryption_by_default_is_per_account_and_region_and_keeps_the_default_key(self) -> None:
        # moto's Get/Enable/DisableEbsEncryptionByDefault, with the emulator's default-key patches:
        # "for your account in the current Region" (API reference of all three); disabling "does
        # not change the encryption status of your existing volumes" (DisableEbsEncryptionByDefault).
        ec2, kms = self.client("ec2"), self.client("kms")
        key = kms.create_key()["KeyMetadata"]["Arn"]
        ec2.modify_ebs_default_kms_key_id(KmsKeyId=key)
        self.assertTrue(ec2.enable_ebs_encryption_by_default()["EbsEncryptionByDefault"])
        self.assertFalse(self.client("ec2", "eu-west-1").get_ebs_encryption_by_default()["EbsEncryptionByDefault"])
        other = self.client("ec2", account=OTHER_ACCOUNT)
        self.assertFalse(other.get_ebs_encryption_by_default()["EbsEncryptionByDefault"])
        self.assertEqual(ec2.get_ebs_default_kms_key_id()["KmsKeyId"], key)
        encrypted = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")
        self.assertEqual((encrypted["Encrypted"], encrypted["KmsKeyId"]), (True, key))

        self.assertFalse(ec2.disable_ebs_encryption_by_default()["EbsEncryptionByDefault"])
        self.assertFalse(ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"])
        # The default key is a setting of its own: it stays, and applies when asked for.
        self.assertEqual(ec2.get_ebs_default_kms_key_id()["KmsKeyId"], key)
        self.assertFalse(ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["Encrypted"])
        asked = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", Encrypted=True)
        self.assertEqual((asked["Encrypted"], asked["KmsKeyId"]), (True, key))
        [kept] = ec2.describe_volumes(VolumeIds=[encrypted["VolumeId"]])["Volumes"]
        self.assertEqual((kept["Encrypted"], kept["KmsKeyId"]), (True, key))

    def test_snapshots_keep_the_volume_key_and_restored_volumes_get_it(self) -> None:
        ec2 = self.client("ec2")
        key = self.client("kms").create_key()["KeyMetadata"]["Arn"]
        volume = ec2.create_volume(Size=8, AvailabilityZone="us-east-1a", Encrypted=True, KmsKeyId=key)
        snapshot = ec2.create_snapshot(VolumeId=volume["VolumeId"])
        self.assertEqual((snapshot["Encrypted"], snapshot["KmsKeyId"]), (True, key))
        [described] = ec2.describe_snapshots(SnapshotIds=[snapshot["SnapshotId"]])["Snapshots"]
        self.assertEqual((described["Encrypted"], described["KmsKeyId"]), (True, key))
        restored = ec2.create_volume(SnapshotId=snapshot["SnapshotId"], AvailabilityZone="us-east-1a")
        self.assertEqual((restored["Encrypted"], restored["KmsKeyId"], restored["Size"]), (True, key, 8))


class AmiTests(EmulatorTestCase):
    def encrypted_snapshot(self, size: int = 8) -> tuple[str, str]:
        ec2 = self.client("ec2")
        key = self.client("kms").create_key()["KeyMetadata"]["Arn"]
        volume = ec2.create_volume(Size=size, AvailabilityZone="us-east-1a", Encrypted=True, KmsKeyId=key)
        return ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"], key

    def register(self, snapshot_id: str, root: str = "/dev/xvda") -> str:
        return self.client("ec2").register_image(
            Name=f"image-{snapshot_id}",
            RootDeviceName=root,
            BlockDeviceMappings=[{"DeviceName": root, "Ebs": {"SnapshotId": snapshot_id}}],
        )["ImageId"]

    def volumes_of(self, instance: dict[str, Any]) -> dict[str, dict[str, Any]]:
        ec2 = self.client("ec2")
        out = {}
        for mapping in instance["BlockDeviceMappings"]:
            [volume] = ec2.describe_volumes(VolumeIds=[mapping["Ebs"]["VolumeId"]])["Volumes"]
            out[mapping["DeviceName"]] = {**volume, "DeleteOnTermination": mapping["Ebs"]["DeleteOnTermination"]}
        return out

    def test_registered_image_names_an_encrypted_snapshot(self) -> None:
        ec2 = self.client("ec2")
        snapshot_id, key = self.encrypted_snapshot()
        image_id = self.register(snapshot_id)
        [image] = ec2.describe_images(ImageIds=[image_id])["Images"]
        self.assertEqual((image["RootDeviceName"], image["RootDeviceType"]), ("/dev/xvda", "ebs"))
        self.assertEqual(
            image["BlockDeviceMappings"],
            [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": 8, "VolumeType": "gp2",
                                                 "DeleteOnTermination": True, "Encrypted": True}}],
        )
        [snapshot] = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        self.assertEqual((snapshot["Encrypted"], snapshot["KmsKeyId"]), (True, key))
        # No made-up placeholder snapshot for the image.
        self.assertEqual(
            [s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] if image_id in s.get("Description", "")],
            [],
        )
        self.assertClientError(
            "InvalidSnapshot.NotFound", ec2.register_image, Name="bad", RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}],
        )

    def test_instances_get_the_image_volumes_merged_with_the_request(self) -> None:
        ec2 = self.client("ec2")
        snapshot_id, key = self.encrypted_snapshot()
        image_id = self.register(snapshot_id)
        plain = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
        [root] = self.volumes_of(plain).values()
        self.assertEqual((root["SnapshotId"], root["Encrypted"], root["KmsKeyId"], root["Size"]),
                         (snapshot_id, True, key, 8))
        self.assertTrue(root["DeleteOnTermination"])

        other_key = self.client("kms").create_key()["KeyMetadata"]["Arn"]
        merged = ec2.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1,
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20}},
                {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 5, "Encrypted": True, "KmsKeyId": other_key}},
            ],
        )["Instances"][0]
        volumes = self.volumes_of(merged)
        self.assertEqual((volumes["/dev/xvda"]["Size"], volumes["/dev/xvda"]["KmsKeyId"]), (20, key))
        self.assertTrue(volumes["/dev/xvda"]["DeleteOnTermination"])
        self.assertEqual((volumes["/dev/xvdb"]["KmsKeyId"], volumes["/dev/xvdb"]["DeleteOnTermination"]),
                         (other_key, False))

        suppressed = ec2.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "NoDevice": ""},
                                 {"DeviceName": "/dev/xvdc", "Ebs": {"VolumeSize": 3}}],
        )["Instances"][0]
        self.assertEqual(list(self.volumes_of(suppressed)), ["/dev/xvdc"])

    def test_launch_template_on_a_registered_image(self) -> None:
        ec2 = self.client("ec2")
        snapshot_id, _ = self.encrypted_snapshot()
        image_id = self.register(snapshot_id)
        template_key = self.client("kms").create_key()["KeyMetadata"]["Arn"]
        template_id = ec2.create_launch_template(
            LaunchTemplateName="on-image",
            LaunchTemplateData={"ImageId": image_id, "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"Encrypted": True, "KmsKeyId": template_key}}]},
        )["LaunchTemplate"]["LaunchTemplateId"]
        instance = ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": template_id})[
            "Instances"][0]
        self.assertEqual(instance["ImageId"], image_id)
        [root] = self.volumes_of(instance).values()
        self.assertEqual((root["SnapshotId"], root["KmsKeyId"]), (snapshot_id, template_key))

    def test_create_image_snapshots_the_instance_volumes(self) -> None:
        ec2 = self.client("ec2")
        key = self.client("kms").create_key()["KeyMetadata"]["Arn"]
        instance = ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 6, "Encrypted": True,
                                                                      "KmsKeyId": key, "DeleteOnTermination": True}}],
        )["Instances"][0]
        image_id = ec2.create_image(InstanceId=instance["InstanceId"], Name="baked")["ImageId"]
        [image] = ec2.describe_images(ImageIds=[image_id])["Images"]
        mappings = {m["DeviceName"]: m["Ebs"] for m in image["BlockDeviceMappings"]}
        # moto's built-in image adds no root volume when the request maps devices.
        self.assertEqual(set(mappings), {"/dev/xvdb"})
        data = mappings["/dev/xvdb"]
        self.assertEqual((data["VolumeSize"], data["Encrypted"], data["DeleteOnTermination"]), (6, True, True))
        [snapshot] = ec2.describe_snapshots(SnapshotIds=[data["SnapshotId"]])["Snapshots"]
        self.assertEqual((snapshot["Encrypted"], snapshot["KmsKeyId"]), (True, key))
        self.assertEqual(image["RootDeviceType"], "ebs")


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


class SimulatePrincipalPolicyTests(IamTestCase):
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

    def test_user_permissions_boundary_is_stored_and_shown(self) -> None:
        boundary = self.managed("user-boundary", allow("kms:Decrypt"))
        created = self.iam.create_user(UserName="bounded", PermissionsBoundary=boundary)["User"]
        expected = {"PermissionsBoundaryType": "PermissionsBoundaryPolicy", "PermissionsBoundaryArn": boundary}
        self.assertEqual(created["PermissionsBoundary"], expected)
        self.assertEqual(self.iam.get_user(UserName="bounded")["User"]["PermissionsBoundary"], expected)
        self.assertNotIn("PermissionsBoundary", self.iam.list_users()["Users"][0])

        self.iam.create_user(UserName="plain")
        self.assertNotIn("PermissionsBoundary", self.iam.get_user(UserName="plain")["User"])
        self.iam.put_user_permissions_boundary(UserName="plain", PermissionsBoundary=boundary)
        self.assertEqual(self.iam.get_user(UserName="plain")["User"]["PermissionsBoundary"], expected)
        self.iam.delete_user_permissions_boundary(UserName="plain")
        self.assertNotIn("PermissionsBoundary", self.iam.get_user(UserName="plain")["User"])

        self.assertClientError("InvalidInput", self.iam.put_user_permissions_boundary,
                               UserName="plain", PermissionsBoundary="arn:aws:s3:::not-a-policy-arn")
        self.assertClientError("NoSuchEntity", self.iam.put_user_permissions_boundary, UserName="plain",
                               PermissionsBoundary=f"arn:aws:iam::{ACCOUNT}:policy/missing")
        self.assertClientError("NoSuchEntity", self.iam.put_user_permissions_boundary,
                               UserName="ghost", PermissionsBoundary=boundary)
        self.assertClientError("NoSuchEntity", self.iam.create_user, UserName="never",
                               PermissionsBoundary=f"arn:aws:iam::{ACCOUNT}:policy/missing")
        self.assertClientError("NoSuchEntity", self.iam.get_user, UserName="never")

    def test_user_permissions_boundary_limits_simulation(self) -> None:
        boundary = self.managed("grant-less", allow("kms:*"), deny("kms:ScheduleKeyDeletion"),
                                {"Effect": "Allow", "NotAction": "kms:CreateGrant", "Resource": "*"})
        arn = self.iam.create_user(UserName="dev", PermissionsBoundary=boundary)["User"]["Arn"]
        self.iam.put_user_policy(UserName="dev", PolicyName="all-kms", PolicyDocument=policy(allow("kms:*")))
        boundary = self.managed("decrypt-only", allow("kms:Decrypt"))
        self.iam.put_user_permissions_boundary(UserName="dev", PermissionsBoundary=boundary)
        decrypt, grant, delete = self.simulate(
            arn, "kms:Decrypt", "kms:CreateGrant", "kms:ScheduleKeyDeletion", resources=[self.KEY_ARN]
        )
        self.assertEqual(decrypt["EvalDecision"], "allowed")
        self.assertEqual(decrypt["PermissionsBoundaryDecisionDetail"], {"AllowedByPermissionsBoundary": True})
        self.assertEqual(grant["EvalDecision"], "implicitDeny")
        self.assertEqual(grant["MatchedStatements"], [])
        self.assertEqual(grant["PermissionsBoundaryDecisionDetail"], {"AllowedByPermissionsBoundary": False})
        self.assertEqual(
            grant["ResourceSpecificResults"][0]["PermissionsBoundaryDecisionDetail"],
            {"AllowedByPermissionsBoundary": False},
        )
        self.assertEqual(delete["EvalDecision"], "implicitDeny")
        self.assertNotIn("OrganizationsDecisionDetail", decrypt)

        denying = self.managed("deny-grant", allow("kms:*"), deny("kms:CreateGrant"))
        self.iam.put_user_permissions_boundary(UserName="dev", PermissionsBoundary=denying)
        [grant] = self.simulate(arn, "kms:CreateGrant", resources=[self.KEY_ARN])
        self.assertEqual(grant["EvalDecision"], "explicitDeny")
        self.assertEqual(grant["MatchedStatements"], [{"SourcePolicyId": "deny-grant", "SourcePolicyType": "user-managed"}])
        self.assertEqual(grant["PermissionsBoundaryDecisionDetail"], {"AllowedByPermissionsBoundary": False})
        body = self.raw_simulation(PolicySourceArn=arn, ActionNames=["kms:CreateGrant"], ResourceArns=[self.KEY_ARN])
        self.assertIn(
            "<PermissionsBoundaryDecisionDetail><AllowedByPermissionsBoundary>false"
            "</AllowedByPermissionsBoundary></PermissionsBoundaryDecisionDetail>", body
        )

        plain = self.user("unbounded", allow("kms:*"))
        [result] = self.simulate(plain, "kms:CreateGrant", resources=[self.KEY_ARN])
        self.assertNotIn("PermissionsBoundaryDecisionDetail", result)
        self.assertNotIn("PermissionsBoundaryDecisionDetail", result["ResourceSpecificResults"][0])


MANAGEMENT = "111122223333"


class OrganizationsTests(IamTestCase):
    """Organizations seeded with real API calls, and SCPs in SimulatePrincipalPolicy."""

    def setUp(self) -> None:
        super().setUp()
        self.mgmt = self.client("organizations", account=MANAGEMENT)
        self.member = self.client("organizations")

    def join_organization(self) -> tuple[str, str]:
        """111122223333 manages an organization with SCPs enabled; 123456789012 joins an OU."""
        self.mgmt.create_organization(FeatureSet="ALL")
        root = self.mgmt.list_roots()["Roots"][0]["Id"]
        self.mgmt.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
        handshake = self.mgmt.invite_account_to_organization(Target={"Type": "ACCOUNT", "Id": ACCOUNT})["Handshake"]
        self.member.accept_handshake(HandshakeId=handshake["Id"])
        ou = self.mgmt.create_organizational_unit(ParentId=root, Name="workloads")["OrganizationalUnit"]["Id"]
        self.mgmt.move_account(AccountId=ACCOUNT, SourceParentId=root, DestinationParentId=ou)
        return root, ou

    def scp(self, name: str, *statements: dict[str, Any]) -> str:
        return self.mgmt.create_policy(
            Name=name, Description=name, Type="SERVICE_CONTROL_POLICY", Content=policy(*statements)
        )["Policy"]["PolicySummary"]["Id"]

    def test_invitation_makes_the_account_a_member(self) -> None:
        self.assertClientError("AWSOrganizationsNotInUseException", self.mgmt.invite_account_to_organization,
                               Target={"Type": "ACCOUNT", "Id": ACCOUNT})
        self.mgmt.create_organization(FeatureSet="ALL")
        handshake = self.mgmt.invite_account_to_organization(Target={"Type": "ACCOUNT", "Id": ACCOUNT})["Handshake"]
        self.assertEqual((handshake["State"], handshake["Action"]), ("OPEN", "INVITE"))
        self.assertIn({"Id": ACCOUNT, "Type": "ACCOUNT"}, handshake["Parties"])
        self.assertEqual((handshake["ExpirationTimestamp"] - handshake["RequestedTimestamp"]).days, 15)
        self.assertClientError("AccessDeniedException", self.client("organizations", account="444455556666")
                               .accept_handshake, HandshakeId=handshake["Id"])
        self.assertClientError("HandshakeNotFoundException", self.member.accept_handshake, HandshakeId="h-0000000000")
        accepted = self.member.accept_handshake(HandshakeId=handshake["Id"])["Handshake"]
        self.assertEqual(accepted["State"], "ACCEPTED")
        self.assertClientError("InvalidHandshakeTransitionException", self.member.accept_handshake,
                               HandshakeId=handshake["Id"])
        self.assertEqual(self.member.describe_organization()["Organization"]["MasterAccountId"], MANAGEMENT)
        [joined] = [a for a in self.mgmt.list_accounts()["Accounts"] if a["Id"] == ACCOUNT]
        self.assertEqual(joined["JoinedMethod"], "INVITED")
        root = self.mgmt.list_roots()["Roots"][0]["Id"]
        self.assertEqual(self.mgmt.list_parents(ChildId=ACCOUNT)["Parents"], [{"Id": root, "Type": "ROOT"}])
        self.assertClientError("HandshakeConstraintViolationException", self.mgmt.invite_account_to_organization,
                               Target={"Type": "ACCOUNT", "Id": ACCOUNT})
        self.assertClientError("InvalidInputException", self.mgmt.invite_account_to_organization,
                               Target={"Type": "EMAIL", "Id": "owner@example.com"})
        # A reset forgets the membership: the account can found its own organization.
        self.control("POST", "reset")
        self.member.create_organization(FeatureSet="ALL")

    def test_scp_attachments_follow_the_policy_type(self) -> None:
        self.mgmt.create_organization(FeatureSet="ALL")
        root = self.mgmt.list_roots()["Roots"][0]["Id"]
        guard = self.scp("guard", deny("kms:CreateGrant"))
        self.assertClientError("PolicyTypeNotEnabledException", self.mgmt.attach_policy, PolicyId=guard, TargetId=root)
        self.mgmt.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
        self.mgmt.attach_policy(PolicyId=guard, TargetId=root)
        names = lambda target: sorted(  # noqa: E731
            p["Name"] for p in self.mgmt.list_policies_for_target(TargetId=target, Filter="SERVICE_CONTROL_POLICY")[
                "Policies"]
        )
        self.assertEqual(names(root), ["FullAWSAccess", "guard"])
        self.mgmt.detach_policy(PolicyId="p-FullAWSAccess", TargetId=root)
        error = self.assertClientError("ConstraintViolationException", self.mgmt.detach_policy, PolicyId=guard,
                                       TargetId=root)
        self.assertIn("fewer than the minimum", error.response["Error"]["Message"])
        self.mgmt.disable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
        self.assertEqual(names(root), [])
        self.mgmt.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
        self.assertEqual(names(root), ["FullAWSAccess"])
        self.assertEqual(names(MANAGEMENT), ["FullAWSAccess"])

    def test_scp_deny_is_an_explicit_deny_reported_as_organizations_detail(self) -> None:
        _, ou = self.join_organization()
        arn = self.role("launcher", allow("kms:*"))
        self.mgmt.attach_policy(PolicyId=self.scp("no-grants", deny("kms:CreateGrant")), TargetId=ou)
        grant, decrypt = self.simulate(arn, "kms:CreateGrant", "kms:Decrypt", resources=[self.KEY_ARN])
        self.assertEqual(grant["EvalDecision"], "explicitDeny")
        self.assertEqual(grant["MatchedStatements"], [])
        self.assertEqual(grant["OrganizationsDecisionDetail"], {"AllowedByOrganizations": False})
        self.assertNotIn("OrganizationsDecisionDetail", grant["ResourceSpecificResults"][0])
        self.assertEqual(grant["ResourceSpecificResults"][0]["EvalResourceDecision"], "explicitDeny")
        self.assertEqual(decrypt["EvalDecision"], "allowed")
        self.assertEqual(decrypt["OrganizationsDecisionDetail"], {"AllowedByOrganizations": True})
        body = self.raw_simulation(PolicySourceArn=arn, ActionNames=["kms:CreateGrant"], ResourceArns=[self.KEY_ARN])
        self.assertIn(
            "<OrganizationsDecisionDetail><AllowedByOrganizations>false</AllowedByOrganizations>"
            "</OrganizationsDecisionDetail>", body
        )

    def test_every_level_must_allow(self) -> None:
        _, ou = self.join_organization()
        arn = self.role("operator", allow("kms:*"))
        self.mgmt.attach_policy(PolicyId=self.scp("ou-allow", allow(["kms:Decrypt", "kms:CreateGrant"])), TargetId=ou)
        self.mgmt.detach_policy(PolicyId="p-FullAWSAccess", TargetId=ou)
        grant, encrypt = self.simulate(arn, "kms:CreateGrant", "kms:Encrypt", resources=[self.KEY_ARN])
        self.assertEqual(grant["EvalDecision"], "allowed")
        self.assertEqual(encrypt["EvalDecision"], "implicitDeny")
        self.assertEqual(encrypt["OrganizationsDecisionDetail"], {"AllowedByOrganizations": False})
        # The account level narrows further.
        self.mgmt.attach_policy(PolicyId=self.scp("account-allow", allow("kms:Decrypt")), TargetId=ACCOUNT)
        self.mgmt.detach_policy(PolicyId="p-FullAWSAccess", TargetId=ACCOUNT)
        grant, decrypt = self.simulate(arn, "kms:CreateGrant", "kms:Decrypt", resources=[self.KEY_ARN])
        self.assertEqual((grant["EvalDecision"], decrypt["EvalDecision"]), ("implicitDeny", "allowed"))
        # An identity policy that does not allow stays an implicit deny, whatever the SCPs say.
        quiet = self.role("quiet", allow("s3:GetObject"))
        [result] = self.simulate(quiet, "kms:Decrypt", resources=[self.KEY_ARN])
        self.assertEqual(result["EvalDecision"], "implicitDeny")
        self.assertEqual(result["OrganizationsDecisionDetail"], {"AllowedByOrganizations": True})

    def test_scp_conditions_and_missing_context(self) -> None:
        _, ou = self.join_organization()
        arn = self.user("grants", allow("kms:CreateGrant"))
        guard = deny("kms:CreateGrant", Condition={"BoolIfExists": {"kms:GrantIsForAWSResource": "false"}})
        self.mgmt.attach_policy(PolicyId=self.scp("aws-resources-only", guard), TargetId=ou)
        for value, decision in (("true", "allowed"), ("false", "explicitDeny")):
            [result] = self.simulate(arn, "kms:CreateGrant", resources=[self.KEY_ARN],
                                     context={"kms:GrantIsForAWSResource": ("boolean", [value])})
            self.assertEqual(result["EvalDecision"], decision, value)
        [absent] = self.simulate(arn, "kms:CreateGrant", resources=[self.KEY_ARN])
        self.assertEqual(absent["EvalDecision"], "explicitDeny")
        self.assertEqual(absent["MissingContextValues"], [])

    def test_scps_do_not_apply_to_the_management_account_or_service_linked_roles(self) -> None:
        # 123456789012 as management account: SCPs never apply, the detail says allowed.
        self.member.create_organization(FeatureSet="ALL")
        root = self.member.list_roots()["Roots"][0]["Id"]
        self.member.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
        guard = self.member.create_policy(Name="g", Description="g", Type="SERVICE_CONTROL_POLICY",
                                          Content=policy(deny("kms:*")))["Policy"]["PolicySummary"]["Id"]
        self.member.attach_policy(PolicyId=guard, TargetId=ACCOUNT)
        arn = self.role("admin", allow("kms:*"))
        [result] = self.simulate(arn, "kms:CreateGrant", resources=[self.KEY_ARN])
        self.assertEqual(result["EvalDecision"], "allowed")
        self.assertEqual(result["OrganizationsDecisionDetail"], {"AllowedByOrganizations": True})

        self.control("POST", "reset")
        self.iam = self.client("iam")
        _, ou = self.join_organization()
        self.mgmt.attach_policy(PolicyId=self.scp("deny-kms", deny("kms:*")), TargetId=ou)
        slr = self.iam.create_service_linked_role(AWSServiceName="autoscaling.amazonaws.com")["Role"]
        self.iam.put_role_policy(RoleName=slr["RoleName"], PolicyName="kms", PolicyDocument=policy(allow("kms:*")))
        [service] = self.simulate(slr["Arn"], "kms:CreateGrant", resources=[self.KEY_ARN])
        self.assertEqual(service["EvalDecision"], "allowed")
        self.assertEqual(service["OrganizationsDecisionDetail"], {"AllowedByOrganizations": True})
        [person] = self.simulate(self.role("person", allow("kms:*")), "kms:CreateGrant", resources=[self.KEY_ARN])
        self.assertEqual(person["EvalDecision"], "explicitDeny")

    def test_boundary_and_scp_together(self) -> None:
        _, ou = self.join_organization()
        boundary = self.managed("b", allow("kms:*"))
        arn = self.role("both", allow("kms:*"), boundary=boundary)
        self.mgmt.attach_policy(PolicyId=self.scp("deny-decrypt", deny("kms:Decrypt")), TargetId=ou)
        [result] = self.simulate(arn, "kms:Decrypt", resources=[self.KEY_ARN])
        self.assertEqual(result["EvalDecision"], "explicitDeny")
        self.assertEqual(result["PermissionsBoundaryDecisionDetail"], {"AllowedByPermissionsBoundary": True})
        self.assertEqual(result["OrganizationsDecisionDetail"], {"AllowedByOrganizations": False})


MEMBER_ACCOUNT = "444455556666"
OUTSIDER = "999988887777"


class AssumeRoleTests(EmulatorTestCase):
    """STS AssumeRole as AWS authorizes it, and ``POST /_kld/iam/role``."""

    def setUp(self) -> None:
        super().setUp()
        self.sts = self.client("sts")

    def role_in(self, account: str, name: str, trust: dict[str, Any] | None = None, **extra: Any) -> str:
        body: dict[str, Any] = {"account_id": account, "name": name, **extra}
        if trust is not None:
            body["trust_policy"] = trust
        return self.control("POST", "iam/role", body)["arn"]

    @staticmethod
    def trust(*statements: dict[str, Any]) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": list(statements)}

    @staticmethod
    def trusting(principal: Any, **extra: Any) -> dict[str, Any]:
        return {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole", **extra}

    def session_client(self, service: str, credentials: dict[str, Any]) -> Any:
        return boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=self.url,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials.get("SessionToken"),
            config=NO_RETRIES,
        )

    def assume(self, arn: str, sts: Any = None, **kwargs: Any) -> dict[str, Any]:
        return (sts or self.sts).assume_role(RoleArn=arn, RoleSessionName="kld-session", **kwargs)["Credentials"]

    def assert_denied(self, arn: str, caller: str, sts: Any = None, **kwargs: Any) -> None:
        error = self.assertClientError("AccessDenied", (sts or self.sts).assume_role, RoleArn=arn,
                                       RoleSessionName="kld-session", **kwargs)
        self.assertEqual(error.response["ResponseMetadata"]["HTTPStatusCode"], 403)
        self.assertEqual(
            error.response["Error"]["Message"],
            f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {arn}",
        )

    def test_a_missing_role_is_access_denied(self) -> None:
        root = f"arn:aws:iam::{ACCOUNT}:root"
        self.assert_denied(f"arn:aws:iam::{OTHER_ACCOUNT}:role/kld-test", root)
        # A role of that name in another account is not the one the ARN names.
        self.role_in(MEMBER_ACCOUNT, "kld-test")
        self.assert_denied(f"arn:aws:iam::{OTHER_ACCOUNT}:role/kld-test", root)
        # Names and paths compare exactly.
        self.assert_denied(f"arn:aws:iam::{MEMBER_ACCOUNT}:role/KLD-test", root)
        self.assert_denied(f"arn:aws:iam::{MEMBER_ACCOUNT}:role/ops/kld-test", root)
        self.assertEqual(self.control("GET", "calls", None)["calls"][-1]["action"], "AssumeRole")

    def test_a_trust_policy_that_leaves_the_caller_out_is_access_denied(self) -> None:
        root = f"arn:aws:iam::{ACCOUNT}:root"
        for name, trust in (
            ("other-account", self.trust(self.trusting({"AWS": f"arn:aws:iam::{OUTSIDER}:root"}))),
            ("service-only", self.trust(self.trusting({"Service": "lambda.amazonaws.com"}))),
            ("other-action", self.trust(dict(self.trusting({"AWS": ACCOUNT}), Action="sts:TagSession"))),
            ("denied", self.trust(self.trusting("*"), {"Effect": "Deny", "Principal": {"AWS": ACCOUNT},
                                                       "Action": "sts:*"})),
            ("not-principal", self.trust({"Effect": "Deny", "NotPrincipal": {"AWS": OUTSIDER}, "Action": "sts:AssumeRole"},
                                         self.trusting("*"))),
            ("expired", self.trust(self.trusting({"AWS": ACCOUNT}, Condition={
                "DateLessThan": {"aws:CurrentTime": "2016-05-01T12:00:00Z"}}))),
        ):
            self.assert_denied(self.role_in(MEMBER_ACCOUNT, name, trust), root)
        # The same role admits the caller once its trust policy does (the route updates it).
        arn = self.role_in(MEMBER_ACCOUNT, "other-account", self.trust(self.trusting({"AWS": ACCOUNT})))
        self.assertTrue(self.assume(arn)["AccessKeyId"])

    def test_allowed_credentials_act_in_the_roles_account(self) -> None:
        made = self.control("POST", "iam/role", {"account_id": MEMBER_ACCOUNT, "name": "kld-test",
                                                 "policies": {"read": policy(allow("ec2:Describe*"))}})
        self.assertEqual(made, {"arn": f"arn:aws:iam::{MEMBER_ACCOUNT}:role/kld-test", "account_id": MEMBER_ACCOUNT,
                                "name": "kld-test", "created": True})
        again = self.control("POST", "iam/role", {"account_id": MEMBER_ACCOUNT, "name": "kld-test",
                                                  "policies": {"more": {"Version": "2012-10-17", "Statement": [
                                                      allow("kms:DescribeKey")]}}})
        self.assertFalse(again["created"])
        role = self.client("iam", account=MEMBER_ACCOUNT).get_role(RoleName="kld-test")["Role"]
        principals = role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"]
        self.assertEqual(sorted(emulator.as_list(principals)),
                         [f"arn:aws:iam::{ACCOUNT}:root", f"arn:aws:iam::{MEMBER_ACCOUNT}:root"])
        self.assertEqual(sorted(self.client("iam", account=MEMBER_ACCOUNT).list_role_policies(
            RoleName="kld-test")["PolicyNames"]), ["more", "read"])

        credentials = self.assume(made["arn"], DurationSeconds=900)
        self.assertGreater(credentials["Expiration"], datetime.now(UTC) + timedelta(minutes=14))
        identity = self.session_client("sts", credentials).get_caller_identity()
        self.assertEqual(identity["Account"], MEMBER_ACCOUNT)
        self.assertEqual(identity["Arn"], f"arn:aws:sts::{MEMBER_ACCOUNT}:assumed-role/kld-test/kld-session")
        kms = self.session_client("kms", credentials)
        key = kms.create_key()["KeyMetadata"]
        self.assertEqual(key["AWSAccountId"], MEMBER_ACCOUNT)
        self.assertEqual([k["KeyId"] for k in self.client("kms", account=MEMBER_ACCOUNT).list_keys()["Keys"]],
                         [key["KeyId"]])
        self.assertEqual(self.client("kms").list_keys()["Keys"], [])

    def test_external_id_condition(self) -> None:
        arn = self.role_in(MEMBER_ACCOUNT, "vendor", self.trust(self.trusting(
            {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, Condition={"StringEquals": {"sts:ExternalId": "a1b2c3d4e5"}})))
        root = f"arn:aws:iam::{ACCOUNT}:root"
        self.assert_denied(arn, root)
        self.assert_denied(arn, root, ExternalId="wrong-id")
        self.assertTrue(self.assume(arn, ExternalId="a1b2c3d4e5")["AccessKeyId"])

    def test_principal_org_id_condition(self) -> None:
        mgmt = self.client("organizations", account=OTHER_ACCOUNT)
        org = mgmt.create_organization(FeatureSet="ALL")["Organization"]["Id"]
        handshake = mgmt.invite_account_to_organization(Target={"Type": "ACCOUNT", "Id": ACCOUNT})["Handshake"]
        self.client("organizations").accept_handshake(HandshakeId=handshake["Id"])
        arn = self.role_in(MEMBER_ACCOUNT, "org-only", self.trust(self.trusting(
            {"AWS": "*"}, Condition={"StringEquals": {"aws:PrincipalOrgID": org}})))
        self.assertTrue(self.assume(arn)["AccessKeyId"])  # 123456789012 is a member
        self.assertTrue(self.assume(arn, sts=self.client("sts", account=OTHER_ACCOUNT))["AccessKeyId"])  # management
        self.assert_denied(arn, f"arn:aws:iam::{OUTSIDER}:root", sts=self.client("sts", account=OUTSIDER))
        # aws:ResourceOrgID is the role's account's organization: MEMBER_ACCOUNT is in none.
        scoped = self.role_in(MEMBER_ACCOUNT, "resource-org", self.trust(self.trusting(
            {"AWS": ACCOUNT}, Condition={"StringEquals": {"aws:ResourceOrgID": org}})))
        self.assert_denied(scoped, f"arn:aws:iam::{ACCOUNT}:root")
        in_org = self.role_in(OTHER_ACCOUNT, "resource-org", self.trust(self.trusting(
            {"AWS": ACCOUNT}, Condition={"StringEquals": {"aws:ResourceOrgID": org}})))
        self.assertTrue(self.assume(in_org)["AccessKeyId"])

    def test_sessions_users_and_role_chaining(self) -> None:
        hub = self.role_in(OTHER_ACCOUNT, "hub-function")
        session = self.session_client("sts", self.assume(hub))
        session_arn = f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/hub-function/kld-session"
        # A role ARN in Principal admits that role's sessions, and only those.
        spoke = self.role_in(MEMBER_ACCOUNT, "spoke", self.trust(self.trusting({"AWS": hub}, Condition={
            "StringEquals": {"aws:PrincipalArn": hub, "aws:PrincipalType": "AssumedRole"}})))
        chained = self.assume(spoke, sts=session)
        self.assertEqual(self.session_client("sts", chained).get_caller_identity()["Account"], MEMBER_ACCOUNT)
        self.assert_denied(spoke, f"arn:aws:iam::{ACCOUNT}:root")
        other = self.role_in(MEMBER_ACCOUNT, "other-role", self.trust(self.trusting(
            {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:role/someone-else"})))
        self.assert_denied(other, session_arn, sts=session)
        # Role chaining: one hour at most.
        error = self.assertClientError("ValidationError", session.assume_role, RoleArn=spoke,
                                       RoleSessionName="kld-session", DurationSeconds=3601)
        self.assertIn("1 hour session limit for roles assumed by role chaining", error.response["Error"]["Message"])
        # The role's MaxSessionDuration (1 hour unless set) and the API's 900..43200.
        error = self.assertClientError("ValidationError", self.sts.assume_role, RoleArn=hub,
                                       RoleSessionName="kld-session", DurationSeconds=7200)
        self.assertEqual(error.response["Error"]["Message"],
                         "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
        unchecked = boto3.client("sts", region_name="us-east-1", endpoint_url=self.url,
                                 aws_access_key_id="kld-emulator", aws_secret_access_key="kld-emulator",
                                 config=NO_RETRIES.merge(Config(parameter_validation=False)))
        error = self.assertClientError("ValidationError", unchecked.assume_role, RoleArn=hub,
                                       RoleSessionName="kld-session", DurationSeconds=600)
        self.assertIn("Member must have value greater than or equal to 900", error.response["Error"]["Message"])

        # An IAM user with an access key: named by its ARN, and only itself.
        iam = self.client("iam")
        user_arn = iam.create_user(UserName="ops")["User"]["Arn"]
        key = iam.create_access_key(UserName="ops")["AccessKey"]
        user_sts = self.session_client("sts", {"AccessKeyId": key["AccessKeyId"],
                                               "SecretAccessKey": key["SecretAccessKey"]})
        for_user = self.role_in(MEMBER_ACCOUNT, "for-ops", self.trust(self.trusting({"AWS": user_arn})))
        self.assertTrue(self.assume(for_user, sts=user_sts)["AccessKeyId"])
        self.assert_denied(other, user_arn, sts=user_sts)

    def test_role_route_refuses_bad_input(self) -> None:
        self.assertIn("error", self.control("POST", "iam/role", {"account_id": "12", "name": "x"}, expect=400))
        self.assertIn("error", self.control("POST", "iam/role", {"name": "x", "policies": ["not", "a", "map"]},
                                            expect=400))
        self.assertIn("error", self.control("POST", "iam/role", {"account_id": MEMBER_ACCOUNT}, expect=400))
        self.assertIn("error", self.control("POST", "iam/role", {"name": "x", "policies": {"p": {"Statement": 5}}},
                                            expect=400))


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


FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "cloudtrail")
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


PRODUCT_ARN = f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/{ACCOUNT}/default"


def asff(finding_id: str, updated: datetime, **extra: Any) -> dict[str, Any]:
    """A minimal ASFF finding of this account's default product, ACTIVE unless told."""
    finding = {
        "SchemaVersion": "2018-10-08",
        "Id": finding_id,
        "ProductArn": PRODUCT_ARN,
        "GeneratorId": "kms-launch-doctor/caller-lacks-create-grant",
        "AwsAccountId": ACCOUNT,
        "Types": ["Software and Configuration Checks/AWS Security Best Practices"],
        "CreatedAt": iso(BASE_TIME),
        "UpdatedAt": iso(updated),
        "Severity": {"Label": "MEDIUM"},
        "Title": f"finding {finding_id}",
        "Description": "d",
        "RecordState": "ACTIVE",
        "Resources": [{"Type": "AwsEc2Instance", "Id": f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-{finding_id}"}],
    }
    finding.update(extra)
    return finding


def eq(*values: str, comparison: str = "EQUALS") -> list[dict[str, str]]:
    return [{"Value": v, "Comparison": comparison} for v in values]


class SecurityHubTests(EmulatorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.hub = self.client("securityhub")
        # Out-of-range and malformed inputs, which botocore would refuse before sending.
        self.raw_hub = boto3.client(
            "securityhub", region_name="us-east-1", endpoint_url=self.url, aws_access_key_id="kld-emulator",
            aws_secret_access_key="kld-emulator", config=NO_RETRIES.merge(Config(parameter_validation=False)),
        )

    def imported(self, *findings: dict[str, Any]) -> dict[str, Any]:
        result = self.hub.batch_import_findings(Findings=list(findings))
        self.assertEqual((result["FailedCount"], result["SuccessCount"]), (0, len(findings)), result)
        return result

    def ids(self, **kwargs: Any) -> list[str]:
        return [f["Id"] for f in self.hub.get_findings(**kwargs)["Findings"]]

    def test_without_filters_every_finding_in_import_order(self) -> None:
        self.imported(asff("a", BASE_TIME), asff("b", BASE_TIME, RecordState="ARCHIVED"), asff("c", BASE_TIME))
        found = self.hub.get_findings()
        self.assertEqual([f["Id"] for f in found["Findings"]], ["a", "b", "c"])
        self.assertNotIn("NextToken", found)
        # Region is Security Hub's, from the request.
        self.assertEqual({f["Region"] for f in found["Findings"]}, {"us-east-1"})
        self.assertEqual(self.client("securityhub", "eu-west-1").get_findings()["Findings"], [])

    def test_string_filters_or_within_a_field_and_across_fields(self) -> None:
        # https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_StringFilter.html
        other_product = f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/aws/guardduty"
        self.imported(
            asff("kld-1", BASE_TIME),
            asff("kld-2", BASE_TIME, GeneratorId="kms-launch-doctor/key-disabled"),
            asff("kld-3", BASE_TIME, Resources=[
                {"Type": "AwsEc2Instance", "Id": f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-3"},
                {"Type": "AwsKmsKey", "Id": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k-3"},
            ]),
            asff("other-1", BASE_TIME, ProductArn=other_product, AwsAccountId=OTHER_ACCOUNT),
        )
        # Positive comparisons of one field are ORed.
        self.assertEqual(self.ids(Filters={"Id": eq("kld-1", "kld-3", "missing")}), ["kld-1", "kld-3"])
        self.assertEqual(self.ids(Filters={"Id": eq("kld-", comparison="PREFIX")}), ["kld-1", "kld-2", "kld-3"])
        self.assertEqual(self.ids(Filters={"Title": eq("other", comparison="CONTAINS")}), ["other-1"])
        # Negative ones are ANDed; PREFIX first, then the exclusions.
        self.assertEqual(
            self.ids(Filters={"Id": eq("kld-", comparison="PREFIX") + eq("kld-1", "kld-2", comparison="NOT_EQUALS")}),
            ["kld-3"],
        )
        self.assertEqual(self.ids(Filters={"Id": eq("kld", comparison="PREFIX_NOT_EQUALS")}), ["other-1"])
        self.assertEqual(self.ids(Filters={"Title": eq("kld", "1", comparison="NOT_CONTAINS")}), [])
        # Different fields are ANDed.
        self.assertEqual(
            self.ids(Filters={"ProductArn": eq(PRODUCT_ARN), "GeneratorId": eq("kms-launch-doctor/key-disabled")}),
            ["kld-2"],
        )
        self.assertEqual(self.ids(Filters={"AwsAccountId": eq(OTHER_ACCOUNT)}), ["other-1"])
        self.assertEqual(self.ids(Filters={"Region": eq("us-east-1"), "Id": eq("kld-2")}), ["kld-2"])
        self.assertEqual(self.ids(Filters={"Region": eq("eu-west-1")}), [])
        self.assertEqual(self.ids(Filters={"RecordState": eq("ACTIVE"), "ProductArn": eq(other_product)}), ["other-1"])
        # ResourceId matches any of the finding's Resources[].Id; a negative one excludes it.
        key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k-3"
        self.assertEqual(self.ids(Filters={"ResourceId": eq(key)}), ["kld-3"])
        self.assertEqual(self.ids(Filters={"ResourceType": eq("AwsKmsKey")}), ["kld-3"])
        self.assertEqual(
            self.ids(Filters={"ResourceId": eq(key, comparison="NOT_EQUALS"), "Id": eq("kld-", comparison="PREFIX")}),
            ["kld-1", "kld-2"],
        )
        # Case-sensitive ("Filter values are case sensitive").
        self.assertEqual(self.ids(Filters={"Id": eq("KLD-1")}), [])

    def test_archiving_update_and_record_state_filter(self) -> None:
        self.imported(asff("kld-1", BASE_TIME), asff("kld-2", BASE_TIME))
        self.imported(asff("kld-1", BASE_TIME + timedelta(minutes=5), RecordState="ARCHIVED"))
        active = {"RecordState": eq("ACTIVE")}
        self.assertEqual(self.ids(Filters=active), ["kld-2"])
        self.assertEqual(self.ids(Filters={"RecordState": eq("ARCHIVED")}), ["kld-1"])
        self.assertEqual(self.ids(Filters={"Id": eq("kld-1", "kld-2"), **active}), ["kld-2"])
        [stored] = self.hub.get_findings(Filters={"Id": eq("kld-1")})["Findings"]
        self.assertEqual((stored["RecordState"], stored["UpdatedAt"]), ("ARCHIVED", iso(BASE_TIME + timedelta(minutes=5))))
        # Reactivated by a later import.
        self.imported(asff("kld-1", BASE_TIME + timedelta(minutes=9)))
        self.assertEqual(self.ids(Filters=active), ["kld-1", "kld-2"])

    def test_an_update_not_later_than_the_stored_finding_is_ignored(self) -> None:
        # https://docs.aws.amazon.com/securityhub/latest/userguide/finding-update-batchimportfindings.html
        later = BASE_TIME + timedelta(hours=1)
        self.imported(asff("kld-1", later, Title="newer", Workflow={"Status": "NOTIFIED"}, Region="eu-west-3"))
        for stale in (BASE_TIME, later):  # before, and the same instant
            result = self.imported(asff("kld-1", stale, Title="stale", RecordState="ARCHIVED"))
            self.assertEqual(result["FailedFindings"], [])
        [stored] = self.hub.get_findings()["Findings"]
        self.assertEqual((stored["Title"], stored["RecordState"], stored["Region"]), ("newer", "ACTIVE", "us-east-1"))
        # A later update applies, and leaves the customer's Workflow alone.
        self.imported(asff("kld-1", later + timedelta(seconds=1), Title="latest", Workflow={"Status": "NEW"}))
        [stored] = self.hub.get_findings()["Findings"]
        self.assertEqual((stored["Title"], stored["Workflow"]), ("latest", {"Status": "NOTIFIED"}))
        # Fractional seconds and offsets compare as time: 11:00:01Z is the stored UpdatedAt.
        self.imported(asff("kld-1", later, UpdatedAt="2026-11-28T12:00:01.000+01:00", Title="same instant"))
        self.assertEqual(self.hub.get_findings()["Findings"][0]["Title"], "latest")
        self.imported(asff("kld-1", later, UpdatedAt="2026-11-28T12:00:01.500+01:00", Title="half a second later"))
        self.assertEqual(self.hub.get_findings()["Findings"][0]["Title"], "half a second later")

    def test_malformed_findings_fail_one_by_one(self) -> None:
        bad = asff("kld-2", BASE_TIME)
        del bad["UpdatedAt"]
        result = self.raw_hub.batch_import_findings(Findings=[asff("kld-1", BASE_TIME), bad, asff("kld-3", BASE_TIME, Resources=[])])
        self.assertEqual((result["SuccessCount"], result["FailedCount"]), (1, 2))
        self.assertEqual([(f["Id"], f["ErrorCode"]) for f in result["FailedFindings"]], [("kld-2", "InvalidInput"), ("kld-3", "InvalidInput")])

    def test_paging_with_filters_survives_imports_between_pages(self) -> None:
        self.imported(*(asff(f"kld-{n}", BASE_TIME) for n in range(1, 6)), asff("other", BASE_TIME))
        query = {"Filters": {"Id": eq("kld-", comparison="PREFIX")}, "MaxResults": 2}
        first = self.hub.get_findings(**query)
        self.assertEqual([f["Id"] for f in first["Findings"]], ["kld-1", "kld-2"])
        # Between pages: kld-3 archived (still matches: the filter is on Id), kld-4 stale-updated, a new one.
        self.imported(asff("kld-3", BASE_TIME + timedelta(minutes=1), RecordState="ARCHIVED"), asff("kld-6", BASE_TIME))
        second = self.hub.get_findings(NextToken=first["NextToken"], **query)
        self.assertEqual([f["Id"] for f in second["Findings"]], ["kld-3", "kld-4"])
        third = self.hub.get_findings(NextToken=second["NextToken"], **query)
        self.assertEqual([f["Id"] for f in third["Findings"]], ["kld-5", "kld-6"])
        self.assertNotIn("NextToken", third)
        # A token belongs to its query.
        self.assertClientError(
            "InvalidInputException", self.hub.get_findings, NextToken=first["NextToken"], Filters={"Id": eq("kld-1")}
        )
        self.assertClientError("InvalidInputException", self.hub.get_findings, NextToken="not-a-token")
        self.assertEqual(len(self.hub.get_findings(MaxResults=100)["Findings"]), 7)

    def test_refused_filters_and_parameters(self) -> None:
        refused = {
            "CONTAINS with NOT_CONTAINS": {"Title": eq("a", comparison="CONTAINS") + eq("b", comparison="NOT_CONTAINS")},
            "CONTAINS with EQUALS": {"Title": eq("a", comparison="CONTAINS") + eq("b")},
            "EQUALS with NOT_EQUALS": {"Id": eq("a") + eq("b", comparison="NOT_EQUALS")},
            "EQUALS with PREFIX_NOT_EQUALS": {"Id": eq("a") + eq("b", comparison="PREFIX_NOT_EQUALS")},
            "CONTAINS_WORD (GetFindingsV2 only)": {"Title": eq("a", comparison="CONTAINS_WORD")},
            "21 values": {"Id": eq(*(f"id-{n}" for n in range(21)))},
            "11 attributes": {name: eq("x") for name in emulator.FINDING_STRING_FIELDS},
            "a field not modelled": {"CreatedAt": [{"Start": "2026-01-01T00:00:00Z", "End": "2027-01-01T00:00:00Z"}]},
            "an empty value": {"Id": [{"Value": "", "Comparison": "EQUALS"}]},
        }
        self.assertEqual(len(emulator.FINDING_STRING_FIELDS), 11)
        for what, filters in refused.items():
            with self.subTest(what):
                self.assertClientError("InvalidInputException", self.raw_hub.get_findings, Filters=filters)
        # Allowed: 20 values, PREFIX with NOT_EQUALS, 10 attributes.
        self.hub.get_findings(Filters={"Id": eq(*(f"id-{n}" for n in range(20)))})
        self.hub.get_findings(Filters={"Id": eq("a", comparison="PREFIX") + eq("ab", comparison="NOT_EQUALS")})
        self.hub.get_findings(Filters={name: eq("x") for name in list(emulator.FINDING_STRING_FIELDS)[:10]})
        for bad in (0, 101):
            self.assertClientError("InvalidInputException", self.raw_hub.get_findings, MaxResults=bad)
        self.assertClientError(
            "InvalidInputException", self.hub.get_findings, SortCriteria=[{"Field": "UpdatedAt", "SortOrder": "desc"}]
        )


class AutoScalingTests(EmulatorTestCase):
    SLR = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"

    def test_groups_name_their_launch_template_or_configuration_and_service_linked_role(self) -> None:
        # https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_AutoScalingGroup.html
        ec2, asg = self.client("ec2"), self.client("autoscaling")
        key = self.client("kms").create_key()["KeyMetadata"]["Arn"]
        template = ec2.create_launch_template(
            LaunchTemplateName="web",
            LaunchTemplateData={
                "ImageId": "ami-12c6146b",
                "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "Encrypted": True, "KmsKeyId": key}}],
            },
        )["LaunchTemplate"]
        [version] = ec2.describe_launch_template_versions(
            LaunchTemplateId=template["LaunchTemplateId"], Versions=["$Default"]
        )["LaunchTemplateVersions"]
        self.assertEqual(version["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]["KmsKeyId"], key)
        asg.create_auto_scaling_group(
            AutoScalingGroupName="from-template", MinSize=0, MaxSize=1, AvailabilityZones=["us-east-1a"],
            LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"], "Version": "$Latest"},
        )
        # A launch configuration names no key: "you cannot specify a KMS key ID when using a
        # launch configuration" (API reference, Ebs.Encrypted); the key is the EBS default or
        # the snapshot's.
        asg.create_launch_configuration(
            LaunchConfigurationName="legacy", ImageId="ami-12c6146b", InstanceType="t3.micro",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "Encrypted": True}}],
        )
        custom = self.SLR + "_web"
        asg.create_auto_scaling_group(
            AutoScalingGroupName="from-configuration", MinSize=0, MaxSize=1, AvailabilityZones=["us-east-1a"],
            LaunchConfigurationName="legacy", ServiceLinkedRoleARN=custom,
        )
        groups = {g["AutoScalingGroupName"]: g for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]}
        by_template, by_configuration = groups["from-template"], groups["from-configuration"]
        self.assertEqual(
            by_template["LaunchTemplate"],
            {"LaunchTemplateId": template["LaunchTemplateId"], "LaunchTemplateName": "web", "Version": "$Latest"},
        )
        self.assertNotIn("LaunchConfigurationName", by_template)
        self.assertEqual(by_template["ServiceLinkedRoleARN"], self.SLR)
        self.assertEqual(by_configuration["LaunchConfigurationName"], "legacy")
        self.assertNotIn("LaunchTemplate", by_configuration)
        self.assertEqual(by_configuration["ServiceLinkedRoleARN"], custom)
        [config] = asg.describe_launch_configurations(LaunchConfigurationNames=["legacy"])["LaunchConfigurations"]
        [mapping] = config["BlockDeviceMappings"]
        self.assertEqual((mapping["DeviceName"], mapping["Ebs"]["Encrypted"]), ("/dev/xvda", True))
        self.assertNotIn("KmsKeyId", mapping["Ebs"])
        # UpdateAutoScalingGroup changes the role; a group in another region or account is apart.
        asg.update_auto_scaling_group(AutoScalingGroupName="from-template", ServiceLinkedRoleARN=custom)
        [updated] = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["from-template"])["AutoScalingGroups"]
        self.assertEqual(updated["ServiceLinkedRoleARN"], custom)
        self.assertEqual(self.client("autoscaling", "eu-west-1").describe_auto_scaling_groups()["AutoScalingGroups"], [])
        other = self.client("autoscaling", account=OTHER_ACCOUNT)
        other.create_launch_configuration(LaunchConfigurationName="lc", ImageId="ami-12c6146b", InstanceType="t3.micro")
        other.create_auto_scaling_group(
            AutoScalingGroupName="theirs", MinSize=0, MaxSize=1, AvailabilityZones=["us-east-1a"], LaunchConfigurationName="lc"
        )
        [theirs] = other.describe_auto_scaling_groups()["AutoScalingGroups"]
        self.assertEqual(theirs["ServiceLinkedRoleARN"], self.SLR.replace(ACCOUNT, OTHER_ACCOUNT))

    def test_mixed_instances_policy_names_its_launch_template(self) -> None:
        ec2, asg = self.client("ec2"), self.client("autoscaling")
        template = ec2.create_launch_template(LaunchTemplateName="mixed", LaunchTemplateData={"ImageId": "ami-12c6146b"})
        asg.create_auto_scaling_group(
            AutoScalingGroupName="mixed", MinSize=0, MaxSize=1, AvailabilityZones=["us-east-1a"],
            MixedInstancesPolicy={"LaunchTemplate": {
                "LaunchTemplateSpecification": {"LaunchTemplateName": "mixed", "Version": "$Default"},
                "Overrides": [{"InstanceType": "t3.micro"}],
            }},
        )
        [group] = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["mixed"])["AutoScalingGroups"]
        spec = group["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
        self.assertEqual(spec["LaunchTemplateId"], template["LaunchTemplate"]["LaunchTemplateId"])
        self.assertEqual(spec["Version"], "$Default")
        self.assertNotIn("LaunchTemplate", group)


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
