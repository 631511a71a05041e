//! What `shipshape up` shows while the cluster comes up: one progress line (a spinner on a
//! terminal, a line per change otherwise) counting pods as they are scheduled and start, then a
//! short summary once every application has settled: the commit, each application's sync and
//! health, the kubeconfig, and commands to try.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kameo::actor::ActorRef;
use serde_json::Value;
use shipshape_actors::StoreActor;
use shipshape_actors::controllers::condition_is_true;
use shipshape_actors::gitsync::{self, ApplicationStatus, SyncState};
use shipshape_actors::health::{self, ApplicationHealth, Health};
use shipshape_actors::store::StoredObject;
use shipshape_actors::store_actor::{List, ListMeta};
use shipshape_api::{Kind, ObjectKey};

/// How long `up` waits for the applications to settle before summarising anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(180);

/// Where `up` writes what it says: plain lines, printed above the progress line while one shows.
#[derive(Clone)]
pub(crate) struct Console {
    bar: Arc<Mutex<Option<indicatif::ProgressBar>>>,
    terminal: bool,
}

impl Console {
    pub(crate) fn new() -> Self {
        Self {
            bar: Arc::new(Mutex::new(None)),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Prints one or more lines to stderr.
    pub(crate) fn say(&self, text: &str) {
        let bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match bar.as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Shows `message` as the progress line: redrawn in place on a terminal, else printed.
    fn progress(&self, message: &str) {
        if !self.terminal {
            eprintln!("{message}");
            return;
        }
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(message.to_string());
    }

    /// Removes the progress line.
    pub(crate) fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// How the pods of the cluster's workloads are doing.
#[derive(Debug, Default, PartialEq, Eq)]
struct PodCount {
    /// Pods the workloads ask for (replicas of Deployments and StatefulSets, DaemonSet pods,
    /// bare pods); Job pods come and go and are not counted.
    wanted: usize,
    ready: usize,
    /// Bound to a node, not ready yet.
    starting: usize,
    /// Not bound to a node yet.
    unscheduled: usize,
    /// Bound, but not reported by a kubelet since `up` started: what the store says of them
    /// is from the previous run.
    unreported: usize,
}

/// The newest transition among a pod's conditions: a kubelet (re)starting a pod writes them
/// all afresh, so this tells a status written in this run from one left by the previous.
fn last_report(pod: &Value) -> Option<jiff::Timestamp> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .filter_map(|c| c["lastTransitionTime"].as_str()?.parse().ok())
        .max()
}

impl PodCount {
    /// Counts the pods; only statuses written at or after `since` (whole seconds, as status
    /// times are) count as ready.
    fn of(objects: &[(ObjectKey, StoredObject)], since: jiff::Timestamp) -> Self {
        let mut count = Self::default();
        let mut desired = 0;
        let mut pods = 0;
        for (key, stored) in objects {
            let object = &stored.object;
            match key.kind {
                Kind::Deployment | Kind::StatefulSet => {
                    desired += object
                        .pointer("/spec/replicas")
                        .and_then(Value::as_u64)
                        .unwrap_or(1) as usize;
                }
                Kind::DaemonSet => {
                    desired += object
                        .pointer("/status/desiredNumberScheduled")
                        .and_then(Value::as_u64)
                        .unwrap_or(0) as usize;
                }
                Kind::Pod => {
                    let owner = object
                        .pointer("/metadata/ownerReferences/0/kind")
                        .and_then(Value::as_str);
                    let phase = object.pointer("/status/phase").and_then(Value::as_str);
                    if owner == Some("Job")
                        || matches!(phase, Some("Succeeded" | "Failed"))
                        || object.pointer("/metadata/deletionTimestamp").is_some()
                    {
                        continue;
                    }
                    if owner.is_none() {
                        desired += 1;
                    }
                    pods += 1;
                    let ready = condition_is_true(object, "Ready");
                    let reported = last_report(object).is_some_and(|at| at >= since);
                    if object.pointer("/spec/nodeName").is_some() && !reported {
                        count.unreported += 1;
                    } else if ready {
                        count.ready += 1;
                    } else if object.pointer("/spec/nodeName").is_some() {
                        count.starting += 1;
                    } else {
                        count.unscheduled += 1;
                    }
                }
                _ => {}
            }
        }
        count.wanted = desired.max(pods);
        count
    }

    fn describe(&self) -> String {
        let mut text = format!("pods ready {}/{}", self.ready, self.wanted);
        let mut parts = Vec::new();
        if self.starting + self.unreported > 0 {
            parts.push(format!("{} starting", self.starting + self.unreported));
        }
        if self.unscheduled > 0 {
            parts.push(format!("{} scheduling", self.unscheduled));
        }
        if !parts.is_empty() {
            text.push_str(&format!(" ({})", parts.join(", ")));
        }
        text
    }
}

/// One application as the summary shows it.
struct Row {
    name: String,
    sync: SyncState,
    health: ApplicationHealth,
    commit: Option<String>,
}

fn rows(
    statuses: &BTreeMap<String, Value>,
    health: &BTreeMap<String, ApplicationHealth>,
) -> Vec<Row> {
    statuses
        .values()
        .filter_map(|v| serde_json::from_value::<ApplicationStatus>(v.clone()).ok())
        .map(|status| Row {
            health: health
                .get(&status.application)
                .cloned()
                .unwrap_or(ApplicationHealth {
                    status: Health::Healthy,
                    message: String::new(),
                }),
            name: status.application,
            sync: status.sync,
            commit: status.commit,
        })
        .collect()
}

/// True when no application is still on its way: none progressing, none waiting to sync.
fn settled(rows: &[Row]) -> bool {
    !rows.is_empty()
        && rows.iter().all(|row| {
            row.sync != SyncState::OutOfSync
                && !matches!(row.health.status, Health::Progressing | Health::Missing)
        })
}

/// Commands worth trying on this cluster: kubectl, and dig and curl against a Service it runs
/// (a NodePort one when there is one, as curl on the host reaches it), and curl by host name
/// through the ingress when an Ingress names a host.
fn try_commands(
    objects: &[(ObjectKey, StoredObject)],
    kubeconfig: &std::path::Path,
    dns: Option<std::net::SocketAddr>,
    domain: &str,
    ingress: Option<std::net::SocketAddr>,
) -> Vec<String> {
    let mut commands = vec![format!(
        "kubectl --kubeconfig {} get pods -A",
        kubeconfig.display()
    )];
    let services: Vec<&(ObjectKey, StoredObject)> = objects
        .iter()
        .filter(|(key, stored)| key.kind == Kind::Service && stored.application.is_some())
        .collect();
    let node_port = services.iter().find_map(|(key, stored)| {
        let port = stored
            .object
            .pointer("/spec/ports/0/nodePort")
            .and_then(Value::as_u64)?;
        Some((key, port))
    });
    let named = node_port.map(|(key, _)| key).or_else(|| {
        services
            .iter()
            .find(|(_, s)| {
                s.object.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None")
            })
            .map(|(key, _)| key)
    });
    if let (Some(dns), Some(key)) = (dns, named) {
        commands.push(format!(
            "dig @{} -p {} +short {}.{}.svc.{domain}",
            dns.ip(),
            dns.port(),
            key.name,
            key.namespace
        ));
    }
    if let Some((_, port)) = node_port {
        commands.push(format!("curl http://127.0.0.1:{port}/"));
    }
    let host = objects
        .iter()
        .filter(|(key, stored)| key.kind == Kind::Ingress && stored.application.is_some())
        .find_map(|(_, stored)| stored.object.pointer("/spec/rules/0/host")?.as_str());
    if let (Some(ingress), Some(host)) = (ingress, host)
        && !host.starts_with('*')
    {
        let port = ingress.port();
        commands.push(if port == 80 && host.ends_with(".localhost") {
            // curl resolves *.localhost to the loopback address itself.
            format!("curl http://{host}/")
        } else if port == 80 {
            format!("curl -H 'Host: {host}' http://127.0.0.1/")
        } else {
            format!("curl -H 'Host: {host}' http://127.0.0.1:{port}/")
        });
    }
    commands
}

/// What the summary needs to know about the cluster.
pub(crate) struct Summary {
    /// When `up` started: "ready in" counts from here.
    pub(crate) started: Instant,
    /// The same on the wall clock, which pod statuses are written in.
    pub(crate) started_at: jiff::Timestamp,
    /// Whether the nodes write every pod's status afresh when they start (real kubelets do;
    /// simulated nodes keep running what they ran and leave the statuses as they were).
    pub(crate) fresh_statuses: bool,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) dns: Option<std::net::SocketAddr>,
    pub(crate) domain: String,
    /// Where the ingress serves plain HTTP.
    pub(crate) ingress: Option<std::net::SocketAddr>,
}

async fn read(
    store: &ActorRef<StoreActor>,
) -> Option<(Vec<(ObjectKey, StoredObject)>, BTreeMap<String, Value>)> {
    let objects = store
        .ask(List {
            kind: None,
            namespace: None,
        })
        .await
        .ok()?;
    let statuses = store
        .ask(ListMeta(gitsync::APP_META_PREFIX.into()))
        .await
        .ok()?;
    Some((objects, statuses))
}

/// Follows the cluster from the first sync until every application has settled (or
/// `SETTLE_LIMIT` passed), showing the pods' progress, then prints the summary.
pub(crate) async fn watch(
    store: ActorRef<StoreActor>,
    mut synced: tokio::sync::watch::Receiver<Option<String>>,
    console: Console,
    summary: Summary,
) {
    let started = summary.started;
    let since = if summary.fresh_statuses {
        jiff::Timestamp::from_second(summary.started_at.as_second()).unwrap_or(summary.started_at)
    } else {
        jiff::Timestamp::UNIX_EPOCH
    };
    let commit = loop {
        if let Some(commit) = synced.borrow_and_update().clone() {
            break commit;
        }
        if synced.changed().await.is_err() {
            return;
        }
    };
    let mut last = String::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let (objects, rows) = loop {
        ticker.tick().await;
        let Some((objects, statuses)) = read(&store).await else {
            return;
        };
        let health = health::applications(objects.iter().map(|(k, s)| (k, s)));
        let rows = rows(&statuses, &health);
        let pods = PodCount::of(&objects, since);
        if (settled(&rows) && pods.unreported == 0) || started.elapsed() > SETTLE_LIMIT {
            break (objects, rows);
        }
        let waiting: Vec<&str> = rows
            .iter()
            .filter(|r| r.health.status != Health::Healthy || r.sync != SyncState::Synced)
            .map(|r| r.name.as_str())
            .collect();
        let mut message = pods.describe();
        if !waiting.is_empty() {
            message.push_str(&format!("; waiting for {}", waiting.join(", ")));
        }
        if message != last {
            console.progress(&message);
            last = message;
        }
    };
    console.finish();
    let pods = PodCount::of(&objects, since);
    let mut text = String::new();
    let settled = settled(&rows) && pods.unreported == 0;
    text.push_str(&format!(
        "\n{} in {:.1} s: commit {}, {} applications, {}\n",
        if settled { "ready" } else { "still settling" },
        started.elapsed().as_secs_f64(),
        commit.get(..7).unwrap_or(&commit),
        rows.len(),
        pods.describe()
    ));
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(11);
    text.push_str(&format!(
        "  {:width$}   {:9}   {:11}   COMMIT\n",
        "APPLICATION", "SYNC", "HEALTH"
    ));
    for row in &rows {
        let sync = row.sync.as_str();
        text.push_str(&format!(
            "  {:width$}   {sync:9}   {:11}   {}",
            row.name,
            row.health.status.as_str(),
            row.commit
                .as_deref()
                .map_or("-", |c| c.get(..7).unwrap_or(c))
        ));
        if !row.health.message.is_empty() && row.health.status != Health::Healthy {
            text.push_str(&format!("   {}", row.health.message));
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "\nkubeconfig: {}\ntry:\n",
        summary.kubeconfig.display()
    ));
    for command in try_commands(
        &objects,
        &summary.kubeconfig,
        summary.dns,
        &summary.domain,
        summary.ingress,
    ) {
        text.push_str(&format!("  {command}\n"));
    }
    text.push_str(
        "following Git for new commits; Ctrl-C stops (the data directory keeps the state)",
    );
    console.say(&text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(object: Value, application: Option<&str>) -> StoredObject {
        StoredObject {
            object,
            applied: None,
            application: application.map(str::to_string),
        }
    }

    fn key(kind: Kind, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: "demo".into(),
            name: name.into(),
        }
    }

    fn pod(
        name: &str,
        owner: Option<&str>,
        node: Option<&str>,
        ready: bool,
    ) -> (ObjectKey, StoredObject) {
        let mut object =
            json!({"metadata": {"name": name}, "spec": {}, "status": {"phase": "Pending"}});
        if let Some(owner) = owner {
            object["metadata"]["ownerReferences"] = json!([{"kind": owner, "name": "x"}]);
        }
        if let Some(node) = node {
            object["spec"]["nodeName"] = json!(node);
        }
        if node.is_some() {
            object["status"]["conditions"] = json!([{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-11-21T10:00:05Z"}]);
        }
        if ready {
            object["status"]["phase"] = json!("Running");
        }
        (key(Kind::Pod, name), stored(object, None))
    }

    #[test]
    fn counts_pods_against_what_the_workloads_ask_for() {
        let objects = vec![
            (
                key(Kind::Deployment, "web"),
                stored(json!({"spec": {"replicas": 3}}), Some("web")),
            ),
            (
                key(Kind::StatefulSet, "kv"),
                stored(json!({"spec": {"replicas": 2}}), Some("kv")),
            ),
            pod("web-1", Some("ReplicaSet"), Some("node-1"), true),
            pod("web-2", Some("ReplicaSet"), Some("node-2"), false),
            pod("web-3", Some("ReplicaSet"), None, false),
            pod("kv-0", Some("StatefulSet"), Some("node-1"), true),
            pod("job-1", Some("Job"), Some("node-1"), false),
        ];
        let count = PodCount::of(&objects, "2026-11-21T10:00:00Z".parse().unwrap());
        assert_eq!(
            count,
            PodCount {
                wanted: 5,
                ready: 2,
                starting: 1,
                unscheduled: 1,
                unreported: 0,
            }
        );
        assert_eq!(
            count.describe(),
            "pods ready 2/5 (1 starting, 1 scheduling)"
        );
        // Statuses from before this start (a previous run) are not trusted yet.
        let later = PodCount::of(&objects, "2026-11-21T10:01:00Z".parse().unwrap());
        assert_eq!((later.ready, later.unreported), (0, 3));
        assert_eq!(
            later.describe(),
            "pods ready 0/5 (3 starting, 1 scheduling)"
        );
    }

    #[test]
    fn settles_only_when_nothing_is_progressing_or_waiting() {
        let row = |sync, status| Row {
            name: "web".into(),
            sync,
            health: ApplicationHealth {
                status,
                message: String::new(),
            },
            commit: None,
        };
        assert!(!settled(&[]));
        assert!(settled(&[row(SyncState::Synced, Health::Healthy)]));
        assert!(settled(&[row(SyncState::Failed, Health::Degraded)]));
        assert!(!settled(&[row(SyncState::Synced, Health::Progressing)]));
        assert!(!settled(&[row(SyncState::OutOfSync, Health::Healthy)]));
    }

    #[test]
    fn suggests_dig_and_curl_for_a_node_port_service() {
        let objects = vec![
            (
                key(Kind::Service, "kv"),
                stored(json!({"spec": {"clusterIP": "None"}}), Some("kv")),
            ),
            (
                key(Kind::Service, "web"),
                stored(
                    json!({"spec": {"clusterIP": "10.96.0.7", "ports": [{"port": 80, "nodePort": 30080}]}}),
                    Some("web"),
                ),
            ),
            (
                key(Kind::Ingress, "web"),
                stored(
                    json!({"spec": {"rules": [{"host": "web.localhost"}]}}),
                    Some("web"),
                ),
            ),
        ];
        let commands = try_commands(
            &objects,
            std::path::Path::new("/d/kubeconfig"),
            Some("127.0.0.1:1053".parse().unwrap()),
            "cluster.local",
            Some("0.0.0.0:80".parse().unwrap()),
        );
        assert_eq!(
            commands,
            [
                "kubectl --kubeconfig /d/kubeconfig get pods -A",
                "dig @127.0.0.1 -p 1053 +short web.demo.svc.cluster.local",
                "curl http://127.0.0.1:30080/",
                "curl http://web.localhost/",
            ]
        );
        let elsewhere = try_commands(
            &objects,
            std::path::Path::new("/d/kubeconfig"),
            None,
            "cluster.local",
            Some("127.0.0.1:8080".parse().unwrap()),
        );
        assert_eq!(
            elsewhere.last().map(String::as_str),
            Some("curl -H 'Host: web.localhost' http://127.0.0.1:8080/")
        );
    }
}
