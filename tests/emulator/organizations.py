"""Organizations: invitations (InviteAccountToOrganization, AcceptHandshake) and SCP
attachments that follow the policy type.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from moto.core.utils import unix_time, utcnow
from moto.organizations import utils as org_utils
from moto.organizations.exceptions import (
    AWSOrganizationsNotInUseException,
    InvalidInputException,
    OrganizationsClientError,
)
from moto.organizations.models import FakeAccount, FakeRoot, OrganizationsBackend, organizations_backends
from moto.organizations.responses import OrganizationsResponse

from .iam import scp_enabled


# --------------------------------------------------------------------------------------
# Organizations: invitations, and SCP attachments that follow the policy type
# --------------------------------------------------------------------------------------

ORGS_API = "https://docs.aws.amazon.com/organizations/latest/APIReference"
INVITATION_DAYS = 15


@dataclass
class Handshake:
    """An INVITE handshake sent by ``management`` (an account id) to ``target``."""

    id: str
    management: str
    partition: str
    target: str
    requested: float
    state: str = "OPEN"

    def describe(self, backend: OrganizationsBackend) -> dict[str, Any]:
        """The Handshake structure (API reference, Handshake): Id, Arn, Parties, State,
        RequestedTimestamp, ExpirationTimestamp, Action, Resources."""
        org = backend.org
        org_id = org.id if org else ""
        return {
            "Id": self.id,
            "Arn": f"arn:{self.partition}:organizations::{self.management}:handshake/{org_id}/invite/{self.id}",
            "Parties": [{"Id": org_id, "Type": "ORGANIZATION"}, {"Id": self.target, "Type": "ACCOUNT"}],
            "State": self.state,
            "RequestedTimestamp": self.requested,
            "ExpirationTimestamp": self.requested + INVITATION_DAYS * 86400,
            "Action": "INVITE",
            "Resources": [
                {
                    "Type": "ORGANIZATION",
                    "Value": org_id,
                    "Resources": [
                        {"Type": "MASTER_EMAIL", "Value": org.master_account_email if org else ""},
                        {"Type": "ORGANIZATION_FEATURE_SET", "Value": org.feature_set if org else "ALL"},
                    ],
                },
                {"Type": "ACCOUNT", "Value": self.target},
            ],
        }


class HandshakeStore:
    """Handshakes by id; cleared by ``POST /_kld/reset``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handshakes: dict[str, Handshake] = {}

    def add(self, handshake: Handshake) -> None:
        with self._lock:
            self._handshakes[handshake.id] = handshake

    def get(self, handshake_id: str) -> Handshake | None:
        with self._lock:
            return self._handshakes.get(handshake_id)

    def clear(self) -> None:
        with self._lock:
            self._handshakes.clear()


HANDSHAKES = HandshakeStore()


def in_an_organization(account_id: str, partition: str) -> bool:
    return (
        organizations_backends[account_id][partition].org is not None
        or account_id in organizations_backends.master_accounts
    )


def invite_account_to_organization(self: OrganizationsResponse) -> str:
    """InviteAccountToOrganization (moto lacks it), Target of Type ACCOUNT.

    ORGS_API/API_InviteAccountToOrganization.html: "Sends an invitation to another account
    to join your organization as a member account. [...] The invitation is implemented as a
    Handshake whose details are in the response. [...] You can only call this operation
    from the management account." A caller with no organization gets
    AWSOrganizationsNotInUseException. An account already in an organization gets
    HandshakeConstraintViolationException, reason ALREADY_IN_AN_ORGANIZATION ("The handshake
    request is invalid because the invited account is already a member of an
    organization", API reference, HandshakeConstraintViolationException). "Each invitation
    must be responded to within 15 days, or it expires"
    (https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_accounts_invites.html;
    archived source doc_source/orgs_manage_accounts_invites.md); the emulator only reports
    ExpirationTimestamp, it never expires a handshake. Targets of Type EMAIL are refused with
    InvalidInputException: the emulator has no mapping from e-mail addresses to accounts.
    """
    backend = self.organizations_backend
    if backend.org is None:
        raise AWSOrganizationsNotInUseException()
    target = self._get_param("Target") or {}
    if target.get("Type") != "ACCOUNT" or not re.fullmatch(r"\d{12}", str(target.get("Id", ""))):
        raise InvalidInputException("The emulator supports Target {Type: ACCOUNT, Id: <12 digits>} only.")
    if in_an_organization(target["Id"], self.partition):
        error = OrganizationsClientError(
            "HandshakeConstraintViolationException",
            "The handshake request is invalid because the invited account is already a member of an organization.",
        )
        error.reason = "ALREADY_IN_AN_ORGANIZATION"
        raise error
    handshake = Handshake(
        id="h-" + uuid.uuid4().hex[:32],
        management=self.current_account,
        partition=self.partition,
        target=target["Id"],
        requested=unix_time(utcnow()),
    )
    HANDSHAKES.add(handshake)
    return json.dumps({"Handshake": handshake.describe(backend)})


