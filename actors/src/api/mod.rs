//! The API server: Kubernetes' own paths and JSON over HTTPS, so kubectl works against the
//! cluster with the kubeconfig `up` writes.
//!
//! What it serves: `/version`, `/healthz`, `/readyz`, discovery (`/api`, `/apis`, each group
//! version's resources), list, get and watch of every supported kind (JSON, or a Table when
//! kubectl asks for one), label and field selectors, lists in pages (`limit` and `continue`,
//! every page at the first page's resourceVersion), and `/apis/shipshape.dev/v1/sync` (POST) to
//! sync now, for webhooks. Writes are refused with a pointer to the file in Git that declares the
//! object, except deleting a pod, which its controller replaces; the deletion is audited.
//! Every request but the health and version probes needs the bearer token.

pub mod exec;
pub mod logs;
pub mod portforward;
pub mod spdy;
pub mod tables;
pub mod tls;

use shipshape_api::pointer::At;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use base64::Engine as _;
use futures_util::StreamExt as _;
use kameo::actor::ActorRef;
use serde_json::{Value, json};
use shipshape_api::{Kind, ObjectKey};

use crate::gitsync::{ApplicationStatus, GitSource, Suspend};
use crate::gitsync::{GitSync, Outcome, SyncNow, SyncOptions};
use crate::store::{
    AuditEntry, Batch, EventType, PageSize, Precondition, ReadView, StoreError, WatchEvent, Write,
    parse_storage_key,
};
use crate::store_actor::{
    Apply, Get, GetMeta, List, ListMeta, OpenReadView, ReadAuditPage, StoreActor, Watch,
};

/// The Kubernetes version whose API (through k8s-openapi) this server speaks.
const KUBERNETES_MINOR: &str = "37";

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    store: ActorRef<StoreActor>,
    sync: ActorRef<GitSync>,
    token: Arc<str>,
    /// The data directory, where container logs are (None: no nodes keep logs here).
    data_dir: Option<Arc<std::path::Path>>,
    /// How to run a command in a container, once the nodes are up.
    exec: exec::ExecSlot,
    /// How to reach a pod's ports, once the nodes are up.
    ports: portforward::PortsSlot,
    /// The snapshots that lists read in pages continue from.
    views: Arc<Mutex<ListViews>>,
}

/// A running API server.
pub struct ApiServer {
    /// Where it listens.
    pub address: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    exec: exec::ExecSlot,
    ports: portforward::PortsSlot,
}

impl ApiServer {
    /// Lets pods/exec run commands through the nodes (real nodes provide it once running).
    pub fn provide_exec(&self, exec: Arc<dyn exec::PodExec>) {
        let _ = self.exec.set(exec);
    }

    /// Lets pods/portforward reach pods' ports through the nodes (real nodes provide it).
    pub fn provide_ports(&self, ports: Arc<dyn portforward::PodPorts>) {
        let _ = self.ports.set(ports);
    }

    /// Stops accepting requests and waits (briefly) for those in flight.
    pub async fn stop(self) {
        self.handle
            .graceful_shutdown(Some(std::time::Duration::from_secs(2)));
        let _ = self.task.await;
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error(
        "cannot listen on {address}: {source} (is another shipshape or Kubernetes API server running? choose one with --api-listen)"
    )]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificates could not be loaded.
    #[error("cannot load the API server's certificate: {0}")]
    Tls(std::io::Error),
}

/// Starts the API server on `address` (port 0 picks a free one). `data_dir` is where the
/// nodes keep container logs (for pods/log).
pub async fn serve(
    address: SocketAddr,
    credentials: &tls::Credentials,
    store: ActorRef<StoreActor>,
    sync: ActorRef<GitSync>,
    data_dir: Option<&std::path::Path>,
) -> Result<ApiServer, ServeError> {
    // One process-wide crypto provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(
        &credentials.server_cert,
        &credentials.server_key,
    )
    .await
    .map_err(ServeError::Tls)?;
    let listener = std::net::TcpListener::bind(address)
        .map_err(|source| ServeError::Bind { address, source })?;
    let address = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { address, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind { address, source })?;
    let state = ApiState {
        store,
        sync,
        token: Arc::from(credentials.token.as_str()),
        data_dir: data_dir.map(Arc::from),
        exec: exec::ExecSlot::default(),
        ports: portforward::PortsSlot::default(),
        views: Arc::default(),
    };
    tokio::spawn(expire_views(Arc::downgrade(&state.views)));
    let exec = state.exec.clone();
    let ports = state.ports.clone();
    let app = router(state);
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, config)
        .map_err(|source| ServeError::Bind { address, source })?
        .handle(handle.clone());
    let task = tokio::spawn(server.serve(app.into_make_service()));
    Ok(ApiServer {
        address,
        handle,
        task,
        exec,
        ports,
    })
}

fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api", get(core_versions))
        .route("/apis", get(group_list))
        .route("/api/{*rest}", any(dispatch))
        .route("/apis/{*rest}", any(dispatch))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route("/version", get(version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .with_state(state)
}

/// A Kubernetes `Status` error response.
fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

/// The stored pod `namespace/name`, or the answer to give when it cannot be read.
async fn pod_or_not_found(
    state: &ApiState,
    namespace: &str,
    name: &str,
) -> Result<Value, Response> {
    let key = ObjectKey {
        kind: Kind::Pod,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    match state.store.ask(crate::store_actor::Get(key)).await {
        Ok(Some(stored)) => Ok(stored.object),
        Ok(None) => Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{name}\" not found"),
        )),
        Err(error) => Err(store_failure(error)),
    }
}

fn store_failure(error: impl std::fmt::Display) -> Response {
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        error.to_string(),
    )
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|token| constant_time_eq(token.as_bytes(), state.token.as_bytes())) {
        next.run(request).await
    } else {
        status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized: use the token in the kubeconfig shipshape up writes",
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::METRICS.encode(),
    )
        .into_response()
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-shipshape.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    }))
}

async fn core_versions(headers: HeaderMap) -> Json<Value> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }))
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Kind::ALL
        .iter()
        .map(|k| (k.info().group, k.info().version))
        .filter(|(group, _)| !group.is_empty())
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

