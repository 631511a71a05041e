//! GitSync: the only source of desired state.
//!
//! It keeps a bare mirror of the repository in the data directory, fetches it, resolves the
//! branch, tag or commit to follow, and reads manifests straight from the commit's tree (no
//! working checkout). Each application (a folder directly under the path; files at the top are
//! `root`) is then planned by `shipshape_reconciler::gitops` and applied as one batch, in one
//! transaction, with its audit record and its new status. An application with any invalid
//! manifest is rejected whole and stays on its last good commit; the others proceed. Only
//! applications whose files changed since they were last applied are re-planned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::FutureExt;
use git2::{FetchOptions, ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use kameo::Actor;
use kameo::actor::ActorRef;
use kameo::message::{Context, Message};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shipshape_api::fleet::{ClusterIdentity, FLEET_FILE};
use shipshape_api::load::{self, ROOT_APPLICATION, SourceFile};
use shipshape_reconciler::gitops::{self, Action, Desired, Foreign, Managed, Refusal};

use crate::store::{AuditEntry, Batch, Precondition, StoreError, Write};
use crate::store_actor::{Apply, Get, GetMeta, List, ListMeta, ManagedBy, StoreActor};

/// Label every Git-managed object carries.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Annotation naming the commit that last set the object.
pub const COMMIT_ANNOTATION: &str = "shipshape.dev/commit";
/// Annotation naming the application that manages the object.
pub const APPLICATION_ANNOTATION: &str = "shipshape.dev/application";
/// Annotation naming the file that declares the object.
pub const SOURCE_ANNOTATION: &str = "shipshape.dev/source";

/// Where the store keeps the newest commit synced.
pub const HEAD_META: &str = "git/head";
/// Where the store keeps why the last sync could not fetch or read Git (absent once one
/// succeeds), for `status`: a remote that hangs or refuses is seen, not only logged.
pub const GIT_ERROR_META: &str = "git/error";
/// Where the store keeps each application's [`ApplicationStatus`] (`app/NAME`).
pub const APP_META_PREFIX: &str = "app/";

/// Which commit to follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GitRef {
    /// The newest commit of a branch.
    Branch(String),
    /// The remote's default branch (its HEAD).
    DefaultBranch,
    /// The commit a tag points at.
    Tag(String),
    /// One fixed commit (a full or abbreviated id).
    Commit(String),
}

/// Where desired state comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSource {
    /// A URL (`https://…`, `file://…`) or a local path.
    pub url: String,
    /// What to follow.
    pub reference: GitRef,
    /// The folder inside the repository whose subfolders are applications (empty: the top).
    pub path: String,
}

/// A Git operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GitError(pub String);

fn git_error(context: &str) -> impl Fn(git2::Error) -> GitError + '_ {
    move |error| GitError(format!("{context}: {}", error.message()))
}

/// The commit a sync applies, as the audit history records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The full id.
    pub id: String,
    /// Author name and email.
    pub author: String,
    /// Committer name and email.
    pub committer: String,
    /// The first line of the message.
    pub message: String,
    /// When it was committed (RFC 3339).
    pub time: String,
}

impl CommitInfo {
    /// The abbreviated id people read.
    pub fn short(&self) -> &str {
        self.id.get(..7).unwrap_or(&self.id)
    }
}

/// One application's files at one commit.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplicationTree {
    /// A digest of the application's files (for a kustomization, of every file and folder its
    /// build read, bases included): equal digests mean nothing changed.
    pub digest: String,
    /// The manifest files (and marker files such as kustomization.yaml).
    pub files: Vec<SourceFile>,
    /// For an application with a kustomization at its top: what it rendered, or why not.
    pub rendered: Option<Result<Arc<Vec<load::RenderedDocument>>, load::Problem>>,
}

/// One application's last render, kept while none of the paths it read changes.
struct CachedRender {
    /// Each path the build read and the object there (`None`: nothing).
    read: Vec<(String, Option<Oid>)>,
    digest: String,
    result: Result<Arc<Vec<load::RenderedDocument>>, load::Problem>,
}

/// What a commit declares, application by application: each application's objects and
/// problems (loaded once per digest, see [`GitSync::load_snapshot`]) and the problems found
/// between applications.
struct Declared {
    parts: BTreeMap<String, Arc<load::LoadResult>>,
    /// Problems between applications (duplicates, addresses, namespaces).
    problems: Vec<load::Problem>,
}

impl Declared {
    /// Every valid object, application by application.
    fn manifests(&self) -> impl Iterator<Item = &load::Manifest> {
        self.parts.values().flat_map(|part| &part.manifests)
    }

    fn manifests_of(&self, application: &str) -> impl Iterator<Item = &load::Manifest> {
        self.parts
            .get(application)
            .into_iter()
            .flat_map(|part| &part.manifests)
    }

    fn all_problems(&self) -> impl Iterator<Item = &load::Problem> {
        self.parts
            .values()
            .flat_map(|part| &part.problems)
            .chain(&self.problems)
    }

    /// The applications with at least one problem: a sync rejects these whole.
    fn failed(&self) -> BTreeSet<&str> {
        self.all_problems()
            .map(|p| p.application.as_str())
            .collect()
    }

    /// One application's problems, by file and line.
    fn problems_of(&self, application: &str) -> Vec<String> {
        let mut problems: Vec<&load::Problem> = self
            .all_problems()
            .filter(|p| p.application == application)
            .collect();
        problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        problems.iter().map(ToString::to_string).collect()
    }
}

/// A commit's files as the kustomize renderer reads them. Lookups are remembered: libgit2
/// reads every folder on a path again for each lookup, and a thousand applications' renders
/// (or their cache checks) look up paths through the same large folders.
struct CommitFiles<'r> {
    repo: &'r Repository,
    tree: git2::Tree<'r>,
    entries: std::cell::RefCell<std::collections::HashMap<String, Option<(Oid, bool)>>>,
    trees: std::cell::RefCell<std::collections::HashMap<String, git2::Tree<'r>>>,
}

impl<'r> CommitFiles<'r> {
    fn new(repo: &'r Repository, tree: git2::Tree<'r>) -> Self {
        CommitFiles {
            repo,
            tree,
            entries: Default::default(),
            trees: Default::default(),
        }
    }

    /// The object at `path` (`""`: the top), and whether it is a folder.
    fn entry(&self, path: &str) -> Option<(Oid, bool)> {
        let path = path.trim_matches('/');
        if path.is_empty() || path == "." {
            return Some((self.tree.id(), true));
        }
        if let Some(found) = self.entries.borrow().get(path) {
            return *found;
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let found = self.with_tree(parent, |tree| {
            let entry = tree.get_name(name)?;
            match entry.kind() {
                Some(ObjectType::Tree) => Some((entry.id(), true)),
                // A link could point anywhere: it is read as absent.
                Some(ObjectType::Blob) if entry.filemode() != 0o120000 => Some((entry.id(), false)),
                _ => None,
            }
        });
        let found = found.flatten();
        self.entries.borrow_mut().insert(path.to_string(), found);
        found
    }

    /// Calls `f` on the folder at `dir`, if there is one.
    fn with_tree<T>(&self, dir: &str, f: impl FnOnce(&git2::Tree<'r>) -> T) -> Option<T> {
        if dir.is_empty() {
            return Some(f(&self.tree));
        }
        if !self.trees.borrow().contains_key(dir) {
            let (id, is_dir) = self.entry(dir)?;
            if !is_dir {
                return None;
            }
            let tree = self.repo.find_tree(id).ok()?;
            self.trees.borrow_mut().insert(dir.to_string(), tree);
        }
        self.trees.borrow().get(dir).map(f)
    }
}

impl shipshape_kustomize::Files for CommitFiles<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match self.entry(path) {
            Some((id, false)) => self
                .repo
                .find_blob(id)
                .map(|blob| Some(blob.content().to_vec()))
                .map_err(|e| e.message().to_string()),
            _ => Ok(None),
        }
    }

    fn is_dir(&self, path: &str) -> bool {
        matches!(self.entry(path), Some((_, true)))
    }
}

/// The desired state at one commit.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The commit.
    pub commit: CommitInfo,
    /// Each application's files.
    pub applications: BTreeMap<String, ApplicationTree>,
}

/// How long one fetch may take in all before it is abandoned: a remote that hangs must not
/// freeze syncing (the next poll tries again).
pub const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a connection to the remote may stay silent (connecting, or mid-transfer) before
/// the fetch fails.
const FETCH_SILENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// A bare mirror of the source repository in the data directory.
pub struct Mirror {
    repo: Repository,
    source: GitSource,
    fetch_timeout: std::time::Duration,
    /// Each kustomize application's last render: a push that changes one application
    /// renders only it (and those sharing a base that changed).
    renders: std::sync::Mutex<std::collections::HashMap<String, CachedRender>>,
    /// The folder synced: the source's, or the one the fleet file gives this cluster.
    path: String,
    /// This cluster's name and labels, when it is a member of a fleet.
    cluster: Option<ClusterIdentity>,
    /// Fleet files parsed, by blob id.
    fleet_files: BTreeMap<Oid, crate::fleet::FleetFile>,
    /// Whether the other clusters' statuses matter to the next poll: only while a newer commit
    /// is held back. A cluster on the branch head reads none, so one cluster's status change
    /// does not make the whole fleet fetch.
    watch_statuses: bool,
    /// The clusters the last poll read that cannot hold this one back (in a later or the same
    /// wave, or in none): their status refs moving is no reason to fetch.
    downstream: BTreeSet<String>,
    /// The clusters the last poll read at all: a status ref of any other is a cluster new to
    /// this one, and read.
    known: BTreeSet<String>,
    /// The clusters of the wave the held commit waits for: only their statuses moving can
    /// release it (an earlier wave was ready when this one was taken, and a halt lasts until
    /// the branch moves), so only that makes a held poll fetch.
    blocking: BTreeSet<String>,
}

