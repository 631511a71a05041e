//! Running the control plane: `shipshape up`, and the one-shot `sync`, `suspend` and `resume`
//! that act on a stopped cluster's data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use kameo::actor::{ActorRef, Spawn};
use shipshape_actors::gitsync::{self, Outcome, Suspend};
use shipshape_actors::store::Batch;
use shipshape_actors::store_actor::Apply;
use shipshape_actors::{
    GitRef, GitSource, GitSync, Mirror, Store, StoreActor, SyncNow, SyncOptions, SyncReport, Write,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::data;
use crate::validate::plural;

/// Flags of `shipshape up` (those this build acts on).
#[derive(Args)]
pub struct UpArgs {
    /// This cluster's name in a fleet (a DNS label): it publishes its sync and health under
    /// refs/shipshape/status/NAME in the repository and takes a commit only when the waves of
    /// the repository's fleet.yaml let it. Without it the cluster follows the branch alone.
    #[arg(long, value_name = "NAME", value_parser = parse_cluster_name)]
    cluster_name: Option<String>,
    /// Labels fleet.yaml's selectors match: key=value,key=value (repeatable).
    #[arg(long, value_name = "K=V,…", requires = "cluster_name", value_parser = parse_cluster_labels)]
    cluster_label: Vec<BTreeMap<String, String>>,
    /// The Git repository holding the desired state: a local path or a URL (default: the
    /// repository containing the current directory).
    #[arg(long, value_name = "URL|PATH")]
    repo: Option<String>,
    /// Follow this branch (default: the local repository's checked-out branch, or the
    /// remote's default branch).
    #[arg(long, value_name = "B", conflicts_with_all = ["tag", "commit"])]
    branch: Option<String>,
    /// Follow this tag.
    #[arg(long, value_name = "T", conflicts_with = "commit")]
    tag: Option<String>,
    /// Stay on this commit.
    #[arg(long, value_name = "C")]
    commit: Option<String>,
    /// The folder inside the repository whose subfolders are applications (default:
    /// `examples-repo` when it exists, else the repository's top).
    #[arg(long, value_name = "DIR")]
    path: Option<String>,
    /// How often to poll the repository (e.g. 5s, 500ms, 1m).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_interval)]
    interval: Duration,
    /// Where the Kubernetes API (HTTPS) listens; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    api_listen: std::net::SocketAddr,
    /// How many nodes run in this process.
    #[arg(long, value_name = "N", default_value_t = 3)]
    nodes: usize,
    /// What runs the pods: `containerd` runs real containers (needs root, containerd, runc and
    /// the CNI plugins: `scripts/setup`); `simulated` nodes report pods Running without running
    /// anything (scale tests, trying shipshape without root).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Containerd)]
    runtime: RuntimeKind,
    /// containerd's socket (default: the system's if it answers, else shipshape starts and
    /// supervises its own with root, state and socket in the data directory).
    #[arg(long, value_name = "PATH")]
    pub(crate) containerd_socket: Option<PathBuf>,
    /// Import an image archive (OCI image layout or `docker save`) into every node at start;
    /// it is kept in the data directory and imported again at every later start. Repeatable.
    #[arg(long = "import", value_name = "FILE.tar")]
    pub(crate) imports: Vec<PathBuf>,
    /// Registry mirrors, rewrites, credentials and TLS per host, in k3s' `registries.yaml`
    /// format: how an air-gapped or rate-limited site runs public manifests unchanged.
    #[arg(long, value_name = "FILE")]
    pub(crate) registry_config: Option<PathBuf>,
    /// Pull a registry that has mirrors from its mirrors only, never from the registry itself
    /// (k3s' flag of that name): what an air-gapped site wants.
    #[arg(long)]
    pub(crate) disable_default_registry_endpoint: bool,
    /// Disk usage (percent of the filesystem containerd keeps content on) at which unused
    /// images are removed, as the kubelet's flag of that name; 100 never removes any.
    #[arg(long, value_name = "PERCENT", default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) image_gc_high_threshold: u8,
    /// Disk usage image garbage collection brings it back to (below the high threshold).
    #[arg(long, value_name = "PERCENT", default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) image_gc_low_threshold: u8,
    /// An image first seen less than this long ago is never removed (it may be about to run).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_age)]
    pub(crate) image_minimum_gc_age: Duration,
    /// On stop, leave the pods' containers running; the next `up` adopts them. Without it,
    /// stopping removes every container, network namespace and bridge the nodes made.
    #[arg(long)]
    keep_workloads: bool,
    /// The cluster's DNS domain (pods' resolv.conf search path).
    #[arg(long, value_name = "D", default_value = "cluster.local")]
    pub(crate) cluster_domain: String,
    /// The block Service addresses come from; the cluster DNS is its tenth address.
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/16")]
    pub(crate) service_cidr: shipshape_node::Cidr,
    /// Where the cluster DNS answers on the host (`dig @127.0.0.1 -p 1053 NAME`); port 0 picks
    /// a free one. Pods reach it on their node's gateway and at the DNS service address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1053")]
    dns_listen: std::net::SocketAddr,
    /// Pass names outside the cluster domain to this DNS server (default: refuse them).
    #[arg(long, value_name = "ADDR", value_parser = parse_upstream)]
    dns_upstream: Option<std::net::SocketAddr>,
    /// Addresses for LoadBalancer Services, written to their status.loadBalancer (e.g.
    /// 10.200.0.1-10.200.0.50 or 10.200.0.0/28); without it they stay pending.
    #[arg(long, value_name = "RANGE")]
    lb_pool: Option<shipshape_reconciler::services::LoadBalancerPool>,
    /// Where the ingress controller serves plain HTTP, or `off` (default: 0.0.0.0:80 with
    /// containerd nodes, as k3s' Traefik; off with simulated ones, whose pods answer nothing).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen)]
    ingress_http: Option<Listen>,
    /// Where the ingress controller serves HTTPS, or `off` (default: 0.0.0.0:443 with
    /// containerd nodes; off with simulated ones).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen)]
    ingress_https: Option<Listen>,
    /// The block each node's /24 of pod addresses comes from.
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16")]
    pod_cidr: shipshape_node::Cidr,
    /// Each node's cpu (e.g. 2, 500m; default: the host's cpus split between the nodes).
    #[arg(long, value_name = "N")]
    node_cpu: Option<shipshape_api::quantity::Quantity>,
    /// Each node's memory (e.g. 4Gi; default: the host's memory split between the nodes).
    #[arg(long, value_name = "Q")]
    node_memory: Option<shipshape_api::quantity::Quantity>,
    /// How long a node's lease lasts (it renews every quarter of it); a node silent for longer
    /// is marked NotReady.
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = parse_interval)]
    lease_duration: Duration,
    /// How long a node may stay unreachable before its pods are evicted and replaced
    /// elsewhere (Kubernetes' default tolerationSeconds).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_interval)]
    eviction_timeout: Duration,
    /// Run CronJob schedules this many times faster than the wall clock (for tests and demos: 60
    /// makes a one-minute schedule fire every second).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3600))]
    cronjob_time_scale: u32,
    /// Simulated runtime: how long a bound pod takes to report Running.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_interval)]
    pod_start_delay: Duration,
}

