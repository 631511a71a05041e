//! The pods/exec subresource over WebSocket, as kubectl 1.30+ speaks it (the
//! `v5.channel.k8s.io` protocol, and `v4` before it): binary messages whose first byte names
//! the stream (0 stdin, 1 stdout, 2 stderr, 3 the final status, 4 terminal resize, 255 "this
//! stream is closed"). The final status carries a non-zero exit code the way kubectl turns
//! into its own exit code.
//!
//! Running the process is the nodes' business: the server is given a [`PodExec`] once the
//! nodes are up (none for simulated nodes, which have nothing to run a command in).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ApiState, percent_decode, pod_or_not_found, status};
use crate::controllers::container_running;

/// What to run where.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// The pod, as stored (its node, its containers' IDs).
    pub pod: Value,
    /// The container.
    pub container: String,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether to give the process a terminal.
    pub tty: bool,
}

/// A boxed future, for the object-safe [`PodExec`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A process running in a container, and its streams.
pub struct ExecSession {
    /// Its stdin, if asked for.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// Its stdout (with a terminal: everything it writes).
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    /// Its stderr (none with a terminal).
    pub stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// Resolves to its exit code.
    pub exit: BoxFuture<'static, Result<i32, String>>,
    /// Resizes its terminal.
    pub resize: Option<Box<dyn Fn(u16, u16) + Send + Sync>>,
    /// Tells the runtime that stdin has ended (containerd needs telling as well as the pipe
    /// closing).
    pub close_stdin: Option<BoxFuture<'static, ()>>,
    /// Removes what the session left once its output has been read.
    pub finish: BoxFuture<'static, ()>,
}

/// Runs a process in a pod's container (the nodes implement it).
pub trait PodExec: Send + Sync + 'static {
    /// Starts `request`; a one-line reason when it cannot.
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecSession, String>>;
}

/// The nodes' exec, set once they run.
pub type ExecSlot = Arc<std::sync::OnceLock<Arc<dyn PodExec>>>;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

struct ExecQuery {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
    tty: bool,
}

fn parse(raw: Option<&str>) -> ExecQuery {
    let mut query = ExecQuery {
        command: Vec::new(),
        container: None,
        stdin: false,
        tty: false,
    };
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(&value.replace('+', " "));
        let yes = value == "true" || value == "1";
        match key {
            "command" => query.command.push(value),
            "container" => query.container = Some(value).filter(|v| !v.is_empty()),
            "stdin" => query.stdin = yes,
            "tty" => query.tty = yes,
            _ => {}
        }
    }
    query
}

/// The final status kubectl reads from the error stream.
fn final_status(command: &[String], code: Result<i32, String>) -> Value {
    match code {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "InternalError",
        }),
    }
}

/// GET (WebSocket upgrade) /api/v1/namespaces/{namespace}/pods/{name}/exec
pub(super) async fn pod_exec(
    state: &ApiState,
    namespace: String,
    name: String,
    raw_query: Option<&str>,
    upgrade: Option<WebSocketUpgrade>,
) -> Response {
    let query = parse(raw_query);
    let bad = |message: String| status(StatusCode::BAD_REQUEST, "BadRequest", message);
    if query.command.is_empty() {
        return bad("you must specify at least one command for the container".into());
    }
    let Some(exec) = state.exec.get().cloned() else {
        return bad(
            "this cluster's nodes run no containers (simulated): nothing to exec into".into(),
        );
    };
    let pod = match pod_or_not_found(state, &namespace, &name).await {
        Ok(pod) => pod,
        Err(answer) => return answer,
    };
    let names: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match query.container {
        Some(c) => c,
        // kubectl picks the default container itself; a bare API call gets the first.
        None => match names.first() {
            Some(first) => first.clone(),
            None => return bad(format!("pod {name} has no containers")),
        },
    };
    if !container_running(&pod, &container) {
        return bad(format!(
            "unable to upgrade connection: container {container} in pod {name} is not running"
        ));
    }
    let Some(upgrade) = upgrade else {
        return bad(
            "exec needs a WebSocket upgrade (v5.channel.k8s.io): use kubectl 1.30 or newer, or `shipshape exec`"
                .into(),
        );
    };
    let request = ExecRequest {
        pod,
        container,
        command: query.command,
        stdin: query.stdin,
        tty: query.tty,
    };
    upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| async move {
            let command = request.command.clone();
            match exec.exec(request).await {
                Ok(session) => stream(socket, session, command).await,
                // Started or not, the answer travels as the final status, as Kubernetes does.
                Err(message) => {
                    let (mut sink, _) = socket.split();
                    close(&mut sink, final_status(&command, Err(message))).await;
                }
            }
        })
        .into_response()
}

