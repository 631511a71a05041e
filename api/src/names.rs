//! The name and label syntaxes Kubernetes enforces (RFC 1123/1035 names, qualified label keys,
//! label values, IANA service port names, ConfigMap keys, environment variable names).
//!
//! Each check returns `Err(explanation)` in words a user can act on, so the validator can put
//! it straight after the field path.

/// A lowercase RFC 1123 label: Namespace names, container names, volume names.
pub fn dns1123_label(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 63 || !is_label_body(value, false) {
        return Err(format!(
            "{value:?} is not a valid name: use at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit (e.g. 'my-name')"
        ));
    }
    Ok(())
}

/// A lowercase RFC 1123 subdomain: the names of most objects.
pub fn dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty()
        || value.len() > 253
        || !value.split('.').all(|part| is_label_body(part, false))
    {
        return Err(format!(
            "{value:?} is not a valid name: use at most 253 characters of a-z, 0-9, '-' and '.', each dot-separated part starting and ending with a letter or digit (e.g. 'example.com')"
        ));
    }
    Ok(())
}

/// A lowercase RFC 1035 label: Service names (they become DNS names, so they start with a letter).
pub fn dns1035_label(value: &str) -> Result<(), String> {
    let starts_with_letter = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    if value.len() > 63 || !starts_with_letter || !is_label_body(value, false) {
        return Err(format!(
            "{value:?} is not a valid name: use at most 63 characters of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit (e.g. 'my-name')"
        ));
    }
    Ok(())
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (or with upper case allowed).
fn is_label_body(part: &str, upper: bool) -> bool {
    let ok =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || (upper && b.is_ascii_uppercase());
    let bytes = part.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            ok(first) && ok(last) && bytes.iter().all(|&b| ok(b) || b == b'-')
        }
        _ => false,
    }
}

/// An IANA service name: named container and service ports.
pub fn iana_svc_name(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 15
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.iter().any(|b| b.is_ascii_lowercase())
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid port name: use at most 15 characters of a-z, 0-9 and '-', with at least one letter and no leading, trailing or double '-' (e.g. 'http')"
        ))
    }
}

/// The name part of a qualified name: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63.
fn is_qualified_name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 63
                && alnum(first)
                && alnum(last)
                && bytes
                    .iter()
                    .all(|&b| alnum(b) || b == b'-' || b == b'_' || b == b'.')
        }
        _ => false,
    }
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name.
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && dns1123_subdomain(prefix).is_err()
    {
        return Err(format!(
            "{key:?} is not a valid key: the prefix before '/' must be a lowercase DNS subdomain (e.g. 'example.com/my-key')"
        ));
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "{key:?} is not a valid key: the name must be at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/' (e.g. 'app.kubernetes.io/name')"
        ));
    }
    Ok(())
}

/// A label value: empty, or a qualified name part.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid label value: use at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit, or leave it empty"
        ))
    }
}

/// A key of ConfigMap or Secret data (it becomes a file name when mounted).
pub fn config_map_key(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && key != "."
        && key != ".."
        && !key.starts_with("..");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a valid key: use at most 253 characters of letters, digits, '-', '_' and '.', not starting with '..'"
        ))
    }
}

/// An environment variable name: printable ASCII without '=' (Kubernetes' relaxed rule).
pub fn env_var_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid environment variable name: use printable ASCII characters other than '='"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        assert!(dns1123_label("web-1").is_ok());
        assert!(dns1123_label("Web").is_err());
        assert!(dns1123_label("-web").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("web.example-1.com").is_ok());
        assert!(dns1123_subdomain("web..com").is_err());
        assert!(dns1123_subdomain("web_1").is_err());
        assert!(dns1035_label("web").is_ok());
        assert!(dns1035_label("1web").is_err());
        assert!(iana_svc_name("http").is_ok());
        assert!(iana_svc_name("8080").is_err());
        assert!(iana_svc_name("http--alt").is_err());
        assert!(iana_svc_name("a-very-long-port-name").is_err());
    }

    #[test]
    fn labels_follow_kubernetes_rules() {
        assert!(qualified_name("app").is_ok());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("Example.com/name").is_err());
        assert!(qualified_name("a/b/c").is_err());
        assert!(qualified_name("").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_beta-3").is_ok());
        assert!(label_value("has space").is_err());
        assert!(label_value(&"x".repeat(64)).is_err());
        assert!(config_map_key("index.html").is_ok());
        assert!(config_map_key("..data").is_err());
        assert!(config_map_key("a/b").is_err());
        assert!(env_var_name("MY_VAR").is_ok());
        assert!(env_var_name("A=B").is_err());
        assert!(env_var_name("").is_err());
    }
}
