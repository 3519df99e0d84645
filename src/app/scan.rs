//! `scan`: every failed launch in the account's regions, for an operator who has just been
//! paged. Regions are searched concurrently (bounded); a region that denies or fails is
//! reported in `skipped` and the scan goes on.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use futures_util::stream::{self, StreamExt};

use crate::app::diagnose::scan_region;
use crate::app::gather::Options;
use crate::core::decide::rfc3339;
use crate::core::report::{Finding, Report, ScanSummary, Skipped, Window};
use crate::ports::Cloud;

/// Whoever watches a scan (the CLI's progress bar): told as each region is done.
pub trait Watch: Sync {
    /// A region was searched (of `account`, in a scan of several) and `findings` found in it.
    fn region_done(&self, account: Option<&str>, findings: usize);
}

/// Nobody watching.
impl Watch for () {
    fn region_done(&self, _: Option<&str>, _: usize) {}
}

/// Scans `regions`; the report holds every finding, a `skipped` entry per failed region, and
/// the summary of what was searched.
pub async fn scan<C: Cloud>(
    cloud: &C,
    regions: &[String],
    since: Duration,
    now: DateTime<Utc>,
    opts: &Options,
    watch: &dyn Watch,
) -> Report {
    let results: Vec<(String, Result<Vec<Finding>, crate::ports::CallError>)> =
        stream::iter(regions.iter().map(|r| async move {
            let result = scan_region(cloud, r, since, now, opts).await;
            watch.region_done(None, result.as_ref().map(Vec::len).unwrap_or(0));
            (r.clone(), result)
        }))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
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

/// Scans every region of every member account, all (account, region) pairs under one bound.
/// CloudTrail's budget is kept per account and region: each member's cloud paces its own
/// regions. An account that could not be entered, or whose regions could not be listed, and
/// each region that failed, is a `skipped` entry naming the account; the scan goes on.
pub async fn scan_members<C: Cloud>(
    members: &[Member<C>],
    since: Duration,
    now: DateTime<Utc>,
    opts: &Options,
    watch: &dyn Watch,
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
            watch.region_done(Some(account), result.as_ref().map(Vec::len).unwrap_or(0));
            (account.to_owned(), region, result)
        }))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
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