/// Sends the final status and closes normally (kubectl treats any other close as broken).
async fn close(sink: &mut futures_util::stream::SplitSink<WebSocket, Message>, status: Value) {
    let mut frame = vec![ERROR];
    frame.extend(status.to_string().into_bytes());
    let _ = sink.send(Message::Binary(frame.into())).await;
    let _ = sink
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
}

async fn pump(
    mut reader: Pin<Box<dyn AsyncRead + Send>>,
    channel: u8,
    out: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buffer[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buffer[0] = channel;
                if out.send(buffer[..=n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Carries the streams between the socket and the process, then sends the status and closes.
async fn stream(socket: WebSocket, session: ExecSession, command: Vec<String>) {
    let ExecSession {
        stdin,
        stdout,
        stderr,
        exit,
        resize,
        close_stdin,
        finish,
    } = session;
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outgoing) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let mut pumps = vec![tokio::spawn(pump(stdout, STDOUT, out.clone()))];
    if let Some(stderr) = stderr {
        pumps.push(tokio::spawn(pump(stderr, STDERR, out.clone())));
    }
    drop(out);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
        }
        sink
    });
    // Client to process: stdin, resizes, and v5's "stdin is closed".
    let resize = resize.map(Arc::new);
    let reader = tokio::spawn(async move {
        let mut stdin = stdin;
        let mut close_stdin = close_stdin;
        while let Some(Ok(message)) = incoming.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, data)) = bytes.split_first() else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(writer) = stdin.as_mut()
                        && writer.write_all(data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                RESIZE => {
                    if let (Some(resize), Ok(size)) =
                        (resize.as_ref(), serde_json::from_slice::<Value>(data))
                    {
                        let width = size["Width"].as_u64().unwrap_or(80) as u16;
                        let height = size["Height"].as_u64().unwrap_or(24) as u16;
                        resize(width, height);
                    }
                }
                CLOSE if data.first() == Some(&STDIN) => {
                    // Dropping our end is what gives the process end-of-file.
                    if let Some(mut writer) = stdin.take() {
                        let _ = writer.flush().await;
                    }
                    if let Some(close) = close_stdin.take() {
                        close.await;
                    }
                }
                _ => {}
            }
        }
    });
    let code = exit.await;
    // The output the process wrote before it exited is all delivered before the status.
    for mut pump in pumps {
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut pump)
            .await
            .is_err()
        {
            pump.abort();
        }
    }
    reader.abort();
    finish.await;
    if let Ok(mut sink) = writer.await {
        close(&mut sink, final_status(&command, code)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubectl_exec_options() {
        let q = parse(Some(
            "command=sh&command=-c&command=exit%203&container=main&stdin=true&stdout=true&tty=false",
        ));
        assert_eq!(q.command, vec!["sh", "-c", "exit 3"]);
        assert_eq!(q.container.as_deref(), Some("main"));
        assert!(q.stdin && !q.tty);
    }

    #[test]
    fn a_non_zero_exit_is_kubectls_exit_code_status() {
        let status = final_status(&["false".into()], Ok(3));
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(final_status(&[], Ok(0))["status"], "Success");
    }
}
