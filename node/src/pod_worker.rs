//! One pod on a real node: a task that owns the pod's network namespace and containers, starts
//! them in order (init containers first, each to completion), restarts them as restartPolicy
//! and the back-off in `shipshape_reconciler::kubelet` decide, writes the pod's status, and on
//! deletion stops them gracefully (SIGTERM, the grace period, SIGKILL) and removes every trace
//! before it removes the pod object, so a pod shows Terminating until its containers are gone.
//!
//! Nothing the worker knows is only in memory: on a restart of shipshape it adopts the
//! containers labelled with its pod's uid and the namespace it already wired.

use shipshape_api::pointer::At;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shipshape_actors::Write;
use shipshape_actors::events::event;
use shipshape_actors::store::{Batch, Precondition};
use shipshape_actors::store_actor::{Apply, Get};
use shipshape_api::Kind;
use shipshape_reconciler::kubelet::{
    AfterExit, ContainerNow, Exit, InitProgress, Phase, RestartPolicy, Tally, after_exit,
    exit_reason, pod_phase, tally,
};
use tokio::sync::{mpsc, watch};

use crate::containerd::RuntimeError;
use crate::image::{ResolvedImage, resolve};
use crate::kubelet::{Shared, Stop};
use crate::network::netns_path;
use crate::probe::{self, Probe, ProbeKind};
use crate::registration::{object_key, seconds_text};
use crate::runtime::{TaskState, oom_killed, remove_cgroups};
use crate::spec::{BindMount, plan, runtime_spec};
use shipshape_api::image_ref::ImageRef;
use shipshape_reconciler::images::{ImageStep, PullFailures, PullPolicy, image_step};
use shipshape_registry::Keyring;

/// Labels on every containerd container, so a restarted kubelet knows whose it is.
pub const POD_UID_LABEL: &str = "io.shipshape.pod.uid";
const CONTAINER_NAME_LABEL: &str = "io.shipshape.container.name";
const RESTARTS_LABEL: &str = "io.shipshape.restart-count";
const STARTED_LABEL: &str = "io.shipshape.started-at";

/// How often a container waiting for its image looks again.
const IMAGE_RECHECK: Duration = Duration::from_secs(2);

/// A container log is rotated past this size (the kubelet's containerLogMaxSize, 10 MiB).
const LOG_MAX_BYTES: u64 = 10 << 20;
/// Rotated files kept besides the current one (containerLogMaxFiles 5, counting the current).
const LOG_KEEP: u32 = 4;

/// How often ConfigMap and Secret volumes (and log sizes) are brought up to date while the pod
/// runs.
const VOLUME_REFRESH: Duration = Duration::from_secs(10);

/// The component name on events.
const COMPONENT: &str = "kubelet";

/// The longest a postStart hook may hold a container's start. Kubernetes sets none (an exec
/// hook that never returns leaves the container Waiting for ever, and the pod worker blocked);
/// here a hook still running after this is taken as failed, so a stuck hook costs a restart
/// rather than the pod, and a deletion waits at most this long.
const POST_START_LIMIT: Duration = Duration::from_secs(120);

/// The reason on an evicted pod's status and event.
const EVICTED: &str = "Evicted";

/// The reason on the status and event of a pod past its `activeDeadlineSeconds`.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// The message with [`DEADLINE_EXCEEDED`], in the kubelet's words.
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Why the kubelet ended a pod for good: it stays Failed, its containers stopped, and is never
/// restarted (by this worker, or by the next one, which reads it back from the stored status).
#[derive(Clone, Debug, PartialEq)]
enum Ended {
    /// The eviction manager's verdict (an emptyDir past its `sizeLimit`), with its message.
    Evicted(String),
    /// Active longer than `spec.activeDeadlineSeconds` since `status.startTime`.
    DeadlineExceeded,
}

impl Ended {
    /// The verdict a stored status records, if it records one.
    fn from_status(pod: &Value) -> Option<Self> {
        if text(pod, "/status/phase") != "Failed" {
            return None;
        }
        match text(pod, "/status/reason") {
            EVICTED => Some(Ended::Evicted(text(pod, "/status/message").to_string())),
            DEADLINE_EXCEEDED => Some(Ended::DeadlineExceeded),
            _ => None,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Ended::Evicted(_) => EVICTED,
            Ended::DeadlineExceeded => DEADLINE_EXCEEDED,
        }
    }

    fn message(&self) -> &str {
        match self {
            Ended::Evicted(message) => message,
            Ended::DeadlineExceeded => DEADLINE_MESSAGE,
        }
    }

    /// The event's type: the eviction manager warns; the activeDeadlineHandler records a
    /// Normal event.
    fn event_type(&self) -> &'static str {
        match self {
            Ended::Evicted(_) => "Warning",
            Ended::DeadlineExceeded => "Normal",
        }
    }

    /// How long the containers get to stop: none for a local-storage eviction, the pod's
    /// `terminationGracePeriodSeconds` (default 30) past the deadline.
    fn grace(&self, pod: &Value) -> Duration {
        match self {
            Ended::Evicted(_) => Duration::ZERO,
            Ended::DeadlineExceeded => Duration::from_secs(
                pod.at("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(30),
            ),
        }
    }
}

/// A pod's `spec.activeDeadlineSeconds`, if it sets one (validation keeps it in
/// 1..=2147483647).
pub fn active_deadline(pod: &Value) -> Option<u64> {
    pod.at("/spec/activeDeadlineSeconds")
        .and_then(Value::as_u64)
}

/// How much longer a pod with an [`active_deadline`] of `deadline` seconds may stay active,
/// counted as the kubelet's activeDeadlineHandler does from `start` (the pod's
/// `status.startTime`) to `now`: None without a deadline, zero once the pod has been active
/// that long. The deadline is a user number, so nothing here can overflow; a `start` after
/// `now` counts as no time.
pub fn active_deadline_left(
    deadline: Option<u64>,
    start: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let allowed = Duration::from_secs(deadline?);
    let active = Duration::try_from(now.duration_since(start)).unwrap_or(Duration::ZERO);
    Some(allowed.saturating_sub(active))
}

/// The network namespace name of pod `uid`.
pub fn netns_name(uid: &str) -> String {
    format!("shipshape-{uid}")
}

#[derive(Clone, Debug, PartialEq)]
enum Current {
    Waiting { reason: String, message: String },
    Running { started_at: jiff::Timestamp },
    Exited(Terminated),
}

#[derive(Clone, Debug, PartialEq)]
struct Terminated {
    code: i32,
    reason: &'static str,
    started_at: jiff::Timestamp,
    finished_at: jiff::Timestamp,
}

#[derive(Debug)]
struct Record {
    id: String,
    restarts: u32,
    current: Current,
    last: Option<Terminated>,
    image_id: String,
    /// Bumped at every start so a late exit of an earlier run is not taken for this one.
    generation: u64,
    cgroup: String,
    /// When the last exit was seen (for the back-off clock).
    exited_seen: Option<Instant>,
    /// The probe loops of the current run.
    probes: Vec<tokio::task::JoinHandle<()>>,
    /// The startup probe passed (or there is none).
    started: bool,
    /// Consecutive startup probe failures.
    startup_failures: u32,
    /// The readiness verdict (None: no readiness probe, ready when running).
    ready: Option<Tally>,
    /// Consecutive readiness failures (the first of a run is reported as an event).
    unready_run: u32,
    /// The liveness verdict.
    live: Tally,
}

impl Record {
    /// A record of run `generation` of container `id`, with no probes started yet.
    fn new(id: String, restarts: u32, current: Current, generation: u64) -> Self {
        Record {
            id,
            restarts,
            current,
            last: None,
            image_id: String::new(),
            generation,
            cgroup: String::new(),
            exited_seen: None,
            probes: Vec::new(),
            started: true,
            startup_failures: 0,
            ready: None,
            unready_run: 0,
            live: Tally::starting(true),
        }
    }

    fn stop_probes(&mut self) {
        for probe in self.probes.drain(..) {
            probe.abort();
        }
    }
}

/// A container exit reported by its waiter: container name, generation, exit status.
type ExitNotice = (String, u64, u32);

/// A probe result: container name, generation, which probe, passed, why not.
type ProbeNotice = (String, u64, ProbeKind, bool, String);

struct PodState {
    shared: Arc<Shared>,
    uid: String,
    namespace: String,
    name: String,
    ip: Option<Ipv4Addr>,
    sandbox_error: Option<String>,
    records: BTreeMap<String, Record>,
    images: HashMap<String, ResolvedImage>,
    /// Failed pulls per image (normalised name): how many in a row, and when the last ended.
    pull_failures: HashMap<String, (u32, Instant)>,
    /// (container, imageID) pairs already in the audit history: a digest is recorded once
    /// when it first runs in a container, not at every restart.
    audited_images: std::collections::BTreeSet<(String, String)>,
    start_time: jiff::Timestamp,
    last_status: Option<Value>,
    /// Someone else rewrote the pod's readiness (the node lifecycle controller, while this node
    /// was silent): write the status again even if it has not changed here.
    report_again: bool,
    exits: mpsc::UnboundedSender<ExitNotice>,
    probes: mpsc::UnboundedSender<ProbeNotice>,
    events: Vec<Write>,
    pod: Value,
    /// The size of the data directory's filesystem, measured when first needed.
    ephemeral_storage: tokio::sync::OnceCell<u64>,
    /// Why the kubelet ended the pod, once it did: it stays Failed and is never restarted.
    ended: Option<Ended>,
    /// The pod as stored and what the kubelet wants, followed while a pull runs: deleting the
    /// pod or stopping the kubelet cancels the pull, as the kubelet cancels its sync.
    pods: watch::Receiver<Option<Value>>,
    stop: watch::Receiver<Stop>,
}

/// Adds a pull secret's credentials to `keyring`; why not, in one line without a secret.
fn add_pull_secret(keyring: &mut Keyring, secret: &Value) -> Result<(), String> {
    let kind = text(secret, "/type");
    let (key, docker_config_json) = match kind {
        "kubernetes.io/dockerconfigjson" => (".dockerconfigjson", true),
        "kubernetes.io/dockercfg" => (".dockercfg", false),
        other => {
            return Err(format!(
                "its type is {other:?}, not kubernetes.io/dockerconfigjson"
            ));
        }
    };
    // `data` decoded with `stringData` over it, as the API server merges them.
    let bytes = crate::volumes::object_data(Kind::Secret, secret)
        .remove(key)
        .ok_or_else(|| format!("it has no {key} key"))?;
    let added = if docker_config_json {
        keyring.add_dockerconfigjson(&bytes)
    } else {
        keyring.add_dockercfg(&bytes)
    };
    added.map_err(|e| format!("its {key}: {e}"))
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.at(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Runs pod `uid` until it is deleted (or the kubelet stops), following `pods`.
pub async fn run(shared: Arc<Shared>, uid: String, mut pods: watch::Receiver<Option<Value>>) {
    let (exits, mut exit_rx) = mpsc::unbounded_channel();
    let (probes, mut probe_rx) = mpsc::unbounded_channel();
    let Some(first) = pods.borrow_and_update().clone() else {
        return;
    };
    let mut state = PodState {
        shared: shared.clone(),
        uid: uid.clone(),
        namespace: text(&first, "/metadata/namespace").to_string(),
        name: text(&first, "/metadata/name").to_string(),
        ip: None,
        sandbox_error: None,
        records: BTreeMap::new(),
        images: HashMap::new(),
        pull_failures: HashMap::new(),
        audited_images: std::collections::BTreeSet::new(),
        // The pod's start survives a restart of the kubelet (its active deadline counts from it).
        start_time: text(&first, "/status/startTime")
            .parse()
            .unwrap_or_else(|_| jiff::Timestamp::now()),
        last_status: None,
        report_again: false,
        exits,
        probes,
        events: Vec::new(),
        pod: first,
        ephemeral_storage: tokio::sync::OnceCell::new(),
        ended: None,
        pods: pods.clone(),
        stop: shared.stop.subscribe(),
    };
    state.adopt().await;
    let mut stop = shared.stop.subscribe();
    loop {
        let wanted = *stop.borrow_and_update();
        match wanted {
            Stop::Keep => return,
            Stop::Teardown => {
                state.stop_all(Duration::from_secs(5)).await;
                state.teardown().await;
                return;
            }
            Stop::Run => {}
        }
        let pod = pods.borrow_and_update().clone();
        let wake = match pod {
            None => {
                // Gone from the store without a graceful deletion (forced): stop it briefly.
                state.stop_all(Duration::from_secs(2)).await;
                state.teardown().await;
                return;
            }
            Some(pod) if pod.at("/metadata/deletionTimestamp").is_some() => {
                state.pod = pod.clone();
                let grace = pod
                    .at("/metadata/deletionGracePeriodSeconds")
                    .or_else(|| pod.at("/spec/terminationGracePeriodSeconds"))
                    .and_then(Value::as_u64)
                    .unwrap_or(30);
                state.stop_all(Duration::from_secs(grace)).await;
                state.teardown().await;
                state.finish_deletion().await;
                return;
            }
            Some(pod) => {
                if marked_not_ready_elsewhere(&pod, state.last_status.as_ref()) {
                    state.report_again = true;
                }
                state.pod = pod;
                state.sync().await
            }
        };
        let sleep = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600)));
        tokio::select! {
            changed = pods.changed() => {
                if changed.is_err() {
                    // The kubelet is gone (shutdown): leave the containers to the next one.
                    return;
                }
            }
            Some(notice) = exit_rx.recv() => state.exited(notice),
            Some(notice) = probe_rx.recv() => state.probed(notice).await,
            _ = stop.changed() => {}
            _ = sleep => {}
        }
        // Take every exit that arrived meanwhile before deciding again.
        while let Ok(notice) = exit_rx.try_recv() {
            state.exited(notice);
        }
    }
}

