"""IAM: the policy evaluation behind SimulatePrincipalPolicy (identity policies, permissions
boundaries, SCPs) and permissions boundaries for users.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from moto.core.responses import ActionResult, EmptyResult
from moto.core.serialize import never_return, return_if_not_empty
from moto.iam.exceptions import InvalidInput, MalformedPolicyDocument, NoSuchEntity, NotFoundException
from moto.iam.models import IAMBackend, ManagedPolicy, User
from moto.iam.responses import IamResponse
from moto.organizations.models import FakeRoot, organizations_backends

from .common import as_list, parse_timestamp


# --------------------------------------------------------------------------------------
# IAM: policy evaluation for SimulatePrincipalPolicy
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def wildcard_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM wildcards: ``*`` any run of characters, ``?`` exactly one; nothing else special."""
    translated = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(translated, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def wildcard_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return wildcard_regex(pattern, ignore_case).fullmatch(value) is not None


def arn_match(pattern: str, arn: str) -> bool:
    """ARN matching as IAM does it: each of the six ARN parts is matched separately."""
    if pattern == "*":
        return True
    pattern_parts, arn_parts = pattern.split(":", 5), arn.split(":", 5)
    if len(pattern_parts) != 6 or len(arn_parts) != 6:
        return wildcard_match(pattern, arn)
    return all(wildcard_match(p, a) for p, a in zip(pattern_parts, arn_parts, strict=True))


def number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def date_number(value: str) -> float | None:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def compare_with(
    parse: Callable[[str], float | None], test: Callable[[float, float], bool]
) -> Callable[[str, str], bool]:
    """A comparator that parses both sides and applies ``test``; unparseable never matches."""

    def compare(context_value: str, policy_value: str) -> bool:
        left, right = parse(context_value), parse(policy_value)
        return left is not None and right is not None and test(left, right)

    return compare


def ip_in_network(context_value: str, policy_value: str) -> bool:
    try:
        return ipaddress.ip_address(context_value) in ipaddress.ip_network(policy_value, strict=False)
    except ValueError:
        return False


_EQ, _LT, _LE = (lambda a, b: a == b), (lambda a, b: a < b), (lambda a, b: a <= b)
_GT, _GE = (lambda a, b: a > b), (lambda a, b: a >= b)

# Condition operator (lower case, without IfExists/ForAnyValue/ForAllValues) ->
# (comparator(context value, policy value), negated). Negated operators are the
# negation of their positive comparator over all policy values.
CONDITION_OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "stringequals": (lambda c, p: c == p, False),
    "stringnotequals": (lambda c, p: c == p, True),
    "stringequalsignorecase": (lambda c, p: c.casefold() == p.casefold(), False),
    "stringnotequalsignorecase": (lambda c, p: c.casefold() == p.casefold(), True),
    "stringlike": (lambda c, p: wildcard_match(p, c), False),
    "stringnotlike": (lambda c, p: wildcard_match(p, c), True),
    "arnequals": (lambda c, p: arn_match(p, c), False),
    "arnlike": (lambda c, p: arn_match(p, c), False),
    "arnnotequals": (lambda c, p: arn_match(p, c), True),
    "arnnotlike": (lambda c, p: arn_match(p, c), True),
    "numericequals": (compare_with(number, _EQ), False),
    "numericnotequals": (compare_with(number, _EQ), True),
    "numericlessthan": (compare_with(number, _LT), False),
    "numericlessthanequals": (compare_with(number, _LE), False),
    "numericgreaterthan": (compare_with(number, _GT), False),
    "numericgreaterthanequals": (compare_with(number, _GE), False),
    "dateequals": (compare_with(date_number, _EQ), False),
    "datenotequals": (compare_with(date_number, _EQ), True),
    "datelessthan": (compare_with(date_number, _LT), False),
    "datelessthanequals": (compare_with(date_number, _LE), False),
    "dategreaterthan": (compare_with(date_number, _GT), False),
    "dategreaterthanequals": (compare_with(date_number, _GE), False),
    "bool": (lambda c, p: c.lower() == p.lower(), False),
    "binaryequals": (lambda c, p: c == p, False),
    "ipaddress": (ip_in_network, False),
    "notipaddress": (ip_in_network, True),
}


