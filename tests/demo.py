"""`make run`: seed the AWS Knowledge Center scenario in the emulator, then diagnose it.

An IAM user `test` with full EC2 permissions starts an instance whose root volume is
encrypted with a customer managed KMS key; the user may not kms:CreateGrant on that key, so
EC2 cannot get its grant, the instance goes pending and falls back to stopped with
`Client.InternalError: Client error on launch`, and CloudTrail records the denied
CreateGrant. Runs under `tests/emulator run`, which sets AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ROOT = Path(__file__).resolve().parent.parent


def control(path: str, body: dict) -> dict:
    """POST to one of the emulator's /_kld/ control routes."""
    req = urllib.request.Request(
        os.environ["KLD_EMULATOR_URL"] + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def seed() -> str:
    iam = boto3.client("iam", region_name=REGION)
    kms = boto3.client("kms", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)

    user = iam.create_user(UserName="test")["User"]
    iam.put_user_policy(
        UserName="test",
        PolicyName="AmazonEC2FullAccess",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}),
    )
    key_arn = kms.create_key(Description="EBS volume key")["KeyMetadata"]["Arn"]
    instance = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "Encrypted": True, "KmsKeyId": key_arn}}],
    )["Instances"][0]["InstanceId"]
    control("/_kld/ec2/launch-failure", {"region": REGION, "instance_id": instance, "state": "stopped",
                                         "code": "Client.InternalError", "message": "Client.InternalError: Client error on launch"})

    started = datetime.now(UTC) - timedelta(minutes=4)
    identity = {"type": "IAMUser", "principalId": "AIDACKCEVSQ6C2EXAMPLE", "arn": user["Arn"], "accountId": ACCOUNT,
                "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "test"}
    common = {"eventVersion": "1.09", "userIdentity": identity, "awsRegion": REGION, "readOnly": False,
              "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": ACCOUNT}
    control("/_kld/cloudtrail/events", {"region": REGION, "events": [
        {**common, "eventTime": stamp(started), "eventSource": "ec2.amazonaws.com", "eventName": "StartInstances",
         "sourceIPAddress": "203.0.113.10", "userAgent": "aws-cli/2.15.0", "eventID": str(uuid.uuid4()), "requestID": str(uuid.uuid4()),
         "requestParameters": {"instancesSet": {"items": [{"instanceId": instance}]}},
         "responseElements": {"instancesSet": {"items": [{"instanceId": instance, "currentState": {"code": 0, "name": "pending"},
                                                          "previousState": {"code": 80, "name": "stopped"}}]}}},
        {**common, "eventTime": stamp(started + timedelta(seconds=2)), "eventSource": "kms.amazonaws.com", "eventName": "CreateGrant",
         "sourceIPAddress": "ec2.amazonaws.com", "userAgent": "ec2.amazonaws.com", "eventID": str(uuid.uuid4()), "requestID": str(uuid.uuid4()),
         "errorCode": "AccessDenied",
         "errorMessage": f"User: {user['Arn']} is not authorized to perform: kms:CreateGrant on resource: {key_arn} "
                         "because no identity-based policy allows the kms:CreateGrant action",
         "requestParameters": {"keyId": key_arn, "granteePrincipal": "ec2.amazonaws.com"},
         "resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": key_arn}]},
    ]})
    return instance


def main() -> int:
    instance = seed()
    print(f"Seeded the Knowledge Center scenario: user/test started {instance} in {REGION}; it fell back to stopped.\n", flush=True)
    tool = ROOT / "target" / "debug" / "kms-launch-doctor"
    cmd = [str(tool), "diagnose", "--instance-id", instance, "--region", REGION, "--format", "text"]
    print("$ kms-launch-doctor " + " ".join(cmd[1:]) + "\n", flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
