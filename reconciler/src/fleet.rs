//! Fleet rollouts: which commit a cluster may take, given what the other clusters of its fleet
//! reported, and what a cluster reports of the commit it is on. Every cluster runs these same
//! two functions on what it read from Git; no server decides for them.
//!
//! A cluster of wave k takes the newest commit (newer than its own) for which every earlier
//! wave is ready: no cluster of it reported the commit Failed (under `onFailure: Halt`), and at
//! most `maxUnavailable` of its clusters lack a Soaked report of it (down, still progressing,
//! on another commit). A cluster in no wave, or a commit with no fleet file, follows the branch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shipshape_api::fleet::{ClusterIdentity, Fleet, OnFailure};

/// How many commit records a report keeps (newest first): enough for any commit a later wave
/// may still take.
pub const RECORDS_KEPT: usize = 20;

/// What a cluster says of one commit it has been on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CommitState {
    /// Applied (or being applied), not yet Synced and Healthy everywhere.
    Progressing,
    /// Every application Synced and Healthy, for less than the wave's soak time.
    Healthy,
    /// Synced and Healthy for the soak time: later waves may take the commit. Kept once
    /// reached.
    Soaked,
    /// An application failed to sync or turned Degraded on this commit. Kept once reached: a
    /// halted commit stays halted, the fix is a newer commit.
    Failed,
}

impl CommitState {
    /// Its name as shown and published (`Soaked`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CommitState::Progressing => "Progressing",
            CommitState::Healthy => "Healthy",
            CommitState::Soaked => "Soaked",
            CommitState::Failed => "Failed",
        }
    }
}

/// One commit in a cluster's report.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRecord {
    /// The commit id.
    pub commit: String,
    /// What the cluster saw.
    pub state: CommitState,
    /// When that state began (seconds since the epoch, on the reporting cluster's clock: the
    /// soak is timed by the cluster that soaks, so clocks need not agree).
    pub since: i64,
}

/// What one cluster published: who it is and its newest commits, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Report {
    /// Its name and labels (which wave it is in is read from them).
    pub cluster: ClusterIdentity,
    /// Newest first, at most [`RECORDS_KEPT`].
    pub commits: Vec<CommitRecord>,
}

impl Report {
    /// Its record of `commit`, if it has one.
    pub fn state_of(&self, commit: &str) -> Option<CommitState> {
        self.commits
            .iter()
            .find(|r| r.commit == commit)
            .map(|r| r.state)
    }
}

/// How the cluster's applications look on its current commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Seen {
    /// Some application is not Synced or not Healthy yet, and none failed.
    Progressing,
    /// Every application is Synced and Healthy.
    Healthy,
    /// Some application failed to sync or is Degraded.
    Failed,
}

/// The record of `commit` after seeing `seen` at `now`, given the previous record (`None` or
/// another commit's: a fresh start). `soak_seconds` is the cluster's wave's soak at `commit`.
pub fn observe(
    previous: Option<&CommitRecord>,
    commit: &str,
    seen: Seen,
    soak_seconds: i64,
    now: i64,
) -> CommitRecord {
    let record = |state, since| CommitRecord {
        commit: commit.to_string(),
        state,
        since,
    };
    let previous = previous.filter(|p| p.commit == commit);
    match (previous.map(|p| (p.state, p.since)), seen) {
        (Some((state @ (CommitState::Failed | CommitState::Soaked), since)), _) => {
            record(state, since)
        }
        (_, Seen::Failed) => record(CommitState::Failed, now),
        (Some((CommitState::Healthy, since)), Seen::Healthy) => {
            if now.saturating_sub(since) >= soak_seconds {
                record(CommitState::Soaked, now)
            } else {
                record(CommitState::Healthy, since)
            }
        }
        (_, Seen::Healthy) if soak_seconds <= 0 => record(CommitState::Soaked, now),
        (_, Seen::Healthy) => record(CommitState::Healthy, now),
        (Some((CommitState::Progressing, since)), Seen::Progressing) => {
            record(CommitState::Progressing, since)
        }
        (_, Seen::Progressing) => record(CommitState::Progressing, now),
    }
}

