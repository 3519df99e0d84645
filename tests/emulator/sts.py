"""STS: AssumeRole authorized as AWS authorizes it (the role exists, its trust policy admits the
caller, DurationSeconds), and roles in any account for tests (``POST /_kld/iam/role``).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.iam.exceptions import IAMException, NotFoundException
from moto.iam.models import iam_backends
from moto.organizations.models import organizations_backends
from moto.sts.models import sts_backends
from moto.sts.responses import TokenResponse
from werkzeug.exceptions import HTTPException

from .common import ControlError, as_list, new_request_id, required
from .iam import action_matches, evaluate_conditions, parse_policy_document


# --------------------------------------------------------------------------------------
# STS: AssumeRole authorized as AWS authorizes it; roles in any account for tests
# --------------------------------------------------------------------------------------

STS_ASSUME_ROLE_API = "https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html"
# "I can't assume a role" (IAM User Guide, Troubleshooting IAM roles); archived source
# awsdocs/iam-user-guide doc_source/troubleshoot_roles.md.
ROLE_TROUBLESHOOTING_DOCS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_roles.html"
# "AWS JSON policy elements: Principal"; archived source doc_source/reference_policies_elements_principal.md.
PRINCIPAL_DOCS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_principal.html"
CONDITION_KEYS_DOCS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html"
STS_CONDITION_KEYS_DOCS = "https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecuritytokenservice.html"

ROLE_ARN = re.compile(r"arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role(?P<path>/(?:[^/]+/)*)(?P<name>[^/]+)")
ACCOUNT_ID = re.compile(r"\d{12}")
# DurationSeconds: "Valid Range: Minimum value of 900. Maximum value of 43200" (STS_ASSUME_ROLE_API);
# role chaining: at most one hour (same page, DurationSeconds).
MIN_SESSION_SECONDS, MAX_SESSION_SECONDS, CHAINED_SESSION_SECONDS = 900, 43200, 3600
_role_upsert_lock = threading.Lock()


class StsError(HTTPException):
    """An STS error as AWS sends it (awsQuery): ``<ErrorResponse><Error><Type>…``, which the
    Rust SDK's parser requires (an ``<Errors>`` wrapper, as moto's RESTError writes, leaves it
    without a code)."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__()
        self.code = status
        self.request_id = new_request_id()
        self.description = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            f"<Type>Sender</Type><Code>{xml_escape(error_code)}</Code><Message>{xml_escape(message)}</Message>"
            f"</Error><RequestId>{self.request_id}</RequestId></ErrorResponse>"
        )

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [("Content-Type", "text/xml"), ("x-amzn-RequestId", self.request_id)]

    def get_body(self, *args: Any, **kwargs: Any) -> str:
        return self.description or ""


@dataclass(frozen=True)
class StsCaller:
    """Who calls AssumeRole: ``arn`` is what AWS names in its AccessDenied message (the
    session, the user, or the account's root), ``principal_arn`` is ``aws:PrincipalArn`` ("For
    IAM roles, the request context returns the ARN of the role, not the ARN of the user that
    assumed the role", CONDITION_KEYS_DOCS), ``kind`` is ``aws:PrincipalType`` (Account, User,
    AssumedRole)."""

    arn: str
    principal_arn: str
    account_id: str
    kind: str
    partition: str

    @property
    def root_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.account_id}:root"


def sts_caller(response: TokenResponse) -> StsCaller:
    """The caller of this request, from its access key as moto minted it.

    A key from an earlier AssumeRole is that session (moto keeps sessions in the role's
    account, the account moto makes the key act in); a key from IAM CreateAccessKey is that
    user. Any other key (``kld-emulator``, optionally with ``x-moto-account-id``) carries no
    identity of its own: the emulator takes it as the acting account's root user, who may
    call anything in the account, so only the trust policy decides for it.
    """
    account, partition = response.current_account, response.partition
    key = response.get_access_key()
    session = sts_backends[account][partition].get_assumed_role_from_access_key(key)
    if session is not None:
        return StsCaller(session.arn, session.role_arn, account, "AssumedRole", partition)
    user = iam_backends[account][partition].get_user_from_access_key_id(key)
    if user is not None:
        return StsCaller(user.arn, user.arn, account, "User", partition)
    root = f"arn:{partition}:iam::{account}:root"
    return StsCaller(root, root, account, "Account", partition)


