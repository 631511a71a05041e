//! Pure: Ingresses, Services and their ready endpoints → the table a request is routed by, and
//! the lookup itself, as the Ingress specification reads.
//!
//! - Hosts: an exact host beats a wildcard (`*.example.com` matches one label, not two, and
//!   not `example.com` itself); a host with no rule falls to the rules that name no host.
//! - Paths: the longest matching path wins, and of two equally long an `Exact` one; `Prefix`
//!   matches by path element (`/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`);
//!   `ImplementationSpecific` matches as a string prefix (as Traefik reads it).
//! - Two Ingresses claiming the same host, path and type: the older keeps it (ingress-nginx'
//!   rule), so a new Ingress cannot take over a route that serves traffic.
//! - Nothing matches: the `defaultBackend` of the oldest Ingress that has one, else 404.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use serde_json::Value;
use shipshape_actors::service_view::{EndpointSubset, ServiceKind, ServiceView};

/// The IngressClass this controller serves (the one it keeps as the cluster's default), and
/// its `spec.controller`: validation refuses Ingresses naming any other.
pub use shipshape_api::validate::{INGRESS_CLASS as CLASS, INGRESS_CONTROLLER as CONTROLLER};

/// How a path is compared (`pathType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// The whole path, case-sensitively.
    Exact,
    /// By path element.
    Prefix,
    /// By string prefix.
    ImplementationSpecific,
}

/// A Service port a backend names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// `port.number`: the Service's `port`.
    Number(u16),
    /// `port.name`: the Service port's name.
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// A Service backend (`backend.service`) of one Ingress.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendRef {
    /// The Service's name (in the Ingress's namespace).
    pub service: String,
    /// Its port.
    pub port: PortRef,
}

/// One path of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// The path (`/` when an `ImplementationSpecific` path gives none).
    pub path: String,
    /// How it compares.
    pub kind: PathKind,
    /// Where it goes.
    pub backend: BackendRef,
}

/// One rule: a host (or every host) and its paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    /// Lower-cased; `None` for every host.
    pub host: Option<String>,
    /// Its paths.
    pub paths: Vec<PathRule>,
}

/// A `spec.tls` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRule {
    /// The hosts it covers (the Ingress's rule hosts when it names none).
    pub hosts: Vec<String>,
    /// The `kubernetes.io/tls` Secret, in the Ingress's namespace.
    pub secret: String,
}

/// An Ingress, as routing reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its creation time (RFC 3339; the older of two claimants keeps a route).
    pub created: String,
    /// `spec.ingressClassName`, else the `kubernetes.io/ingress.class` annotation.
    pub class: Option<String>,
    /// `spec.defaultBackend`.
    pub default_backend: Option<BackendRef>,
    /// `spec.rules`.
    pub rules: Vec<HostRule>,
    /// `spec.tls`.
    pub tls: Vec<TlsRule>,
}

fn backend_ref(backend: &IngressBackend) -> Option<BackendRef> {
    let service = backend.service.as_ref()?;
    let port = service.port.as_ref()?;
    let port = match (&port.name, port.number) {
        (Some(name), _) if !name.is_empty() => PortRef::Name(name.clone()),
        (_, Some(n)) => PortRef::Number(u16::try_from(n).ok()?),
        _ => return None,
    };
    Some(BackendRef {
        service: service.name.clone(),
        port,
    })
}

