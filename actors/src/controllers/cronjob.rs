//! The CronJob controller: starts each CronJob's Jobs when their schedule comes due, deciding
//! with [`shipshape_reconciler::cronjob::decide_cronjob`].
//!
//! Its clock can run faster than the wall clock (`up --cronjob-time-scale N`, for tests and
//! demos: a one-minute schedule then fires every 60/N seconds); times it writes
//! (`lastScheduleTime`) are on that clock, times it reads from objects are mapped onto it.

use shipshape_api::pointer::At;
use std::time::Duration;

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_reconciler::cronjob::{
    Concurrency, CronJobAction, CronJobView, OwnedJob, Skip, decide_cronjob,
};

use super::{Owned, Owners, condition, owner_reference, provenance, rfc3339, seconds, text};
use crate::Write;
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{AuditEntry, Batch, Precondition, WatchEvent, key_of, parse_storage_key};

const COMPONENT: &str = "cronjob-controller";

/// The annotation Kubernetes puts on a CronJob's Job: the time it was scheduled for.
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The controller's clock: when it started (seconds) and how fast it runs.
#[derive(Clone, Copy)]
struct Clock {
    epoch: i64,
    scale: i64,
}

impl Clock {
    /// A wall-clock time on this clock.
    fn at(self, wall: i64) -> i64 {
        self.epoch + (wall - self.epoch) * self.scale
    }
}

/// The CronJob controller's cache: the CronJobs, and their Jobs by owner uid.
pub struct CronJobController {
    cronjobs: Owners,
    jobs: Owned<OwnedJob>,
    clock: Clock,
}

impl CronJobController {
    /// A controller whose clock runs `scale` times as fast as the wall clock (1: real time).
    pub fn new(scale: u32) -> Self {
        Self {
            cronjobs: Owners::default(),
            jobs: Owned::new("CronJob"),
            clock: Clock {
                epoch: jiff::Timestamp::now().as_second(),
                scale: i64::from(scale.max(1)),
            },
        }
    }
}

/// How a Job ended, from its conditions (wall-clock seconds).
fn finished(job: &Value) -> Option<(bool, i64)> {
    [("Complete", true), ("Failed", false)]
        .into_iter()
        .find_map(|(kind, ok)| {
            let c = condition(job, kind).filter(|c| c["status"] == "True")?;
            Some((ok, seconds(c.get("lastTransitionTime")).unwrap_or(0)))
        })
}