def organization_id(account_id: str, partition: str) -> str | None:
    """The id of the organization ``account_id`` belongs to (management or member) in moto's
    organizations backend, or None."""
    own = organizations_backends[account_id][partition]
    if own.org is not None:
        return own.org.id
    membership = organizations_backends.master_accounts.get(account_id)
    if membership is None:
        return None
    backend = organizations_backends[membership[0]][membership[1]]
    return backend.org.id if backend.org is not None else None


def assume_role_context(
    caller: StsCaller, role_account: str, external_id: str | None, session_name: str | None
) -> dict[str, list[str]]:
    """The request context a trust policy's Condition sees (lower-case keys, as
    ``evaluate_conditions`` looks them up).

    CONDITION_KEYS_DOCS (each key's Availability): ``aws:PrincipalArn``, ``aws:PrincipalAccount``
    and ``aws:PrincipalType`` are always present; ``aws:PrincipalOrgID`` only when the principal's
    account is in an organization; ``aws:ResourceAccount`` is the account that owns the resource
    (here the role) and ``aws:ResourceOrgID`` is present only when that account is in an
    organization; ``aws:CurrentTime`` and ``aws:EpochTime`` are always present. STS_CONDITION_KEYS_DOCS:
    ``sts:ExternalId`` (the ExternalId parameter, present only when given; AssumeRole,
    "ExternalId": "If the administrator of the account to which the role belongs provided you
    with an external ID, then provide that value in the ExternalId parameter",
    STS_ASSUME_ROLE_API) and ``sts:RoleSessionName``. Any other key is absent: a positive
    operator on it fails, a negated one passes (``evaluate_condition``).
    """
    now = datetime.now(UTC)
    context = {
        "aws:principalarn": [caller.principal_arn],
        "aws:principalaccount": [caller.account_id],
        "aws:principaltype": [caller.kind],
        "aws:resourceaccount": [role_account],
        "aws:currenttime": [now.strftime("%Y-%m-%dT%H:%M:%SZ")],
        "aws:epochtime": [str(int(now.timestamp()))],
    }
    principal_org = organization_id(caller.account_id, caller.partition)
    if principal_org:
        context["aws:principalorgid"] = [principal_org]
    resource_org = organization_id(role_account, caller.partition)
    if resource_org:
        context["aws:resourceorgid"] = [resource_org]
    if external_id is not None:
        context["sts:externalid"] = [external_id]
    if session_name:
        context["sts:rolesessionname"] = [session_name]
    return context


def trust_principal_matches(principal: Any, caller: StsCaller) -> bool:
    """A trust policy's ``Principal`` (PRINCIPAL_DOCS).

    ``"*"`` or ``{"AWS": "*"}`` is everyone. An account, as its root ARN or its 12 digits ("The
    account ARN and the shortened account ID behave the same way. Both delegate permissions to
    the account. Using the account ARN in the Principal element does not limit permissions to
    only the root user of the account"), admits every principal of that account. A role ARN
    admits that role's sessions; an assumed-role session ARN that one session ("Principals must
    always name a specific session"); a user ARN that user. Service and Federated principals
    never name a caller of AssumeRole. "You cannot use a wildcard to match part of a principal
    name or ARN": values compare exactly.
    """
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    for value in as_list(principal.get("AWS")):
        text = str(value)
        if ACCOUNT_ID.fullmatch(text):
            text = f"arn:{caller.partition}:iam::{text}:root"
        if text in ("*", caller.root_arn, caller.principal_arn, caller.arn):
            return True
    return False


