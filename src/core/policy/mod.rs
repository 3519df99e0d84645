//! Key-policy analysis: given a KMS key policy, a principal and an action, does the policy
//! delegate to IAM, name the principal, or deny it?
//!
//! This is deliberately *not* a full IAM evaluator. It answers three questions the diagnosis
//! needs, with three-valued logic: when a statement's condition uses a key we cannot know from
//! the outside (an organisation id, a source IP), the answer is [`Tri::Maybe`] rather than a
//! guess. The facts we do know are the ones EC2 presents when it asks for a grant on a caller's
//! behalf: `kms:ViaService = ec2.<region>.amazonaws.com`, `kms:GrantIsForAWSResource = true`,
//! `kms:CallerAccount`, `aws:PrincipalArn`.

mod matching;
mod parse;
#[cfg(test)]
mod tests;

pub use matching::*;
use parse::*;

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