/// A listener flag's value: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listen {
    /// Not listening.
    Off,
    /// Listening here.
    At(std::net::SocketAddr),
}

fn parse_listen(text: &str) -> Result<Listen, String> {
    if text == "off" {
        return Ok(Listen::Off);
    }
    text.parse().map(Listen::At).map_err(|_| {
        format!("{text:?} is not an address with a port (0.0.0.0:80, 127.0.0.1:8080) or off")
    })
}

impl UpArgs {
    /// Where the ingress listens: (HTTP, HTTPS), each `None` when off.
    pub(crate) fn ingress_listeners(
        &self,
    ) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        let real = self.runtime == RuntimeKind::Containerd;
        let pick = |flag: Option<Listen>, port: u16| match flag {
            Some(Listen::At(address)) => Some(address),
            Some(Listen::Off) => None,
            None => real.then(|| std::net::SocketAddr::from(([0, 0, 0, 0], port))),
        };
        (pick(self.ingress_http, 80), pick(self.ingress_https, 443))
    }
}

/// The runtimes `--runtime` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Real containers on containerd.
    Containerd,
    /// Nodes that only pretend to run pods.
    Simulated,
}

/// The host's cpus (millicores) and memory (bytes), for splitting between in-process nodes.
fn host_resources() -> (u64, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(4 << 30, |kib| kib * 1024);
    (cpus * 1000, memory)
}