def policy_value_text(value: Any) -> str:
    """Condition values as strings; JSON true/false become "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class ConditionOperator:
    """A parsed condition operator such as ``ForAnyValue:StringLikeIfExists``."""

    qualifier: str | None  # "foranyvalue", "forallvalues" or None
    base: str  # lower case, e.g. "stringlike" or "null"
    if_exists: bool

    @classmethod
    def parse(cls, name: str) -> ConditionOperator:
        qualifier, _, base = name.rpartition(":")
        base = base.lower()
        if_exists = base.endswith("ifexists") and base != "ifexists"
        if if_exists:
            base = base[: -len("ifexists")]
        return cls(qualifier.lower() or None, base, if_exists)


def evaluate_null(context_values: list[str] | None, policy_values: list[str]) -> bool:
    """``Null``: "true" matches an absent key, "false" a present one."""
    present = context_values is not None
    return any((value.lower() == "false") == present for value in policy_values)


def evaluate_condition(
    operator: ConditionOperator, context_values: list[str] | None, policy_values: list[str]
) -> bool:
    """One operator/key pair. ``context_values`` is None when the key is absent.

    Absent key: IfExists and ForAllValues match, ForAnyValue does not, plain negated
    operators match and plain positive ones do not. Present key: positive operators match
    when any context value matches any policy value; negated ones when none does; the set
    qualifiers apply that test per context value (any / all).
    """
    if operator.base == "null":
        return evaluate_null(context_values, policy_values)
    if operator.base not in CONDITION_OPERATORS:
        return False
    compare, negated = CONDITION_OPERATORS[operator.base]
    if context_values is None:
        if operator.if_exists or operator.qualifier == "forallvalues":
            return True
        return negated and operator.qualifier is None

    def value_passes(value: str) -> bool:
        hit = any(compare(value, p) for p in policy_values)
        return not hit if negated else hit

    if operator.qualifier == "forallvalues":
        return all(value_passes(v) for v in context_values)
    if operator.qualifier == "foranyvalue":
        return any(value_passes(v) for v in context_values)
    hit = any(any(compare(v, p) for p in policy_values) for v in context_values)
    return not hit if negated else hit


def evaluate_conditions(block: Any, context: dict[str, list[str]]) -> tuple[bool, set[str]]:
    """AND over operators and keys. Returns (all matched, condition keys absent from context)."""
    if block is None:
        return True, set()
    if not isinstance(block, dict):
        return False, set()  # a malformed Condition never matches
    matched, missing = True, set()
    for operator_name, tests in block.items():
        operator = ConditionOperator.parse(operator_name)
        if not isinstance(tests, dict):
            matched = False
            continue
        for key, values in tests.items():
            context_values = context.get(key.lower())
            if context_values is None and operator.base != "null":
                missing.add(key)
            policy_values = [policy_value_text(v) for v in as_list(values)]
            if not evaluate_condition(operator, context_values, policy_values):
                matched = False
    return matched, missing


def action_matches(statement: dict[str, Any], action: str) -> bool:
    """``Action``/``NotAction`` with wildcards, case-insensitive."""
    if "Action" in statement:
        return any(wildcard_match(str(p), action, ignore_case=True) for p in as_list(statement["Action"]))
    if "NotAction" in statement:
        return not any(
            wildcard_match(str(p), action, ignore_case=True) for p in as_list(statement["NotAction"])
        )
    return False


def resource_matches(statement: dict[str, Any], resource: str) -> bool:
    """``Resource``/``NotResource`` with wildcards, case-sensitive; neither means any."""
    if "Resource" in statement:
        return any(arn_match(str(p), resource) for p in as_list(statement["Resource"]))
    if "NotResource" in statement:
        return not any(arn_match(str(p), resource) for p in as_list(statement["NotResource"]))
    return True


@dataclass(frozen=True)
class PolicySource:
    """A policy document taking part in a simulation, with the ids AWS reports for it."""

    policy_id: str
    policy_type: str | None  # PolicySourceType: user, group, role, aws-managed, user-managed
    document: dict[str, Any]

    def statements(self) -> list[dict[str, Any]]:
        return [s for s in as_list(self.document.get("Statement")) if isinstance(s, dict)]

    def reference(self) -> dict[str, str]:
        """The ``MatchedStatements`` member for a statement of this policy."""
        ref = {"SourcePolicyId": self.policy_id}
        if self.policy_type:
            ref["SourcePolicyType"] = self.policy_type
        return ref


@dataclass
class Evaluation:
    """Outcome of evaluating a set of policies for one action and resource."""

    denies: list[dict[str, str]] = field(default_factory=list)
    allows: list[dict[str, str]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)

    @property
    def decision(self) -> str:
        if self.denies:
            return "explicitDeny"
        return "allowed" if self.allows else "implicitDeny"


def add_reference(references: list[dict[str, str]], reference: dict[str, str]) -> None:
    if reference not in references:
        references.append(reference)


def evaluate_policies(
    sources: Iterable[PolicySource], action: str, resource: str, context: dict[str, list[str]]
) -> Evaluation:
    """Deny beats Allow; no matching Allow is an implicit deny."""
    evaluation = Evaluation()
    for source in sources:
        for statement in source.statements():
            if not (action_matches(statement, action) and resource_matches(statement, resource)):
                continue
            matched, missing = evaluate_conditions(statement.get("Condition"), context)
            evaluation.missing |= missing
            if not matched:
                continue
            effect = str(statement.get("Effect", "")).lower()
            if effect == "deny":
                add_reference(evaluation.denies, source.reference())
            elif effect == "allow":
                add_reference(evaluation.allows, source.reference())
    return evaluation


def parse_policy_document(document: Any, policy_id: str) -> dict[str, Any]:
    """A policy document as a dict; stored documents may be JSON or URL-encoded JSON."""
    if isinstance(document, dict):
        return document
    text = str(document).strip()
    for candidate in (text, unquote(text)):
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return parsed
    raise MalformedPolicyDocument(f"The policy document {policy_id} is not valid JSON.")


def managed_policy_source(policy: ManagedPolicy) -> PolicySource:
    """The default version of a managed policy."""
    version = next(v for v in policy.versions if v.is_default)
    policy_type = "aws-managed" if ":iam::aws:policy/" in policy.arn else "user-managed"
    return PolicySource(policy.name, policy_type, parse_policy_document(version.document, policy.name))


def entity_policy_sources(entity: Any, inline_type: str) -> list[PolicySource]:
    """Inline and attached managed policies of a user, group or role."""
    sources = [
        PolicySource(name, inline_type, parse_policy_document(doc, name))
        for name, doc in entity.policies.items()
    ]
    sources += [managed_policy_source(p) for p in entity.managed_policies.values()]
    return sources


IAM_BOUNDARY_DOCS = "https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html"
# "How AWS enforcement code logic evaluates requests to allow or deny access":
EVALUATION_DOCS = (
    "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_policy-eval-denyallow.html"
)


@dataclass
class Principal:
    """A simulated principal's policies: identity policies, its boundary, and where it lives."""

    identity: list[PolicySource]
    boundary: list[PolicySource]
    account_id: str
    service_linked: bool = False


