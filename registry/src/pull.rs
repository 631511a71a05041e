//! Fetching an image over the OCI distribution protocol: its manifest (the host's platform
//! picked from an index), its config, and a stream per layer. Each endpoint the configuration
//! lists is tried in turn (mirrors, then the registry), and at each one the credentials that
//! match it, then none; the first that serves the manifest serves the rest of the pull.
//!
//! Every manifest is checked against the digest it was asked by (or the registry announced),
//! and every blob stream against its descriptor's digest, so bytes that do not match never
//! reach the content store as what they claim to be.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use oci_client::Reference;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use shipshape_api::image_ref::ImageRef;

use crate::config::{Endpoint, RegistryConfig};
use crate::keyring::{Credential, Keyring};

/// The media types of an image index and of a Docker manifest list.
pub const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The media types of a single-platform image manifest, OCI and Docker.
pub const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a registry may go without sending a byte before the pull fails (a registry that
/// dies mid-pull is a failure to retry, not a pod stuck in Pulling).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an image could not be pulled, in the registry's words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PullError {
    /// No endpoint has the image (unknown repository, tag or digest).
    #[error("{image}: not found: {message}")]
    NotFound {
        /// The image as normalised.
        image: String,
        /// What the registry said.
        message: String,
    },
    /// The registry refused the credentials (or asked for some and none matched).
    #[error("{image}: unauthorized: {message}")]
    Unauthorized {
        /// The image as normalised.
        image: String,
        /// What the registry said.
        message: String,
    },
    /// Bytes that do not match their digest, or an index without the host's platform.
    #[error("{image}: {message}")]
    Invalid {
        /// The image as normalised.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// The registry could not be reached, or failed mid-pull.
    #[error("{image}: {message}")]
    Unavailable {
        /// The image as normalised.
        image: String,
        /// What failed.
        message: String,
    },
    /// The registry configuration names a CA file that cannot be read.
    #[error("{0}")]
    Config(String),
}

/// A blob as the registry served it, checked against its digest.
#[derive(Clone, Debug)]
pub struct Blob {
    /// `sha256:…`.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A layer (or any blob) the manifest names, fetched with [`Puller::blob`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// `sha256:…`.
    pub digest: String,
    /// Its media type (`…tar+gzip`, `…tar+zstd`, `…tar`).
    pub media_type: String,
    /// Its size in bytes, as the manifest claims it.
    pub size: u64,
}

/// An image resolved at one endpoint: what to store as its record, and where its layers are.
#[derive(Clone)]
pub struct Resolved {
    /// The image as the pod names it, normalised.
    pub image: ImageRef,
    /// The endpoint that served it.
    pub endpoint: Endpoint,
    /// The index (or Docker manifest list) the reference named, if it named one.
    pub index: Option<Blob>,
    /// The manifest for the host's platform.
    pub manifest: Blob,
    /// The image config.
    pub config: Blob,
    /// Its layers, bottom first.
    pub layers: Vec<Descriptor>,
    client: Arc<oci_client::Client>,
    reference: Reference,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("image", &self.image.to_string())
            .field("endpoint", &self.endpoint)
            .field("manifest", &self.manifest.digest)
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

impl Resolved {
    /// The digest the image record points at: the index's when there is one, as containerd
    /// records a multi-platform image.
    pub fn target(&self) -> &Blob {
        self.index.as_ref().unwrap_or(&self.manifest)
    }

    /// Bytes of all layers, as the manifest states them.
    pub fn layer_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// Pulls images with one registry configuration; clients (and their tokens) are kept per
/// endpoint and credential, so a second pull from the same place authenticates once.
pub struct Puller {
    config: Arc<RegistryConfig>,
    clients: Mutex<HashMap<ClientKey, Arc<oci_client::Client>>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    host: String,
    plain_http: bool,
    credential: Option<(String, String)>,
}

impl Puller {
    /// A puller for `config`.
    pub fn new(config: Arc<RegistryConfig>) -> Self {
        Puller {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration it pulls with.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Finds `image` at the first endpoint that serves it, with the first credential it
    /// accepts, and fetches its manifest and config.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        keyring: &Keyring,
    ) -> Result<Resolved, PullError> {
        let endpoints = self.config.endpoints(&image.registry, &image.repository);
        let mut failures: Vec<PullError> = Vec::new();
        for endpoint in endpoints {
            let credentials = credentials_for(&self.config, image, &endpoint, keyring);
            for credential in credentials {
                let client = self.client(&endpoint, credential.as_ref())?;
                match self
                    .resolve_at(image, &endpoint, client, credential.as_ref())
                    .await
                {
                    Ok(resolved) => return Ok(resolved),
                    Err(error) => {
                        tracing::debug!(%error, host = %endpoint.host, "pull attempt failed");
                        let unauthorized = matches!(error, PullError::Unauthorized { .. });
                        failures.push(error);
                        // Another credential may be accepted; anything else is this
                        // endpoint's answer.
                        if !unauthorized {
                            break;
                        }
                    }
                }
            }
        }
        // The most telling failure: a digest mismatch or refusal over a mirror's silence.
        let rank = |e: &PullError| match e {
            PullError::Invalid { .. } => 0,
            PullError::Unauthorized { .. } => 1,
            PullError::NotFound { .. } => 2,
            PullError::Unavailable { .. } => 3,
            PullError::Config(_) => 4,
        };
        Err(failures
            .into_iter()
            .min_by_key(rank)
            .unwrap_or_else(|| PullError::Unavailable {
                image: image.to_string(),
                message: "no registry endpoint to pull from".into(),
            }))
    }

    /// A stream of `layer`'s bytes from where `resolved` came from, checked against its digest
    /// as it ends.
    pub async fn blob(
        &self,
        resolved: &Resolved,
        layer: &Descriptor,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, PullError>>, PullError> {
        let image = resolved.image.to_string();
        let stream = resolved
            .client
            .pull_blob_stream(&resolved.reference, layer.digest.as_str())
            .await
            .map_err(|e| classify(&image, &resolved.endpoint, e))?;
        let endpoint = resolved.endpoint.host.clone();
        let digest = layer.digest.clone();
        Ok(stream
            .stream
            .map(move |chunk| {
                chunk.map_err(|e| {
                    let message = with_causes(&e);
                    if message.contains("digest") {
                        PullError::Invalid {
                            image: image.clone(),
                            message: format!("blob {digest} from {endpoint}: {message}"),
                        }
                    } else {
                        PullError::Unavailable {
                            image: image.clone(),
                            message: format!("reading blob {digest} from {endpoint}: {message}"),
                        }
                    }
                })
            })
            .boxed())
    }

    fn client(
        &self,
        endpoint: &Endpoint,
        credential: Option<&Credential>,
    ) -> Result<Arc<oci_client::Client>, PullError> {
        let key = ClientKey {
            host: endpoint.host.clone(),
            plain_http: endpoint.plain_http,
            credential: credential.map(|c| (c.username.clone(), c.password.clone())),
        };
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| PullError::Config("the registry clients' lock is poisoned".into()))?;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let tls = self
            .config
            .host(&endpoint.host)
            .map(|h| h.tls.clone())
            .unwrap_or_default();
        let mut extra_root_certificates = Vec::new();
        if let Some(ca) = &tls.ca_file {
            extra_root_certificates.push(read_ca(ca)?);
        }
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::HttpsExcept(vec![endpoint.host.clone()])
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: tls.insecure_skip_verify,
            extra_root_certificates,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            max_concurrent_download: 4,
            user_agent: concat!("shipshape/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Arc::new(oci_client::Client::new(config));
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn resolve_at(
        &self,
        image: &ImageRef,
        endpoint: &Endpoint,
        client: Arc<oci_client::Client>,
        credential: Option<&Credential>,
    ) -> Result<Resolved, PullError> {
        let name = image.to_string();
        let auth = match credential {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let reference = match (&image.digest, &image.tag) {
            (Some(digest), _) => Reference::with_digest(
                endpoint.host.clone(),
                endpoint.repository.clone(),
                digest.clone(),
            ),
            (None, tag) => Reference::with_tag(
                endpoint.host.clone(),
                endpoint.repository.clone(),
                tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        };
        let accepted: Vec<&str> = MANIFEST_TYPES.iter().chain(&INDEX_TYPES).copied().collect();
        let (bytes, digest) = client
            .pull_manifest_raw(&reference, &auth, &accepted)
            .await
            .map_err(|e| classify(&name, endpoint, e))?;
        let top = Blob {
            media_type: media_type(&bytes).map_err(|m| invalid(&name, endpoint, m))?,
            digest,
            bytes: bytes.to_vec(),
        };
        let (index, manifest) = if INDEX_TYPES.contains(&top.media_type.as_str()) {
            let chosen = choose_platform(&top.bytes, &Platform::host())
                .map_err(|m| invalid(&name, endpoint, m))?;
            let by_digest = Reference::with_digest(
                endpoint.host.clone(),
                endpoint.repository.clone(),
                chosen.clone(),
            );
            let (bytes, digest) = client
                .pull_manifest_raw(&by_digest, &auth, &MANIFEST_TYPES)
                .await
                .map_err(|e| classify(&name, endpoint, e))?;
            if digest != chosen {
                return Err(invalid(
                    &name,
                    endpoint,
                    format!("manifest {chosen} arrived as {digest}"),
                ));
            }
            let manifest = Blob {
                media_type: media_type(&bytes).map_err(|m| invalid(&name, endpoint, m))?,
                digest,
                bytes: bytes.to_vec(),
            };
            (Some(top), manifest)
        } else {
            (None, top)
        };
        if !MANIFEST_TYPES.contains(&manifest.media_type.as_str()) {
            return Err(invalid(
                &name,
                endpoint,
                format!(
                    "manifest {} has media type {:?}, not an image",
                    manifest.digest, manifest.media_type
                ),
            ));
        }
        let parsed: ManifestJson = serde_json::from_slice(&manifest.bytes).map_err(|e| {
            invalid(
                &name,
                endpoint,
                format!("manifest {}: {e}", manifest.digest),
            )
        })?;
        let mut config_bytes = Vec::new();
        client
            .pull_blob(&reference, parsed.config.digest.as_str(), &mut config_bytes)
            .await
            .map_err(|e| classify(&name, endpoint, e))?;
        if config_bytes.len() as u64 != parsed.config.size {
            return Err(invalid(
                &name,
                endpoint,
                format!(
                    "config {} is {} bytes, the manifest says {}",
                    parsed.config.digest,
                    config_bytes.len(),
                    parsed.config.size
                ),
            ));
        }
        let config = Blob {
            digest: parsed.config.digest.clone(),
            media_type: parsed.config.media_type.clone(),
            bytes: config_bytes,
        };
        Ok(Resolved {
            image: image.clone(),
            endpoint: endpoint.clone(),
            index,
            manifest,
            config,
            layers: parsed
                .layers
                .into_iter()
                .map(DescriptorJson::into_descriptor)
                .collect(),
            client,
            reference,
        })
    }
}

fn read_ca(path: &Path) -> Result<Certificate, PullError> {
    let data = std::fs::read(path)
        .map_err(|e| PullError::Config(format!("registry CA file {}: {e}", path.display())))?;
    Ok(Certificate {
        encoding: CertificateEncoding::Pem,
        data,
    })
}

fn invalid(image: &str, endpoint: &Endpoint, message: impl Into<String>) -> PullError {
    PullError::Invalid {
        image: image.to_string(),
        message: format!("from {}: {}", endpoint.host, message.into()),
    }
}

/// Sorts a client error into what the kubelet reports: the registry's own words, with the
/// endpoint named (never a credential: the client's errors carry URLs and bodies only).
/// An error with the causes under it (`error sending request: … : invalid peer certificate:
/// UnknownIssuer`): the top line alone rarely says why. A cause whose words the text already
/// has is left out.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let words = next.to_string();
        if !words.is_empty() && !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        cause = next.source();
    }
    text
}

fn classify(
    image: &str,
    endpoint: &Endpoint,
    error: oci_client::errors::OciDistributionError,
) -> PullError {
    use oci_client::errors::OciDistributionError as E;
    let message = format!("from {}: {}", endpoint.host, with_causes(&error));
    let image = image.to_string();
    match &error {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            PullError::Unauthorized { image, message }
        }
        E::ImageManifestNotFoundError(_) => PullError::NotFound { image, message },
        E::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            let text = codes.join(" ");
            if text.contains("Unauthorized") || text.contains("Denied") {
                PullError::Unauthorized { image, message }
            } else if text.contains("Unknown") {
                PullError::NotFound { image, message }
            } else {
                PullError::Unavailable { image, message }
            }
        }
        E::DigestError(_) | E::ManifestParsingError(_) | E::VersionedParsingError(_) => {
            PullError::Invalid { image, message }
        }
        E::ServerError { code, .. } if *code == 404 => PullError::NotFound { image, message },
        E::ServerError { code, .. } if *code == 401 || *code == 403 => {
            PullError::Unauthorized { image, message }
        }
        _ => PullError::Unavailable { image, message },
    }
}

#[derive(Deserialize)]
struct Versioned {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

/// A manifest's media type: its `mediaType`, or (for OCI documents that leave it out) what
/// its fields say it is.
fn media_type(bytes: &[u8]) -> Result<String, String> {
    let versioned: Versioned =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    match (versioned.media_type, versioned.manifests, versioned.layers) {
        (Some(t), _, _) => Ok(t),
        (None, Some(_), _) => Ok(INDEX_TYPES[0].to_string()),
        (None, None, Some(_)) => Ok(MANIFEST_TYPES[0].to_string()),
        (None, None, None) => Err("the manifest has neither manifests nor layers".into()),
    }
}

#[derive(Deserialize)]
struct ManifestJson {
    config: DescriptorJson,
    #[serde(default)]
    layers: Vec<DescriptorJson>,
}

#[derive(Deserialize)]
struct DescriptorJson {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

impl DescriptorJson {
    fn into_descriptor(self) -> Descriptor {
        Descriptor {
            digest: self.digest,
            media_type: self.media_type,
            size: self.size,
        }
    }
}

#[derive(Deserialize)]
struct PlatformJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct IndexJson {
    manifests: Vec<DescriptorJson>,
}

/// The credentials to try at `endpoint`, in order, ending with none (anonymous). A pod's pull
/// secrets are for the registry its image names: sent there (under any scheme), never to a
/// mirror, which gets only what the configuration gives its host, as containerd does.
fn credentials_for(
    config: &RegistryConfig,
    image: &ImageRef,
    endpoint: &Endpoint,
    keyring: &Keyring,
) -> Vec<Option<Credential>> {
    let ours = endpoint.upstream || endpoint.host.eq_ignore_ascii_case(&image.registry);
    let mut credentials: Vec<Option<Credential>> = Vec::new();
    if ours {
        credentials.extend(
            keyring
                .lookup(&image.registry, &image.repository)
                .into_iter()
                .map(Some),
        );
    }
    if let Some(auth) = config.host(&endpoint.host).and_then(|h| h.auth.clone()) {
        credentials.push(Some(auth));
    }
    credentials.push(None);
    credentials
}

/// An OS, architecture and variant in Go's names (`linux`, `amd64`, `arm64`, `v8`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`, …
    pub architecture: String,
    /// `v7`, `v8`, or none.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on, in the names image indexes use.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }
}

/// The digest of the manifest in `index` for `platform`, as containerd picks it: the same OS
/// and architecture, the same variant preferred, then one with no variant (for arm64 `v8`
/// is the default and may be left out).
pub fn choose_platform(index: &[u8], platform: &Platform) -> Result<String, String> {
    let index: IndexJson =
        serde_json::from_slice(index).map_err(|e| format!("the image index is not valid: {e}"))?;
    let mut best: Option<(u8, String)> = None;
    for entry in index.manifests {
        let Some(p) = &entry.platform else { continue };
        if p.os != platform.os || p.architecture != platform.architecture {
            continue;
        }
        let score = match (&p.variant, &platform.variant) {
            (Some(a), Some(b)) if a == b => 2,
            (None, _) => 1,
            (Some(a), None) if a.is_empty() => 1,
            _ => continue,
        };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, entry.digest));
        }
    }
    best.map(|(_, digest)| digest).ok_or_else(|| {
        format!(
            "the image index has no manifest for {}/{}{}",
            platform.os,
            platform.architecture,
            platform
                .variant
                .as_deref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, Option<&str>, &str)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(os, arch, variant, digest)| {
                let mut platform = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": MANIFEST_TYPES[0], "digest": digest, "size": 1,
                    "platform": platform,
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap_or_default()
    }

    fn platform(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn an_index_yields_the_hosts_platform() {
        let multi = index(&[
            ("linux", "arm", Some("v6"), "sha256:arm6"),
            ("linux", "arm", Some("v7"), "sha256:arm7"),
            ("linux", "amd64", None, "sha256:amd64"),
            ("windows", "amd64", None, "sha256:win"),
            ("linux", "arm64", None, "sha256:arm64"),
            ("unknown", "unknown", None, "sha256:attestation"),
        ]);
        let pick = |p: Platform| choose_platform(&multi, &p);
        assert_eq!(pick(platform("amd64", None)), Ok("sha256:amd64".into()));
        assert_eq!(pick(platform("arm", Some("v7"))), Ok("sha256:arm7".into()));
        assert_eq!(
            pick(platform("arm64", Some("v8"))),
            Ok("sha256:arm64".into())
        );
        let none = pick(platform("s390x", None)).expect_err("no s390x");
        assert!(none.contains("no manifest for linux/s390x"), "{none}");
        // An exact variant beats none.
        let both = index(&[
            ("linux", "arm64", None, "sha256:plain"),
            ("linux", "arm64", Some("v8"), "sha256:v8"),
        ]);
        assert_eq!(
            choose_platform(&both, &platform("arm64", Some("v8"))),
            Ok("sha256:v8".into())
        );
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn media_types_come_from_the_document_when_it_leaves_them_out() {
        assert_eq!(
            media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            Ok(INDEX_TYPES[0].to_string())
        );
        assert_eq!(
            media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            Ok(MANIFEST_TYPES[0].to_string())
        );
        assert_eq!(
            media_type(br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#),
            Ok(MANIFEST_TYPES[1].to_string())
        );
        assert!(media_type(b"not json").is_err());
    }

    #[test]
    fn pull_secrets_go_to_the_images_registry_never_to_a_mirror() {
        let config = RegistryConfig::parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example\"]\n  \"registry.example:5000\":\n    endpoint: [\"http://registry.example:5000\"]\nconfigs:\n  mirror.example:\n    auth: {username: site, password: x}\n",
            std::path::Path::new("registries.yaml"),
        )
        .expect("valid");
        let mut keyring = Keyring::default();
        keyring
            .add_dockerconfigjson(
                br#"{"auths":{"docker.io":{"username":"hub","password":"p"},"registry.example:5000":{"username":"team","password":"p"}}}"#,
            )
            .expect("valid");
        let users = |image: &str| -> Vec<Vec<String>> {
            let image = ImageRef::parse(image).expect("reference");
            config
                .endpoints(&image.registry, &image.repository)
                .iter()
                .map(|endpoint| {
                    credentials_for(&config, &image, endpoint, &keyring)
                        .into_iter()
                        .map(|c| c.map_or_else(|| "-".to_string(), |c| c.username))
                        .collect()
                })
                .collect()
        };
        // The mirror gets the site's credential and anonymity; Docker Hub itself the pod's.
        assert_eq!(users("nginx"), vec![vec!["site", "-"], vec!["hub", "-"]]);
        // A registry reached over plain HTTP is still the registry the image names (then
        // HTTPS, the default endpoint, as the fallback k3s keeps).
        assert_eq!(
            users("registry.example:5000/team/app:v1"),
            vec![vec!["team", "-"], vec!["team", "-"]]
        );
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn a_failure_says_its_causes_once_each() {
        let error = Layer(
            "error sending request for url (https://localhost:5000/v2/)",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer(
                    "invalid peer certificate: UnknownIssuer",
                    None,
                ))),
            ))),
        );
        assert_eq!(
            with_causes(&error),
            "error sending request for url (https://localhost:5000/v2/): client error (Connect): invalid peer certificate: UnknownIssuer"
        );
        let repeated = Layer(
            "unauthorized: bad password",
            Some(Box::new(Layer("bad password", None))),
        );
        assert_eq!(with_causes(&repeated), "unauthorized: bad password");
    }
}
