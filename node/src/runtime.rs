//! One node's containers on containerd: create a container on a fresh snapshot of its image
//! and start its task with stdout and stderr appended to a log file, wait for it, signal it,
//! and remove every trace of it. All calls carry the node's containerd namespace.

use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, GetContainerRequest, GetRequest,
    KillRequest, ListContainersRequest, ResizePtyRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use oci_spec::runtime::Spec;

use crate::containerd::{Containerd, RuntimeError, request};
use crate::image::{ResolvedImage, SNAPSHOTTER};

/// The runtime containerd runs every container with.
const RUNC: &str = "io.containerd.runc.v2";

/// What a task is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Running, with its pid.
    Running(u32),
    /// Exited with this status.
    Exited(u32),
    /// No task (never started, or already deleted).
    Absent,
}

/// One containerd namespace's containers.
#[derive(Clone, Debug)]
pub struct NodeRuntime {
    containerd: Containerd,
    namespace: String,
}

fn ok_if_not_found(result: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
    match result {
        Err(error) if error.is_not_found() => Ok(()),
        other => other,
    }
}

impl NodeRuntime {
    /// The containers in `namespace` of `containerd`.
    pub fn new(containerd: Containerd, namespace: impl Into<String>) -> Self {
        Self {
            containerd,
            namespace: namespace.into(),
        }
    }

