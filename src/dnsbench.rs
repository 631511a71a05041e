//! `shipshape bench` DNS figures: the cluster DNS under `dnsperf` against BIND 9 serving the
//! same records in the same run, and the delay from an Endpoints change to the new answer.
//!
//! Both servers listen on loopback only; dnsperf asks each the same names (one client thread,
//! 4 sockets, 200 queries outstanding: the anchor in HOST-FACTS.md). BIND runs with one worker
//! thread (`named -n 1`), as the anchor was measured.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use kameo::actor::{ActorRef, Spawn};
use serde_json::json;
use shipshape_actors::controller::ControllerActor;
use shipshape_actors::store::{Batch, Write};
use shipshape_actors::store_actor::Apply;
use shipshape_actors::{Store, StoreActor};
use shipshape_dns::{DnsServer, DnsView, ZoneCell, ZoneConfig};

use crate::bench::ms;

/// What the DNS benchmark measured.
pub(crate) struct DnsFigures {
    records: usize,
    seconds: u64,
    /// None: dnsperf is not installed.
    ours: Option<f64>,
    /// BIND's rate with one worker thread, then with one per core.
    bind: Option<(f64, f64)>,
    cores: usize,
    /// Endpoints change asked of the store → new answer, per round.
    delays: Vec<Duration>,
    /// Of which the durable store write, per round.
    writes: Vec<Duration>,
}

impl DnsFigures {
    pub(crate) fn print(&self) {
        println!(
            "cluster DNS, dnsperf for {} s per server, {} A records (1 client thread, 4 sockets, 200 outstanding):",
            self.seconds, self.records
        );
        match self.ours {
            Some(ours) => {
                println!("  shipshape (hickory-server)   {ours:>10.0} queries/s");
                match self.bind {
                    Some((one, all)) => {
                        println!("  BIND 9 (named -n 1)          {one:>10.0} queries/s");
                        println!(
                            "  BIND 9 (named -n {})          {all:>10.0} queries/s",
                            self.cores
                        );
                        println!(
                            "  ratio shipshape / BIND -n 1: {:.2}x (goal: at least 1x); / BIND -n {}: {:.2}x",
                            ours / one.max(1.0),
                            self.cores,
                            ours / all.max(1.0)
                        );
                        println!(
                            "    (shipshape answers UDP on {} threads; dnsperf shares the same cores)",
                            self.cores
                        );
                    }
                    None => println!(
                        "  BIND 9: not installed, no ratio (apt-get install bind9, or run scripts/setup)"
                    ),
                }
            }
            None => println!(
                "  dnsperf: not installed, no rates (apt-get install dnsperf, or run scripts/setup)"
            ),
        }
        let median = |values: &[Duration]| {
            let mut values = values.to_vec();
            values.sort();
            values.get(values.len() / 2).copied().unwrap_or_default()
        };
        if let (Some(first), Some(last)) = (self.delays.iter().min(), self.delays.iter().max()) {
            println!(
                "  Endpoints change to new answer: median {}, min {}, max {} over {} changes (goal: within 100 ms);",
                ms(median(&self.delays)),
                ms(*first),
                ms(*last),
                self.delays.len()
            );
            println!(
                "    of which the durable store write: median {}",
                ms(median(&self.writes))
            );
        }
    }
}

fn config() -> ZoneConfig {
    ZoneConfig {
        domain: "cluster.local".into(),
        ttl: 5,
        service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
        pod_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
        dns_ip: Ipv4Addr::new(10, 96, 0, 10),
    }
}

/// The address of benchmark Service `i`.
fn service_ip(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i + 100).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + n)
}

fn service(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"clusterIP": service_ip(i).to_string(), "ports": [{"name": "http", "port": 80}]},
    })
}

fn endpoints(round: u8) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "moving", "namespace": "bench"},
        "subsets": [{"addresses": [{"ip": format!("10.244.200.{round}")}], "ports": [{"port": 80}]}],
    })
}

async fn apply(store: &ActorRef<StoreActor>, writes: Vec<Write>) -> anyhow::Result<()> {
    store
        .ask(Apply(Batch {
            writes,
            audit: None,
        }))
        .await
        .map_err(|e| anyhow::anyhow!("store write: {e}"))?;
    Ok(())
}

fn create(object: serde_json::Value) -> Write {
    Write::Create {
        object,
        applied: None,
        application: None,
    }
}

/// One UDP question; the A addresses in the answer.
fn ask(socket: &UdpSocket, server: SocketAddr, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let mut message = Message::query();
    message.metadata.id = 7;
    message.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    socket.send_to(&message.to_vec()?, server)?;
    let mut buffer = [0u8; 1500];
    let (len, _) = socket.recv_from(&mut buffer)?;
    let reply = Message::from_vec(&buffer[..len])?;
    Ok(reply
        .answers
        .iter()
        .filter_map(|r| match r.data.ip_addr() {
            Some(std::net::IpAddr::V4(v4)) => Some(v4),
            _ => None,
        })
        .collect())
}

