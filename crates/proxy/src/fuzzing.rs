//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): thin wrappers over the rule matcher, the
//! auth policy evaluator, the `*` glob, path normalisation and the ClientHello reader, which are private to this crate.
//! Built only with the `fuzzing` feature, which only the fuzz crate turns on.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method, Request};
use trellis_config::{AuthPolicy, Match, StringMatchKind};

use crate::auth::{Caller, Policy, Verifier};
use crate::snapshot::{Conditions, TextMatcher};

pub use crate::auth::Denial;
pub use crate::head::path::{is_normalised, normalize as normalize_path, PathError};
pub use crate::passthrough::client_hello::{Hello, MAX_HELLO};

/// Whether a listener rule's conditions, compiled as a snapshot compiles them, hold for a request.
pub fn rule_matches(m: &Match, method: &Method, path: &str, headers: &HeaderMap) -> bool {
    Conditions::compile(m).matches(method, path, headers)
}

/// One path or header condition on its own: `value` (as configured) against `hay` (as sent).
pub fn text_matches(kind: StringMatchKind, value: &str, case_sensitive: bool, hay: &[u8]) -> bool {
    TextMatcher::new(kind, value, case_sensitive).matches(hay)
}

/// The verdict of `policy`, compiled as a snapshot compiles it, on a request from `ip` whose mTLS
/// identity is `identity`. No JWT issuer is configured, so `Authorization` identifies nobody.
pub fn policy_allows<B>(
    policy: &AuthPolicy,
    req: &Request<B>,
    ip: IpAddr,
    identity: Option<&HeaderValue>,
) -> Result<(), Denial> {
    let verifier = Verifier::default();
    let mut caller = Caller::new(req, ip, identity, &verifier);
    Policy::compile(policy).evaluate(req, &mut caller)
}

/// Whether `text` matches the `*` glob `pattern` (principals, header values of auth policies).
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    crate::auth::glob::matches(pattern, text)
}

/// What the first bytes a `tls_passthrough` listener read say: incomplete, a ClientHello and its
/// server name, or not TLS.
pub fn client_hello_sni(bytes: &[u8]) -> Hello {
    crate::passthrough::client_hello::parse(bytes)
}
