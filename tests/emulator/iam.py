"""AWS emulator for kms-launch-doctor tests: moto in server mode plus the pieces moto lacks.

The server is moto 5.2.5's own WSGI app (the one ``moto_server`` runs) wrapped in a small
middleware, served by werkzeug on 127.0.0.1. Before the server starts, moto is patched
in-process to fill its gaps (EC2 launch failures, encrypted AMIs and the EBS default key,
CloudTrail LookupEvents, IAM SimulatePrincipalPolicy with boundaries and SCPs, user
permissions boundaries, Organizations invitations, Security Hub finding filters and update
rules, an Auto Scaling group's service-linked role, STS AssumeRole's checks) and two KMS
cross-account behaviours.
The middleware records every AWS call, injects faults and answers the ``/_kld/`` control
routes. Each behaviour cites, beside its code, the AWS documentation it follows.

Usage
-----
``python tests/emulator.py serve [--host 127.0.0.1] [--port 0] [--parent-pid PID]``
    Start the server and print exactly one line, ``KLD_EMULATOR_URL=http://127.0.0.1:<port>``,
    to stdout once it accepts connections. Runs until SIGTERM/SIGINT, or until the parent
    process (``--parent-pid``) disappears (checked every second). Port 0 picks a free port.
    Anything moto itself prints afterwards goes to stderr, never stdout.

``python tests/emulator.py run [--host 127.0.0.1] [--port 0] -- CMD ARGS...``
    Start the server in-process, run CMD with the environment below added, stop the server
    whatever happens and exit with CMD's exit code (128+N if CMD died of signal N):
    ``KLD_EMULATOR_URL`` and ``AWS_ENDPOINT_URL`` = the server URL,
    ``AWS_ACCESS_KEY_ID`` = ``AWS_SECRET_ACCESS_KEY`` = ``kld-emulator``,
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` = the one already set, else ``us-east-1``,
    ``AWS_EC2_METADATA_DISABLED=true``; ``AWS_PROFILE`` and ``AWS_SESSION_TOKEN`` are removed.

Which account a request acts in
-------------------------------
moto picks the caller's account per request (``BaseResponse.get_current_account``):
the ``MOTO_ACCOUNT_ID`` environment variable of the *server* process, else an
``x-moto-account-id`` request header, else the account owning the request's access key
id if that key was minted by moto (IAM CreateAccessKey, or STS AssumeRole on a role ARN
of another account), else ``123456789012``. So with ``AWS_ACCESS_KEY_ID=kld-emulator``
every call acts in account 123456789012. Control routes take ``account_id`` (default
123456789012) to prepare state in any account. The region is the one in the SigV4
credential scope. STS AssumeRole is authorized as in AWS (below): the role must exist in its
account (``POST /_kld/iam/role`` makes one) and trust the caller.

Control routes (JSON in, JSON out; never recorded as calls)
------------------------------------------------------------
``GET /_kld/health`` -> ``{"ok": true}``

``POST /_kld/reset`` -> ``{"ok": true}``: resets all moto state (like ``/moto-api/reset``)
and the emulator's own state: faults, recorded calls, CloudTrail events, throttle buckets;
CloudTrail throttling is switched back on.

``POST /_kld/ec2/launch-failure``
    ``{"region": "eu-west-1", "instance_id": "i-...", "state": "stopped"|"terminated",
    "code": "Client.InternalError", "message": "Client.InternalError: Client error on launch",
    "transition_reason": optional (default: message), "account_id": optional}``
    Puts an existing moto instance into the state a failed launch leaves it in: State
    (stopped=80, terminated=48), StateReason {Code, Message} and StateTransitionReason.
    "stopped" keeps every volume attached. "terminated" does what AWS does after
    termination (``release_terminated_volumes``): the instance shows no
    BlockDeviceMappings, its DeleteOnTermination=true volumes are deleted and the others
    detached ("available"); ImageId and tags (aws:ec2launchtemplate:id/version included)
    stay. -> ``{"instance_id", "state": {"name", "code"}, "state_reason": {"code",
    "message"}, "state_transition_reason"}``, plus for "terminated" ``"volumes":
    {"deleted": [vol ids], "detached": [vol ids]}``; 404 ``{"error": ...}`` for an unknown
    instance.
    DescribeInstances filters ``instance-state-name``, ``state-reason-code`` and
    ``state-reason-message`` work on such instances (the last is added by this module).

``POST /_kld/cloudtrail/events``
    ``{"region": "...", "account_id": optional, "events": [EVENT, ...]}`` stores events
    for LookupEvents in that account and region. EVENT is either a full CloudTrail record
    as AWS delivers it (``eventVersion``, ``userIdentity``, ``eventTime``
    "2026-11-28T10:00:00Z", ``eventSource``, ``eventName``, ``awsRegion``,
    ``requestParameters``, ``responseElements``, ``errorCode``, ``errorMessage``,
    ``eventID``, ``readOnly``, ``resources`` [{"ARN", "accountId", "type"}], ...), or a
    hostile-input event ``{"raw": "<any string>", "event_id", "event_name", "event_time",
    "event_source", "username", "access_key_id", "read_only", "resources":
    [{"ResourceType", "ResourceName"}]}`` (all but ``raw`` optional) whose ``raw`` string is
    returned verbatim as ``CloudTrailEvent``. -> ``{"stored": n, "event_ids": [...]}``.

``POST /_kld/cloudtrail/throttle`` ``{"enabled": bool}`` -> ``{"enabled": bool}``
    LookupEvents is limited like AWS to 2 requests/second per account and region (token
    bucket, capacity 2, refill 2/s); excess calls get HTTP 400
    ``{"__type": "ThrottlingException", "message": "Rate exceeded"}``. On by default.

``POST /_kld/kms/key``
    ``{"region", "account_id": optional, "key_id": optional, "state": optional,
    "origin": optional "AWS_KMS"|"EXTERNAL"|"AWS_CLOUDHSM"|"EXTERNAL_KEY_STORE",
    "policy": optional JSON string (or object), "description": optional}``
    Without ``key_id`` creates a symmetric key (in any account); with it modifies that key.
    ``state`` is any KMS KeyState (Enabled, Disabled, PendingDeletion, PendingImport,
    Unavailable, ...); a new EXTERNAL key defaults to PendingImport.
    -> ``{"key_id", "arn", "account_id"}``; 404 for an unknown ``key_id``.

``POST /_kld/iam/role``
    ``{"account_id": optional (default 123456789012), "name": "kld-test", "path": optional
    (default "/"), "trust_policy": optional JSON object or string, "policies": optional
    {"<policy name>": JSON object or string}}`` creates the IAM role in that account, or, when
    it exists, replaces its trust policy and puts the given inline policies (idempotent: tests
    in parallel may make the same role). Without ``trust_policy`` the role trusts the roots of
    123456789012 (the default credentials' account) and of its own account. -> ``{"arn",
    "account_id", "name", "created": bool}``; 400 for a policy moto refuses.

``GET /_kld/sqs/messages?queue_name=&region=&account_id=`` -> ``{"messages": [{"body",
"delayed_until_ms"}]}``: every message of the queue, delayed and in flight included (test
inspection only; SQS has no such call).

``GET /_kld/calls?service=&region=&action=`` -> ``{"calls": [{"service", "action", "region",
"time"}]}`` in arrival order, filtered by the given (exact) values.
``POST /_kld/calls/reset`` -> ``{"ok": true}``.
    ``service`` and ``region`` come from the SigV4 credential scope
    (``Credential=AKID/20261128/us-east-1/kms/aws4_request``), ``action`` from
    ``X-Amz-Target`` (after the last '.'), else the ``Action`` form/query parameter, else
    the REST route. ``/_kld/`` and ``/moto-api/`` requests are not recorded.

``POST /_kld/faults``
    ``{"service": "kms", "action": "GetKeyPolicy", "region": optional, "match": optional
    substring of the raw request body, "kind": "error"|"malformed"|"delay"|"http"
    (default "error"), "status": optional, "code": optional, "message": optional,
    "times": optional int (default unlimited), "delay_seconds": float, "body": optional}``
    -> ``{"id": "fault-N"}``. Omitted service/action/region/match match anything. The first
    matching fault (registration order) applies and its ``times`` is decremented; a fault
    is removed when used up. Kinds:
      * ``error``: ``status`` (default 400) with an error body in the request's protocol so
        SDKs parse ``code`` (default "InjectedFault") and ``message``: JSON protocols get
        ``{"__type", "message"}`` plus ``x-amzn-ErrorType``; EC2 gets
        ``<Response><Errors><Error>...``; other query services (iam, sts, sns) get
        ``<ErrorResponse><Error><Type>...``.
      * ``malformed``: moto handles the request (its side effects happen), then its
        response body is cut in half (or replaced by ``body``) and sent with status 200
        and the protocol's content type.
      * ``delay``: sleep ``delay_seconds``, then pass through to moto.
      * ``http``: bare ``status`` (default 500) with a small HTML body (or ``body``).
``GET /_kld/faults`` -> ``{"faults": [...]}``; ``DELETE /_kld/faults`` clears them all;
``DELETE /_kld/faults/<id>`` removes one (404 if unknown).

AWS API gaps filled inside moto
-------------------------------
* CloudTrail ``LookupEvents`` (awsJson1_1): one LookupAttribute at most (else
  InvalidLookupAttributesException), keys EventId, EventName, ReadOnly, Username,
  ResourceType, ResourceName (exact), EventSource, AccessKeyId; StartTime/EndTime
  inclusive (epoch seconds or ISO strings); MaxResults 1..50 (default 50); opaque NextToken
  that stays valid when newer events arrive; newest first. Username is
  ``userIdentity.userName``, the session name for AssumedRole, "root" for Root.
  Resources are the record's ``resources`` plus EC2 instance ids found in
  ``requestParameters``/``responseElements`` ``instancesSet.items[].instanceId``
  (AWS::EC2::Instance) plus, for KMS records, the ARN of ``requestParameters.keyId``
  (AWS::KMS::Key).
* IAM ``SimulatePrincipalPolicy`` (query protocol; moto serializes the result with the
  botocore model): evaluates the principal's stored policies (inline and attached
  managed; for a user also its groups' inline and attached; for a user or a role its
  permissions boundary) plus ``PolicyInputList`` against every ``ActionNames`` x
  ``ResourceArns`` (default ``*``) pair with ``ContextEntries``;
  ``PermissionsBoundaryPolicyInputList`` replaces the stored boundary. When the
  principal's account is a member of an organization in moto's organizations backend
  with SERVICE_CONTROL_POLICY enabled in the root, the SCPs attached to the root, each OU
  on the account's path and the account itself are evaluated too (``evaluate_scps``): an
  action passes only if every level has a matching Allow and no level a matching Deny.
  SCPs do not apply to the management account nor to service-linked roles
  (``/aws-service-role/`` path). Any matching Deny (identity policy, boundary or SCP)
  gives explicitDeny, else a matching identity Allow that the boundary (if any) and the
  SCPs (if any) also allow gives allowed, else implicitDeny. Each EvaluationResult has
  ``PermissionsBoundaryDecisionDetail {AllowedByPermissionsBoundary}`` when the principal
  has a boundary (also in its ResourceSpecificResults entry) and
  ``OrganizationsDecisionDetail {AllowedByOrganizations}`` when its account is in an
  organization (member or management; top level only, as in the API). SCP statements are
  never in MatchedStatements and their condition keys never in MissingContextValues.
  Action/NotAction match with ``*``/``?`` case-insensitively, Resource/NotResource
  case-sensitively per ARN part; Condition rules are in ``evaluate_condition``. Condition
  keys of matching statements absent from the context are listed in
  MissingContextValues. Each result has ``EvalResourceName`` = the resource, and, when
  ResourceArns is given, one ``ResourceSpecificResults`` entry. MatchedStatements carry
  ``SourcePolicyId`` = policy name (``PolicyInputList.N`` for inputs) and
  ``SourcePolicyType`` user|group|role|user-managed|aws-managed (none for inputs); no
  Start/EndPosition. An unknown principal gives NoSuchEntity (404). IsTruncated is
  always false (no pagination).
* IAM user permissions boundaries: ``CreateUser`` takes ``PermissionsBoundary``,
  ``PutUserPermissionsBoundary`` / ``DeleteUserPermissionsBoundary`` set and remove it,
  ``GetUser``/``CreateUser`` return ``User.PermissionsBoundary {PermissionsBoundaryType:
  "PermissionsBoundaryPolicy", PermissionsBoundaryArn}`` (ListUsers does not). A malformed
  ARN is InvalidInput, an unknown user or policy NoSuchEntity.
* Organizations ``InviteAccountToOrganization`` (Target Type ACCOUNT) and
  ``AcceptHandshake`` (INVITE): the invited account joins the root with JoinedMethod
  INVITED and FullAWSAccess attached. ``AttachPolicy`` of an SCP fails with
  PolicyTypeNotEnabledException until ``EnablePolicyType SERVICE_CONTROL_POLICY``;
  enabling resets every root/OU/account to FullAWSAccess only, disabling detaches every
  SCP; ``DetachPolicy`` of an entity's last SCP fails with ConstraintViolationException. moto already has CreateOrganization (FullAWSAccess attached to the root, the
  management account, and every later OU and created account), CreatePolicy,
  CreateOrganizationalUnit, MoveAccount, ListRoots, DescribeOrganization.
* EC2/EBS encryption: ``GetEbsDefaultKmsKeyId`` and ``ResetEbsDefaultKmsKeyId`` (per
  account and region; Get answers "alias/aws/ebs" until ModifyEbsDefaultKmsKeyId sets a
  customer key, then that key's ARN; Reset answers the AWS managed key's ARN). New
  volumes are encrypted when encryption by default is on (EnableEbsEncryptionByDefault,
  moto's), with the default key unless a KmsKeyId is given. A volume restored from an
  encrypted snapshot gets the snapshot's key; a snapshot keeps its volume's KmsKeyId.
* AMIs: ``RegisterImage`` honours BlockDeviceMappings (snapshot ids; VolumeSize defaults
  to the snapshot's, DeleteOnTermination to true for RootDeviceName and false otherwise,
  VolumeType gp2) and RootDeviceName; ``CreateImage`` snapshots every volume of the
  instance into the image's mappings. DescribeImages shows those mappings with
  ``Ebs.Encrypted``; DescribeSnapshots shows each snapshot's Encrypted and KmsKeyId.
  ``RunInstances`` from such an image creates the image's volumes, merged per device with
  the request's (or launch template's) BlockDeviceMappings; for moto's built-in images
  moto's behaviour stays (a default root volume plus the requested ones). Launch
  templates: moto already returns ``LaunchTemplateData.BlockDeviceMappings[].Ebs.KmsKeyId``
  in DescribeLaunchTemplateVersions, gives instances launched from a template the
  template's volumes (with its KmsKeyId) and the aws:ec2launchtemplate:id / version tags.
* KMS ``DescribeKey`` accepts a key or alias ARN of another account and resolves it in
  that account's backend; ``GetKeyPolicy`` on another account's key fails with
  AccessDeniedException, as in AWS.
* Security Hub ``GetFindings`` (``get_findings``): ``Filters`` of StringFilters on Id,
  ProductArn, GeneratorId, AwsAccountId, Region, RecordState, Title, SeverityLabel,
  WorkflowStatus, ResourceId (any ``Resources[].Id``) and ResourceType, comparisons EQUALS,
  PREFIX, CONTAINS (ORed per field) and NOT_EQUALS, PREFIX_NOT_EQUALS, NOT_CONTAINS (ANDed),
  fields ANDed; the combinations AWS refuses, more than 10 fields or 20 values a field, any
  other field and SortCriteria are InvalidInputException. MaxResults 1..100 (default 100),
  NextToken only when more match, valid across imports between pages. Without Filters: every
  finding, as before. ``BatchImportFindings`` (``batch_import_findings``): an update of an
  existing Id applies only if its UpdatedAt is later than the stored one (else ignored,
  still counted in SuccessCount); it keeps Note, UserDefinedFields, VerificationState and
  Workflow; ``Region`` is set to the request's region; so ``RecordState: ARCHIVED`` archives.
* STS ``AssumeRole`` (``assume_role``; moto issues credentials for any RoleArn, role or no
  role, and checks nothing): the role must exist, by exact ARN, in the account the ARN names,
  and its trust policy must allow the caller, or the answer is HTTP 403 AccessDenied "User:
  <caller ARN> is not authorized to perform: sts:AssumeRole on resource: <role ARN>" in both
  cases. The caller is the session of a key from an earlier AssumeRole, the user of a key
  from CreateAccessKey, else the acting account's root (``kld-emulator`` credentials). Trust
  policy: ``Principal`` ``"*"``, an account (root ARN or 12 digits: any principal of that
  account), a role ARN (its sessions), a session ARN or a user ARN; ``NotPrincipal``;
  Action/NotAction; a Deny wins. Conditions are evaluated by ``evaluate_conditions`` on
  ``aws:PrincipalArn`` (a session's role ARN), ``aws:PrincipalAccount``, ``aws:PrincipalType``,
  ``aws:PrincipalOrgID`` (the caller's organization in moto's organizations backend),
  ``aws:ResourceAccount``, ``aws:ResourceOrgID`` (the role's account's organization),
  ``aws:CurrentTime``, ``aws:EpochTime``, ``sts:ExternalId`` (when given) and
  ``sts:RoleSessionName``. ``DurationSeconds`` outside 900..43200, above the role's
  MaxSessionDuration, or above 3600 for a session assuming a role (role chaining) is a 400
  ValidationError. What passes gets moto's credentials, which act in the role's account.
* Auto Scaling: ``CreateAutoScalingGroup`` / ``UpdateAutoScalingGroup`` keep a given
  ``ServiceLinkedRoleARN`` (moto always answered the default
  ``arn:aws:iam::<account>:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling``,
  which stays the default). moto already returns ``LaunchTemplate`` {LaunchTemplateId,
  LaunchTemplateName, Version} or ``LaunchConfigurationName`` in DescribeAutoScalingGroups,
  and ``BlockDeviceMappings[].Ebs.Encrypted`` (no key: launch configurations cannot name one)
  in DescribeLaunchConfigurations.

Seeding an organization (real Organizations calls)
--------------------------------------------------
moto acts in the account of the request (see above), so a second account is reached
with the ``x-moto-account-id`` header or with credentials from STS AssumeRole on a role of
that account (made with ``POST /_kld/iam/role``). moto's CreateAccount makes members with random ids, so the acting
account 123456789012 joins by invitation:

1. as 111122223333 (management): ``CreateOrganization {FeatureSet: ALL}``;
   ``ListRoots`` -> root id; ``EnablePolicyType {RootId, PolicyType:
   SERVICE_CONTROL_POLICY}``; ``InviteAccountToOrganization {Target: {Type: ACCOUNT,
   Id: "123456789012"}}`` -> ``Handshake.Id``;
2. as 123456789012: ``AcceptHandshake {HandshakeId}``;
3. as 111122223333: optionally ``CreateOrganizationalUnit {ParentId: root, Name}`` and
   ``MoveAccount {AccountId: "123456789012", SourceParentId: root,
   DestinationParentId: ou}``; ``CreatePolicy {Name, Description, Type:
   SERVICE_CONTROL_POLICY, Content}`` and ``AttachPolicy {PolicyId, TargetId: root, OU
   or "123456789012"}``; then ``DetachPolicy {PolicyId: "p-FullAWSAccess", TargetId}``
   makes that level allow-list only (an entity keeps at least one SCP).

If 123456789012 itself calls CreateOrganization it is the management account: its
simulations carry ``OrganizationsDecisionDetail {AllowedByOrganizations: true}`` and no
SCP applies. ``POST /_kld/reset`` also forgets memberships and handshakes.

Limitations
-----------
IAM evaluation ignores resource-based policies, resource control policies (RCPs), session
policies, policy variables (``${aws:username}``), CallerArn and ResourceHandlingOption,
and never returns EvalDecisionDetails. ``EvalResourceName`` is the simulated resource,
where the current API reference says it is the action's ARN template (e.g.
``arn:${Partition}:kms:${Region}:${Account}:key/${KeyId}``) and points to
ResourceSpecificResults for the resource. Invitations only by account id (no e-mail
targets, no DeclineHandshake/CancelHandshake/ListHandshakes, no expiry). AMIs shared
from another account are not modelled (DescribeImages sees the caller's images only).
Cross-account DescribeKey does not check the key policy. LookupEvents does not limit the
default time window to 90 days and ignores EventCategory. Security Hub: BatchImportFindings
does not check that Security Hub is enabled, that AwsAccountId is the caller's, nor the 240 KB
size limit; findings are identified by Id alone. CreateAutoScalingGroup does not create
AWSServiceRoleForAutoScaling in IAM when it is missing (AWS does): create it with
CreateServiceLinkedRole when a test needs the role itself. AssumeRole does not evaluate the
caller's own identity policies, permissions boundary, SCPs or session policy ("Verify that
your IAM policy grants you permission to call sts:AssumeRole for the role that you want to
assume", IAM User Guide, Troubleshooting IAM roles), does not require ``sts:TagSession`` /
``sts:SetSourceIdentity`` for Tags / SourceIdentity, ignores MFA (SerialNumber, TokenCode) and
keys such as ``aws:SourceIp`` or ``aws:PrincipalTag`` (absent from the context), and compares
a principal by ARN, not by the unique id IAM stores (a role deleted and recreated with the same
name stays trusted). A role ARN with another path than the role's names no role. AWS errors the
emulator does not produce: RegionDisabledException, PackedPolicyTooLarge, MalformedPolicyDocument
for the Policy parameter. Credentials that moto issues are never limited by anything: moto does
not enforce IAM on the calls made with them. AssumeRoleWithWebIdentity and AssumeRoleWithSAML are
moto's, unchecked.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import http
import io
import ipaddress
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape as xml_escape

# Importing moto builds a boto3 Session: a profile named in the environment (maybe one that
# does not exist here) must not be read. The emulator never needs real credentials.
os.environ.pop("AWS_PROFILE", None)

from moto.autoscaling.responses import AutoScalingResponse
from moto.cloudtrail.responses import CloudTrailResponse
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import JsonRESTError
from moto.core.request import Request as MotoRequest
from moto.core.responses import ActionResult, EmptyResult
from moto.core.routing import get_service_router
from moto.core.serialize import never_return, return_if_not_empty
from moto.core.utils import unix_time, utcnow
from moto.ec2 import utils as ec2_utils
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami, AmiBackend
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.ec2.models.instances import Instance, InstanceBackend, InstanceState, StateReason
from moto.ec2.responses.amis import AmisResponse
from moto.ec2.responses.elastic_block_store import ElasticBlockStore as EbsResponse
from moto.ec2.responses.instances import InstanceResponse
from moto.iam.exceptions import IAMException, InvalidInput, MalformedPolicyDocument, NoSuchEntity, NotFoundException
from moto.iam.models import IAMBackend, ManagedPolicy, User, iam_backends
from moto.iam.responses import IamResponse
from moto.kms.exceptions import NotFoundException as KmsNotFoundException
from moto.kms.models import Key, kms_backends
from moto.sns.exceptions import InvalidParameterValue as SnsInvalidParameterValue
from moto.sns.responses import SNSResponse
from moto.kms.responses import KmsResponse
from moto.moto_api._internal.models import moto_api_backend
from moto.organizations import utils as org_utils
from moto.organizations.exceptions import (
    AWSOrganizationsNotInUseException,
    InvalidInputException,
    OrganizationsClientError,
)
from moto.organizations.models import (
    FakeAccount,
    FakeRoot,
    OrganizationsBackend,
    organizations_backends,
)
from moto.organizations.responses import OrganizationsResponse
from moto.securityhub.exceptions import SecurityHubClientError
from moto.securityhub.models import Finding, SecurityHubBackend
from moto.securityhub.responses import SecurityHubResponse
from moto.sts.models import sts_backends
from moto.sts.responses import TokenResponse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

DEFAULT_REGION = "us-east-1"
CONTROL_PREFIX = "/_kld/"
LOG = logging.getLogger("kld-emulator")


# --------------------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------------------


class ControlError(Exception):
    """A control-route failure answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def as_list(value: Any) -> list[Any]:
    """Policy and record fields may hold one value or a list; always return a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...`` or None as soon as a level is missing or not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from a number, a numeric string or an ISO 8601 string (naive = UTC)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def new_request_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------------------
# Call recording
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One AWS request as seen by the middleware."""

    service: str | None
    action: str | None
    region: str | None
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "action": self.action, "region": self.region, "time": self.time}


