//! Container images without a registry: pack a root filesystem into an OCI archive, import OCI
//! image-layout or docker archives into containerd, and resolve a pod's image to the snapshot
//! and configuration a container starts from.
//!
//! containerd 1.6 has no Transfer service, so importing is the client's job, as `ctr image
//! import` does it: write every blob to the content store (labelled so containerd's garbage
//! collector keeps what the image refers to), record the image, and unpack its layers into
//! snapshots named by their chain IDs. All of it happens under a lease, so nothing half-imported
//! is collected, and an interrupted import leaves nothing the next one trips over.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest as CreateLeaseRequest, DeleteRequest,
    GetImageRequest, Image, Info, InfoRequest, ListImagesRequest, ReadContentRequest,
    UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor;
use futures_util::StreamExt;
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, Digest, ImageConfiguration, ImageConfigurationBuilder,
    ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder,
};
use sha2::{Digest as _, Sha256};
use shipshape_api::image_ref::ImageRef;
use shipshape_registry::pull::{Descriptor as PullDescriptor, Platform, PullError, Resolved};
use shipshape_registry::{Keyring, Puller};
use std::sync::Arc;

use crate::containerd::{Containerd, RuntimeError, request};

/// The snapshotter every image is unpacked into and every container runs on.
pub const SNAPSHOTTER: &str = "overlayfs";

/// The annotation containerd (and `ctr image import`) reads the image name from.
const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for a tag (or a full reference, as some tools write it).
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

fn invalid(text: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(text.into())
}

/// Normalises an image reference as containerd (and Docker) do: `busybox` is
/// `docker.io/library/busybox:latest`, `me/app:1` is `docker.io/me/app:1`, and a first part
/// with a dot, a colon or `localhost` names a registry.
pub fn normalize(reference: &str) -> Result<String, RuntimeError> {
    let reference = reference.trim();
    if reference.is_empty()
        || reference.contains(char::is_whitespace)
        || reference.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err(invalid(format!(
            "{reference:?} is not an image reference (lower case, no spaces: busybox:1.35)"
        )));
    }
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        Some(_) => ("docker.io".to_string(), name.to_string()),
        None => ("docker.io".to_string(), format!("library/{name}")),
    };
    let last = rest.rsplit('/').next().unwrap_or(&rest);
    let tagged = last.contains(':');
    let mut out = format!("{domain}/{rest}");
    if !tagged && digest.is_none() {
        out.push_str(":latest");
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(digest);
    }
    Ok(out)
}

fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut text = String::with_capacity(71);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The chain IDs of a stack of layers (OCI image spec): the first is its diff ID, each next
/// one the digest of `parent + " " + diff_id`. Snapshots are named by them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

// ---------------------------------------------------------------------------------------------
// pack

/// What `image pack` built.
#[derive(Debug)]
pub struct Packed {
    /// The normalised name it carries.
    pub name: String,
    /// The manifest digest.
    pub digest: String,
    /// The archive's size in bytes.
    pub size: u64,
}

/// Builds an OCI image-layout archive holding `root` as one layer, named `tag`, at `out`.
/// The same directory packs to the same digest (entries sorted, times and owners zeroed).
pub fn pack(root: &Path, tag: &str, out: &Path) -> Result<Packed, RuntimeError> {
    pack_layers(&[root], tag, out)
}

/// [`pack`] with one layer per directory, bottom first: a several-layer image (the pull
/// benchmark's, a test's).
pub fn pack_layers(roots: &[&Path], tag: &str, out: &Path) -> Result<Packed, RuntimeError> {
    let name = normalize(tag)?;
    let mut layers: Vec<(String, Vec<u8>)> = Vec::with_capacity(roots.len());
    for root in roots {
        if !root.is_dir() {
            return Err(invalid(format!("{}: not a directory", root.display())));
        }
        let layer = layer_tar(root)?;
        layers.push((sha256_digest(&layer), layer));
    }
    if layers.is_empty() {
        return Err(invalid("an image needs at least one layer".to_string()));
    }
    let oci = |e: oci_spec::OciSpecError| invalid(format!("building the image: {e}"));
    let digest = |text: &str| Digest::from_str(text).map_err(oci);
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::default())
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .env(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                ])
                .cmd(vec!["sh".to_string()])
                .build()
                .map_err(oci)?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(layers.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>())
                .build()
                .map_err(oci)?,
        )
        .build()
        .map_err(oci)?;
    let config_bytes = serde_json::to_vec(&config).map_err(|e| invalid(e.to_string()))?;
    let config_digest = sha256_digest(&config_bytes);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(digest(&config_digest)?)
                .size(config_bytes.len() as u64)
                .build()
                .map_err(oci)?,
        )
        .layers(
            layers
                .iter()
                .map(|(layer_digest, layer)| {
                    DescriptorBuilder::default()
                        .media_type(MediaType::ImageLayer)
                        .digest(digest(layer_digest)?)
                        .size(layer.len() as u64)
                        .build()
                        .map_err(oci)
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
        .build()
        .map_err(oci)?;
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| invalid(e.to_string()))?;
    let manifest_digest = sha256_digest(&manifest_bytes);
    let tag_only = name
        .rsplit_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![
            DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(digest(&manifest_digest)?)
                .size(manifest_bytes.len() as u64)
                .annotations(HashMap::from([
                    (NAME_ANNOTATION.to_string(), name.clone()),
                    (REF_ANNOTATION.to_string(), tag_only),
                ]))
                .build()
                .map_err(oci)?,
        ])
        .build()
        .map_err(oci)?;
    let index_bytes = serde_json::to_vec(&index).map_err(|e| invalid(e.to_string()))?;

    let io = |e| RuntimeError::io(format!("writing {}", out.display()), e);
    let temporary = out.with_extension("partial");
    let file = std::fs::File::create(&temporary).map_err(io)?;
    let mut archive = tar::Builder::new(file);
    let mut add = |path: String, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        archive.append_data(&mut header, path, bytes)
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io)?;
    add("index.json".into(), &index_bytes).map_err(io)?;
    let blobs = [
        (&manifest_digest, &manifest_bytes),
        (&config_digest, &config_bytes),
    ]
    .into_iter()
    .chain(layers.iter().map(|(d, l)| (d, l)));
    for (digest, bytes) in blobs {
        let hex = digest.trim_start_matches("sha256:");
        add(format!("blobs/sha256/{hex}"), bytes).map_err(io)?;
    }
    archive
        .into_inner()
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&temporary, out).map_err(io)?;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Packed {
        name,
        digest: manifest_digest,
        size,
    })
}