impl IngressView {
    /// The view of a stored Ingress; `None` when it does not read as one.
    pub fn of(object: &Value) -> Option<IngressView> {
        let ingress: Ingress = serde_json::from_value(object.clone()).ok()?;
        let metadata = &ingress.metadata;
        let spec = ingress.spec.unwrap_or_default();
        let class = spec.ingress_class_name.clone().or_else(|| {
            metadata
                .annotations
                .as_ref()?
                .get("kubernetes.io/ingress.class")
                .cloned()
        });
        let rules: Vec<HostRule> = spec
            .rules
            .unwrap_or_default()
            .into_iter()
            .map(|rule| HostRule {
                host: rule
                    .host
                    .filter(|h| !h.is_empty())
                    .map(|h| h.to_ascii_lowercase()),
                paths: rule
                    .http
                    .map(|http| http.paths)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|path| {
                        let kind = match path.path_type.as_str() {
                            "Exact" => PathKind::Exact,
                            "Prefix" => PathKind::Prefix,
                            _ => PathKind::ImplementationSpecific,
                        };
                        Some(PathRule {
                            path: path
                                .path
                                .clone()
                                .filter(|p| !p.is_empty())
                                .unwrap_or_else(|| "/".to_string()),
                            kind,
                            backend: backend_ref(&path.backend)?,
                        })
                    })
                    .collect(),
            })
            .collect();
        let rule_hosts: Vec<String> = rules.iter().filter_map(|r| r.host.clone()).collect();
        let tls = spec
            .tls
            .unwrap_or_default()
            .into_iter()
            .filter_map(|tls| {
                let hosts = match tls.hosts {
                    Some(hosts) if !hosts.is_empty() => {
                        hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
                    }
                    _ => rule_hosts.clone(),
                };
                Some(TlsRule {
                    hosts,
                    secret: tls.secret_name.filter(|s| !s.is_empty())?,
                })
            })
            .collect();
        Some(IngressView {
            namespace: metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name: metadata.name.clone()?,
            created: metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            class,
            default_backend: spec.default_backend.as_ref().and_then(backend_ref),
            rules,
            tls,
        })
    }

    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Its age order: older first, then by name.
    fn age(&self) -> (&str, &str, &str) {
        (&self.created, &self.namespace, &self.name)
    }
}

/// Whether this controller serves an Ingress of `class`: no class (the default class is ours),
/// ours, or a class in `ours` (IngressClasses whose controller is [`CONTROLLER`]).
pub fn is_ours(class: Option<&str>, ours: &std::collections::BTreeSet<String>) -> bool {
    class.is_none_or(|class| class == CLASS || ours.contains(class))
}

/// A Service with its ready endpoints, as a backend reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendService {
    /// The Service.
    pub service: ServiceView,
    /// Its ready subsets.
    pub subsets: Vec<EndpointSubset>,
}

/// Where a matched request goes: the ready pod addresses of one Service port, taken in turn.
#[derive(Debug)]
pub struct Backend {
    /// The Ingress whose rule chose it (`namespace/name`), for logs and metrics.
    pub ingress: String,
    /// `namespace/service:port`.
    pub name: String,
    /// The ready pod addresses (empty: 503).
    pub endpoints: Vec<SocketAddr>,
    /// Why there are no endpoints, when there are none.
    pub why_none: Option<String>,
    /// Its figures, looked up at its first request.
    pub metrics: std::sync::OnceLock<crate::proxy::BackendMetrics>,
    next: AtomicUsize,
}

impl Backend {
    /// The endpoints in the order to try them: the next in turn first, then the others (a
    /// refused connection is retried on the next).
    pub fn rotation(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let n = self.endpoints.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).map(move |i| self.endpoints[(start + i) % n])
    }
}

