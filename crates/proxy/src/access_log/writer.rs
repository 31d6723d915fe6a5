//! The writer thread: takes entries off the queue in batches, formats them, and writes each batch with
//! one `write`. A thread, not a task: file writes block, and must never stall a runtime worker.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use trellis_config::LogDestination;

use super::{LogMetrics, Message};

/// A batch is written once it holds this much, even if more entries are waiting.
const BATCH_BYTES: usize = 256 * 1024;

/// Opens the destination now, so that a path that cannot be opened fails the start or the reload that
/// asked for it, then writes from a thread of its own until every sender is gone.
pub(super) fn spawn(
    destination: LogDestination,
    entries: mpsc::Receiver<Message>,
    reopen: Arc<AtomicBool>,
    metrics: LogMetrics,
) -> io::Result<()> {
    let output = Output::open(destination)?;
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || run(output, entries, &reopen, &metrics))?;
    Ok(())
}

enum Output {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Output {
    fn open(destination: LogDestination) -> io::Result<Output> {
        match destination {
            LogDestination::File(path) => {
                let file = open_append(&path)?;
                Ok(Output::File { path, file })
            }
            LogDestination::Stdout | LogDestination::Off => Ok(Output::Stdout),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Output::File { file, .. } => file.write_all(bytes),
        }
    }

    /// Closes the file and opens its path again: after logrotate renamed it, a new file.
    fn reopen(&mut self) {
        if let Output::File { path, file } = self {
            match open_append(path) {
                Ok(new) => {
                    *file = new;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot reopen the access log: still writing to the file it had open");
                }
            }
        }
    }
}

fn open_append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn run(
    mut output: Output,
    mut entries: mpsc::Receiver<Message>,
    reopen: &AtomicBool,
    metrics: &LogMetrics,
) {
    let mut batch = Batch {
        buf: Vec::with_capacity(BATCH_BYTES + 4096),
        lines: 0,
        failing: false,
    };
    while let Some(first) = entries.blocking_recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Entry(entry) => {
                    entry.write_line(&mut batch.buf);
                    batch.lines += 1;
                }
                // Everything queued before the reopen request goes to the old file.
                Message::Wake => {
                    batch.write(&mut output, metrics);
                    if reopen.swap(false, Ordering::AcqRel) {
                        output.reopen();
                    }
                }
            }
            if batch.buf.len() >= BATCH_BYTES {
                break;
            }
            next = entries.try_recv().ok();
        }
        batch.write(&mut output, metrics);
        // A reopen asked for while the queue was full has no Wake message behind it.
        if reopen.swap(false, Ordering::AcqRel) {
            output.reopen();
        }
    }
}

struct Batch {
    buf: Vec<u8>,
    lines: u64,
    /// Set while writes fail, so the failure is logged once, not once per batch.
    failing: bool,
}

impl Batch {
    fn write(&mut self, output: &mut Output, metrics: &LogMetrics) {
        if self.buf.is_empty() {
            return;
        }
        match output.write(&self.buf) {
            Ok(()) => {
                metrics.lines.inc_by(self.lines);
                if self.failing {
                    self.failing = false;
                    tracing::info!("access log writes succeed again");
                }
            }
            Err(error) => {
                metrics.write_errors.inc_by(self.lines);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(%error, "cannot write the access log: lines are lost until writes succeed again");
                }
            }
        }
        self.buf.clear();
        self.lines = 0;
    }
}
