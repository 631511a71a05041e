//! shipshape's ingress controller, in the same process as the rest of the cluster (k3s ships
//! Traefik for this job): Ingresses of the class `shipshape` (the default class, kept in the
//! store as local-path is for storage) served over HTTP and HTTPS.
//!
//! - [`routes`] is pure: Ingresses + Services + ready endpoints → the route table.
//! - [`IngressController`] is a [`Controller`] over the store's watch: it keeps what the
//!   table is built from, swaps in a new table and certificate set after each batch of
//!   changes, writes `status.loadBalancer.ingress` on the Ingresses it serves (what turns
//!   their health Healthy) and keeps the built-in IngressClass.
//! - [`proxy`] is the data path (hyper client with pooled keep-alive connections to pods),
//!   [`server`] the listeners, [`tls`] SNI and certificates, [`access`] the access log.

pub mod access;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use shipshape_actors::Write;
use shipshape_actors::controller::{Controller, Dirty, Reconciled, because};
use shipshape_actors::events::event;
use shipshape_actors::service_view::ServiceCache;
use shipshape_actors::store::{Batch, EventType, Precondition, WatchEvent, parse_storage_key};
use shipshape_api::Kind;

use routes::{BackendService, CLASS, CONTROLLER, IngressView, RouteTable, is_ours};
use tls::{Certificates, SniResolver};

pub use server::ListenError;

/// Where the ingress listens and logs.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Plain HTTP (`--ingress-http`); `None`: off.
    pub http: Option<SocketAddr>,
    /// HTTPS (`--ingress-https`); `None`: off.
    pub https: Option<SocketAddr>,
    /// The access log file; `None`: off.
    pub access_log: Option<std::path::PathBuf>,
    /// The first node's InternalIP, named in Ingress status when listening on every address.
    pub node_ip: Option<IpAddr>,
}

/// The running ingress: its listeners (the controller runs as an actor of its own).
pub struct IngressServer {
    listeners: server::Listeners,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
}

impl IngressServer {
    /// Binds the listeners and starts serving; the controller returned feeds them routes.
    /// Fails (before anything serves) if a listener cannot be bound.
    pub fn start(
        config: &IngressConfig,
    ) -> Result<(IngressServer, IngressController), ListenError> {
        // One serving thread per core, as nginx runs a worker per core.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let http = config
            .http
            .map(|a| server::Bound::bind(a, "--ingress-http", threads))
            .transpose()?;
        let https = config
            .https
            .map(|a| server::Bound::bind(a, "--ingress-https", threads))
            .transpose()?;
        let resolver = Arc::new(SniResolver::new(tls::default_certificate()?));
        let routes = Arc::new(proxy::RouteCell::default());
        let log = match &config.access_log {
            Some(path) => access::AccessLog::to_file(path).unwrap_or_else(|error| {
                tracing::warn!(%error, path = %path.display(), "ingress: no access log");
                access::AccessLog::off()
            }),
            None => access::AccessLog::off(),
        };
        let listen_ip = http
            .as_ref()
            .or(https.as_ref())
            .map_or(IpAddr::from([127, 0, 0, 1]), |b| b.address().ip());
        let addresses = (
            http.as_ref().map(server::Bound::address),
            https.as_ref().map(server::Bound::address),
        );
        let listeners =
            server::Listeners::serve(routes.clone(), log, http, https, resolver.clone())?;
        let controller = IngressController {
            status_ip: routes::status_address(listen_ip, config.node_ip),
            routes,
            resolver,
            ingresses: BTreeMap::new(),
            classes: BTreeSet::new(),
            class_seen: false,
            cache: ServiceCache::default(),
            secrets: HashMap::new(),
            warned: BTreeMap::new(),
        };
        Ok((
            IngressServer {
                listeners,
                http: addresses.0,
                https: addresses.1,
            },
            controller,
        ))
    }

    /// Where plain HTTP is served.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Where HTTPS is served.
    pub fn https_address(&self) -> Option<SocketAddr> {
        self.https
    }

