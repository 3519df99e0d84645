//! What the user sees of a run's end: the report on stdout, warnings and errors on stderr, and
//! the exit code, decided once from the worst thing that happened ([`Exit`], [`CliError`]).

use std::io::Write;
use std::process::ExitCode;

use chrono::Utc;

use crate::cli::args::Format;
use crate::cli::term::ColorChoice;
use crate::core::render;
use crate::core::report::{RemediationStatus, Report, Skipped};
use crate::ports::CallError;

/// Why a command could not run at all. Mapped once, in [`CliError::exit_code`], to the exit
/// codes `--help` states.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// 2: a bad flag or argument, an unreadable input, an invalid setting, an unknown profile.
    #[error("{0}")]
    Usage(String),
    /// 1: AWS could not answer what the command cannot do without.
    #[error(transparent)]
    Aws(#[from] CallError),
    /// 1: nothing could be done, for a reason already said in a sentence.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Usage(_) => 2,
            Self::Aws(_) | Self::Failed(_) => 1,
        })
    }
}

/// How a run ended, from best to worst; the worst thing that happened decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: everything asked for was done.
    Complete,
    /// 3: the run went on, but some regions, accounts or evidence could not be read, or a
    /// remediation failed.
    Partial,
    /// 1: nothing could be done (AWS unreachable, no requested instance found, a sink failed).
    Failed,
    /// 0: the reader went away (`| head`). A normal end, as in ripgrep, whatever the run found:
    /// it outranks the others, so a closed pipe always ends quietly with 0.
    ReaderGone,
}

impl Exit {
    pub fn code(self) -> ExitCode {
        ExitCode::from(match self {
            Self::Complete | Self::ReaderGone => 0,
            Self::Failed => 1,
            Self::Partial => 3,
        })
    }
}

/// stderr, with `error:` / `warning:` coloured when stderr gets colour.
pub(super) struct Stderr {
    pub(super) colour: bool,
}

impl Stderr {
    pub(super) fn line(&self, label: &str, colour: &str, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if self.colour {
            writeln!(err, "{colour}{label}:\x1b[0m {text}")
        } else {
            writeln!(err, "{label}: {text}")
        };
    }
    pub(super) fn error(&self, text: &str) {
        self.line("error", "\x1b[1;31m", text);
    }
    pub(super) fn warning(&self, text: &str) {
        self.line("warning", "\x1b[1;33m", text);
    }
    pub(super) fn skipped(&self, text: &str) {
        self.line("skipped", "\x1b[2m", text);
    }
}

/// Writes to stdout. A reader that went away (a closed pipe is how `| head` says it has
/// enough, as ripgrep treats it) ends the output quietly with `ReaderGone` (exit 0). Any other
/// write error is `Failed`. `print!` would panic on either.
pub(super) fn emit(err: &Stderr, text: &str) -> Exit {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Exit::Complete,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::ReaderGone,
        Err(e) => {
            err.error(&format!("cannot write the output: {e}"));
            Exit::Failed
        }
    }
}

pub(super) fn json(err: &Stderr, report: &Report) -> Exit {
    match serde_json::to_string_pretty(report) {
        Ok(s) => emit(err, &format!("{s}\n")),
        Err(e) => {
            err.error(&format!("could not render the report: {e}"));
            Exit::Failed
        }
    }
}

/// Sets up logging on stderr: with `--debug`, the tool's and the SDK's debug messages (request
/// signatures excluded); otherwise the tool's warnings and its remediation audit trail, and
/// nothing from the SDK (the credential chain's internals are noise to an operator).
/// `LOG_LEVEL` or `RUST_LOG` still choose, when set and `--debug` is not.
pub(super) fn init_tracing(debug: bool, colour: bool) {
    use tracing_subscriber::EnvFilter;
    const QUIET: &str = "off,kms_launch_doctor=warn,kms_launch_doctor::audit=info";
    const DEBUG: &str = "debug,aws_sigv4=info,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info";
    let filter = if debug {
        EnvFilter::new(DEBUG)
    } else {
        let level = std::env::var("LOG_LEVEL").ok().map(|l| l.to_ascii_lowercase());
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level.as_deref().unwrap_or(QUIET)))
            .unwrap_or_else(|_| EnvFilter::new(QUIET))
    };
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).try_init();
}

