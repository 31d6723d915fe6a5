//! TLS to the targets of `https` target groups: one client configuration per group's TLS settings, built
//! when a snapshot is built and kept while the settings (and the `ca` file's contents) stay the same.
//!
//! Verification is rustls's (WebPKI): against the group's `ca` file or the system's root certificates, for
//! the group's `sni`, or else the target's IP address (which must then be an IP SAN of its certificate).
//! `insecure_skip_verify` accepts any certificate, still checking that the handshake is signed by it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use trellis_config::{TargetGroup, TargetTls};
use trellis_targets::AnyCertificate;

/// What went wrong building a group's TLS client; every one is a fault of the configuration (or of the
/// files it names), reported with the key that names them.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not valid PEM: {message}", path.display())]
    BadPem { path: PathBuf, message: String },
    #[error("{}: certificate {index} is not a usable CA certificate: {message}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("the system has no root certificates to verify targets against (set ca, or SSL_CERT_FILE / SSL_CERT_DIR)")]
    NoSystemRoots,
    #[error("{0:?} is not a server name")]
    BadServerName(String),
    #[error("{0}")]
    Rustls(String),
}

impl TlsError {
    /// The target group key the problem is about; `None`: the group as a whole.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            TlsError::Read { .. }
            | TlsError::NoCertificate { .. }
            | TlsError::BadPem { .. }
            | TlsError::BadCertificate { .. } => Some("ca"),
            TlsError::BadServerName(_) => Some("sni"),
            TlsError::NoSystemRoots | TlsError::Rustls(_) => None,
        }
    }
}

/// What a client was built from: two equal settings make interchangeable clients, so a reload that
/// leaves them equal keeps the group's client and its warm connections.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    tls: TargetTls,
    /// The `ca` file's contents when it was read: a rotated CA is a changed setting.
    ca_pem: Option<Vec<u8>>,
    http2: bool,
}

/// A target group's TLS client: the connector and the name to verify targets against.
pub struct TlsClient {
    connector: TlsConnector,
    /// `sni`; `None`: each target's IP address.
    server_name: Option<ServerName<'static>>,
    settings: Settings,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("settings", &self.settings.tls)
            .field("http2", &self.settings.http2)
            .finish()
    }
}

impl TlsClient {
    /// The client for `tg` (an `https` group; `None` for the others). `previous` is the group's client
    /// in the snapshot being replaced: it is returned as it is when nothing it was built from changed.
    /// The `ca` file is read every time, so a reload notices a rotated or vanished file.
    pub fn for_group(
        tg: &TargetGroup,
        http2: bool,
        previous: Option<&Arc<TlsClient>>,
    ) -> Result<Option<Arc<TlsClient>>, TlsError> {
        let Some(tls) = &tg.tls else { return Ok(None) };
        let ca_pem = match &tls.ca {
            Some(path) => Some(std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let settings = Settings {
            tls: tls.clone(),
            ca_pem,
            http2,
        };
        if let Some(previous) = previous.filter(|p| p.settings == settings) {
            return Ok(Some(previous.clone()));
        }
        Self::build(settings).map(|c| Some(Arc::new(c)))
    }

    fn build(settings: Settings) -> Result<TlsClient, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let mut config = match (&settings.tls.ca, &settings.ca_pem, settings.tls.verify) {
            (_, _, false) => builder
                .dangerous()
                .with_custom_certificate_verifier(AnyCertificate::new(provider))
                .with_no_client_auth(),
            (Some(path), Some(pem), true) => builder
                .with_root_certificates(ca_roots(path, pem)?)
                .with_no_client_auth(),
            _ => builder
                .with_root_certificates(system_roots().ok_or(TlsError::NoSystemRoots)?)
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![if settings.http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let server_name = match &settings.tls.sni {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::BadServerName(name.clone()))?,
            ),
            None => None,
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            settings,
        })
    }

