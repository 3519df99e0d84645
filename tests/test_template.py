"""Security review of template.yaml, as executable assertions.

Run with the lint venv (`make lint` does): `.venv-lint/bin/python -m unittest tests/test_template.py`.
The template is read with cfn-lint's YAML loader, which understands !Ref, !Sub, !If, ...

Template conditions are *evaluated*, not trusted by name: every IAM statement is collected with
the template conditions (resource `Condition:` and enclosing `Fn::If`s) that must hold for it to
exist, and each property is checked for every combination of the parameters that switch
something on or off. The alarms are checked by what they do: a small model of CloudWatch (metric
math, alarm evaluation) runs each one over histories of metric data (a DLQ receiving messages,
the events queue's oldest message at every allowed CloudTrailWaitMinutes). Set KLD_TEMPLATE to
check another file.

Issue 17 adds the organization hub (``Topology=hub``) to template.yaml, checked the same way with
Topology among the switches (single-account must behave exactly as before), and org/spoke.yaml,
the StackSet template for the member accounts (``SpokeTemplateTest``: no Transform, the roles'
trust, the read role's reads mirroring the function role's, remediation only when enabled and
mirroring the template's write conditions, roles once per account). KLD_SPOKE_TEMPLATE names
another spoke file.
"""

import itertools
import json
import os
import re
import shlex
import tomllib
import unittest
from pathlib import Path

try:
    from cfnlint.decode import cfn_yaml
except ImportError as exc:  # pragma: no cover - message for a wrong interpreter
    raise SystemExit(
        "tests/test_template.py needs cfn-lint: run it with .venv-lint/bin/python (make lint)"
    ) from exc

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(os.environ.get("KLD_TEMPLATE") or ROOT / "template.yaml")
SPOKE_TEMPLATE = Path(os.environ.get("KLD_SPOKE_TEMPLATE") or ROOT / "org" / "spoke.yaml")

NO_VALUE = {"Ref": "AWS::NoValue"}

EXPECTED_PARAMETERS = {
    # name: (Default, AllowedValues or None)
    "RemediationMode": ("off", {"off", "dry-run", "apply"}),
    "RemediationTagKey": ("kms-launch-doctor:auto-remediate", None),
    "RestartAfterRemediation": ("false", {"true", "false"}),
    "NotificationEmail": ("", None),
    "ExistingTopicArn": ("", None),
    "EnableSecurityHub": ("false", {"true", "false"}),
    "EventBusName": ("", None),
    "CloudTrailWaitMinutes": ("20", None),
    "QueueRedrivePrincipalArn": ("", None),
    "LogLevel": ("info", {"error", "warn", "info", "debug"}),
    "LogRetentionDays": ("30", None),
    "EnableTracing": ("false", {"true", "false"}),
    "PreflightSchedule": ("", None),
    "PreflightPrincipals": ("", None),
    # issue 17: the organization hub.
    "Topology": ("single-account", {"single-account", "hub"}),
    "OrganizationId": ("", None),
    "SpokeRoleName": ("kms-launch-doctor-spoke", None),
}

CLOUDWATCH_RETENTION_DAYS = {
    "1", "3", "5", "7", "14", "30", "60", "90", "120", "150", "180", "365", "400", "545",
    "731", "1096", "1827", "2192", "2557", "2922", "3288", "3653",
}

# Parameter values that switch pieces on or off; every combination is checked.
SWITCHES = {
    "RemediationMode": ["off", "dry-run", "apply"],
    "RestartAfterRemediation": ["false", "true"],
    "NotificationEmail": ["", "ops@example.com"],
    "ExistingTopicArn": ["", "arn:aws:sns:us-east-1:123456789012:existing"],
    "EnableSecurityHub": ["false", "true"],
    "EventBusName": ["", "default"],
    "EnableTracing": ["false", "true"],
    "QueueRedrivePrincipalArn": ["", "arn:aws:iam::123456789012:role/ops/dlq-redrive"],
    # A non-default opt-in tag key: the tag conditions must follow the parameter.
    "RemediationTagKey": ["kms-launch-doctor:auto-remediate", "team/opt-in"],
    # issue 18: the scheduled preflight, off and on.
    "PreflightSchedule": ["", "cron(0 18 * * ? *)"],
    # issue 17: the organization hub (with ORGANIZATION_ID, which a hub requires).
    "Topology": ["single-account", "hub"],
}
PREFLIGHT_SCHEDULE_ON = SWITCHES["PreflightSchedule"][1]
ORGANIZATION_ID = "o-exampleorg1"
# The hub's own resources: they exist exactly in a hub, and whatever names them is guarded so.
HUB_CONDITION = "IsHub"

# The only actions that may be granted on Resource "*": IAM offers no resource-level
# permissions for them.
STAR_RESOURCE_OK = {
    "ec2:DescribeInstances",
    "ec2:DescribeVolumes",
    # issue 18: a launch's other keys (template, AMI snapshots, EBS default) and the Auto Scaling
    # groups; the Service Authorization Reference lists no resource type for any of them.
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeImages",
    "ec2:DescribeSnapshots",
    "ec2:GetEbsDefaultKmsKeyId",
    "ec2:GetEbsEncryptionByDefault",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeLaunchConfigurations",
    "cloudtrail:LookupEvents",
    "kms:ListAliases",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
# issue 17: the reads a diagnosis makes in an account, which org/spoke.yaml's roles get too; and
# the only STS action the function may have (a hub assumes its spoke roles).
READ_ONLY_VERBS = ("Describe", "Get", "List", "Lookup", "Simulate")
STS_ACTIONS_ALLOWED = {"sts:AssumeRole"}
SPOKE_ROLE_RESOURCE = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${SpokeRoleName}"}
SPOKE_REMEDIATION_ROLE_RESOURCE = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${SpokeRoleName}-remediation"}
ORGANIZATION_CONDITION = {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}}

# Every IAM action the function may be granted. Anything else (iam:Create*, iam:Attach*,
# iam:Delete*, iam:Detach*, iam:Update*, iam:PassRole, ...) fails the review.
IAM_ACTIONS_ALLOWED = {
    "iam:SimulatePrincipalPolicy",
    "iam:GetUser",
    "iam:GetRole",
    "iam:GetUserPolicy",
    "iam:GetRolePolicy",
    "iam:ListUserPolicies",
    "iam:ListRolePolicies",
    "iam:ListUserTags",
    "iam:ListRoleTags",
    "iam:PutUserPolicy",
    "iam:PutRolePolicy",
}

# Every KMS and EC2 action the function may be granted (read the keys and instances; with
# apply, read a key's opt-in tag; with restart, start an opted-in instance and let EC2 make the
# grant it needs). Anything else (kms:Decrypt, kms:PutKeyPolicy, ec2:RunInstances, ...) fails.
KMS_ACTIONS_ALLOWED = {"kms:DescribeKey", "kms:GetKeyPolicy", "kms:ListAliases", "kms:ListResourceTags", "kms:CreateGrant"}
EC2_ACTIONS_ALLOWED = {
    "ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:StartInstances",
    "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeImages", "ec2:DescribeSnapshots",
    "ec2:GetEbsDefaultKmsKeyId", "ec2:GetEbsEncryptionByDefault",
}
# The reads a launch's keys need besides its volumes', always granted, on "*".
LAUNCH_KEY_READS = {
    "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeImages", "ec2:DescribeSnapshots",
    "ec2:GetEbsDefaultKmsKeyId", "ec2:GetEbsEncryptionByDefault",
}
# Auto Scaling: read only, and only for the scheduled preflight.
AUTOSCALING_ACTIONS_ALLOWED = {"autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeLaunchConfigurations"}

PUT_POLICY = {"iam:PutUserPolicy", "iam:PutRolePolicy"}
TAG_CONDITION_KEY = "iam:ResourceTag/${RemediationTagKey}"
RESOURCE_TAG_CONDITION_KEY = "aws:ResourceTag/${RemediationTagKey}"
INSTANCES_OF_REGION = "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"
KEYS_OF_REGION = "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"
KEYS_OF_ACCOUNT = "arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"
ACCOUNT = "123456789012"
IAM_PRINCIPAL_RESOURCE = re.compile(
    r"^arn:\$\{AWS::Partition\}:iam::\$\{AWS::AccountId\}:(user|role)/\*$"
)
SINK_PREFIXES = ("sns:", "securityhub:", "events:")

# The topics the stack can create: findings (for NotificationEmail, unless ExistingTopicArn), and
# operations (for the alarms, when no topic is configured at all).
FINDINGS_TOPIC = "FindingsTopic"
OPERATIONS_TOPIC = "OperationsTopic"

# What the function does that the template's numbers must fit (src/settings.rs, src/lambda/):
# one AWS call attempt takes at most KLD_ATTEMPT_TIMEOUT_SECONDS (default 10, not set by the
# template); a deferred event goes back as a new message delayed at most 900 s (SQS's largest
# DelaySeconds), for at most twice CloudTrailWaitMinutes while lookups fail.
ATTEMPT_TIMEOUT_SECONDS = 10
MAX_DEFERRAL_DELAY_SECONDS = 900


def load_template():
    return cfn_yaml.load(str(TEMPLATE))


def as_list(value):
    return value if isinstance(value, list) else [value]


def is_fn(node, name):
    return isinstance(node, dict) and len(node) == 1 and name in node


def alternatives(node, guards=frozenset()):
    """Yield (value, guards) for each way a possibly Fn::If-wrapped node can resolve.

    guards are condition names, "!Name" for a negated one. AWS::NoValue yields nothing.
    """
    if is_fn(node, "Fn::If"):
        cond, if_true, if_false = node["Fn::If"]
        yield from alternatives(if_true, guards | {cond})
        yield from alternatives(if_false, guards | {"!" + cond})
    elif node == NO_VALUE:
        return
    else:
        yield node, guards


def policy_documents(document, guards):
    """Yield (document dict, guards, substituted) for a PolicyDocument value."""
    for doc, g in alternatives(document, guards):
        if is_fn(doc, "Fn::Sub"):
            body = doc["Fn::Sub"]
            text = body[0] if isinstance(body, list) else body
            # The ${...} placeholders sit inside JSON strings, so the text parses as is.
            yield json.loads(text), g, True
        elif isinstance(doc, str):
            yield json.loads(doc), g, False
        else:
            yield doc, g, False


class Statement:
    def __init__(self, resource, body, guards, substituted):
        self.resource = resource
        self.body = body
        self.guards = guards
        self.substituted = substituted
        self.effect = body.get("Effect")
        self.actions = [a for v in as_list(body.get("Action", [])) for a, _ in alternatives(v)]
        self.resources = [r for v in as_list(body.get("Resource", [])) for r, _ in alternatives(v)]

    def __repr__(self):
        return f"<{self.resource} {self.body.get('Sid')} guards={sorted(self.guards)}>"


def identity_statements(template):
    """Every statement of every identity policy in the template, with its guards."""
    out = []
    for name, res in template["Resources"].items():
        base = frozenset([res["Condition"]]) if "Condition" in res else frozenset()
        props = res.get("Properties", {})
        docs = []
        if res["Type"] == "AWS::IAM::Role":
            for item in props.get("Policies", []):
                for policy, g in alternatives(item, base):
                    docs.append((policy["PolicyDocument"], g))
        elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
            docs.append((props["PolicyDocument"], base))
        elif res["Type"] == "AWS::Serverless::Function":
            # SAM policy templates / managed policies would bypass this review.
            assert "Policies" not in props, f"{name}: use the explicit role, not SAM Policies"
        for document, g in docs:
            for doc, g2, substituted in policy_documents(document, g):
                for item in as_list(doc["Statement"]):
                    for st, g3 in alternatives(item, g2):
                        out.append(Statement(name, st, g3, substituted))
    return out


def ref_value(node, params):
    """Resolve Ref to a parameter value; leave resource refs symbolic."""
    if is_fn(node, "Ref"):
        name = node["Ref"]
        return str(params[name]) if name in params else f"<ref:{name}>"
    if is_fn(node, "Fn::GetAtt"):
        target = node["Fn::GetAtt"]
        return "<getatt:" + (".".join(target) if isinstance(target, list) else target) + ">"
    return node


