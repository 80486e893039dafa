//! TLS like a cluster: a CA generated at start, and per-instance server
//! certificates for the names clients use (`kubernetes`,
//! `kubernetes.default.svc`, …) and the instance's IP address.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The DNS names every simulated apiserver certificate carries, as a real
/// apiserver's serving certificate does.
pub const SERVER_NAMES: [&str; 4] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Why TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material.
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A cluster CA that issues server certificates.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl ClusterCa {
    /// Generates a fresh CA (ECDSA P-256).
    pub fn generate() -> Result<ClusterCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "cutover-auditor-simulator-ca");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate in PEM, what a client trusts (`ca.crt`).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes the CA certificate to `path`.
    // Shell: the one file writer of this otherwise pure module.
    #[allow(clippy::disallowed_methods)]
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.pem)
    }

    /// A rustls server configuration whose certificate carries
    /// [`SERVER_NAMES`] and `ips`, signed by this CA.
    pub fn server_config(&self, ips: &[IpAddr]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut sans: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
        sans.extend(ips.iter().map(|ip| ip.to_string()));
        self.config_for(sans)
    }

    /// The configuration of an instance at `ip`: [`Self::server_config`]
    /// for `[ip]`, or, with `cert_name`, a certificate (still signed by this
    /// CA) that carries only that DNS name, so verifying it for `kubernetes`
    /// or for the IP fails.
    pub fn instance_config(
        &self,
        cert_name: Option<&str>,
        ip: IpAddr,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        match cert_name {
            None => self.server_config(&[ip]),
            Some(name) => self.config_for(vec![name.to_string()]),
        }
    }

    fn config_for(&self, sans: Vec<String>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Installs rustls' `ring` provider as the process default, once. Clients
/// built without an explicit provider (reqwest with
/// `rustls-tls-manual-roots-no-provider`) need it.
pub fn install_ring_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