/// One uncompressed layer holding everything under `root`, in sorted order.
fn layer_tar(root: &Path) -> Result<Vec<u8>, RuntimeError> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut stack = vec![root.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(dir) = stack.pop() {
        let read = std::fs::read_dir(&dir)
            .map_err(|e| RuntimeError::io(format!("reading {}", dir.display()), e))?;
        for entry in read {
            let entry =
                entry.map_err(|e| RuntimeError::io(format!("reading {}", dir.display()), e))?;
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                stack.push(path.clone());
            }
            entries.push(path);
        }
    }
    entries.sort();
    for path in entries {
        let relative = path.strip_prefix(root).unwrap_or(&path);
        builder
            .append_path_with_name(&path, relative)
            .map_err(|e| RuntimeError::io(format!("packing {}", path.display()), e))?;
    }
    builder
        .into_inner()
        .map_err(|e| RuntimeError::io("packing the layer", e))
}

// ---------------------------------------------------------------------------------------------
// import

/// An image found in an archive, ready to be written.
#[derive(Debug)]
struct ArchiveImage {
    name: String,
    /// What the image record points at (an index or a manifest).
    target: Descriptor,
    /// The manifest for this platform.
    manifest: ImageManifest,
    manifest_digest: String,
    config: ImageConfiguration,
    config_digest: String,
}

/// An archive read into memory: its blobs by digest and the images it names.
#[derive(Debug)]
struct Archive {
    blobs: HashMap<String, Vec<u8>>,
    images: Vec<ArchiveImage>,
    /// Labels each blob gets so containerd's collector keeps what it refers to.
    labels: HashMap<String, BTreeMap<String, String>>,
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: size as i64,
        annotations: HashMap::new(),
    }
}

/// Reads an OCI image layout or a docker archive (`docker save`).
fn read_archive(path: &Path) -> Result<Archive, RuntimeError> {
    let what = path.display().to_string();
    let file =
        std::fs::File::open(path).map_err(|e| RuntimeError::io(format!("opening {what}"), e))?;
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("{what}: not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("{what}: damaged tar archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| invalid(format!("{what}: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| invalid(format!("{what}: {name}: {e}")))?;
        files.insert(name, bytes);
    }
    if let Some(index) = files.get("index.json") {
        let index: ImageIndex = serde_json::from_slice(index)
            .map_err(|e| invalid(format!("{what}: index.json: {e}")))?;
        read_oci(&what, &index, files)
    } else if let Some(manifest) = files.get("manifest.json") {
        let manifest: serde_json::Value = serde_json::from_slice(manifest)
            .map_err(|e| invalid(format!("{what}: manifest.json: {e}")))?;
        read_docker(&what, &manifest, files)
    } else {
        Err(invalid(format!(
            "{what}: neither an OCI image layout (index.json) nor a docker archive (manifest.json)"
        )))
    }
}

fn blob<'a>(
    what: &str,
    blobs: &'a HashMap<String, Vec<u8>>,
    digest: &str,
) -> Result<&'a [u8], RuntimeError> {
    blobs
        .get(digest)
        .map(Vec::as_slice)
        .ok_or_else(|| invalid(format!("{what}: blob {digest} is referenced but missing")))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
    name: &str,
) -> Result<T, RuntimeError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("{what}: {name}: {e}")))
}

fn read_oci(
    what: &str,
    index: &ImageIndex,
    files: HashMap<String, Vec<u8>>,
) -> Result<Archive, RuntimeError> {
    let mut blobs = HashMap::new();
    for (name, bytes) in files {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let digest = format!("sha256:{hex}");
            if sha256_digest(&bytes) != digest {
                return Err(invalid(format!(
                    "{what}: {name}: content does not match its digest"
                )));
            }
            blobs.insert(digest, bytes);
        }
    }
    let mut archive = Archive {
        blobs,
        images: Vec::new(),
        labels: HashMap::new(),
    };
    for entry in index.manifests() {
        let annotations = entry.annotations().clone().unwrap_or_default();
        let name = match (
            annotations.get(NAME_ANNOTATION),
            annotations.get(REF_ANNOTATION),
        ) {
            (Some(name), _) => normalize(name)?,
            (None, Some(reference)) if reference.contains('/') || reference.contains(':') => {
                normalize(reference)?
            }
            _ => continue,
        };
        let digest = entry.digest().to_string();
        let media_type = entry.media_type().to_string();
        let target = descriptor(&media_type, &digest, entry.size() as usize);
        let mut manifest_digest = digest.clone();
        let bytes = blob(what, &archive.blobs, &digest)?;
        if media_type.contains("index") || media_type.contains("manifest.list") {
            // A multi-platform image: keep this machine's manifest.
            let nested: ImageIndex = parse_json(what, bytes, &digest)?;
            let arch = Arch::default().to_string();
            let chosen = nested
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_none_or(|p| {
                        p.architecture().to_string() == arch && p.os().to_string() == "linux"
                    })
                })
                .ok_or_else(|| invalid(format!("{what}: {name} has no linux/{arch} image")))?;
            manifest_digest = chosen.digest().to_string();
            let labels = archive.labels.entry(digest.clone()).or_default();
            for (i, m) in nested.manifests().iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.m.{i}"),
                    m.digest().to_string(),
                );
            }
        }
        let manifest: ImageManifest = parse_json(
            what,
            blob(what, &archive.blobs, &manifest_digest)?,
            &manifest_digest,
        )?;
        let config_digest = manifest.config().digest().to_string();
        let config: ImageConfiguration = parse_json(
            what,
            blob(what, &archive.blobs, &config_digest)?,
            &config_digest,
        )?;
        archive.images.push(ArchiveImage {
            name,
            target,
            manifest,
            manifest_digest,
            config,
            config_digest,
        });
    }
    if archive.images.is_empty() {
        return Err(invalid(format!(
            "{what}: no image in index.json carries a name ({NAME_ANNOTATION} annotation); \
             pack it with `shipshape image pack DIR --tag NAME:TAG`"
        )));
    }
    Ok(archive)
}