class Evaluator:
    def __init__(self, template, params, shared=None):
        self.template = template
        self.params = params
        self.cache = {}
        # Shared by the Evaluators of one template (issue 17 doubled the combinations): a node
        # resolves the same wherever the parameters it depends on are the same, and most nodes
        # depend on few of them. Resolved values are shared: read them, never change them.
        self.shared = shared if shared is not None else {"deps": {}, "resolved": {}}

    def dependencies(self, node):
        """The names a node's resolution can depend on: its Refs, the parameters named in its
        Fn::Subs, and those of the conditions its Fn::Ifs test (transitively)."""
        key = id(node)
        if key not in self.shared["deps"]:
            found, seen = set(), set()

            def walk(n):
                if isinstance(n, dict):
                    if is_fn(n, "Ref") and isinstance(n["Ref"], str):
                        found.add(n["Ref"])
                    elif is_fn(n, "Fn::If"):
                        condition(n["Fn::If"][0])
                    elif is_fn(n, "Condition"):
                        condition(n["Condition"])
                    elif is_fn(n, "Fn::Sub"):
                        body = n["Fn::Sub"]
                        found.update(re.findall(r"\$\{([A-Za-z0-9:]+)\}", body[0] if isinstance(body, list) else body))
                    for v in n.values():
                        walk(v)
                elif isinstance(n, list):
                    for v in n:
                        walk(v)

            def condition(name):
                if name not in seen:
                    seen.add(name)
                    walk(self.template["Conditions"][name])

            walk(node)
            # The node itself is kept with its entry, so that its id is not reused meanwhile.
            self.shared["deps"][key] = (node, tuple(sorted(found)))
        return self.shared["deps"][key][1]

    def condition(self, name):
        negate = name.startswith("!")
        name = name.lstrip("!")
        if name not in self.cache:
            self.cache[name] = self.expr(self.template["Conditions"][name])
        return self.cache[name] != negate

    def expr(self, node):
        if is_fn(node, "Fn::Equals"):
            a, b = (str(self.value(x)) for x in node["Fn::Equals"])
            return a == b
        if is_fn(node, "Fn::And"):
            return all(self.expr(x) for x in node["Fn::And"])
        if is_fn(node, "Fn::Or"):
            return any(self.expr(x) for x in node["Fn::Or"])
        if is_fn(node, "Fn::Not"):
            return not self.expr(node["Fn::Not"][0])
        if is_fn(node, "Condition"):
            return self.condition(node["Condition"])
        raise AssertionError(f"unsupported condition expression {node!r}")

    def value(self, node):
        if is_fn(node, "Fn::If"):
            cond, a, b = node["Fn::If"]
            return self.value(a if self.condition(cond) else b)
        if node == NO_VALUE:
            return NO_VALUE
        if is_fn(node, "Fn::FindInMap"):
            name, top, second = (str(self.value(x)) for x in node["Fn::FindInMap"])
            return str(self.template["Mappings"][name][top][second])
        return ref_value(node, self.params)

    def resolve(self, node):
        """node with every Fn::If decided, AWS::NoValue dropped, Refs to parameters replaced."""
        if not isinstance(node, (dict, list)):
            return self._resolve(node)
        key = (id(node), tuple(self.params.get(k) for k in self.dependencies(node)))
        resolved = self.shared["resolved"]
        if key not in resolved:
            resolved[key] = self._resolve(node)
        return resolved[key]

    def _resolve(self, node):
        node = self.value(node) if isinstance(node, dict) and len(node) == 1 else node
        if isinstance(node, dict):
            if node == NO_VALUE:
                return NO_VALUE
            out = {k: self._resolve(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v != NO_VALUE}
        if isinstance(node, list):
            return [v for v in (self._resolve(x) for x in node) if v != NO_VALUE]
        return node

    def render(self, document):
        """A PolicyDocument as IAM would get it: Fn::Sub substituted with these parameters."""
        document = self.value(document) if is_fn(document, "Fn::If") else document
        if is_fn(document, "Fn::Sub"):
            body = document["Fn::Sub"]
            text, names = (body[0], body[1]) if isinstance(body, list) else (body, {})

            def sub(match):
                name = match.group(1)
                if name in names:
                    return str(ref_value(names[name], self.params))
                return str(self.params[name])

            return json.loads(re.sub(r"\$\{([A-Za-z0-9:]+)\}", sub, text))
        if isinstance(document, str):
            return json.loads(document)
        return self.resolve(document)

    def rendered_statements(self):
        """(resource name, statement) of every identity policy that exists with these parameters
        (computed once per Evaluator: the template does not change under it)."""
        if getattr(self, "_rendered", None) is None:
            self._rendered = self._render_statements()
        return self._rendered

    def _render_statements(self):
        out = []
        for name, res in self.template["Resources"].items():
            if not self.resource_exists(name):
                continue
            props = res.get("Properties", {})
            docs = []
            if res["Type"] == "AWS::IAM::Role":
                for item in props.get("Policies", []):
                    policy = self.value(item)
                    if policy != NO_VALUE:
                        docs.append(policy["PolicyDocument"])
            elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
                docs.append(props["PolicyDocument"])
            for doc in docs:
                out.extend((name, st) for st in as_list(self.render(doc)["Statement"]))
        return out

    def active(self, guards):
        return all(self.condition(g) for g in guards)

    def resource_exists(self, name):
        res = self.template["Resources"][name]
        return "Condition" not in res or self.condition(res["Condition"])


def parameter_combinations(template, switches=None, fixed=None):
    """Every combination of the switches, over the template's defaults. A hub gets an
    organization (the template's Rules require one)."""
    switches = SWITCHES if switches is None else switches
    defaults = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    keys = list(switches)
    for values in itertools.product(*(switches[k] for k in keys)):
        params = dict(defaults)
        params.update({"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"})
        params.update(fixed or {})
        params.update(zip(keys, values))
        if params.get("Topology") == "hub":
            params["OrganizationId"] = ORGANIZATION_ID
        yield params


def arn_text(resource):
    """The literal text of a Resource entry ("" for a Ref/GetAtt, which names one resource)."""
    if isinstance(resource, str):
        return resource
    if is_fn(resource, "Fn::Sub"):
        body = resource["Fn::Sub"]
        return body[0] if isinstance(body, list) else body
    return ""


def service_wildcard(action):
    return action == "*" or action.endswith(":*") or "*" in action.split(":", 1)[0]


def _matches(pattern, value, ignore_case=False):
    """IAM's string match with the * and ? wildcards (ArnLike/StringLike and, for ARNs, ArnEquals)."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


CONDITION_OPERATORS = {
    # name: (negated, compare(policy value, request value))
    "StringEquals": (False, lambda p, v: p == v),
    "StringNotEquals": (True, lambda p, v: p == v),
    "StringEqualsIgnoreCase": (False, lambda p, v: p.lower() == v.lower()),
    "StringLike": (False, _matches),
    "StringNotLike": (True, _matches),
    "ArnEquals": (False, _matches),
    "ArnLike": (False, _matches),
    "ArnNotEquals": (True, _matches),
    "ArnNotLike": (True, _matches),
    "Bool": (False, lambda p, v: str(p).lower() == str(v).lower()),
}


def condition_holds(condition, context):
    """IAM's rules for one Condition block: operators and keys ANDed, a key's values ORed (NORed
    for a negated operator); a key absent from the request fails a positive operator and passes a
    negated one. https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_multi-value-conditions.html
    """
    for operator, pairs in (condition or {}).items():
        if operator not in CONDITION_OPERATORS:
            raise AssertionError(f"the test evaluator does not know {operator}")
        negated, compare = CONDITION_OPERATORS[operator]
        for key, values in pairs.items():
            if key not in context:
                holds = negated
            else:
                hit = any(compare(str(v), str(context[key])) for v in as_list(values))
                holds = not hit if negated else hit
            if not holds:
                return False
    return True


def principal_matches(principal, caller):
    if principal == "*" or principal == {"AWS": "*"}:
        return True
    kind, value = caller
    return value in [str(p) for p in as_list(principal.get(kind, []))]


def resource_policy_decision(policy, caller, context, resource, action, same_account, identity_allows):
    """'allow', 'explicit-deny' or 'implicit-deny' for one request to a resource with this policy.

    caller: ("Service", "events.amazonaws.com") or ("AWS", principal ARN). identity_allows: the
    caller's own identity policy allows the action. A service principal needs the resource
    policy's Allow; a principal of the resource's account needs either Allow; another account's
    needs both. Enough of IAM's evaluation logic for one queue policy, nothing more.
    """
    allowed = denied = False
    for st in as_list(policy["Statement"]):
        if not principal_matches(st.get("Principal", {}), caller):
            continue
        if not any(_matches(a, action, ignore_case=True) for a in as_list(st["Action"])):
            continue
        if not any(r == "*" or r == resource for r in as_list(st["Resource"])):
            continue
        if not condition_holds(st.get("Condition"), context):
            continue
        if st["Effect"] == "Deny":
            denied = True
        elif st["Effect"] == "Allow":
            allowed = True
    if denied:
        return "explicit-deny"
    if caller[0] == "Service":
        return "allow" if allowed else "implicit-deny"
    if same_account:
        return "allow" if allowed or identity_allows else "implicit-deny"
    return "allow" if allowed and identity_allows else "implicit-deny"


# --- CloudWatch alarms, simulated ----------------------------------------------------------------
# Enough of CloudWatch to tell what an alarm of the template does with a given history of
# metric data: statistics over periods, the metric math the template uses (arithmetic, DIFF,
# RATE, FILL), and an alarm's evaluation (the most recent EvaluationPeriods datapoints in the
# evaluation range, DatapointsToAlarm of them breaching; missing ones as TreatMissingData says).
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/using-metric-math.html
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html
# Time is in minutes; a series is {period index: value}, sparse like CloudWatch's.

def sub_text(node, params):
    """A string, or a Fn::Sub string, with ${Parameter}s replaced."""
    if is_fn(node, "Fn::Sub"):
        body = node["Fn::Sub"]
        text = body[0] if isinstance(body, list) else body
        return re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda m: str(params[m.group(1)]), text)
    if isinstance(node, str):
        return node
    raise AssertionError(f"not a string: {node!r}")


def alarm_queries(props):
    """The alarm's metric queries: [(id, metric dict or None, expression or None, return data)]."""
    if "Metrics" in props:
        out = []
        for q in props["Metrics"]:
            stat = q.get("MetricStat")
            metric = None
            if stat:
                m = stat["Metric"]
                metric = {"Namespace": m["Namespace"], "MetricName": m["MetricName"],
                          "Dimensions": m.get("Dimensions", []), "Stat": stat["Stat"], "Period": int(stat["Period"])}
            out.append((q["Id"], metric, q.get("Expression"), q.get("ReturnData", True)))
        return out
    metric = {"Namespace": props["Namespace"], "MetricName": props["MetricName"],
              "Dimensions": props.get("Dimensions", []), "Stat": props["Statistic"], "Period": int(props["Period"])}
    return [("m", metric, None, True)]


def aggregate(samples, stat):
    values = [v for v in samples if v is not None]
    if not values:
        return None
    return {"Sum": sum(values), "Maximum": max(values), "Minimum": min(values),
            "Average": sum(values) / len(values), "SampleCount": len(values)}[stat]


def math_eval(expression, series, periods):
    """Evaluate a metric math expression over sparse series ({index: value})."""
    import ast

    def arith(op, a, b):
        f = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y,
             ast.Mult: lambda x, y: x * y, ast.Div: lambda x, y: x / y}[type(op)]
        if isinstance(a, dict) and isinstance(b, dict):
            # Two series: the union of their timestamps, a missing value counted as 0.
            return {k: f(a.get(k, 0), b.get(k, 0)) for k in sorted(set(a) | set(b))}
        if isinstance(a, dict):
            return {k: f(v, b) for k, v in a.items()}
        if isinstance(b, dict):
            return {k: f(a, v) for k, v in b.items()}
        return f(a, b)

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in series:
                raise AssertionError(f"unknown id {node.id} in {expression!r}")
            return series[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return arith(ast.Mult(), -1, ev(node.operand))
        if isinstance(node, ast.BinOp):
            return arith(node.op, ev(node.left), ev(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name, args = node.func.id, [ev(a) for a in node.args]
            if name == "FILL":
                ts, filler = args
                return {k: ts.get(k, filler) for k in periods}
            if name in ("DIFF", "RATE"):
                (ts,) = args
                keys = sorted(ts)
                return {k: (ts[k] - ts[p]) / (1 if name == "DIFF" else (k - p) * 60) for p, k in zip(keys, keys[1:])}
        raise AssertionError(f"the test's metric math does not know {ast.dump(node)} in {expression!r}")

    return ev(ast.parse(expression, mode="eval"))


def alarm_state(props, data, now, params, published_until=None):
    """ALARM or OK for the alarm `props` at minute `now`. data(metric dict) gives the 1-minute
    samples {minute: value}; samples after `published_until` (default: now) are not there yet."""
    published_until = now if published_until is None else published_until
    queries = alarm_queries(props)
    periods_s = {m["Period"] for _, m, _, _ in queries if m}
    assert len(periods_s) == 1, props
    period = periods_s.pop() // 60
    n = int(props["EvaluationPeriods"])
    m_of_n = int(props.get("DatapointsToAlarm", n))
    last = now // period
    # CloudWatch retrieves more datapoints than EvaluationPeriods (the evaluation range).
    periods = list(range(last - n - 4, last + 1))
    series = {}
    result = None
    for qid, metric, expression, returns in queries:
        if metric:
            samples = data(metric)
            series[qid] = {}
            for p in periods:
                minutes = range(p * period, (p + 1) * period)
                v = aggregate([samples.get(t) for t in minutes if t <= published_until], metric["Stat"])
                if v is not None:
                    series[qid][p] = v
        else:
            series[qid] = math_eval(sub_text(expression, params), series, periods)
        if returns:
            result = series[qid]
    threshold = float(props["Threshold"])
    compare = {
        "GreaterThanThreshold": lambda v: v > threshold,
        "GreaterThanOrEqualToThreshold": lambda v: v >= threshold,
        "LessThanThreshold": lambda v: v < threshold,
        "LessThanOrEqualToThreshold": lambda v: v <= threshold,
    }[props["ComparisonOperator"]]
    existing = [p for p in periods if p in result][-n:]
    breaching = sum(1 for p in existing if compare(result[p]))
    missing = n - len(existing)
    treat = props.get("TreatMissingData", "missing")
    if treat == "breaching":
        breaching += missing
    elif treat != "notBreaching":
        raise AssertionError(f"the test's evaluator does not model TreatMissingData={treat}")
    return "ALARM" if breaching >= m_of_n else "OK"


def dimension_target(node):
    """What a dimension value names: ("function"|"queue"|"rule", logical id), or None."""
    if is_fn(node, "Ref"):
        return ("ref", node["Ref"])
    if is_fn(node, "Fn::GetAtt"):
        target = node["Fn::GetAtt"]
        name, attr = target if isinstance(target, list) else target.split(".", 1)
        return ("queue", name) if attr == "QueueName" else None
    # The rule's name as the last part of its ARN (arn:...:rule/<name> on the default bus,
    # arn:...:rule/<bus>/<name> on a custom bus).
    if is_fn(node, "Fn::Select"):
        index, inner = node["Fn::Select"]
        if str(index) in ("1", "2") and is_fn(inner, "Fn::Split") and inner["Fn::Split"][0] == "/":
            arn = inner["Fn::Split"][1]
            if is_fn(arn, "Fn::GetAtt") and arn["Fn::GetAtt"][1:] == ["Arn"]:
                return ("rule", arn["Fn::GetAtt"][0])
    return None


def queue_history(arrivals_by_send, empty_is_inactive, queue, start=20, second=80, peek=50, end=120):
    """1-minute samples of a DLQ that receives one message at `start` and one at `second`, keeps
    them, and whose first message an operator reads (default visibility) at `peek`. SQS moving a
    message there (redrive policy) is not a SendMessage; EventBridge putting one there is. An
    empty queue publishes either zeros or, inactive, nothing."""
    visible, inflight, sent = {}, {}, {}
    for t in range(end):
        held = (t >= start) + (t >= second)
        if held == 0 and empty_is_inactive:
            continue
        reading = 1 if peek <= t < peek + 2 else 0
        visible[t], inflight[t] = held - reading, reading
        sent[t] = int(arrivals_by_send and t in (start, second))
    metrics = {"ApproximateNumberOfMessagesVisible": visible, "ApproximateNumberOfMessagesNotVisible": inflight,
               "NumberOfMessagesSent": sent}

    def data(metric):
        dims = {d["Name"]: dimension_target(d["Value"]) for d in metric["Dimensions"]}
        if metric["Namespace"] != "AWS/SQS" or dims != {"QueueName": ("queue", queue)}:
            return {}
        return metrics.get(metric["MetricName"], {})
    return data


class TemplateTest(unittest.TestCase):
    @staticmethod
    def load():
        return load_template()

    @classmethod
    def setUpClass(cls):
        cls.t = cls.load()
        cls.res = cls.t["Resources"]
        cls.statements = identity_statements(cls.t)
        shared = {"deps": {}, "resolved": {}}
        cls.combos = [(p, Evaluator(cls.t, p, shared)) for p in parameter_combinations(cls.t)]

    def of_type(self, typ):
        return {k: v for k, v in self.res.items() if v["Type"] == typ}

    def one(self, typ):
        found = self.of_type(typ)
        self.assertEqual(len(found), 1, f"expected exactly one {typ}, got {sorted(found)}")
        return next(iter(found.items()))

    def function(self):
        return self.one("AWS::Serverless::Function")

    def events_queue_name(self):
        _, fn = self.function()
        (event,) = fn["Properties"]["Events"].values()
        return event["Properties"]["Queue"]["Fn::GetAtt"][0]

    def active_allows(self, ev, action):
        return [
            s for s in self.statements
            if s.effect == "Allow" and action in s.actions and ev.active(s.guards) and ev.resource_exists(s.resource)
        ]

    @staticmethod
    def rendered_allows(ev, action):
        """The Allow statements granting action, as IAM gets them with these parameters."""
        return [
            st for _, st in ev.rendered_statements()
            if st.get("Effect") == "Allow" and action in as_list(st.get("Action", []))
        ]

    def role_name(self):
        _, fn = self.function()
        return fn["Properties"]["Role"]["Fn::GetAtt"][0]

    def queue_policy(self, queue=None):
        """The one QueuePolicy of `queue` (default: the events queue)."""
        queue = queue or self.events_queue_name()
        policies = [
            p for p in self.of_type("AWS::SQS::QueuePolicy").values()
            if {"Ref": queue} in as_list(p["Properties"]["Queues"])
        ]
        self.assertEqual(len(policies), 1, f"expected one queue policy for {queue}")
        (policy,) = policies
        self.assertEqual(policy["Properties"]["Queues"], [{"Ref": queue}], queue)
        return policy

    def rule(self):
        """The EC2 state-change rule (the one with an EventPattern on the default bus)."""
        found = {k: v for k, v in self.of_type("AWS::Events::Rule").items()
                 if "EventPattern" in v["Properties"] and "EventBusName" not in v["Properties"]}
        self.assertEqual(len(found), 1, f"expected one event-pattern rule on the default bus, got {sorted(found)}")
        return next(iter(found.items()))

    def hub_bus(self):
        found = self.of_type("AWS::Events::EventBus")
        self.assertEqual(len(found), 1, f"expected one event bus (the hub's), got {sorted(found)}")
        return next(iter(found.items()))

    def hub_rule(self):
        """issue 17: the rule on the hub bus (the one event-pattern rule on a custom bus)."""
        found = {k: v for k, v in self.of_type("AWS::Events::Rule").items() if "EventBusName" in v["Properties"]}
        self.assertEqual(len(found), 1, f"expected one rule on the hub bus, got {sorted(found)}")
        return next(iter(found.items()))

    def delivering_rules(self, ev):
        """The rules that may put events on the events queue (and its DLQ) with these parameters."""
        rules = [f"<getatt:{self.rule()[0]}.Arn>"]
        hub_name, _ = self.hub_rule()
        if ev.resource_exists(hub_name):
            rules.append(f"<getatt:{hub_name}.Arn>")
        return rules

    def preflight_rule(self):
        """The scheduled preflight rule (the one with a ScheduleExpression)."""
        found = {k: v for k, v in self.of_type("AWS::Events::Rule").items() if "ScheduleExpression" in v["Properties"]}
        self.assertEqual(len(found), 1, f"expected one scheduled rule, got {sorted(found)}")
        return next(iter(found.items()))

    def rule_target(self):
        _, rule = self.rule()
        (target,) = rule["Properties"]["Targets"]
        return target

    def events_dlq_name(self):
        queue = self.res[self.events_queue_name()]["Properties"]
        return queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]

    def rule_dlq_name(self):
        arn = self.rule_target().get("DeadLetterConfig", {}).get("Arn")
        self.assertTrue(is_fn(arn, "Fn::GetAtt"), f"the rule target's DeadLetterConfig must name a queue: {arn!r}")
        return arn["Fn::GetAtt"][0]

    def alarms(self):
        return self.of_type("AWS::CloudWatch::Alarm")

    # --- IAM: global properties ---------------------------------------------------------------

    def test_statements_were_found(self):
        # Guards against a refactoring that hides policies from this review.
        self.assertGreater(len(self.statements), 8)

    def test_no_wildcard_actions_anywhere(self):
        docs = [s.body for s in self.statements]
        for _, res in self.res.items():
            if res["Type"].endswith("Policy") and "PolicyDocument" in res.get("Properties", {}):
                for doc, _, _ in policy_documents(res["Properties"]["PolicyDocument"], frozenset()):
                    docs.extend(st for item in as_list(doc["Statement"]) for st, _ in alternatives(item))
        for st in docs:
            self.assertNotIn("NotAction", st, st)
            self.assertNotIn("NotResource", st, st)
            for action in as_list(st.get("Action", [])):
                for a, _ in alternatives(action):
                    self.assertFalse(service_wildcard(a), f"wildcard action {a!r} in {st}")

    def test_iam_actions_are_limited(self):
        for s in self.statements:
            if s.effect != "Allow":
                continue
            for a in s.actions:
                if a.lower().startswith("iam:"):
                    self.assertIn(a, IAM_ACTIONS_ALLOWED, f"{s}: {a} is not an allowed IAM action")
                for verb in ("Delete", "Attach", "Detach", "Create", "Update", "PassRole", "Tag", "Untag"):
                    if a.lower().startswith("iam:"):
                        self.assertFalse(a.split(":", 1)[1].startswith(verb), f"{s}: {a}")

    def test_kms_and_ec2_actions_are_limited(self):
        for s in self.statements:
            if s.effect != "Allow":
                continue
            for a in s.actions:
                if a.lower().startswith("kms:"):
                    self.assertIn(a, KMS_ACTIONS_ALLOWED, f"{s}: {a} is not an allowed KMS action")
                if a.lower().startswith("ec2:"):
                    self.assertIn(a, EC2_ACTIONS_ALLOWED, f"{s}: {a} is not an allowed EC2 action")

    def test_autoscaling_actions_are_read_only_and_only_for_the_preflight(self) -> None:
        # issue 18: the preflight reads the Auto Scaling groups (their launch templates or
        # configurations and service-linked roles); nothing else of Auto Scaling, never a write,
        # and only when the schedule is on.
        reads = [s for s in self.statements if any(a.lower().startswith("autoscaling:") for a in s.actions)]
        self.assertTrue(reads, "no statement grants autoscaling:DescribeAutoScalingGroups: the preflight cannot read groups")
        for s in reads:
            self.assertEqual(s.effect, "Allow", s)
            self.assertLessEqual(set(s.actions), AUTOSCALING_ACTIONS_ALLOWED, s)
            self.assertEqual(s.resources, ["*"], s)
            self.assertNotIn("Condition", s.body, s)
        for params, ev in self.combos:
            on = bool(params["PreflightSchedule"])
            for action in AUTOSCALING_ACTIONS_ALLOWED:
                self.assertEqual(bool(self.active_allows(ev, action)), on, (action, params))
                self.assertEqual(bool(self.rendered_allows(ev, action)), on, (action, params))

    def test_star_resource_only_where_unavoidable(self):
        for s in self.statements:
            if s.effect == "Allow" and "*" in s.resources:
                extra = set(s.actions) - STAR_RESOURCE_OK
                self.assertFalse(extra, f"{s}: {sorted(extra)} on Resource '*'")

    def test_function_uses_explicit_role_without_managed_policies(self):
        _, fn = self.function()
        role = fn["Properties"].get("Role")
        self.assertTrue(is_fn(role, "Fn::GetAtt"), "the function must use the template's explicit role")
        role_res = self.res[role["Fn::GetAtt"][0]]
        self.assertEqual(role_res["Type"], "AWS::IAM::Role")
        self.assertNotIn("ManagedPolicyArns", role_res["Properties"])
        trust = role_res["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        self.assertEqual([st["Principal"] for st in trust], [{"Service": "lambda.amazonaws.com"}])

    # --- IAM: remediation ---------------------------------------------------------------------

    def test_put_policy_only_when_apply_and_tag_scoped(self):
        put = [s for s in self.statements if s.effect == "Allow" and PUT_POLICY & set(s.actions)]
        self.assertTrue(put, "no statement grants iam:Put*Policy: remediation cannot work")
        for s in put:
            # Scoped by the tag, via Fn::Sub so ${RemediationTagKey} is really substituted.
            cond = s.body.get("Condition", {})
            self.assertEqual(cond, {"StringEquals": {TAG_CONDITION_KEY: "true"}}, s)
            self.assertTrue(s.substituted, f"{s}: the tag condition key must be inside Fn::Sub")
            self.assertTrue(s.resources)
            for r in s.resources:
                self.assertIsInstance(r, str, s)
                self.assertRegex(r, IAM_PRINCIPAL_RESOURCE, s)
            # Nothing else rides along in a remediation statement.
            self.assertLessEqual(set(s.actions), PUT_POLICY, s)
        for params, ev in self.combos:
            active = [s for s in put if ev.active(s.guards) and ev.resource_exists(s.resource)]
            if params["RemediationMode"] == "apply":
                granted = {a for s in active for a in s.actions}
                self.assertEqual(granted & PUT_POLICY, PUT_POLICY, params)
            else:
                self.assertEqual(active, [], f"Put*Policy granted with RemediationMode={params['RemediationMode']}")
            # As IAM gets it: the tag key is the parameter's value, compared with StringEquals
            # (exact and case-sensitive: "True" is not an opt-in, and the code agrees).
            for action in PUT_POLICY:
                for st in self.rendered_allows(ev, action):
                    self.assertEqual(
                        st["Condition"],
                        {"StringEquals": {f"iam:ResourceTag/{params['RemediationTagKey']}": "true"}},
                        params,
                    )

    def test_function_cannot_rewrite_its_own_role(self):
        denies = [
            s for s in self.statements
            if s.effect == "Deny" and "iam:PutRolePolicy" in s.actions
        ]
        self.assertTrue(denies, "expected a Deny of iam:PutRolePolicy on the function's own role")
        self.assertTrue(any(r == "${OwnRoleArn}" or is_fn(r, "Fn::GetAtt") for s in denies for r in s.resources))

    def test_list_resource_tags_only_when_apply_on_own_keys(self):
        # The key's side of the opt-in: its tags, read only in apply, only on this account's keys
        # (another account's key is never remediated, and ListResourceTags is not cross-account).
        reads = [s for s in self.statements if "kms:ListResourceTags" in s.actions]
        self.assertTrue(reads, "no statement grants kms:ListResourceTags: the key opt-in cannot be read")
        for s in reads:
            self.assertEqual(s.effect, "Allow", s)
            self.assertEqual(s.actions, ["kms:ListResourceTags"], s)
            self.assertEqual(s.resources, [KEYS_OF_ACCOUNT], s)
        for params, ev in self.combos:
            active = self.active_allows(ev, "kms:ListResourceTags")
            self.assertEqual(bool(active), params["RemediationMode"] == "apply", params)
            for st in self.rendered_allows(ev, "kms:ListResourceTags"):
                self.assertEqual(as_list(st["Resource"]), [f"arn:aws:kms:*:{ACCOUNT}:key/*"], params)

    def test_start_instances_only_when_restart_and_apply_on_opted_in_instances(self):
        starts = [s for s in self.statements if "ec2:StartInstances" in s.actions]
        self.assertTrue(starts, "no statement grants ec2:StartInstances: the restart cannot work")
        for s in starts:
            self.assertEqual(s.effect, "Allow", s)
            self.assertEqual(s.actions, ["ec2:StartInstances"], s)
            self.assertEqual(s.resources, [INSTANCES_OF_REGION], s)
            # Only instances carrying the opt-in tag; the key is the parameter, so Fn::Sub.
            self.assertEqual(s.body.get("Condition"), {"StringEquals": {RESOURCE_TAG_CONDITION_KEY: "true"}}, s)
            self.assertTrue(s.substituted, f"{s}: the tag condition key must be inside Fn::Sub")
        for params, ev in self.combos:
            want = params["RemediationMode"] == "apply" and params["RestartAfterRemediation"] == "true"
            self.assertEqual(bool(self.active_allows(ev, "ec2:StartInstances")), want, params)
            rendered = self.rendered_allows(ev, "ec2:StartInstances")
            self.assertEqual(bool(rendered), want, params)
            for st in rendered:
                self.assertEqual(
                    st["Condition"],
                    {"StringEquals": {f"aws:ResourceTag/{params['RemediationTagKey']}": "true"}},
                    params,
                )
                self.assertEqual(as_list(st["Resource"]), [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/*"])

    def test_restart_create_grant_only_for_ec2_on_opted_in_keys(self):
        # The restart's own kms:CreateGrant: with it and only with it, only grants EC2 makes for
        # itself in this region (both conditions), only on this account's keys of this region that
        # carry the opt-in tag.
        grants = [s for s in self.statements if "kms:CreateGrant" in s.actions]
        self.assertTrue(grants)
        for s in grants:
            self.assertEqual(s.effect, "Allow", s)
            self.assertEqual(s.actions, ["kms:CreateGrant"], s)
            self.assertEqual(s.resources, [KEYS_OF_REGION], s)
            self.assertTrue(s.substituted, f"{s}: the tag condition key must be inside Fn::Sub")
            self.assertEqual(
                s.body.get("Condition"),
                {
                    "Bool": {"kms:GrantIsForAWSResource": "true"},
                    "StringEquals": {
                        RESOURCE_TAG_CONDITION_KEY: "true",
                        "kms:ViaService": "ec2.${AWS::Region}.amazonaws.com",
                    },
                },
                s,
            )
        for params, ev in self.combos:
            want = params["RemediationMode"] == "apply" and params["RestartAfterRemediation"] == "true"
            self.assertEqual(bool(self.active_allows(ev, "kms:CreateGrant")), want, params)
            rendered = self.rendered_allows(ev, "kms:CreateGrant")
            self.assertEqual(bool(rendered), want, params)
            for st in rendered:
                self.assertEqual(
                    st["Condition"],
                    {
                        "Bool": {"kms:GrantIsForAWSResource": "true"},
                        "StringEquals": {
                            f"aws:ResourceTag/{params['RemediationTagKey']}": "true",
                            "kms:ViaService": "ec2.us-east-1.amazonaws.com",
                        },
                    },
                    params,
                )
                self.assertEqual(as_list(st["Resource"]), [f"arn:aws:kms:us-east-1:{ACCOUNT}:key/*"])

    # --- IAM: sinks -----------------------------------------------------------------------------

    def test_sink_permissions_name_their_resource(self):
        for s in self.statements:
            if s.effect == "Allow" and any(a.startswith(SINK_PREFIXES) for a in s.actions):
                self.assertTrue(s.resources, s)
                for r in s.resources:
                    self.assertNotIn("*", arn_text(r), s)

    def test_sink_permissions_follow_their_switch(self):
        topic_name = FINDINGS_TOPIC
        for params, ev in self.combos:
            has_topic = bool(params["NotificationEmail"] or params["ExistingTopicArn"])
            sns = self.active_allows(ev, "sns:Publish")
            self.assertEqual(bool(sns), has_topic, params)
            for s in sns:
                targets = {ev.value(r) for r in as_list(s.body["Resource"])}
                expected = params["ExistingTopicArn"] or f"<ref:{topic_name}>"
                self.assertEqual(targets, {expected}, params)

            hub_on = params["EnableSecurityHub"] == "true"
            for action in ("securityhub:BatchImportFindings", "securityhub:GetFindings"):
                self.assertEqual(bool(self.active_allows(ev, action)), hub_on, (action, params))
            for s in self.statements:
                if any(a.startswith("securityhub:") for a in s.actions) and ev.active(s.guards):
                    self.assertTrue(hub_on, s)
            for s in self.active_allows(ev, "securityhub:BatchImportFindings"):
                self.assertEqual(
                    s.resources,
                    [{"Fn::Sub": "arn:${AWS::Partition}:securityhub:${AWS::Region}:${AWS::AccountId}:product/${AWS::AccountId}/default"}],
                )

            for s in self.active_allows(ev, "securityhub:GetFindings"):
                self.assertEqual(
                    s.resources,
                    [{"Fn::Sub": "arn:${AWS::Partition}:securityhub:${AWS::Region}:${AWS::AccountId}:hub/default"}],
                )

            bus_on = bool(params["EventBusName"])
            events = self.active_allows(ev, "events:PutEvents")
            self.assertEqual(bool(events), bus_on, params)
            for s in events:
                self.assertEqual(
                    s.resources,
                    [{"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}"}],
                )

    def test_requeue_always_and_only_to_the_events_queue(self):
        # The function puts deferred events (a new message with what the first receive learned)
        # and unsent deliveries back on its own queue, whatever the sinks: sqs:SendMessage in
        # every combination, on the events queue's ARN and nothing else, in a statement of its own.
        queue = {"Fn::GetAtt": [self.events_queue_name(), "Arn"]}
        sends = [s for s in self.statements if any(_matches(a, "sqs:SendMessage", True) for a in s.actions)]
        self.assertTrue(sends, "no statement grants sqs:SendMessage: deferred events cannot be requeued")
        for s in sends:
            self.assertEqual(s.effect, "Allow", s)
            self.assertEqual(s.actions, ["sqs:SendMessage"], s)
            self.assertEqual(s.resources, [queue], s)
            self.assertNotIn("Condition", s.body, s)
            # Unconditional: no template condition guards it.
            self.assertEqual(s.guards, frozenset(), s)
            self.assertNotIn("Condition", self.res[s.resource], s)
        rendered_queue = f"<getatt:{self.events_queue_name()}.Arn>"
        for params, ev in self.combos:
            self.assertTrue(self.active_allows(ev, "sqs:SendMessage"), params)
            rendered = self.rendered_allows(ev, "sqs:SendMessage")
            self.assertTrue(rendered, params)
            for st in rendered:
                self.assertEqual(as_list(st["Resource"]), [rendered_queue], params)

    def test_diagnosis_permissions(self):
        _, ev = self.combos[0]
        granted = {}
        for s in self.statements:
            if s.effect == "Allow" and ev.active(s.guards) and ev.resource_exists(s.resource):
                for a in s.actions:
                    granted.setdefault(a, []).extend(s.resources)
        for a in ("ec2:DescribeInstances", "ec2:DescribeVolumes", "cloudtrail:LookupEvents", "kms:ListAliases"):
            self.assertEqual(granted.get(a), ["*"], a)
        # issue 18: a launch's keys from its launch template, its AMI's snapshots and the EBS
        # default key, in every combination (the diagnosis and the preflight both need them).
        for a in sorted(LAUNCH_KEY_READS):
            self.assertEqual(granted.get(a), ["*"], a)
        for params, ev in self.combos:
            for a in LAUNCH_KEY_READS:
                self.assertTrue(self.active_allows(ev, a), (a, params))
        for a in ("kms:DescribeKey", "kms:GetKeyPolicy"):
            self.assertEqual(granted.get(a), [{"Fn::Sub": "arn:${AWS::Partition}:kms:*:*:key/*"}], a)
        principals = [
            {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:user/*"},
            {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/*"},
        ]
        for a in IAM_ACTIONS_ALLOWED - PUT_POLICY:
            self.assertEqual(granted.get(a), principals, a)
        queue = {"Fn::GetAtt": [self.events_queue_name(), "Arn"]}
        for a in ("sqs:ChangeMessageVisibility", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                  "sqs:SendMessage"):
            self.assertEqual(granted.get(a), [queue], a)
        for a in ("logs:CreateLogStream", "logs:PutLogEvents"):
            self.assertEqual(granted.get(a), [{"Fn::GetAtt": ["FunctionLogGroup", "Arn"]}], a)

    def test_metrics_need_no_extra_permission(self):
        # The function's metrics are CloudWatch Embedded Metric Format lines in its own log group:
        # CloudWatch Logs extracts them. Nothing grants cloudwatch:* (no PutMetricData), and logs
        # actions are only the two writes, on the function's log group.
        for s in self.statements:
            for a in s.actions:
                self.assertFalse(a.lower().startswith("cloudwatch:"), f"{s}: {a}")
                if a.lower().startswith("logs:"):
                    self.assertIn(a, {"logs:CreateLogStream", "logs:PutLogEvents"}, s)
                    self.assertEqual(s.resources, [{"Fn::GetAtt": ["FunctionLogGroup", "Arn"]}], s)

    # --- Event delivery -----------------------------------------------------------------------

    def test_rule_pattern_and_target(self):
        name, rule = self.rule()
        pattern = rule["Properties"]["EventPattern"]
        self.assertEqual(set(pattern), {"source", "detail-type", "detail"})
        self.assertEqual(pattern["source"], ["aws.ec2"])
        self.assertEqual(pattern["detail-type"], ["EC2 Instance State-change Notification"])
        self.assertEqual(set(pattern["detail"]), {"state"})
        # stopped/terminated: a failed launch ends there; running (issue 18): the function
        # resolves the instance's open findings.
        self.assertEqual(sorted(pattern["detail"]["state"]), ["running", "stopped", "terminated"])
        targets = rule["Properties"]["Targets"]
        self.assertEqual([t["Arn"] for t in targets], [{"Fn::GetAtt": [self.events_queue_name(), "Arn"]}])

    # --- issue 15: nothing dropped between EventBridge and the queue --------------------------

    def test_rule_target_retries_then_dead_letters(self):
        # In every combination: EventBridge retries within CloudFormation's limits (0-185
        # attempts, 60-86,400 s), at most an hour so that a lasting fault reaches the DLQ and its
        # alarm within the hour, and then (or at once, for a permission error) sends the event
        # to a dead-letter queue of its own: a standard SSE queue, neither the events queue nor
        # its DLQ, keeping messages 14 days.
        rule_name, rule = self.rule()
        hub_name, hub = self.hub_rule()
        dlq = self.rule_dlq_name()
        self.assertNotIn(dlq, (self.events_queue_name(), self.events_dlq_name()))
        for params, ev in self.combos:
            # issue 17: the hub bus's rule, when there is one, exactly as the default bus's.
            rules = [rule] + ([hub] if ev.resource_exists(hub_name) else [])
            self.assertEqual(len(rules), 2 if params["Topology"] == "hub" else 1, params)
            for r in rules:
                (target,) = ev.resolve(r["Properties"])["Targets"]
                retry = target.get("RetryPolicy")
                self.assertIsNotNone(retry, f"the rule target has no RetryPolicy: {params}")
                attempts, age = int(retry["MaximumRetryAttempts"]), int(retry["MaximumEventAgeInSeconds"])
                self.assertTrue(1 <= attempts <= 185, attempts)
                self.assertTrue(60 <= age <= 3600, age)
                self.assertEqual(target.get("DeadLetterConfig"), {"Arn": f"<getatt:{dlq}.Arn>"}, params)
                self.assertTrue(ev.resource_exists(dlq), params)
        queue = self.res[dlq]
        self.assertEqual(queue["Type"], "AWS::SQS::Queue")
        props = queue["Properties"]
        self.assertNotIn("FifoQueue", props)  # EventBridge DLQs are standard queues
        self.assertIs(props.get("SqsManagedSseEnabled"), True)
        self.assertEqual(int(props["MessageRetentionPeriod"]), 1209600)
        self.assertNotIn("Condition", queue)

    # --- issue 18: the scheduled preflight ----------------------------------------------------

    def test_preflight_rule_and_permission_exist_only_with_the_schedule(self):
        # A scheduled rule on the default bus sends the function EventBridge's own Scheduled
        # Event (source aws.events, detail-type "Scheduled Event": no Input of ours), retried
        # within an hour; the function's resource policy admits events.amazonaws.com for that
        # rule only. Rule, permission and asynchronous-invocation settings exist exactly when
        # PreflightSchedule is set.
        name, rule = self.preflight_rule()
        fn_name, _ = self.function()
        condition = rule.get("Condition")
        self.assertIsNotNone(condition, "the preflight rule must exist only with PreflightSchedule")
        props = rule["Properties"]
        self.assertEqual(props["ScheduleExpression"], {"Ref": "PreflightSchedule"})
        self.assertEqual(props.get("State"), "ENABLED")
        self.assertNotIn("EventBusName", props)  # scheduled rules are on the default bus
        self.assertNotIn("EventPattern", props)
        (target,) = props["Targets"]
        self.assertEqual(target["Arn"], {"Fn::GetAtt": [fn_name, "Arn"]})
        for key in ("Input", "InputPath", "InputTransformer", "RoleArn"):
            self.assertNotIn(key, target)
        retry = target["RetryPolicy"]
        self.assertTrue(1 <= int(retry["MaximumRetryAttempts"]) <= 185, retry)
        self.assertTrue(60 <= int(retry["MaximumEventAgeInSeconds"]) <= 3600, retry)

        permissions = self.of_type("AWS::Lambda::Permission")
        self.assertEqual(len(permissions), 1, sorted(permissions))
        ((permission_name, permission),) = permissions.items()
        self.assertEqual(permission.get("Condition"), condition)
        pp = permission["Properties"]
        self.assertEqual(pp["Action"], "lambda:InvokeFunction")
        self.assertEqual(pp["Principal"], "events.amazonaws.com")
        self.assertIn(pp["FunctionName"], ({"Ref": fn_name}, {"Fn::GetAtt": [fn_name, "Arn"]}))
        self.assertEqual(pp.get("SourceArn"), {"Fn::GetAtt": [name, "Arn"]})

        # Asynchronous invocations (the only ones are the ticks): no retry, so a failed run does
        # not send its findings twice; the next tick repeats it.
        configs = self.of_type("AWS::Lambda::EventInvokeConfig")
        self.assertEqual(len(configs), 1, sorted(configs))
        ((config_name, config),) = configs.items()
        self.assertEqual(config.get("Condition"), condition)
        self.assertEqual(config["Properties"]["FunctionName"], {"Ref": fn_name})
        self.assertEqual(config["Properties"]["Qualifier"], "$LATEST")
        self.assertEqual(int(config["Properties"]["MaximumRetryAttempts"]), 0)
        self.assertNotIn("DestinationConfig", config["Properties"])

        for params, ev in self.combos:
            on = bool(params["PreflightSchedule"])
            for resource in (name, permission_name, config_name):
                self.assertEqual(ev.resource_exists(resource), on, (resource, params))
            if on:
                self.assertEqual(ev.resolve(props)["ScheduleExpression"], params["PreflightSchedule"], params)

    def test_whatever_names_the_preflight_rule_exists_only_with_it(self):
        # No dangling reference when the schedule is off: every resource or output that names a
        # preflight resource carries the same condition.
        conditional = {k for k, v in self.res.items() if v.get("Condition") == "HasPreflightSchedule"}
        self.assertGreaterEqual(len(conditional), 4, sorted(conditional))

        def names(node):
            if isinstance(node, dict):
                if is_fn(node, "Ref"):
                    yield node["Ref"]
                elif is_fn(node, "Fn::GetAtt"):
                    target = node["Fn::GetAtt"]
                    yield target[0] if isinstance(target, list) else target.split(".", 1)[0]
                for v in node.values():
                    yield from names(v)
            elif isinstance(node, list):
                for v in node:
                    yield from names(v)

        for section in ("Resources", "Outputs"):
            for key, item in self.t[section].items():
                if set(names(item)) & conditional:
                    self.assertEqual(item.get("Condition"), "HasPreflightSchedule", f"{section}.{key}")

    def test_preflight_failed_invocations_alarm(self):
        name, _ = self.preflight_rule()
        names = self.alarm_watching("AWS/Events", "FailedInvocations", {"RuleName": ("rule", name)})
        self.assertEqual(len(names), 1, names)
        alarm = self.alarms()[names[0]]
        self.assertEqual(alarm.get("Condition"), self.res[name]["Condition"])
        p = alarm["Properties"]
        self.assertEqual((p["Statistic"], p["ComparisonOperator"], float(p["Threshold"])), ("Sum", "GreaterThanThreshold", 0.0))
        self.assertEqual(p.get("TreatMissingData"), "notBreaching")

    def test_rule_dlq_policy_admits_only_the_rule(self):
        # For every combination: one Allow (EventBridge, for this rule only) and one Deny of
        # sqs:SendMessage for every other request, nobody exempt.
        dlq = self.rule_dlq_name()
        arn = f"<getatt:{dlq}.Arn>"
        policy = self.queue_policy(dlq)
        self.assertNotIn("Condition", policy)
        document = policy["Properties"]["PolicyDocument"]
        for params, ev in self.combos:
            rules = self.delivering_rules(ev)
            statements = as_list(ev.resolve(document)["Statement"])
            allows = [st for st in statements if st["Effect"] == "Allow"]
            denies = [st for st in statements if st["Effect"] == "Deny"]
            self.assertEqual(len(statements), 2, params)
            self.assertEqual(len(allows), 1, params)
            self.assertEqual(len(denies), 1, params)
            (allow,), (deny,) = allows, denies
            self.assertEqual(allow["Principal"], {"Service": "events.amazonaws.com"})
            self.assertEqual(as_list(allow["Action"]), ["sqs:SendMessage"])
            self.assertEqual(as_list(allow["Resource"]), [arn])
            self.assertEqual(set(allow.get("Condition", {})), {"ArnEquals"}, params)
            self.assertEqual(set(allow["Condition"]["ArnEquals"]), {"aws:SourceArn"}, params)
            self.assertEqual(as_list(allow["Condition"]["ArnEquals"]["aws:SourceArn"]), rules, params)
            self.assertEqual(deny["Principal"], "*")
            self.assertEqual(as_list(deny["Action"]), ["sqs:SendMessage"])
            self.assertEqual(as_list(deny["Resource"]), [arn])
            self.assertEqual(set(deny.get("Condition", {})), {"ArnNotEquals"}, params)
            self.assertEqual(set(deny["Condition"]["ArnNotEquals"]), {"aws:SourceArn"}, params)
            self.assertEqual(as_list(deny["Condition"]["ArnNotEquals"]["aws:SourceArn"]), rules, params)

    def test_rule_dlq_policy_decisions(self):
        # Only EventBridge delivering for the state-change rule may send; the function's role,
        # the redrive principal, administrators, other accounts and other rules may not.
        rule = f"<getatt:{self.rule()[0]}.Arn>"
        hub_rule = f"<getatt:{self.hub_rule()[0]}.Arn>"
        role = f"<getatt:{self.role_name()}.Arn>"
        dlq = self.rule_dlq_name()
        arn = f"<getatt:{dlq}.Arn>"
        document = self.queue_policy(dlq)["Properties"]["PolicyDocument"]
        redrive = SWITCHES["QueueRedrivePrincipalArn"][1]
        checked = set()
        for params, ev in self.combos:
            policy = ev.resolve(document)
            key = json.dumps(policy, sort_keys=True)
            if key in checked:
                continue
            checked.add(key)
            hub = params["Topology"] == "hub"
            callers = [
                ("EventBridge for the state-change rule", ("Service", "events.amazonaws.com"),
                 {"aws:SourceArn": rule, "aws:SourceAccount": ACCOUNT}, True, False, "allow"),
                # issue 17: the hub bus's rule dead-letters here too, and only in a hub exists.
                ("EventBridge for the hub rule", ("Service", "events.amazonaws.com"),
                 {"aws:SourceArn": hub_rule, "aws:SourceAccount": ACCOUNT}, True, False,
                 "allow" if hub else "explicit-deny"),
                ("EventBridge for another rule", ("Service", "events.amazonaws.com"),
                 {"aws:SourceArn": f"arn:aws:events:us-east-1:{ACCOUNT}:rule/other", "aws:SourceAccount": ACCOUNT},
                 True, False, "explicit-deny"),
                ("the function's role", ("AWS", role), {"aws:PrincipalArn": role}, True, True, "explicit-deny"),
                ("the redrive principal", ("AWS", redrive), {"aws:PrincipalArn": redrive}, True, True, "explicit-deny"),
                ("an administrator", ("AWS", f"arn:aws:iam::{ACCOUNT}:role/Admin"),
                 {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/Admin"}, True, True, "explicit-deny"),
                ("another account", ("AWS", "arn:aws:iam::210987654321:role/eve"),
                 {"aws:PrincipalArn": "arn:aws:iam::210987654321:role/eve"}, False, True, "explicit-deny"),
            ]
            for who, caller, context, same_account, identity_allows, expected in callers:
                got = resource_policy_decision(policy, caller, context, arn, "sqs:SendMessage", same_account, identity_allows)
                self.assertEqual(got, expected, f"{who}: {params}")
        self.assertEqual(len(checked), 2, "one policy for each topology, whatever the other parameters")

    def test_queue_policy_allows_only_the_rule(self):
        # One Allow, for EventBridge delivering for the state-change rule, and in a hub (issue 17)
        # for the hub bus's rule too: nothing else, in every combination.
        queue = self.events_queue_name()
        policy = self.queue_policy()
        self.assertEqual(policy["Properties"]["Queues"], [{"Ref": queue}])
        for params, ev in self.combos:
            statements = as_list(ev.resolve(policy["Properties"]["PolicyDocument"])["Statement"])
            allows = [st for st in statements if st["Effect"] == "Allow"]
            self.assertEqual(len(allows), 1, statements)
            (st,) = allows
            self.assertEqual(st["Principal"], {"Service": "events.amazonaws.com"})
            self.assertEqual(as_list(st["Action"]), ["sqs:SendMessage"])
            self.assertEqual(as_list(st["Resource"]), [f"<getatt:{queue}.Arn>"])
            self.assertEqual(set(st.get("Condition", {})), {"ArnEquals"}, params)
            self.assertEqual(set(st["Condition"]["ArnEquals"]), {"aws:SourceArn"}, params)
            self.assertEqual(as_list(st["Condition"]["ArnEquals"]["aws:SourceArn"]), self.delivering_rules(ev), params)

    def test_queue_policy_denies_every_other_sender(self):
        # One Deny, in every parameter combination, exempting exactly the rule (aws:SourceArn),
        # the function's role and, only when set, the redrive principal (aws:PrincipalArn). Both
        # keys sit under one negated operator: ANDed, so the Deny applies only to a request that
        # is neither from the rule nor from an exempt principal.
        role = f"<getatt:{self.role_name()}.Arn>"
        queue = f"<getatt:{self.events_queue_name()}.Arn>"
        document = self.queue_policy()["Properties"]["PolicyDocument"]
        for params, ev in self.combos:
            statements = as_list(ev.resolve(document)["Statement"])
            self.assertEqual(len(statements), 2, params)
            denies = [st for st in statements if st["Effect"] == "Deny"]
            self.assertEqual(len(denies), 1, params)
            (deny,) = denies
            self.assertEqual(deny["Principal"], "*")
            self.assertEqual(as_list(deny["Action"]), ["sqs:SendMessage"])
            self.assertEqual(as_list(deny["Resource"]), [queue])
            self.assertEqual(set(deny["Condition"]), {"ArnNotEquals"}, params)
            exempt = deny["Condition"]["ArnNotEquals"]
            self.assertEqual(set(exempt), {"aws:SourceArn", "aws:PrincipalArn"}, params)
            self.assertEqual(as_list(exempt["aws:SourceArn"]), self.delivering_rules(ev), params)
            expected = {role} | ({params["QueueRedrivePrincipalArn"]} if params["QueueRedrivePrincipalArn"] else set())
            principals = as_list(exempt["aws:PrincipalArn"])
            self.assertEqual(len(principals), len(expected), params)
            self.assertEqual(set(principals), expected, params)
            for p in principals:
                self.assertNotIn("*", p, params)
                self.assertNotIn("?", p, params)

    def test_queue_policy_decisions(self):
        # The decision for a few callers, by a small evaluator of that one policy (plus the
        # caller's identity policy): only the rule's delivery, the function's role and the
        # configured redrive principal may send.
        rule = f"<getatt:{self.rule()[0]}.Arn>"
        hub_rule = f"<getatt:{self.hub_rule()[0]}.Arn>"
        role = f"<getatt:{self.role_name()}.Arn>"
        queue = f"<getatt:{self.events_queue_name()}.Arn>"
        document = self.queue_policy()["Properties"]["PolicyDocument"]
        redrive = SWITCHES["QueueRedrivePrincipalArn"][1]
        other_rule = f"arn:aws:events:us-east-1:{ACCOUNT}:rule/forged-ec2-events"
        for params, ev in self.combos:
            if params["RemediationTagKey"] != EXPECTED_PARAMETERS["RemediationTagKey"][0]:
                continue  # the tag key plays no part in the queue policy
            policy = ev.resolve(document)
            callers = [
                # (who, caller, request context, same account, identity policy allows, expected)
                ("EventBridge delivering for the state-change rule", ("Service", "events.amazonaws.com"),
                 {"aws:SourceArn": rule, "aws:SourceAccount": ACCOUNT}, True, False, "allow"),
                # issue 17: the hub bus's rule, a member account's event; only in a hub.
                ("EventBridge delivering for the hub rule", ("Service", "events.amazonaws.com"),
                 {"aws:SourceArn": hub_rule, "aws:SourceAccount": ACCOUNT}, True, False,
                 "allow" if params["Topology"] == "hub" else "explicit-deny"),
                ("EventBridge delivering for another rule of the account", ("Service", "events.amazonaws.com"),
                 {"aws:SourceArn": other_rule, "aws:SourceAccount": ACCOUNT}, True, False, "explicit-deny"),
                ("the function's role (redelivery)", ("AWS", role),
                 {"aws:PrincipalArn": role, "aws:PrincipalAccount": ACCOUNT}, True, True, "allow"),
                ("another IAM user of the account allowed sqs:SendMessage",
                 ("AWS", f"arn:aws:iam::{ACCOUNT}:user/mallory"),
                 {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/mallory", "aws:PrincipalAccount": ACCOUNT},
                 True, True, "explicit-deny"),
                ("an administrator role of the account", ("AWS", f"arn:aws:iam::{ACCOUNT}:role/Admin"),
                 {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/Admin", "aws:PrincipalAccount": ACCOUNT},
                 True, True, "explicit-deny"),
                ("a principal of another account", ("AWS", "arn:aws:iam::210987654321:role/eve"),
                 {"aws:PrincipalArn": "arn:aws:iam::210987654321:role/eve", "aws:PrincipalAccount": "210987654321"},
                 False, True, "explicit-deny"),
                ("the DLQ redrive principal", ("AWS", redrive),
                 {"aws:PrincipalArn": redrive, "aws:PrincipalAccount": ACCOUNT}, True, True,
                 "allow" if params["QueueRedrivePrincipalArn"] == redrive else "explicit-deny"),
            ]
            for who, caller, context, same_account, identity_allows, expected in callers:
                got = resource_policy_decision(
                    policy, caller, context, queue, "sqs:SendMessage", same_account, identity_allows
                )
                self.assertEqual(got, expected, f"{who}: {params}")

    def test_concurrent_functions_share_cloudtrail_rate(self):
        # LookupEvents allows 2 per second per account and region, shared by every function
        # instance SQS runs at once: together they must stay under it.
        _, fn = self.function()
        (event,) = fn["Properties"]["Events"].values()
        concurrency = int(event["Properties"]["ScalingConfig"]["MaximumConcurrency"])
        rate = float(fn["Properties"]["Environment"]["Variables"]["CLOUDTRAIL_CALLS_PER_SECOND"])
        self.assertLess(rate * concurrency, 2.0, (rate, concurrency))
        self.assertGreaterEqual(rate, 0.1)

    def test_events_queue(self):
        queue = self.res[self.events_queue_name()]["Properties"]
        _, fn = self.function()
        timeout = int(fn["Properties"]["Timeout"])
        (event,) = fn["Properties"]["Events"].values()
        window = int(event["Properties"].get("MaximumBatchingWindowInSeconds", 0))
        # Looked at on arrival: a delivery delay would only postpone every finding.
        self.assertEqual(int(queue["DelaySeconds"]), 0)
        # Lambda's six function timeouts, plus the batching window during which the messages'
        # visibility timeout already runs.
        self.assertGreaterEqual(int(queue["VisibilityTimeout"]), 6 * timeout + window)
        self.assertIs(queue.get("SqsManagedSseEnabled"), True)
        redrive = queue["RedrivePolicy"]
        dlq = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        self.assertEqual(self.res[dlq]["Type"], "AWS::SQS::Queue")
        self.assertIs(self.res[dlq]["Properties"].get("SqsManagedSseEnabled"), True)
        self.assertGreaterEqual(int(redrive["maxReceiveCount"]), 30)
        # The DLQ must keep a message longer than the events queue did.
        _, ev = self.combos[0]
        retention = int(ev.value(queue["MessageRetentionPeriod"]))
        self.assertEqual(retention, 345600)
        self.assertGreater(int(self.res[dlq]["Properties"]["MessageRetentionPeriod"]), retention)

    # --- issue 15: alarms an operator would set, each with an action -------------------------

    def alarm_topic(self, params):
        """Where every alarm must notify with these parameters."""
        if params["ExistingTopicArn"]:
            return params["ExistingTopicArn"]
        return f"<ref:{FINDINGS_TOPIC}>" if params["NotificationEmail"] else f"<ref:{OPERATIONS_TOPIC}>"

    def alarm_watching(self, namespace, metric, dimension):
        """The alarms that watch namespace/metric for dimension ((kind, logical id) pairs by name)."""
        found = []
        for name, alarm in self.alarms().items():
            for _, m, _, _ in alarm_queries(alarm["Properties"]):
                if not m or (m["Namespace"], m["MetricName"]) != (namespace, metric):
                    continue
                dims = {d["Name"]: dimension_target(d["Value"]) for d in m["Dimensions"]}
                if dims == dimension:
                    found.append(name)
        return sorted(set(found))

    def test_every_alarm_has_an_action_in_every_combination(self):
        alarms = self.alarms()
        self.assertGreaterEqual(len(alarms), 7, sorted(alarms))
        for name, alarm in alarms.items():
            # An alarm exists unconditionally, or exactly with what it watches (issue 18: the
            # preflight rule's alarm, with the schedule; issue 17: the hub rule's, in a hub).
            self.assertIn(alarm.get("Condition"), (None, "HasPreflightSchedule", HUB_CONDITION), name)
            self.assertTrue(alarm["Properties"].get("AlarmDescription"), name)
            # Nothing but the actions depends on the parameters (checked once, below, for all).
            rest = {k: v for k, v in alarm["Properties"].items() if k not in ("AlarmActions",)}
            self.assertNotIn("Fn::If", json.dumps(rest), name)
        for params, ev in self.combos:
            expected = self.alarm_topic(params)
            if expected.startswith("<ref:"):
                self.assertTrue(ev.resource_exists(expected[5:-1]), params)
            for name, alarm in alarms.items():
                if not ev.resource_exists(name):
                    continue
                actions = ev.resolve(alarm["Properties"]).get("AlarmActions", [])
                self.assertEqual(as_list(actions), [expected], f"{name}: {params}")

    def test_operations_topic_exactly_when_no_topic_is_configured(self):
        topics = self.of_type("AWS::SNS::Topic")
        self.assertEqual(set(topics), {FINDINGS_TOPIC, OPERATIONS_TOPIC})
        self.assertEqual(self.of_type("AWS::SNS::Subscription").keys() & {OPERATIONS_TOPIC}, set())
        for params, ev in self.combos:
            no_topic = not (params["NotificationEmail"] or params["ExistingTopicArn"])
            self.assertEqual(ev.resource_exists(OPERATIONS_TOPIC), no_topic, params)
            # Nobody is subscribed to it by the stack, and the function never publishes to it.
            for name, sub in self.of_type("AWS::SNS::Subscription").items():
                if ev.resource_exists(name):
                    self.assertNotEqual(ev.value(sub["Properties"]["TopicArn"]), f"<ref:{OPERATIONS_TOPIC}>")
            for st in self.rendered_allows(ev, "sns:Publish"):
                self.assertNotIn(f"<ref:{OPERATIONS_TOPIC}>", as_list(st["Resource"]), params)

    def test_function_alarms(self):
        fn_name, fn = self.function()
        timeout = int(fn["Properties"]["Timeout"])
        function = {"FunctionName": ("ref", fn_name)}
        for metric, stat, operator, threshold in (
            ("Errors", "Sum", "GreaterThanThreshold", 0),
            ("Throttles", "Sum", "GreaterThanThreshold", 0),
            # Near the timeout: the last 10% of it (the function stops earlier by design).
            ("Duration", "Maximum", "GreaterThanOrEqualToThreshold", 900 * timeout),
        ):
            names = self.alarm_watching("AWS/Lambda", metric, function)
            self.assertEqual(len(names), 1, f"expected one alarm on {metric} of {fn_name}, got {names}")
            p = self.alarms()[names[0]]["Properties"]
            self.assertEqual((p["Statistic"], p["ComparisonOperator"], float(p["Threshold"])),
                             (stat, operator, float(threshold)), metric)
            self.assertEqual(p.get("TreatMissingData"), "notBreaching", metric)
            self.assertLessEqual(int(p["Period"]) * int(p["EvaluationPeriods"]), 900, metric)

    def test_deadline_margin_fits_the_timeout_and_the_duration_alarm(self):
        # The function stops starting work DEADLINE_MARGIN_SECONDS before its deadline: a call
        # started just before the stop must end (one attempt) before the timeout, and the stop
        # must come before FunctionDurationAlarm's threshold, or every cut batch would alarm.
        fn_name, fn = self.function()
        timeout = int(fn["Properties"]["Timeout"])
        margin = int(fn["Properties"]["Environment"]["Variables"]["DEADLINE_MARGIN_SECONDS"])
        (name,) = self.alarm_watching("AWS/Lambda", "Duration", {"FunctionName": ("ref", fn_name)})
        threshold_s = float(self.alarms()[name]["Properties"]["Threshold"]) / 1000
        self.assertGreaterEqual(margin, ATTEMPT_TIMEOUT_SECONDS)
        self.assertLess(timeout - margin, threshold_s)
        self.assertLess(threshold_s, timeout)

    def test_rule_failed_invocations_alarm(self):
        rule_name, _ = self.rule()
        names = self.alarm_watching("AWS/Events", "FailedInvocations", {"RuleName": ("rule", rule_name)}) \
            + self.alarm_watching("AWS/Events", "FailedInvocations", {"RuleName": ("ref", rule_name)})
        self.assertEqual(len(names), 1, names)
        p = self.alarms()[names[0]]["Properties"]
        self.assertEqual((p["Statistic"], p["ComparisonOperator"], float(p["Threshold"])), ("Sum", "GreaterThanThreshold", 0.0))
        # EventBridge publishes the metric only when it is not zero.
        self.assertEqual(p.get("TreatMissingData"), "notBreaching")

    def test_queue_age_alarm_exceeds_the_wait_for_every_allowed_wait(self):
        # ApproximateAgeOfOldestMessage of the events queue: never while the function is merely
        # waiting for CloudTrail, always within an hour past the wait. Waiting, a message is at
        # most one deferral old (a new message delayed at most 900 s, and never beyond twice the
        # wait, then the batching window and an invocation), or, kept by visibility when that
        # send fails, the wait, the 60 s delay, the batching window and a visibility timeout old
        # (SQS leaves it out of the metric from its third receive).
        queue_name = self.events_queue_name()
        names = self.alarm_watching("AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": ("queue", queue_name)})
        self.assertEqual(len(names), 1, names)
        props = self.alarms()[names[0]]["Properties"]
        queue = self.res[queue_name]["Properties"]
        _, fn = self.function()
        (event,) = fn["Properties"]["Events"].values()
        window = int(event["Properties"]["MaximumBatchingWindowInSeconds"])
        wait = self.t["Parameters"]["CloudTrailWaitMinutes"]
        _, ev = self.combos[0]
        for minutes in range(int(wait["MinValue"]), int(wait["MaxValue"]) + 1):
            params = dict(ev.params, CloudTrailWaitMinutes=str(minutes))
            healthy = max(
                minutes * 60 + int(queue["DelaySeconds"]) + window + int(queue["VisibilityTimeout"]),
                min(MAX_DEFERRAL_DELAY_SECONDS, 2 * minutes * 60 + 5) + window + int(fn["Properties"]["Timeout"]),
            )
            for age, expected in ((healthy, "OK"), (minutes * 60 + 3600, "ALARM")):
                def data(metric, age=age):
                    dims = {d["Name"]: dimension_target(d["Value"]) for d in metric["Dimensions"]}
                    if (metric["MetricName"], dims) != ("ApproximateAgeOfOldestMessage", {"QueueName": ("queue", queue_name)}):
                        return {}
                    return {t: age for t in range(120)}
                self.assertEqual(alarm_state(props, data, 119, params), expected, (minutes, age))

    def dlq_alarm_states(self, queue, arrivals_by_send):
        """States of the alarms watching `queue`, minute by minute, for each history variant."""
        names = [n for n, a in self.alarms().items()
                 if any(m and {d["Name"]: dimension_target(d["Value"]) for d in m["Dimensions"]} == {"QueueName": ("queue", queue)}
                        for _, m, _, _ in alarm_queries(a["Properties"]))]
        self.assertEqual(len(names), 1, f"expected one alarm on {queue}, got {names}")
        props = self.alarms()[names[0]]["Properties"]
        _, ev = self.combos[0]
        out = []
        for inactive in (True, False):
            data = queue_history(arrivals_by_send, inactive, queue)
            for lag in (0, 1, 2):
                states = {t: alarm_state(props, data, t, ev.params, published_until=t - lag) for t in range(120)}
                out.append(((inactive, lag), states))
        return names[0], out

    def assert_alarms_on_new_messages(self, queue, arrivals_by_send):
        # One message arrives at minute 20 and stays; it is read (not removed) at 50; a second
        # arrives at 80. The alarm must fire for each arrival, and be back to OK in between and
        # after: a level alarm on a non-empty queue would stay in ALARM and never tell of the
        # second.
        name, variants = self.dlq_alarm_states(queue, arrivals_by_send)
        for variant, states in variants:
            where = f"{name} on {queue}, (inactive when empty, publication lag) = {variant}"
            self.assertTrue(all(states[t] == "OK" for t in range(0, 20)), where)
            self.assertIn("ALARM", [states[t] for t in range(20, 30)], f"{where}: the first arrival")
            self.assertTrue(all(states[t] == "OK" for t in range(35, 80)), f"{where}: not back to OK, or a read taken for an arrival")
            self.assertIn("ALARM", [states[t] for t in range(80, 90)], f"{where}: the second arrival")
            self.assertTrue(all(states[t] == "OK" for t in range(95, 120)), f"{where}: not back to OK")

    def test_events_dlq_alarms_on_new_messages(self):
        # SQS moves messages here itself (redrive policy): not counted by NumberOfMessagesSent.
        self.assert_alarms_on_new_messages(self.events_dlq_name(), arrivals_by_send=False)

    def test_rule_dlq_alarms_on_new_messages(self):
        # EventBridge sends here with SendMessage.
        self.assert_alarms_on_new_messages(self.rule_dlq_name(), arrivals_by_send=True)

    def test_alarm_set(self):
        # The operator's set, one alarm each: function errors, throttles, near-timeouts; the
        # events queue's oldest message; the rule's failed deliveries; arrivals in either DLQ.
        fn_name, _ = self.function()
        rule_name, _ = self.rule()
        watched = set()
        for name, alarm in self.alarms().items():
            for _, m, _, _ in alarm_queries(alarm["Properties"]):
                if m:
                    dims = tuple(sorted((d["Name"], dimension_target(d["Value"])) for d in m["Dimensions"]))
                    watched.add((m["Namespace"], m["MetricName"], dims))
        expected = {
            ("AWS/Lambda", "Errors", (("FunctionName", ("ref", fn_name)),)),
            ("AWS/Lambda", "Throttles", (("FunctionName", ("ref", fn_name)),)),
            ("AWS/Lambda", "Duration", (("FunctionName", ("ref", fn_name)),)),
            ("AWS/SQS", "ApproximateAgeOfOldestMessage", (("QueueName", ("queue", self.events_queue_name())),)),
        }
        self.assertLessEqual(expected, watched)
        self.assertTrue(any(w[:2] == ("AWS/Events", "FailedInvocations") for w in watched), watched)
        for queue in (self.events_dlq_name(), self.rule_dlq_name()):
            self.assertTrue(any(("QueueName", ("queue", queue)) in w[2] for w in watched), queue)

    def test_event_source(self):
        _, fn = self.function()
        (event,) = fn["Properties"]["Events"].values()
        self.assertEqual(event["Type"], "SQS")
        props = event["Properties"]
        # A storm is diagnosed in few invocations that share CloudTrail pages (BENCHMARKS.md).
        self.assertGreaterEqual(int(props["BatchSize"]), 50)
        self.assertGreaterEqual(int(props["MaximumBatchingWindowInSeconds"]), 1)
        self.assertIn("ReportBatchItemFailures", props["FunctionResponseTypes"])

    # --- Function -----------------------------------------------------------------------------

    def test_function_shape(self):
        name, fn = self.function()
        p = fn["Properties"]
        self.assertEqual(p["Runtime"], "provided.al2023")
        self.assertEqual(p["Architectures"], ["arm64"])
        self.assertEqual(p["Handler"], "bootstrap")
        self.assertEqual(p["CodeUri"], ".")
        self.assertEqual(fn["Metadata"]["BuildMethod"], "rust-cargolambda")
        self.assertEqual(fn["Metadata"]["BuildProperties"]["Binary"], "kms-launch-doctor")
        self.assertEqual(p["LoggingConfig"]["LogFormat"], "JSON")
        group_name = p["LoggingConfig"]["LogGroup"]["Ref"]
        group = self.res[group_name]
        self.assertEqual(group["Type"], "AWS::Logs::LogGroup")
        self.assertEqual(group["Properties"]["RetentionInDays"], {"Ref": "LogRetentionDays"})
        # /aws/lambda/<function name>
        self.assertEqual(p["FunctionName"], {"Ref": "AWS::StackName"})
        self.assertEqual(group["Properties"]["LogGroupName"], {"Fn::Sub": "/aws/lambda/${AWS::StackName}"})
        for params, ev in self.combos:
            mode = ev.value(p.get("Tracing", "PassThrough"))
            self.assertEqual(mode == "Active", params["EnableTracing"] == "true", params)

    def test_environment(self):
        _, fn = self.function()
        env = fn["Properties"]["Environment"]["Variables"]
        queue = self.events_queue_name()
        retention = self.res[queue]["Properties"]["MessageRetentionPeriod"]
        for params, ev in self.combos:
            got = {k: ev.value(v) for k, v in env.items()}
            topic = params["ExistingTopicArn"] or ("<ref:FindingsTopic>" if params["NotificationEmail"] else "")
            expected = {
                "REMEDIATION_MODE": params["RemediationMode"],
                "REMEDIATION_TAG_KEY": params["RemediationTagKey"],
                "RESTART_AFTER_REMEDIATION": params["RestartAfterRemediation"],
                "FINDINGS_TOPIC_ARN": topic,
                "SECURITY_HUB": "on" if params["EnableSecurityHub"] == "true" else "off",
                "FINDINGS_EVENT_BUS": params["EventBusName"],
                "CLOUDTRAIL_WAIT_MINUTES": params["CloudTrailWaitMinutes"],
                "EVENTS_QUEUE_URL": f"<ref:{queue}>",
                # The function skips events older than what the queue can hold: the same number.
                "EVENTS_QUEUE_RETENTION_SECONDS": str(ev.value(retention)),
                "LOG_LEVEL": params["LogLevel"],
                # issue 18: whose launches the scheduled preflight checks.
                "PREFLIGHT_PRINCIPALS": params["PreflightPrincipals"],
                # issue 17: the role to assume in another account; empty outside a hub.
                "SPOKE_ROLE_NAME": params["SpokeRoleName"] if params["Topology"] == "hub" else "",
            }
            self.assertEqual({k: got.get(k) for k in expected}, expected, params)

    # --- Parameters, conditions, outputs ------------------------------------------------------

    def test_parameters(self):
        params = self.t["Parameters"]
        for name, (default, allowed) in EXPECTED_PARAMETERS.items():
            self.assertIn(name, params)
            self.assertEqual(str(params[name].get("Default")), default, name)
            self.assertIsInstance(params[name].get("Default"), (str, int), name)  # not a YAML bool
            if allowed is not None:
                self.assertEqual({str(v) for v in params[name]["AllowedValues"]}, allowed, name)
        wait = params["CloudTrailWaitMinutes"]
        self.assertEqual((wait["Type"], int(wait["MinValue"]), int(wait["MaxValue"])), ("Number", 1, 120))
        self.assertEqual({str(v) for v in params["LogRetentionDays"]["AllowedValues"]}, CLOUDWATCH_RETENTION_DAYS)
        # The tag key is substituted into a JSON policy document: no quote or backslash may pass.
        pattern = re.compile(params["RemediationTagKey"]["AllowedPattern"])
        self.assertTrue(pattern.fullmatch("kms-launch-doctor:auto-remediate"))
        for bad in ['a"b', "a\\b", "", "x" * 129]:
            self.assertFalse(pattern.fullmatch(bad), bad)
        # The redrive principal is compared with ArnNotEquals, where * and ? are wildcards: only
        # one exact IAM role or user ARN, or nothing.
        redrive = re.compile(params["QueueRedrivePrincipalArn"]["AllowedPattern"])
        for good in ("", "arn:aws:iam::123456789012:role/ops/dlq-redrive", "arn:aws:iam::123456789012:user/ops"):
            self.assertTrue(redrive.fullmatch(good), good)
        for bad in ("*", "arn:aws:iam::123456789012:role/*", "arn:aws:iam::123456789012:role/a?c",
                    "arn:aws:sts::123456789012:assumed-role/ops/session", "arn:aws:iam::123456789012:root",
                    "arn:aws:iam::*:role/ops"):
            self.assertFalse(redrive.fullmatch(bad), bad)
        # issue 18: empty (off) or an EventBridge schedule expression; CloudFormation applies
        # AllowedPattern to the whole value, as fullmatch does.
        schedule = re.compile(params["PreflightSchedule"]["AllowedPattern"])
        for good in ("", "cron(0 18 * * ? *)", "cron(0/15 8-17 ? * MON-FRI *)", "rate(1 day)", "rate(12 hours)",
                     "rate(30 minutes)"):
            self.assertTrue(schedule.fullmatch(good), good)
        for bad in ("cron(0 18 * * ?)", "cron(0 18 * * ? * *)", "rate(1 days)", "rate(2 hour)", "rate(0 minutes)",
                    "at(2026-11-28T10:00:00)", "daily", " cron(0 18 * * ? *)"):
            self.assertFalse(schedule.fullmatch(bad), bad)
        principals = re.compile(params["PreflightPrincipals"]["AllowedPattern"])
        for good in ("", "arn:aws:iam::123456789012:role/ops/deployer",
                     "arn:aws:iam::123456789012:role/a,arn:aws:iam::123456789012:user/b",
                     "arn:aws:iam::123456789012:role/a, arn:aws:iam::123456789012:role/b"):
            self.assertTrue(principals.fullmatch(good), good)
        for bad in ("*", "arn:aws:iam::123456789012:role/*", "arn:aws:sts::123456789012:assumed-role/a/s",
                    "arn:aws:iam::123456789012:role/a,", ",arn:aws:iam::123456789012:role/a",
                    "arn:aws:iam::123456789012:group/g", "arn:aws:iam::123456789012:role/a?"):
            self.assertFalse(principals.fullmatch(bad), bad)
        self.assertLessEqual(int(params["PreflightPrincipals"]["MaxLength"]), 4096)  # Lambda's 4 KB of environment
        groups = self.t["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
        grouped = [p for g in groups for p in g["Parameters"]]
        self.assertEqual(sorted(grouped), sorted(params), "every parameter in exactly one group")

    def test_topic_resources_follow_parameters(self):
        subs = self.of_type("AWS::SNS::Subscription")
        for params, ev in self.combos:
            created = ev.resource_exists(FINDINGS_TOPIC)
            self.assertEqual(created, bool(params["NotificationEmail"]) and not params["ExistingTopicArn"], params)
            email = [n for n in subs if ev.resource_exists(n)]
            self.assertEqual(bool(email), bool(params["NotificationEmail"]), params)
            for n in email:
                sp = subs[n]["Properties"]
                self.assertEqual(sp["Protocol"], "email")
                expected = params["ExistingTopicArn"] or "<ref:FindingsTopic>"
                self.assertEqual(ev.value(sp["TopicArn"]), expected)

    def test_outputs(self):
        outputs = self.t["Outputs"]
        for name in ("FunctionArn", "EventsQueueUrl", "EventsQueueArn", "DeadLetterQueueUrl", "FindingsTopicArn",
                     "RuleDeadLetterQueueUrl", "OperationsTopicArn"):
            self.assertIn(name, outputs)
        self.assertEqual(outputs["RuleDeadLetterQueueUrl"]["Value"], {"Ref": self.rule_dlq_name()})
        self.assertEqual(outputs["OperationsTopicArn"]["Value"], {"Ref": OPERATIONS_TOPIC})
        preflight_name, _ = self.preflight_rule()
        self.assertEqual(outputs["PreflightScheduleRuleArn"]["Value"], {"Fn::GetAtt": [preflight_name, "Arn"]})
        self.assertEqual(outputs["PreflightScheduleRuleArn"].get("Condition"), self.res[preflight_name]["Condition"])
        # issue 17: the spokes trust the function's role (always given), and forward to the hub
        # bus (given in a hub).
        self.assertEqual(outputs["FunctionRoleArn"]["Value"], {"Fn::GetAtt": [self.role_name(), "Arn"]})
        self.assertNotIn("Condition", outputs["FunctionRoleArn"])
        bus_name, _ = self.hub_bus()
        self.assertEqual(outputs["HubEventBusArn"]["Value"], {"Fn::GetAtt": [bus_name, "Arn"]})
        self.assertEqual(outputs["HubEventBusArn"].get("Condition"), HUB_CONDITION)
        for params, ev in self.combos:
            has_topic = bool(params["NotificationEmail"] or params["ExistingTopicArn"])
            cond = outputs["FindingsTopicArn"].get("Condition")
            self.assertEqual(cond is not None and ev.condition(cond), has_topic, params)
            cond = outputs["OperationsTopicArn"].get("Condition")
            self.assertEqual(cond is not None and ev.condition(cond), not has_topic, params)

    def test_samconfig_example_matches_defaults(self):
        with open(ROOT / "samconfig.toml.example", "rb") as f:
            config = tomllib.load(f)
        deploy = config["default"]["deploy"]["parameters"]
        self.assertEqual(deploy["capabilities"], "CAPABILITY_IAM")
        self.assertEqual(config["default"]["global"]["parameters"]["stack_name"], "kms-launch-doctor")
        overrides = dict(item.split("=", 1) for item in shlex.split(deploy["parameter_overrides"]))
        defaults = {k: default for k, (default, _) in EXPECTED_PARAMETERS.items()}
        # Every parameter, with the template's default (issue 17 added the preflight's two).
        self.assertEqual(overrides, defaults)
        self.assertEqual(set(defaults), set(self.t["Parameters"]))


    # --- issue 17: the organization hub --------------------------------------------------------

    @staticmethod
    def names_in(node, guards=frozenset()):
        """(logical id, guards) for every Ref/GetAtt in node, guards being the Fn::If conditions
        (and negations) on the way to it."""
        if is_fn(node, "Fn::If"):
            cond, a, b = node["Fn::If"]
            yield from TemplateTest.names_in(a, guards | {cond})
            yield from TemplateTest.names_in(b, guards | {"!" + cond})
        elif is_fn(node, "Ref"):
            yield node["Ref"], guards
        elif is_fn(node, "Fn::GetAtt"):
            target = node["Fn::GetAtt"]
            yield (target[0] if isinstance(target, list) else target.split(".", 1)[0]), guards
        elif isinstance(node, dict):
            for v in node.values():
                yield from TemplateTest.names_in(v, guards)
        elif isinstance(node, list):
            for v in node:
                yield from TemplateTest.names_in(v, guards)

    def test_hub_resources_exist_only_in_a_hub(self):
        # The bus, its policy, its rule and the rule's alarm exist exactly with Topology=hub, and
        # whatever names one of them is guarded by the same condition (no dangling reference in
        # a single-account stack).
        hub = {k for k, v in self.res.items() if v.get("Condition") == HUB_CONDITION}
        bus_name, _ = self.hub_bus()
        rule_name, _ = self.hub_rule()
        policies = self.of_type("AWS::Events::EventBusPolicy")
        self.assertEqual(len(policies), 1, sorted(policies))
        self.assertLessEqual({bus_name, rule_name, *policies}, hub)
        self.assertTrue(self.alarm_watching("AWS/Events", "FailedInvocations",
                                            {"EventBusName": ("ref", bus_name), "RuleName": ("rule", rule_name)}))
        self.assertEqual(self.t["Conditions"][HUB_CONDITION], {"Fn::Equals": [{"Ref": "Topology"}, "hub"]})
        for section in ("Resources", "Outputs"):
            for key, item in self.t[section].items():
                for name, guards in self.names_in(item):
                    if name in hub:
                        self.assertTrue(item.get("Condition") == HUB_CONDITION or HUB_CONDITION in guards,
                                        f"{section}.{key} names {name} outside a hub")
        for params, ev in self.combos:
            for name in hub:
                self.assertEqual(ev.resource_exists(name), params["Topology"] == "hub", (name, params))

    def test_single_account_topology_is_unchanged(self):
        # With Topology=single-account (the default) nothing of the hub exists or is named, and
        # the function may assume no role: the stack as it was before issue 17. Every other check
        # of this class runs for both topologies.
        self.assertEqual(self.t["Parameters"]["Topology"]["Default"], "single-account")
        hub = {k for k, v in self.res.items() if v.get("Condition") == HUB_CONDITION}
        for params, ev in self.combos:
            if params["Topology"] != "single-account":
                continue
            existing = {k for k in self.res if ev.resource_exists(k)}
            self.assertFalse(existing & hub, params)
            for name in existing:
                resolved = json.dumps(ev.resolve(self.res[name].get("Properties", {})))
                for h in hub:
                    self.assertNotIn(f"<getatt:{h}.", resolved, (name, params))
                    self.assertNotIn(f"<ref:{h}>", resolved, (name, params))
            self.assertFalse(self.active_allows(ev, "sts:AssumeRole"), params)
            self.assertFalse(self.rendered_allows(ev, "sts:AssumeRole"), params)
            outputs = [o for o, v in self.t["Outputs"].items() if not v.get("Condition") or ev.condition(v["Condition"])]
            self.assertNotIn("HubEventBusArn", outputs, params)
            self.assertEqual(ev.value(self.function()[1]["Properties"]["Environment"]["Variables"]["SPOKE_ROLE_NAME"]),
                             "", params)

    def test_hub_requires_an_organization(self):
        # Rules: Topology=hub with an empty OrganizationId is refused before anything is created.
        rules = self.t.get("Rules", {})
        applied = []
        for name, rule in rules.items():
            for topology, org in (("hub", ""), ("hub", ORGANIZATION_ID), ("single-account", "")):
                ev = Evaluator(self.t, {"Topology": topology, "OrganizationId": org})
                if "RuleCondition" in rule and not ev.expr(rule["RuleCondition"]):
                    continue
                ok = all(ev.expr(a["Assert"]) for a in rule["Assertions"])
                applied.append((topology, org, ok))
        self.assertIn(("hub", "", False), applied)
        self.assertNotIn(("hub", ORGANIZATION_ID, False), applied)
        self.assertNotIn(("single-account", "", False), applied)
        pattern = re.compile(self.t["Parameters"]["OrganizationId"]["AllowedPattern"])
        for good in ("", ORGANIZATION_ID, "o-a1b2c3d4e5"):
            self.assertTrue(pattern.fullmatch(good), good)
        for bad in ("o-short", "O-ABCDEFGHIJ", "r-abcdefghij", "o-abcdefghij*", "*"):
            self.assertFalse(pattern.fullmatch(bad), bad)
        role = re.compile(self.t["Parameters"]["SpokeRoleName"]["AllowedPattern"])
        self.assertTrue(role.fullmatch("kms-launch-doctor-spoke"))
        # 52 at most, so that "<name>-remediation" is within IAM's 64; no path, no wildcard.
        self.assertTrue(role.fullmatch("r" * 52))
        for bad in ("", "r" * 53, "a/b", "spoke*", "spoke?", 'a"b'):
            self.assertFalse(role.fullmatch(bad), bad)

    def test_hub_bus_admits_the_organization_only(self):
        bus_name, bus = self.hub_bus()
        ((_, policy),) = self.of_type("AWS::Events::EventBusPolicy").items()
        props = policy["Properties"]
        self.assertEqual(props["EventBusName"], {"Ref": bus_name})
        self.assertNotIn("Principal", props)  # the whole statement is in Statement
        self.assertNotIn("Condition", props)
        st = props["Statement"]
        self.assertEqual(st["Effect"], "Allow")
        self.assertEqual(st["Principal"], "*")
        self.assertEqual(as_list(st["Action"]), ["events:PutEvents"])
        self.assertEqual(as_list(st["Resource"]), [{"Fn::GetAtt": [bus_name, "Arn"]}])
        self.assertEqual(st["Condition"], {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}})
        self.assertNotIn("Policy", bus["Properties"])  # no second policy on the bus itself
        bus_arn = f"<getatt:{bus_name}.Arn>"
        for params, ev in self.combos:
            if params["Topology"] != "hub":
                continue
            statement = ev.resolve(st)
            self.assertEqual(statement["Condition"], {"StringEquals": {"aws:PrincipalOrgID": ORGANIZATION_ID}})
            document = {"Statement": [statement]}
            for who, context, same, expected in (
                ("a member account's forwarding role", {"aws:PrincipalOrgID": ORGANIZATION_ID}, False, "allow"),
                ("an account of another organization", {"aws:PrincipalOrgID": "o-otherorgzzz"}, False, "implicit-deny"),
                ("an account in no organization", {}, False, "implicit-deny"),
            ):
                caller = ("AWS", "arn:aws:iam::210987654321:role/forwarder")
                got = resource_policy_decision(document, caller, context, bus_arn, "events:PutEvents", same, True)
                self.assertEqual(got, expected, who)
            break

    def test_hub_rule_matches_the_state_change_rule(self):
        # The same pattern, the same queue, retries and dead-letter queue as the default bus's
        # rule; on the hub bus.
        _, rule = self.rule()
        bus_name, _ = self.hub_bus()
        hub_name, hub = self.hub_rule()
        self.assertEqual(hub.get("Condition"), HUB_CONDITION)
        self.assertEqual(hub["Properties"]["EventBusName"], {"Ref": bus_name})
        self.assertEqual(hub["Properties"]["EventPattern"], rule["Properties"]["EventPattern"])
        self.assertEqual(hub["Properties"].get("State"), "ENABLED")
        (target,) = hub["Properties"]["Targets"]
        (own,) = rule["Properties"]["Targets"]
        for key in ("Arn", "RetryPolicy", "DeadLetterConfig"):
            self.assertEqual(target[key], own[key], key)
        self.assertEqual(set(target), set(own))

    def test_hub_rule_failed_invocations_alarm(self):
        bus_name, _ = self.hub_bus()
        rule_name, _ = self.hub_rule()
        names = self.alarm_watching("AWS/Events", "FailedInvocations",
                                    {"EventBusName": ("ref", bus_name), "RuleName": ("rule", rule_name)})
        self.assertEqual(len(names), 1, names)
        alarm = self.alarms()[names[0]]
        self.assertEqual(alarm.get("Condition"), HUB_CONDITION)
        p = alarm["Properties"]
        # Like RuleFailedInvocationsAlarm; the rule's name is the third part of a custom bus's
        # rule ARN (rule/<bus>/<name>).
        self.assertEqual(p["Dimensions"][1]["Value"]["Fn::Select"][0], 2)
        self.assertEqual((p["Statistic"], p["ComparisonOperator"], float(p["Threshold"])), ("Sum", "GreaterThanThreshold", 0.0))
        self.assertEqual((int(p["Period"]), int(p["EvaluationPeriods"])), (300, 1))
        self.assertEqual(p.get("TreatMissingData"), "notBreaching")

    def test_assume_role_only_in_a_hub_inside_the_organization(self):
        # sts:AssumeRole only on roles named SpokeRoleName (and, with apply, its -remediation),
        # in any account but only one of the organization (aws:ResourceOrgID), only in a hub.
        assumes = [s for s in self.statements if any(a.lower().startswith("sts:") for a in s.actions)]
        self.assertTrue(assumes, "no statement grants sts:AssumeRole: the hub cannot enter member accounts")
        for s in assumes:
            self.assertEqual(s.effect, "Allow", s)
            self.assertEqual(s.actions, ["sts:AssumeRole"], s)
            self.assertLessEqual(set(s.actions), STS_ACTIONS_ALLOWED, s)
            self.assertIn(s.resources, ([SPOKE_ROLE_RESOURCE], [SPOKE_REMEDIATION_ROLE_RESOURCE]), s)
            self.assertEqual(s.body.get("Condition"), ORGANIZATION_CONDITION, s)
            self.assertIn(HUB_CONDITION, s.guards | ({self.res[s.resource].get("Condition")} - {None}), s)
        for params, ev in self.combos:
            hub = params["Topology"] == "hub"
            apply = params["RemediationMode"] == "apply"
            granted = [r for s in self.active_allows(ev, "sts:AssumeRole") for r in s.resources]
            expected = ([SPOKE_ROLE_RESOURCE] if hub else []) + ([SPOKE_REMEDIATION_ROLE_RESOURCE] if hub and apply else [])
            self.assertEqual(granted, expected, params)
            for st in self.rendered_allows(ev, "sts:AssumeRole"):
                self.assertEqual(st["Condition"], {"StringEquals": {"aws:ResourceOrgID": ORGANIZATION_ID}}, params)


class MutationSmokeTest(unittest.TestCase):
    """The review must notice a broken property (a few representative breakages)."""

    def broken(self, mutate):
        """True when some TemplateTest fails on the template as `mutate` changed it."""
        t = load_template()
        mutate(t)

        class Mutated(TemplateTest):
            load = staticmethod(lambda: t)

        try:
            Mutated.setUpClass()
        except Exception:
            return True  # refusing to even read it counts as noticing
        suite = unittest.TestLoader().loadTestsFromTestCase(Mutated)
        result = unittest.TestResult()
        result.failfast = True  # one failing check is enough to call it noticed
        suite.run(result)
        return not result.wasSuccessful()

    def test_drop_apply_condition(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["RemediationPolicy"].pop("Condition")))

    def test_widen_start_instances(self):
        def mutate(t):
            conds = t["Conditions"]
            conds["RestartAfterApply"] = {"Fn::Equals": [{"Ref": "RestartAfterRemediation"}, "true"]}
        self.assertTrue(self.broken(mutate))

    def test_queue_policy_any_source(self):
        def mutate(t):
            st = t["Resources"]["EventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
            st.pop("Condition")
        self.assertTrue(self.broken(mutate))

    def test_service_wildcard(self):
        def mutate(t):
            st = t["Resources"]["FunctionRole"]["Properties"]["Policies"][1]["PolicyDocument"]["Statement"][0]
            st["Action"] = ["ec2:*"]
        self.assertTrue(self.broken(mutate))

    # --- issue 12: the queue admits only the rule; restart and key reads only what opted in ---

    @staticmethod
    def queue_statements(t):
        return t["Resources"]["EventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]

    @classmethod
    def queue_deny(cls, t):
        (deny,) = [st for st in cls.queue_statements(t) if st["Effect"] == "Deny"]
        return deny

    @staticmethod
    def edit_sub_document(t, resource, edit):
        """Apply edit(document dict) to a Fn::Sub JSON policy document of the template."""
        doc = t["Resources"][resource]["Properties"]["PolicyDocument"]
        body = doc["Fn::Sub"]
        text = body[0] if isinstance(body, list) else body
        d = json.loads(text)
        edit(d)
        if isinstance(body, list):
            body[0] = json.dumps(d)
        else:
            doc["Fn::Sub"] = json.dumps(d)

    @staticmethod
    def statement(d, sid):
        (st,) = [st for st in d["Statement"] if st.get("Sid") == sid]
        return st

    def test_drop_queue_deny(self):
        def mutate(t):
            statements = self.queue_statements(t)
            statements.remove(self.queue_deny(t))
        self.assertTrue(self.broken(mutate))

    def test_queue_deny_exempts_any_principal_of_the_account(self):
        def mutate(t):
            self.queue_deny(t)["Condition"] = {
                "ArnNotEquals": {"aws:SourceArn": {"Fn::GetAtt": ["StateChangeRule", "Arn"]}},
                "ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:*"},
            }
        self.assertTrue(self.broken(mutate))

    def test_queue_deny_split_in_two(self):
        # Two keys in two Deny statements are ORed, not ANDed: the rule itself would be denied.
        def mutate(t):
            deny = self.queue_deny(t)
            exempt = deny["Condition"]["ArnNotEquals"]
            second = dict(deny, Sid="Second", Condition={"ArnNotEquals": {"aws:PrincipalArn": exempt.pop("aws:PrincipalArn")}})
            self.queue_statements(t).append(second)
        self.assertTrue(self.broken(mutate))

    def test_queue_redrive_principal_always_exempt(self):
        def mutate(t):
            principals = self.queue_deny(t)["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
            principals[-1] = {"Ref": "QueueRedrivePrincipalArn"}
        self.assertTrue(self.broken(mutate))

    def test_drop_start_instances_tag_condition(self):
        def mutate(t):
            self.edit_sub_document(
                t, "RestartPolicy", lambda d: self.statement(d, "RestartOptedInInstances").pop("Condition")
            )
        self.assertTrue(self.broken(mutate))

    def test_start_instances_fixed_tag_key(self):
        # The condition must follow RemediationTagKey, not the default spelled out.
        def mutate(t):
            def edit(d):
                self.statement(d, "RestartOptedInInstances")["Condition"] = {
                    "StringEquals": {"aws:ResourceTag/kms-launch-doctor:auto-remediate": "true"}
                }
            self.edit_sub_document(t, "RestartPolicy", edit)
        self.assertTrue(self.broken(mutate))

    def test_restart_create_grant_without_via_service(self):
        def mutate(t):
            self.edit_sub_document(
                t, "RestartPolicy",
                lambda d: self.statement(d, "LetEc2DecryptVolumesOnRestart")["Condition"]["StringEquals"].pop("kms:ViaService"),
            )
        self.assertTrue(self.broken(mutate))

    def test_restart_create_grant_on_untagged_keys(self):
        def mutate(t):
            self.edit_sub_document(
                t, "RestartPolicy",
                lambda d: self.statement(d, "LetEc2DecryptVolumesOnRestart")["Condition"]["StringEquals"].pop(
                    "aws:ResourceTag/${RemediationTagKey}"
                ),
            )
        self.assertTrue(self.broken(mutate))

    def test_list_resource_tags_of_every_account(self):
        def mutate(t):
            def edit(d):
                self.statement(d, "ReadKeyOptInTag")["Resource"] = ["arn:${AWS::Partition}:kms:*:*:key/*"]
            self.edit_sub_document(t, "RemediationPolicy", edit)
        self.assertTrue(self.broken(mutate))

    def test_list_resource_tags_without_apply(self):
        def mutate(t):
            statements = t["Resources"]["FunctionRole"]["Properties"]["Policies"][1]["PolicyDocument"]["Statement"]
            statements.append({
                "Sid": "ReadKeyTagsAlways", "Effect": "Allow", "Action": "kms:ListResourceTags",
                "Resource": {"Fn::Sub": "arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/*"},
            })
        self.assertTrue(self.broken(mutate))

    def test_put_policy_tag_ignores_case(self):
        # StringEqualsIgnoreCase would accept "True", which the code refuses: both must agree.
        def mutate(t):
            def edit(d):
                st = self.statement(d, "PutScopedInlinePolicyOnTaggedPrincipals")
                st["Condition"] = {"StringEqualsIgnoreCase": st["Condition"]["StringEquals"]}
            self.edit_sub_document(t, "RemediationPolicy", edit)
        self.assertTrue(self.broken(mutate))

    def test_retention_env_differs_from_queue(self):
        def mutate(t):
            t["Resources"]["Function"]["Properties"]["Environment"]["Variables"]["EVENTS_QUEUE_RETENTION_SECONDS"] = "1209600"
        self.assertTrue(self.broken(mutate))

    # --- issue 15: rule target, its DLQ, requeue permission, alarms ---------------------------

    @staticmethod
    def target(t):
        (target,) = t["Resources"]["StateChangeRule"]["Properties"]["Targets"]
        return target

    @staticmethod
    def alarm(t, name):
        return t["Resources"][name]["Properties"]

    @staticmethod
    def rule_dlq_statements(t):
        return t["Resources"]["RuleDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]

    @staticmethod
    def sqs_metric(name, queue, stat, period=300):
        return {"Namespace": "AWS/SQS", "MetricName": name, "Statistic": stat, "Period": period,
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]}

    def test_drop_rule_retry_policy(self):
        self.assertTrue(self.broken(lambda t: self.target(t).pop("RetryPolicy")))

    def test_rule_retries_for_a_day(self):
        # EventBridge's default: a lasting fault would reach the DLQ, and an operator, a day late.
        self.assertTrue(self.broken(lambda t: self.target(t)["RetryPolicy"].update(MaximumEventAgeInSeconds=86400)))

    def test_drop_rule_dead_letter_config(self):
        self.assertTrue(self.broken(lambda t: self.target(t).pop("DeadLetterConfig")))

    def test_rule_dead_letters_into_the_events_dlq(self):
        # The events queue's DLQ has no policy admitting only the rule.
        def mutate(t):
            self.target(t)["DeadLetterConfig"] = {"Arn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
        self.assertTrue(self.broken(mutate))

    def test_drop_rule_dlq_deny(self):
        def mutate(t):
            statements = self.rule_dlq_statements(t)
            statements[:] = [st for st in statements if st["Effect"] != "Deny"]
        self.assertTrue(self.broken(mutate))

    def test_rule_dlq_deny_exempts_the_function_role(self):
        def mutate(t):
            (deny,) = [st for st in self.rule_dlq_statements(t) if st["Effect"] == "Deny"]
            deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] = [{"Fn::GetAtt": ["FunctionRole", "Arn"]}]
        self.assertTrue(self.broken(mutate))

    def test_rule_dlq_allows_any_rule(self):
        def mutate(t):
            (allow,) = [st for st in self.rule_dlq_statements(t) if st["Effect"] == "Allow"]
            allow.pop("Condition")
        self.assertTrue(self.broken(mutate))

    def test_requeue_only_with_a_sink_again(self):
        def mutate(t):
            policies = t["Resources"]["FunctionRole"]["Properties"]["Policies"]
            runtime = policies[0]["PolicyDocument"]["Statement"]
            (send,) = [st for st in runtime if st.get("Sid") == "RequeueOnOwnQueue"]
            runtime.remove(send)
            t["Conditions"]["HasSink"] = {"Fn::Or": [{"Condition": "HasTopic"}, {"Condition": "SecurityHubEnabled"}]}
            policies.append({"Fn::If": ["HasSink", {"PolicyName": "requeue", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [send]}}, {"Ref": "AWS::NoValue"}]})
        self.assertTrue(self.broken(mutate))

    def test_requeue_to_the_dlq_too(self):
        def mutate(t):
            runtime = t["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            (send,) = [st for st in runtime if st.get("Sid") == "RequeueOnOwnQueue"]
            send["Resource"] = [send["Resource"], {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}]
        self.assertTrue(self.broken(mutate))

    def test_put_metric_data_granted(self):
        def mutate(t):
            runtime = t["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            runtime.append({"Sid": "Metrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"})
        self.assertTrue(self.broken(mutate))

    def test_alarm_without_action(self):
        self.assertTrue(self.broken(lambda t: self.alarm(t, "FunctionThrottlesAlarm").pop("AlarmActions")))

    def test_alarm_actions_only_with_a_topic(self):
        # The old form: no action at all when no topic is configured.
        def mutate(t):
            self.alarm(t, "DeadLetterAlarm")["AlarmActions"] = {"Fn::If": [
                "HasTopic",
                [{"Fn::If": ["HasExistingTopic", {"Ref": "ExistingTopicArn"}, {"Ref": "FindingsTopic"}]}],
                {"Ref": "AWS::NoValue"},
            ]}
        self.assertTrue(self.broken(mutate))

    def test_operations_topic_always_created(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["OperationsTopic"].pop("Condition")))

    def test_drop_errors_alarm(self):
        self.assertTrue(self.broken(lambda t: t["Resources"].pop("FunctionErrorsAlarm")))

    def test_drop_failed_invocations_alarm(self):
        self.assertTrue(self.broken(lambda t: t["Resources"].pop("RuleFailedInvocationsAlarm")))

    def test_duration_alarm_at_the_timeout(self):
        # At 100% of the timeout it says nothing the Errors alarm does not; at 90% it also
        # catches invocations that nearly timed out.
        self.assertTrue(self.broken(lambda t: self.alarm(t, "FunctionDurationAlarm").update(Threshold=60000)))

    def test_dlq_alarm_on_a_non_empty_queue(self):
        # The old alarm: in ALARM while one message sits there; later failures never notify.
        def mutate(t):
            p = self.alarm(t, "DeadLetterAlarm")
            for key in ("Metrics", "DatapointsToAlarm"):
                p.pop(key)
            p.update(self.sqs_metric("ApproximateNumberOfMessagesVisible", "DeadLetterQueue", "Maximum"), EvaluationPeriods=1)
        self.assertTrue(self.broken(mutate))

    def test_dlq_alarm_on_messages_sent(self):
        # SQS's own moves into a DLQ are not SendMessage calls: this alarm would never fire.
        def mutate(t):
            p = self.alarm(t, "DeadLetterAlarm")
            for key in ("Metrics", "DatapointsToAlarm"):
                p.pop(key)
            p.update(self.sqs_metric("NumberOfMessagesSent", "DeadLetterQueue", "Sum"), EvaluationPeriods=1)
        self.assertTrue(self.broken(mutate))

    def test_dlq_alarm_counts_a_read_as_an_arrival(self):
        # Visible messages only: reading one (it goes in flight, then comes back) looks new.
        def mutate(t):
            metrics = self.alarm(t, "DeadLetterAlarm")["Metrics"]
            metrics[:] = [metrics[0], {"Id": "arrivals", "Expression": "DIFF(FILL(visible, 0))", "ReturnData": True}]
        self.assertTrue(self.broken(mutate))

    def test_rule_dlq_alarm_on_a_non_empty_queue(self):
        def mutate(t):
            p = self.alarm(t, "RuleDeadLetterAlarm")
            p.update(self.sqs_metric("ApproximateNumberOfMessagesVisible", "RuleDeadLetterQueue", "Maximum"))
        self.assertTrue(self.broken(mutate))

    def test_queue_age_threshold_ignores_the_wait(self):
        # The default wait spelled out: with CloudTrailWaitMinutes=120 it fires on healthy waits.
        def mutate(t):
            metrics = self.alarm(t, "EventsQueueAgeAlarm")["Metrics"]
            metrics[1]["Expression"] = "age / 60 - 20"
        self.assertTrue(self.broken(mutate))

    def test_queue_age_fixed_threshold(self):
        def mutate(t):
            p = self.alarm(t, "EventsQueueAgeAlarm")
            p.pop("Metrics")
            p.update(self.sqs_metric("ApproximateAgeOfOldestMessage", "EventsQueue", "Maximum"), Threshold=2100)
        self.assertTrue(self.broken(mutate))

    def test_deadline_margin_shorter_than_an_attempt(self):
        def mutate(t):
            t["Resources"]["Function"]["Properties"]["Environment"]["Variables"]["DEADLINE_MARGIN_SECONDS"] = "3"
        self.assertTrue(self.broken(mutate))

    def test_visibility_timeout_without_the_batching_window(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["EventsQueue"]["Properties"].update(VisibilityTimeout=360)))

    # --- issue 18: running forwarded, preflight schedule, launch-key and Auto Scaling reads ----

    @staticmethod
    def policy_statements(t, name):
        (policy,) = [
            p["Fn::If"][1] for p in t["Resources"]["FunctionRole"]["Properties"]["Policies"]
            if is_fn(p, "Fn::If") and p["Fn::If"][1]["PolicyName"] == name
        ]
        return policy["PolicyDocument"]["Statement"]

    def test_rule_without_running(self):
        def mutate(t):
            t["Resources"]["StateChangeRule"]["Properties"]["EventPattern"]["detail"]["state"] = ["stopped", "terminated"]
        self.assertTrue(self.broken(mutate))

    def test_preflight_rule_always_created(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["PreflightScheduleRule"].pop("Condition")))

    def test_preflight_permission_for_any_rule(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["PreflightInvokePermission"]["Properties"].pop("SourceArn")))

    def test_preflight_permission_for_the_state_change_rule(self):
        def mutate(t):
            t["Resources"]["PreflightInvokePermission"]["Properties"]["SourceArn"] = {"Fn::GetAtt": ["StateChangeRule", "Arn"]}
        self.assertTrue(self.broken(mutate))

    def test_preflight_retried_by_lambda(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["PreflightInvokeConfig"]["Properties"].update(MaximumRetryAttempts=2)))

    def test_autoscaling_write(self):
        def mutate(t):
            self.policy_statements(t, "preflight")[0]["Action"].append("autoscaling:UpdateAutoScalingGroup")
        self.assertTrue(self.broken(mutate))

    def test_autoscaling_reads_without_the_schedule(self):
        def mutate(t):
            statement = self.policy_statements(t, "preflight")[0]
            t["Resources"]["FunctionRole"]["Properties"]["Policies"][1]["PolicyDocument"]["Statement"].append(statement)
        self.assertTrue(self.broken(mutate))

    def test_launch_key_reads_missing(self):
        def mutate(t):
            statements = t["Resources"]["FunctionRole"]["Properties"]["Policies"][1]["PolicyDocument"]["Statement"]
            statements[:] = [st for st in statements if st.get("Sid") != "FindLaunchKeys"]
        self.assertTrue(self.broken(mutate))

    def test_preflight_principals_not_passed(self):
        def mutate(t):
            t["Resources"]["Function"]["Properties"]["Environment"]["Variables"].pop("PREFLIGHT_PRINCIPALS")
        self.assertTrue(self.broken(mutate))

    # --- issue 17: the hub ---------------------------------------------------------------------

    @staticmethod
    def assume_statement(t):
        (policy,) = [
            p["Fn::If"][1] for p in t["Resources"]["FunctionRole"]["Properties"]["Policies"]
            if is_fn(p, "Fn::If") and p["Fn::If"][1]["PolicyName"] == "assume-spoke-roles"
        ]
        return policy["PolicyDocument"]["Statement"][0]

    def test_bus_policy_without_organization(self):
        self.assertTrue(self.broken(
            lambda t: t["Resources"]["HubEventBusPolicy"]["Properties"]["Statement"].pop("Condition")))

    def test_bus_policy_for_one_account(self):
        def mutate(t):
            t["Resources"]["HubEventBusPolicy"]["Properties"]["Statement"]["Condition"] = {
                "StringEquals": {"aws:PrincipalAccount": "210987654321"}}
        self.assertTrue(self.broken(mutate))

    def test_assume_role_without_resource_org(self):
        self.assertTrue(self.broken(lambda t: self.assume_statement(t).pop("Condition")))

    def test_assume_any_role(self):
        def mutate(t):
            self.assume_statement(t)["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/*"}
        self.assertTrue(self.broken(mutate))

    def test_assume_role_in_single_account(self):
        def mutate(t):
            policies = t["Resources"]["FunctionRole"]["Properties"]["Policies"]
            for i, p in enumerate(policies):
                if is_fn(p, "Fn::If") and p["Fn::If"][0] == "IsHub":
                    policies[i] = p["Fn::If"][1]
        self.assertTrue(self.broken(mutate))

    def test_queue_admits_only_the_default_rule(self):
        def mutate(t):
            allow = self.queue_statements(t)[0]
            allow["Condition"]["ArnEquals"]["aws:SourceArn"] = {"Fn::GetAtt": ["StateChangeRule", "Arn"]}
        self.assertTrue(self.broken(mutate))

    def test_hub_rule_without_dead_letter_queue(self):
        self.assertTrue(self.broken(
            lambda t: t["Resources"]["HubStateChangeRule"]["Properties"]["Targets"][0].pop("DeadLetterConfig")))

    def test_hub_rule_only_stopped(self):
        def mutate(t):
            t["Resources"]["HubStateChangeRule"]["Properties"]["EventPattern"]["detail"]["state"] = ["stopped"]
        self.assertTrue(self.broken(mutate))

    def test_drop_hub_alarm(self):
        self.assertTrue(self.broken(lambda t: t["Resources"].pop("HubRuleFailedInvocationsAlarm")))

    def test_hub_alarm_on_the_default_bus_dimension(self):
        self.assertTrue(self.broken(
            lambda t: t["Resources"]["HubRuleFailedInvocationsAlarm"]["Properties"]["Dimensions"].pop(0)))

    def test_spoke_role_name_in_single_account(self):
        def mutate(t):
            t["Resources"]["Function"]["Properties"]["Environment"]["Variables"]["SPOKE_ROLE_NAME"] = {"Ref": "SpokeRoleName"}
        self.assertTrue(self.broken(mutate))

    def test_hub_without_organization_rule(self):
        self.assertTrue(self.broken(lambda t: t.pop("Rules")))

    def test_hub_bus_always(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["HubEventBus"].pop("Condition")))


# --- issue 17: org/spoke.yaml, the StackSet template for the member accounts ---------------------

HUB_ACCOUNT = "111122223333"
MEMBER = "210987654321"
HUB_FUNCTION_ROLE = f"arn:aws:iam::{HUB_ACCOUNT}:role/kms-launch-doctor-FunctionRole-AbC123dEf456"
SCAN_PRINCIPAL = f"arn:aws:iam::{HUB_ACCOUNT}:role/security/scanner"
SPOKE_FIXED = {
    "HubEventBusArn": f"arn:aws:events:us-east-1:{HUB_ACCOUNT}:event-bus/kms-launch-doctor-hub",
    "HubFunctionRoleArn": HUB_FUNCTION_ROLE,
    "OrganizationId": ORGANIZATION_ID,
    "RolesRegion": "us-east-1",
    "AWS::AccountId": MEMBER,
}
SPOKE_SWITCHES = {
    # The StackSet deploys to every region; only RolesRegion's stack makes the (global) roles.
    "AWS::Region": ["us-east-1", "eu-west-1"],
    "EnableRemediation": ["false", "true"],
    "RestartAfterRemediation": ["false", "true"],
    "ScanPrincipalArn": ["", SCAN_PRINCIPAL],
    "RemediationTagKey": ["kms-launch-doctor:auto-remediate", "team/opt-in"],
}
# The statements of spoke roles' policies that are writes: only the remediation role's.
SPOKE_WRITE_ACTIONS = {"iam:PutUserPolicy", "iam:PutRolePolicy", "ec2:StartInstances", "kms:CreateGrant"}
SCAN_ROLE_NAME = "kms-launch-doctor-scan"


def trust_decision(document, caller, context):
    """'allow' or 'deny' for sts:AssumeRole by caller ("AWS", ARN) with the request context: a
    trust policy's Allow must name the caller (exactly, as IAM compares principals) and its
    conditions hold; a matching Deny wins."""
    allowed = False
    for st in as_list(document["Statement"]):
        if not principal_matches(st.get("Principal", {}), caller):
            continue
        if not any(_matches(a, "sts:AssumeRole", ignore_case=True) for a in as_list(st["Action"])):
            continue
        if not condition_holds(st.get("Condition"), context):
            continue
        if st["Effect"] == "Deny":
            return "deny"
        allowed = True
    return "allow" if allowed else "deny"


def literal(resource, params):
    """A Resource entry as IAM gets it: a Fn::Sub substituted, a string as is."""
    return sub_text(resource, params) if is_fn(resource, "Fn::Sub") else resource


def is_read(action):
    return action.split(":", 1)[1].startswith(READ_ONLY_VERBS)


class SpokeTemplateTest(unittest.TestCase):
    @staticmethod
    def load():
        return cfn_yaml.load(str(SPOKE_TEMPLATE))

    @classmethod
    def setUpClass(cls):
        cls.t = cls.load()
        cls.res = cls.t["Resources"]
        cls.hub = load_template()
        shared = {"deps": {}, "resolved": {}}
        cls.combos = [(p, Evaluator(cls.t, p, shared))
                      for p in parameter_combinations(cls.t, SPOKE_SWITCHES, SPOKE_FIXED)]

    def of_type(self, typ):
        return {k: v for k, v in self.res.items() if v["Type"] == typ}

    def role_statements(self, ev, role):
        """(policy, statement) of every policy that applies to `role` with these parameters."""
        out = []
        res = self.res[role]
        for item in res["Properties"].get("Policies", []):
            policy = ev.value(item)
            if policy != NO_VALUE:
                out.extend((policy["PolicyName"], st) for st in as_list(ev.render(policy["PolicyDocument"])["Statement"]))
        for name, p in self.res.items():
            if p["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy") and ev.resource_exists(name):
                if f"<ref:{role}>" in as_list(ev.resolve(p["Properties"].get("Roles", []))):
                    out.extend((name, st) for st in as_list(ev.render(p["Properties"]["PolicyDocument"])["Statement"]))
        return out

    def named_role(self, name):
        found = [k for k, v in self.of_type("AWS::IAM::Role").items() if v["Properties"].get("RoleName") == name]
        self.assertEqual(len(found), 1, f"expected one role named {name!r}, got {found}")
        return found[0]

    def spoke_role(self):
        return self.named_role({"Ref": "SpokeRoleName"})

    def remediation_role(self):
        return self.named_role({"Fn::Sub": "${SpokeRoleName}-remediation"})

    def scan_role(self):
        return self.named_role(SCAN_ROLE_NAME)

    def hub_read_statements(self):
        """{action: resources} of the hub function role's reads (template.yaml's diagnose and
        preflight policies), as written in the template."""
        reads = {}
        for s in identity_statements(self.hub):
            if s.resource == "FunctionRole" and s.effect == "Allow" and all(
                    a.startswith(("ec2:", "kms:", "cloudtrail:", "iam:", "autoscaling:")) for a in s.actions):
                for a in s.actions:
                    reads.setdefault(a, []).extend(s.resources)
        return reads

    # --- what a StackSet with service-managed permissions accepts --------------------------------

    def test_no_transform_and_nothing_a_stackset_refuses(self):
        # The default execution role "can't provision nested stacks, transforms, or macros".
        self.assertNotIn("Transform", self.t)
        text = json.dumps(self.t)
        for forbidden in ("Fn::Transform", "AWS::Include", "AWS::Serverless"):
            self.assertNotIn(forbidden, text)
        for name, res in self.res.items():
            self.assertFalse(res["Type"].startswith("AWS::Serverless::"), name)
            self.assertNotEqual(res["Type"], "AWS::CloudFormation::Stack", name)

    def test_parameters(self):
        params, hub = self.t["Parameters"], self.hub["Parameters"]
        # The same names and opt-in tag as the hub's, with the hub's defaults and patterns.
        for name in ("SpokeRoleName", "RemediationTagKey"):
            self.assertEqual(params[name]["Default"], hub[name]["Default"], name)
            self.assertEqual(params[name]["AllowedPattern"], hub[name]["AllowedPattern"], name)
        for name, default in (("EnableRemediation", "false"), ("RestartAfterRemediation", "false"), ("ScanPrincipalArn", "")):
            self.assertEqual(str(params[name]["Default"]), default, name)
        for name in ("HubEventBusArn", "HubFunctionRoleArn", "OrganizationId", "RolesRegion"):
            self.assertNotIn("Default", params[name], f"{name} must be given")
        org = re.compile(params["OrganizationId"]["AllowedPattern"])
        self.assertTrue(org.fullmatch(ORGANIZATION_ID))
        self.assertFalse(org.fullmatch(""))
        principal = re.compile(params["HubFunctionRoleArn"]["AllowedPattern"])
        self.assertTrue(principal.fullmatch(HUB_FUNCTION_ROLE))
        for bad in ("*", f"arn:aws:iam::{HUB_ACCOUNT}:root", f"arn:aws:iam::{HUB_ACCOUNT}:role/*",
                    f"arn:aws:sts::{HUB_ACCOUNT}:assumed-role/r/s", f"arn:aws:iam::*:role/r"):
            self.assertFalse(principal.fullmatch(bad), bad)
        scan = re.compile(params["ScanPrincipalArn"]["AllowedPattern"])
        for good in ("", SCAN_PRINCIPAL, f"arn:aws:iam::{HUB_ACCOUNT}:user/ops"):
            self.assertTrue(scan.fullmatch(good), good)
        for bad in ("*", f"arn:aws:iam::{HUB_ACCOUNT}:root", f"arn:aws:iam::{HUB_ACCOUNT}:role/*"):
            self.assertFalse(scan.fullmatch(bad), bad)
        bus = re.compile(params["HubEventBusArn"]["AllowedPattern"])
        self.assertTrue(bus.fullmatch(SPOKE_FIXED["HubEventBusArn"]))
        self.assertFalse(bus.fullmatch(f"arn:aws:sqs:us-east-1:{HUB_ACCOUNT}:queue"))
        groups = self.t["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
        self.assertEqual(sorted(p for g in groups for p in g["Parameters"]), sorted(params))

    # --- every region: forwarding ----------------------------------------------------------------

    def test_forwarding_rule_sends_the_hubs_pattern_to_the_hub_bus(self):
        rules = self.of_type("AWS::Events::Rule")
        self.assertEqual(len(rules), 1, sorted(rules))
        ((name, rule),) = rules.items()
        self.assertNotIn("Condition", rule)  # every region
        props = rule["Properties"]
        self.assertNotIn("EventBusName", props)  # the default bus, where EC2 sends its events
        self.assertEqual(props["EventPattern"], self.hub["Resources"]["StateChangeRule"]["Properties"]["EventPattern"])
        (target,) = props["Targets"]
        self.assertEqual(target["Arn"], {"Ref": "HubEventBusArn"})
        # The hub bus admits the organization, so the target needs a role of this account.
        role = target["RoleArn"]["Fn::GetAtt"][0]
        self.assertEqual(self.res[role]["Type"], "AWS::IAM::Role")
        dlq = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        self.assertEqual(self.res[dlq]["Type"], "AWS::SQS::Queue")
        self.assertIs(self.res[dlq]["Properties"].get("SqsManagedSseEnabled"), True)
        self.assertEqual(int(self.res[dlq]["Properties"]["MessageRetentionPeriod"]), 1209600)
        # The forwarding role: EventBridge only, events:PutEvents on the hub bus only; unnamed and
        # in every region (its own per region, so the regions' stacks do not collide).
        forward = self.res[role]
        self.assertNotIn("Condition", forward)
        self.assertNotIn("RoleName", forward["Properties"])
        trust = forward["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        self.assertEqual([st["Principal"] for st in trust], [{"Service": "events.amazonaws.com"}])
        for params, ev in self.combos:
            statements = self.role_statements(ev, role)
            self.assertEqual([(as_list(st["Action"]), as_list(st["Resource"]), st["Effect"]) for _, st in statements],
                             [(["events:PutEvents"], [SPOKE_FIXED["HubEventBusArn"]], "Allow")], params)

    def test_forwarding_dlq_admits_only_the_forwarding_rule(self):
        (rule,) = self.of_type("AWS::Events::Rule")
        policies = self.of_type("AWS::SQS::QueuePolicy")
        self.assertEqual(len(policies), 1)
        ((_, policy),) = policies.items()
        (queue,) = [q["Ref"] for q in policy["Properties"]["Queues"]]
        arn = f"<getatt:{queue}.Arn>"
        rule_arn = f"<getatt:{rule}.Arn>"
        for params, ev in self.combos[:1]:
            document = ev.resolve(policy["Properties"]["PolicyDocument"])
            for who, caller, context, same, identity, expected in (
                ("EventBridge for the forwarding rule", ("Service", "events.amazonaws.com"),
                 {"aws:SourceArn": rule_arn}, True, False, "allow"),
                ("EventBridge for another rule", ("Service", "events.amazonaws.com"),
                 {"aws:SourceArn": f"arn:aws:events:us-east-1:{MEMBER}:rule/other"}, True, False, "explicit-deny"),
                ("an administrator", ("AWS", f"arn:aws:iam::{MEMBER}:role/Admin"),
                 {"aws:PrincipalArn": f"arn:aws:iam::{MEMBER}:role/Admin"}, True, True, "explicit-deny"),
            ):
                got = resource_policy_decision(document, caller, context, arn, "sqs:SendMessage", same, identity)
                self.assertEqual(got, expected, who)

    # --- RolesRegion: the roles --------------------------------------------------------------------

    def test_roles_exist_once_per_account(self):
        # IAM is global: a named role (or policy) made by every region's stack would collide, so
        # each exists only in RolesRegion's stack.
        named = [k for k, v in self.res.items()
                 if v["Type"] in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy")
                 and ("RoleName" in v["Properties"] or v["Type"] == "AWS::IAM::ManagedPolicy")]
        self.assertGreaterEqual(len(named), 4, named)
        for params, ev in self.combos:
            in_roles_region = params["AWS::Region"] == params["RolesRegion"]
            for name in named:
                if not in_roles_region:
                    self.assertFalse(ev.resource_exists(name), (name, params))
            self.assertEqual(ev.resource_exists(self.spoke_role()), in_roles_region, params)
            self.assertEqual(ev.resource_exists(self.scan_role()), in_roles_region and bool(params["ScanPrincipalArn"]),
                             params)
            self.assertEqual(ev.resource_exists(self.remediation_role()),
                             in_roles_region and params["EnableRemediation"] == "true", params)

    def assert_trusts_only(self, role, principal_param, principal_arn):
        trust = self.res[role]["Properties"]["AssumeRolePolicyDocument"]
        (st,) = as_list(trust["Statement"])
        self.assertEqual(st["Effect"], "Allow", role)
        self.assertEqual(st["Principal"], {"AWS": {"Ref": principal_param}}, role)
        self.assertEqual(as_list(st["Action"]), ["sts:AssumeRole"], role)
        self.assertEqual(st["Condition"], {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}, role)
        for params, ev in self.combos:
            if not ev.resource_exists(role):
                continue
            document = ev.resolve(trust)
            in_org = {"aws:PrincipalOrgID": ORGANIZATION_ID, "aws:PrincipalArn": principal_arn}
            for who, caller, context, expected in (
                ("the trusted principal, in the organization", ("AWS", principal_arn), in_org, "allow"),
                ("the trusted principal's ARN, from another organization", ("AWS", principal_arn),
                 {"aws:PrincipalOrgID": "o-otherorgzzz"}, "deny"),
                ("the trusted principal's ARN, in no organization", ("AWS", principal_arn), {}, "deny"),
                ("the hub account's root", ("AWS", f"arn:aws:iam::{HUB_ACCOUNT}:root"),
                 {"aws:PrincipalOrgID": ORGANIZATION_ID}, "deny"),
                ("another role of the hub account", ("AWS", f"arn:aws:iam::{HUB_ACCOUNT}:role/Admin"),
                 {"aws:PrincipalOrgID": ORGANIZATION_ID}, "deny"),
                ("this account's administrator", ("AWS", f"arn:aws:iam::{MEMBER}:role/Admin"),
                 {"aws:PrincipalOrgID": ORGANIZATION_ID}, "deny"),
            ):
                self.assertEqual(trust_decision(document, caller, context), expected, f"{role}: {who}: {params}")

    def test_spoke_and_remediation_roles_trust_only_the_hub_function_role(self):
        self.assert_trusts_only(self.spoke_role(), "HubFunctionRoleArn", HUB_FUNCTION_ROLE)
        self.assert_trusts_only(self.remediation_role(), "HubFunctionRoleArn", HUB_FUNCTION_ROLE)

    def test_scan_role_trusts_only_the_scan_principal(self):
        self.assert_trusts_only(self.scan_role(), "ScanPrincipalArn", SCAN_PRINCIPAL)

    def test_read_roles_read_what_the_function_role_reads_and_write_nothing(self):
        # The read role (and the scan role): exactly the hub function role's reads, with the same
        # resources, plus ec2:DescribeRegions (the CLI's --all-regions); no write, no Deny
        # needed, no wildcard action.
        hub_reads = self.hub_read_statements()
        self.assertIn("iam:SimulatePrincipalPolicy", hub_reads)
        self.assertIn("autoscaling:DescribeAutoScalingGroups", hub_reads)
        for role in (self.spoke_role(), self.scan_role()):
            for params, ev in self.combos:
                if not ev.resource_exists(role):
                    continue
                granted = {}
                for _, st in self.role_statements(ev, role):
                    self.assertEqual(st["Effect"], "Allow", (role, st))
                    self.assertNotIn("NotAction", st)
                    self.assertNotIn("NotResource", st)
                    self.assertNotIn("Condition", st)
                    for a in as_list(st["Action"]):
                        self.assertFalse(service_wildcard(a), (role, a))
                        self.assertTrue(is_read(a), f"{role}: {a} is not a read")
                        self.assertNotIn(a, SPOKE_WRITE_ACTIONS)
                        granted.setdefault(a, []).extend(literal(r, params) for r in as_list(st["Resource"]))
                self.assertEqual(granted.pop("ec2:DescribeRegions"), ["*"], role)
                # The same resource text, substituted for the same account: this account's users
                # and roles, any account's keys, "*" where IAM has no resource-level permission.
                expected = {a: [literal(r, params) for r in rs] for a, rs in hub_reads.items()}
                self.assertEqual(granted, expected, (role, params))
                break

    def test_remediation_role_mirrors_the_templates_write_conditions(self):
        role = self.remediation_role()
        hub = self.hub["Resources"]
        for params, ev in self.combos:
            exists = ev.resource_exists(role)
            self.assertEqual(exists, params["EnableRemediation"] == "true" and params["AWS::Region"] == params["RolesRegion"],
                             params)
            # Writes only in the remediation role, in every combination.
            for other in self.of_type("AWS::IAM::Role"):
                if other == role or not ev.resource_exists(other):
                    continue
                for _, st in self.role_statements(ev, other):
                    self.assertFalse(set(as_list(st["Action"])) & SPOKE_WRITE_ACTIONS, (other, st))
            if not exists:
                continue
            statements = self.role_statements(ev, role)
            by_sid = {st.get("Sid"): st for _, st in statements}
            hub_params = dict(params, **{"AWS::Region": "us-east-1"})
            template = Evaluator(self.hub, hub_params)
            wanted = {st["Sid"]: st for st in as_list(template.render(hub["RemediationPolicy"]["Properties"]["PolicyDocument"])["Statement"])}
            # The Allows exactly as the function role's under apply: the same actions, resources
            # (this account's principals and keys) and the tag condition with the same key.
            for sid in ("PutScopedInlinePolicyOnTaggedPrincipals", "ReadKeyOptInTag"):
                self.assertEqual(by_sid[sid], wanted[sid], (sid, params))
            self.assertEqual(by_sid["PutScopedInlinePolicyOnTaggedPrincipals"]["Condition"],
                             {"StringEquals": {f"iam:ResourceTag/{params['RemediationTagKey']}": "true"}})
            # Never its own role, nor this stack's other roles.
            never = by_sid["NeverOwnRoles"]
            self.assertEqual((never["Effect"], as_list(never["Action"])), ("Deny", ["iam:PutRolePolicy"]))
            name = params["SpokeRoleName"]
            self.assertEqual(set(as_list(never["Resource"])), {
                f"arn:aws:iam::{MEMBER}:role/{name}-remediation", f"arn:aws:iam::{MEMBER}:role/{name}",
                f"arn:aws:iam::{MEMBER}:role/{SCAN_ROLE_NAME}"})
            # Reads first, as the function role does: the diagnosis policy is attached too.
            self.assertIn("DescribeInstancesAndVolumes", by_sid)
            # The restart: only with RestartAfterRemediation, as RestartPolicy, for every region.
            restart = params["RestartAfterRemediation"] == "true"
            self.assertEqual("RestartOptedInInstances" in by_sid, restart, params)
            self.assertEqual("LetEc2DecryptVolumesOnRestart" in by_sid, restart, params)
            if restart:
                tag = {f"aws:ResourceTag/{params['RemediationTagKey']}": "true"}
                start = by_sid["RestartOptedInInstances"]
                self.assertEqual(as_list(start["Action"]), ["ec2:StartInstances"])
                self.assertEqual(as_list(start["Resource"]), [f"arn:aws:ec2:*:{MEMBER}:instance/*"])
                self.assertEqual(start["Condition"], {"StringEquals": tag})
                grant = by_sid["LetEc2DecryptVolumesOnRestart"]
                self.assertEqual(as_list(grant["Action"]), ["kms:CreateGrant"])
                self.assertEqual(as_list(grant["Resource"]), [f"arn:aws:kms:*:{MEMBER}:key/*"])
                self.assertEqual(grant["Condition"], {
                    "Bool": {"kms:GrantIsForAWSResource": "true"},
                    "StringEquals": tag,
                    "StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"},
                })
            # Nothing else writes.
            for _, st in statements:
                if st["Effect"] == "Allow":
                    for a in as_list(st["Action"]):
                        self.assertTrue(is_read(a) or a in SPOKE_WRITE_ACTIONS, a)

    def test_outputs_follow_the_roles(self):
        outputs = self.t["Outputs"]
        for key, role in (("SpokeRoleArn", self.spoke_role()), ("RemediationRoleArn", self.remediation_role()),
                          ("ScanRoleArn", self.scan_role())):
            self.assertEqual(outputs[key]["Value"], {"Fn::GetAtt": [role, "Arn"]})
            self.assertEqual(outputs[key].get("Condition"), self.res[role].get("Condition"))


class SpokeMutationSmokeTest(unittest.TestCase):
    """The spoke's review must notice a broken property."""

    def broken(self, mutate):
        t = cfn_yaml.load(str(SPOKE_TEMPLATE))
        mutate(t)

        class Mutated(SpokeTemplateTest):
            load = staticmethod(lambda: t)

        try:
            Mutated.setUpClass()
        except Exception:
            return True
        result = unittest.TestResult()
        result.failfast = True
        unittest.TestLoader().loadTestsFromTestCase(Mutated).run(result)
        return not result.wasSuccessful()

    @staticmethod
    def trust(t, role="SpokeRole"):
        return t["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]

    @staticmethod
    def edit_remediation(t, edit, index=0):
        policy = t["Resources"]["RemediationRole"]["Properties"]["Policies"][index]
        if is_fn(policy, "Fn::If"):
            policy = policy["Fn::If"][1]
        d = json.loads(policy["PolicyDocument"]["Fn::Sub"])
        edit(d)
        policy["PolicyDocument"]["Fn::Sub"] = json.dumps(d)

    def test_transform_added(self):
        self.assertTrue(self.broken(lambda t: t.__setitem__("Transform", "AWS::Serverless-2016-10-31")))

    def test_trust_without_organization(self):
        self.assertTrue(self.broken(lambda t: self.trust(t).pop("Condition")))

    def test_trust_the_hub_account(self):
        def mutate(t):
            self.trust(t)["Principal"] = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::111122223333:root"}}
        self.assertTrue(self.broken(mutate))

    def test_remediation_trust_without_organization(self):
        self.assertTrue(self.broken(lambda t: self.trust(t, "RemediationRole").pop("Condition")))

    def test_read_policy_writes(self):
        def mutate(t):
            t["Resources"]["DiagnosisReadPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Action"].append(
                "iam:PutRolePolicy")
        self.assertTrue(self.broken(mutate))

    def test_read_policy_drops_a_read(self):
        def mutate(t):
            statements = t["Resources"]["DiagnosisReadPolicy"]["Properties"]["PolicyDocument"]["Statement"]
            statements[:] = [st for st in statements if st["Sid"] != "FindLaunchCaller"]
        self.assertTrue(self.broken(mutate))

    def test_read_policy_iam_of_every_account(self):
        def mutate(t):
            statements = t["Resources"]["DiagnosisReadPolicy"]["Properties"]["PolicyDocument"]["Statement"]
            (st,) = [st for st in statements if st["Sid"] == "ReadAndSimulateCallers"]
            st["Resource"] = [{"Fn::Sub": "arn:${AWS::Partition}:iam::*:user/*"}, {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/*"}]
        self.assertTrue(self.broken(mutate))

    def test_remediation_role_always(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["RemediationRole"].update(Condition="CreateRoles")))

    def test_roles_in_every_region(self):
        self.assertTrue(self.broken(lambda t: t["Resources"]["SpokeRole"].pop("Condition")))

    def test_remediation_tag_ignores_case(self):
        def edit(d):
            st = d["Statement"][0]
            st["Condition"] = {"StringEqualsIgnoreCase": st["Condition"]["StringEquals"]}
        self.assertTrue(self.broken(lambda t: self.edit_remediation(t, edit)))

    def test_remediation_may_rewrite_its_own_role(self):
        self.assertTrue(self.broken(lambda t: self.edit_remediation(t, lambda d: d["Statement"].pop(2))))

    def test_restart_on_untagged_instances(self):
        self.assertTrue(self.broken(lambda t: self.edit_remediation(t, lambda d: d["Statement"][0].pop("Condition"), 1)))

    def test_forwarding_without_role(self):
        self.assertTrue(self.broken(
            lambda t: t["Resources"]["ForwardStateChangesRule"]["Properties"]["Targets"][0].pop("RoleArn")))

    def test_forwarding_role_puts_anywhere(self):
        def mutate(t):
            t["Resources"]["ForwardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]["Resource"] = "*"
        self.assertTrue(self.broken(mutate))


if __name__ == "__main__":
    unittest.main()