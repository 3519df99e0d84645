"""KMS: keys prepared for tests (``POST /_kld/kms/key``) and another account's key ARNs
(DescribeKey resolves them, GetKeyPolicy refuses them).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import JsonRESTError
from moto.core.utils import utcnow
from moto.kms.exceptions import NotFoundException as KmsNotFoundException
from moto.kms.models import Key, kms_backends
from moto.kms.responses import KmsResponse

from .common import ControlError, DEFAULT_REGION


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


def patch_kms() -> None:
    """Install the cross-account DescribeKey and GetKeyPolicy (idempotent)."""
    KmsResponse.describe_key = kms_describe_key
    KmsResponse.get_key_policy = kms_get_key_policy