/// How long a change of what a fleet member waits for must last before it is published on its
/// own (with any other change it goes out at once).
const HELD_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// What moved upstream since the mirror's last fetch ([`Mirror::moved`]).
#[derive(Debug, Default)]
struct Moved {
    /// A branch, a tag or the default branch moved, appeared or went.
    source: bool,
    /// The status refs to fetch.
    statuses: Vec<String>,
}

/// Where a fleet member goes this sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetChoice {
    /// The commit to sync (`None`: stay on the current one; with no current one, nothing yet).
    pub target: Option<Oid>,
    /// Why the branch's newest commit is not the one synced.
    pub held: Option<String>,
    /// The same without its counts, as the cluster publishes it ([`Hold::reason`]).
    ///
    /// [`Hold::reason`]: shipshape_reconciler::fleet::Hold::reason
    pub published_held: Option<String>,
    /// The cluster's wave at the commit it will be on.
    pub wave: Option<String>,
    /// That wave's soak, in seconds.
    pub soak_seconds: i64,
}

/// Makes libgit2 give up on a connection silent for `silence` (connecting, or waiting for
/// data): the transfer callbacks that enforce the whole-fetch bound only run while data flows.
fn set_silence_timeout(silence: std::time::Duration) {
    let millis = i32::try_from(silence.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: these set two integers in libgit2's global options, which it guards itself.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis);
        let _ = git2::opts::set_server_timeout_in_milliseconds(millis);
    }
}

/// The folder `path` names inside a commit's tree, as the tree sees it: `.`, `./apps/` and
/// `apps//x` read as the root, `apps` and `apps/x`. A path that climbs out (`..`) is refused.
pub fn tree_path(path: &str) -> Result<String, GitError> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(GitError(format!(
                    "--path {path} leaves the repository: name a folder inside it"
                )));
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

impl GitSource {
    /// Where the source is remembered in the store, so commands run later sync the same way.
    pub const META_KEY: &'static str = "git/source";

    /// The reference in words: `branch main`, `tag v1`, `commit 1a2b3c4`.
    pub fn describe_reference(&self) -> String {
        match &self.reference {
            GitRef::Branch(branch) => format!("branch {branch}"),
            GitRef::DefaultBranch => "the default branch".into(),
            GitRef::Tag(tag) => format!("tag {tag}"),
            GitRef::Commit(commit) => format!("commit {commit}"),
        }
    }
}

