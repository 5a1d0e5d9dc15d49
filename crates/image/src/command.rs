//! Running external tools (apt, busybox) with errors that name the command,
//! its stderr and what the user can do about it.

use std::path::{Path, PathBuf};
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
    output_and_stderr(cmd, hint).map(|(stdout, _)| stdout)
}

/// Like [`output`], also returning stderr, for tools such as debugfs that
/// exit successfully but report failed commands there.
pub(crate) fn output_and_stderr(
    cmd: &mut Command,
    hint: &str,
) -> Result<(String, String), ImageError> {
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
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Finds an admin tool such as `mke2fs`: e2fsprogs installs into /usr/sbin
/// (or /sbin), which is often not on a regular user's PATH. Falls back to
/// the bare name, so a missing tool fails at spawn time with the caller's hint.
pub(crate) fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| Path::new(name).to_path_buf())
}