def boundary_sources(backend: IAMBackend, boundary_arn: str | None) -> list[PolicySource]:
    """The managed policy set as permissions boundary (user or role), if any."""
    if not boundary_arn:
        return []
    return [managed_policy_source(backend.get_policy(boundary_arn))]


def principal_policy_sources(backend: IAMBackend, arn: str) -> Principal:
    """The policies of the user, role or group ``arn``.

    A user's or role's permissions boundary is evaluated with its identity policies: "An
    entity's permissions boundary allows it to perform only the actions that are allowed by
    both its identity-based policies and its permissions boundaries" (IAM_BOUNDARY_DOCS).
    moto stores role boundaries; user boundaries are stored by this module
    (``put_user_permissions_boundary``). moto's lookups raise NoSuchEntity for unknown names;
    that error is what AWS returns.
    """
    match = re.fullmatch(r"arn:[^:]+:iam::(\d{12}):(user|role|group)(/(?:.*/)?)([^/]+)", arn or "")
    if not match or match.group(1) != backend.account_id:
        raise NotFoundException(f"The entity {arn} does not exist.")
    account_id, kind, path, name = match.groups()
    if kind == "user":
        user = backend.get_user(name)
        sources = entity_policy_sources(user, "user")
        for group in backend.get_groups_for_user(name):
            sources += entity_policy_sources(group, "group")
        return Principal(sources, boundary_sources(backend, user.permissions_boundary_arn), account_id)
    if kind == "role":
        role = backend.get_role(name)
        return Principal(
            entity_policy_sources(role, "role"),
            boundary_sources(backend, role.permissions_boundary_arn),
            account_id,
            service_linked=(role.path or "").startswith("/aws-service-role/"),
        )
    return Principal(entity_policy_sources(backend.get_group(name), "group"), [], account_id)


def input_policy_sources(documents: list[str], parameter: str) -> list[PolicySource]:
    """Policies passed as strings; AWS names them ``<Parameter>.<N>``."""
    return [
        PolicySource(f"{parameter}.{i}", None, parse_policy_document(doc, f"{parameter}.{i}"))
        for i, doc in enumerate(documents, start=1)
    ]


