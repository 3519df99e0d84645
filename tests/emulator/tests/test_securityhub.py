"""GetFindings filters and paging, BatchImportFindings updates (``securityhub``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config

from emulator.securityhub import FINDING_STRING_FIELDS
from .base import ACCOUNT, BASE_TIME, EmulatorTestCase, NO_RETRIES, OTHER_ACCOUNT, iso


PRODUCT_ARN = f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/{ACCOUNT}/default"


def asff(finding_id: str, updated: datetime, **extra: Any) -> dict[str, Any]:
    """A minimal ASFF finding of this account's default product, ACTIVE unless told."""
    finding = {
        "SchemaVersion": "2018-10-08",
        "Id": finding_id,
        "ProductArn": PRODUCT_ARN,
        "GeneratorId": "kms-launch-doctor/caller-lacks-create-grant",
        "AwsAccountId": ACCOUNT,
        "Types": ["Software and Configuration Checks/AWS Security Best Practices"],
        "CreatedAt": iso(BASE_TIME),
        "UpdatedAt": iso(updated),
        "Severity": {"Label": "MEDIUM"},
        "Title": f"finding {finding_id}",
        "Description": "d",
        "RecordState": "ACTIVE",
        "Resources": [{"Type": "AwsEc2Instance", "Id": f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-{finding_id}"}],
    }
    finding.update(extra)
    return finding


def eq(*values: str, comparison: str = "EQUALS") -> list[dict[str, str]]:
    return [{"Value": v, "Comparison": comparison} for v in values]


class SecurityHubTests(EmulatorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.hub = self.client("securityhub")
        # Out-of-range and malformed inputs, which botocore would refuse before sending.
        self.raw_hub = boto3.client(
            "securityhub", region_name="us-east-1", endpoint_url=self.url, aws_access_key_id="kld-emulator",
            aws_secret_access_key="kld-emulator", config=NO_RETRIES.merge(Config(parameter_validation=False)),
        )

    def imported(self, *findings: dict[str, Any]) -> dict[str, Any]:
        result = self.hub.batch_import_findings(Findings=list(findings))
        self.assertEqual((result["FailedCount"], result["SuccessCount"]), (0, len(findings)), result)
        return result

    def ids(self, **kwargs: Any) -> list[str]:
        return [f["Id"] for f in self.hub.get_findings(**kwargs)["Findings"]]

    def test_without_filters_every_finding_in_import_order(self) -> None:
        self.imported(asff("a", BASE_TIME), asff("b", BASE_TIME, RecordState="ARCHIVED"), asff("c", BASE_TIME))
        found = self.hub.get_findings()
        self.assertEqual([f["Id"] for f in found["Findings"]], ["a", "b", "c"])
        self.assertNotIn("NextToken", found)
        # Region is Security Hub's, from the request.
        self.assertEqual({f["Region"] for f in found["Findings"]}, {"us-east-1"})
        self.assertEqual(self.client("securityhub", "eu-west-1").get_findings()["Findings"], [])

    def test_string_filters_or_within_a_field_and_across_fields(self) -> None:
        # https://docs.aws.amazon.com/securityhub/1.0/APIReference/API_StringFilter.html
        other_product = f"arn:aws:securityhub:us-east-1:{ACCOUNT}:product/aws/guardduty"
        self.imported(
            asff("kld-1", BASE_TIME),
            asff("kld-2", BASE_TIME, GeneratorId="kms-launch-doctor/key-disabled"),
            asff("kld-3", BASE_TIME, Resources=[
                {"Type": "AwsEc2Instance", "Id": f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-3"},
                {"Type": "AwsKmsKey", "Id": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k-3"},
            ]),
            asff("other-1", BASE_TIME, ProductArn=other_product, AwsAccountId=OTHER_ACCOUNT),
        )
        # Positive comparisons of one field are ORed.
        self.assertEqual(self.ids(Filters={"Id": eq("kld-1", "kld-3", "missing")}), ["kld-1", "kld-3"])
        self.assertEqual(self.ids(Filters={"Id": eq("kld-", comparison="PREFIX")}), ["kld-1", "kld-2", "kld-3"])
        self.assertEqual(self.ids(Filters={"Title": eq("other", comparison="CONTAINS")}), ["other-1"])
        # Negative ones are ANDed; PREFIX first, then the exclusions.
        self.assertEqual(
            self.ids(Filters={"Id": eq("kld-", comparison="PREFIX") + eq("kld-1", "kld-2", comparison="NOT_EQUALS")}),
            ["kld-3"],
        )
        self.assertEqual(self.ids(Filters={"Id": eq("kld", comparison="PREFIX_NOT_EQUALS")}), ["other-1"])
        self.assertEqual(self.ids(Filters={"Title": eq("kld", "1", comparison="NOT_CONTAINS")}), [])
        # Different fields are ANDed.
        self.assertEqual(
            self.ids(Filters={"ProductArn": eq(PRODUCT_ARN), "GeneratorId": eq("kms-launch-doctor/key-disabled")}),
            ["kld-2"],
        )
        self.assertEqual(self.ids(Filters={"AwsAccountId": eq(OTHER_ACCOUNT)}), ["other-1"])
        self.assertEqual(self.ids(Filters={"Region": eq("us-east-1"), "Id": eq("kld-2")}), ["kld-2"])
        self.assertEqual(self.ids(Filters={"Region": eq("eu-west-1")}), [])
        self.assertEqual(self.ids(Filters={"RecordState": eq("ACTIVE"), "ProductArn": eq(other_product)}), ["other-1"])
        # ResourceId matches any of the finding's Resources[].Id; a negative one excludes it.
        key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/k-3"
        self.assertEqual(self.ids(Filters={"ResourceId": eq(key)}), ["kld-3"])
        self.assertEqual(self.ids(Filters={"ResourceType": eq("AwsKmsKey")}), ["kld-3"])
        self.assertEqual(
            self.ids(Filters={"ResourceId": eq(key, comparison="NOT_EQUALS"), "Id": eq("kld-", comparison="PREFIX")}),
            ["kld-1", "kld-2"],
        )
        # Case-sensitive ("Filter values are case sensitive").
        self.assertEqual(self.ids(Filters={"Id": eq("KLD-1")}), [])

    def test_archiving_update_and_record_state_filter(self) -> None:
        self.imported(asff("kld-1", BASE_TIME), asff("kld-2", BASE_TIME))
        self.imported(asff("kld-1", BASE_TIME + timedelta(minutes=5), RecordState="ARCHIVED"))
        active = {"RecordState": eq("ACTIVE")}
        self.assertEqual(self.ids(Filters=active), ["kld-2"])
        self.assertEqual(self.ids(Filters={"RecordState": eq("ARCHIVED")}), ["kld-1"])
        self.assertEqual(self.ids(Filters={"Id": eq("kld-1", "kld-2"), **active}), ["kld-2"])
        [stored] = self.hub.get_findings(Filters={"Id": eq("kld-1")})["Findings"]
        self.assertEqual((stored["RecordState"], stored["UpdatedAt"]), ("ARCHIVED", iso(BASE_TIME + timedelta(minutes=5))))
        # Reactivated by a later import.
        self.imported(asff("kld-1", BASE_TIME + timedelta(minutes=9)))
        self.assertEqual(self.ids(Filters=active), ["kld-1", "kld-2"])

    def test_an_update_not_later_than_the_stored_finding_is_ignored(self) -> None:
        # https://docs.aws.amazon.com/securityhub/latest/userguide/finding-update-batchimportfindings.html
        later = BASE_TIME + timedelta(hours=1)
        self.imported(asff("kld-1", later, Title="newer", Workflow={"Status": "NOTIFIED"}, Region="eu-west-3"))
        for stale in (BASE_TIME, later):  # before, and the same instant
            result = self.imported(asff("kld-1", stale, Title="stale", RecordState="ARCHIVED"))
            self.assertEqual(result["FailedFindings"], [])
        [stored] = self.hub.get_findings()["Findings"]
        self.assertEqual((stored["Title"], stored["RecordState"], stored["Region"]), ("newer", "ACTIVE", "us-east-1"))
        # A later update applies, and leaves the customer's Workflow alone.
        self.imported(asff("kld-1", later + timedelta(seconds=1), Title="latest", Workflow={"Status": "NEW"}))
        [stored] = self.hub.get_findings()["Findings"]
        self.assertEqual((stored["Title"], stored["Workflow"]), ("latest", {"Status": "NOTIFIED"}))
        # Fractional seconds and offsets compare as time: 11:00:01Z is the stored UpdatedAt.
        self.imported(asff("kld-1", later, UpdatedAt="2026-11-28T12:00:01.000+01:00", Title="same instant"))
        self.assertEqual(self.hub.get_findings()["Findings"][0]["Title"], "latest")
        self.imported(asff("kld-1", later, UpdatedAt="2026-11-28T12:00:01.500+01:00", Title="half a second later"))
        self.assertEqual(self.hub.get_findings()["Findings"][0]["Title"], "half a second later")

    def test_malformed_findings_fail_one_by_one(self) -> None:
        bad = asff("kld-2", BASE_TIME)
        del bad["UpdatedAt"]
        result = self.raw_hub.batch_import_findings(Findings=[asff("kld-1", BASE_TIME), bad, asff("kld-3", BASE_TIME, Resources=[])])
        self.assertEqual((result["SuccessCount"], result["FailedCount"]), (1, 2))
        self.assertEqual([(f["Id"], f["ErrorCode"]) for f in result["FailedFindings"]], [("kld-2", "InvalidInput"), ("kld-3", "InvalidInput")])

    def test_paging_with_filters_survives_imports_between_pages(self) -> None:
        self.imported(*(asff(f"kld-{n}", BASE_TIME) for n in range(1, 6)), asff("other", BASE_TIME))
        query = {"Filters": {"Id": eq("kld-", comparison="PREFIX")}, "MaxResults": 2}
        first = self.hub.get_findings(**query)
        self.assertEqual([f["Id"] for f in first["Findings"]], ["kld-1", "kld-2"])
        # Between pages: kld-3 archived (still matches: the filter is on Id), kld-4 stale-updated, a new one.
        self.imported(asff("kld-3", BASE_TIME + timedelta(minutes=1), RecordState="ARCHIVED"), asff("kld-6", BASE_TIME))
        second = self.hub.get_findings(NextToken=first["NextToken"], **query)
        self.assertEqual([f["Id"] for f in second["Findings"]], ["kld-3", "kld-4"])
        third = self.hub.get_findings(NextToken=second["NextToken"], **query)
        self.assertEqual([f["Id"] for f in third["Findings"]], ["kld-5", "kld-6"])
        self.assertNotIn("NextToken", third)
        # A token belongs to its query.
        self.assertClientError(
            "InvalidInputException", self.hub.get_findings, NextToken=first["NextToken"], Filters={"Id": eq("kld-1")}
        )
        self.assertClientError("InvalidInputException", self.hub.get_findings, NextToken="not-a-token")
        self.assertEqual(len(self.hub.get_findings(MaxResults=100)["Findings"]), 7)

    def test_refused_filters_and_parameters(self) -> None:
        refused = {
            "CONTAINS with NOT_CONTAINS": {"Title": eq("a", comparison="CONTAINS") + eq("b", comparison="NOT_CONTAINS")},
            "CONTAINS with EQUALS": {"Title": eq("a", comparison="CONTAINS") + eq("b")},
            "EQUALS with NOT_EQUALS": {"Id": eq("a") + eq("b", comparison="NOT_EQUALS")},
            "EQUALS with PREFIX_NOT_EQUALS": {"Id": eq("a") + eq("b", comparison="PREFIX_NOT_EQUALS")},
            "CONTAINS_WORD (GetFindingsV2 only)": {"Title": eq("a", comparison="CONTAINS_WORD")},
            "21 values": {"Id": eq(*(f"id-{n}" for n in range(21)))},
            "11 attributes": {name: eq("x") for name in FINDING_STRING_FIELDS},
            "a field not modelled": {"CreatedAt": [{"Start": "2026-01-01T00:00:00Z", "End": "2027-01-01T00:00:00Z"}]},
            "an empty value": {"Id": [{"Value": "", "Comparison": "EQUALS"}]},
        }
        self.assertEqual(len(FINDING_STRING_FIELDS), 11)
        for what, filters in refused.items():
            with self.subTest(what):
                self.assertClientError("InvalidInputException", self.raw_hub.get_findings, Filters=filters)
        # Allowed: 20 values, PREFIX with NOT_EQUALS, 10 attributes.
        self.hub.get_findings(Filters={"Id": eq(*(f"id-{n}" for n in range(20)))})
        self.hub.get_findings(Filters={"Id": eq("a", comparison="PREFIX") + eq("ab", comparison="NOT_EQUALS")})
        self.hub.get_findings(Filters={name: eq("x") for name in list(FINDING_STRING_FIELDS)[:10]})
        for bad in (0, 101):
            self.assertClientError("InvalidInputException", self.raw_hub.get_findings, MaxResults=bad)
        self.assertClientError(
            "InvalidInputException", self.hub.get_findings, SortCriteria=[{"Field": "UpdatedAt", "SortOrder": "desc"}]
        )
