//! `[[target_group]]`: targets, TLS to the targets, `health_check`, `outlier_detection`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::fields::{self, fmt_duration, Unique};
use super::secs;
use crate::diag::Diags;
use crate::model::*;
use crate::raw::{RawHealthCheck, RawOutlier, RawTargetGroup};

pub(crate) fn target_groups(
    d: &mut Diags,
    raws: &[Option<RawTargetGroup>],
    base: &Path,
) -> Vec<TargetGroup> {
    let mut names = Unique::new();
    let mut out = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let path = format!("target_group[{i}]");
        let tg = target_group(d, &path, raw, base);
        names.check(
            d,
            &format!("{path}.name"),
            tg.name.clone(),
            &path,
            |first| format!("{:?} is already used by {first}", tg.name),
        );
        out.push(tg);
    }
    out
}

fn target_group(d: &mut Diags, path: &str, raw: &RawTargetGroup, base: &Path) -> TargetGroup {
    let p = |key: &str| format!("{path}.{key}");
    let name = fields::name(d, &p("name"), &raw.name);
    let protocol = fields::choice(
        d,
        &p("protocol"),
        &raw.protocol,
        TargetProtocol::Http,
        &[
            ("http", TargetProtocol::Http),
            ("https", TargetProtocol::Https),
            ("tcp", TargetProtocol::Tcp),
        ],
    );
    let protocol_version = fields::choice(
        d,
        &p("protocol_version"),
        &raw.protocol_version,
        ProtocolVersion::Http1,
        &[
            ("http1", ProtocolVersion::Http1),
            ("http2", ProtocolVersion::Http2),
            ("grpc", ProtocolVersion::Grpc),
        ],
    );
    let algorithm = fields::choice(
        d,
        &p("algorithm"),
        &raw.algorithm,
        Algorithm::RoundRobin,
        &[
            ("round_robin", Algorithm::RoundRobin),
            ("least_outstanding", Algorithm::LeastOutstanding),
        ],
    );

    let mut targets = Vec::new();
    let mut seen = Unique::new();
    for (j, t) in raw.targets.iter().flatten().enumerate() {
        let tp = format!("{path}.targets[{j}]");
        let weight = fields::to_u16(fields::int_in(
            d,
            &format!("{tp}.weight"),
            t.weight,
            1,
            0,
            999,
        ));
        let Some(text) = &t.address else {
            fields::missing(d, &format!("{tp}.address"));
            continue;
        };
        let Ok(address) = text.trim().parse::<SocketAddr>() else {
            d.err(&tp, format!("{text:?} is not an ip:port address, such as \"127.0.0.1:9001\" or \"[::1]:9001\""));
            continue;
        };
        seen.check(d, &tp, address, format!("targets[{j}]"), |first| {
            format!("{address} is already listed as {first}")
        });
        targets.push(TargetSpec { address, weight });
    }

    let response_timeout =
        fields::positive_duration(d, &p("response_timeout"), &raw.response_timeout, secs(60));
    let retry = raw
        .retry
        .as_ref()
        .map(|r| super::traffic::retry(d, &p("retry"), r, response_timeout));
    let concurrency = raw
        .concurrency
        .as_ref()
        .map(|c| super::traffic::concurrency(d, &p("concurrency"), c));
    let stickiness = raw
        .stickiness
        .as_ref()
        .map(|s| super::traffic::stickiness(d, &p("stickiness"), s));
    let slow_start = fields::duration_in(
        d,
        &p("slow_start"),
        &raw.slow_start,
        Duration::ZERO,
        Duration::ZERO,
        secs(3600),
    );
    if protocol == TargetProtocol::Tcp {
        for (key, set) in [
            ("retry", retry.is_some()),
            ("concurrency", concurrency.is_some()),
            ("stickiness", stickiness.is_some()),
        ] {
            if set {
                d.err(
                    &p(key),
                    "a tcp target group relays connections, not requests: no retry, concurrency or stickiness",
                );
            }
        }
    }
    TargetGroup {
        name,
        protocol,
        protocol_version,
        algorithm,
        targets,
        deregistration_delay: fields::duration_in(
            d,
            &p("deregistration_delay"),
            &raw.deregistration_delay,
            secs(30),
            Duration::ZERO,
            secs(3600),
        ),
        response_timeout,
        connect_timeout: fields::positive_duration(
            d,
            &p("connect_timeout"),
            &raw.connect_timeout,
            secs(5),
        ),
        tls: target_tls(d, path, raw, protocol, base),
        health_check: health_check(d, &p("health_check"), raw.health_check.as_ref(), protocol),
        outlier_detection: outlier_detection(
            d,
            &p("outlier_detection"),
            raw.outlier_detection.as_ref(),
        ),
        retry,
        concurrency,
        stickiness,
        slow_start,
    }
}