impl Mirror {
    /// Opens the mirror at `dir`, creating it on first use and pointing it at the source.
    pub fn open(dir: &Path, source: GitSource) -> Result<Self, GitError> {
        let repo = match Repository::open_bare(dir) {
            Ok(repo) => repo,
            Err(_) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| GitError(format!("cannot create {}: {e}", dir.display())))?;
                Repository::init_bare(dir).map_err(git_error("cannot create the mirror"))?
            }
        };
        let url = absolute_url(&source.url);
        match repo.find_remote("origin") {
            Ok(remote) if remote.url().ok() == Some(url.as_str()) => {}
            Ok(_) => repo
                .remote_set_url("origin", &url)
                .map_err(git_error("cannot point the mirror at the repository"))?,
            Err(_) => {
                repo.remote_with_fetch("origin", &url, "+refs/heads/*:refs/remotes/origin/*")
                    .map_err(git_error("cannot point the mirror at the repository"))?;
            }
        }
        set_silence_timeout(FETCH_SILENCE);
        let source = GitSource {
            path: tree_path(&source.path)?,
            ..source
        };
        Ok(Self {
            repo,
            path: source.path.clone(),
            source,
            fetch_timeout: FETCH_TIMEOUT,
            renders: std::sync::Mutex::new(std::collections::HashMap::new()),
            cluster: None,
            fleet_files: BTreeMap::new(),
            watch_statuses: true,
            downstream: BTreeSet::new(),
            known: BTreeSet::new(),
            blocking: BTreeSet::new(),
        })
    }

    /// The same mirror as fleet member `cluster`: it fetches every cluster's status, takes a
    /// commit only when its wave may, and syncs the folder the fleet file gives it.
    pub fn with_cluster(self, cluster: ClusterIdentity) -> Self {
        Self {
            cluster: Some(cluster),
            ..self
        }
    }

    /// This cluster, when it is a fleet member.
    pub fn cluster(&self) -> Option<&ClusterIdentity> {
        self.cluster.as_ref()
    }

    /// The bare repository (for reading statuses).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Where a fleet member goes from `current` with the branch at `head`: the newest commit
    /// its wave may take ([`shipshape_reconciler::fleet::choose`] over the statuses fetched),
    /// and the folder it syncs there. A cluster that is no fleet member takes `head`.
    pub fn fleet_choice(
        &mut self,
        head: Oid,
        current: Option<Oid>,
    ) -> Result<FleetChoice, GitError> {
        use shipshape_reconciler::fleet::{Candidate, choose};
        let Some(me) = self.cluster.clone() else {
            return Ok(FleetChoice {
                target: Some(head),
                ..FleetChoice::default()
            });
        };
        let ids = crate::fleet::candidates(&self.repo, head, current);
        let mut files = Vec::new();
        for id in &ids {
            files.push(crate::fleet::fleet_at(
                &self.repo,
                *id,
                &mut self.fleet_files,
            )?);
        }
        let candidates: Vec<Candidate<'_>> = ids
            .iter()
            .zip(&files)
            .map(|(id, file)| Candidate {
                commit: id.to_string(),
                fleet: file.at(),
            })
            .collect();
        let reports: Vec<_> = crate::fleet::statuses(&self.repo)
            .into_iter()
            .map(|(name, (_, status))| status.report(&name))
            .collect();
        let choice = choose(&me, &candidates, &reports);
        // Whose progress the newest commit waits for.
        let newest = files.first().and_then(crate::fleet::FleetFile::valid);
        let mine = newest.and_then(|fleet| fleet.wave_of(&me));
        self.downstream = reports
            .iter()
            .filter(|r| {
                let theirs = newest.and_then(|fleet| fleet.wave_of(&r.cluster));
                match (theirs, mine) {
                    (Some(theirs), Some(mine)) => theirs >= mine,
                    // In no wave: it holds nobody back.
                    (None, Some(_)) => true,
                    // No wave of mine to place it against: every status may matter.
                    (_, None) => false,
                }
            })
            .map(|r| r.cluster.name.clone())
            .collect();
        self.known = reports.iter().map(|r| r.cluster.name.clone()).collect();
        self.blocking = match (&choice.newest_held, current) {
            // On nothing yet: any status may be the one that lets it start.
            (_, None) => self.known.clone(),
            (Some((_, shipshape_reconciler::fleet::Hold::Waiting { wave, .. })), _) => {
                let index = newest.and_then(|f| f.waves.iter().position(|w| w.name == *wave));
                match (newest, index) {
                    (Some(fleet), Some(index)) => reports
                        .iter()
                        .filter(|r| fleet.wave_of(&r.cluster) == Some(index))
                        .map(|r| r.cluster.name.clone())
                        .collect(),
                    _ => self.known.clone(),
                }
            }
            _ => BTreeSet::new(),
        };
        let target = choice.commit.as_deref().and_then(|c| Oid::from_str(c).ok());
        let short = |commit: &str| commit[..commit.len().min(7)].to_string();
        let published_held = choice
            .newest_held
            .as_ref()
            .map(|(commit, why)| format!("commit {}: {}", short(commit), why.reason()));
        let held = choice
            .newest_held
            .map(|(commit, why)| format!("commit {}: {why}", short(&commit)));
        let on = target.or(current);
        // The fleet file of the commit it will be on: a candidate's, read above, or its own.
        let fleet = match (target, current) {
            (Some(id), _) => ids
                .iter()
                .position(|c| *c == id)
                .and_then(|i| files[i].valid().cloned()),
            (None, Some(id)) => crate::fleet::fleet_at(&self.repo, id, &mut self.fleet_files)?
                .valid()
                .cloned(),
            (None, None) => None,
        };
        let wave = fleet
            .as_ref()
            .and_then(|f| f.wave_of(&me).map(|w| f.waves[w].clone()));
        let path = fleet
            .as_ref()
            .and_then(|f| f.path_for(&me).map(str::to_string))
            .unwrap_or_else(|| self.source.path.clone());
        if path != self.path {
            self.path = path;
            self.renders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        // Held back (or on nothing yet): the next polls must see the others' progress.
        self.watch_statuses = held.is_some() || on.is_none();
        Ok(FleetChoice {
            target,
            held,
            published_held,
            soak_seconds: wave.as_ref().map_or(0, |w| w.soak_seconds),
            wave: wave.map(|w| w.name),
        })
    }

    /// The folder synced now.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The same mirror with another bound on a whole fetch (tests use a short one). The bound
    /// on a silent connection, libgit2's and so process-wide, is lowered to it if longer.
    pub fn with_fetch_timeout(self, fetch_timeout: std::time::Duration) -> Self {
        set_silence_timeout(fetch_timeout.min(FETCH_SILENCE));
        Self {
            fetch_timeout,
            ..self
        }
    }

    /// Fetches what moved upstream: branches and tags (branches deleted upstream go away here
    /// too), and for a fleet member the statuses of the clusters that can hold it back. The
    /// remote's ref advertisement is read first: when nothing that matters moved, no fetch
    /// follows (one request to the Git host per idle poll), and a fetch names only the status
    /// refs that moved, so a hundred clusters publishing do not make each member rewrite a
    /// hundred refs.
    pub fn fetch(&self) -> Result<(), GitError> {
        let mut remote = self
            .repo
            .find_remote("origin")
            .map_err(git_error("the mirror has no origin"))?;
        let url = self.source.url.clone();
        let unreachable = |e: git2::Error| GitError(format!("cannot fetch {url}: {}", e.message()));
        // The transfer callbacks run while data flows: past the deadline they abort the fetch.
        let deadline = std::time::Instant::now() + self.fetch_timeout;
        let failed = |e: git2::Error| {
            if std::time::Instant::now() >= deadline {
                GitError(format!(
                    "cannot fetch {}: no answer within {} s (the next poll tries again)",
                    self.source.url,
                    self.fetch_timeout.as_secs()
                ))
            } else {
                GitError(format!("cannot fetch {}: {}", self.source.url, e.message()))
            }
        };
        crate::metrics::METRICS.git_request("advertisement");
        // One connection serves the advertisement and the fetch that may follow.
        let mut connection = remote
            .connect_auth(git2::Direction::Fetch, None, None)
            .map_err(unreachable)?;
        let moved = self.moved(connection.list().map_err(unreachable)?);
        if !moved.source && moved.statuses.is_empty() {
            return Ok(());
        }
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.transfer_progress(|_| std::time::Instant::now() < deadline);
        callbacks.sideband_progress(|_| std::time::Instant::now() < deadline);
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        let mut refspecs: Vec<String> = Vec::new();
        let tags = if moved.source {
            refspecs.extend(
                [
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                    "+HEAD:refs/remotes/origin/HEAD",
                ]
                .map(String::from),
            );
            git2::AutotagOption::All
        } else {
            git2::AutotagOption::None
        };
        options.download_tags(tags);
        refspecs.extend(moved.statuses.iter().map(|name| format!("+{name}:{name}")));
        crate::metrics::METRICS.git_request("fetch");
        let remote = connection.remote();
        remote
            .download(&refspecs, Some(&mut options))
            .map_err(failed)?;
        // No FETCH_HEAD: nothing reads it, and it was one more file written per fetch.
        remote
            .update_tips(None, git2::RemoteUpdateFlags::empty(), tags, Some("fetch"))
            .map_err(failed)?;
        if moved.source {
            // Branches and tags deleted upstream go here too.
            remote.prune(None).map_err(failed)?;
        }
        Ok(())
    }

    /// What the remote advertises (`heads`) that the mirror lacks: a branch, a tag or the
    /// default branch moved, appeared or went (`source`); the status refs worth fetching
    /// (`statuses`).
    ///
    /// Status refs are worth fetching when they moved and the branch moved too (a moved branch
    /// is decided on fresh statuses, and its fleet file may place clusters anew), or while a
    /// commit is held back and a cluster that can release it moved (one of the wave it waits
    /// for, or one new to this cluster): then every earlier wave's moved statuses come.
    fn moved(&self, heads: &[git2::RemoteHead<'_>]) -> Moved {
        let differs = |local: &str, oid: Oid| self.repo.refname_to_id(local).ok() != Some(oid);
        let mut moved = Moved::default();
        // Every status that moved, those whose cluster can hold this one back, and whether one
        // that can release a held commit moved.
        let (mut statuses, mut upstream, mut releasing) = (Vec::new(), Vec::new(), false);
        let mut advertised = BTreeSet::new();
        for head in heads {
            let name = head.name();
            let local = if name == "HEAD" {
                "refs/remotes/origin/HEAD".to_string()
            } else if let Some(branch) = name.strip_prefix("refs/heads/") {
                format!("refs/remotes/origin/{branch}")
            } else if name.starts_with("refs/tags/") && !name.ends_with("^{}") {
                name.to_string()
            } else if let Some(cluster) = name.strip_prefix(crate::fleet::STATUS_REFS) {
                if self.cluster.is_some() && differs(name, head.oid()) {
                    if !self.downstream.contains(cluster) {
                        upstream.push(name.to_string());
                    }
                    releasing |= self.blocking.contains(cluster) || !self.known.contains(cluster);
                    statuses.push(name.to_string());
                }
                continue;
            } else {
                continue;
            };
            moved.source |= differs(&local, head.oid());
            advertised.insert(local);
        }
        let globs = ["refs/remotes/origin/*", "refs/tags/*"];
        moved.source |= !globs.iter().all(|glob| {
            self.repo.references_glob(glob).is_ok_and(|refs| {
                refs.flatten()
                    .all(|r| r.name().ok().is_some_and(|name| advertised.contains(name)))
            })
        });
        if moved.source {
            // The waves themselves may have changed with the branch: read every status afresh.
            moved.statuses = statuses;
        } else if self.wants_statuses() && releasing {
            // Decided on fresh statuses of every earlier wave, not only the one that moved.
            moved.statuses = upstream;
        }
        moved
    }

    /// Whether this poll fetches the other clusters' statuses though no branch moved.
    fn wants_statuses(&self) -> bool {
        self.cluster.is_some() && self.watch_statuses
    }

    /// The commit the source's reference names now.
    pub fn resolve(&self) -> Result<Oid, GitError> {
        let (spec, what) = match &self.source.reference {
            GitRef::Branch(branch) => (
                format!("refs/remotes/origin/{branch}"),
                format!("branch {branch}"),
            ),
            GitRef::DefaultBranch => (
                "refs/remotes/origin/HEAD".to_string(),
                "the default branch".to_string(),
            ),
            GitRef::Tag(tag) => (format!("refs/tags/{tag}"), format!("tag {tag}")),
            GitRef::Commit(commit) => (commit.clone(), format!("commit {commit}")),
        };
        let object = self
            .repo
            .revparse_single(&spec)
            .map_err(|_| GitError(format!("{what} is not in {}", self.source.url)))?;
        let commit = object
            .peel_to_commit()
            .map_err(|_| GitError(format!("{what} does not name a commit")))?;
        Ok(commit.id())
    }

    /// True when `new` does not build on `old`: the history was rewritten (a force-push).
    pub fn is_rewrite(&self, old: Oid, new: Oid) -> bool {
        old != new && !self.repo.graph_descendant_of(new, old).unwrap_or(false)
    }

    /// Who made `commit`, when and why.
    pub fn commit_info(&self, commit: Oid) -> Result<CommitInfo, GitError> {
        let commit = self
            .repo
            .find_commit(commit)
            .map_err(git_error("cannot read the commit"))?;
        Ok(commit_info(&commit))
    }

    /// Reads the applications at `commit` straight from its tree.
    pub fn snapshot(&self, commit: Oid) -> Result<Snapshot, GitError> {
        let commit = self
            .repo
            .find_commit(commit)
            .map_err(git_error("cannot read the commit"))?;
        let info = commit_info(&commit);
        let top = commit
            .tree()
            .map_err(git_error("cannot read the commit's tree"))?;
        let base = if self.path.is_empty() {
            top.clone()
        } else {
            let entry = top.get_path(Path::new(&self.path)).map_err(|_| {
                GitError(format!(
                    "{} is not a folder in commit {}",
                    self.path,
                    info.short()
                ))
            })?;
            self.repo.find_tree(entry.id()).map_err(|_| {
                GitError(format!(
                    "{} is not a folder in commit {}",
                    self.path,
                    info.short()
                ))
            })?
        };
        let mut applications = BTreeMap::new();
        let mut root_files = Vec::new();
        let mut root_digest = Sha256::new();
        for entry in base.iter() {
            let Some(name) = entry.name().ok().map(str::to_string) else {
                return Err(GitError(format!(
                    "folder or file \"{}\" in commit {} has a name that is not UTF-8: rename it (application names are text)",
                    String::from_utf8_lossy(entry.name_bytes()),
                    info.short()
                )));
            };
            if name.starts_with('.') {
                continue;
            }
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let tree = self
                        .repo
                        .find_tree(entry.id())
                        .map_err(git_error("cannot read a folder"))?;
                    let mut files = Vec::new();
                    let mut failure = None;
                    tree.walk(TreeWalkMode::PreOrder, |dir, item| {
                        let item_name = item.name().unwrap_or_default();
                        if item_name.starts_with('.') {
                            return TreeWalkResult::Skip;
                        }
                        let relative = format!("{name}/{dir}{item_name}");
                        if item.kind() == Some(ObjectType::Blob)
                            && item.filemode() != 0o120000
                            && wanted_file(item_name)
                        {
                            match self.repo.find_blob(item.id()) {
                                Ok(blob) => {
                                    files.push(self.source_file(relative, blob.content().to_vec()))
                                }
                                Err(e) => failure = Some(git_error("cannot read a file")(e)),
                            }
                        }
                        TreeWalkResult::Ok
                    })
                    .map_err(git_error("cannot read a folder"))?;
                    if let Some(error) = failure {
                        return Err(error);
                    }
                    applications.insert(
                        name,
                        ApplicationTree {
                            digest: entry.id().to_string(),
                            files,
                            rendered: None,
                        },
                    );
                }
                // The fleet file at the top of the repository is no manifest.
                Some(ObjectType::Blob) if self.path.is_empty() && name == FLEET_FILE => {}
                Some(ObjectType::Blob) if entry.filemode() != 0o120000 => {
                    root_digest.update(format!("{name}\0{}\n", entry.id()).as_bytes());
                    if wanted_file(&name) {
                        let blob = self
                            .repo
                            .find_blob(entry.id())
                            .map_err(git_error("cannot read a file"))?;
                        root_files.push(self.source_file(name, blob.content().to_vec()));
                    }
                }
                _ => {}
            }
        }
        if !root_files.is_empty() {
            // A folder named like the root application joins it (its files keep their
            // `root/` paths), so the loader can refuse the clash instead of one silently
            // replacing the other.
            if let Some(folder) = applications.remove(ROOT_APPLICATION) {
                root_digest.update(format!("{ROOT_APPLICATION}/\0{}\n", folder.digest).as_bytes());
                root_files.extend(folder.files);
            }
            let digest: String = root_digest
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            applications.insert(
                ROOT_APPLICATION.to_string(),
                ApplicationTree {
                    digest,
                    files: root_files,
                    rendered: None,
                },
            );
        }
        self.render_kustomizations(&top, &mut applications);
        Ok(Snapshot {
            commit: info,
            applications,
        })
    }

    /// Renders the applications with a kustomization at their top (a kustomization at the top
    /// of the path makes the whole path one application), reusing a render whose inputs are
    /// all unchanged.
    fn render_kustomizations(
        &self,
        top: &git2::Tree<'_>,
        applications: &mut BTreeMap<String, ApplicationTree>,
    ) {
        // Only the paths are looked at: no file is copied.
        let kustomized =
            shipshape_kustomize::apps::kustomized(applications.values().flat_map(|a| &a.files));
        if kustomized.is_empty() {
            return;
        }
        let whole = applications.get(ROOT_APPLICATION).is_some_and(|root| {
            root.files
                .iter()
                .any(|f| shipshape_kustomize::KUSTOMIZATION_FILES.contains(&f.relative.as_str()))
        });
        if whole {
            // Everything under the path belongs to the one build.
            let all: Vec<SourceFile> = std::mem::take(applications)
                .into_values()
                .flat_map(|a| a.files)
                .collect();
            applications.insert(
                ROOT_APPLICATION.to_string(),
                ApplicationTree {
                    digest: String::new(),
                    files: all,
                    rendered: None,
                },
            );
        }
        let repo = CommitFiles::new(&self.repo, top.clone());
        let mut cache = self.renders.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|name, _| kustomized.contains(name));
        for name in &kustomized {
            let Some(tree) = applications.get_mut(name) else {
                continue;
            };
            let base = self.path.trim_matches('/');
            let dir = match (whole, base.is_empty()) {
                (true, _) => base.to_string(),
                (false, true) => name.clone(),
                (false, false) => format!("{base}/{name}"),
            };
            let unchanged = cache.get(name).filter(|c| {
                c.read
                    .iter()
                    .all(|(path, id)| repo.entry(path).map(|(id, _)| id) == *id)
            });
            let (digest, result) = match unchanged {
                Some(cached) => (cached.digest.clone(), cached.result.clone()),
                None => {
                    let (result, read) =
                        shipshape_kustomize::apps::render_application(&repo, &dir, name);
                    let result = result.map(Arc::new);
                    let read: Vec<(String, Option<Oid>)> = read
                        .into_iter()
                        .map(|path| {
                            let id = repo.entry(&path).map(|(id, _)| id);
                            (path, id)
                        })
                        .collect();
                    let mut digest = Sha256::new();
                    for (path, id) in &read {
                        let id = id.map(|id| id.to_string()).unwrap_or_default();
                        digest.update(format!("{path}\0{id}\n").as_bytes());
                    }
                    let digest: String = digest
                        .finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    cache.insert(
                        name.clone(),
                        CachedRender {
                            read,
                            digest: digest.clone(),
                            result: result.clone(),
                        },
                    );
                    (digest, result)
                }
            };
            tree.digest = digest;
            tree.rendered = Some(result);
        }
    }

    fn source_file(&self, relative: String, bytes: Vec<u8>) -> SourceFile {
        let display = if self.path.is_empty() {
            relative.clone()
        } else {
            format!("{}/{relative}", self.path.trim_end_matches('/'))
        };
        SourceFile {
            relative,
            display,
            bytes,
        }
    }
}

