//! The data path: one request in, routed by the current [`RouteTable`], sent to a ready pod
//! over a pooled keep-alive connection, the answer streamed back.
//!
//! - A refused connection (or one that times out connecting) is tried on the next endpoint,
//!   when the request body can be sent again: none, or one of at most 64 KiB, which is read
//!   first (nginx buffers request bodies for the same reason).
//! - `Upgrade` requests (WebSocket) are passed through: once the pod answers 101 the two
//!   connections are spliced.
//! - Hop-by-hop headers are dropped both ways; `X-Forwarded-For`, `-Proto`, `-Host`, `-Port`
//!   and `X-Real-IP` are set (not appended: a client cannot forge its address).
//! - The table is read once per request: a request in flight keeps the endpoint it chose
//!   when the table is replaced, so endpoint changes drop nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::access::{AccessLog, Entry};
use crate::routes::{Backend, RouteTable, host_of};
use shipshape_actors::metrics::METRICS;

/// A body either side: the peer's stream, or bytes we hold (a replayable request, an error).
pub type Body = Either<Incoming, Full<Bytes>>;

/// How long a pod may take to accept a connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pod may take to answer with its headers (ingress-nginx' proxy-read-timeout).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest request body read before sending, so it can be sent again.
const REPLAYABLE_BODY: u64 = 64 * 1024;
/// How many endpoints a request is tried on when connections are refused.
const ATTEMPTS: usize = 3;

/// The table every request reads; replaced whole.
#[derive(Debug, Default)]
pub struct RouteCell {
    current: RwLock<Arc<RouteTable>>,
}