def accept_handshake(self: OrganizationsResponse) -> str:
    """AcceptHandshake (moto lacks it) for INVITE handshakes: the invited account joins.

    ORGS_API/API_AcceptHandshake.html: "Only a member account can accept the following
    handshakes: Invitation to join (INVITE)"; the joined account has JoinedMethod INVITED
    (API reference, Account). Errors: HandshakeNotFoundException for an unknown id,
    InvalidHandshakeTransitionException when the handshake is no longer OPEN,
    AccessDeniedException when the caller is not the invited account (all listed for
    AcceptHandshake). The new member sits in the root with FullAWSAccess attached, as moto's
    CreateAccount does ("By default, an SCP named FullAWSAccess is attached to every
    organization root, OU, and account", orgs_manage_policies_inheritance_auth.md). "When an
    invited account joins your organization, you do not automatically have full
    administrator control over the account, unlike created accounts" (orgs_manage_accounts_invites.md):
    no OrganizationAccountAccessRole is made in it (moto's FakeAccount makes one in an
    unrelated random account id, never in the invited one).
    The docs are silent on the Name/Email moto should record for the account; the emulator
    uses ``invited-<id>`` and ``<id>@invited.example``.
    """
    handshake = HANDSHAKES.get(self._get_param("HandshakeId") or "")
    if handshake is None:
        raise OrganizationsClientError(
            "HandshakeNotFoundException", "We can't find a handshake with the HandshakeId that you specified."
        )
    if handshake.target != self.current_account:
        raise OrganizationsClientError(
            "AccessDeniedException", "You don't have permissions to perform the requested operation."
        )
    if handshake.state != "OPEN":
        raise OrganizationsClientError(
            "InvalidHandshakeTransitionException",
            "You can't perform the operation on the handshake in its current state.",
        )
    backend = organizations_backends[handshake.management][handshake.partition]
    if backend.org is None:
        raise AWSOrganizationsNotInUseException()
    account = FakeAccount(
        backend.org, AccountName=f"invited-{handshake.target}", Email=f"{handshake.target}@invited.example"
    )
    account.id = handshake.target
    account.joined_method = "INVITED"
    backend.accounts.append(account)
    for policy_id in (org_utils.DEFAULT_SCP_POLICY_ID, org_utils.DEFAULT_RCP_POLICY_ID):
        backend.attach_policy(PolicyId=policy_id, TargetId=account.id)
    organizations_backends.master_accounts[account.id] = (handshake.management, handshake.partition)
    handshake.state = "ACCEPTED"
    return json.dumps({"Handshake": handshake.describe(backend)})


_original_attach_policy = OrganizationsResponse.attach_policy
_original_enable_policy_type = OrganizationsResponse.enable_policy_type
_original_disable_policy_type = OrganizationsResponse.disable_policy_type


def organization_root(backend: OrganizationsBackend) -> FakeRoot | None:
    return next((ou for ou in backend.ou if isinstance(ou, FakeRoot)), None)


def attach_policy(self: OrganizationsResponse) -> str:
    """AttachPolicy refusing an SCP while the type is not enabled in the root (moto attaches
    it anyway): PolicyTypeNotEnabledException, "The specified policy type isn't currently
    enabled in this root. You can't attach policies of the specified type to entities in a
    root until you enable that type in the root" (API reference, AttachPolicy errors)."""
    backend = self.organizations_backend
    policy = backend.get_policy_by_id(self._get_param("PolicyId"))
    root = organization_root(backend)
    if policy.type == "SERVICE_CONTROL_POLICY" and root is not None and not scp_enabled(root):
        raise OrganizationsClientError(
            "PolicyTypeNotEnabledException",
            "The specified policy type isn't currently enabled in this root. You can't attach "
            "policies of the specified type to entities in a root until you enable that type in the root.",
        )
    return _original_attach_policy(self)