class CallLog:
    """Thread-safe, append-only list of recorded calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    def add(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def query(self, service: str | None, region: str | None, action: str | None) -> list[Call]:
        with self._lock:
            calls = list(self._calls)
        wanted = {"service": service, "region": region, "action": action}
        return [c for c in calls if all(v is None or getattr(c, k) == v for k, v in wanted.items())]


def signing_scope(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    """(service, region) from the SigV4 ``Credential=AKID/date/region/service/aws4_request``."""
    match = re.search(
        r"Credential=[^/,\s]+/\d+/([^/,\s]+)/([^/,\s]+)/aws4_request", environ.get("HTTP_AUTHORIZATION", "")
    )
    if not match:
        return None, None
    return match.group(2), match.group(1)


def request_action(environ: dict[str, Any], body: bytes, service: str | None) -> str | None:
    """The API action: X-Amz-Target, else the query ``Action`` parameter, else the REST route."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1]
    for source in (environ.get("QUERY_STRING", ""), form_text(environ, body)):
        action = parse_qs(source).get("Action")
        if action:
            return action[0]
    return rest_action(environ, body, service)


def form_text(environ: dict[str, Any], body: bytes) -> str:
    """The body as text if it is a form (query protocol), else the empty string."""
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return body.decode("utf-8", errors="replace")
    return ""


