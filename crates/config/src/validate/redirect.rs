//! `action.redirect` (and `default_action.redirect`): ALB's keys, defaults and placeholders.

use super::fields;
use crate::diag::Diags;
use crate::model::ListenerProtocol;
use crate::raw::RawRedirect;
use crate::redirect::{Piece, Redirect, RedirectPort, RedirectProtocol, Template};

const STATUSES: &[i64] = &[301, 302, 303, 307, 308];
/// ALB's limit on each of host, path and query.
const MAX_LEN: usize = 128;

/// `listener`: the protocol and port of the listener the action is on, to tell a redirect to itself.
pub(crate) fn redirect(
    d: &mut Diags,
    path: &str,
    raw: &RawRedirect,
    listener: (ListenerProtocol, u16),
) -> Redirect {
    let p = |key: &str| format!("{path}.{key}");
    let reported = d.len();
    let status = match raw.status {
        None => {
            fields::missing(d, &p("status"));
            301
        }
        Some(s) if STATUSES.contains(&s) => s,
        Some(s) => {
            d.err(
                &p("status"),
                format!("{s} is not one of 301, 302, 303, 307, 308"),
            );
            301
        }
    };
    let protocol = match raw
        .protocol
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("#{protocol}") => RedirectProtocol::Request,
        Some("http") => RedirectProtocol::Http,
        Some("https") => RedirectProtocol::Https,
        Some(_) => {
            let text = raw.protocol.as_deref().unwrap_or_default();
            d.err(
                &p("protocol"),
                format!("{text:?} is not one of \"http\", \"https\", \"#{{protocol}}\""),
            );
            RedirectProtocol::Request
        }
    };
    let port = match raw.port.as_deref() {
        None | Some("#{port}") => RedirectPort::Listener,
        Some(text) => match text.parse::<u16>() {
            Ok(n) if n > 0 && text.bytes().all(|b| b.is_ascii_digit()) => RedirectPort::Port(n),
            _ => {
                d.err(
                    &p("port"),
                    format!("{text:?} is not a port (\"1\"..\"65535\") or \"#{{port}}\""),
                );
                RedirectPort::Listener
            }
        },
    };
    let mut host = part(d, &p("host"), raw.host.as_deref(), "#{host}", Part::Host);
    for piece in &mut host.pieces {
        if let Piece::Text(t) = piece {
            t.make_ascii_lowercase();
        }
    }
    let url_path = part(d, &p("path"), raw.path.as_deref(), "/#{path}", Part::Path);
    let query = part(
        d,
        &p("query"),
        raw.query.as_deref(),
        "#{query}",
        Part::Query,
    );

    let (listener_protocol, listener_port) = listener;
    let same_protocol = match protocol {
        RedirectProtocol::Request => true,
        RedirectProtocol::Http => listener_protocol == ListenerProtocol::Http,
        RedirectProtocol::Https => listener_protocol == ListenerProtocol::Https,
    };
    let same_port = match port {
        RedirectPort::Listener => true,
        RedirectPort::Port(n) => n == listener_port,
    };
    // Parts refused above stand in as defaults: not a loop the file asked for.
    if d.len() == reported
        && same_protocol
        && same_port
        && host.pieces == [Piece::Host]
        && url_path.text == "/#{path}"
        && query.pieces == [Piece::Query]
    {
        d.err(
            path,
            "this redirects every request to its own URL, a loop: change the protocol, host, port, \
             path or query",
        );
    }
    Redirect {
        status: u16::try_from(status).unwrap_or(301),
        protocol,
        host,
        port,
        path: url_path,
        query,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Host,
    Path,
    Query,
}

/// One of host, path, query: its placeholders, length and the characters of its text.
fn part(d: &mut Diags, path: &str, raw: Option<&str>, default: &str, which: Part) -> Template {
    let text = raw.unwrap_or(default);
    let template = match Template::parse(text) {
        Ok(t) => t,
        Err(message) => {
            d.err(path, message);
            return Template::parse(default).unwrap_or_else(|_| Template {
                text: String::new(),
                pieces: Vec::new(),
            });
        }
    };
    let n = text.chars().count();
    let least = if which == Part::Query { 0 } else { 1 };
    if n < least || n > MAX_LEN {
        d.err(
            path,
            format!("must be {least}..={MAX_LEN} characters, not {n}"),
        );
    }
    match which {
        Part::Path if !text.starts_with('/') => {
            d.err(path, format!("{text:?} must start with \"/\""));
        }
        Part::Query if text.starts_with('?') => {
            d.err(
                path,
                format!("{text:?}: leave out the \"?\", trellis adds it"),
            );
        }
        _ => {}
    }
    for t in template.texts() {
        if let Some(c) = t.chars().find(|&c| !allowed(which, c)) {
            let hint = match which {
                Part::Host => "a host name has letters, digits, \"-\", \".\" and \"_\"",
                _ => "percent-encode it",
            };
            d.err(
                path,
                format!("{text:?} has {c:?}, which cannot go there: {hint}"),
            );
            break;
        }
        if which != Part::Host && !escapes_complete(t) {
            d.err(
                path,
                format!("{text:?} has a \"%\" not followed by two hex digits"),
            );
            break;
        }
    }
    template
}

/// What a part's text may hold literally: a host's name characters, a path's `pchar`s and `/`, a
/// query's also `?` (RFC 3986 §3.3, §3.4).
fn allowed(which: Part, c: char) -> bool {
    if c.is_ascii_alphanumeric() || "-._".contains(c) {
        return true;
    }
    match which {
        Part::Host => false,
        Part::Path => "~!$&'()*+,;=:@/%".contains(c),
        Part::Query => "~!$&'()*+,;=:@/%?".contains(c),
    }
}

/// Every `%` is followed by two hex digits.
fn escapes_complete(text: &str) -> bool {
    let b = text.as_bytes();
    b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}