_original_detach_policy = OrganizationsResponse.detach_policy


def detach_policy(self: OrganizationsResponse) -> str:
    """DetachPolicy keeping at least one SCP on every root, OU and account (moto detaches
    anything): "Every root, OU, and account must have at least one SCP attached. If you want
    to replace the default FullAWSAccess policy with an SCP that limits the permissions that
    can be delegated, you must attach the replacement SCP before you can remove the default
    SCP" (API reference, DetachPolicy). The error is ConstraintViolationException, reason
    MIN_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED: "You attempted to detach a policy from an
    entity that would cause the entity to have fewer than the minimum number of policies of
    a certain type required" (API reference, ConstraintViolationException)."""
    backend = self.organizations_backend
    policy = backend.get_policy_by_id(self._get_param("PolicyId"))
    target_id = self._get_param("TargetId")
    target = next((t for t in list(backend.ou) + list(backend.accounts) if t.id == target_id), None)
    if policy.type == "SERVICE_CONTROL_POLICY" and target is not None and policy in target.attached_policies:
        remaining = [p for p in target.attached_policies if p.type == "SERVICE_CONTROL_POLICY" and p is not policy]
        if not remaining:
            error = OrganizationsClientError(
                "ConstraintViolationException",
                "You attempted to detach a policy from an entity that would cause the entity to have "
                "fewer than the minimum number of policies of a certain type required.",
            )
            error.reason = "MIN_POLICY_TYPE_ATTACHMENT_LIMIT_EXCEEDED"
            raise error
    return _original_detach_policy(self)


def reset_scp_attachments(backend: OrganizationsBackend, full_access: bool) -> None:
    """Detach every SCP; then, if ``full_access``, attach FullAWSAccess everywhere.

    "If you disable the SCP policy type on the organization root, all SCPs are
    automatically detached from all entities in the organization root. If you reenable SCPs
    on the organization root, all the original attachments are lost, and all entities are
    reset to being attached to only the default FullAWSAccess SCP"
    (orgs_manage_policies_inheritance_auth.md; live page
    https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html,
    "Effects on permissions").
    """
    targets = list(backend.ou) + list(backend.accounts)
    for target in targets:
        for policy in [p for p in target.attached_policies if p.type == "SERVICE_CONTROL_POLICY"]:
            target.attached_policies.remove(policy)
            if target in policy.attachments:
                policy.attachments.remove(target)
    if full_access:
        for target in targets:
            backend.attach_policy(PolicyId=org_utils.DEFAULT_SCP_POLICY_ID, TargetId=target.id)


def enable_policy_type(self: OrganizationsResponse) -> str:
    """EnablePolicyType; for SERVICE_CONTROL_POLICY every entity then has exactly FullAWSAccess."""
    answer = _original_enable_policy_type(self)
    if self._get_param("PolicyType") == "SERVICE_CONTROL_POLICY":
        reset_scp_attachments(self.organizations_backend, full_access=True)
    return answer


def disable_policy_type(self: OrganizationsResponse) -> str:
    """DisablePolicyType; for SERVICE_CONTROL_POLICY every SCP is detached."""
    answer = _original_disable_policy_type(self)
    if self._get_param("PolicyType") == "SERVICE_CONTROL_POLICY":
        reset_scp_attachments(self.organizations_backend, full_access=False)
    return answer


def reset_organizations() -> None:
    """What ``POST /_kld/reset`` adds for Organizations: moto's reset keeps
    ``organizations_backends.master_accounts`` (member -> management), so a member of a
    wiped organization would still look like one; clear it and the handshakes."""
    organizations_backends.master_accounts.clear()
    HANDSHAKES.clear()


def patch_organizations() -> None:
    """Install the Organizations patches (idempotent)."""
    OrganizationsResponse.invite_account_to_organization = invite_account_to_organization
    OrganizationsResponse.accept_handshake = accept_handshake
    OrganizationsResponse.attach_policy = attach_policy
    OrganizationsResponse.detach_policy = detach_policy
    OrganizationsResponse.enable_policy_type = enable_policy_type
    OrganizationsResponse.disable_policy_type = disable_policy_type
