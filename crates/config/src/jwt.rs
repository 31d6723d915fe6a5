//! JWT verification keys named by `[[jwt_issuer]]`: a JWKS file or a PEM public key, read and checked when
//! the configuration is parsed (so a bad file is an error naming it, and a rotated one is a changed
//! configuration).

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One key a token may be signed with.
#[derive(Clone)]
pub struct JwtKey {
    /// The JWKS `kid`, matched against a token's header when both have one.
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// An issuer's keys, compared by the file's bytes.
#[derive(Clone)]
pub struct JwtKeys {
    pub keys: Arc<[JwtKey]>,
    bytes: Arc<[u8]>,
}

impl PartialEq for JwtKeys {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithms: Vec<_> = self.keys.iter().map(|k| (&k.kid, k.algorithm)).collect();
        f.debug_struct("JwtKeys")
            .field("keys", &algorithms)
            .finish()
    }
}

/// Reads a JWKS (`jwks = true`) or PEM public key file.
pub(crate) fn load(path: &Path, jwks: bool) -> Result<JwtKeys, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let keys = if jwks {
        from_jwks(&bytes, path)?
    } else {
        vec![from_pem(&bytes, path)?]
    };
    Ok(JwtKeys {
        keys: keys.into(),
        bytes: bytes.into(),
    })
}

fn from_jwks(bytes: &[u8], path: &Path) -> Result<Vec<JwtKey>, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "{} is not a JWKS (a JSON {{\"keys\": [...]}}): {e}",
            path.display()
        )
    })?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => {
                return Err(format!(
                "{}: key {i} is not RSA, EC P-256 or Ed25519 (RS256, ES256, EdDSA are supported)",
                path.display()
            ))
            }
        };
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| format!("{}: key {i}: {e}", path.display()))?;
        keys.push(JwtKey {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    if keys.is_empty() {
        return Err(format!("{} holds no keys", path.display()));
    }
    Ok(keys)
}

/// A PEM public key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA), told apart by the algorithm
/// identifier inside the key.
fn from_pem(bytes: &[u8], path: &Path) -> Result<JwtKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::SubjectPublicKeyInfoDer;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    let unusable = |why: String| {
        format!(
            "{} holds no RSA, EC P-256 or Ed25519 public key in PEM: {why}",
            path.display()
        )
    };
    let has = |der: &[u8], oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let (algorithm, key) = if String::from_utf8_lossy(bytes).contains("BEGIN RSA PUBLIC KEY") {
        (Algorithm::RS256, DecodingKey::from_rsa_pem(bytes))
    } else {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(bytes)
            .map_err(|e| unusable(format!("no \"BEGIN PUBLIC KEY\" block ({e})")))?;
        let der = spki.as_ref();
        if has(der, RSA) {
            (Algorithm::RS256, DecodingKey::from_rsa_pem(bytes))
        } else if has(der, ED25519) {
            (Algorithm::EdDSA, DecodingKey::from_ed_pem(bytes))
        } else if has(der, EC) && has(der, P256) {
            (Algorithm::ES256, DecodingKey::from_ec_pem(bytes))
        } else {
            return Err(unusable("an unsupported key type".into()));
        }
    };
    let key = key.map_err(|e| unusable(e.to_string()))?;
    Ok(JwtKey {
        kid: None,
        algorithm,
        key,
    })
}