impl UpArgs {
    /// The simulated nodes these flags describe.
    pub(crate) fn simulated(&self) -> anyhow::Result<shipshape_node::SimulatedConfig> {
        let nodes = self.nodes.max(1) as u64;
        let (host_cpu, host_memory) = host_resources();
        let cpu_milli = match &self.node_cpu {
            Some(q) => u64::try_from(q.milli()).context("--node-cpu must not be negative")?,
            None => (host_cpu / nodes).max(1),
        };
        let memory = match &self.node_memory {
            Some(q) => u64::try_from(q.units()).context("--node-memory must not be negative")?,
            None => (host_memory / nodes).max(1 << 20),
        };
        if self
            .pod_cidr
            .node_subnet(self.nodes.saturating_sub(1))
            .is_none()
        {
            bail!(
                "--pod-cidr {} holds {} node subnets (/24 each), fewer than --nodes {}: pass a larger block",
                self.pod_cidr,
                1usize << (24 - self.pod_cidr.prefix),
                self.nodes
            );
        }
        Ok(shipshape_node::SimulatedConfig {
            nodes: self.nodes,
            cpu_milli,
            memory,
            max_pods: 110,
            pod_cidr: self.pod_cidr,
            start_delay: self.pod_start_delay,
            lease_duration: self.lease_duration,
        })
    }
}

/// A DNS server address; the port defaults to 53.
fn parse_upstream(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
        .map_err(|_| format!("{text:?} is not an address (e.g. 192.0.2.53 or 127.0.0.1:5300)"))
}

fn parse_cluster_name(text: &str) -> Result<String, String> {
    shipshape_api::fleet::cluster_name(text).map(|()| text.to_string())
}

fn parse_cluster_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    shipshape_api::fleet::parse_labels(text)
}

/// Where the cluster's fleet identity is kept, so `sync` on a stopped cluster honours its wave.
const CLUSTER_META: &str = "fleet/cluster";

/// Records (or, with no name, forgets) this cluster's fleet identity in `store`.
fn remember_cluster(store: &mut Store, args: &UpArgs) -> anyhow::Result<()> {
    let identity = args
        .cluster_name
        .as_ref()
        .map(|name| shipshape_api::fleet::ClusterIdentity {
            name: name.clone(),
            labels: args
                .cluster_label
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
    remember_identity(store, identity)
}

/// Records `identity` as the cluster's fleet identity (`None`: it is in no fleet), read by
/// [`ControlPlane::start`].
pub(crate) fn remember_identity(
    store: &mut Store,
    identity: Option<shipshape_api::fleet::ClusterIdentity>,
) -> anyhow::Result<()> {
    let value = match identity {
        Some(identity) => serde_json::to_value(identity)?,
        None => serde_json::Value::Null,
    };
    let batch = Batch {
        writes: vec![Write::SetMeta {
            key: CLUSTER_META.into(),
            value,
        }],
        audit: None,
    };
    store.apply(batch, jiff::Timestamp::now())?;
    Ok(())
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 5s, 500ms, 1m)"))?;
    let duration = Duration::try_from(duration).map_err(|_| "must not be negative".to_string())?;
    if duration < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(duration)
}

/// A duration that may be zero (`0s`, `2m`).
fn parse_age(text: &str) -> Result<Duration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 0s, 30s, 2m)"))?;
    Duration::try_from(duration).map_err(|_| "must not be negative".to_string())
}

