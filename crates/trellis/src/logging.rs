//! The daemon's own log: `tracing` to stderr, as text for people or JSON for collectors.

use std::io::IsTerminal;

use crate::LogFormat;

pub fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colors only for a person at a terminal: in the journal or a file they are escape-code noise.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        // The journal stamps every line itself; a second timestamp only makes `journalctl` lines longer.
        LogFormat::Text if stderr_is_journal() => builder.without_time().init(),
        LogFormat::Text => builder.init(),
        // Without the module path: events use `target` for the backend they are about.
        LogFormat::Json => builder.json().flatten_event(true).with_target(false).init(),
    }
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose output goes to the journal; it is ours
/// only if stderr is that very stream (a child of the service, redirected elsewhere, inherits it).
#[allow(unsafe_code)]
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer we own and reads nothing else of ours.
    if unsafe { libc::fstat(libc::STDERR_FILENO, stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    dev.parse() == Ok(stat.st_dev) && ino.parse() == Ok(stat.st_ino)
}