    /// Stops serving; connections open are closed.
    pub async fn stop(self) {
        self.listeners.stop().await;
    }
}

struct Stored {
    view: IngressView,
    object: Value,
    rv: u64,
}

/// A `kubernetes.io/tls` Secret made ready, or why it cannot serve.
type Parsed = Result<Arc<rustls::sign::CertifiedKey>, String>;

const ROUTES_KEY: &str = "routes";
const CLASS_KEY: &str = "ingress-class";

/// Follows Ingresses, IngressClasses, Services, Endpoints and TLS Secrets; keeps the route
/// table and certificates current and the served Ingresses' status written.
pub struct IngressController {
    status_ip: IpAddr,
    routes: Arc<proxy::RouteCell>,
    resolver: Arc<SniResolver>,
    ingresses: BTreeMap<String, Stored>,
    /// IngressClasses naming our controller.
    classes: BTreeSet<String>,
    class_seen: bool,
    cache: ServiceCache,
    secrets: HashMap<(String, String), Parsed>,
    /// Ingress key → the TLS problem last told (one Warning per problem).
    warned: BTreeMap<String, String>,
}

fn decode(data: &Value, key: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(data[key].as_str()?)
        .ok()
}

fn parse_secret(object: &Value) -> Option<Parsed> {
    if object["type"] != "kubernetes.io/tls" {
        return None;
    }
    let data = &object["data"];
    let parsed = match (decode(data, "tls.crt"), decode(data, "tls.key")) {
        (Some(cert), Some(key)) => tls::certified_key(&cert, &key)
            .map(Arc::new)
            .map_err(|error| error.to_string()),
        _ => Err("it lacks tls.crt or tls.key".to_string()),
    };
    Some(parsed)
}

impl IngressController {
    fn served(&self) -> Vec<&Stored> {
        self.ingresses
            .values()
            .filter(|s| is_ours(s.view.class.as_deref(), &self.classes))
            .collect()
    }

    /// Rebuilds the route table and certificates; returns a Warning per Ingress whose TLS
    /// Secret cannot serve (once per problem).
    fn rebuild(&mut self, now: jiff::Timestamp) -> Vec<Write> {
        let served: Vec<IngressView> = self.served().iter().map(|s| s.view.clone()).collect();
        let mut backends = HashMap::new();
        for ingress in &served {
            let named = ingress.default_backend.iter().chain(
                ingress
                    .rules
                    .iter()
                    .flat_map(|r| r.paths.iter().map(|p| &p.backend)),
            );
            for reference in named {
                let id = (ingress.namespace.clone(), reference.service.clone());
                if let Some(service) = self.cache.services.get(&id) {
                    backends
                        .entry(id.clone())
                        .or_insert_with(|| BackendService {
                            service: service.clone(),
                            subsets: self.cache.endpoints.get(&id).cloned().unwrap_or_default(),
                        });
                }
            }
        }
        self.routes.store(RouteTable::build(&served, &backends));

        let mut certificates = Certificates::default();
        let mut problems: BTreeMap<String, String> = BTreeMap::new();
        for (host, (namespace, secret)) in routes::tls_hosts(&served) {
            match self.secrets.get(&(namespace.clone(), secret.clone())) {
                Some(Ok(key)) => certificates.insert(&host, key.clone()),
                found => {
                    let why = match found {
                        Some(Err(why)) => why.clone(),
                        _ => "it does not exist or is not of type kubernetes.io/tls".to_string(),
                    };
                    for ingress in served.iter().filter(|i| {
                        i.namespace == namespace && i.tls.iter().any(|t| t.secret == secret)
                    }) {
                        problems.entry(format!("{}/{}", ingress.namespace, ingress.name))
                            .or_insert_with(|| format!(
                                "TLS Secret {namespace}/{secret} cannot serve {host} ({why}); the default certificate is served instead"
                            ));
                    }
                }
            }
        }
        self.resolver.store(certificates);

        let mut writes = Vec::new();
        self.warned.retain(|id, _| problems.contains_key(id));
        for (id, message) in problems {
            if self.warned.get(&id) == Some(&message) {
                continue;
            }
            if let Some(stored) = self.ingresses.values().find(|s| s.view.id() == id) {
                writes.push(event(
                    "ingress",
                    &stored.object,
                    "Warning",
                    "InvalidCertificate",
                    message.clone(),
                    now,
                ));
            }
            self.warned.insert(id, message);
        }
        writes
    }

