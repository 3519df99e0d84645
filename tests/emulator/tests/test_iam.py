"""SimulatePrincipalPolicy, user boundaries and the condition rules (``iam``).
"""

from __future__ import annotations

import json
import unittest
import urllib.error
import urllib.request
from typing import Any

from emulator.common import parse_timestamp
from emulator.iam import evaluate_conditions, parse_policy_document
from .base import ACCOUNT, BASE_TIME, IamTestCase, OTHER_ACCOUNT, allow, deny, policy


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


class ConditionEvaluationTests(unittest.TestCase):
    """The IAM condition rules, checked directly on the evaluator (no server needed)."""

    def passes(self, condition: dict[str, Any], **context: list[str]) -> bool:
        lowered = {k.replace("__", ":").lower(): v for k, v in context.items()}
        return evaluate_conditions(condition, lowered)[0]

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
        _, missing = evaluate_conditions(
            {"StringEquals": {"kms:ViaService": "x"}, "Null": {"aws:TagKeys": "true"}}, {}
        )
        self.assertEqual(missing, {"kms:ViaService"})

    def test_policy_documents_may_be_url_encoded(self) -> None:
        document = {"Statement": [allow("kms:Decrypt")]}
        encoded = urllib.request.quote(json.dumps(document))
        self.assertEqual(parse_policy_document(encoded, "p"), document)

    def test_timestamps(self) -> None:
        expected = BASE_TIME.timestamp()
        for value in (expected, str(expected), "2026-11-28T10:00:00Z", "2026-11-28T10:00:00"):
            self.assertEqual(parse_timestamp(value), expected)
