//! Certificates for the TLS tests (a test CA, server and client certificates, written as PEM files) and
//! TLS clients that choose their SNI, ALPN and client certificate.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::certs::{self, TestCa};

/// A CA and the certificates it signed, as files in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
}

/// A certificate and its key as files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: TestCa::new("trellis test CA"),
        };
        pki.ca.write(pki.dir.path(), "ca.pem");
        pki
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A server certificate for `names`, written as `FILE.pem` and `FILE.key`.
    pub fn server(&self, file: &str, names: &[&str]) -> Issued {
        self.write(file, self.ca.issue(names))
    }

    /// A client certificate with subject `cn` and, if given, a URI SAN.
    pub fn client(&self, file: &str, cn: &str, uri: Option<&str>) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().unwrap()));
        }
        self.write(file, self.ca.sign(params))
    }

    fn write(&self, file: &str, pem: certs::Issued) -> Issued {
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
            der: CertificateDer::from_pem_slice(pem.cert_pem.as_bytes()).unwrap(),
        };
        std::fs::write(&issued.cert, pem.cert_pem).unwrap();
        std::fs::write(&issued.key, pem.key_pem).unwrap();
        issued
    }

    /// A client that trusts this CA, offers `alpn`, and presents `identity` if given.
    pub fn client_config(&self, alpn: &[&str], identity: Option<&Issued>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.pem().as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(id) => {
                let key = std::fs::read(&id.key).unwrap();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
                builder
                    .with_client_auth_cert(vec![id.der.clone()], key)
                    .unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// Connects to `127.0.0.1:port` and shakes hands with server name `sni`.
pub async fn connect(
    port: u16,
    sni: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// The certificate the server presented on `stream`.
pub fn served(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// The protocol ALPN chose on `stream`.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<String> {
    stream
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// HTTP/1.1 over an established TLS stream.
pub async fn h1(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 over TLS");
    tokio::spawn(conn);
    sender
}

/// HTTP/2 over an established TLS stream (ALPN `h2`).
pub async fn h2(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 over TLS");
    tokio::spawn(conn);
    sender
}

/// A backend that terminates TLS itself with `issued` and answers every HTTP/1.1 request with 200 and
/// `hello from NAME over TLS`. Returns its `127.0.0.1:PORT`.
pub async fn backend(issued: &Issued, name: &str) -> String {
    let key = std::fs::read(&issued.key).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![issued.der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = bytes::Bytes::from(format!("hello from {name} over TLS"));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                // Health probes connect and close without a handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(body),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr.to_string()
}
