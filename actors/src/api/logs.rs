//! The pods/log subresource: what `kubectl logs [-c C] [-f] [--previous] [--tail N]` reads.
//!
//! Kubelets keep each container run's stdout and stderr in one file per run under the data
//! directory ([`pod_log_path`] is the one definition of where); the API server reads it
//! directly because every node of this process shares the data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shipshape_api::{Kind, ObjectKey};

use super::{ApiState, percent_decode, pod_or_not_found, status};
use crate::controllers::{container_running, container_status};
use crate::store_actor::Get;

/// Where the kubelet writes run `restarts` of `container` in pod `uid`.
pub fn pod_log_path(data_dir: &Path, uid: &str, container: &str, restarts: u64) -> PathBuf {
    data_dir
        .join("pods")
        .join(uid)
        .join("logs")
        .join(container)
        .join(format!("{restarts}.log"))
}

#[derive(Default)]
struct LogQuery {
    container: Option<String>,
    follow: bool,
    previous: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

fn parse(raw: Option<&str>) -> LogQuery {
    let mut query = LogQuery::default();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        let yes = value == "true" || value == "1";
        match key {
            "container" => query.container = Some(value).filter(|v| !v.is_empty()),
            "follow" => query.follow = yes,
            "previous" => query.previous = yes,
            "tailLines" => query.tail_lines = value.parse().ok(),
            "limitBytes" => query.limit_bytes = value.parse().ok(),
            _ => {}
        }
    }
    query
}

fn bad(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// The last `n` lines of `bytes`.
fn tail(bytes: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, byte) in trimmed.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == n {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

/// The restart count and waiting reason of `container` in `pod`'s status.
fn container_state(pod: &Value, container: &str) -> (u64, Option<String>) {
    match container_status(pod, container) {
        Some(s) => (
            s["restartCount"].as_u64().unwrap_or(0),
            s["state"]["waiting"]["reason"].as_str().map(str::to_string),
        ),
        None => (0, Some("ContainerCreating".into())),
    }
}

/// GET /api/v1/namespaces/{namespace}/pods/{name}/log
pub(super) async fn pod_log(
    state: &ApiState,
    namespace: String,
    name: String,
    raw_query: Option<&str>,
) -> Response {
    let query = parse(raw_query);
    let Some(data_dir) = state.data_dir.clone() else {
        return bad("this API server keeps no container logs".into());
    };
    let key = ObjectKey {
        kind: Kind::Pod,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let pod = match pod_or_not_found(state, &namespace, &name).await {
        Ok(pod) => pod,
        Err(answer) => return answer,
    };
    let names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .filter_map(|field| pod["spec"][field].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let regular = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    let container = match query.container {
        Some(c) if names.contains(&c) => c,
        Some(c) => return bad(format!("container {c} is not valid for pod {name}")),
        None if regular == 1 => names[0].clone(),
        None => {
            return bad(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            ));
        }
    };
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (restarts, waiting) = container_state(&pod, &container);
    let run = if query.previous {
        match restarts.checked_sub(1) {
            Some(previous) => previous,
            None => {
                return bad(format!(
                    "previous terminated container \"{container}\" in pod \"{name}\" not found"
                ));
            }
        }
    } else {
        restarts
    };
    let path = pod_log_path(&data_dir, &uid, &container, run);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let why = waiting.unwrap_or_else(|| "ContainerCreating".into());
            return bad(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {why}"
            ));
        }
    };
    let mut shown = match query.tail_lines {
        Some(n) => tail(&bytes, n).to_vec(),
        None => bytes.clone(),
    };
    if let Some(limit) = query.limit_bytes {
        shown.truncate(limit);
    }
    let headers = [(header::CONTENT_TYPE, "text/plain")];
    if !query.follow || query.previous {
        return (headers, shown).into_response();
    }
    // Follow: what is there, then what is appended, until the run ends (the pod is deleted or
    // the container restarts).
    let store = state.store.clone();
    let follow = Follow {
        path,
        offset: bytes.len() as u64,
        first: Some(shown),
        store,
        key,
        uid,
        container,
        run,
        checks: 0,
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        if let Some(first) = follow.first.take() {
            return Some((Ok::<_, std::io::Error>(Bytes::from(first)), follow));
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(more) = follow.read_more().await {
                return Some((Ok(Bytes::from(more)), follow));
            }
            follow.checks += 1;
            if follow.checks % 5 == 0 && !follow.still_running().await {
                return follow
                    .read_more()
                    .await
                    .map(|more| (Ok(Bytes::from(more)), follow));
            }
        }
    });
    (headers, Body::from_stream(stream)).into_response()
}

struct Follow {
    path: PathBuf,
    offset: u64,
    first: Option<Vec<u8>>,
    store: kameo::actor::ActorRef<crate::StoreActor>,
    key: ObjectKey,
    uid: String,
    container: String,
    run: u64,
    checks: u64,
}

impl Follow {
    async fn read_more(&mut self) -> Option<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::File::open(&self.path).await.ok()?;
        let length = file.metadata().await.ok()?.len();
        if length < self.offset {
            // Truncated (rotated): start again from the top.
            self.offset = 0;
        }
        if length == self.offset {
            return None;
        }
        file.seek(std::io::SeekFrom::Start(self.offset))
            .await
            .ok()?;
        let mut more = Vec::new();
        file.read_to_end(&mut more).await.ok()?;
        self.offset += more.len() as u64;
        Some(more)
    }

    async fn still_running(&self) -> bool {
        match self.store.ask(Get(self.key.clone())).await {
            Ok(Some(stored)) => {
                let pod = &stored.object;
                if pod["metadata"]["uid"] != self.uid.as_str() {
                    return false;
                }
                let (restarts, _) = container_state(pod, &self.container);
                restarts == self.run && container_running(pod, &self.container)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\n", 0), b"");
    }

    #[test]
    fn reads_kubectl_log_options() {
        let q = parse(Some(
            "container=web&follow=true&tailLines=10&previous=false",
        ));
        assert_eq!(q.container.as_deref(), Some("web"));
        assert!(q.follow && !q.previous);
        assert_eq!(q.tail_lines, Some(10));
    }
}
