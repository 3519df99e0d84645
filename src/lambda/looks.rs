//! When to look again for a launch's caller, and when a failure is settled without one.

use crate::core::report::Finding;
use crate::settings::Settings;
use chrono::{DateTime, Duration, Utc};

/// How long a pending event waits between looks for its launch record. CloudTrail shows most
/// records about 5 minutes after the call and some much later (1 to 15 minutes is common), and
/// an operator wants the alert within a minute of the record showing: a look every 30 s, plus
/// the event source's batching window (at most 20 s in the template) and one look's work, keeps
/// that under 60 s. It is affordable because one window query serves every pending event of the
/// account-region in a batch, and deferred events of one batch come back together: a storm
/// costs a few LookupEvents a minute, not one per event (`make bench`, the schedule model).
pub(super) const LOOK_INTERVAL: Duration = Duration::seconds(30);

/// When to look again for the launch record, or `None` to settle now. The wait budget runs
/// from when SQS first received the event; until it ends the event is looked at every
/// [`LOOK_INTERVAL`], from its first receipt on. A lookup that failed (throttled, cut off by
/// the deadline) is no evidence of absence: it is tried again, up to twice the budget, rather
/// than reported as `caller-unknown`.
pub(super) fn next_look(
    f: &Finding,
    settings: &Settings,
    now: DateTime<Utc>,
    first_received: DateTime<Utc>,
) -> Option<i32> {
    if f.launch.is_some() {
        return None;
    }
    let deadline = first_received + settings.cloudtrail_wait;
    let hard_limit = first_received + settings.cloudtrail_wait * 2;
    let lookup_failed = f.missing_evidence.iter().any(|m| m.call == "cloudtrail:LookupEvents");
    let end = if now < deadline {
        deadline
    } else if lookup_failed && now < hard_limit {
        hard_limit
    } else {
        return None;
    };
    // The last look lands on the budget's end, not a whole interval past it.
    let wait = LOOK_INTERVAL.min(end - now).num_seconds().max(1);
    i32::try_from(wait).ok()
}

/// Whether a finding's answer can no longer change with CloudTrail: every cause is the state of
/// a key (disabled, pending deletion, without key material, its key store unavailable), which no
/// caller could have got past. Such a finding is reported at the first look; the caller is
/// added when its record appears, as an update of the same finding `Id`.
pub(super) fn settled_without_caller(f: &Finding) -> bool {
    use crate::core::report::CauseCode as C;
    !f.causes.is_empty()
        && f.causes
            .iter()
            .all(|c| matches!(c.code, C::KeyDisabled | C::KeyPendingDeletion | C::KeyPendingImport | C::KeyUnavailable))
}
