//! Settings from the environment (Lambda, and defaults for the CLI). A value that is set but
//! invalid is an error naming the variable, never silently replaced by a default: a typo in
//! `REMEDIATION_MODE` must not turn remediation on or off behind the operator's back.
//!
//! May import: `core`, `ports`, `app` and `aws` (for its defaults); read by both entry points.

use chrono::Duration;

use crate::app::gather::Options;
use crate::app::remediate::{patterns, Guardrails, Mode, DEFAULT_TAG_KEY};
use crate::core::outbox::Sinks;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `CLOUDTRAIL_LOOKBACK_MINUTES` (default 60): how far before a state change to look for
    /// the launch call.
    pub lookback: Duration,
    /// `CLOUDTRAIL_WAIT_MINUTES` (default 20): how long after a state change a queued event
    /// may wait for its CloudTrail record before the finding is emitted as `caller-unknown`.
    pub cloudtrail_wait: Duration,
    pub sinks: Sinks,
    pub guardrails: Guardrails,
    /// `EVENTS_QUEUE_URL`: the queue whose messages' visibility is extended for retries.
    pub events_queue_url: Option<String>,
    /// `KLD_REDELIVERY_DELAY_SECONDS` (default 60, 0 to 900): how long a finding's unsent part
    /// waits on the queue before the sinks that failed are tried again.
    pub redelivery_delay: i32,
    /// `EVENTS_QUEUE_RETENTION_SECONDS` (default 345600, the template's 4 days; 60 to
    /// 1209600): an event whose time is older than this cannot have come through the queue
    /// honestly, and is skipped.
    pub queue_retention: Duration,
    /// `DEADLINE_MARGIN_SECONDS` (default 10, from 1 to 300): how long before the invocation's
    /// deadline the function stops starting work. One AWS call takes at most
    /// `KLD_ATTEMPT_TIMEOUT_SECONDS` (10) per attempt; settling a finding is a few calls.
    pub deadline_margin: std::time::Duration,
    /// `CLOUDTRAIL_CALLS_PER_SECOND` (default 1.5, from 0.1 to 2): this process's share of
    /// CloudTrail's 2 LookupEvents per second per account and region. The SAM template sets
    /// it so that its concurrent functions together stay under 2.
    pub cloudtrail_rate: f64,
    /// `PREFLIGHT_PRINCIPALS`: comma-separated IAM user or role ARNs whose StartInstances the
    /// scheduled preflight checks (the template's `PreflightPrincipals`). Each must parse.
    pub preflight_principals: Vec<String>,
    /// `SPOKE_ROLE_NAME` (hub topology): the role of each member account the function assumes
    /// to gather an event's facts there (and `<name>-remediation` to write, when enabled).
    pub spoke_role_name: Option<String>,
}

/// Where the settings are read from: the process's environment, or a test's map.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The variable's value, trimmed; unset and empty are the same.
    fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// A number from `min` to `max` (`what`: its unit, for the error), else `default`.
    fn number<T>(&self, name: &str, default: T, min: T, max: T, what: &str) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        match self.var(name) {
            None => Ok(default),
            Some(v) => match v.parse::<T>() {
                Ok(n) if min <= n && n <= max => Ok(n),
                _ => Err(format!("{name}={v:?}: expected {what} from {min} to {max}")),
            },
        }
    }

    fn minutes(&self, name: &str, default: i64, max: i64) -> Result<Duration, String> {
        self.number(name, default, 1, max, "whole minutes").map(Duration::minutes)
    }

    fn flag(&self, name: &str) -> Result<bool, String> {
        self.var(name).map_or(Ok(false), |v| switch(&v).map_err(|e| format!("{name}={e}")))
    }

    /// An IAM role name: 1 to 64 of letters, digits and `+=,.@_-` (IAM's rule), and room for
    /// the `-remediation` suffix.
    fn role_name(&self, name: &str) -> Result<Option<String>, String> {
        match self.var(name) {
            None => Ok(None),
            Some(v)
                if (1..=52).contains(&v.len())
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)) =>
            {
                Ok(Some(v))
            }
            Some(v) => Err(format!("{name}={v:?}: expected an IAM role name (at most 52 of A-Z a-z 0-9 +=,.@_-)")),
        }
    }

    /// Comma-separated principal ARNs, each one preflight can suppose a launch by.
    fn principals(&self, name: &str) -> Result<Vec<String>, String> {
        let list = patterns(&self.var(name).unwrap_or_default());
        for p in &list {
            crate::app::preflight::caller_for(p).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(list)
    }
}