fn read_docker(
    what: &str,
    manifest: &serde_json::Value,
    files: HashMap<String, Vec<u8>>,
) -> Result<Archive, RuntimeError> {
    let entries = manifest
        .as_array()
        .ok_or_else(|| invalid(format!("{what}: manifest.json is not a list")))?;
    let mut archive = Archive {
        blobs: HashMap::new(),
        images: Vec::new(),
        labels: HashMap::new(),
    };
    for entry in entries {
        let text = |field: &str| entry.get(field).and_then(serde_json::Value::as_str);
        let config_path = text("Config")
            .ok_or_else(|| invalid(format!("{what}: manifest.json: an entry has no Config")))?;
        let config_bytes = files
            .get(config_path)
            .ok_or_else(|| invalid(format!("{what}: {config_path} is missing")))?
            .clone();
        let config_digest = sha256_digest(&config_bytes);
        let config: ImageConfiguration = parse_json(what, &config_bytes, config_path)?;
        archive.blobs.insert(config_digest.clone(), config_bytes);
        let mut layers = Vec::new();
        for layer in entry
            .get("Layers")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = layer
                .as_str()
                .ok_or_else(|| invalid(format!("{what}: manifest.json: a layer is not a path")))?;
            let bytes = files
                .get(path)
                .ok_or_else(|| invalid(format!("{what}: layer {path} is missing")))?
                .clone();
            let gzip = bytes.starts_with(&[0x1f, 0x8b]);
            let media_type = if gzip {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            };
            let digest = sha256_digest(&bytes);
            layers.push(serde_json::json!({
                "mediaType": media_type, "digest": digest, "size": bytes.len(),
            }));
            archive.blobs.insert(digest, bytes);
        }
        let manifest_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": archive.blobs[&config_digest].len(),
            },
            "layers": layers,
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest_json).map_err(|e| invalid(e.to_string()))?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        let manifest: ImageManifest = parse_json(what, &manifest_bytes, "manifest")?;
        let target = descriptor(
            "application/vnd.docker.distribution.manifest.v2+json",
            &manifest_digest,
            manifest_bytes.len(),
        );
        archive
            .blobs
            .insert(manifest_digest.clone(), manifest_bytes);
        for tag in entry
            .get("RepoTags")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
        {
            archive.images.push(ArchiveImage {
                name: normalize(tag)?,
                target: target.clone(),
                manifest: manifest.clone(),
                manifest_digest: manifest_digest.clone(),
                config: config.clone(),
                config_digest: config_digest.clone(),
            });
        }
    }
    if archive.images.is_empty() {
        return Err(invalid(format!(
            "{what}: manifest.json names no image (RepoTags)"
        )));
    }
    Ok(archive)
}

/// Adds the labels that tie a manifest to its config and layers, and a config to its unpacked
/// snapshot, so containerd's collector keeps them as long as the image exists.
fn label_references(archive: &mut Archive) {
    for image in &archive.images {
        let labels = archive
            .labels
            .entry(image.manifest_digest.clone())
            .or_default();
        labels.insert(
            "containerd.io/gc.ref.content.config".into(),
            image.config_digest.clone(),
        );
        for (i, layer) in image.manifest.layers().iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest().to_string(),
            );
        }
        let diff_ids = image.config.rootfs().diff_ids().clone();
        if let Some(top) = chain_ids(&diff_ids).last() {
            archive
                .labels
                .entry(image.config_digest.clone())
                .or_default()
                .insert(
                    format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                    top.clone(),
                );
        }
    }
}

/// What an import did, per image.
#[derive(Debug)]
pub struct Imported {
    /// The normalised image names.
    pub names: Vec<String>,
    /// Bytes of blobs in the archive.
    pub bytes: u64,
}

/// Imports the archive at `path` into each of `namespaces`: content, image records, snapshots.
/// Importing the same archive again changes nothing.
pub async fn import(
    containerd: &Containerd,
    namespaces: &[String],
    path: &Path,
) -> Result<Imported, RuntimeError> {
    let owned = path.to_path_buf();
    let mut archive = tokio::task::spawn_blocking(move || read_archive(&owned))
        .await
        .map_err(|e| invalid(format!("reading the archive: {e}")))??;
    label_references(&mut archive);
    for namespace in namespaces {
        import_into(containerd, namespace, &archive).await?;
    }
    Ok(Imported {
        names: archive.images.iter().map(|i| i.name.clone()).collect(),
        bytes: archive.blobs.values().map(|b| b.len() as u64).sum(),
    })
}

async fn import_into(
    containerd: &Containerd,
    namespace: &str,
    archive: &Archive,
) -> Result<(), RuntimeError> {
    let lease_id = create_lease(containerd, namespace, "import").await?;
    let result = import_leased(containerd, namespace, archive, &lease_id).await;
    delete_lease(containerd, namespace, lease_id).await;
    result
}

/// A lease (expiring in an hour, should we die holding it) that keeps what is written under it
/// from containerd's collector until the image record refers to it.
async fn create_lease(
    containerd: &Containerd,
    namespace: &str,
    what: &str,
) -> Result<String, RuntimeError> {
    let lease_id = format!("shipshape-{what}-{}", uuid::Uuid::new_v4());
    let expire = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    LeasesClient::new(containerd.channel())
        .create(request(
            namespace,
            CreateLeaseRequest {
                id: lease_id.clone(),
                labels: HashMap::from([("containerd.io/gc.expire".into(), expire.to_string())]),
            },
            None,
        ))
        .await
        .map_err(|s| RuntimeError::call("leases.Create", s))?;
    Ok(lease_id)
}