/// The nearest folder at or above `start` that holds a `.git`.
fn enclosing_repository(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The Git source `up` follows, with DESIGN.md's defaults.
pub(crate) fn resolve_source(args: &UpArgs) -> anyhow::Result<GitSource> {
    let repo = match &args.repo {
        Some(repo) => repo.clone(),
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            match enclosing_repository(&cwd) {
                Some(repo) => repo.display().to_string(),
                None => bail!(
                    "no Git repository here: run inside one, or pass --repo PATH|URL (the repository holding your manifests)"
                ),
            }
        }
    };
    let local = (!repo.contains("://")).then(|| PathBuf::from(&repo));
    if let Some(dir) = &local
        && git2::Repository::open(dir).is_err()
    {
        bail!(
            "{repo} is not a Git repository: pass --repo with the repository holding your manifests"
        );
    }
    let reference = match (&args.branch, &args.tag, &args.commit) {
        (Some(branch), _, _) => GitRef::Branch(branch.clone()),
        (_, Some(tag), _) => GitRef::Tag(tag.clone()),
        (_, _, Some(commit)) => GitRef::Commit(commit.clone()),
        _ => match &local {
            Some(dir) => {
                let checkout = git2::Repository::open(dir).context("cannot open the repository")?;
                let head = checkout
                    .head()
                    .ok()
                    .filter(git2::Reference::is_branch)
                    .and_then(|head| head.shorthand().ok().map(str::to_string));
                match head {
                    Some(branch) => GitRef::Branch(branch),
                    None => {
                        bail!("{repo} has no branch checked out: pass --branch, --tag or --commit")
                    }
                }
            }
            None => GitRef::DefaultBranch,
        },
    };
    let path = match &args.path {
        Some(path) => path.trim_matches('/').to_string(),
        None => match &local {
            Some(dir) if dir.join("examples-repo").is_dir() => "examples-repo".into(),
            _ => String::new(),
        },
    };
    Ok(GitSource {
        url: repo,
        reference,
        path,
    })
}

/// The running control plane's actors.
pub(crate) struct ControlPlane {
    store: ActorRef<StoreActor>,
    sync: ActorRef<GitSync>,
    workloads: Option<crate::workloads::Workloads>,
}

impl ControlPlane {
    pub(crate) fn start(data_dir: &Path, store: Store, source: GitSource) -> anyhow::Result<Self> {
        let mut mirror = Mirror::open(&gitsync::mirror_dir(data_dir), source)?;
        let cluster = store
            .get_meta(CLUSTER_META)?
            .and_then(|v| serde_json::from_value::<shipshape_api::fleet::ClusterIdentity>(v).ok());
        if let Some(cluster) = cluster {
            mirror = mirror.with_cluster(cluster);
        }
        let store = StoreActor::spawn(StoreActor::new(store));
        let sync = GitSync::spawn(GitSync::new(mirror, store.clone()));
        Ok(Self {
            store,
            sync,
            workloads: None,
        })
    }

    /// Starts the controllers, the scheduler and the nodes: what turns stored objects into
    /// running pods.
    pub(crate) fn start_workloads(
        &mut self,
        nodes: crate::workloads::Nodes,
        args: &UpArgs,
        data_dir: &Path,
    ) -> anyhow::Result<()> {
        let range = shipshape_reconciler::services::ServiceRange {
            base: args.service_cidr.base,
            prefix: args.service_cidr.prefix,
        };
        let network = crate::workloads::ServiceNetwork {
            range,
            zone: shipshape_dns::ZoneConfig {
                domain: args.cluster_domain.clone(),
                ttl: 5,
                service_cidr: (args.service_cidr.base, args.service_cidr.prefix),
                pod_cidr: (args.pod_cidr.base, args.pod_cidr.prefix),
                dns_ip: range.dns(),
            },
            dns_listen: args.dns_listen,
            dns_upstream: args.dns_upstream,
            pod_cidr: args.pod_cidr,
            lb_pool: args.lb_pool,
            ingress: args.ingress_listeners(),
            cronjob_time_scale: args.cronjob_time_scale,
            data_dir: data_dir.to_path_buf(),
        };
        let workloads = crate::workloads::Workloads::start(
            &self.store,
            nodes,
            &network,
            args.lease_duration,
            args.eviction_timeout,
        )?;
        let (http, https) = workloads.ingress_addresses();
        let served: Vec<String> = http
            .map(|a| format!("http://{a}"))
            .into_iter()
            .chain(https.map(|a| format!("https://{a}")))
            .collect();
        if !served.is_empty() {
            eprintln!(
                "ingress (class shipshape) on {}; access log in {}",
                served.join(" and "),
                data_dir.join("ingress/access.log").display()
            );
        }
        if let Some(address) = workloads.dns_address() {
            eprintln!(
                "cluster DNS on {address} for {domain} (try: dig @{} -p {} SERVICE.NAMESPACE.svc.{domain})",
                address.ip(),
                address.port(),
                domain = args.cluster_domain
            );
        }
        self.workloads = Some(workloads);
        Ok(())
    }

