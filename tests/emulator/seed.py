"""Seeding scenarios in a running emulator, for tests/demo.py and bench/: boto3 against moto
plus the ``/_kld/`` control routes, at ``KLD_EMULATOR_URL`` (set by ``python tests/emulator run``).

The Knowledge Center scenario (``seed_user_scenario``): an IAM user with EC2 full access starts
an instance whose volumes are encrypted with customer managed keys; it may not kms:CreateGrant
on them, so EC2 cannot get its grant, the instance falls back to stopped with
``Client.InternalError: Client error on launch``, and CloudTrail records the StartInstances and
the denied CreateGrant. The records' shapes follow tests/fixtures/cloudtrail and the Rust
scenario tests' (tests/common/mod.rs ``launch_record``). Every helper takes an ``account``
(default 123456789012, the emulator's own): moto acts in another one through the
``x-moto-account-id`` header, and the control routes take ``account_id``.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

ACCOUNT = "123456789012"
AMI = "ami-12c6146b"
FAILURE = {"code": "Client.InternalError", "message": "Client.InternalError: Client error on launch"}
EC2_FULL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]})


# --- The emulator's control routes ----------------------------------------------------------

def http(method: str, path: str, body: Any = None) -> Any:
    """One control route, JSON in and out."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(os.environ["KLD_EMULATOR_URL"] + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def recorded_calls() -> list[dict]:
    return http("GET", "/_kld/calls")["calls"]


def reset_calls() -> None:
    http("POST", "/_kld/calls/reset", {})


def fail_launch(region: str, instance: str, account: str = ACCOUNT) -> None:
    """Leaves the instance as a launch that failed on its key does: stopped, Client.InternalError."""
    http("POST", "/_kld/ec2/launch-failure", {"region": region, "account_id": account, "instance_id": instance,
                                              "state": "stopped", **FAILURE})


def post_records(region: str, events: list[dict], account: str = ACCOUNT) -> None:
    http("POST", "/_kld/cloudtrail/events", {"region": region, "account_id": account, "events": events})


# --- Clients ------------------------------------------------------------------------------------

_clients: dict[tuple[str, str, str], Any] = {}


def client(service: str, region: str, account: str = ACCOUNT) -> Any:
    """A boto3 client acting in `account` (moto's x-moto-account-id header beyond the default one), cached."""
    k = (service, region, account)
    if k not in _clients:
        c = boto3.client(service, region_name=region)
        if account != ACCOUNT:
            c.meta.events.register("before-sign.*.*",
                                   lambda request, **_: request.headers.__setitem__("x-moto-account-id", account))
        _clients[k] = c
    return _clients[k]


# --- CloudTrail records ---------------------------------------------------------------------

def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def user_identity(arn: str, name: str, account: str = ACCOUNT) -> dict:
    return {"type": "IAMUser", "principalId": "AIDACKCEVSQ6C2EXAMPLE", "arn": arn, "accountId": account,
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": name}


def role_identity(role_arn: str, role_name: str, session: str, account: str = ACCOUNT) -> dict:
    return {"type": "AssumedRole", "principalId": f"AROAEXAMPLE:{session}",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role_name}/{session}", "accountId": account,
            "accessKeyId": "ASIAEXAMPLE",
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROAEXAMPLE", "arn": role_arn,
                                                 "accountId": account, "userName": role_name},
                               "attributes": {"creationDate": stamp(datetime.now(UTC) - timedelta(minutes=30)),
                                              "mfaAuthenticated": "false"}}}


def launch_record(region: str, instance: str, identity: dict, at: datetime) -> dict:
    """The StartInstances that put the instance in pending (in the identity's account)."""
    return {"eventVersion": "1.09", "userIdentity": identity, "eventTime": stamp(at),
            "eventSource": "ec2.amazonaws.com", "eventName": "StartInstances", "awsRegion": region,
            "sourceIPAddress": "203.0.113.10", "userAgent": "aws-cli/2.15.0",
            "requestParameters": {"instancesSet": {"items": [{"instanceId": instance}]}},
            "responseElements": {"instancesSet": {"items": [{"instanceId": instance,
                                                             "currentState": {"code": 0, "name": "pending"},
                                                             "previousState": {"code": 80, "name": "stopped"}}]}},
            "requestID": str(uuid.uuid4()), "eventID": str(uuid.uuid4()), "readOnly": False,
            "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": identity["accountId"],
            "eventCategory": "Management"}


def denied_grant(region: str, key_arn: str, identity: dict, caller_arn: str, at: datetime) -> dict:
    """The CreateGrant EC2 makes on the caller's behalf, denied (in the identity's account)."""
    account = identity["accountId"]
    return {"eventVersion": "1.09", "userIdentity": identity, "eventTime": stamp(at),
            "eventSource": "kms.amazonaws.com", "eventName": "CreateGrant", "awsRegion": region,
            "sourceIPAddress": "ec2.amazonaws.com", "userAgent": "ec2.amazonaws.com", "errorCode": "AccessDenied",
            "errorMessage": f"User: {caller_arn} is not authorized to perform: kms:CreateGrant on resource: {key_arn} "
                            "because no identity-based policy allows the kms:CreateGrant action",
            "requestParameters": {"keyId": key_arn, "granteePrincipal": "ec2.amazonaws.com", "constraints": {}},
            "responseElements": None, "requestID": str(uuid.uuid4()), "eventID": str(uuid.uuid4()),
            "readOnly": False, "resources": [{"accountId": account, "type": "AWS::KMS::Key", "ARN": key_arn}],
            "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": account}