/// Returns once the pod is deleted (or marked for deletion) or the kubelet is told to stop:
/// what a pull waiting on a slow registry must not outlive.
async fn cancelled(mut pods: watch::Receiver<Option<Value>>, mut stop: watch::Receiver<Stop>) {
    loop {
        let deleted = pods
            .borrow_and_update()
            .as_ref()
            .is_none_or(|pod| pod.at("/metadata/deletionTimestamp").is_some());
        if deleted || *stop.borrow_and_update() != Stop::Run {
            return;
        }
        tokio::select! {
            changed = pods.changed() => if changed.is_err() { return },
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

/// Whether the stored pod says NotReady because its node went silent while this kubelet last
/// reported it ready (`last` is the status it wrote).
fn marked_not_ready_elsewhere(pod: &Value, last: Option<&Value>) -> bool {
    let reason = shipshape_actors::controllers::condition(pod, "Ready")
        .and_then(|c| c.get("reason"))
        .and_then(Value::as_str);
    reason == Some(shipshape_actors::controllers::nodes::NODE_NOT_READY)
        && last
            .and_then(|status| status.get("conditions"))
            .and_then(Value::as_array)
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

impl PodState {
    fn pod_dir(&self) -> PathBuf {
        self.shared.config.data_dir.join("pods").join(&self.uid)
    }

    fn log_path(&self, container: &str, restarts: u32) -> PathBuf {
        shipshape_actors::api::logs::pod_log_path(
            &self.shared.config.data_dir,
            &self.uid,
            container,
            u64::from(restarts),
        )
    }

    fn pod_cgroup(&self) -> String {
        format!("/shipshape/{}/{}", self.shared.config.node, self.uid)
    }

    fn policy(&self) -> RestartPolicy {
        RestartPolicy::parse(self.pod.at("/spec/restartPolicy").and_then(Value::as_str))
    }

    fn note(&mut self, kind: &str, reason: &str, message: String) {
        self.events.push(event(
            COMPONENT,
            &self.pod,
            kind,
            reason,
            message,
            jiff::Timestamp::now(),
        ));
    }

    /// Takes over what a previous kubelet left: the namespace's address and our containers.
    async fn adopt(&mut self) {
        let netns = netns_name(&self.uid);
        if netns_path(&netns).exists() {
            self.ip = crate::network::address_in(&netns).await;
        }
        let runtime = &self.shared.runtime;
        let Ok(containers) = runtime.list().await else {
            return;
        };
        for container in containers {
            if container.labels.get(POD_UID_LABEL) != Some(&self.uid) {
                continue;
            }
            let Some(name) = container.labels.get(CONTAINER_NAME_LABEL).cloned() else {
                continue;
            };
            let restarts = container
                .labels
                .get(RESTARTS_LABEL)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let started_at = container
                .labels
                .get(STARTED_LABEL)
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(jiff::Timestamp::now);
            let current = match runtime.state(&container.id).await {
                Ok(TaskState::Running(_)) => Current::Running { started_at },
                Ok(TaskState::Exited(code)) => Current::Exited(Terminated {
                    code: code as i32,
                    reason: exit_reason(code as i32, false),
                    started_at,
                    finished_at: jiff::Timestamp::now(),
                }),
                _ => continue,
            };
            let running = matches!(current, Current::Running { .. });
            let mut record = Record::new(container.id.clone(), restarts, current, 1);
            if !running {
                record.exited_seen = Some(Instant::now());
            } else {
                self.watch_exit(&name, &record);
                if let Some(spec) = self.container_spec(&name) {
                    match self.parse_probes(&spec) {
                        Ok(probes) => self.start_probes(&name, &mut record, probes),
                        Err(message) => tracing::warn!(pod = %self.name, %message, "probes"),
                    }
                }
            }
            tracing::info!(pod = %self.name, container = %name, "adopted a running container");
            self.records.insert(name, record);
        }
    }

    fn watch_exit(&self, name: &str, record: &Record) {
        let runtime = self.shared.runtime.clone();
        let exits = self.exits.clone();
        let id = record.id.clone();
        let generation = record.generation;
        let name = name.to_string();
        tokio::spawn(async move {
            // A failed wait (containerd restarting) is reported as an unknown exit: the
            // worker looks at the task again.
            let status = runtime.wait(&id).await.unwrap_or(255);
            let _ = exits.send((name, generation, status));
        });
    }

    fn exited(&mut self, (name, generation, status): ExitNotice) {
        let Some(record) = self.records.get_mut(&name) else {
            return;
        };
        if record.generation != generation {
            return;
        }
        let Current::Running { started_at } = record.current else {
            return;
        };
        record.stop_probes();
        let code = status as i32;
        let oom = !record.cgroup.is_empty() && oom_killed(&record.cgroup);
        let reason = exit_reason(code, oom);
        record.current = Current::Exited(Terminated {
            code,
            reason,
            started_at,
            finished_at: jiff::Timestamp::now(),
        });
        record.exited_seen = Some(Instant::now());
        if oom {
            let message = format!("Container {name} was OOMKilled (memory limit)");
            self.note("Warning", "OOMKilled", message);
        }
    }

    /// Brings the pod one step closer to its spec; returns when to look again.
    async fn sync(&mut self) -> Option<Duration> {
        // A pod the kubelet ended stays Failed with its containers stopped (it is never
        // restarted); the stored status says so after a restart of shipshape too, and what a
        // previous kubelet left running is stopped.
        if self.ended.is_none()
            && let Some(ended) = Ended::from_status(&self.pod)
        {
            let grace = ended.grace(&self.pod);
            self.ended = Some(ended);
            self.stop_all(grace).await;
        }
        if self.ended.is_some() {
            self.write_status().await;
            return None;
        }
        let mut wake: Option<Duration> = None;
        let soon = |d: Duration, wake: &mut Option<Duration>| {
            *wake = Some(wake.map_or(d, |w| w.min(d)));
        };
        // A pod that already finished on its own keeps its phase; any other is ended at its
        // active deadline, and woken for it.
        if !self.finished() {
            let deadline = active_deadline(&self.pod);
            let left = active_deadline_left(deadline, self.start_time, jiff::Timestamp::now());
            match left {
                Some(left) if left.is_zero() => {
                    self.end(Ended::DeadlineExceeded).await;
                    return None;
                }
                Some(left) => soon(left, &mut wake),
                None => {}
            }
        }
        if self.ip.is_none() {
            match self.sandbox().await {
                Ok(ip) => {
                    self.ip = Some(ip);
                    self.sandbox_error = None;
                }
                Err(error) => {
                    let message = error.to_string();
                    if self.sandbox_error.as_deref() != Some(&message) {
                        self.note("Warning", "FailedCreatePodSandBox", message.clone());
                    }
                    self.sandbox_error = Some(message);
                    soon(Duration::from_secs(5), &mut wake);
                }
            }
        }
        if self.ip.is_some() {
            let policy = self.policy();
            let init: Vec<Value> = self
                .pod
                .at("/spec/initContainers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let containers: Vec<Value> = self
                .pod
                .at("/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            // Init containers restart on failure unless the pod never restarts.
            let init_policy = match policy {
                RestartPolicy::Never => RestartPolicy::Never,
                _ => RestartPolicy::OnFailure,
            };
            let mut progress = InitProgress::Done;
            for (index, container) in init.iter().enumerate() {
                let name = text(container, "/name").to_string();
                let done = matches!(
                    self.records.get(&name).map(|r| &r.current),
                    Some(Current::Exited(t)) if t.code == 0
                );
                if done {
                    continue;
                }
                let step = self
                    .step(container, &format!("i{index}"), init_policy)
                    .await;
                progress = match step {
                    Step::Stays => InitProgress::Failed,
                    Step::Wake(d) => {
                        soon(d, &mut wake);
                        InitProgress::InProgress
                    }
                    Step::Fine => InitProgress::InProgress,
                };
                break;
            }
            if progress == InitProgress::Done {
                for (index, container) in containers.iter().enumerate() {
                    if let Step::Wake(d) = self.step(container, &format!("c{index}"), policy).await
                    {
                        soon(d, &mut wake);
                    }
                }
            }
        }
        // ConfigMap, Secret and downward API volumes follow their sources while the pod runs.
        let projected = self
            .pod
            .at("/spec/volumes")
            .and_then(Value::as_array)
            .is_some_and(|v| {
                v.iter().any(|v| {
                    ["configMap", "secret", "downwardAPI", "projected"]
                        .iter()
                        .any(|source| v.get(source).is_some())
                })
            });
        let running = self
            .records
            .values()
            .any(|r| matches!(r.current, Current::Running { .. }));
        if running {
            if projected && let Err(message) = self.prepare_volumes().await {
                tracing::warn!(pod = %self.name, %message, "refreshing volumes failed");
            }
            self.rotate_logs().await;
            if let Some(message) = self.empty_dir_over_limit().await {
                self.end(Ended::Evicted(message)).await;
                return None;
            }
            soon(VOLUME_REFRESH, &mut wake);
        }
        self.write_status().await;
        wake
    }

    /// Why the pod must be evicted for its disk-backed emptyDirs, if it must: the first one
    /// whose usage (`du`, as the kubelet measures without quotas) is past its `sizeLimit`, in
    /// the eviction manager's words.
    async fn empty_dir_over_limit(&self) -> Option<String> {
        let volumes = self.pod.at("/spec/volumes").and_then(Value::as_array)?;
        for volume in volumes {
            let Some(source) = volume.get("emptyDir") else {
                continue;
            };
            // A tmpfs is its own limit: writes past its size fail.
            if source.get("medium").and_then(Value::as_str) == Some("Memory") {
                continue;
            }
            let Some(limit_value) = source.get("sizeLimit") else {
                continue;
            };
            let Some(limit) = shipshape_api::quantity::Quantity::from_json(limit_value)
                .ok()
                .and_then(|q| u64::try_from(q.units()).ok())
            else {
                continue;
            };
            let name = text(volume, "/name");
            let used = crate::volumes::disk_usage(&self.volume_dir(name)).await?;
            if used > limit {
                let shown = limit_value
                    .as_str()
                    .map_or_else(|| limit_value.to_string(), str::to_string);
                return Some(format!(
                    "Usage of EmptyDir volume \"{name}\" exceeds the limit \"{shown}\"."
                ));
            }
        }
        None
    }

    /// Ends the pod for good as the kubelet does when it evicts a pod or finds it past its
    /// active deadline: an event, the pod Failed with the verdict's reason at once, then its
    /// containers stopped within the verdict's grace period.
    async fn end(&mut self, ended: Ended) {
        let (reason, message) = (ended.reason(), ended.message().to_string());
        tracing::warn!(pod = %self.name, %reason, %message, "ending the pod");
        self.note(ended.event_type(), reason, message);
        let grace = ended.grace(&self.pod);
        self.ended = Some(ended);
        self.write_status().await;
        self.stop_all(grace).await;
        self.write_status().await;
    }

    /// Whether the pod's last reported phase is Succeeded or Failed (a phase is never left).
    fn finished(&self) -> bool {
        let terminal = |phase: &str| matches!(phase, "Succeeded" | "Failed");
        terminal(text(&self.pod, "/status/phase"))
            || self
                .last_status
                .as_ref()
                .is_some_and(|status| terminal(text(status, "/phase")))
    }

    /// Starts, restarts or leaves one container.
    async fn step(&mut self, container: &Value, suffix: &str, policy: RestartPolicy) -> Step {
        let name = text(container, "/name").to_string();
        let (restarts, exit) = match self.records.get(&name) {
            None => (0, None),
            Some(record) => match &record.current {
                Current::Running { .. } => return Step::Fine,
                Current::Waiting { .. } => (record.restarts, None),
                Current::Exited(t) => {
                    let ran_for = (t.finished_at - t.started_at)
                        .try_into()
                        .unwrap_or(Duration::ZERO);
                    let ago = record.exited_seen.map_or(Duration::ZERO, |s| s.elapsed());
                    (
                        record.restarts,
                        Some(Exit {
                            code: t.code,
                            ran_for,
                            ago,
                        }),
                    )
                }
            },
        };
        let restarts = match exit {
            None => restarts,
            Some(exit) => match after_exit(policy, restarts, exit) {
                AfterExit::Stay => return Step::Stays,
                AfterExit::BackOff(wait) => {
                    let message = format!(
                        "back-off {}s restarting failed container={name} pod={}_{}({})",
                        shipshape_reconciler::kubelet::back_off(restarts, exit.ran_for).as_secs(),
                        self.name,
                        self.namespace,
                        self.uid
                    );
                    if let Some(record) = self.records.get_mut(&name)
                        && !matches!(record.current, Current::Waiting { .. })
                    {
                        if let Current::Exited(t) = &record.current {
                            record.last = Some(t.clone());
                        }
                        record.current = Current::Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: message.clone(),
                        };
                        self.note("Warning", "BackOff", message);
                    }
                    return Step::Wake(wait);
                }
                AfterExit::Restart => restarts + 1,
            },
        };
        // A container waiting in back-off has its exit in `last`; keep the clock running.
        if let Some(record) = self.records.get(&name)
            && let Current::Waiting { reason, .. } = &record.current
            && reason == "CrashLoopBackOff"
            && let Some(last) = &record.last
        {
            let ran_for = (last.finished_at - last.started_at)
                .try_into()
                .unwrap_or(Duration::ZERO);
            let ago = record.exited_seen.map_or(Duration::ZERO, |s| s.elapsed());
            if let AfterExit::BackOff(wait) = after_exit(
                policy,
                record.restarts,
                Exit {
                    code: last.code,
                    ran_for,
                    ago,
                },
            ) {
                return Step::Wake(wait);
            }
            return self.start(container, suffix, record.restarts + 1).await;
        }
        self.start(container, suffix, restarts).await
    }

    async fn start(&mut self, container: &Value, suffix: &str, restarts: u32) -> Step {
        let name = text(container, "/name").to_string();
        let id = format!("{}-{suffix}", self.uid);
        let image_text = text(container, "/image");
        let waiting = |reason: &str, message: String| Current::Waiting {
            reason: reason.into(),
            message,
        };
        let parsed = match ImageRef::parse(image_text) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.set_waiting(
                    &name,
                    &id,
                    restarts,
                    waiting("InvalidImageName", error.to_string()),
                );
                return Step::Stays;
            }
        };
        let image = match self
            .image_for(container, &parsed, &name, &id, restarts)
            .await
        {
            Ok(image) => image,
            Err(step) => return step,
        };
        let Configured {
            spec,
            probes,
            cgroup,
            skipped_env,
        } = match self.configure(container, &image, suffix).await {
            Ok(configured) => configured,
            Err(problem) => {
                if problem.announce {
                    let message = format!("Error: {}", problem.message);
                    self.note("Warning", "Failed", message);
                }
                let current = waiting("CreateContainerConfigError", problem.message);
                self.set_waiting(&name, &id, restarts, current);
                return Step::Wake(problem.retry);
            }
        };
        if !skipped_env.is_empty() {
            // Kubernetes' own words for it, so a search for the reason finds its docs.
            let message = format!(
                "Keys [{}] from the EnvFrom configMap or secret were skipped since they are invalid environment variable names.",
                skipped_env.join(", ")
            );
            self.note("Warning", "InvalidEnvironmentVariableNames", message);
        }
        let runtime = self.shared.runtime.clone();
        if let Some(old) = self.records.get_mut(&name) {
            old.stop_probes();
        }
        if let Err(error) = runtime.remove(&id).await {
            tracing::warn!(%error, %id, "removing the previous run failed");
        }
        let started_at = jiff::Timestamp::now();
        let labels = HashMap::from([
            (POD_UID_LABEL.to_string(), self.uid.clone()),
            (CONTAINER_NAME_LABEL.to_string(), name.clone()),
            (RESTARTS_LABEL.to_string(), restarts.to_string()),
            (STARTED_LABEL.to_string(), started_at.to_string()),
            ("io.kubernetes.pod.name".to_string(), self.name.clone()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                self.namespace.clone(),
            ),
        ]);
        let log = self.log_path(&name, restarts);
        match runtime.run(&id, &image, &spec, labels, &log).await {
            Ok(_) => self.note("Normal", "Created", format!("Created container {name}")),
            Err(error) => {
                let message = error.to_string();
                self.note("Warning", "Failed", format!("Error: {message}"));
                let _ = runtime.remove(&id).await;
                self.set_waiting(&name, &id, restarts, waiting("RunContainerError", message));
                return Step::Wake(Duration::from_secs(10));
            }
        }
        let generation = self.records.get(&name).map_or(1, |r| r.generation + 1);
        let last = self.records.get(&name).and_then(|r| match &r.current {
            Current::Exited(t) => Some(t.clone()),
            _ => r.last.clone(),
        });
        let mut record = Record::new(
            id.clone(),
            restarts,
            Current::Running { started_at },
            generation,
        );
        record.last = last;
        record.image_id = image.id.clone();
        record.cgroup = cgroup;
        self.watch_exit(&name, &record);
        self.note("Normal", "Started", format!("Started container {name}"));
        match self.post_start(container, &name, &id).await {
            Ok(()) => self.start_probes(&name, &mut record, probes),
            Err(message) => {
                // Not ready-eligible; its exit (the kill below) restarts it per restartPolicy.
                record.started = false;
                self.note("Warning", "FailedPostStartHook", message);
                self.note(
                    "Normal",
                    "Killing",
                    format!("FailedPostStartHook: stopping container {name}"),
                );
                self.kill_in_background(&id);
            }
        }
        self.records.insert(name.clone(), record);
        Step::Fine
    }

    /// Runs the container's `lifecycle.postStart` hook, if it has one, right after the start:
    /// the worker waits for it (so the container is not reported running, nor probed, before it
    /// returns), as Kubernetes' kubelet does. The error is Kubernetes' event message.
    async fn post_start(&self, container: &Value, name: &str, id: &str) -> Result<(), String> {
        let pod = format!("{}_{}({})", self.name, self.namespace, self.uid);
        let failed = |what: String, why: String| {
            let message =
                format!("{what} for Container {name:?} in Pod {pod:?} failed - error: {why}");
            // Kubernetes' name for the failed start, in the log; the event carries the message.
            tracing::warn!(pod = %pod, container = %name, "PostStartHookError: {message}");
            message
        };
        let action = match probe::hook(container, "postStart") {
            Ok(None) => return Ok(()),
            Ok(Some(action)) => action,
            Err(why) => return Err(failed("lifecycle hook".into(), why)),
        };
        let what = match &action {
            probe::Action::Exec { command } => {
                // Go's %v of the command, as in Kubernetes' message.
                format!("Exec lifecycle hook ([{}])", command.join(" "))
            }
            probe::Action::Http { path, .. } => format!("HTTP lifecycle hook ({path})"),
            probe::Action::Tcp { port } => format!("TCP lifecycle hook ({port})"),
            probe::Action::Sleep { duration } => format!("Sleep lifecycle hook ({duration:?})"),
        };
        let ip = self.ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let runtime = self.shared.runtime.clone();
        let (ok, why) =
            probe::run_action(&action, POST_START_LIMIT, ip, &runtime, id, &self.pod_dir()).await;
        if ok { Ok(()) } else { Err(failed(what, why)) }
    }

    /// SIGTERM, then SIGKILL once the pod's grace period is over, without holding the worker:
    /// the waiter reports the exit as for any other.
    fn kill_in_background(&self, id: &str) {
        let grace = self
            .pod
            .at("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30);
        let runtime = self.shared.runtime.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let _ = runtime.kill(&id, 15).await;
            let deadline = deadline_after(Duration::from_secs(grace));
            while Instant::now() < deadline {
                if !matches!(runtime.state(&id).await, Ok(TaskState::Running(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = runtime.kill(&id, 9).await;
        });
    }

    /// Everything a container needs before it can start: environment, plan, volumes, runtime
    /// spec and probes. A problem here is the pod's configuration (CreateContainerConfigError).
    async fn configure(
        &self,
        container: &Value,
        image: &ResolvedImage,
        suffix: &str,
    ) -> Result<Configured, ConfigProblem> {
        let problem = |message: String, retry: u64| ConfigProblem {
            message,
            retry: Duration::from_secs(retry),
            announce: false,
        };
        let (env, skipped_env) = self
            .environment(container)
            .await
            .map_err(|m| problem(m, 5))?;
        let plan = plan(&self.pod, container, image, &env).map_err(|message| ConfigProblem {
            announce: true,
            ..problem(message, 10)
        })?;
        // Retried each second: a claim is bound soon after its pod is placed.
        self.prepare_volumes().await.map_err(|m| problem(m, 1))?;
        let volume_mounts = self.volume_mounts(container).map_err(|m| problem(m, 10))?;
        let cgroup = format!("{}/{suffix}", self.pod_cgroup());
        let dir = self.pod_dir();
        let mut mounts: Vec<BindMount> = ["resolv.conf", "hosts", "hostname"]
            .into_iter()
            .map(|file| BindMount {
                destination: format!("/etc/{file}"),
                source: dir.join(file),
                read_only: true,
            })
            .collect();
        mounts.extend(volume_mounts);
        let netns = netns_path(&netns_name(&self.uid));
        let host = if plan.privileged {
            tokio::task::spawn_blocking(crate::spec::host_access)
                .await
                .unwrap_or_default()
        } else {
            crate::spec::HostAccess::default()
        };
        let spec =
            runtime_spec(&plan, &netns, &cgroup, &mounts, &host).map_err(|m| problem(m, 10))?;
        let probes = self.parse_probes(container).map_err(|m| problem(m, 10))?;
        Ok(Configured {
            spec,
            probes,
            cgroup,
            skipped_env,
        })
    }

    fn container_spec(&self, name: &str) -> Option<Value> {
        ["/spec/containers", "/spec/initContainers"]
            .iter()
            .filter_map(|p| self.pod.at(p).and_then(Value::as_array))
            .flatten()
            .find(|c| text(c, "/name") == name)
            .cloned()
    }

    fn parse_probes(&self, container: &Value) -> Result<Vec<Probe>, String> {
        let mut probes = Vec::new();
        for kind in [
            ProbeKind::Startup,
            ProbeKind::Readiness,
            ProbeKind::Liveness,
        ] {
            if let Some(probe) = probe::parse(container, kind)? {
                probes.push(probe);
            }
        }
        Ok(probes)
    }

    /// Starts one loop per probe of a container's run; each reports to the worker.
    fn start_probes(&self, name: &str, record: &mut Record, probes: Vec<Probe>) {
        let Some(ip) = self.ip else { return };
        record.started = !probes.iter().any(|p| p.kind == ProbeKind::Startup);
        record.ready = probes
            .iter()
            .any(|p| p.kind == ProbeKind::Readiness)
            .then(|| Tally::starting(false));
        record.live = Tally::starting(true);
        record.startup_failures = 0;
        for probe in probes {
            let runtime = self.shared.runtime.clone();
            let notices = self.probes.clone();
            let id = record.id.clone();
            let generation = record.generation;
            let name = name.to_string();
            let scratch = self.pod_dir();
            record.probes.push(tokio::spawn(async move {
                tokio::time::sleep(probe.initial_delay).await;
                loop {
                    let (passed, why) = probe::run(&probe, ip, &runtime, &id, &scratch).await;
                    if notices
                        .send((name.clone(), generation, probe.kind, passed, why))
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(probe.period).await;
                }
            }));
        }
    }

    /// Takes one probe result: readiness changes the status, a failed liveness (or startup)
    /// probe restarts the container.
    async fn probed(&mut self, (name, generation, kind, passed, why): ProbeNotice) {
        let Some(spec) = self.container_spec(&name) else {
            return;
        };
        let Ok(Some(probe)) = probe::parse(&spec, kind) else {
            return;
        };
        let Some(record) = self.records.get_mut(&name) else {
            return;
        };
        if record.generation != generation || !matches!(record.current, Current::Running { .. }) {
            return;
        }
        let mut kill = None;
        let mut unready = false;
        match kind {
            ProbeKind::Startup if !record.started => {
                if passed {
                    record.started = true;
                } else {
                    record.startup_failures += 1;
                    if record.startup_failures >= probe.thresholds.failure {
                        kill = Some("failed startup probe");
                    }
                }
            }
            ProbeKind::Startup => {}
            // Readiness and liveness wait for the startup probe, as in Kubernetes.
            _ if !record.started => {}
            ProbeKind::Readiness => {
                let before = record.ready.unwrap_or(Tally::starting(false));
                let after = tally(probe.thresholds, before, passed);
                record.ready = Some(after);
                record.unready_run = if passed { 0 } else { record.unready_run + 1 };
                // Reported once per run of failures (and when it costs the pod its readiness).
                if record.unready_run == 1 || (before.passing && !after.passing) {
                    unready = true;
                }
            }
            ProbeKind::Liveness => {
                let after = tally(probe.thresholds, record.live, passed);
                if record.live.passing && !after.passing {
                    kill = Some("failed liveness probe");
                }
                record.live = after;
            }
        }
        let id = record.id.clone();
        if kill.is_some() {
            record.stop_probes();
        }
        if unready {
            self.note(
                "Warning",
                "Unhealthy",
                format!("Readiness probe failed: {why}"),
            );
        }
        if let Some(reason) = kill {
            self.note(
                "Warning",
                "Unhealthy",
                format!("{} probe failed: {why}", kind.word()),
            );
            self.note(
                "Normal",
                "Killing",
                format!("Container {name} {reason}, will be restarted"),
            );
            self.kill_in_background(&id);
        }
        self.write_status().await;
    }

    /// A start that could not happen yet: the container waits with the reason. `restarts` is the
    /// attempt's count (a failed restart is retried as that same restart, so the count a
    /// restart earned is not lost when its first attempt fails).
    fn set_waiting(&mut self, name: &str, id: &str, restarts: u32, current: Current) {
        let record = self.records.entry(name.to_string()).or_insert_with(|| {
            let mut record = Record::new(id.to_string(), restarts, current.clone(), 0);
            record.started = false;
            record
        });
        if let Current::Exited(t) = &record.current {
            record.last = Some(t.clone());
        }
        record.restarts = restarts;
        record.current = current;
    }

    async fn image(&mut self, name: &str) -> Result<Option<ResolvedImage>, RuntimeError> {
        if let Some(image) = self.images.get(name) {
            return Ok(Some(image.clone()));
        }
        let found = resolve(
            self.shared.runtime.containerd(),
            self.shared.runtime.namespace(),
            name,
        )
        .await?;
        if let Some(image) = &found {
            self.images.insert(name.to_string(), image.clone());
        }
        Ok(found)
    }

    /// The image container `name` starts from, pulled or found as its `imagePullPolicy` and
    /// the pull back-off say; or the step to take instead, its waiting reason set and its
    /// events noted (Pulling, Pulled, Failed, BackOff) in the kubelet's words.
    async fn image_for(
        &mut self,
        container: &Value,
        parsed: &ImageRef,
        name: &str,
        id: &str,
        restarts: u32,
    ) -> Result<ResolvedImage, Step> {
        let shown = text(container, "/image").to_string();
        let normalized = parsed.to_string();
        let waiting = |reason: &str, message: String| Current::Waiting {
            reason: reason.into(),
            message,
        };
        let policy = PullPolicy::parse(container.at("/imagePullPolicy").and_then(Value::as_str));
        let local = match self.image(&normalized).await {
            Ok(local) => local,
            Err(error) => {
                let current = waiting("ImageInspectError", error.to_string());
                self.set_waiting(name, id, restarts, current);
                return Err(Step::Wake(Duration::from_secs(5)));
            }
        };
        let failures = self
            .pull_failures
            .get(&normalized)
            .map(|(count, at)| PullFailures {
                count: *count,
                ago: at.elapsed(),
            });
        match image_step(policy, local.is_some(), failures) {
            ImageStep::UseLocal => {
                let image = local.ok_or(Step::Wake(IMAGE_RECHECK))?;
                // At every start, restarts too, as the kubelet says it.
                let message = format!("Container image {shown:?} already present on machine");
                self.note("Normal", "Pulled", message);
                Ok(image)
            }
            ImageStep::NeverPull => {
                let message =
                    format!("Container image {shown:?} is not present with pull policy of Never");
                if !self.waiting_for(name, "ErrImageNeverPull") {
                    self.note("Warning", "ErrImageNeverPull", message.clone());
                }
                self.set_waiting(name, id, restarts, waiting("ErrImageNeverPull", message));
                Err(Step::Wake(IMAGE_RECHECK))
            }
            ImageStep::BackOff(wait) => {
                let message = format!("Back-off pulling image {shown:?}");
                if !self.waiting_for(name, "ImagePullBackOff") {
                    self.note("Normal", "BackOff", message.clone());
                }
                self.set_waiting(name, id, restarts, waiting("ImagePullBackOff", message));
                Err(Step::Wake(wait))
            }
            ImageStep::Pull => {
                self.note("Normal", "Pulling", format!("Pulling image {shown:?}"));
                // The status says so while the pull runs (Kubernetes: ContainerCreating).
                if !self.records.contains_key(name) {
                    let current = waiting("ContainerCreating", format!("Pulling image {shown:?}"));
                    self.set_waiting(name, id, restarts, current);
                }
                let keyring = self.keyring().await;
                // What the pull waits on shows while it runs (a slow registry can take minutes).
                self.write_status().await;
                self.flush_events().await;
                let asked = Instant::now();
                let progress = Arc::default();
                let pull = self.shared.config.images.pull(
                    self.shared.runtime.containerd(),
                    self.shared.runtime.namespace(),
                    parsed,
                    &keyring,
                    asked,
                    &progress,
                );
                let cancelled = cancelled(self.pods.clone(), self.stop.clone());
                let pulled = tokio::select! {
                    pulled = pull => pulled,
                    () = cancelled => {
                        // What was written stays in the content store under its lease (it
                        // expires) and a later pull resumes from it.
                        tracing::info!(pod = %self.name, image = %shown, "image pull cancelled");
                        return Err(Step::Wake(Duration::ZERO));
                    }
                };
                match pulled {
                    Ok(pulled) => {
                        self.pull_failures.remove(&normalized);
                        let took = asked.elapsed().as_secs_f64();
                        let message = if pulled.downloaded == 0 && pulled.size == 0 {
                            format!("Container image {shown:?} pulled by another pod in {took:.3}s")
                        } else {
                            format!(
                                "Successfully pulled image {shown:?} in {took:.3}s. Image size: {} bytes, {} downloaded from {}.",
                                pulled.size, pulled.downloaded, pulled.endpoint
                            )
                        };
                        self.note("Normal", "Pulled", message);
                        self.images.insert(normalized, pulled.image.clone());
                        Ok(pulled.image)
                    }
                    Err(error) => {
                        let entry = self.pull_failures.entry(normalized).or_insert((0, asked));
                        entry.0 = entry.0.saturating_add(1);
                        entry.1 = Instant::now();
                        let message = format!("Failed to pull image {shown:?}: {error}");
                        tracing::info!(pod = %self.name, %message, "image pull failed");
                        self.note("Warning", "Failed", message.clone());
                        self.note("Warning", "Failed", "Error: ErrImagePull".into());
                        self.set_waiting(name, id, restarts, waiting("ErrImagePull", message));
                        // Shown as ErrImagePull for a moment, then ImagePullBackOff until the
                        // back-off ends, as the kubelet's sync loop shows it.
                        Err(Step::Wake(IMAGE_RECHECK))
                    }
                }
            }
        }
    }

    /// Whether container `name` is already waiting for `reason` (so its event is not noted
    /// again at every wake).
    fn waiting_for(&self, name: &str, reason: &str) -> bool {
        self.records.get(name).is_some_and(
            |r| matches!(&r.current, Current::Waiting { reason: r, .. } if r == reason),
        )
    }

    /// The credentials this pod may pull with: its `imagePullSecrets`, then its
    /// ServiceAccount's. A secret that is missing or not a Docker config is skipped with a
    /// warning event, as the kubelet does.
    async fn keyring(&mut self) -> Keyring {
        let mut names: Vec<String> = self
            .pod
            .at("/spec/imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| text(r, "/name").to_string())
            .collect();
        let account = match text(&self.pod, "/spec/serviceAccountName") {
            "" => "default".to_string(),
            named => named.to_string(),
        };
        if let Ok(Some(account)) = self.object_of(Kind::ServiceAccount, &account).await {
            names.extend(
                account
                    .at("/imagePullSecrets")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|r| text(r, "/name").to_string()),
            );
        }
        let mut keyring = Keyring::default();
        for secret in names.into_iter().filter(|n| !n.is_empty()) {
            let problem = match self.object_of(Kind::Secret, &secret).await {
                Ok(Some(object)) => add_pull_secret(&mut keyring, &object).err(),
                Ok(None) => Some("it does not exist".to_string()),
                Err(error) => Some(error),
            };
            if let Some(problem) = problem {
                let message = format!(
                    "Unable to retrieve some image pull secrets ({secret}); attempting to pull the image may not succeed: {problem}"
                );
                self.note("Warning", "FailedToRetrieveImagePullSecret", message);
            }
        }
        keyring
    }

    /// The container's environment: the Service link variables, then literal values,
    /// ConfigMap and Secret keys (envFrom, then env) and the pod fields Kubernetes offers
    /// through fieldRef; beside it, the envFrom keys skipped for not being variable names.
    /// Later entries win ([`plan`] keeps the last of a name) and `$(VAR)` sees all earlier
    /// ones, so envFrom and env override the Service variables and may refer to them, as in
    /// Kubernetes.
    async fn environment(
        &self,
        container: &Value,
    ) -> Result<(Vec<(String, String)>, Vec<String>), String> {
        let mut env = self.service_links().await?;
        let mut skipped = Vec::new();
        for source in container
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let prefix = text(source, "/prefix");
            let (kind, reference) = match (source.get("configMapRef"), source.get("secretRef")) {
                (Some(r), _) => (Kind::ConfigMap, r),
                (_, Some(r)) => (Kind::Secret, r),
                _ => continue,
            };
            let optional = reference.get("optional").and_then(Value::as_bool) == Some(true);
            let object_name = text(reference, "/name");
            match self.object_of(kind, object_name).await? {
                Some(object) => {
                    let (found, invalid) = crate::volumes::env_from(kind, &object, prefix);
                    env.extend(found);
                    skipped.extend(invalid);
                }
                None if optional => {}
                None => return Err(missing(kind, &self.namespace, object_name)),
            }
        }
        for var in container
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = text(var, "/name").to_string();
            if let Some(value) = var.get("value").and_then(Value::as_str) {
                env.push((name, expand(value, &env)));
                continue;
            }
            let Some(from) = var.get("valueFrom") else {
                env.push((name, String::new()));
                continue;
            };
            let key_ref = from
                .get("configMapKeyRef")
                .map(|r| (Kind::ConfigMap, r))
                .or_else(|| from.get("secretKeyRef").map(|r| (Kind::Secret, r)));
            if let Some((kind, reference)) = key_ref {
                let optional = reference.get("optional").and_then(Value::as_bool) == Some(true);
                let object_name = text(reference, "/name");
                let key = text(reference, "/key");
                match self.object_of(kind, object_name).await? {
                    Some(object) => match crate::volumes::env_value(kind, &object, key) {
                        Some(value) => env.push((name, value)),
                        None if optional => {}
                        None => {
                            return Err(format!(
                                "couldn't find key {key} in {} {}/{object_name}",
                                kind.info().kind,
                                self.namespace
                            ));
                        }
                    },
                    None if optional => {}
                    None => return Err(missing(kind, &self.namespace, object_name)),
                }
            } else if let Some(field) = from.at("/fieldRef/fieldPath").and_then(Value::as_str) {
                let value = crate::volumes::pod_field(&self.pod, &self.placement(), field)
                    .map_err(|e| format!("env {name}: {e}"))?;
                env.push((name, value));
            } else if let Some(reference) = from.get("resourceFieldRef") {
                // containerName may be left out: this container.
                let container_name = Some(text(reference, "/containerName"))
                    .filter(|n| !n.is_empty())
                    .unwrap_or(text(container, "/name"));
                let resource = text(reference, "/resource");
                let allocatable = self.allocatable(resource).await;
                let value = crate::volumes::container_resource(
                    &self.pod,
                    container_name,
                    resource,
                    reference.get("divisor"),
                    &allocatable,
                )
                .map_err(|e| format!("env {name}: {e}"))?;
                env.push((name, value));
            } else {
                return Err(format!(
                    "env {name}: only value, configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef are supported"
                ));
            }
        }
        Ok((env, skipped))
    }

    /// The variables of the Services in the pod's namespace as the container starts, unless
    /// the pod turned them off (`enableServiceLinks: false`). shipshape has no `kubernetes`
    /// Service in `default`, so there are no KUBERNETES_SERVICE_* variables to add regardless.
    async fn service_links(&self) -> Result<Vec<(String, String)>, String> {
        if self
            .pod
            .at("/spec/enableServiceLinks")
            .and_then(Value::as_bool)
            == Some(false)
        {
            return Ok(Vec::new());
        }
        let services = self
            .shared
            .store
            .ask(shipshape_actors::store_actor::List {
                kind: Some(Kind::Service),
                namespace: Some(self.namespace.clone()),
            })
            .await
            .map_err(|e| format!("listing the Services of namespace {}: {e}", self.namespace))?;
        let services: Vec<Value> = services.into_iter().map(|(_, s)| s.object).collect();
        Ok(shipshape_reconciler::kubelet::service_environment(
            &services,
        ))
    }

    /// Where the pod runs, as the downward API reports it.
    fn placement(&self) -> crate::volumes::Placement {
        crate::volumes::Placement {
            node: self.shared.config.node.clone(),
            pod_ip: self.ip,
            host_ip: self.shared.network.gateway(),
        }
    }

    /// The node's allocatable resources, for limits a container leaves unset; the filesystem
    /// is measured (once) only when `resource` asks for ephemeral storage.
    async fn allocatable(&self, resource: &str) -> crate::volumes::Allocatable {
        let config = &self.shared.config;
        let ephemeral_storage = if resource.ends_with("ephemeral-storage") {
            *self
                .ephemeral_storage
                .get_or_init(|| crate::volumes::filesystem_size(&config.data_dir))
                .await
        } else {
            0
        };
        crate::volumes::Allocatable {
            cpu_milli: config.cpu_milli,
            memory: config.memory,
            ephemeral_storage,
        }
    }

    /// ConfigMap or Secret `name` in the pod's namespace.
    async fn object_of(&self, kind: Kind, name: &str) -> Result<Option<Value>, String> {
        let key = object_key(kind, &self.namespace, name);
        let stored = self
            .shared
            .store
            .ask(Get(key))
            .await
            .map_err(|e| format!("reading {} {name}: {e}", kind.info().kind))?;
        Ok(stored.map(|stored| stored.object))
    }

    /// The data of ConfigMap or Secret `name` in the pod's namespace (Secrets decoded,
    /// ConfigMaps' binaryData included).
    async fn bytes_of(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let object = self.object_of(kind, name).await?;
        Ok(object.map(|object| crate::volumes::object_data(kind, &object)))
    }

    /// Rotates the running containers' logs past [`LOG_MAX_BYTES`], keeping [`LOG_KEEP`] older
    /// files (`0.log.1` …) as the kubelet does, without losing what the shim appends meanwhile
    /// ([`rotate_log`] says how).
    async fn rotate_logs(&self) {
        for (name, record) in &self.records {
            if !matches!(record.current, Current::Running { .. }) {
                continue;
            }
            let path = self.log_path(name, record.restarts);
            let big = tokio::fs::metadata(&path)
                .await
                .is_ok_and(|m| m.len() > LOG_MAX_BYTES);
            if !big {
                continue;
            }
            let log = path.clone();
            let rotation =
                tokio::task::spawn_blocking(move || rotate_log(&log, LOG_MAX_BYTES, LOG_KEEP))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|rotation| rotation);
            let log = path.display();
            match rotation {
                Ok(Rotation::Small | Rotation::Collapsed) => {}
                Ok(Rotation::Truncated) => tracing::warn!(
                    pod = %self.name, container = %name, %log,
                    "this filesystem cannot cut a file's front (FALLOC_FL_COLLAPSE_RANGE): the log \
                     was rotated by truncating it, which can lose lines written meanwhile"
                ),
                Err(error) => tracing::warn!(
                    pod = %self.name, container = %name, %log, %error, "rotating the log failed"
                ),
            }
        }
    }

    /// Creates or refreshes every volume's directory (ConfigMap and Secret contents follow
    /// their objects); returns the first problem, which keeps the containers waiting.
    async fn prepare_volumes(&self) -> Result<(), String> {
        let volumes = self
            .pod
            .at("/spec/volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for volume in &volumes {
            let name = text(volume, "/name");
            let dir = self.volume_dir(name);
            let projected = match (volume.get("configMap"), volume.get("secret")) {
                (Some(source), _) => Some((Kind::ConfigMap, source, text(source, "/name"))),
                (_, Some(source)) => Some((Kind::Secret, source, text(source, "/secretName"))),
                _ => None,
            };
            if let Some((kind, source, object_name)) = projected {
                let optional = source.get("optional").and_then(Value::as_bool) == Some(true);
                let data = match self.bytes_of(kind, object_name).await? {
                    Some(data) => data,
                    None if optional => BTreeMap::new(),
                    None => return Err(missing(kind, &self.namespace, object_name)),
                };
                let files = crate::volumes::files(source, &data)
                    .map_err(|e| format!("volume {name}: {e}"))?;
                self.write_volume(name, &dir, files).await?;
            } else if let Some(source) = volume.get("downwardAPI") {
                let allocatable = self.allocatable(&needs_storage(source)).await;
                let default_mode = source
                    .get("defaultMode")
                    .and_then(Value::as_u64)
                    .map_or(0o644, |m| (m & 0o777) as u32);
                let files = crate::volumes::downward_files(
                    &self.pod,
                    &self.placement(),
                    &allocatable,
                    source,
                    default_mode,
                )
                .map_err(|e| format!("volume {name}: {e}"))?;
                self.write_volume(name, &dir, files).await?;
            } else if let Some(source) = volume.get("projected") {
                let files = self
                    .projected_files(source)
                    .await
                    .map_err(|e| format!("volume {name}: {e}"))?;
                self.write_volume(name, &dir, files).await?;
            } else if let Some(source) = volume.get("emptyDir") {
                let mut fresh = !dir.exists();
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| format!("volume {name}: {e}"))?;
                if source.get("medium").and_then(Value::as_str) == Some("Memory") {
                    let size = crate::volumes::memory_volume_size(
                        &self.pod,
                        source.get("sizeLimit"),
                        self.shared.config.memory,
                    );
                    fresh |= crate::volumes::mount_tmpfs(&dir, size)
                        .await
                        .map_err(|e| format!("volume {name}: {e}"))?;
                }
                // Set once: what the containers later do to their directory stays theirs.
                if fresh {
                    crate::volumes::empty_dir_permissions(&dir, self.fs_group())
                        .map_err(|e| format!("volume {name}: {e}"))?;
                }
            } else if let Some(host) = volume.get("hostPath") {
                crate::volumes::check_host_path(host)
                    .await
                    .map_err(|e| format!("volume {name}: {e}"))?;
            } else if let Some(claim) = volume
                .at("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
            {
                let path = self.claim_path(claim).await?;
                tokio::fs::create_dir_all(&path)
                    .await
                    .map_err(|e| format!("volume {name}: {}: {e}", path.display()))?;
                // The volume's directory stands for the claim's: a link, which the bind mount
                // follows, so the pod's own directory never holds the data.
                if tokio::fs::read_link(&dir).await.ok().as_deref() != Some(path.as_path()) {
                    let _ = tokio::fs::remove_file(&dir).await;
                    if let Some(parent) = dir.parent() {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .map_err(|e| format!("volume {name}: {e}"))?;
                    }
                    tokio::fs::symlink(&path, &dir)
                        .await
                        .map_err(|e| format!("volume {name}: {e}"))?;
                    // fsGroup owns the claim's data (fsGroupChangePolicy Always), once per pod.
                    if let Some(gid) = self.fs_group() {
                        let data = path.clone();
                        tokio::task::spawn_blocking(move || {
                            crate::volumes::give_to_group(&data, gid)
                        })
                        .await
                        .map_err(|e| format!("volume {name}: {e}"))?
                        .map_err(|e| format!("volume {name}: {e}"))?;
                    }
                }
            } else {
                return Err(format!(
                    "volume {name}: only emptyDir, hostPath, configMap, secret, downwardAPI, projected and persistentVolumeClaim volumes are supported"
                ));
            }
        }
        Ok(())
    }

    /// Whether the pod asks for the host's network (`hostNetwork: true`).
    fn host_network(&self) -> bool {
        self.pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
    }

    /// The pod's `securityContext.fsGroup`.
    fn fs_group(&self) -> Option<u32> {
        self.pod
            .at("/spec/securityContext/fsGroup")
            .and_then(Value::as_u64)
            .and_then(|g| u32::try_from(g).ok())
    }

    /// Makes volume `name`'s directory hold exactly `files`, given to the pod's fsGroup.
    async fn write_volume(
        &self,
        name: &str,
        dir: &std::path::Path,
        mut files: Vec<crate::volumes::VolumeFile>,
    ) -> Result<(), String> {
        let fs_group = self.fs_group();
        crate::volumes::files_for_group(&mut files, fs_group);
        crate::volumes::write_files(dir, &files)
            .await
            .map_err(|e| format!("volume {name}: {e}"))?;
        if let Some(gid) = fs_group {
            crate::volumes::give_to_group(dir, gid).map_err(|e| format!("volume {name}: {e}"))?;
        }
        Ok(())
    }

    /// The files of projected volume `source`: its ConfigMaps and Secrets read from the store
    /// (a missing one is an error unless the source is optional), its downward API items.
    async fn projected_files(
        &self,
        source: &Value,
    ) -> Result<Vec<crate::volumes::VolumeFile>, String> {
        let mut data = Vec::new();
        for projection in source
            .get("sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let object = match (projection.get("configMap"), projection.get("secret")) {
                (Some(reference), _) => Some((Kind::ConfigMap, reference)),
                (_, Some(reference)) => Some((Kind::Secret, reference)),
                _ => None,
            };
            let Some((kind, reference)) = object else {
                data.push(None);
                continue;
            };
            let object_name = text(reference, "/name");
            let optional = reference.get("optional").and_then(Value::as_bool) == Some(true);
            match self.bytes_of(kind, object_name).await? {
                Some(bytes) => data.push(Some(bytes)),
                None if optional => data.push(None),
                None => return Err(missing(kind, &self.namespace, object_name)),
            }
        }
        let allocatable = self.allocatable(&needs_storage(source)).await;
        crate::volumes::projected_files(&self.pod, &self.placement(), &allocatable, source, &data)
    }

    /// Where claim `claim`'s data lives on this node: its bound volume's path.
    async fn claim_path(&self, claim: &str) -> Result<PathBuf, String> {
        let get = |kind: Kind, namespace: &str, name: &str| {
            let key = object_key(kind, namespace, name);
            let store = self.shared.store.clone();
            let name = name.to_string();
            async move {
                store
                    .ask(Get(key))
                    .await
                    .map_err(|e| format!("reading {} {name}: {e}", kind.info().kind))
            }
        };
        let Some(pvc) = get(Kind::PersistentVolumeClaim, &self.namespace, claim).await? else {
            return Err(format!(
                "persistentvolumeclaim \"{claim}\" not found in namespace {}",
                self.namespace
            ));
        };
        let volume = pvc
            .object
            .at("/spec/volumeName")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("waiting for persistentvolumeclaim \"{claim}\" to be bound"))?;
        let Some(pv) = get(Kind::PersistentVolume, "", volume).await? else {
            return Err(format!(
                "persistentvolume \"{volume}\" of claim \"{claim}\" not found"
            ));
        };
        let pv = &pv.object;
        if let Some(node) = shipshape_actors::controllers::volumes::volume_node(pv)
            && node != self.shared.config.node
        {
            return Err(format!(
                "persistentvolume \"{volume}\" is on node {node}, not {}",
                self.shared.config.node
            ));
        }
        ["/spec/hostPath/path", "/spec/local/path"]
            .iter()
            .find_map(|field| pv.at(field).and_then(Value::as_str))
            .map(PathBuf::from)
            .ok_or_else(|| {
                format!(
                    "persistentvolume \"{volume}\": only hostPath and local volumes are supported"
                )
            })
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.pod_dir().join("volumes").join(name)
    }

    /// The bind mounts of a container's volumeMounts.
    fn volume_mounts(&self, container: &Value) -> Result<Vec<BindMount>, String> {
        let volumes = self
            .pod
            .at("/spec/volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut mounts = Vec::new();
        for mount in container
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = text(mount, "/name");
            let volume = volumes
                .iter()
                .find(|v| text(v, "/name") == name)
                .ok_or_else(|| format!("volumeMount {name}: no volume of that name in the pod"))?;
            let mut source = match volume.at("/hostPath/path").and_then(Value::as_str) {
                Some(path) => PathBuf::from(path),
                None => self.volume_dir(name),
            };
            let projected = ["configMap", "secret", "downwardAPI", "projected"]
                .iter()
                .any(|source| volume.get(source).is_some());
            if let Some(sub) = mount
                .get("subPath")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                if sub.split('/').any(|part| part == "..") || sub.starts_with('/') {
                    return Err(format!(
                        "volumeMount {name}: subPath {sub:?} must be a relative path inside the volume"
                    ));
                }
                source = source.join(sub);
            }
            mounts.push(BindMount {
                destination: text(mount, "/mountPath").to_string(),
                source,
                // Volumes the kubelet writes are always read-only, as in Kubernetes.
                read_only: projected
                    || mount.get("readOnly").and_then(Value::as_bool) == Some(true),
            });
        }
        Ok(mounts)
    }

    /// Creates the network namespace and the files every container mounts.
    async fn sandbox(&mut self) -> Result<Ipv4Addr, RuntimeError> {
        // hostNetwork: no namespace of its own; its address is the node's, as reported.
        let host_network = self.host_network();
        let ip = if host_network {
            self.shared.network.gateway()
        } else {
            self.shared
                .network
                .add_pod(
                    &self.uid,
                    &netns_name(&self.uid),
                    &crate::network::port_mappings(&self.pod),
                )
                .await?
        };
        let host_file = |path: &'static str| async move {
            tokio::fs::read_to_string(path).await.unwrap_or_default()
        };
        let dir = self.pod_dir();
        let config = &self.shared.config;
        let domain = &config.cluster_domain;
        let namespace = &self.namespace;
        let host_resolv = host_file("/etc/resolv.conf").await;
        let node_hostname = host_file("/proc/sys/kernel/hostname").await;
        // A hostNetwork pod sees the node's hosts file and name, as in Kubernetes.
        let (hosts, hostname) = if host_network {
            let node_hosts = host_file("/etc/hosts").await;
            (
                hosts_file(&self.pod, ip, domain, Some(&node_hosts)),
                node_hostname,
            )
        } else {
            let hostname = pod_hostname(&self.pod);
            (
                hosts_file(&self.pod, ip, domain, None),
                format!("{hostname}\n"),
            )
        };
        let files = [
            (
                "resolv.conf",
                resolv_conf(
                    &self.pod,
                    config.cluster_dns,
                    domain,
                    namespace,
                    &host_resolv,
                ),
            ),
            ("hosts", hosts),
            ("hostname", hostname),
        ];
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        for (file, contents) in files {
            let path = dir.join(file);
            tokio::fs::write(&path, contents)
                .await
                .map_err(|e| RuntimeError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(ip)
    }

    /// Stops every running container: SIGTERM, up to `grace` to exit, then SIGKILL.
    async fn stop_all(&mut self, grace: Duration) {
        for record in self.records.values_mut() {
            record.stop_probes();
        }
        let runtime = self.shared.runtime.clone();
        let running: Vec<(String, String)> = self
            .records
            .iter()
            .filter(|(_, r)| matches!(r.current, Current::Running { .. }))
            .map(|(name, r)| (name.clone(), r.id.clone()))
            .collect();
        if running.is_empty() {
            return;
        }
        let deadline = deadline_after(grace);
        // preStop hooks first (all containers at once), within the grace period; then SIGTERM.
        let ip = self.ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        let scratch = self.pod_dir();
        let mut hooks = Vec::new();
        for (name, id) in &running {
            let hook = self
                .container_spec(name)
                .and_then(|spec| probe::hook(&spec, "preStop").ok().flatten());
            if let Some(action) = hook {
                let (runtime, id, scratch, name) =
                    (runtime.clone(), id.clone(), scratch.clone(), name.clone());
                hooks.push(tokio::spawn(async move {
                    let (ok, why) =
                        probe::run_action(&action, grace, ip, &runtime, &id, &scratch).await;
                    (name, ok, why)
                }));
            }
        }
        for hook in hooks {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok((name, false, why))) = tokio::time::timeout(left, hook).await {
                self.note(
                    "Warning",
                    "FailedPreStopHook",
                    format!("PreStopHook failed for container {name}: {why}"),
                );
            }
        }
        for (name, id) in &running {
            self.note("Normal", "Killing", format!("Stopping container {name}"));
            let _ = runtime.kill(id, 15).await;
        }
        loop {
            let mut alive = Vec::new();
            for (_, id) in &running {
                if let Ok(TaskState::Running(_)) = runtime.state(id).await {
                    alive.push(id.clone());
                }
            }
            if alive.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for id in alive {
                    let _ = runtime.kill(&id, 9).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.flush_events().await;
    }

    /// Removes the containers, the network namespace, the cgroups and the pod's files.
    async fn teardown(&mut self) {
        let runtime = self.shared.runtime.clone();
        let mut ids: Vec<String> = self.records.values().map(|r| r.id.clone()).collect();
        // Containers this worker never recorded (created by a run that crashed half-way).
        if let Ok(all) = runtime.list().await {
            ids.extend(
                all.into_iter()
                    .filter(|c| c.labels.get(POD_UID_LABEL) == Some(&self.uid))
                    .map(|c| c.id),
            );
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Err(error) = runtime.remove(&id).await {
                tracing::warn!(%error, %id, "removing a container failed");
            }
        }
        if !self.host_network()
            && let Err(error) = self
                .shared
                .network
                .remove_pod(&self.uid, &netns_name(&self.uid))
                .await
        {
            tracing::warn!(%error, pod = %self.name, "removing the pod's network failed");
        }
        remove_cgroups(&self.pod_cgroup());
        // Memory-backed emptyDirs are mounts: unmount them before removing the directory.
        crate::volumes::unmount_all_under(&self.pod_dir().join("volumes")).await;
        let _ = tokio::fs::remove_dir_all(self.pod_dir()).await;
    }

    /// The containers are gone: remove the pod object (conditioned on its uid).
    async fn finish_deletion(&mut self) {
        let key = object_key(Kind::Pod, &self.namespace, &self.name);
        let mut writes = std::mem::take(&mut self.events);
        writes.push(Write::Delete {
            key,
            precondition: Precondition::Uid(self.uid.clone()),
        });
        let _ = self
            .shared
            .store
            .ask(Apply(Batch {
                writes,
                audit: None,
            }))
            .await;
    }

    async fn flush_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.events);
        let _ = self
            .shared
            .store
            .ask(Apply(Batch {
                writes,
                audit: None,
            }))
            .await;
    }

    fn container_status(&self, container: &Value) -> (Value, ContainerNow, bool) {
        let name = text(container, "/name");
        let image = text(container, "/image");
        let Some(record) = self.records.get(name) else {
            let status = json!({
                "name": name, "image": image, "imageID": "", "ready": false,
                "started": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            });
            return (status, ContainerNow::Waiting { ran_before: false }, false);
        };
        let terminated = |t: &Terminated| {
            json!({"terminated": {
                "exitCode": t.code, "reason": t.reason,
                "startedAt": seconds_text(t.started_at), "finishedAt": seconds_text(t.finished_at),
                "containerID": format!("containerd://{}", record.id),
            }})
        };
        let (state, now, running) = match &record.current {
            Current::Waiting { reason, message } => (
                json!({"waiting": {"reason": reason, "message": message}}),
                ContainerNow::Waiting {
                    ran_before: record.last.is_some(),
                },
                false,
            ),
            Current::Running { started_at } => (
                json!({"running": {"startedAt": seconds_text(*started_at)}}),
                ContainerNow::Running,
                record.started && record.ready.is_none_or(|t| t.passing),
            ),
            Current::Exited(t) => (terminated(t), ContainerNow::Exited(t.code), false),
        };
        let mut status = json!({
            "name": name, "image": image, "imageID": record.image_id,
            "containerID": format!("containerd://{}", record.id),
            "ready": running,
            "started": matches!(record.current, Current::Running { .. }) && record.started,
            "restartCount": record.restarts,
            "state": state,
        });
        if let Some(last) = &record.last {
            status["lastState"] = terminated(last);
        }
        (status, now, running)
    }

    /// The history's record that `ran` (container, image as written, imageID) started on this
    /// node: the digest an auditor follows from the commit that asked for the pod to the bytes
    /// that ran.
    fn ran_audit(&self, ran: &[(String, String, String)]) -> shipshape_actors::store::AuditEntry {
        let mut details = json!({
            "node": self.shared.config.node,
            "images": ran
                .iter()
                .map(|(container, image, id)| json!({
                    "container": container, "image": image, "imageID": id,
                }))
                .collect::<Vec<_>>(),
        });
        let commit = text(
            &self.pod,
            &format!(
                "/metadata/annotations/{}",
                shipshape_actors::controllers::COMMIT_ANNOTATION.replace('/', "~1")
            ),
        );
        if !commit.is_empty() {
            details["commit"] = json!({"id": commit});
        }
        shipshape_actors::store::AuditEntry {
            actor: format!("kubelet/{}", self.shared.config.node),
            action: "run".into(),
            subject: object_key(Kind::Pod, &self.namespace, &self.name).to_string(),
            details,
        }
    }

    async fn write_status(&mut self) {
        let now = jiff::Timestamp::now();
        let time = seconds_text(now);
        let list = |field: &str| -> Vec<Value> {
            self.pod
                .at(field)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let init = list("/spec/initContainers");
        let containers = list("/spec/containers");
        let init_statuses: Vec<(Value, ContainerNow, bool)> =
            init.iter().map(|c| self.container_status(c)).collect();
        let statuses: Vec<(Value, ContainerNow, bool)> = containers
            .iter()
            .map(|c| self.container_status(c))
            .collect();
        let init_done = init_statuses
            .iter()
            .all(|(_, now, _)| *now == ContainerNow::Exited(0));
        let init_failed = self.policy() == RestartPolicy::Never
            && init_statuses
                .iter()
                .any(|(_, now, _)| matches!(now, ContainerNow::Exited(c) if *c != 0));
        let progress = if init_failed {
            InitProgress::Failed
        } else if init_done {
            InitProgress::Done
        } else {
            InitProgress::InProgress
        };
        let nows: Vec<ContainerNow> = statuses.iter().map(|(_, now, _)| *now).collect();
        let phase = if self.ended.is_some() {
            Phase::Failed
        } else {
            pod_phase(self.policy(), progress, &nows)
        };
        let all_ready = !statuses.is_empty() && statuses.iter().all(|(_, _, ready)| *ready);
        let ready = all_ready && phase == Phase::Running;
        let truth = |b: bool| if b { "True" } else { "False" };
        // Conditions keep their transition time while their status is unchanged.
        let previous = self.last_status.clone().unwrap_or(Value::Null);
        let condition = |kind: &str, status: bool, reason: Option<&str>| {
            let status = truth(status);
            let since = previous
                .get("conditions")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|c| c["type"] == kind && c["status"] == status)
                })
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(time));
            let mut c = json!({"type": kind, "status": status, "lastTransitionTime": since});
            if let Some(reason) = reason {
                c["reason"] = json!(reason);
            }
            c
        };
        let not_ready_reason = (!ready).then_some("ContainersNotReady");
        let mut status = json!({
            "phase": phase.as_str(),
            "startTime": seconds_text(self.start_time),
            "qosClass": shipshape_api::qos::qos_class(&self.pod["spec"]),
            "conditions": [
                condition("PodReadyToStartContainers", self.ip.is_some(), None),
                condition("Initialized", init_done, (!init_done).then_some("ContainersNotInitialized")),
                condition("Ready", ready, not_ready_reason),
                condition("ContainersReady", all_ready, not_ready_reason),
                condition("PodScheduled", true, None),
            ],
            "containerStatuses": statuses.iter().map(|(s, _, _)| s.clone()).collect::<Vec<_>>(),
            "hostIP": self.shared.network.gateway().to_string(),
            "hostIPs": [{"ip": self.shared.network.gateway().to_string()}],
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(
                init_statuses
                    .iter()
                    .map(|(s, _, _)| s.clone())
                    .collect::<Vec<_>>()
            );
        }
        if let Some(ip) = self.ip {
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        if let Some(message) = &self.sandbox_error {
            status["message"] = json!(message);
        }
        if let Some(ended) = &self.ended {
            status["reason"] = json!(ended.reason());
            status["message"] = json!(ended.message());
            // Only an eviction is a disruption (the deadline is the pod's own).
            if let Ended::Evicted(message) = ended
                && let Some(conditions) = status["conditions"].as_array_mut()
            {
                let mut disruption =
                    condition("DisruptionTarget", true, Some("TerminationByKubelet"));
                disruption["message"] = json!(message);
                conditions.push(disruption);
            }
        }
        let mut writes = std::mem::take(&mut self.events);
        let again = self.report_again && self.shared.node_ready();
        if again || self.last_status.as_ref() != Some(&status) {
            writes.push(Write::UpdateStatus {
                key: object_key(Kind::Pod, &self.namespace, &self.name),
                precondition: Some(Precondition::Uid(self.uid.clone())),
                status: status.clone(),
            });
        }
        let ran: Vec<(String, String, String)> = init_statuses
            .iter()
            .chain(&statuses)
            .filter_map(|(status, _, _)| {
                let container = status["name"].as_str()?;
                let image_id = status["imageID"].as_str().filter(|id| !id.is_empty())?;
                let image = status["image"].as_str().unwrap_or_default();
                (!self
                    .audited_images
                    .contains(&(container.to_string(), image_id.to_string())))
                .then(|| {
                    (
                        container.to_string(),
                        image.to_string(),
                        image_id.to_string(),
                    )
                })
            })
            .collect();
        if writes.is_empty() && ran.is_empty() {
            return;
        }
        let audit = (!ran.is_empty()).then(|| self.ran_audit(&ran));
        let written = self.shared.store.ask(Apply(Batch { writes, audit })).await;
        match written {
            Ok(_) => {
                self.last_status = Some(status);
                self.report_again = false;
                self.audited_images
                    .extend(ran.into_iter().map(|(container, _, id)| (container, id)));
            }
            Err(error) => tracing::warn!(pod = %self.name, %error, "writing pod status failed"),
        }
    }
}

