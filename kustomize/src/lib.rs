//! `kustomize build` (v5) as a pure function: a repository's files in, the rendered objects
//! out, each with the file and line it came from, or one error naming the kustomization file
//! and line (or the patch file) and what did not work.
//!
//! The sync renders an application whose folder holds a `kustomization.yaml` with this, and
//! `shipshape render` prints the same output `kustomize build` prints. Paths climb out of a
//! kustomization's folder freely (`../../base`) but never out of the repository, and nothing
//! is fetched: remote bases are refused, as are the fields kustomize offers that are not
//! rendered here (plugins, Helm, replacements), each by name.
//!
//! A build runs in kustomize's order: resources, then components, then generators, then the
//! transformers (patches, namespace, prefix and suffix, labels, annotations, JSON patches,
//! replicas, images); at the top, generated names get their content hash and every reference
//! to a renamed object is rewritten, and the result is sorted as kustomize sorts it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;
use shipshape_api::path::FieldPath;
use shipshape_api::yaml::{self, Node};

pub mod apps;
pub mod emit;
mod fieldspecs;
mod generate;
mod kustomization;
mod nameref;
mod order;
mod patch;
mod smp;
mod transform;

use kustomization::Kustomization;

/// The names a kustomization file may have, in the order kustomize looks for them.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The repository's files, as the renderer reads them: paths are relative to the repository's
/// top, `/`-separated, without `.` or `..`.
pub trait Files {
    /// The bytes of the file at `path`, or `None` when there is no file there.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
    /// Whether `path` is a folder.
    fn is_dir(&self, path: &str) -> bool;
    /// `path` as messages show it (the repository's own path in front, say).
    fn display(&self, path: &str) -> String {
        path.to_string()
    }
}

/// Where a rendered object came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file (repository-relative): the resource file, or the kustomization file of a
    /// generator.
    pub file: String,
    /// The line its document (or generator entry) starts on.
    pub line: u32,
}

/// One object of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedObject {
    /// The object, as `kustomize build` prints it.
    pub object: Value,
    /// Where it came from.
    pub origin: Origin,
}

/// What a build produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// The objects, in kustomize's output order.
    pub objects: Vec<RenderedObject>,
}

impl Rendered {
    /// The output as `kustomize build` prints it.
    pub fn to_yaml(&self) -> String {
        emit::to_yaml_stream(self.objects.iter().map(|o| &o.object))
    }
}

/// Why a build failed: the file (as displayed) and line, and what went wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RenderError {
    /// The kustomization, resource or patch file, as displayed.
    pub file: String,
    /// The line in it.
    pub line: u32,
    /// What went wrong, in one line.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The kustomization file in folder `dir`, if it has one; more than one is an error, as in
/// kustomize.
pub fn kustomization_file(files: &dyn Files, dir: &str) -> Result<Option<String>, RenderError> {
    let found: Vec<String> = KUSTOMIZATION_FILES
        .iter()
        .map(|name| join_name(dir, name))
        .filter(|path| matches!(files.read(path), Ok(Some(_))))
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        [first, ..] => Err(RenderError {
            file: files.display(first),
            line: 1,
            message: format!(
                "found more than one kustomization file in {}: keep one",
                files.display(if dir.is_empty() { "." } else { dir })
            ),
        }),
    }
}

/// The files under a folder on disk (a checkout), with paths shown from `shown`.
#[derive(Clone, Debug)]
pub struct FsFiles {
    root: std::path::PathBuf,
    shown: String,
    /// When set, paths are shown relative to this folder (the current one) instead.
    from: Option<std::path::PathBuf>,
}

impl FsFiles {
    /// The repository at `root`; messages show paths under `shown` (`""` for bare paths).
    pub fn new(root: impl Into<std::path::PathBuf>, shown: impl Into<String>) -> FsFiles {
        FsFiles {
            root: root.into(),
            shown: shown.into(),
            from: None,
        }
    }

    /// The repository at `root` (absolute); messages show paths relative to folder `from`
    /// (absolute), as a shell there would name them.
    pub fn shown_from(
        root: impl Into<std::path::PathBuf>,
        from: impl Into<std::path::PathBuf>,
    ) -> FsFiles {
        FsFiles {
            root: root.into(),
            shown: String::new(),
            from: Some(from.into()),
        }
    }