async fn group_list() -> Json<Value> {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = Kind::ALL
        .iter()
        .filter(|k| k.info().group == group && k.info().version == version)
        .map(|kind| {
            let info = kind.info();
            let mut verbs = vec!["get", "list", "watch"];
            if *kind == Kind::Pod {
                verbs.push("delete");
            }
            let all = matches!(
                kind,
                Kind::Pod
                    | Kind::Service
                    | Kind::Deployment
                    | Kind::ReplicaSet
                    | Kind::ReplicationController
                    | Kind::StatefulSet
                    | Kind::DaemonSet
                    | Kind::Job
                    | Kind::CronJob
            );
            json!({
                "categories": if all { vec!["all"] } else { Vec::new() },
                "name": info.plural,
                "singularName": info.kind.to_ascii_lowercase(),
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": verbs,
                "shortNames": kind.short_names(),
            })
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// What a resource path names.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

enum Route {
    Discovery(Value),
    Resource(Target),
    Sync,
    Status,
    History,
    Suspend(String, bool),
    PodLog(String, String),
    PodExec(String, String),
    PodPortForward(String, String),
    /// `…/NAME/scale` or `…/NAME/status` of a named object.
    Subresource(Target, Subresource),
}

/// The subresources kubectl uses on Git-managed objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subresource {
    Scale,
    Status,
}

fn parse_route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", name, "log"] => {
            return Some(Route::PodLog(namespace.to_string(), name.to_string()));
        }
        ["api", "v1", "namespaces", namespace, "pods", name, "exec"] => {
            return Some(Route::PodExec(namespace.to_string(), name.to_string()));
        }
        [
            "api",
            "v1",
            "namespaces",
            namespace,
            "pods",
            name,
            "portforward",
        ] => {
            return Some(Route::PodPortForward(
                namespace.to_string(),
                name.to_string(),
            ));
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", "shipshape.dev", "v1", "sync"] => return Some(Route::Sync),
        ["apis", "shipshape.dev", "v1", "status"] => return Some(Route::Status),
        ["apis", "shipshape.dev", "v1", "history"] => return Some(Route::History),
        [
            "apis",
            "shipshape.dev",
            "v1",
            "applications",
            app,
            "suspend",
        ] => {
            return Some(Route::Suspend(app.to_string(), true));
        }
        ["apis", "shipshape.dev", "v1", "applications", app, "resume"] => {
            return Some(Route::Suspend(app.to_string(), false));
        }
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        Kind::ALL.iter().copied().find(|k| {
            k.info().group == group && k.info().version == version && k.info().plural == plural
        })
    };
    let target = match rest {
        [] => return resource_list(group, version).map(Route::Discovery),
        ["namespaces", namespace, plural] => Target {
            kind: find(plural)?,
            namespace: Some(namespace.to_string()),
            name: None,
        },
        ["namespaces", namespace, plural, name] => Target {
            kind: find(plural)?,
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
        },
        ["namespaces", namespace, plural, name, sub] => {
            let kind = find(plural)?;
            let sub = match *sub {
                "status" => Subresource::Status,
                "scale" if scalable(kind) => Subresource::Scale,
                _ => return None,
            };
            let target = Target {
                kind,
                namespace: Some(namespace.to_string()),
                name: Some(name.to_string()),
            };
            return Some(Route::Subresource(target, sub));
        }
        [plural] => Target {
            kind: find(plural)?,
            namespace: None,
            name: None,
        },
        [plural, name] => Target {
            kind: find(plural)?,
            namespace: None,
            name: Some(name.to_string()),
        },
        _ => return None,
    };
    Some(Route::Resource(target))
}

/// Query parameters kubectl sends (the ones that change the answer).
#[derive(Clone, Default)]
struct Query {
    watch: bool,
    resource_version: Option<u64>,
    label_selector: Vec<(String, Option<String>, bool)>,
    field_selector: Vec<(String, String, bool)>,
    allow_empty: bool,
    /// At most this many items a page (`limit`; absent or 0: the whole list).
    limit: Option<usize>,
    /// Where the list goes on (`continue`, from the page before).
    continue_token: Option<String>,
}

