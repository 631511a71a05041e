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
    if shipshape_node::containerd::is_root() {
        return Ok(PathBuf::from("/var/lib/shipshape"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/shipshape")),
        None => bail!("cannot choose a data directory: set --data-dir or SHIPSHAPE_DATA_DIR"),
    }
}

/// Opens the cluster's database, creating the data directory on first use.
pub fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    Ok(Store::open(&data_dir.join(DATABASE))?)
}

/// A cluster as a command finds it: its database when stopped, its API server when running.
pub enum Cluster {
    /// Nobody holds the database: read (and write) it directly.
    Stopped(Store),
    /// `shipshape up` holds it: go through the API server.
    Running(crate::remote::Remote),
}

/// Finds the cluster in the data directory.
pub fn connect(data_dir: &Path) -> anyhow::Result<Cluster> {
    if !data_dir.join(DATABASE).exists() {
        bail!(
            "no cluster in {}: start one with `shipshape up` (or pass --data-dir)",
            data_dir.display()
        );
    }
    match Store::open(&data_dir.join(DATABASE)) {
        Ok(store) => Ok(Cluster::Stopped(store)),
        Err(shipshape_actors::StoreError::InUse(_)) => Ok(Cluster::Running(
            crate::remote::Remote::from_data_dir(data_dir)?,
        )),
        Err(error) => Err(error.into()),
    }
}
