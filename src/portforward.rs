//! `shipshape port-forward TARGET [LOCAL:]REMOTE…`: local ports forwarded to a pod's, through
//! the API server's pods/portforward (the protocol kubectl 1.31+ speaks: SPDY over a
//! WebSocket). TARGET is a pod (`NAME`, `pod/NAME`) or a Service (`service/NAME`, `svc/NAME`),
//! which, as kubectl does, picks one of its running pods and the port's `targetPort`.
//!
//! Each local connection gets its own WebSocket with one pair of streams (error and data), so
//! connections never wait on each other.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use shipshape_actors::api::portforward::TUNNEL_PROTOCOL;
use shipshape_actors::api::spdy::{Codec, Frame};
use tungstenite::Message;

use crate::data::{self, Cluster};
use crate::remote::{Polled, Remote};

/// A `[LOCAL:]REMOTE` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortPair {
    /// The local port (0: any free one).
    local: u16,
    /// The remote port: a number, or a port name (a container's, or a Service's).
    remote: String,
}

/// Reads `8080`, `9000:8080`, `:8080` (any free local port) or `8443:https`.
pub(crate) fn parse_pair(text: &str) -> Result<PortPair, String> {
    let (local, remote) = match text.split_once(':') {
        Some((local, remote)) => (local, remote),
        None if text.parse::<u16>().is_err() => {
            return Err(format!(
                "{text:?}: a named port needs a local one (LOCAL:{text})"
            ));
        }
        None => (text, text),
    };
    let local = if local.is_empty() {
        0
    } else {
        local.parse::<u16>().map_err(|_| {
            format!("{text:?}: the local port must be a number (or empty, for any free port)")
        })?
    };
    if remote.is_empty() {
        return Err(format!("{text:?}: no remote port"));
    }
    Ok(PortPair {
        local,
        remote: remote.to_string(),
    })
}