/// The commit as the audit history records it.
fn commit_info(commit: &git2::Commit<'_>) -> CommitInfo {
    let signature = |s: git2::Signature<'_>| {
        format!("{} <{}>", s.name().unwrap_or("?"), s.email().unwrap_or("?"))
    };
    CommitInfo {
        id: commit.id().to_string(),
        author: signature(commit.author()),
        committer: signature(commit.committer()),
        message: commit
            .summary()
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_string(),
        time: jiff::Timestamp::from_second(commit.time().seconds())
            .map(|t| t.to_string())
            .unwrap_or_default(),
    }
}

fn wanted_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml")
        || lower.ends_with(".yml")
        || lower.ends_with(".json")
        || name == "Kustomization"
}

/// Local paths become absolute, so the mirror keeps working whatever the current directory.
fn absolute_url(url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    std::fs::canonicalize(url)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| url.to_string())
}

/// Whether an application matches what its commit asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncState {
    /// The cluster has what the commit declares.
    Synced,
    /// The commit declares something the cluster does not have yet (held, suspended, retrying).
    #[default]
    OutOfSync,
    /// The commit cannot be applied (invalid manifests, a conflict); the last good one stays.
    Failed,
}

impl SyncState {
    /// The name tables show (`Synced`, `OutOfSync`, `Failed`), as the JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "Synced",
            Self::OutOfSync => "OutOfSync",
            Self::Failed => "Failed",
        }
    }
}

/// What the cluster knows about one application's sync, as `shipshape status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// The application (folder) name.
    pub application: String,
    /// Synced, OutOfSync or Failed.
    pub sync: SyncState,
    /// The commit whose declaration is applied (the last good one).
    pub commit: Option<String>,
    /// The digest of the application's files at that commit.
    pub digest: Option<String>,
    /// The newest commit a sync looked at.
    pub attempted: Option<String>,
    /// Why it is not Synced, in one line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The problems that failed it, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// How many objects it manages.
    pub objects: usize,
    /// Syncing stopped by `shipshape suspend`.
    #[serde(default)]
    pub suspended: bool,
    /// When this status was written (RFC 3339).
    pub updated: String,
}

/// What one sync did to one application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied: counts of what changed.
    Applied {
        /// Objects created.
        created: usize,
        /// Objects updated.
        updated: usize,
        /// Objects pruned.
        pruned: usize,
        /// Objects already as declared.
        unchanged: usize,
    },
    /// Its files did not change since they were applied.
    Unchanged,
    /// Rejected whole; the problems, one line each.
    Failed(Vec<String>),
    /// Held: the commit would delete all of its objects.
    Held(usize),
    /// Suspended by the user.
    Suspended,
    /// The store refused a stale decision; the next sync retries.
    Retry(String),
}

/// What one sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// The commit synced to.
    pub commit: CommitInfo,
    /// True when the commit does not build on the one synced before (history rewritten).
    pub rewritten: bool,
    /// Each application's outcome, in the order synced.
    pub applications: Vec<(String, Outcome)>,
    /// A fleet member's wave rule holding the branch's newest commit back: why.
    pub held: Option<String>,
    /// True when the cluster is on no commit yet, its wave waiting for earlier ones
    /// (`commit` is then the branch's head, not applied).
    pub waiting: bool,
    /// Why this cluster's fleet status could not be published (the next poll tries again).
    pub publish_error: Option<String>,
}

/// What a sync's Git step found.
enum Fetched {
    /// The commit already applied, with nothing to retry.
    Settled(CommitInfo),
    /// A fleet member on no commit yet whose wave may not take any.
    Waiting(CommitInfo),
    /// A commit to apply: the source, its snapshot, whether it rewrites history.
    Full(String, Box<Snapshot>, bool),
}

/// How to sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncOptions {
    /// Let a commit empty an application that has objects.
    pub allow_empty: bool,
}

/// Why a sync could not run at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Fetching or reading the repository failed; the cluster keeps its state. (Transparent:
    /// shown once, not again as its own source in an error chain.)
    #[error(transparent)]
    Git(#[from] GitError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store actor is gone.
    #[error("the store is not running")]
    StoreGone,
}

/// Where the store keeps one application's status.
pub fn status_key(application: &str) -> String {
    format!("{APP_META_PREFIX}{application}")
}

/// The object to store for a manifest: Kubernetes' defaults filled in, and the provenance stamps
/// (who manages it, from which commit and file).
fn stamp(manifest: &Value, commit: &str, application: &str, source: &str) -> Value {
    let mut object = match shipshape_api::Object::from_json(manifest.clone()) {
        Ok(mut typed) => {
            shipshape_api::defaults::apply_defaults(&mut typed);
            typed.to_json()
        }
        // Manifests reaching here were validated; keep them as they are if not.
        Err(_) => manifest.clone(),
    };
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(MANAGED_BY_LABEL.into(), "shipshape".into());
        }
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(COMMIT_ANNOTATION.into(), commit.into());
            annotations.insert(APPLICATION_ANNOTATION.into(), application.into());
            annotations.insert(SOURCE_ANNOTATION.into(), source.into());
        }
    }
    object
}