/// `on` or `off` (or true/false, yes/no, 1/0, any case; empty is off): one spelling for a flag
/// (`--security-hub on`) and its environment variable (`SECURITY_HUB=on`) alike.
pub fn switch(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" | "" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

/// `off`, `dry-run` or `apply` (any case; `dryrun` too; empty is off): one spelling for
/// `--remediate` and `REMEDIATION_MODE` alike.
pub fn mode(s: &str) -> Result<Mode, String> {
    Mode::parse(s).ok_or_else(|| format!("{:?}: expected off, dry-run or apply", s.trim()))
}

impl Settings {
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(&|name| std::env::var(name).ok())
    }

    /// The settings from `lookup` (a variable's value by name): the environment, or a test's.
    pub fn from_vars(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let env = Env { lookup };
        let mode = match env.var("REMEDIATION_MODE") {
            None => Mode::Off,
            Some(v) => mode(&v).map_err(|e| format!("REMEDIATION_MODE={e}"))?,
        };
        Ok(Self {
            lookback: env.minutes("CLOUDTRAIL_LOOKBACK_MINUTES", 60, 60 * 24 * 90)?,
            cloudtrail_wait: env.minutes("CLOUDTRAIL_WAIT_MINUTES", 20, 24 * 60)?,
            sinks: Sinks {
                topic_arn: env.var("FINDINGS_TOPIC_ARN"),
                security_hub: env.flag("SECURITY_HUB")?,
                event_bus: env.var("FINDINGS_EVENT_BUS"),
                home: None,
            },
            guardrails: Guardrails {
                mode,
                tag_key: env.var("REMEDIATION_TAG_KEY").unwrap_or_else(|| DEFAULT_TAG_KEY.to_owned()),
                allowed_principals: env.var("REMEDIATION_ALLOWED_PRINCIPALS").map(|v| patterns(&v)).unwrap_or_default(),
                allowed_keys: env.var("REMEDIATION_ALLOWED_KEYS").map(|v| patterns(&v)).unwrap_or_default(),
                restart: env.flag("RESTART_AFTER_REMEDIATION")?,
            },
            events_queue_url: env.var("EVENTS_QUEUE_URL"),
            redelivery_delay: env.number("KLD_REDELIVERY_DELAY_SECONDS", 60, 0, 900, "whole seconds")?,
            deadline_margin: std::time::Duration::from_secs(env.number(
                "DEADLINE_MARGIN_SECONDS",
                10,
                1,
                300,
                "whole seconds",
            )?),
            queue_retention: Duration::seconds(env.number(
                "EVENTS_QUEUE_RETENTION_SECONDS",
                345_600,
                60,
                1_209_600,
                "whole seconds",
            )?),
            cloudtrail_rate: env.number(
                "CLOUDTRAIL_CALLS_PER_SECOND",
                crate::aws::TRAIL_RATE,
                0.1,
                2.0,
                "calls per second",
            )?,
            preflight_principals: env.principals("PREFLIGHT_PRINCIPALS")?,
            spoke_role_name: env.role_name("SPOKE_ROLE_NAME")?,
        })
    }

    pub fn options(&self) -> Options {
        Options { lookback: self.lookback, ..Options::default() }
    }
}

/// Parses `90s`, `30m`, `24h`, `7d` (CloudTrail keeps 90 days).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 30m, 24h or 7d"))?;
    let d = match unit {
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" | "" => Duration::hours(n),
        "d" => Duration::days(n),
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    if d <= Duration::zero() || d > Duration::days(90) {
        return Err(format!("{s:?}: must be between 1s and 90d (CloudTrail keeps 90 days)"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::hours(24)));
        assert_eq!(parse_duration("7d"), Ok(Duration::days(7)));
        assert_eq!(parse_duration("30m"), Ok(Duration::minutes(30)));
        assert!(parse_duration("91d").is_err());
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5w").is_err());
    }
}
