//! The Job controller: runs each Job's pods until enough succeed, deciding with
//! [`shipshape_reconciler::job::decide_job`]. Finished pods are marked counted (an annotation)
//! in the same transaction as the status that counts them, so counting is exactly once.

use shipshape_api::pointer::At;
use std::time::Duration;

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_reconciler::job::{
    JobAction, JobEnd, JobPod, JobRestart, JobStatus, JobView, decide_job,
};

use super::{
    Owned, Owners, PodTemplate, condition, number, rfc3339, seconds, seed, status_count, text,
};
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{AuditEntry, Batch, Precondition, WatchEvent, key_of, parse_storage_key};
use crate::{Write, store};

const COMPONENT: &str = "job-controller";

/// The annotation marking a finished pod as counted in its Job's status.
pub const COUNTED_ANNOTATION: &str = "shipshape.dev/job-counted";

/// Kubernetes' default backoffLimit.
const DEFAULT_BACKOFF_LIMIT: u32 = 6;

/// The Job controller's cache: the Jobs, and their pods (with whether each is bound) by owner.
pub struct JobController {
    jobs: Owners,
    pods: Owned<(JobPod, bool)>,
}

impl Default for JobController {
    fn default() -> Self {
        Self {
            jobs: Owners::default(),
            pods: Owned::new("Job"),
        }
    }
}

