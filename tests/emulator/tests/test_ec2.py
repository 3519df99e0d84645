"""Launch failures, EBS encryption, AMIs and Auto Scaling groups (``ec2``).
"""

from __future__ import annotations

from typing import Any

from .base import ACCOUNT, EmulatorTestCase, OTHER_ACCOUNT


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
