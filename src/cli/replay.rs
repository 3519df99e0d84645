//! `replay`: the Lambda handler's code path on events from a file or stdin.

use std::io::Read;

use crate::app::handle_events;
use crate::cli::args::{Global, ReplayArgs};
use crate::cli::output::{finish, CliError, Exit, Stderr};
use crate::cli::setup::{cloud, plan, report_calls, settings};

pub(super) async fn run(err: &Stderr, global: &Global, args: ReplayArgs) -> Result<Exit, CliError> {
    let ReplayArgs { event, region, format, actions } = args;
    let (name, bytes) = read_input(&event).map_err(CliError::Usage)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| CliError::Usage(json_error(&name, &e)))?;
    let plan = plan(&actions, settings()?.options())?;
    let cloud = cloud(global, region.as_deref()).await?;
    let default_region = region.or_else(|| cloud.default_region());
    let outcome = handle_events(&cloud, crate::core::event::unpack(&value), default_region.as_deref(), &plan).await;
    report_calls(&cloud);
    let (report, failures) = outcome?;
    Ok(finish(err, &report, &failures, format, global.color))
}

/// The bytes of `path`, or of stdin for `-`, with the name to use in messages.
pub(super) fn read_input(path: &std::path::Path) -> Result<(String, Vec<u8>), String> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes).map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(("<stdin>".to_owned(), bytes));
    }
    let name = path.display().to_string();
    std::fs::read(path).map(|b| (name.clone(), b)).map_err(|e| format!("cannot read {name}: {e}"))
}

/// `file:line:column: not valid JSON: what`, as compilers say it.
fn json_error(name: &str, e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text.split(" at line ").next().unwrap_or(&text);
    format!("{name}:{}:{}: not valid JSON: {what}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_file_and_position() {
        let e = serde_json::from_slice::<serde_json::Value>(b"{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        assert_eq!(json_error("events/x.json", &e), "events/x.json:3:3: not valid JSON: key must be a string");
    }
}