/// Ends a lease; one that cannot be deleted expires by itself.
async fn delete_lease(containerd: &Containerd, namespace: &str, lease_id: String) {
    let _ = LeasesClient::new(containerd.channel())
        .delete(request(
            namespace,
            DeleteRequest {
                id: lease_id,
                sync: false,
            },
            None,
        ))
        .await;
}

async fn import_leased(
    containerd: &Containerd,
    namespace: &str,
    archive: &Archive,
    lease: &str,
) -> Result<(), RuntimeError> {
    let channel = containerd.channel();
    let mut content = ContentClient::new(channel.clone());
    let mut digests: Vec<&String> = archive.blobs.keys().collect();
    digests.sort();
    for digest in digests {
        let bytes = &archive.blobs[digest];
        let labels: HashMap<String, String> = archive
            .labels
            .get(digest)
            .map(|l| l.clone().into_iter().collect())
            .unwrap_or_default();
        write_blob(&mut content, namespace, lease, digest, bytes, &labels).await?;
    }
    for image in &archive.images {
        unpack(containerd, namespace, lease, image).await?;
        // Imported by hand: no registry can give it back, so image GC keeps it.
        record_image(containerd, namespace, lease, image, true).await?;
    }
    Ok(())
}

async fn write_blob(
    content: &mut ContentClient<containerd_client::tonic::transport::Channel>,
    namespace: &str,
    lease: &str,
    digest: &str,
    bytes: &[u8],
    labels: &HashMap<String, String>,
) -> Result<(), RuntimeError> {
    const CHUNK: usize = 1 << 20;
    let reference = format!("shipshape-{digest}");
    let total = bytes.len() as i64;
    let mut messages = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let end = (offset + CHUNK).min(bytes.len());
        messages.push(WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.clone(),
            total,
            expected: digest.to_string(),
            offset: offset as i64,
            data: bytes[offset..end].to_vec(),
            labels: HashMap::new(),
        });
        offset = end;
    }
    messages.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference,
        total,
        expected: digest.to_string(),
        offset: total,
        data: Vec::new(),
        labels: labels.clone(),
    });
    let call = format!("content.Write {digest}");
    let written = async {
        let mut responses = content
            .write(request(
                namespace,
                futures_util::stream::iter(messages),
                Some(lease),
            ))
            .await?
            .into_inner();
        while let Some(response) = responses.next().await {
            response?;
        }
        Ok::<_, containerd_client::tonic::Status>(())
    };
    match written.await {
        Ok(()) => Ok(()),
        // Present already (another namespace, an earlier import): make sure of its labels.
        Err(status) if status.code() == containerd_client::tonic::Code::AlreadyExists => {
            if labels.is_empty() {
                return Ok(());
            }
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            content
                .update(request(
                    namespace,
                    UpdateRequest {
                        info: Some(Info {
                            digest: digest.to_string(),
                            size: 0,
                            created_at: None,
                            updated_at: None,
                            labels: labels.clone(),
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    },
                    Some(lease),
                ))
                .await
                .map_err(|s| RuntimeError::call(format!("content.Update {digest}"), s))?;
            Ok(())
        }
        Err(status) => Err(RuntimeError::call(call, status)),
    }
}

/// Unpacks an image's layers into snapshots named by chain ID, skipping those already there.
async fn unpack(
    containerd: &Containerd,
    namespace: &str,
    lease: &str,
    image: &ArchiveImage,
) -> Result<(), RuntimeError> {
    let channel = containerd.channel();
    let mut snapshots = SnapshotsClient::new(channel.clone());
    let mut diff = DiffClient::new(channel);
    let diff_ids = image.config.rootfs().diff_ids().clone();
    let layers = image.manifest.layers();
    if diff_ids.len() != layers.len() {
        return Err(invalid(format!(
            "{}: {} layers but {} diff IDs in its config",
            image.name,
            layers.len(),
            diff_ids.len()
        )));
    }
    let chains = chain_ids(&diff_ids);
    let mut parent = String::new();
    for (layer, chain) in layers.iter().zip(&chains) {
        let exists = snapshots
            .stat(request(
                namespace,
                StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: chain.clone(),
                },
                None,
            ))
            .await
            .is_ok();
        if !exists {
            let key = format!("shipshape-extract-{}-{chain}", uuid::Uuid::new_v4());
            let mounts = snapshots
                .prepare(request(
                    namespace,
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: HashMap::new(),
                    },
                    Some(lease),
                ))
                .await
                .map_err(|s| RuntimeError::call(format!("snapshots.Prepare {chain}"), s))?
                .into_inner()
                .mounts;
            let applied = diff
                .apply(request(
                    namespace,
                    ApplyRequest {
                        diff: Some(descriptor(
                            layer.media_type().as_ref(),
                            layer.digest().as_ref(),
                            layer.size() as usize,
                        )),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    Some(lease),
                ))
                .await;
            let committed = match applied {
                Ok(_) => snapshots
                    .commit(request(
                        namespace,
                        CommitSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            name: chain.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        },
                        Some(lease),
                    ))
                    .await
                    .map(|_| ())
                    .or_else(|s| {
                        // Someone unpacked the same layer meanwhile: theirs will do.
                        if s.code() == containerd_client::tonic::Code::AlreadyExists {
                            Ok(())
                        } else {
                            Err(RuntimeError::call(format!("snapshots.Commit {chain}"), s))
                        }
                    }),
                Err(s) => Err(RuntimeError::call(
                    format!("diff.Apply {} ({})", layer.digest(), image.name),
                    s,
                )),
            };
            if committed.is_err() || snapshots_has_key(&mut snapshots, namespace, &key).await {
                let _ = snapshots
                    .remove(request(
                        namespace,
                        RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key,
                        },
                        None,
                    ))
                    .await;
            }
            committed?;
        }
        parent = chain.clone();
    }
    Ok(())
}

