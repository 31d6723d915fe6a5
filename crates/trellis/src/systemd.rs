//! systemd's notify protocol, for `Type=notify` units (`deploy/systemd/trellis.service`).
//!
//! systemd passes a datagram socket in `NOTIFY_SOCKET`; trellis tells it `READY=1` once every listener is
//! bound (so units ordered `After=trellis.service` start against open ports), `RELOADING=1` and then
//! `READY=1` around each reload (so `systemctl reload` and `systemctl status` show it), `STOPPING=1` when
//! it begins to shut down, and `WATCHDOG=1` at half the `WatchdogSec` interval when the unit sets one.
//! Without `NOTIFY_SOCKET` (not started by systemd) every call here does nothing. The commands trellis
//! starts (scaling-group instances, hooks) do not inherit the variables (see trellis-scaler).
//!
//! The messages go out from the tokio runtime, so a watchdog ping is also a sign that the runtime still
//! schedules tasks: a wedged daemon stops pinging and systemd restarts it.
//!
//! Written here rather than with the `sd-notify` crate: that crate cannot reach a socket in Linux's
//! abstract namespace (`NOTIFY_SOCKET=@name`), which sd_notify(3) allows and service managers use; the
//! protocol itself is one datagram of `KEY=value` lines.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use crate::daemon::Daemon;

/// Listeners are bound and the admin API answers: systemd may consider the unit started.
pub fn ready(daemon: &Daemon) {
    send(&format!("READY=1\nSTATUS={}\n", one_line(&serving(daemon))));
}

/// A reload begins. `MONOTONIC_USEC` lets systemd (253+, `Type=notify-reload`) match this message to
/// the reload it asked for; older versions ignore it.
pub fn reloading() {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\n",
        monotonic_usec()
    ));
}

/// The reload is over, good or bad: trellis serves (the new or the previous configuration) again.
pub fn reloaded(daemon: &Daemon, ok: bool) {
    let mut status = serving(daemon);
    if !ok {
        status.push_str("; the last reload failed (see the log)");
    }
    send(&format!("READY=1\nSTATUS={}\n", one_line(&status)));
}

/// What `systemctl status` shows next to "active (running)".
fn serving(daemon: &Daemon) -> String {
    let running = daemon.current();
    format!(
        "serving {} (config sha256 {})",
        running
            .file
            .summary()
            .split_once(": ok: ")
            .map_or("", |(_, what)| what),
        running.sha256.get(..12).unwrap_or(&running.sha256)
    )
}

/// Shutdown begins: no new connections, in-flight requests finish.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping\n");
}

/// When the unit sets `WatchdogSec`, pings systemd at half that interval from a runtime task for as long
/// as the runtime runs.
pub fn spawn_watchdog() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(1));
    tracing::info!(
        interval = %humantime::format_duration(interval),
        "systemd watchdog enabled: pinging every {}",
        humantime::format_duration(every)
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        // A late ping must not be followed by a burst of catch-up pings; the next one simply comes later.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send("WATCHDOG=1\n");
        }
    });
}

fn send(message: &str) {
    let Some(address) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    // An unusable socket is systemd's problem to report (the unit times out); saying why helps.
    if let Err(e) = send_to(&address, message) {
        tracing::warn!(
            "systemd notification to {} failed: {e}",
            address.to_string_lossy()
        );
    }
}

/// One datagram to `address`: a file system path, or `@name` in the abstract namespace.
fn send_to(address: &OsStr, message: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match address.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            socket.connect_addr(&SocketAddr::from_abstract_name(name)?)?
        }
        None => socket.connect(address)?,
    }
    socket.send(message.as_bytes()).map(|_| ())
}

/// `WATCHDOG_USEC`, when systemd set it for this very process (`WATCHDOG_PID`, if present, is ours).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|pid| pid.parse() == Ok(std::process::id()));
    (for_us && usec > 0).then(|| Duration::from_micros(usec))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
#[allow(unsafe_code)]
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// A value is one line of the message: a newline would start a new (wrong) key.
fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}
