//! `scan` across an organization: which accounts (`--accounts`, or a file), where in each, and
//! the session name that says who scanned. Entering each account (sts:AssumeRole into the same
//! role, as Cloud Custodian's c7n-org does) is the CLI's (`cli::scan`).

/// The account ids of an `--accounts-file`: one a line; blank lines and `#` comments ignored.
pub fn accounts_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let id = line.split('#').next().unwrap_or_default().trim();
        if id.is_empty() {
            continue;
        }
        if !crate::core::arn::is_account_id(id) {
            return Err(format!("line {}: {:?} is not a 12-digit account id", n + 1, crate::core::event::echo(id)));
        }
        if !out.iter().any(|a| a == id) {
            out.push(id.to_owned());
        }
    }
    Ok(out)
}

/// An account id given on the command line.
pub fn account_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    if crate::core::arn::is_account_id(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{:?} is not a 12-digit account id", crate::core::event::echo(s)))
    }
}

/// A role session name that says who scanned: `kms-launch-doctor-` and the caller's name, in
/// the characters STS allows (`[\w+=,.@-]`, 2 to 64).
pub fn session_name(caller_arn: &str) -> String {
    let who = caller_arn.rsplit(['/', ':']).next().unwrap_or_default();
    let clean: String =
        who.chars().map(|c| if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) { c } else { '-' }).collect();
    let mut name = format!("kms-launch-doctor-{clean}");
    name.truncate(64);
    name
}

/// Where to scan in each account.
pub enum Regions {
    Given(Vec<String>),
    /// Each account's own enabled regions (ec2:DescribeRegions through its role).
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accounts_file_is_one_id_a_line_with_comments() {
        let ids = accounts_file("# prod\n111111111111\n\n222222222222  # batch\n111111111111\n").unwrap();
        assert_eq!(ids, ["111111111111", "222222222222"]);
        assert!(accounts_file("111111111111\n12345\n").unwrap_err().starts_with("line 2:"));
    }

    #[test]
    fn session_names_say_who_scanned_in_the_characters_sts_allows() {
        assert_eq!(session_name("arn:aws:iam::123456789012:user/alice"), "kms-launch-doctor-alice");
        assert_eq!(
            session_name("arn:aws:sts::123456789012:assumed-role/Admin/jane@example.com"),
            "kms-launch-doctor-jane@example.com"
        );
        let long = session_name(&format!("arn:aws:iam::123456789012:user/{}", "x".repeat(100)));
        assert_eq!(long.len(), 64);
        assert_eq!(session_name("arn:aws:iam::123456789012:user/a b"), "kms-launch-doctor-a-b");
    }
}