def rest_action(environ: dict[str, Any], body: bytes, service: str | None) -> str | None:
    """Operation name of a REST-protocol request, found with moto's botocore-model router."""
    if not service:
        return None
    try:
        operation, _ = get_service_router(service).match(MotoRequest(dict(environ)))
        return operation.name
    except Exception:  # unknown service, no matching route: the action stays unknown
        return None
    finally:
        environ["wsgi.input"] = io.BytesIO(body)


# --------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------

FAULT_KINDS = ("error", "malformed", "delay", "http")
DEFAULT_FAULT_STATUS = {"error": 400, "malformed": 200, "delay": 200, "http": 500}


@dataclass
class Fault:
    """A registered fault; ``None`` selectors match anything."""

    id: str
    kind: str = "error"
    service: str | None = None
    action: str | None = None
    region: str | None = None
    match: str | None = None
    status: int = 400
    code: str = "InjectedFault"
    message: str = "Fault injected by the kld emulator"
    times: int | None = None
    delay_seconds: float = 0.0
    body: str | None = None

    @classmethod
    def from_spec(cls, fault_id: str, spec: dict[str, Any]) -> Fault:
        """Build a fault from the ``POST /_kld/faults`` JSON, validating it."""
        kind = spec.get("kind", "error")
        if kind not in FAULT_KINDS:
            raise ControlError(400, f"kind must be one of {FAULT_KINDS}")
        times = spec.get("times")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ControlError(400, "times must be a positive integer")
        fault = cls(
            id=fault_id,
            kind=kind,
            status=int(spec.get("status", DEFAULT_FAULT_STATUS[kind])),
            times=times,
            delay_seconds=float(spec.get("delay_seconds", 0.0)),
        )
        for name in ("service", "action", "region", "match", "code", "message", "body"):
            if spec.get(name) is not None:
                setattr(fault, name, str(spec[name]))
        return fault

    def applies_to(self, call: Call, body_text: str) -> bool:
        return (
            (self.service is None or (call.service or "").lower() == self.service.lower())
            and (self.action is None or call.action == self.action)
            and (self.region is None or call.region == self.region)
            and (self.match is None or self.match in body_text)
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FaultRegistry:
    """Faults in registration order; ``take`` finds the first match and uses it up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> Fault:
        with self._lock:
            fault = Fault.from_spec(f"fault-{next(self._ids)}", spec)
            self._faults.append(fault)
            return fault

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) < before

    def take(self, call: Call, body_text: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(call, body_text):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None


def wire_protocol(environ: dict[str, Any], service: str | None) -> str:
    """How the request was encoded: "json", "ec2", "query", "rest-xml" or "rest-json"."""
    content_type = environ.get("CONTENT_TYPE", "")
    if "x-amz-json" in content_type or environ.get("HTTP_X_AMZ_TARGET"):
        return "json"
    if service == "ec2":
        return "ec2"
    if content_type.startswith("application/x-www-form-urlencoded"):
        return "query"
    if service in ("s3", "route53", "cloudfront"):
        return "rest-xml"
    return "rest-json"


def error_response(fault: Fault, protocol: str, environ: dict[str, Any]) -> Response:
    """An AWS error in the request's protocol, parseable by botocore and the Rust SDK."""
    request_id = new_request_id()
    code, message = xml_escape(fault.code), xml_escape(fault.message)
    headers = {"x-amzn-RequestId": request_id}
    if protocol in ("json", "rest-json"):
        body = json.dumps({"__type": fault.code, "message": fault.message})
        headers["x-amzn-ErrorType"] = fault.code
    elif protocol == "ec2":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
    elif protocol == "query":
        error_type = "Sender" if fault.status < 500 else "Receiver"
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
            f"<Type>{error_type}</Type><Code>{code}</Code><Message>{message}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    else:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        )
    return Response(
        body, status=fault.status, headers=headers, content_type=protocol_content_type(protocol, environ)
    )


def protocol_content_type(protocol: str, environ: dict[str, Any]) -> str:
    """Content type of a response in ``protocol``; JSON requests are answered in their version."""
    if protocol == "json":
        request_type = environ.get("CONTENT_TYPE", "")
        return request_type if "x-amz-json" in request_type else "application/x-amz-json-1.1"
    return {
        "rest-json": "application/json",
        "ec2": "text/xml;charset=UTF-8",
        "query": "text/xml",
        "rest-xml": "application/xml",
    }[protocol]


def http_failure_response(fault: Fault) -> Response:
    """A bare HTTP failure, as a load balancer in front of AWS would send it."""
    try:
        phrase = http.HTTPStatus(fault.status).phrase
    except ValueError:
        phrase = "Error"
    body = (
        fault.body
        if fault.body is not None
        else (
            f"<html><head><title>{fault.status} {phrase}</title></head>"
            f"<body><h1>{fault.status} {phrase}</h1></body></html>"
        )
    )
    return Response(body, status=fault.status, content_type="text/html")


def truncate_body(body: bytes) -> bytes:
    """Cut a response in half so that no parser accepts it; never return a valid body."""
    if len(body) < 2:
        return b"<"
    return body[: len(body) // 2]


# --------------------------------------------------------------------------------------
# EC2: launch failures
# --------------------------------------------------------------------------------------

INSTANCE_STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}
DEFAULT_LAUNCH_FAILURE_CODE = "Client.InternalError"
DEFAULT_LAUNCH_FAILURE_MESSAGE = "Client.InternalError: Client error on launch"


def apply_launch_failure(spec: dict[str, Any]) -> dict[str, Any]:
    """Set State, StateReason and StateTransitionReason of an existing moto instance.

    moto's stop/terminate would overwrite the reason, so the attributes are set directly.
    "stopped" keeps every volume attached. "terminated" then does to the volumes what AWS
    does at termination (``release_terminated_volumes``).
    """
    state = spec.get("state", "stopped")
    if state not in INSTANCE_STATE_CODES:
        raise ControlError(400, f"state must be one of {sorted(INSTANCE_STATE_CODES)}")
    backend = ec2_backends[spec.get("account_id", DEFAULT_ACCOUNT_ID)][spec.get("region", DEFAULT_REGION)]
    instance_id = required(spec, "instance_id")
    instance = next((i for i in backend.all_instances() if i.id == instance_id), None)
    if instance is None:
        raise ControlError(404, f"The instance ID '{instance_id}' does not exist")
    code = spec.get("code", DEFAULT_LAUNCH_FAILURE_CODE)
    message = spec.get("message", DEFAULT_LAUNCH_FAILURE_MESSAGE)
    instance._state = InstanceState(state, INSTANCE_STATE_CODES[state])
    instance.state_reason = StateReason(message, code)
    instance._reason = spec.get("transition_reason", message)
    result = {
        "instance_id": instance.id,
        "state": {"name": state, "code": INSTANCE_STATE_CODES[state]},
        "state_reason": {"code": code, "message": message},
        "state_transition_reason": instance._reason,
    }
    if state == "terminated":
        result["volumes"] = release_terminated_volumes(instance)
    return result


def release_terminated_volumes(instance: Instance) -> dict[str, list[str]]:
    """What termination does to an instance's EBS volumes; returns their ids.

    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/terminating-instances.html (the
    archived source, awsdocs/amazon-ec2-user-guide doc_source/terminating-instances.md,
    "Instance termination"): "After an instance is terminated, resources such as tags and
    volumes are gradually disassociated from the instance, therefore may no longer be
    visible on the terminated instance after a short while." and "By default, Amazon EBS
    root device volumes are automatically deleted when the instance terminates. However, by
    default, any additional EBS volumes that you attach at launch, or any EBS volumes that
    you attach to an existing instance persist even after the instance terminates. This
    behavior is controlled by the volume's DeleteOnTermination attribute" (the API reference
    of EbsBlockDevice.DeleteOnTermination links the same page, #preserving-volumes-on-termination).
    So the instance's BlockDeviceMappings become empty, DeleteOnTermination=true volumes are
    deleted and the others are detached ("available"). The instance keeps its ImageId and
    its tags, including the aws:ec2launchtemplate:id / aws:ec2launchtemplate:version tags
    EC2 puts on instances launched from a template ("Instances that are launched using a
    launch template are automatically assigned two tags with the keys
    aws:ec2launchtemplate:id and aws:ec2launchtemplate:version",
    https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/launch-instances-from-launch-template.html;
    moto sets them in ``Instance.__init__``): the emulator shows the instance as it is
    shortly after termination, volumes gone and tags not yet disassociated. moto's own
    ``Instance.teardown_defaults`` (what its TerminateInstances uses) does the detaching.
    """
    deleted, detached = [], []
    for _, device in instance.get_block_device_mapping:
        (deleted if device.delete_on_termination else detached).append(device.volume_id)
    instance.teardown_defaults()
    return {"deleted": deleted, "detached": detached}


def required(spec: dict[str, Any], name: str) -> Any:
    if spec.get(name) in (None, ""):
        raise ControlError(400, f"missing required field {name!r}")
    return spec[name]


def patch_ec2_filters() -> None:
    """moto maps ``state-reason-code`` but not ``state-reason-message``; add it."""
    ec2_utils.filter_dict_attribute_mapping.setdefault("state-reason-message", "state_reason.message")


# --------------------------------------------------------------------------------------
# EC2: the EBS default key, encryption by default, encrypted snapshots and AMIs
# --------------------------------------------------------------------------------------

EBS_ENCRYPTION_DOCS = "https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption.html"
# Archived source: awsdocs/amazon-ec2-user-guide doc_source/block-device-mapping-concepts.md
BDM_DOCS = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/block-device-mapping-concepts.html"
AWS_MANAGED_EBS_ALIAS = "alias/aws/ebs"

_original_create_volume = EBSBackend.create_volume
_original_create_snapshot = EBSBackend.create_snapshot
_original_modify_ebs_default_kms_key_id = EBSBackend.modify_ebs_default_kms_key_id
_original_create_image = AmiBackend.create_image
_original_run_instances = InstanceBackend.run_instances
_original_parse_block_device_mapping = InstanceResponse._parse_block_device_mapping
_original_ami_block_device_mappings = Ami.block_device_mappings


def ebs_create_volume(self: EBSBackend, size: int, zone_name: str, snapshot_id: str | None = None,
                      encrypted: bool = False, kms_key_id: str | None = None, **kwargs: Any) -> Any:
    """CreateVolume (and every volume RunInstances makes) with AWS's encryption outcomes.

    * A volume restored from an encrypted snapshot is encrypted, by default with the
      snapshot's key: "By default, the KMS key that you selected when creating a volume
      encrypts the snapshots that you make from the volume and the volumes that you restore
      from those encrypted snapshots. You cannot remove encryption from an encrypted volume
      or snapshot" (EBS_ENCRYPTION_DOCS, "Encrypt EBS resources"; archived source
      awsdocs/amazon-ec2-user-guide doc_source/EBSEncryption.md). moto encrypts such a
      volume but leaves it without a key.
    * With encryption by default on, every new volume is encrypted with the default key:
      "After you enable encryption by default, the EBS volumes that you create are always
      encrypted, either using the default KMS key or the KMS key that you specified when you
      created each volume" (API reference, EnableEbsEncryptionByDefault; EBS_ENCRYPTION_DOCS,
      "Encryption by default": "Amazon EBS encrypts the EBS volumes created when you launch
      an instance"). moto stores the setting but ignores it.
    An explicit KmsKeyId wins in both cases (same pages). The default key itself is moto's:
    the customer key set by ModifyEbsDefaultKmsKeyId, else alias/aws/ebs, created on first use.
    """
    if snapshot_id:
        snapshot = self.get_snapshot(snapshot_id)
        if snapshot.encrypted:
            encrypted = True
            kms_key_id = kms_key_id or snapshot.kms_key_id
    if not encrypted and getattr(self, "ebs_encryption_by_default", False):
        encrypted = True
    return _original_create_volume(
        self, size, zone_name, snapshot_id=snapshot_id, encrypted=encrypted, kms_key_id=kms_key_id, **kwargs
    )


def ebs_create_snapshot(self: EBSBackend, volume_id: str, description: str, *args: Any, **kwargs: Any) -> Any:
    """CreateSnapshot that keeps the volume's key. EBS_ENCRYPTION_DOCS: what an encrypted
    volume encrypts includes "All snapshots created from the volume", and "By default, the
    KMS key that you selected when creating a volume encrypts the snapshots that you make
    from the volume". moto marks the snapshot encrypted but drops the key, so
    DescribeSnapshots showed no KmsKeyId."""
    snapshot = _original_create_snapshot(self, volume_id, description, *args, **kwargs)
    volume = self.get_volume(volume_id)
    if volume.encrypted and not snapshot.kms_key_id:
        snapshot.kms_key_id = volume.kms_key_id
    return snapshot


def ebs_modify_default_kms_key_id(self: EBSBackend, kms_key_id: str) -> str:
    """moto's ModifyEbsDefaultKmsKeyId (it resolves an id, alias or ARN to the key ARN, as the
    API reference's response element says: "The Amazon Resource Name (ARN) of the default KMS
    key"), remembering that a customer key was chosen so GetEbsDefaultKmsKeyId can tell."""
    arn = _original_modify_ebs_default_kms_key_id(self, kms_key_id)
    self._kld_customer_default_key = bool(kms_key_id)
    return arn


def ebs_default_key_is_customer(backend: Any) -> bool:
    return bool(getattr(backend, "_kld_customer_default_key", False))


def get_ebs_default_kms_key_id(self: EbsResponse) -> ActionResult:
    """EbsResponse.get_ebs_default_kms_key_id; moto lacks GetEbsDefaultKmsKeyId.

    Per account and region (moto's EC2 backend is one per account and region, like the
    setting: "Describes the default KMS key for EBS encryption by default for your account
    in this Region", API reference). While no customer key was set (never, or after
    ResetEbsDefaultKmsKeyId) AWS answers with the alias of the AWS managed key, not an ARN:
    the AWS CLI reference example for get-ebs-default-kms-key-id
    (https://docs.aws.amazon.com/cli/latest/reference/ec2/get-ebs-default-kms-key-id.html)
    shows ``{"KmsKeyId": "alias/aws/ebs"}`` for "the default CMK for EBS encryption, which is
    an AWS managed CMK with the alias alias/aws/ebs", and a key ARN for "a custom CMK".
    The docs are silent on what Get returns after a reset; the emulator returns the alias,
    as for an account that never set a key.
    """
    self.error_on_dryrun()
    backend = self.ec2_backend
    key = backend.default_kms_key_id if ebs_default_key_is_customer(backend) else AWS_MANAGED_EBS_ALIAS
    return ActionResult({"KmsKeyId": key})


def reset_ebs_default_kms_key_id(self: EbsResponse) -> ActionResult:
    """EbsResponse.reset_ebs_default_kms_key_id; moto lacks ResetEbsDefaultKmsKeyId.

    "Resets the default KMS key for EBS encryption for your account in this Region to the
    Amazon Web Services managed KMS key for EBS" (API reference); the response is that key's
    ARN, as the AWS CLI example for reset-ebs-default-kms-key-id shows
    (``arn:aws:kms:us-west-2:123456789012:key/8c5b2c63-...``). The AWS managed key is
    created if the Region has none yet, as moto does on first use ("Amazon EBS automatically
    creates a unique AWS managed key in each Region", EBS_ENCRYPTION_DOCS).
    """
    self.error_on_dryrun()
    backend = self.ec2_backend
    arn = backend._create_default_encryption_key()
    backend._kld_customer_default_key = False
    return ActionResult({"KmsKeyId": arn})


def snapshot_mapping(backend: Any, device_name: str, ebs: dict[str, Any], root_device_name: str) -> dict[str, Any]:
    """An AMI block device mapping for ``ebs`` (RegisterImage/CreateImage input shape).

    VolumeSize defaults to the snapshot's ("If you specify a snapshot, the default is the
    snapshot size", API reference, EbsBlockDevice). Encrypted is the snapshot's: "If you
    specify an Amazon EBS volume using the ID of an Amazon EBS snapshot, you can't specify
    the encryption state of the volume" (RegisterImage, BlockDeviceMappings), and
    DescribeImages reports it. Defaults, from "Block device mapping entries" in
    BDM_DOCS: DeleteOnTermination "The default value is true for the root device volume and
    false for attached volumes"; volume type "The default value is gp2".
    """
    snapshot = backend.get_snapshot(ebs["SnapshotId"]) if ebs.get("SnapshotId") else None
    out: dict[str, Any] = {}
    if snapshot is not None:
        out["SnapshotId"] = snapshot.id
        out["VolumeSize"] = int(ebs.get("VolumeSize") or snapshot.volume.size)
        out["Encrypted"] = bool(snapshot.encrypted)
    elif ebs.get("VolumeSize"):
        out["VolumeSize"] = int(ebs["VolumeSize"])
        out["Encrypted"] = bool(ebs.get("Encrypted"))
    out["VolumeType"] = ebs.get("VolumeType") or "gp2"
    dot = ebs.get("DeleteOnTermination")
    out["DeleteOnTermination"] = (device_name == root_device_name) if dot is None else bool(dot)
    return {"DeviceName": device_name, "Ebs": out}


def ami_block_device_mappings(self: Ami) -> list[dict[str, Any]]:
    """Ami.block_device_mappings: the mappings an image was registered or created with.

    moto gives every image one made-up 15 GiB snapshot; images made through the patched
    RegisterImage/CreateImage carry their real mappings, as DescribeImages shows them in
    AWS (DeviceName, Ebs {SnapshotId, VolumeSize, VolumeType, DeleteOnTermination,
    Encrypted}; API reference, EbsBlockDevice; KmsKeyId "is only supported on
    BlockDeviceMapping objects called by RunInstances, RequestSpotFleet, and
    RequestSpotInstances", so an image shows none: the key is the snapshot's).
    """
    mappings = getattr(self, "_kld_mappings", None)
    if mappings is not None:
        return deepcopy(mappings)
    return _original_ami_block_device_mappings.fget(self)


def drop_placeholder_snapshot(backend: Any, ami: Ami) -> None:
    """Remove the made-up snapshot moto's Ami constructor creates for an image that has
    real mappings, so DescribeSnapshots lists only snapshots AWS would have."""
    placeholder = getattr(ami, "ebs_snapshot", None)
    if placeholder is not None:
        backend.snapshots.pop(placeholder.id, None)


def register_image(self: AmisResponse) -> ActionResult:
    """AmisResponse.register_image honouring BlockDeviceMappings and RootDeviceName.

    moto registers every image with a made-up unencrypted snapshot and ignores the request's
    mappings. AWS: "You can use RegisterImage to create an Amazon EBS-backed Linux AMI from
    a snapshot of a root device volume. You specify the snapshot using a block device
    mapping. [...] If the snapshot is encrypted, or encryption by default is enabled, the
    root volume of an instance launched from the AMI is encrypted" (API reference,
    RegisterImage). An unknown snapshot is InvalidSnapshot.NotFound (moto's error).
    """
    name = self._get_param("Name")
    description = self._get_param("Description", "")
    root_device_name = self._get_param("RootDeviceName") or "/dev/sda1"
    requested = self._get_param("BlockDeviceMappings", [])
    self.error_on_dryrun()
    backend = self.ec2_backend
    mappings = []
    for mapping in requested:
        if mapping.get("Ebs"):
            mappings.append(snapshot_mapping(backend, mapping["DeviceName"], mapping["Ebs"], root_device_name))
        else:
            mappings.append({k: v for k, v in mapping.items() if k in ("DeviceName", "VirtualName", "NoDevice")})
    ami = backend.register_image(name, description)
    if requested:
        drop_placeholder_snapshot(backend, ami)
        ami._kld_mappings = mappings
        ami.root_device_name = root_device_name
        ami.root_device_type = "ebs"
    return ActionResult({"ImageId": ami.id})


def ami_create_image(self: AmiBackend, instance_id: str, name: str, description: str,
                     tag_specifications: list[dict[str, Any]]) -> Ami:
    """CreateImage that snapshots the instance's volumes into the image's mappings.

    "If you customized your instance with instance store volumes or Amazon EBS volumes in
    addition to the root device volume, the new AMI contains block device mapping
    information for those volumes" (API reference, CreateImage); "For EBS volumes, the
    existing data is saved to a new snapshot, and it's this new snapshot that's specified in
    the block device mapping" and "When you create an AMI, its block device mapping inherits
    this setting [DeleteOnTermination] from the instance" (BDM_DOCS). Each snapshot keeps
    its volume's key (``ebs_create_snapshot``), so an image of an instance with encrypted
    volumes names encrypted snapshots. moto gives it a made-up unencrypted snapshot instead.
    """
    ami = _original_create_image(self, instance_id, name, description, tag_specifications)
    instance = self.get_instance(instance_id)
    mappings = []
    for device_name, device in instance.get_block_device_mapping:
        volume = self.get_volume(device.volume_id)
        snapshot = self.create_snapshot(
            volume.id, f"Created by CreateImage({instance_id}) for {ami.id}", from_ami=ami.id
        )
        mappings.append(
            {
                "DeviceName": device_name,
                "Ebs": {
                    "SnapshotId": snapshot.id,
                    "VolumeSize": volume.size,
                    "VolumeType": volume.volume_type,
                    "DeleteOnTermination": bool(device.delete_on_termination),
                    "Encrypted": bool(snapshot.encrypted),
                },
            }
        )
    if mappings:
        drop_placeholder_snapshot(self, ami)
        ami._kld_mappings = mappings
        ami.root_device_name = instance.root_device_name
        ami.root_device_type = "ebs"
    return ami


EBS_MAPPING_KEYS = ("SnapshotId", "VolumeSize", "VolumeType", "Iops", "DeleteOnTermination", "KmsKeyId")


def parse_block_device_mapping(self: InstanceResponse) -> list[dict[str, Any]]:
    """moto's RunInstances mapping parser, plus which Ebs fields the request really gave:
    moto fills absent ones with false/None, and an absent field must not override the
    image's mapping (``merge_launch_mappings``)."""
    mappings = _original_parse_block_device_mapping(self)
    raw = self._get_param("BlockDeviceMappings", [])
    for mapping, given in zip(mappings, raw, strict=False):
        mapping["_kld_given"] = sorted((given.get("Ebs") or {}).keys())
    return mappings


def mapping_gives(mapping: dict[str, Any], key: str) -> bool:
    if "_kld_given" in mapping:
        return key in mapping["_kld_given"]
    return (mapping.get("Ebs") or {}).get(key) is not None


def merge_launch_mappings(
    backend: Any, ami: Ami, requested: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The volumes a launch gets: the image's mappings, overridden or extended per device
    by the request's (or the launch template's) mappings.

    BDM_DOCS, "Instance block device mapping": "By default, an instance that you launch
    includes any storage devices specified in the block device mapping of the AMI from which
    you launched the instance. You can specify changes to the block device mapping for an
    instance when you launch it, and these updates overwrite or merge with the block device
    mapping of the AMI"; a ``"NoDevice": ""`` entry omits a device; DeleteOnTermination:
    "When you launch an instance, it inherits this setting from the AMI". A device keeps the
    image's snapshot unless the request names another; its encryption is the snapshot's
    unless the request names a KmsKeyId ("If the volume is encrypted using a different KMS
    key, AWS KMS generates a new data key", EBS_ENCRYPTION_DOCS, "How EBS encryption works";
    encryption is never removed, ``ebs_create_volume``).
    """
    merged: dict[str, dict[str, Any]] = {
        m["DeviceName"]: deepcopy(m) for m in ami.block_device_mappings if m.get("Ebs")
    }
    for mapping in requested:
        name = mapping.get("DeviceName")
        if mapping.get("NoDevice") == "":
            merged.pop(name, None)
            continue
        if not mapping.get("Ebs"):
            continue  # instance store: moto models no such volumes
        base = merged.setdefault(name, {"DeviceName": name, "Ebs": {}})
        for key in EBS_MAPPING_KEYS:
            if mapping_gives(mapping, key):
                base["Ebs"][key] = mapping["Ebs"][key]
        if mapping_gives(mapping, "Encrypted") and mapping["Ebs"]["Encrypted"]:
            base["Ebs"]["Encrypted"] = True
    result = []
    for name, mapping in merged.items():
        ebs = mapping["Ebs"]
        snapshot = backend.get_snapshot(ebs["SnapshotId"]) if ebs.get("SnapshotId") else None
        ebs["Encrypted"] = bool(ebs.get("Encrypted") or ebs.get("KmsKeyId") or (snapshot and snapshot.encrypted))
        if ebs.get("DeleteOnTermination") is None:
            ebs["DeleteOnTermination"] = name == ami.root_device_name
        result.append({"DeviceName": name, "Ebs": ebs})
    return result


def registered_image(backend: Any, image_id: str | None) -> Ami | None:
    """An image whose mappings the emulator knows (RegisterImage/CreateImage), else None."""
    ami = backend.amis.get(image_id) if image_id else None
    return ami if ami is not None and getattr(ami, "_kld_mappings", None) is not None else None


def run_instances(self: InstanceBackend, image_id: str, count: int, user_data: Any,
                  security_group_names: list[str], **kwargs: Any) -> Any:
    """InstanceBackend.run_instances launching from an image's real mappings.

    For an image made through the patched RegisterImage/CreateImage the instance gets the
    image's volumes merged with the request's or the launch template's
    (``merge_launch_mappings``); a template's mappings apply when the request has none, as
    in moto. Other images (moto's built-in catalogue) keep moto's behaviour: a default 8 GiB
    root volume plus the requested ones. Volumes from a template keep its KmsKeyId (moto
    already did). "You can use the parameters contained in a launch template to launch an
    instance. You have the option to override or add launch parameters before you launch
    the instance" (launch-instances-from-launch-template.html, "Launch an instance from a
    launch template"): request mappings replace the template's, as moto does.
    """
    template_data = self._get_template_from_args(kwargs["launch_template"]).data if kwargs.get(
        "launch_template"
    ) else {}
    ami = registered_image(self, image_id or template_data.get("ImageId"))
    if ami is not None:
        requested = kwargs.get("block_device_mappings") or template_data.get("BlockDeviceMappings") or []
        kwargs["block_device_mappings"] = merge_launch_mappings(self, ami, requested)
    return _original_run_instances(self, image_id, count, user_data, security_group_names, **kwargs)


def patch_ec2() -> None:
    """Install the EC2/EBS patches of this section (idempotent)."""
    EBSBackend.create_volume = ebs_create_volume
    EBSBackend.create_snapshot = ebs_create_snapshot
    EBSBackend.modify_ebs_default_kms_key_id = ebs_modify_default_kms_key_id
    EbsResponse.get_ebs_default_kms_key_id = get_ebs_default_kms_key_id
    EbsResponse.reset_ebs_default_kms_key_id = reset_ebs_default_kms_key_id
    AmisResponse.register_image = register_image
    AmiBackend.create_image = ami_create_image
    Ami.block_device_mappings = property(ami_block_device_mappings)
    InstanceResponse._parse_block_device_mapping = parse_block_device_mapping
    InstanceBackend.run_instances = run_instances


# --------------------------------------------------------------------------------------
# CloudTrail: stored events and LookupEvents
# --------------------------------------------------------------------------------------

LOOKUP_KEYS = (
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
)
MAX_LOOKUP_RESULTS = 50


@dataclass
class TrailEvent:
    """A stored event in the shape LookupEvents returns, plus its sort position."""

    seq: int
    event_time: float
    cloudtrail_event: str
    event_id: str
    event_name: str | None = None
    event_source: str | None = None
    username: str | None = None
    access_key_id: str | None = None
    read_only: str | None = None
    resources: list[dict[str, str]] = field(default_factory=list)

    @property
    def sort_key(self) -> tuple[float, int]:
        """Events are returned in descending sort_key order: newest first."""
        return (self.event_time, self.seq)

    def attribute_matches(self, key: str, value: str) -> bool:
        if key == "ResourceType":
            return any(r.get("ResourceType") == value for r in self.resources)
        if key == "ResourceName":
            return any(r.get("ResourceName") == value for r in self.resources)
        attribute = {
            "EventId": self.event_id,
            "EventName": self.event_name,
            "ReadOnly": self.read_only,
            "Username": self.username,
            "EventSource": self.event_source,
            "AccessKeyId": self.access_key_id,
        }[key]
        return attribute == value

    def to_api(self) -> dict[str, Any]:
        item = {
            "EventId": self.event_id,
            "EventName": self.event_name,
            "ReadOnly": self.read_only,
            "AccessKeyId": self.access_key_id,
            "EventTime": self.event_time,
            "EventSource": self.event_source,
            "Username": self.username,
            "Resources": self.resources,
            "CloudTrailEvent": self.cloudtrail_event,
        }
        return {k: v for k, v in item.items() if v is not None}


def record_username(identity: Any) -> str | None:
    """LookupEvents' Username: userName, the session name of an AssumedRole, "root"."""
    if not isinstance(identity, dict):
        return None
    if identity.get("userName"):
        return str(identity["userName"])
    kind = identity.get("type")
    if kind == "AssumedRole" and isinstance(identity.get("arn"), str):
        return identity["arn"].rsplit("/", 1)[-1]
    if kind == "Root":
        return "root"
    return None


def record_instance_ids(record: dict[str, Any]) -> list[str]:
    """Instance ids in ``requestParameters``/``responseElements`` ``instancesSet.items``."""
    ids = []
    for section in ("requestParameters", "responseElements"):
        for item in as_list(dig(record, section, "instancesSet", "items")):
            instance_id = dig(item, "instanceId")
            if isinstance(instance_id, str) and instance_id not in ids:
                ids.append(instance_id)
    return ids


def record_kms_key_arn(record: dict[str, Any], account_id: str, region: str) -> str | None:
    """ARN of ``requestParameters.keyId`` of a KMS record (aliases are not resolved)."""
    key_id = dig(record, "requestParameters", "keyId")
    if not isinstance(key_id, str) or key_id.startswith("alias/") or ":alias/" in key_id:
        return None
    if key_id.startswith("arn:"):
        return key_id
    account = record.get("recipientAccountId") or account_id
    return f"arn:aws:kms:{record.get('awsRegion') or region}:{account}:key/{key_id}"


def record_resources(record: dict[str, Any], account_id: str, region: str) -> list[dict[str, str]]:
    """Resources LookupEvents lists for a record: its own plus derived EC2/KMS ones."""
    resources: list[dict[str, str]] = []

    def add(resource_type: Any, name: Any) -> None:
        entry = {"ResourceType": str(resource_type), "ResourceName": str(name)}
        if name is not None and entry not in resources:
            resources.append(entry)

    for resource in as_list(record.get("resources")):
        if isinstance(resource, dict):
            add(resource.get("type"), resource.get("ARN"))
    if record.get("eventSource") == "ec2.amazonaws.com":
        for instance_id in record_instance_ids(record):
            add("AWS::EC2::Instance", instance_id)
    if record.get("eventSource") == "kms.amazonaws.com":
        key_arn = record_kms_key_arn(record, account_id, region)
        if key_arn and all(r["ResourceName"] != key_arn for r in resources):
            add("AWS::KMS::Key", key_arn)
    return resources


def read_only_text(value: Any) -> str | None:
    """``readOnly`` as LookupEvents reports it: the string "true" or "false"."""
    if value is None:
        return None
    return str(value).lower()


def event_from_record(seq: int, record: dict[str, Any], account_id: str, region: str) -> TrailEvent:
    """A TrailEvent from a full CloudTrail record (missing eventID/eventTime are filled in)."""
    record = dict(record)
    record.setdefault("eventID", str(uuid.uuid4()))
    record.setdefault("eventTime", utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"))
    return TrailEvent(
        seq=seq,
        event_time=parse_timestamp(record["eventTime"]),
        cloudtrail_event=json.dumps(record, separators=(",", ":")),
        event_id=str(record["eventID"]),
        event_name=record.get("eventName"),
        event_source=record.get("eventSource"),
        username=record_username(record.get("userIdentity")),
        access_key_id=dig(record, "userIdentity", "accessKeyId"),
        read_only=read_only_text(record.get("readOnly")),
        resources=record_resources(record, account_id, region),
    )


def event_from_raw(seq: int, spec: dict[str, Any]) -> TrailEvent:
    """A TrailEvent whose CloudTrailEvent is an arbitrary (possibly broken) string."""
    return TrailEvent(
        seq=seq,
        event_time=parse_timestamp(spec["event_time"]) if spec.get("event_time") is not None else time.time(),
        cloudtrail_event=str(spec["raw"]),
        event_id=str(spec.get("event_id") or uuid.uuid4()),
        event_name=spec.get("event_name"),
        event_source=spec.get("event_source"),
        username=spec.get("username"),
        access_key_id=spec.get("access_key_id"),
        read_only=read_only_text(spec.get("read_only")),
        resources=[
            {"ResourceType": str(r.get("ResourceType")), "ResourceName": str(r.get("ResourceName"))}
            for r in as_list(spec.get("resources"))
            if isinstance(r, dict)
        ],
    )


class TokenBucket:
    """Classic token bucket: ``capacity`` burst, refilled at ``rate`` tokens per second."""

    def __init__(self, capacity: float, rate: float):
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class TrailStore:
    """CloudTrail events and LookupEvents throttling, per (account, region)."""

    RATE_PER_SECOND = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], list[TrailEvent]] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._seq = itertools.count(1)
        self.throttle_enabled = True

    def reset(self) -> None:
        with self._lock:
            self._events.clear()
            self._buckets.clear()
            self.throttle_enabled = True

    def store(self, account_id: str, region: str, items: list[Any]) -> list[str]:
        """Store control-route event items; returns their event ids."""
        events = []
        for item in items:
            if not isinstance(item, dict):
                raise ControlError(400, "every event must be a JSON object")
            seq = next(self._seq)
            if "raw" in item:
                events.append(event_from_raw(seq, item))
            else:
                events.append(event_from_record(seq, item, account_id, region))
        with self._lock:
            self._events.setdefault((account_id, region), []).extend(events)
        return [e.event_id for e in events]

    def events(self, account_id: str, region: str) -> list[TrailEvent]:
        """Events of one account and region, newest first."""
        with self._lock:
            events = list(self._events.get((account_id, region), []))
        return sorted(events, key=lambda e: e.sort_key, reverse=True)

    def allow_lookup(self, account_id: str, region: str) -> bool:
        """Take a LookupEvents token; False means the call must be throttled."""
        with self._lock:
            if not self.throttle_enabled:
                return True
            bucket = self._buckets.setdefault(
                (account_id, region), TokenBucket(self.RATE_PER_SECOND, self.RATE_PER_SECOND)
            )
            return bucket.take()


TRAIL_STORE = TrailStore()


def lookup_filter(request: dict[str, Any]) -> Callable[[TrailEvent], bool]:
    """Predicate for the request's (at most one) LookupAttribute."""
    attributes = request.get("LookupAttributes") or []
    if len(attributes) > 1:
        raise JsonRESTError("InvalidLookupAttributesException", "You can only specify one lookup attribute.")
    if not attributes:
        return lambda event: True
    key, value = attributes[0].get("AttributeKey"), attributes[0].get("AttributeValue")
    if key not in LOOKUP_KEYS or value is None:
        raise JsonRESTError(
            "InvalidLookupAttributesException", f"Invalid lookup attribute key {key!r} or missing value."
        )
    return lambda event: event.attribute_matches(key, str(value))


def lookup_time_window(request: dict[str, Any]) -> tuple[float, float]:
    """Inclusive [StartTime, EndTime] in epoch seconds."""
    try:
        start = (
            parse_timestamp(request["StartTime"]) if request.get("StartTime") is not None else float("-inf")
        )
        end = parse_timestamp(request["EndTime"]) if request.get("EndTime") is not None else float("inf")
    except ValueError:
        raise JsonRESTError(
            "InvalidTimeRangeException", "StartTime or EndTime is not a valid time."
        ) from None
    if start > end:
        raise JsonRESTError("InvalidTimeRangeException", "Start time must be before end time.")
    return start, end


def lookup_page_size(request: dict[str, Any]) -> int:
    size = request.get("MaxResults", MAX_LOOKUP_RESULTS)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_LOOKUP_RESULTS:
        raise JsonRESTError("InvalidMaxResultsException", "Value of MaxResults is not valid.")
    return size


def encode_next_token(event: TrailEvent) -> str:
    """Token = position of the last returned event; newer events never shift it."""
    raw = json.dumps({"t": event.event_time, "s": event.seq}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_next_token(token: str) -> tuple[float, int]:
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(position["t"]), int(position["s"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise JsonRESTError("InvalidNextTokenException", "Invalid NextToken.") from None


def lookup_events(self: CloudTrailResponse) -> str:
    """CloudTrailResponse.lookup_events: LookupEvents over events stored via the control route."""
    if not TRAIL_STORE.allow_lookup(self.current_account, self.region):
        raise JsonRESTError("ThrottlingException", "Rate exceeded")
    try:
        request = json.loads(self.body or "{}")
    except ValueError:
        raise JsonRESTError("SerializationException", "Request body is not valid JSON.") from None
    matches = lookup_filter(request)
    start, end = lookup_time_window(request)
    page_size = lookup_page_size(request)
    events = [
        e
        for e in TRAIL_STORE.events(self.current_account, self.region)
        if start <= e.event_time <= end and matches(e)
    ]
    if request.get("NextToken"):
        after = decode_next_token(request["NextToken"])
        events = [e for e in events if e.sort_key < after]
    page = events[:page_size]
    response: dict[str, Any] = {"Events": [e.to_api() for e in page]}
    if len(events) > page_size:
        response["NextToken"] = encode_next_token(page[-1])
    return json.dumps(response)


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
    A matching Deny wins; without a matching Allow the answer is no (EVALUATION_DOCS).
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


# --------------------------------------------------------------------------------------
# Security Hub: GetFindings filters and paging, BatchImportFindings updates
# --------------------------------------------------------------------------------------

SECURITYHUB_API_DOCS = "https://docs.aws.amazon.com/securityhub/1.0/APIReference"
# "BatchImportFindings for finding providers" (Security Hub CSPM User Guide); archived source
# awsdocs/aws-security-hub-user-guide doc_source/finding-update-batchimportfindings.md.
BATCH_IMPORT_DOCS = "https://docs.aws.amazon.com/securityhub/latest/userguide/finding-update-batchimportfindings.html"

# The AwsSecurityFindingFilters fields the emulator filters on, each a StringFilter list, and
# the finding's values for it (API reference, AwsSecurityFindingFilters: "ResourceId: The
# canonical identifier for the given resource type", i.e. Resources[].Id, one value per
# resource; "ResourceType" likewise Resources[].Type; SeverityLabel is Severity.Label,
# WorkflowStatus Workflow.Status). Any other field is refused (``finding_filter``).
FINDING_STRING_FIELDS: dict[str, Callable[[dict[str, Any]], list[Any]]] = {
    "Id": lambda f: [f.get("Id")],
    "ProductArn": lambda f: [f.get("ProductArn")],
    "GeneratorId": lambda f: [f.get("GeneratorId")],
    "AwsAccountId": lambda f: [f.get("AwsAccountId")],
    "Region": lambda f: [f.get("Region")],
    "RecordState": lambda f: [f.get("RecordState")],
    "Title": lambda f: [f.get("Title")],
    "SeverityLabel": lambda f: [dig(f, "Severity", "Label")],
    "WorkflowStatus": lambda f: [dig(f, "Workflow", "Status")],
    "ResourceId": lambda f: [dig(r, "Id") for r in as_list(f.get("Resources"))],
    "ResourceType": lambda f: [dig(r, "Type") for r in as_list(f.get("Resources"))],
}
# Positive comparisons, and each negative one with the positive test it negates.
POSITIVE_COMPARISONS = ("EQUALS", "PREFIX", "CONTAINS")
NEGATIVE_COMPARISONS = {"NOT_EQUALS": "EQUALS", "PREFIX_NOT_EQUALS": "PREFIX", "NOT_CONTAINS": "CONTAINS"}
# GetFindings, Filters: "You can filter by up to 10 finding attributes. For each attribute,
# you can provide up to 20 filter values." MaxResults: 1 to 100 (API reference, GetFindings).
MAX_FILTER_FIELDS = 10
MAX_FILTER_VALUES = 20
MAX_FINDINGS_PAGE = 100
# BatchImportFindings "cannot be used to update the following finding fields and objects,
# which Security Hub CSPM customers use to manage their investigation workflow": Note,
# UserDefinedFields, VerificationState, Workflow (API reference, BatchImportFindings);
# "Security Hub CSPM ignores any content provided in a BatchImportFindings request for these
# attributes" (BATCH_IMPORT_DOCS).
CUSTOMER_FINDING_ATTRIBUTES = ("Note", "UserDefinedFields", "VerificationState", "Workflow")
_finding_sequence = itertools.count(1)


def securityhub_invalid_input(message: str) -> SecurityHubClientError:
    """InvalidInputException, one of GetFindings' documented errors (API reference, Errors:
    "The request was rejected because you supplied an invalid or out-of-range value for an
    input parameter"). Where the docs say only that a request "returns an error", this is the
    error the emulator picks."""
    return SecurityHubClientError("InvalidInputException", message)


def string_comparison_holds(comparison: str, filter_value: str, value: str) -> bool:
    """EQUALS, PREFIX or CONTAINS: "Filter values are case sensitive" (StringFilter, Value)."""
    if comparison == "EQUALS":
        return value == filter_value
    if comparison == "PREFIX":
        return value.startswith(filter_value)
    return filter_value in value


def finding_filter(filters: Any) -> Callable[[dict[str, Any]], bool]:
    """A predicate for GetFindings' ``Filters`` (AwsSecurityFindingFilters of StringFilters).

    StringFilter, Comparison (API reference, API_StringFilter.html): "CONTAINS, EQUALS, and
    PREFIX filters on the same field are joined by OR. A finding matches if it matches any one
    of those filters"; "NOT_CONTAINS, NOT_EQUALS, and PREFIX_NOT_EQUALS filters on the same
    field are joined by AND. A finding matches only if it matches all of those filters"; "You
    can combine PREFIX filters with NOT_EQUALS or PREFIX_NOT_EQUALS filters for the same field.
    Security Hub CSPM first processes the PREFIX filters, and then the NOT_EQUALS or
    PREFIX_NOT_EQUALS filters" (so a field passes when some positive filter matches, if there
    is one, and no negative filter's value is found). Refused, as the same page says "Combining
    filters in this way returns an error": CONTAINS with NOT_CONTAINS, EQUALS with NOT_EQUALS or
    PREFIX_NOT_EQUALS, CONTAINS or NOT_CONTAINS with anything but their own kind. CONTAINS_WORD
    "works only in the GetFindingsV2 ..." APIs: refused too. Limits: GetFindings, Filters
    (MAX_FILTER_FIELDS, MAX_FILTER_VALUES). The docs do not say how filters on different
    fields combine; the emulator ANDs them (each field narrows the findings returned).

    The docs are silent on fields with several values and on absent ones; the emulator matches
    a positive filter when any of the finding's values matches (ResourceId: any
    ``Resources[].Id``), a negative one when none does, and a finding without the field fails
    every positive filter and passes every negative one. A field the emulator does not model
    (not in FINDING_STRING_FIELDS, or a date/number/map/boolean filter) is refused with an
    InvalidInputException saying so, so that no test trusts a filter silently ignored (moto
    ignores all of them: "Filters and SortCriteria is not yet implemented").
    """
    if filters in (None, {}):
        return lambda finding: True
    if not isinstance(filters, dict):
        raise securityhub_invalid_input("Filters must be an object")
    compiled: list[tuple[Callable[[dict[str, Any]], list[Any]], list[tuple[str, str]], list[tuple[str, str]]]] = []
    for field_name, entries in filters.items():
        if not entries:
            continue
        if field_name not in FINDING_STRING_FIELDS:
            raise securityhub_invalid_input(
                f"kld-emulator: the filter field {field_name!r} is not modelled; "
                f"filterable: {sorted(FINDING_STRING_FIELDS)}"
            )
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise securityhub_invalid_input(f"Filters.{field_name} must be a list of StringFilter")
        if len(entries) > MAX_FILTER_VALUES:
            raise securityhub_invalid_input(
                f"Filters.{field_name} has {len(entries)} values; at most {MAX_FILTER_VALUES} are allowed"
            )
        positives, negatives = [], []
        for entry in entries:
            comparison, value = entry.get("Comparison"), entry.get("Value")
            if not isinstance(value, str) or not value:
                raise securityhub_invalid_input(f"Filters.{field_name}: Value must be a non-empty string")
            if comparison in POSITIVE_COMPARISONS:
                positives.append((comparison, value))
            elif comparison in NEGATIVE_COMPARISONS:
                negatives.append((NEGATIVE_COMPARISONS[comparison], value))
            else:
                raise securityhub_invalid_input(
                    f"Filters.{field_name}: Comparison {comparison!r} is not supported by GetFindings"
                )
        kinds = {e.get("Comparison") for e in entries}
        mixed = (
            ("CONTAINS" in kinds and kinds != {"CONTAINS"})
            or ("NOT_CONTAINS" in kinds and kinds != {"NOT_CONTAINS"})
            or ("EQUALS" in kinds and kinds & {"NOT_EQUALS", "PREFIX_NOT_EQUALS"})
        )
        if mixed:
            raise securityhub_invalid_input(
                f"Filters.{field_name}: the comparisons {sorted(kinds)} cannot be combined on one field"
            )
        compiled.append((FINDING_STRING_FIELDS[field_name], positives, negatives))
    if len(compiled) > MAX_FILTER_FIELDS:
        raise securityhub_invalid_input(
            f"Filters has {len(compiled)} attributes; at most {MAX_FILTER_FIELDS} are allowed"
        )

    def matches(finding: dict[str, Any]) -> bool:
        for values_of, positives, negatives in compiled:
            values = [v for v in values_of(finding) if isinstance(v, str)]
            if positives and not any(
                string_comparison_holds(c, fv, v) for c, fv in positives for v in values
            ):
                return False
            if any(string_comparison_holds(c, fv, v) for c, fv in negatives for v in values):
                return False
        return True

    return matches


def finding_sequence(finding: Finding) -> int:
    """The order a finding was first imported in: GetFindings pages follow it."""
    if getattr(finding, "_kld_seq", None) is None:
        finding._kld_seq = next(_finding_sequence)
    return finding._kld_seq


def filters_digest(filters: Any) -> str:
    return hashlib.sha256(json.dumps(filters or {}, sort_keys=True).encode()).hexdigest()[:16]


def encode_findings_token(filters: Any, sequence: int) -> str:
    payload = json.dumps({"f": filters_digest(filters), "from": sequence})
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_findings_token(token: str, filters: Any) -> int:
    """The sequence number a page starts from. A token of another query (other filters) or not
    one of ours is InvalidInputException; the docs only say to pass "the value returned from
    the previous response" (GetFindings, NextToken)."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        start = int(payload["from"])
        same_query = payload["f"] == filters_digest(filters)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise securityhub_invalid_input("NextToken is not valid") from None
    if not same_query:
        raise securityhub_invalid_input("NextToken belongs to a request with other Filters")
    return start


def get_findings(self: SecurityHubResponse) -> str:
    """SecurityHubResponse.get_findings with Filters, MaxResults and NextToken.

    A call without Filters returns every stored finding (whatever its RecordState), as moto's
    did, in import order; pages of MaxResults (1 to 100, "MaxResults: The maximum number of
    findings to return", API reference, GetFindings; the default when it is omitted is not
    documented: 100, moto's). NextToken is returned only when more findings match, and stays
    valid while findings are added, updated or archived between pages: it names the position
    of the next finding, not the finding itself. SortCriteria is refused (not modelled): a test
    must not rely on an order the emulator does not produce.
    """
    filters = self._get_param("Filters") or {}
    if self._get_param("SortCriteria"):
        raise securityhub_invalid_input("kld-emulator: SortCriteria is not modelled")
    max_results = self._get_param("MaxResults")
    if max_results is None:
        page_size = MAX_FINDINGS_PAGE
    else:
        try:
            page_size = int(max_results)
        except (TypeError, ValueError):
            raise securityhub_invalid_input("MaxResults must be a number between 1 and 100") from None
        if not 1 <= page_size <= MAX_FINDINGS_PAGE:
            raise securityhub_invalid_input("MaxResults must be a number between 1 and 100")
    keep = finding_filter(filters)
    token = self._get_param("NextToken")
    start = decode_findings_token(token, filters) if token else 0
    matching = sorted(
        (f for f in self.securityhub_backend.findings if keep(f.data) and finding_sequence(f) >= start),
        key=finding_sequence,
    )
    response: dict[str, Any] = {"Findings": [f.as_dict() for f in matching[:page_size]]}
    if len(matching) > page_size:
        response["NextToken"] = encode_findings_token(filters, finding_sequence(matching[page_size]))
    return json.dumps(response)


def batch_import_findings(
    self: SecurityHubBackend, findings: list[dict[str, Any]]
) -> tuple[int, int, list[dict[str, Any]]]:
    """SecurityHubBackend.batch_import_findings with AWS's update rules.

    BATCH_IMPORT_DOCS, "Determining whether to create or update a finding": "To determine
    whether to create or update a finding, Security Hub CSPM checks the ID field. If the value
    of ID doesn't match an existing finding, Security Hub CSPM creates a new finding. If ID
    matches an existing finding, Security Hub CSPM checks the UpdatedAt field for the update
    [...]: If UpdatedAt on the update matches or occurs before UpdatedAt on the existing
    finding, Security Hub CSPM ignores the update request. If UpdatedAt on the update occurs
    after UpdatedAt on the existing finding, Security Hub CSPM updates the existing finding."
    moto updated whatever the UpdatedAt. An ignored update is neither a failure nor reported:
    the docs do not say how it is counted, and the emulator counts it in SuccessCount. An
    update keeps the customer's attributes (CUSTOMER_FINDING_ATTRIBUTES) and, as moto does,
    every top-level attribute the update leaves out (the docs are silent on omitted ones);
    RecordState, for one, is replaced, so an update with ``RecordState: ARCHIVED`` archives the
    finding. ``Region``: "Security Hub CSPM populates this attribute automatically for each
    finding. You cannot update it using BatchImportFindings" (API reference,
    AwsSecurityFinding): it is the request's region. A finding without Resources (moto's
    check), an Id or a parseable UpdatedAt (required in ASFF) is a FailedFindings entry with
    ErrorCode InvalidInput.
    """
    failed: list[dict[str, Any]] = []
    succeeded = 0
    for data in findings:
        try:
            if not isinstance(data.get("Resources"), list) or not data["Resources"]:
                raise ValueError("Finding must contain at least one resource in the Resources array")
            finding_id = data["Id"]
            if not isinstance(finding_id, str) or not finding_id:
                raise ValueError("Finding must have an Id")
            updated_at = parse_timestamp(data["UpdatedAt"])
            incoming = dict(data, Region=self.region_name)
            existing = next((f for f in self.findings if f.id == finding_id), None)
            if existing is None:
                finding = Finding(finding_id, incoming)
                finding_sequence(finding)
                self.findings.append(finding)
            else:
                try:
                    stored_at = parse_timestamp(existing.data.get("UpdatedAt"))
                except (TypeError, ValueError):
                    stored_at = float("-inf")
                if updated_at > stored_at:
                    existing.data.update(
                        {k: v for k, v in incoming.items() if k not in CUSTOMER_FINDING_ATTRIBUTES}
                    )
            succeeded += 1
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            failed.append(
                {
                    "Id": data.get("Id", "") if isinstance(data, dict) else "",
                    "ErrorCode": "InvalidInput",
                    "ErrorMessage": f"{type(error).__name__}: {error}",
                }
            )
    return len(failed), succeeded, failed


def patch_securityhub() -> None:
    SecurityHubResponse.get_findings = get_findings
    SecurityHubBackend.batch_import_findings = batch_import_findings


# --------------------------------------------------------------------------------------
# Auto Scaling: the group's service-linked role
# --------------------------------------------------------------------------------------

_original_create_auto_scaling_group = AutoScalingResponse.create_auto_scaling_group
_original_update_auto_scaling_group = AutoScalingResponse.update_auto_scaling_group


def set_group_service_linked_role(response: AutoScalingResponse) -> None:
    """Keep the request's ServiceLinkedRoleARN on the group. moto answers every group with
    the default role, ``arn:<partition>:iam::<account>:role/aws-service-role/
    autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling``, as AWS does when none is given
    (CreateAutoScalingGroup, ServiceLinkedRoleARN: "By default, Amazon EC2 Auto Scaling uses a
    service-linked role named AWSServiceRoleForAutoScaling, which it creates if it does not
    exist"), but dropped a role named in the request (a custom suffix,
    ``AWSServiceRoleForAutoScaling_<suffix>``), which DescribeAutoScalingGroups must return
    ("ServiceLinkedRoleARN: The Amazon Resource Name (ARN) of the service-linked role that the
    Auto Scaling group uses to call other Amazon Web Services on your behalf", API reference,
    AutoScalingGroup). UpdateAutoScalingGroup takes the same parameter. The docs are silent
    on a role that does not exist; the emulator does not check it."""
    arn = response._get_param("ServiceLinkedRoleARN")
    name = response._get_param("AutoScalingGroupName")
    group = response.autoscaling_backend.autoscaling_groups.get(name)
    if arn and group is not None:
        group.service_linked_role_arn = arn


def create_auto_scaling_group(self: AutoScalingResponse) -> ActionResult:
    result = _original_create_auto_scaling_group(self)
    set_group_service_linked_role(self)
    return result


def update_auto_scaling_group(self: AutoScalingResponse) -> ActionResult:
    result = _original_update_auto_scaling_group(self)
    set_group_service_linked_role(self)
    return result


def patch_autoscaling() -> None:
    AutoScalingResponse.create_auto_scaling_group = create_auto_scaling_group
    AutoScalingResponse.update_auto_scaling_group = update_auto_scaling_group


# --------------------------------------------------------------------------------------
# KMS: test keys and cross-account key ARNs
# --------------------------------------------------------------------------------------

KEY_STATES = (
    "Creating",
    "Enabled",
    "Disabled",
    "PendingDeletion",
    "PendingImport",
    "PendingReplicaDeletion",
    "Unavailable",
    "Updating",
)
KEY_ORIGINS = ("AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE")


def upsert_kms_key(spec: dict[str, Any]) -> dict[str, Any]:
    """Create a key (any account) or modify ``key_id``: state, origin, policy, description."""
    account_id = spec.get("account_id", DEFAULT_ACCOUNT_ID)
    backend = kms_backends[account_id][spec.get("region", DEFAULT_REGION)]
    state, origin = spec.get("state"), spec.get("origin")
    if state is not None and state not in KEY_STATES:
        raise ControlError(400, f"state must be one of {KEY_STATES}")
    if origin is not None and origin not in KEY_ORIGINS:
        raise ControlError(400, f"origin must be one of {KEY_ORIGINS}")
    policy = spec.get("policy")
    if isinstance(policy, dict):
        policy = json.dumps(policy)
    if spec.get("key_id"):
        key = backend.keys.get(backend.get_key_id(spec["key_id"]))
        if key is None:
            raise ControlError(404, f"Key '{spec['key_id']}' does not exist")
    else:
        key = backend.create_key(
            policy,
            "ENCRYPT_DECRYPT",
            "SYMMETRIC_DEFAULT",
            spec.get("description", ""),
            None,
            False,
            origin or "AWS_KMS",
        )
        if origin == "EXTERNAL" and state is None:
            state = "PendingImport"
    if origin is not None:
        key.origin = origin
    if policy is not None:
        key.policy = policy
    if spec.get("description") is not None:
        key.description = spec["description"]
    if state is not None:
        set_key_state(key, state)
    return {"key_id": key.id, "arn": key.arn, "account_id": account_id}


def set_key_state(key: Key, state: str) -> None:
    key.key_state = state
    key.enabled = state == "Enabled"
    key.deletion_date = utcnow() + timedelta(days=7) if state == "PendingDeletion" else None


def foreign_kms_owner(key_id: str, caller_account: str) -> tuple[str, str] | None:
    """(account, region) of a key/alias ARN owned by another account than the caller's."""
    match = re.fullmatch(r"arn:[^:]+:kms:([^:]+):(\d{12}):(?:key|alias)/.+", key_id or "")
    if not match or match.group(2) == caller_account:
        return None
    return match.group(2), match.group(1)


_original_describe_key = KmsResponse.describe_key
_original_get_key_policy = KmsResponse.get_key_policy


def kms_describe_key(self: KmsResponse) -> str:
    """DescribeKey that also resolves another account's key or alias ARN (as AWS allows)."""
    key_id = self._get_param("KeyId") or ""
    owner = foreign_kms_owner(key_id, self.current_account)
    if owner is None:
        return _original_describe_key(self)
    backend = kms_backends[owner[0]][owner[1]]
    alias_name = backend.get_alias_name(key_id)
    raw_id = (
        backend.get_key_id_from_alias(alias_name)
        if alias_name.startswith("alias/")
        else backend.get_key_id(key_id)
    )
    if raw_id not in backend.keys:
        raise KmsNotFoundException(f"Key '{key_id}' does not exist")
    return json.dumps(backend.describe_key(raw_id).to_dict())


def kms_get_key_policy(self: KmsResponse) -> str:
    """GetKeyPolicy refuses keys of other accounts, as AWS does."""
    key_id = self._get_param("KeyId") or ""
    if foreign_kms_owner(key_id, self.current_account) is not None:
        raise JsonRESTError(
            "AccessDeniedException",
            f"User: arn:aws:iam::{self.current_account}:root is not authorized to perform: "
            f"kms:GetKeyPolicy on resource: {key_id} because no resource-based policy allows "
            "the kms:GetKeyPolicy action",
        )
    return _original_get_key_policy(self)


_original_sns_publish = SNSResponse.publish


def sns_publish(self: SNSResponse) -> str:
    """Publish that checks the Subject as SNS does; moto accepts any subject.

    https://docs.aws.amazon.com/sns/latest/api/API_Publish.html, Subject: "Constraints:
    Subjects must be ASCII text that begins with a letter, number, or punctuation mark; must
    not include line breaks or control characters; and must be less than 100 characters long."
    The error is InvalidParameter (listed under the same page's Errors).
    """
    subject = self._get_param("Subject")
    if subject is not None:
        bad = (
            len(subject) >= 100
            or not subject.isascii()
            or any(ord(c) < 32 or ord(c) == 127 for c in subject)
            or not (subject[:1].isalnum() or (subject[:1].isprintable() and not subject[:1].isspace()))
        )
        if bad:
            raise SnsInvalidParameterValue("Invalid parameter: Subject")
    return _original_sns_publish(self)


def peek_sqs_messages(args: Any) -> dict[str, Any]:
    """Every message of a queue with its body and DelaySeconds, delayed or in flight included.

    A test inspection route, not an AWS behaviour (SQS has no such call): it lets a test read
    what the function put on its queue for later without waiting out the message's delay.
    """
    from moto.sqs.models import sqs_backends

    backend = sqs_backends[args.get("account_id", DEFAULT_ACCOUNT_ID)][args.get("region", DEFAULT_REGION)]
    name = args.get("queue_name") or ""
    queue = backend.queues.get(name)
    if queue is None:
        raise ControlError(404, f"no queue {name!r}")
    return {
        "messages": [
            {"body": m.body, "delayed_until_ms": getattr(m, "delayed_until", 0)}
            for m in list(queue._messages)
        ]
    }


def install_patches() -> None:
    """Patch moto in-process; must run before the server handles requests.

    Idempotent: the originals wrapped by the KMS patches were captured at import time.
    """
    patch_ec2_filters()
    patch_ec2()
    CloudTrailResponse.lookup_events = lookup_events
    IamResponse.simulate_principal_policy = simulate_principal_policy
    patch_iam_users()
    patch_organizations()
    patch_sts()
    KmsResponse.describe_key = kms_describe_key
    KmsResponse.get_key_policy = kms_get_key_policy
    SNSResponse.publish = sns_publish
    patch_securityhub()
    patch_autoscaling()


# --------------------------------------------------------------------------------------
# Control routes and the WSGI middleware
# --------------------------------------------------------------------------------------


class Emulator:
    """The WSGI app: control routes, call recording and faults around moto's app."""

    def __init__(self, moto_app: Callable[..., Any]):
        self.moto_app = moto_app
        self.calls = CallLog()
        self.faults = FaultRegistry()
        self.routes: dict[tuple[str, str], Callable[[Request], Any]] = {
            ("GET", "health"): lambda request: {"ok": True},
            ("POST", "reset"): self.reset,
            ("POST", "ec2/launch-failure"): lambda request: apply_launch_failure(json_body(request)),
            ("POST", "cloudtrail/events"): self.store_trail_events,
            ("POST", "cloudtrail/throttle"): self.set_throttle,
            ("POST", "kms/key"): lambda request: upsert_kms_key(json_body(request)),
            ("POST", "iam/role"): lambda request: upsert_iam_role(json_body(request)),
            ("GET", "calls"): self.list_calls,
            ("GET", "sqs/messages"): lambda request: peek_sqs_messages(request.args),
            ("POST", "calls/reset"): self.reset_calls,
            ("GET", "faults"): lambda request: {"faults": [f.to_dict() for f in self.faults.list()]},
            ("POST", "faults"): lambda request: {"id": self.faults.add(json_body(request)).id},
            ("DELETE", "faults"): self.clear_faults,
        }

    # -- WSGI entry point ------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX):
            return self.control(Request(environ))(environ, start_response)
        if path.startswith("/moto-api"):
            return self.moto_app(environ, start_response)
        return self.aws_request(environ, start_response)

    def aws_request(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Record the call, then apply the first matching fault or hand over to moto."""
        body = buffer_body(environ)
        service, region = signing_scope(environ)
        call = Call(service, request_action(environ, body, service), region, time.time())
        self.calls.add(call)
        fault = self.faults.take(call, body.decode("utf-8", errors="replace"))
        if fault is None:
            return self.moto_app(environ, start_response)
        if fault.kind == "delay":
            time.sleep(fault.delay_seconds)
            return self.moto_app(environ, start_response)
        protocol = wire_protocol(environ, service)
        if fault.kind == "error":
            response = error_response(fault, protocol, environ)
        elif fault.kind == "http":
            response = http_failure_response(fault)
        else:
            response = self.malformed_response(fault, environ, protocol)
        return response(environ, start_response)

    def malformed_response(self, fault: Fault, environ: dict[str, Any], protocol: str) -> Response:
        """moto's real answer cut in half (or the fault's body), with a status of 200."""
        answer = Response.from_app(self.moto_app, environ)
        body = fault.body.encode() if fault.body is not None else truncate_body(answer.get_data())
        return Response(body, status=fault.status, content_type=protocol_content_type(protocol, environ))

    # -- control routes ---------------------------------------------------------------

    def control(self, request: Request) -> Response:
        """Dispatch ``/_kld/<route>``; handler results are sent as JSON."""
        route = request.path[len(CONTROL_PREFIX) :].strip("/")
        try:
            if request.method == "DELETE" and route.startswith("faults/"):
                result = self.delete_fault(route[len("faults/") :])
            elif (request.method, route) in self.routes:
                result = self.routes[(request.method, route)](request)
            else:
                raise ControlError(404, f"no control route {request.method} {request.path}")
            return json_response(result)
        except ControlError as error:
            return json_response({"error": error.message}, error.status)
        except (KeyError, ValueError, TypeError) as error:  # malformed control input
            return json_response({"error": f"bad request: {error!r}"}, 400)

    def reset(self, request: Request) -> dict[str, Any]:
        moto_api_backend.reset()
        reset_organizations()
        TRAIL_STORE.reset()
        self.calls.clear()
        self.faults.clear()
        return {"ok": True}

    def store_trail_events(self, request: Request) -> dict[str, Any]:
        spec = json_body(request)
        events = spec.get("events")
        if not isinstance(events, list):
            raise ControlError(400, "events must be a list")
        ids = TRAIL_STORE.store(
            spec.get("account_id", DEFAULT_ACCOUNT_ID), spec.get("region", DEFAULT_REGION), events
        )
        return {"stored": len(ids), "event_ids": ids}

    def set_throttle(self, request: Request) -> dict[str, Any]:
        TRAIL_STORE.throttle_enabled = bool(json_body(request).get("enabled", True))
        return {"enabled": TRAIL_STORE.throttle_enabled}

    def list_calls(self, request: Request) -> dict[str, Any]:
        args = request.args
        calls = self.calls.query(args.get("service"), args.get("region"), args.get("action"))
        return {"calls": [c.to_dict() for c in calls]}

    def reset_calls(self, request: Request) -> dict[str, Any]:
        self.calls.clear()
        return {"ok": True}

    def clear_faults(self, request: Request) -> dict[str, Any]:
        self.faults.clear()
        return {"ok": True}

    def delete_fault(self, fault_id: str) -> dict[str, Any]:
        if not self.faults.remove(fault_id):
            raise ControlError(404, f"no fault {fault_id}")
        return {"ok": True}


def buffer_body(environ: dict[str, Any]) -> bytes:
    """Read the whole request body and put it back so moto can read it again."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):  # chunked: werkzeug already de-chunks
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def json_body(request: Request) -> dict[str, Any]:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise ControlError(400, "request body must be a JSON object")
    return body


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


# --------------------------------------------------------------------------------------
# Server lifecycle and command line
# --------------------------------------------------------------------------------------


class EmulatorServer:
    """moto + the emulator middleware on a threaded werkzeug server in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> str:
        """Bind (port 0 = a free port), start serving and return the base URL."""
        install_patches()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        app = Emulator(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="kld-emulator", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def emulator_environment(url: str, base: dict[str, str]) -> dict[str, str]:
    """The environment a command run against the emulator gets."""
    env = dict(base)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    env.setdefault("AWS_REGION", region)
    env.setdefault("AWS_DEFAULT_REGION", region)
    env.update(
        {
            "KLD_EMULATOR_URL": url,
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "kld-emulator",
            "AWS_SECRET_ACCESS_KEY": "kld-emulator",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(host: str, port: int, parent_pid: int | None) -> int:
    """``serve`` mode: run until SIGTERM/SIGINT or until ``parent_pid`` goes away."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    watch_reparenting = parent_pid is not None and parent_pid == os.getppid()
    with EmulatorServer(host, port) as server:
        print(f"KLD_EMULATOR_URL={server.url}", flush=True)
        sys.stdout = sys.stderr  # keep stdout to the single URL line
        while not stop.wait(1.0):
            if parent_pid is not None and (
                not pid_alive(parent_pid) or (watch_reparenting and os.getppid() != parent_pid)
            ):
                LOG.warning("parent process %s is gone; stopping", parent_pid)
                break
    return 0


def exit_status(returncode: int) -> int:
    """A shell-style exit status: 128+N for a child killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def run_command(command: list[str], host: str, port: int) -> int:
    """``run`` mode: CMD against a fresh emulator; always stops the server."""
    if not command:
        LOG.error("run: no command given (usage: emulator.py run -- CMD ARGS...)")
        return 2
    with EmulatorServer(host, port) as server:
        sys.stdout.flush()
        sys.stdout = sys.stderr  # CMD owns stdout; anything moto prints goes to stderr
        try:
            child = subprocess.Popen(command, env=emulator_environment(server.url, dict(os.environ)))
        except OSError as error:
            LOG.error("run: cannot start %s: %s", command[0], error)
            return 127
        previous = signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
        try:
            return exit_status(child.wait())
        except KeyboardInterrupt:  # the child got the same Ctrl-C; give it time to exit
            try:
                return exit_status(child.wait(timeout=10))
            except subprocess.TimeoutExpired:
                child.kill()
                return exit_status(child.wait())
        finally:
            signal.signal(signal.SIGTERM, previous)
            if child.poll() is None:
                child.kill()
                child.wait()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="moto-based AWS emulator for kms-launch-doctor tests")
    modes = parser.add_subparsers(dest="mode", required=True)
    serve_parser = modes.add_parser("serve", help="run the emulator until signalled")
    serve_parser.add_argument("--parent-pid", type=int, help="stop when this process exits")
    run_parser = modes.add_parser("run", help="run a command against a fresh emulator")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    for mode in (serve_parser, run_parser):
        mode.add_argument("--host", default="127.0.0.1")
        mode.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    if args.mode == "run" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="kld-emulator: %(levelname)s %(message)s"
    )
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.mode == "serve":
        return serve(args.host, args.port, args.parent_pid)
    return run_command(args.command, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