def trust_policy_allows(document: dict[str, Any], caller: StsCaller, context: dict[str, list[str]]) -> bool:
    """The role's trust policy alone decides (ROLE_TROUBLESHOOTING_DOCS: "If your account number
    is not listed in the Principal element of the role's trust policy, then you cannot assume
    the role. It does not matter what permissions are granted to you in access policies", and
    "Verify that you meet all the conditions that are specified in the role's trust policy").
    A matching Deny wins; without a matching Allow the answer is no (iam.EVALUATION_DOCS).
    ``NotPrincipal`` matches every caller it does not name."""
    allowed = False
    for statement in as_list(document.get("Statement")):
        if not isinstance(statement, dict):
            continue
        if "NotPrincipal" in statement:
            named = not trust_principal_matches(statement["NotPrincipal"], caller)
        else:
            named = trust_principal_matches(statement.get("Principal"), caller)
        if not named or not action_matches(statement, "sts:AssumeRole"):
            continue
        matched, _ = evaluate_conditions(statement.get("Condition"), context)
        if not matched:
            continue
        effect = str(statement.get("Effect", "")).lower()
        if effect == "deny":
            return False
        allowed = allowed or effect == "allow"
    return allowed


def assume_role_denied(caller: StsCaller, role_arn: str) -> StsError:
    """AccessDenied, HTTP 403, in the words AWS uses whether the role is missing or its trust
    policy leaves the caller out. Public records of the message and status: "api error
    AccessDenied: User: arn:aws:iam::<id>:user/<user> is not authorized to perform:
    sts:AssumeRole on resource: arn:aws:iam::<id>:role/root" with "StatusCode: 403"
    (cloud-toolkit/cloud-toolkit-aws issue 31), the same for an assumed-role caller
    (aws-cloudformation/rain issue 205); for a role that does not exist: "if the role exists or
    not you always get this error" (HackTricks-wiki/hacktricks-cloud,
    aws-iam-and-sts-unauthenticated-enum.md). The caller is named as in those records: the
    session's, the user's or the root's ARN."""
    return StsError(
        403, "AccessDenied", f"User: {caller.arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
    )


def check_session_duration(duration: int | None, role: Any, caller: StsCaller) -> None:
    """DurationSeconds (STS_ASSUME_ROLE_API): 900 to 43,200 (a value outside is a constraint
    violation, worded as moto words the session-name one), at most the role's
    MaxSessionDuration ("If you specify a value higher than this setting [...] the operation
    fails"), and at most one hour for role chaining ("if you assume a role using role chaining
    and provide a DurationSeconds parameter value greater than one hour, the operation fails").
    The messages, status 400 ValidationError, as AWS sends them: "ValidationError: The requested
    DurationSeconds exceeds the MaxSessionDuration set for this role. status code: 400"
    (kreuzwerker/awsu issue 27) and "The requested DurationSeconds exceeds the 1 hour session
    limit for roles assumed by role chaining" (AWS Knowledge Center, iam-role-chaining-limit)."""
    if duration is None:
        return
    if duration < MIN_SESSION_SECONDS or duration > MAX_SESSION_SECONDS:
        bound = (
            f"greater than or equal to {MIN_SESSION_SECONDS}"
            if duration < MIN_SESSION_SECONDS
            else f"less than or equal to {MAX_SESSION_SECONDS}"
        )
        raise StsError(
            400,
            "ValidationError",
            f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy "
            f"constraint: Member must have value {bound}",
        )
    if caller.kind == "AssumedRole" and duration > CHAINED_SESSION_SECONDS:
        raise StsError(
            400,
            "ValidationError",
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
        )
    if duration > int(role.max_session_duration or CHAINED_SESSION_SECONDS):
        raise StsError(
            400, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
        )