/// Runs dnsperf against `server` and returns its queries per second.
fn dnsperf(server: SocketAddr, queries: &Path, seconds: u64) -> anyhow::Result<f64> {
    let output = Command::new("dnsperf")
        .arg("-s")
        .arg(server.ip().to_string())
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-d")
        .arg(queries)
        .args([
            "-l",
            &seconds.to_string(),
            "-c",
            "4",
            "-T",
            "1",
            "-q",
            "200",
        ])
        .stdin(Stdio::null())
        .output()
        .context("cannot run dnsperf")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let qps = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Queries per second:"))
        .and_then(|n| n.trim().parse::<f64>().ok());
    let lost = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Queries lost:"))
        .map(str::trim)
        .unwrap_or("?");
    match qps {
        Some(qps) => {
            tracing::debug!(%server, qps, lost, "dnsperf");
            Ok(qps)
        }
        None => bail!(
            "dnsperf printed no rate for {server}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// BIND 9 on loopback serving the same records; killed when dropped.
struct Bind {
    child: std::process::Child,
    address: SocketAddr,
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_bind(root: &Path, records: usize, threads: usize) -> anyhow::Result<Option<Bind>> {
    let named = ["/usr/sbin/named", "named"]
        .into_iter()
        .find(|path| Command::new(path).arg("-v").output().is_ok());
    let Some(named) = named else {
        return Ok(None);
    };
    let dir = root.join(format!("bind-{threads}"));
    std::fs::create_dir_all(&dir)?;
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut zone = String::from(
        "$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n\
         @ IN NS ns.dns.cluster.local.\nns.dns IN A 10.96.0.10\n",
    );
    for i in 0..records {
        zone.push_str(&format!("svc-{i}.bench.svc IN A {}\n", service_ip(i)));
    }
    std::fs::write(dir.join("cluster.local.zone"), zone)?;
    let conf = format!(
        "options {{ directory \"{dir}\"; pid-file \"{dir}/named.pid\"; listen-on port {port} {{ 127.0.0.1; }};\n\
         listen-on-v6 {{ none; }}; recursion no; allow-query {{ any; }}; notify no; }};\n\
         zone \"cluster.local\" {{ type primary; file \"{dir}/cluster.local.zone\"; }};\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("named.conf"), conf)?;
    let child = Command::new(named)
        .args(["-g", "-n", &threads.to_string(), "-c"])
        .arg(dir.join("named.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("named.log"))?)
        .spawn()
        .context("cannot start named")?;
    let bind = Bind {
        child,
        address: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ask(&socket, bind.address, "svc-0.bench.svc.cluster.local.").is_ok_and(|a| !a.is_empty())
        {
            return Ok(Some(bind));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join("named.log")).unwrap_or_default();
    bail!(
        "BIND did not answer on {} within 20 s: {}",
        bind.address,
        log.lines().last().unwrap_or("")
    )
}

/// Measures the cluster DNS (and BIND, when installed) with `records` Services.
pub(crate) async fn run(root: &Path, records: usize, seconds: u64) -> anyhow::Result<DnsFigures> {
    let store = StoreActor::spawn(StoreActor::new(Store::open(&root.join("dns.redb"))?));
    let cell = ZoneCell::new(&config());
    let view = ControllerActor::start(DnsView::new(config(), cell.clone()), store.clone());
    let server = DnsServer::start(cell.clone(), &["127.0.0.1:0".parse()?], None)?;
    let address = server.addresses()[0];

    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}});
    apply(&store, vec![create(namespace)]).await?;
    for chunk in (0..records).collect::<Vec<_>>().chunks(500) {
        apply(&store, chunk.iter().map(|&i| create(service(i))).collect()).await?;
    }
    let moving = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "moving", "namespace": "bench"},
        "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
    });
    apply(&store, vec![create(moving), create(endpoints(1))]).await?;

    let figures = tokio::task::spawn_blocking({
        let root = root.to_path_buf();
        let store = store.clone();
        let handle = tokio::runtime::Handle::current();
        move || -> anyhow::Result<DnsFigures> {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            let last = format!("svc-{}.bench.svc.cluster.local.", records.saturating_sub(1));
            let deadline = Instant::now() + Duration::from_secs(30);
            while ask(&socket, address, &last)?.is_empty() {
                if Instant::now() > deadline {
                    bail!("the cluster DNS did not publish {records} Services within 30 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let queries = root.join("dns-queries.txt");
            let names: String = (0..records)
                .map(|i| format!("svc-{i}.bench.svc.cluster.local A\n"))
                .collect();
            std::fs::write(&queries, names)?;

            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let have_dnsperf = Command::new("dnsperf")
                .arg("-h")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok();
            let (ours, bind) = if have_dnsperf {
                let ours = dnsperf(address, &queries, seconds)?;
                let mut rates = Vec::new();
                for threads in [1, cores] {
                    if let Some(bind) = start_bind(&root, records, threads)? {
                        rates.push(dnsperf(bind.address, &queries, seconds)?);
                    }
                }
                let bind = (rates.len() == 2).then(|| (rates[0], rates[1]));
                (Some(ours), bind)
            } else {
                (None, None)
            };

            let mut delays = Vec::new();
            let mut writes = Vec::new();
            for round in 2..=21u8 {
                let wanted = Ipv4Addr::new(10, 244, 200, round);
                let started = Instant::now();
                handle.block_on(async {
                    let key = shipshape_api::ObjectKey {
                        kind: shipshape_api::Kind::Endpoints,
                        namespace: "bench".into(),
                        name: "moving".into(),
                    };
                    apply(
                        &store,
                        vec![Write::Patch {
                            key,
                            precondition: None,
                            patch: json!({"subsets": endpoints(round)["subsets"]}),
                        }],
                    )
                    .await
                })?;
                writes.push(started.elapsed());
                loop {
                    if ask(&socket, address, "moving.bench.svc.cluster.local.")? == [wanted] {
                        delays.push(started.elapsed());
                        break;
                    }
                    if started.elapsed() > Duration::from_secs(5) {
                        bail!("the Endpoints change did not reach DNS answers within 5 s");
                    }
                }
            }
            Ok(DnsFigures {
                records,
                seconds,
                ours,
                bind,
                delays,
                writes,
                cores,
            })
        }
    })
    .await??;

    server.stop().await;
    let _ = view.stop_gracefully().await;
    view.wait_for_shutdown().await;
    let _ = store.stop_gracefully().await;
    Ok(figures)
}
