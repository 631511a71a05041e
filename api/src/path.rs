//! Field paths in Kubernetes' notation (`spec.template.spec.containers[0].image`).
//!
//! Every problem the validator reports names the field it is about, so a user can find it in
//! the manifest; the same path finds the field's line in the positioned YAML tree.

use std::fmt;

/// One step into an object: a struct field, a key of a map-typed field, or a list index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A field of a structured object (`spec`, `containers`).
    Field(String),
    /// A key of a free-form map such as labels or ConfigMap data, printed as `[key]`.
    Key(String),
    /// A position in a list, printed as `[3]`.
    Index(usize),
}

/// A path from an object's root to one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<Segment>);

/// The field a decoding error is at, as serde_path_to_error tracked it.
impl From<&serde_path_to_error::Path> for FieldPath {
    fn from(path: &serde_path_to_error::Path) -> Self {
        let mut field = FieldPath::root();
        for segment in path.iter() {
            field = match segment {
                serde_path_to_error::Segment::Seq { index } => field.index(*index),
                serde_path_to_error::Segment::Map { key } => field.field(key),
                _ => field,
            };
        }
        field
    }
}

impl FieldPath {
    /// The object itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a dotted path such as `spec.template.metadata`, for callers that name fixed fields.
    pub fn parse(dotted: &str) -> Self {
        let mut path = Self::root();
        for part in dotted.split('.').filter(|p| !p.is_empty()) {
            path.0.push(Segment::Field(part.to_string()));
        }
        path
    }

    /// This path extended by a struct field.
    pub fn field(&self, name: &str) -> Self {
        self.with(Segment::Field(name.to_string()))
    }

    /// This path extended by a map key.
    pub fn key(&self, key: &str) -> Self {
        self.with(Segment::Key(key.to_string()))
    }

    /// This path extended by a list index.
    pub fn index(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    /// This path extended by one segment.
    pub fn with(&self, segment: Segment) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        Self(segments)
    }

    /// The segments from the root down.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// True for the object's root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<Segment>> for FieldPath {
    fn from(segments: Vec<Segment>) -> Self {
        Self(segments)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 => write!(f, "{name}")?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Key(key) => write!(f, "[{key}]")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_kubernetes_notation() {
        let path = FieldPath::parse("spec.template")
            .field("containers")
            .index(0)
            .field("env")
            .index(2)
            .field("name");
        assert_eq!(path.to_string(), "spec.template.containers[0].env[2].name");
        let labels = FieldPath::parse("metadata.labels").key("app.kubernetes.io/name");
        assert_eq!(
            labels.to_string(),
            "metadata.labels[app.kubernetes.io/name]"
        );
        assert_eq!(FieldPath::root().to_string(), "");
    }
}
