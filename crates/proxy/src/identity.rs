//! Who is calling, as far as trellis knows: the one place that answers it, for everything keyed by the
//! caller (rate limits with `key = "identity"`).

use http::Request;

use crate::server::ConnContext;

/// The request's identity: for now the verified mutual TLS client certificate's (its URI SAN, else its
/// first DNS SAN, else its subject CN: what goes to targets in `x-trellis-identity`). `None` for a
/// caller that proved none; such callers are all the same anonymous caller to whatever asks.
// Further sources (a verified token's subject, ...) belong here, in order of precedence.
#[inline]
pub fn of<'a, B>(conn: &'a ConnContext, _req: &'a Request<B>) -> Option<&'a [u8]> {
    conn.tls
        .as_ref()
        .and_then(|t| t.identity.as_ref())
        .map(http::HeaderValue::as_bytes)
}
