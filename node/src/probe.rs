//! Container probes: parsing Kubernetes' probe fields (named ports resolved against the
//! container's ports) and running one probe: an HTTP GET or a TCP connect to the pod's address,
//! or a command through containerd's exec. What a run of results means (the thresholds) is
//! decided in `shipshape_reconciler::kubelet::tally`.

use shipshape_api::pointer::At;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use shipshape_reconciler::kubelet::Thresholds;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::runtime::NodeRuntime;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Holds the other two back until the container has started.
    Startup,
    /// Gates the Ready condition (and so Service endpoints).
    Readiness,
    /// Restarts the container when it fails.
    Liveness,
}

impl ProbeKind {
    /// The field in a container spec.
    pub fn field(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startupProbe",
            ProbeKind::Readiness => "readinessProbe",
            ProbeKind::Liveness => "livenessProbe",
        }
    }

    /// Kubernetes' word in events (`Readiness probe failed: …`).
    pub fn word(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
        }
    }
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// GET `path` on `port`; 200–399 passes.
    Http {
        /// Plain HTTP or TLS.
        scheme: Scheme,
        /// The `host` field: whom to connect to (and the TLS server name) instead of the pod.
        host: Option<String>,
        /// The port.
        port: u16,
        /// The path and query.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// Connect to `port`.
    Tcp {
        /// The port.
        port: u16,
    },
    /// Run a command in the container; exit 0 passes.
    Exec {
        /// The command.
        command: Vec<String>,
    },
    /// Wait (a lifecycle hook's `sleep`).
    Sleep {
        /// How long.
        duration: Duration,
    },
}

/// How an HTTP action talks to the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// TLS without verifying the certificate, as Kubernetes' kubelet does (a probe asks "is it
    /// up", not "is it who it says"; pods mostly serve self-signed certificates).
    Https,
}

impl Scheme {
    fn word(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One probe of one container, with Kubernetes' timing fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Which probe.
    pub kind: ProbeKind,
    /// What it does.
    pub action: Action,
    /// Wait this long after the container starts.
    pub initial_delay: Duration,
    /// Then probe this often.
    pub period: Duration,
    /// Each attempt may take this long.
    pub timeout: Duration,
    /// When the verdict flips.
    pub thresholds: Thresholds,
}

fn seconds(probe: &Value, field: &str, default: u64) -> Duration {
    Duration::from_secs(probe.get(field).and_then(Value::as_u64).unwrap_or(default))
}

fn port(value: Option<&Value>, container: &Value, field: &str) -> Result<u16, String> {
    match value {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{field}: port {n} is not a port number")),
        Some(Value::String(name)) => {
            if let Ok(number) = name.parse::<u16>() {
                return Ok(number);
            }
            container
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| {
                    format!("{field}: port {name:?} is not a named port of the container")
                })
        }
        _ => Err(format!("{field}: a port is required")),
    }
}

/// The action of a probe or lifecycle hook at `value` (`field` names it in errors).
fn action(probe: &Value, container: &Value, field: &str) -> Result<Action, String> {
    if let Some(http) = probe.get("httpGet") {
        let scheme = match http.get("scheme").and_then(Value::as_str) {
            None | Some("HTTP") => Scheme::Http,
            Some("HTTPS") => Scheme::Https,
            Some(other) => {
                return Err(format!(
                    "{field}: httpGet.scheme {other:?} is not HTTP or HTTPS"
                ));
            }
        };
        Ok(Action::Http {
            scheme,
            host: http
                .get("host")
                .and_then(Value::as_str)
                .filter(|h| !h.is_empty())
                .map(str::to_string),
            port: port(http.get("port"), container, field)?,
            path: http
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string(),
            headers: http
                .get("httpHeaders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|h| {
                    Some((
                        h.get("name")?.as_str()?.to_string(),
                        h.get("value")?.as_str()?.to_string(),
                    ))
                })
                .collect(),
        })
    } else if let Some(tcp) = probe.get("tcpSocket") {
        Ok(Action::Tcp {
            port: port(tcp.get("port"), container, field)?,
        })
    } else if let Some(exec) = probe.get("exec") {
        let command: Vec<String> = exec
            .get("command")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        if command.is_empty() {
            return Err(format!("{field}: exec needs a command"));
        }
        Ok(Action::Exec { command })
    } else if let Some(seconds) = probe.at("/sleep/seconds").and_then(Value::as_u64) {
        Ok(Action::Sleep {
            duration: Duration::from_secs(seconds),
        })
    } else {
        Err(format!(
            "{field}: only httpGet, tcpSocket, exec (and sleep, for hooks) are supported"
        ))
    }
}

