//! The ingress end to end on loopback, fed by the controller as the store's watch would feed
//! it: pods are HTTP servers on 127.0.0.1 (the real-pod tests are in the binary's tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use shipshape_actors::Write;
use shipshape_actors::controller::{Controller, Dirty};
use shipshape_actors::store::{EventType, WatchEvent};
use shipshape_ingress::{IngressConfig, IngressController, IngressServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A pod: answers `NAME PATH` and the forwarded headers, or echoes bytes after an upgrade.
async fn pod(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |mut request: Request<_>| async move {
                        if request.headers().contains_key("upgrade") {
                            let upgrade = hyper::upgrade::on(&mut request);
                            tokio::spawn(async move {
                                if let Ok(upgraded) = upgrade.await {
                                    let mut io = TokioIo::new(upgraded);
                                    let mut buffer = [0u8; 64];
                                    while let Ok(n) = io.read(&mut buffer).await {
                                        if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            });
                            let response = Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .body(http_body_util::Full::new(Bytes::new()))
                                .unwrap();
                            return Ok::<_, std::convert::Infallible>(response);
                        }
                        let header = |n: &str| {
                            request
                                .headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let text = format!(
                            "{name} {} host={} xff={} proto={} xfh={}",
                            request.uri(),
                            header("host"),
                            header("x-forwarded-for"),
                            header("x-forwarded-proto"),
                            header("x-forwarded-host"),
                        );
                        Ok(Response::new(http_body_util::Full::new(Bytes::from(text))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    address
}

fn event(kind: &str, namespace: &str, name: &str, object: Value, rv: u64) -> WatchEvent {
    WatchEvent {
        resource_version: rv,
        kind: EventType::Added,
        key: format!("{kind}/{namespace}/{name}"),
        object,
    }
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "shop"},
           "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

fn endpoints(name: &str, pods: &[SocketAddr]) -> Value {
    let subsets: Vec<Value> = pods
        .iter()
        .map(|p| {
            json!({"addresses": [{"ip": p.ip().to_string()}],
                   "ports": [{"name": "http", "port": p.port(), "protocol": "TCP"}]})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Endpoints",
           "metadata": {"name": name, "namespace": "shop"}, "subsets": subsets})
}

fn tls_secret(host: &str) -> (Value, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    (
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "secure-cert", "namespace": "shop"},
               "data": {"tls.crt": b64(&cert.pem()), "tls.key": b64(&key.serialize_pem())}}),
        cert.pem(),
    )
}

fn ingress() -> Value {
    let path = |p: &str, kind: &str, service: &str| {
        json!({"path": p, "pathType": kind,
               "backend": {"service": {"name": service, "port": {"number": 80}}}})
    };
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
    "metadata": {"name": "shop", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {
        "tls": [{"hosts": ["secure.example.com"], "secretName": "secure-cert"}],
        "rules": [
            {"host": "web.example.com", "http": {"paths": [
                path("/", "Prefix", "web"), path("/api", "Prefix", "api"),
                path("/empty", "Prefix", "empty")]}},
            {"host": "secure.example.com", "http": {"paths": [path("/", "Prefix", "api")]}},
        ]}})
}

fn feed(controller: &mut IngressController, events: Vec<WatchEvent>) -> Vec<Write> {
    let mut dirty = Dirty::default();
    for event in &events {
        controller.observe(event, &mut dirty);
    }
    controller.listed(&mut dirty);
    let mut writes = Vec::new();
    for key in ["routes", "ingress-class", "Ingress/shop/shop"] {
        let decided = controller.reconcile(key, jiff::Timestamp::now());
        writes.extend(decided.batches.into_iter().flat_map(|b| b.writes));
    }
    writes
}

async fn get(address: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

fn client_config(trusted_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `address` for `host`, trusting only `trusted_pem`.
async fn tls_connect(
    address: SocketAddr,
    host: &str,
    trusted_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(client_config(trusted_pem, alpn));
    let stream = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    connector.connect(name, stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_route_by_host_and_path_over_http_and_https() {
    let web = pod("web").await;
    let api = pod("api").await;
    // An endpoint that refuses connections: requests retry on the next.
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let logs = tempfile::tempdir().unwrap();
    let (server, mut controller) = IngressServer::start(&IngressConfig {
        http: Some("127.0.0.1:0".parse().unwrap()),
        https: Some("127.0.0.1:0".parse().unwrap()),
        access_log: Some(logs.path().join("access.log")),
        node_ip: None,
    })
    .unwrap();
    let http = server.http_address().unwrap();
    let https = server.https_address().unwrap();
    let (secret, cert_pem) = tls_secret("secure.example.com");
    let writes = feed(
        &mut controller,
        vec![
            event("Service", "shop", "web", service("web"), 1),
            event("Service", "shop", "api", service("api"), 2),
            event("Service", "shop", "empty", service("empty"), 3),
            event(
                "Endpoints",
                "shop",
                "web",
                endpoints("web", &[refused, web]),
                4,
            ),
            event("Endpoints", "shop", "api", endpoints("api", &[api]), 5),
            event("Secret", "shop", "secure-cert", secret, 6),
            event("Ingress", "shop", "shop", ingress(), 7),
        ],
    );
    // The built-in class is created, and the Ingress's status names the listener.
    assert!(writes.iter().any(|w| matches!(w, Write::Create { object, .. }
        if object["kind"] == "IngressClass" && object["spec"]["controller"] == "shipshape.dev/ingress")));
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, Write::UpdateStatus { status, .. }
        if status["loadBalancer"]["ingress"][0]["ip"] == "127.0.0.1"))
    );

    for _ in 0..4 {
        let (status, body) = get(http, "web.example.com", "/index.html?x=1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.starts_with("web /index.html?x=1 host=web.example.com xff=127.0.0.1 proto=http xfh=web.example.com"),
            "{body}"
        );
    }
    let (status, body) = get(http, "WEB.example.com:80", "/api/v1").await;
    assert_eq!(
        (status, body.split(' ').next()),
        (StatusCode::OK, Some("api"))
    );
    let (status, body) = get(http, "web.example.com", "/apiv1").await;
    assert_eq!(
        (status, body.split(' ').next()),
        (StatusCode::OK, Some("web"))
    );
    let (status, body) = get(http, "web.example.com", "/empty").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("service shop/empty has no ready endpoints"),
        "{body}"
    );
    let (status, _) = get(http, "unknown.example.com", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // HTTPS by SNI with the Secret's certificate; HTTP/2 when the client offers it.
    let stream = tls_connect(https, "secure.example.com", &cert_pem, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::get("https://secure.example.com/hello")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with("api /hello host=secure.example.com xff=127.0.0.1 proto=https"),
        "{body}"
    );

    // A rotated certificate serves the next handshake; the old one is no longer trusted.
    let (rotated, rotated_pem) = tls_secret("secure.example.com");
    let mut changed = event("Secret", "shop", "secure-cert", rotated, 8);
    changed.kind = EventType::Modified;
    feed(&mut controller, vec![changed]);
    assert!(
        tls_connect(https, "secure.example.com", &cert_pem, &[])
            .await
            .is_err()
    );
    assert!(
        tls_connect(https, "secure.example.com", &rotated_pem, &[])
            .await
            .is_ok()
    );

    // A WebSocket-style upgrade is spliced through to the pod.
    let mut raw = tokio::net::TcpStream::connect(http).await.unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: web.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        raw.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    raw.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");

    // Metrics and the access log name the route.
    let metrics = shipshape_actors::metrics::METRICS.encode();
    assert!(
        metrics.contains(r#"shipshape_ingress_requests_total{ingress="shop/shop",backend="shop/web:80",status="200"}"#),
        "{metrics}"
    );
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let log = std::fs::read_to_string(logs.path().join("access.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"GET /api/v1 HTTP/1.1\" 200")
                && l.contains("shop/shop shop/api:80")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("\" 404 ") && l.contains("unknown.example.com - -")),
        "{log}"
    );
}
