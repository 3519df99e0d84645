"""Security Hub: GetFindings filters and paging, BatchImportFindings' update rules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
from collections.abc import Callable
from typing import Any

from moto.securityhub.exceptions import SecurityHubClientError
from moto.securityhub.models import Finding, SecurityHubBackend
from moto.securityhub.responses import SecurityHubResponse

from .common import as_list, dig, parse_timestamp


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
