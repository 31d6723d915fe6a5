//! `trellis run`: load, start health checks, bind, serve; reload on SIGHUP; on SIGTERM/SIGINT stop
//! gracefully.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::admin;
use crate::daemon::{ChangeError, Daemon};
use crate::state::StateDir;
use crate::store::{read_config, EtcdStore, FileStore, FleetState, Store};
use crate::systemd;

pub fn run(
    path: &Path,
    workers: Option<usize>,
    grace: Duration,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let state_dir = StateDir::choose(state_dir);
    let state_path = state_dir.path().to_path_buf();
    let runtime = crate::runtime(workers)?;
    let invalid = |e: ChangeError| match e {
        ChangeError::Invalid(errors) => anyhow::anyhow!("{}", errors.join("\n")),
        other => anyhow::anyhow!("{other}"),
    };
    // Read and validated once: a node file of fleet mode, or the whole truth of a single file.
    let (node, sha256) = read_config(path).map_err(invalid)?;
    // A node file (with `[fleet]`) takes the shared truth from etcd; any other file is the whole truth.
    let (store, truth, fleet): (Box<dyn Store>, _, _) = match node.fleet.clone() {
        None => {
            let store = FileStore::open(path, state_dir);
            let truth = store.truth(node, sha256);
            (Box::new(store), truth, None)
        }
        Some(settings) => {
            let fleet = runtime
                .block_on(trellis_fleet::Store::connect(
                    &settings.endpoints,
                    &settings.prefix,
                    settings.tls.as_ref(),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let state = Arc::new(FleetState::new(&settings.node, &settings.prefix)?);
            let store = EtcdStore::new(
                fleet.clone(),
                node,
                state_dir,
                runtime.handle().clone(),
                state.clone(),
            );
            // On a blocking thread while this one drives the runtime: the store waits on etcd with
            // `Handle::block_on`, which cannot drive I/O itself on a one-worker runtime.
            let (store, truth) = runtime.block_on(async move {
                tokio::task::spawn_blocking(move || {
                    let truth = store.load_at_start();
                    (store, truth)
                })
                .await
            })?;
            let truth = truth.map_err(invalid)?;
            let revision = store.revision();
            let host = settings
                .bind
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
            let following = (fleet, state, revision, settings.lease_ttl, host);
            (Box::new(store), truth, Some(following))
        }
    };
    runtime.block_on(async {
        // Before anything listens: a SIGHUP sent as soon as the ports accept (a deploy script's reload)
        // must reload, not hit the default action, which is to terminate.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        tracing::info!(state_dir = %state_path.display(), "{}", truth.file.summary());
        let daemon = Daemon::start(store, truth)?;
        if let Some((fleet, state, revision, ttl, host)) = fleet {
            let lease = trellis_fleet::Lease::default();
            let _ = daemon.fleet.set(crate::scaling::FleetScaling {
                store: fleet.clone(),
                node: state.node().to_string(),
                host,
                lease: lease.clone(),
                ttl,
                state: state.clone(),
            });
            tokio::spawn(heartbeat(fleet.clone(), state.clone(), ttl, lease, host));
            tokio::spawn(follow(daemon.clone(), fleet, state, revision));
        }
        let scaling = crate::scaling::start(&daemon, &daemon.scaling_metrics);
        *daemon.scaling.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = scaling;
        // A request to a group that scaled to zero wakes its scaling group.
        let weak = std::sync::Arc::downgrade(&daemon);
        daemon.proxy.set_waker(Box::new(move |target_group: &str| {
            let Some(daemon) = weak.upgrade() else { return };
            let groups = daemon
                .scaling
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for group in groups.iter().filter(|g| g.target_group() == target_group) {
                group.wake();
            }
        }));
        let admin_addr = admin::start(daemon.clone()).await?;
        tracing::info!(addr = %admin_addr, "admin API listening");
        for addr in daemon.server.local_addrs() {
            tracing::info!(%addr, "listening");
        }
        systemd::spawn_watchdog();
        systemd::ready(&daemon);
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                // The outcome is logged by the reload itself; a bad file changes nothing.
                _ = hup.recv() => { let _ = daemon.reload().await; }
                // logrotate moved the access log file: write to a new one at the configured path.
                _ = usr1.recv() => daemon.proxy.reopen_access_log(),
            }
        }
        systemd::stopping();
        tracing::info!(grace = %humantime::format_duration(grace), "shutting down: no new connections, finishing in-flight requests");
        if daemon.server.shutdown(grace).await {
            tracing::info!("all connections finished");
        } else {
            tracing::warn!("grace period over with connections still open; closing them");
        }
        if !daemon.proxy.flush_access_log(Duration::from_secs(5)).await {
            tracing::warn!("access log not fully written before exit");
        }
        anyhow::Ok(())
    })?;
    // Upstream connections and tunnels still open are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// Fleet mode: every change under the fleet's prefix after `revision` is served, by the one path a reload
/// takes (the whole truth read again at one revision, validated, swapped). While etcd cannot be reached
/// the node keeps serving what it has and tries again; what changed meanwhile is read whole when it is
/// back, so no change is lost (a compacted history included).
async fn follow(
    daemon: Arc<Daemon>,
    fleet: trellis_fleet::Store,
    state: Arc<FleetState>,
    mut revision: i64,
) {
    // Revision 0: nothing read from etcd yet (the disk copy is served): read it all first.
    let mut behind = revision == 0;
    loop {
        if behind {
            // Logged and counted by the reload. A revision that cannot be served (invalid, or a port
            // that cannot be bound) keeps the last good one and waits for the next; an unreachable
            // store is tried again.
            match daemon.reload().await {
                Err(ChangeError::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                _ => {
                    let read = state.last_read();
                    if read < revision {
                        tracing::warn!(from = revision, to = read, "fleet: etcd's revision went back (a restored or new cluster): following the new one");
                    }
                    if read != 0 {
                        revision = read;
                    }
                }
            }
        }
        // Whatever the watch says next (a change, a compacted history, a broken stream), the truth is
        // read whole again.
        behind = true;
        match fleet.changed_after(revision).await {
            Ok(next) => revision = next,
            Err(e) => {
                state.unavailable(&e.to_string());
                state.watch_restarted();
                tracing::warn!(error = %e, "fleet: watching the store failed; still serving the last configuration, trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How soon a failed heartbeat is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Fleet mode: this node's key under its lease, renewed at a third of the lease's time to live, saying
/// which revision it serves. Missing a beat or two (etcd away) is fine; the lease outlives them.
async fn heartbeat(
    fleet: trellis_fleet::Store,
    state: Arc<FleetState>,
    ttl: Duration,
    lease: trellis_fleet::Lease,
    host: std::net::IpAddr,
) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (revision, stale) = state.served();
        let info = trellis_fleet::NodeInfo {
            node: state.node().to_string(),
            revision,
            contact: trellis_fleet::now(),
            stale,
            host: Some(host.to_string()),
        };
        let beat = fleet.heartbeat(&lease, ttl, &info).await;
        if beat.is_ok() {
            // Who else is in the fleet, for status and the status page.
            if let Ok(nodes) = fleet.nodes().await {
                state.set_nodes(nodes);
            }
        }
        if let Err(e) = beat {
            tracing::debug!(error = %e, "fleet: heartbeat failed");
            // Tried again soon rather than a third of the TTL later: after an outage, the groups'
            // owners wait for the nodes to be back before they take an absent one for dead.
            tick.reset_after(RETRY.min(ttl / 3));
        }
    }
}