/// The container's `kind` probe, if it has one.
pub fn parse(container: &Value, kind: ProbeKind) -> Result<Option<Probe>, String> {
    let Some(probe) = container.get(kind.field()) else {
        return Ok(None);
    };
    let action = action(probe, container, kind.field())?;
    Ok(Some(Probe {
        kind,
        action,
        initial_delay: seconds(probe, "initialDelaySeconds", 0),
        period: seconds(probe, "periodSeconds", 10).max(Duration::from_secs(1)),
        timeout: seconds(probe, "timeoutSeconds", 1).max(Duration::from_secs(1)),
        thresholds: Thresholds {
            success: probe
                .get("successThreshold")
                .and_then(Value::as_u64)
                .map_or(1, |n| n as u32),
            failure: probe
                .get("failureThreshold")
                .and_then(Value::as_u64)
                .map_or(3, |n| n as u32),
        },
    }))
}

/// The container's `lifecycle.<hook>` handler (`preStop`, `postStart`), if it has one.
pub fn hook(container: &Value, hook: &str) -> Result<Option<Action>, String> {
    match container.at(&format!("/lifecycle/{hook}")) {
        None => Ok(None),
        Some(value) => action(value, container, &format!("lifecycle.{hook}")).map(Some),
    }
}

/// Runs `probe` once against the pod at `ip` (container `id` for exec); the verdict and, on
/// failure, why.
pub async fn run(
    probe: &Probe,
    ip: Ipv4Addr,
    runtime: &NodeRuntime,
    id: &str,
    scratch: &Path,
) -> (bool, String) {
    run_action(&probe.action, probe.timeout, ip, runtime, id, scratch).await
}

/// Runs one action (a probe's or a hook's), giving it `timeout`.
pub async fn run_action(
    action: &Action,
    timeout: Duration,
    ip: Ipv4Addr,
    runtime: &NodeRuntime,
    id: &str,
    scratch: &Path,
) -> (bool, String) {
    match action {
        Action::Sleep { duration } => {
            tokio::time::sleep((*duration).min(timeout)).await;
            (true, String::new())
        }
        Action::Tcp { port } => {
            let address = SocketAddr::from((ip, *port));
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(_)) => (true, String::new()),
                Ok(Err(e)) => (false, format!("dial tcp {address}: {e}")),
                Err(_) => (false, format!("dial tcp {address}: i/o timeout")),
            }
        }
        Action::Http {
            scheme,
            host,
            port,
            path,
            headers,
        } => {
            let target = Target {
                scheme: *scheme,
                host: host.clone().unwrap_or_else(|| ip.to_string()),
                port: *port,
            };
            let url = format!("{}://{}:{port}{path}", scheme.word(), target.host);
            match tokio::time::timeout(timeout, http_get(&target, path, headers)).await {
                Ok(Ok(code)) if (200..400).contains(&code) => (true, String::new()),
                Ok(Ok(code)) => (false, format!("HTTP probe failed with statuscode: {code}")),
                Ok(Err(e)) => (false, format!("Get \"{url}\": {e}")),
                Err(_) => (
                    false,
                    format!(
                        "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                    ),
                ),
            }
        }
        Action::Exec { command } => {
            let output = scratch.join(format!("probe-{}.out", uuid::Uuid::new_v4().simple()));
            let result = runtime.exec(id, command, &output, timeout).await;
            let said = tokio::fs::read_to_string(&output).await.unwrap_or_default();
            let _ = tokio::fs::remove_file(&output).await;
            match result {
                Ok(Some(0)) => (true, String::new()),
                Ok(Some(code)) => (
                    false,
                    format!("command {command:?} exited with {code}: {}", said.trim()),
                ),
                Ok(None) => (
                    false,
                    format!("command {command:?} timed out after {:?}", timeout),
                ),
                Err(error) => (false, error.to_string()),
            }
        }
    }
}

/// Where an HTTP action goes: `host` is an address or a name (the `host` field, else the pod IP).
struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
}

/// A minimal HTTP/1.1 GET (over TLS for HTTPS): the status code.
async fn http_get(
    target: &Target,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
    let authority = match target.host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", target.port),
        _ => format!("{}:{}", target.host, target.port),
    };
    match target.scheme {
        Scheme::Http => exchange(stream, &authority, path, headers).await,
        Scheme::Https => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = insecure_connector()?.connect(name, stream).await?;
            exchange(stream, &authority, path, headers).await
        }
    }
}

