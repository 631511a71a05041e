//! The registry configuration `up --registry-config FILE` reads: k3s' `registries.yaml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shipshape_api::path::{FieldPath, Segment};
use shipshape_api::yaml::{self, Entry, Node, Value};

use crate::keyring::Credential;

/// Mirrors and per-host settings, as k3s' `registries.yaml` has them. The default (no file)
/// pulls every image from its own registry over HTTPS with the system's roots.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// Registry name (`docker.io`, `registry.example:5000`, or `*` for every registry) → its mirrors.
    pub mirrors: BTreeMap<String, Mirror>,
    /// Host (`mirror.example:5000`, as an endpoint URL names it) → credentials and TLS.
    pub configs: BTreeMap<String, HostConfig>,
    /// A registry that has mirrors is pulled from them only, never from itself (k3s'
    /// `--disable-default-registry-endpoint`): an air-gapped site never reaches out.
    pub no_default_endpoint: bool,
}

/// One registry's mirrors.
#[derive(Clone, Debug, Default)]
pub struct Mirror {
    /// Endpoint URLs tried in order (`https://mirror.example:5000`, `http://127.0.0.1:5000`);
    /// the registry itself is tried after them.
    pub endpoints: Vec<String>,
    /// Repository rewrites (regular expression → replacement with `$1`), applied to the
    /// repository for the mirrors only, in the order the file lists them; the first that
    /// matches wins.
    pub rewrites: Vec<(regex::Regex, String)>,
}

/// Credentials and TLS for one host.
#[derive(Clone, Debug, Default)]
pub struct HostConfig {
    /// Credentials sent to this host when a pull secret has none for it.
    pub auth: Option<Credential>,
    /// TLS settings.
    pub tls: Tls,
}

/// TLS settings for one host.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// PEM roots trusted for this host besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (k3s' `insecure_skip_verify`).
    pub insecure_skip_verify: bool,
}

/// One place to try for an image: a mirror or the registry itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` to connect to (`registry-1.docker.io` for `docker.io`).
    pub host: String,
    /// Plain HTTP (only for endpoints the configuration names with `http://`).
    pub plain_http: bool,
    /// The repository at this endpoint (rewritten for a mirror).
    pub repository: String,
    /// Whether this is the registry itself rather than a mirror.
    pub upstream: bool,
}

/// A registry configuration file that cannot be used, with the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid, at `field`.
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field (`mirrors."docker.io".endpoint[0]`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Docker Hub's name in image references.
const DOCKER_HUB: &str = "docker.io";

/// The host that serves Docker Hub's registry API, which is where containerd sends `docker.io`
/// pulls (`docker.io` itself does not serve `/v2/`).
const DOCKER_HUB_UPSTREAM: &str = "registry-1.docker.io";

/// Hosts that serve Docker Hub's registry API: a mirror endpoint naming one of them is the
/// upstream itself, not a mirror.
const DOCKER_HUB_API_HOSTS: [&str; 2] = [DOCKER_HUB_UPSTREAM, "index.docker.io"];

/// The key under `mirrors` (and `configs`) that applies to every registry without its own.
const WILDCARD: &str = "*";

impl RegistryConfig {
    /// Reads `path`, and checks that every `ca_file` it names can be read as PEM now, so a
    /// wrong path is refused at start-up instead of failing every pull from that host.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::parse(&text, path)?;
        for (host, settings) in &config.configs {
            if let Some(ca_file) = &settings.tls.ca_file {
                check_ca_file(ca_file).map_err(|message| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    field: child(&child(&child("configs", host), "tls"), "ca_file"),
                    message,
                })?;
            }
        }
        Ok(config)
    }

    /// Parses the text of a `registries.yaml`; `path` names it in errors. Anything the puller
    /// could not honour (an unknown field, a token, a client certificate, an endpoint path)
    /// is refused here with the field it is at.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Reader { file: path }.config(text)
    }

    /// Where to fetch `repository` of `registry` from, in order: the registry's mirrors (or
    /// the `*` mirrors when it has none), then the registry itself.
    pub fn endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let registry_key = registry.to_ascii_lowercase();
        let docker_hub = registry_key == DOCKER_HUB;
        let upstream_host = if docker_hub {
            DOCKER_HUB_UPSTREAM.to_string()
        } else {
            registry.to_string()
        };
        let upstream = Endpoint {
            host: upstream_host.clone(),
            plain_http: false,
            repository: repository.to_string(),
            upstream: true,
        };
        let is_upstream = |url: &EndpointUrl| {
            !url.plain_http
                && (url.host.eq_ignore_ascii_case(&upstream_host)
                    || docker_hub
                        && DOCKER_HUB_API_HOSTS
                            .iter()
                            .any(|h| url.host.eq_ignore_ascii_case(h)))
        };
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mirror = self
            .mirrors
            .get(&registry_key)
            .or_else(|| self.mirrors.get(WILDCARD));
        for url in mirror.into_iter().flat_map(|m| &m.endpoints) {
            // Every stored URL was checked by `parse`; one built by hand that does not parse
            // names nowhere the client could go.
            let Ok(url) = parse_endpoint_url(url) else {
                continue;
            };
            // The registry itself, listed as a mirror: tried at that place, without rewrites
            // (containerd never rewrites for the default endpoint).
            let endpoint = if is_upstream(&url) {
                upstream.clone()
            } else {
                Endpoint {
                    host: url.host,
                    plain_http: url.plain_http,
                    repository: mirror
                        .map_or_else(|| repository.to_string(), |m| m.rewrite(repository)),
                    upstream: false,
                }
            };
            if !endpoints.contains(&endpoint) {
                endpoints.push(endpoint);
            }
        }
        // The registry itself, last: unless mirrors are all it may use.
        if !endpoints.iter().any(|e| e.upstream)
            && (endpoints.is_empty() || !self.no_default_endpoint)
        {
            endpoints.push(upstream);
        }
        endpoints
    }

    /// The settings for `host` (as an [`Endpoint`] names it), if the file has any: its own
    /// entry, for Docker Hub's API host the entry under `docker.io` or `index.docker.io`
    /// (the names users write), else the `*` entry.
    pub fn host(&self, host: &str) -> Option<&HostConfig> {
        let host = host.to_ascii_lowercase();
        self.configs
            .get(&host)
            .or_else(|| {
                if DOCKER_HUB_API_HOSTS.contains(&host.as_str()) {
                    DOCKER_HUB_API_HOSTS
                        .iter()
                        .chain(&[DOCKER_HUB])
                        .find_map(|alias| self.configs.get(*alias))
                } else {
                    None
                }
            })
            .or_else(|| self.configs.get(WILDCARD))
    }
}

