//! Rules for `metadata`, common to every kind.

use crate::names;
use crate::object::{NameRule, Object};
use crate::path::FieldPath;

use super::Report;

/// Kubernetes' limit on the total size of an object's annotations.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

pub(super) fn object_meta(report: &mut Report, object: &Object) {
    let metadata = object.metadata();
    let info = object.kind().info();
    let name_path = FieldPath::parse("metadata.name");
    match metadata.name.as_deref() {
        Some(name) if !name.is_empty() => report.check(
            &name_path,
            match info.name_rule {
                NameRule::Subdomain => names::dns1123_subdomain(name),
                NameRule::Label => names::dns1123_label(name),
                NameRule::ServiceName => names::dns1035_label(name),
            },
        ),
        _ if metadata.generate_name.is_some() => report.push(
            name_path,
            "required field is missing: objects from Git need a fixed name (generateName is not supported)",
        ),
        _ => report.push(name_path, "required field is missing"),
    }
    if let Some(namespace) = metadata.namespace.as_deref() {
        report.check(
            &FieldPath::parse("metadata.namespace"),
            names::dns1123_label(namespace),
        );
    }
    report.labels(
        &FieldPath::parse("metadata.labels"),
        metadata.labels.as_ref(),
    );
    let annotations_path = FieldPath::parse("metadata.annotations");
    let mut total = 0;
    for (key, value) in metadata.annotations.iter().flatten() {
        report.check(&annotations_path.key(key), names::qualified_name(key));
        total += key.len() + value.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        report.push(
            annotations_path,
            format!("annotations total {total} bytes: the limit is {MAX_ANNOTATIONS_BYTES}"),
        );
    }
}
