//! Certificates made fresh by each test with rcgen: a CA and the certificates it
//! issues, or self-signed ones, written as PEM files where trellis's configuration can name them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};

/// A certificate and its key, in PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A test certificate authority.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// The CA certificate in PEM: what a target group's `ca` file holds.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes [`Self::pem`] as `dir/name` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.pem()).expect("write CA file");
        path
    }

    /// A server certificate for `names` (IP addresses become IP SANs, the rest DNS names).
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.sign(params(names))
    }

    /// A certificate made from `params` (client certificates with their own subject and SANs).
    pub fn sign(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("issue certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A self-signed server certificate for `names`: no CA vouches for it.
pub fn self_signed(names: &[&str]) -> Issued {
    let key = KeyPair::generate().expect("key");
    let cert = params(names).self_signed(&key).expect("self-signed");
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn params(names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("certificate params");
    params
        .distinguished_name
        .push(DnType::CommonName, "trellis test backend");
    params
}
