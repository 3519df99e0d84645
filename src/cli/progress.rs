//! The scan's progress on stderr (indicatif): regions done, failed launches found, accounts done
//! in a scan of several, and an ETA. Hidden off a terminal (indicatif draws only to one) and
//! with `--quiet`; cleared when the scan ends, so the report starts on a clean line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::scan::Watch;

pub(super) struct Progress {
    bar: ProgressBar,
    found: AtomicUsize,
    /// In a scan of several accounts: each account's regions still to do.
    accounts: Option<Mutex<BTreeMap<String, usize>>>,
}

impl Progress {
    /// A scan of `regions` regions of one account.
    pub(super) fn regions(regions: usize, quiet: bool) -> Self {
        Self::new(regions, quiet, None)
    }

    /// A scan of several accounts: each with its number of regions.
    pub(super) fn accounts(members: &[(String, usize)], quiet: bool) -> Self {
        let total = members.iter().map(|(_, n)| n).sum();
        Self::new(total, quiet, Some(Mutex::new(members.iter().cloned().collect())))
    }

    fn new(regions: usize, quiet: bool, accounts: Option<Mutex<BTreeMap<String, usize>>>) -> Self {
        let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let bar = ProgressBar::with_draw_target(Some(regions as u64), target);
        let style = ProgressStyle::with_template("[{bar:24}] {pos}/{len} regions, {msg}, ETA {eta}")
            .map(|s| s.progress_chars("#>-"))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let progress = Self { bar, found: AtomicUsize::new(0), accounts };
        progress.bar.set_message(progress.message(0));
        progress
    }

    fn message(&self, found: usize) -> String {
        let accounts = self.accounts.as_ref().and_then(|a| a.lock().ok()).map(|left| {
            let done = left.values().filter(|n| **n == 0).count();
            format!("{done}/{} accounts, ", left.len())
        });
        format!("{}{found} failed launches", accounts.unwrap_or_default())
    }

    /// Draws the final counts once (a fast scan may end between two redraws), then clears.
    pub(super) fn finish(&self) {
        self.bar.finish();
        self.bar.finish_and_clear();
    }
}

impl Watch for Progress {
    fn region_done(&self, account: Option<&str>, findings: usize) {
        let found = self.found.fetch_add(findings, Ordering::SeqCst) + findings;
        if let (Some(account), Some(Ok(mut left))) = (account, self.accounts.as_ref().map(Mutex::lock)) {
            if let Some(n) = left.get_mut(account) {
                *n = n.saturating_sub(1);
            }
        }
        self.bar.set_message(self.message(found));
        self.bar.inc(1);
    }
}
