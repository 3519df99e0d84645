//! A key policy document into statements: principals, actions, resources, conditions, as IAM's grammar allows them.

use super::*;
use serde_json::Value;

pub(super) fn partition_of(arn: &str) -> &str {
    arn.split(':').nth(1).filter(|p| !p.is_empty()).unwrap_or("aws")
}

pub(super) fn parse_statement(index: usize, v: &Value) -> Result<Statement, PolicyError> {
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

pub(super) fn parse_principals(v: &Value) -> Result<Principals, PolicyError> {
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

pub(super) fn string_list(v: &Value) -> Result<Vec<String>, PolicyError> {
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
pub(super) fn scalar_list(v: &Value) -> Result<Vec<String>, PolicyError> {
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