/// Reads the query string; an unsupported selector is an error message for a 400.
fn parse_query(raw: Option<&str>) -> Result<Query, String> {
    let mut query = Query::default();
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "watch" => query.watch = value == "true" || value == "1",
            "resourceVersion" => query.resource_version = value.parse().ok().filter(|rv| *rv > 0),
            "allowEmpty" => query.allow_empty = value == "true",
            "limit" => {
                let limit: u64 = value.parse().map_err(|_| {
                    format!("limit: {value:?} is not a whole number of items (0 for no limit)")
                })?;
                query.limit = Some(usize::try_from(limit).unwrap_or(usize::MAX)).filter(|l| *l > 0);
            }
            "continue" => query.continue_token = Some(value).filter(|v| !v.is_empty()),
            "labelSelector" => {
                for term in value.split(',').filter(|t| !t.is_empty()) {
                    let parsed = if let Some((k, v)) = term.split_once("!=") {
                        (k.trim().to_string(), Some(v.trim().to_string()), false)
                    } else if let Some((k, v)) =
                        term.split_once("==").or_else(|| term.split_once('='))
                    {
                        (k.trim().to_string(), Some(v.trim().to_string()), true)
                    } else if let Some(k) = term.strip_prefix('!') {
                        (k.trim().to_string(), None, false)
                    } else if term.contains(' ') || term.contains('(') {
                        return Err(format!(
                            "label selector {term:?}: only =, == and != (and bare keys) are supported"
                        ));
                    } else {
                        (term.trim().to_string(), None, true)
                    };
                    query.label_selector.push(parsed);
                }
            }
            "fieldSelector" => {
                for term in value.split(',').filter(|t| !t.is_empty()) {
                    let (path, expected, equal) = if let Some((k, v)) = term.split_once("!=") {
                        (k, v, false)
                    } else if let Some((k, v)) =
                        term.split_once("==").or_else(|| term.split_once('='))
                    {
                        (k, v, true)
                    } else {
                        return Err(format!("field selector {term:?} is not FIELD=VALUE"));
                    };
                    query.field_selector.push((
                        path.trim().to_string(),
                        expected.trim().to_string(),
                        equal,
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(query)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    fn selects(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let labels_hold = self.label_selector.iter().all(|(key, value, equal)| {
            let actual = labels[key.as_str()].as_str();
            match (value, equal) {
                (Some(v), true) => actual == Some(v.as_str()),
                (Some(v), false) => actual != Some(v.as_str()),
                (None, true) => actual.is_some(),
                (None, false) => actual.is_none(),
            }
        });
        let fields_hold = self.field_selector.iter().all(|(path, expected, equal)| {
            let pointer = format!("/{}", path.replace('.', "/"));
            let actual = match object.at(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *expected) == *equal
        });
        labels_hold && fields_hold
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

async fn dispatch(
    State(state): State<ApiState>,
    method: Method,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    let query = match parse_query(request.uri().query()) {
        Ok(query) => query,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let Some(route) = parse_route(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
    };
    match (route, method) {
        (Route::Discovery(list), Method::GET) => Json(list).into_response(),
        (Route::PodLog(namespace, name), Method::GET) => {
            logs::pod_log(&state, namespace, name, request.uri().query()).await
        }
        (Route::PodExec(namespace, name), Method::GET | Method::POST) => {
            use axum::extract::FromRequestParts as _;
            let raw = request.uri().query().map(str::to_string);
            let (mut parts, _) = request.into_parts();
            let upgrade = axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .ok();
            exec::pod_exec(&state, namespace, name, raw.as_deref(), upgrade).await
        }
        (Route::PodPortForward(namespace, name), Method::GET | Method::POST) => {
            use axum::extract::FromRequestParts as _;
            let (mut parts, _) = request.into_parts();
            let upgrade = axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .ok();
            portforward::pod_port_forward(&state, namespace, name, upgrade).await
        }
        (Route::Sync, Method::POST) => sync_now(&state, query.allow_empty).await,
        (Route::Status, Method::GET) => cluster_status(&state).await,
        (Route::History, Method::GET) => history(&state, &query).await,
        (Route::Suspend(application, suspended), Method::POST) => {
            suspend(&state, application, suspended).await
        }
        (Route::Resource(target), Method::GET) if query.watch => {
            watch(state, target, query, wants_table(&headers)).await
        }
        (Route::Resource(target), Method::GET) => {
            read(&state, target, &query, wants_table(&headers)).await
        }
        (Route::Resource(target), Method::DELETE) => delete(&state, target, &headers).await,
        (Route::Subresource(target, sub), Method::GET) => subresource(&state, target, sub).await,
        // `kubectl scale` and status writes: the same refusal as any write, naming the file.
        (Route::Subresource(target, _), _) => refuse_write(&state, target).await,
        (Route::Resource(target), _) => refuse_write(&state, target).await,
        (_, _) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "method not allowed",
        ),
    }
}

/// The stored bytes one page holds at most when a client asks for pages (unless one item
/// alone is larger): Kubernetes may answer fewer items than `limit`, and this keeps a page of
/// large objects or audit records well within the 10 MiB clients such as ours read at once.
const PAGE_BUDGET: usize = 4 << 20;

/// How long a list's snapshot is kept after its latest page: Kubernetes' default compaction
/// interval, after which its continue tokens answer 410 too.
const VIEW_TTL: Duration = Duration::from_secs(5 * 60);

/// The most snapshots kept at once; past it the least recently read goes first. Each one keeps
/// the database from reusing the pages written since.
const VIEWS_KEPT: usize = 16;

/// The `rv` of a continue token whose list goes on from the newest state rather than its first
/// page's: what Kubernetes hands out with a 410, for clients that accept an inconsistent list.
const LATEST: i64 = -1;

/// The snapshots of lists being read in pages, by resourceVersion: a later page is read from
/// the snapshot the first page was, as Kubernetes reads etcd at the first page's revision. One
/// not read for [`VIEW_TTL`] is let go, and its token answers 410, as Kubernetes' does once
/// etcd has compacted the revision.
#[derive(Default)]
struct ListViews {
    views: HashMap<u64, KeptView>,
}

struct KeptView {
    view: Arc<ReadView>,
    used: Instant,
    /// How many keys each handed-out continue key has from it on (lists without a selector),
    /// so `remainingItemCount` is a subtraction, not a count per page.
    remaining: HashMap<String, u64>,
}

impl ListViews {
    fn get(&mut self, resource_version: u64, now: Instant) -> Option<Arc<ReadView>> {
        let kept = self.views.get_mut(&resource_version)?;
        kept.used = now;
        Some(kept.view.clone())
    }

    fn remaining(&self, resource_version: u64, from: &str) -> Option<u64> {
        self.views
            .get(&resource_version)?
            .remaining
            .get(from)
            .copied()
    }

    /// Keeps `view` for the page that starts at `next`.
    fn keep(&mut self, view: &Arc<ReadView>, next: &str, remaining: Option<u64>, now: Instant) {
        let kept = self
            .views
            .entry(view.resource_version())
            .or_insert_with(|| KeptView {
                view: view.clone(),
                used: now,
                remaining: HashMap::new(),
            });
        kept.used = now;
        if let Some(remaining) = remaining {
            kept.remaining.insert(next.to_string(), remaining);
        }
        self.expire(now);
    }

    /// A list read to its end needs its snapshot no more.
    fn release(&mut self, resource_version: u64) {
        self.views.remove(&resource_version);
    }

    fn expire(&mut self, now: Instant) {
        self.views
            .retain(|_, kept| now.saturating_duration_since(kept.used) < VIEW_TTL);
        while self.views.len() > VIEWS_KEPT {
            let oldest = self
                .views
                .iter()
                .min_by_key(|(_, kept)| kept.used)
                .map(|(rv, _)| *rv);
            match oldest {
                Some(rv) => self.views.remove(&rv),
                None => break,
            };
        }
    }
}

/// Lets go of snapshots nobody has read for [`VIEW_TTL`], even when no list comes to do it;
/// ends with the server.
async fn expire_views(views: std::sync::Weak<Mutex<ListViews>>) {
    let mut ticks = tokio::time::interval(VIEW_TTL / 10);
    loop {
        ticks.tick().await;
        let Some(views) = views.upgrade() else {
            return;
        };
        views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire(Instant::now());
    }
}

/// What a continue token of an object list holds (base64 of its JSON, opaque to clients): the
/// resourceVersion of the list's first page, and the storage key the next page starts at.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ContinueToken {
    rv: i64,
    start: String,
}

/// What a continue token of the history holds: the sequence number the next page starts at,
/// and the newest record when the first page was read, which the list stops at.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryToken {
    seq: u64,
    until: u64,
}

fn encode_token<T: serde::Serialize>(token: &T) -> String {
    // Two plain fields always serialise.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(token).unwrap_or_default())
}

/// The token's content, or the one-line reason for a 400.
fn decode_token<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let invalid = |why: String| {
        format!("continue: invalid token ({why}): pass the metadata.continue of the page before")
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| invalid(format!("not base64: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("not what this server hands out: {e}")))
}

fn bad_request(message: impl Into<String>) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Kubernetes' answer to a continue token whose snapshot is gone: 410, with a token that goes
/// on from the newest state instead, for a client that accepts an inconsistent list.
fn continue_expired(start: &str) -> Response {
    let token = encode_token(&ContinueToken {
        rv: LATEST,
        start: start.to_string(),
    });
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {"continue": token},
        "status": "Failure",
        "message": "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        "reason": "Expired",
        "code": StatusCode::GONE.as_u16(),
    });
    (StatusCode::GONE, Json(body)).into_response()
}

/// One page of a list, as the handlers answer it.
struct ListPage {
    objects: Vec<Value>,
    resource_version: u64,
    /// The token of the next page, when the list goes on.
    continue_token: Option<String>,
    /// How many items are left after this page, when known (lists without selectors).
    remaining: Option<u64>,
}

impl ListPage {
    /// The `metadata` of a list or Table answer.
    fn metadata(&self) -> Value {
        let mut metadata = json!({"resourceVersion": self.resource_version.to_string()});
        if let Some(token) = &self.continue_token {
            metadata["continue"] = json!(token);
        }
        if let Some(remaining) = self.remaining {
            metadata["remainingItemCount"] = json!(remaining);
        }
        metadata
    }
}

async fn open_view(state: &ApiState) -> Result<Arc<ReadView>, Response> {
    state.store.ask(OpenReadView).await.map_err(store_failure)
}

/// One page of the list `target` names: all of it without `limit`, else at most `limit`
/// items from where `continue` says, read from the first page's snapshot.
async fn list_page(state: &ApiState, target: &Target, query: &Query) -> Result<ListPage, Response> {
    let kind = target.kind;
    let namespace = target.namespace.clone().filter(|_| kind.info().namespaced);
    let prefix = ReadView::list_prefix(kind, namespace.as_deref());
    let token = match &query.continue_token {
        None => None,
        Some(text) => {
            let token: ContinueToken = decode_token(text).map_err(bad_request)?;
            if (token.rv != LATEST && token.rv < 1) || !token.start.starts_with(&prefix) {
                return Err(bad_request(
                    "continue: invalid token (it was not handed out for this list): pass the metadata.continue of the page before",
                ));
            }
            if query.resource_version.is_some() {
                return Err(bad_request(
                    "resourceVersion: specifying resource version is not allowed when using continue",
                ));
            }
            Some(token)
        }
    };
    let view = match token.as_ref().map(|t| u64::try_from(t.rv)) {
        Some(Ok(rv)) => {
            let kept = state
                .views
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(rv, Instant::now());
            match kept {
                Some(view) => view,
                // Nothing written since the first page: the newest state is that snapshot.
                None => match open_view(state).await? {
                    view if view.resource_version() == rv => view,
                    _ => return Err(continue_expired(token.as_ref().map_or("", |t| &t.start))),
                },
            }
        }
        _ => open_view(state).await?,
    };
    let size = match query.limit {
        Some(limit) => PageSize {
            limit,
            budget: PAGE_BUDGET,
        },
        None => PageSize::ALL,
    };
    let from = token.map(|t| t.start);
    let unfiltered = query.label_selector.is_empty() && query.field_selector.is_empty();
    let read = {
        let (view, query, from, namespace) =
            (view.clone(), query.clone(), from.clone(), namespace.clone());
        tokio::task::spawn_blocking(move || {
            let page = view.page(
                kind,
                namespace.as_deref(),
                from.as_deref(),
                size,
                |stored| query.selects(&stored.object),
            )?;
            Ok::<_, StoreError>(page)
        })
    };
    let page = read.await.map_err(store_failure)?.map_err(store_failure)?;
    let rv = view.resource_version();
    let views = || state.views.lock().unwrap_or_else(|e| e.into_inner());
    let (continue_token, remaining) = match page.next {
        None => {
            if from.is_some() {
                views().release(rv);
            }
            (None, None)
        }
        Some(next) => {
            let known = from
                .as_deref()
                .and_then(|from| views().remaining(rv, from))
                .map(|from_here| from_here.saturating_sub(page.scanned));
            let remaining = match (unfiltered, known) {
                (false, _) => None,
                (true, Some(known)) => Some(known),
                (true, None) => {
                    let (view, next, namespace) = (view.clone(), next.clone(), namespace.clone());
                    let counted = tokio::task::spawn_blocking(move || {
                        view.count(kind, namespace.as_deref(), &next)
                    });
                    Some(
                        counted
                            .await
                            .map_err(store_failure)?
                            .map_err(store_failure)?,
                    )
                }
            };
            views().keep(&view, &next, remaining, Instant::now());
            let rv = i64::try_from(rv).unwrap_or(i64::MAX);
            (
                Some(encode_token(&ContinueToken { rv, start: next })),
                remaining,
            )
        }
    };
    Ok(ListPage {
        objects: page
            .objects
            .into_iter()
            .map(|(_, stored)| stored.object)
            .collect(),
        resource_version: rv,
        continue_token,
        remaining,
    })
}

/// The audit log in pages, oldest first (`limit` records at most, `continue` from the page
/// before), all pages ending where the log ended at the first: `shipshape history` on a
/// long-running cluster reads it in bounded memory.
async fn history(state: &ApiState, query: &Query) -> Response {
    let token = match query
        .continue_token
        .as_deref()
        .map(decode_token::<HistoryToken>)
    {
        None => None,
        Some(Ok(token)) if token.seq >= 1 && token.seq <= token.until.saturating_add(1) => {
            Some(token)
        }
        Some(Ok(_)) => {
            return bad_request(
                "continue: invalid token (it was not handed out for the history): pass the metadata.continue of the page before",
            );
        }
        Some(Err(message)) => return bad_request(message),
    };
    let size = match query.limit {
        Some(limit) => PageSize {
            limit,
            budget: PAGE_BUDGET,
        },
        None => PageSize::ALL,
    };
    let asked = ReadAuditPage {
        after: token.as_ref().map_or(0, |t| t.seq.saturating_sub(1)),
        until: token.as_ref().map(|t| t.until),
        size,
    };
    let page = match state.store.ask(asked).await {
        Ok(page) => page,
        Err(error) => return store_failure(error),
    };
    let until = match &token {
        Some(token) if token.until > page.newest => {
            return bad_request(format!(
                "continue: invalid token (the history has no record {}): pass the metadata.continue of the page before",
                token.until
            ));
        }
        Some(token) => token.until,
        None => page.newest,
    };
    let mut metadata = json!({});
    if let Some(last) = page.records.last().map(|r| r.seq)
        && last < until
    {
        metadata["continue"] = json!(encode_token(&HistoryToken {
            seq: last.saturating_add(1),
            until,
        }));
        metadata["remainingItemCount"] = json!(until - last);
    }
    Json(json!({
        "kind": "AuditRecordList",
        "apiVersion": "shipshape.dev/v1",
        "metadata": metadata,
        "items": page.records,
    }))
    .into_response()
}

fn key_for(target: &Target, name: &str) -> ObjectKey {
    let namespaced = target.kind.info().namespaced;
    ObjectKey {
        kind: target.kind,
        namespace: if namespaced {
            target.namespace.clone().unwrap_or_else(|| "default".into())
        } else {
            String::new()
        },
        name: name.to_string(),
    }
}

fn not_found(target: &Target, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", target.kind.info().plural),
    )
}

async fn read(state: &ApiState, target: Target, query: &Query, table: bool) -> Response {
    let now = jiff::Timestamp::now();
    if let Some(name) = &target.name {
        let stored = match state.store.ask(Get(key_for(&target, name))).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return not_found(&target, name),
            Err(error) => return store_failure(error),
        };
        if table {
            let rv = stored.resource_version();
            return Json(tables::table(target.kind, &[&stored.object], rv, now)).into_response();
        }
        return Json(stored.object).into_response();
    }
    let page = match list_page(state, &target, query).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    if table {
        let refs: Vec<&Value> = page.objects.iter().collect();
        let mut table = tables::table(target.kind, &refs, page.resource_version, now);
        table["metadata"] = page.metadata();
        return Json(table).into_response();
    }
    let info = target.kind.info();
    Json(json!({
        "kind": format!("{}List", info.kind),
        "apiVersion": info.api_version,
        "metadata": page.metadata(),
        "items": page.objects,
    }))
    .into_response()
}

fn watch_line(kind: EventType, object: &Value, target_kind: Kind, table: bool, rv: u64) -> Bytes {
    let object = if table {
        tables::table(target_kind, &[object], rv, jiff::Timestamp::now())
    } else {
        object.clone()
    };
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn watch(state: ApiState, target: Target, query: Query, table: bool) -> Response {
    let mut initial = Vec::new();
    let after = match query.resource_version {
        Some(rv) => rv,
        None => {
            // No starting point: the current objects as ADDED, then every change after them.
            // One read for both, so the watch from its resourceVersion neither repeats nor
            // misses a change; a watch is not paged.
            let whole = Query {
                limit: None,
                continue_token: None,
                ..query.clone()
            };
            let page = match list_page(&state, &target, &whole).await {
                Ok(page) => page,
                Err(response) => return response,
            };
            let rv = page.resource_version;
            for object in &page.objects {
                initial.push(watch_line(EventType::Added, object, target.kind, table, rv));
            }
            rv
        }
    };
    // A resourceVersion this cluster never handed out: the API server's answer, rather than a
    // watch that waits for a version that may never come.
    if query.resource_version.is_some() {
        match state.store.ask(crate::store_actor::ResourceVersion).await {
            Ok(current) if after > current => {
                return status(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    format!("too large resource version: {after}, current: {current}"),
                );
            }
            Ok(_) => {}
            Err(error) => return store_failure(error),
        }
    }
    let start = match state.store.ask(Watch { after }).await {
        Ok(start) => start,
        Err(kameo::error::SendError::HandlerError(StoreError::Expired { requested, oldest })) => {
            return status(
                StatusCode::GONE,
                "Expired",
                format!("too old resource version: {requested} ({oldest})"),
            );
        }
        Err(error) => return store_failure(error),
    };
    let kind = target.kind;
    let namespace = target.namespace.clone().filter(|_| kind.info().namespaced);
    let name = target.name.clone();
    let query = Arc::new(query);
    let relevant = move |event: &WatchEvent| {
        let Some(key) = parse_storage_key(&event.key) else {
            return false;
        };
        key.kind == kind
            && namespace.as_ref().is_none_or(|ns| *ns == key.namespace)
            && name.as_ref().is_none_or(|n| *n == key.name)
            && query.selects(&event.object)
    };
    let last_replayed = start.replay.last().map_or(after, |e| e.resource_version);
    let replay: Vec<Bytes> = start
        .replay
        .iter()
        .filter(|e| relevant(e))
        .map(|e| watch_line(e.kind, &e.object, kind, table, e.resource_version))
        .collect();
    let live = futures_util::stream::unfold(
        (start.live, last_replayed),
        |(mut receiver, last)| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) if event.resource_version <= last => continue,
                    Ok(event) => {
                        let rv = event.resource_version;
                        return Some((event, (receiver, rv)));
                    }
                    // Lagged or closed: end the watch; the client lists again, as with a 410.
                    Err(_) => return None,
                }
            }
        },
    )
    .filter(move |e| std::future::ready(relevant(e)))
    .map(move |e| watch_line(e.kind, &e.object, kind, table, e.resource_version));
    let stream = futures_util::stream::iter(initial.into_iter().chain(replay))
        .chain(live)
        .map(Ok::<Bytes, Infallible>);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "cannot start the watch",
            )
        })
}