    /// The Git sync actor, for syncing from a task of its own.
    pub(crate) fn syncer(&self) -> ActorRef<GitSync> {
        self.sync.clone()
    }

    /// The store actor, for reading what the cluster holds.
    pub(crate) fn store(&self) -> &ActorRef<StoreActor> {
        &self.store
    }

    pub(crate) async fn sync(&self, options: SyncOptions) -> anyhow::Result<SyncReport> {
        match self.sync.ask(SyncNow(options)).await {
            Ok(report) => Ok(report),
            Err(kameo::error::SendError::HandlerError(error)) => Err(error.into()),
            Err(error) => bail!("the Git sync stopped: {error}"),
        }
    }

    /// Stops everything; real nodes remove their pods' containers unless `keep_workloads`.
    pub(crate) async fn stop(self, keep_workloads: bool) {
        if let Some(workloads) = self.workloads {
            workloads.stop(keep_workloads).await;
        }
        let _ = self.sync.stop_gracefully().await;
        self.sync.wait_for_shutdown().await;
        let _ = self.store.stop_gracefully().await;
        self.store.wait_for_shutdown().await;
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What a sync did, as lines to print (empty when nothing is new); `seen` keeps the last
/// outcome per application so that a repeated failure or an unchanged application is not
/// printed again every poll.
fn report_lines(report: &SyncReport, seen: &mut BTreeMap<String, Outcome>) -> Vec<String> {
    let mut lines = Vec::new();
    let news: Vec<&(String, Outcome)> = report
        .applications
        .iter()
        .filter(|(name, outcome)| *outcome != Outcome::Unchanged && seen.get(name) != Some(outcome))
        .collect();
    if !news.is_empty() || report.rewritten {
        lines.push(format!(
            "commit {} \"{}\" by {}{}",
            report.commit.short(),
            report.commit.message,
            report.commit.author,
            if report.rewritten {
                " (history rewritten: applying what it declares)"
            } else {
                ""
            }
        ));
    }
    let width = news.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, outcome) in news {
        let line = match outcome {
            Outcome::Applied {
                created,
                updated,
                pruned,
                unchanged,
            } => {
                let mut parts = Vec::new();
                for (n, word) in [
                    (created, "created"),
                    (updated, "updated"),
                    (pruned, "pruned"),
                    (unchanged, "unchanged"),
                ] {
                    if *n > 0 {
                        parts.push(format!("{n} {word}"));
                    }
                }
                if parts.is_empty() {
                    parts.push("no objects".into());
                }
                format!("Synced     {}", parts.join(", "))
            }
            Outcome::Unchanged => "Synced     unchanged".into(),
            Outcome::Failed(problems) => {
                let mut text = format!(
                    "Failed     {} (stays on its last good commit)",
                    plural(problems.len(), "problem")
                );
                for problem in problems {
                    text.push_str(&format!("\n  {:width$}   {problem}", ""));
                }
                text
            }
            Outcome::Held(n) => format!(
                "OutOfSync  held: the commit would prune all {n} objects; run `shipshape sync --allow-empty` to allow it"
            ),
            Outcome::Suspended => "OutOfSync  suspended (`shipshape resume` restarts it)".into(),
            Outcome::Retry(why) => format!("OutOfSync  retrying: {why}"),
        };
        lines.push(format!("  {name:width$}   {line}"));
    }
    for (name, outcome) in &report.applications {
        seen.insert(name.clone(), outcome.clone());
    }
    lines
}

/// Prints what a sync did (see `report_lines`).
fn print_report(report: &SyncReport, seen: &mut BTreeMap<String, Outcome>) {
    for line in report_lines(report, seen) {
        eprintln!("{line}");
    }
    for line in fleet_lines(report.held.as_deref(), report.publish_error.as_deref()) {
        eprintln!("{line}");
    }
}

/// A fleet member's notes on a sync: what its wave holds back, a status it could not publish.
fn fleet_lines(held: Option<&str>, publish_error: Option<&str>) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(held) = held {
        lines.push(format!("fleet: holding {held}"));
    }
    if let Some(error) = publish_error {
        lines.push(format!(
            "fleet: this cluster's status is not published: {error} (the next poll tries again)"
        ));
    }
    lines
}

