//! `trellis run`: load, start health checks, bind, serve, and on SIGTERM/SIGINT stop gracefully.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use trellis_health::HealthChecker;
use trellis_proxy::{Proxy, Server};
use trellis_targets::TargetRegistry;

use crate::admin::{self, Admin};

pub fn run(path: &Path, workers: Option<usize>, grace: Duration) -> anyhow::Result<()> {
    let config = Arc::new(trellis_config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?);
    let runtime = crate::runtime(workers)?;
    runtime.block_on(async {
        let prometheus = prometheus::Registry::new();
        let targets = Arc::new(TargetRegistry::default());
        // Health first: every target gets its state (initial, unavailable or unused) before traffic.
        let health = HealthChecker::new(targets.clone(), &prometheus)?;
        health.apply(&config);
        let proxy = Proxy::new(&config, targets.clone(), &prometheus)?;
        let admin = Arc::new(Admin {
            config: config.clone(),
            targets,
            prometheus,
        });
        let admin_addr = admin::start(admin).await?;
        tracing::info!(addr = %admin_addr, "admin API listening");
        let server = Server::start(proxy.clone()).context("starting listeners")?;
        for addr in server.local_addrs() {
            tracing::info!(%addr, "listening");
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Reload arrives with the admin API; until then SIGHUP must not kill the daemon.
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => tracing::warn!("SIGHUP: configuration reload is not supported yet; ignoring"),
            }
        }
        tracing::info!(grace = %humantime::format_duration(grace), "shutting down: no new connections, finishing in-flight requests");
        if server.shutdown(grace).await {
            tracing::info!("all connections finished");
        } else {
            tracing::warn!("grace period over with connections still open; closing them");
        }
        drop(health);
        anyhow::Ok(())
    })?;
    // Upstream connections and tunnels still open are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
