//! Settings from the environment (Lambda) or flags (CLI).

use chrono::Duration;

use crate::gather::Options;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `CLOUDTRAIL_LOOKBACK_MINUTES`: how far before a state change to look for the launch.
    pub lookback: Duration,
}

impl Settings {
    pub fn from_env() -> Self {
        let lookback = std::env::var("CLOUDTRAIL_LOOKBACK_MINUTES")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|m| (1..=60 * 24 * 90).contains(m))
            .map(Duration::minutes)
            .unwrap_or_else(|| Options::default().lookback);
        Self { lookback }
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