    /// The containerd namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The connection.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    fn req<T>(&self, message: T) -> containerd_client::tonic::Request<T> {
        request(&self.namespace, message, None)
    }

    /// Creates container `id` from `image` with `spec`, and starts it: output goes to `log`.
    /// Returns the pid.
    pub async fn run(
        &self,
        id: &str,
        image: &ResolvedImage,
        spec: &Spec,
        labels: HashMap<String, String>,
        log: &Path,
    ) -> Result<u32, RuntimeError> {
        let channel = self.containerd.channel();
        let mut snapshots = SnapshotsClient::new(channel.clone());
        let prepared = snapshots
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.to_string(),
                parent: image.top_layer.clone(),
                labels: HashMap::new(),
            }))
            .await;
        let mounts = match prepared {
            Ok(response) => response.into_inner().mounts,
            // Left by an attempt that failed later: reuse it.
            Err(status) if status.code() == Code::AlreadyExists => {
                snapshots
                    .mounts(self.req(MountsRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: id.to_string(),
                    }))
                    .await
                    .map_err(|s| RuntimeError::call(format!("snapshots.Mounts {id}"), s))?
                    .into_inner()
                    .mounts
            }
            Err(status) => {
                return Err(RuntimeError::call(
                    format!("snapshots.Prepare {id}"),
                    status,
                ));
            }
        };
        let spec_json = serde_json::to_vec(spec)
            .map_err(|e| RuntimeError::Invalid(format!("runtime spec of {id}: {e}")))?;
        let container = Container {
            id: id.to_string(),
            labels,
            image: image.name.clone(),
            runtime: Some(Runtime {
                name: RUNC.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: spec_json,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        let mut containers = ContainersClient::new(channel.clone());
        match containers
            .create(self.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
        {
            Ok(_) => {}
            Err(status) => {
                return Err(RuntimeError::call(
                    format!("containers.Create {id}"),
                    status,
                ));
            }
        }
        if let Some(dir) = log.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        }
        let uri = format!("file://{}", log.display());
        let mut tasks = TasksClient::new(channel);
        tasks
            .create(self.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                ..Default::default()
            }))
            .await
            .map_err(|s| RuntimeError::call(format!("tasks.Create {id}"), s))?;
        let started = tasks
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| RuntimeError::call(format!("tasks.Start {id}"), s))?;
        Ok(started.into_inner().pid)
    }

    /// Waits for container `id`'s task to exit: its exit status.
    pub async fn wait(&self, id: &str) -> Result<u32, RuntimeError> {
        let response = TasksClient::new(self.containerd.channel())
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| RuntimeError::call(format!("tasks.Wait {id}"), s))?;
        Ok(response.into_inner().exit_status)
    }

    /// What container `id`'s task is doing.
    pub async fn state(&self, id: &str) -> Result<TaskState, RuntimeError> {
        let response = TasksClient::new(self.containerd.channel())
            .get(self.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        let process = match response {
            Ok(response) => response.into_inner().process,
            Err(status) if status.code() == Code::NotFound => return Ok(TaskState::Absent),
            Err(status) => return Err(RuntimeError::call(format!("tasks.Get {id}"), status)),
        };
        Ok(match process {
            None => TaskState::Absent,
            // containerd.v1.types.Status: 2 running, 3 stopped.
            Some(p) if p.status == 3 => TaskState::Exited(p.exit_status),
            Some(p) if p.status == 0 => TaskState::Absent,
            Some(p) => TaskState::Running(p.pid),
        })
    }

    /// Sends `signal` to every process of container `id`.
    pub async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        let result = TasksClient::new(self.containerd.channel())
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: true,
            }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::call(format!("tasks.Kill {id}"), s));
        ok_if_not_found(result)
    }

    /// Removes container `id` entirely: its task (killed first if it still runs), the container
    /// record and its snapshot. Nothing there is fine.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let channel = self.containerd.channel();
        if let TaskState::Running(_) = self.state(id).await? {
            self.kill(id, 9).await?;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.wait(id)).await;
        }
        let deleted = TasksClient::new(channel.clone())
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::call(format!("tasks.Delete {id}"), s));
        ok_if_not_found(deleted)?;
        let deleted = ContainersClient::new(channel.clone())
            .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::call(format!("containers.Delete {id}"), s));
        ok_if_not_found(deleted)?;
        let removed = SnapshotsClient::new(channel)
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.to_string(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::call(format!("snapshots.Remove {id}"), s));
        ok_if_not_found(removed)
    }

    /// Deletes container `id`'s exited task so that a new one can start; the container stays.
    pub async fn delete_task(&self, id: &str) -> Result<(), RuntimeError> {
        let deleted = TasksClient::new(self.containerd.channel())
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::call(format!("tasks.Delete {id}"), s));
        ok_if_not_found(deleted)
    }

    /// Starts `args` as process `exec_id` inside container `id`'s running task, with the
    /// container's user, environment and working directory. `stdin`, `stdout` and `stderr` are
    /// FIFO paths or `file://` URIs (empty: none); with `tty` the process gets a terminal and
    /// everything it writes goes to stdout.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_exec(
        &self,
        id: &str,
        exec_id: &str,
        args: &[String],
        tty: bool,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> Result<(), RuntimeError> {
        let channel = self.containerd.channel();
        let container = ContainersClient::new(channel.clone())
            .get(self.req(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| RuntimeError::call(format!("containers.Get {id}"), s))?
            .into_inner()
            .container
            .ok_or_else(|| RuntimeError::Invalid(format!("container {id} has no record")))?;
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|any| serde_json::from_slice(&any.value).ok())
            .ok_or_else(|| RuntimeError::Invalid(format!("container {id} has no runtime spec")))?;
        let mut process = spec
            .get("process")
            .cloned()
            .ok_or_else(|| RuntimeError::Invalid(format!("container {id} has no process")))?;
        process["args"] = serde_json::json!(args);
        process["terminal"] = serde_json::json!(tty);
        if tty
            && let Some(env) = process["env"].as_array_mut()
            && !env
                .iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
        {
            env.push(serde_json::json!("TERM=xterm"));
        }
        let mut tasks = TasksClient::new(channel);
        tasks
            .exec(self.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: stdin.to_string(),
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
                terminal: tty,
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: process.to_string().into_bytes(),
                }),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| RuntimeError::call(format!("tasks.Exec {id}"), s))?;
        let started = tasks
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| RuntimeError::call(format!("tasks.Start {id} {exec_id}"), s));
        if let Err(error) = started {
            self.delete_exec(id, exec_id).await;
            return Err(error);
        }
        Ok(())
    }

    /// Waits for process `exec_id` in container `id`: its exit code.
    pub async fn wait_exec(&self, id: &str, exec_id: &str) -> Result<i32, RuntimeError> {
        TasksClient::new(self.containerd.channel())
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map(|r| r.into_inner().exit_status as i32)
            .map_err(|s| RuntimeError::call(format!("tasks.Wait {id} {exec_id}"), s))
    }

    /// Kills process `exec_id` in container `id`.
    pub async fn kill_exec(&self, id: &str, exec_id: &str) {
        let _ = TasksClient::new(self.containerd.channel())
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal: 9,
                all: false,
            }))
            .await;
    }

    /// Forgets process `exec_id` in container `id` (after it exited).
    pub async fn delete_exec(&self, id: &str, exec_id: &str) {
        let _ = TasksClient::new(self.containerd.channel())
            .delete_process(self.req(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await;
    }

    /// Closes process `exec_id`'s stdin: it reads end-of-file.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) {
        let _ = TasksClient::new(self.containerd.channel())
            .close_io(self.req(CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            }))
            .await;
    }

    /// Resizes process `exec_id`'s terminal.
    pub async fn resize_exec(&self, id: &str, exec_id: &str, width: u16, height: u16) {
        let _ = TasksClient::new(self.containerd.channel())
            .resize_pty(self.req(ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width: u32::from(width),
                height: u32::from(height),
            }))
            .await;
    }

    /// Runs `args` in container `id` to completion (a probe), output appended to `output`;
    /// gives up, killing it, after `timeout`. The exit code, or `None` on timeout.
    pub async fn exec(
        &self,
        id: &str,
        args: &[String],
        output: &Path,
        timeout: std::time::Duration,
    ) -> Result<Option<i32>, RuntimeError> {
        let exec_id = new_exec_id();
        let uri = format!("file://{}", output.display());
        self.start_exec(id, &exec_id, args, false, "", &uri, &uri)
            .await?;
        let result = match tokio::time::timeout(timeout, self.wait_exec(id, &exec_id)).await {
            Ok(Ok(code)) => Ok(Some(code)),
            Ok(Err(error)) => Err(error),
            Err(_) => {
                self.kill_exec(id, &exec_id).await;
                Ok(None)
            }
        };
        self.delete_exec(id, &exec_id).await;
        result
    }

    /// The containers in this namespace (ours all carry the pod uid label).
    pub async fn list(&self) -> Result<Vec<Container>, RuntimeError> {
        Ok(ContainersClient::new(self.containerd.channel())
            .list(self.req(ListContainersRequest {
                filters: Vec::new(),
            }))
            .await
            .map_err(|s| RuntimeError::call("containers.List", s))?
            .into_inner()
            .containers)
    }
}

