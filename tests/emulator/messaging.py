"""SNS and SQS: Publish checks its Subject as SNS does; a test view of a queue's messages
(``GET /_kld/sqs/messages``).
"""

from __future__ import annotations

from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.sns.exceptions import InvalidParameterValue as SnsInvalidParameterValue
from moto.sns.responses import SNSResponse

from .common import ControlError, DEFAULT_REGION


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


def patch_sns() -> None:
    """Install the Publish Subject check (idempotent)."""
    SNSResponse.publish = sns_publish


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
