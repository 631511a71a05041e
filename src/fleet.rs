//! `shipshape fleet status` and `fleet history`: the fleet as its clusters published it under
//! `refs/shipshape/status/*`, read from this cluster's mirror, a clone, or the repository
//! itself (any of them has the same refs, so an auditor needs no cluster).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use git2::Repository;
use shipshape_actors::api::tables::age_of_seconds;
use shipshape_actors::fleet::{self, ClusterStatus, STATUS_REFS, STATUS_REFSPEC};
use shipshape_actors::health::Health;

use crate::inspect::{print_table, short};

/// `shipshape fleet …`.
#[derive(Subcommand)]
pub enum FleetCommand {
    /// Each cluster: labels, wave, commit, sync, health and since when.
    Status {
        /// The repository (a path or URL; default: this cluster's mirror, else the Git
        /// repository containing the current directory, whose origin is read when it has no
        /// status refs of its own).
        #[arg(long, value_name = "URL|PATH")]
        repo: Option<String>,
        /// Print JSON (each cluster's published status) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every status each cluster published, oldest first: the fleet's rollout history.
    History {
        /// The repository, as for `fleet status`.
        #[arg(long, value_name = "URL|PATH")]
        repo: Option<String>,
        /// Only this cluster.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        /// At most this many statuses per cluster (newest kept).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// Runs a `fleet` command.
pub fn run(command: &FleetCommand, data_dir: Option<&Path>) -> anyhow::Result<()> {
    match command {
        FleetCommand::Status { repo, json } => {
            let source = open(repo.as_deref(), data_dir)?;
            let statuses = fleet::statuses(source.repo());
            if *json {
                let all: BTreeMap<&String, &ClusterStatus> =
                    statuses.iter().map(|(name, (_, s))| (name, s)).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            if statuses.is_empty() {
                bail!(
                    "{} has no cluster status yet (no refs under {STATUS_REFS})",
                    source.shown
                );
            }
            print_status(&statuses, jiff::Timestamp::now());
            Ok(())
        }
        FleetCommand::History {
            repo,
            cluster,
            limit,
        } => {
            let source = open(repo.as_deref(), data_dir)?;
            let names: Vec<String> = match cluster {
                Some(name) => vec![name.clone()],
                None => fleet::statuses(source.repo()).into_keys().collect(),
            };
            let mut entries: Vec<ClusterStatus> = names
                .iter()
                .flat_map(|name| fleet::history(source.repo(), name, *limit))
                .collect();
            if entries.is_empty() {
                match cluster {
                    Some(name) => bail!("{} has no status of cluster {name}", source.shown),
                    None => bail!("{} has no cluster status yet", source.shown),
                }
            }
            entries.sort_by(|a, b| (&a.time, &a.cluster).cmp(&(&b.time, &b.cluster)));
            print_history(&entries);
            Ok(())
        }
    }
}

/// Where the statuses are read from.
struct Source {
    /// A repository of our own (fetched into) or the one given.
    repo: Repository,
    /// Kept while `repo` lives in it.
    _scratch: Option<tempfile::TempDir>,
    /// How to name it in messages.
    shown: String,
}

impl Source {
    fn repo(&self) -> &Repository {
        &self.repo
    }
}

fn has_statuses(repo: &Repository) -> bool {
    repo.references_glob(&format!("{STATUS_REFS}*"))
        .is_ok_and(|mut refs| refs.next().is_some())
}

/// Opens `repo` (a path with status refs is read in place; a URL, or a clone without them, is
/// fetched from into a scratch repository), else the cluster's mirror, else the current
/// directory's repository.
fn open(repo: Option<&str>, data_dir: Option<&Path>) -> anyhow::Result<Source> {
    if let Some(given) = repo {
        if let Ok(local) = Repository::open(given) {
            return from_local(local, given);
        }
        return fetched(given);
    }
    if let Ok(dir) = crate::data::data_dir(data_dir) {
        let mirror = shipshape_actors::gitsync::mirror_dir(&dir);
        if let Ok(local) = Repository::open_bare(&mirror)
            && has_statuses(&local)
        {
            return Ok(Source {
                repo: local,
                _scratch: None,
                shown: format!("this cluster's mirror ({})", mirror.display()),
            });
        }
    }
    let local = Repository::discover(".").context(
        "no repository to read: pass --repo URL|PATH (or run this in a clone, or on a cluster)",
    )?;
    let shown = local
        .workdir()
        .unwrap_or(local.path())
        .display()
        .to_string();
    from_local(local, &shown)
}

fn from_local(local: Repository, shown: &str) -> anyhow::Result<Source> {
    if has_statuses(&local) {
        return Ok(Source {
            repo: local,
            _scratch: None,
            shown: shown.to_string(),
        });
    }
    // A plain clone does not fetch these refs: read them from where it was cloned.
    let origin = local
        .find_remote("origin")
        .ok()
        .and_then(|r| r.url().ok().map(str::to_string));
    match origin {
        Some(url) => fetched(&url),
        None => bail!(
            "{shown} has no cluster status (no refs under {STATUS_REFS}) and no origin to read them from"
        ),
    }
}

/// Fetches only the status refs of `url` into a scratch bare repository.
fn fetched(url: &str) -> anyhow::Result<Source> {
    let scratch = tempfile::tempdir()?;
    let repo = Repository::init_bare(scratch.path())?;
    let path = Path::new(url);
    let url = if path.exists() {
        std::fs::canonicalize(path)?.display().to_string()
    } else {
        url.to_string()
    };
    {
        let mut remote = repo.remote_anonymous(&url)?;
        remote
            .fetch(&[STATUS_REFSPEC], None, None)
            .with_context(|| format!("cannot read the cluster status from {url}"))?;
    }
    Ok(Source {
        repo,
        _scratch: Some(scratch),
        shown: url,
    })
}

/// Synced when every application is, Failed when one failed, else OutOfSync.
fn sync_of(status: &ClusterStatus) -> &'static str {
    if status.applications.iter().any(|a| a.sync == "Failed") {
        "Failed"
    } else if status
        .applications
        .iter()
        .all(|a| a.sync == "Synced" || a.sync == "Suspended")
    {
        "Synced"
    } else {
        "OutOfSync"
    }
}

/// The worst application health, in Argo CD's order (a name no build knows counts as
/// Unknown).
fn health_of(status: &ClusterStatus) -> &'static str {
    status
        .applications
        .iter()
        .map(|a| {
            serde_json::from_value::<Health>(serde_json::Value::from(a.health.as_str()))
                .unwrap_or(Health::Unknown)
        })
        .max()
        .unwrap_or(Health::Healthy)
        .as_str()
}

/// `5m ago`, from seconds.
fn ago(seconds: i64) -> String {
    format!("{} ago", age_of_seconds(seconds))
}

fn print_status(statuses: &BTreeMap<String, (git2::Oid, ClusterStatus)>, now: jiff::Timestamp) {
    let mut rows = vec![vec![
        "CLUSTER".to_string(),
        "LABELS".into(),
        "WAVE".into(),
        "COMMIT".into(),
        "STATE".into(),
        "SYNC".into(),
        "HEALTH".into(),
        "SINCE".into(),
        "REPORTED".into(),
    ]];
    let mut notes = Vec::new();
    for (name, (_, status)) in statuses {
        let record = status
            .commits
            .iter()
            .find(|r| Some(&r.commit) == status.commit.as_ref());
        let since = record.map_or("-".to_string(), |r| ago(now.as_second() - r.since));
        let reported = status
            .time
            .parse::<jiff::Timestamp>()
            .map_or("-".to_string(), |t| ago(now.as_second() - t.as_second()));
        rows.push(vec![
            name.clone(),
            if status.labels.is_empty() {
                "-".into()
            } else {
                shipshape_api::fleet::labels_text(&status.labels)
            },
            status.wave.clone().unwrap_or_else(|| "-".into()),
            short(status.commit.as_deref()).to_string(),
            record.map_or("Waiting", |r| r.state.as_str()).to_string(),
            sync_of(status).to_string(),
            health_of(status).to_string(),
            since,
            reported,
        ]);
        if let Some(held) = &status.held {
            notes.push(format!("{name}: holding {held}"));
        }
        for application in &status.applications {
            if !application.message.is_empty() {
                notes.push(format!(
                    "{name}: {} {}/{}: {}",
                    application.name, application.sync, application.health, application.message
                ));
            }
        }
    }
    print_table(&rows);
    for note in notes {
        println!("{note}");
    }
}

fn print_history(entries: &[ClusterStatus]) {
    let mut rows = vec![vec![
        "TIME".to_string(),
        "CLUSTER".into(),
        "WAVE".into(),
        "COMMIT".into(),
        "STATE".into(),
        "SYNC".into(),
        "HEALTH".into(),
        "HELD".into(),
    ]];
    for status in entries {
        let state = status
            .commits
            .iter()
            .find(|r| Some(&r.commit) == status.commit.as_ref())
            .map_or("Waiting", |r| r.state.as_str());
        rows.push(vec![
            status.time.clone(),
            status.cluster.clone(),
            status.wave.clone().unwrap_or_else(|| "-".into()),
            short(status.commit.as_deref()).to_string(),
            state.to_string(),
            sync_of(status).to_string(),
            health_of(status).to_string(),
            status.held.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows);
}
