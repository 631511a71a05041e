//! Loading manifests: files and folders (or, later, a Git tree) in; typed, validated objects and
//! one-line problems out.
//!
//! The loader reads multi-document YAML, JSON and `kind: List`, skips files that are not
//! manifests (by extension, as `kubectl apply -f DIR` does), defaults namespaces as kubectl does,
//! groups files into applications (the folders directly under the repository path; files at the
//! top form `root`), and refuses kustomizations below an application's top (applications with
//! one at their top are rendered before loading) and Helm charts instead of half-reading them.
//! Every problem names the file, the line, the object and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::object::{Kind, KindLookup, Object, ObjectKey, REQUIRED_FIELD_MISSING};
use crate::path::FieldPath;
use crate::validate::validate;
use crate::yaml::{self, Node, Value};

/// Largest manifest file read; Kubernetes itself refuses objects over about 1.5 MiB.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Deepest folder nesting walked (guards against pathological trees).
const MAX_DIR_DEPTH: usize = 32;
/// The application that files at the top of the repository path belong to.
pub const ROOT_APPLICATION: &str = "root";
/// Namespace given to namespaced objects that name none, as kubectl does.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A file to load: where it sits in the repository and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the repository path (`web/deploy.yaml`): decides the application.
    pub relative: String,
    /// Path as shown to the user in messages (`examples-repo/web/deploy.yaml`).
    pub display: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl SourceFile {
    /// The application this file belongs to.
    pub fn application(&self) -> &str {
        match self.relative.split_once('/') {
            Some((folder, _)) => folder,
            None => ROOT_APPLICATION,
        }
    }
}

/// A valid object and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The object, namespace defaulted.
    pub object: Object,
    /// The file it was read from, as displayed.
    pub file: String,
    /// The line its document (or List item) starts on.
    pub line: u32,
    /// The application it belongs to.
    pub application: String,
}

/// The object a problem is about, as far as it could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectRef {
    /// The kind as written.
    pub kind: String,
    /// The namespace (after defaulting), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.kind.is_empty() {
            "object"
        } else {
            &self.kind
        };
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, "{kind} {ns}/{name}"),
            (None, Some(name)) => write!(f, "{kind} {name}"),
            (_, None) => write!(f, "{kind} (unnamed)"),
        }
    }
}

/// One problem, printed as `FILE:LINE: Kind ns/name: field.path: what is wrong`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file, as displayed.
    pub file: String,
    /// The line of the offending field (or of its document).
    pub line: u32,
    /// The application the file belongs to.
    pub application: String,
    /// The object, when the problem is inside one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// The field path, when the problem is about one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Everything loaded from a set of files.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// The valid objects, in file order.
    pub manifests: Vec<Manifest>,
    /// How many manifest files were read.
    pub files: usize,
    /// Every application seen (also those with problems).
    pub applications: BTreeSet<String>,
    /// Every problem, sorted by file and line.
    pub problems: Vec<Problem>,
    /// Every named object read, valid or not, with its file and line: what
    /// [`duplicates_across`] compares between applications loaded apart.
    pub located: Vec<(ObjectKey, String, u32)>,
}