/// The port a container of `pod` names `name` (or the number itself).
fn container_port(pod: &Value, name: &str) -> anyhow::Result<u16> {
    if let Ok(number) = name.parse::<u16>() {
        return Ok(number);
    }
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .with_context(|| {
            format!(
                "pod {} has no container port named {name:?}",
                pod["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
}

fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The pod and pod ports `target` and `pairs` name.
fn resolve(
    remote: &Remote,
    namespace: &str,
    target: &str,
    pairs: &[PortPair],
) -> anyhow::Result<(String, Vec<(u16, u16)>)> {
    let (kind, name) = target.split_once('/').unwrap_or(("pod", target));
    match kind {
        "pod" | "pods" | "po" => {
            let pod = remote.get(&format!("/api/v1/namespaces/{namespace}/pods/{name}"))?;
            let ports = pairs
                .iter()
                .map(|p| Ok((p.local, container_port(&pod, &p.remote)?)))
                .collect::<anyhow::Result<_>>()?;
            Ok((name.to_string(), ports))
        }
        "service" | "services" | "svc" => {
            let service = remote.get(&format!("/api/v1/namespaces/{namespace}/services/{name}"))?;
            let selector = service["spec"]["selector"]
                .as_object()
                .filter(|s| !s.is_empty())
                .with_context(|| format!("service {name} has no selector: no pod to forward to"))?;
            let labels: Vec<String> = selector
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            let pods = remote.get(&format!(
                "/api/v1/namespaces/{namespace}/pods?labelSelector={}",
                labels.join(",")
            ))?;
            let pod = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| ready(p))
                .cloned()
                .with_context(|| format!("service {name} has no ready pod"))?;
            let mut ports = Vec::new();
            for pair in pairs {
                let port = service["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| {
                        p["name"] == pair.remote.as_str()
                            || p["port"].as_u64().map(|n| n.to_string())
                                == Some(pair.remote.clone())
                    })
                    .with_context(|| format!("service {name} has no port {}", pair.remote))?;
                let target = match &port["targetPort"] {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => port["port"].to_string(),
                };
                ports.push((pair.local, container_port(&pod, &target)?));
            }
            let pod_name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Ok((pod_name, ports))
        }
        other => bail!(
            "cannot forward to a {other}: name a pod (NAME, pod/NAME) or a service (service/NAME)"
        ),
    }
}

/// Forwards until interrupted.
pub fn run(
    target: &str,
    pairs: &[PortPair],
    namespace: Option<&str>,
    address: &str,
    data_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let data_dir = data::data_dir(data_dir)?;
    let remote = match data::connect(&data_dir)? {
        Cluster::Running(remote) => remote,
        Cluster::Stopped(_) => bail!(
            "the cluster in {} is not running: port-forward needs a running cluster (`shipshape up`)",
            data_dir.display()
        ),
    };
    let namespace = namespace.unwrap_or("default");
    let (pod, ports) = resolve(&remote, namespace, target, pairs)?;
    let remote = std::sync::Arc::new(remote);
    let mut threads = Vec::new();
    for (local, port) in ports {
        let listener = TcpListener::bind((address, local))
            .with_context(|| format!("cannot listen on {address}:{local}"))?;
        let bound = listener.local_addr()?;
        println!("Forwarding from {bound} -> {port}");
        let remote = remote.clone();
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward");
        threads.push(std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                let remote = remote.clone();
                let path = path.clone();
                std::thread::spawn(move || {
                    println!("Handling connection for {}", bound.port());
                    if let Err(error) = forward(&remote, &path, port, connection) {
                        eprintln!(
                            "an error occurred forwarding {} -> {port}: {error:#}",
                            bound.port()
                        );
                    }
                });
            }
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(ExitCode::SUCCESS)
}

const ERROR_STREAM: u32 = 1;
const DATA_STREAM: u32 = 3;

/// Joins one local connection to the pod's `port` over its own WebSocket.
fn forward(remote: &Remote, path: &str, port: u16, mut local: TcpStream) -> anyhow::Result<()> {
    let mut socket = remote.websocket(path, TUNNEL_PROTOCOL)?;
    let poll = Duration::from_millis(10);
    socket.get_mut().sock.set_read_timeout(Some(poll))?;
    local.set_read_timeout(Some(poll))?;
    let mut codec = Codec::new();
    let port_text = port.to_string();
    for (stream, kind) in [(ERROR_STREAM, "error"), (DATA_STREAM, "data")] {
        let open = codec.syn_stream(
            stream,
            &[
                ("streamType", kind),
                ("port", &port_text),
                ("requestID", "0"),
            ],
        );
        socket.send(Message::Binary(open.into()))?;
    }
    // Our error stream carries nothing from us.
    socket.send(Message::Binary(Codec::data(ERROR_STREAM, &[], true).into()))?;
    let mut buffer = vec![0u8; 32 * 1024];
    let (mut local_open, mut pod_open) = (true, true);
    let mut error = Vec::new();
    while local_open || pod_open {
        if local_open {
            match local.read(&mut buffer) {
                Ok(0) => {
                    local_open = false;
                    socket.send(Message::Binary(Codec::data(DATA_STREAM, &[], true).into()))?;
                }
                Ok(n) => socket.send(Message::Binary(
                    Codec::data(DATA_STREAM, &buffer[..n], false).into(),
                ))?,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    local_open = false;
                    socket.send(Message::Binary(Codec::reset(DATA_STREAM).into()))?;
                    pod_open = false;
                }
            }
        }
        match crate::remote::poll_read(&mut socket).context("the port-forward stream broke")? {
            Polled::Message(Message::Binary(bytes)) => {
                codec.feed(&bytes);
                while let Some(frame) = codec.next_frame()? {
                    match frame {
                        Frame::Data {
                            stream: DATA_STREAM,
                            data,
                            fin,
                        } => {
                            if !data.is_empty() {
                                local.write_all(&data)?;
                            }
                            if fin {
                                pod_open = false;
                                let _ = local.shutdown(Shutdown::Write);
                            }
                        }
                        Frame::Data {
                            stream: ERROR_STREAM,
                            data,
                            ..
                        } => error.extend(data),
                        Frame::Reset {
                            stream: DATA_STREAM,
                        } => pod_open = false,
                        Frame::Ping(id) => socket.send(Message::Binary(Codec::ping(id).into()))?,
                        Frame::GoAway => pod_open = false,
                        _ => {}
                    }
                }
            }
            Polled::Closed => break,
            Polled::Message(_) | Polled::Nothing => {}
        }
        if !pod_open && !error.is_empty() {
            break;
        }
    }
    let _ = socket.close(None);
    if !error.is_empty() {
        bail!("{}", String::from_utf8_lossy(&error));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pairs_read_as_kubectl_reads_them() {
        assert_eq!(
            parse_pair("8080"),
            Ok(PortPair {
                local: 8080,
                remote: "8080".into()
            })
        );
        assert_eq!(
            parse_pair("9000:80"),
            Ok(PortPair {
                local: 9000,
                remote: "80".into()
            })
        );
        assert_eq!(
            parse_pair(":80"),
            Ok(PortPair {
                local: 0,
                remote: "80".into()
            })
        );
        assert_eq!(
            parse_pair("8443:https"),
            Ok(PortPair {
                local: 8443,
                remote: "https".into()
            })
        );
        assert!(parse_pair("x:80").is_err());
        assert!(parse_pair("80:").is_err());
    }

    #[test]
    fn named_ports_resolve_through_the_pods_containers() {
        let pod = serde_json::json!({"metadata": {"name": "web-1"}, "spec": {"containers": [
            {"name": "a", "ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(container_port(&pod, "http").unwrap(), 8080);
        assert_eq!(container_port(&pod, "9000").unwrap(), 9000);
        assert!(container_port(&pod, "grpc").is_err());
    }
}