/// The endpoints of one Service port (`namespace`, `backend`), or why there are none.
fn resolve(
    namespace: &str,
    backend: &BackendRef,
    services: &HashMap<(String, String), BackendService>,
) -> (Vec<SocketAddr>, Option<String>) {
    let id = (namespace.to_string(), backend.service.clone());
    let Some(found) = services.get(&id) else {
        return (
            Vec::new(),
            Some(format!("service {namespace}/{} not found", backend.service)),
        );
    };
    if let ServiceKind::ExternalName(_) = found.service.kind {
        return (
            Vec::new(),
            Some(format!(
                "service {namespace}/{} is an ExternalName: it has no endpoints to send to",
                backend.service
            )),
        );
    }
    let port = found.service.ports.iter().find(|p| match &backend.port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => &p.name == name,
    });
    let Some(port) = port else {
        return (
            Vec::new(),
            Some(format!(
                "service {namespace}/{} has no port {}",
                backend.service, backend.port
            )),
        );
    };
    let mut endpoints: Vec<SocketAddr> = found
        .subsets
        .iter()
        .flat_map(|subset| {
            let target = subset
                .ports
                .iter()
                .find(|(name, _, protocol)| name == &port.name && protocol == "TCP")
                .map(|(_, number, _)| *number);
            subset
                .addresses
                .iter()
                .filter_map(move |address| Some(SocketAddr::new(address.ip, target?)))
        })
        .collect();
    endpoints.sort();
    endpoints.dedup();
    let why = endpoints.is_empty().then(|| {
        format!(
            "service {namespace}/{} has no ready endpoints",
            backend.service
        )
    });
    (endpoints, why)
}

#[derive(Debug)]
struct Route {
    path: String,
    kind: PathKind,
    backend: Arc<Backend>,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == self.path,
            PathKind::ImplementationSpecific => path.starts_with(&self.path),
            PathKind::Prefix => {
                let prefix = self.path.trim_end_matches('/');
                prefix.is_empty()
                    || path
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }

    /// The length compared for "longest match first" (a Prefix path's trailing slash does
    /// not count: `/foo/` and `/foo` are the same prefix).
    fn length(&self) -> usize {
        match self.kind {
            PathKind::Prefix => self.path.trim_end_matches('/').len(),
            _ => self.path.len(),
        }
    }
}

/// The routes of one host, longest first.
#[derive(Debug, Default)]
struct HostRoutes {
    routes: Vec<Route>,
}

impl HostRoutes {
    fn find(&self, path: &str) -> Option<&Arc<Backend>> {
        self.routes
            .iter()
            .find(|route| route.matches(path))
            .map(|route| &route.backend)
    }
}

/// What requests are routed by; replaced whole when anything it was built from changes.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, HostRoutes>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, HostRoutes>,
    any_host: HostRoutes,
    default_backend: Option<Arc<Backend>>,
}

/// The host part of a `Host` header or authority, lower-cased, without its port.
pub fn host_of(authority: &str) -> String {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal: [::1]:80.
        rest.split(']').next().unwrap_or(rest)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                authority
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl RouteTable {
    /// Builds the table from the Ingresses this controller serves.
    pub fn build(
        ingresses: &[IngressView],
        services: &HashMap<(String, String), BackendService>,
    ) -> RouteTable {
        let mut ordered: Vec<&IngressView> = ingresses.iter().collect();
        ordered.sort_by(|a, b| a.age().cmp(&b.age()));
        let mut backends: HashMap<(String, String, BackendRef), Arc<Backend>> = HashMap::new();
        let mut backend = |ingress: &IngressView, reference: &BackendRef| {
            backends
                .entry((ingress.id(), ingress.namespace.clone(), reference.clone()))
                .or_insert_with(|| {
                    let (endpoints, why_none) = resolve(&ingress.namespace, reference, services);
                    Arc::new(Backend {
                        ingress: ingress.id(),
                        name: format!(
                            "{}/{}:{}",
                            ingress.namespace, reference.service, reference.port
                        ),
                        endpoints,
                        why_none,
                        metrics: std::sync::OnceLock::new(),
                        next: AtomicUsize::new(0),
                    })
                })
                .clone()
        };
        let mut table = RouteTable::default();
        for ingress in &ordered {
            if table.default_backend.is_none()
                && let Some(reference) = &ingress.default_backend
            {
                table.default_backend = Some(backend(ingress, reference));
            }
            for rule in &ingress.rules {
                let routes = match rule.host.as_deref() {
                    None => &mut table.any_host,
                    Some(host) => match host.strip_prefix("*.") {
                        Some(suffix) => table.wildcard.entry(suffix.to_string()).or_default(),
                        None => table.exact.entry(host.to_string()).or_default(),
                    },
                };
                for path in &rule.paths {
                    // The older Ingress keeps a host, path and type both claim.
                    if routes
                        .routes
                        .iter()
                        .any(|r| r.path == path.path && r.kind == path.kind)
                    {
                        continue;
                    }
                    routes.routes.push(Route {
                        path: path.path.clone(),
                        kind: path.kind,
                        backend: backend(ingress, &path.backend),
                    });
                }
            }
        }
        let sort = |routes: &mut HostRoutes| {
            // Longest first; of equal length, Exact first; then as added (oldest first).
            routes
                .routes
                .sort_by(|a, b| b.length().cmp(&a.length()).then(a.kind.cmp(&b.kind)));
        };
        table.exact.values_mut().for_each(sort);
        table.wildcard.values_mut().for_each(sort);
        sort(&mut table.any_host);
        table
    }

    /// The backend for a request to `host` (lower-cased, no port) and `path`: `None` is a 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let by_host = self.exact.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        });
        by_host
            .and_then(|routes| routes.find(path))
            .or_else(|| self.any_host.find(path))
            .or(self.default_backend.as_ref())
    }

    /// Every backend, each once (for status and checks).
    pub fn backends(&self) -> Vec<&Arc<Backend>> {
        let mut all: Vec<&Arc<Backend>> = self
            .exact
            .values()
            .chain(self.wildcard.values())
            .chain(std::iter::once(&self.any_host))
            .flat_map(|routes| routes.routes.iter().map(|r| &r.backend))
            .chain(self.default_backend.iter())
            .collect();
        all.sort_by_key(|b| Arc::as_ptr(b) as usize);
        all.dedup_by_key(|b| Arc::as_ptr(b) as usize);
        all
    }
}