    fn path(&self, path: &str) -> std::path::PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

impl Files for FsFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        let full = self.path(path);
        match std::fs::metadata(&full) {
            Ok(meta) if meta.is_file() => {
                if meta.len() > shipshape_api::load::MAX_FILE_BYTES as u64 {
                    return Err("larger than 16 MiB".into());
                }
                std::fs::read(&full).map(Some).map_err(|e| e.to_string())
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn is_dir(&self, path: &str) -> bool {
        self.path(path).is_dir()
    }

    fn display(&self, path: &str) -> String {
        if let Some(from) = &self.from {
            return relative_path(&self.path(path), from);
        }
        match (self.shown.as_str(), path) {
            ("", p) => p.to_string(),
            (shown, "") => shown.to_string(),
            (shown, p) => format!("{}/{p}", shown.trim_end_matches('/')),
        }
    }
}

/// `path` as seen from folder `from` (both absolute): `../base/x.yaml`.
fn relative_path(path: &std::path::Path, from: &std::path::Path) -> String {
    let path: Vec<_> = path.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = path.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = std::path::PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &path[common..] {
        out.push(part);
    }
    let text = out.to_string_lossy().into_owned();
    if text.is_empty() { ".".into() } else { text }
}

/// The order of a build's output when its kustomization says nothing (`sortOptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// By kind, as `kustomize build` prints by default.
    #[default]
    Legacy,
    /// As read (`kustomize build --reorder none`).
    AsRead,
}

/// Builds the kustomization in folder `dir` (repository-relative; `""` is the top).
pub fn render(files: &dyn Files, dir: &str) -> Result<Rendered, RenderError> {
    render_ordered(files, dir, Order::Legacy)
}

/// [`render`], with `order` where the kustomization sets no `sortOptions`.
pub fn render_ordered(files: &dyn Files, dir: &str, order: Order) -> Result<Rendered, RenderError> {
    render_tracked(files, dir, order).0
}

/// [`render_ordered`], and every file and folder the build looked at (repository-relative),
/// also when it failed: when none of them changes, the result cannot change.
pub fn render_tracked(
    files: &dyn Files,
    dir: &str,
    order: Order,
) -> (Result<Rendered, RenderError>, BTreeSet<String>) {
    let mut build = Build {
        files,
        read: BTreeSet::new(),
        stack: Vec::new(),
        sort: None,
    };
    let result = build_all(&mut build, dir, order);
    (result.map(|objects| Rendered { objects }), build.read)
}

fn build_all(
    build: &mut Build<'_>,
    dir: &str,
    order: Order,
) -> Result<Vec<RenderedObject>, RenderError> {
    let files = build.files;
    let mut resources = build.kustomization(dir, Role::Kustomization, Vec::new(), None)?;
    // Objects marked local-config are for the build only, as in kustomize.
    resources.retain(|r| {
        r.object
            .pointer("/metadata/annotations/config.kubernetes.io~1local-config")
            .is_none_or(|v| v.as_str() == Some("false"))
    });
    generate::add_hashes(&mut resources);
    if let Err((index, why)) = nameref::fix(&mut resources) {
        let origin = &resources[index].origin;
        return Err(RenderError {
            file: files.display(&origin.file),
            line: origin.line,
            message: format!("{}: {why}", resources[index].describe()),
        });
    }
    let sort = match (build.sort.take().flatten(), order) {
        (Some(sort), _) => sort,
        (None, Order::Legacy) => order::SortOrder::default(),
        (None, Order::AsRead) => order::SortOrder::Fifo,
    };
    order::sort(&mut resources, &sort);
    Ok(resources
        .into_iter()
        .map(|r| RenderedObject {
            object: r.object,
            origin: r.origin,
        })
        .collect())
}

/// What a kustomization folder is loaded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Kustomization,
    Component,
}

/// A place in a file, for messages (the path is repository-relative).
#[derive(Clone, Debug)]
pub(crate) struct Place {
    pub file: String,
    pub line: u32,
}

/// A resource as the build carries it: the object and what kustomize remembers of it.
#[derive(Clone, Debug)]
pub(crate) struct Resource {
    pub object: Value,
    pub origin: Origin,
    /// Every (kind, name) it has had together: a patch names its target by one of these.
    pub ids: Vec<(String, String)>,
    /// Every name it has had, the first as written and the last its current one.
    pub names: Vec<String>,
    /// Every namespace it has had (`""` for none), likewise.
    pub namespaces: Vec<String>,
    /// Set for objects a generator made.
    pub generated: Option<generate::Generated>,
    /// The prefixes and suffixes given to it, innermost first (to tell apart references to
    /// objects that had one name before different prefixes).
    pub prefixes: Vec<String>,
    pub suffixes: Vec<String>,
    /// Whether a namespace transformer has seen it (kustomize then counts its id as an
    /// earlier one, even for cluster-scoped objects it leaves alone).
    pub transformed: bool,
}