impl Mirror {
    /// `repository` as this mirror stores it: rewritten by the first rewrite whose expression
    /// matches (every match replaced, as Go's `ReplaceAllString` does for k3s), else as is.
    pub fn rewrite(&self, repository: &str) -> String {
        self.rewrites
            .iter()
            .find(|(regex, _)| regex.is_match(repository))
            .map_or_else(
                || repository.to_string(),
                |(regex, replacement)| {
                    regex
                        .replace_all(repository, replacement.as_str())
                        .into_owned()
                },
            )
    }
}

/// An endpoint URL reduced to what the client can use.
#[derive(Debug, PartialEq, Eq)]
struct EndpointUrl {
    host: String,
    plain_http: bool,
}

impl EndpointUrl {
    /// The URL in the one form the configuration stores.
    fn canonical(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }
}

/// Reads an endpoint URL: no scheme means HTTPS, as k3s reads it. The client always talks to
/// `/v2/` at the root of the host, so any other path is refused rather than ignored.
fn parse_endpoint_url(text: &str) -> Result<EndpointUrl, String> {
    let text = text.trim();
    let (plain_http, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
        (false, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
        (true, rest)
    } else if let Some((scheme, _)) = text.split_once("://") {
        return Err(format!(
            "scheme {scheme:?} is not supported; use https:// or http://"
        ));
    } else {
        (false, text)
    };
    if rest.contains(['?', '#']) {
        return Err("an endpoint URL cannot carry a query or fragment".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.contains('@') {
        // Not echoed: the part before `@` is a password.
        return Err(
            "credentials in an endpoint URL are not supported; put them under configs.<host>.auth"
                .into(),
        );
    }
    if !matches!(path, "" | "/" | "/v2" | "/v2/") {
        return Err(format!(
            "path {path:?} is not supported: the client fetches from /v2/ at the root of the host"
        ));
    }
    check_host(authority)?;
    Ok(EndpointUrl {
        host: authority.to_ascii_lowercase(),
        plain_http,
    })
}

fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Checks a `host[:port]` (IPv6 in brackets) as a registry name or endpoint authority.
fn check_host(authority: &str) -> Result<(), String> {
    if authority.is_empty() {
        return Err("the host is empty".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{authority:?} has an unclosed ["))?;
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{authority:?} is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("{authority:?} has text after ]")),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        let valid = !host.is_empty()
            && host
                .split('.')
                .all(|label| !label.is_empty() && label.bytes().all(is_host_byte));
        if !valid {
            return Err(format!("{authority:?} is not a host name or address"));
        }
    }
    if let Some(port) = port
        && !port
            .parse::<u16>()
            .is_ok_and(|p| p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{authority:?} has an invalid port"));
    }
    Ok(())
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Checks that a CA file can be read and holds a PEM certificate.
fn check_ca_file(path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !data
        .windows(CERTIFICATE_PEM.len())
        .any(|w| w == CERTIFICATE_PEM)
    {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(())
}

/// What every PEM certificate starts with.
const CERTIFICATE_PEM: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// One path segment as written in errors: bare when it is a plain word, quoted otherwise
/// (`mirrors."docker.io"`), so a key with dots reads as one key.
fn segment(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// `parent.key`.
fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        segment(key)
    } else {
        format!("{parent}.{}", segment(key))
    }
}

/// Turns the positioned YAML tree into a configuration, naming the file and field of the
/// first problem.
struct Reader<'a> {
    file: &'a Path,
}

/// The top-level fields of a `registries.yaml`.
const ROOT_FIELDS: [&str; 2] = ["mirrors", "configs"];
/// The fields of a `mirrors` entry.
const MIRROR_FIELDS: [&str; 2] = ["endpoint", "rewrite"];
/// The fields of a `configs` entry.
const HOST_FIELDS: [&str; 2] = ["auth", "tls"];
/// The fields of `configs.<host>.auth` that are honoured.
const AUTH_FIELDS: [&str; 3] = ["username", "password", "auth"];
/// The fields of `configs.<host>.auth` k3s knows but the client cannot send.
const AUTH_TOKEN_FIELDS: [&str; 3] = ["token", "identitytoken", "identity_token"];
/// The fields of `configs.<host>.tls` that are honoured.
const TLS_FIELDS: [&str; 2] = ["ca_file", "insecure_skip_verify"];
/// The fields of `configs.<host>.tls` that would need a client certificate.
const TLS_CLIENT_FIELDS: [&str; 2] = ["cert_file", "key_file"];

impl Reader<'_> {
    fn fail(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        // One line, whatever the message quotes.
        let message: String = message.into();
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        ConfigError::Invalid {
            path: self.file.to_path_buf(),
            field: field.into(),
            message,
        }
    }

    fn config(&self, text: &str) -> Result<RegistryConfig, ConfigError> {
        let documents = yaml::parse_documents(text)
            .map_err(|e| self.fail(format!("line {}", e.line()), e.message()))?;
        let mut documents = documents.into_iter().filter(|d| d.root.is_some());
        let Some(document) = documents.next() else {
            return Ok(RegistryConfig::default());
        };
        if let Some(second) = documents.next() {
            return Err(self.fail(
                format!("line {}", second.start_line),
                "a registries.yaml holds one YAML document",
            ));
        }
        if let Some((field, line)) = document.duplicate_keys.first() {
            return Err(self.fail(
                field_path(field),
                format!("given twice (again on line {line})"),
            ));
        }
        let mut config = RegistryConfig::default();
        let Some(root) = document.root else {
            return Ok(config);
        };
        let entries = self.mapping(&root, "", "the top level", &ROOT_FIELDS)?;
        for entry in entries {
            match entry.key.as_str() {
                "mirrors" => config.mirrors = self.mirrors(&entry.value)?,
                "configs" => config.configs = self.configs(&entry.value)?,
                other => return Err(self.unknown(&child("", other), &ROOT_FIELDS)),
            }
        }
        Ok(config)
    }

    fn mirrors(&self, node: &Node) -> Result<BTreeMap<String, Mirror>, ConfigError> {
        let mut mirrors = BTreeMap::new();
        for entry in self.map_entries(node, "mirrors")? {
            let field = child("mirrors", &entry.key);
            let name = self.registry_name(&entry.key, &field)?;
            let mirror = self.mirror(&entry.value, &field)?;
            if mirrors.insert(name, mirror).is_some() {
                return Err(self.fail(field, "names the same registry as another entry"));
            }
        }
        Ok(mirrors)
    }

    fn mirror(&self, node: &Node, field: &str) -> Result<Mirror, ConfigError> {
        let mut mirror = Mirror::default();
        for entry in self.mapping(node, field, "a mirror", &MIRROR_FIELDS)? {
            let field = child(field, &entry.key);
            match entry.key.as_str() {
                "endpoint" => {
                    let items = match &entry.value.value {
                        Value::Null => &[][..],
                        Value::Seq(items) => items.as_slice(),
                        _ => return Err(self.fail(field, "must be a list of URLs")),
                    };
                    for (index, item) in items.iter().enumerate() {
                        let field = format!("{field}[{index}]");
                        let url = self.string(item, &field)?;
                        let url = parse_endpoint_url(url).map_err(|m| self.fail(&field, m))?;
                        mirror.endpoints.push(url.canonical());
                    }
                }
                "rewrite" => {
                    for rewrite in self.map_entries(&entry.value, &field)? {
                        let field = child(&field, &rewrite.key);
                        let regex = regex::Regex::new(&rewrite.key).map_err(|e| {
                            self.fail(
                                &field,
                                format!("is not a valid regular expression: {}", regex_reason(&e)),
                            )
                        })?;
                        let replacement = self.string(&rewrite.value, &field)?;
                        mirror.rewrites.push((regex, replacement.to_string()));
                    }
                }
                _ => return Err(self.unknown(&field, &MIRROR_FIELDS)),
            }
        }
        Ok(mirror)
    }

    fn configs(&self, node: &Node) -> Result<BTreeMap<String, HostConfig>, ConfigError> {
        let mut configs = BTreeMap::new();
        for entry in self.map_entries(node, "configs")? {
            let field = child("configs", &entry.key);
            let host = self.config_host(&entry.key, &field)?;
            let settings = self.host_config(&entry.value, &field)?;
            if configs.insert(host, settings).is_some() {
                return Err(self.fail(field, "names the same host as another entry"));
            }
        }
        Ok(configs)
    }

    fn host_config(&self, node: &Node, field: &str) -> Result<HostConfig, ConfigError> {
        let mut settings = HostConfig::default();
        for entry in self.mapping(node, field, "a host's settings", &HOST_FIELDS)? {
            let field = child(field, &entry.key);
            match entry.key.as_str() {
                "auth" => settings.auth = self.auth(&entry.value, &field)?,
                "tls" => settings.tls = self.tls(&entry.value, &field)?,
                _ => return Err(self.unknown(&field, &HOST_FIELDS)),
            }
        }
        Ok(settings)
    }

    fn auth(&self, node: &Node, field: &str) -> Result<Option<Credential>, ConfigError> {
        if matches!(node.value, Value::Null) {
            return Ok(None);
        }
        let (mut username, mut password, mut auth) = (None, None, None);
        for entry in self.mapping(node, field, "credentials", &AUTH_FIELDS)? {
            let field = child(field, &entry.key);
            match entry.key.as_str() {
                "username" => username = Some(self.string(&entry.value, &field)?),
                "password" => password = Some(self.string(&entry.value, &field)?),
                "auth" => auth = Some((self.string(&entry.value, &field)?, field)),
                token if AUTH_TOKEN_FIELDS.contains(&token) => {
                    return Err(self.fail(
                        field,
                        "token authentication is not supported yet; use username and password",
                    ));
                }
                _ => return Err(self.unknown(&field, &AUTH_FIELDS)),
            }
        }
        match (username, password, auth) {
            (None, None, Some((auth, field))) => crate::keyring::decode_auth(auth)
                .map(Some)
                .map_err(|reason| self.fail(field, reason)),
            (_, _, Some((_, field))) => {
                Err(self.fail(field, "give either auth or username and password, not both"))
            }
            (Some(username), password, None) if !username.is_empty() => Ok(Some(Credential {
                username: username.to_string(),
                password: password.unwrap_or_default().to_string(),
            })),
            (Some(_), _, None) => Err(self.fail(child(field, "username"), "is empty")),
            (None, Some(_), None) => Err(self.fail(
                child(field, "username"),
                "is missing: a password needs a username",
            )),
            (None, None, None) => Err(self.fail(
                field,
                "needs username and password, or auth (base64 of username:password)",
            )),
        }
    }

    fn tls(&self, node: &Node, field: &str) -> Result<Tls, ConfigError> {
        let mut tls = Tls::default();
        for entry in self.mapping(node, field, "TLS settings", &TLS_FIELDS)? {
            let field = child(field, &entry.key);
            match entry.key.as_str() {
                "ca_file" => {
                    let ca_file = self.string(&entry.value, &field)?;
                    if ca_file.is_empty() {
                        return Err(self.fail(field, "is empty"));
                    }
                    tls.ca_file = Some(PathBuf::from(ca_file));
                }
                "insecure_skip_verify" => {
                    tls.insecure_skip_verify = match entry.value.value {
                        Value::Bool(skip) => skip,
                        Value::Null => false,
                        _ => return Err(self.fail(field, "must be true or false")),
                    }
                }
                client if TLS_CLIENT_FIELDS.contains(&client) => {
                    return Err(self.fail(
                        field,
                        "client certificates are not supported yet: the registry client cannot present one",
                    ));
                }
                _ => return Err(self.unknown(&field, &TLS_FIELDS)),
            }
        }
        Ok(tls)
    }

    /// A `mirrors` key: `*` or a registry as image references name it (`host[:port]`).
    fn registry_name(&self, key: &str, field: &str) -> Result<String, ConfigError> {
        if key == WILDCARD {
            return Ok(key.to_string());
        }
        if key.contains("://") || key.contains('/') {
            return Err(self.fail(
                field,
                "must be a registry name as images name it (registry.example:5000), not a URL",
            ));
        }
        check_host(key).map_err(|m| self.fail(field, m))?;
        Ok(key.to_ascii_lowercase())
    }

    /// A `configs` key: `*` or the `host[:port]` of an endpoint.
    fn config_host(&self, key: &str, field: &str) -> Result<String, ConfigError> {
        if key == WILDCARD {
            return Ok(key.to_string());
        }
        if key.contains("://") || key.contains('/') {
            return Err(self.fail(
                field,
                "must be a host[:port] as an endpoint URL names it, not a URL",
            ));
        }
        check_host(key).map_err(|m| self.fail(field, m))?;
        Ok(key.to_ascii_lowercase())
    }

    /// The entries of a mapping whose keys are free-form (registries, hosts, rewrites).
    fn map_entries<'n>(&self, node: &'n Node, field: &str) -> Result<&'n [Entry], ConfigError> {
        match &node.value {
            Value::Null => Ok(&[]),
            Value::Map(entries) => Ok(entries),
            _ => Err(self.fail(field, format!("must be a mapping, not {}", kind(node)))),
        }
    }

    /// The entries of a mapping of known fields (the caller refuses any other).
    fn mapping<'n>(
        &self,
        node: &'n Node,
        field: &str,
        what: &str,
        fields: &[&str],
    ) -> Result<&'n [Entry], ConfigError> {
        match &node.value {
            Value::Null => Ok(&[]),
            Value::Map(entries) => Ok(entries),
            _ => Err(self.fail(
                if field.is_empty() {
                    "(document)"
                } else {
                    field
                },
                format!(
                    "{what} must be a mapping with {}, not {}",
                    fields.join(", "),
                    kind(node)
                ),
            )),
        }
    }

    fn string<'n>(&self, node: &'n Node, field: &str) -> Result<&'n str, ConfigError> {
        match &node.value {
            Value::String(text) => Ok(text),
            // YAML read the text as a number or boolean and its spelling is gone (`0123`,
            // `1e3`, `yes`): refuse rather than send something else than was written.
            Value::Number(_) | Value::Bool(_) => Err(self.fail(
                field,
                format!(
                    "must be a string; quote it so it is read as text, not as a {}",
                    kind(node)
                ),
            )),
            _ => Err(self.fail(field, format!("must be a string, not {}", kind(node)))),
        }
    }

    fn unknown(&self, field: &str, known: &[&str]) -> ConfigError {
        self.fail(
            field,
            format!("unknown field (known: {})", known.join(", ")),
        )
    }
}