pub fn up(args: &UpArgs, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let started_at = jiff::Timestamp::now();
    let nodes = args.simulated()?;
    let source = resolve_source(args)?;
    // Before anything starts: a host that cannot run pods is one line naming what is missing.
    let cni_dir = match args.runtime {
        RuntimeKind::Containerd => Some(shipshape_node::containerd::check_host()?),
        RuntimeKind::Simulated => None,
    };
    let data_dir = data::data_dir(data_dir)?;
    let mut store = data::open_store(&data_dir)?;
    remember_cluster(&mut store, args)?;
    runtime()?.block_on(async move {
        // Listening once, first, keeps a Ctrl-C (or a service manager's SIGTERM) that arrives
        // while starting or during a sync: the loop below sees it, and stopping cleans up.
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut plane = ControlPlane::start(&data_dir, store, source.clone())?;
        let remember = Batch {
            writes: vec![Write::SetMeta {
                key: GitSource::META_KEY.into(),
                value: serde_json::to_value(&source)?,
            }],
            audit: None,
        };
        plane
            .store
            .ask(Apply(remember))
            .await
            .map_err(|e| anyhow::anyhow!("cannot record the Git source: {e}"))?;
        let credentials = shipshape_actors::api::tls::prepare(&data_dir)?;
        let api = match shipshape_actors::api::serve(args.api_listen, &credentials, plane.store.clone(), plane.sync.clone(), Some(&data_dir)).await {
            Ok(api) => api,
            Err(error) => {
                plane.stop(true).await;
                return Err(error.into());
            }
        };
        let kubeconfig = shipshape_actors::api::tls::write_kubeconfig(&data_dir, &credentials, api.address)?;
        let path = if source.path.is_empty() { String::new() } else { format!(", path {}", source.path) };
        eprintln!(
            "shipshape up: following {} of {}{path}, polling every {:?}; data in {}",
            source.describe_reference(),
            source.url,
            args.interval,
            data_dir.display()
        );
        eprintln!("API server on https://{}", api.address);
        let cpu = shipshape_api::quantity::Quantity::from_milli(i64::try_from(nodes.cpu_milli).unwrap_or(i64::MAX));
        let containerd = match cni_dir {
            None => {
                eprintln!(
                    "nodes: {} simulated (node-1 … node-{}), {cpu} cpu and {} MiB each; pods report Running after {:?} without running",
                    nodes.nodes,
                    nodes.nodes,
                    nodes.memory >> 20,
                    nodes.start_delay
                );
                if let Err(error) = plane.start_workloads(crate::workloads::Nodes::Simulated(nodes.clone()), args, &data_dir) {
                    api.stop().await;
                    plane.stop(true).await;
                    return Err(error);
                }
                None
            }
            Some(cni_dir) => {
                let started = crate::images::start_containerd(args, &nodes, &data_dir, cni_dir).await;
                let (containerd, real) = match started {
                    Ok(started) => started,
                    Err(error) => {
                        api.stop().await;
                        plane.stop(true).await;
                        return Err(error);
                    }
                };
                eprintln!(
                    "nodes: {} on containerd {} ({}; namespaces shipshape-node-1 …), {cpu} cpu and {} MiB each, pod subnets from {}",
                    nodes.nodes,
                    containerd.version(),
                    containerd.socket().display(),
                    nodes.memory >> 20,
                    nodes.pod_cidr,
                );
                if let Err(error) = plane.start_workloads(real, args, &data_dir) {
                    api.stop().await;
                    plane.stop(true).await;
                    containerd.stop().await;
                    return Err(error);
                }
                if let Some(exec) = plane.workloads.as_ref().and_then(|w| w.exec(&data_dir)) {
                    api.provide_exec(exec);
                    api.provide_ports(shipshape_node::portforward::provider());
                }
                Some(containerd)
            }
        };
        let console = crate::startup::Console::new();
        let (synced, first_sync) = tokio::sync::watch::channel(None);
        let startup = tokio::spawn(crate::startup::watch(
            plane.store.clone(),
            first_sync,
            console.clone(),
            crate::startup::Summary {
                started,
                started_at,
                fresh_statuses: containerd.is_some(),
                kubeconfig: kubeconfig.clone(),
                dns: plane.workloads.as_ref().and_then(|w| w.dns_address()),
                domain: args.cluster_domain.clone(),
                ingress: plane.workloads.as_ref().and_then(|w| w.ingress_addresses().0),
            },
        ));
        console.say(&format!("syncing {} of {} …", source.describe_reference(), source.url));
        let mut seen = BTreeMap::new();
        let mut last_error = None;
        let mut last_fleet = (None, None);
        let mut ticker = tokio::time::interval(args.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
                _ = ticker.tick() => {
                    match plane.sync(SyncOptions::default()).await {
                        Ok(report) => {
                            last_error = None;
                            for line in report_lines(&report, &mut seen) {
                                console.say(&line);
                            }
                            let notes = (report.held.clone(), report.publish_error.clone());
                            if notes != last_fleet {
                                for line in fleet_lines(notes.0.as_deref(), notes.1.as_deref()) {
                                    console.say(&line);
                                }
                                last_fleet = notes;
                            }
                            if report.waiting {
                                continue;
                            }
                            synced.send_if_modified(|commit| {
                                commit.is_none().then(|| *commit = Some(report.commit.id.clone())).is_some()
                            });
                        }
                        Err(error) => {
                            let text = format!("{error:#}");
                            if last_error.as_ref() != Some(&text) {
                                console.say(&format!("sync failed: {text} (the cluster keeps its state; retrying every {:?})", args.interval));
                            }
                            last_error = Some(text);
                        }
                    }
                }
            }
        }
        startup.abort();
        console.finish();
        if containerd.is_some() && !args.keep_workloads {
            eprintln!("shipshape up: stopping (removing the pods' containers; --keep-workloads leaves them running)");
        } else {
            eprintln!("shipshape up: stopping");
        }
        api.stop().await;
        plane.stop(args.keep_workloads).await;
        if let Some(containerd) = containerd {
            crate::images::forget_runtime(&data_dir);
            containerd.stop().await;
        }
        eprintln!(
            "shipshape up: stopped. {} keeps the cluster's state; `shipshape up` resumes from it.",
            data_dir.display()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// The Git source the cluster in `data_dir` follows, as `up` recorded it.
fn recorded_source(store: &Store) -> anyhow::Result<GitSource> {
    let value = store.get_meta(GitSource::META_KEY)?;
    let Some(value) = value else {
        bail!("this data directory has never run `shipshape up`: there is nothing to sync");
    };
    Ok(serde_json::from_value(value)?)
}

/// Prints the sync report a running cluster's API server returns, like `print_report`.
fn print_remote_report(report: &serde_json::Value) -> bool {
    let commit = &report["commit"];
    let id = commit["id"].as_str().unwrap_or_default();
    eprintln!(
        "commit {} \"{}\" by {}",
        id.get(..7).unwrap_or(id),
        commit["message"].as_str().unwrap_or_default(),
        commit["author"].as_str().unwrap_or_default()
    );
    let mut failed = false;
    let width = report["applications"]
        .as_object()
        .map_or(0, |apps| apps.keys().map(String::len).max().unwrap_or(0));
    for (name, outcome) in report["applications"].as_object().into_iter().flatten() {
        let result = outcome["result"].as_str().unwrap_or_default();
        failed |= result == "Failed" || outcome.get("held").is_some();
        let mut details = Vec::new();
        for word in ["created", "updated", "pruned", "unchanged"] {
            match &outcome[word] {
                serde_json::Value::Number(n) if n.as_u64() != Some(0) => {
                    details.push(format!("{n} {word}"))
                }
                serde_json::Value::Bool(true) => details.push(word.to_string()),
                _ => {}
            }
        }
        if let Some(held) = outcome["held"].as_u64() {
            details.push(format!("held: the commit would prune all {held} objects; run `shipshape sync --allow-empty` to allow it"));
        }
        if outcome["suspended"] == true {
            details.push("suspended".into());
        }
        for problem in outcome["problems"].as_array().into_iter().flatten() {
            details.push(format!("\n      {}", problem.as_str().unwrap_or_default()));
        }
        eprintln!("  {name:width$}   {result:9}  {}", details.join(", "));
    }
    for line in fleet_lines(report["held"].as_str(), report["publishError"].as_str()) {
        eprintln!("{line}");
    }
    failed
}

/// `shipshape sync [--allow-empty]`: through the API server of a running cluster, or one sync
/// of a stopped cluster's recorded repository.
pub fn sync_once(allow_empty: bool, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let data_dir = data::data_dir(data_dir)?;
    let store = match data::connect(&data_dir)? {
        data::Cluster::Running(remote) => {
            let path = if allow_empty {
                "/apis/shipshape.dev/v1/sync?allowEmpty=true"
            } else {
                "/apis/shipshape.dev/v1/sync"
            };
            let failed = print_remote_report(&remote.post(path)?);
            return Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        data::Cluster::Stopped(store) => store,
    };
    let source = recorded_source(&store)?;
    runtime()?.block_on(async move {
        let plane = ControlPlane::start(&data_dir, store, source)?;
        let result = plane.sync(SyncOptions { allow_empty }).await;
        plane.stop(true).await;
        let report = result?;
        print_report(&report, &mut BTreeMap::new());
        let failed = report
            .applications
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Failed(_) | Outcome::Held(_)));
        if report
            .applications
            .iter()
            .all(|(_, o)| *o == Outcome::Unchanged)
        {
            eprintln!(
                "commit {}: every application is in sync",
                report.commit.short()
            );
        }
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// `shipshape suspend APP` / `resume APP`.
pub fn set_suspended(
    application: &str,
    suspended: bool,
    data_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let data_dir = data::data_dir(data_dir)?;
    let verb = if suspended { "suspend" } else { "resume" };
    let done = || {
        eprintln!(
            "{application}: {}",
            if suspended {
                "suspended: syncs skip it until `shipshape resume`"
            } else {
                "resumed: the next sync applies its newest commit"
            }
        );
        Ok(ExitCode::SUCCESS)
    };
    let store = match data::connect(&data_dir)? {
        data::Cluster::Running(remote) => {
            remote.post(&format!(
                "/apis/shipshape.dev/v1/applications/{application}/{verb}"
            ))?;
            return done();
        }
        data::Cluster::Stopped(store) => store,
    };
    let source = recorded_source(&store)?;
    if store.get_meta(&gitsync::status_key(application))?.is_none() {
        let known: Vec<String> = store
            .list_meta(gitsync::APP_META_PREFIX)?
            .keys()
            .filter_map(|k| k.strip_prefix(gitsync::APP_META_PREFIX).map(str::to_string))
            .collect();
        bail!(
            "no application {application:?} (known: {})",
            known.join(", ")
        );
    }
    runtime()?.block_on(async move {
        let plane = ControlPlane::start(&data_dir, store, source)?;
        let result = plane
            .sync
            .ask(Suspend {
                application: application.into(),
                suspended,
            })
            .await;
        plane.stop(true).await;
        result.map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok::<(), anyhow::Error>(())
    })?;
    done()
}
