//! The Git side of a fleet: the fleet file at a commit, the status each cluster publishes under
//! `refs/shipshape/status/NAME` (one small commit per change, so the ref's history is the
//! cluster's rollout history), and what `shipshape fleet status` and `fleet history` read.
//! The decisions are [`shipshape_reconciler::fleet`]'s; this module only reads and writes Git.

use std::collections::BTreeMap;

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};
use shipshape_api::fleet::{ClusterIdentity, FLEET_FILE, Fleet};
use shipshape_reconciler::fleet::{CommitRecord, Report, Seen};

use crate::gitsync::{ApplicationStatus, GitError, SyncState};
use crate::health::{ApplicationHealth, Health};

/// Where clusters publish their status: one ref per cluster.
pub const STATUS_REFS: &str = "refs/shipshape/status/";

/// The file in each status commit.
pub const STATUS_FILE: &str = "status.json";

/// The fetch refspec that brings every cluster's status.
pub const STATUS_REFSPEC: &str = "+refs/shipshape/status/*:refs/shipshape/status/*";

/// How many commits back from the branch head a cluster looks for one its wave may take.
pub const CANDIDATES: usize = 50;

/// One application as a status names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSummary {
    /// The application.
    pub name: String,
    /// Synced, OutOfSync or Failed.
    pub sync: String,
    /// Healthy, Progressing, Degraded, …
    pub health: String,
    /// Why it is not Synced and Healthy, in one line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// What a cluster publishes (`status.json` in each commit of its status ref).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Its name.
    pub cluster: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The wave it is in at its commit (`None`: none, it follows the branch).
    pub wave: Option<String>,
    /// The commit it is on.
    pub commit: Option<String>,
    /// The folder it syncs.
    pub path: String,
    /// Its newest commits and what it saw of each, newest first.
    pub commits: Vec<CommitRecord>,
    /// Its applications on that commit.
    pub applications: Vec<ApplicationSummary>,
    /// Why it is not taking the branch's newest commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// When it wrote this (RFC 3339, its own clock).
    pub time: String,
}

/// What `shipshape status` shows of a fleet member, kept in its store: its name, labels, wave
/// and what it holds back (with the counts, as `up` prints it; the published status has none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its name.
    pub cluster: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its wave at its commit (`None`: none).
    pub wave: Option<String>,
    /// Why it is not taking the branch's newest commit.
    pub held: Option<String>,
}

impl MemberStatus {
    /// Its line in `status`: `fleet member c2 (ring=main), wave main; holding commit …`.
    pub fn line(&self) -> String {
        let mut line = format!("fleet member {}", self.cluster);
        if !self.labels.is_empty() {
            line.push_str(&format!(
                " ({})",
                shipshape_api::fleet::labels_text(&self.labels)
            ));
        }
        match &self.wave {
            Some(wave) => line.push_str(&format!(", wave {wave}")),
            None => line.push_str(", in no wave"),
        }
        if let Some(held) = &self.held {
            line.push_str(&format!("; holding {held}"));
        }
        line
    }
}

impl ClusterStatus {
    /// The rollout view of it (the ref's name is the cluster's name, whatever the file says).
    pub fn report(&self, name: &str) -> Report {
        Report {
            cluster: ClusterIdentity {
                name: name.to_string(),
                labels: self.labels.clone(),
            },
            commits: self.commits.clone(),
        }
    }

    /// Equal but for the time it was written and what it waits for.
    pub fn same_but_held(&self, other: &ClusterStatus) -> bool {
        ClusterStatus {
            held: other.held.clone(),
            ..self.clone()
        }
        .same_as(other)
    }

    /// Equal but for the time it was written: nothing to publish.
    pub fn same_as(&self, other: &ClusterStatus) -> bool {
        ClusterStatus {
            time: String::new(),
            ..self.clone()
        } == ClusterStatus {
            time: String::new(),
            ..other.clone()
        }
    }
}

/// How a cluster's applications look, for its commit record: Failed when one failed to sync or
/// is Degraded, Healthy when every one not suspended is Synced and Healthy (or Suspended
/// health: paused on purpose), Progressing otherwise.
pub fn seen(statuses: &[ApplicationStatus], health: &BTreeMap<String, ApplicationHealth>) -> Seen {
    let mut all_good = true;
    for status in statuses.iter().filter(|s| !s.suspended) {
        let health = health
            .get(&status.application)
            .map_or(Health::Healthy, |h| h.status);
        if status.sync == SyncState::Failed || health == Health::Degraded {
            return Seen::Failed;
        }
        all_good &= status.sync == SyncState::Synced
            && matches!(health, Health::Healthy | Health::Suspended);
    }
    if all_good {
        Seen::Healthy
    } else {
        Seen::Progressing
    }
}

