//! pods/portforward on real nodes: a TCP connection to a port on the pod's own loopback,
//! opened from inside its network namespace (`/run/netns/…`, which the pod worker made), as the
//! kubelet does. A short-lived thread enters the namespace to connect, so no thread of the
//! runtime ever changes namespace; the socket stays in the pod's namespace once made.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shipshape_actors::api::exec::BoxFuture;
use shipshape_actors::api::portforward::PodPorts;

use crate::network::netns_path;
use crate::pod_worker::netns_name;

/// Connects to pods' ports through their network namespaces.
pub struct NetnsPorts;

const CLONE_NEWNET: std::ffi::c_int = 0x4000_0000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Enters `netns` (this thread only) and connects to `port` on its loopback, IPv4 then IPv6.
fn connect_in(netns: &Path, port: u16) -> Result<std::net::TcpStream, String> {
    unsafe extern "C" {
        fn setns(fd: std::ffi::c_int, nstype: std::ffi::c_int) -> std::ffi::c_int;
    }
    let namespace = std::fs::File::open(netns)
        .map_err(|e| format!("the pod's network namespace {}: {e}", netns.display()))?;
    // SAFETY: setns reads no memory of ours; `namespace` keeps the descriptor open, and only
    // this thread (which ends after connecting) moves.
    if unsafe { setns(namespace.as_raw_fd(), CLONE_NEWNET) } != 0 {
        return Err(format!(
            "cannot enter the pod's network namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT)
        .or_else(|first| {
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| first)
        })
        .map_err(|e| {
            format!("failed to connect to localhost:{port} inside the pod's network namespace: {e}")
        })
}

impl PodPorts for NetnsPorts {
    fn connect(
        &self,
        pod: &Value,
        port: u16,
    ) -> BoxFuture<'_, Result<tokio::net::TcpStream, String>> {
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let netns: PathBuf = netns_path(&netns_name(&uid));
        Box::pin(async move {
            let (done, answer) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("port-forward".to_string())
                .spawn(move || {
                    let _ = done.send(connect_in(&netns, port));
                })
                .map_err(|e| format!("cannot start a thread to connect: {e}"))?;
            let stream = answer
                .await
                .map_err(|_| "the connecting thread ended".to_string())??;
            stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(stream))
                .map_err(|e| e.to_string())
        })
    }
}

/// The provider for the API server.
pub fn provider() -> Arc<dyn PodPorts> {
    Arc::new(NetnsPorts)
}
