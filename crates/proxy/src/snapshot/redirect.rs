//! A redirect action, compiled once per snapshot: the location's parts as text and placeholders, filled in
//! from each request.

use std::fmt::Write as _;

use http::StatusCode;
use trellis_config::{self as config, Piece, RedirectPort, RedirectProtocol};

pub struct Redirect {
    pub status: StatusCode,
    /// `None`: the request's (`#{protocol}`); else whether it is https.
    https: Option<bool>,
    host: Box<[Piece]>,
    /// `None`: the listener's (`#{port}`).
    port: Option<u16>,
    path: Box<[Piece]>,
    query: Box<[Piece]>,
}

/// What the placeholders stand for, from the canonical request (see `head`).
pub struct Origin<'a> {
    /// The listener the request came on speaks TLS.
    pub https: bool,
    /// The canonical `Host` without its port; empty without one.
    pub host: &'a str,
    /// The listener's port.
    pub port: u16,
    /// The normalised path, with its leading `/`.
    pub path: &'a str,
    /// As sent, without the `?`; empty without one.
    pub query: &'a str,
}

impl Redirect {
    pub fn build(r: &config::Redirect) -> Self {
        Redirect {
            status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
            https: match r.protocol {
                RedirectProtocol::Http => Some(false),
                RedirectProtocol::Https => Some(true),
                RedirectProtocol::Request => None,
            },
            host: r.host.pieces.clone().into_boxed_slice(),
            port: match r.port {
                RedirectPort::Port(p) => Some(p),
                RedirectPort::Listener => None,
            },
            path: r.path.pieces.clone().into_boxed_slice(),
            query: r.query.pieces.clone().into_boxed_slice(),
        }
    }

    /// `protocol://host[:port]path[?query]`: the port left out when it is the protocol's default, the
    /// `?` when the query comes out empty. `None` when the host needs the request's and it has none
    /// (HTTP/1.0 without `Host`).
    pub fn location(&self, from: &Origin) -> Option<String> {
        // `www.#{host}` of a request without a host would name another host than any it asked for.
        if from.host.is_empty() && self.host.contains(&Piece::Host) {
            return None;
        }
        let https = self.https.unwrap_or(from.https);
        let mut out =
            String::with_capacity(32 + from.host.len() + from.path.len() + from.query.len());
        out.push_str(if https { "https://" } else { "http://" });
        let host_at = out.len();
        fill(&mut out, &self.host, from);
        if out.len() == host_at {
            return None;
        }
        let port = self.port.unwrap_or(from.port);
        if port != if https { 443 } else { 80 } {
            let _ = write!(out, ":{port}");
        }
        fill(&mut out, &self.path, from);
        let query_at = out.len();
        out.push('?');
        fill(&mut out, &self.query, from);
        if out.len() == query_at + 1 {
            out.truncate(query_at);
        }
        Some(out)
    }
}

fn fill(out: &mut String, pieces: &[Piece], from: &Origin) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Protocol => out.push_str(if from.https { "https" } else { "http" }),
            Piece::Host => out.push_str(from.host),
            Piece::Port => {
                let _ = write!(out, "{}", from.port);
            }
            Piece::Path => out.push_str(from.path.strip_prefix('/').unwrap_or(from.path)),
            Piece::Query => out.push_str(from.query),
        }
    }
}

/// A canonical authority (see `head::authority`) without its port: `a.test:8080` is `a.test`,
/// `[::1]:8080` is `[::1]`.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The redirect of a listener's default action in a file of one http listener on port 8080.
    fn redirect(keys: &str) -> Redirect {
        let text = format!(
            "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n[[service.listener]]\nname = \"l\"\n\
             protocol = \"http\"\nport = 8080\ndefault_action = {{ redirect = {{ {keys} }} }}\n"
        );
        let config = config::parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        let config::Action::Redirect(r) = &config.services[0].listeners[0].default_action else {
            panic!("a redirect");
        };
        Redirect::build(r)
    }

    const FROM: Origin = Origin {
        https: false,
        host: "a.test",
        port: 8080,
        path: "/x/y",
        query: "q=1",
    };

    #[test]
    fn locations() {
        let cases = [
            (
                "status = 301, protocol = \"https\", port = \"443\"",
                "https://a.test/x/y?q=1",
            ),
            (
                "status = 301, protocol = \"https\"",
                "https://a.test:8080/x/y?q=1",
            ),
            (
                "status = 302, host = \"www.#{host}\", port = \"80\"",
                "http://www.a.test/x/y?q=1",
            ),
            (
                "status = 308, path = \"/new/#{path}\", query = \"from=#{host}&#{query}\"",
                "http://a.test:8080/new/x/y?from=a.test&q=1",
            ),
            (
                "status = 301, path = \"/\", query = \"\"",
                "http://a.test:8080/",
            ),
            (
                "status = 301, host = \"#{protocol}.#{port}.test\"",
                "http://http.8080.test:8080/x/y?q=1",
            ),
        ];
        for (keys, want) in cases {
            assert_eq!(
                redirect(keys).location(&FROM).as_deref(),
                Some(want),
                "{keys}"
            );
        }
        let https = Origin {
            https: true,
            port: 443,
            query: "",
            ..FROM
        };
        assert_eq!(
            redirect("status = 301, host = \"b.test\"")
                .location(&https)
                .as_deref(),
            Some("https://b.test/x/y")
        );
        let hostless = Origin { host: "", ..FROM };
        assert_eq!(
            redirect("status = 301, protocol = \"https\"").location(&hostless),
            None
        );
        assert_eq!(
            redirect("status = 301, host = \"www.#{host}\"").location(&hostless),
            None
        );
        assert_eq!(
            redirect("status = 301, host = \"a.test\"")
                .location(&hostless)
                .as_deref(),
            Some("http://a.test:8080/x/y?q=1")
        );
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("a.test:8080"), "a.test");
        assert_eq!(host_without_port("a.test"), "a.test");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("10.0.0.1:80"), "10.0.0.1");
    }
}
