//! Amazon Resource Names, parsed once so the rest of the code never slices strings.
//!
//! The diagnosis compares accounts (is the key in another account?), finds the IAM entity a fix
//! belongs on (a role's path tells a service-linked role from an SSO role) and names keys by id
//! in policy names. Doing that by string slicing is how tools end up attaching policies to the
//! wrong principal, so every ARN that crosses a boundary goes through [`Arn::parse`].

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A syntactically valid ARN: `arn:partition:service:region:account:resource`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arn {
    partition: String,
    service: String,
    region: String,
    account: String,
    resource: String,
}

/// Why a string is not an ARN we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    #[error("not an ARN (expected arn:partition:service:region:account:resource): {0:?}")]
    Malformed(String),
    #[error("not a KMS key ARN (expected arn:…:kms:region:account:key/id): {0}")]
    NotAKey(String),
}

impl Arn {
    /// Parses `arn:partition:service:region:account:resource`; the resource may contain `:`.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        let malformed = || ArnError::Malformed(truncate_for_error(s));
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return Err(malformed());
        }
        if !account.is_empty() && !is_account_id(account) {
            return Err(malformed());
        }
        Ok(Self {
            partition: partition.to_owned(),
            service: service.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            resource: resource.to_owned(),
        })
    }

    pub fn partition(&self) -> &str {
        &self.partition
    }
    pub fn service(&self) -> &str {
        &self.service
    }
    pub fn region(&self) -> &str {
        &self.region
    }
    pub fn account(&self) -> &str {
        &self.account
    }
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The account root principal of this ARN's account (`arn:aws:iam::123456789012:root`).
    pub fn account_root(&self) -> String {
        format!("arn:{}:iam::{}:root", self.partition, self.account)
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arn:{}:{}:{}:{}:{}", self.partition, self.service, self.region, self.account, self.resource)
    }
}

impl FromStr for Arn {
    type Err = ArnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Arn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Twelve ASCII digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

/// The partition a region belongs to (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition_of_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A KMS key ARN (`arn:aws:kms:region:account:key/<key id>`), the only form the report uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyArn(Arn);

impl KeyArn {
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        let arn = Arn::parse(s)?;
        Self::try_from(arn)
    }

    /// Resolves what EC2 stores in `KmsKeyId`: a key ARN, or a bare key id (which lives in the
    /// volume's own account and region).
    pub fn resolve(value: &str, partition: &str, region: &str, account: &str) -> Result<Self, ArnError> {
        if value.starts_with("arn:") {
            return Self::parse(value);
        }
        let bare = value.strip_prefix("key/").unwrap_or(value);
        if bare.is_empty() || bare.contains(['/', ':']) || bare.starts_with("alias") {
            return Err(ArnError::NotAKey(truncate_for_error(value)));
        }
        Self::parse(&format!("arn:{partition}:kms:{region}:{account}:key/{bare}"))
    }

    /// The key id (the part after `key/`), used in policy names.
    pub fn key_id(&self) -> &str {
        self.0.resource().strip_prefix("key/").unwrap_or(self.0.resource())
    }
    pub fn account(&self) -> &str {
        self.0.account()
    }
    pub fn region(&self) -> &str {
        self.0.region()
    }
    pub fn arn(&self) -> &Arn {
        &self.0
    }
}

impl TryFrom<Arn> for KeyArn {
    type Error = ArnError;
    fn try_from(arn: Arn) -> Result<Self, ArnError> {
        let id = arn.resource().strip_prefix("key/");
        if arn.service() != "kms" || arn.account().is_empty() || id.is_none_or(|id| id.is_empty() || id.contains('/')) {
            return Err(ArnError::NotAKey(arn.to_string()));
        }
        Ok(Self(arn))
    }
}

impl fmt::Display for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for KeyArn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read back only as a valid key ARN (a deferred event carries its keys on the queue).
impl<'de> serde::Deserialize<'de> for KeyArn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyArn::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What an IAM ARN names, as far as a fix is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IamEntity {
    /// `arn:aws:iam::123456789012:root`
    Root,
    /// `arn:aws:iam::123456789012:user/path/name`
    User {
        path: String,
        name: String,
    },
    /// `arn:aws:iam::123456789012:role/path/name`
    Role {
        path: String,
        name: String,
    },
    /// `arn:aws:sts::123456789012:assumed-role/name/session`
    AssumedRole {
        role_name: String,
        session: String,
    },
    /// `arn:aws:sts::123456789012:federated-user/name`
    FederatedUser {
        name: String,
    },
    Other,
}

