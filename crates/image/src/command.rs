//! Running external tools (apt, busybox) with errors that name the command,
//! its stderr and what the user can do about it.

use std::process::{Command, Stdio};

use crate::ImageError;

/// Renders a command line for messages, e.g. `apt-cache policy foo`.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion and returns its stdout; `hint` tells the user
/// how to fix things if the command is missing or fails.
pub(crate) fn output(cmd: &mut Command, hint: &str) -> Result<String, ImageError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ImageError::CommandSpawn {
            command: command.clone(),
            hint: hint.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(ImageError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            hint: hint.to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
