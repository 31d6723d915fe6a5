//! TLS material named by the configuration: read and checked when the file is parsed, so that `trellis
//! check`, start and every reload see the files as they are now (a rotated certificate is a changed
//! configuration), and an unreadable, malformed or mismatched file is an error naming it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

/// A listener's certificate with its key, and the CAs its clients' certificates must chain to.
#[derive(Clone)]
pub struct TlsMaterial {
    pub certified: Arc<CertifiedKey>,
    pub client_roots: Option<Arc<RootCertStore>>,
    /// The files' bytes: two configurations are equal only if their files are.
    bytes: Arc<[u8]>,
}

impl PartialEq for TlsMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("certificates", &self.certified.cert.len())
            .field("client_roots", &self.client_roots.as_ref().map(|r| r.len()))
            .finish()
    }
}

/// A problem with one of the files: which key named it, and what is wrong.
pub(crate) struct TlsProblem {
    pub key: &'static str,
    pub message: String,
}

fn problem(key: &'static str, message: String) -> TlsProblem {
    TlsProblem { key, message }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsProblem> {
    std::fs::read(path).map_err(|e| problem(key, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in a PEM file, in order; at least one.
pub fn certificates(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(certs)
}

pub(crate) fn load(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsMaterial, TlsProblem> {
    let cert_bytes = read("cert", cert)?;
    let key_bytes = read("key", key)?;
    let chain = certificates(&cert_bytes, cert).map_err(|m| problem("cert", m))?;
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        problem(
            "key",
            format!("{} holds no usable PEM private key: {e}", key.display()),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => problem(
            "key",
            format!(
                "{} is not the key of the certificate in {}",
                key.display(),
                cert.display()
            ),
        ),
        other => problem("key", format!("{}: {other}", key.display())),
    })?;
    let mut bytes = cert_bytes;
    bytes.extend_from_slice(&key_bytes);
    let client_roots = match client_ca {
        None => None,
        Some(path) => {
            let ca_bytes = read("client_ca", path)?;
            let mut roots = RootCertStore::empty();
            for ca in certificates(&ca_bytes, path).map_err(|m| problem("client_ca", m))? {
                roots.add(ca).map_err(|e| {
                    problem(
                        "client_ca",
                        format!("{}: not a usable CA certificate: {e}", path.display()),
                    )
                })?;
            }
            bytes.extend_from_slice(&ca_bytes);
            Some(Arc::new(roots))
        }
    };
    Ok(TlsMaterial {
        certified: Arc::new(certified),
        client_roots,
        bytes: bytes.into(),
    })
}
