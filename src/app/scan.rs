//! `scan`: every failed launch in the account's regions, for an operator who has just been
//! paged. Regions are searched concurrently (bounded); a region that denies or fails is
//! reported in `skipped` and the scan goes on.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};

use crate::app::diagnose::scan_region;
use crate::app::gather::Options;
use crate::core::decide::rfc3339;
use crate::core::report::{Finding, RemediationStatus, Report, ScanSummary, Skipped, Window};
use crate::core::text::{clean, display_width, pad, truncate};
use crate::ports::Cloud;

/// A progress line on stderr, only on a terminal and never with `--quiet`.
pub struct Progress {
    enabled: bool,
    regions: usize,
    done: AtomicUsize,
    diagnosed: AtomicUsize,
}

impl Progress {
    pub fn new(regions: usize, quiet: bool) -> Self {
        Self {
            enabled: !quiet && std::io::stderr().is_terminal(),
            regions,
            done: AtomicUsize::new(0),
            diagnosed: AtomicUsize::new(0),
        }
    }

    fn region_done(&self, findings: usize) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        let diagnosed = self.diagnosed.fetch_add(findings, Ordering::SeqCst) + findings;
        if !self.enabled {
            return;
        }
        const WIDTH: usize = 24;
        let filled = (done * WIDTH).checked_div(self.regions).unwrap_or(WIDTH);
        let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH.saturating_sub(filled));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r[{bar}] {done}/{} regions, {diagnosed} failed launches diagnosed", self.regions);
        let _ = err.flush();
    }

    pub fn finish(&self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// Scans `regions`; the report holds every finding, a `skipped` entry per failed region, and
/// the summary of what was searched.
pub async fn scan<C: Cloud>(
    cloud: &C,
    regions: &[String],
    since: Duration,
    now: DateTime<Utc>,
    opts: &Options,
    progress: &Progress,
) -> Report {
    let results: Vec<(String, Result<Vec<Finding>, crate::ports::CallError>)> =
        stream::iter(regions.iter().map(|r| async move {
            let result = scan_region(cloud, r, since, now, opts).await;
            progress.region_done(result.as_ref().map(Vec::len).unwrap_or(0));
            (r.clone(), result)
        }))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    progress.finish();
    let mut report = Report::default();
    let mut results = results;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut searched = Vec::new();
    for (region, result) in results {
        match result {
            Ok(findings) => {
                searched.push(region);
                report.findings.extend(findings);
            }
            Err(e) => report.skipped.push(Skipped::region(region, e.to_string())),
        }
    }
    let mut by_cause = BTreeMap::new();
    let mut accounts = BTreeSet::new();
    for f in &report.findings {
        *by_cause.entry(crate::core::message::primary(f).as_str().to_owned()).or_insert(0) += 1;
        accounts.insert(f.account.clone());
    }
    report.summary = Some(ScanSummary {
        regions: searched,
        accounts: accounts.into_iter().collect(),
        window: Window { start: rfc3339(now - since), end: rfc3339(now) },
        findings_by_cause: by_cause,
    });
    report
}

/// A member account of a multi-account scan: its cloud, or why it could not be entered.
pub struct Member<C> {
    pub account: String,
    pub cloud: Result<C, String>,
    /// The regions to scan in it.
    pub regions: Result<Vec<String>, String>,
}

/// Progress across accounts: accounts and regions done, failures found, and an ETA.
pub struct OrgProgress {
    inner: Progress,
    accounts: usize,
    per_account: std::sync::Mutex<BTreeMap<String, usize>>,
    started: std::time::Instant,
}

impl OrgProgress {
    pub fn new(members: &[(String, usize)], quiet: bool) -> Self {
        let total = members.iter().map(|(_, n)| n).sum();
        Self {
            inner: Progress::new(total, quiet),
            accounts: members.len(),
            per_account: std::sync::Mutex::new(members.iter().cloned().collect()),
            started: std::time::Instant::now(),
        }
    }

    fn region_done(&self, account: &str, findings: usize) {
        let accounts_done = match self.per_account.lock() {
            Ok(mut left) => {
                if let Some(n) = left.get_mut(account) {
                    *n = n.saturating_sub(1);
                }
                left.values().filter(|n| **n == 0).count()
            }
            Err(_) => 0,
        };
        let done = self.inner.done.fetch_add(1, Ordering::SeqCst) + 1;
        let diagnosed = self.inner.diagnosed.fetch_add(findings, Ordering::SeqCst) + findings;
        if !self.inner.enabled {
            return;
        }
        let left = self.inner.regions.saturating_sub(done);
        let eta = self.started.elapsed().as_secs_f64() / done.max(1) as f64 * left as f64;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{accounts_done}/{} accounts, {done}/{} regions, {diagnosed} failed launches, ETA {:.0}s",
            self.accounts, self.inner.regions, eta
        );
        let _ = err.flush();
    }

    pub fn finish(&self) {
        self.inner.finish();
    }
}

