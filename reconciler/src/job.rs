//! The Job decision: run pods until `completions` of them succeed (or, without `completions`,
//! until one does and the rest have stopped), at most `parallelism` at a time; give up after
//! `backoffLimit` failures or `activeDeadlineSeconds`; delete the finished Job after
//! `ttlSecondsAfterFinished`.
//!
//! Counting is exactly once: a finished pod is counted in the same write that marks it counted
//! (the actor writes both in one transaction), so a pod deleted after it was counted does not
//! take its success with it, and a success is never counted twice. That is what keeps a Job from
//! running more successful completions than asked, the job controller's finalizer-based
//! tracking in Kubernetes.

use crate::decision::{Decision, Seeded};

/// First retry delay after a failed pod (Kubernetes: 10 s, doubling, at most 6 minutes).
pub const BACKOFF_BASE_SECONDS: i64 = 10;
/// The longest retry delay.
pub const BACKOFF_MAX_SECONDS: i64 = 360;

/// How a Job's pods restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobRestart {
    /// A failed pod stays failed; the Job makes a new one (after back-off).
    Never,
    /// The kubelet restarts failed containers in place; restarts count as failures.
    OnFailure,
}

/// A pod of the Job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobPod {
    /// Its name.
    pub name: String,
    /// Its uid (deletions and counting are conditioned on it).
    pub uid: String,
    /// Running or waiting to run (not finished, not being deleted).
    pub active: bool,
    /// Ready (for `status.ready`).
    pub ready: bool,
    /// Finished: `Some(true)` succeeded, `Some(false)` failed.
    pub outcome: Option<bool>,
    /// When it finished (seconds), if it has.
    pub finished_at: Option<i64>,
    /// Container restarts (OnFailure failures).
    pub restarts: u32,
    /// Already counted in the Job's status.
    pub counted: bool,
    /// When it was created (seconds): newest are removed first.
    pub created: i64,
}

/// How a Job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobEnd {
    /// Enough pods succeeded.
    Complete,
    /// Too many failures.
    BackoffLimitExceeded,
    /// Ran longer than activeDeadlineSeconds.
    DeadlineExceeded,
}

/// The Job's status as the decision reads and writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct JobStatus {
    /// Pods running or waiting.
    pub active: u32,
    /// Of those, ready.
    pub ready: u32,
    /// Pods that succeeded (counted once each).
    pub succeeded: u32,
    /// Failures: failed pods, plus container restarts under OnFailure.
    pub failed: u32,
    /// When the Job started (seconds).
    pub start_time: Option<i64>,
    /// How and when it ended.
    pub ended: Option<(JobEnd, i64)>,
}

/// What the Job decision needs to know.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobView {
    /// The Job's name (pods are named after it).
    pub name: String,
    /// Successes wanted; `None`: the work-queue pattern (one success ends it).
    pub completions: Option<u32>,
    /// Pods at once.
    pub parallelism: u32,
    /// Failures tolerated.
    pub backoff_limit: u32,
    /// Seconds the Job may run.
    pub active_deadline_seconds: Option<i64>,
    /// Seconds a finished Job is kept.
    pub ttl_seconds_after_finished: Option<i64>,
    /// `spec.suspend`: no pods run.
    pub suspend: bool,
    /// The pods' restart policy.
    pub restart: JobRestart,
    /// The status as last written.
    pub status: JobStatus,
    /// The pods it owns.
    pub pods: Vec<JobPod>,
}

/// One step the Job controller takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobAction {
    /// Create a pod under this name.
    CreatePod {
        /// The new pod's name.
        name: String,
    },
    /// Delete a pod (surplus, or the Job ended).
    DeletePod {
        /// Its name.
        name: String,
        /// Its uid.
        uid: String,
    },
    /// Mark finished pods counted, in the same write as the status that counts them.
    CountPods(Vec<(String, String)>),
    /// Write the status.
    UpdateStatus(JobStatus),
    /// Delete the Job itself (its TTL after finishing has passed).
    DeleteJob,
}

/// The delay before the next pod may start after `failures` failures.
pub fn backoff(failures: u32) -> i64 {
    if failures == 0 {
        return 0;
    }
    let doublings = failures.saturating_sub(1).min(16);
    (BACKOFF_BASE_SECONDS << doublings).min(BACKOFF_MAX_SECONDS)
}

