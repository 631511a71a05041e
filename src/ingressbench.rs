//! The ingress against nginx, on real containerd: two pods running nginx (packed from this
//! machine's nginx) behind a Service and an Ingress; `wrk` through shipshape's ingress, then
//! through nginx configured as a reverse proxy to the same pod addresses (upstream keep-alive,
//! the same forwarded headers, an access log each, as many workers as the ingress has
//! threads), plain and over TLS, in the same run. Prints requests/s and p99 with their ratios.
//! Needs root, containerd, the CNI plugins, nginx and wrk, and no other cluster on the host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use shipshape_actors::store_actor::List;
use shipshape_api::Kind;

use crate::bench::git;
use crate::cluster::ControlPlane;
use crate::commitbench::RealCluster;

const HOST: &str = "bench.example";

/// Measured runs per proxy and leg, taking turns.
const ROUNDS: usize = 3;

/// The run with the median rate, its p99 the median of the p99s, its failures summed.
fn median(mut runs: Vec<Wrk>) -> Wrk {
    let failed = runs.iter().map(|r| r.failed).sum();
    let mut p99s: Vec<Duration> = runs.iter().map(|r| r.p99).collect();
    p99s.sort();
    runs.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    let middle = runs.len() / 2;
    Wrk {
        requests_per_second: runs.get(middle).map_or(0.0, |r| r.requests_per_second),
        p99: p99s.get(middle).copied().unwrap_or_default(),
        failed,
    }
}

/// The nginx that runs in each backend pod: one worker answering a short body, keep-alive on.
const POD_NGINX: &str = r#"user root;
worker_processes 1;
daemon off;
error_log stderr;
pid /tmp/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path /tmp/body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  server {
    listen 8080;
    location / { return 200 "ok from $hostname\n"; }
  }
}
"#;

fn manifests(cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: backend, namespace: bench}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: backend}}
  template:
    metadata:
      labels: {{app: backend}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: bench-nginx:1
        command: ["/usr/sbin/nginx", "-c", "/etc/nginx.conf", "-e", "stderr"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: bench}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: bench-cert, namespace: bench}}
type: kubernetes.io/tls
data: {{tls.crt: {}, tls.key: {}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: bench, namespace: bench}}
spec:
  tls: [{{hosts: [{HOST}], secretName: bench-cert}}]
  rules:
  - host: {HOST}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: backend, port: {{number: 80}}}}}}}}
"#,
        b64(cert),
        b64(key)
    )
}

/// An image with this machine's nginx binary, the libraries it links and the pod config.
fn nginx_archive(root: &Path, nginx: &Path) -> anyhow::Result<PathBuf> {
    let rootfs = root.join("nginx-rootfs");
    for dir in [
        "tmp",
        "etc",
        "proc",
        "sys",
        "dev",
        "usr/sbin",
        "var/log/nginx",
        "var/lib/nginx",
    ] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::copy(nginx, rootfs.join("usr/sbin/nginx"))?;
    let ldd = Command::new("ldd").arg(nginx).output().context("ldd")?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            let to = rootfs.join(path.trim_start_matches('/'));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(path, &to).with_context(|| format!("copy {path}"))?;
        }
    }
    std::fs::write(rootfs.join("etc/nginx.conf"), POD_NGINX)?;
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let archive = root.join("bench-nginx.tar");
    shipshape_node::image::pack(&rootfs, "bench-nginx:1", &archive)?;
    Ok(archive)
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Wrk {
    requests_per_second: f64,
    p99: Duration,
    /// Socket errors, timeouts and non-2xx/3xx answers.
    failed: u64,
}

