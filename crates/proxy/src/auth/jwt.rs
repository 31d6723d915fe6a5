//! Bearer tokens as an identity source: a JWT signed by a configured issuer's key, for one of its
//! audiences, within its validity window, identifies its `sub`. Anything else (expired, not yet valid,
//! wrong audience or issuer, bad signature, unknown key) is anonymous.

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use trellis_config::{JwtIssuer, JwtKey};

/// Every configured issuer, with its validation rules built once per snapshot.
#[derive(Default)]
pub struct Verifier {
    issuers: Box<[Issuer]>,
}

struct Issuer {
    keys: std::sync::Arc<[JwtKey]>,
    /// One per algorithm its keys use.
    validations: Vec<(Algorithm, Validation)>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Verifier {
    pub fn new(issuers: &[JwtIssuer]) -> Verifier {
        let issuers = issuers
            .iter()
            .filter_map(|i| {
                let keys = i.keys.as_ref()?.keys.clone();
                let mut validations: Vec<(Algorithm, Validation)> = Vec::new();
                for key in keys.iter() {
                    if validations.iter().any(|(a, _)| *a == key.algorithm) {
                        continue;
                    }
                    let mut v = Validation::new(key.algorithm);
                    v.set_issuer(&[&i.issuer]);
                    v.set_audience(&i.audiences);
                    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                    v.validate_nbf = true;
                    validations.push((key.algorithm, v));
                }
                Some(Issuer { keys, validations })
            })
            .collect();
        Verifier { issuers }
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The `sub` of a valid token from an `Authorization: Bearer` header value.
    pub fn subject(&self, authorization: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(authorization).ok()?;
        let (scheme, token) = text.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        let header = jsonwebtoken::decode_header(token).ok()?;
        for issuer in self.issuers.iter() {
            let Some((_, validation)) = issuer.validations.iter().find(|(a, _)| *a == header.alg)
            else {
                continue;
            };
            let candidates = issuer.keys.iter().filter(|k| {
                k.algorithm == header.alg
                    && match (&header.kid, &k.kid) {
                        (Some(want), Some(have)) => want == have,
                        _ => true,
                    }
            });
            for key in candidates {
                if let Ok(data) = jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                    return Some(data.claims.sub);
                }
            }
        }
        None
    }
}
