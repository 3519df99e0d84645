//! The preflight report for a person: a table, or text with each check's causes and fixes.

use super::*;

/// Text for a person: each launch that will fail, why, and the fix.
pub fn text(report: &PreflightReport) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let target =
            c.instance_id.clone().or_else(|| c.auto_scaling_group.as_ref().map(|g| format!("Auto Scaling group {g}")));
        out.push_str(&format!(
            "{} ({}) launched by {}: {}\n",
            target.unwrap_or_default(),
            c.region,
            c.principal_arn,
            c.verdict.as_str()
        ));
        for cause in &c.causes {
            out.push_str(&format!("  {}: {}\n", cause.code.as_str(), cause.summary));
        }
        for r in &c.remediations {
            out.push_str(&format!("  fix ({} on {}):\n", r.action.as_str(), r.target));
            for cmd in &r.commands {
                out.push_str(&format!("    {cmd}\n"));
            }
        }
        for m in &c.missing_evidence {
            out.push_str(&format!("  missing: {} on {}: {}\n", m.call, m.target, m.reason));
        }
    }
    for s in &report.skipped {
        out.push_str(&format!(
            "skipped {}{}: {}\n",
            s.instance_id.as_deref().unwrap_or(""),
            s.region.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
            s.reason
        ));
    }
    out
}