fn duration(text: &str) -> Option<Duration> {
    let number = |suffix: &str| text.strip_suffix(suffix)?.parse::<f64>().ok();
    let seconds = if let Some(us) = number("us") {
        us / 1e6
    } else if let Some(ms) = number("ms") {
        ms / 1e3
    } else if let Some(m) = number("m") {
        m * 60.0
    } else {
        number("s")?
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Reads wrk's `--latency` report.
pub(crate) fn parse_wrk(output: &str) -> Option<Wrk> {
    let mut wrk = Wrk::default();
    let mut seen_rate = false;
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => {
                wrk.requests_per_second = rate.parse().ok()?;
                seen_rate = true;
            }
            ["99%", latency] => wrk.p99 = duration(latency)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => wrk.failed += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                wrk.failed += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    seen_rate.then_some(wrk)
}

fn run_wrk(threads: usize, connections: usize, seconds: u64, url: &str) -> anyhow::Result<Wrk> {
    let output = Command::new("wrk")
        .args([
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--latency".to_string(),
            "-H".to_string(),
            format!("Host: {HOST}"),
            url.to_string(),
        ])
        .output()
        .context("wrk must be installed (sudo scripts/setup)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_wrk(&text).with_context(|| {
        format!(
            "wrk {url}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The yardstick: nginx as a reverse proxy to the same pods, killed on drop.
struct ReverseProxy {
    child: Child,
}

impl Drop for ReverseProxy {
    /// SIGTERM, so the master stops its workers (killed outright, they would live on).
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(
    nginx: &Path,
    dir: &Path,
    workers: usize,
    pods: &[String],
    ports: (u16, u16),
    cert: &Path,
    key: &Path,
) -> anyhow::Result<ReverseProxy> {
    let servers: String = pods
        .iter()
        .map(|pod| format!("    server {pod};\n"))
        .collect();
    let d = dir.display();
    let config = format!(
        r#"user root;
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 8192; }}
http {{
  access_log {d}/access.log combined buffer=64k flush=1s;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  upstream backend {{
{servers}    keepalive 128;
  }}
  server {{
    listen 127.0.0.1:{plain};
    listen 127.0.0.1:{tls} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_next_upstream error;
    }}
  }}
}}
"#,
        plain = ports.0,
        tls = ports.1,
        cert = cert.display(),
        key = key.display(),
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config)?;
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("nginx")?;
    Ok(ReverseProxy { child })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP GET through a proxy at `port`: whether it answered 200.
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET / HTTP/1.0\r\nHost: {HOST}\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// The ready backend pods' addresses.
async fn pod_addresses(plane: &ControlPlane) -> anyhow::Result<Vec<String>> {
    let objects = plane
        .store()
        .ask(List {
            kind: Some(Kind::Endpoints),
            namespace: Some("bench".into()),
        })
        .await
        .map_err(|e| anyhow::anyhow!("store: {e}"))?;
    Ok(objects
        .iter()
        .filter(|(key, _)| key.name == "backend")
        .flat_map(|(_, stored)| {
            stored.object["subsets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|subset| {
            let port = subset["ports"][0]["port"].as_u64().unwrap_or(8080);
            subset["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |a| Some(format!("{}:{port}", a["ip"].as_str()?)))
        })
        .collect())
}

/// One leg (plain or TLS): shipshape's ingress and nginx.
pub(crate) struct Leg {
    name: &'static str,
    shipshape: Wrk,
    nginx: Wrk,
}

/// What the benchmark measured.
pub(crate) struct IngressFigures {
    threads: usize,
    connections: usize,
    seconds: u64,
    legs: Vec<Leg>,
}

impl IngressFigures {
    pub(crate) fn print(&self) {
        println!(
            "ingress vs nginx (reverse proxy to the same 2 nginx pods; wrk -t{} -c{}, {ROUNDS} rounds of {} s each taking turns, medians; {} workers each):",
            self.threads, self.connections, self.seconds, self.threads
        );
        for leg in &self.legs {
            let (s, n) = (leg.shipshape, leg.nginx);
            println!(
                "  {:5}  shipshape {:>8.0} req/s  p99 {:>6.2} ms  {} failed   nginx {:>8.0} req/s  p99 {:>6.2} ms  {} failed",
                leg.name,
                s.requests_per_second,
                s.p99.as_secs_f64() * 1e3,
                s.failed,
                n.requests_per_second,
                n.p99.as_secs_f64() * 1e3,
                n.failed,
            );
            println!(
                "         ratio shipshape / nginx: requests/s {:.2}x (goal at least 1.0x), p99 latency {:.2}x (goal at most 1.0x)",
                s.requests_per_second / n.requests_per_second.max(1e-9),
                s.p99.as_secs_f64() / n.p99.as_secs_f64().max(1e-9),
            );
        }
    }
}

/// Runs the benchmark, or says why it cannot and returns `None`.
pub(crate) async fn run(root: &Path, seconds: u64) -> anyhow::Result<Option<IngressFigures>> {
    let cni_dir = match shipshape_node::containerd::check_host() {
        Ok(dir) => dir,
        Err(error) => {
            println!("ingress vs nginx: skipped ({error})");
            return Ok(None);
        }
    };
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let wrk = Command::new("wrk").arg("--version").output().is_ok();
    let Some(nginx) = nginx.filter(|_| wrk) else {
        println!("ingress vs nginx: skipped (nginx and wrk are needed: sudo scripts/setup)");
        return Ok(None);
    };
    if Path::new("/sys/class/net/ship-node-1").exists() {
        println!(
            "ingress vs nginx: skipped (a cluster is running on this host; stop it first: one containerd cluster per host)"
        );
        return Ok(None);
    }
    let base = root.join("ingress");
    let repo = base.join("repo");
    let data = base.join("data");
    let proxy_dir = base.join("nginx");
    for dir in [&repo.join("apps/bench"), &data, &proxy_dir] {
        std::fs::create_dir_all(dir)?;
    }
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![HOST.to_string()])?.self_signed(&key)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    std::fs::write(proxy_dir.join("tls.crt"), &cert_pem)?;
    std::fs::write(proxy_dir.join("tls.key"), &key_pem)?;
    std::fs::write(
        repo.join("apps/bench/all.yaml"),
        manifests(&cert_pem, &key_pem),
    )?;
    git(&repo, &["init", "-q"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-qm", "bench"])?;
    let archive = nginx_archive(&base, &nginx)?;
    let (plain, tls) = (free_port()?, free_port()?);
    let (nginx_plain, nginx_tls) = (free_port()?, free_port()?);
    let flags: Vec<std::ffi::OsString> = [
        "--repo".to_string(),
        repo.display().to_string(),
        "--path".to_string(),
        "apps".to_string(),
        "--nodes".to_string(),
        "2".to_string(),
        "--dns-listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--ingress-http".to_string(),
        format!("127.0.0.1:{plain}"),
        "--ingress-https".to_string(),
        format!("127.0.0.1:{tls}"),
        "--import".to_string(),
        archive.display().to_string(),
    ]
    .into_iter()
    .map(std::ffi::OsString::from)
    .collect();
    let cluster = RealCluster::start(&flags, &data, cni_dir).await?;
    let plane = &cluster.plane;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let connections = 64;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let pods = loop {
            let pods = pod_addresses(plane).await?;
            if pods.len() == 2 && answers(plain) {
                break pods;
            }
            if Instant::now() > deadline {
                bail!(
                    "the backend pods were not ready behind the ingress within 2 minutes ({pods:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let _nginx = start_nginx(
            &nginx,
            &proxy_dir,
            threads,
            &pods,
            (nginx_plain, nginx_tls),
            &proxy_dir.join("tls.crt"),
            &proxy_dir.join("tls.key"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(nginx_plain) {
            if Instant::now() > deadline {
                bail!(
                    "nginx did not answer: {}",
                    std::fs::read_to_string(proxy_dir.join("error.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut legs = Vec::new();
        for (name, ours, theirs) in [
            (
                "plain",
                format!("http://127.0.0.1:{plain}/"),
                format!("http://127.0.0.1:{nginx_plain}/"),
            ),
            (
                "TLS",
                format!("https://127.0.0.1:{tls}/"),
                format!("https://127.0.0.1:{nginx_tls}/"),
            ),
        ] {
            // A short warm-up each (connections, pools, caches), then rounds taking turns, so
            // a drift in what else the machine does falls on both alike; the median round of
            // each is reported.
            let (a, b) = (ours.clone(), theirs.clone());
            let leg = tokio::task::spawn_blocking(move || -> anyhow::Result<(Wrk, Wrk)> {
                run_wrk(threads, connections, 2, &a)?;
                run_wrk(threads, connections, 2, &b)?;
                let (mut shipshape, mut nginx) = (Vec::new(), Vec::new());
                for _ in 0..ROUNDS {
                    shipshape.push(run_wrk(threads, connections, seconds, &a)?);
                    nginx.push(run_wrk(threads, connections, seconds, &b)?);
                }
                Ok((median(shipshape), median(nginx)))
            })
            .await??;
            legs.push(Leg {
                name,
                shipshape: leg.0,
                nginx: leg.1,
            });
        }
        Ok(IngressFigures {
            threads,
            connections,
            seconds,
            legs,
        })
    }
    .await;
    cluster.stop().await;
    result.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_read_as_rate_p99_and_failures() {
        let report = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  512.00us  12.00ms   80.00%
  Latency Distribution
     50%    1.40ms
     75%    1.80ms
     90%    2.10ms
     99%    3.25ms
  400000 requests in 10.00s, 60.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  40000.50
Transfer/sec:      6.00MB
";
        let wrk = parse_wrk(report).unwrap();
        assert_eq!(wrk.requests_per_second, 40000.5);
        assert_eq!(wrk.p99, Duration::from_micros(3250));
        assert_eq!(wrk.failed, 7);
        assert!(parse_wrk("unable to connect").is_none());
        assert_eq!(duration("812.00us"), Some(Duration::from_micros(812)));
        assert_eq!(duration("1.01s"), Some(Duration::from_millis(1010)));
        let run = |rate: f64, p99: u64| Wrk {
            requests_per_second: rate,
            p99: Duration::from_millis(p99),
            failed: 1,
        };
        let middle = median(vec![run(3.0, 9), run(1.0, 1), run(2.0, 5)]);
        assert_eq!(
            middle,
            Wrk {
                requests_per_second: 2.0,
                p99: Duration::from_millis(5),
                failed: 3
            }
        );
    }
}
