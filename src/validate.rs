//! `shipshape validate`: load, check, report.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use shipshape_api::load::{self, LoadResult, Problem};

use crate::Format;

/// Loads every path as one desired set (duplicates across paths count).
pub fn load_paths(paths: &[PathBuf]) -> LoadResult {
    let mut files = Vec::new();
    let mut rendered = Vec::new();
    let mut render_problems = Vec::new();
    let mut read_problems = Vec::new();
    for path in paths {
        let (mut found, problems) = load::read_path(path);
        read_problems.extend(problems);
        // A fleet file at the top of a folder is checked as one, not loaded as a manifest.
        if let Some(at) = found
            .iter()
            .position(|f| f.relative == shipshape_api::fleet::FLEET_FILE)
        {
            let file = found.remove(at);
            let text = String::from_utf8_lossy(&file.bytes);
            if let Err(error) = shipshape_api::fleet::parse(&text, &file.display) {
                read_problems.push(Problem {
                    file: error.file,
                    line: error.line,
                    application: "fleet".into(),
                    object: None,
                    field: None,
                    message: error.message,
                });
            }
        }
        // Applications with a kustomization render (bases may sit anywhere in the checkout).
        let kustomized = !shipshape_kustomize::apps::kustomized(&found).is_empty();
        match crate::render::checkout(path) {
            Ok(checkout) if kustomized && path.is_dir() => {
                let split =
                    shipshape_kustomize::apps::split(found, &checkout.files, &checkout.base);
                files.extend(split.plain);
                rendered.extend(split.rendered);
                render_problems.extend(split.problems);
            }
            _ => files.extend(found),
        }
    }
    let mut result = load::load_with(&files, &rendered, render_problems);
    result.problems.extend(read_problems);
    result
        .problems
        .extend(shipshape_reconciler::services::address_problems(
            &result.manifests,
        ));
    // Offline, only the files given can declare Namespaces (in shipshape nothing else can).
    let namespaces = shipshape_reconciler::namespaces::missing_namespaces(
        &result.manifests,
        &BTreeSet::new(),
        &BTreeSet::new(),
    );
    result.problems.extend(namespaces);
    result
        .problems
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    result
}

/// The one-line summary: `14 objects in 6 files, 3 applications: 3 Deployment, …`.
pub fn summary(result: &LoadResult) -> String {
    let mut counts: Vec<_> = result.kind_counts().into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let kinds: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    let objects = result.manifests.len();
    let mut line = format!(
        "{} in {}, {}",
        plural(objects, "object"),
        plural(result.files, "file"),
        plural(result.applications.len(), "application"),
    );
    if !kinds.is_empty() {
        line.push_str(": ");
        line.push_str(&kinds.join(", "));
    }
    line
}

/// `1 file`, `2 files`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    objects: usize,
    files: usize,
    applications: &'a BTreeSet<String>,
    kinds: std::collections::BTreeMap<String, usize>,
    problems: &'a [Problem],
}

pub fn run(paths: &[PathBuf], format: Format) -> anyhow::Result<ExitCode> {
    let result = load_paths(paths);
    match format {
        Format::Json => {
            let report = Report {
                valid: result.is_valid(),
                objects: result.manifests.len(),
                files: result.files,
                applications: &result.applications,
                kinds: result
                    .kind_counts()
                    .into_iter()
                    .map(|(kind, n)| (kind.to_string(), n))
                    .collect(),
                problems: &result.problems,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Format::Text => {
            if result.is_valid() {
                println!("{}", summary(&result));
            } else {
                for problem in &result.problems {
                    println!("{problem}");
                }
                let failed: Vec<&str> = result.failed_applications().into_iter().collect();
                eprintln!(
                    "invalid: {} in {} ({})",
                    plural(result.problems.len(), "problem"),
                    plural(failed.len(), "application"),
                    failed.join(", ")
                );
            }
        }
    }
    Ok(if result.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