fn requester(headers: &HeaderMap) -> String {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown client");
    format!(
        "client/admin ({})",
        agent.split_whitespace().next().unwrap_or(agent)
    )
}

async fn delete(state: &ApiState, target: Target, headers: &HeaderMap) -> Response {
    let Some(name) = target.name.clone() else {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "delete one object at a time",
        );
    };
    if target.kind != Kind::Pod {
        return refuse_write(state, target).await;
    }
    let key = key_for(&target, &name);
    let stored = match state.store.ask(Get(key.clone())).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return not_found(&target, &name),
        Err(error) => return store_failure(error),
    };
    // A pod on a node stops gracefully: it shows Terminating until its kubelet has stopped it
    // and removed it. A pod never scheduled has nothing to stop.
    let bound = stored.object["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let grace = stored.object["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap_or(30);
    let mut writes = vec![Write::delete(
        key.clone(),
        Precondition::Uid(stored.uid().to_string()),
        bound && grace > 0,
        grace,
    )];
    // A pod Git declares is replaced by its controller, GitSync: leaving its application
    // OutOfSync in the same transaction makes the next poll re-plan it and create the pod again.
    if let Some(application) = &stored.application {
        let status_key = crate::gitsync::status_key(application);
        if let Ok(Some(value)) = state.store.ask(GetMeta(status_key.clone())).await
            && let Ok(mut app) = serde_json::from_value::<ApplicationStatus>(value)
        {
            app.sync = crate::gitsync::SyncState::OutOfSync;
            app.digest = None;
            writes.push(Write::SetMeta {
                key: status_key,
                value: serde_json::to_value(&app).unwrap_or(Value::Null),
            });
        }
    }
    let batch = Batch {
        writes,
        audit: Some(AuditEntry {
            actor: requester(headers),
            action: "delete".into(),
            subject: key.to_string(),
            details: json!({"objects": [{"object": key.to_string(), "action": "deleted"}]}),
        }),
    };
    match state.store.ask(Apply(batch)).await {
        Ok(_) => Json(stored.object).into_response(),
        Err(kameo::error::SendError::HandlerError(StoreError::NotFound(_))) => {
            not_found(&target, &name)
        }
        Err(kameo::error::SendError::HandlerError(error @ StoreError::Conflict { .. })) => {
            status(StatusCode::CONFLICT, "Conflict", error.to_string())
        }
        Err(error) => store_failure(error),
    }
}