impl LoadResult {
    /// True when nothing is wrong.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// How many valid objects of each kind were loaded.
    pub fn kind_counts(&self) -> BTreeMap<Kind, usize> {
        let mut counts = BTreeMap::new();
        for manifest in &self.manifests {
            *counts.entry(manifest.object.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// The applications that have at least one problem: a sync rejects these whole.
    pub fn failed_applications(&self) -> BTreeSet<&str> {
        self.problems
            .iter()
            .map(|p| p.application.as_str())
            .collect()
    }
}

/// Reads the manifest files under `path` (a file or a folder). Files that are not manifests are
/// skipped; unreadable ones become problems.
pub fn read_path(path: &Path) -> (Vec<SourceFile>, Vec<Problem>) {
    let display = path.display().to_string();
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let file_problem = |message: String| Problem {
        file: display.clone(),
        line: 1,
        application: ROOT_APPLICATION.to_string(),
        object: None,
        field: None,
        message,
    };
    match std::fs::metadata(path) {
        Err(error) => problems.push(file_problem(format!("cannot read: {error}"))),
        Ok(meta) if meta.is_dir() => {
            walk(path, "", &display, 0, &mut files, &mut problems);
            if !files.iter().any(|f| is_manifest_name(&f.relative)) && problems.is_empty() {
                problems.push(file_problem(
                    "no manifests found (files ending in .yaml, .yml or .json)".to_string(),
                ));
            }
        }
        Ok(_) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::read(path) {
                Ok(bytes) => files.push(SourceFile {
                    relative: name,
                    display,
                    bytes,
                }),
                Err(error) => problems.push(file_problem(format!("cannot read: {error}"))),
            }
        }
    }
    (files, problems)
}

fn is_manifest_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json")
}

/// Names that mark a folder this loader must not half-read.
fn unsupported_marker(file_name: &str) -> Option<&'static str> {
    match file_name {
        "kustomization.yaml" | "kustomization.yml" | "Kustomization" => Some(
            "a kustomization renders only at the top of an application's folder or of the path: list this folder as a base there (or make it an application)",
        ),
        "Chart.yaml" => {
            Some("Helm charts are not supported yet: commit the output of `helm template` instead")
        }
        _ => None,
    }
}

