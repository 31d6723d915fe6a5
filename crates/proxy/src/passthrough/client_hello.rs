//! Reading the server name (SNI) out of a TLS ClientHello without terminating TLS: enough of RFC 8446's
//! record and handshake framing to find the `server_name` extension, over a ClientHello that may span
//! several records.

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not enough bytes yet.
    Incomplete,
    /// A complete ClientHello, and the host name it asks for, if any.
    Complete(Option<String>),
    /// Not a TLS ClientHello.
    NotTls(&'static str),
}

/// The largest ClientHello accepted (post-quantum key shares make them a few KB; 64 KB is generous).
pub const MAX_HELLO: usize = 64 * 1024;

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// Looks at the bytes a client sent so far.
pub fn parse(bytes: &[u8]) -> Hello {
    // Reassemble the handshake message from the records' fragments.
    let mut message = Vec::new();
    let mut rest = bytes;
    loop {
        if rest.len() < 5 {
            return Hello::Incomplete;
        }
        if rest[0] != HANDSHAKE {
            return Hello::NotTls("the first record is not a handshake");
        }
        if rest[1] != 3 {
            return Hello::NotTls("not a TLS record version");
        }
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if len == 0 || len > 16 * 1024 + 256 {
            return Hello::NotTls("bad record length");
        }
        if rest.len() < 5 + len {
            return Hello::Incomplete;
        }
        message.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if message.len() >= 4 {
            if message[0] != CLIENT_HELLO {
                return Hello::NotTls("the first handshake message is not a ClientHello");
            }
            let body = u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize;
            if body + 4 > MAX_HELLO {
                return Hello::NotTls("ClientHello too large");
            }
            if message.len() >= 4 + body {
                return match server_name(&message[4..4 + body]) {
                    Some(result) => Hello::Complete(result),
                    None => Hello::NotTls("malformed ClientHello"),
                };
            }
        }
    }
}

/// A cursor over a ClientHello's body; every read is bounds-checked (`None` = malformed).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a length prefix of `width` bytes.
    fn vec(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => self.u8()? as usize,
            _ => self.u16()? as usize,
        };
        self.take(len)
    }
}

/// `Some(None)`: well-formed, no server name. `None`: malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec(1)?; // legacy_session_id
    r.vec(2)?; // cipher_suites
    r.vec(1)?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None); // no extensions at all
    }
    let mut extensions = Reader(r.vec(2)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec(2)?;
        if kind != SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vec(2)?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec(2)?;
            if name_type == HOST_NAME {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for `name` (`None`: an IP address, so no SNI).
    fn hello(name: Option<&str>) -> Vec<u8> {
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = match name {
            Some(n) => rustls::pki_types::ServerName::try_from(n.to_string()).unwrap(),
            None => rustls::pki_types::ServerName::IpAddress(
                std::net::IpAddr::from([127, 0, 0, 1]).into(),
            ),
        };
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_the_server_name() {
        let bytes = hello(Some("Shop.Example"));
        assert_eq!(parse(&bytes), Hello::Complete(Some("shop.example".into())));
    }

    #[test]
    fn no_server_name_for_an_ip_address() {
        assert_eq!(parse(&hello(None)), Hello::Complete(None));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = hello(Some("a.example"));
        for n in 0..bytes.len() {
            assert_eq!(parse(&bytes[..n]), Hello::Incomplete, "{n} bytes");
        }
    }

    #[test]
    fn a_hello_split_over_two_records() {
        let bytes = hello(Some("split.example"));
        let payload = &bytes[5..];
        let (a, b) = payload.split_at(40);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(parse(&split), Hello::Complete(Some("split.example".into())));
    }

    #[test]
    fn not_tls() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n\r\n"), Hello::NotTls(_)));
        assert!(matches!(
            parse(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
            Hello::NotTls(_)
        ));
    }

    #[test]
    fn truncated_fields_are_malformed_not_a_panic() {
        let bytes = hello(Some("a.example"));
        // Shrink the handshake length so the body ends in the middle of the extensions.
        for cut in [10usize, 40, 60, 100] {
            let mut b = bytes.clone();
            let body = cut;
            b[6..9].copy_from_slice(&(body as u32).to_be_bytes()[1..]);
            let record = body + 4;
            b[3..5].copy_from_slice(&(record as u16).to_be_bytes());
            b.truncate(5 + record);
            assert!(
                matches!(parse(&b), Hello::NotTls(_) | Hello::Complete(_)),
                "cut {cut}"
            );
        }
    }
}
