//! The CLI's tables (comfy-table): a scan's findings fitted to the terminal, and preflight's
//! checks. Every cell goes through [`clean`]: a value from AWS never drives the terminal.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use comfy_table::{presets, Attribute, Cell, Color, ColumnConstraint, ContentArrangement, Row, Table, Width};

use crate::app::preflight::{PreflightReport, Verdict};
use crate::core::report::{Finding, RemediationStatus, Report};
use crate::core::text::{clean, display_width};

/// How a table is laid out.
#[derive(Debug, Clone, Copy)]
pub struct TableStyle {
    /// Columns to fit in (`--wide` ignores it).
    pub width: usize,
    /// Everything in full: whole ARNs, no truncation.
    pub wide: bool,
    pub colour: bool,
    /// For the age of each launch.
    pub now: DateTime<Utc>,
    /// An ACCOUNT column (a scan of several accounts).
    pub accounts: bool,
}

/// One column: its header, the narrowest it may be made before the others have given up all
/// they can, when it is left out of a table too narrow for every column (lower first, `None`
/// never), and its cells.
struct Column {
    header: &'static str,
    min: usize,
    drop: Option<u8>,
    cells: Vec<String>,
}

/// `5m`, `3h`, `2d` since `then`.
fn age(then: &str, now: DateTime<Utc>) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(then) else { return "-".to_owned() };
    let d = now.signed_duration_since(t.with_timezone(&Utc));
    if d < Duration::hours(1) {
        format!("{}m", d.num_minutes().max(0))
    } else if d < Duration::days(2) {
        format!("{}h", d.num_hours())
    } else {
        format!("{}d", d.num_days())
    }
}

/// The table a person reads: instance, (name, region,) state, since, caller, key, cause, fix;
/// fitted to `style.width` by showing ARNs by their resource part and cutting cells with `…`,
/// and, when even that cannot fit every column, by leaving out SINCE, then KEY, STATE and NAME;
/// or everything in full with `style.wide`. The summary line (a scan's) ends it. Skipped
/// regions and warnings are not part of it: they go to stderr.
pub(super) fn table(report: &Report, style: &TableStyle) -> String {
    let wide = style.wide;
    let fs = &report.findings;
    let names = fs.iter().any(|f| f.instance_name.as_deref().is_some_and(|n| !n.trim().is_empty()));
    let regions: BTreeSet<&str> = fs.iter().map(|f| f.region.as_str()).collect();
    let mut cols: Vec<Column> = Vec::new();
    let mut col = |header: &'static str, min: usize, drop: Option<u8>, cell: &dyn Fn(&Finding) -> String| {
        cols.push(Column { header, min, drop, cells: fs.iter().map(|f| clean(&cell(f))).collect() });
    };
    if style.accounts {
        col("ACCOUNT", 12, None, &|f| f.account.clone());
    }
    col("INSTANCE", 19, None, &|f| f.instance_id.clone());
    if names {
        col("NAME", 8, Some(3), &|f| f.instance_name.clone().unwrap_or_default());
    }
    if regions.len() > 1 || wide {
        col("REGION", 9, None, &|f| f.region.clone());
    }
    col("STATE", 7, Some(2), &|f| f.instance_state.as_str().to_owned());
    col("SINCE", 3, Some(0), &|f| match (&f.launch, wide) {
        (Some(l), true) => l.event_time.clone(),
        (Some(l), false) => age(&l.event_time, style.now),
        (None, _) => "-".to_owned(),
    });
    col("CALLER", 10, None, &|f| match &f.launch {
        Some(l) if wide => {
            l.caller.principal_arn.clone().or_else(|| l.caller.arn.clone()).unwrap_or_else(|| l.caller.short_name())
        }
        Some(l) => l.caller.short_name(),
        None => "unknown".to_owned(),
    });
    col("KEY", 10, Some(1), &|f| {
        let Some(key) = f.causes.first().and_then(|c| c.key_arn.as_ref()) else { return "-".to_owned() };
        let alias = f.keys.iter().find(|k| k.arn == *key).and_then(|k| k.aliases.first());
        match (alias, wide) {
            (Some(a), true) => format!("{key} ({a})"),
            (None, true) => key.to_string(),
            (Some(a), false) => a.clone(),
            (None, false) => key.arn().resource().to_owned(),
        }
    });
    col("CAUSE", 18, None, &|f| f.causes.first().map(|c| c.code.as_str()).unwrap_or("-").to_owned());
    col("FIX", 12, None, &|f| {
        let Some(r) = f.remediations.first() else { return "-".to_owned() };
        let mut fix = r.action.as_str().to_owned();
        if r.status != RemediationStatus::Proposed {
            fix = format!("{fix} ({})", r.status.as_str());
        }
        if f.remediations.len() > 1 {
            fix = format!("{fix} +{}", f.remediations.len() - 1);
        }
        fix
    });

    const GAP: usize = 2;
    let natural =
        |c: &Column| c.cells.iter().map(|s| display_width(s)).chain(std::iter::once(c.header.len())).max().unwrap_or(0);
    if !wide {
        // Leave out the least needed columns while even their minimums do not fit.
        let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * w.len().saturating_sub(1);
        loop {
            let widths: Vec<usize> = cols.iter().map(|c| natural(c).min(c.min)).collect();
            if total(&widths) <= style.width {
                break;
            }
            let Some(i) = cols.iter().enumerate().filter_map(|(i, c)| c.drop.map(|d| (d, i))).min().map(|(_, i)| i)
            else {
                break;
            };
            cols.remove(i);
        }
    }
    let mut out = String::new();
    if !fs.is_empty() {
        let mut t = Table::new();
        t.load_style(presets::NOTHING).set_truncation_indicator("…");
        if wide {
            t.set_content_arrangement(ContentArrangement::Disabled);
        } else {
            t.set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(u16::try_from(style.width).unwrap_or(u16::MAX));
        }
        if style.colour {
            t.enforce_styling();
        } else {
            t.force_no_tty();
        }
        let bold = |s: &str| if style.colour { Cell::new(s).add_attribute(Attribute::Bold) } else { Cell::new(s) };
        t.set_header(cols.iter().map(|c| bold(c.header)));
        for n in 0..fs.len() {
            let mut row = Row::from(cols.iter().map(|c| {
                let text = c.cells.get(n).cloned().unwrap_or_default();
                match (style.colour, c.header) {
                    (true, "CAUSE") => Cell::new(&text).fg(cause_colour(&text)),
                    _ => Cell::new(text),
                }
            }));
            row.max_height(1);
            t.add_row(row);
        }
        let last = cols.len().saturating_sub(1);
        // Each column's floor: its minimum (an instance id whole), unless even the minimums of
        // the columns left cannot fit, when any column may be cut, down to 2: the table still
        // fits the width, as `--help` promises.
        let floors: Vec<usize> = cols.iter().map(|c| natural(c).min(c.min)).collect();
        let squeezed = floors.iter().sum::<usize>() + GAP * last > style.width;
        for (i, (column, c)) in t.column_iter_mut().zip(&cols).enumerate() {
            // Two spaces between columns, none before the first or after the last.
            let gap = if i == last { 0 } else { GAP };
            column.set_padding((0, u16::try_from(gap).unwrap_or(2)));
            if !wide {
                // A column is never cut below its minimum (an instance id never at all); the
                // boundary counts the padding.
                let floor = if squeezed { natural(c).min(2) } else { natural(c).min(c.min) };
                let floor = u16::try_from(floor + gap).unwrap_or(u16::MAX);
                column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(floor)));
            }
        }
        for line in t.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    if let Some(summary) = crate::core::render::summary_line(report) {
        let lines = if wide { vec![summary] } else { crate::core::text::wrap(&summary, style.width, "  ") };
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    } else if fs.is_empty() {
        out.push_str("No failed launches found.\n");
    }
    out
}

