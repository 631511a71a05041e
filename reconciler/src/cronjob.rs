//! The CronJob decision: when a schedule comes due, start a Job for it (or skip it, or replace
//! the running one, as `concurrencyPolicy` says); keep only the asked number of finished Jobs.
//!
//! As Kubernetes' CronJob controller: each Job is named after the minute it was scheduled for
//! (`NAME-<minutes since the epoch>`), so a repeated decision can never start one schedule
//! twice; after a gap (shipshape was stopped) only the most recent missed schedule runs, at most
//! once, and not at all when `startingDeadlineSeconds` has passed for it.

use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::decision::Decision;

/// Missed schedules past which Kubernetes says it is too many (it still runs the latest).
pub const TOO_MANY_MISSED: usize = 100;

/// `spec.concurrencyPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Concurrency {
    /// Jobs may overlap.
    Allow,
    /// A schedule that comes due while a Job still runs is skipped.
    Forbid,
    /// The running Job is deleted and the new one started.
    Replace,
}

/// A Job the CronJob owns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnedJob {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// How it ended and when (seconds): `Some((true, t))` complete, `Some((false, t))` failed.
    pub finished: Option<(bool, i64)>,
}

/// What the CronJob decision needs to know.
#[derive(Clone, Debug)]
pub struct CronJobView {
    /// The CronJob's name.
    pub name: String,
    /// The parsed schedule.
    pub schedule: Cron,
    /// The zone the schedule is read in.
    pub time_zone: TimeZone,
    /// `spec.suspend`.
    pub suspend: bool,
    /// `spec.concurrencyPolicy`.
    pub concurrency: Concurrency,
    /// `spec.startingDeadlineSeconds`.
    pub starting_deadline_seconds: Option<i64>,
    /// `spec.successfulJobsHistoryLimit` (Kubernetes' default 3).
    pub successful_history: usize,
    /// `spec.failedJobsHistoryLimit` (default 1).
    pub failed_history: usize,
    /// When the CronJob was created (seconds).
    pub created: i64,
    /// `status.lastScheduleTime` (seconds).
    pub last_schedule: Option<i64>,
    /// `status.lastSuccessfulTime` (seconds).
    pub last_successful: Option<i64>,
    /// The names in `status.active`, as last written.
    pub active_written: Vec<String>,
    /// Its Jobs.
    pub jobs: Vec<OwnedJob>,
}

/// Why a due schedule did not start a Job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Forbid, and a Job still runs.
    StillRunning,
    /// `startingDeadlineSeconds` passed before it could start.
    MissedDeadline,
}

/// One step the CronJob controller takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CronJobAction {
    /// Start a Job for the schedule at `scheduled` (seconds).
    CreateJob {
        /// The Job's name.
        name: String,
        /// The time it was scheduled for.
        scheduled: i64,
    },
    /// Delete a Job: replaced, or beyond the history limits.
    DeleteJob {
        /// Its name.
        name: String,
        /// Its uid.
        uid: String,
    },
    /// Say why a due schedule was skipped.
    Skipped {
        /// The schedule's time.
        scheduled: i64,
        /// Why.
        reason: Skip,
    },
    /// Say that more than [`TOO_MANY_MISSED`] schedules were missed.
    TooManyMissed,
    /// Write the status.
    UpdateStatus {
        /// `lastScheduleTime`.
        last_schedule: Option<i64>,
        /// `lastSuccessfulTime`.
        last_successful: Option<i64>,
        /// The running Jobs' names.
        active: Vec<String>,
    },
}

/// The name of the Job for the schedule at `scheduled`.
pub fn job_name(cronjob: &str, scheduled: i64) -> String {
    format!("{cronjob}-{}", scheduled.div_euclid(60))
}

fn next_after(view: &CronJobView, after: i64) -> Option<i64> {
    let start = Timestamp::from_second(after)
        .ok()?
        .to_zoned(view.time_zone.clone());
    view.schedule
        .find_next_occurrence(&start, false)
        .ok()
        .map(|z| z.timestamp().as_second())
}