/// At most this many Warning events are written for one failed sync (one per live object).
const MAX_FAILURE_EVENTS: usize = 100;

/// Where a fleet member keeps its commit records (what it publishes), across restarts.
pub const FLEET_RECORDS_META: &str = "fleet/records";

/// Where a fleet member keeps what `shipshape status` shows of it: its name, labels, wave and
/// what it holds back (with the counts, as `up` prints it).
pub const FLEET_MEMBER_META: &str = "fleet/member";

/// How long Events are kept, as Kubernetes' default `--event-ttl`.
pub const EVENT_TTL: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// How often a sync looks for expired Events: a list of every Event is not free, and an Event
/// an hour old may live a minute longer.
const EVENT_EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A Kubernetes Event about `object` (which must carry its uid), written by GitSync.
fn event(object: &Value, kind: &str, reason: &str, message: String, now: jiff::Timestamp) -> Write {
    crate::events::event("shipshape-gitsync", object, kind, reason, message, now)
}

fn set_uid(object: &mut Value, uid: &str) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("uid".into(), Value::from(uid));
    }
}

/// What the rest of the commit does, as one application's sync needs to know it.
struct OtherApplications<'a> {
    /// For each application that applies this commit: the namespaces its objects are in.
    namespaces_used: &'a BTreeMap<String, BTreeSet<String>>,
    /// The applications the commit has a folder (or top-level files) for.
    in_commit: &'a BTreeSet<String>,
    /// How this sync was asked for.
    options: SyncOptions,
}

/// The GitSync actor: syncs on request (the poll timer, `shipshape sync`, a webhook).
pub struct GitSync {
    // git2's Repository may move between threads but not be shared; the lock makes the actor
    // shareable across awaits. It is only held inside blocking sections, never across an await.
    mirror: std::sync::Mutex<Mirror>,
    store: ActorRef<StoreActor>,
    /// The Git error recorded in the store: `None` at start (one from an earlier run may be
    /// there), then what was last written. A remote that keeps failing the same way is
    /// written once, not at every poll.
    git_error_recorded: Option<Option<String>>,
    /// Each application's last load, by the digest it was loaded at: a push that changes one
    /// application of a thousand validates that one.
    loads: std::collections::HashMap<String, (String, Arc<load::LoadResult>)>,
    /// When Events were last expired (they live an hour; once a minute is soon enough).
    events_expired: Option<std::time::Instant>,
    /// A fleet member's last choice (wave, soak, what is held), for its status.
    fleet_choice: Option<FleetChoice>,
    /// A hold not yet published, and since when it has been the one (see [`HELD_SETTLE`]).
    held_seen: Option<(Option<String>, std::time::Instant)>,
    /// What was last written to [`FLEET_MEMBER_META`].
    member_recorded: Option<crate::fleet::MemberStatus>,
    /// Makes the next sync panic, as a bug would.
    #[cfg(test)]
    panic_next_sync: bool,
}

impl Actor for GitSync {
    type Args = Self;
    type Error = std::convert::Infallible;

    fn name() -> &'static str {
        "GitSync"
    }

    async fn on_start(state: Self, _: ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(state)
    }

    /// Goes on after a panic outside a sync (a sync's own is caught and reported by
    /// [`GitSync::sync`]): GitSync holds nothing a panic can corrupt that the store does not
    /// hold again, and stopping would silently end every later sync.
    async fn on_panic(
        &mut self,
        _: kameo::actor::WeakActorRef<Self>,
        error: kameo::error::PanicError,
    ) -> Result<std::ops::ControlFlow<kameo::error::ActorStopReason>, Self::Error> {
        let message = crate::supervision::panic_message(&error);
        crate::supervision::record_restart("gitsync", &message, std::time::Duration::ZERO);
        Ok(std::ops::ControlFlow::Continue(()))
    }
}

impl GitSync {
    /// A GitSync over `mirror`, writing to `store`.
    pub fn new(mirror: Mirror, store: ActorRef<StoreActor>) -> Self {
        Self {
            mirror: std::sync::Mutex::new(mirror),
            store,
            git_error_recorded: None,
            loads: std::collections::HashMap::new(),
            events_expired: None,
            fleet_choice: None,
            held_seen: None,
            member_recorded: None,
            #[cfg(test)]
            panic_next_sync: false,
        }
    }

    async fn status(&self, application: &str) -> Result<Option<ApplicationStatus>, SyncError> {
        let value = self.ask_store(GetMeta(status_key(application))).await?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }

    async fn ask_store<M, T>(&self, message: M) -> Result<T, SyncError>
    where
        StoreActor: Message<M>,
        <StoreActor as Message<M>>::Reply: kameo::Reply<Ok = T, Error = StoreError>,
        M: Send + 'static,
        T: Send + 'static,
    {
        match self.store.ask(message).await {
            Ok(value) => Ok(value),
            Err(kameo::error::SendError::HandlerError(error)) => Err(SyncError::Store(error)),
            Err(_) => Err(SyncError::StoreGone),
        }
    }

    /// One sync: fetch, resolve, read, validate, then plan and apply each changed application.
    pub async fn sync(&mut self, options: SyncOptions) -> Result<SyncReport, SyncError> {
        let started = std::time::Instant::now();
        // A panic (a bug) fails this sync like a Git error: recorded for `status`, answered to
        // whoever asked, and the next poll syncs again.
        let mut report = match std::panic::AssertUnwindSafe(self.sync_inner(options))
            .catch_unwind()
            .await
        {
            Ok(report) => report,
            Err(payload) => {
                let message = crate::supervision::payload_message(payload.as_ref());
                crate::supervision::record_restart("gitsync", &message, std::time::Duration::ZERO);
                Err(SyncError::Git(GitError(format!(
                    "internal error: {message}"
                ))))
            }
        };
        if let Ok(report) = &mut report {
            report.publish_error = self.publish_status(report).await.err();
        }
        let git_error = match &report {
            Err(SyncError::Git(error)) => Some(error.to_string()),
            _ => None,
        };
        if self.git_error_recorded.as_ref() != Some(&git_error) {
            // `time` is when this failure was first seen.
            let value = git_error.as_ref().map_or(
                Value::Null,
                |message| json!({"message": message, "time": jiff::Timestamp::now().to_string()}),
            );
            let recorded = Batch {
                writes: vec![Write::SetMeta {
                    key: GIT_ERROR_META.into(),
                    value,
                }],
                audit: None,
            };
            if self.ask_store(Apply(recorded)).await.is_ok() {
                self.git_error_recorded = Some(git_error);
            }
        }
        let metrics = &crate::metrics::METRICS;
        metrics
            .sync_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Ok(report) = &report {
            for (application, outcome) in &report.applications {
                let result = match outcome {
                    Outcome::Applied { .. } => "synced",
                    Outcome::Unchanged => "unchanged",
                    Outcome::Failed(_) => "failed",
                    Outcome::Held(_) => "held",
                    Outcome::Suspended => "suspended",
                    Outcome::Retry(_) => "retry",
                };
                metrics.sync_result(application, result);
            }
        }
        report
    }