/// A fresh ID for a process run inside a container.
pub fn new_exec_id() -> String {
    format!("exec-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Whether the memory cgroup at `cgroups_path` recorded an OOM kill (cgroup v1 and v2).
pub fn oom_killed(cgroups_path: &str) -> bool {
    let relative = cgroups_path.trim_start_matches('/');
    let candidates = [
        (
            Path::new("/sys/fs/cgroup/memory")
                .join(relative)
                .join("memory.oom_control"),
            "oom_kill ",
        ),
        (
            Path::new("/sys/fs/cgroup")
                .join(relative)
                .join("memory.events"),
            "oom_kill ",
        ),
    ];
    candidates.iter().any(|(path, key)| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines().any(|line| {
                line.strip_prefix(key)
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

/// Removes the (empty) cgroup directories of a pod under every hierarchy, deepest first.
pub fn remove_cgroups(pod_cgroup: &str) {
    let relative = pod_cgroup.trim_start_matches('/');
    let mut roots = vec![Path::new("/sys/fs/cgroup").to_path_buf()];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    for root in roots {
        let dir = root.join(relative);
        if !dir.is_dir() {
            continue;
        }
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        children.sort();
        for child in children {
            let _ = std::fs::remove_dir(child);
        }
        let _ = std::fs::remove_dir(&dir);
    }
}
