//! The fleet model: clusters in waves pull one repository, take commits with the real
//! [`choose`] and report them with the real [`observe`], through status writes that may be
//! delayed (a write is a step of its own, taken in any order) or lost, while clusters crash and
//! new commits (good or bad) arrive mid-rollout.
//!
//! Properties: no cluster of a later wave is ever on a commit that its earlier waves have not
//! soaked (within their `maxUnavailable`); no cluster takes a commit an earlier wave has
//! visibly failed (`onFailure: Halt`); and from every state a run without further faults or
//! commits settles with every running cluster on the newest commit whose earlier waves are
//! healthy (all of them on the newest commit when nothing failed or crashed).

use std::fmt;

use shipshape_api::fleet::{ClusterIdentity, Clusters, Fleet, MaxUnavailable, OnFailure, Wave};
use shipshape_reconciler::fleet::{
    Candidate, Choice, CommitRecord, CommitState, FleetAt, Report, Seen, choose, observe,
    with_record,
};
use stateright::{Model, Property};

use crate::converge::Converging;

/// The soak time, in the model's clock ticks (a cluster's clock ticks when its record changes).
const SOAK: i64 = 1;

/// How far a fault-free run may go before it must have settled.
const CONVERGENCE_STEPS: usize = 200;

/// The sizes a run explores.
#[derive(Clone, Debug)]
pub struct FleetModel {
    /// How many clusters each wave has, in order (the last wave's clusters are its own).
    pub waves: Vec<usize>,
    /// How many of each wave may lack a commit.
    pub max_unavailable: u32,
    /// How many commits Git makes after the first.
    pub commits: usize,
    /// How many faults (a cluster crash, a lost status write) may happen.
    pub faults: u8,
    /// The decision under test (the real [`choose`], or a deliberately wrong one).
    pub choose: fn(&ClusterIdentity, &[Candidate<'_>], &[Report]) -> Choice,
    /// Each cluster's wave.
    wave_of: Vec<usize>,
    fleet: Fleet,
    clusters: Vec<ClusterIdentity>,
    converging: Converging,
}

/// One cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ClusterState {
    /// Running (a crash is for good: the cluster is down for the rest of the run).
    pub up: bool,
    /// The commit it is on (an index into the commits).
    pub at: usize,
    /// Its own records, newest first.
    pub records: Vec<CommitRecord>,
    /// What the others can read of them (the last status write that arrived).
    pub published: Vec<CommitRecord>,
    /// Its clock.
    pub clock: i64,
}

/// The fleet.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct FleetState {
    /// Each commit's health (true: good), oldest first; every cluster starts on the first.
    pub commits: Vec<bool>,
    /// The clusters.
    pub clusters: Vec<ClusterState>,
    /// Faults left.
    pub faults_left: u8,
    /// Set when a cluster took a commit that an earlier wave had visibly failed.
    pub took_halted: bool,
}

/// What can happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetStep {
    /// Git gets a new commit, good or bad.
    Commit(bool),
    /// A cluster polls and takes the commit [`choose`] gives it.
    Sync(usize),
    /// A cluster looks at its applications and updates its record.
    Observe(usize),
    /// A cluster's status write arrives.
    Publish(usize),
    /// A cluster's status write is lost (fault).
    LosePublish(usize),
    /// A cluster crashes (fault).
    Crash(usize),
}

impl fmt::Display for FleetStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetStep::Commit(true) => write!(f, "Git gets a good commit"),
            FleetStep::Commit(false) => write!(f, "Git gets a bad commit"),
            FleetStep::Sync(i) => write!(f, "cluster {i} syncs"),
            FleetStep::Observe(i) => write!(f, "cluster {i} observes its health"),
            FleetStep::Publish(i) => write!(f, "cluster {i}'s status write arrives"),
            FleetStep::LosePublish(i) => write!(f, "cluster {i}'s status write is lost"),
            FleetStep::Crash(i) => write!(f, "cluster {i} crashes"),
        }
    }
}

fn commit_name(index: usize) -> String {
    format!("c{index}")
}

