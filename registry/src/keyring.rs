//! Credentials from pull secrets: `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg`,
//! matched to an image as the kubelet's credential provider matches them.

/// A user name and password (or token) for one registry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The credentials a pod may pull with: its `imagePullSecrets` and its ServiceAccount's.
///
/// Kept as the kubelet's `BasicDockerKeyring` keeps them: keys normalised (no scheme, no
/// `/v1/` or `/v2/`, Docker Hub's names folded to `docker.io`) and sorted in reverse, so longer
/// paths come before their prefixes and exact hosts before `*` globs.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    entries: Vec<(String, Credential)>,
}

/// A pull secret whose data cannot be read. The message names the key at fault, never a
/// password or an `auth` value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyringError(pub String);

/// Names Docker Hub's credentials are stored under (`https://index.docker.io/v1/` is what
/// `docker login` writes); all of them serve images of registry `docker.io`.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

impl Keyring {
    /// Adds the entries of a `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`
    /// (already base64-decoded).
    pub fn add_dockerconfigjson(&mut self, json: &[u8]) -> Result<(), KeyringError> {
        let value = parse_json(json, ".dockerconfigjson")?;
        let serde_json::Value::Object(root) = value else {
            return Err(KeyringError(
                ".dockerconfigjson must be a JSON object with \"auths\"".into(),
            ));
        };
        match root.get("auths") {
            // As the kubelet reads it: no `auths`, no credentials.
            None | Some(serde_json::Value::Null) => Ok(()),
            Some(auths) => self.add_auths(auths, ".dockerconfigjson auths"),
        }
    }

    /// Adds the entries of a `kubernetes.io/dockercfg` Secret's `.dockercfg` (decoded).
    pub fn add_dockercfg(&mut self, json: &[u8]) -> Result<(), KeyringError> {
        let value = parse_json(json, ".dockercfg")?;
        self.add_auths(&value, ".dockercfg")
    }

    /// The credentials for `repository` on `registry`, most specific match first, as the
    /// kubelet tries them.
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<Credential> {
        let target = Target::new(registry, repository);
        self.entries
            .iter()
            .filter(|(key, _)| key_matches(key, &target))
            .map(|(_, credential)| credential.clone())
            .collect()
    }

    /// Whether the keyring has no credentials.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds every entry of a map from registry key to credentials; nothing is added if any
    /// entry is bad, so a secret is taken whole or not at all.
    fn add_auths(&mut self, auths: &serde_json::Value, what: &str) -> Result<(), KeyringError> {
        let serde_json::Value::Object(auths) = auths else {
            return Err(KeyringError(format!(
                "{what} must be a JSON object from registry to credentials"
            )));
        };
        let mut added = Vec::with_capacity(auths.len());
        for (key, entry) in auths {
            let normalised =
                normalise_key(key).map_err(|reason| KeyringError(format!("{what}: {reason}")))?;
            let credential = read_entry(entry)
                .map_err(|reason| KeyringError(format!("{what}: {}: {reason}", quoted(key))))?;
            added.push((normalised, credential));
        }
        self.entries.extend(added);
        // Stable, so credentials under one key keep the order they were given in.
        self.entries.sort_by(|(a, _), (b, _)| b.cmp(a));
        Ok(())
    }
}