/// `ca`, `sni` and `insecure_skip_verify`: only for `https` groups, which always get a [`TargetTls`]
/// (verification against the system's roots and the target's IP by default). Whether the `ca` file can
/// be read is checked where it is read, when the proxy builds the group's TLS client.
fn target_tls(
    d: &mut Diags,
    path: &str,
    raw: &RawTargetGroup,
    protocol: TargetProtocol,
    base: &Path,
) -> Option<TargetTls> {
    let p = |key: &str| format!("{path}.{key}");
    if protocol != TargetProtocol::Https {
        let name = match protocol {
            TargetProtocol::Tcp => "tcp",
            _ => "http",
        };
        let present = [
            ("ca", raw.ca.is_some()),
            ("sni", raw.sni.is_some()),
            ("insecure_skip_verify", raw.insecure_skip_verify.is_some()),
        ];
        for (key, _) in present.into_iter().filter(|(_, set)| *set) {
            d.err(
                &p(key),
                format!(
                    "{key} is only for protocol = \"https\" target groups, this one is {name:?}"
                ),
            );
        }
        return None;
    }
    let ca = raw
        .ca
        .as_deref()
        .map(|ca| fields::file_path(d, &p("ca"), ca, base));
    let sni = raw.sni.as_ref().map(|sni| {
        let name = sni.to_ascii_lowercase();
        if !fields::dns_name(&name) && name.parse::<IpAddr>().is_err() {
            d.err(
                &p("sni"),
                format!("{sni:?} is not a DNS name (or IP address), such as \"backend.internal\""),
            );
        }
        name
    });
    let skip = raw.insecure_skip_verify.unwrap_or(false);
    if skip && ca.is_some() {
        d.err(
            &p("insecure_skip_verify"),
            "cannot be true together with ca: either verify targets against ca, or do not verify",
        );
    }
    Some(TargetTls {
        ca,
        sni,
        verify: !skip,
    })
}

fn health_check(
    d: &mut Diags,
    path: &str,
    raw: Option<&RawHealthCheck>,
    tg: TargetProtocol,
) -> HealthCheck {
    let default_protocol = match tg {
        TargetProtocol::Http => HealthCheckProtocol::Http,
        // As Lattice: the check speaks the group's protocol unless told otherwise.
        TargetProtocol::Https => HealthCheckProtocol::Https,
        TargetProtocol::Tcp => HealthCheckProtocol::Tcp,
    };
    let Some(raw) = raw else {
        return HealthCheck {
            enabled: true,
            protocol: default_protocol,
            path: "/".to_string(),
            port: None,
            interval: secs(30),
            timeout: secs(5),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: StatusMatcher {
                ranges: vec![(200, 200)],
                text: "200".to_string(),
            },
        };
    };
    let p = |key: &str| format!("{path}.{key}");
    let protocol = fields::choice(
        d,
        &p("protocol"),
        &raw.protocol,
        default_protocol,
        &[
            ("http", HealthCheckProtocol::Http),
            ("https", HealthCheckProtocol::Https),
            ("tcp", HealthCheckProtocol::Tcp),
        ],
    );
    let check_path = raw.path.clone().unwrap_or_else(|| "/".to_string());
    if !check_path.starts_with('/')
        || check_path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        d.err(
            &p("path"),
            format!("{check_path:?} must start with \"/\" and contain no spaces"),
        );
    }
    let port = raw
        .port
        .map(|v| fields::to_u16(fields::int_in(d, &p("port"), Some(v), 1, 1, 65535)));
    let interval = fields::duration_in(
        d,
        &p("interval"),
        &raw.interval,
        secs(30),
        Duration::from_millis(100),
        secs(300),
    );
    // Lattice's 5s, unless the interval is that short: then half of it, so that setting only
    // `interval = "5s"` (or "1s") is not an error about a key the user never wrote.
    let timeout = fields::duration(d, &p("timeout"), &raw.timeout, secs(5).min(interval / 2));
    if timeout < Duration::from_millis(1) {
        d.err(&p("timeout"), "must be at least 1ms");
    } else if timeout >= interval {
        d.err(
            &p("timeout"),
            format!(
                "timeout {} must be less than interval {}",
                fmt_duration(timeout),
                fmt_duration(interval)
            ),
        );
    }
    let matcher_text = raw.matcher.clone().unwrap_or_else(|| "200".to_string());
    let ranges = match status_ranges(&matcher_text) {
        Ok(r) => r,
        Err(msg) => {
            d.err(&p("matcher"), msg);
            vec![(200, 200)]
        }
    };
    HealthCheck {
        enabled: raw.enabled.unwrap_or(true),
        protocol,
        path: check_path,
        port,
        interval,
        timeout,
        healthy_threshold: fields::to_u32(fields::int_in(
            d,
            &p("healthy_threshold"),
            raw.healthy_threshold,
            5,
            1,
            10,
        )),
        unhealthy_threshold: fields::to_u32(fields::int_in(
            d,
            &p("unhealthy_threshold"),
            raw.unhealthy_threshold,
            2,
            1,
            10,
        )),
        matcher: StatusMatcher {
            ranges,
            text: matcher_text,
        },
    }
}

