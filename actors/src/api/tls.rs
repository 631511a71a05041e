//! The API server's credentials: a CA, a server certificate signed by it, a bearer token, and a
//! kubeconfig carrying the CA and token, all generated into the data directory on first start.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Files of the API server's credentials inside a data directory.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The CA certificate (PEM) clients trust.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's private key (PEM, mode 0600).
    pub server_key: PathBuf,
    /// The bearer token clients present.
    pub token: String,
}

/// Why the credentials could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating a key or certificate failed.
    #[error("cannot generate the API server's certificates: {0}")]
    Certificate(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CredentialsError + '_ {
    move |source| CredentialsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file readable only by its owner (keys, tokens, kubeconfigs).
fn write_private(path: &Path, content: &str) -> Result<(), CredentialsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(content.as_bytes()).map_err(io(path))
}

/// Loads the credentials in `data_dir/tls`, generating whatever is missing.
pub fn prepare(data_dir: &Path) -> Result<Credentials, CredentialsError> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let server_cert = dir.join("server.crt");
    let server_key = dir.join("server.key");
    let token_file = dir.join("token");

    if !ca_cert.exists() || !ca_key.exists() || !server_cert.exists() || !server_key.exists() {
        let ca_key_pair = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "shipshape-ca");
        ca_params.distinguished_name = name;
        let ca = ca_params.self_signed(&ca_key_pair)?;

        let server_key_pair = KeyPair::generate()?;
        let mut server_params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "shipshape".to_string(),
        ])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "shipshape-apiserver");
        server_params.distinguished_name = name;
        let issuer = Issuer::new(ca_params, &ca_key_pair);
        let server = server_params.signed_by(&server_key_pair, &issuer)?;

        std::fs::write(&ca_cert, ca.pem()).map_err(io(&ca_cert))?;
        write_private(&ca_key, &ca_key_pair.serialize_pem())?;
        std::fs::write(&server_cert, server.pem()).map_err(io(&server_cert))?;
        write_private(&server_key, &server_key_pair.serialize_pem())?;
    }
    let token = match std::fs::read_to_string(&token_file) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => {
            let token = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            write_private(&token_file, &token)?;
            token
        }
    };
    Ok(Credentials {
        ca_cert,
        server_cert,
        server_key,
        token,
    })
}

/// Writes `data_dir/kubeconfig` for a server at `address`; returns its path.
pub fn write_kubeconfig(
    data_dir: &Path,
    credentials: &Credentials,
    address: SocketAddr,
) -> Result<PathBuf, CredentialsError> {
    let ca = std::fs::read(&credentials.ca_cert).map_err(io(&credentials.ca_cert))?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let path = data_dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: shipshape\n  cluster:\n    server: https://{address}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: shipshape\n  context:\n    cluster: shipshape\n    user: admin\n    namespace: default\ncurrent-context: shipshape\n",
        token = credentials.token
    );
    write_private(&path, &config)?;
    Ok(path)
}