/// A report's records with `record` as the newest (replacing an older record of its commit),
/// at most [`RECORDS_KEPT`].
pub fn with_record(records: &[CommitRecord], record: CommitRecord) -> Vec<CommitRecord> {
    std::iter::once(record.clone())
        .chain(
            records
                .iter()
                .filter(|r| r.commit != record.commit)
                .cloned(),
        )
        .take(RECORDS_KEPT)
        .collect()
}

/// The fleet file a commit holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FleetAt<'a> {
    /// None: the commit is not rolled out in waves.
    Absent,
    /// This one.
    Valid(&'a Fleet),
    /// One that does not parse, with the error: no cluster of the fleet takes the commit (a
    /// typo must not release it to every wave at once).
    Invalid(&'a str),
}

/// A commit a cluster could move to, with the fleet file it holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Candidate<'a> {
    /// The commit id.
    pub commit: String,
    /// Its fleet file.
    pub fleet: FleetAt<'a>,
}

/// Why a cluster is not taking a newer commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Hold {
    /// The commit's fleet file does not parse.
    InvalidFleetFile(String),
    /// A cluster of an earlier wave reported the commit Failed (`onFailure: Halt`).
    Halted {
        /// The earlier wave.
        wave: String,
        /// The cluster that failed it.
        cluster: String,
    },
    /// Too few clusters of an earlier wave have soaked the commit.
    Waiting {
        /// The earlier wave.
        wave: String,
        /// Its clusters with a Soaked report.
        soaked: usize,
        /// Its clusters.
        members: usize,
        /// How many may lack it.
        may_lack: usize,
    },
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::InvalidFleetFile(error) => write!(f, "the fleet file is invalid: {error}"),
            Hold::Halted { wave, cluster } => {
                write!(f, "halted: {cluster} (wave {wave}) reported it Failed")
            }
            Hold::Waiting {
                wave,
                soaked,
                members,
                may_lack,
            } => write!(
                f,
                "waiting for wave {wave}: {soaked} of {members} clusters soaked, {may_lack} may lack it"
            ),
        }
    }
}

impl Hold {
    /// The hold without its counts (`waiting for wave main`): what a cluster publishes, so its
    /// status moves when what it waits for changes, not with every cluster of that wave that
    /// reports (each move makes the clusters watching it fetch).
    pub fn reason(&self) -> String {
        match self {
            Hold::Waiting { wave, .. } => format!("waiting for wave {wave}"),
            other => other.to_string(),
        }
    }
}

/// What [`choose`] decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Choice {
    /// The commit to move to (`None`: stay where it is).
    pub commit: Option<String>,
    /// The newest candidate's hold when it is not the one taken: what the cluster waits for.
    pub newest_held: Option<(String, Hold)>,
}