/// The Job a CronJob's jobTemplate describes for the schedule at `scheduled`.
fn job_from_template(cronjob: &Value, name: &str, scheduled: i64) -> Value {
    let template = &cronjob["spec"]["jobTemplate"];
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(map) = metadata.as_object_mut() {
        map.insert("name".into(), name.into());
        map.insert("namespace".into(), cronjob["metadata"]["namespace"].clone());
        map.insert("ownerReferences".into(), json!([owner_reference(cronjob)]));
        let annotations = map.entry("annotations").or_insert_with(|| json!({}));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(SCHEDULED_ANNOTATION.into(), rfc3339(scheduled).into());
            for (key, value) in provenance(cronjob) {
                annotations.insert(key.into(), value.clone());
            }
        }
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

impl Controller for CronJobController {
    fn name(&self) -> &'static str {
        "cronjob"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::CronJob, Kind::Job]
    }

    fn reset(&mut self) {
        self.cronjobs = Owners::default();
        self.jobs = Owned::new("CronJob");
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            Kind::CronJob => self.cronjobs.observe(event, dirty),
            Kind::Job => {
                let clock = self.clock;
                let owner = self.jobs.observe(event, |job| OwnedJob {
                    name: key.name.clone(),
                    uid: text(job, "/metadata/uid").unwrap_or_default().to_string(),
                    finished: finished(job).map(|(ok, at)| (ok, clock.at(at))),
                });
                if let Some(cronjob) = owner.and_then(|uid| self.cronjobs.key_of(&uid)) {
                    dirty.mark(cronjob.clone(), || because(event));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        let Some(cronjob) = self.cronjobs.get(key) else {
            return Reconciled::default();
        };
        if cronjob.at("/metadata/deletionTimestamp").is_some() {
            return Reconciled::default();
        }
        let Ok(cronjob_key) = key_of(cronjob) else {
            return Reconciled::default();
        };
        let spec = &cronjob["spec"];
        let Ok(schedule) =
            shipshape_api::validate::parse_schedule(spec["schedule"].as_str().unwrap_or_default())
        else {
            return Reconciled::default();
        };
        let time_zone = match spec["timeZone"].as_str() {
            Some(zone) => match jiff::tz::TimeZone::get(zone) {
                Ok(zone) => zone,
                Err(_) => {
                    return Reconciled {
                        batches: vec![Batch {
                            writes: vec![event(
                                COMPONENT,
                                cronjob,
                                "Warning",
                                "UnknownTimeZone",
                                format!("unknown time zone {zone:?}"),
                                now,
                            )],
                            audit: None,
                        }],
                        requeue_after: None,
                    };
                }
            },
            None => jiff::tz::TimeZone::system(),
        };
        let uid = text(cronjob, "/metadata/uid")
            .unwrap_or_default()
            .to_string();
        let rv = text(cronjob, "/metadata/resourceVersion")
            .unwrap_or_default()
            .to_string();
        let jobs: Vec<OwnedJob> = self.jobs.of(&uid).cloned().collect();
        let history = |field: &str, default: usize| {
            spec[field]
                .as_u64()
                .map_or(default, |n| usize::try_from(n).unwrap_or(default))
        };
        let mut active_written: Vec<String> = cronjob
            .at("/status/active")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        active_written.sort();
        let view = CronJobView {
            name: cronjob_key.name.clone(),
            schedule,
            time_zone,
            suspend: spec["suspend"].as_bool().unwrap_or(false),
            concurrency: match spec["concurrencyPolicy"].as_str() {
                Some("Forbid") => Concurrency::Forbid,
                Some("Replace") => Concurrency::Replace,
                _ => Concurrency::Allow,
            },
            starting_deadline_seconds: spec["startingDeadlineSeconds"].as_i64(),
            successful_history: history("successfulJobsHistoryLimit", 3),
            failed_history: history("failedJobsHistoryLimit", 1),
            created: self
                .clock
                .at(seconds(cronjob.at("/metadata/creationTimestamp")).unwrap_or(0)),
            last_schedule: seconds(cronjob.at("/status/lastScheduleTime")),
            last_successful: seconds(cronjob.at("/status/lastSuccessfulTime")),
            active_written,
            jobs,
        };
        let clock_now = self.clock.at(now.as_second());
        let decision = decide_cronjob(&view, clock_now);
        let namespace = cronjob_key.namespace.clone();
        let mut writes = Vec::new();
        let mut started = Vec::new();
        for action in decision.actions {
            match action {
                CronJobAction::CreateJob { name, scheduled } => {
                    writes.push(Write::Create {
                        object: job_from_template(cronjob, &name, scheduled),
                        applied: None,
                        application: None,
                    });
                    writes.push(event(
                        COMPONENT,
                        cronjob,
                        "Normal",
                        "SuccessfulCreate",
                        format!("Created job {name}"),
                        now,
                    ));
                    started.push(name);
                }
                CronJobAction::DeleteJob { name, uid } => {
                    writes.push(Write::Delete {
                        key: shipshape_api::ObjectKey {
                            kind: Kind::Job,
                            namespace: namespace.clone(),
                            name: name.clone(),
                        },
                        precondition: Precondition::Uid(uid),
                    });
                    writes.push(event(
                        COMPONENT,
                        cronjob,
                        "Normal",
                        "SuccessfulDelete",
                        format!("Deleted job {name}"),
                        now,
                    ));
                }
                CronJobAction::Skipped { scheduled, reason } => {
                    let message = match reason {
                        Skip::StillRunning => format!(
                            "Not starting job for {} because a prior execution is still running and concurrency policy is Forbid",
                            rfc3339(scheduled)
                        ),
                        Skip::MissedDeadline => format!(
                            "Missed the schedule at {}: startingDeadlineSeconds passed",
                            rfc3339(scheduled)
                        ),
                    };
                    let reason = match reason {
                        Skip::StillRunning => "JobAlreadyActive",
                        Skip::MissedDeadline => "MissSchedule",
                    };
                    writes.push(event(COMPONENT, cronjob, "Normal", reason, message, now));
                }
                CronJobAction::TooManyMissed => writes.push(event(
                    COMPONENT,
                    cronjob,
                    "Warning",
                    "TooManyMissedTimes",
                    "too many missed start times; check clock skew".to_string(),
                    now,
                )),
                CronJobAction::UpdateStatus {
                    last_schedule,
                    last_successful,
                    active,
                } => {
                    let mut status = json!({
                        "active": active.iter().map(|name| json!({"apiVersion": "batch/v1", "kind": "Job", "name": name, "namespace": namespace})).collect::<Vec<_>>(),
                    });
                    if let Some(at) = last_schedule {
                        status["lastScheduleTime"] = json!(rfc3339(at));
                    }
                    if let Some(at) = last_successful {
                        status["lastSuccessfulTime"] = json!(rfc3339(at));
                    }
                    writes.push(Write::UpdateStatus {
                        key: cronjob_key.clone(),
                        precondition: rv.parse().ok().map(Precondition::ResourceVersion),
                        status,
                    });
                }
            }
        }
        let batches = if writes.is_empty() {
            Vec::new()
        } else {
            vec![Batch {
                writes,
                audit: (!started.is_empty()).then(|| AuditEntry {
                    actor: "controller/cronjob".into(),
                    action: "create-jobs".into(),
                    subject: key.to_string(),
                    details: json!({"jobs": started}),
                }),
            }]
        };
        Reconciled {
            batches,
            // A wait on the controller's clock, in wall-clock time.
            requeue_after: decision.requeue_after.map(|wait| {
                Duration::from_millis(
                    u64::try_from(wait * 1000 / self.clock.scale)
                        .unwrap_or(1000)
                        .max(200),
                )
            }),
        }
    }
}