    async fn sync_inner(&mut self, options: SyncOptions) -> Result<SyncReport, SyncError> {
        #[cfg(test)]
        if std::mem::take(&mut self.panic_next_sync) {
            panic!("injected failure");
        }
        let previous = self
            .ask_store(GetMeta(HEAD_META.into()))
            .await?
            .and_then(|v| v.as_str().and_then(|s| Oid::from_str(s).ok()));
        let statuses: Vec<ApplicationStatus> = self
            .ask_store(ListMeta(APP_META_PREFIX.into()))
            .await?
            .into_values()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        // At the commit already synced nothing can differ unless an application was resumed or
        // a store conflict left it to retry (both OutOfSync with no message) or emptying is now
        // allowed: otherwise the poll stops after the fetch, reading and validating nothing.
        let settled = !options.allow_empty
            && statuses
                .iter()
                .all(|s| s.suspended || s.sync != SyncState::OutOfSync || !s.message.is_empty());
        let (fetched, choice, path_changed) = tokio::task::block_in_place(|| {
            // A sync that panicked while holding the lock poisoned it; the mirror is Git's
            // on-disk repository, which the next fetch reads as it finds it.
            let mut mirror = self.mirror.lock().unwrap_or_else(|poisoned| {
                self.mirror.clear_poison();
                poisoned.into_inner()
            });
            mirror.fetch()?;
            let head = mirror.resolve()?;
            let before = mirror.path().to_string();
            // A fleet member takes the newest commit its wave may (others: the head).
            let choice = mirror.fleet_choice(head, previous)?;
            let path_changed = mirror.path() != before;
            let Some(target) = choice.target.or(previous) else {
                let waiting = Fetched::Waiting(mirror.commit_info(head)?);
                return Ok::<_, GitError>((waiting, choice, false));
            };
            if settled && previous == Some(target) && !path_changed {
                let settled = Fetched::Settled(mirror.commit_info(target)?);
                return Ok((settled, choice, false));
            }
            let rewritten = previous.is_some_and(|old| mirror.is_rewrite(old, target));
            let full = Fetched::Full(
                mirror.source.url.clone(),
                Box::new(mirror.snapshot(target)?),
                rewritten,
            );
            Ok((full, choice, path_changed))
        })?;
        if path_changed {
            // Loads name files by the path: another path, other names.
            self.loads.clear();
        }
        let held = choice.held.clone();
        self.fleet_choice = Some(choice);
        let (source_url, snapshot, rewritten) = match fetched {
            Fetched::Full(url, snapshot, rewritten) => (url, *snapshot, rewritten),
            Fetched::Waiting(commit) => {
                self.expire_events().await?;
                return Ok(SyncReport {
                    commit,
                    rewritten: false,
                    applications: Vec::new(),
                    held,
                    waiting: true,
                    publish_error: None,
                });
            }
            Fetched::Settled(commit) => {
                let applications = statuses
                    .iter()
                    .map(|s| {
                        let outcome = if s.suspended {
                            Outcome::Suspended
                        } else if s.sync == SyncState::Failed {
                            Outcome::Failed(s.problems.clone())
                        } else if s.sync == SyncState::OutOfSync {
                            Outcome::Held(s.objects)
                        } else {
                            Outcome::Unchanged
                        };
                        (s.application.clone(), outcome)
                    })
                    .collect();
                self.expire_events().await?;
                return Ok(SyncReport {
                    commit,
                    rewritten: false,
                    applications,
                    held,
                    waiting: false,
                    publish_error: None,
                });
            }
        };
        let commit = snapshot.commit.clone();

        let mut declared = self.load_snapshot(&snapshot);
        // Two Services of the commit asking for one address: refused before anything is written.
        let addresses = {
            let failed = declared.failed();
            shipshape_reconciler::services::address_problems(
                declared
                    .manifests()
                    .filter(|m| !failed.contains(m.application.as_str())),
            )
        };
        declared.problems.extend(addresses);
        // Nothing may land in a namespace that neither exists nor comes with this commit.
        let existing: BTreeSet<String> = self
            .ask_store(List {
                kind: Some(shipshape_api::Kind::Namespace),
                namespace: None,
            })
            .await?
            .into_iter()
            .map(|(key, _)| key.name)
            .collect();
        let invalid: BTreeSet<String> = declared.failed().into_iter().map(String::from).collect();
        let missing = shipshape_reconciler::namespaces::missing_namespaces(
            declared.manifests(),
            &existing,
            &invalid,
        );
        declared.problems.extend(missing);
        let failed = declared.failed();

        // The statuses read at the start are current: only this actor writes them.
        let mut known: BTreeMap<String, ApplicationStatus> = statuses
            .into_iter()
            .map(|status| (status.application.clone(), status))
            .collect();
        let mut names: Vec<String> = snapshot
            .applications
            .keys()
            .chain(known.keys())
            .cloned()
            .collect();
        // What each application that will apply this commit puts in which namespaces: a
        // Namespace is pruned only when nobody stays in it.
        let mut namespaces_used: BTreeMap<String, BTreeSet<String>> = snapshot
            .applications
            .keys()
            .filter(|name| !failed.contains(name.as_str()))
            .filter(|name| !known.get(*name).is_some_and(|s| s.suspended))
            .map(|name| (name.clone(), BTreeSet::new()))
            .collect();
        for manifest in declared.manifests() {
            if let Some(used) = namespaces_used.get_mut(&manifest.application) {
                used.insert(manifest.object.key().namespace);
            }
        }
        // Root first, then the applications that declare Namespaces, so that a Namespace
        // exists before the objects of another application land in it.
        let declares_namespaces: BTreeSet<&str> = declared
            .manifests()
            .filter(|m| m.object.kind() == shipshape_api::Kind::Namespace)
            .map(|m| m.application.as_str())
            .collect();
        names.sort_by_key(|name| {
            (
                name != ROOT_APPLICATION,
                !declares_namespaces.contains(name.as_str()),
                name.clone(),
            )
        });
        names.dedup();
        let in_commit: BTreeSet<String> = snapshot.applications.keys().cloned().collect();
        let others = OtherApplications {
            namespaces_used: &namespaces_used,
            in_commit: &in_commit,
            options,
        };

        let mut outcomes = Vec::new();
        for name in names {
            let status = known.remove(&name).unwrap_or_else(|| ApplicationStatus {
                application: name.clone(),
                ..Default::default()
            });
            let digest = snapshot.applications.get(&name).map(|a| a.digest.clone());
            let outcome = if status.suspended {
                Outcome::Suspended
            } else if status.sync == SyncState::Synced
                && status.digest == digest
                && !options.allow_empty
            {
                Outcome::Unchanged
            } else if failed.contains(name.as_str()) {
                let problems = declared.problems_of(&name);
                let message = format!(
                    "{} invalid in commit {}",
                    plural(problems.len(), "problem"),
                    commit.short()
                );
                self.record_failure(&name, status, &commit, message, problems.clone(), "invalid")
                    .await?;
                Outcome::Failed(problems)
            } else {
                let desired: Vec<Desired> = declared
                    .manifests_of(&name)
                    .map(|m| Desired {
                        key: m.object.key(),
                        manifest: m.object.to_json(),
                        source: m.file.clone(),
                    })
                    .collect();
                self.apply_application(&name, status, digest, &commit, desired, &others)
                    .await?
            };
            outcomes.push((name, outcome));
        }
        let audit = rewritten.then(|| AuditEntry {
            actor: "git".into(),
            action: "history-rewritten".into(),
            subject: source_url,
            details: json!({
                "previous": previous.map(|p| p.to_string()),
                "commit": commit.id,
                "note": "the new commit does not build on the previous one (force-push or reset); applying what it declares",
            }),
        });
        let head = Batch {
            writes: vec![Write::SetMeta {
                key: HEAD_META.into(),
                value: Value::from(commit.id.clone()),
            }],
            audit,
        };
        self.ask_store(Apply(head)).await?;
        self.expire_events().await?;
        Ok(SyncReport {
            commit,
            rewritten,
            applications: outcomes,
            held,
            waiting: false,
            publish_error: None,
        })
    }

