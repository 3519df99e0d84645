"""Keys made through ``POST /_kld/kms/key``, cross-account key ARNs, key tags (``kms``).
"""

from __future__ import annotations

from .base import EmulatorTestCase, OTHER_ACCOUNT, allow, policy


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
