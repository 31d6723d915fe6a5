//! The access log: one JSON line per request, in Lattice's field names.
//!
//! The request path only fills an [`Entry`] from values it already holds (reference-counted names and
//! header values, no formatting) and hands it to a bounded channel with `try_send`. A dedicated thread
//! formats and writes. When that thread falls behind, entries are dropped and counted: a request never
//! waits for the log.

mod entry;
mod pending;
mod writer;

pub use entry::Entry;
pub use pending::{Pending, Trace};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use prometheus::{IntCounter, Registry};
use tokio::sync::mpsc;
use trellis_config::LogDestination;

/// Entries waiting for the writer. At a few hundred bytes each this bounds the log's memory to a few MB,
/// and gives the writer well over a second of slack at the rates one daemon serves.
const QUEUE: usize = 16 * 1024;

/// Entries kept for reuse: more than are in flight between the request path and the writer at once
/// in steady state.
const SPARE: usize = 4096;

/// Counters of the access log, shared by every writer the daemon starts.
#[derive(Clone)]
pub struct LogMetrics {
    pub lines: IntCounter,
    pub dropped: IntCounter,
    pub write_errors: IntCounter,
}

impl LogMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let lines = IntCounter::new("trellis_access_log_lines_total", "Access log lines written")?;
        let dropped = IntCounter::new(
            "trellis_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind",
        )?;
        let write_errors = IntCounter::new(
            "trellis_access_log_write_errors_total",
            "Access log lines lost because their write failed",
        )?;
        registry.register(Box::new(lines.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(write_errors.clone()))?;
        Ok(LogMetrics {
            lines,
            dropped,
            write_errors,
        })
    }
}

/// One destination's writer: the sending side of its queue. The writer thread ends (flushing what it
/// has) once every handle is dropped, that is once no snapshot and no request refers to it any more.
pub struct AccessLog {
    destination: LogDestination,
    queue: mpsc::Sender<Message>,
    /// Entries the writer is done with, for reuse.
    spare: Arc<ArrayQueue<Box<Entry>>>,
    reopen: Arc<AtomicBool>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer of `destination`; `None` for `off`.
    pub fn start(
        destination: &LogDestination,
        metrics: &LogMetrics,
    ) -> std::io::Result<Option<Arc<AccessLog>>> {
        if *destination == LogDestination::Off {
            return Ok(None);
        }
        let (queue, entries) = mpsc::channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let spare = Arc::new(ArrayQueue::new(SPARE));
        let writer = writer::Writer {
            entries,
            spare: spare.clone(),
            reopen: reopen.clone(),
            metrics: metrics.clone(),
        };
        writer.spawn(destination.clone())?;
        Ok(Some(Arc::new(AccessLog {
            destination: destination.clone(),
            queue,
            spare,
            reopen,
            dropped: metrics.dropped.clone(),
        })))
    }

    pub fn destination(&self) -> &LogDestination {
        &self.destination
    }

    /// An entry to fill: a spare one, or a new one while there are none.
    pub(crate) fn entry(&self) -> Box<Entry> {
        self.spare.pop().unwrap_or_default()
    }

    /// Queues a finished entry, or drops and counts it if the writer is behind.
    pub fn send(&self, entry: Box<Entry>) {
        if self.queue.try_send(Message::Entry(entry)).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits until every entry queued so far is written (at shutdown), for at most `timeout`.
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        let (done, written) = tokio::sync::oneshot::channel();
        let flushed =
            async { self.queue.send(Message::Flush(done)).await.is_ok() && written.await.is_ok() };
        tokio::time::timeout(timeout, flushed)
            .await
            .unwrap_or(false)
    }

    /// Asks the writer to close and reopen its file (after logrotate moved it). Lines queued before
    /// the request go to the old file, later ones to the new file; none is lost.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // Wake a writer that is waiting for entries; if the queue is full it is busy and sees the flag
        // after its current batch.
        let _ = self.queue.try_send(Message::Wake);
    }
}

/// What the writer thread receives.
enum Message {
    Entry(Box<Entry>),
    /// Nothing to write: look at the reopen flag.
    Wake,
    /// Write everything queued before this, then say so.
    Flush(tokio::sync::oneshot::Sender<()>),
}
