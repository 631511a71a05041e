//! kustomize's own expectations: each folder under `tests/krusty/` holds the files one of
//! kustomize's `api/krusty` tests writes, the folder it builds, and the output it expects (or
//! that it fails). The render must print the same objects, in the same order, and fail where
//! kustomize fails. `INDEX.md` there says where each case comes from.

use std::path::{Path, PathBuf};

use serde_json::Value;
use shipshape_kustomize::{FsFiles, Order, render_ordered};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/krusty");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("the fixtures are there")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

/// The documents of a YAML stream, as JSON, for comparing what they say.
fn documents(text: &str) -> Vec<Value> {
    shipshape_api::yaml::parse_documents(text)
        .unwrap_or_else(|e| panic!("expected output is YAML: {e:?}\n{text}"))
        .into_iter()
        .filter_map(|d| d.root)
        .map(|n| n.to_json())
        .filter(|v| !v.is_null())
        .collect()
}

/// Whether one case prints what kustomize prints (byte for byte) or fails where it fails.
fn run(case: &Path) -> Result<(), String> {
    let entry = std::fs::read_to_string(case.join("entry")).expect("entry");
    let entry = entry.trim().trim_start_matches("./");
    let entry = if entry == "." { "" } else { entry };
    let files = FsFiles::new(case.join("files"), "");
    let rendered = render_ordered(&files, entry, Order::AsRead);
    let expected = std::fs::read_to_string(case.join("expected.yaml")).ok();
    match (rendered, expected) {
        (Ok(rendered), Some(expected)) => {
            let text = rendered.to_yaml();
            if text == expected {
                return Ok(());
            }
            let what = if documents(&text) == documents(&expected) {
                "the same objects, printed otherwise"
            } else {
                "other objects"
            };
            Err(format!("{what}; printed:\n{text}\nexpected:\n{expected}"))
        }
        (Ok(rendered), None) => Err(format!(
            "rendered, but kustomize fails:\n{}",
            rendered.to_yaml()
        )),
        (Err(error), Some(_)) => Err(format!("failed: {error}")),
        (Err(_), None) => Ok(()),
    }
}

#[test]
fn renders_what_kustomize_renders() {
    let cases = cases();
    assert!(cases.len() >= 60, "the fixtures are there");
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run(case).err().map(|why| {
                let name = case.file_name().map(|n| n.to_string_lossy().into_owned());
                format!("== {}\n{why}", name.unwrap_or_default())
            })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases differ:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// Public repositories' kustomize folders (podinfo's `kustomize/`, argocd-example-apps'
/// `kustomize-guestbook`, and cases of our own under `cases/`): printed byte for byte as
/// `kustomize build` v5.5 prints them (in its default, legacy order), or failing with the
/// message in `expected-error.txt`.
#[test]
fn prints_what_kustomize_build_prints() {
    let mut checked = 0;
    for folder in ["upstream", "cases"] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(folder);
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
            .expect("the cases are there")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        cases.sort();
        for case in cases {
            let entry = std::fs::read_to_string(case.join("entry")).expect("entry");
            let files = FsFiles::new(case.join("files"), "");
            let rendered = shipshape_kustomize::render(&files, entry.trim());
            match std::fs::read_to_string(case.join("expected.yaml")) {
                Ok(expected) => {
                    let text = rendered
                        .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
                        .to_yaml();
                    assert_eq!(text, expected, "{}", case.display());
                }
                Err(_) => {
                    let wanted = std::fs::read_to_string(case.join("expected-error.txt"))
                        .expect("an expected output or error");
                    let error = rendered
                        .err()
                        .unwrap_or_else(|| panic!("{} renders, but should fail", case.display()));
                    assert_eq!(error.to_string(), wanted.trim_end(), "{}", case.display());
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "the cases are there");
}