fn walk(
    dir: &Path,
    relative: &str,
    display: &str,
    depth: usize,
    files: &mut Vec<SourceFile>,
    problems: &mut Vec<Problem>,
) {
    let application = relative
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(ROOT_APPLICATION)
        .to_string();
    let problem = |file: String, message: String| Problem {
        file,
        line: 1,
        application: application.clone(),
        object: None,
        field: None,
        message,
    };
    if depth > MAX_DIR_DEPTH {
        problems.push(problem(
            display.to_string(),
            format!("folders nested deeper than {MAX_DIR_DEPTH} levels"),
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(problem(
                display.to_string(),
                format!("cannot read folder: {error}"),
            ));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let child_relative = if relative.is_empty() {
            name.clone()
        } else {
            format!("{relative}/{name}")
        };
        let child_display = format!("{}/{name}", display.trim_end_matches('/'));
        let Ok(link_meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            problems.push(problem(
                child_display,
                "cannot read (broken link?)".to_string(),
            ));
            continue;
        };
        if meta.is_dir() {
            // Following linked folders could loop; a repository should hold its manifests.
            if !link_meta.file_type().is_symlink() {
                walk(
                    &entry.path(),
                    &child_relative,
                    &child_display,
                    depth + 1,
                    files,
                    problems,
                );
            }
        } else if is_manifest_name(&name) || unsupported_marker(&name).is_some() {
            if meta.len() > MAX_FILE_BYTES as u64 {
                problems.push(problem(
                    child_display,
                    format!(
                        "file is larger than {} MiB: split it",
                        MAX_FILE_BYTES / (1024 * 1024)
                    ),
                ));
                continue;
            }
            match std::fs::read(entry.path()) {
                Ok(bytes) => files.push(SourceFile {
                    relative: child_relative,
                    display: child_display,
                    bytes,
                }),
                Err(error) => {
                    problems.push(problem(child_display, format!("cannot read: {error}")))
                }
            }
        }
    }
}

/// An object a renderer made (kustomize): loaded as a document of `file` starting at `line`,
/// so problems name the file it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedDocument {
    /// The object.
    pub object: serde_json::Value,
    /// The file it came from, as displayed.
    pub file: String,
    /// The line its document starts on there.
    pub line: u32,
    /// The application that rendered it.
    pub application: String,
}

/// Loads and validates every manifest in `files`, as one desired set: duplicates across files
/// are problems too.
pub fn load(files: &[SourceFile]) -> LoadResult {
    load_with(files, &[], Vec::new())
}

/// [`load`], with the objects applications rendered (and the problems that stopped others from
/// rendering) in the same desired set.
pub fn load_with(
    files: &[SourceFile],
    rendered: &[RenderedDocument],
    render_problems: Vec<Problem>,
) -> LoadResult {
    let mut result = LoadResult::default();
    for problem in render_problems {
        result.applications.insert(problem.application.clone());
        result.problems.push(problem);
    }
    let refused_folders: Vec<(String, &SourceFile, &'static str)> = files
        .iter()
        .filter_map(|file| {
            let (folder, name) = match file.relative.rsplit_once('/') {
                Some((folder, name)) => (format!("{folder}/"), name),
                None => (String::new(), file.relative.as_str()),
            };
            unsupported_marker(name).map(|why| (folder, file, why))
        })
        .collect();
    for (_, file, why) in &refused_folders {
        result.applications.insert(file.application().to_string());
        result.problems.push(Problem {
            file: file.display.clone(),
            line: 1,
            application: file.application().to_string(),
            object: None,
            field: None,
            message: (*why).to_string(),
        });
    }
    // Files at the top form the application `root`; a folder of that name would be read as
    // the same application, half one and half the other. Refused until one is renamed.
    let root_folder = format!("{ROOT_APPLICATION}/");
    let top_files = files
        .iter()
        .any(|f| !f.relative.contains('/') && is_manifest_name(&f.relative));
    let clashing = |file: &SourceFile| top_files && file.relative.starts_with(root_folder.as_str());
    if let Some(file) = files.iter().find(|f| clashing(f)) {
        result.applications.insert(ROOT_APPLICATION.to_string());
        result.problems.push(Problem {
            file: file.display.clone(),
            line: 1,
            application: ROOT_APPLICATION.to_string(),
            object: None,
            field: None,
            message: format!(
                "the folder {ROOT_APPLICATION}/ clashes with application {ROOT_APPLICATION} (the files at the top of the path): rename the folder"
            ),
        });
    }
    let mut locations: BTreeMap<ObjectKey, Vec<(String, u32, String)>> = BTreeMap::new();
    for file in files {
        if !is_manifest_name(&file.relative)
            || clashing(file)
            || refused_folders
                .iter()
                .any(|(folder, _, _)| file.relative.starts_with(folder.as_str()))
        {
            continue;
        }
        result.files += 1;
        result.applications.insert(file.application().to_string());
        load_file(file, &mut result, &mut locations);
    }
    let mut rendered_files = BTreeSet::new();
    for document in rendered {
        result.applications.insert(document.application.clone());
        rendered_files.insert(document.file.as_str());
        let mut ctx = DocumentContext {
            display: &document.file,
            application: &document.application,
            result: &mut result,
            locations: &mut locations,
        };
        let node = Node::from_json(&document.object, document.line);
        load_object(&mut ctx, &node, true);
    }
    result.files += rendered_files.len();
    for (key, places) in locations {
        let [(first_file, first_line, _), _, ..] = places.as_slice() else {
            result.located.extend(
                places
                    .into_iter()
                    .map(|(file, line, _)| (key.clone(), file, line)),
            );
            continue;
        };
        let (first_file, first_line) = (first_file.clone(), *first_line);
        result
            .located
            .push((key.clone(), first_file.clone(), first_line));
        for (file, line, application) in places.into_iter().skip(1) {
            // The later copy is the problem: its application fails, the first one stays valid
            // (so a sync never prunes an object because another application copied it).
            result
                .manifests
                .retain(|m| !(m.object.key() == key && m.file == file && m.line == line));
            result.problems.push(duplicate(
                &key,
                &first_file,
                first_line,
                file,
                line,
                application,
            ));
        }
    }
    result
        .problems
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    result
}

/// The problem of a second definition of `key`, at `file`:`line`.
fn duplicate(
    key: &ObjectKey,
    first_file: &str,
    first_line: u32,
    file: String,
    line: u32,
    application: String,
) -> Problem {
    Problem {
        file,
        line,
        application,
        object: Some(ObjectRef {
            kind: key.kind.to_string(),
            namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
            name: Some(key.name.clone()),
        }),
        field: None,
        message: format!("duplicate object: also defined at {first_file}:{first_line}"),
    }
}

/// The objects that applications loaded apart (each with [`load_with`], so a sync loads only
/// the applications that changed) define more than once between them: every definition after
/// the first, in the order given, is a problem of its application, which fails whole. The
/// same rule [`load_with`] applies inside one set, so the first copy never moves.
pub fn duplicates_across<'a>(
    parts: impl IntoIterator<Item = (&'a str, &'a LoadResult)>,
) -> Vec<Problem> {
    let mut first: BTreeMap<&ObjectKey, (&str, &str, u32)> = BTreeMap::new();
    let mut problems = Vec::new();
    for (application, part) in parts {
        for (key, file, line) in &part.located {
            match first.get(key) {
                Some((owner, first_file, first_line)) if *owner != application => {
                    problems.push(duplicate(
                        key,
                        first_file,
                        *first_line,
                        file.clone(),
                        *line,
                        application.to_string(),
                    ));
                }
                Some(_) => {}
                None => {
                    first.insert(key, (application, file, *line));
                }
            }
        }
    }
    problems
}

struct DocumentContext<'a> {
    /// The file as displayed, and the application it counts for.
    display: &'a str,
    application: &'a str,
    result: &'a mut LoadResult,
    locations: &'a mut BTreeMap<ObjectKey, Vec<(String, u32, String)>>,
}