def simulation_context(entries: list[dict[str, Any]]) -> dict[str, list[str]]:
    """ContextEntries as {lower-case key: values}; an entry without values counts as absent."""
    context = {}
    for entry in entries:
        values = [policy_value_text(v) for v in as_list(entry.get("ContextKeyValues"))]
        if entry.get("ContextKeyName") and values:
            context[entry["ContextKeyName"].lower()] = values
    return context


@dataclass
class ScpEvaluation:
    """SCPs for one action and resource: a Deny anywhere, and whether every level allows."""

    denied: bool
    allowed_at_every_level: bool

    @property
    def allowed(self) -> bool:
        return self.allowed_at_every_level and not self.denied


def evaluate_scps(
    levels: list[list[PolicySource]], action: str, resource: str, context: dict[str, list[str]]
) -> ScpEvaluation:
    """SCP evaluation as AWS Organizations documents it.

    https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps_evaluation.html
    ("How SCPs work with Allow"): "For a permission to be allowed for a specific account,
    there must be an explicit Allow statement at every level from the root through each OU
    in the direct path to the account (including the target account itself)"; ("How SCPs
    work with Deny"): a Deny at any of those levels denies. Archived source of the same
    rules, awsdocs/aws-organizations-docs doc_source/orgs_manage_policies_inheritance_auth.md:
    "you must allow that API at every level between the member account and the root" and
    "An explicit Deny statement overrides any Allow that other SCPs might grant". Condition
    keys absent from the context follow ``evaluate_condition``; they are never reported as
    MissingContextValues ("This field doesn't include context keys referenced by service
    control policies (SCPs)", API reference, EvaluationResult).
    """
    denied, every_level = False, True
    for level in levels:
        evaluation = evaluate_policies(level, action, resource, context)
        denied = denied or bool(evaluation.denies)
        every_level = every_level and bool(evaluation.allows)
    return ScpEvaluation(denied, every_level)


@dataclass
class OrganizationContext:
    """How Organizations applies to a simulated principal's account.

    ``levels`` is None when no SCP applies (management account, SCPs not enabled, or a
    service-linked role); otherwise the SCPs attached to the root, each OU on the path and
    the account, in that order.
    """

    levels: list[list[PolicySource]] | None


def scp_sources(target: Any) -> list[PolicySource]:
    """The SERVICE_CONTROL_POLICY policies attached to a root, OU or account."""
    return [
        PolicySource(policy.name, None, parse_policy_document(policy.content, policy.name))
        for policy in target.attached_policies
        if policy.type == "SERVICE_CONTROL_POLICY"
    ]


def organization_context(account_id: str, partition: str, service_linked: bool) -> OrganizationContext | None:
    """None when the account is in no organization of moto's organizations backend.

    * Management account: "SCPs don't affect users or roles in the management account.
      They affect only the member accounts in your organization"
      (https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html;
      archived source doc_source/orgs_manage_policies_scps.md, "Important").
    * Service-linked roles: "SCPs do not affect any service-linked role" (same page,
      "Effects on permissions").
    * SCPs apply only while the SERVICE_CONTROL_POLICY type is enabled in the root: "If you
      disable the SCP policy type on the organization root, all SCPs are automatically
      detached from all entities in the organization root" (orgs_manage_policies_inheritance_auth.md).
      moto attaches FullAWSAccess at CreateOrganization but leaves the type disabled until
      EnablePolicyType, as AWS does for an organization created through the API.
    """
    own = organizations_backends[account_id][partition]
    if own.org is not None:
        return OrganizationContext(None)
    membership = organizations_backends.master_accounts.get(account_id)
    if membership is None:
        return None
    backend = organizations_backends[membership[0]][membership[1]]
    if backend.org is None:
        return None
    account = next((a for a in backend.accounts if a.id == account_id), None)
    root = next((ou for ou in backend.ou if isinstance(ou, FakeRoot)), None)
    if account is None or root is None or service_linked or not scp_enabled(root):
        return OrganizationContext(None)
    levels = [scp_sources(account)]
    parent_id = account.parent_id
    while parent_id:
        parent = next((ou for ou in backend.ou if ou.id == parent_id), None)
        if parent is None:
            break
        levels.insert(0, scp_sources(parent))
        parent_id = None if isinstance(parent, FakeRoot) else parent.parent_id
    return OrganizationContext(levels)