/// The fleet file at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetFile {
    /// The commit has none.
    Absent,
    /// It has this one.
    Valid(Fleet),
    /// It has one that does not parse: why.
    Invalid(String),
}

impl FleetFile {
    /// The view the wave decision takes.
    pub fn at(&self) -> shipshape_reconciler::fleet::FleetAt<'_> {
        use shipshape_reconciler::fleet::FleetAt;
        match self {
            FleetFile::Absent => FleetAt::Absent,
            FleetFile::Valid(fleet) => FleetAt::Valid(fleet),
            FleetFile::Invalid(error) => FleetAt::Invalid(error),
        }
    }

    /// The fleet, when the file is there and parses.
    pub fn valid(&self) -> Option<&Fleet> {
        match self {
            FleetFile::Valid(fleet) => Some(fleet),
            _ => None,
        }
    }
}

/// Reads the fleet file at the top of `commit`'s tree, remembering parses by blob id.
pub fn fleet_at(
    repo: &Repository,
    commit: Oid,
    cache: &mut BTreeMap<Oid, FleetFile>,
) -> Result<FleetFile, GitError> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|e| GitError(format!("cannot read commit {commit}: {}", e.message())))?;
    let Some(entry) = tree.get_name(FLEET_FILE) else {
        return Ok(FleetFile::Absent);
    };
    let id = entry.id();
    if let Some(known) = cache.get(&id) {
        return Ok(known.clone());
    }
    let parsed = match repo.find_blob(id) {
        Ok(blob) => match std::str::from_utf8(blob.content()) {
            Ok(text) => match shipshape_api::fleet::parse(text, FLEET_FILE) {
                Ok(fleet) => FleetFile::Valid(fleet),
                Err(error) => FleetFile::Invalid(error.to_string()),
            },
            Err(_) => FleetFile::Invalid(format!("{FLEET_FILE}: is not UTF-8 text")),
        },
        Err(_) => FleetFile::Invalid(format!("{FLEET_FILE}: is not a file")),
    };
    if cache.len() > 256 {
        cache.clear();
    }
    cache.insert(id, parsed.clone());
    Ok(parsed)
}

/// The commits from `head` back along first parents, newest first, stopping before `current`
/// (or after [`CANDIDATES`]): what a cluster on `current` could move to.
pub fn candidates(repo: &Repository, head: Oid, current: Option<Oid>) -> Vec<Oid> {
    let mut out = Vec::new();
    let mut next = Some(head);
    while let Some(id) = next {
        if Some(id) == current || out.len() >= CANDIDATES {
            break;
        }
        out.push(id);
        next = repo
            .find_commit(id)
            .ok()
            .and_then(|c| c.parent_ids().next());
    }
    out
}

/// Every cluster's newest status in `repo` (its local `refs/shipshape/status/*`), by name.
/// A ref whose status does not read is skipped: one broken cluster must not stop the others.
pub fn statuses(repo: &Repository) -> BTreeMap<String, (Oid, ClusterStatus)> {
    let mut out = BTreeMap::new();
    let Ok(references) = repo.references_glob(&format!("{STATUS_REFS}*")) else {
        return out;
    };
    for reference in references.flatten() {
        let Some(name) = reference
            .name()
            .ok()
            .and_then(|n| n.strip_prefix(STATUS_REFS))
            .map(str::to_string)
        else {
            continue;
        };
        let Some(id) = reference.target() else {
            continue;
        };
        if let Some(status) = status_of(repo, id) {
            out.insert(name, (id, status));
        }
    }
    out
}

/// The status in one status commit.
pub fn status_of(repo: &Repository, commit: Oid) -> Option<ClusterStatus> {
    let tree = repo.find_commit(commit).ok()?.tree().ok()?;
    let entry = tree.get_name(STATUS_FILE)?;
    let blob = repo.find_blob(entry.id()).ok()?;
    serde_json::from_slice(blob.content()).ok()
}

/// The newest status `cluster` published, as the local status ref has it.
pub fn status_named(repo: &Repository, cluster: &str) -> Option<ClusterStatus> {
    let id = repo
        .find_reference(&format!("{STATUS_REFS}{cluster}"))
        .ok()?
        .target()?;
    status_of(repo, id)
}

