//! Whether a statement applies to a request: patterns, principals, and the conditions a launch's CreateGrant carries.

use super::*;

impl Patterns {
    pub(super) fn matches(&self, value: &str, case_sensitive: bool) -> Tri {
        let any = |pats: &[String]| pats.iter().any(|p| glob(p, value, case_sensitive));
        Tri::from_bool(match self {
            Patterns::Only(p) => any(p),
            Patterns::AllBut(p) => !any(p),
        })
    }

    /// In a key policy, `"Resource": "*"` means "this key".
    pub(super) fn matches_resource(&self, key_arn: &str) -> Tri {
        self.matches(key_arn, true)
    }
}

impl Subjects {
    /// Returns (does it cover the caller itself, does it cover the caller's account root).
    pub(super) fn match_principal(&self, req: &Request<'_>, own_root: &str, effect: Effect) -> (Tri, Tri) {
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
    pub(super) fn names(&self, req: &Request<'_>) -> Tri {
        match self {
            Principals::Anyone => Tri::Yes,
            Principals::Aws(ids) => {
                Tri::from_bool(ids.iter().any(|id| id == req.principal_arn || Some(id.as_str()) == req.caller_arn))
            }
        }
    }

    pub(super) fn names_root(&self, req: &Request<'_>, own_root: &str) -> bool {
        match self {
            Principals::Anyone => false,
            Principals::Aws(ids) => ids.iter().any(|id| id == own_root || id == req.principal_account),
        }
    }
}

/// What we know of the request context EC2 presents to KMS for a caller.
pub(super) fn context_value(key: &str, req: &Request<'_>) -> Option<String> {
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
pub(super) fn known_absent(key: &str, req: &Request<'_>) -> bool {
    key == "kms:grantisforawsresource" && !is_grant_action(req.action)
}

/// The grant operations, the only ones on which `kms:GrantIsForAWSResource` exists.
pub fn is_grant_action(action: &str) -> bool {
    ["kms:creategrant", "kms:listgrants", "kms:revokegrant"].contains(&action.to_ascii_lowercase().as_str())
}

pub(super) fn conditions_hold(conditions: &[Condition], req: &Request<'_>) -> Tri {
    conditions.iter().fold(Tri::Yes, |acc, c| acc.and(condition_holds(c, req)))
}

pub(super) fn condition_holds(c: &Condition, req: &Request<'_>) -> Tri {
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