/// The kinds with a `scale` subresource.
fn scalable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Deployment | Kind::ReplicaSet | Kind::ReplicationController | Kind::StatefulSet
    )
}

/// `GET …/status` (the object) and `GET …/scale` (an autoscaling/v1 Scale, as the API server
/// answers it for `kubectl get --subresource scale`).
async fn subresource(state: &ApiState, target: Target, sub: Subresource) -> Response {
    let name = target.name.clone().unwrap_or_default();
    let object = match state.store.ask(Get(key_for(&target, &name))).await {
        Ok(Some(stored)) => stored.object,
        Ok(None) => return not_found(&target, &name),
        Err(error) => return store_failure(error),
    };
    match sub {
        Subresource::Status => Json(object).into_response(),
        Subresource::Scale => Json(scale_of(&object)).into_response(),
    }
}

/// The Scale of a Deployment, ReplicaSet or StatefulSet.
fn scale_of(object: &Value) -> Value {
    let metadata = &object["metadata"];
    // A ReplicationController's selector is the label map itself.
    let labels = match &object["spec"]["selector"]["matchLabels"] {
        Value::Null if object["kind"] == "ReplicationController" => &object["spec"]["selector"],
        labels => labels,
    };
    let selector: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {
            "replicas": object["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector.join(","),
        },
    })
}

