//! `shipshape up`: find the desired state and start the cluster on it.
//!
//! This slice resolves the repository and path exactly as DESIGN.md's defaults say and
//! validates the desired state; the control plane that would then run it is not built yet, and
//! the command says so rather than pretending.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use crate::validate;

/// Flags of `shipshape up` (those this build acts on).
#[derive(Args)]
pub struct UpArgs {
    /// The Git repository holding the desired state (default: the one containing the
    /// current directory).
    #[arg(long, value_name = "URL|PATH")]
    repo: Option<PathBuf>,
    /// The folder inside the repository whose subfolders are applications (default:
    /// `examples-repo` when it exists, else the repository's top).
    #[arg(long, value_name = "DIR")]
    path: Option<PathBuf>,
}

/// The nearest folder at or above `start` that holds a `.git`.
fn enclosing_repository(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

pub fn run(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let repo = match &args.repo {
        Some(repo) => repo.clone(),
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            match enclosing_repository(&cwd) {
                Some(repo) => repo,
                None => bail!(
                    "no Git repository here: run inside one, or pass --repo PATH (the repository holding your manifests)"
                ),
            }
        }
    };
    let path = match &args.path {
        Some(path) => path.clone(),
        None if repo.join("examples-repo").is_dir() => PathBuf::from("examples-repo"),
        None => PathBuf::new(),
    };
    let desired = if path.as_os_str().is_empty() {
        repo.clone()
    } else {
        repo.join(&path)
    };
    if !desired.is_dir() {
        bail!(
            "{} is not a folder: check --repo and --path",
            desired.display()
        );
    }
    eprintln!("desired state: {}", desired.display());
    let result = validate::load_paths(std::slice::from_ref(&desired));
    if !result.is_valid() {
        for problem in &result.problems {
            println!("{problem}");
        }
        eprintln!(
            "shipshape up: the desired state is invalid; fix the problems above and run again"
        );
        return Ok(ExitCode::from(1));
    }
    println!("{}", validate::summary(&result));
    eprintln!(
        "shipshape up: validated only. This build has no control plane yet (Store, GitSync, controllers, kubelets are the next issues); nothing was started."
    );
    Ok(ExitCode::SUCCESS)
}
