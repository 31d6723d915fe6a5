//! The redirect action (ALB's): its validated model, and the `#{...}` placeholders of its parts.

use std::fmt;

/// `redirect = { status, protocol, host, port, path, query }`: trellis answers with `status` and a
/// `location` built from these parts, each of which defaults to the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    pub protocol: RedirectProtocol,
    /// Text (lower-cased) and placeholders; default `#{host}`.
    pub host: Template,
    pub port: RedirectPort,
    /// Starts with `/`; default `/#{path}`.
    pub path: Template,
    /// Without the `?`; default `#{query}`. Empty: the location has no query.
    pub query: Template,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectProtocol {
    Http,
    Https,
    /// `#{protocol}`: the protocol of the listener the request came on.
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectPort {
    Port(u16),
    /// `#{port}`: the port of the listener the request came on.
    Listener,
}

/// A part of the location: text with `#{...}` placeholders, split once at validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// As configured, for messages and status pages.
    pub text: String,
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `#{protocol}`: `http` or `https`.
    Protocol,
    /// `#{host}`: the request's canonical host, without its port.
    Host,
    /// `#{port}`: the listener's port.
    Port,
    /// `#{path}`: the request's canonical path without its leading `/`.
    Path,
    /// `#{query}`: the request's query as sent, without the `?`.
    Query,
}

const PLACEHOLDERS: &[(&str, Piece)] = &[
    ("protocol", Piece::Protocol),
    ("host", Piece::Host),
    ("port", Piece::Port),
    ("path", Piece::Path),
    ("query", Piece::Query),
];

impl Template {
    /// Splits `text` into text and placeholders; an unknown placeholder or an unclosed `#{` is refused.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("#{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("{text:?} has a \"#{{\" without its \"}}\""));
            };
            let name = &after[..end];
            let Some((_, piece)) = PLACEHOLDERS.iter().find(|(n, _)| *n == name) else {
                return Err(format!(
                    "#{{{name}}} is not a placeholder; there are #{{protocol}}, #{{host}}, #{{port}}, \
                     #{{path}} and #{{query}}"
                ));
            };
            pieces.push(piece.clone());
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template {
            text: text.to_string(),
            pieces,
        })
    }

    /// The text pieces: what validation checks character by character.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }
}

impl fmt::Display for Redirect {
    /// The location as configured, placeholders and all: `https://#{host}:443/#{path}?#{query}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match self.protocol {
            RedirectProtocol::Http => "http",
            RedirectProtocol::Https => "https",
            RedirectProtocol::Request => "#{protocol}",
        };
        write!(f, "{protocol}://{}", self.host.text)?;
        match self.port {
            RedirectPort::Port(p) => write!(f, ":{p}")?,
            RedirectPort::Listener => f.write_str(":#{port}")?,
        }
        f.write_str(&self.path.text)?;
        if !self.query.text.is_empty() {
            write!(f, "?{}", self.query.text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_text() {
        let t = Template::parse("/new/#{path}x").unwrap();
        assert_eq!(
            t.pieces,
            vec![
                Piece::Text("/new/".into()),
                Piece::Path,
                Piece::Text("x".into())
            ]
        );
        assert_eq!(
            Template::parse("#{host}").unwrap().pieces,
            vec![Piece::Host]
        );
        assert!(Template::parse("").unwrap().pieces.is_empty());
        assert!(Template::parse("#{foo}").unwrap_err().contains("#{foo}"));
        assert!(Template::parse("a#{host").unwrap_err().contains("without"));
        assert!(Template::parse("#{HOST}").is_err());
    }
}