/// Decodes an `auth` field, `base64(username:password)`, padded or not as the kubelet accepts
/// it. The reason never quotes the field.
pub(crate) fn decode_auth(field: &str) -> Result<Credential, &'static str> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let decoded = LENIENT
        .decode(field.trim())
        .map_err(|_| "auth is not base64 (of username:password)")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "auth does not decode to UTF-8 text")?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or("auth must be base64 of username:password (no colon found)")?;
    Ok(Credential {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// Parses JSON with an error that gives only the position: serde_json's messages can quote
/// the value they stopped at, which may be a password.
fn parse_json(json: &[u8], what: &str) -> Result<serde_json::Value, KeyringError> {
    serde_json::from_slice(json).map_err(|e| {
        KeyringError(format!(
            "{what} is not valid JSON (line {} column {})",
            e.line(),
            e.column()
        ))
    })
}

/// Reads one entry: `username` and `password`, or `auth` (which wins, as in the kubelet).
/// `email` is ignored as the kubelet ignores it; a token cannot be sent, so it is refused.
fn read_entry(entry: &serde_json::Value) -> Result<Credential, String> {
    let serde_json::Value::Object(fields) = entry else {
        return Err("must be a JSON object with username and password, or auth".into());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match fields.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err(format!("{name} must be a string")),
        }
    };
    for token in ["identitytoken", "registrytoken"] {
        if text(token)?.is_some_and(|t| !t.is_empty()) {
            return Err(format!(
                "{token} is not supported yet; use username and password"
            ));
        }
    }
    let username = text("username")?;
    let password = text("password")?;
    text("email")?;
    match text("auth")? {
        Some(auth) if !auth.is_empty() => decode_auth(auth).map_err(str::to_string),
        _ => match (username, password) {
            (None, None) => Err("has neither username and password nor auth".into()),
            (username, password) => Ok(Credential {
                username: username.unwrap_or_default().to_string(),
                password: password.unwrap_or_default().to_string(),
            }),
        },
    }
}

/// A key as the kubelet indexes it: scheme dropped, `/v1/` or `/v2/` dropped from the path,
/// the host lowercased, and Docker Hub's names folded to `docker.io` (the registry its images
/// are named by).
fn normalise_key(key: &str) -> Result<String, String> {
    let trimmed = key.trim();
    let rest = if let Some(rest) = strip_prefix_ignore_case(trimmed, "https://") {
        rest
    } else if let Some(rest) = strip_prefix_ignore_case(trimmed, "http://") {
        rest
    } else if trimmed.contains("://") {
        return Err(format!(
            "{}: only https:// and http:// keys are registries",
            quoted(key)
        ));
    } else {
        trimmed
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.contains('@') {
        // Not echoed: the part before `@` may be a password.
        return Err("a registry key with user information is not supported".into());
    }
    if rest.contains(['?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(format!(
            "{} is not a registry host and path (a ? or # would start a URL's query)",
            quoted(key)
        ));
    }
    let (host, port) = split_port(authority);
    if host.is_empty() || host.split('.').any(str::is_empty) {
        return Err(format!("{} has no valid host", quoted(key)));
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{} has an invalid port", quoted(key)));
    }
    for label in host.split('.') {
        check_glob(label).map_err(|reason| format!("{}: {reason}", quoted(key)))?;
    }
    // `/v1/` and `/v2/` name the API, not a repository (the kubelet's own rule; a bare `/v1`
    // or `/v2` is read the same, as no one means a repository named `v2`).
    let path = ["/v1/", "/v2/"]
        .iter()
        .find_map(|api| path.strip_prefix(api).map(|p| format!("/{p}")))
        .unwrap_or_else(|| path.to_string());
    let path = if matches!(path.as_str(), "/" | "/v1" | "/v2") {
        String::new()
    } else {
        path
    };
    let mut host = host.to_ascii_lowercase();
    if port.is_none() && DOCKER_HUB_HOSTS.contains(&host.as_str()) {
        host = DOCKER_HUB_HOSTS[0].to_string();
    }
    Ok(match port {
        Some(port) => format!("{host}:{port}{path}"),
        None => format!("{host}{path}"),
    })
}

/// What an image is matched by: its registry's host labels and port, and `/repository`.
struct Target {
    labels: Vec<String>,
    port: Option<String>,
    path: String,
}

impl Target {
    fn new(registry: &str, repository: &str) -> Self {
        let (host, port) = split_port(registry);
        let mut host = host.to_ascii_lowercase();
        if port.is_none() && DOCKER_HUB_HOSTS.contains(&host.as_str()) {
            host = DOCKER_HUB_HOSTS[0].to_string();
        }
        Target {
            labels: host.split('.').map(str::to_string).collect(),
            port: port.map(str::to_string),
            path: format!("/{repository}"),
        }
    }
}

/// The kubelet's `URLsMatch`: same port (or none on both), as many host labels each matching
/// its glob, and the key's path a prefix of the repository's.
fn key_matches(key: &str, target: &Target) -> bool {
    let (authority, path) = match key.find('/') {
        Some(at) => key.split_at(at),
        None => (key, ""),
    };
    let (host, port) = split_port(authority);
    if port != target.port.as_deref() {
        return false;
    }
    if !target.path.starts_with(path) {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() == target.labels.len()
        && labels
            .iter()
            .zip(&target.labels)
            .all(|(glob, label)| glob_matches(glob.as_bytes(), label.as_bytes()))
}

/// Splits `host[:port]` (an IPv6 address in brackets keeps its colons).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find("]:") {
            Some(at) => (&authority[..=at], Some(&authority[at + 2..])),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

fn strip_prefix_ignore_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// A key quoted for a message.
fn quoted(key: &str) -> String {
    format!("key {key:?}")
}

/// Checks a host label as Go's `filepath.Match` would parse it (`*`, `[…]`, `\`), so a
/// malformed glob is refused when the secret is read rather than never matching.
fn check_glob(glob: &str) -> Result<(), String> {
    let bytes = glob.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                if i + 1 >= bytes.len() {
                    return Err("the glob ends with \\".into());
                }
                i += 2;
            }
            b'[' => i = class_end(bytes, i + 1).ok_or("the glob has an unclosed [")?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Where the character class that starts after `[` (at `start`) ends: the index after `]`.
fn class_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    if bytes.get(i) == Some(&b'^') {
        i += 1;
    }
    let mut first = true;
    while i < bytes.len() {
        match bytes[i] {
            b']' if !first => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
        first = false;
    }
    None
}

/// Whether `text` matches `glob` (one host label, so `*` never crosses a dot): `*` any run,
/// `[a-z]` / `[^a-z]` a class, `\x` a literal. (`?` cannot occur: in a URL it starts the
/// query, so a key holding one is refused.)
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    // Where the last `*` was and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
                continue;
            }
            Some(b'[') => match class_end(glob, g + 1) {
                Some(end) if class_matches(&glob[g + 1..end - 1], text[t]) => Some(end),
                _ => None,
            },
            Some(b'\\') => match glob.get(g + 1) {
                Some(&c) if c == text[t] => Some(g + 2),
                _ => None,
            },
            Some(&c) if c == text[t] => Some(g + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                g = next;
                t += 1;
            }
            (None, Some((star_at, matched_to))) => {
                g = star_at + 1;
                t = matched_to + 1;
                star = Some((star_at, t));
            }
            (None, None) => return false,
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

/// Whether `c` is in a class body (what is between `[` and `]`).
fn class_matches(body: &[u8], c: u8) -> bool {
    let (negated, body) = match body.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, body),
    };
    let mut i = 0;
    let mut found = false;
    while i < body.len() {
        let low = if body[i] == b'\\' && i + 1 < body.len() {
            i += 1;
            body[i]
        } else {
            body[i]
        };
        i += 1;
        let high = if body.get(i) == Some(&b'-') && i + 1 < body.len() {
            i += 1;
            let high = if body[i] == b'\\' && i + 1 < body.len() {
                i += 1;
                body[i]
            } else {
                body[i]
            };
            i += 1;
            high
        } else {
            low
        };
        if low <= c && c <= high {
            found = true;
        }
    }
    found != negated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(username: &str, password: &str) -> Credential {
        Credential {
            username: username.into(),
            password: password.into(),
        }
    }

    fn keyring(json: &str) -> Keyring {
        let mut keyring = Keyring::default();
        keyring
            .add_dockerconfigjson(json.as_bytes())
            .expect("a valid .dockerconfigjson");
        keyring
    }

    fn users(keyring: &Keyring, registry: &str, repository: &str) -> Vec<String> {
        keyring
            .lookup(registry, repository)
            .into_iter()
            .map(|c| c.username)
            .collect()
    }

    #[test]
    fn username_and_password_or_auth_are_read() {
        // "me:pa:ss" padded and "me:pass" unpadded, as the kubelet accepts both.
        let keyring = keyring(
            r#"{"auths": {
                "a.example": {"username": "me", "password": "secret", "email": "me@example"},
                "b.example": {"auth": "bWU6cGE6c3M="},
                "c.example": {"auth": "bWU6cGFzcw"},
                "d.example": {"username": "ignored", "password": "ignored", "auth": "bWU6cGFzcw=="}
            }}"#,
        );
        assert_eq!(
            keyring.lookup("a.example", "x"),
            [credential("me", "secret")]
        );
        assert_eq!(
            keyring.lookup("b.example", "x"),
            [credential("me", "pa:ss")]
        );
        assert_eq!(keyring.lookup("c.example", "x"), [credential("me", "pass")]);
        assert_eq!(keyring.lookup("d.example", "x"), [credential("me", "pass")]);
        assert!(keyring.lookup("e.example", "x").is_empty());
    }

    #[test]
    fn dockercfg_is_the_inner_map() {
        let mut keyring = Keyring::default();
        assert!(keyring.is_empty());
        keyring
            .add_dockercfg(br#"{"https://quay.io/v1/": {"auth": "cTpw"}}"#)
            .expect("valid");
        assert!(!keyring.is_empty());
        assert_eq!(keyring.lookup("quay.io", "org/app"), [credential("q", "p")]);
    }

    #[test]
    fn every_docker_hub_key_matches_docker_io() {
        for key in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
            "https://registry-1.docker.io/v2/",
        ] {
            let keyring = keyring(&format!(
                r#"{{"auths": {{"{key}": {{"username": "hub", "password": "p"}}}}}}"#
            ));
            assert_eq!(
                users(&keyring, "docker.io", "library/nginx"),
                ["hub"],
                "{key}"
            );
            assert!(
                users(&keyring, "ghcr.io", "library/nginx").is_empty(),
                "{key}"
            );
        }
    }

    #[test]
    fn globs_match_exactly_one_label_per_star() {
        let keyring = keyring(
            r#"{"auths": {
                "*.example.com": {"username": "star", "password": "p"},
                "app*.k8s.io": {"username": "partial", "password": "p"},
                "registry.*": {"username": "tld", "password": "p"},
                "[a-c]x.io": {"username": "class", "password": "p"}
            }}"#,
        );
        assert_eq!(users(&keyring, "a.example.com", "x"), ["star"]);
        assert!(users(&keyring, "a.b.example.com", "x").is_empty());
        assert!(users(&keyring, "example.com", "x").is_empty());
        assert_eq!(users(&keyring, "apps.k8s.io", "x"), ["partial"]);
        assert_eq!(users(&keyring, "app.k8s.io", "x"), ["partial"]);
        assert!(users(&keyring, "web.k8s.io", "x").is_empty());
        assert_eq!(users(&keyring, "registry.io", "x"), ["tld"]);
        assert_eq!(users(&keyring, "bx.io", "x"), ["class"]);
        assert!(users(&keyring, "dx.io", "x").is_empty());
    }

    #[test]
    fn a_port_in_the_key_must_match_and_none_matches_only_none() {
        let keyring = keyring(
            r#"{"auths": {
                "registry.example:5000": {"username": "port", "password": "p"},
                "plain.example": {"username": "noport", "password": "p"}
            }}"#,
        );
        assert_eq!(users(&keyring, "registry.example:5000", "x"), ["port"]);
        assert!(users(&keyring, "registry.example:5001", "x").is_empty());
        assert!(users(&keyring, "registry.example", "x").is_empty());
        assert_eq!(users(&keyring, "plain.example", "x"), ["noport"]);
        assert!(users(&keyring, "plain.example:443", "x").is_empty());
    }

    #[test]
    fn a_path_in_the_key_is_a_prefix_of_the_repository_and_more_specific_keys_come_first() {
        let keyring = keyring(
            r#"{"auths": {
                "quay.io": {"username": "host", "password": "p"},
                "https://quay.io/v2/coreos": {"username": "org", "password": "p"},
                "quay.io/coreos/etcd": {"username": "repo", "password": "p"},
                "*.io": {"username": "glob", "password": "p"}
            }}"#,
        );
        assert_eq!(
            users(&keyring, "quay.io", "coreos/etcd"),
            ["repo", "org", "host", "glob"]
        );
        assert_eq!(
            users(&keyring, "quay.io", "coreos/flannel"),
            ["org", "host", "glob"]
        );
        assert_eq!(users(&keyring, "quay.io", "other/app"), ["host", "glob"]);
    }

    #[test]
    fn secrets_merge_and_one_key_keeps_every_credential_in_order() {
        let mut keyring =
            keyring(r#"{"auths": {"ghcr.io": {"username": "first", "password": "p"}}}"#);
        keyring
            .add_dockerconfigjson(
                br#"{"auths": {"https://ghcr.io": {"username": "second", "password": "p"}}}"#,
            )
            .expect("valid");
        keyring
            .add_dockercfg(br#"{"ghcr.io/org": {"username": "org", "password": "p"}}"#)
            .expect("valid");
        assert_eq!(
            users(&keyring, "ghcr.io", "org/app"),
            ["org", "first", "second"]
        );
    }

    #[test]
    fn errors_are_one_line_and_never_show_a_secret() {
        let cases: [(&str, &str); 8] = [
            (
                r#"{"auths": {"a.example": {"auth": "hunter2hunter2!"}}}"#,
                "base64",
            ),
            // base64 of "hunter2" has no colon.
            (
                r#"{"auths": {"a.example": {"auth": "aHVudGVyMg=="}}}"#,
                "colon",
            ),
            (
                r#"{"auths": {"a.example": {"username": "u", "password": 12345}}}"#,
                "password must be a string",
            ),
            (
                r#"{"auths": {"a.example": {"identitytoken": "hunter2"}}}"#,
                "not supported yet",
            ),
            (
                r#"{"auths": {"a.example": {"email": "x@example"}}}"#,
                "neither",
            ),
            (
                r#"{"auths": {"https://u:hunter2@a.example": {"username": "u", "password": "p"}}}"#,
                "user information",
            ),
            (
                r#"{"auths": {"a.example": {"password": "hunter2"#,
                "not valid JSON",
            ),
            (r#"{"auths": ["hunter2"]}"#, "must be a JSON object"),
        ];
        for (json, reason) in cases {
            let error = Keyring::default()
                .add_dockerconfigjson(json.as_bytes())
                .expect_err(json)
                .to_string();
            assert!(error.contains(reason), "{json}: {error}");
            assert!(!error.contains('\n'), "{error}");
            for secret in ["hunter2", "12345", "aHVudGVyMg"] {
                assert!(!error.contains(secret), "{json}: {error}");
            }
        }
    }

    #[test]
    fn a_bad_key_refuses_the_whole_secret() {
        let mut keyring = Keyring::default();
        let error = keyring
            .add_dockerconfigjson(
                br#"{"auths": {"good.example": {"username": "u", "password": "p"}, "[bad.example": {"username": "u", "password": "p"}}}"#,
            )
            .expect_err("an unclosed [ is refused");
        assert!(error.to_string().contains("[bad.example"), "{error}");
        assert!(keyring.is_empty());
        for key in ["ftp://x.example", "x.example:port", "", "a..example"] {
            let json = format!(r#"{{"auths": {{"{key}": {{"username": "u", "password": "p"}}}}}}"#);
            assert!(
                Keyring::default()
                    .add_dockerconfigjson(json.as_bytes())
                    .is_err(),
                "{key:?}"
            );
        }
    }

    #[test]
    fn a_config_without_auths_adds_nothing() {
        let keyring = keyring(r#"{"credsStore": "desktop"}"#);
        assert!(keyring.is_empty());
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let keyring =
            keyring(r#"{"auths": {"a.example": {"username": "me", "password": "hunter2"}}}"#);
        let debug = format!("{keyring:?} {:?}", keyring.lookup("a.example", "x"));
        assert!(
            debug.contains("me") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[test]
    fn globs_backtrack_and_classes_negate() {
        assert!(glob_matches(b"*b", b"aab"));
        assert!(glob_matches(b"a*b*c", b"axxbyyc"));
        assert!(!glob_matches(b"a*b*c", b"axxbyy"));
        assert!(glob_matches(b"*", b""));
        assert!(glob_matches(b"[^x]y", b"zy"));
        assert!(!glob_matches(b"[^x]y", b"xy"));
        assert!(glob_matches(b"\\*", b"*"));
        assert!(!glob_matches(b"\\*", b"a"));
        assert!(check_glob("[a-").is_err() && check_glob("a\\").is_err());
    }
}
