//! The pods/portforward subresource as kubectl 1.31+ speaks it: a WebSocket with the
//! subprotocol `SPDY/3.1+portforward.k8s.io`, carrying SPDY/3.1 frames ([`super::spdy`]).
//!
//! For each local connection kubectl opens two streams with the same `requestID`: `error`
//! (which it closes at once) and `data`. The data stream is joined to a TCP connection to
//! `port` on the pod's own loopback, inside its network namespace, as the kubelet does (so a
//! server listening on 127.0.0.1 in the pod is reachable too); a failed connection is told on
//! the error stream in the kubelet's words, which kubectl prints.
//!
//! Opening the connection is the nodes' business: the server is given a [`PodPorts`] once the
//! nodes are up (none for simulated nodes, whose pods listen nowhere).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::BoxFuture;
use super::spdy::{Codec, Frame};
use super::{ApiState, pod_or_not_found, status};

/// The WebSocket subprotocol kubectl asks for.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Opens connections to pods' ports.
pub trait PodPorts: Send + Sync {
    /// A connection to `port` on the pod's loopback, in its network namespace.
    fn connect(
        &self,
        pod: &Value,
        port: u16,
    ) -> BoxFuture<'_, Result<tokio::net::TcpStream, String>>;
}

/// Where the nodes' [`PodPorts`] is put once they run.
pub type PortsSlot = Arc<std::sync::OnceLock<Arc<dyn PodPorts>>>;

/// Answers `GET …/pods/NAME/portforward` with the WebSocket upgrade, or why not.
pub(super) async fn pod_port_forward(
    state: &ApiState,
    namespace: String,
    name: String,
    upgrade: Option<WebSocketUpgrade>,
) -> Response {
    let bad = |message: String| status(StatusCode::BAD_REQUEST, "BadRequest", message);
    let Some(ports) = state.ports.get().cloned() else {
        return bad(
            "this cluster's nodes run no containers (simulated): no pod listens on a port".into(),
        );
    };
    let pod = match pod_or_not_found(state, &namespace, &name).await {
        Ok(pod) => pod,
        Err(answer) => return answer,
    };
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return bad(format!(
            "unable to do port forwarding: pod is not running - current status={phase}"
        ));
    }
    let Some(upgrade) = upgrade else {
        return bad(format!(
            "port-forward needs a WebSocket upgrade ({TUNNEL_PROTOCOL}): use kubectl 1.31 or newer, or `shipshape port-forward`"
        ));
    };
    upgrade
        .protocols([TUNNEL_PROTOCOL])
        .on_upgrade(move |socket| session(socket, ports, pod))
        .into_response()
}

/// One data stream's way to its pod connection, and the task serving it.
struct Forwarded {
    to_pod: mpsc::Sender<Option<Vec<u8>>>,
    task: tokio::task::AbortHandle,
}

/// Serves one kubectl connection until either side ends it.
async fn session(socket: WebSocket, ports: Arc<dyn PodPorts>, pod: Value) {
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outgoing) = mpsc::channel::<Vec<u8>>(64);
    let mut codec = Codec::new();
    let mut error_streams: HashMap<String, u32> = HashMap::new();
    let mut forwarded: HashMap<u32, Forwarded> = HashMap::new();
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    'session: loop {
        let bytes = tokio::select! {
            message = incoming.next() => match message {
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_))) => continue,
                _ => break,
            },
            Some(frame) = outgoing.recv() => {
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
                continue;
            }
        };
        codec.feed(&bytes);
        loop {
            let frame = match codec.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(%error, "port-forward: unreadable SPDY from the client");
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream {
                    stream, headers, ..
                } => {
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    if sink
                        .send(Message::Binary(codec.reply(stream).into()))
                        .await
                        .is_err()
                    {
                        break 'session;
                    }
                    let request = header("requestid");
                    match header("streamtype").as_str() {
                        "error" => {
                            error_streams.insert(request, stream);
                        }
                        "data" => {
                            let error_stream = error_streams.get(&request).copied();
                            let port_text = header("port");
                            let (to_pod, from_client) = mpsc::channel(16);
                            let task = tokio::spawn(forward(
                                ports.clone(),
                                pod.clone(),
                                uid.clone(),
                                port_text,
                                stream,
                                error_stream,
                                from_client,
                                out.clone(),
                            ));
                            forwarded.insert(
                                stream,
                                Forwarded {
                                    to_pod,
                                    task: task.abort_handle(),
                                },
                            );
                        }
                        other => {
                            tracing::debug!(
                                stream_type = other,
                                "port-forward: unknown stream type"
                            );
                            let _ = sink
                                .send(Message::Binary(Codec::reset(stream).into()))
                                .await;
                        }
                    }
                }
                Frame::Data { stream, data, fin } => {
                    if let Some(target) = forwarded.get(&stream) {
                        if !data.is_empty() && target.to_pod.send(Some(data)).await.is_err() {
                            continue;
                        }
                        if fin {
                            let _ = target.to_pod.send(None).await;
                        }
                    }
                }
                Frame::Reset { stream } => {
                    if let Some(target) = forwarded.remove(&stream) {
                        target.task.abort();
                    }
                }
                Frame::Ping(id) => {
                    if sink
                        .send(Message::Binary(Codec::ping(id).into()))
                        .await
                        .is_err()
                    {
                        break 'session;
                    }
                }
                Frame::GoAway => break 'session,
                Frame::Other => {}
            }
        }
    }
    for target in forwarded.into_values() {
        target.task.abort();
    }
}

/// Joins one data stream to a connection to the pod's port.
#[allow(clippy::too_many_arguments)]
async fn forward(
    ports: Arc<dyn PodPorts>,
    pod: Value,
    uid: String,
    port_text: String,
    stream: u32,
    error_stream: Option<u32>,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let fail = |message: String| {
        let out = out.clone();
        async move {
            if let Some(error_stream) = error_stream {
                let _ = out
                    .send(Codec::data(error_stream, message.as_bytes(), true))
                    .await;
            }
            let _ = out.send(Codec::data(stream, &[], true)).await;
        }
    };
    let Ok(port) = port_text.parse::<u16>() else {
        fail(format!("invalid port {port_text:?}")).await;
        return;
    };
    let connection = match ports.connect(&pod, port).await {
        Ok(connection) => connection,
        Err(why) => {
            fail(format!(
                "error forwarding port {port} to pod {uid}, uid : {why}"
            ))
            .await;
            return;
        }
    };
    let (mut reader, mut writer) = connection.into_split();
    let to_pod = async move {
        while let Some(Some(bytes)) = from_client.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // The client closed its side (or went): so does the pod's.
        let _ = writer.shutdown().await;
    };
    let from_pod = async {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out
                        .send(Codec::data(stream, &buffer[..n], false))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = out.send(Codec::data(stream, &[], true)).await;
        if let Some(error_stream) = error_stream {
            let _ = out.send(Codec::data(error_stream, &[], true)).await;
        }
    };
    tokio::join!(to_pod, from_pod);
}