/// A container ready to be created.
struct Configured {
    spec: oci_spec::runtime::Spec,
    probes: Vec<Probe>,
    cgroup: String,
    /// envFrom keys left out because they are not valid variable names.
    skipped_env: Vec<String>,
}

/// Why a container cannot be configured, and when to try again.
struct ConfigProblem {
    message: String,
    retry: Duration,
    /// Also a Warning event (a mistake in the spec itself rather than a missing object).
    announce: bool,
}

/// What one container step leaves to do.
enum Step {
    /// Nothing until something changes.
    Fine,
    /// Look again after this long.
    Wake(Duration),
    /// It stays as it is (exited for good, or an error only a new spec can fix).
    Stays,
}

/// The pod's resolv.conf, as the kubelet writes it: `ClusterFirst` (and
/// `ClusterFirstWithHostNet`) name the cluster DNS with the namespace's search path, `Default`
/// (and `ClusterFirst` on the host's network) takes the node's `host` resolv.conf, `None`
/// starts empty; then `dnsConfig`'s nameservers
/// and searches are appended (without repeats) and its options override by name.
fn resolv_conf(
    pod: &Value,
    cluster_dns: Ipv4Addr,
    domain: &str,
    namespace: &str,
    host: &str,
) -> String {
    let mut nameservers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let host_network = pod.at("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
    // ClusterFirst means Default for a hostNetwork pod; ClusterFirstWithHostNet keeps the
    // cluster's DNS for it.
    let policy = match pod.at("/spec/dnsPolicy").and_then(Value::as_str) {
        None | Some("ClusterFirst") if host_network => Some("Default"),
        policy => policy,
    };
    match policy {
        Some("Default") => {
            for line in host.lines() {
                let mut words = line.split_whitespace();
                let (Some(key), rest) = (words.next(), words) else {
                    continue;
                };
                let target = match key {
                    "nameserver" => &mut nameservers,
                    "search" | "domain" => &mut searches,
                    "options" => &mut options,
                    _ => continue,
                };
                target.extend(rest.map(str::to_string));
            }
        }
        Some("None") => {}
        _ => {
            nameservers.push(cluster_dns.to_string());
            searches.extend([
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ]);
            options.push("ndots:5".into());
        }
    }
    let list = |field: &str| -> Vec<String> {
        shipshape_actors::controllers::string_list(pod.at(&format!("/spec/dnsConfig/{field}")))
    };
    for (target, extra) in [
        (&mut nameservers, list("nameservers")),
        (&mut searches, list("searches")),
    ] {
        for item in extra {
            if !target.contains(&item) {
                target.push(item);
            }
        }
    }
    for option in pod
        .at("/spec/dnsConfig/options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = option.get("name").and_then(Value::as_str) else {
            continue;
        };
        let text = match option.get("value").and_then(Value::as_str) {
            Some(value) => format!("{name}:{value}"),
            None => name.to_string(),
        };
        options.retain(|o| o.split(':').next() != Some(name));
        options.push(text);
    }
    // The resolver reads at most three nameservers and six search domains, as the kubelet
    // trims them.
    nameservers.truncate(3);
    searches.truncate(6);
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for server in &nameservers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The pod's hostname, as the kubelet derives it: `spec.hostname` or else the pod's name, cut
/// to the 63 characters a hostname may have (and then not ending in `-` or `.`).
pub(crate) fn pod_hostname(pod: &Value) -> String {
    let name = match text(pod, "/spec/hostname") {
        "" => text(pod, "/metadata/name"),
        hostname => hostname,
    };
    // Names are ASCII (validated DNS labels and subdomains), so a byte cut is a character cut.
    match name.get(..63) {
        Some(cut) if name.len() > 63 => cut.trim_end_matches(['-', '.']).to_string(),
        _ => name.to_string(),
    }
}

/// The pod's domain when it sets a `subdomain`: `<subdomain>.<namespace>.svc.<cluster domain>`,
/// the name a headless Service of that name gives it.
fn pod_domain(pod: &Value, cluster_domain: &str) -> Option<String> {
    match text(pod, "/spec/subdomain") {
        "" => None,
        subdomain => {
            let namespace = match text(pod, "/metadata/namespace") {
                "" => "default",
                namespace => namespace,
            };
            Some(format!("{subdomain}.{namespace}.svc.{cluster_domain}"))
        }
    }
}

/// The pod's /etc/hosts, as the kubelet writes it: a managed file naming localhost and the
/// pod's own address and hostname, or, on the host's network, the node's `host_hosts`
/// under a header; then each `spec.hostAliases` entry on a line of its own, so a pod can
/// resolve names that DNS does not know.
fn hosts_file(pod: &Value, ip: Ipv4Addr, cluster_domain: &str, host_hosts: Option<&str>) -> String {
    let mut out = String::new();
    match host_hosts {
        Some(node) => {
            out.push_str("# Kubernetes-managed hosts file (host network).\n");
            out.push_str(node);
        }
        None => {
            out.push_str(concat!(
                "# Kubernetes-managed hosts file.\n",
                "127.0.0.1\tlocalhost\n",
                "::1\tlocalhost ip6-localhost ip6-loopback\n",
                "fe00::0\tip6-localnet\n",
                "fe00::0\tip6-mcastprefix\n",
                "fe00::1\tip6-allnodes\n",
                "fe00::2\tip6-allrouters\n",
            ));
            let hostname = pod_hostname(pod);
            match pod_domain(pod, cluster_domain) {
                Some(domain) => out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n")),
                None => out.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
    }
    let aliases = pod
        .at("/spec/hostAliases")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let hostnames: Vec<String> =
                shipshape_actors::controllers::string_list(alias.get("hostnames"));
            let hostnames = hostnames.join("\t");
            out.push_str(&format!("{}\t{hostnames}\n", text(alias, "/ip")));
        }
    }
    out
}

/// `ephemeral-storage` when a volume source refers to it (so the filesystem is measured),
/// else nothing.
fn needs_storage(source: &Value) -> String {
    if source.to_string().contains("ephemeral-storage") {
        "ephemeral-storage".into()
    } else {
        String::new()
    }
}

fn missing(kind: Kind, namespace: &str, name: &str) -> String {
    format!(
        "{} \"{name}\" not found in namespace {namespace}",
        kind.info().kind.to_lowercase()
    )
}

/// Expands `$(NAME)` references to variables defined earlier, as Kubernetes does; `$$` escapes.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What one look at a container log did.
#[derive(Debug, PartialEq)]
enum Rotation {
    /// The log was within its limit.
    Small,
    /// The log's front moved to `.1` and was cut from the file in place: nothing lost.
    Collapsed,
    /// The filesystem cannot cut a file's front (tmpfs, btrfs, NFS): the log was copied and
    /// truncated, and what the container wrote between the last look and the truncation is lost.
    Truncated,
}

/// Rotates the log at `path` once it is past `max_bytes`, keeping `keep` rotated files.
///
/// The writer is not ours: the shim opened the file `O_WRONLY|O_APPEND` when the task started
/// and holds it until the task ends (containerd's `pkg/process/io.go`, `file://` stdio), so the
/// file cannot be renamed and reopened, and copy-then-truncate loses whatever the shim appends
/// between the copy and the truncation. Instead: copy whole blocks from the front, which an
/// appending writer never changes, into the new `.1`, then remove exactly those bytes from the
/// file with `fallocate(FALLOC_FL_COLLAPSE_RANGE)`. The kernel does that under the inode lock
/// that appends take too, so every append lands either after the collapsed range (and stays) or
/// after the collapse (at the new end). A line can be split between `.1` and the current file;
/// the files read oldest first are the container's output byte for byte, which is how
/// `kubectl logs` reads them (`shipshape_actors::api::logs`).
///
/// Where the filesystem cannot collapse, the rest is copied after the blocks and the file
/// truncated, checking the length again until it stops growing (a few rounds at most): that
/// shrinks the window in which lines are lost from the whole copy to one length check, but
/// cannot close it, so the caller warns.
///
/// Readers of the log ([`shipshape_actors::api::logs::rotating`]) are kept out from the first
/// rename to the collapse, so they never see the front in both files or in neither.
///
/// A crash before the collapse leaves the front both in `.1` and in the file: shown twice,
/// never lost.
fn rotate_log(path: &std::path::Path, max_bytes: u64, keep: u32) -> std::io::Result<Rotation> {
    use shipshape_actors::api::logs::rotated_log_path;
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let meta = file.metadata()?;
    let length = meta.len();
    if length <= max_bytes {
        return Ok(Rotation::Small);
    }
    // The kernel collapses whole filesystem blocks only, and never a range reaching the end.
    let block = std::os::unix::fs::MetadataExt::blksize(&meta).max(1);
    let front = (length - 1) / block * block;
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".rotating");
    let fresh = PathBuf::from(fresh);
    let mut rotated = std::fs::File::create(&fresh)?;
    let copied = std::io::copy(&mut std::io::Read::take(&mut file, front), &mut rotated);
    if !matches!(copied, Ok(n) if n == front) {
        let _ = std::fs::remove_file(&fresh);
        return Err(match copied {
            Err(error) => error,
            Ok(_) => std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the log shrank while it was copied",
            ),
        });
    }
    // Readers of this log must not see the front in both places, or in neither.
    let _rotating = shipshape_actors::api::logs::rotating();
    if keep == 0 {
        std::fs::remove_file(&fresh)?;
    } else {
        let _ = std::fs::remove_file(rotated_log_path(path, keep));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(rotated_log_path(path, n), rotated_log_path(path, n + 1));
        }
        std::fs::rename(&fresh, rotated_log_path(path, 1))?;
    }
    if collapse_front(&file, front).is_ok() {
        return Ok(Rotation::Collapsed);
    }
    // Catch up a few times at most: a writer faster than the copy must not keep readers out.
    let mut copied = front;
    for _ in 0..8 {
        let now = file.metadata()?.len();
        if now <= copied {
            break;
        }
        file.seek(SeekFrom::Start(copied))?;
        let more = std::io::copy(
            &mut std::io::Read::take(&mut file, now - copied),
            &mut rotated,
        )?;
        if more == 0 {
            break;
        }
        copied += more;
    }
    file.set_len(0)?;
    Ok(Rotation::Truncated)
}