/// The worst outcome the report shows: partial when evidence is missing, a region or an
/// instance could not be read, or a remediation failed.
pub(super) fn report_outcome(report: &Report) -> Exit {
    let partial = report.findings.iter().any(|f| {
        !f.missing_evidence.is_empty() || f.remediations.iter().any(|r| r.status == RemediationStatus::Failed)
    }) || report.skipped.iter().any(|s| s.region.is_some() || s.account.is_some() || is_not_found(s));
    if partial {
        Exit::Partial
    } else {
        Exit::Complete
    }
}

pub(super) fn is_not_found(s: &Skipped) -> bool {
    s.reason.starts_with("not found in ")
}

/// Warnings on stderr for what a text or table reader would otherwise not see: skipped
/// regions, instances and events, and each kind of evidence that could not be read.
pub(super) fn warn_about(err: &Stderr, report: &Report) {
    for s in &report.skipped {
        match (&s.region, &s.instance_id) {
            (Some(r), _) if s.account.is_some() => err.warning(&format!(
                "account {} region {r} could not be searched: {}",
                s.account.as_deref().unwrap_or_default(),
                s.reason
            )),
            (None, None) if s.account.is_some() => err.warning(&format!(
                "account {} could not be searched: {}",
                s.account.as_deref().unwrap_or_default(),
                s.reason
            )),
            (Some(r), _) => err.warning(&format!("region {r} could not be searched: {}", s.reason)),
            (None, Some(i)) if is_not_found(s) => err.warning(&format!("{i}: {}", s.reason)),
            (None, Some(i)) => err.skipped(&format!("{i}: {}", s.reason)),
            (None, None) => err.skipped(&s.reason),
        }
    }
    // Each (call, reason) once, with how many findings it touched.
    let mut seen: Vec<(String, String, usize)> = Vec::new();
    for f in &report.findings {
        let mut mine: Vec<(&str, &str)> = Vec::new();
        for m in &f.missing_evidence {
            if !mine.contains(&(m.call.as_str(), m.reason.as_str())) {
                mine.push((m.call.as_str(), m.reason.as_str()));
            }
        }
        for (call, reason) in mine {
            match seen.iter_mut().find(|(c, r, _)| c == call && r == reason) {
                Some(e) => e.2 += 1,
                None => seen.push((call.to_owned(), reason.to_owned(), 1)),
            }
        }
    }
    const MAX: usize = 10;
    for (call, reason, n) in seen.iter().take(MAX) {
        let what = match call.as_str() {
            "cloudtrail:LookupEvents" => " (so the caller is unknown)",
            "iam:SimulatePrincipalPolicy" => " (so the caller's IAM permissions are unknown)",
            _ => "",
        };
        err.warning(&format!(
            "could not read {call}{what} for {n} failed launch{}: {}",
            if *n == 1 { "" } else { "es" },
            crate::core::text::clean(reason)
        ));
    }
    if seen.len() > MAX {
        err.warning(&format!("{} more kinds of evidence could not be read (see --output json)", seen.len() - MAX));
    }
    for f in &report.findings {
        for r in f.remediations.iter().filter(|r| r.status == RemediationStatus::Failed) {
            err.warning(&format!("{}: remediation {} {}", f.instance_id, r.action.as_str(), render::status(r)));
        }
    }
}

/// Prints a diagnosis (`diagnose`, `replay`) and decides its exit code: failed when a sink
/// failed or no requested instance was found, partial when the report shows something missing.
pub(super) fn finish(
    err: &Stderr,
    report: &Report,
    failures: &[CallError],
    format: Format,
    color: ColorChoice,
) -> Exit {
    let printed = match format {
        Format::Json => json(err, report),
        Format::Text => emit(err, &render::text(report)),
        Format::Table => {
            let style = crate::cli::table::TableStyle {
                width: crate::cli::term::width(),
                wide: false,
                colour: color.stdout(),
                now: Utc::now(),
                accounts: false,
            };
            emit(err, &crate::cli::table::table(report, &style))
        }
    };
    let not_found: Vec<&Skipped> = report.skipped.iter().filter(|s| is_not_found(s)).collect();
    // Every instance asked about (by id or by event) is missing: nothing could be done.
    let none_found = report.findings.is_empty()
        && !not_found.is_empty()
        && report.skipped.iter().filter(|s| s.instance_id.is_some()).all(is_not_found);
    if none_found {
        for s in &not_found {
            err.error(&format!("{}: {}", s.instance_id.as_deref().unwrap_or("-"), s.reason));
        }
    } else if format != Format::Json {
        warn_about(err, report);
    }
    for e in failures {
        err.error(&e.to_string());
    }
    let outcome = if !failures.is_empty() || none_found { Exit::Failed } else { report_outcome(report) };
    outcome.max(printed)
}