    /// A fleet member's status after a sync: its commit record updated from its applications'
    /// sync and health ([`shipshape_reconciler::fleet::observe`]), published to its status
    /// ref when anything but the time changed. Others read it to decide their waves.
    async fn publish_status(&mut self, report: &SyncReport) -> Result<(), String> {
        use shipshape_reconciler::fleet::{CommitRecord, observe, with_record};
        let Some(cluster) = self.mirror_cluster() else {
            return Ok(());
        };
        let choice = self.fleet_choice.clone().unwrap_or_default();
        let failure = |e: SyncError| e.to_string();
        let statuses: Vec<ApplicationStatus> = self
            .ask_store(ListMeta(APP_META_PREFIX.into()))
            .await
            .map_err(failure)?
            .into_values()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let objects = self
            .ask_store(List {
                kind: None,
                namespace: None,
            })
            .await
            .map_err(failure)?;
        let health = crate::health::applications(objects.iter().map(|(k, s)| (k, s)));
        let mut records: Vec<CommitRecord> = self
            .ask_store(GetMeta(FLEET_RECORDS_META.into()))
            .await
            .map_err(failure)?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let now = jiff::Timestamp::now();
        let commit = (!report.waiting).then(|| report.commit.id.clone());
        // What changed of the records and of what `status` shows goes in one transaction.
        let mut writes = Vec::new();
        if let Some(commit) = &commit {
            let seen = crate::fleet::seen(&statuses, &health);
            let record = observe(
                records.first(),
                commit,
                seen,
                choice.soak_seconds,
                now.as_second(),
            );
            if records.first() != Some(&record) {
                records = with_record(&records, record);
                writes.push(Write::SetMeta {
                    key: FLEET_RECORDS_META.into(),
                    value: json!(records),
                });
            }
        }
        let member = crate::fleet::MemberStatus {
            cluster: cluster.name.clone(),
            labels: cluster.labels.clone(),
            wave: choice.wave.clone(),
            held: choice.held.clone(),
        };
        if self.member_recorded.as_ref() != Some(&member) {
            writes.push(Write::SetMeta {
                key: FLEET_MEMBER_META.into(),
                value: json!(member),
            });
        }
        if !writes.is_empty() {
            let write = Batch {
                writes,
                audit: None,
            };
            self.ask_store(Apply(write)).await.map_err(failure)?;
            self.member_recorded = Some(member);
        }
        let applications = statuses
            .iter()
            .map(|s| {
                let health = health.get(&s.application).cloned().unwrap_or_default();
                crate::fleet::ApplicationSummary {
                    name: s.application.clone(),
                    sync: if s.suspended {
                        "Suspended".into()
                    } else {
                        s.sync.as_str().into()
                    },
                    health: health.status.as_str().into(),
                    message: if s.message.is_empty() {
                        health.message
                    } else {
                        s.message.clone()
                    },
                }
            })
            .collect();
        let held_seen = &mut self.held_seen;
        tokio::task::block_in_place(|| {
            let mirror = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
            let status = crate::fleet::ClusterStatus {
                cluster: cluster.name.clone(),
                labels: cluster.labels.clone(),
                wave: choice.wave.clone(),
                commit,
                path: mirror.path().to_string(),
                commits: records,
                applications,
                held: choice.published_held.clone(),
                time: now.to_string(),
            };
            let last = crate::fleet::status_named(mirror.repository(), &cluster.name);
            if last.as_ref().is_some_and(|last| last.same_as(&status)) {
                *held_seen = None;
                return Ok(());
            }
            // Only what it waits for changed: published once that has lasted HELD_SETTLE, so
            // a hold that a wave lifts within seconds costs the Git host no push (the wave
            // decisions read the commit records; the hold is there for people).
            if last
                .as_ref()
                .is_some_and(|last| last.same_but_held(&status))
            {
                match held_seen {
                    Some((held, since)) if *held == status.held => {
                        if since.elapsed() < HELD_SETTLE {
                            return Ok(());
                        }
                    }
                    _ => {
                        *held_seen = Some((status.held.clone(), std::time::Instant::now()));
                        return Ok(());
                    }
                }
            }
            *held_seen = None;
            crate::fleet::publish(mirror.repository(), &status)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn mirror_cluster(&self) -> Option<ClusterIdentity> {
        let mirror = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
        mirror.cluster().cloned()
    }

    /// Loads and validates each application of `snapshot` whose digest changed since its last
    /// load (reusing the others), then checks what lies between applications: an object two of
    /// them define fails the later one, in name order.
    fn load_snapshot(&mut self, snapshot: &Snapshot) -> Declared {
        self.loads
            .retain(|name, _| snapshot.applications.contains_key(name));
        let mut parts = BTreeMap::new();
        for (name, tree) in &snapshot.applications {
            let part = match self.loads.get(name) {
                Some((digest, part)) if !tree.digest.is_empty() && *digest == tree.digest => {
                    Arc::clone(part)
                }
                _ => {
                    let part = Arc::new(match &tree.rendered {
                        None => load::load(&tree.files),
                        Some(Ok(documents)) => load::load_with(&[], documents, Vec::new()),
                        Some(Err(problem)) => load::load_with(&[], &[], vec![problem.clone()]),
                    });
                    self.loads
                        .insert(name.clone(), (tree.digest.clone(), Arc::clone(&part)));
                    part
                }
            };
            parts.insert(name.clone(), part);
        }
        let problems =
            load::duplicates_across(parts.iter().map(|(name, part)| (name.as_str(), &**part)));
        Declared { parts, problems }
    }

    /// Deletes Events older than [`EVENT_TTL`], at most once a minute.
    async fn expire_events(&mut self) -> Result<(), SyncError> {
        if self
            .events_expired
            .is_some_and(|last| last.elapsed() < EVENT_EXPIRY_INTERVAL)
        {
            return Ok(());
        }
        self.events_expired = Some(std::time::Instant::now());
        let cutoff = jiff::Timestamp::now() - EVENT_TTL;
        let expired: Vec<Write> = self
            .ask_store(List {
                kind: Some(shipshape_api::Kind::Event),
                namespace: None,
            })
            .await?
            .into_iter()
            .filter(|(_, stored)| {
                stored.object["lastTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t < cutoff)
            })
            .map(|(key, stored)| Write::Delete {
                key,
                precondition: Precondition::ResourceVersion(stored.resource_version()),
            })
            .collect();
        if !expired.is_empty() {
            match self
                .ask_store(Apply(Batch {
                    writes: expired,
                    audit: None,
                }))
                .await
            {
                // A concurrent change to an expiring event: the next sync tries again.
                Ok(_)
                | Err(SyncError::Store(StoreError::Conflict { .. } | StoreError::NotFound(_))) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        name: &str,
        mut status: ApplicationStatus,
        commit: &CommitInfo,
        message: String,
        problems: Vec<String>,
        reason: &str,
    ) -> Result<(), SyncError> {
        let sync = if reason == "held" {
            SyncState::OutOfSync
        } else {
            SyncState::Failed
        };
        let unchanged = status.sync == sync
            && status.attempted.as_deref() == Some(commit.id.as_str())
            && status.problems == problems;
        if unchanged {
            return Ok(());
        }
        status.sync = sync;
        status.attempted = Some(commit.id.clone());
        status.message = message.clone();
        status.problems = problems.clone();
        status.updated = jiff::Timestamp::now().to_string();
        let mut writes = vec![Write::SetMeta {
            key: status_key(name),
            value: serde_json::to_value(&status).unwrap_or(Value::Null),
        }];
        // Each live object of the application says why it did not move to this commit.
        let now = jiff::Timestamp::now();
        let first = problems.first().map_or(String::new(), |p| format!(": {p}"));
        let warning = format!(
            "commit {} \"{}\" not applied to application {name}: {message}{first}",
            commit.short(),
            commit.message
        );
        for (_, stored) in self
            .ask_store(ManagedBy(name.into()))
            .await?
            .into_iter()
            .take(MAX_FAILURE_EVENTS)
        {
            let reason = if reason == "held" {
                "SyncHeld"
            } else {
                "SyncFailed"
            };
            writes.push(event(
                &stored.object,
                "Warning",
                reason,
                warning.clone(),
                now,
            ));
        }
        let batch = Batch {
            writes,
            audit: Some(AuditEntry {
                actor: "git".into(),
                action: format!("sync-{reason}"),
                subject: name.into(),
                details: json!({"commit": commit, "message": message, "problems": problems}),
            }),
        };
        self.ask_store(Apply(batch)).await?;
        Ok(())
    }

    /// Explicit ClusterIPs, NodePorts and load-balancer addresses in `desired` that another
    /// Service already holds, one line each naming the file, Service, field and holder.
    async fn addresses_taken(&self, desired: &[Desired]) -> Result<Vec<String>, SyncError> {
        let asking: Vec<(String, &Value, &str)> = desired
            .iter()
            .filter(|d| d.key.kind == shipshape_api::Kind::Service)
            .filter(|d| !shipshape_reconciler::services::claims(&d.manifest).is_empty())
            .map(|d| {
                (
                    format!("Service {}/{}", d.key.namespace, d.key.name),
                    &d.manifest,
                    d.source.as_str(),
                )
            })
            .collect();
        if asking.is_empty() {
            return Ok(Vec::new());
        }
        let services = self
            .ask_store(List {
                kind: Some(shipshape_api::Kind::Service),
                namespace: None,
            })
            .await?;
        let existing: Vec<(String, &Value)> = services
            .iter()
            .map(|(key, stored)| {
                (
                    format!("Service {}/{}", key.namespace, key.name),
                    &stored.object,
                )
            })
            .collect();
        let wanted: Vec<(String, &Value)> = asking
            .iter()
            .map(|(name, manifest, _)| (name.clone(), *manifest))
            .collect();
        Ok(shipshape_reconciler::services::taken(&existing, &wanted)
            .iter()
            .map(|clash| {
                let (name, _, source) = &asking[clash.index];
                format!(
                    "{source}: {name}: {}: {}",
                    clash.field,
                    shipshape_reconciler::services::taken_message(clash)
                )
            })
            .collect())
    }

    async fn apply_application(
        &self,
        name: &str,
        mut status: ApplicationStatus,
        digest: Option<String>,
        commit: &CommitInfo,
        desired: Vec<Desired>,
        others: &OtherApplications<'_>,
    ) -> Result<Outcome, SyncError> {
        let options = others.options;
        let live = self.ask_store(ManagedBy(name.into())).await?;
        let live_objects: BTreeMap<shipshape_api::ObjectKey, Value> = live
            .iter()
            .map(|(key, stored)| (key.clone(), stored.object.clone()))
            .collect();
        let managed: Vec<Managed> = live
            .into_iter()
            .map(|(key, stored)| Managed {
                key,
                resource_version: stored.resource_version(),
                applied: stored.applied.unwrap_or(Value::Null),
            })
            .collect();
        let mut foreign = Vec::new();
        for want in &desired {
            if managed.iter().any(|m| m.key == want.key) {
                continue;
            }
            if let Some(stored) = self.ask_store(Get(want.key.clone())).await? {
                foreign.push(Foreign {
                    key: want.key.clone(),
                    application: stored.application,
                });
            }
        }
        let clashes = self.addresses_taken(&desired).await?;
        if !clashes.is_empty() {
            let message = format!("address conflict in commit {}", commit.short());
            return self.refuse(name, status, commit, message, clashes).await;
        }
        let plan = match gitops::plan_application(&desired, &managed, &foreign, options.allow_empty)
        {
            Ok(plan) => plan,
            Err(Refusal::WouldEmpty { objects }) => {
                let message = format!(
                    "commit {} declares no objects; pruning all {objects} needs `shipshape sync --allow-empty`",
                    commit.short()
                );
                self.record_failure(name, status, commit, message, Vec::new(), "held")
                    .await?;
                return Ok(Outcome::Held(objects));
            }
            Err(Refusal::Conflict { key, owner, source }) => {
                let who = owner.map_or("exists and is not managed by Git".to_string(), |app| {
                    format!("is managed by application {app}")
                });
                let problem = format!("{source}: {key} {who}");
                let message = format!("conflict in commit {}", commit.short());
                return self
                    .refuse(name, status, commit, message, vec![problem])
                    .await;
            }
            Err(Refusal::Immutable(changes)) => {
                let problems = changes
                    .iter()
                    .map(|c| {
                        format!(
                            "{}: {}: {}: {}",
                            c.source, c.key, c.forbidden.field, c.forbidden.reason
                        )
                    })
                    .collect();
                let message = format!(
                    "commit {} changes fields Kubernetes keeps once an object exists",
                    commit.short()
                );
                return self.refuse(name, status, commit, message, problems).await;
            }
        };
        if let Some(problem) = self.namespace_prune_blocked(name, &plan, others).await? {
            let message = format!("namespace still in use in commit {}", commit.short());
            return self
                .refuse(name, status, commit, message, vec![problem])
                .await;
        }
        let (mut created, mut updated, mut pruned) = (0, 0, 0);
        let mut writes = Vec::new();
        let mut events = Vec::new();
        let mut changes = Vec::new();
        let now = jiff::Timestamp::now();
        let by_commit = format!("commit {} \"{}\"", commit.short(), commit.message);
        for action in &plan.actions {
            match action {
                Action::Create { desired } => {
                    created += 1;
                    changes.push(json!({"object": desired.key.to_string(), "action": "created", "source": desired.source}));
                    let mut object = stamp(&desired.manifest, &commit.id, name, &desired.source);
                    // The uid is chosen here so the Event can name the object it is about.
                    set_uid(&mut object, &uuid::Uuid::new_v4().to_string());
                    events.push(event(
                        &object,
                        "Normal",
                        "Created",
                        format!("created from {by_commit} ({})", desired.source),
                        now,
                    ));
                    writes.push(Write::Create {
                        object,
                        applied: Some(desired.manifest.clone()),
                        application: Some(name.into()),
                    });
                }
                Action::Update {
                    desired,
                    resource_version,
                    changes: fields,
                } => {
                    updated += 1;
                    changes.push(json!({"object": desired.key.to_string(), "action": "updated", "source": desired.source, "changes": fields}));
                    let mut object = stamp(&desired.manifest, &commit.id, name, &desired.source);
                    if let Some(uid) = live_objects
                        .get(&desired.key)
                        .and_then(|o| o["metadata"]["uid"].as_str())
                    {
                        set_uid(&mut object, uid);
                    }
                    let paths: Vec<&str> = fields.iter().take(3).map(|f| f.path.as_str()).collect();
                    let more = if fields.len() > 3 {
                        format!(" and {} more", fields.len() - 3)
                    } else {
                        String::new()
                    };
                    events.push(event(
                        &object,
                        "Normal",
                        "Updated",
                        format!("updated by {by_commit}: {}{more}", paths.join(", ")),
                        now,
                    ));
                    writes.push(Write::Update {
                        key: desired.key.clone(),
                        resource_version: *resource_version,
                        object,
                        applied: Some(desired.manifest.clone()),
                    });
                }
                Action::Prune {
                    key,
                    resource_version,
                } => {
                    // Already stopping (an earlier prune): its kubelet removes it.
                    if live_objects
                        .get(key)
                        .is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null())
                    {
                        continue;
                    }
                    pruned += 1;
                    changes.push(json!({"object": key.to_string(), "action": "pruned"}));
                    if let Some(object) = live_objects.get(key) {
                        events.push(event(
                            object,
                            "Normal",
                            "Pruned",
                            format!("pruned: {by_commit} no longer declares it"),
                            now,
                        ));
                    }
                    // A pod on a node stops gracefully (its preStop hooks and grace period),
                    // as a delete through the API does; anything else goes at once.
                    let live = live_objects.get(key);
                    let bound = live
                        .and_then(|o| o["spec"]["nodeName"].as_str())
                        .is_some_and(|n| !n.is_empty());
                    let grace = live
                        .and_then(|o| o["spec"]["terminationGracePeriodSeconds"].as_i64())
                        .unwrap_or(30);
                    writes.push(Write::delete(
                        key.clone(),
                        Precondition::ResourceVersion(*resource_version),
                        key.kind == shipshape_api::Kind::Pod && bound && grace > 0,
                        grace,
                    ));
                }
            }
        }
        writes.extend(events);
        let remaining = desired.len() + plan.kept.len();
        let emptied = digest.is_none() && remaining == 0;
        status.sync = SyncState::Synced;
        status.commit = Some(commit.id.clone());
        status.digest = digest;
        status.attempted = Some(commit.id.clone());
        status.message.clear();
        status.problems.clear();
        status.objects = remaining;
        status.updated = jiff::Timestamp::now().to_string();
        writes.push(Write::SetMeta {
            key: status_key(name),
            // A folder deleted and pruned with --allow-empty leaves no status behind.
            value: if emptied {
                Value::Null
            } else {
                serde_json::to_value(&status).unwrap_or(Value::Null)
            },
        });
        let audit = (!changes.is_empty()).then(|| AuditEntry {
            actor: "git".into(),
            action: "sync".into(),
            subject: name.into(),
            details: json!({
                "commit": commit,
                "result": "applied",
                "objects": changes,
                "kept": plan.kept.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        });
        match self.ask_store(Apply(Batch { writes, audit })).await {
            Ok(_) => Ok(Outcome::Applied {
                created,
                updated,
                pruned,
                unchanged: plan.unchanged,
            }),
            // Something changed under the plan: the next sync decides again on a fresh read.
            Err(SyncError::Store(StoreError::Conflict { key, reason })) => {
                // Left OutOfSync (with no message), so the next poll re-plans it even at the same
                // commit.
                status.sync = SyncState::OutOfSync;
                status.digest = None;
                status.message.clear();
                let retry = Batch {
                    writes: vec![Write::SetMeta {
                        key: status_key(name),
                        value: serde_json::to_value(&status).unwrap_or(Value::Null),
                    }],
                    audit: None,
                };
                self.ask_store(Apply(retry)).await?;
                Ok(Outcome::Retry(format!("{key}: {reason}")))
            }
            // The checks above make this rare (a Namespace declared only by a suspended
            // application): the store refused the whole batch, nothing was written.
            Err(SyncError::Store(refused @ StoreError::NamespaceNotFound { .. })) => {
                let message = format!("namespace missing in commit {}", commit.short());
                self.refuse(name, status, commit, message, vec![refused.to_string()])
                    .await
            }
            Err(other) => Err(other),
        }
    }

    /// Fails the application for a conflict with the cluster (an address, an object, a
    /// Namespace): recorded as such, and the problems returned as its outcome.
    async fn refuse(
        &self,
        name: &str,
        status: ApplicationStatus,
        commit: &CommitInfo,
        message: String,
        problems: Vec<String>,
    ) -> Result<Outcome, SyncError> {
        self.record_failure(name, status, commit, message, problems.clone(), "conflict")
            .await?;
        Ok(Outcome::Failed(problems))
    }

    /// Why `plan` may not prune one of its Namespaces yet: another application keeps objects
    /// in it (it still declares some there, or is failed or suspended and so keeps what it
    /// has). Deleting the Namespace would take them along behind that application's back.
    async fn namespace_prune_blocked(
        &self,
        name: &str,
        plan: &gitops::Plan,
        others: &OtherApplications<'_>,
    ) -> Result<Option<String>, SyncError> {
        for action in &plan.actions {
            let Action::Prune { key, .. } = action else {
                continue;
            };
            if key.kind != shipshape_api::Kind::Namespace {
                continue;
            }
            let mut users = BTreeMap::new();
            for (_, stored) in self
                .ask_store(List {
                    kind: None,
                    namespace: Some(key.name.clone()),
                })
                .await?
            {
                let Some(user) = stored.application else {
                    continue;
                };
                let stays = match others.namespaces_used.get(&user) {
                    Some(used) => used.contains(&key.name),
                    // A folder gone from the commit is pruned only with --allow-empty.
                    None => !others.options.allow_empty || others.in_commit.contains(&user),
                };
                users.insert(user, stays);
            }
            if let Some(staying) = shipshape_reconciler::namespaces::prune_blocked_by(name, &users)
            {
                return Ok(Some(format!(
                    "{key}: cannot be pruned while application {} keeps objects in it: remove them from Git first, or in the same commit",
                    staying.join(", ")
                )));
            }
        }
        Ok(None)
    }

    async fn set_suspended(&self, application: &str, suspended: bool) -> Result<(), SyncError> {
        let mut status = self
            .status(application)
            .await?
            .unwrap_or_else(|| ApplicationStatus {
                application: application.into(),
                ..Default::default()
            });
        status.suspended = suspended;
        if !suspended {
            // Commits may have arrived while it was suspended: the next sync re-plans it.
            status.sync = SyncState::OutOfSync;
            status.digest = None;
            status.message.clear();
            status.problems.clear();
        }
        status.updated = jiff::Timestamp::now().to_string();
        let batch = Batch {
            writes: vec![Write::SetMeta {
                key: status_key(application),
                value: serde_json::to_value(&status).unwrap_or(Value::Null),
            }],
            audit: Some(AuditEntry {
                actor: "client".into(),
                action: if suspended { "suspend" } else { "resume" }.into(),
                subject: application.into(),
                details: json!({}),
            }),
        };
        self.ask_store(Apply(batch)).await?;
        Ok(())
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Sync now (the poll timer, `shipshape sync`, a webhook).
pub struct SyncNow(pub SyncOptions);

impl Message<SyncNow> for GitSync {
    type Reply = Result<SyncReport, SyncError>;

    async fn handle(
        &mut self,
        SyncNow(options): SyncNow,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.sync(options).await
    }
}

/// Stop (true) or restart (false) syncing one application.
pub struct Suspend {
    /// The application.
    pub application: String,
    /// Suspend or resume.
    pub suspended: bool,
}

impl Message<Suspend> for GitSync {
    type Reply = Result<(), SyncError>;

    async fn handle(
        &mut self,
        message: Suspend,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.set_suspended(&message.application, message.suspended)
            .await
    }
}

/// The default place of the mirror inside a data directory.
pub fn mirror_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("git").join("mirror.git")
}

#[cfg(test)]
mod tests;
