//! The writer thread: takes entries off the queue in batches, formats them, and writes each batch with
//! one `write`. A thread, not a task: file writes block, and must never stall a runtime worker.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use trellis_config::LogDestination;

use crossbeam_queue::ArrayQueue;

use super::{Entry, LogMetrics, Message};

/// A batch is written once it holds this much, even if more entries are waiting.
const BATCH_BYTES: usize = 256 * 1024;

/// After each write the writer rests this long, so that under load it wakes 50 times a second and writes
/// whole batches, instead of being woken (a futex call on the request path) and writing for every
/// request. Envoy flushes its access logs every second; 20 ms keeps a line's delay unnoticeable, and at
/// [`super::QUEUE`] entries the queue still absorbs 800,000 requests a second.
const REST: std::time::Duration = std::time::Duration::from_millis(20);

/// The receiving side of one access log.
pub(super) struct Writer {
    pub entries: mpsc::Receiver<Message>,
    pub spare: Arc<ArrayQueue<Box<Entry>>>,
    pub reopen: Arc<AtomicBool>,
    pub metrics: LogMetrics,
}

impl Writer {
    /// Opens the destination now, so that a path that cannot be opened fails the start or the reload
    /// that asked for it, then writes from a thread of its own until every sender is gone.
    pub fn spawn(self, destination: LogDestination) -> io::Result<()> {
        let output = Output::open(destination)?;
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || self.run(output))?;
        Ok(())
    }
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

impl Writer {
    fn run(mut self, mut output: Output) {
        let mut batch = Batch {
            buf: Vec::with_capacity(BATCH_BYTES + 4096),
            lines: 0,
            failing: false,
        };
        // Waits (parked, woken by the next send) only when the queue is empty.
        while let Some(first) = self
            .entries
            .try_recv()
            .ok()
            .or_else(|| self.entries.blocking_recv())
        {
            let mut next = Some(first);
            let mut emptied = false;
            while let Some(message) = next {
                match message {
                    Message::Entry(mut entry) => {
                        entry.write_line(&mut batch.buf);
                        batch.lines += 1;
                        entry.recycle();
                        let _ = self.spare.push(entry);
                    }
                    // Everything queued before the reopen request goes to the old file.
                    Message::Wake => {
                        batch.write(&mut output, &self.metrics);
                        if self.reopen.swap(false, Ordering::AcqRel) {
                            output.reopen();
                        }
                    }
                    Message::Flush(done) => {
                        batch.write(&mut output, &self.metrics);
                        let _ = done.send(());
                    }
                }
                if batch.buf.len() >= BATCH_BYTES {
                    break;
                }
                next = self.entries.try_recv().ok();
                emptied = next.is_none();
            }
            batch.write(&mut output, &self.metrics);
            // A reopen asked for while the queue was full has no Wake message behind it.
            if self.reopen.swap(false, Ordering::AcqRel) {
                output.reopen();
            }
            // Behind: write the next batch at once. Caught up: rest until entries have piled up.
            if emptied {
                std::thread::sleep(REST);
            }
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
