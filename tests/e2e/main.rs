//! End-to-end tests: the real `trellis` binary, real sockets on 127.0.0.1, real backends and clients.
//!
//! Run with `cargo test -p trellis --test e2e`.

mod support;

mod access_log;
mod admin_api;
mod auth;
mod balancing;
mod check;
mod cli;
mod client_faults;
mod concurrency;
mod ctl;
mod deploy;
mod failures;
mod fleet;
mod fleet_scaling;
mod forwarding;
mod health;
mod https;
mod instance_refresh;
mod limits;
mod metrics;
mod page;
mod parking;
mod passthrough;
mod rate_limit;
mod reload;
mod request_head;
mod retry_policy;
mod routing;
mod scaling;
mod shutdown;
mod stickiness;
mod systemd;
mod transforms;
mod upstream_tls;
mod warm_pool;