async fn snapshots_has_key(
    snapshots: &mut SnapshotsClient<containerd_client::tonic::transport::Channel>,
    namespace: &str,
    key: &str,
) -> bool {
    snapshots
        .stat(request(
            namespace,
            StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            },
            None,
        ))
        .await
        .is_ok()
}

// ---------------------------------------------------------------------------------------------
// resolve

/// What a container needs from its image: the snapshot to start from and the defaults.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The normalised name.
    pub name: String,
    /// The image ID Kubernetes reports: `repository@sha256:…` of what the name points at.
    pub id: String,
    /// The chain ID of the top layer: the parent of a container's snapshot.
    pub top_layer: String,
    /// Entrypoint, cmd, env, working directory and user from the image config.
    pub entrypoint: Vec<String>,
    /// The default arguments.
    pub cmd: Vec<String>,
    /// Environment the image sets.
    pub env: Vec<String>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// The user the image runs as (`1000`, `nobody`, `1000:1000`).
    pub user: Option<String>,
}

/// Looks `name` up in `namespace`; `Ok(None)` when the image is not there.
pub async fn resolve(
    containerd: &Containerd,
    namespace: &str,
    name: &str,
) -> Result<Option<ResolvedImage>, RuntimeError> {
    let channel = containerd.channel();
    let found = ImagesClient::new(channel.clone())
        .get(request(
            namespace,
            GetImageRequest {
                name: name.to_string(),
            },
            None,
        ))
        .await;
    let image = match found {
        Ok(response) => response.into_inner().image,
        Err(s) if s.code() == containerd_client::tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(RuntimeError::call(format!("images.Get {name}"), s)),
    };
    let Some(target) = image.and_then(|i| i.target) else {
        return Ok(None);
    };
    let manifest = host_manifest(containerd, namespace, name, &target).await?;
    let config_digest = manifest.config().digest().to_string();
    let config: ImageConfiguration = parse_json(
        name,
        &read_blob(containerd, namespace, &config_digest).await?,
        &config_digest,
    )?;
    let top_layer = chain_ids(config.rootfs().diff_ids())
        .pop()
        .ok_or_else(|| invalid(format!("{name}: the image has no layers")))?;
    let defaults = config.config().clone().unwrap_or_default();
    // Kubernetes' imageID: the repository and the digest the name points at, as containerd's
    // CRI reports it (`docker.io/library/nginx@sha256:…`), so an auditor can fetch those bytes.
    let repository = match ImageRef::parse(name) {
        Ok(parsed) => parsed.name(),
        Err(_) => name.split(['@']).next().unwrap_or(name).to_string(),
    };
    Ok(Some(ResolvedImage {
        name: name.to_string(),
        id: format!("{repository}@{}", target.digest),
        top_layer,
        entrypoint: defaults.entrypoint().clone().unwrap_or_default(),
        cmd: defaults.cmd().clone().unwrap_or_default(),
        env: defaults.env().clone().unwrap_or_default(),
        working_dir: defaults.working_dir().clone().filter(|d| !d.is_empty()),
        user: defaults.user().clone().filter(|u| !u.is_empty()),
    }))
}

async fn read_blob(
    containerd: &Containerd,
    namespace: &str,
    digest: &str,
) -> Result<Vec<u8>, RuntimeError> {
    let call = || format!("content.Read {digest}");
    let mut stream = ContentClient::new(containerd.channel())
        .read(request(
            namespace,
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
            None,
        ))
        .await
        .map_err(|s| RuntimeError::call(call(), s))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend(chunk.map_err(|s| RuntimeError::call(call(), s))?.data);
    }
    Ok(bytes)
}

/// The label containerd's CRI puts on images its garbage collection must keep; imported
/// images carry it.
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";

/// One image a node's namespace holds, as `shipshape image ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedImage {
    /// Its name (`docker.io/library/busybox:1.36`).
    pub name: String,
    /// The digest its name points at (an index or a manifest).
    pub digest: String,
    /// Its layers' bytes for this host's platform, as the manifest states them.
    pub size: u64,
    /// Kept by image garbage collection whatever the disk (imported by hand).
    pub pinned: bool,
}

/// The images of `namespace`, by name. An image whose manifest cannot be read is listed with
/// size 0 rather than hiding the rest.
pub async fn list(
    containerd: &Containerd,
    namespace: &str,
) -> Result<Vec<ListedImage>, RuntimeError> {
    let images = ImagesClient::new(containerd.channel())
        .list(request(
            namespace,
            ListImagesRequest { filters: vec![] },
            None,
        ))
        .await
        .map_err(|s| RuntimeError::call("images.List", s))?
        .into_inner()
        .images;
    let mut listed = Vec::with_capacity(images.len());
    for image in images {
        let Some(target) = image.target else {
            continue;
        };
        let size = manifest_size(containerd, namespace, &image.name, &target)
            .await
            .unwrap_or(0);
        listed.push(ListedImage {
            pinned: image
                .labels
                .get(PINNED_LABEL)
                .is_some_and(|v| v == "pinned"),
            name: image.name,
            digest: target.digest,
            size,
        });
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listed)
}

/// The layers' bytes of the manifest `target` points at (through an index for this host).
async fn manifest_size(
    containerd: &Containerd,
    namespace: &str,
    name: &str,
    target: &Descriptor,
) -> Result<u64, RuntimeError> {
    let manifest = host_manifest(containerd, namespace, name, target).await?;
    Ok(manifest.layers().iter().map(|l| l.size()).sum())
}

