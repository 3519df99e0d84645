//! Key-policy analysis: given a KMS key policy, a principal and an action, does the policy
//! delegate to IAM, name the principal, or deny it?
//!
//! This is deliberately *not* a full IAM evaluator. It answers three questions the diagnosis
//! needs, with three-valued logic: when a statement's condition uses a key we cannot know from
//! the outside (an organisation id, a source IP), the answer is [`Tri::Maybe`] rather than a
//! guess. The facts we do know are the ones EC2 presents when it asks for a grant on a caller's
//! behalf: `kms:ViaService = ec2.<region>.amazonaws.com`, `kms:GrantIsForAWSResource = true`,
//! `kms:CallerAccount`, `aws:PrincipalArn`.

use serde_json::Value;

/// Three-valued truth, for conditions we cannot always evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tri {
    Yes,
    Maybe,
    No,
}

impl Tri {
    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Yes, Tri::Yes) => Tri::Yes,
            _ => Tri::Maybe,
        }
    }
    fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
            (Tri::No, Tri::No) => Tri::No,
            _ => Tri::Maybe,
        }
    }
    fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Maybe => Tri::Maybe,
        }
    }
    fn from_bool(b: bool) -> Tri {
        if b {
            Tri::Yes
        } else {
            Tri::No
        }
    }
    pub fn is_possible(self) -> bool {
        self != Tri::No
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("key policy is not valid JSON: {0}")]
    Json(String),
    #[error("key policy has an unexpected shape: {0}")]
    Shape(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// Who a statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    /// `"*"` or `{"AWS": "*"}`: everyone (usually narrowed by conditions).
    Anyone,
    /// The `AWS` entries (ARNs or bare account ids); other principal types (Service, Federated)
    /// never match an IAM caller and are kept only so the statement is not mistaken for `Anyone`.
    Aws(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subjects {
    Principal(Principals),
    NotPrincipal(Principals),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Patterns {
    Only(Vec<String>),
    AllBut(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    operator: String,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    label: String,
    effect: Effect,
    subjects: Subjects,
    actions: Patterns,
    resources: Patterns,
    conditions: Vec<Condition>,
}

/// A parsed key policy.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPolicy {
    statements: Vec<Statement>,
}

/// Who is asking, and what EC2 presents on their behalf.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The IAM entity (user or role ARN, or account root) whose permissions are in question.
    pub principal_arn: &'a str,
    /// The identity as CloudTrail recorded it (an assumed-role session ARN, say), if different.
    pub caller_arn: Option<&'a str>,
    pub principal_account: &'a str,
    pub key_arn: &'a str,
    pub region: &'a str,
    pub action: &'a str,
    /// `aws:PrincipalType`: `User`, `AssumedRole`, `FederatedUser`, `Account` (root), when known.
    pub principal_type: Option<&'a str>,
}

/// What the key policy says about one action for one principal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// An Allow for the principal's account root: IAM policies decide.
    pub delegates_to_iam: Tri,
    /// An Allow that names the principal (or `*` under conditions that hold).
    pub allows_principal: Tri,
    /// A Deny that covers the principal.
    pub denies_principal: Tri,
    /// Labels (`Sid`, or `#index`) of the statements behind the answers.
    pub statements: Vec<String>,
}

impl KeyPolicy {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        let statements = match doc.get("Statement") {
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(single @ Value::Object(_)) => vec![single],
            Some(_) => return Err(PolicyError::Shape("Statement must be an object or a list")),
            None => return Err(PolicyError::Shape("no Statement")),
        };
        let statements =
            statements.into_iter().enumerate().map(|(i, s)| parse_statement(i, s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { statements })
    }

    pub fn evaluate(&self, req: &Request<'_>) -> Verdict {
        let own_root = format!("arn:{}:iam::{}:root", partition_of(req.key_arn), req.principal_account);
        let mut v = Verdict {
            delegates_to_iam: Tri::No,
            allows_principal: Tri::No,
            denies_principal: Tri::No,
            statements: Vec::new(),
        };
        for st in &self.statements {
            let covers = st
                .actions
                .matches(req.action, false)
                .and(st.resources.matches_resource(req.key_arn))
                .and(conditions_hold(&st.conditions, req));
            if covers == Tri::No {
                continue;
            }
            let (names_caller, names_root) = st.subjects.match_principal(req, &own_root, st.effect);
            match st.effect {
                Effect::Deny => {
                    // A Deny whose principal is an account (its root ARN or bare id) applies to
                    // every identity of that account, not the root user alone: "When you
                    // specify an AWS account as the principal, it applies to all identities in
                    // the account" (IAM User Guide, Principal element). `*` or naming the
                    // principal covers it too.
                    let hit = covers.and(names_caller.or(names_root));
                    if hit.is_possible() {
                        v.denies_principal = v.denies_principal.or(hit);
                        v.statements.push(st.label.clone());
                    }
                }
                Effect::Allow => {
                    let named = covers.and(names_caller);
                    let delegated = covers.and(names_root);
                    if named.is_possible() || delegated.is_possible() {
                        v.statements.push(st.label.clone());
                    }
                    v.allows_principal = v.allows_principal.or(named);
                    v.delegates_to_iam = v.delegates_to_iam.or(delegated);
                }
            }
        }
        v
    }
}

fn partition_of(arn: &str) -> &str {
    arn.split(':').nth(1).filter(|p| !p.is_empty()).unwrap_or("aws")
}

fn parse_statement(index: usize, v: &Value) -> Result<Statement, PolicyError> {
    let obj = v.as_object().ok_or(PolicyError::Shape("a statement is not an object"))?;
    let label = match obj.get("Sid").and_then(Value::as_str) {
        Some(sid) if !sid.is_empty() => sid.to_owned(),
        _ => format!("#{index}"),
    };
    let effect = match obj.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => return Err(PolicyError::Shape("Effect must be Allow or Deny")),
    };
    let subjects = match (obj.get("Principal"), obj.get("NotPrincipal")) {
        (Some(p), None) => Subjects::Principal(parse_principals(p)?),
        (None, Some(p)) => Subjects::NotPrincipal(parse_principals(p)?),
        _ => return Err(PolicyError::Shape("a key-policy statement needs exactly one of Principal, NotPrincipal")),
    };
    let actions = match (obj.get("Action"), obj.get("NotAction")) {
        (Some(a), None) => Patterns::Only(string_list(a)?),
        (None, Some(a)) => Patterns::AllBut(string_list(a)?),
        _ => return Err(PolicyError::Shape("a statement needs exactly one of Action, NotAction")),
    };
    let resources = match (obj.get("Resource"), obj.get("NotResource")) {
        (Some(r), None) => Patterns::Only(string_list(r)?),
        (None, Some(r)) => Patterns::AllBut(string_list(r)?),
        // Key policies may omit Resource in practice; it then means this key.
        (None, None) => Patterns::Only(vec!["*".to_owned()]),
        _ => return Err(PolicyError::Shape("a statement has both Resource and NotResource")),
    };
    let conditions = match obj.get("Condition") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(ops)) => {
            let mut out = Vec::new();
            for (operator, block) in ops {
                let block =
                    block.as_object().ok_or(PolicyError::Shape("a condition operator must map keys to values"))?;
                for (key, values) in block {
                    out.push(Condition {
                        operator: operator.clone(),
                        key: key.to_ascii_lowercase(),
                        values: scalar_list(values)?,
                    });
                }
            }
            out
        }
        Some(_) => return Err(PolicyError::Shape("Condition must be an object")),
    };
    Ok(Statement { label, effect, subjects, actions, resources, conditions })
}

