//! `tls_passthrough` listeners: the ClientHello's server name picks the service without terminating TLS,
//! and the raw byte stream goes to a target of the service's `tcp` target group. The client and the
//! target do TLS between themselves; trellis only balances, checks health and drains.

pub(crate) mod client_hello;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trellis_targets::Tried;

use crate::retry::MAX_RETRIES;
use crate::server::ListenerContext;
use crate::snapshot::Action;
use client_hello::{parse, Hello, MAX_HELLO};

/// Why a connection was closed before reaching a target (the `reason` label).
#[derive(Clone, Copy)]
enum Rejected {
    NotTls,
    Timeout,
    NoSni,
    UnknownSni,
    NoTarget,
}

impl Rejected {
    fn as_str(self) -> &'static str {
        match self {
            Rejected::NotTls => "not_tls",
            Rejected::Timeout => "timeout",
            Rejected::NoSni => "no_sni",
            Rejected::UnknownSni => "unknown_sni",
            Rejected::NoTarget => "no_target",
        }
    }
}

pub async fn serve(mut stream: TcpStream, peer: SocketAddr, listener: &ListenerContext) {
    let reject = |why: Rejected, detail: &dyn std::fmt::Display| {
        listener
            .proxy
            .passthrough_rejected(listener.listen, why.as_str());
        tracing::debug!(listen = %listener.listen, %peer, reason = why.as_str(), %detail, "tls_passthrough connection closed");
    };
    let deadline = tokio::time::Instant::now() + listener.limits.header_timeout;
    let mut hello = Vec::with_capacity(2048);
    let name = loop {
        match parse(&hello) {
            Hello::Complete(name) => break name,
            Hello::NotTls(why) => return reject(Rejected::NotTls, &why),
            Hello::Incomplete if hello.len() > MAX_HELLO + 1024 => {
                return reject(Rejected::NotTls, &"ClientHello too large")
            }
            Hello::Incomplete => {}
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut hello)).await {
            Err(_) => return reject(Rejected::Timeout, &"no ClientHello in time"),
            // Closed before a byte: a port check, not a rejection.
            Ok(Ok(0)) if hello.is_empty() => return,
            Ok(Ok(0)) | Ok(Err(_)) => return reject(Rejected::NotTls, &"closed mid-ClientHello"),
            Ok(Ok(_)) => {}
        }
    };
    let Some(name) = name else {
        return reject(Rejected::NoSni, &"the ClientHello names no server");
    };
    let group = {
        let snapshot = listener.proxy.snapshot();
        let service = snapshot
            .port(listener.listen)
            .and_then(|port| port.service(Some(name.as_bytes())));
        let Some(service) = service else {
            return reject(Rejected::UnknownSni, &name);
        };
        match service.default_action() {
            Action::Forward(forward) => forward
                .pick()
                .and_then(|to| snapshot.group(to.slot).cloned()),
            // Configuration allows only forwarding here.
            Action::Fixed(_) | Action::Redirect(_) => None,
        }
    };
    let Some(group) = group else {
        return reject(Rejected::NoTarget, &name);
    };
    let mut tried = Tried::default();
    loop {
        let Some(pick) = group.balancer.pick(&tried) else {
            return reject(Rejected::NoTarget, &name);
        };
        crate::forward::note_fail_open(&group, pick.failed_open);
        tried.insert(pick.index);
        let target = &group.balancer.targets()[pick.index];
        let connected =
            tokio::time::timeout(group.connect_timeout, TcpStream::connect(target.address)).await;
        match connected {
            Ok(Ok(mut upstream)) => {
                target.stats.record_success();
                let _in_flight = target.begin();
                let _ = upstream.set_nodelay(true);
                if upstream.write_all(&hello).await.is_err() {
                    return;
                }
                // A draining target's connections end at its deregistration deadline.
                let closed = group.pools[pick.index].closed();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream) => {}
                    _ = closed.cancelled() => {}
                }
                return;
            }
            Ok(Err(_)) | Err(_) => {
                group.metrics.connection_errors.inc();
                crate::forward::record_failure(&group, pick.index);
                tracing::debug!(target_group = %group.name, target = %target.address, "tls_passthrough: connect failed");
                if tried.len() > MAX_RETRIES {
                    return reject(Rejected::NoTarget, &"every target refused");
                }
            }
        }
    }
}