/// The manifest image `name`'s `target` means on this host: itself, or the host platform's
/// entry when it is an index or a Docker manifest list.
async fn host_manifest(
    containerd: &Containerd,
    namespace: &str,
    name: &str,
    target: &Descriptor,
) -> Result<ImageManifest, RuntimeError> {
    let mut digest = target.digest.clone();
    let mut bytes = read_blob(containerd, namespace, &digest).await?;
    if target.media_type.contains("index") || target.media_type.contains("manifest.list") {
        digest = shipshape_registry::pull::choose_platform(&bytes, &Platform::host())
            .map_err(|m| invalid(format!("{name}: {m}")))?;
        bytes = read_blob(containerd, namespace, &digest).await?;
    }
    parse_json(name, &bytes, &digest)
}

// ---------------------------------------------------------------------------------------------
// pull

/// Why a pull failed: the registry's answer, or containerd's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PullFailure {
    /// The registry (or the way to it) failed; its words.
    #[error(transparent)]
    Registry(#[from] PullError),
    /// Storing what arrived failed.
    #[error("storing the image: {0}")]
    Runtime(String),
}

impl From<RuntimeError> for PullFailure {
    fn from(error: RuntimeError) -> Self {
        PullFailure::Runtime(error.to_string())
    }
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The image, ready to start containers from.
    pub image: ResolvedImage,
    /// Bytes downloaded (layers this namespace or another already had are not).
    pub downloaded: u64,
    /// The image's size: its layers as the manifest states them.
    pub size: u64,
    /// The endpoint it came from (`registry-1.docker.io`, a mirror).
    pub endpoint: String,
}

/// How many layers download at once.
const PARALLEL_LAYERS: usize = 4;

/// The bytes one content write carries (containerd's own copy buffer is 1 MiB).
const WRITE_CHUNK: usize = 1 << 20;

/// How far a pull is, for a progress bar: the image's layer bytes once its manifest is read,
/// and the bytes in the content store so far (layers already present count as done).
#[derive(Debug, Default)]
pub struct PullProgress {
    /// The layers' bytes as the manifest states them (0 until it is read).
    pub total: std::sync::atomic::AtomicU64,
    /// Bytes in the content store so far.
    pub done: std::sync::atomic::AtomicU64,
}

/// Pulls `image` into `namespace`: the manifest (the host's platform from an index) and config
/// from the first endpoint that serves them, then each layer the content store does not have,
/// streamed in with its digest and size checked by containerd before it is committed, then
/// unpacked into snapshots and recorded under the image's name. Under a lease throughout, so
/// nothing half-pulled is used or kept; a layer another namespace already has is linked, not
/// downloaded again.
pub async fn pull(
    containerd: &Containerd,
    namespace: &str,
    puller: &Puller,
    image: &ImageRef,
    keyring: &Keyring,
    progress: &Arc<PullProgress>,
) -> Result<Pulled, PullFailure> {
    let resolved = puller.resolve(image, keyring).await?;
    progress
        .total
        .store(resolved.layer_bytes(), std::sync::atomic::Ordering::Relaxed);
    let lease_id = create_lease(containerd, namespace, "pull").await?;
    let result = pull_leased(
        containerd, namespace, puller, &resolved, &lease_id, progress,
    )
    .await;
    delete_lease(containerd, namespace, lease_id).await;
    let downloaded = result?;
    let name = image.to_string();
    let found = resolve(containerd, namespace, &name)
        .await?
        .ok_or_else(|| PullFailure::Runtime(format!("{name} is not recorded after its pull")))?;
    Ok(Pulled {
        image: found,
        downloaded,
        size: resolved.layer_bytes(),
        endpoint: resolved.endpoint.host.clone(),
    })
}

async fn pull_leased(
    containerd: &Containerd,
    namespace: &str,
    puller: &Puller,
    resolved: &Resolved,
    lease: &str,
    progress: &Arc<PullProgress>,
) -> Result<u64, PullFailure> {
    let name = resolved.image.to_string();
    let manifest: ImageManifest =
        parse_json(&name, &resolved.manifest.bytes, &resolved.manifest.digest)?;
    let config: ImageConfiguration =
        parse_json(&name, &resolved.config.bytes, &resolved.config.digest)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != resolved.layers.len() {
        return Err(PullFailure::Registry(PullError::Invalid {
            image: name,
            message: format!(
                "{} layers but {} diff IDs in its config",
                resolved.layers.len(),
                diff_ids.len()
            ),
        }));
    }
    // Layers first: a manifest in the store names only content that is there.
    type Download<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, PullFailure>> + Send + 'a>>;
    let fetches: Vec<Download<'_>> = resolved
        .layers
        .iter()
        .map(|layer| {
            Box::pin(fetch_layer(
                containerd,
                namespace,
                puller,
                resolved,
                layer,
                lease,
                progress.clone(),
            )) as Download<'_>
        })
        .collect();
    let downloads = futures_util::stream::iter(fetches)
        .buffer_unordered(PARALLEL_LAYERS)
        .collect::<Vec<_>>()
        .await;
    let mut downloaded = 0u64;
    for result in downloads {
        downloaded = downloaded.saturating_add(result?);
    }
    let mut content = ContentClient::new(containerd.channel());
    let mut config_labels = HashMap::new();
    if let Some(top) = chain_ids(&diff_ids).last() {
        config_labels.insert(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            top.clone(),
        );
    }
    write_blob(
        &mut content,
        namespace,
        lease,
        &resolved.config.digest,
        &resolved.config.bytes,
        &config_labels,
    )
    .await?;
    let mut manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        resolved.config.digest.clone(),
    )]);
    for (i, layer) in resolved.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    write_blob(
        &mut content,
        namespace,
        lease,
        &resolved.manifest.digest,
        &resolved.manifest.bytes,
        &manifest_labels,
    )
    .await?;
    if let Some(index) = &resolved.index {
        let labels = HashMap::from([(
            "containerd.io/gc.ref.content.m.0".to_string(),
            resolved.manifest.digest.clone(),
        )]);
        write_blob(
            &mut content,
            namespace,
            lease,
            &index.digest,
            &index.bytes,
            &labels,
        )
        .await?;
    }
    let target = resolved.target();
    let image = ArchiveImage {
        name: name.clone(),
        target: descriptor(&target.media_type, &target.digest, target.bytes.len()),
        manifest,
        manifest_digest: resolved.manifest.digest.clone(),
        config,
        config_digest: resolved.config.digest.clone(),
    };
    unpack(containerd, namespace, lease, &image).await?;
    record_image(containerd, namespace, lease, &image, false).await?;
    Ok(downloaded)
}

