//! Container image references (`nginx:1.27`, `ghcr.io/org/app@sha256:…`) parsed by the grammar
//! Docker and containerd share, and normalised as they normalise them: `nginx` is
//! `docker.io/library/nginx:latest`. `validate` refuses what this refuses, so a pod never waits
//! on a name no registry could serve.

use std::fmt;

/// An image reference, normalised.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// The registry (`docker.io`, `ghcr.io`, `localhost:5000`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository within it (`library/nginx`, `org/app`).
    pub repository: String,
    /// The tag, if the reference names one (`latest` when it names neither tag nor digest).
    pub tag: Option<String>,
    /// The digest (`sha256:` and 64 hex digits), if the reference pins one.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not an image reference: {reason}")]
pub struct ImageRefError {
    /// The string as given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Docker's limit on the length of a name (registry and repository).
const NAME_LIMIT: usize = 255;

/// Docker's limit on a tag's length.
const TAG_LIMIT: usize = 128;

impl ImageRef {
    /// Parses `reference` and normalises it.
    pub fn parse(reference: &str) -> Result<Self, ImageRefError> {
        let fail = |reason: &str| ImageRefError {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        if reference.is_empty() {
            return Err(fail("it is empty"));
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(fail("it contains whitespace"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(parse_digest(digest).map_err(|r| fail(&r))?)),
            None => (reference, None),
        };
        // A tag follows the last colon after the last slash (a colon before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            check_tag(tag).map_err(|r| fail(&r))?;
        }
        if name.is_empty() {
            return Err(fail("it has no repository name"));
        }
        if name.len() > NAME_LIMIT {
            return Err(fail("the name is longer than 255 characters"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry(first) => (first.to_string(), path.to_string()),
            _ => ("docker.io".to_string(), name.to_string()),
        };
        check_registry(&registry).map_err(|r| fail(&r))?;
        check_path(&path).map_err(|r| fail(&r))?;
        // Docker Hub's official images live under `library/`.
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Whether Kubernetes defaults `imagePullPolicy` to `Always` for this reference: it names
    /// no tag, or `:latest`, and no digest.
    pub fn pulls_always_by_default(&self) -> bool {
        self.digest.is_none() && self.tag.as_deref().is_none_or(|t| t == "latest")
    }

    /// `registry/repository`, the name an image's digest is reported under
    /// (`docker.io/library/nginx@sha256:…`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether the first part of a name is a registry: it has a dot or a port, is `localhost`, or
/// has capitals (which a repository may not), as Docker decides.
fn is_registry(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry {registry:?} has an unclosed ["))?;
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry {registry:?} is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("registry {registry:?} has text after ]")),
            },
        }
    } else {
        match registry.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5)
    {
        return Err(format!("registry {registry:?} has an invalid port"));
    }
    if let Some(host) = host {
        let component = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !host.split('.').all(component) {
            return Err(format!("registry {registry:?} is not a host name"));
        }
    }
    Ok(())
}

/// Repository path components: lower-case letters and digits, separated by `.`, `_`, `__` or
/// dashes, joined by `/`.
fn check_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("the repository has an empty path component".into());
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "repository component {component:?} must be lower case"
            ));
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid_chars = bytes
            .iter()
            .all(|&b| alnum(b) || b == b'.' || b == b'_' || b == b'-');
        let ends =
            bytes.first().is_some_and(|&b| alnum(b)) && bytes.last().is_some_and(|&b| alnum(b));
        // Separators: `.` or `_` alone, `__`, or any run of dashes.
        let mut separators_ok = true;
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let run = &component[start..i];
            let ok = run == "." || run == "_" || run == "__" || run.bytes().all(|b| b == b'-');
            separators_ok &= ok;
        }
        if !valid_chars || !ends || !separators_ok {
            return Err(format!(
                "repository component {component:?} must be lower-case letters and digits separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let first_ok = chars.next().is_some_and(word);
    let rest_ok = chars.all(|c| word(c) || c == '.' || c == '-');
    if !first_ok || !rest_ok || tag.len() > TAG_LIMIT {
        return Err(format!(
            "tag {tag:?} must be up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

fn parse_digest(digest: &str) -> Result<String, String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest {digest:?} must be ALGORITHM:HEX (sha256:…)"
        ));
    };
    let expected = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "digest algorithm {algorithm:?} is not sha256 or sha512"
            ));
        }
    };
    if hex.len() != expected
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest {digest:?} must have {expected} lower-case hex digits after {algorithm}:"
        ));
    }
    Ok(digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(reference: &str) -> String {
        match ImageRef::parse(reference) {
            Ok(r) => r.to_string(),
            Err(e) => panic!("{e}"),
        }
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_as_containerd_does() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.35"), "docker.io/library/busybox:1.35");
        assert_eq!(n("me/app"), "docker.io/me/app:latest");
        assert_eq!(n("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(n("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("127.0.0.1:5000/a/b:2"), "127.0.0.1:5000/a/b:2");
        assert_eq!(n("registry.example/a/b:2"), "registry.example/a/b:2");
        assert_eq!(n("[::1]:5000/app:1"), "[::1]:5000/app:1");
        assert_eq!(
            n(&format!("ghcr.io/org/app@{DIGEST}")),
            format!("ghcr.io/org/app@{DIGEST}")
        );
        assert_eq!(
            n(&format!("nginx:1.27@{DIGEST}")),
            format!("docker.io/library/nginx:1.27@{DIGEST}")
        );
        assert_eq!(
            n("org/a__b.c-d---e_f:v1.0-rc_1"),
            "docker.io/org/a__b.c-d---e_f:v1.0-rc_1"
        );
    }

    #[test]
    fn refuses_what_no_registry_could_serve() {
        for bad in [
            "",
            "Busybox",
            "busy box",
            "busybox:",
            "busybox:-x",
            "busybox:.x",
            "-app",
            "app-",
            "a..b",
            "a___b",
            "org//app",
            "ghcr.io/",
            "host:port/app",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            &format!("busybox:{}", "x".repeat(129)),
            &"a".repeat(256),
            &format!(
                "busybox@{}",
                DIGEST.to_uppercase().replace("SHA256", "sha256")
            ),
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let error = ImageRef::parse("Busybox").expect_err("capitals");
        assert!(error.to_string().contains("must be lower case"), "{error}");
    }

    #[test]
    fn latest_or_no_tag_pulls_always_by_default() {
        let always = |r: &str| ImageRef::parse(r).map(|r| r.pulls_always_by_default());
        assert_eq!(always("nginx"), Ok(true));
        assert_eq!(always("nginx:latest"), Ok(true));
        assert_eq!(always("nginx:1.27"), Ok(false));
        assert_eq!(always(&format!("nginx@{DIGEST}")), Ok(false));
        assert_eq!(always(&format!("nginx:latest@{DIGEST}")), Ok(false));
    }
}
