//! JSON pointers (`/metadata/labels`) read without allocating.
//!
//! serde_json's `Value::pointer` unescapes every token into a new `String`. Controllers read a
//! handful of pointers per watch event, hundreds of thousands of events a second at scale, and
//! those allocations were a visible share of the control plane's CPU. Pointers with escapes
//! (`~0`, `~1`) are rare and still go through serde_json.

use serde_json::Value;

/// Reads a JSON pointer (RFC 6901), as `Value::pointer` does.
pub trait At {
    /// The value at `pointer`, if there is one.
    fn at(&self, pointer: &str) -> Option<&Value>;
}

impl At for Value {
    fn at(&self, pointer: &str) -> Option<&Value> {
        if pointer.is_empty() {
            return Some(self);
        }
        if pointer.contains('~') {
            return self.pointer(pointer);
        }
        pointer
            .strip_prefix('/')?
            .split('/')
            .try_fold(self, |value, token| match value {
                Value::Object(map) => map.get(token),
                Value::Array(list) => index(token).and_then(|i| list.get(i)),
                _ => None,
            })
    }
}

/// A list index as RFC 6901 writes it: digits, no sign, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_serde_json_reads() {
        let doc = json!({
            "metadata": {"labels": {"app": "web", "a/b": "slash", "m~n": "tilde"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "": {"empty": 1},
            "n": null,
        });
        for pointer in [
            "",
            "/",
            "/metadata",
            "/metadata/labels/app",
            "/metadata/labels/a~1b",
            "/metadata/labels/m~0n",
            "/spec/containers/1/name",
            "/spec/containers/01/name",
            "/spec/containers/+1/name",
            "/spec/containers/2",
            "/spec/containers/x",
            "//empty",
            "/n",
            "/n/x",
            "metadata",
            "/missing/deeper",
        ] {
            assert_eq!(doc.at(pointer), doc.pointer(pointer), "{pointer}");
        }
    }
}
