//! The parking lot: where parked connections wait for their next bytes, with nothing but their socket.
//!
//! A connection that parks (see `park`) ends its task: the task's state, the connection's context and
//! its watchdog are freed, and its socket is left here. One task per listening address watches every
//! socket in its lot: each waits with a waker of its own (so a wake-up says which socket is ready, and
//! nothing scans the lot), and a single timer, set to the earliest idle deadline, closes the ones idle
//! for `idle_timeout`. When a socket has bytes, a new connection task takes it up with the listener's
//! current context. What a parked connection costs is its socket (tokio's registration), its slot here
//! and its waker: about what nginx keeps for an idle keep-alive connection.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Wake, Waker};

use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::conn::{self, ListenerContext};

/// The parked sockets of one listening address.
pub struct Lot {
    slots: Mutex<Slots>,
    /// Keys whose socket's waker fired since the lot's task last looked.
    ready: Mutex<Vec<usize>>,
    wake: Notify,
    active: prometheus::IntGauge,
    parked: prometheus::IntGauge,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Parked>>,
    free: Vec<usize>,
    /// (idle deadline, key) of every parked socket: the first is the next to close.
    deadlines: BTreeSet<(Instant, usize)>,
    /// The lot's task has ended (the listener stopped): a connection that parks now is closed.
    closed: bool,
}

struct Parked {
    socket: TcpStream,
    peer: SocketAddr,
    idle_until: Instant,
    waker: Waker,
}

/// Wakes the lot's task naming the socket that is ready.
struct SlotWaker {
    lot: Arc<Lot>,
    key: usize,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.lot.ready).push(self.key);
        self.lot.wake.notify_one();
    }
}

impl Lot {
    pub fn new(active: prometheus::IntGauge, parked: prometheus::IntGauge) -> Arc<Lot> {
        Arc::new(Lot {
            slots: Mutex::new(Slots::default()),
            ready: Mutex::new(Vec::new()),
            wake: Notify::new(),
            active,
            parked,
        })
    }

    /// Leaves an idle connection's socket here until bytes arrive (then a new connection task takes it
    /// up) or `idle_until` passes (then it is closed).
    pub fn park(self: &Arc<Self>, socket: TcpStream, peer: SocketAddr, idle_until: Instant) {
        let mut slots = lock(&self.slots);
        if slots.closed {
            return; // Dropping the socket closes it, as a stopping listener closes idle connections.
        }
        let key = slots.free.pop().unwrap_or_else(|| {
            slots.entries.push(None);
            slots.entries.len() - 1
        });
        let waker = Waker::from(Arc::new(SlotWaker {
            lot: self.clone(),
            key,
        }));
        // Registers the socket's waker; bytes that are already there wake it at once.
        let mut cx = Context::from_waker(&waker);
        if socket.poll_read_ready(&mut cx).is_ready() {
            waker.wake_by_ref();
        }
        let earliest = slots.deadlines.first().map(|(at, _)| *at);
        slots.deadlines.insert((idle_until, key));
        slots.entries[key] = Some(Parked {
            socket,
            peer,
            idle_until,
            waker,
        });
        self.active.inc();
        self.parked.inc();
        drop(slots);
        // The lot's timer may have to move forward for this one.
        if earliest.is_none_or(|at| idle_until < at) {
            self.wake.notify_one();
        }
    }

    fn take(&self, slots: &mut Slots, key: usize) -> Option<Parked> {
        let parked = slots.entries.get_mut(key)?.take()?;
        slots.deadlines.remove(&(parked.idle_until, key));
        slots.free.push(key);
        self.active.dec();
        self.parked.dec();
        Some(parked)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lot's task: resumes the sockets that have bytes, closes those idle too long, and closes them all
/// when the listener stops.
pub async fn run(
    lot: Arc<Lot>,
    context: watch::Receiver<Arc<ListenerContext>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = Vec::new();
    loop {
        let next_deadline = lock(&lot.slots).deadlines.first().map(|(at, _)| *at);
        let expiry = async {
            match next_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = lot.wake.notified() => {}
            _ = expiry => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        std::mem::swap(&mut ready, &mut *lock(&lot.ready));
        let mut resumed = Vec::new();
        {
            let mut slots = lock(&lot.slots);
            for key in ready.drain(..) {
                let Some(Some(parked)) = slots.entries.get(key) else {
                    continue; // Already taken up (a late or repeated wake-up).
                };
                let mut cx = Context::from_waker(&parked.waker);
                // Pending: a wake-up with nothing to read after all; the waker is registered again.
                if parked.socket.poll_read_ready(&mut cx).is_ready() {
                    resumed.extend(lot.take(&mut slots, key));
                }
            }
            let now = Instant::now();
            while let Some(&(at, key)) = slots.deadlines.first() {
                if at > now {
                    break;
                }
                // Idle for idle_timeout: closed, as hyper closes an idle connection.
                drop(lot.take(&mut slots, key));
            }
        }
        if !resumed.is_empty() {
            let listener = context.borrow().clone();
            for parked in resumed {
                listener.tasks.spawn(conn::resume(
                    parked.socket,
                    parked.peer,
                    listener.clone(),
                    stop.clone(),
                ));
            }
        }
    }
    let mut slots = lock(&lot.slots);
    slots.closed = true;
    for key in 0..slots.entries.len() {
        drop(lot.take(&mut slots, key));
    }
}
