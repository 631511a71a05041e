//! `shipshape render`: what a kustomization renders, printed as `kustomize build` prints it;
//! and the checkout a local path belongs to, so `validate` and `render` read bases outside
//! the path (`../../base`) but never outside the repository.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use shipshape_kustomize::FsFiles;

/// A local path inside its repository.
pub struct Checkout {
    /// The repository's files.
    pub files: FsFiles,
    /// The path, relative to the repository's top (`""` for the top).
    pub base: String,
}

/// The repository `path` belongs to: the nearest folder above it with a `.git`, else the whole
/// filesystem. Messages show paths from the current folder.
pub fn checkout(path: &Path) -> anyhow::Result<Checkout> {
    let absolute =
        std::fs::canonicalize(path).with_context(|| format!("cannot read {}", path.display()))?;
    let folder = if absolute.is_dir() {
        absolute.clone()
    } else {
        absolute
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| absolute.clone())
    };
    // Outside a checkout there is no repository to stay in: bases are read wherever they are,
    // as `kustomize build` reads them (the sync reads only the commit's tree).
    let root = folder
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new("/").to_path_buf());
    let base = folder
        .strip_prefix(&root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Paths are shown as a shell in the current folder names them.
    let here = std::env::current_dir().context("cannot read the current folder")?;
    Ok(Checkout {
        files: FsFiles::shown_from(root, here),
        base,
    })
}

/// Prints the rendered YAML of the kustomization in `path`.
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let Checkout { files, base } = checkout(path)?;
    match shipshape_kustomize::render(&files, &base) {
        Ok(rendered) => {
            print!("{}", rendered.to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::from(1))
        }
    }
}