_original_assume_role = TokenResponse.assume_role


def assume_role(self: TokenResponse) -> ActionResult:
    """AssumeRole that answers as AWS does; moto issues credentials for any RoleArn, role or
    no role ("Note that the role does not need to exist", moto's STSBackend.assume_role).

    The role must exist in the account its ARN names (moto keeps IAM per account; the path and
    the name compare exactly: "role names are case sensitive", ROLE_TROUBLESHOOTING_DOCS) and its
    trust policy must allow the caller (``trust_policy_allows``); otherwise AccessDenied
    (``assume_role_denied``). Then DurationSeconds is checked (``check_session_duration``).
    What passes goes to moto, whose credentials act in the role's account.
    """
    role_arn = self._get_param("RoleArn") or ""
    caller = sts_caller(self)
    duration = self._get_param("DurationSeconds")
    match = ROLE_ARN.fullmatch(role_arn)
    role = None
    if match is not None:
        backend = iam_backends[match.group("account")][self.partition]
        role = next((r for r in backend.get_roles() if r.arn == role_arn), None)
    if role is None:
        raise assume_role_denied(caller, role_arn)
    context = assume_role_context(
        caller, match.group("account"), self._get_param("ExternalId"), self._get_param("RoleSessionName")
    )
    document = parse_policy_document(role.assume_role_policy_document, role.name)
    if not trust_policy_allows(document, caller, context):
        raise assume_role_denied(caller, role_arn)
    check_session_duration(int(duration) if duration is not None else None, role, caller)
    return _original_assume_role(self)


def default_trust_policy(account_id: str, partition: str = "aws") -> dict[str, Any]:
    """What ``POST /_kld/iam/role`` gives a role without ``trust_policy``: the tests' own account
    (123456789012, whose default credentials assume it) and the role's account may assume it."""
    principals = sorted({f"arn:{partition}:iam::{DEFAULT_ACCOUNT_ID}:root", f"arn:{partition}:iam::{account_id}:root"})
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": principals}, "Action": "sts:AssumeRole"}],
    }


def policy_text(document: Any, what: str) -> str:
    if isinstance(document, dict):
        return json.dumps(document)
    if isinstance(document, str):
        return document
    raise ControlError(400, f"{what} must be a JSON object or a JSON string")


def upsert_iam_role(spec: dict[str, Any]) -> dict[str, Any]:
    """``POST /_kld/iam/role``: create a role in any account, or update it (its trust policy and
    the given inline policies) when it exists. Idempotent, and safe when tests running in
    parallel make the same role at once."""
    account_id = str(spec.get("account_id", DEFAULT_ACCOUNT_ID))
    if not ACCOUNT_ID.fullmatch(account_id):
        raise ControlError(400, "account_id must be 12 digits")
    name = required(spec, "name")
    path = spec.get("path", "/")
    trust = policy_text(spec.get("trust_policy") or default_trust_policy(account_id), "trust_policy")
    policies = spec.get("policies") or {}
    if not isinstance(policies, dict):
        raise ControlError(400, "policies must be an object: {name: policy document}")
    documents = {n: policy_text(d, f"policies[{n!r}]") for n, d in policies.items()}
    backend = iam_backends[account_id]["aws"]
    with _role_upsert_lock:
        try:
            try:
                role = backend.get_role(name)
                created = False
                backend.update_assume_role_policy(name, trust)
            except NotFoundException:
                role = backend.create_role(name, trust, path, None, "", [], "3600")
                created = True
            for policy_name, document in documents.items():
                backend.put_role_policy(name, policy_name, document)
        except IAMException as error:  # moto's own validation (policy grammar, names)
            raise ControlError(400, f"{error.code}: {error.message}") from error
    return {"arn": role.arn, "account_id": account_id, "name": name, "created": created}


def patch_sts() -> None:
    """Install the AssumeRole patch (idempotent)."""
    TokenResponse.assume_role = assume_role
