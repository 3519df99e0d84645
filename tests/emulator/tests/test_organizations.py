"""Organizations seeded with real API calls, and SCPs in simulations (``organizations``).
"""

from __future__ import annotations

from typing import Any

from .base import ACCOUNT, IamTestCase, MANAGEMENT, allow, deny, policy


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