fn cause_colour(code: &str) -> Color {
    match code {
        "key-disabled" | "key-pending-deletion" | "key-pending-import" | "key-unavailable" => Color::Red,
        "caller-unknown" | "no-kms-cause-found" => Color::DarkGrey,
        _ => Color::Yellow,
    }
}

/// A table a person reads: one line a check.
pub(super) fn preflight(report: &PreflightReport) -> String {
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
    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).force_no_tty();
    let mut rows = rows.into_iter();
    t.set_header(rows.next().unwrap_or_default());
    t.add_rows(rows.map(|r| r.into_iter().map(|s| clean(&s)).collect::<Vec<_>>()));
    let last = t.column_count().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(age("2026-11-28T11:30:00Z", now), "30m");
        assert_eq!(age("2026-11-28T07:00:00Z", now), "5h");
        assert_eq!(age("2026-11-25T12:00:00Z", now), "3d");
        assert_eq!(age("nonsense", now), "-");
    }

    #[test]
    fn a_table_of_several_accounts_and_regions_still_fits_the_width() {
        let key = crate::core::arn::KeyArn::parse(
            "arn:aws:kms:eu-west-1:123456789012:key/8e3426b8-87b4-434c-ae74-8e63dadf354a",
        )
        .unwrap();
        let mut a = crate::core::report::fixture::finding("arn:aws:iam::123456789012:user/a-rather-long-name", &key);
        a.instance_id = "i-0fedcba9876543210".into();
        let mut b = a.clone();
        b.instance_id = "i-0123456789abcdef0".into();
        b.region = "ap-southeast-2".into();
        let report = Report { findings: vec![a, b], ..Report::default() };
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z").unwrap().with_timezone(&Utc);
        let style = TableStyle { width: 80, wide: false, colour: false, now, accounts: true };
        let narrow = table(&report, &style);
        assert!(narrow.lines().all(|l| display_width(l) <= 80), "{narrow}");
        assert!(narrow.starts_with("ACCOUNT"), "{narrow}");
        // With room, instance ids are whole.
        let roomy = table(&report, &TableStyle { width: 120, ..style });
        assert!(roomy.contains("i-0123456789abcdef0") && roomy.contains("i-0fedcba9876543210"), "{roomy}");
        assert!(roomy.lines().all(|l| display_width(l) <= 120), "{roomy}");
    }
}