/// Every status `cluster` published, newest first (at most `limit`).
pub fn history(repo: &Repository, cluster: &str, limit: usize) -> Vec<ClusterStatus> {
    let Ok(reference) = repo.find_reference(&format!("{STATUS_REFS}{cluster}")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut next = reference.target();
    while let Some(id) = next {
        if out.len() >= limit {
            break;
        }
        let Ok(commit) = repo.find_commit(id) else {
            break;
        };
        if let Some(status) = status_of(repo, id) {
            out.push(status);
        }
        next = commit.parent_ids().next();
    }
    out
}

/// The one-line message of a status commit: what changed, for `git log` readers.
fn message(status: &ClusterStatus) -> String {
    let commit = status
        .commit
        .as_deref()
        .map_or("no commit", |c| &c[..c.len().min(7)]);
    let state = status
        .commits
        .first()
        .map_or("Progressing", |r| r.state.as_str());
    match &status.held {
        Some(held) => format!("{}: {commit} {state}; newer held: {held}", status.cluster),
        None => format!("{}: {commit} {state}", status.cluster),
    }
}

/// Commits `status` on top of the cluster's status ref (as last fetched) and pushes the ref to
/// `origin`. Returns the new status commit. Only this cluster writes its ref, so the push is a
/// fast-forward unless another process claims the same name (then the push is refused and
/// says so).
pub fn publish(repo: &Repository, status: &ClusterStatus) -> Result<Oid, GitError> {
    let refname = format!("{STATUS_REFS}{}", status.cluster);
    let parent = repo
        .find_reference(&refname)
        .ok()
        .and_then(|r| r.target())
        .and_then(|id| repo.find_commit(id).ok());
    let bytes = serde_json::to_vec_pretty(status)
        .map_err(|e| GitError(format!("cannot write the status: {e}")))?;
    let git =
        |what: &'static str| move |e: git2::Error| GitError(format!("{what}: {}", e.message()));
    let blob = repo.blob(&bytes).map_err(git("cannot write the status"))?;
    let mut builder = repo
        .treebuilder(None)
        .map_err(git("cannot write the status"))?;
    builder
        .insert(STATUS_FILE, blob, 0o100644)
        .map_err(git("cannot write the status"))?;
    let tree = repo
        .find_tree(builder.write().map_err(git("cannot write the status"))?)
        .map_err(git("cannot write the status"))?;
    let email = format!("{}@clusters.shipshape.dev", status.cluster);
    let signature =
        git2::Signature::now(&status.cluster, &email).map_err(git("cannot write the status"))?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let id = repo
        .commit(
            None,
            &signature,
            &signature,
            &message(status),
            &tree,
            &parents,
        )
        .map_err(git("cannot write the status"))?;
    // libgit2 pushes from a reference: the new commit goes out under a local name of its own,
    // and the status ref moves only once the remote has it (the next fetch would otherwise put
    // the remote's older tip back under us anyway).
    let outgoing = format!("refs/shipshape/outgoing/{}", status.cluster);
    repo.reference(&outgoing, id, true, "shipshape: status to publish")
        .map_err(git("cannot record the status"))?;
    let mut remote = repo
        .find_remote("origin")
        .map_err(git("the mirror has no origin"))?;
    let refused = std::cell::RefCell::new(None);
    {
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.push_update_reference(|_, why| {
            if let Some(why) = why {
                *refused.borrow_mut() = Some(why.to_string());
            }
            Ok(())
        });
        let mut options = git2::PushOptions::new();
        options.remote_callbacks(callbacks);
        // Three small objects: packing them on one thread beats starting a pool per push.
        options.packbuilder_parallelism(1);
        let spec = format!("{outgoing}:{refname}");
        crate::metrics::METRICS.git_request("push");
        remote
            .push(&[spec.as_str()], Some(&mut options))
            .map_err(|e| {
                GitError(format!(
                    "cannot publish the status to {}: {}",
                    remote.url().unwrap_or("origin"),
                    e.message()
                ))
            })?;
    }
    if let Some(why) = refused.into_inner() {
        return Err(GitError(format!(
            "the repository refused {refname}: {why} (is another cluster named {}?)",
            status.cluster
        )));
    }
    repo.reference(&refname, id, true, "shipshape: status published")
        .map_err(git("cannot record the status"))?;
    Ok(id)
}