impl FleetModel {
    /// Clusters in `waves` (sizes), each wave allowing `max_unavailable` missing, `commits`
    /// new commits and `faults` faults.
    pub fn new(waves: Vec<usize>, max_unavailable: u32, commits: usize, faults: u8) -> Self {
        let mut clusters = Vec::new();
        let mut fleet_waves = Vec::new();
        for (wave, size) in waves.iter().enumerate() {
            let name = format!("w{wave}");
            for member in 0..*size {
                clusters.push(ClusterIdentity {
                    name: format!("{name}-{member}"),
                    labels: [("wave".to_string(), name.clone())].into(),
                });
            }
            fleet_waves.push(Wave {
                name: name.clone(),
                clusters: Clusters::Selector(shipshape_api::Selector::from_labels(
                    &[("wave".to_string(), name)].into(),
                )),
                soak_seconds: SOAK,
                max_unavailable: MaxUnavailable::Count(max_unavailable),
            });
        }
        let fleet = Fleet {
            targets: Vec::new(),
            waves: fleet_waves,
            on_failure: OnFailure::Halt,
        };
        let wave_of = clusters
            .iter()
            .map(|c| fleet.wave_of(c).unwrap_or(usize::MAX))
            .collect();
        Self {
            waves,
            max_unavailable,
            commits,
            faults,
            choose,
            wave_of,
            fleet,
            clusters,
            converging: Converging::default(),
        }
    }

    fn wave(&self, cluster: usize) -> usize {
        self.wave_of[cluster]
    }

    /// The reports cluster `me` can read: the others' last arrived writes.
    fn visible(&self, state: &FleetState, me: usize) -> Vec<Report> {
        state
            .clusters
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .map(|(i, c)| Report {
                cluster: self.clusters[i].clone(),
                commits: c.published.clone(),
            })
            .collect()
    }

    fn sync_target(&self, state: &FleetState, i: usize) -> Option<usize> {
        let cluster = &state.clusters[i];
        let candidates: Vec<Candidate> = (cluster.at + 1..state.commits.len())
            .rev()
            .map(|c| Candidate {
                commit: commit_name(c),
                fleet: FleetAt::Valid(&self.fleet),
            })
            .collect();
        let choice = (self.choose)(&self.clusters[i], &candidates, &self.visible(state, i));
        choice
            .commit
            .and_then(|c| c.trim_start_matches('c').parse().ok())
    }

    fn observed(&self, state: &FleetState, i: usize) -> Option<CommitRecord> {
        let cluster = &state.clusters[i];
        let seen = if state.commits[cluster.at] {
            Seen::Healthy
        } else {
            Seen::Failed
        };
        let record = observe(
            cluster.records.first(),
            &commit_name(cluster.at),
            seen,
            SOAK,
            cluster.clock,
        );
        (cluster.records.first() != Some(&record)).then_some(record)
    }

    /// The steps that need no fault and no new commit, in a fixed order.
    fn progress(&self, state: &FleetState, steps: &mut Vec<FleetStep>) {
        for (i, cluster) in state.clusters.iter().enumerate() {
            if !cluster.up {
                continue;
            }
            if self.sync_target(state, i).is_some() {
                steps.push(FleetStep::Sync(i));
            }
            if self.observed(state, i).is_some() {
                steps.push(FleetStep::Observe(i));
            }
            if cluster.published != cluster.records {
                steps.push(FleetStep::Publish(i));
            }
        }
    }

    /// Whether the members of wave `wave` that published soaked `commit` leave no more than
    /// `maxUnavailable` without it, and (Halt) none published it failed: the rule stated
    /// apart from [`choose`], to check it.
    fn wave_ready(&self, state: &FleetState, wave: usize, commit: usize) -> bool {
        let (members, soaked) = self.published_in(state, wave, commit, CommitState::Soaked);
        let (_, failed) = self.published_in(state, wave, commit, CommitState::Failed);
        failed == 0 && members - soaked <= self.max_unavailable as usize
    }

    /// Of wave `wave`'s clusters: how many there are, and how many published `commit` in
    /// state `wanted`.
    fn published_in(
        &self,
        state: &FleetState,
        wave: usize,
        commit: usize,
        wanted: CommitState,
    ) -> (usize, usize) {
        let name = commit_name(commit);
        let members = state
            .clusters
            .iter()
            .enumerate()
            .filter(|(i, _)| self.wave(*i) == wave);
        let with = members.clone().filter(|(_, c)| {
            c.published
                .iter()
                .any(|r| r.commit == name && r.state == wanted)
        });
        (members.count(), with.count())
    }

    fn earlier_ready(&self, state: &FleetState, wave: usize, commit: usize) -> bool {
        (0..wave).all(|j| self.wave_ready(state, j, commit))
    }

    /// Settled: nothing left to do, every running cluster on the newest commit its earlier
    /// waves are ready for, and, when no commit was bad and no cluster crashed, every cluster
    /// on the newest commit.
    pub fn converged(&self, state: &FleetState) -> bool {
        let mut steps = Vec::new();
        self.progress(state, &mut steps);
        if !steps.is_empty() {
            return false;
        }
        let newest = state.commits.len() - 1;
        let placed = state.clusters.iter().enumerate().all(|(i, c)| {
            !c.up || {
                let wave = self.wave(i);
                let expected = (c.at..=newest)
                    .rev()
                    .find(|&commit| commit == c.at || self.earlier_ready(state, wave, commit))
                    .unwrap_or(c.at);
                c.at == expected
            }
        });
        let clean = state.commits.iter().all(|good| *good) && state.clusters.iter().all(|c| c.up);
        placed && (!clean || state.clusters.iter().all(|c| c.at == newest))
    }