/// Removes the first `length` bytes of `file`, moving the rest to the front, atomically with
/// respect to other writers; `length` must be a whole number of filesystem blocks.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn collapse_front(file: &std::fs::File, length: u64) -> std::io::Result<()> {
    use std::ffi::c_int;
    use std::os::fd::AsRawFd;
    const FALLOC_FL_COLLAPSE_RANGE: c_int = 0x08;
    unsafe extern "C" {
        // glibc's and musl's, with a 64-bit off_t on 64-bit targets.
        fn fallocate(fd: c_int, mode: c_int, offset: i64, len: i64) -> c_int;
    }
    let length = i64::try_from(length).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    loop {
        // SAFETY: fallocate touches no memory of ours, and `file` keeps the descriptor open.
        let result = unsafe { fallocate(file.as_raw_fd(), FALLOC_FL_COLLAPSE_RANGE, 0, length) };
        if result == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn collapse_front(_file: &std::fs::File, _length: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Whether files in `dir` can have their front collapsed (ext4 and XFS can; tmpfs cannot).
#[cfg(test)]
fn collapse_supported(dir: &std::path::Path) -> bool {
    let path = dir.join("collapse-probe");
    let probe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut file| {
            let block = std::os::unix::fs::MetadataExt::blksize(&file.metadata()?);
            std::io::Write::write_all(&mut file, &vec![b'x'; 2 * block as usize])?;
            collapse_front(&file, block)
        });
    let _ = std::fs::remove_file(&path);
    probe.is_ok()
}

/// `grace` from now, or a time that never comes when the manifest's grace period (any `u64`
/// seconds) reaches past what the clock can count: `Instant + Duration` panics there.
fn deadline_after(grace: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(grace)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 60 * 60)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipshape_actors::api::logs::rotated_log_path;
    use std::io::Write;

    #[test]
    fn pull_secrets_are_read_from_data_or_string_data_and_refused_whole_when_wrong() {
        let config = r#"{"auths":{"registry.example:5000":{"username":"ada","password":"pw"}}}"#;
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(config);
        let found = |secret: Value| {
            let mut keyring = Keyring::default();
            add_pull_secret(&mut keyring, &secret).map(|()| {
                keyring
                    .lookup("registry.example:5000", "team/app")
                    .into_iter()
                    .map(|c| c.username)
                    .collect::<Vec<_>>()
            })
        };
        let json_type = "kubernetes.io/dockerconfigjson";
        assert_eq!(
            found(json!({"type": json_type, "data": {".dockerconfigjson": encoded}})),
            Ok(vec!["ada".to_string()])
        );
        // Plain text under stringData, as a manifest in Git usually has it.
        assert_eq!(
            found(json!({"type": json_type, "stringData": {".dockerconfigjson": config}})),
            Ok(vec!["ada".to_string()])
        );
        assert_eq!(
            found(json!({"type": "Opaque", "stringData": {".dockerconfigjson": config}})),
            Err("its type is \"Opaque\", not kubernetes.io/dockerconfigjson".to_string())
        );
        assert_eq!(
            found(json!({"type": json_type, "stringData": {"config": config}})),
            Err("it has no .dockerconfigjson key".to_string())
        );
        let refused = found(
            json!({"type": json_type, "stringData": {".dockerconfigjson": "{\"auths\": 1}"}}),
        );
        assert!(refused.is_err_and(|e| e.starts_with("its .dockerconfigjson: ")));
    }

    #[test]
    fn resolv_conf_follows_dns_policy_and_dns_config() {
        let dns = Ipv4Addr::new(10, 96, 0, 10);
        let host = "# generated\nnameserver 192.168.1.1\nsearch lan\noptions edns0\n";
        let conf =
            |spec: Value| resolv_conf(&json!({"spec": spec}), dns, "cluster.local", "shop", host);
        let cluster = "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";
        assert_eq!(conf(json!({})), cluster);
        assert_eq!(conf(json!({"dnsPolicy": "ClusterFirst"})), cluster);
        assert_eq!(
            conf(json!({"dnsPolicy": "Default"})),
            "search lan\nnameserver 192.168.1.1\noptions edns0\n"
        );
        assert_eq!(
            conf(json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.1.1.1"], "searches": ["example.com"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}})),
            "search example.com\nnameserver 1.1.1.1\noptions ndots:2 rotate\n"
        );
        // On the host's network ClusterFirst falls back to the node's; WithHostNet does not.
        assert_eq!(
            conf(json!({"hostNetwork": true})),
            "search lan\nnameserver 192.168.1.1\noptions edns0\n"
        );
        assert_eq!(
            conf(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            cluster
        );
        // dnsConfig adds to the policy's, and its options override by name.
        assert_eq!(
            conf(
                json!({"dnsConfig": {"nameservers": ["10.96.0.10", "8.8.8.8"],
                "searches": ["corp"], "options": [{"name": "ndots", "value": "1"}]}})
            ),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp\nnameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:1\n"
        );
    }

    #[test]
    fn hosts_file_names_the_pod_and_adds_its_host_aliases_as_the_kubelet_does() {
        let ip = Ipv4Addr::new(10, 88, 0, 4);
        let managed = concat!(
            "# Kubernetes-managed hosts file.\n",
            "127.0.0.1\tlocalhost\n",
            "::1\tlocalhost ip6-localhost ip6-loopback\n",
            "fe00::0\tip6-localnet\n",
            "fe00::0\tip6-mcastprefix\n",
            "fe00::1\tip6-allnodes\n",
            "fe00::2\tip6-allrouters\n",
        );
        let aliases = json!([
            {"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]},
            {"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]},
        ]);
        let section = concat!(
            "\n# Entries added by HostAliases.\n",
            "127.0.0.1\tfoo.local\tbar.local\n",
            "10.1.2.3\tfoo.remote\tbar.remote\n",
        );
        let pod =
            |spec: Value| json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": spec});
        assert_eq!(
            hosts_file(&pod(json!({})), ip, "cluster.local", None),
            format!("{managed}10.88.0.4\tweb\n")
        );
        assert_eq!(
            hosts_file(
                &pod(json!({"hostAliases": aliases})),
                ip,
                "cluster.local",
                None
            ),
            format!("{managed}10.88.0.4\tweb\n{section}")
        );
        // hostname and subdomain give the pod its fully qualified name too.
        assert_eq!(
            hosts_file(
                &pod(json!({"hostname": "db-0", "subdomain": "db"})),
                ip,
                "cluster.local",
                None
            ),
            format!("{managed}10.88.0.4\tdb-0.db.shop.svc.cluster.local\tdb-0\n")
        );
        // On the host's network: the node's file, then the aliases all the same.
        let node = "127.0.0.1\tlocalhost\n192.168.1.5\tnode-a\n";
        assert_eq!(
            hosts_file(
                &pod(json!({"hostNetwork": true, "hostAliases": aliases})),
                ip,
                "cluster.local",
                Some(node)
            ),
            format!("# Kubernetes-managed hosts file (host network).\n{node}{section}")
        );
        let long = "a".repeat(62) + "-b";
        assert_eq!(
            pod_hostname(&json!({"metadata": {"name": long}})),
            "a".repeat(62)
        );
    }

    #[test]
    fn a_grace_period_of_any_size_gives_a_deadline() {
        let soon = deadline_after(Duration::from_secs(30));
        assert!(soon > Instant::now() + Duration::from_secs(29));
        // terminationGracePeriodSeconds: 9223372036854775807 reads as this many seconds.
        let never = deadline_after(Duration::from_secs(i64::MAX as u64));
        assert!(never > Instant::now() + Duration::from_secs(50 * 365 * 24 * 60 * 60));
        assert!(deadline_after(Duration::MAX) > soon);
    }

    #[test]
    fn the_active_deadline_counts_from_the_start_time_and_never_overflows() {
        let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        let after = |seconds: i64| {
            start
                .checked_add(jiff::SignedDuration::from_secs(seconds))
                .expect("timestamp")
        };
        assert_eq!(active_deadline(&json!({"spec": {}})), None);
        let spec = active_deadline(&json!({"spec": {"activeDeadlineSeconds": 3}}));
        assert_eq!(spec, Some(3));
        assert_eq!(active_deadline_left(None, start, after(10)), None);
        assert_eq!(
            active_deadline_left(spec, start, after(1)),
            Some(Duration::from_secs(2))
        );
        // Active exactly as long as allowed is past the deadline, as in the kubelet.
        assert_eq!(
            active_deadline_left(spec, start, after(3)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            active_deadline_left(spec, start, after(86_400)),
            Some(Duration::ZERO)
        );
        // A start time after now (a clock stepped back) counts as no time active.
        assert_eq!(
            active_deadline_left(spec, start, after(-60)),
            Some(Duration::from_secs(3))
        );
        // Extreme numbers and times neither overflow nor wrap around.
        let (min, max) = (jiff::Timestamp::MIN, jiff::Timestamp::MAX);
        let largest = Some(2_147_483_647);
        assert_eq!(
            active_deadline_left(largest, min, max),
            Some(Duration::ZERO)
        );
        let huge = Some(u64::MAX);
        let left = active_deadline_left(huge, min, max).expect("a deadline");
        assert!(left > Duration::from_secs(u64::MAX / 2));
        assert_eq!(
            active_deadline_left(huge, max, min),
            Some(Duration::from_secs(u64::MAX))
        );
        // Not a whole number of seconds: no deadline the kubelet could honour (validation
        // refuses it before it gets here).
        let negative = json!({"spec": {"activeDeadlineSeconds": -1}});
        assert_eq!(active_deadline(&negative), None);
    }

    /// A run's whole log: its rotated files, oldest first, then the current one.
    fn whole_log(path: &std::path::Path, keep: u32) -> Vec<u8> {
        let mut all = Vec::new();
        for n in (1..=keep).rev() {
            if let Ok(bytes) = std::fs::read(rotated_log_path(path, n)) {
                all.extend(bytes);
            }
        }
        all.extend(std::fs::read(path).expect("the current log"));
        all
    }

    fn numbered_lines(range: std::ops::Range<u32>) -> Vec<u8> {
        range
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect()
    }

    #[test]
    fn rotation_keeps_every_line_a_concurrent_writer_appends() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        if !collapse_supported(dir.path()) {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI's temporary directory must support FALLOC_FL_COLLAPSE_RANGE (ext4, XFS)"
                );
            }
            eprintln!("skipped: the temporary directory's filesystem cannot collapse a range");
            return;
        }
        let path = dir.path().join("0.log");
        std::fs::File::create(&path).expect("the log");
        const LINES: u32 = 400_000;
        const KEEP: u32 = 10_000;
        // Appends as the shim does: one O_APPEND descriptor held open, one write per line.
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .expect("the log, for appending");
                for i in 0..LINES {
                    file.write_all(format!("line {i}\n").as_bytes())
                        .expect("an append");
                }
            })
        };
        let mut rotations = 0;
        while !writer.is_finished() {
            if rotate_log(&path, 8 << 10, KEEP).expect("a rotation") != Rotation::Small {
                rotations += 1;
            }
        }
        writer.join().expect("the writer");
        let all = whole_log(&path, KEEP);
        let expected = numbered_lines(0..LINES);
        if all != expected {
            let (got, wanted) = (
                String::from_utf8_lossy(&all),
                String::from_utf8_lossy(&expected),
            );
            let first_wrong = got
                .lines()
                .zip(wanted.lines())
                .find(|(got, want)| got != want);
            panic!(
                "{} bytes kept of {} written over {rotations} rotations; first difference \
                 (got, wanted): {first_wrong:?}",
                all.len(),
                expected.len()
            );
        }
        assert!(rotations >= 10, "only {rotations} rotations ran");
    }

    #[test]
    fn rotation_keeps_only_the_newest_files() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("0.log");
        std::fs::File::create(&path).expect("the log");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("the log, for appending");
        let mut written = 0;
        for round in 0..6 {
            file.write_all(&numbered_lines(round * 1000..(round + 1) * 1000))
                .expect("a write");
            written = (round + 1) * 1000;
            assert_ne!(
                rotate_log(&path, 4096, 2).expect("a rotation"),
                Rotation::Small
            );
        }
        assert!(
            !rotated_log_path(&path, 3).exists(),
            "only two rotated files are kept"
        );
        let kept = whole_log(&path, 2);
        let all = numbered_lines(0..written);
        assert!(
            kept.len() < all.len() && all.ends_with(&kept),
            "the newest lines, in order"
        );
        assert_eq!(
            rotate_log(&path, u64::MAX, 2).expect("a look"),
            Rotation::Small
        );
    }

    #[test]
    fn expands_earlier_variables_as_kubernetes_does() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)", &env), "x-$(B)-$(A)");
        assert_eq!(expand("plain $ sign", &env), "plain $ sign");
    }

    #[test]
    fn a_pod_marked_not_ready_while_its_node_was_silent_is_reported_again() {
        let ready = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        let marked = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "NodeNotReady"}]}});
        let own = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]}});
        assert!(marked_not_ready_elsewhere(&marked, Some(&ready)));
        assert!(
            !marked_not_ready_elsewhere(&own, Some(&ready)),
            "its own report (the watch lagging) is not a reason"
        );
        assert!(
            !marked_not_ready_elsewhere(&marked, None),
            "nothing reported yet: the next sync writes anyway"
        );
    }
}
