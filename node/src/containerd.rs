//! Reaching containerd: the socket given or the system's if it answers, else our own containerd
//! started and supervised with its root, state and socket in the data directory (as k3s does).
//!
//! Before anything is started the host is checked for what running pods needs (root, the
//! containerd and runc binaries, the CNI plugins), so a missing piece is one line naming it and
//! the command that installs it, not a failure half-way through starting a pod.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{self, Request};
use tokio::sync::Mutex;

/// The socket a system containerd listens on.
pub const SYSTEM_SOCKET: &str = "/run/containerd/containerd.sock";

/// Where Debian's `containernetworking-plugins` installs the CNI plugins, then the upstream path.
pub const CNI_PLUGIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

/// The set-up command every "missing" message points at.
const SETUP: &str =
    "sudo scripts/setup (or: apt install containerd runc containernetworking-plugins iproute2)";

/// Why the containerd runtime cannot be used or a call to it failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Not running as root.
    #[error(
        "the containerd runtime needs root (containers, network namespaces): run as root, or use --runtime simulated"
    )]
    NotRoot,
    /// A program or plugin the runtime needs is not installed.
    #[error("{what} is not installed: run {SETUP}")]
    Missing {
        /// What is missing (`runc`, `the CNI bridge plugin`).
        what: String,
    },
    /// Our own containerd did not come up.
    #[error("containerd did not start ({reason}); its log is {log}")]
    StartFailed {
        /// What went wrong.
        reason: String,
        /// The log to read.
        log: String,
    },
    /// A containerd call failed.
    #[error("containerd {call}: {message}")]
    Call {
        /// The call (`tasks.Create web-1`).
        call: String,
        /// containerd's message.
        message: String,
        /// The gRPC code, to tell "not found" and "already exists" apart.
        code: tonic::Code,
    },
    /// A local file or process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Bad input: an image archive that is not one, a reference that does not parse.
    #[error("{0}")]
    Invalid(String),
}

impl RuntimeError {
    /// Wraps a gRPC status from the call named `call`.
    pub fn call(call: impl Into<String>, status: tonic::Status) -> Self {
        RuntimeError::Call {
            call: call.into(),
            message: status.message().to_string(),
            code: status.code(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what: what.into(),
            source,
        }
    }

    /// Whether containerd said the thing was not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::Call { code, .. } if *code == tonic::Code::NotFound)
    }

    /// Whether containerd said the thing was there already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, RuntimeError::Call { code, .. } if *code == tonic::Code::AlreadyExists)
    }
}

/// Checks that this host can run pods: root, containerd, runc, iproute2, nftables (the service
/// proxy) and the CNI plugins.
/// Returns the CNI plugin directory.
pub fn check_host() -> Result<PathBuf, RuntimeError> {
    if !is_root() {
        return Err(RuntimeError::NotRoot);
    }
    for program in ["containerd", "runc", "containerd-shim-runc-v2", "ip", "nft"] {
        if find_program(program).is_none() {
            return Err(RuntimeError::Missing {
                what: program.to_string(),
            });
        }
    }
    let dir = CNI_PLUGIN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("bridge").exists())
        .ok_or_else(|| RuntimeError::Missing {
            what: "the CNI bridge plugin (/usr/lib/cni/bridge)".into(),
        })?;
    for plugin in ["host-local", "loopback"] {
        if !dir.join(plugin).exists() {
            return Err(RuntimeError::Missing {
                what: format!("the CNI {plugin} plugin ({})", dir.join(plugin).display()),
            });
        }
    }
    Ok(dir)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // The effective uid is the second number on /proc's Uid line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|id| id == "0"))
        })
        .unwrap_or(false)
}

/// The full path of `program` on `PATH` (or the sbin directories root's PATH usually has).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A connection to containerd, and our own containerd process if we started it.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    socket: PathBuf,
    version: String,
    own: Option<Arc<Mutex<OwnContainerd>>>,
}

