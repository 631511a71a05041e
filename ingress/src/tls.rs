//! Certificates for HTTPS: the `kubernetes.io/tls` Secrets Ingresses name, chosen by SNI, and
//! a generated default certificate for every other name (as ingress-nginx has its "fake"
//! one), so a client without SNI or for an unknown host still completes a handshake.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a Secret's certificate cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// `tls.crt` holds no PEM certificate.
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    /// `tls.key` holds no usable PEM private key.
    #[error("tls.key holds no usable private key: {0}")]
    Key(String),
    /// The default certificate could not be generated.
    #[error("cannot generate the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain and key (PEM, as a `kubernetes.io/tls` Secret holds them) made ready
/// for rustls.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertificateError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| CertificateError::Key(error.to_string()))?;
    let signer =
        any_supported_type(&key).map_err(|error| CertificateError::Key(error.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    // A key that does not belong to the certificate would fail every handshake.
    certified
        .keys_match()
        .map_err(|error| CertificateError::Key(error.to_string()))?;
    Ok(certified)
}

/// The certificate served when no Secret covers the name asked for.
pub fn default_certificate() -> Result<CertifiedKey, CertificateError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["ingress.shipshape.invalid".to_string()])?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "shipshape ingress default certificate",
    );
    let cert = params.self_signed(&key)?;
    certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

/// Certificates by host: exact names and `*.` wildcards (keyed by what follows the `*.`).
#[derive(Debug, Default)]
pub struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Certificates {
    /// Serves `key` for `host` (`*.example.com` for a wildcard).
    pub fn insert(&mut self, host: &str, key: Arc<CertifiedKey>) {
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(suffix.to_string(), key),
            None => self.exact.insert(host.to_string(), key),
        };
    }

    /// The certificate for `server_name`, if one covers it.
    pub fn find(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })
    }

    /// How many hosts have a certificate.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether no host has one.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Picks the certificate for each handshake from the newest [`Certificates`]; swapping them
/// in takes effect at the next handshake, connections already open keep theirs.
#[derive(Debug)]
pub struct SniResolver {
    current: RwLock<Arc<Certificates>>,
    fallback: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver serving `fallback` until certificates are given.
    pub fn new(fallback: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(Certificates::default())),
            fallback: Arc::new(fallback),
        }
    }

    /// Replaces the certificates.
    pub fn store(&self, certificates: Certificates) {
        let certificates = Arc::new(certificates);
        match self.current.write() {
            Ok(mut current) => *current = certificates,
            Err(poisoned) => *poisoned.into_inner() = certificates,
        }
    }

    fn load(&self) -> Arc<Certificates> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|name| self.load().find(name).cloned());
        Some(chosen.unwrap_or_else(|| self.fallback.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(host: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn secrets_read_as_certificates_and_mismatched_keys_are_refused() {
        let (cert, key) = pem_pair("a.example.com");
        assert!(certified_key(cert.as_bytes(), key.as_bytes()).is_ok());
        let (_, other_key) = pem_pair("b.example.com");
        assert!(matches!(
            certified_key(cert.as_bytes(), other_key.as_bytes()),
            Err(CertificateError::Key(_))
        ));
        assert!(matches!(
            certified_key(b"not pem", key.as_bytes()),
            Err(CertificateError::NoCertificate)
        ));
    }

    #[test]
    fn names_find_exact_certificates_before_wildcards() {
        let (cert, key) = pem_pair("a.example.com");
        let one = Arc::new(certified_key(cert.as_bytes(), key.as_bytes()).unwrap());
        let (cert, key) = pem_pair("*.example.com");
        let wild = Arc::new(certified_key(cert.as_bytes(), key.as_bytes()).unwrap());
        let mut certificates = Certificates::default();
        certificates.insert("a.example.com", one.clone());
        certificates.insert("*.example.com", wild.clone());
        assert!(Arc::ptr_eq(
            certificates.find("A.example.com").unwrap(),
            &one
        ));
        assert!(Arc::ptr_eq(
            certificates.find("b.example.com").unwrap(),
            &wild
        ));
        assert!(certificates.find("x.b.example.com").is_none());
        assert!(certificates.find("example.com").is_none());
    }
}