impl Resource {
    fn new(object: Value, origin: Origin) -> Resource {
        let name = text(&object, "/metadata/name").to_string();
        let namespace = text(&object, "/metadata/namespace").to_string();
        let kind = text(&object, "/kind").to_string();
        Resource {
            object,
            origin,
            ids: vec![(kind, name.clone())],
            names: vec![name],
            namespaces: vec![namespace],
            generated: None,
            prefixes: Vec::new(),
            suffixes: Vec::new(),
            transformed: false,
        }
    }

    pub fn kind(&self) -> &str {
        text(&self.object, "/kind")
    }

    pub fn api_version(&self) -> &str {
        text(&self.object, "/apiVersion")
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version().rsplit_once('/').map_or("", |(g, _)| g)
    }

    pub fn version(&self) -> &str {
        let v = self.api_version();
        v.rsplit_once('/').map_or(v, |(_, v)| v)
    }

    pub fn name(&self) -> &str {
        text(&self.object, "/metadata/name")
    }

    pub fn namespace(&self) -> &str {
        text(&self.object, "/metadata/namespace")
    }

    pub fn set_name(&mut self, name: String) {
        if let Some(metadata) = metadata_mut(&mut self.object) {
            metadata.insert("name".into(), Value::String(name.clone()));
        }
        if self.names.last() != Some(&name) {
            self.ids.push((self.kind().to_string(), name.clone()));
            self.names.push(name);
        }
    }

    pub fn set_namespace(&mut self, namespace: String) {
        if let Some(metadata) = metadata_mut(&mut self.object) {
            metadata.insert("namespace".into(), Value::String(namespace.clone()));
        }
        if self.namespaces.last() != Some(&namespace) {
            self.namespaces.push(namespace);
        }
    }

    /// Whether objects of this kind live in a namespace (unknown kinds do, as kustomize
    /// assumes).
    pub fn namespaced(&self) -> bool {
        namespaced(self.api_version(), self.kind())
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        string_map(self.object.pointer("/metadata/labels"))
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        string_map(self.object.pointer("/metadata/annotations"))
    }

    /// `Kind name` or `Kind namespace/name`, as messages name it.
    pub fn describe(&self) -> String {
        match self.namespace() {
            "" => format!("{} {}", self.kind(), self.name()),
            ns => format!("{} {ns}/{}", self.kind(), self.name()),
        }
    }
}

/// Namespaces equal as kustomize compares them: unset is `default`.
pub(crate) fn same_namespace(a: &str, b: &str) -> bool {
    let norm = |s: &str| if s.is_empty() { "default" } else { s }.to_string();
    norm(a) == norm(b)
}

/// Whether `kind` (of `api_version`) is namespaced: the built-in kinds as Kubernetes defines
/// them, anything else namespaced.
pub(crate) fn namespaced(api_version: &str, kind: &str) -> bool {
    use shipshape_api::object::KindLookup;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match shipshape_api::Kind::lookup(api_version, kind) {
        KindLookup::Found(known) => known.info().namespaced,
        KindLookup::WrongVersion(known) if known.info().group == group => known.info().namespaced,
        _ => !CLUSTER_SCOPED.contains(&(group, kind)),
    }
}

