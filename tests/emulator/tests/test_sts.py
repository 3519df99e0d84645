"""STS AssumeRole as AWS authorizes it, and ``POST /_kld/iam/role`` (``sts``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config

from emulator.common import as_list
from .base import (
    ACCOUNT,
    EmulatorTestCase,
    MEMBER_ACCOUNT,
    NO_RETRIES,
    OTHER_ACCOUNT,
    OUTSIDER,
    allow,
    policy,
)


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
        self.assertEqual(sorted(as_list(principals)),
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
