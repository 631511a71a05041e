//! `kubectl exec` and `shipshape exec` on real nodes: a process started in a running container
//! through containerd's exec, its stdin, stdout and stderr carried over FIFOs that the shim
//! opens on its side and the API server reads and writes on ours.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use shipshape_actors::api::exec::{BoxFuture, ExecRequest, ExecSession, PodExec};
use shipshape_actors::controllers::container_status;
use tokio::net::unix::pipe;

use crate::runtime::{NodeRuntime, new_exec_id};

/// Runs commands in the containers of this process's nodes.
pub struct ContainerdExec {
    runtimes: HashMap<String, NodeRuntime>,
    data_dir: PathBuf,
}

impl ContainerdExec {
    /// Exec for the nodes in `runtimes` (by node name); FIFOs live under `data_dir/pods`.
    pub fn new(runtimes: HashMap<String, NodeRuntime>, data_dir: &Path) -> Self {
        Self {
            runtimes,
            data_dir: data_dir.to_path_buf(),
        }
    }
}

async fn mkfifo(path: &Path) -> Result<(), String> {
    let status = tokio::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(path)
        .status()
        .await
        .map_err(|e| format!("mkfifo {}: {e}", path.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("mkfifo {} failed", path.display()))
    }
}

impl ContainerdExec {
    async fn start(&self, request: ExecRequest) -> Result<ExecSession, String> {
        let pod = &request.pod;
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let runtime = self
            .runtimes
            .get(node)
            .cloned()
            .ok_or_else(|| format!("pod {name} is not running on a node of this cluster"))?;
        let status = container_status(pod, &request.container)
            .cloned()
            .unwrap_or(Value::Null);
        if !status["state"]["running"].is_object() {
            return Err(format!(
                "container {} in pod {name} is not running",
                request.container
            ));
        }
        let id = status["containerID"]
            .as_str()
            .and_then(|c| c.strip_prefix("containerd://"))
            .ok_or_else(|| format!("container {} has no ID yet", request.container))?
            .to_string();
        let exec_id = new_exec_id();
        let dir = self
            .data_dir
            .join("pods")
            .join(&uid)
            .join("exec")
            .join(&exec_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = |stream: &str| dir.join(stream);
        mkfifo(&path("stdout")).await?;
        let stdout = pipe::OpenOptions::new()
            .open_receiver(path("stdout"))
            .map_err(|e| format!("opening the stdout FIFO: {e}"))?;
        let stderr = if request.tty {
            None
        } else {
            mkfifo(&path("stderr")).await?;
            Some(
                pipe::OpenOptions::new()
                    .open_receiver(path("stderr"))
                    .map_err(|e| format!("opening the stderr FIFO: {e}"))?,
            )
        };
        let stdin = if request.stdin {
            mkfifo(&path("stdin")).await?;
            // Read-write, so opening does not wait for the shim to open its end.
            Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(path("stdin"))
                    .map_err(|e| format!("opening the stdin FIFO: {e}"))?,
            )
        } else {
            None
        };
        let text = |p: PathBuf| p.display().to_string();
        runtime
            .start_exec(
                &id,
                &exec_id,
                &request.command,
                request.tty,
                &if request.stdin {
                    text(path("stdin"))
                } else {
                    String::new()
                },
                &text(path("stdout")),
                &if request.tty {
                    String::new()
                } else {
                    text(path("stderr"))
                },
            )
            .await
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                e.to_string()
            })?;
        let waiter = runtime.clone();
        let (wait_id, wait_exec) = (id.clone(), exec_id.clone());
        let exit: BoxFuture<'static, Result<i32, String>> = Box::pin(async move {
            waiter
                .wait_exec(&wait_id, &wait_exec)
                .await
                .map_err(|e| e.to_string())
        });
        let resize = request.tty.then(|| {
            let runtime = runtime.clone();
            let (id, exec_id) = (id.clone(), exec_id.clone());
            Box::new(move |width: u16, height: u16| {
                let runtime = runtime.clone();
                let (id, exec_id) = (id.clone(), exec_id.clone());
                tokio::spawn(
                    async move { runtime.resize_exec(&id, &exec_id, width, height).await },
                );
            }) as Box<dyn Fn(u16, u16) + Send + Sync>
        });
        let close_stdin = request.stdin.then(|| {
            let runtime = runtime.clone();
            let (id, exec_id) = (id.clone(), exec_id.clone());
            Box::pin(async move { runtime.close_stdin(&id, &exec_id).await })
                as BoxFuture<'static, ()>
        });
        let finish: BoxFuture<'static, ()> = Box::pin(async move {
            runtime.delete_exec(&id, &exec_id).await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
        });
        Ok(ExecSession {
            stdin: stdin.map(|s| Box::pin(s) as _),
            stdout: Box::pin(stdout),
            stderr: stderr.map(|s| Box::pin(s) as _),
            exit,
            resize,
            close_stdin,
            finish,
        })
    }
}

impl PodExec for ContainerdExec {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecSession, String>> {
        Box::pin(self.start(request))
    }
}

/// Wraps [`ContainerdExec`] for the API server.
pub fn provider(runtimes: HashMap<String, NodeRuntime>, data_dir: &Path) -> Arc<dyn PodExec> {
    Arc::new(ContainerdExec::new(runtimes, data_dir))
}