/// `"200"`, `"200,202"`, `"200-299"` (Lattice's `[0-9-,]+`), each code 100..=599.
pub(crate) fn status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = |why: &str| {
        format!("{text:?} is not a status matcher ({why}); write e.g. \"200\", \"200,202\" or \"200-299\"")
    };
    let code = |s: &str| -> Result<u16, String> {
        match s.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(bad(&format!("{s:?} is not a status code in 100..=599"))),
        }
    };
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
    {
        return Err(bad("only digits, '-' and ',' are allowed"));
    }
    text.split(',')
        .map(|part| {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (code(lo)?, code(hi)?),
                None => (code(part)?, code(part)?),
            };
            if lo > hi {
                return Err(bad(&format!("range {part} is backwards")));
            }
            Ok((lo, hi))
        })
        .collect()
}

fn outlier_detection(d: &mut Diags, path: &str, raw: Option<&RawOutlier>) -> OutlierDetection {
    let default = OutlierDetection {
        enabled: true,
        consecutive_failures: 5,
        base_ejection_time: secs(30),
        max_ejection_time: secs(300),
        max_ejection_percent: 50,
    };
    let Some(raw) = raw else { return default };
    let p = |key: &str| format!("{path}.{key}");
    let base = fields::positive_duration(
        d,
        &p("base_ejection_time"),
        &raw.base_ejection_time,
        default.base_ejection_time,
    );
    let max = fields::positive_duration(
        d,
        &p("max_ejection_time"),
        &raw.max_ejection_time,
        default.max_ejection_time,
    );
    if base > max {
        d.err(
            &p("max_ejection_time"),
            format!(
                "max_ejection_time {} is less than base_ejection_time {}",
                fmt_duration(max),
                fmt_duration(base)
            ),
        );
    }
    OutlierDetection {
        enabled: raw.enabled.unwrap_or(true),
        consecutive_failures: fields::to_u32(fields::int_in(
            d,
            &p("consecutive_failures"),
            raw.consecutive_failures,
            5,
            1,
            1000,
        )),
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: u8::try_from(fields::int_in(
            d,
            &p("max_ejection_percent"),
            raw.max_ejection_percent,
            50,
            0,
            100,
        ))
        .unwrap_or(50),
    }
}

#[cfg(test)]
mod tests {
    use super::status_ranges;

    #[test]
    fn matchers() {
        assert_eq!(status_ranges("200"), Ok(vec![(200, 200)]));
        assert_eq!(status_ranges("200,202"), Ok(vec![(200, 200), (202, 202)]));
        assert_eq!(status_ranges("200-299"), Ok(vec![(200, 299)]));
        for bad in [
            "", "2OO", "299-200", "99", "600", "200,", "-", "200--300", "1-2-3", "200 ",
        ] {
            assert!(status_ranges(bad).is_err(), "{bad}");
        }
    }
}
