//! Talking to a running cluster: its API server, found through the kubeconfig `up` wrote into
//! the data directory (server address, CA, bearer token).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::Value;

/// The most items the CLI asks for in one page of a list: kubectl's default `--chunk-size`.
pub const PAGE_ITEMS: usize = 500;

/// The most bytes one answer is read to when it is a page of a list: ureq's 10 MiB default is
/// a whole list's undoing on a long-running cluster, and the server keeps pages to a few MiB
/// unless one item alone (an audit record of a big commit) is larger, which must still be read.
const PAGE_BYTES: u64 = 256 << 20;

/// The most bytes any other answer is read to (ureq's default).
const ANSWER_BYTES: u64 = 10 << 20;

/// A client of one cluster's API server.
pub struct Remote {
    agent: ureq::Agent,
    server: String,
    token: String,
    /// The cluster CA (PEM), for connections ureq does not make (WebSocket).
    ca: Vec<u8>,
}

impl Remote {
    /// Reads `data_dir/kubeconfig`.
    pub fn from_data_dir(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("kubeconfig");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "the cluster is running but {} cannot be read",
                path.display()
            )
        })?;
        let documents = shipshape_api::yaml::parse_documents(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let config = documents
            .into_iter()
            .find_map(|d| d.root)
            .map(|root| root.to_json())
            .unwrap_or(Value::Null);
        let field = |pointer: &str| {
            config
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("{}: {pointer} is missing", path.display()))
        };
        let server = field("/clusters/0/cluster/server")?;
        let token = field("/users/0/user/token")?;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(field("/clusters/0/cluster/certificate-authority-data")?)
            .context("the kubeconfig's CA is not base64")?;
        let ca_pem = ca.clone();
        let certificate = ureq::tls::Certificate::from_pem(&ca)
            .map_err(|e| anyhow::anyhow!("the kubeconfig's CA is not a certificate: {e}"))?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![certificate])))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Self {
            agent,
            server,
            token,
            ca: ca_pem,
        })
    }

    fn answer(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        self.answer_within(response, ANSWER_BYTES)
    }

    fn answer_within(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> anyhow::Result<Value> {
        let mut response =
            response.with_context(|| format!("cannot reach the API server at {}", self.server))?;
        let status = response.status();
        let body: Value = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_json()
            .with_context(|| format!("the API server answered {status} without JSON"))?;
        if !status.is_success() {
            let message = body["message"].as_str().unwrap_or("no message");
            bail!("{message}");
        }
        Ok(body)
    }

    /// GET a path; the JSON answer, or the server's message as the error.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .agent
            .get(format!("{}{path}", self.server))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.answer(response)
    }

    /// Lists `path` in pages of at most `limit` items, following each page's
    /// `metadata.continue` as Kubernetes' clients do, and hands each page's items to `on_items`
    /// as it arrives: one page in memory at a time, however long the list. An answer that is a
    /// bare array (a server that does not page) is one page.
    pub fn list_pages(
        &self,
        path: &str,
        limit: usize,
        mut on_items: impl FnMut(Vec<Value>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}{path}{separator}limit={limit}", self.server);
            if let Some(token) = &token {
                url.push_str("&continue=");
                url.push_str(&percent_encode(token));
            }
            let response = self
                .agent
                .get(url)
                .header("Authorization", format!("Bearer {}", self.token))
                .call();
            let mut page = self.answer_within(response, PAGE_BYTES)?;
            if let Value::Array(items) = page {
                return on_items(items);
            }
            let items = match page.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            let next = page["metadata"]["continue"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            on_items(items)?;
            match next {
                None => return Ok(()),
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    bail!("the API server answered the same page twice ({path}): stopped")
                }
                Some(next) => token = Some(next),
            }
        }
    }

    /// POST to a path with no body.
    pub fn post(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .agent
            .post(format!("{}{path}", self.server))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_empty();
        self.answer(response)
    }

    /// Follows a watch: calls `on_event` with each event (`{"type", "object"}`) until the
    /// server ends the stream or `on_event` returns false.
    pub fn watch(&self, path: &str, mut on_event: impl FnMut(Value) -> bool) -> anyhow::Result<()> {
        use std::io::BufRead as _;
        let separator = if path.contains('?') { '&' } else { '?' };
        let response = self
            .agent
            .get(format!("{}{path}{separator}watch=true", self.server))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("cannot reach the API server at {}", self.server))?;
        if !response.status().is_success() {
            return self.answer(Ok(response)).map(|_| ());
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line.context("the watch stream broke")?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Value =
                serde_json::from_str(&line).context("the watch sent something that is not JSON")?;
            if !on_event(event) {
                break;
            }
        }
        Ok(())
    }

    /// GETs a plain-text path and copies the answer to `out` as it arrives (a followed log).
    pub fn copy_text(&self, path: &str, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        use std::io::Read as _;
        let response = self
            .agent
            .get(format!("{}{path}", self.server))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("cannot reach the API server at {}", self.server))?;
        if !response.status().is_success() {
            return self.answer(Ok(response)).map(|_| ());
        }
        let mut reader = response.into_body().into_reader();
        let mut buffer = [0u8; 8192];
        loop {
            let n = reader.read(&mut buffer).context("the log stream broke")?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buffer[..n])?;
            out.flush()?;
        }
    }

    /// Opens a WebSocket to `path` speaking `protocol` (pods/exec), over TLS with the
    /// cluster's CA and the bearer token.
    pub fn websocket(&self, path: &str, protocol: &str) -> anyhow::Result<ExecSocket> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, ServerName};
        use tungstenite::client::IntoClientRequest as _;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&self.ca) {
            roots
                .add(certificate.context("the kubeconfig's CA is not a certificate")?)
                .context("the kubeconfig's CA is not usable")?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let address = self
            .server
            .strip_prefix("https://")
            .context("the API server is not https")?
            .trim_end_matches('/')
            .to_string();
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string();
        let name = ServerName::try_from(host).context("the API server's host is not a name")?;
        let connection = rustls::ClientConnection::new(Arc::new(config), name)?;
        let tcp = std::net::TcpStream::connect(&address)
            .with_context(|| format!("cannot reach the API server at {}", self.server))?;
        let tls = rustls::StreamOwned::new(connection, tcp);
        let mut request = format!("wss://{address}{path}").into_client_request()?;
        let headers = request.headers_mut();
        headers.insert("Authorization", format!("Bearer {}", self.token).parse()?);
        headers.insert("Sec-WebSocket-Protocol", protocol.parse()?);
        match tungstenite::client(request, tls) {
            Ok((socket, _)) => Ok(socket),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let body = response.body().as_deref().unwrap_or_default();
                let message = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("the API server answered {}", response.status()));
                bail!("{message}")
            }
            Err(error) => Err(anyhow::anyhow!("WebSocket to the API server: {error}")),
        }
    }
}

/// `text` as a query-string value: everything but RFC 3986's unreserved characters escaped.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// What one read of a WebSocket polled with a read timeout gave.
pub enum Polled {
    /// A message.
    Message(tungstenite::Message),
    /// Nothing yet (the timeout passed).
    Nothing,
    /// The other side closed it.
    Closed,
}

/// Reads `socket` once, telling a passed read timeout from a closed socket: how `exec` and
/// `port-forward` interleave their local input with the API server's stream.
pub fn poll_read(socket: &mut ExecSocket) -> Result<Polled, tungstenite::Error> {
    match socket.read() {
        Ok(tungstenite::Message::Close(_)) => Ok(Polled::Closed),
        Ok(message) => Ok(Polled::Message(message)),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(Polled::Nothing)
        }
        Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
            Ok(Polled::Closed)
        }
        Err(error) => Err(error),
    }
}

/// A WebSocket to the API server.
pub type ExecSocket =
    tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>;
