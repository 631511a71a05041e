//! Application health, as Argo CD assesses it: each object Git manages gets a [`Health`] from
//! its own status (the rules of Argo CD's gitops-engine and its built-in CronJob check), and an
//! application is as healthy as its worst object.
//!
//! Sync says whether the cluster holds what Git declares; health says whether what it holds
//! works. Both come from the store alone, so a stopped cluster can still answer "how was it?".
//! Pure: no I/O, no clock.

use shipshape_api::pointer::At;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shipshape_api::{Kind, ObjectKey};

use crate::controllers::{condition, condition_is_true, number, text};
use crate::gitsync::ApplicationStatus;
use crate::store::StoredObject;

/// Ordered from best to worst, as Argo CD orders them (an application is as healthy as its
/// worst object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Health {
    /// Doing what it was declared to do.
    Healthy,
    /// Paused on purpose (a paused Deployment, a suspended Job): nothing is wrong, nothing moves.
    Suspended,
    /// Not there yet, but still on its way (a rollout, a pending pod, an unbound claim).
    Progressing,
    /// Declared but absent. Kept for Argo's order; the store holds only objects that exist.
    Missing,
    /// Failed, or will not get there without help (a crash loop, a missed progress deadline).
    Degraded,
    /// Its status says something no rule understands.
    Unknown,
}

impl Health {
    /// The name Argo CD shows (`Healthy`, `Progressing`, …), for tables and JSON alike.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Suspended => "Suspended",
            Health::Progressing => "Progressing",
            Health::Missing => "Missing",
            Health::Degraded => "Degraded",
            Health::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object's health and why, so a user can tell what to look at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// How it is.
    pub health: Health,
    /// Why, in Argo CD's wording where it has one; may be empty when Healthy.
    pub message: String,
}

impl Assessment {
    fn new(health: Health, message: impl Into<String>) -> Self {
        Self {
            health,
            message: message.into(),
        }
    }
}

/// The health of one object, from its status as the controllers and kubelets report it.
///
/// `None`: the kind has no health of its own (ConfigMap, Secret, Namespace, ServiceAccount, …),
/// so it does not affect its application. An object being deleted is Progressing whatever its
/// kind, as in Argo CD. Fields Kubernetes defaults are read with their defaults (one replica,
/// `restartPolicy: Always`, a new pod or claim `Pending`), since the store keeps manifests as
/// written.
pub fn assess(kind: Kind, object: &Value) -> Option<Assessment> {
    if object
        .at("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Some(Assessment::new(Health::Progressing, "Pending deletion"));
    }
    Some(match kind {
        Kind::Deployment => deployment(object),
        Kind::ReplicaSet | Kind::ReplicationController => replica_set(object),
        Kind::StatefulSet => stateful_set(object),
        Kind::DaemonSet => daemon_set(object),
        Kind::Pod => pod(object),
        Kind::Job => job(object),
        Kind::CronJob => cron_job(object),
        Kind::PersistentVolumeClaim => claim(object),
        Kind::Service => service(object),
        Kind::Ingress => ingress(object),
        // HorizontalPodAutoscalers and PodDisruptionBudgets are judged by status conditions
        // nothing in shipshape writes: Argo's checks would leave them Progressing forever.
        _ => return None,
    })
}

/// An application's health: its worst object's, with that object named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationHealth {
    /// The worst health among the application's objects.
    pub status: Health,
    /// `Deployment demo/web: <why>` for the worst object; empty when Healthy.
    pub message: String,
}

/// Healthy: what an application with nothing to assess is.
impl Default for ApplicationHealth {
    fn default() -> Self {
        Self {
            status: Health::Healthy,
            message: String::new(),
        }
    }
}

/// Each application's health, from the objects it manages (those with `application` set, like
/// Argo CD's direct resources; what they own, such as a Deployment's pods, counts through them).
/// Every application seen is in the map, Healthy when none of its objects has a health. Ties
/// for worst go to the first object in key order, so the message does not flicker.
pub fn applications<'a>(
    objects: impl IntoIterator<Item = (&'a ObjectKey, &'a StoredObject)>,
) -> BTreeMap<String, ApplicationHealth> {
    let mut worst: BTreeMap<&'a str, Option<(&'a ObjectKey, Assessment)>> = BTreeMap::new();
    for (key, stored) in objects {
        let Some(application) = stored.application.as_deref() else {
            continue;
        };
        let entry = worst.entry(application).or_default();
        let Some(assessment) = assess(key.kind, &stored.object) else {
            continue;
        };
        let replaces = entry.as_ref().is_none_or(|(worst_key, worst)| {
            (assessment.health, std::cmp::Reverse(key))
                > (worst.health, std::cmp::Reverse(*worst_key))
        });
        if replaces {
            *entry = Some((key, assessment));
        }
    }
    worst
        .into_iter()
        .map(|(application, worst)| {
            let health = match worst {
                Some((key, assessment)) if assessment.health != Health::Healthy => {
                    let why = if assessment.message.is_empty() {
                        assessment.health.as_str()
                    } else {
                        &assessment.message
                    };
                    ApplicationHealth {
                        status: assessment.health,
                        message: format!("{key}: {why}"),
                    }
                }
                _ => ApplicationHealth::default(),
            };
            (application.to_string(), health)
        })
        .collect()
}