def failure_records(launches: dict, now: datetime, ago: Callable[[int], timedelta]) -> list[dict]:
    """The records of ``seed_launches``' failures: per instance a StartInstances by the user at
    now - ago(n) and EC2's denied CreateGrant 2 s later."""
    region, arn, key = launches["region"], launches["principal"], launches["keys"][0]
    identity = user_identity(arn, launches["user"], launches["account"])
    events = []
    for n, instance in enumerate(launches["instance_ids"]):
        at = now - ago(n)
        events.append(launch_record(region, instance, identity, at))
        events.append(denied_grant(region, key, identity, arn, at + timedelta(seconds=2)))
    return events


# --- Scenarios ----------------------------------------------------------------------------------

def ec2_user(region: str, user: str, account: str = ACCOUNT) -> str:
    """An IAM user with EC2 full access (and no KMS permission); returns its ARN."""
    iam = client("iam", region, account)
    arn = iam.create_user(UserName=user)["User"]["Arn"]
    iam.put_user_policy(UserName=user, PolicyName="AmazonEC2FullAccess", PolicyDocument=EC2_FULL)
    return arn


def run_instances(region: str, keys: list[str], count: int = 1, account: str = ACCOUNT) -> list[str]:
    """`count` instances, each with one 8 GiB volume per key (/dev/xvda, xvdb, ...) encrypted with it."""
    mappings = [{"DeviceName": f"/dev/xvd{chr(ord('a') + i)}", "Ebs": {"VolumeSize": 8, "Encrypted": True, "KmsKeyId": k}}
                for i, k in enumerate(keys)]
    ids: list[str] = []
    while len(ids) < count:
        n = min(100, count - len(ids))  # launches of at most 100 at a time
        run = client("ec2", region, account).run_instances(ImageId=AMI, MinCount=n, MaxCount=n, InstanceType="t3.micro",
                                                           BlockDeviceMappings=mappings)
        ids += [i["InstanceId"] for i in run["Instances"]]
    return ids


def seed_user_scenario(region: str, user: str, n_keys: int = 1) -> dict:
    """The Knowledge Center scenario (n_keys=1), seeded 4 minutes ago: IAM user with EC2 full
    access starts an instance whose volumes are encrypted with customer managed keys it may not
    kms:CreateGrant on."""
    arn = ec2_user(region, user)
    kms = client("kms", region)
    keys = [kms.create_key(Description="EBS volume key" + (f" {i}" if n_keys > 1 else ""))["KeyMetadata"]["Arn"]
            for i in range(n_keys)]
    [instance] = run_instances(region, keys)
    fail_launch(region, instance)
    started = datetime.now(UTC) - timedelta(minutes=4)
    identity = user_identity(arn, user)
    events = [launch_record(region, instance, identity, started)]
    events += [denied_grant(region, k, identity, arn, started + timedelta(seconds=2)) for k in keys]
    post_records(region, events)
    return {"region": region, "instance_id": instance, "principal": arn, "keys": keys}


def seed_role_scenario(region: str, role: str) -> dict:
    """An assumed-role caller: the fix belongs on the role, not on the session."""
    iam, kms = client("iam", region), client("kms", region)
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                                                                "Action": "sts:AssumeRole"}]})
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="AmazonEC2FullAccess", PolicyDocument=EC2_FULL)
    key = kms.create_key(Description="EBS volume key")["KeyMetadata"]["Arn"]
    [instance] = run_instances(region, [key])
    fail_launch(region, instance)
    started = datetime.now(UTC) - timedelta(minutes=4)
    identity = role_identity(arn, role, "deploy-session")
    post_records(region, [
        launch_record(region, instance, identity, started),
        denied_grant(region, key, identity, identity["arn"], started + timedelta(seconds=2)),
    ])
    return {"region": region, "instance_id": instance, "principal": arn, "keys": [key]}


def seed_launches(region: str, user: str, count: int, account: str = ACCOUNT, key_description: str | None = None) -> dict:
    """In `account` and `region`: an IAM user with EC2 full access and no kms:CreateGrant, a key,
    `count` instances with an encrypted volume on that key, each in the failed-launch state. No
    CloudTrail records yet: ``failure_records`` makes them, posted when the run wants them visible."""
    arn = ec2_user(region, user, account)
    key = client("kms", region, account).create_key(
        Description=key_description or f"EBS key of {user}")["KeyMetadata"]["Arn"]
    ids = run_instances(region, [key], count, account)
    for instance in ids:
        fail_launch(region, instance, account)
    return {"account": account, "region": region, "user": user, "principal": arn, "keys": [key], "instance_ids": ids}