/// Scans every region of every member account, all (account, region) pairs under one bound.
/// CloudTrail's budget is kept per account and region: each member's cloud paces its own
/// regions. An account that could not be entered, or whose regions could not be listed, and
/// each region that failed, is a `skipped` entry naming the account; the scan goes on.
pub async fn scan_members<C: Cloud>(
    members: &[Member<C>],
    since: Duration,
    now: DateTime<Utc>,
    opts: &Options,
    progress: &OrgProgress,
) -> Report {
    let mut report = Report::default();
    let mut pairs: Vec<(&str, &C, String)> = Vec::new();
    for m in members {
        match (&m.cloud, &m.regions) {
            (Ok(cloud), Ok(regions)) => pairs.extend(regions.iter().map(|r| (m.account.as_str(), cloud, r.clone()))),
            (Err(why), _) | (_, Err(why)) => report.skipped.push(Skipped::account(m.account.clone(), why.clone())),
        }
    }
    let results: Vec<(String, String, Result<Vec<Finding>, crate::ports::CallError>)> =
        stream::iter(pairs.into_iter().map(|(account, cloud, region)| async move {
            let result = scan_region(cloud, &region, since, now, opts).await;
            progress.region_done(account, result.as_ref().map(Vec::len).unwrap_or(0));
            (account.to_owned(), region, result)
        }))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    progress.finish();
    let mut results = results;
    results.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut searched = BTreeSet::new();
    let mut entered = BTreeSet::new();
    for (account, region, result) in results {
        entered.insert(account.clone());
        match result {
            Ok(findings) => {
                searched.insert(region);
                report.findings.extend(findings);
            }
            Err(e) => report.skipped.push(Skipped::region(region, e.to_string()).in_account(account)),
        }
    }
    let mut by_cause = BTreeMap::new();
    for f in &report.findings {
        *by_cause.entry(crate::core::message::primary(f).as_str().to_owned()).or_insert(0) += 1;
    }
    report.summary = Some(ScanSummary {
        regions: searched.into_iter().collect(),
        accounts: entered.into_iter().collect(),
        window: Window { start: rfc3339(now - since), end: rfc3339(now) },
        findings_by_cause: by_cause,
    });
    report
}

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
pub fn table(report: &Report, style: &TableStyle) -> String {
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
    let total = |w: &[usize]| w.iter().sum::<usize>() + GAP * w.len().saturating_sub(1);
    if !wide {
        // Leave out the least needed columns while even their minimums do not fit.
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
    let mut widths: Vec<usize> = cols.iter().map(natural).collect();
    if !wide {
        // Narrow the widest column first, down to each column's minimum; then, if that is not
        // enough, every column down to 2.
        for floor in [None, Some(2usize)] {
            while total(&widths) > style.width {
                let widest = widths
                    .iter()
                    .enumerate()
                    .filter(|(i, w)| **w > floor.unwrap_or_else(|| cols.get(*i).map_or(2, |c| c.min)))
                    .max_by_key(|(i, w)| (**w, std::cmp::Reverse(*i)))
                    .map(|(i, _)| i);
                match widest.and_then(|i| widths.get_mut(i)) {
                    Some(w) => *w -= 1,
                    None => break,
                }
            }
        }
    }
    let mut out = String::new();
    let rows = fs.len() + 1;
    for n in 0..rows {
        let mut line = String::new();
        for (i, (c, w)) in cols.iter().zip(&widths).enumerate() {
            let cell = if n == 0 { c.header.to_owned() } else { c.cells.get(n - 1).cloned().unwrap_or_default() };
            let text = truncate(&cell, *w);
            let last = i + 1 == cols.len();
            let padded = if last { text.clone() } else { pad(&text, *w + GAP) };
            let painted = match (style.colour, n, c.header) {
                (true, 0, _) => format!("\x1b[1m{padded}\x1b[0m"),
                (true, _, "CAUSE") => format!("{}{padded}\x1b[0m", cause_colour(&cell)),
                _ => padded,
            };
            line.push_str(&painted);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if fs.is_empty() {
        out.clear();
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

fn cause_colour(code: &str) -> &'static str {
    match code {
        "key-disabled" | "key-pending-deletion" | "key-pending-import" | "key-unavailable" => "\x1b[31m",
        "caller-unknown" | "no-kms-cause-found" => "\x1b[2m",
        _ => "\x1b[33m",
    }
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
}