/// Sends the GET on an open connection and reads the status line.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    authority: &str,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    // The probe's own headers replace the defaults of the same name, as in Kubernetes.
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in [
        ("Host", authority),
        ("User-Agent", "kube-probe/1.37"),
        ("Accept", "*/*"),
    ] {
        if !given(name) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("Connection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

/// A TLS client that takes any certificate (Kubernetes' kubelet probes with InsecureSkipVerify),
/// built once.
fn insecure_connector() -> std::io::Result<tokio_rustls::TlsConnector> {
    static CONNECTOR: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
        .map_err(std::io::Error::other)
}

/// Accepts every server certificate, but still checks the handshake signatures so the
/// connection is a well-formed TLS session with whoever answered.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_kubernetes_probe_fields_and_named_ports() {
        let container = json!({
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2,
                               "failureThreshold": 1},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 5},
            "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]}},
        });
        let ready = parse(&container, ProbeKind::Readiness)
            .expect("ok")
            .expect("some");
        assert_eq!(
            ready.action,
            Action::Http {
                scheme: Scheme::Http,
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(ready.period, Duration::from_secs(2));
        assert_eq!(
            ready.thresholds,
            Thresholds {
                success: 1,
                failure: 1
            }
        );
        let live = parse(&container, ProbeKind::Liveness)
            .expect("ok")
            .expect("some");
        assert_eq!(live.action, Action::Tcp { port: 8080 });
        assert_eq!(live.initial_delay, Duration::from_secs(5));
        assert_eq!(live.period, Duration::from_secs(10));
        let startup = parse(&container, ProbeKind::Startup)
            .expect("ok")
            .expect("some");
        assert!(matches!(startup.action, Action::Exec { .. }));
        let bad = json!({"livenessProbe": {"tcpSocket": {"port": "nope"}}});
        assert!(parse(&bad, ProbeKind::Liveness).is_err());
        assert_eq!(parse(&json!({}), ProbeKind::Liveness), Ok(None));
    }

    /// The test servers' answer: 200 to `GET /ok` with exactly one Host header, else 503.
    fn reply(request: &[u8]) -> String {
        let request = String::from_utf8_lossy(request);
        let hosts = request
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
            .count();
        let code = if request.starts_with("GET /ok ") && hosts == 1 {
            200
        } else {
            503
        };
        format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n")
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let n = socket.read(&mut buffer).await.unwrap_or(0);
                let _ = socket.write_all(reply(&buffer[..n]).as_bytes()).await;
            }
        });
        let target = Target {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port,
        };
        assert_eq!(http_get(&target, "/ok", &[]).await.expect("get"), 200);
        assert_eq!(http_get(&target, "/bad", &[]).await.expect("get"), 503);
        // A Host header of the probe's replaces the default one.
        let host = [("host".to_string(), "web.example".to_string())];
        assert_eq!(http_get(&target, "/ok", &host).await.expect("get"), 200);
    }

    /// A TLS server on loopback with a fresh self-signed certificate for `example.invalid`
    /// (so nothing could verify it): answers 200 on `/ok`, 503 otherwise, and reports the SNI
    /// name each client sent.
    async fn self_signed_server() -> (u16, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["example.invalid".to_string()]).expect("cert");
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (names, names_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    continue;
                };
                let _ = names.send(tls.get_ref().1.server_name().map(str::to_string));
                let mut buffer = [0u8; 1024];
                let n = tls.read(&mut buffer).await.unwrap_or(0);
                let _ = tls.write_all(reply(&buffer[..n]).as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        (port, names_rx)
    }

    #[test]
    fn an_https_probe_parses_with_its_scheme_and_host() {
        let container = json!({
            "readinessProbe": {"httpGet": {"scheme": "HTTPS", "host": "localhost", "port": 8443}},
        });
        let probe = parse(&container, ProbeKind::Readiness)
            .expect("ok")
            .expect("some");
        assert_eq!(
            probe.action,
            Action::Http {
                scheme: Scheme::Https,
                host: Some("localhost".into()),
                port: 8443,
                path: "/".into(),
                headers: vec![]
            }
        );
        let bad = json!({"readinessProbe": {"httpGet": {"scheme": "FTP", "port": 1}}});
        assert!(parse(&bad, ProbeKind::Readiness).is_err());
    }

    #[tokio::test]
    async fn https_probes_take_a_self_signed_certificate_and_send_the_host_as_sni() {
        let (port, mut names) = self_signed_server().await;
        let by_ip = Target {
            scheme: Scheme::Https,
            host: "127.0.0.1".into(),
            port,
        };
        assert_eq!(http_get(&by_ip, "/ok", &[]).await.expect("get"), 200);
        // No SNI for an address (as Go's client does), the name for a host name.
        assert_eq!(names.recv().await, Some(None));
        assert_eq!(http_get(&by_ip, "/bad", &[]).await.expect("get"), 503);
        assert_eq!(names.recv().await, Some(None));
        let by_name = Target {
            scheme: Scheme::Https,
            host: "localhost".into(),
            port,
        };
        assert_eq!(http_get(&by_name, "/ok", &[]).await.expect("get"), 200);
        assert_eq!(names.recv().await, Some(Some("localhost".to_string())));
        // Plain HTTP to a TLS port is no answer at all.
        let plain = Target {
            scheme: Scheme::Http,
            ..by_ip
        };
        assert!(http_get(&plain, "/ok", &[]).await.is_err());
    }
}