impl JobController {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A pod as the Job decision sees it.
fn job_pod(pod: &Value) -> JobPod {
    let phase = text(pod, "/status/phase").unwrap_or("Pending");
    let outcome = match phase {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ => None,
    };
    let statuses = pod
        .at("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let finished_at = statuses
        .iter()
        .filter_map(|s| seconds(s.at("/state/terminated/finishedAt")))
        .max()
        .or_else(|| outcome.map(|_| seconds(pod.at("/metadata/creationTimestamp")).unwrap_or(0)));
    let restarts = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_u64())
        .sum::<u64>();
    let terminating = pod.at("/metadata/deletionTimestamp").is_some();
    JobPod {
        name: text(pod, "/metadata/name").unwrap_or_default().to_string(),
        uid: text(pod, "/metadata/uid").unwrap_or_default().to_string(),
        active: outcome.is_none() && !terminating,
        ready: super::condition_is_true(pod, "Ready"),
        outcome,
        finished_at,
        restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
        counted: pod
            .at(&format!(
                "/metadata/annotations/{}",
                COUNTED_ANNOTATION.replace('/', "~1")
            ))
            .is_some(),
        created: seconds(pod.at("/metadata/creationTimestamp")).unwrap_or(0),
    }
}

/// The status as written by [`status_json`].
fn parse_status(job: &Value) -> JobStatus {
    let ended = [("Complete", None), ("Failed", Some(()))]
        .into_iter()
        .find_map(|(kind, failed)| {
            let c = condition(job, kind).filter(|c| c["status"] == "True")?;
            let at = seconds(c.get("lastTransitionTime")).unwrap_or(0);
            let end = match (failed, c["reason"].as_str()) {
                (None, _) => JobEnd::Complete,
                (Some(()), Some("DeadlineExceeded")) => JobEnd::DeadlineExceeded,
                (Some(()), _) => JobEnd::BackoffLimitExceeded,
            };
            Some((end, at))
        });
    JobStatus {
        active: status_count(job, "active"),
        ready: status_count(job, "ready"),
        succeeded: status_count(job, "succeeded"),
        failed: status_count(job, "failed"),
        start_time: seconds(job.at("/status/startTime")),
        ended,
    }
}

fn status_json(status: &JobStatus, suspended: bool) -> Value {
    let mut value = json!({
        "active": status.active,
        "ready": status.ready,
        "succeeded": status.succeeded,
        "failed": status.failed,
    });
    if let Some(start) = status.start_time {
        value["startTime"] = json!(rfc3339(start));
    }
    let mut conditions = Vec::new();
    if suspended && status.ended.is_none() {
        conditions.push(json!({"type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended"}));
    }
    if let Some((end, at)) = status.ended {
        let time = rfc3339(at);
        let (kinds, reason, message): (&[&str], &str, &str) = match end {
            JobEnd::Complete => (
                &["SuccessCriteriaMet", "Complete"],
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
            JobEnd::BackoffLimitExceeded => (
                &["FailureTarget", "Failed"],
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            JobEnd::DeadlineExceeded => (
                &["FailureTarget", "Failed"],
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
        };
        for kind in kinds {
            conditions.push(json!({
                "type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": time, "lastTransitionTime": time,
            }));
        }
        if end == JobEnd::Complete {
            value["completionTime"] = json!(time);
        }
    }
    if !conditions.is_empty() {
        value["conditions"] = json!(conditions);
    }
    value
}

impl Controller for JobController {
    fn name(&self) -> &'static str {
        "job"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::Job, Kind::Pod]
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            Kind::Job => self.jobs.observe(event, dirty),
            Kind::Pod => {
                let owner = self.pods.observe(event, |pod| {
                    (job_pod(pod), text(pod, "/spec/nodeName").is_some())
                });
                if let Some(job) = owner.and_then(|uid| self.jobs.key_of(&uid)) {
                    dirty.mark(job.clone(), || because(event));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        let Some(job) = self.jobs.get(key) else {
            return Reconciled::default();
        };
        if job.at("/metadata/deletionTimestamp").is_some() {
            return Reconciled::default();
        }
        let Ok(job_key) = key_of(job) else {
            return Reconciled::default();
        };
        let uid = text(job, "/metadata/uid").unwrap_or_default().to_string();
        let rv = text(job, "/metadata/resourceVersion")
            .unwrap_or_default()
            .to_string();
        let spec = &job["spec"];
        let pods: Vec<JobPod> = self.pods.of(&uid).map(|(pod, _)| pod.clone()).collect();
        let suspend = spec["suspend"].as_bool().unwrap_or(false);
        let view = JobView {
            name: job_key.name.clone(),
            completions: spec["completions"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok()),
            parallelism: spec["parallelism"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            backoff_limit: spec["backoffLimit"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(DEFAULT_BACKOFF_LIMIT),
            active_deadline_seconds: spec["activeDeadlineSeconds"].as_i64(),
            ttl_seconds_after_finished: spec["ttlSecondsAfterFinished"].as_i64(),
            suspend,
            restart: match spec
                .at("/template/spec/restartPolicy")
                .and_then(Value::as_str)
            {
                Some("OnFailure") => JobRestart::OnFailure,
                _ => JobRestart::Never,
            },
            status: parse_status(job),
            pods,
        };
        let decision = decide_job(&view, now.as_second(), seed(&[&uid, &rv]));
        let namespace = job_key.namespace.clone();
        let pod_key = |name: &str| shipshape_api::ObjectKey {
            kind: Kind::Pod,
            namespace: namespace.clone(),
            name: name.to_string(),
        };
        let labels = [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", job_key.name.as_str()),
            ("controller-uid", uid.as_str()),
            ("job-name", job_key.name.as_str()),
        ];
        let precondition = rv.parse().ok().map(Precondition::ResourceVersion);
        let mut batches = Vec::new();
        let mut created = Vec::new();
        let mut creates = Vec::new();
        let mut deleted = Vec::new();
        let mut deletes = Vec::new();
        let mut counting = Vec::new();
        let mut events = Vec::new();
        // Built on the first create: one template expansion, then a copy per pod.
        let mut template: Option<PodTemplate> = None;
        for action in decision.actions {
            match action {
                JobAction::CreatePod { name } => {
                    creates.push(Write::Create {
                        object: template
                            .get_or_insert_with(|| PodTemplate::new(job, &labels))
                            .pod(&name),
                        applied: None,
                        application: None,
                    });
                    created.push(name);
                }
                JobAction::DeletePod { name, uid } => {
                    let bound = self
                        .pods
                        .get(&store::storage_key(&pod_key(&name)))
                        .is_some_and(|(_, bound)| *bound);
                    deletes.push(Write::delete(
                        pod_key(&name),
                        Precondition::Uid(uid),
                        bound,
                        number(job, "/spec/template/spec/terminationGracePeriodSeconds")
                            .unwrap_or(30),
                    ));
                    deleted.push(name);
                }
                JobAction::CountPods(pods) => {
                    for (name, uid) in pods {
                        counting.push(Write::Patch {
                            key: pod_key(&name),
                            precondition: Some(Precondition::Uid(uid)),
                            patch: json!({"metadata": {"annotations": {COUNTED_ANNOTATION: "true"}}}),
                        });
                    }
                }
                JobAction::UpdateStatus(status) => {
                    if status.ended.is_some() && view.status.ended.is_none() {
                        events.push(match status.ended {
                            Some((JobEnd::Complete, _)) => ("Normal", "Completed", "Job completed".to_string()),
                            Some((JobEnd::DeadlineExceeded, _)) => ("Warning", "DeadlineExceeded", "Job was active longer than specified deadline".to_string()),
                            _ => ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit".to_string()),
                        });
                    }
                    counting.push(Write::UpdateStatus {
                        key: job_key.clone(),
                        precondition: precondition.clone(),
                        status: status_json(&status, suspend),
                    });
                }
                JobAction::DeleteJob => batches.push(Batch {
                    writes: vec![Write::Delete {
                        key: job_key.clone(),
                        precondition: Precondition::Uid(uid.clone()),
                    }],
                    audit: Some(AuditEntry {
                        actor: "controller/job".into(),
                        action: "delete-finished-job".into(),
                        subject: key.to_string(),
                        details: json!({"ttlSecondsAfterFinished": spec["ttlSecondsAfterFinished"]}),
                    }),
                }),
            }
        }
        // Counting and the status that counts go together, or not at all.
        if !counting.is_empty() {
            for (kind, reason, message) in events {
                counting.push(event(COMPONENT, job, kind, reason, message, now));
            }
            batches.insert(
                0,
                Batch {
                    writes: counting,
                    audit: None,
                },
            );
        }
        for (mut writes, names, action, reason, verb) in [
            (
                creates,
                created,
                "create-pods",
                "SuccessfulCreate",
                "Created",
            ),
            (
                deletes,
                deleted,
                "delete-pods",
                "SuccessfulDelete",
                "Deleted",
            ),
        ] {
            if writes.is_empty() {
                continue;
            }
            for name in &names {
                writes.push(event(
                    COMPONENT,
                    job,
                    "Normal",
                    reason,
                    format!("{verb} pod: {name}"),
                    now,
                ));
            }
            batches.push(Batch {
                writes,
                audit: Some(AuditEntry {
                    actor: "controller/job".into(),
                    action: action.into(),
                    subject: key.to_string(),
                    details: json!({ "pods": names }),
                }),
            });
        }
        Reconciled {
            batches,
            requeue_after: decision
                .requeue_after
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(1))),
        }
    }
}