/// Decides what the CronJob controller does now (`now` in seconds).
pub fn decide_cronjob(view: &CronJobView, now: i64) -> Decision<CronJobAction> {
    let mut decision = Decision::idle();
    let mut active: Vec<&OwnedJob> = view.jobs.iter().filter(|j| j.finished.is_none()).collect();
    let mut last_schedule = view.last_schedule;
    let mut last_successful = view.last_successful;
    for job in &view.jobs {
        if let Some((true, at)) = job.finished
            && last_successful.is_none_or(|seen| at > seen)
        {
            last_successful = Some(at);
        }
    }

    // Finished Jobs beyond the history limits go, oldest first.
    for (succeeded, limit) in [
        (true, view.successful_history),
        (false, view.failed_history),
    ] {
        let mut finished: Vec<(&OwnedJob, i64)> = view
            .jobs
            .iter()
            .filter_map(|j| match j.finished {
                Some((ok, at)) if ok == succeeded => Some((j, at)),
                _ => None,
            })
            .collect();
        finished.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.name.cmp(&a.0.name)));
        for (job, _) in finished.into_iter().skip(limit) {
            decision.actions.push(CronJobAction::DeleteJob {
                name: job.name.clone(),
                uid: job.uid.clone(),
            });
        }
    }

    if !view.suspend {
        let mut earliest = view.last_schedule.unwrap_or(view.created);
        if let Some(deadline) = view.starting_deadline_seconds {
            earliest = earliest.max(now.saturating_sub(deadline));
        }
        // The most recent schedule in (earliest, now].
        let mut due = None;
        let mut missed = 0;
        let mut cursor = earliest;
        while let Some(at) = next_after(view, cursor).filter(|at| *at <= now) {
            due = Some(at);
            missed += 1;
            cursor = at;
            if missed > TOO_MANY_MISSED {
                decision.actions.push(CronJobAction::TooManyMissed);
                // Jump close to now: only the latest matters.
                cursor = cursor.max(now - 60 * 60 * 24);
                missed = 0;
                due = None;
            }
        }
        if let Some(at) = due {
            let name = job_name(&view.name, at);
            let exists = view.jobs.iter().any(|j| j.name == name);
            let late = view
                .starting_deadline_seconds
                .is_some_and(|deadline| at.saturating_add(deadline) < now);
            if exists {
                last_schedule = Some(last_schedule.map_or(at, |seen| seen.max(at)));
            } else if late {
                decision.actions.push(CronJobAction::Skipped {
                    scheduled: at,
                    reason: Skip::MissedDeadline,
                });
            } else if view.concurrency == Concurrency::Forbid && !active.is_empty() {
                // Not marked scheduled: it may still start when the running Job ends, within
                // its deadline (as Kubernetes does).
                decision.actions.push(CronJobAction::Skipped {
                    scheduled: at,
                    reason: Skip::StillRunning,
                });
            } else {
                if view.concurrency == Concurrency::Replace {
                    for job in &active {
                        decision.actions.push(CronJobAction::DeleteJob {
                            name: job.name.clone(),
                            uid: job.uid.clone(),
                        });
                    }
                    active.clear();
                }
                decision.actions.push(CronJobAction::CreateJob {
                    name: name.clone(),
                    scheduled: at,
                });
                last_schedule = Some(at);
            }
        }
        decision.requeue_after = next_after(view, now).map(|next| (next - now).max(1));
    }

    let mut active_names: Vec<String> = active.iter().map(|j| j.name.clone()).collect();
    for action in &decision.actions {
        if let CronJobAction::CreateJob { name, .. } = action {
            active_names.push(name.clone());
        }
    }
    active_names.sort();
    if last_schedule != view.last_schedule
        || last_successful != view.last_successful
        || active_names != view.active_written
    {
        decision.actions.push(CronJobAction::UpdateStatus {
            last_schedule,
            last_successful,
            active: active_names,
        });
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(text: &str) -> Cron {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(text)
            .unwrap()
    }

    fn view(schedule: &str) -> CronJobView {
        CronJobView {
            name: "hello".into(),
            schedule: cron(schedule),
            time_zone: TimeZone::UTC,
            suspend: false,
            concurrency: Concurrency::Allow,
            starting_deadline_seconds: None,
            successful_history: 3,
            failed_history: 1,
            created: 1_000_020,
            last_schedule: None,
            last_successful: None,
            active_written: vec![],
            jobs: vec![],
        }
    }

    fn created(decision: &Decision<CronJobAction>) -> Vec<String> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                CronJobAction::CreateJob { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn running(name: &str) -> OwnedJob {
        OwnedJob {
            name: name.into(),
            uid: format!("uid-{name}"),
            finished: None,
        }
    }

    #[test]
    fn a_starting_deadline_near_the_largest_number_never_overflows() {
        let mut view = view("* * * * *");
        view.starting_deadline_seconds = Some(i64::MAX);
        let decision = decide_cronjob(&view, 1_000_080);
        assert_eq!(created(&decision), ["hello-16668"]);
    }

    #[test]
    fn a_due_schedule_starts_one_job_named_after_its_minute() {
        let view = view("* * * * *");
        // Created at 1_000_020; the first minute boundary after it is 1_000_080.
        let early = decide_cronjob(&view, 1_000_050);
        assert!(created(&early).is_empty());
        assert_eq!(early.requeue_after, Some(30));
        let due = decide_cronjob(&view, 1_000_085);
        assert_eq!(created(&due), ["hello-16668"]);
        // The same decision again, with the Job there: nothing new.
        let mut again = view.clone();
        again.jobs = vec![running("hello-16668")];
        again.last_schedule = Some(1_000_080);
        assert!(created(&decide_cronjob(&again, 1_000_090)).is_empty());
    }

    #[test]
    fn after_a_gap_only_the_latest_missed_schedule_runs() {
        let mut view = view("* * * * *");
        view.last_schedule = Some(1_000_080);
        // Ten minutes later: one Job, for the latest minute.
        let decision = decide_cronjob(&view, 1_000_080 + 600 + 5);
        assert_eq!(created(&decision), [job_name("hello", 1_000_080 + 600)]);
        // With a 30 s starting deadline, the latest (5 s ago) still runs; one 40 s ago would not.
        view.starting_deadline_seconds = Some(30);
        assert_eq!(
            created(&decide_cronjob(&view, 1_000_080 + 600 + 5)).len(),
            1
        );
        view.starting_deadline_seconds = Some(3);
        let late = decide_cronjob(&view, 1_000_080 + 600 + 5);
        assert!(created(&late).is_empty());
    }

    #[test]
    fn forbid_skips_and_replace_replaces_a_running_job() {
        let mut view = view("* * * * *");
        view.last_schedule = Some(1_000_080);
        view.jobs = vec![running("hello-16668")];
        view.concurrency = Concurrency::Forbid;
        let forbid = decide_cronjob(&view, 1_000_145);
        assert!(created(&forbid).is_empty());
        assert!(forbid.actions.iter().any(|a| matches!(
            a,
            CronJobAction::Skipped {
                reason: Skip::StillRunning,
                ..
            }
        )));
        view.concurrency = Concurrency::Replace;
        let replace = decide_cronjob(&view, 1_000_145);
        assert!(replace.actions.contains(&CronJobAction::DeleteJob {
            name: "hello-16668".into(),
            uid: "uid-hello-16668".into()
        }));
        assert_eq!(created(&replace), ["hello-16669"]);
        view.concurrency = Concurrency::Allow;
        assert_eq!(created(&decide_cronjob(&view, 1_000_145)), ["hello-16669"]);
    }

    #[test]
    fn suspended_cronjobs_start_nothing_and_history_is_trimmed() {
        let mut view = view("* * * * *");
        view.suspend = true;
        view.jobs = (0..5)
            .map(|i| OwnedJob {
                name: format!("hello-{i}"),
                uid: format!("u{i}"),
                finished: Some((i != 2, 100 + i)),
            })
            .collect();
        let decision = decide_cronjob(&view, 2_000_000);
        assert!(created(&decision).is_empty());
        let deleted: Vec<&str> = decision
            .actions
            .iter()
            .filter_map(|a| match a {
                CronJobAction::DeleteJob { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        // Four succeeded, three kept: the oldest goes; the one failure is kept.
        assert_eq!(deleted, ["hello-0"]);
    }

    #[test]
    fn schedules_follow_the_time_zone() {
        let mut view = view("0 9 * * *");
        view.time_zone = TimeZone::get("Europe/Berlin").unwrap();
        view.created = 1_767_225_600; // 2026-01-01T00:00:00Z
        // 09:00 in Berlin in winter is 08:00 UTC.
        let due = decide_cronjob(&view, 1_767_225_600 + 8 * 3600 + 1);
        assert_eq!(created(&due), [job_name("hello", 1_767_225_600 + 8 * 3600)]);
    }
}