struct OwnContainerd {
    child: tokio::process::Child,
    /// `stop` was called: the supervisor must not start it again, even while clones of the
    /// handle (a kubelet's, a pod worker's) are still alive.
    stopped: bool,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("socket", &self.socket)
            .field("version", &self.version)
            .field("own", &self.own.is_some())
            .finish()
    }
}

/// Asks containerd at `socket` for its version, giving up after `wait`.
pub async fn probe(socket: &Path, wait: Duration) -> Option<(Channel, String)> {
    if !socket.exists() {
        return None;
    }
    let attempt = async {
        let channel = containerd_client::connect(socket).await.ok()?;
        let version = VersionClient::new(channel.clone())
            .version(Request::new(()))
            .await
            .ok()?
            .into_inner()
            .version;
        Some((channel, version))
    };
    tokio::time::timeout(wait, attempt).await.ok().flatten()
}

impl Containerd {
    /// Connects to `socket` (or the system socket) if containerd answers there; otherwise
    /// starts our own under `data_dir/containerd`. With a socket given explicitly, failing to
    /// reach it is an error rather than a reason to start another containerd.
    pub async fn connect_or_start(
        socket: Option<&Path>,
        data_dir: &Path,
    ) -> Result<Self, RuntimeError> {
        if let Some(socket) = socket {
            return match probe(socket, Duration::from_secs(3)).await {
                Some((channel, version)) => Ok(Self {
                    channel,
                    socket: socket.to_path_buf(),
                    version,
                    own: None,
                }),
                None => Err(RuntimeError::StartFailed {
                    reason: format!(
                        "nothing answers on --containerd-socket {}",
                        socket.display()
                    ),
                    log: "(none: not ours)".into(),
                }),
            };
        }
        let system = Path::new(SYSTEM_SOCKET);
        if let Some((channel, version)) = probe(system, Duration::from_secs(2)).await {
            return Ok(Self {
                channel,
                socket: system.to_path_buf(),
                version,
                own: None,
            });
        }
        Self::start_own(data_dir).await
    }