    /// Whether `other` was built from the same settings (and so connects the same way).
    pub fn same_as(&self, other: &TlsClient) -> bool {
        std::ptr::eq(self, other) || self.settings == other.settings
    }

    /// The TLS handshake with the target at `address` over `tcp`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        address: SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            // rustls sends no SNI for an IP address, and verifies the certificate's IP SANs.
            None => ServerName::IpAddress(address.ip().into()),
        };
        self.connector.connect(name, tcp).await
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(ring::default_provider()))
        .clone()
}

/// The certificates of a `ca` file as trust anchors: at least one, each usable.
fn ca_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            index: i + 1,
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The operating system's root certificates, read once per process (at the first `https` group that
/// needs them); `None` when there are none.
fn system_roots() -> Option<Arc<RootCertStore>> {
    static ROOTS: OnceLock<Option<Arc<RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's root certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no root certificates found in the system store: https target groups without ca cannot verify their targets"
                );
                return None;
            }
            tracing::debug!(added, ignored, "system root certificates loaded");
            Some(Arc::new(roots))
        })
        .clone()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An `https` group with `tls`.
    pub(crate) fn group(tls: TargetTls) -> TargetGroup {
        let text = "[[target_group]]\nname = \"g\"\nprotocol = \"https\"\n";
        let mut tg = trellis_config::parse(text, Path::new("t.toml"))
            .expect("valid")
            .target_groups
            .remove(0);
        tg.tls = Some(tls);
        tg
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("cert").pem()
    }

    fn with_ca(path: &Path) -> TargetGroup {
        group(TargetTls {
            ca: Some(path.to_path_buf()),
            sni: None,
            verify: true,
        })
    }

    #[test]
    fn kept_while_settings_and_ca_are_unchanged() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca_pem()).expect("write");
        let tg = with_ca(&path);
        let first = TlsClient::for_group(&tg, false, None).unwrap().unwrap();
        let again = TlsClient::for_group(&tg, false, Some(&first))
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again), "unchanged: the same client");
        let h2 = TlsClient::for_group(&tg, true, Some(&first))
            .unwrap()
            .unwrap();
        assert!(
            !h2.same_as(&first),
            "ALPN changes with the protocol version"
        );
        let mut sni = tg.clone();
        sni.tls.as_mut().unwrap().sni = Some("b.test".into());
        let named = TlsClient::for_group(&sni, false, Some(&first))
            .unwrap()
            .unwrap();
        assert!(!named.same_as(&first), "another sni");
        std::fs::write(&path, ca_pem()).expect("rotate");
        let rotated = TlsClient::for_group(&tg, false, Some(&first))
            .unwrap()
            .unwrap();
        assert!(!rotated.same_as(&first), "a rotated CA is a new client");
    }

    #[test]
    fn unusable_ca_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.pem");
        let e = TlsClient::for_group(&with_ca(&missing), false, None).unwrap_err();
        assert_eq!(e.key(), Some("ca"));
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{text}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "just some text\n").expect("write");
        let e = TlsClient::for_group(&with_ca(&empty), false, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: no PEM certificate in it", empty.display())
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("write");
        let e = TlsClient::for_group(&with_ca(&broken), false, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: ", broken.display())),
            "{e}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = TlsClient::for_group(&with_ca(&garbage), false, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("certificate 1 is not a usable CA certificate"),
            "{e}"
        );
    }

    #[test]
    fn no_tls_for_plain_groups_and_no_files_without_verification() {
        let mut plain = with_ca(Path::new("/nonexistent"));
        plain.tls = None;
        assert!(TlsClient::for_group(&plain, false, None).unwrap().is_none());
        let insecure = group(TargetTls {
            ca: None,
            sni: Some("b.test".into()),
            verify: false,
        });
        let client = TlsClient::for_group(&insecure, true, None)
            .unwrap()
            .unwrap();
        assert!(client.server_name.is_some());
    }
}
