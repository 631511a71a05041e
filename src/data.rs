//! Where a cluster keeps its state, and opening it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use shipshape_actors::Store;

/// The database file inside a data directory.
const DATABASE: &str = "shipshape.redb";

/// The data directory: `--data-dir`, else `SHIPSHAPE_DATA_DIR`, else `/var/lib/shipshape` as
/// root, else `~/.local/share/shipshape`.
pub fn data_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("SHIPSHAPE_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    // Owning /proc/self means running as the user who owns this process: uid 0 is root.
    if is_root() {
        return Ok(PathBuf::from("/var/lib/shipshape"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/shipshape")),
        None => bail!("cannot choose a data directory: set --data-dir or SHIPSHAPE_DATA_DIR"),
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Opens the cluster's database, creating the data directory on first use.
pub fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    Ok(Store::open(&data_dir.join(DATABASE))?)
}

/// Opens an existing cluster's database for a command that reads it.
pub fn open_existing(data_dir: &Path) -> anyhow::Result<Store> {
    if !data_dir.join(DATABASE).exists() {
        bail!(
            "no cluster in {}: start one with `shipshape up` (or pass --data-dir)",
            data_dir.display()
        );
    }
    open_store(data_dir)
}