async fn refuse_write(state: &ApiState, target: Target) -> Response {
    let source = match &target.name {
        Some(name) => state
            .store
            .ask(Get(key_for(&target, name)))
            .await
            .ok()
            .flatten()
            .and_then(|stored| {
                stored.object["metadata"]["annotations"]["shipshape.dev/source"]
                    .as_str()
                    .map(str::to_string)
            }),
        None => None,
    };
    let message = match source {
        Some(file) => format!("desired state comes from Git: edit {file} and commit"),
        None => {
            "desired state comes from Git: commit the change to the repository shipshape follows"
                .to_string()
        }
    };
    status(StatusCode::FORBIDDEN, "Forbidden", message)
}

/// How long a sync request waits for its answer: a fetch is bounded by
/// [`crate::gitsync::FETCH_TIMEOUT`], applying takes little more, and past this the request
/// answers (the sync goes on) rather than hold a webhook's connection open.
const SYNC_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

async fn sync_now(state: &ApiState, allow_empty: bool) -> Response {
    let asked = state.sync.ask(SyncNow(SyncOptions { allow_empty }));
    let Ok(answer) = tokio::time::timeout(SYNC_ANSWER_TIMEOUT, asked).await else {
        return status(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            format!(
                "the sync did not finish within {} s; it goes on, and `shipshape status` shows how it ended",
                SYNC_ANSWER_TIMEOUT.as_secs()
            ),
        );
    };
    match answer {
        Ok(report) => {
            let applications: serde_json::Map<String, Value> = report
                .applications
                .iter()
                .map(|(name, outcome)| {
                    let value = match outcome {
                        Outcome::Applied { created, updated, pruned, unchanged } => json!({"result": "Synced", "created": created, "updated": updated, "pruned": pruned, "unchanged": unchanged}),
                        Outcome::Unchanged => json!({"result": "Synced", "unchanged": true}),
                        Outcome::Failed(problems) => json!({"result": "Failed", "problems": problems}),
                        Outcome::Held(objects) => json!({"result": "OutOfSync", "held": objects}),
                        Outcome::Suspended => json!({"result": "OutOfSync", "suspended": true}),
                        Outcome::Retry(why) => json!({"result": "OutOfSync", "retry": why}),
                    };
                    (name.clone(), value)
                })
                .collect();
            Json(json!({"commit": report.commit, "rewritten": report.rewritten, "applications": applications, "held": report.held, "waiting": report.waiting, "publishError": report.publish_error})).into_response()
        }
        Err(kameo::error::SendError::HandlerError(error)) => {
            status(StatusCode::BAD_GATEWAY, "SyncFailed", error.to_string())
        }
        Err(error) => store_failure(error),
    }
}

/// The state `shipshape status` prints: the source, the newest commit synced, and each
/// application's sync status with its `health` (see [`crate::health`]).
async fn cluster_status(state: &ApiState) -> Response {
    let source = state
        .store
        .ask(GetMeta(GitSource::META_KEY.into()))
        .await
        .map_err(store_failure);
    let head = state
        .store
        .ask(GetMeta(crate::gitsync::HEAD_META.into()))
        .await
        .map_err(store_failure);
    // Shown when there; a store that cannot say leaves them out.
    let meta = async |key: &str| state.store.ask(GetMeta(key.into())).await.ok().flatten();
    let git_error = meta(crate::gitsync::GIT_ERROR_META).await;
    let fleet = meta(crate::gitsync::FLEET_MEMBER_META).await;
    let applications = state
        .store
        .ask(ListMeta(crate::gitsync::APP_META_PREFIX.into()))
        .await
        .map_err(store_failure);
    let objects = state
        .store
        .ask(List {
            kind: None,
            namespace: None,
        })
        .await
        .map_err(store_failure);
    match (source, head, applications, objects) {
        (Ok(source), Ok(head), Ok(applications), Ok(objects)) => {
            let healths = crate::health::applications(objects.iter().map(|(k, s)| (k, s)));
            let applications: Vec<Value> = applications
                .into_values()
                .filter_map(|v| serde_json::from_value::<ApplicationStatus>(v).ok())
                .map(|status| {
                    let health = healths.get(&status.application).cloned();
                    crate::health::status_json(&status, &health.unwrap_or_default())
                })
                .collect();
            Json(json!({"source": source, "commit": head, "applications": applications, "gitError": git_error, "fleet": fleet}))
                .into_response()
        }
        (Err(response), _, _, _)
        | (_, Err(response), _, _)
        | (_, _, Err(response), _)
        | (_, _, _, Err(response)) => response,
    }
}

