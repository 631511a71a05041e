//! Required fields, from Kubernetes' own OpenAPI schema.
//!
//! k8s-openapi fills a missing required field with its default (an empty name, port 0), so
//! decoding alone cannot tell "absent" from "empty". The schema k8s-openapi generates (through
//! schemars) carries the API's `required` lists; walking the user's input against it finds
//! exactly the fields the API server would call "Required value".

use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::object::{Kind, Object};
use crate::path::FieldPath;

const KIND_COUNT: usize = Kind::ALL.len();
static SCHEMAS: [OnceLock<Value>; KIND_COUNT] = [const { OnceLock::new() }; KIND_COUNT];

fn schema(kind: Kind) -> &'static Value {
    SCHEMAS[kind as usize].get_or_init(|| Object::root_schema(kind))
}

/// The paths of required fields missing (or `null`) in `input`, an object of `kind`.
pub fn missing_required(kind: Kind, input: &Value) -> Vec<FieldPath> {
    let root = schema(kind);
    let empty = Map::new();
    let definitions = root
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut missing = Vec::new();
    walk(root, definitions, input, &FieldPath::root(), &mut missing);
    missing
}

/// Follows `$ref`s (a few hops at most: definitions refer to each other, not in cycles).
fn resolve<'a>(mut schema: &'a Value, definitions: &'a Map<String, Value>) -> &'a Value {
    for _ in 0..8 {
        let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
            .and_then(|name| definitions.get(name))
        else {
            break;
        };
        schema = target;
    }
    schema
}

fn walk(
    schema: &Value,
    definitions: &Map<String, Value>,
    input: &Value,
    path: &FieldPath,
    missing: &mut Vec<FieldPath>,
) {
    let schema = resolve(schema, definitions);
    match input {
        Value::Object(fields) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let required = schema.get("required").and_then(Value::as_array);
                for name in required.into_iter().flatten().filter_map(Value::as_str) {
                    if fields.get(name).is_none_or(Value::is_null) {
                        missing.push(path.field(name));
                    }
                }
                for (key, value) in fields {
                    if let Some(property) = properties.get(key) {
                        walk(property, definitions, value, &path.field(key), missing);
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|v| v.is_object())
            {
                for (key, value) in fields {
                    walk(values, definitions, value, &path.key(key), missing);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, value) in items.iter().enumerate() {
                    walk(item, definitions, value, &path.index(i), missing);
                }
            }
        }
        _ => {}
    }
}