impl RouteCell {
    /// The table as it is now.
    pub fn load(&self) -> Arc<RouteTable> {
        match self.current.read() {
            Ok(table) => table.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the table; requests already routed keep theirs.
    pub fn store(&self, table: RouteTable) {
        let table = Arc::new(table);
        match self.current.write() {
            Ok(mut current) => *current = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }
}

/// The proxy shared by every connection of both listeners.
pub struct Proxy {
    routes: Arc<RouteCell>,
    client: Client<HttpConnector, Body>,
    log: AccessLog,
}

/// The request as it came, for the access log and metrics (cheap clones of its parts).
struct Seen {
    started: Instant,
    method: hyper::Method,
    target: Option<hyper::http::uri::PathAndQuery>,
    version: hyper::Version,
    host: String,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

/// What every request of one connection shares: who it is from and how it came, with the
/// forwarded headers' values made once.
pub struct Connection {
    client: SocketAddr,
    client_ip: HeaderValue,
    proto: HeaderValue,
    port: HeaderValue,
}

impl Connection {
    /// A connection from `client` to listener port `port`, over TLS when `tls`.
    pub fn new(client: SocketAddr, tls: bool, port: u16) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            client,
            client_ip,
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
            port: HeaderValue::from(port),
        }
    }
}

/// A backend's figures, looked up once rather than per request.
#[derive(Debug)]
pub struct BackendMetrics {
    latency: prometheus_client::metrics::histogram::Histogram,
    by_status: RwLock<Vec<(u16, prometheus_client::metrics::counter::Counter)>>,
}

impl BackendMetrics {
    fn new(ingress: &str, backend: &str) -> Self {
        Self {
            latency: METRICS.ingress_latency(ingress, backend),
            by_status: RwLock::new(Vec::new()),
        }
    }

    fn record(&self, ingress: &str, backend: &str, status: u16, took: Duration) {
        self.latency.observe(took.as_secs_f64());
        let known = match self.by_status.read() {
            Ok(list) => list
                .iter()
                .find(|(s, _)| *s == status)
                .map(|(_, c)| c.clone()),
            Err(_) => None,
        };
        let counter = known.unwrap_or_else(|| {
            let counter = METRICS.ingress_counter(ingress, backend, status);
            if let Ok(mut list) = self.by_status.write() {
                list.push((status, counter.clone()));
            }
            counter
        });
        counter.inc();
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Drops hop-by-hop headers, and those the `Connection` header names; `Upgrade` too unless
/// the request is being upgraded.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

fn is_upgrade(request: &Request<Incoming>) -> bool {
    request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

fn text_response(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "{message}\n"
    )))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A request body that can be sent again, or one that can be sent once.
enum Replay {
    Bytes(Bytes),
    Once(Option<Incoming>),
}

impl Replay {
    fn take(&mut self) -> Option<Body> {
        match self {
            Replay::Bytes(bytes) => Some(Either::Right(Full::new(bytes.clone()))),
            Replay::Once(body) => body.take().map(Either::Left),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, Replay::Bytes(_))
    }
}

impl Proxy {
    /// A proxy routing by `routes`, logging to `log`.
    pub fn new(routes: Arc<RouteCell>, log: AccessLog) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .set_host(false)
            .build(connector);
        Self {
            routes,
            client,
            log,
        }
    }

    /// Serves one request arriving on `connection`.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: Arc<Connection>,
    ) -> Result<Response<Body>, Infallible> {
        let authority = request
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| {
                let authority = request.uri().authority()?;
                HeaderValue::from_str(authority.as_str()).ok()
            })
            .unwrap_or_else(|| HeaderValue::from_static(""));
        let seen = Seen {
            started: Instant::now(),
            method: request.method().clone(),
            target: request.uri().path_and_query().cloned(),
            version: request.version(),
            host: host_of(authority.to_str().unwrap_or_default()),
            user_agent: request.headers().get(header::USER_AGENT).cloned(),
            referer: request.headers().get(header::REFERER).cloned(),
        };
        let table = self.routes.load();
        let Some(backend) = table.route(&seen.host, request.uri().path()).cloned() else {
            let response = text_response(StatusCode::NOT_FOUND, "404 page not found");
            self.finish(&seen, &connection, None, None, &response);
            return Ok(response);
        };
        drop(table);
        if backend.endpoints.is_empty() {
            let reason = backend.why_none.as_deref().unwrap_or("no ready endpoints");
            let response = text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("503 service unavailable: {reason}"),
            );
            self.finish(&seen, &connection, Some(&backend), None, &response);
            return Ok(response);
        }
        let (response, upstream) = self
            .forward(request, &backend, &connection, authority)
            .await;
        self.finish(&seen, &connection, Some(&backend), upstream, &response);
        Ok(response)
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        backend: &Backend,
        connection: &Connection,
        authority: HeaderValue,
    ) -> (Response<Body>, Option<SocketAddr>) {
        let upgrade = is_upgrade(&request);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        if upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let headers = &mut parts.headers;
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, authority.clone());
        }
        headers.insert(X_FORWARDED_FOR, connection.client_ip.clone());
        headers.insert(X_REAL_IP, connection.client_ip.clone());
        headers.insert(X_FORWARDED_PROTO, connection.proto.clone());
        headers.insert(X_FORWARDED_HOST, authority);
        headers.insert(X_FORWARDED_PORT, connection.port.clone());
        let small = body.is_end_stream()
            || body
                .size_hint()
                .upper()
                .is_some_and(|n| n <= REPLAYABLE_BODY);
        let mut replay = if body.is_end_stream() {
            Replay::Bytes(Bytes::new())
        } else if small {
            match body.collect().await {
                Ok(collected) => Replay::Bytes(collected.to_bytes()),
                Err(_) => {
                    return (
                        text_response(StatusCode::BAD_REQUEST, "400 request body not read"),
                        None,
                    );
                }
            }
        } else {
            Replay::Once(Some(body))
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut last_error = String::new();
        for endpoint in backend.rotation().take(ATTEMPTS) {
            let Some(body) = replay.take() else { break };
            let Ok(uri) = format!("http://{endpoint}{path}").parse::<Uri>() else {
                return (
                    text_response(StatusCode::BAD_REQUEST, "400 bad request target"),
                    None,
                );
            };
            let mut attempt = Request::new(body);
            *attempt.method_mut() = parts.method.clone();
            *attempt.uri_mut() = uri;
            *attempt.version_mut() = hyper::Version::HTTP_11;
            *attempt.headers_mut() = parts.headers.clone();
            let sent = tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(attempt)).await;
            match sent {
                Err(_) => {
                    return (
                        text_response(StatusCode::GATEWAY_TIMEOUT, "504 gateway timeout"),
                        Some(endpoint),
                    );
                }
                Ok(Ok(mut response)) => {
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client_upgrade) = client_upgrade
                    {
                        let pod_upgrade = hyper::upgrade::on(&mut response);
                        tokio::spawn(splice(client_upgrade, pod_upgrade));
                        let (parts, _) = response.into_parts();
                        return (
                            Response::from_parts(parts, Either::Right(Full::new(Bytes::new()))),
                            Some(endpoint),
                        );
                    }
                    strip_hop_by_hop(response.headers_mut(), false);
                    return (response.map(Either::Left), Some(endpoint));
                }
                Ok(Err(error)) => {
                    last_error = error.to_string();
                    if !(error.is_connect() && replay.replayable()) {
                        tracing::debug!(%endpoint, %error, "ingress: the pod's answer failed");
                        return (
                            text_response(StatusCode::BAD_GATEWAY, "502 bad gateway"),
                            Some(endpoint),
                        );
                    }
                    tracing::debug!(%endpoint, %error, "ingress: connection failed; trying the next endpoint");
                }
            }
        }
        tracing::debug!(backend = %backend.name, error = %last_error, "ingress: no endpoint took the connection");
        (
            text_response(StatusCode::BAD_GATEWAY, "502 bad gateway"),
            None,
        )
    }

    fn finish(
        &self,
        seen: &Seen,
        connection: &Connection,
        backend: Option<&Backend>,
        upstream: Option<SocketAddr>,
        response: &Response<Body>,
    ) {
        let took = seen.started.elapsed();
        let ingress = backend.map_or("", |b| b.ingress.as_str());
        let name = backend.map_or("", |b| b.name.as_str());
        let status = response.status().as_u16();
        match backend {
            Some(backend) => backend
                .metrics
                .get_or_init(|| BackendMetrics::new(ingress, name))
                .record(ingress, name, status, took),
            None => METRICS.ingress_request(ingress, name, status, took),
        }
        fn text(value: &Option<HeaderValue>) -> &str {
            value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
        }
        self.log.record(Entry {
            client: connection.client.ip(),
            method: seen.method.as_str(),
            target: seen.target.as_ref().map_or("/", |t| t.as_str()),
            version: seen.version,
            status,
            bytes: response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            referer: text(&seen.referer),
            user_agent: text(&seen.user_agent),
            host: &seen.host,
            ingress,
            backend: name,
            upstream,
            took,
        });
    }
}

/// Copies both ways between an upgraded client connection and the pod's, until either ends.
async fn splice(client: hyper::upgrade::OnUpgrade, pod: hyper::upgrade::OnUpgrade) {
    let (client, pod) = match tokio::join!(client, pod) {
        (Ok(client), Ok(pod)) => (client, pod),
        (Err(error), _) | (_, Err(error)) => {
            tracing::debug!(%error, "ingress: an upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut pod = TokioIo::new(pod);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut pod).await {
        tracing::debug!(%error, "ingress: an upgraded connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_so_do_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let mut kept = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::ACCEPT));
        strip_hop_by_hop(&mut kept, true);
        assert!(kept.contains_key(header::UPGRADE));
        assert!(!kept.contains_key("x-secret"));
    }
}