/// Decides what the Job controller does now; `now` is seconds, `seed` names new pods.
pub fn decide_job(view: &JobView, now: i64, seed: u64) -> Decision<JobAction> {
    let mut decision = Decision::idle();
    let mut status = view.status.clone();

    // Count what finished since the last look, once.
    let newly: Vec<&JobPod> = view
        .pods
        .iter()
        .filter(|p| p.outcome.is_some() && !p.counted)
        .collect();
    for pod in &newly {
        match pod.outcome {
            Some(true) => status.succeeded += 1,
            _ => status.failed += 1,
        }
    }
    if !newly.is_empty() {
        decision.actions.push(JobAction::CountPods(
            newly
                .iter()
                .map(|p| (p.name.clone(), p.uid.clone()))
                .collect(),
        ));
    }
    let restarts: u32 = match view.restart {
        JobRestart::OnFailure => view.pods.iter().map(|p| p.restarts).sum(),
        JobRestart::Never => 0,
    };
    let failures = status.failed + restarts;
    let active: Vec<&JobPod> = view.pods.iter().filter(|p| p.active).collect();

    if status.ended.is_none() {
        if !view.suspend && status.start_time.is_none() {
            status.start_time = Some(now);
        }
        let done = match view.completions {
            Some(n) => status.succeeded >= n,
            None => status.succeeded > 0 && active.is_empty(),
        };
        if done {
            status.ended = Some((JobEnd::Complete, now));
        } else if failures > view.backoff_limit {
            status.ended = Some((JobEnd::BackoffLimitExceeded, now));
        } else if let (Some(deadline), Some(start)) =
            (view.active_deadline_seconds, status.start_time)
            && now >= start.saturating_add(deadline)
        {
            status.ended = Some((JobEnd::DeadlineExceeded, now));
        }
    }

    let want_active: u32 = match (&status.ended, view.suspend) {
        (Some(_), _) | (None, true) => 0,
        (None, false) => match view.completions {
            Some(n) => view.parallelism.min(n.saturating_sub(status.succeeded)),
            // Once one pod succeeded, the rest finish on their own; no new ones.
            None if status.succeeded > 0 => active.len() as u32,
            None => view.parallelism,
        },
    };
    let count = active.len() as u32;
    if count > want_active {
        let mut surplus = active.clone();
        // Newest first: the oldest have done the most work.
        surplus.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
        for pod in surplus.iter().take((count - want_active) as usize) {
            decision.actions.push(JobAction::DeletePod {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
            });
        }
    } else if count < want_active {
        // After a failure, wait out the back-off from the latest one.
        let last_failure = view
            .pods
            .iter()
            .filter(|p| p.outcome == Some(false))
            .filter_map(|p| p.finished_at)
            .max();
        let ready_at = match (view.restart, last_failure) {
            (JobRestart::Never, Some(at)) if status.failed > 0 => at + backoff(status.failed),
            _ => now,
        };
        if ready_at > now {
            decision.requeue_after = Some(ready_at - now);
        } else {
            let mut names = Seeded::new(seed);
            let taken: Vec<&str> = view.pods.iter().map(|p| p.name.as_str()).collect();
            let mut created = 0;
            while created < want_active - count {
                let name = format!("{}-{}", view.name, names.name_suffix());
                if taken.contains(&name.as_str()) {
                    continue;
                }
                decision.actions.push(JobAction::CreatePod { name });
                created += 1;
            }
        }
    }

    let deleting: Vec<&str> = decision
        .actions
        .iter()
        .filter_map(|a| match a {
            JobAction::DeletePod { uid, .. } => Some(uid.as_str()),
            _ => None,
        })
        .collect();
    let created = decision
        .actions
        .iter()
        .filter(|a| matches!(a, JobAction::CreatePod { .. }))
        .count() as u32;
    status.active = active
        .iter()
        .filter(|p| !deleting.contains(&p.uid.as_str()))
        .count() as u32
        + created;
    status.ready = active
        .iter()
        .filter(|p| p.ready && !deleting.contains(&p.uid.as_str()))
        .count() as u32;
    if status != view.status {
        decision
            .actions
            .push(JobAction::UpdateStatus(status.clone()));
    }

    // A deadline or a TTL passes without any event announcing it.
    let mut wake = Vec::new();
    if let (None, Some(deadline), Some(start)) = (
        &status.ended,
        view.active_deadline_seconds,
        status.start_time,
    ) {
        wake.push(start.saturating_add(deadline).saturating_sub(now));
    }
    if let (Some((_, ended)), Some(ttl)) = (status.ended, view.ttl_seconds_after_finished) {
        if now >= ended.saturating_add(ttl) && view.status.ended.is_some() {
            decision.actions.push(JobAction::DeleteJob);
        } else {
            wake.push(ended.saturating_add(ttl).saturating_sub(now).max(1));
        }
    }
    if let Some(extra) = decision.requeue_after {
        wake.push(extra);
    }
    decision.requeue_after = wake.into_iter().map(|w| w.max(1)).min();
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pod(name: &str, outcome: Option<bool>, counted: bool) -> JobPod {
        JobPod {
            name: name.into(),
            uid: format!("uid-{name}"),
            active: outcome.is_none(),
            ready: false,
            outcome,
            finished_at: outcome.map(|_| 100),
            restarts: 0,
            counted,
            created: 0,
        }
    }

    fn job(completions: Option<u32>, parallelism: u32, pods: Vec<JobPod>) -> JobView {
        JobView {
            name: "pi".into(),
            completions,
            parallelism,
            backoff_limit: 2,
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
            suspend: false,
            restart: JobRestart::Never,
            status: JobStatus::default(),
            pods,
        }
    }

    fn creates(decision: &Decision<JobAction>) -> usize {
        decision
            .actions
            .iter()
            .filter(|a| matches!(a, JobAction::CreatePod { .. }))
            .count()
    }

    fn status(decision: &Decision<JobAction>) -> Option<&JobStatus> {
        decision.actions.iter().find_map(|a| match a {
            JobAction::UpdateStatus(s) => Some(s),
            _ => None,
        })
    }

    #[test]
    fn runs_parallelism_pods_until_completions_succeed() {
        let first = decide_job(&job(Some(5), 2, vec![]), 0, 1);
        assert_eq!(creates(&first), 2);
        assert_eq!(status(&first).map(|s| s.start_time), Some(Some(0)));
        // Four counted successes: one more is needed, so one pod runs, not two.
        let mut view = job(Some(5), 2, vec![pod("pi-a", None, false)]);
        view.status.succeeded = 4;
        view.status.start_time = Some(0);
        assert_eq!(creates(&decide_job(&view, 10, 1)), 0);
        // It succeeds: counted once, and the Job completes.
        view.pods = vec![pod("pi-a", Some(true), false)];
        let done = decide_job(&view, 20, 1);
        assert!(done.actions.contains(&JobAction::CountPods(vec![(
            "pi-a".into(),
            "uid-pi-a".into()
        )])));
        let s = status(&done).expect("status");
        assert_eq!((s.succeeded, s.ended), (5, Some((JobEnd::Complete, 20))));
        assert_eq!(creates(&done), 0);
    }

    #[test]
    fn a_counted_pod_is_never_counted_again() {
        let mut view = job(Some(2), 1, vec![pod("pi-a", Some(true), true)]);
        view.status.succeeded = 1;
        view.status.start_time = Some(0);
        let decision = decide_job(&view, 5, 1);
        assert!(
            !decision
                .actions
                .iter()
                .any(|a| matches!(a, JobAction::CountPods(_)))
        );
        assert_eq!(creates(&decision), 1);
        assert_eq!(status(&decision).map(|s| s.succeeded), Some(1));
    }

    #[test]
    fn failures_back_off_then_stop_at_the_limit() {
        let mut view = job(Some(1), 1, vec![pod("pi-a", Some(false), false)]);
        view.status.start_time = Some(0);
        // First failure at 100: the next pod waits 10 s.
        let early = decide_job(&view, 101, 1);
        assert_eq!(creates(&early), 0);
        assert_eq!(early.requeue_after, Some(9));
        view.pods[0].counted = true;
        view.status.failed = 1;
        assert_eq!(creates(&decide_job(&view, 110, 1)), 1);
        // Three failures with backoffLimit 2: Failed, nothing new.
        view.status.failed = 3;
        let failed = decide_job(&view, 500, 1);
        assert_eq!(creates(&failed), 0);
        assert_eq!(
            status(&failed).and_then(|s| s.ended),
            Some((JobEnd::BackoffLimitExceeded, 500))
        );
        assert_eq!(backoff(1), 10);
        assert_eq!(backoff(2), 20);
        assert_eq!(backoff(10), 360);
    }

    #[test]
    fn the_deadline_fails_the_job_and_stops_its_pods() {
        let mut view = job(Some(1), 1, vec![pod("pi-a", None, false)]);
        view.active_deadline_seconds = Some(30);
        view.status.start_time = Some(0);
        view.status.active = 1;
        let running = decide_job(&view, 10, 1);
        assert_eq!(running.requeue_after, Some(20));
        let late = decide_job(&view, 30, 1);
        assert!(late.actions.contains(&JobAction::DeletePod {
            name: "pi-a".into(),
            uid: "uid-pi-a".into()
        }));
        assert_eq!(
            status(&late).and_then(|s| s.ended),
            Some((JobEnd::DeadlineExceeded, 30))
        );
    }

    #[test]
    fn a_finished_job_is_deleted_after_its_ttl() {
        let mut view = job(Some(1), 1, vec![pod("pi-a", Some(true), true)]);
        view.ttl_seconds_after_finished = Some(60);
        view.status = JobStatus {
            succeeded: 1,
            start_time: Some(0),
            ended: Some((JobEnd::Complete, 100)),
            ..JobStatus::default()
        };
        assert_eq!(decide_job(&view, 120, 1).requeue_after, Some(40));
        assert!(
            decide_job(&view, 160, 1)
                .actions
                .contains(&JobAction::DeleteJob)
        );
    }

    #[test]
    fn without_completions_one_success_ends_the_work_queue() {
        let mut view = job(
            None,
            3,
            vec![pod("a", Some(true), false), pod("b", None, false)],
        );
        view.status.start_time = Some(0);
        let decision = decide_job(&view, 5, 1);
        assert_eq!(creates(&decision), 0, "no new pods after a success");
        assert_eq!(
            status(&decision).and_then(|s| s.ended),
            None,
            "b still runs"
        );
        view.pods[1] = pod("b", Some(true), false);
        view.pods[0].counted = true;
        view.status.succeeded = 1;
        let done = decide_job(&view, 6, 1);
        assert_eq!(
            status(&done).and_then(|s| s.ended),
            Some((JobEnd::Complete, 6))
        );
    }

    #[test]
    fn deadlines_and_ttls_near_the_largest_number_never_overflow() {
        for deadline in [i64::MAX, i64::MAX - 1, 1] {
            let mut view = job(Some(1), 1, vec![pod("a", None, false)]);
            view.active_deadline_seconds = Some(deadline);
            view.ttl_seconds_after_finished = Some(i64::MAX);
            view.status.start_time = Some(1_000);
            let decision = decide_job(&view, 2_000, 1);
            let ended = status(&decision).and_then(|s| s.ended);
            if deadline == 1 {
                assert_eq!(ended, Some((JobEnd::DeadlineExceeded, 2_000)));
            } else {
                assert_eq!(ended, None, "a deadline past the end of time never passes");
                assert!(decision.requeue_after.is_some_and(|after| after > 0));
            }
        }
    }

    proptest! {
        /// Whatever happens to its pods, a Job never has more than `completions` counted
        /// successes plus pods running, and never more running than `parallelism`.
        #[test]
        fn never_more_successes_than_completions(
            steps in proptest::collection::vec((0u8..4, 0usize..8), 1..40),
            completions in 1u32..5,
            parallelism in 1u32..4,
        ) {
            let mut view = job(Some(completions), parallelism, vec![]);
            view.backoff_limit = 100;
            let mut now = 0;
            for (serial, (what, which)) in steps.into_iter().enumerate() {
                now += 20;
                // The world: a running pod succeeds, fails, or a counted pod is deleted.
                let candidates: Vec<usize> = (0..view.pods.len()).collect();
                if let Some(&i) = candidates.get(which % candidates.len().max(1)) {
                    let pod = &mut view.pods[i];
                    match what {
                        0 if pod.active => { pod.active = false; pod.outcome = Some(true); pod.finished_at = Some(now); }
                        1 if pod.active => { pod.active = false; pod.outcome = Some(false); pod.finished_at = Some(now); }
                        2 if pod.counted => { view.pods.remove(i); }
                        _ => {}
                    }
                }
                let decision = decide_job(&view, now, serial as u64);
                for action in decision.actions {
                    match action {
                        JobAction::CreatePod { name } => view.pods.push(pod(&name, None, false)),
                        JobAction::DeletePod { uid, .. } => view.pods.retain(|p| p.uid != uid),
                        JobAction::CountPods(counted) => {
                            for (_, uid) in counted {
                                if let Some(p) = view.pods.iter_mut().find(|p| p.uid == uid) { p.counted = true; }
                            }
                        }
                        JobAction::UpdateStatus(status) => view.status = status,
                        JobAction::DeleteJob => {}
                    }
                }
                let running = view.pods.iter().filter(|p| p.active).count() as u32;
                prop_assert!(running <= parallelism);
                prop_assert!(view.status.succeeded + running <= completions);
                prop_assert!(view.status.succeeded <= completions);
            }
        }
    }
}