impl DocumentContext<'_> {
    fn problem(
        &mut self,
        line: u32,
        object: Option<ObjectRef>,
        field: Option<&FieldPath>,
        message: impl Into<String>,
    ) {
        self.result.problems.push(Problem {
            file: self.display.to_string(),
            line,
            application: self.application.to_string(),
            object,
            field: field.filter(|f| !f.is_root()).map(ToString::to_string),
            message: message.into(),
        });
    }
}

fn load_file(
    file: &SourceFile,
    result: &mut LoadResult,
    locations: &mut BTreeMap<ObjectKey, Vec<(String, u32, String)>>,
) {
    let mut ctx = DocumentContext {
        display: &file.display,
        application: file.application(),
        result,
        locations,
    };
    if file.bytes.len() > MAX_FILE_BYTES {
        ctx.problem(
            1,
            None,
            None,
            format!(
                "file is larger than {} MiB: split it",
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        );
        return;
    }
    let text = match std::str::from_utf8(&file.bytes) {
        Ok(text) if !text.contains('\0') => text,
        _ => {
            ctx.problem(1, None, None, "not a text file (binary, or not UTF-8)");
            return;
        }
    };
    let parsed = if file.relative.to_ascii_lowercase().ends_with(".json") {
        yaml::parse_json_file(text)
    } else {
        yaml::parse_documents(text)
    };
    let documents = match parsed {
        Ok(documents) => documents,
        Err(error) => {
            ctx.problem(error.line(), None, None, error.message());
            return;
        }
    };
    for document in documents {
        let Some(root) = &document.root else { continue };
        let object = describe(root);
        for (path, line) in &document.duplicate_keys {
            ctx.problem(*line, Some(object.clone()), Some(path), "duplicate field");
        }
        load_object(&mut ctx, root, true);
    }
}

/// What can be read of an object's identity, for messages, even when it is invalid.
fn describe(node: &Node) -> ObjectRef {
    let text = |n: Option<&Node>| n.and_then(Node::as_str).map(str::to_string);
    let metadata = node.get("metadata");
    let kind = text(node.get("kind")).unwrap_or_default();
    let api_version = text(node.get("apiVersion")).unwrap_or_default();
    let mut namespace = text(metadata.and_then(|m| m.get("namespace")));
    if let KindLookup::Found(known) | KindLookup::WrongVersion(known) =
        Kind::lookup(&api_version, &kind)
    {
        if known.info().namespaced {
            namespace = namespace.or_else(|| Some(DEFAULT_NAMESPACE.to_string()));
        } else {
            namespace = None;
        }
    }
    ObjectRef {
        kind,
        namespace,
        name: text(metadata.and_then(|m| m.get("name"))),
    }
}

fn load_object(ctx: &mut DocumentContext<'_>, node: &Node, top_level: bool) {
    let object_ref = describe(node);
    let Value::Map(_) = node.value else {
        ctx.problem(
            node.line,
            None,
            None,
            "not a Kubernetes object: expected a mapping with apiVersion and kind",
        );
        return;
    };
    let api_version = node.get("apiVersion").and_then(Node::as_str);
    let kind = node.get("kind").and_then(Node::as_str);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        let missing = if api_version.is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        ctx.problem(
            node.line,
            Some(object_ref),
            Some(&FieldPath::parse(missing)),
            "required field is missing: every document must be a Kubernetes object",
        );
        return;
    };
    if kind == "List" && api_version == "v1" {
        if !top_level {
            ctx.problem(
                node.line,
                Some(object_ref),
                None,
                "a List may not contain another List",
            );
            return;
        }
        match node.get("items").map(|items| &items.value) {
            Some(Value::Seq(items)) => {
                for item in items {
                    load_object(ctx, item, false);
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => ctx.problem(
                node.line_of(&FieldPath::parse("items")),
                Some(object_ref),
                Some(&FieldPath::parse("items")),
                "must be a list of objects",
            ),
        }
        return;
    }
    let found = match Kind::lookup(api_version, kind) {
        KindLookup::Found(found) => found,
        KindLookup::WrongVersion(known) => {
            ctx.problem(
                node.line_of(&FieldPath::parse("apiVersion")),
                Some(object_ref),
                Some(&FieldPath::parse("apiVersion")),
                format!(
                    "{kind} is not served at {api_version}: use {}",
                    known.info().api_version
                ),
            );
            return;
        }
        KindLookup::NotServed(unserved) => {
            ctx.problem(
                node.line_of(&FieldPath::parse("kind")),
                Some(object_ref),
                Some(&FieldPath::parse("kind")),
                unserved.message(),
            );
            return;
        }
        KindLookup::Unknown => {
            ctx.problem(
                node.line_of(&FieldPath::parse("kind")),
                Some(object_ref),
                Some(&FieldPath::parse("kind")),
                format!(
                    "unsupported kind {kind} ({api_version}): shipshape serves the built-in workload, service, config, storage and policy kinds, not custom resources or RBAC"
                ),
            );
            return;
        }
    };
    if !found.info().from_git {
        ctx.problem(
            node.line_of(&FieldPath::parse("kind")),
            Some(object_ref),
            Some(&FieldPath::parse("kind")),
            format!("{kind} objects are written by the cluster itself and cannot come from Git"),
        );
        return;
    }
    let (mut object, decode_problems) = match Object::decode_strict(node.to_json()) {
        Ok(decoded) => decoded,
        Err(error) => {
            ctx.problem(
                node.line_of(&error.path),
                Some(object_ref),
                Some(&error.path),
                error.message,
            );
            return;
        }
    };
    let mut valid = decode_problems.is_empty();
    let mut reported: Vec<(FieldPath, String)> = Vec::new();
    for problem in decode_problems {
        ctx.problem(
            node.line_of(&problem.path),
            Some(object_ref.clone()),
            Some(&problem.path),
            problem.message.clone(),
        );
        reported.push((problem.path, problem.message));
    }
    let metadata = object.metadata_mut();
    if found.info().namespaced {
        if metadata.namespace.as_deref().is_none_or(str::is_empty) {
            metadata.namespace = Some(DEFAULT_NAMESPACE.to_string());
        }
    } else {
        // The API server ignores a namespace on cluster-scoped kinds; so do we.
        metadata.namespace = None;
    }
    for problem in validate(&object) {
        valid = false;
        // A required field left out is reported once, by the schema check above: not again by
        // a rule about it or about anything beneath it (no `metadata`, so no `metadata.name`;
        // no `containers`, so not "at least one container").
        if reported.iter().any(|(path, message)| {
            (*path == problem.path && *message == problem.message)
                || (message == REQUIRED_FIELD_MISSING
                    && problem.path.segments().starts_with(path.segments()))
        }) {
            continue;
        }
        ctx.problem(
            node.line_of(&problem.path),
            Some(object_ref.clone()),
            Some(&problem.path),
            problem.message,
        );
    }
    if object
        .metadata()
        .name
        .as_deref()
        .is_some_and(|n| !n.is_empty())
    {
        ctx.locations.entry(object.key()).or_default().push((
            ctx.display.to_string(),
            node.line,
            ctx.application.to_string(),
        ));
    }
    if valid {
        ctx.result.manifests.push(Manifest {
            object,
            file: ctx.display.to_string(),
            line: node.line,
            application: ctx.application.to_string(),
        });
    }
}

#[cfg(test)]
mod tests;
