//! Applications and kustomize: an application whose folder holds a kustomization file at its
//! top is what that kustomization renders; the others are their manifest files. Shared by
//! `validate` (a checkout) and the sync (a commit).

use std::collections::{BTreeMap, BTreeSet};

use shipshape_api::load::{Problem, ROOT_APPLICATION, RenderedDocument, SourceFile};

use crate::{Files, KUSTOMIZATION_FILES, Order};

/// What a set of application files loads as.
#[derive(Debug, Default)]
pub struct Applications {
    /// The files of applications without a kustomization.
    pub plain: Vec<SourceFile>,
    /// The objects the kustomize applications rendered.
    pub rendered: Vec<RenderedDocument>,
    /// Why a kustomize application did not render (one problem each).
    pub problems: Vec<Problem>,
    /// For each kustomize application, every path its build read (repository-relative).
    pub read: BTreeMap<String, BTreeSet<String>>,
}

/// The applications among `files` (relative to the repository path) that kustomize renders:
/// those with a kustomization file at the top of their folder; a kustomization at the top of
/// the path makes the whole path one application, `root`.
pub fn kustomized<'a>(files: impl IntoIterator<Item = &'a SourceFile>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for file in files {
        let (folder, name) = match file.relative.rsplit_once('/') {
            Some((folder, name)) => (folder, name),
            None => ("", file.relative.as_str()),
        };
        if !KUSTOMIZATION_FILES.contains(&name) {
            continue;
        }
        if folder.is_empty() {
            return BTreeSet::from([ROOT_APPLICATION.to_string()]);
        }
        if !folder.contains('/') {
            found.insert(folder.to_string());
        }
    }
    found
}

/// Renders application `name` (folder `dir` of the repository; `""` for its top).
pub fn render_application(
    repo: &dyn Files,
    dir: &str,
    name: &str,
) -> (Result<Vec<RenderedDocument>, Problem>, BTreeSet<String>) {
    let (rendered, read) = crate::render_tracked(repo, dir, Order::Legacy);
    let result = rendered
        .map(|rendered| {
            rendered
                .objects
                .into_iter()
                .map(|object| RenderedDocument {
                    object: object.object,
                    file: repo.display(&object.origin.file),
                    line: object.origin.line,
                    application: name.to_string(),
                })
                .collect()
        })
        .map_err(|error| Problem {
            file: error.file,
            line: error.line,
            application: name.to_string(),
            object: None,
            field: None,
            message: error.message,
        });
    (result, read)
}

/// Splits `files` (the applications under repository path `base`) into plain files and
/// rendered objects.
pub fn split(files: Vec<SourceFile>, repo: &dyn Files, base: &str) -> Applications {
    let kustomized = kustomized(&files);
    let mut out = Applications::default();
    let whole = kustomized.contains(ROOT_APPLICATION)
        && files.iter().any(|f| {
            !f.relative.contains('/') && KUSTOMIZATION_FILES.contains(&f.relative.as_str())
        });
    for name in &kustomized {
        let dir = if whole {
            base.to_string()
        } else if base.is_empty() {
            name.clone()
        } else {
            format!("{base}/{name}")
        };
        let (result, read) = render_application(repo, &dir, name);
        match result {
            Ok(documents) => out.rendered.extend(documents),
            Err(problem) => out.problems.push(problem),
        }
        out.read.insert(name.clone(), read);
    }
    out.plain = files
        .into_iter()
        .filter(|f| !(whole || kustomized.contains(f.application())))
        .collect();
    out
}