fn parse_principals(v: &Value) -> Result<Principals, PolicyError> {
    match v {
        Value::String(s) if s == "*" => Ok(Principals::Anyone),
        Value::Object(map) => {
            let mut aws = Vec::new();
            for (kind, ids) in map {
                let ids = string_list(ids)?;
                if kind == "AWS" {
                    if ids.iter().any(|i| i == "*") {
                        return Ok(Principals::Anyone);
                    }
                    aws.extend(ids);
                }
            }
            Ok(Principals::Aws(aws))
        }
        _ => Err(PolicyError::Shape("Principal must be \"*\" or an object")),
    }
}

fn string_list(v: &Value) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or(PolicyError::Shape("expected a list of strings")))
            .collect(),
        _ => Err(PolicyError::Shape("expected a string or a list of strings")),
    }
}

/// Condition values may be strings, booleans or numbers, alone or in a list.
fn scalar_list(v: &Value) -> Result<Vec<String>, PolicyError> {
    fn scalar(v: &Value) -> Result<String, PolicyError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(PolicyError::Shape("condition values must be strings, booleans or numbers")),
        }
    }
    match v {
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

impl Patterns {
    fn matches(&self, value: &str, case_sensitive: bool) -> Tri {
        let any = |pats: &[String]| pats.iter().any(|p| glob(p, value, case_sensitive));
        Tri::from_bool(match self {
            Patterns::Only(p) => any(p),
            Patterns::AllBut(p) => !any(p),
        })
    }

    /// In a key policy, `"Resource": "*"` means "this key".
    fn matches_resource(&self, key_arn: &str) -> Tri {
        self.matches(key_arn, true)
    }
}

impl Subjects {
    /// Returns (does it cover the caller itself, does it cover the caller's account root).
    fn match_principal(&self, req: &Request<'_>, own_root: &str, effect: Effect) -> (Tri, Tri) {
        match (self, effect) {
            (Subjects::Principal(p), _) => (p.names(req), Tri::from_bool(p.names_root(req, own_root))),
            // NotPrincipal with Deny (the only use AWS supports): everyone but those listed is
            // denied. A user or role is exempt only when its own ARN is listed (for a session,
            // the role's ARN or the session's); the account alone exempts nobody. AWS also asks
            // for the account's ARN beside it ("Otherwise, the policy might deny access to the
            // entire account containing the principal", IAM User Guide, NotPrincipal), so an
            // own ARN without its account is only maybe exempt.
            (Subjects::NotPrincipal(p), Effect::Deny) => {
                let own = p.names(req);
                let exempt = match own {
                    Tri::Yes if p.names_root(req, own_root) => Tri::Yes,
                    Tri::Yes => Tri::Maybe,
                    other => other,
                };
                (exempt.not(), Tri::No)
            }
            (Subjects::NotPrincipal(p), Effect::Allow) => {
                let exempt = p.names(req).or(Tri::from_bool(p.names_root(req, own_root)));
                (exempt.not(), exempt.not())
            }
        }
    }
}

impl Principals {
    fn names(&self, req: &Request<'_>) -> Tri {
        match self {
            Principals::Anyone => Tri::Yes,
            Principals::Aws(ids) => {
                Tri::from_bool(ids.iter().any(|id| id == req.principal_arn || Some(id.as_str()) == req.caller_arn))
            }
        }
    }

    fn names_root(&self, req: &Request<'_>, own_root: &str) -> bool {
        match self {
            Principals::Anyone => false,
            Principals::Aws(ids) => ids.iter().any(|id| id == own_root || id == req.principal_account),
        }
    }
}

/// What we know of the request context EC2 presents to KMS for a caller.
fn context_value(key: &str, req: &Request<'_>) -> Option<String> {
    match key {
        "kms:viaservice" => Some(format!("ec2.{}.amazonaws.com", req.region)),
        "kms:calleraccount" | "aws:principalaccount" => Some(req.principal_account.to_owned()),
        "aws:principalarn" => Some(req.principal_arn.to_owned()),
        "aws:principaltype" => req.principal_type.map(str::to_owned),
        "kms:grantisforawsresource" if is_grant_action(req.action) => Some("true".to_owned()),
        _ => None,
    }
}

/// Keys that are simply absent for some actions (so `Null`/`IfExists` can be decided).
fn known_absent(key: &str, req: &Request<'_>) -> bool {
    key == "kms:grantisforawsresource" && !is_grant_action(req.action)
}

/// The grant operations, the only ones on which `kms:GrantIsForAWSResource` exists.
pub fn is_grant_action(action: &str) -> bool {
    ["kms:creategrant", "kms:listgrants", "kms:revokegrant"].contains(&action.to_ascii_lowercase().as_str())
}

fn conditions_hold(conditions: &[Condition], req: &Request<'_>) -> Tri {
    conditions.iter().fold(Tri::Yes, |acc, c| acc.and(condition_holds(c, req)))
}

fn condition_holds(c: &Condition, req: &Request<'_>) -> Tri {
    let op = c.operator.as_str();
    let op = op.strip_prefix("ForAnyValue:").or_else(|| op.strip_prefix("ForAllValues:")).unwrap_or(op);
    let (op, if_exists) = match op.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (op, false),
    };
    let actual = context_value(&c.key, req);
    if op == "Null" {
        // "Null": true means "the key is absent".
        return match (&actual, known_absent(&c.key, req)) {
            (Some(_), _) => Tri::from_bool(c.values.iter().any(|v| v.eq_ignore_ascii_case("false"))),
            (None, true) => Tri::from_bool(c.values.iter().any(|v| v.eq_ignore_ascii_case("true"))),
            (None, false) => Tri::Maybe,
        };
    }
    let Some(actual) = actual else {
        return if known_absent(&c.key, req) {
            // An absent key satisfies IfExists and negated operators, and nothing else.
            Tri::from_bool(if_exists || op.contains("Not"))
        } else {
            Tri::Maybe
        };
    };
    let any = |f: &dyn Fn(&str) -> bool| c.values.iter().any(|v| f(v));
    let result = match op {
        "StringEquals" | "ArnEquals" => any(&|v| v == actual),
        "StringNotEquals" | "ArnNotEquals" => !any(&|v| v == actual),
        "StringEqualsIgnoreCase" => any(&|v| v.eq_ignore_ascii_case(&actual)),
        "StringNotEqualsIgnoreCase" => !any(&|v| v.eq_ignore_ascii_case(&actual)),
        "StringLike" | "ArnLike" => any(&|v| glob(v, &actual, true)),
        "StringNotLike" | "ArnNotLike" => !any(&|v| glob(v, &actual, true)),
        "Bool" => any(&|v| v.eq_ignore_ascii_case(&actual)),
        _ => return Tri::Maybe,
    };
    Tri::from_bool(result)
}