    /// Runs the fleet without faults or commits from `state`; true if it settles in `steps`.
    pub fn converges_within(&self, state: &FleetState, steps: usize) -> bool {
        self.converging.within(
            state,
            steps,
            |state| {
                let mut next = Vec::new();
                self.progress(state, &mut next);
                let step = next.into_iter().next()?;
                self.next_state(state, step)
            },
            |state| self.converged(state),
        )
    }
}

impl Model for FleetModel {
    type State = FleetState;
    type Action = FleetStep;

    fn init_states(&self) -> Vec<FleetState> {
        let first = CommitRecord {
            commit: commit_name(0),
            state: CommitState::Soaked,
            since: 0,
        };
        vec![FleetState {
            commits: vec![true],
            clusters: self
                .clusters
                .iter()
                .map(|_| ClusterState {
                    up: true,
                    at: 0,
                    records: vec![first.clone()],
                    published: vec![first.clone()],
                    clock: 1,
                })
                .collect(),
            faults_left: self.faults,
            took_halted: false,
        }]
    }

    fn actions(&self, state: &FleetState, steps: &mut Vec<FleetStep>) {
        self.progress(state, steps);
        if state.commits.len() <= self.commits {
            steps.push(FleetStep::Commit(true));
            steps.push(FleetStep::Commit(false));
        }
        if state.faults_left > 0 {
            for (i, cluster) in state.clusters.iter().enumerate() {
                if cluster.up {
                    steps.push(FleetStep::Crash(i));
                    if cluster.published != cluster.records {
                        steps.push(FleetStep::LosePublish(i));
                    }
                }
            }
        }
    }

    fn next_state(&self, state: &FleetState, step: FleetStep) -> Option<FleetState> {
        let mut next = state.clone();
        match step {
            FleetStep::Commit(good) => next.commits.push(good),
            FleetStep::Sync(i) => {
                let target = self.sync_target(state, i)?;
                let earlier = self.wave(i).min(self.waves.len());
                let failed_before = (0..earlier)
                    .any(|j| self.published_in(state, j, target, CommitState::Failed).1 > 0);
                next.took_halted |= failed_before;
                next.clusters[i].at = target;
            }
            FleetStep::Observe(i) => {
                let record = self.observed(state, i)?;
                let cluster = &mut next.clusters[i];
                cluster.records = with_record(&cluster.records, record);
                cluster.clock += 1;
            }
            FleetStep::Publish(i) => {
                let cluster = &mut next.clusters[i];
                cluster.published = cluster.records.clone();
            }
            FleetStep::LosePublish(_) => next.faults_left -= 1,
            FleetStep::Crash(i) => {
                next.faults_left -= 1;
                next.clusters[i].up = false;
            }
        }
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "no cluster of a later wave is on a commit its earlier waves have not soaked",
                |model: &FleetModel, state: &FleetState| {
                    state.clusters.iter().enumerate().all(|(i, c)| {
                        c.at == 0
                            || (0..model.wave(i).min(model.waves.len())).all(|j| {
                                let (members, soaked) =
                                    model.published_in(state, j, c.at, CommitState::Soaked);
                                members - soaked <= model.max_unavailable as usize
                            })
                    })
                },
            ),
            Property::always(
                "a halted commit goes no further",
                |_: &FleetModel, state: &FleetState| !state.took_halted,
            ),
            Property::always(
                "from every state a fault-free run settles on the newest commit each wave may take (no livelock)",
                |model: &FleetModel, state: &FleetState| {
                    model.converges_within(state, CONVERGENCE_STEPS)
                },
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::check;

    // The real decision's configuration is in `verify::workload_models`, checked by
    // `the_workload_models_hold` and `shipshape verify`.

    /// A rule that forgets the waves (takes the newest commit, as a cluster outside any wave
    /// does) is caught, with a counterexample.
    #[test]
    fn a_rollout_that_ignores_the_waves_is_caught() {
        fn newest(_: &ClusterIdentity, candidates: &[Candidate<'_>], _: &[Report]) -> Choice {
            Choice {
                commit: candidates.first().map(|c| c.commit.clone()),
                newest_held: None,
            }
        }
        let mut model = FleetModel::new(vec![1, 1], 0, 1, 0);
        model.choose = newest;
        let verdict = check("fleet that ignores waves", model);
        assert!(
            verdict.violated("no cluster of a later wave"),
            "{:#?}",
            verdict.violations
        );
        assert!(verdict.violated("a halted commit goes no further"));
    }
}
