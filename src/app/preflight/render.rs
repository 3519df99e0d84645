//! The preflight report for a person: a table, or text with each check's causes and fixes.

use super::*;

/// A table a person reads: one line a check.
pub fn table(report: &PreflightReport) -> String {
    let mut rows = vec![["VERDICT", "REGION", "TARGET", "PRINCIPAL", "CAUSE", "KEYS"].map(str::to_owned).to_vec()];
    for c in &report.checks {
        rows.push(vec![
            c.verdict.as_str().to_owned(),
            c.region.clone(),
            c.instance_id
                .clone()
                .or_else(|| c.auto_scaling_group.as_ref().map(|g| format!("asg/{g}")))
                .unwrap_or_default(),
            c.principal_arn.clone(),
            c.causes.first().map(|x| x.code.as_str().to_owned()).unwrap_or_else(|| "-".to_owned()),
            c.keys.iter().map(|k| k.arn.key_id().to_owned()).collect::<Vec<_>>().join(","),
        ]);
    }
    let widths: Vec<usize> =
        (0..6).map(|i| rows.iter().map(|r| r.get(i).map_or(0, |s| s.chars().count())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let fail = report.checks.iter().filter(|c| c.verdict == Verdict::WillFail).count();
    out.push_str(&format!(
        "\n{} checks: {fail} will fail, {} ok, {} unknown; {} skipped\n",
        report.checks.len(),
        report.checks.iter().filter(|c| c.verdict == Verdict::Ok).count(),
        report.checks.iter().filter(|c| c.verdict == Verdict::Unknown).count(),
        report.skipped.len()
    ));
    out
}

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