def scp_enabled(root: FakeRoot) -> bool:
    return any(
        t.get("Type") == "SERVICE_CONTROL_POLICY" and t.get("Status") == "ENABLED" for t in root.policy_types
    )


def evaluation_result(
    action: str,
    resource: str,
    identity: list[PolicySource],
    boundary: list[PolicySource],
    context: dict[str, list[str]],
    resource_given: bool,
    organization: OrganizationContext | None = None,
) -> dict[str, Any]:
    """One EvaluationResult member.

    EVALUATION_DOCS: "Deny evaluation [...] These include AWS Organizations SCPs and RCPs,
    resource-based policies, identity-based policies, IAM permissions boundaries, and
    session policies. [...] If the code finds even one explicit deny that applies, the code
    returns a final decision of Deny" (explicitDeny); an SCP without an applicable Allow and
    a boundary without an applicable Allow each end in a Deny that is not explicit
    (implicitDeny), as does an identity policy without an Allow. The decision details:
    ``PermissionsBoundaryDecisionDetail.AllowedByPermissionsBoundary`` is present when the
    principal has a boundary and is false when "either the requested action is not allowed
    (implicitly denied) or [...] explicitly denied by the permissions boundary";
    ``OrganizationsDecisionDetail.AllowedByOrganizations`` "Only applies if the simulated
    user's account is part of an organization" (API reference, EvaluationResult; the docs
    are silent on its value where SCPs do not apply, management account or service-linked
    role: the emulator says true, since nothing in Organizations blocks the call).
    ResourceSpecificResult has PermissionsBoundaryDecisionDetail but no Organizations
    detail (botocore model). MatchedStatements never lists SCP statements ("This field
    doesn't include statements from service control policies (SCPs)", API reference), so an
    SCP-only Deny has none.
    """
    policies = evaluate_policies(identity, action, resource, context)
    bounds = evaluate_policies(boundary, action, resource, context) if boundary else None
    scps = (
        evaluate_scps(organization.levels, action, resource, context)
        if organization is not None and organization.levels is not None
        else None
    )
    denies = policies.denies + (bounds.denies if bounds else [])
    if denies or (scps is not None and scps.denied):
        decision, statements = "explicitDeny", denies
    elif (
        policies.allows
        and (bounds is None or bounds.allows)
        and (scps is None or scps.allowed_at_every_level)
    ):
        decision, statements = "allowed", policies.allows
    else:
        decision, statements = "implicitDeny", []
    missing = sorted(policies.missing | (bounds.missing if bounds else set()))
    result: dict[str, Any] = {
        "EvalActionName": action,
        "EvalResourceName": resource,
        "EvalDecision": decision,
        "MatchedStatements": statements,
        "MissingContextValues": missing,
    }
    boundary_detail = None
    if bounds is not None:
        boundary_detail = {"AllowedByPermissionsBoundary": bounds.decision == "allowed"}
        result["PermissionsBoundaryDecisionDetail"] = boundary_detail
    if organization is not None:
        result["OrganizationsDecisionDetail"] = {"AllowedByOrganizations": scps is None or scps.allowed}
    if resource_given:
        specific: dict[str, Any] = {
            "EvalResourceName": resource,
            "EvalResourceDecision": decision,
            "MatchedStatements": statements,
            "MissingContextValues": missing,
        }
        if boundary_detail is not None:
            specific["PermissionsBoundaryDecisionDetail"] = dict(boundary_detail)
        result["ResourceSpecificResults"] = [specific]
    return result


def simulate_principal_policy(self: IamResponse) -> ActionResult:
    """IamResponse.simulate_principal_policy (query protocol; moto serializes the result)."""
    principal = principal_policy_sources(self.backend, self._get_param("PolicySourceArn"))
    identity = principal.identity + input_policy_sources(self._get_param("PolicyInputList", []), "PolicyInputList")
    boundary = principal.boundary
    boundary_inputs = self._get_param("PermissionsBoundaryPolicyInputList", [])
    if boundary_inputs:
        boundary = input_policy_sources(boundary_inputs, "PermissionsBoundaryPolicyInputList")
    organization = organization_context(principal.account_id, self.partition, principal.service_linked)
    context = simulation_context(self._get_param("ContextEntries", []))
    resources = self._get_param("ResourceArns", [])
    results = [
        evaluation_result(action, resource, identity, boundary, context, bool(resources), organization)
        for action in self._get_param("ActionNames", [])
        for resource in resources or ["*"]
    ]
    return ActionResult({"EvaluationResults": results, "IsTruncated": False})