/// IAM wildcard match: `*` any run of characters, `?` one character.
pub fn glob(pattern: &str, value: &str, case_sensitive: bool) -> bool {
    let norm = |s: &str| -> Vec<char> {
        if case_sensitive {
            s.chars().collect()
        } else {
            s.chars().flat_map(char::to_lowercase).collect()
        }
    };
    let (p, v) = (norm(pattern), norm(value));
    // Iterative matcher with single-star backtracking: linear-ish, no recursion, no panics.
    let (mut pi, mut vi) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while vi < v.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some(pi);
                mark = vi;
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == v.get(vi) => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    vi = mark;
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// The account-root statement that lets IAM policies grant access to a key.
pub fn delegation_statement(partition: &str, account: &str) -> Value {
    serde_json::json!({
        "Sid": "Enable IAM User Permissions",
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:{partition}:iam::{account}:root")},
        "Action": "kms:*",
        "Resource": "*"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a";
    const USER: &str = "arn:aws:iam::123456789012:user/test";

    fn req(action: &'static str) -> Request<'static> {
        Request {
            principal_arn: USER,
            caller_arn: None,
            principal_account: "123456789012",
            key_arn: KEY,
            region: "eu-west-1",
            action,
            principal_type: Some("User"),
        }
    }

    fn verdict(policy: &str) -> Verdict {
        KeyPolicy::parse(policy).unwrap().evaluate(&req("kms:CreateGrant"))
    }

    #[test]
    fn default_key_policy_delegates_to_iam() {
        let v = verdict(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#,
        );
        assert_eq!(v.delegates_to_iam, Tri::Yes);
        assert_eq!(v.allows_principal, Tri::No);
        assert_eq!(v.denies_principal, Tri::No);
        assert_eq!(v.statements, vec!["Enable IAM User Permissions"]);
    }

    #[test]
    fn bare_account_id_principal_also_delegates() {
        let v = verdict(
            r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["123456789012"]},"Action":["kms:Create*"],"Resource":"*"}}"#,
        );
        assert_eq!(v.delegates_to_iam, Tri::Yes);
    }

    #[test]
    fn policy_naming_only_an_admin_does_not_delegate() {
        let v = verdict(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/KeyAdmin"},"Action":"kms:*","Resource":"*"}]}"#,
        );
        assert_eq!(v.delegates_to_iam, Tri::No);
        assert_eq!(v.allows_principal, Tri::No);
    }

    #[test]
    fn naming_the_principal_allows_it() {
        let v = verdict(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:user/test"]},"Action":"kms:CreateGrant","Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":true}}}]}"#,
        );
        assert_eq!(v.allows_principal, Tri::Yes);
    }

    #[test]
    fn grant_condition_does_not_apply_to_decrypt() {
        let p = KeyPolicy::parse(r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/test"},"Action":["kms:CreateGrant","kms:Decrypt"],"Resource":"*","Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}]}"#).unwrap();
        assert_eq!(p.evaluate(&req("kms:CreateGrant")).allows_principal, Tri::Yes);
        assert_eq!(p.evaluate(&req("kms:Decrypt")).allows_principal, Tri::No);
    }

    #[test]
    fn aws_managed_ebs_key_policy_allows_via_ec2() {
        let v = verdict(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:CreateGrant","kms:DescribeKey"],"Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"123456789012","kms:ViaService":"ec2.eu-west-1.amazonaws.com"}}}]}"#,
        );
        assert_eq!(v.allows_principal, Tri::Yes);
    }

    #[test]
    fn unknown_condition_keys_are_maybe() {
        let v = verdict(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"StringNotEquals":{"aws:PrincipalOrgID":"o-123"}}}]}"#,
        );
        assert_eq!(v.denies_principal, Tri::Maybe);
    }

    #[test]
    fn explicit_deny_on_create_grant() {
        let v = verdict(
            r#"{"Statement":[
            {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"},
            {"Sid":"NoGrants","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:user/test"},"NotAction":["kms:Describe*"],"Resource":"*"}]}"#,
        );
        assert_eq!(v.denies_principal, Tri::Yes);
        assert_eq!(v.delegates_to_iam, Tri::Yes);
        assert!(v.statements.contains(&"NoGrants".to_owned()));
    }

    #[test]
    fn not_principal_deny_exempting_someone_else_covers_the_caller() {
        let v = verdict(
            r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::123456789012:role/Admin"]},"Action":"kms:CreateGrant","Resource":"*"}]}"#,
        );
        assert_eq!(v.denies_principal, Tri::Yes);
        // The account alone exempts nobody in it.
        let v = verdict(
            r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::123456789012:root"]},"Action":"kms:CreateGrant","Resource":"*"}]}"#,
        );
        assert_eq!(v.denies_principal, Tri::Yes);
        // The user's own ARN with its account: exempt.
        let v = verdict(
            r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::123456789012:user/test","arn:aws:iam::123456789012:root"]},"Action":"kms:CreateGrant","Resource":"*"}]}"#,
        );
        assert_eq!(v.denies_principal, Tri::No);
        // Its own ARN without the account: AWS says the Deny might still apply.
        let v = verdict(
            r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/test"},"Action":"kms:CreateGrant","Resource":"*"}]}"#,
        );
        assert_eq!(v.denies_principal, Tri::Maybe);
    }

    #[test]
    fn a_deny_naming_the_account_covers_every_principal_of_it() {
        for principal in [r#""arn:aws:iam::123456789012:root""#, r#""123456789012""#] {
            let v = verdict(&format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::123456789012:root"}},"Action":"kms:*","Resource":"*"}},
                {{"Sid":"NoGrants","Effect":"Deny","Principal":{{"AWS":{principal}}},"Action":"kms:CreateGrant","Resource":"*"}}]}}"#
            ));
            assert_eq!(v.denies_principal, Tri::Yes, "{principal}");
        }
        // Another account's root does not cover this one.
        let v = verdict(
            r#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::210987654321:root"},"Action":"kms:*","Resource":"*"}]}"#,
        );
        assert_eq!(v.denies_principal, Tri::No);
    }

    #[test]
    fn known_condition_keys_are_decided_not_maybe() {
        // A guard that lets only named principals use the key: decided for a known caller.
        let guard = |arns: &str| {
            format!(
                r#"{{"Statement":[{{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{{"ArnNotEquals":{{"aws:PrincipalArn":{arns}}}}}}}]}}"#
            )
        };
        assert_eq!(verdict(&guard(r#"["arn:aws:iam::123456789012:role/Ops"]"#)).denies_principal, Tri::Yes);
        assert_eq!(verdict(&guard(r#"["arn:aws:iam::123456789012:user/test"]"#)).denies_principal, Tri::No);
        for (cond, expected) in [
            (r#"{"StringEquals":{"aws:PrincipalType":"User"}}"#, Tri::Yes),
            (r#"{"StringEquals":{"aws:PrincipalType":"AssumedRole"}}"#, Tri::No),
            (r#"{"StringEquals":{"aws:PrincipalAccount":"123456789012"}}"#, Tri::Yes),
            (r#"{"StringEquals":{"kms:CallerAccount":"210987654321"}}"#, Tri::No),
            (r#"{"StringEquals":{"kms:ViaService":"ec2.eu-west-1.amazonaws.com"}}"#, Tri::Yes),
        ] {
            let v = verdict(&format!(
                r#"{{"Statement":[{{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Condition":{cond}}}]}}"#
            ));
            assert_eq!(v.denies_principal, expected, "{cond}");
        }
    }

    #[test]
    fn resource_naming_another_key_does_not_cover() {
        let v = verdict(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"arn:aws:kms:eu-west-1:123456789012:key/other"}]}"#,
        );
        assert_eq!(v.delegates_to_iam, Tri::No);
    }

    #[test]
    fn rejects_illegal_documents_with_an_error() {
        assert!(matches!(KeyPolicy::parse("{"), Err(PolicyError::Json(_))));
        assert!(matches!(KeyPolicy::parse("[]"), Err(PolicyError::Shape(_))));
        assert!(matches!(
            KeyPolicy::parse(r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"*"}]}"#),
            Err(PolicyError::Shape(_))
        ));
        assert!(matches!(
            KeyPolicy::parse(r#"{"Statement":[{"Effect":"Allow","Principal":7,"Action":"*"}]}"#),
            Err(PolicyError::Shape(_))
        ));
    }

    #[test]
    fn glob_matches_iam_wildcards() {
        assert!(glob("kms:Create*", "kms:CreateGrant", false));
        assert!(glob("KMS:*", "kms:CreateGrant", false));
        assert!(glob("kms:?reateGrant", "kms:CreateGrant", false));
        assert!(!glob("kms:Decrypt", "kms:CreateGrant", false));
        assert!(glob("*", "", true));
        assert!(glob("a*b*c", "aXXbYYc", true));
        assert!(!glob("a*b*c", "aXXbYY", true));
        assert!(!glob("arn:aws:kms:*:key/A", "arn:aws:kms:x:key/a", true));
    }
}
