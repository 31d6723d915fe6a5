//! Auth policies, as Lattice's: a request passes only if the network's policy (if any) and its
//! service's policy (if any) both allow it. Identities come from mutual TLS and from verified JWTs.

pub(crate) mod glob;
mod jwt;
mod policy;

pub use jwt::Verifier;
pub use policy::{Denial, Policy};

use std::net::IpAddr;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};

/// Who is calling: the connection's address and identities, the bearer token verified only when a
/// policy first asks for the caller's identity.
pub struct Caller<'a> {
    pub ip: IpAddr,
    tls_identity: Option<&'a HeaderValue>,
    authorization: Option<&'a HeaderValue>,
    verifier: &'a Verifier,
    jwt: Option<Option<String>>,
}

impl<'a> Caller<'a> {
    pub fn new<B>(
        req: &'a Request<B>,
        ip: IpAddr,
        tls_identity: Option<&'a HeaderValue>,
        verifier: &'a Verifier,
    ) -> Self {
        Caller {
            ip,
            tls_identity,
            authorization: req.headers().get(AUTHORIZATION),
            verifier,
            jwt: None,
        }
    }

    /// The mTLS identity, then a verified JWT's `sub`.
    pub fn identities(&mut self) -> impl Iterator<Item = &[u8]> {
        if self.jwt.is_none() {
            let subject = match self.authorization {
                Some(value) if !self.verifier.is_empty() => self.verifier.subject(value.as_bytes()),
                _ => None,
            };
            self.jwt = Some(subject);
        }
        let jwt = self
            .jwt
            .as_ref()
            .and_then(|s| s.as_deref())
            .map(str::as_bytes);
        self.tls_identity
            .map(HeaderValue::as_bytes)
            .into_iter()
            .chain(jwt)
    }
}

/// The policies a request must pass, in order.
pub fn check<B>(
    policies: [Option<&Policy>; 2],
    req: &Request<B>,
    caller: &mut Caller<'_>,
) -> Result<(), String> {
    for policy in policies.into_iter().flatten() {
        if let Err(denial) = policy.evaluate(req, caller) {
            return Err(match denial {
                Denial::Statement(i) => {
                    format!("statement {i} of auth policy {:?} denies", &*policy.name)
                }
                Denial::NoAllow => {
                    format!("no statement of auth policy {:?} allows", &*policy.name)
                }
            });
        }
    }
    Ok(())
}