def patch_simulation() -> None:
    """Install SimulatePrincipalPolicy (idempotent)."""
    IamResponse.simulate_principal_policy = simulate_principal_policy


# --------------------------------------------------------------------------------------
# IAM: permissions boundaries for users
# --------------------------------------------------------------------------------------

_original_create_user = IamResponse.create_user


def user_permissions_boundary(self: User) -> dict[str, str] | None:
    """User.permissions_boundary, serialized as GetUser's ``User.PermissionsBoundary``.

    AttachedPermissionsBoundary (API reference): ``PermissionsBoundaryType`` "can only have
    a value of Policy" in the prose, but the enum the API uses is ``PermissionsBoundaryPolicy``
    (botocore model, PermissionsBoundaryAttachmentType; moto's Role uses the same value),
    and ``PermissionsBoundaryArn``.
    """
    arn = getattr(self, "permissions_boundary_arn", None)
    if not arn:
        return None
    return {"PermissionsBoundaryType": "PermissionsBoundaryPolicy", "PermissionsBoundaryArn": arn}


def set_user_boundary(backend: IAMBackend, user_name: str, policy_arn: str) -> None:
    """Validate and store a user's boundary (PutUserPermissionsBoundary, CreateUser).

    API reference, PutUserPermissionsBoundary, Errors: InvalidInput ("The request was
    rejected because an invalid or out-of-range value was supplied for an input
    parameter") and NoSuchEntity ("The request was rejected because it referenced a resource
    entity that does not exist"): a malformed policy ARN is InvalidInput, an unknown user
    or policy NoSuchEntity.
    """
    user = backend.get_user(user_name)
    if not backend.policy_arn_regex.match(policy_arn or ""):
        raise InvalidInput(f"ARN {policy_arn} is not valid.")
    if policy_arn not in backend.managed_policies:
        raise NoSuchEntity(f"Policy {policy_arn} does not exist or is not attachable.")
    user.permissions_boundary_arn = policy_arn


def create_user(self: IamResponse) -> ActionResult:
    """CreateUser with its ``PermissionsBoundary`` parameter (moto ignores it): "The ARN of
    the managed policy that is used to set the permissions boundary for the user" (API
    reference, CreateUser). The user is not created when the boundary is invalid."""
    boundary = self._get_param("PermissionsBoundary")
    if boundary and not self.backend.policy_arn_regex.match(boundary):
        raise InvalidInput(f"ARN {boundary} is not valid.")
    if boundary and boundary not in self.backend.managed_policies:
        raise NoSuchEntity(f"Policy {boundary} does not exist or is not attachable.")
    result = _original_create_user(self)
    if boundary:
        set_user_boundary(self.backend, self._get_param("UserName"), boundary)
    return result


def put_user_permissions_boundary(self: IamResponse) -> EmptyResult:
    """PutUserPermissionsBoundary (moto lacks it): "Adds or updates the policy that is
    specified as the IAM user's permissions boundary" (API reference)."""
    set_user_boundary(self.backend, self._get_param("UserName"), self._get_param("PermissionsBoundary"))
    return EmptyResult()


def delete_user_permissions_boundary(self: IamResponse) -> EmptyResult:
    """DeleteUserPermissionsBoundary (moto lacks it): "Deletes the permissions boundary for
    the specified IAM user" (API reference); NoSuchEntity for an unknown user."""
    self.backend.get_user(self._get_param("UserName")).permissions_boundary_arn = None
    return EmptyResult()


def patch_iam_users() -> None:
    """Install the user-boundary patches (idempotent).

    GetUser and CreateUser show ``PermissionsBoundary`` only when set; ListUsers never does:
    "This operation does not return the following attributes, even though they are an
    attribute of the returned object: PermissionsBoundary, Tags" (API reference, ListUsers).
    """
    User.permissions_boundary_arn = None
    User.permissions_boundary = property(user_permissions_boundary)
    IamResponse.create_user = create_user
    IamResponse.put_user_permissions_boundary = put_user_permissions_boundary
    IamResponse.delete_user_permissions_boundary = delete_user_permissions_boundary
    IamResponse.RESPONSE_KEY_PATH_TO_TRANSFORMER.update(
        {
            "CreateUserResponse.User.PermissionsBoundary": return_if_not_empty,
            "GetUserResponse.User.PermissionsBoundary": return_if_not_empty,
            "ListUsersResponse.Users.User.PermissionsBoundary": never_return,
        }
    )
