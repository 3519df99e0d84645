"""SNS Publish's Subject check (``messaging``).
"""

from __future__ import annotations

from .base import EmulatorTestCase


class SnsTests(EmulatorTestCase):
    def test_publish_subject_must_be_under_100_ascii_characters(self) -> None:
        # https://docs.aws.amazon.com/sns/latest/api/API_Publish.html (Subject constraints).
        sns = self.client("sns")
        topic = sns.create_topic(Name="subjects")["TopicArn"]
        sns.publish(TopicArn=topic, Message="m", Subject="x" * 99)
        for bad in ("x" * 100, "line\nbreak", "caf\u00e9", " leading space"):
            with self.subTest(subject=bad):
                self.assertClientError("InvalidParameter", sns.publish, TopicArn=topic, Message="m", Subject=bad)
        sns.publish(TopicArn=topic, Message="no subject at all")