    /// Starts containerd with root, state, socket and log under `data_dir/containerd`, in its
    /// own process group so that Ctrl-C on `up` does not stop it before the pods are stopped.
    pub async fn start_own(data_dir: &Path) -> Result<Self, RuntimeError> {
        let base = data_dir.join("containerd");
        let socket = base.join("containerd.sock");
        // An earlier `up` that was killed (`kill -9`) left ours running. Using it as if it were
        // the system's would leave it behind after the next Ctrl-C: stop it, and start it again
        // as our own child (its shims, and so the containers, live on and are adopted).
        let leftovers = processes_on_socket(Path::new("/proc"), &socket);
        if !leftovers.is_empty() {
            tracing::info!(
                ?leftovers,
                "stopping the containerd an earlier run left behind"
            );
            stop_leftovers(&leftovers).await;
        }
        let child = spawn_containerd(&base)?;
        let own = Arc::new(Mutex::new(OwnContainerd {
            child,
            stopped: false,
        }));
        let log = base.join("containerd.log").display().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((channel, version)) = probe(&socket, Duration::from_secs(1)).await {
                let this = Self {
                    channel,
                    socket,
                    version,
                    own: Some(own),
                };
                this.supervise(base);
                return Ok(this);
            }
            if let Ok(Some(status)) = own.lock().await.child.try_wait() {
                return Err(RuntimeError::StartFailed {
                    reason: format!("it exited with {status}"),
                    log,
                });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(RuntimeError::StartFailed {
                    reason: "its socket did not answer within 20 s".into(),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Restarts our containerd if it dies (its shims, and so the containers, live on).
    fn supervise(&self, base: PathBuf) {
        let Some(own) = self.own.clone() else { return };
        let weak = Arc::downgrade(&own);
        drop(own);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(own) = weak.upgrade() else { return };
                let mut own = own.lock().await;
                if own.stopped {
                    return;
                }
                if let Ok(Some(status)) = own.child.try_wait() {
                    tracing::warn!(%status, "containerd exited; starting it again");
                    match spawn_containerd(&base) {
                        Ok(child) => own.child = child,
                        Err(error) => tracing::error!(%error, "containerd could not be restarted"),
                    }
                }
            }
        });
    }

    /// The gRPC channel (cheap to clone).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The socket in use, for `ctr --address` and for the CLI's `image import`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether this is our own containerd (started by us, stopped by [`Containerd::stop`]).
    pub fn is_own(&self) -> bool {
        self.own.is_some()
    }

    /// Stops our own containerd, if we started one. Its shims keep the containers that are
    /// still running (the next start adopts them).
    pub async fn stop(&self) {
        let Some(own) = &self.own else { return };
        let mut own = own.lock().await;
        own.stopped = true;
        if let Some(pid) = own.child.id() {
            signal(pid, "TERM");
            if tokio::time::timeout(Duration::from_secs(10), own.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = own.child.kill().await;
    }
}

/// The processes (under `proc`, normally `/proc`) whose command line serves `--address
/// socket`: a containerd of ours that an earlier run left behind.
pub fn processes_on_socket(proc: &Path, socket: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let wanted = socket.as_os_str().as_encoded_bytes();
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            args.any(|arg| arg == b"--address")
                .then(|| args.next())
                .flatten()
                .filter(|arg| *arg == wanted)
                .map(|_| pid)
        })
        .collect()
}

/// Stops leftover containerd processes: TERM, then KILL after 10 s.
async fn stop_leftovers(pids: &[u32]) {
    let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
    for pid in pids {
        signal(*pid, "TERM");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(alive) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in pids.iter().filter(|pid| alive(pid)) {
        signal(*pid, "KILL");
    }
}

/// Sends a signal to a process with the `kill` program (no libc binding needed for one call).
fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn spawn_containerd(base: &Path) -> Result<tokio::process::Child, RuntimeError> {
    let io = |what: &str, e| RuntimeError::io(format!("{what} {}", base.display()), e);
    std::fs::create_dir_all(base).map_err(|e| io("creating", e))?;
    let config = base.join("config.toml");
    // The CRI plugin serves kubelets we are not: switch it off (it also wants its own paths).
    std::fs::write(
        &config,
        "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
    )
    .map_err(|e| io("writing config in", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(base.join("containerd.log"))
        .map_err(|e| io("opening the log in", e))?;
    let log_err = log.try_clone().map_err(|e| io("opening the log in", e))?;
    let program = find_program("containerd").ok_or_else(|| RuntimeError::Missing {
        what: "containerd".into(),
    })?;
    tokio::process::Command::new(program)
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(base.join("root"))
        .arg("--state")
        .arg(base.join("state"))
        .arg("--address")
        .arg(base.join("containerd.sock"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| io("starting containerd for", e))
}

/// A request carrying the containerd namespace (and, during an import, the lease that keeps
/// half-written content from the garbage collector).
pub fn request<T>(namespace: &str, message: T, lease: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    if let Ok(value) = namespace.parse() {
        metadata.insert("containerd-namespace", value);
    }
    if let Some(lease) = lease
        && let Ok(value) = lease.parse()
    {
        metadata.insert("containerd-lease", value);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_containerd_an_earlier_run_left_on_our_socket() {
        let proc = tempfile::tempdir().expect("tempdir");
        let process = |pid: &str, args: &[&str]| {
            let dir = proc.path().join(pid);
            std::fs::create_dir_all(&dir).expect("mkdir");
            let mut cmdline = args.join("\0");
            cmdline.push('\0');
            std::fs::write(dir.join("cmdline"), cmdline).expect("write");
        };
        let ours = "/var/lib/shipshape/containerd/containerd.sock";
        process(
            "41",
            &["containerd", "--config", "c.toml", "--address", ours],
        );
        process(
            "42",
            &["containerd", "--address", "/run/containerd/containerd.sock"],
        );
        process("43", &["sh", "-c", ours]);
        process("self", &["not", "a", "pid"]);
        std::fs::create_dir_all(proc.path().join("44")).expect("a process without cmdline");
        assert_eq!(processes_on_socket(proc.path(), Path::new(ours)), [41]);
    }
}