/// The commit `me` takes among `candidates` (newest first, all newer than its current
/// commit), given the other clusters' `reports` (its own is ignored).
pub fn choose(me: &ClusterIdentity, candidates: &[Candidate<'_>], reports: &[Report]) -> Choice {
    let others: Vec<&Report> = reports
        .iter()
        .filter(|r| r.cluster.name != me.name)
        .collect();
    let mut newest_held = None;
    for candidate in candidates {
        match hold(me, candidate, &others) {
            None => {
                return Choice {
                    commit: Some(candidate.commit.clone()),
                    newest_held,
                };
            }
            Some(why) => {
                if newest_held.is_none() {
                    newest_held = Some((candidate.commit.clone(), why));
                }
            }
        }
    }
    Choice {
        commit: None,
        newest_held,
    }
}

/// Why `me` may not take `candidate` yet (`None`: it may).
pub fn hold(me: &ClusterIdentity, candidate: &Candidate<'_>, others: &[&Report]) -> Option<Hold> {
    let fleet = match candidate.fleet {
        FleetAt::Absent => return None,
        FleetAt::Invalid(error) => return Some(Hold::InvalidFleetFile(error.to_string())),
        FleetAt::Valid(fleet) => fleet,
    };
    let mine = fleet.wave_of(me)?;
    let mut members: BTreeMap<usize, Vec<&Report>> = BTreeMap::new();
    for report in others {
        if let Some(wave) = fleet.wave_of(&report.cluster).filter(|w| *w < mine) {
            members.entry(wave).or_default().push(report);
        }
    }
    for (index, wave) in fleet.waves.iter().enumerate().take(mine) {
        let reports = members.get(&index).map(Vec::as_slice).unwrap_or_default();
        if fleet.on_failure == OnFailure::Halt
            && let Some(failed) = reports
                .iter()
                .find(|r| r.state_of(&candidate.commit) == Some(CommitState::Failed))
        {
            return Some(Hold::Halted {
                wave: wave.name.clone(),
                cluster: failed.cluster.name.clone(),
            });
        }
        let soaked = reports
            .iter()
            .filter(|r| r.state_of(&candidate.commit) == Some(CommitState::Soaked))
            .count();
        let may_lack = wave.max_unavailable.of(reports.len());
        if reports.len() - soaked > may_lack {
            return Some(Hold::Waiting {
                wave: wave.name.clone(),
                soaked,
                members: reports.len(),
                may_lack,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipshape_api::fleet::{Clusters, MaxUnavailable, Wave};

    fn cluster(name: &str, ring: &str) -> ClusterIdentity {
        ClusterIdentity {
            name: name.into(),
            labels: [("ring".to_string(), ring.to_string())].into(),
        }
    }

    fn fleet(max_unavailable: u32, on_failure: OnFailure) -> Fleet {
        let wave = |name: &str| Wave {
            name: name.into(),
            clusters: Clusters::Selector(shipshape_api::Selector::from_labels(
                &[("ring".to_string(), name.to_string())].into(),
            )),
            soak_seconds: 60,
            max_unavailable: MaxUnavailable::Count(max_unavailable),
        };
        Fleet {
            targets: Vec::new(),
            waves: vec![wave("canary"), wave("main"), wave("last")],
            on_failure,
        }
    }

    fn report(name: &str, ring: &str, records: &[(&str, CommitState)]) -> Report {
        Report {
            cluster: cluster(name, ring),
            commits: records
                .iter()
                .map(|(commit, state)| CommitRecord {
                    commit: commit.to_string(),
                    state: *state,
                    since: 0,
                })
                .collect(),
        }
    }

    fn candidates<'a>(fleet: &'a Fleet, commits: &[&str]) -> Vec<Candidate<'a>> {
        commits
            .iter()
            .map(|c| Candidate {
                commit: c.to_string(),
                fleet: FleetAt::Valid(fleet),
            })
            .collect()
    }

    #[test]
    fn the_first_wave_and_clusters_outside_waves_follow_the_branch() {
        let fleet = fleet(0, OnFailure::Halt);
        let all = candidates(&fleet, &["c2", "c1"]);
        let choice = choose(&cluster("a", "canary"), &all, &[]);
        assert_eq!(choice.commit.as_deref(), Some("c2"));
        let choice = choose(&cluster("x", "elsewhere"), &all, &[]);
        assert_eq!(choice.commit.as_deref(), Some("c2"));
        // No fleet file at the commit: no waves.
        let plain = [Candidate {
            commit: "c3".into(),
            fleet: FleetAt::Absent,
        }];
        assert_eq!(
            choose(&cluster("b", "main"), &plain, &[]).commit.as_deref(),
            Some("c3")
        );
        // A fleet file that does not parse holds every cluster, the first wave too.
        let broken = [Candidate {
            commit: "c4".into(),
            fleet: FleetAt::Invalid("fleet.yaml:3: unknown field `wave`"),
        }];
        let choice = choose(&cluster("a", "canary"), &broken, &[]);
        assert_eq!(choice.commit, None);
        assert_eq!(
            choice.newest_held.map(|(_, h)| h.to_string()),
            Some("the fleet file is invalid: fleet.yaml:3: unknown field `wave`".into())
        );
    }

    #[test]
    fn a_later_wave_takes_the_newest_commit_the_earlier_waves_soaked() {
        let fleet = fleet(0, OnFailure::Halt);
        let all = candidates(&fleet, &["c3", "c2", "c1"]);
        let reports = [
            report(
                "a",
                "canary",
                &[("c3", CommitState::Healthy), ("c2", CommitState::Soaked)],
            ),
            report("b", "main", &[("c2", CommitState::Soaked)]),
        ];
        let choice = choose(&cluster("b2", "main"), &all, &reports);
        assert_eq!(choice.commit.as_deref(), Some("c2"));
        assert_eq!(
            choice.newest_held,
            Some((
                "c3".into(),
                Hold::Waiting {
                    wave: "canary".into(),
                    soaked: 0,
                    members: 1,
                    may_lack: 0
                }
            ))
        );
        // The last wave needs both earlier waves: main soaked c2 too.
        let choice = choose(&cluster("z", "last"), &all, &reports);
        assert_eq!(choice.commit.as_deref(), Some("c2"));
        // Without main's report it waits... unless main has no clusters at all.
        let choice = choose(&cluster("z", "last"), &all, &reports[..1]);
        assert_eq!(choice.commit.as_deref(), Some("c2"));
    }

    #[test]
    fn a_failure_halts_and_max_unavailable_bounds_the_missing() {
        let halt = fleet(1, OnFailure::Halt);
        let reports = [
            report("a1", "canary", &[("c2", CommitState::Failed)]),
            report("a2", "canary", &[("c2", CommitState::Soaked)]),
        ];
        let choice = choose(&cluster("b", "main"), &candidates(&halt, &["c2"]), &reports);
        assert_eq!(choice.commit, None);
        assert_eq!(
            choice.newest_held.map(|(_, h)| h.to_string()),
            Some("halted: a1 (wave canary) reported it Failed".into())
        );
        // Under Continue the failed cluster is one of the unavailable.
        let go_on = fleet(1, OnFailure::Continue);
        let choice = choose(
            &cluster("b", "main"),
            &candidates(&go_on, &["c2"]),
            &reports,
        );
        assert_eq!(choice.commit.as_deref(), Some("c2"));
        // A cluster that is down (its report is old) counts against maxUnavailable.
        let strict = fleet(0, OnFailure::Halt);
        let down = [
            report("a1", "canary", &[("c1", CommitState::Soaked)]),
            report("a2", "canary", &[("c2", CommitState::Soaked)]),
        ];
        assert_eq!(
            choose(&cluster("b", "main"), &candidates(&strict, &["c2"]), &down).commit,
            None
        );
        assert_eq!(
            choose(&cluster("b", "main"), &candidates(&halt, &["c2"]), &down)
                .commit
                .as_deref(),
            Some("c2")
        );
    }

    #[test]
    fn a_report_soaks_after_the_soak_time_and_keeps_failures() {
        let progressing = observe(None, "c1", Seen::Progressing, 60, 100);
        assert_eq!(progressing.state, CommitState::Progressing);
        let healthy = observe(Some(&progressing), "c1", Seen::Healthy, 60, 110);
        assert_eq!((healthy.state, healthy.since), (CommitState::Healthy, 110));
        let still = observe(Some(&healthy), "c1", Seen::Healthy, 60, 169);
        assert_eq!(still, healthy);
        let soaked = observe(Some(&still), "c1", Seen::Healthy, 60, 170);
        assert_eq!(soaked.state, CommitState::Soaked);
        // A dip before the soak ends starts it again.
        let dip = observe(Some(&healthy), "c1", Seen::Progressing, 60, 120);
        assert_eq!(dip.state, CommitState::Progressing);
        // Failed and Soaked stay.
        let failed = observe(Some(&healthy), "c1", Seen::Failed, 60, 130);
        assert_eq!(failed.state, CommitState::Failed);
        assert_eq!(
            observe(Some(&failed), "c1", Seen::Healthy, 60, 999).state,
            CommitState::Failed
        );
        assert_eq!(
            observe(Some(&soaked), "c1", Seen::Failed, 60, 999).state,
            CommitState::Soaked
        );
        // A new commit starts fresh; with no soak, healthy is soaked at once.
        assert_eq!(
            observe(Some(&failed), "c2", Seen::Healthy, 0, 200).state,
            CommitState::Soaked
        );
        // The newest record goes first, replacing the commit's older one.
        let older = observe(None, "c0", Seen::Healthy, 0, 50);
        let records = with_record(&[soaked, older.clone()], failed.clone());
        assert_eq!(records, vec![failed, older]);
    }
}