/// Cluster-scoped kinds shipshape does not serve, by group, as kustomize knows them.
const CLUSTER_SCOPED: [(&str, &str); 23] = [
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("scheduling.k8s.io", "PriorityClass"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("node.k8s.io", "RuntimeClass"),
    ("networking.k8s.io", "IngressClass"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("policy", "PodSecurityPolicy"),
];

pub(crate) fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn metadata_mut(object: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    let map = object.as_object_mut()?;
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(serde_json::Map::new());
    }
    metadata.as_object_mut()
}

fn join_name(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// `relative` (as a kustomization writes it) from folder `dir`, as a repository path; why
/// not, when it is remote, absolute or outside the repository.
pub(crate) fn resolve(dir: &str, relative: &str) -> Result<String, String> {
    let remote = relative.contains("://")
        || relative.starts_with("git@")
        || relative.contains("?ref=")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"]
            .iter()
            .any(|host| relative.starts_with(host));
    if remote {
        return Err(format!(
            "{relative} is a remote resource: shipshape reads only this repository (copy it in)"
        ));
    }
    if relative.starts_with('/') {
        return Err(format!(
            "{relative} is an absolute path: name it relative to the kustomization"
        ));
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("{relative} is outside the repository"));
                }
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// The build's state: what it read, and the folders it is inside (to refuse cycles).
pub(crate) struct Build<'f> {
    files: &'f dyn Files,
    read: BTreeSet<String>,
    stack: Vec<String>,
    /// The top kustomization's `sortOptions` (once read; `None` inside when it has none).
    sort: Option<Option<order::SortOrder>>,
}

/// A kustomization file, parsed.
pub(crate) struct Loaded {
    pub path: String,
    pub dir: String,
    pub node: Node,
    pub kustomization: Kustomization,
}

impl Loaded {
    /// The place of a field of the kustomization (`["resources", 2]`).
    pub fn place(&self, path: &FieldPath) -> Place {
        Place {
            file: self.path.clone(),
            line: self.node.line_of(path),
        }
    }
}

impl Build<'_> {
    pub(crate) fn error(&self, place: &Place, message: impl Into<String>) -> RenderError {
        RenderError {
            file: self.files.display(&place.file),
            line: place.line,
            message: message.into(),
        }
    }

    /// The bytes of file `path`, refused (at `place`) when missing.
    pub(crate) fn read_file(&mut self, path: &str, place: &Place) -> Result<Vec<u8>, RenderError> {
        self.read.insert(path.to_string());
        match self.files.read(path) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(self.error(
                place,
                format!("{} does not exist", self.files.display(path)),
            )),
            Err(why) => Err(self.error(
                place,
                format!("cannot read {}: {why}", self.files.display(path)),
            )),
        }
    }

    /// The text of file `path` (UTF-8), refused otherwise.
    pub(crate) fn read_text(&mut self, path: &str, place: &Place) -> Result<String, RenderError> {
        let bytes = self.read_file(path, place)?;
        String::from_utf8(bytes).map_err(|_| {
            self.error(
                place,
                format!("{} is not a text file (UTF-8)", self.files.display(path)),
            )
        })
    }

    /// Refuses file `path` outside folder `dir`: kustomize reads a kustomization's files only
    /// from its own folder and below (folders of bases may be anywhere in the repository).
    pub(crate) fn within(&self, dir: &str, path: &str, place: &Place) -> Result<(), RenderError> {
        let inside = dir.is_empty()
            || path
                .strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'));
        if inside {
            return Ok(());
        }
        Err(self.error(
            place,
            format!(
                "{} is not in or below {} (kustomize reads a kustomization's files only from its folder; make it a base)",
                self.files.display(path),
                self.files.display(if dir.is_empty() { "." } else { dir })
            ),
        ))
    }

    /// A path a kustomization in `dir` names, resolved; refused at `place`.
    pub(crate) fn resolve(
        &self,
        dir: &str,
        relative: &str,
        place: &Place,
    ) -> Result<String, RenderError> {
        resolve(dir, relative).map_err(|why| self.error(place, why))
    }

    fn load(&mut self, dir: &str, from: Option<&Place>) -> Result<Loaded, RenderError> {
        self.read.insert(if dir.is_empty() {
            ".".into()
        } else {
            dir.to_string()
        });
        for name in KUSTOMIZATION_FILES {
            self.read.insert(join_name(dir, name));
        }
        let path = match kustomization_file(self.files, dir)? {
            Some(path) => path,
            None => {
                let place = from.cloned().unwrap_or(Place {
                    file: dir.to_string(),
                    line: 1,
                });
                return Err(self.error(
                    &place,
                    format!(
                        "{} has no kustomization.yaml (nor kustomization.yml or Kustomization)",
                        self.files.display(if dir.is_empty() { "." } else { dir })
                    ),
                ));
            }
        };
        let top = Place {
            file: path.clone(),
            line: 1,
        };
        let text = self.read_text(&path, &top)?;
        let documents = yaml::parse_documents(&text).map_err(|e| RenderError {
            file: self.files.display(&path),
            line: e.line(),
            message: e.message().to_string(),
        })?;
        let mut roots = documents.into_iter().filter_map(|d| d.root);
        let node = roots
            .next()
            .unwrap_or(Node::from_json(&Value::Object(Default::default()), 1));
        if let Some(extra) = roots.next() {
            return Err(self.error(
                &Place {
                    file: path,
                    line: extra.line,
                },
                "a kustomization file holds one document",
            ));
        }
        let json = match node.to_json() {
            Value::Null => Value::Object(Default::default()),
            json => json,
        };
        let kustomization: Kustomization = serde_path_to_error::deserialize(json).map_err(|e| {
            let field = FieldPath::from(e.path());
            let message = e.inner().to_string();
            let message = message
                .split(", expected")
                .next()
                .unwrap_or(&message)
                .to_string();
            RenderError {
                file: self.files.display(&path),
                line: node.line_of(&field),
                message: if e.path().to_string() == "." {
                    message
                } else {
                    format!("{}: {message}", e.path())
                },
            }
        })?;
        Ok(Loaded {
            path,
            dir: dir.to_string(),
            node,
            kustomization,
        })
    }

    /// Builds the kustomization (or component) in `dir` onto `accumulated`.
    fn kustomization(
        &mut self,
        dir: &str,
        role: Role,
        mut accumulated: Vec<Resource>,
        from: Option<&Place>,
    ) -> Result<Vec<Resource>, RenderError> {
        if self.stack.iter().any(|d| d == dir) {
            let place = from.cloned().unwrap_or(Place {
                file: dir.to_string(),
                line: 1,
            });
            return Err(self.error(
                &place,
                format!("{} includes itself (a cycle)", self.files.display(dir)),
            ));
        }
        let loaded = self.load(dir, from)?;
        let k = &loaded.kustomization;
        let kind = k.kind.as_deref().unwrap_or("Kustomization");
        let top = Place {
            file: loaded.path.clone(),
            line: loaded.node.line_of(&FieldPath::root().field("kind")),
        };
        match (role, kind) {
            (Role::Kustomization, "Kustomization") | (Role::Component, "Component") => {}
            // A component built on its own is as a kustomization.
            (Role::Kustomization, "Component") if self.stack.is_empty() => {}
            (Role::Kustomization, "Component") => {
                return Err(self.error(
                    &top,
                    "a Component is listed under components, not resources",
                ));
            }
            (Role::Component, _) => {
                return Err(self.error(
                    &top,
                    format!("components must be of kind Component, not {kind}"),
                ));
            }
            (_, other) => {
                return Err(self.error(&top, format!("kind {other:?} is not Kustomization")));
            }
        }
        let wanted = match kind {
            "Component" => "kustomize.config.k8s.io/v1alpha1",
            _ => "kustomize.config.k8s.io/v1beta1",
        };
        if let Some(version) = k.api_version.as_deref().filter(|v| *v != wanted) {
            let place = loaded.place(&FieldPath::root().field("apiVersion"));
            return Err(self.error(&place, format!("apiVersion {version} is not {wanted}")));
        }
        if let Some((field, why)) = k.refused_field() {
            let place = loaded.place(&FieldPath::root().field(field));
            return Err(self.error(&place, format!("{field}: {why}")));
        }
        if self.stack.is_empty() {
            let sort = match &k.sort_options {
                None => None,
                Some(options) => Some(order::SortOrder::from_options(Some(options)).map_err(
                    |why| self.error(&loaded.place(&FieldPath::root().field("sortOptions")), why),
                )?),
            };
            self.sort = Some(sort);
        }
        self.stack.push(dir.to_string());
        let built = self.build_loaded(&loaded, accumulated.split_off(0));
        self.stack.pop();
        let mut built = built?;
        if role == Role::Component {
            accumulated.append(&mut built);
            return Ok(accumulated);
        }
        Ok(built)
    }

    fn build_loaded(
        &mut self,
        loaded: &Loaded,
        mut resources: Vec<Resource>,
    ) -> Result<Vec<Resource>, RenderError> {
        let k = &loaded.kustomization;
        let lists = [("resources", &k.resources), ("bases", &k.bases)];
        for (field, entries) in lists {
            for (index, entry) in entries.iter().enumerate() {
                let place = loaded.place(&FieldPath::root().field(field).index(index));
                let path = self.resolve(&loaded.dir, entry, &place)?;
                let found = if self.files.is_dir(&path) {
                    self.read.insert(path.clone());
                    self.kustomization(&path, Role::Kustomization, Vec::new(), Some(&place))?
                } else if matches!(self.files.read(&path), Ok(None)) {
                    self.read.insert(path.clone());
                    return Err(self.error(
                        &place,
                        format!("{} does not exist", self.files.display(&path)),
                    ));
                } else {
                    self.within(&loaded.dir, &path, &place)?;
                    self.resource_file(&path, &place)?
                };
                for resource in found {
                    self.add(&mut resources, resource, &place)?;
                }
            }
        }
        self.generators(loaded, &mut resources)?;
        for (index, entry) in k.components.iter().enumerate() {
            let place = loaded.place(&FieldPath::root().field("components").index(index));
            let path = self.resolve(&loaded.dir, entry, &place)?;
            if !self.files.is_dir(&path) {
                return Err(self.error(
                    &place,
                    format!("component {} is not a folder", self.files.display(&path)),
                ));
            }
            resources = self.kustomization(&path, Role::Component, resources, Some(&place))?;
        }
        self.transform(loaded, &mut resources)?;
        Ok(resources)
    }

    /// Adds `resource`, refusing a second object with the same identity.
    pub(crate) fn add(
        &self,
        resources: &mut Vec<Resource>,
        resource: Resource,
        place: &Place,
    ) -> Result<(), RenderError> {
        let same = resources.iter().find(|r| {
            r.kind() == resource.kind()
                && r.group() == resource.group()
                && r.name() == resource.name()
                && (!r.namespaced() || same_namespace(r.namespace(), resource.namespace()))
        });
        if let Some(first) = same {
            return Err(self.error(
                place,
                format!(
                    "{} is defined twice: in {}:{} and in {}:{}",
                    resource.describe(),
                    self.files.display(&first.origin.file),
                    first.origin.line,
                    self.files.display(&resource.origin.file),
                    resource.origin.line
                ),
            ));
        }
        resources.push(resource);
        Ok(())
    }

    /// The objects of one resource file (documents and `List` items).
    fn resource_file(&mut self, path: &str, place: &Place) -> Result<Vec<Resource>, RenderError> {
        let source = self.read_text(path, place)?;
        let at = |line: u32| Place {
            file: path.to_string(),
            line,
        };
        let documents = if path.to_ascii_lowercase().ends_with(".json") {
            yaml::parse_json_file(&source)
        } else {
            yaml::parse_documents(&source)
        }
        .map_err(|e| self.error(&at(e.line()), e.message()))?;
        let mut out = Vec::new();
        for document in documents {
            if let Some((path, line)) = document.duplicate_keys.first() {
                return Err(self.error(&at(*line), format!("{path}: duplicate field")));
            }
            let Some(root) = document.root else { continue };
            let value = root.to_json();
            if value.is_null() {
                continue;
            }
            let line = root.line;
            if !value.is_object() {
                return Err(self.error(
                    &at(line),
                    "not a Kubernetes object: expected a mapping with apiVersion and kind",
                ));
            }
            let kind = text(&value, "/kind");
            if kind == "Kustomization" || kind == "Component" {
                return Err(self.error(
                    place,
                    format!(
                        "{} is a kustomization: list its folder instead",
                        self.files.display(path)
                    ),
                ));
            }
            if kind.ends_with("List") && value.get("items").is_some() {
                let items = value
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for (index, item) in items.into_iter().enumerate() {
                    let line = root
                        .get("items")
                        .map(|items| items.line_of(&FieldPath::root().index(index)))
                        .unwrap_or(line);
                    out.push(self.checked(item, path, line)?);
                }
                continue;
            }
            out.push(self.checked(value, path, line)?);
        }
        Ok(out)
    }

    fn checked(&self, mut value: Value, path: &str, line: u32) -> Result<Resource, RenderError> {
        // Label and annotation values are strings (kustomize writes `true` and `8080` so).
        for field in ["labels", "annotations"] {
            if let Some(map) = value
                .pointer_mut(&format!("/metadata/{field}"))
                .and_then(Value::as_object_mut)
            {
                for v in map.values_mut() {
                    match v {
                        Value::Bool(b) => *v = Value::String(b.to_string()),
                        Value::Number(n) => *v = Value::String(n.to_string()),
                        _ => {}
                    }
                }
            }
        }
        let place = Place {
            file: path.to_string(),
            line,
        };
        if text(&value, "/kind").is_empty() {
            return Err(self.error(&place, "kind is missing"));
        }
        if text(&value, "/metadata/name").is_empty() {
            return Err(self.error(
                &place,
                format!("{}: metadata.name is missing", text(&value, "/kind")),
            ));
        }
        Ok(Resource::new(
            value,
            Origin {
                file: path.to_string(),
                line,
            },
        ))
    }
}