/// Puts one layer into the content store unless it is there: this namespace's already, or
/// another's (containerd links shared content into a namespace when a write names its
/// digest), else streamed from the registry. Returns the bytes downloaded.
async fn fetch_layer(
    containerd: &Containerd,
    namespace: &str,
    puller: &Puller,
    resolved: &Resolved,
    layer: &PullDescriptor,
    lease: &str,
    progress: Arc<PullProgress>,
) -> Result<u64, PullFailure> {
    let present_bytes = |progress: &PullProgress| {
        progress
            .done
            .fetch_add(layer.size, std::sync::atomic::Ordering::Relaxed);
    };
    let mut content = ContentClient::new(containerd.channel());
    let present = content
        .info(request(
            namespace,
            InfoRequest {
                digest: layer.digest.clone(),
            },
            Some(lease),
        ))
        .await
        .is_ok();
    if present {
        present_bytes(&progress);
        return Ok(0);
    }
    let total = i64::try_from(layer.size).map_err(|_| {
        PullFailure::Registry(PullError::Invalid {
            image: resolved.image.to_string(),
            message: format!("layer {} claims {} bytes", layer.digest, layer.size),
        })
    })?;
    let reference = format!("shipshape-pull-{}-{}", uuid::Uuid::new_v4(), layer.digest);
    let stat = WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.clone(),
        total,
        expected: layer.digest.clone(),
        offset: 0,
        data: Vec::new(),
        labels: HashMap::new(),
    };
    let opened = content
        .write(request(
            namespace,
            futures_util::stream::iter([stat]),
            Some(lease),
        ))
        .await;
    match opened {
        Err(status) if status.code() == containerd_client::tonic::Code::AlreadyExists => {
            present_bytes(&progress);
            return Ok(0);
        }
        Err(status) => {
            return Err(
                RuntimeError::call(format!("content.Write {}", layer.digest), status).into(),
            );
        }
        Ok(responses) => {
            let mut responses = responses.into_inner();
            let mut stored = 0i64;
            while let Some(response) = responses.next().await {
                match response {
                    Ok(status) => stored = status.offset,
                    Err(status)
                        if status.code() == containerd_client::tonic::Code::AlreadyExists =>
                    {
                        present_bytes(&progress);
                        return Ok(0);
                    }
                    Err(status) => {
                        return Err(RuntimeError::call(
                            format!("content.Write {}", layer.digest),
                            status,
                        )
                        .into());
                    }
                }
            }
            // Another namespace has these bytes (containerd shares content): the write starts
            // full, and committing it links them here; nothing is downloaded.
            if total > 0 && stored == total {
                let commit = WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: reference.clone(),
                    total,
                    expected: layer.digest.clone(),
                    offset: total,
                    data: Vec::new(),
                    labels: HashMap::new(),
                };
                let committed = async {
                    let mut responses = content
                        .write(request(
                            namespace,
                            futures_util::stream::iter([commit]),
                            Some(lease),
                        ))
                        .await?
                        .into_inner();
                    while let Some(response) = responses.next().await {
                        response?;
                    }
                    Ok::<_, containerd_client::tonic::Status>(())
                }
                .await;
                return match committed {
                    Ok(()) => {
                        present_bytes(&progress);
                        Ok(0)
                    }
                    Err(status)
                        if status.code() == containerd_client::tonic::Code::AlreadyExists =>
                    {
                        present_bytes(&progress);
                        Ok(0)
                    }
                    Err(status) => Err(RuntimeError::call(
                        format!("content.Write {} (shared)", layer.digest),
                        status,
                    )
                    .into()),
                };
            }
        }
    }
    let blob = puller.blob(resolved, layer).await?;
    // The stream ends at the first failed chunk, without a commit; the failure is kept to
    // report instead of containerd's complaint about the short write it causes.
    let failed: Arc<std::sync::Mutex<Option<PullError>>> = Arc::default();
    let offset = Arc::new(std::sync::atomic::AtomicU64::new(0));
    struct Feed {
        blob: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, PullError>>,
        reference: String,
        digest: String,
        total: i64,
        at: u64,
        /// The registry's stream has ended: the commit goes next.
        drained: bool,
        ended: bool,
        failed: Arc<std::sync::Mutex<Option<PullError>>>,
        offset: Arc<std::sync::atomic::AtomicU64>,
        progress: Arc<PullProgress>,
    }
    let feed = Feed {
        blob,
        reference,
        digest: layer.digest.clone(),
        total,
        at: 0,
        drained: false,
        ended: false,
        failed: failed.clone(),
        offset: offset.clone(),
        progress: progress.clone(),
    };
    let messages = futures_util::stream::unfold(feed, |mut feed| async move {
        if feed.ended {
            return None;
        }
        let message =
            |action: WriteAction, offset: u64, data: Vec<u8>, feed: &Feed| WriteContentRequest {
                action: action as i32,
                r#ref: feed.reference.clone(),
                total: feed.total,
                expected: feed.digest.clone(),
                offset: i64::try_from(offset).unwrap_or(i64::MAX),
                data,
                labels: HashMap::new(),
            };
        if feed.drained {
            feed.ended = true;
            let at = feed.at;
            return Some((message(WriteAction::Commit, at, Vec::new(), &feed), feed));
        }
        // The registry's chunks are small (16 KiB or so): gathered into writes of about
        // 1 MiB, as containerd's own copy does, so gRPC carries few large messages.
        let mut data: Vec<u8> = Vec::new();
        while data.len() < WRITE_CHUNK {
            match feed.blob.next().await {
                Some(Ok(bytes)) => data.extend_from_slice(&bytes),
                Some(Err(error)) => {
                    if let Ok(mut slot) = feed.failed.lock() {
                        *slot = Some(error);
                    }
                    return None;
                }
                None => {
                    feed.drained = true;
                    break;
                }
            }
        }
        if data.is_empty() {
            feed.ended = true;
            let at = feed.at;
            return Some((message(WriteAction::Commit, at, Vec::new(), &feed), feed));
        }
        let length = data.len() as u64;
        let request = message(WriteAction::Write, feed.at, data, &feed);
        feed.at = feed.at.saturating_add(length);
        feed.offset
            .store(feed.at, std::sync::atomic::Ordering::Relaxed);
        feed.progress
            .done
            .fetch_add(length, std::sync::atomic::Ordering::Relaxed);
        Some((request, feed))
    });
    let written = async {
        let mut responses = content
            .write(request(namespace, messages, Some(lease)))
            .await?
            .into_inner();
        while let Some(response) = responses.next().await {
            response?;
        }
        Ok::<_, containerd_client::tonic::Status>(())
    }
    .await;
    if let Some(error) = failed.lock().ok().and_then(|mut f| f.take()) {
        return Err(error.into());
    }
    match written {
        Ok(()) => Ok(offset.load(std::sync::atomic::Ordering::Relaxed)),
        Err(status) if status.code() == containerd_client::tonic::Code::AlreadyExists => {
            present_bytes(&progress);
            Ok(0)
        }
        // containerd checks size and digest at commit: the registry's bytes were not the
        // layer the manifest names.
        Err(status)
            if status.code() == containerd_client::tonic::Code::FailedPrecondition
                || status.message().contains("digest") =>
        {
            Err(PullFailure::Registry(PullError::Invalid {
                image: resolved.image.to_string(),
                message: format!(
                    "layer {} from {}: {}",
                    layer.digest,
                    resolved.endpoint.host,
                    status.message()
                ),
            }))
        }
        Err(status) => {
            Err(RuntimeError::call(format!("content.Write {}", layer.digest), status).into())
        }
    }
}

