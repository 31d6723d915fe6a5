//! The ClientHello reader on well-formed ClientHellos built from structured input (any session id,
//! cipher suites, extensions before and after `server_name`, a name list with other name types first,
//! the message split over records at any points): the answer is the server name RFC 6066 says (the
//! first `host_name` of the first `server_name` extension, lower-cased; a name that is not UTF-8 is
//! malformed), every strict prefix is `Incomplete`, and bytes after the ClientHello change nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trellis_proxy::fuzzing::{client_hello_sni, Hello, MAX_HELLO};

#[derive(Arbitrary, Debug)]
struct Input {
    version: u16,
    random: [u8; 32],
    session_id: Vec<u8>,
    cipher_suites: Vec<u8>,
    compression: Vec<u8>,
    /// `None`: no extensions block at all (a TLS 1.0-style hello).
    extensions: Option<Vec<Extension>>,
    /// Record fragment sizes, cycled (0 is read as 1).
    fragments: Vec<u16>,
    record_minor: u8,
    trailing: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Extension {
    Other { kind: u16, data: Vec<u8> },
    ServerName(Vec<(u8, Vec<u8>)>),
}

/// A vector with a big-endian length prefix of `width` bytes; `None` when it does not fit.
fn vector(width: usize, body: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(body.len()).ok()?;
    let max = if width == 1 { 0xff } else { 0xffff };
    if len > max {
        return None;
    }
    let mut out = len.to_be_bytes()[4 - width..].to_vec();
    out.extend_from_slice(body);
    Some(out)
}

fuzz_target!(|input: Input| {
    // The body of the ClientHello and the answer the RFCs give for it.
    let mut body = input.version.to_be_bytes().to_vec();
    body.extend_from_slice(&input.random);
    let (Some(session), Some(suites), Some(compression)) = (
        vector(1, &input.session_id),
        vector(2, &input.cipher_suites),
        vector(1, &input.compression),
    ) else {
        return;
    };
    body.extend(session);
    body.extend(suites);
    body.extend(compression);
    let mut expected: Option<Hello> = None;
    if let Some(extensions) = &input.extensions {
        let mut block = Vec::new();
        for e in extensions {
            let (kind, data) = match e {
                Extension::Other { kind: 0, .. } => continue,
                Extension::Other { kind, data } => (*kind, data.clone()),
                Extension::ServerName(names) => {
                    let mut list = Vec::new();
                    for (name_type, name) in names {
                        list.push(*name_type);
                        let Some(name_vec) = vector(2, name) else {
                            return;
                        };
                        list.extend(name_vec);
                        if expected.is_none() && *name_type == 0 {
                            expected = Some(match std::str::from_utf8(name) {
                                Ok(s) => Hello::Complete(Some(s.to_ascii_lowercase())),
                                Err(_) => Hello::NotTls("malformed ClientHello"),
                            });
                        }
                    }
                    if expected.is_none() {
                        // The first server_name extension decides, even with no host_name in it.
                        expected = Some(Hello::Complete(None));
                    }
                    let Some(list) = vector(2, &list) else { return };
                    (0, list)
                }
            };
            block.extend_from_slice(&kind.to_be_bytes());
            let Some(data) = vector(2, &data) else { return };
            block.extend(data);
        }
        let Some(block) = vector(2, &block) else {
            return;
        };
        body.extend(block);
    }
    let expected = if body.len() + 4 > MAX_HELLO {
        Hello::NotTls("ClientHello too large")
    } else {
        expected.unwrap_or(Hello::Complete(None))
    };

    // The handshake message, split over records.
    let mut message = vec![1];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend(body);
    let mut bytes = Vec::new();
    let mut rest = message.as_slice();
    let mut sizes = input.fragments.iter().cycle();
    while !rest.is_empty() {
        let size = sizes.next().map_or(rest.len(), |s| usize::from(*s).max(1));
        let take = size.min(16 * 1024).min(rest.len());
        bytes.extend_from_slice(&[22, 3, input.record_minor]);
        bytes.extend_from_slice(&(take as u16).to_be_bytes());
        bytes.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
    }

    let got = client_hello_sni(&bytes);
    assert_eq!(got, expected, "{} bytes", bytes.len());
    if matches!(expected, Hello::Complete(_)) {
        // Quadratic: every prefix of small hellos, a sample of big ones.
        let step = (bytes.len() / 512).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            assert_eq!(
                client_hello_sni(&bytes[..cut]),
                Hello::Incomplete,
                "{cut} of {} bytes",
                bytes.len()
            );
        }
    }
    bytes.extend_from_slice(&input.trailing);
    assert_eq!(
        client_hello_sni(&bytes),
        expected,
        "with bytes after the hello"
    );
});
