//! A target group as one snapshot sees it.

use std::sync::Arc;
use std::time::Duration;

use trellis_config::{ProtocolVersion, TargetGroup};
use trellis_targets::{Balancer, Target, TargetRegistry};

use super::{PoolRegistry, TargetPool};

pub struct Group {
    pub name: Arc<str>,
    pub balancer: Balancer,
    /// Parallel to `balancer.targets()`.
    pub pools: Box<[Arc<TargetPool>]>,
    pub http2: bool,
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Group {
    pub fn build(tg: &TargetGroup, targets: &TargetRegistry, pools: &PoolRegistry) -> Self {
        let http2 = matches!(
            tg.protocol_version,
            ProtocolVersion::Http2 | ProtocolVersion::Grpc
        );
        let members: Vec<Target> = tg
            .targets
            .iter()
            .map(|t| Target {
                address: t.address,
                weight: t.weight,
                stats: targets.stats(&tg.name, t.address),
            })
            .collect();
        let pools = members
            .iter()
            .map(|t| pools.pool(&tg.name, t.address, http2))
            .collect();
        Group {
            name: tg.name.as_str().into(),
            balancer: Balancer::new(members, tg.algorithm),
            pools,
            http2,
            response_timeout: tg.response_timeout,
            connect_timeout: tg.connect_timeout,
        }
    }
}
