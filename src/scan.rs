//! `scan`: every failed launch in the account's regions, for an operator who has just been
//! paged. Regions are searched concurrently (bounded); a region that denies or fails is
//! reported in `skipped` and the scan goes on.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};

use crate::cloud::Cloud;
use crate::gather::{scan_region, Options};
use crate::report::{Finding, Report, Skipped};

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

/// Scans `regions`; the report holds every finding, and a `skipped` entry per failed region.
pub async fn scan<C: Cloud>(
    cloud: &C,
    regions: &[String],
    since: Duration,
    now: DateTime<Utc>,
    opts: &Options,
    progress: &Progress,
) -> Report {
    let results: Vec<(String, Result<Vec<Finding>, crate::cloud::CallError>)> =
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
    for (region, result) in results {
        match result {
            Ok(findings) => report.findings.extend(findings),
            Err(e) => report.skipped.push(Skipped { instance_id: None, region: Some(region), reason: e.to_string() }),
        }
    }
    report
}

/// The table a person reads: instance, state, since, caller, key, cause, fix.
pub fn table(report: &Report, colour: bool) -> String {
    let mut rows: Vec<[String; 7]> =
        vec![["INSTANCE", "STATE", "SINCE", "CALLER", "KEY", "CAUSE", "FIX"].map(str::to_owned)];
    for f in &report.findings {
        let state = match f.instance_state {
            crate::facts::EndState::Stopped => "stopped",
            crate::facts::EndState::Terminated => "terminated",
        };
        let since = f.launch.as_ref().map(|l| l.event_time.clone()).unwrap_or_else(|| "-".to_owned());
        let caller = f.launch.as_ref().map(|l| l.caller.short_name()).unwrap_or_else(|| "unknown".to_owned());
        let cause = f.causes.first();
        let key =
            cause.and_then(|c| c.key_arn.as_ref()).map(|k| k.key_id().to_owned()).unwrap_or_else(|| "-".to_owned());
        let code = cause.map(|c| c.code.as_str()).unwrap_or("-").to_owned();
        let fix = f
            .remediations
            .first()
            .map(|r| {
                let action = r.action.as_str().to_owned();
                let status = r.status.as_str().to_owned();
                if status == "proposed" {
                    action
                } else {
                    format!("{action} ({status})")
                }
            })
            .unwrap_or_else(|| "-".to_owned());
        rows.push([format!("{} ({})", f.instance_id, f.region), state.to_owned(), since, caller, key, code, fix]);
    }
    let widths: Vec<usize> =
        (0..7).map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let padded = if i + 1 == row.len() { cell.clone() } else { format!("{cell:<w$}  ") };
            let painted = match (colour, n, i) {
                (true, 0, _) => format!("\x1b[1m{padded}\x1b[0m"),
                (true, _, 5) => format!("{}{padded}\x1b[0m", cause_colour(cell)),
                _ => padded,
            };
            line.push_str(&painted);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if report.findings.is_empty() {
        out.push_str("No failed launches found.\n");
    }
    for s in &report.skipped {
        out.push_str(&format!(
            "skipped {}: {}\n",
            s.region.as_deref().or(s.instance_id.as_deref()).unwrap_or("-"),
            s.reason
        ));
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

/// Colour only on a terminal, and never with `NO_COLOR` set (https://no-color.org).
pub fn use_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