/// Which Secret serves which TLS host: exact hosts and `*.` wildcards, the older Ingress
/// keeping a host two name.
pub fn tls_hosts(ingresses: &[IngressView]) -> Vec<(String, (String, String))> {
    let mut ordered: Vec<&IngressView> = ingresses.iter().collect();
    ordered.sort_by(|a, b| a.age().cmp(&b.age()));
    let mut chosen: Vec<(String, (String, String))> = Vec::new();
    for ingress in ordered {
        for tls in &ingress.tls {
            for host in &tls.hosts {
                if chosen.iter().all(|(h, _)| h != host) {
                    chosen.push((
                        host.clone(),
                        (ingress.namespace.clone(), tls.secret.clone()),
                    ));
                }
            }
        }
    }
    chosen
}

/// The address an Ingress's status names: the listener's own, or (listening on every
/// address) the first node's InternalIP, as k3s names its nodes'.
pub fn status_address(listen: IpAddr, node_ip: Option<IpAddr>) -> IpAddr {
    if listen.is_unspecified() {
        node_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]))
    } else {
        listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use shipshape_actors::service_view::EndpointAddress;

    fn ingress(name: &str, created: &str, spec: Value) -> IngressView {
        IngressView::of(&json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap()
    }

    fn service(name: &str, ports: Value, ready: &[&str], target: u16) -> BackendService {
        let service = ServiceView::of(&json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.9", "ports": ports},
        }))
        .unwrap();
        let port_name = service.ports[0].name.clone();
        BackendService {
            service,
            subsets: vec![EndpointSubset {
                addresses: ready
                    .iter()
                    .map(|ip| EndpointAddress {
                        ip: ip.parse().unwrap(),
                        hostname: None,
                    })
                    .collect(),
                ports: vec![(port_name, target, "TCP".to_string())],
            }],
        }
    }

    fn services() -> HashMap<(String, String), BackendService> {
        let mut map = HashMap::new();
        for (name, ip) in [
            ("web", "10.244.0.5"),
            ("api", "10.244.0.6"),
            ("docs", "10.244.0.7"),
        ] {
            map.insert(
                ("shop".to_string(), name.to_string()),
                service(name, json!([{"name": "http", "port": 80}]), &[ip], 8080),
            );
        }
        map
    }

    fn path(p: &str, kind: &str, service: &str) -> Value {
        json!({"path": p, "pathType": kind,
               "backend": {"service": {"name": service, "port": {"number": 80}}}})
    }

    fn to(table: &RouteTable, host: &str, p: &str) -> Option<String> {
        table.route(host, p).map(|b| b.name.clone())
    }

    #[test]
    fn hosts_match_exactly_then_by_wildcard_then_any() {
        let table = RouteTable::build(
            &[ingress(
                "one",
                "2026-01-01T00:00:00Z",
                json!({"rules": [
                    {"host": "web.example.com", "http": {"paths": [path("/", "Prefix", "web")]}},
                    {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "api")]}},
                    {"http": {"paths": [path("/docs", "Prefix", "docs")]}},
                ]}),
            )],
            &services(),
        );
        assert_eq!(
            to(&table, "web.example.com", "/x").as_deref(),
            Some("shop/web:80")
        );
        assert_eq!(
            to(&table, "a.example.com", "/").as_deref(),
            Some("shop/api:80")
        );
        // One label only, and not the bare domain.
        assert_eq!(to(&table, "a.b.example.com", "/"), None);
        assert_eq!(to(&table, "example.com", "/"), None);
        assert_eq!(
            to(&table, "other", "/docs/x").as_deref(),
            Some("shop/docs:80")
        );
        // A host with rules falls to the hostless rules when none of its paths match.
        assert_eq!(to(&table, "other", "/"), None);
    }

    #[test]
    fn paths_match_longest_first_by_element_and_exact_wins_a_tie() {
        let table = RouteTable::build(
            &[ingress(
                "one",
                "2026-01-01T00:00:00Z",
                json!({"rules": [{"host": "h", "http": {"paths": [
                    path("/", "Prefix", "web"),
                    path("/api/", "Prefix", "api"),
                    path("/api", "Exact", "docs"),
                    path("/raw", "ImplementationSpecific", "docs"),
                ]}}]}),
            )],
            &services(),
        );
        assert_eq!(to(&table, "h", "/api").as_deref(), Some("shop/docs:80"));
        assert_eq!(to(&table, "h", "/api/").as_deref(), Some("shop/api:80"));
        assert_eq!(to(&table, "h", "/api/v1").as_deref(), Some("shop/api:80"));
        assert_eq!(to(&table, "h", "/apiv1").as_deref(), Some("shop/web:80"));
        assert_eq!(to(&table, "h", "/rawfile").as_deref(), Some("shop/docs:80"));
        assert_eq!(to(&table, "h", "/").as_deref(), Some("shop/web:80"));
    }

    #[test]
    fn the_older_ingress_keeps_a_route_and_the_oldest_default_backend_serves_misses() {
        let older = ingress(
            "older",
            "2026-01-01T00:00:00Z",
            json!({"defaultBackend": {"service": {"name": "docs", "port": {"name": "http"}}},
                   "rules": [{"host": "h", "http": {"paths": [path("/", "Prefix", "web")]}}]}),
        );
        let newer = ingress(
            "newer",
            "2026-02-01T00:00:00Z",
            json!({"defaultBackend": {"service": {"name": "api", "port": {"number": 80}}},
                   "rules": [{"host": "h", "http": {"paths": [path("/", "Prefix", "api")]}}]}),
        );
        let table = RouteTable::build(&[newer, older], &services());
        assert_eq!(to(&table, "h", "/").as_deref(), Some("shop/web:80"));
        assert_eq!(table.route("h", "/").unwrap().ingress, "shop/older");
        assert_eq!(
            to(&table, "nowhere", "/").as_deref(),
            Some("shop/docs:http")
        );
    }

    #[test]
    fn backends_resolve_ports_by_number_or_name_to_ready_pod_addresses() {
        let mut map = HashMap::new();
        map.insert(
            ("shop".to_string(), "web".to_string()),
            service(
                "web",
                json!([{"name": "http", "port": 80}]),
                &["10.244.0.5", "10.244.1.5"],
                8080,
            ),
        );
        let table = RouteTable::build(
            &[ingress(
                "one",
                "2026-01-01T00:00:00Z",
                json!({"rules": [{"http": {"paths": [
                    path("/", "Prefix", "web"),
                    {"path": "/n", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                    {"path": "/missing", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"number": 81}}}},
                    path("/gone", "Prefix", "nothing"),
                ]}}]}),
            )],
            &map,
        );
        let backend = table.route("h", "/").unwrap();
        let first: Vec<SocketAddr> = backend.rotation().collect();
        let second: Vec<SocketAddr> = backend.rotation().collect();
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], second[0], "taken in turn");
        assert_eq!(first[0].port(), 8080);
        assert_eq!(table.route("h", "/n").unwrap().endpoints.len(), 2);
        let missing = table.route("h", "/missing").unwrap();
        assert!(missing.endpoints.is_empty());
        assert_eq!(
            missing.why_none.as_deref(),
            Some("service shop/web has no port 81")
        );
        assert_eq!(
            table.route("h", "/gone").unwrap().why_none.as_deref(),
            Some("service shop/nothing not found")
        );
    }

    #[test]
    fn hosts_are_read_without_port_or_case() {
        assert_eq!(host_of("Web.Example.com:8080"), "web.example.com");
        assert_eq!(host_of("web.example.com."), "web.example.com");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("plain"), "plain");
    }

    #[test]
    fn tls_hosts_default_to_the_rule_hosts_and_the_older_ingress_keeps_one() {
        let older = ingress(
            "older",
            "2026-01-01T00:00:00Z",
            json!({"tls": [{"secretName": "old-cert"}],
                   "rules": [{"host": "a.example.com"}]}),
        );
        let newer = ingress(
            "newer",
            "2026-02-01T00:00:00Z",
            json!({"tls": [{"hosts": ["a.example.com", "*.example.com"], "secretName": "new-cert"}]}),
        );
        let hosts = tls_hosts(&[newer, older]);
        assert_eq!(
            hosts,
            [
                (
                    "a.example.com".to_string(),
                    ("shop".to_string(), "old-cert".to_string())
                ),
                (
                    "*.example.com".to_string(),
                    ("shop".to_string(), "new-cert".to_string())
                ),
            ]
        );
    }

    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "ab", "b", "api", "v1"]).prop_map(str::to_string)
    }

    fn a_path() -> impl Strategy<Value = String> {
        (prop::collection::vec(segment(), 0..4), any::<bool>()).prop_map(|(parts, slash)| {
            let mut p = format!("/{}", parts.join("/"));
            if slash && p.len() > 1 {
                p.push('/');
            }
            p
        })
    }

    proptest! {
        /// Whatever the rules, the route chosen matches the request, and no matching rule
        /// of its host is longer.
        #[test]
        fn the_chosen_route_matches_and_is_the_longest(
            rules in prop::collection::vec((a_path(), 0..3usize), 1..6),
            request in a_path(),
        ) {
            let kinds = ["Exact", "Prefix", "ImplementationSpecific"];
            let paths: Vec<Value> = rules
                .iter()
                .map(|(p, k)| path(p, kinds[*k], "web"))
                .collect();
            let view = ingress("one", "2026-01-01T00:00:00Z",
                json!({"rules": [{"host": "h", "http": {"paths": paths}}]}));
            let table = RouteTable::build(std::slice::from_ref(&view), &services());
            let routes = &table.exact["h"].routes;
            let matching: Vec<&Route> = routes.iter().filter(|r| r.matches(&request)).collect();
            match table.route("h", &request) {
                None => prop_assert!(matching.is_empty()),
                Some(_) => {
                    let best = matching.iter().map(|r| r.length()).max().unwrap();
                    let chosen = routes.iter().find(|r| r.matches(&request)).unwrap();
                    prop_assert_eq!(chosen.length(), best);
                }
            }
        }
    }
}