async fn suspend(state: &ApiState, application: String, suspended: bool) -> Response {
    match state
        .store
        .ask(GetMeta(crate::gitsync::status_key(&application)))
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no application {application:?}"),
            );
        }
        Err(error) => return store_failure(error),
    }
    match state
        .sync
        .ask(Suspend {
            application,
            suspended,
        })
        .await
    {
        Ok(()) => Json(json!({"suspended": suspended})).into_response(),
        Err(error) => store_failure(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kameo::actor::Spawn as _;

    /// An API server's state over a fresh store (with a Git mirror nothing syncs from).
    fn api() -> (tempfile::TempDir, ApiState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("db.redb")).expect("store");
        let store = StoreActor::spawn(StoreActor::new(store));
        let source = GitSource {
            url: dir.path().join("no-repo").display().to_string(),
            reference: crate::gitsync::GitRef::DefaultBranch,
            path: String::new(),
        };
        let mirror =
            crate::gitsync::Mirror::open(&dir.path().join("mirror"), source).expect("mirror");
        let sync = GitSync::spawn(GitSync::new(mirror, store.clone()));
        let state = ApiState {
            store,
            sync,
            token: Arc::from("token"),
            data_dir: None,
            exec: exec::ExecSlot::default(),
            ports: portforward::PortsSlot::default(),
            views: Arc::default(),
        };
        (dir, state)
    }

    /// Creates ConfigMaps in `default`, one audited batch each.
    async fn create(state: &ApiState, names: &[String]) {
        for name in names {
            let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default",
                             "labels": {"tier": if name.starts_with("odd") { "b" } else { "a" }}},
                "data": {"k": name}});
            let batch = Batch {
                writes: vec![Write::Create {
                    object,
                    applied: None,
                    application: None,
                }],
                audit: Some(AuditEntry {
                    actor: "test".into(),
                    action: "create".into(),
                    subject: name.clone(),
                    details: json!({}),
                }),
            };
            state.store.ask(Apply(batch)).await.expect("applies");
        }
    }

    async fn get(state: &ApiState, uri: &str, table: bool) -> (StatusCode, Value) {
        let mut request = Request::builder().uri(uri);
        if table {
            request = request.header(
                header::ACCEPT,
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            );
        }
        let request = request.body(Body::empty()).expect("a request");
        let headers = request.headers().clone();
        let response = dispatch(State(state.clone()), Method::GET, headers, request).await;
        let code = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        (code, serde_json::from_slice(&body).expect("JSON"))
    }

    /// Follows `continue` from `uri` (which has a query) to the end: each page's names (or
    /// Table rows' first cells) and metadata.
    async fn pages(state: &ApiState, uri: &str, table: bool) -> Vec<(Vec<String>, Value)> {
        let mut pages = Vec::new();
        let mut next = uri.to_string();
        loop {
            let (code, body) = get(state, &next, table).await;
            assert_eq!(code, StatusCode::OK, "{body}");
            let names = if table {
                body["rows"]
                    .as_array()
                    .expect("rows")
                    .iter()
                    .map(|row| row["cells"][0].as_str().unwrap_or_default().to_string())
                    .collect()
            } else {
                body["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|item| {
                        item["metadata"]["name"]
                            .as_str()
                            .or(item["subject"].as_str())
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect()
            };
            let token = body["metadata"]["continue"].as_str().map(str::to_string);
            pages.push((names, body["metadata"].clone()));
            match token {
                Some(token) => next = format!("{uri}&continue={token}"),
                None => return pages,
            }
        }
    }

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("cm-{i:02}")).collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pages_cover_every_object_once_in_order_at_the_first_pages_version() {
        let (_dir, state) = api();
        create(&state, &names(7)).await;
        let uri = "/api/v1/namespaces/default/configmaps?limit=3";
        let (code, first) = get(&state, uri, false).await;
        assert_eq!(code, StatusCode::OK, "{first}");
        let rv = first["metadata"]["resourceVersion"].clone();
        assert_eq!(first["metadata"]["remainingItemCount"], 4);
        let token = first["metadata"]["continue"].as_str().expect("a token");
        // A write between pages: the later pages still show the list as it was.
        create(&state, &["cm-03a".to_string(), "cm-99".to_string()]).await;
        let rest = pages(&state, &format!("{uri}&continue={token}"), false).await;
        let mut seen: Vec<String> = first["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| {
                item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        for (names, metadata) in &rest {
            assert_eq!(metadata["resourceVersion"], rv, "every page at the first's");
            seen.extend(names.iter().cloned());
        }
        assert_eq!(seen, names(7));
        let counts: Vec<&Value> = rest.iter().map(|(_, m)| &m["remainingItemCount"]).collect();
        assert_eq!(counts, [&json!(1), &Value::Null]);
        // A new list sees the new objects.
        let all: Vec<String> = pages(&state, uri, false)
            .await
            .into_iter()
            .flat_map(|(names, _)| names)
            .collect();
        assert_eq!(all.len(), 9);
        assert!(all.contains(&"cm-03a".to_string()));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn tables_and_selected_lists_page_too() {
        let (_dir, state) = api();
        create(&state, &names(5)).await;
        let table = pages(&state, "/api/v1/configmaps?limit=2", true).await;
        let rows: Vec<String> = table.iter().flat_map(|(names, _)| names.clone()).collect();
        assert_eq!(rows, names(5));
        assert_eq!(table.len(), 3);
        assert_eq!(table[0].1["remainingItemCount"], 3);
        // With a selector the count left is not known, as in Kubernetes.
        create(&state, &["odd".to_string()]).await;
        let selected = pages(
            &state,
            "/api/v1/configmaps?labelSelector=tier%3Db&limit=1",
            false,
        )
        .await;
        let found: Vec<String> = selected
            .iter()
            .flat_map(|(names, _)| names.clone())
            .collect();
        assert_eq!(found, ["odd"]);
        assert!(
            selected
                .iter()
                .all(|(_, m)| m["remainingItemCount"].is_null())
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_continue_token_outlives_its_snapshot_as_a_410_with_a_token_for_the_newest() {
        let (_dir, state) = api();
        create(&state, &names(4)).await;
        let uri = "/api/v1/namespaces/default/configmaps?limit=2";
        let (_, first) = get(&state, uri, false).await;
        let token = first["metadata"]["continue"].as_str().expect("a token");
        // Nothing written since: the newest state is the first page's, whether kept or not.
        state.views.lock().expect("views").views.clear();
        let (code, _) = get(&state, &format!("{uri}&continue={token}"), false).await;
        assert_eq!(code, StatusCode::OK);
        state.views.lock().expect("views").views.clear();
        create(&state, &["cm-01a".to_string()]).await;
        let (code, gone) = get(&state, &format!("{uri}&continue={token}"), false).await;
        assert_eq!(code, StatusCode::GONE, "{gone}");
        assert_eq!(gone["reason"], "Expired");
        assert!(
            gone["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("The provided continue parameter is too old")),
            "{gone}"
        );
        let newest = gone["metadata"]["continue"].as_str().expect("a token");
        let rest = pages(&state, &format!("{uri}&continue={newest}"), false).await;
        let names: Vec<String> = rest.into_iter().flat_map(|(names, _)| names).collect();
        assert_eq!(names, ["cm-02", "cm-03"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_watch_from_a_version_never_handed_out_is_refused_not_left_waiting() {
        let (_dir, state) = api();
        create(&state, &["a".to_string()]).await;
        for rv in ["9999", "18446744073709551615"] {
            let (code, body) = get(
                &state,
                &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"),
                false,
            )
            .await;
            assert_eq!(code, StatusCode::GATEWAY_TIMEOUT, "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("too large resource version: {rv}"))),
                "{body}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_malformed_continue_token_is_a_400_saying_so() {
        let (_dir, state) = api();
        create(&state, &names(3)).await;
        let other_list = encode_token(&ContinueToken {
            rv: 1,
            start: "Secret/default/x".into(),
        });
        for token in ["not-base64!", "bm90IGpzb24", other_list.as_str()] {
            let (code, body) = get(
                &state,
                &format!("/api/v1/namespaces/default/configmaps?limit=1&continue={token}"),
                false,
            )
            .await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{token}: {body}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("continue: invalid token"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
        let (code, _) = get(
            &state,
            "/apis/shipshape.dev/v1/history?limit=1&continue=e30",
            false,
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let (code, _) = get(&state, "/api/v1/configmaps?limit=many", false).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        // A token goes on from its own resourceVersion; naming another is refused.
        let (_, first) = get(&state, "/api/v1/configmaps?limit=1", false).await;
        let token = first["metadata"]["continue"].as_str().expect("a token");
        let (code, body) = get(
            &state,
            &format!("/api/v1/configmaps?limit=1&resourceVersion=1&continue={token}"),
            false,
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_history_pages_by_sequence_number_and_ends_where_its_first_page_did() {
        let (_dir, state) = api();
        create(&state, &names(5)).await;
        let uri = "/apis/shipshape.dev/v1/history?limit=2";
        let (_, first) = get(&state, uri, false).await;
        assert_eq!(first["metadata"]["remainingItemCount"], 3);
        let token = first["metadata"]["continue"].as_str().expect("a token");
        create(&state, &["later".to_string()]).await;
        let rest = pages(&state, &format!("{uri}&continue={token}"), false).await;
        let mut subjects: Vec<String> = first["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|r| r["subject"].as_str().unwrap_or_default().to_string())
            .collect();
        subjects.extend(rest.into_iter().flat_map(|(names, _)| names));
        assert_eq!(subjects, names(5));
        let (_, whole) = get(&state, "/apis/shipshape.dev/v1/history", false).await;
        let seqs: Vec<u64> = whole["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        assert!(whole["metadata"]["continue"].is_null());
    }

    #[test]
    fn routes_kubernetes_paths() {
        let Some(Route::Resource(t)) = parse_route("/apis/apps/v1/namespaces/demo/deployments/web")
        else {
            panic!("a deployment");
        };
        assert_eq!(
            (t.kind, t.namespace.as_deref(), t.name.as_deref()),
            (Kind::Deployment, Some("demo"), Some("web"))
        );
        let Some(Route::Resource(t)) = parse_route("/api/v1/namespaces/demo") else {
            panic!("a namespace");
        };
        assert_eq!((t.kind, t.name.as_deref()), (Kind::Namespace, Some("demo")));
        let Some(Route::Resource(t)) = parse_route("/api/v1/pods") else {
            panic!("pods everywhere");
        };
        assert_eq!((t.kind, t.namespace), (Kind::Pod, None));
        assert!(matches!(
            parse_route("/apis/apps/v1"),
            Some(Route::Discovery(_))
        ));
        assert!(matches!(
            parse_route("/apis/shipshape.dev/v1/sync"),
            Some(Route::Sync)
        ));
        let Some(Route::Subresource(t, Subresource::Scale)) =
            parse_route("/apis/apps/v1/namespaces/demo/deployments/web/scale")
        else {
            panic!("a deployment's scale");
        };
        assert_eq!((t.kind, t.name.as_deref()), (Kind::Deployment, Some("web")));
        assert!(matches!(
            parse_route("/api/v1/namespaces/demo/pods/web-1/status"),
            Some(Route::Subresource(_, Subresource::Status))
        ));
        assert!(parse_route("/api/v1/namespaces/demo/configmaps/x/scale").is_none());
        assert!(parse_route("/apis/apps/v1/widgets").is_none());
        assert!(parse_route("/apis/example.com/v1").is_none());
    }

    #[test]
    fn selectors_filter_like_kubernetes() {
        let query = parse_query(Some(
            "labelSelector=app%3Dweb%2Ctier!%3Dback&fieldSelector=metadata.name%3Dweb-1",
        ))
        .expect("parses");
        let object =
            json!({"metadata": {"name": "web-1", "labels": {"app": "web", "tier": "front"}}});
        assert!(query.selects(&object));
        let other = json!({"metadata": {"name": "web-2", "labels": {"app": "web"}}});
        assert!(!query.selects(&other));
        assert!(parse_query(Some("labelSelector=app%20in%20(a)")).is_err());
        assert_eq!(percent_decode("a%3Db%2C+c"), "a=b, c");
        assert_eq!(percent_decode("50%"), "50%");
    }
}