/// Creates (or points anew) the image record `image.name` at its target.
async fn record_image(
    containerd: &Containerd,
    namespace: &str,
    lease: &str,
    image: &ArchiveImage,
    pinned: bool,
) -> Result<(), RuntimeError> {
    let labels = if pinned {
        HashMap::from([(PINNED_LABEL.to_string(), "pinned".to_string())])
    } else {
        HashMap::new()
    };
    let record = Image {
        name: image.name.clone(),
        labels,
        target: Some(image.target.clone()),
        created_at: None,
        updated_at: None,
    };
    let mut images = ImagesClient::new(containerd.channel());
    let created = images
        .create(request(
            namespace,
            CreateImageRequest {
                image: Some(record.clone()),
                source_date_epoch: None,
            },
            Some(lease),
        ))
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(status) if status.code() == containerd_client::tonic::Code::AlreadyExists => {
            images
                .update(request(
                    namespace,
                    UpdateImageRequest {
                        image: Some(record),
                        update_mask: None,
                        source_date_epoch: None,
                    },
                    Some(lease),
                ))
                .await
                .map_err(|s| RuntimeError::call(format!("images.Update {}", image.name), s))?;
            Ok(())
        }
        Err(status) => Err(RuntimeError::call(
            format!("images.Create {}", image.name),
            status,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_names_as_containerd_does() {
        let n = |r: &str| normalize(r).expect(r);
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.35"), "docker.io/library/busybox:1.35");
        assert_eq!(n("me/app"), "docker.io/me/app:latest");
        assert_eq!(n("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(n("registry.example/a/b:2"), "registry.example/a/b:2");
        assert_eq!(
            n("busybox@sha256:abcd"),
            "docker.io/library/busybox@sha256:abcd"
        );
        assert!(normalize("Busybox").is_err());
        assert!(normalize("").is_err());
    }

    #[test]
    fn chain_ids_follow_the_oci_spec() {
        let a = "sha256:aaa".to_string();
        let b = "sha256:bbb".to_string();
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], sha256_digest(b"sha256:aaa sha256:bbb"));
    }

    #[test]
    fn packs_a_directory_into_an_importable_oci_layout() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("bin")).expect("mkdir");
        std::fs::write(root.path().join("bin/hello"), b"#!/bin/sh\necho hi\n").expect("write");
        let out = tempfile::tempdir().expect("tempdir");
        let first = pack(root.path(), "hello:1", &out.path().join("a.tar")).expect("pack");
        let second = pack(root.path(), "hello:1", &out.path().join("b.tar")).expect("pack");
        assert_eq!(first.name, "docker.io/library/hello:1");
        assert_eq!(first.digest, second.digest, "packing is reproducible");
        let mut archive = read_archive(&out.path().join("a.tar")).expect("read back");
        label_references(&mut archive);
        assert_eq!(archive.images.len(), 1);
        let image = &archive.images[0];
        assert_eq!(image.name, "docker.io/library/hello:1");
        assert_eq!(image.manifest_digest, first.digest);
        let diff_ids = image.config.rootfs().diff_ids().clone();
        assert_eq!(
            archive.labels[&image.config_digest]["containerd.io/gc.ref.snapshot.overlayfs"],
            diff_ids[0]
        );
        // The layer holds the file under its relative path.
        let layer = &archive.blobs[&diff_ids[0]];
        let names: Vec<String> = tar::Archive::new(layer.as_slice())
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, vec!["bin", "bin/hello"]);
    }

    #[test]
    fn refuses_archives_that_are_not_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        let mut header = tar::Header::new_ustar();
        header.set_size(2);
        header.set_cksum();
        builder
            .append_data(&mut header, "hello.txt", &b"hi"[..])
            .expect("append");
        builder.finish().expect("finish");
        let error = read_archive(&path).expect_err("not an image");
        assert!(
            error.to_string().contains("neither an OCI image layout"),
            "{error}"
        );
    }
}
