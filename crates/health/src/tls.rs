//! TLS for `https` probes. Like ALB's and Lattice's health checks, a probe does not verify the target's
//! certificate: it asks whether the application answers, and a self-signed or expired certificate on a
//! target is a matter for the data path's own TLS settings, not a reason to pull it out of rotation.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls::crypto::ring;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use trellis_targets::AnyCertificate;

/// One client configuration for every probe: building it is not free, and it never changes.
pub fn client_config() -> &'static Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let provider = Arc::new(ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(AnyCertificate::new(provider))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    })
}

/// Targets are addressed by IP, so the SNI is the IP (rustls sends no SNI for IP names).
pub fn server_name(address: SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(address.ip().into())
}