/// An application's sync status as JSON with its `health` beside the other fields: one shape
/// for the API and `shipshape status -o json`, whether the cluster runs or not.
pub fn status_json(status: &ApplicationStatus, health: &ApplicationHealth) -> Value {
    let mut value = serde_json::json!(status);
    value["health"] = serde_json::json!(health);
    value
}

fn flag(object: &Value, pointer: &str) -> bool {
    object.at(pointer).and_then(Value::as_bool) == Some(true)
}

/// A count from the status; absent counts are zero, as Kubernetes omits them.
fn count(object: &Value, field: &str) -> i64 {
    number(object, &format!("/status/{field}")).unwrap_or(0)
}

fn name(object: &Value) -> &str {
    text(object, "/metadata/name").unwrap_or_default()
}

/// Whether the controller has seen the newest spec (an absent generation counts as seen).
fn observed(object: &Value) -> bool {
    number(object, "/metadata/generation").unwrap_or(0) <= count(object, "observedGeneration")
}

fn deployment(deployment: &Value) -> Assessment {
    if flag(deployment, "/spec/paused") {
        return Assessment::new(Health::Suspended, "Deployment is paused");
    }
    if !observed(deployment) {
        return Assessment::new(
            Health::Progressing,
            "Waiting for rollout to finish: observed deployment generation less than desired generation",
        );
    }
    let desired = number(deployment, "/spec/replicas").unwrap_or(1);
    let replicas = count(deployment, "replicas");
    let updated = count(deployment, "updatedReplicas");
    let available = count(deployment, "availableReplicas");
    let deadline_exceeded = condition(deployment, "Progressing")
        .and_then(|c| c.get("reason"))
        .and_then(Value::as_str)
        == Some("ProgressDeadlineExceeded");
    if deadline_exceeded {
        Assessment::new(
            Health::Degraded,
            format!(
                "Deployment \"{}\" exceeded its progress deadline",
                name(deployment)
            ),
        )
    } else if updated < desired {
        Assessment::new(
            Health::Progressing,
            format!(
                "Waiting for rollout to finish: {updated} out of {desired} new replicas have been updated..."
            ),
        )
    } else if replicas > updated {
        Assessment::new(
            Health::Progressing,
            format!(
                "Waiting for rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            ),
        )
    } else if available < updated {
        Assessment::new(
            Health::Progressing,
            format!(
                "Waiting for rollout to finish: {available} of {updated} updated replicas are available..."
            ),
        )
    } else {
        Assessment::new(Health::Healthy, "")
    }
}

fn replica_set(set: &Value) -> Assessment {
    if !observed(set) {
        return Assessment::new(
            Health::Progressing,
            "Waiting for rollout to finish: observed replica set generation less than desired generation",
        );
    }
    if condition_is_true(set, "ReplicaFailure") {
        let message = condition(set, "ReplicaFailure")
            .and_then(|c| text(c, "/message"))
            .unwrap_or_default();
        return Assessment::new(Health::Degraded, message);
    }
    let desired = number(set, "/spec/replicas").unwrap_or(1);
    let available = count(set, "availableReplicas");
    if available < desired {
        return Assessment::new(
            Health::Progressing,
            format!(
                "Waiting for rollout to finish: {available} out of {desired} new replicas are available..."
            ),
        );
    }
    Assessment::new(Health::Healthy, "")
}

fn stateful_set(set: &Value) -> Assessment {
    let observed_generation = count(set, "observedGeneration");
    if observed_generation == 0 || !observed(set) {
        return Assessment::new(
            Health::Progressing,
            "Waiting for statefulset spec update to be observed...",
        );
    }
    let desired = number(set, "/spec/replicas").unwrap_or(1);
    let ready = count(set, "readyReplicas");
    if ready < desired {
        return Assessment::new(
            Health::Progressing,
            format!("Waiting for {} pods to be ready...", desired - ready),
        );
    }
    let updated = count(set, "updatedReplicas");
    // Kubernetes defaults an absent strategy to RollingUpdate with partition 0, but leaves an
    // explicit RollingUpdate without `rollingUpdate` as it is; Argo reads the defaulted object.
    let strategy = text(set, "/spec/updateStrategy/type");
    let rolling_update = set
        .at("/spec/updateStrategy/rollingUpdate")
        .filter(|r| !r.is_null());
    let partition = match (strategy, rolling_update) {
        (None, _) => Some(0),
        (Some("RollingUpdate"), Some(rolling)) => Some(number(rolling, "/partition").unwrap_or(0)),
        _ => None,
    };
    if let Some(partition) = partition {
        let wanted = desired - partition;
        return if updated < wanted {
            Assessment::new(
                Health::Progressing,
                format!(
                    "Waiting for partitioned roll out to finish: {updated} out of {wanted} new pods have been updated..."
                ),
            )
        } else {
            Assessment::new(
                Health::Healthy,
                format!("partitioned roll out complete: {updated} new pods have been updated..."),
            )
        };
    }
    if strategy == Some("OnDelete") {
        return Assessment::new(
            Health::Healthy,
            format!("statefulset has {ready} ready pods"),
        );
    }
    let current_revision = text(set, "/status/currentRevision").unwrap_or_default();
    let update_revision = text(set, "/status/updateRevision").unwrap_or_default();
    if update_revision != current_revision {
        return Assessment::new(
            Health::Progressing,
            format!(
                "waiting for statefulset rolling update to complete {updated} pods at revision {update_revision}..."
            ),
        );
    }
    Assessment::new(
        Health::Healthy,
        format!(
            "statefulset rolling update complete {} pods at revision {current_revision}...",
            count(set, "currentReplicas")
        ),
    )
}

fn daemon_set(set: &Value) -> Assessment {
    if !observed(set) {
        return Assessment::new(
            Health::Progressing,
            "Waiting for rollout to finish: observed daemon set generation less than desired generation",
        );
    }
    let desired = count(set, "desiredNumberScheduled");
    let updated = count(set, "updatedNumberScheduled");
    let available = count(set, "numberAvailable");
    let name = name(set);
    if text(set, "/spec/updateStrategy/type") == Some("OnDelete") {
        Assessment::new(
            Health::Healthy,
            format!("daemon set {updated} out of {desired} new pods have been updated"),
        )
    } else if updated < desired {
        Assessment::new(
            Health::Progressing,
            format!(
                "Waiting for daemon set \"{name}\" rollout to finish: {updated} out of {desired} new pods have been updated..."
            ),
        )
    } else if available < desired {
        Assessment::new(
            Health::Progressing,
            format!(
                "Waiting for daemon set \"{name}\" rollout to finish: {available} of {desired} updated pods are available..."
            ),
        )
    } else {
        Assessment::new(Health::Healthy, "")
    }
}

/// Waiting reasons that will not clear without help. Argo's rule (`Err…`, `…Error`,
/// `…BackOff`) plus `InvalidImageName`, which our kubelet reports and which fits none of them.
fn stuck(reason: &str) -> bool {
    reason.starts_with("Err")
        || reason.ends_with("Error")
        || reason.ends_with("BackOff")
        || reason == "InvalidImageName"
}

/// Why a terminated container failed, in Argo's words; empty if it did not.
fn failure(terminated: &Value, container: &str) -> Option<String> {
    let message = text(terminated, "/message").unwrap_or_default();
    let reason = text(terminated, "/reason").unwrap_or_default();
    let code = number(terminated, "/exitCode").unwrap_or(0);
    if !message.is_empty() {
        Some(message.to_string())
    } else if reason == "OOMKilled" {
        Some(reason.to_string())
    } else if code != 0 {
        Some(format!(
            "container \"{container}\" failed with exit code {code}"
        ))
    } else {
        None
    }
}

fn pod(pod: &Value) -> Assessment {
    let statuses = |field: &str| -> Vec<&Value> {
        pod.at(&format!("/status/{field}"))
            .and_then(Value::as_array)
            .map(|list| list.iter().collect())
            .unwrap_or_default()
    };
    let init = statuses("initContainerStatuses");
    let containers = statuses("containerStatuses");
    let message = text(pod, "/status/message").unwrap_or_default();
    let always = text(pod, "/spec/restartPolicy").is_none_or(|p| p == "Always");
    // Argo looks only at pods that restart Always: a hook pod must not fail its sync early. We
    // have no hooks, and an image that cannot be pulled stays stuck whatever the policy.
    let stuck: Vec<String> = init
        .iter()
        .chain(&containers)
        .filter_map(|status| {
            let waiting = status.at("/state/waiting")?;
            let reason = text(waiting, "/reason").filter(|r| stuck(r))?;
            Some(match text(waiting, "/message").filter(|m| !m.is_empty()) {
                Some(why) => format!("{reason}: {why}"),
                None => reason.to_string(),
            })
        })
        .collect();
    if !stuck.is_empty() {
        return Assessment::new(Health::Degraded, stuck.join(", "));
    }
    let first_failure = |state: &str| {
        init.iter().chain(&containers).find_map(|status| {
            let terminated = status.at(&format!("/{state}/terminated"))?;
            failure(terminated, text(status, "/name").unwrap_or_default())
        })
    };
    let or_failure = |state: &str| {
        if message.is_empty() {
            first_failure(state).unwrap_or_default()
        } else {
            message.to_string()
        }
    };
    match text(pod, "/status/phase").unwrap_or("Pending") {
        "Pending" => Assessment::new(Health::Progressing, message),
        "Succeeded" => Assessment::new(Health::Healthy, message),
        "Failed" => Assessment::new(Health::Degraded, or_failure("state")),
        "Running" if always => {
            if condition_is_true(pod, "Ready") {
                Assessment::new(Health::Healthy, message)
            } else if containers
                .iter()
                .any(|c| c.at("/lastState/terminated").is_some())
            {
                // Not ready and restarted: it ran and failed; back-off may follow.
                Assessment::new(Health::Degraded, or_failure("lastState"))
            } else {
                Assessment::new(Health::Progressing, message)
            }
        }
        // A pod that does not restart Always has a finite life: it is done only once it exits.
        "Running" => Assessment::new(Health::Progressing, message),
        _ => Assessment::new(Health::Unknown, message),
    }
}

fn job(job: &Value) -> Assessment {
    let ended = |kind: &str| {
        condition_is_true(job, kind).then(|| {
            condition(job, kind)
                .and_then(|c| text(c, "/message"))
                .unwrap_or_default()
                .to_string()
        })
    };
    if let Some(message) = ended("Failed") {
        Assessment::new(Health::Degraded, message)
    } else if let Some(message) = ended("Complete") {
        Assessment::new(Health::Healthy, message)
    } else if let Some(message) = ended("Suspended") {
        Assessment::new(Health::Suspended, message)
    } else if flag(job, "/spec/suspend") {
        // Suspended in Git; the controller has not said so yet.
        Assessment::new(Health::Suspended, "Job suspended")
    } else {
        Assessment::new(Health::Progressing, "Job is still running")
    }
}

/// Argo CD 3.2's CronJob check. A suspended CronJob is Healthy, not Suspended (argo-cd#24428:
/// it would mark the whole application Suspended); while a Job runs, or before one ever
/// succeeded, the status cannot tell failure from progress, so it is Healthy too.
fn cron_job(cron_job: &Value) -> Assessment {
    if flag(cron_job, "/spec/suspend") {
        return Assessment::new(Health::Healthy, "CronJob is Suspended");
    }
    // Kubernetes always returns a status (`{}` when never scheduled); an absent one is that.
    let Some(scheduled) = text(cron_job, "/status/lastScheduleTime") else {
        return Assessment::new(Health::Healthy, "CronJob has not been scheduled yet");
    };
    let Some(succeeded) = text(cron_job, "/status/lastSuccessfulTime") else {
        return Assessment::new(
            Health::Healthy,
            "The CronJob never completed successfully. It may not be healthy",
        );
    };
    let active = cron_job
        .at("/status/active")
        .and_then(Value::as_array)
        .is_some_and(|jobs| !jobs.is_empty());
    if active {
        return Assessment::new(
            Health::Healthy,
            "The job is running. Its last execution may not have been successful",
        );
    }
    let before = match (
        succeeded.parse::<jiff::Timestamp>(),
        scheduled.parse::<jiff::Timestamp>(),
    ) {
        (Ok(succeeded), Ok(scheduled)) => succeeded < scheduled,
        _ => succeeded < scheduled,
    };
    if before {
        Assessment::new(
            Health::Degraded,
            "CronJob has not completed its last execution successfully",
        )
    } else {
        Assessment::new(
            Health::Healthy,
            "CronJob has completed its last execution successfully",
        )
    }
}

fn claim(claim: &Value) -> Assessment {
    // Kubernetes creates a claim Pending; ours may not have a phase until the binder looks.
    match text(claim, "/status/phase").unwrap_or("Pending") {
        "Bound" => Assessment::new(Health::Healthy, ""),
        "Pending" => Assessment::new(Health::Progressing, "PersistentVolumeClaim is Pending"),
        "Lost" => Assessment::new(Health::Degraded, "PersistentVolumeClaim is Lost"),
        other => Assessment::new(Health::Unknown, format!("PersistentVolumeClaim is {other}")),
    }
}

fn has_address(object: &Value) -> bool {
    object
        .at("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|ingress| !ingress.is_empty())
}

fn service(service: &Value) -> Assessment {
    if text(service, "/spec/type") == Some("LoadBalancer") && !has_address(service) {
        Assessment::new(Health::Progressing, "Waiting for a load-balancer address")
    } else {
        Assessment::new(Health::Healthy, "")
    }
}

fn ingress(ingress: &Value) -> Assessment {
    if has_address(ingress) {
        Assessment::new(Health::Healthy, "")
    } else {
        Assessment::new(
            Health::Progressing,
            "Waiting for an address in status.loadBalancer.ingress",
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn health(kind: Kind, object: Value) -> (Health, String) {
        let assessment = assess(kind, &object).expect("a kind with health");
        (assessment.health, assessment.message)
    }

    fn converged_deployment() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "demo", "generation": 2},
            "spec": {"replicas": 2},
            "status": {
                "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                "readyReplicas": 2, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
            },
        })
    }

    #[test]
    fn a_converged_deployment_is_healthy() {
        assert_eq!(
            health(Kind::Deployment, converged_deployment()),
            (Health::Healthy, String::new())
        );
    }

    #[test]
    fn a_deployment_without_replicas_or_generation_wants_one_replica() {
        let mut deployment = json!({"metadata": {"name": "web"}, "spec": {}, "status": {}});
        assert_eq!(
            health(Kind::Deployment, deployment.clone()).1,
            "Waiting for rollout to finish: 0 out of 1 new replicas have been updated..."
        );
        deployment["status"] = json!({"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        assert_eq!(health(Kind::Deployment, deployment).0, Health::Healthy);
    }

    #[test]
    fn a_rollout_in_progress_says_how_far_it_got() {
        let mut deployment = converged_deployment();
        deployment["status"]["updatedReplicas"] = json!(1);
        assert_eq!(
            health(Kind::Deployment, deployment.clone()),
            (
                Health::Progressing,
                "Waiting for rollout to finish: 1 out of 2 new replicas have been updated..."
                    .into()
            )
        );
        deployment["status"]["updatedReplicas"] = json!(2);
        deployment["status"]["replicas"] = json!(3);
        assert_eq!(
            health(Kind::Deployment, deployment.clone()).1,
            "Waiting for rollout to finish: 1 old replicas are pending termination..."
        );
        deployment["status"]["replicas"] = json!(2);
        deployment["status"]["availableReplicas"] = json!(1);
        assert_eq!(
            health(Kind::Deployment, deployment).1,
            "Waiting for rollout to finish: 1 of 2 updated replicas are available..."
        );
    }

    #[test]
    fn a_deployment_change_not_yet_observed_is_progressing() {
        let mut deployment = converged_deployment();
        deployment["metadata"]["generation"] = json!(3);
        assert_eq!(
            health(Kind::Deployment, deployment),
            (
                Health::Progressing,
                "Waiting for rollout to finish: observed deployment generation less than desired generation".into()
            )
        );
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_is_degraded() {
        let mut deployment = converged_deployment();
        deployment["status"]["updatedReplicas"] = json!(1);
        deployment["status"]["conditions"][0]["reason"] = json!("ProgressDeadlineExceeded");
        assert_eq!(
            health(Kind::Deployment, deployment),
            (
                Health::Degraded,
                "Deployment \"web\" exceeded its progress deadline".into()
            )
        );
    }

    #[test]
    fn a_paused_deployment_is_suspended() {
        let mut deployment = converged_deployment();
        deployment["spec"]["paused"] = json!(true);
        assert_eq!(health(Kind::Deployment, deployment).0, Health::Suspended);
    }

    #[test]
    fn a_replica_set_is_healthy_once_its_replicas_are_available() {
        let mut set = json!({
            "metadata": {"generation": 1}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "replicas": 3, "availableReplicas": 2},
        });
        assert_eq!(
            health(Kind::ReplicaSet, set.clone()),
            (
                Health::Progressing,
                "Waiting for rollout to finish: 2 out of 3 new replicas are available...".into()
            )
        );
        set["status"]["availableReplicas"] = json!(3);
        assert_eq!(health(Kind::ReplicaSet, set.clone()).0, Health::Healthy);
        set["status"]["conditions"] =
            json!([{"type": "ReplicaFailure", "status": "True", "message": "quota"}]);
        assert_eq!(
            health(Kind::ReplicaSet, set),
            (Health::Degraded, "quota".into())
        );
    }

    fn converged_stateful_set() -> Value {
        json!({
            "metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 3},
            "status": {
                "observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
                "availableReplicas": 3, "updatedReplicas": 3, "currentReplicas": 3,
                "currentRevision": "db-abc", "updateRevision": "db-abc",
            },
        })
    }

    #[test]
    fn a_converged_stateful_set_is_healthy() {
        assert_eq!(
            health(Kind::StatefulSet, converged_stateful_set()),
            (
                Health::Healthy,
                "partitioned roll out complete: 3 new pods have been updated...".into()
            )
        );
    }

    #[test]
    fn a_stateful_set_waits_for_its_pods_and_its_partition() {
        let mut set = converged_stateful_set();
        set["status"]["observedGeneration"] = json!(0);
        assert_eq!(
            health(Kind::StatefulSet, set.clone()).1,
            "Waiting for statefulset spec update to be observed..."
        );
        set["status"]["observedGeneration"] = json!(1);
        set["status"]["readyReplicas"] = json!(1);
        assert_eq!(
            health(Kind::StatefulSet, set.clone()),
            (
                Health::Progressing,
                "Waiting for 2 pods to be ready...".into()
            )
        );
        set["status"]["readyReplicas"] = json!(3);
        set["status"]["updatedReplicas"] = json!(1);
        set["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}});
        assert_eq!(
            health(Kind::StatefulSet, set.clone()),
            (
                Health::Progressing,
                "Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated..."
                    .into()
            )
        );
        set["status"]["updatedReplicas"] = json!(2);
        assert_eq!(health(Kind::StatefulSet, set).0, Health::Healthy);
    }

    #[test]
    fn a_stateful_set_compares_revisions_without_a_partition_and_ignores_them_on_delete() {
        let mut set = converged_stateful_set();
        set["spec"]["updateStrategy"] = json!({"type": "RollingUpdate"});
        set["status"]["updateRevision"] = json!("db-def");
        set["status"]["updatedReplicas"] = json!(1);
        assert_eq!(
            health(Kind::StatefulSet, set.clone()),
            (
                Health::Progressing,
                "waiting for statefulset rolling update to complete 1 pods at revision db-def..."
                    .into()
            )
        );
        set["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert_eq!(
            health(Kind::StatefulSet, set),
            (Health::Healthy, "statefulset has 3 ready pods".into())
        );
    }

    #[test]
    fn a_daemon_set_waits_for_updated_and_available_pods() {
        let mut set = json!({
            "metadata": {"name": "agent", "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 2,
                       "updatedNumberScheduled": 1, "numberAvailable": 1},
        });
        assert_eq!(
            health(Kind::DaemonSet, set.clone()),
            (
                Health::Progressing,
                "Waiting for daemon set \"agent\" rollout to finish: 1 out of 2 new pods have been updated..."
                    .into()
            )
        );
        set["status"]["updatedNumberScheduled"] = json!(2);
        assert_eq!(
            health(Kind::DaemonSet, set.clone()).1,
            "Waiting for daemon set \"agent\" rollout to finish: 1 of 2 updated pods are available..."
        );
        set["status"]["numberAvailable"] = json!(2);
        assert_eq!(health(Kind::DaemonSet, set.clone()).0, Health::Healthy);
        set["status"]["updatedNumberScheduled"] = json!(0);
        set["spec"] = json!({"updateStrategy": {"type": "OnDelete"}});
        assert_eq!(health(Kind::DaemonSet, set).0, Health::Healthy);
    }

    fn running_pod(ready: bool) -> Value {
        let truth = if ready { "True" } else { "False" };
        json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "web"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": truth}],
                "containerStatuses": [{"name": "web", "ready": ready, "state": {"running": {}}}],
            },
        })
    }

    #[test]
    fn a_ready_pod_is_healthy_and_a_starting_one_progressing() {
        assert_eq!(health(Kind::Pod, running_pod(true)).0, Health::Healthy);
        assert_eq!(health(Kind::Pod, running_pod(false)).0, Health::Progressing);
        assert_eq!(
            health(Kind::Pod, json!({"metadata": {}})).0,
            Health::Progressing
        );
    }

    #[test]
    fn a_crash_looping_pod_is_degraded_with_the_reason() {
        let mut pod = running_pod(false);
        pod["status"]["containerStatuses"][0]["state"] = json!({"waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 10s restarting failed container=web",
        }});
        pod["status"]["containerStatuses"][0]["lastState"] = json!({"terminated": {"exitCode": 1}});
        assert_eq!(
            health(Kind::Pod, pod),
            (
                Health::Degraded,
                "CrashLoopBackOff: back-off 10s restarting failed container=web".into()
            )
        );
    }

    #[test]
    fn a_pending_pod_that_cannot_pull_its_image_is_degraded_whatever_its_restart_policy() {
        let pod = json!({
            "spec": {"restartPolicy": "Never"},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "web", "state": {"waiting": {"reason": "ErrImageNeverPull"}}},
            ]},
        });
        assert_eq!(
            health(Kind::Pod, pod),
            (Health::Degraded, "ErrImageNeverPull".into())
        );
        let creating = json!({"status": {"phase": "Pending", "containerStatuses": [
            {"name": "web", "state": {"waiting": {"reason": "ContainerCreating"}}},
        ]}});
        assert_eq!(health(Kind::Pod, creating).0, Health::Progressing);
    }

    #[test]
    fn a_restarted_pod_that_is_not_ready_is_degraded() {
        let mut pod = running_pod(false);
        pod["status"]["containerStatuses"][0]["lastState"] =
            json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}});
        assert_eq!(
            health(Kind::Pod, pod),
            (Health::Degraded, "OOMKilled".into())
        );
    }

    #[test]
    fn a_finished_pod_is_healthy_or_degraded_by_its_phase() {
        let succeeded = json!({"status": {"phase": "Succeeded"}});
        assert_eq!(health(Kind::Pod, succeeded).0, Health::Healthy);
        let failed = json!({"status": {"phase": "Failed", "containerStatuses": [
            {"name": "task", "state": {"terminated": {"exitCode": 2}}},
        ]}});
        assert_eq!(
            health(Kind::Pod, failed),
            (
                Health::Degraded,
                "container \"task\" failed with exit code 2".into()
            )
        );
        let mut once = running_pod(true);
        once["spec"]["restartPolicy"] = json!("OnFailure");
        assert_eq!(health(Kind::Pod, once).0, Health::Progressing);
    }

    #[test]
    fn a_job_is_judged_by_its_conditions() {
        let running = json!({"status": {"active": 1}});
        assert_eq!(
            health(Kind::Job, running),
            (Health::Progressing, "Job is still running".into())
        );
        let complete = json!({"status": {"conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True", "message": "Reached expected number of succeeded pods"},
        ]}});
        assert_eq!(health(Kind::Job, complete).0, Health::Healthy);
        let failed = json!({"status": {"conditions": [
            {"type": "Failed", "status": "True", "message": "Job has reached the specified backoff limit"},
        ]}});
        assert_eq!(
            health(Kind::Job, failed),
            (
                Health::Degraded,
                "Job has reached the specified backoff limit".into()
            )
        );
        let suspended = json!({"spec": {"suspend": true}});
        assert_eq!(health(Kind::Job, suspended).0, Health::Suspended);
    }

    #[test]
    fn a_cron_job_is_degraded_only_when_its_last_run_failed() {
        let never = json!({"spec": {"schedule": "* * * * *"}});
        assert_eq!(
            health(Kind::CronJob, never),
            (Health::Healthy, "CronJob has not been scheduled yet".into())
        );
        let failed = json!({"status": {
            "lastScheduleTime": "2026-01-01T10:00:00Z",
            "lastSuccessfulTime": "2026-01-01T09:00:00Z",
            "active": [],
        }});
        assert_eq!(
            health(Kind::CronJob, failed.clone()),
            (
                Health::Degraded,
                "CronJob has not completed its last execution successfully".into()
            )
        );
        let mut running = failed.clone();
        running["status"]["active"] = json!([{"name": "backup-1"}]);
        assert_eq!(health(Kind::CronJob, running).0, Health::Healthy);
        let mut succeeded = failed;
        succeeded["status"]["lastSuccessfulTime"] = json!("2026-01-01T10:00:05Z");
        assert_eq!(health(Kind::CronJob, succeeded).0, Health::Healthy);
        let never_succeeded = json!({"status": {"lastScheduleTime": "2026-01-01T10:00:00Z"}});
        assert_eq!(health(Kind::CronJob, never_succeeded).0, Health::Healthy);
        let suspended = json!({"spec": {"suspend": true}});
        assert_eq!(
            health(Kind::CronJob, suspended),
            (Health::Healthy, "CronJob is Suspended".into())
        );
    }

    #[test]
    fn a_claim_follows_its_phase() {
        let phase =
            |p: &str| health(Kind::PersistentVolumeClaim, json!({"status": {"phase": p}})).0;
        assert_eq!(phase("Bound"), Health::Healthy);
        assert_eq!(phase("Pending"), Health::Progressing);
        assert_eq!(phase("Lost"), Health::Degraded);
        assert_eq!(
            health(Kind::PersistentVolumeClaim, json!({"spec": {}})).0,
            Health::Progressing
        );
    }

    #[test]
    fn a_load_balancer_or_ingress_waits_for_its_address() {
        let mut balanced =
            json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert_eq!(
            health(Kind::Service, balanced.clone()).0,
            Health::Progressing
        );
        balanced["status"]["loadBalancer"]["ingress"] = json!([{"ip": "10.0.0.1"}]);
        assert_eq!(health(Kind::Service, balanced.clone()).0, Health::Healthy);
        assert_eq!(
            health(Kind::Service, json!({"spec": {"type": "ClusterIP"}})).0,
            Health::Healthy
        );
        assert_eq!(
            health(Kind::Ingress, json!({"spec": {}})).0,
            Health::Progressing
        );
        assert_eq!(health(Kind::Ingress, balanced).0, Health::Healthy);
    }

    #[test]
    fn configuration_has_no_health_but_anything_being_deleted_is_progressing() {
        assert_eq!(assess(Kind::ConfigMap, &json!({"data": {}})), None);
        assert_eq!(assess(Kind::Namespace, &json!({})), None);
        assert_eq!(
            health(
                Kind::Pod,
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
                       "status": {"phase": "Running"}})
            ),
            (Health::Progressing, "Pending deletion".into())
        );
    }

    fn key(kind: Kind, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: "demo".into(),
            name: name.into(),
        }
    }

    fn stored(object: Value, application: Option<&str>) -> StoredObject {
        StoredObject {
            object,
            applied: None,
            application: application.map(str::to_string),
        }
    }

    #[test]
    fn an_application_is_as_healthy_as_its_worst_object() {
        let mut rolling = converged_deployment();
        rolling["status"]["availableReplicas"] = json!(1);
        let crashing = json!({"status": {"phase": "Running", "containerStatuses": [
            {"name": "web", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
        ]}});
        let objects = [
            (key(Kind::Deployment, "web"), stored(rolling, Some("web"))),
            (key(Kind::ConfigMap, "page"), stored(json!({}), Some("web"))),
            (
                key(Kind::Deployment, "api"),
                stored(converged_deployment(), Some("api")),
            ),
            (
                key(Kind::ConfigMap, "settings"),
                stored(json!({}), Some("config")),
            ),
            // Owned by the Deployment, not managed by Git: it counts through its owner.
            (key(Kind::Pod, "web-1"), stored(crashing, None)),
        ];
        let health = applications(objects.iter().map(|(k, s)| (k, s)));
        assert_eq!(
            health["web"],
            ApplicationHealth {
                status: Health::Progressing,
                message: "Deployment demo/web: Waiting for rollout to finish: 1 of 2 updated replicas are available...".into(),
            }
        );
        assert_eq!(health["api"], ApplicationHealth::default());
        assert_eq!(health["config"], ApplicationHealth::default());
        assert_eq!(health.len(), 3);
    }

    #[test]
    fn ties_for_worst_go_to_the_first_object_by_key() {
        let pending = json!({"status": {"phase": "Pending"}});
        let objects = [
            (key(Kind::Pod, "b"), stored(pending.clone(), Some("web"))),
            (key(Kind::Pod, "a"), stored(pending.clone(), Some("web"))),
            (
                key(Kind::PersistentVolumeClaim, "z"),
                stored(pending, Some("web")),
            ),
        ];
        let forwards = applications(objects.iter().map(|(k, s)| (k, s)));
        let backwards = applications(objects.iter().rev().map(|(k, s)| (k, s)));
        assert_eq!(forwards, backwards);
        // ObjectKey orders by kind first: PersistentVolumeClaim comes before Pod.
        assert_eq!(
            forwards["web"].message,
            "PersistentVolumeClaim demo/z: PersistentVolumeClaim is Pending"
        );
        assert_eq!(
            serde_json::to_value(&forwards["web"]).unwrap(),
            json!({"status": "Progressing", "message": "PersistentVolumeClaim demo/z: PersistentVolumeClaim is Pending"})
        );
    }
}