/// What a node is, for messages.
fn kind(node: &Node) -> &'static str {
    match node.value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Seq(_) => "list",
        Value::Map(_) => "mapping",
    }
}

/// A path the YAML reader reports (a duplicate key) in this file's notation.
fn field_path(path: &FieldPath) -> String {
    let mut out = String::new();
    for segment in path.segments() {
        match segment {
            Segment::Field(key) | Segment::Key(key) => out = child(&out, key),
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    if out.is_empty() {
        "(document)".into()
    } else {
        out
    }
}

/// The regex crate's reason without its multi-line picture of the pattern.
fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| line.strip_prefix("error: ").unwrap_or(line).to_string())
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegistryConfig, ConfigError> {
        RegistryConfig::parse(text, Path::new("/etc/registries.yaml"))
    }

    /// The field and message of a refusal, checking that it names the file and is one line.
    fn refusal(text: &str) -> (String, String) {
        match parse(text) {
            Err(error @ ConfigError::Invalid { .. }) => {
                let shown = error.to_string();
                assert!(!shown.contains('\n'), "one line: {shown}");
                assert!(shown.starts_with("/etc/registries.yaml: "), "{shown}");
                let ConfigError::Invalid { field, message, .. } = error else {
                    unreachable!()
                };
                (field, message)
            }
            other => panic!("expected a refusal of {text:?}, got {other:?}"),
        }
    }

    fn endpoint(host: &str, plain_http: bool, repository: &str, upstream: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            plain_http,
            repository: repository.into(),
            upstream,
        }
    }

    #[test]
    fn the_readme_example_means_what_the_readme_says() {
        let config = parse(
            r#"
mirrors:
  docker.io:                       # docker.io/library/nginx:1.27 comes from here first
    endpoint: ["https://mirror.internal:5000"]
    rewrite: {"^library/(.*)": "public/$1"}
  "registry.internal:5000":
    endpoint: ["http://registry.internal:5000"]   # plain HTTP only where an endpoint says http://
configs:
  mirror.internal:5000:
    auth: {username: puller, password: secret}
"#,
        )
        .expect("accepted");
        let endpoints = config.endpoints("docker.io", "library/nginx");
        let places: Vec<(&str, &str, bool)> = endpoints
            .iter()
            .map(|e| (e.host.as_str(), e.repository.as_str(), e.plain_http))
            .collect();
        assert_eq!(
            places,
            vec![
                ("mirror.internal:5000", "public/nginx", false),
                ("registry-1.docker.io", "library/nginx", false),
            ]
        );
        let internal = config.endpoints("registry.internal:5000", "team/app");
        assert!(internal[0].plain_http && internal[0].host == "registry.internal:5000");
        let auth = config
            .host("mirror.internal:5000")
            .and_then(|h| h.auth.clone())
            .expect("the mirror's credential");
        assert_eq!(auth.username, "puller");
    }

    #[test]
    fn without_the_default_endpoint_a_mirrored_registry_is_pulled_from_its_mirrors_only() {
        let mut config =
            parse("mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\"]\n")
                .expect("accepted");
        let hosts = |config: &RegistryConfig, registry: &str| -> Vec<String> {
            config
                .endpoints(registry, "library/nginx")
                .into_iter()
                .map(|e| e.host)
                .collect()
        };
        assert_eq!(
            hosts(&config, "docker.io"),
            vec!["127.0.0.1:5000", "registry-1.docker.io"]
        );
        config.no_default_endpoint = true;
        assert_eq!(hosts(&config, "docker.io"), vec!["127.0.0.1:5000"]);
        // A registry without mirrors is still pulled from itself.
        assert_eq!(hosts(&config, "ghcr.io"), vec!["ghcr.io"]);
    }

    #[test]
    fn no_file_pulls_every_image_from_its_registry() {
        let config = RegistryConfig::default();
        assert_eq!(
            config.endpoints("ghcr.io", "org/app"),
            vec![endpoint("ghcr.io", false, "org/app", true)]
        );
        assert_eq!(
            config.endpoints("docker.io", "library/nginx"),
            vec![endpoint(
                "registry-1.docker.io",
                false,
                "library/nginx",
                true
            )]
        );
    }

    #[test]
    fn empty_or_comment_only_file_is_the_default() {
        for text in ["", "# nothing yet\n", "mirrors:\nconfigs:\n", "---\n"] {
            let config = parse(text).expect("accepted");
            assert!(
                config.mirrors.is_empty() && config.configs.is_empty(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn mirrors_come_first_in_order_then_the_registry() {
        let config = parse(
            r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example:5000"
      - http://127.0.0.1:5000
      - cache.example/v2/
"#,
        )
        .expect("accepted");
        assert_eq!(
            config.endpoints("docker.io", "library/nginx"),
            vec![
                endpoint("mirror.example:5000", false, "library/nginx", false),
                endpoint("127.0.0.1:5000", true, "library/nginx", false),
                endpoint("cache.example", false, "library/nginx", false),
                endpoint("registry-1.docker.io", false, "library/nginx", true),
            ]
        );
        // Another registry has no mirrors.
        assert_eq!(
            config.endpoints("quay.io", "coreos/etcd"),
            vec![endpoint("quay.io", false, "coreos/etcd", true)]
        );
    }

    #[test]
    fn wildcard_mirrors_apply_only_to_registries_without_their_own() {
        let config = parse(
            r#"
mirrors:
  "*":
    endpoint: ["https://everything.example"]
  registry.example:5000:
    endpoint: ["http://registry.example:5000"]
"#,
        )
        .expect("accepted");
        assert_eq!(
            config.endpoints("ghcr.io", "org/app"),
            vec![
                endpoint("everything.example", false, "org/app", false),
                endpoint("ghcr.io", false, "org/app", true),
            ]
        );
        assert_eq!(
            config.endpoints("registry.example:5000", "app"),
            vec![
                endpoint("registry.example:5000", true, "app", false),
                endpoint("registry.example:5000", false, "app", true),
            ]
        );
    }

    #[test]
    fn rewrites_apply_to_mirrors_only_and_the_first_match_wins_in_file_order() {
        let config = parse(
            r#"
mirrors:
  docker.io:
    endpoint: ["https://registry.example.com:5000"]
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
      "^ran(.*)": "never/$1"
      "^library/(.*)": "hub/$1"
"#,
        )
        .expect("accepted");
        assert_eq!(
            config.endpoints("docker.io", "rancher/coredns-coredns"),
            vec![
                endpoint(
                    "registry.example.com:5000",
                    false,
                    "mirrorproject/rancher-images/coredns-coredns",
                    false
                ),
                endpoint(
                    "registry-1.docker.io",
                    false,
                    "rancher/coredns-coredns",
                    true
                ),
            ]
        );
        let endpoints = config.endpoints("docker.io", "library/nginx");
        assert_eq!(endpoints[0].repository, "hub/nginx");
        let endpoints = config.endpoints("docker.io", "other/app");
        assert_eq!(endpoints[0].repository, "other/app");
        let regexes: Vec<&str> = config.mirrors["docker.io"]
            .rewrites
            .iter()
            .map(|(regex, _)| regex.as_str())
            .collect();
        assert_eq!(regexes, ["^rancher/(.*)", "^ran(.*)", "^library/(.*)"]);
    }

    #[test]
    fn the_registry_listed_as_a_mirror_is_tried_there_once_without_rewrites() {
        let config = parse(
            r#"
mirrors:
  docker.io:
    endpoint:
      - https://registry-1.docker.io
      - https://mirror.example
      - https://mirror.example/v2
    rewrite:
      "(.*)": "mirrored/$1"
  ghcr.io:
    endpoint: ["ghcr.io", "https://cache.example"]
"#,
        )
        .expect("accepted");
        assert_eq!(
            config.endpoints("docker.io", "library/nginx"),
            vec![
                endpoint("registry-1.docker.io", false, "library/nginx", true),
                endpoint("mirror.example", false, "mirrored/library/nginx", false),
            ]
        );
        assert_eq!(
            config.endpoints("ghcr.io", "org/app"),
            vec![
                endpoint("ghcr.io", false, "org/app", true),
                endpoint("cache.example", false, "org/app", false),
            ]
        );
    }

    #[test]
    fn an_endpoint_path_the_client_cannot_send_is_refused() {
        for accepted in [
            "https://m.example",
            "https://m.example/",
            "m.example/v2",
            "m.example/v2/",
        ] {
            let text = format!("mirrors:\n  docker.io:\n    endpoint: [\"{accepted}\"]\n");
            assert!(parse(&text).is_ok(), "{accepted}");
        }
        let (field, message) = refusal(
            "mirrors:\n  docker.io:\n    endpoint:\n      - https://ok.example\n      - https://m.example/prefix/v2\n",
        );
        assert_eq!(field, r#"mirrors."docker.io".endpoint[1]"#);
        assert!(message.contains("\"/prefix/v2\""), "{message}");
    }

    #[test]
    fn bad_endpoint_urls_are_refused_with_their_field() {
        let cases = [
            ("ftp://m.example", "scheme"),
            ("https://", "empty"),
            ("https://m.example:99999", "port"),
            ("https://m.example:", "port"),
            ("https://m.example?x=1", "query"),
            ("https://bad host", "not a host"),
        ];
        for (url, reason) in cases {
            let text = format!("mirrors:\n  docker.io:\n    endpoint: [\"{url}\"]\n");
            let (field, message) = refusal(&text);
            assert_eq!(field, r#"mirrors."docker.io".endpoint[0]"#, "{url}");
            assert!(message.contains(reason), "{url}: {message}");
        }
    }

    #[test]
    fn credentials_in_an_endpoint_url_are_refused_without_echoing_them() {
        let (field, message) =
            refusal("mirrors:\n  docker.io:\n    endpoint: [\"https://me:hunter2@m.example\"]\n");
        assert_eq!(field, r#"mirrors."docker.io".endpoint[0]"#);
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn an_invalid_rewrite_names_its_field_on_one_line() {
        let (field, message) = refusal(
            "mirrors:\n  docker.io:\n    endpoint: [\"m.example\"]\n    rewrite:\n      \"^(rancher\": \"x/$1\"\n",
        );
        assert_eq!(field, r#"mirrors."docker.io".rewrite."^(rancher""#);
        assert!(message.contains("unclosed group"), "{message}");
    }

    #[test]
    fn unknown_fields_are_refused_everywhere() {
        let cases = [
            ("mirror:\n  docker.io: {}\n", "mirror"),
            (
                "mirrors:\n  docker.io:\n    endpoints: [\"m.example\"]\n",
                r#"mirrors."docker.io".endpoints"#,
            ),
            (
                "configs:\n  m.example:\n    authentication: {}\n",
                r#"configs."m.example".authentication"#,
            ),
            (
                "configs:\n  m.example:\n    auth:\n      user: me\n",
                r#"configs."m.example".auth.user"#,
            ),
            (
                "configs:\n  m.example:\n    tls:\n      ca: /x.pem\n",
                r#"configs."m.example".tls.ca"#,
            ),
        ];
        for (text, expected) in cases {
            let (field, message) = refusal(text);
            assert_eq!(field, expected, "{text}");
            assert!(message.starts_with("unknown field"), "{message}");
        }
    }

    #[test]
    fn username_and_password_or_auth_give_the_host_credentials() {
        let config = parse(
            r#"
configs:
  "Mirror.Example:5000":
    auth:
      username: me
      password: "s3cret:with:colons"
  other.example:
    auth:
      auth: bWU6cGFzcw==
  unpadded.example:
    auth:
      auth: bWU6cGFzcw
"#,
        )
        .expect("accepted");
        let auth = |host: &str| config.host(host).and_then(|h| h.auth.clone());
        assert_eq!(
            auth("mirror.example:5000"),
            Some(Credential {
                username: "me".into(),
                password: "s3cret:with:colons".into()
            })
        );
        let decoded = Some(Credential {
            username: "me".into(),
            password: "pass".into(),
        });
        assert_eq!(auth("other.example"), decoded);
        assert_eq!(auth("unpadded.example"), decoded);
        assert_eq!(auth("mirror.example"), None, "the port is part of the key");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("pass\""),
            "{debug}"
        );
    }

    #[test]
    fn tokens_are_refused_as_not_supported_yet() {
        for token in ["token", "identitytoken", "identity_token"] {
            let text = format!("configs:\n  m.example:\n    auth:\n      {token}: abc\n");
            let (field, message) = refusal(&text);
            assert_eq!(field, format!(r#"configs."m.example".auth.{token}"#));
            assert!(message.contains("not supported yet"), "{message}");
        }
    }

    #[test]
    fn unusable_credentials_are_refused() {
        let cases = [
            (
                "configs:\n  m.example:\n    auth:\n      auth: \"!!!\"\n",
                r#"configs."m.example".auth.auth"#,
                "base64",
            ),
            (
                // base64 of "nocolon".
                "configs:\n  m.example:\n    auth:\n      auth: bm9jb2xvbg==\n",
                r#"configs."m.example".auth.auth"#,
                "colon",
            ),
            (
                "configs:\n  m.example:\n    auth:\n      auth: bWU6cGFzcw==\n      username: me\n",
                r#"configs."m.example".auth.auth"#,
                "not both",
            ),
            (
                "configs:\n  m.example:\n    auth:\n      password: p\n",
                r#"configs."m.example".auth.username"#,
                "needs a username",
            ),
            (
                "configs:\n  m.example:\n    auth: {}\n",
                r#"configs."m.example".auth"#,
                "needs username",
            ),
            (
                "configs:\n  m.example:\n    auth:\n      username: me\n      password: 0123\n",
                r#"configs."m.example".auth.password"#,
                "quote it",
            ),
        ];
        for (text, expected, reason) in cases {
            let (field, message) = refusal(text);
            assert_eq!(field, expected, "{text}");
            assert!(message.contains(reason), "{text}: {message}");
            assert!(
                !message.contains("bWU6") && !message.contains("0123"),
                "{message}"
            );
        }
    }

    #[test]
    fn tls_settings_are_read_and_client_certificates_refused() {
        let config = parse(
            "configs:\n  m.example:\n    tls:\n      ca_file: /etc/ssl/mirror.pem\n      insecure_skip_verify: true\n",
        )
        .expect("accepted");
        let tls = &config.host("m.example").expect("configured").tls;
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(Path::new("/etc/ssl/mirror.pem"))
        );
        assert!(tls.insecure_skip_verify);
        for field in ["cert_file", "key_file"] {
            let text = format!("configs:\n  m.example:\n    tls:\n      {field}: /x.pem\n");
            let (at, message) = refusal(&text);
            assert_eq!(at, format!(r#"configs."m.example".tls.{field}"#));
            assert!(message.contains("client certificates"), "{message}");
        }
        let (at, message) =
            refusal("configs:\n  m.example:\n    tls:\n      insecure_skip_verify: \"yes\"\n");
        assert_eq!(at, r#"configs."m.example".tls.insecure_skip_verify"#);
        assert!(message.contains("true or false"), "{message}");
    }

    #[test]
    fn docker_hub_and_wildcard_settings_apply_to_the_hosts_they_name() {
        let config = parse(
            "configs:\n  docker.io:\n    auth: {username: hub, password: p}\n  \"*\":\n    tls: {insecure_skip_verify: true}\n",
        )
        .expect("accepted");
        let hub = config
            .host("registry-1.docker.io")
            .expect("docker.io entry");
        assert_eq!(hub.auth.as_ref().map(|c| c.username.as_str()), Some("hub"));
        let other = config.host("ghcr.io").expect("wildcard entry");
        assert!(other.tls.insecure_skip_verify && other.auth.is_none());
    }

    #[test]
    fn keys_that_could_never_match_are_refused() {
        let (field, message) =
            refusal("mirrors:\n  https://docker.io:\n    endpoint: [m.example]\n");
        assert_eq!(field, r#"mirrors."https://docker.io""#);
        assert!(message.contains("not a URL"), "{message}");
        let (field, _) = refusal("configs:\n  m.example/v2:\n    auth: {username: a}\n");
        assert_eq!(field, r#"configs."m.example/v2""#);
        let (field, message) =
            refusal("configs:\n  m.example:\n    tls: {}\n  M.EXAMPLE:\n    tls: {}\n");
        assert_eq!(field, r#"configs."M.EXAMPLE""#);
        assert!(message.contains("same host"), "{message}");
    }

    #[test]
    fn wrong_shapes_duplicates_and_syntax_errors_are_refused() {
        let (field, message) = refusal("mirrors:\n  docker.io:\n    endpoint: https://m.example\n");
        assert_eq!(field, r#"mirrors."docker.io".endpoint"#);
        assert!(message.contains("list"), "{message}");
        let (field, message) = refusal("- mirrors\n");
        assert_eq!(field, "(document)");
        assert!(message.contains("mapping"), "{message}");
        let (field, message) = refusal(
            "mirrors:\n  docker.io:\n    endpoint: [a.example]\n  docker.io:\n    endpoint: [b.example]\n",
        );
        assert_eq!(field, r#"mirrors."docker.io""#);
        assert!(message.contains("twice"), "{message}");
        let (field, _) = refusal("mirrors: [\n");
        assert!(field.starts_with("line "), "{field}");
        let (field, message) = refusal("mirrors: {}\n---\nconfigs: {}\n");
        assert_eq!(field, "line 2");
        assert!(message.contains("one YAML document"), "{message}");
    }

    #[test]
    fn load_reads_the_file_and_checks_ca_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
        )
        .expect("write ca");
        let file = dir.path().join("registries.yaml");
        let text = |ca: &Path| {
            format!(
                "configs:\n  m.example:\n    tls:\n      ca_file: {}\n",
                ca.display()
            )
        };
        std::fs::write(&file, text(&ca)).expect("write config");
        let config = RegistryConfig::load(&file).expect("loads");
        assert_eq!(
            config
                .host("m.example")
                .and_then(|h| h.tls.ca_file.as_deref()),
            Some(ca.as_path())
        );

        std::fs::write(&file, text(&dir.path().join("missing.pem"))).expect("write config");
        match RegistryConfig::load(&file) {
            Err(ConfigError::Invalid { field, message, .. }) => {
                assert_eq!(field, r#"configs."m.example".tls.ca_file"#);
                assert!(message.contains("cannot read"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }

        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        std::fs::write(&file, text(&not_pem)).expect("write config");
        assert!(matches!(
            RegistryConfig::load(&file),
            Err(ConfigError::Invalid { .. })
        ));

        assert!(matches!(
            RegistryConfig::load(&dir.path().join("absent.yaml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