/// How the AWS CLI names an IAM user or role: the noun in its commands (`put-user-policy`),
/// the flag that names it (`--user-name`), the field its answers nest under (`User`), and the
/// name itself. One place for the user/role dispatch of every command this tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CliNoun<'a> {
    pub noun: &'static str,
    pub flag: &'static str,
    pub field: &'static str,
    pub name: &'a str,
}

impl IamEntity {
    /// The CLI's words for a user or a role; `None` for anything else.
    pub fn cli(&self) -> Option<CliNoun<'_>> {
        match self {
            Self::User { name, .. } => Some(CliNoun { noun: "user", flag: "--user-name", field: "User", name }),
            Self::Role { name, .. } => Some(CliNoun { noun: "role", flag: "--role-name", field: "Role", name }),
            _ => None,
        }
    }

    pub fn of(arn: &Arn) -> Self {
        let resource = arn.resource();
        match arn.service() {
            "iam" if resource == "root" => Self::Root,
            "iam" => {
                if let Some(rest) = resource.strip_prefix("user/") {
                    let (path, name) = split_path(rest);
                    Self::User { path, name }
                } else if let Some(rest) = resource.strip_prefix("role/") {
                    let (path, name) = split_path(rest);
                    Self::Role { path, name }
                } else {
                    Self::Other
                }
            }
            "sts" => {
                if let Some(rest) = resource.strip_prefix("assumed-role/") {
                    match rest.split_once('/') {
                        Some((role, session)) if !role.is_empty() => {
                            Self::AssumedRole { role_name: role.to_owned(), session: session.to_owned() }
                        }
                        _ => Self::Other,
                    }
                } else if let Some(name) = resource.strip_prefix("federated-user/") {
                    Self::FederatedUser { name: name.to_owned() }
                } else {
                    Self::Other
                }
            }
            _ => Self::Other,
        }
    }
}

/// Splits `path/parts/name` into (`/path/parts/`, `name`).
fn split_path(rest: &str) -> (String, String) {
    match rest.rsplit_once('/') {
        Some((path, name)) => (format!("/{path}/"), name.to_owned()),
        None => ("/".to_owned(), rest.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_arn_and_id() {
        let k = KeyArn::parse("arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a").unwrap();
        assert_eq!(k.key_id(), "8e3426b8-87b4-434c-ae74-8e63dadf354a");
        assert_eq!(k.account(), "123456789012");
        assert_eq!(k.region(), "eu-west-1");
    }

    #[test]
    fn resolves_bare_key_id_in_volume_account() {
        let k = KeyArn::resolve("1234abcd-12ab", "aws", "us-east-2", "111122223333").unwrap();
        assert_eq!(k.to_string(), "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab");
    }

    #[test]
    fn rejects_aliases_and_garbage() {
        assert!(KeyArn::resolve("alias/aws/ebs", "aws", "us-east-1", "111122223333").is_err());
        assert!(KeyArn::parse("arn:aws:kms:us-east-1:111122223333:alias/x").is_err());
        assert!(Arn::parse("arn:aws:iam").is_err());
        assert!(Arn::parse("arn:aws:iam::12:root").is_err());
        assert!(Arn::parse("").is_err());
    }

    #[test]
    fn resource_may_contain_colons() {
        let a = Arn::parse("arn:aws:logs:us-east-1:123456789012:log-group:/x:*").unwrap();
        assert_eq!(a.resource(), "log-group:/x:*");
        assert_eq!(a.to_string(), "arn:aws:logs:us-east-1:123456789012:log-group:/x:*");
    }

    #[test]
    fn recognises_iam_entities() {
        let role = Arn::parse(
            "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
        )
        .unwrap();
        assert_eq!(
            IamEntity::of(&role),
            IamEntity::Role {
                path: "/aws-service-role/autoscaling.amazonaws.com/".into(),
                name: "AWSServiceRoleForAutoScaling".into()
            }
        );
        let user = Arn::parse("arn:aws:iam::123456789012:user/test").unwrap();
        assert_eq!(IamEntity::of(&user), IamEntity::User { path: "/".into(), name: "test".into() });
        let assumed = Arn::parse("arn:aws:sts::123456789012:assumed-role/Admin/alice@example.com").unwrap();
        assert_eq!(
            IamEntity::of(&assumed),
            IamEntity::AssumedRole { role_name: "Admin".into(), session: "alice@example.com".into() }
        );
        assert_eq!(IamEntity::of(&Arn::parse("arn:aws:iam::123456789012:root").unwrap()), IamEntity::Root);
    }
}