    fn desired_status(&self) -> Value {
        json!({"loadBalancer": {"ingress": [{"ip": self.status_ip.to_string()}]}})
    }
}

impl Controller for IngressController {
    fn name(&self) -> &'static str {
        "ingress"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::Ingress,
            Kind::IngressClass,
            Kind::Service,
            Kind::Endpoints,
            Kind::Secret,
        ]
    }

    fn reset(&mut self) {
        self.ingresses.clear();
        self.classes.clear();
        self.class_seen = false;
        self.cache.clear();
        self.secrets.clear();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        let deleted = event.kind == EventType::Deleted;
        let id = (key.namespace.clone(), key.name.clone());
        let changed = match key.kind {
            Kind::Ingress => {
                let view = (!deleted).then(|| IngressView::of(&event.object)).flatten();
                match view {
                    Some(view) => {
                        let routing_changed = self
                            .ingresses
                            .get(&event.key)
                            .is_none_or(|s| s.view != view);
                        self.ingresses.insert(
                            event.key.clone(),
                            Stored {
                                view,
                                object: event.object.clone(),
                                rv: event.resource_version,
                            },
                        );
                        dirty.mark(event.key.clone(), || because(event));
                        routing_changed
                    }
                    None => self.ingresses.remove(&event.key).is_some(),
                }
            }
            Kind::IngressClass => {
                if key.name == CLASS {
                    self.class_seen = !deleted;
                }
                let ours = !deleted && event.object["spec"]["controller"] == CONTROLLER;
                let changed = if ours {
                    self.classes.insert(key.name.clone())
                } else {
                    self.classes.remove(&key.name)
                };
                if changed {
                    // Which Ingresses are served may have changed: their status too.
                    for ingress in self.ingresses.keys() {
                        dirty.mark(ingress.clone(), || because(event));
                    }
                }
                changed
            }
            Kind::Service | Kind::Endpoints => self.cache.observe(event),
            Kind::Secret => match (!deleted).then(|| parse_secret(&event.object)).flatten() {
                Some(parsed) => {
                    self.secrets.insert(id, parsed);
                    true
                }
                None => self.secrets.remove(&id).is_some(),
            },
            _ => false,
        };
        if changed {
            dirty.mark(ROUTES_KEY, || because(event));
        }
    }

    fn listed(&mut self, dirty: &mut Dirty) {
        dirty.mark(ROUTES_KEY, || "listed".to_string());
        if !self.class_seen {
            dirty.mark(CLASS_KEY, || "listed".to_string());
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        let writes = match key {
            ROUTES_KEY => self.rebuild(now),
            CLASS_KEY if !self.class_seen => vec![Write::Create {
                object: json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "IngressClass",
                    "metadata": {
                        "name": CLASS,
                        "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"},
                    },
                    "spec": {"controller": CONTROLLER},
                }),
                applied: None,
                application: None,
            }],
            _ => {
                let Some(stored) = self.ingresses.get(key) else {
                    return Reconciled::default();
                };
                let desired = self.desired_status();
                if !is_ours(stored.view.class.as_deref(), &self.classes)
                    || stored.object["status"] == desired
                {
                    return Reconciled::default();
                }
                let Some(object_key) = parse_storage_key(key) else {
                    return Reconciled::default();
                };
                vec![Write::UpdateStatus {
                    key: object_key,
                    precondition: Some(Precondition::ResourceVersion(stored.rv)),
                    status: desired,
                }]
            }
        };
        Reconciled {
            batches: writes
                .into_iter()
                .map(|write| Batch {
                    writes: vec![write],
                    audit: None,
                })
                .collect(),
            requeue_after: None,
        }
    }
}
