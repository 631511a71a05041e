//! Where a cluster keeps its state, and opening it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use shipshape_actors::Store;

/// The database file inside a data directory.
const DATABASE: &str = "shipshape.redb";

/// The data directory: `--data-dir`, else `SHIPSHAPE_DATA_DIR`, else `/var/lib/shipshape` as
/// root, else `~/.local/share/shipshape`. A relative directory is made absolute against the
/// working directory: containerd and its shims run elsewhere and would read it against theirs.
pub fn data_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let absolute = |dir: PathBuf| {
        std::path::absolute(&dir)
            .with_context(|| format!("cannot make the data directory {} absolute", dir.display()))
    };
    if let Some(dir) = flag {
        return absolute(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("SHIPSHAPE_DATA_DIR").filter(|d| !d.is_empty()) {
        return absolute(PathBuf::from(dir));
    }
    if shipshape_node::containerd::is_root() {
        return Ok(PathBuf::from("/var/lib/shipshape"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/shipshape")),
        None => bail!("cannot choose a data directory: set --data-dir or SHIPSHAPE_DATA_DIR"),
    }
}

/// Opens the cluster's database, creating the data directory on first use. The directory is
/// the owner's alone (0700) and the database too (0600): it holds Secrets, the API token and
/// the CA's key. A directory from before is tightened the same way.
pub fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict the data directory {}", data_dir.display()))?;
    let store = Store::open(&data_dir.join(DATABASE))?;
    std::fs::set_permissions(
        data_dir.join(DATABASE),
        std::fs::Permissions::from_mode(0o600),
    )
    .with_context(|| format!("cannot restrict the database in {}", data_dir.display()))?;
    Ok(store)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_data_directory_and_database_are_the_owners_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("a/data");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("exists")
                .permissions()
                .mode()
                & 0o777
        };
        drop(open_store(&data).expect("opens"));
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(DATABASE)), 0o600);
        // A directory left open by an earlier version is tightened.
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(data.join(DATABASE), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        drop(open_store(&data).expect("opens"));
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(DATABASE)), 0o600);
    }
}
