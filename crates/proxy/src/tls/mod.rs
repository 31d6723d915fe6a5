//! TLS termination on https listeners. Each service on a port brings its certificate; the ClientHello's
//! SNI picks the service (exact name, then wildcard, then the service with `hosts = ["*"]`) and with it
//! the certificate and the client-certificate policy. The per-service `ServerConfig`s are built with the
//! snapshot, so a reload with rotated files serves the new certificate to new connections while existing
//! ones keep theirs.

mod identity;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::HeaderValue;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use trellis_config::{ClientAuth, TlsFiles};

pub use identity::client_identity;

/// One service's TLS on its port.
pub struct ServiceTls {
    pub config: Arc<ServerConfig>,
    /// Identifies the certificate by its files: a request whose Host belongs to another service on the
    /// port is served only if that service uses the same certificate. By path, not content, so that a
    /// connection made before a rotation still counts as the same certificate after it.
    pub cert: u64,
}

/// What a TLS connection tells the request path.
pub struct TlsInfo {
    pub cert: u64,
    pub sni: Option<Arc<str>>,
    pub version: &'static str,
    /// The verified client certificate's identity (mutual TLS), as the `x-trellis-identity` value.
    pub identity: Option<HeaderValue>,
}

impl ServiceTls {
    pub fn build(tls: &TlsFiles) -> Option<ServiceTls> {
        let material = tls.material.as_ref()?;
        let cert = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&tls.cert, &tls.key).hash(&mut h);
            h.finish()
        };
        Some(ServiceTls {
            config: Arc::new(server_config(tls, material)?),
            cert,
        })
    }
}

/// `None` when rustls refuses the settings (the configuration was checked, so unexpected): then the
/// service's handshakes fail, which with client authentication is the only safe choice.
fn server_config(tls: &TlsFiles, material: &trellis_config::TlsMaterial) -> Option<ServerConfig> {
    let refused = |error: &dyn std::fmt::Display| {
        tracing::error!(cert = %tls.cert.display(), %error, "TLS settings refused: handshakes on this certificate will fail");
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| refused(&e))
        .ok()?;
    let builder = match (&material.client_roots, tls.client_auth) {
        (Some(roots), Some(auth)) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let verifier = match auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| refused(&e)).ok()?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(material.certified.clone())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's cipher suite order (rustls's: AEADs with forward secrecy, strongest first), not the
    // client's: a client preferring a weaker suite does not get it (testssl.sh rates this).
    config.ignore_client_order = true;
    let (sessions, ticketer) = resumption(tls)?;
    config.session_storage = sessions;
    config.ticketer = ticketer;
    Some(config)
}

/// Sessions a client may resume (TLS 1.2 session IDs) and the keys of the tickets it may resume with
/// (TLS 1.3, and 1.2 tickets), kept for the life of the process: a reload builds new server
/// configurations, and must not turn every returning client's next connection into a full handshake.
/// One set per certificate and client-certificate policy, so that a session is only ever resumed where
/// the same identity and the same client policy apply (rustls also checks the server name).
fn resumption(tls: &TlsFiles) -> Option<(Arc<dyn StoresServerSessions>, Arc<dyn ProducesTickets>)> {
    type Resumption = (Arc<dyn StoresServerSessions>, Arc<dyn ProducesTickets>);
    static SETS: std::sync::OnceLock<std::sync::Mutex<HashMap<u64, Resumption>>> =
        std::sync::OnceLock::new();
    let key = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &tls.cert,
            &tls.key,
            &tls.client_ca,
            format!("{:?}", tls.client_auth),
        )
            .hash(&mut h);
        h.finish()
    };
    let mut sets = SETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(set) = sets.get(&key) {
        return Some(set.clone());
    }
    // Rotating keys (a new one every 6 hours, the previous still accepted), as nginx and HAProxy issue
    // tickets by default.
    let ticketer = match rustls::crypto::ring::Ticketer::new() {
        Ok(t) => t,
        Err(error) => {
            tracing::error!(cert = %tls.cert.display(), %error, "TLS session tickets unavailable");
            return None;
        }
    };
    let set: Resumption = (ServerSessionMemoryCache::new(SESSION_CACHE), ticketer);
    sets.insert(key, set.clone());
    Some(set)
}

/// TLS 1.2 sessions kept by ID per certificate (each a few hundred bytes); tickets need no room here.
const SESSION_CACHE: usize = 10_000;

/// Always the same certificate: the service was chosen before this configuration was.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// `TLSv1.3` and the like, as access logs name them.
pub fn version_name(version: Option<rustls::ProtocolVersion>) -> &'static str {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "-",
    }
}
