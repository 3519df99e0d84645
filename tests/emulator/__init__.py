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

Modules, one per section of what the emulator adds: ``common`` (shared helpers), ``calls``
(call recording and fault injection), ``ec2`` (launch failures, EBS encryption, AMIs, Auto
Scaling), ``cloudtrail``, ``iam`` (policy evaluation for SimulatePrincipalPolicy, user
boundaries), ``organizations``, ``sts``, ``securityhub``, ``kms``, ``messaging`` (SNS, SQS),
``server`` (the patches installed, the middleware, the command line). ``runtime_api`` is the
Lambda Runtime API stub the Rust tests and the benchmarks run the binary against; ``seed``
prepares scenarios in a running emulator for ``tests/demo.py`` and ``bench/``. The self-test
is ``tests/emulator/tests`` (``python -m unittest discover -s tests/emulator -t tests``).
Importing the package imports no moto: ``runtime_api`` and ``seed`` run without it.

Usage
-----
``python tests/emulator serve [--host 127.0.0.1] [--port 0] [--parent-pid PID]``
    Start the server and print exactly one line, ``KLD_EMULATOR_URL=http://127.0.0.1:<port>``,
    to stdout once it accepts connections. Runs until SIGTERM/SIGINT, or until the parent
    process (``--parent-pid``) disappears (checked every second). Port 0 picks a free port.
    Anything moto itself prints afterwards goes to stderr, never stdout.

``python tests/emulator run [--host 127.0.0.1] [--port 0] -- CMD ARGS...``
    Start the server in-process, run CMD with the environment below added, stop the server
    whatever happens and exit with CMD's exit code (128+N if CMD died of signal N):
    ``KLD_EMULATOR_URL`` and ``AWS_ENDPOINT_URL`` = the server URL,
    ``AWS_ACCESS_KEY_ID`` = ``AWS_SECRET_ACCESS_KEY`` = ``kld-emulator``,
    ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` = the one already set, else ``us-east-1``,
    ``AWS_EC2_METADATA_DISABLED=true``; ``AWS_PROFILE`` and ``AWS_SESSION_TOKEN`` are removed.

``python tests/emulator runtime-api [--timeout-seconds 900]``
    A Lambda Runtime API stub (``runtime_api``; no moto): reads one line from stdin, a JSON
    list of events, prints ``KLD_RUNTIME_API=127.0.0.1:<port>`` (the value for
    ``AWS_LAMBDA_RUNTIME_API``), then one JSON line per answer the function posts,
    ``{"request_id", "kind": "response"|"error", "body"}``; exits when stdin closes.

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
    ``state-reason-message`` work on such instances (the last is added by ``ec2.py``).

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

import os

# Importing moto builds a boto3 Session: a profile named in the environment (maybe one that
# does not exist here) must not be read. The emulator never needs real credentials. Here, so
# that it runs before any module of the package imports moto.
os.environ.pop("AWS_PROFILE", None)
