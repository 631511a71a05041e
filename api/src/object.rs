//! The kinds shipshape understands and one [`Object`] type over all of them.
//!
//! The structs are `k8s-openapi`'s, so manifests and API responses are Kubernetes' own JSON.
//! [`Object`] adds what the rest of the system needs from any kind: its [`ObjectKey`], labels,
//! owner references, the order in which a sync applies it, and a stable serialisation (struct
//! fields in a fixed order, maps sorted) that is safe to hash and store.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::Resource;
use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, networking::v1 as networking, policy::v1 as policy,
    storage::v1 as storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

use crate::path::{FieldPath, Segment};

/// How an object's `metadata.name` must be spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain (most kinds).
    Subdomain,
    /// A DNS-1123 label (Namespaces).
    Label,
    /// A DNS-1035 label (Services, whose names become DNS labels starting with a letter).
    ServiceName,
}

/// Static facts about a kind.
#[derive(Debug)]
pub struct KindInfo {
    /// `Deployment`.
    pub kind: &'static str,
    /// `apps` (empty for the core group).
    pub group: &'static str,
    /// `v1`.
    pub version: &'static str,
    /// `apps/v1`.
    pub api_version: &'static str,
    /// The lower-case plural used in API paths: `deployments`.
    pub plural: &'static str,
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
    /// Whether a Git repository may declare this kind; the cluster writes the others itself.
    pub from_git: bool,
    /// When a sync applies objects of this kind: lower first (Namespaces before what they
    /// hold, configuration before the workloads that read it).
    pub apply_rank: u8,
    /// How names of this kind are spelled.
    pub name_rule: NameRule,
}

trait ScopeIsNamespaced {
    const NAMESPACED: bool;
}
impl ScopeIsNamespaced for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl ScopeIsNamespaced for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

macro_rules! supported_kinds {
    ($( $variant:ident => $ty:ty, rank $rank:expr, git $git:expr, name $rule:ident; )*) => {
        /// Every kind shipshape understands, in a fixed order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $(
                #[doc = concat!("`", stringify!($variant), "`")]
                $variant,
            )*
        }

        /// An object of any supported kind.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Object {
            $(
                #[doc = concat!("A `", stringify!($variant), "`.")]
                $variant(Box<$ty>),
            )*
        }

        impl Kind {
            /// All supported kinds.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            /// Static facts about this kind.
            pub fn info(self) -> &'static KindInfo {
                match self {
                    $(Kind::$variant => {
                        const INFO: KindInfo = KindInfo {
                            kind: <$ty as Resource>::KIND,
                            group: <$ty as Resource>::GROUP,
                            version: <$ty as Resource>::VERSION,
                            api_version: <$ty as Resource>::API_VERSION,
                            plural: <$ty as Resource>::URL_PATH_SEGMENT,
                            namespaced: <<$ty as Resource>::Scope as ScopeIsNamespaced>::NAMESPACED,
                            from_git: $git,
                            apply_rank: $rank,
                            name_rule: NameRule::$rule,
                        };
                        &INFO
                    })*
                }
            }
        }

        impl Object {
            /// This object's kind.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Object::$variant(_) => Kind::$variant,)*
                }
            }

            /// The object's metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Object::$variant(o) => &o.metadata,)*
                }
            }

            /// The object's metadata, for defaulting and for stamping provenance.
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Object::$variant(o) => &mut o.metadata,)*
                }
            }

            /// Kubernetes' OpenAPI schema of this object's kind, with its definitions.
            pub(crate) fn root_schema(kind: Kind) -> serde_json::Value {
                match kind {
                    $(Kind::$variant => schemars::SchemaGenerator::default()
                        .into_root_schema_for::<$ty>()
                        .to_value(),)*
                }
            }

            fn decode(kind: Kind, value: serde_json::Value) -> Result<Self, DecodeError> {
                match kind {
                    $(Kind::$variant => serde_path_to_error::deserialize::<_, $ty>(value)
                        .map(|o| Object::$variant(Box::new(o)))
                        .map_err(DecodeError::from_serde),)*
                }
            }
        }

        impl Serialize for Object {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Object::$variant(o) => o.serialize(serializer),)*
                }
            }
        }
    };
}

supported_kinds! {
    Namespace => core::Namespace, rank 0, git true, name Label;
    StorageClass => storage::StorageClass, rank 1, git true, name Subdomain;
    PersistentVolume => core::PersistentVolume, rank 1, git true, name Subdomain;
    IngressClass => networking::IngressClass, rank 1, git true, name Subdomain;
    ServiceAccount => core::ServiceAccount, rank 2, git true, name Subdomain;
    ConfigMap => core::ConfigMap, rank 2, git true, name Subdomain;
    Secret => core::Secret, rank 2, git true, name Subdomain;
    LimitRange => core::LimitRange, rank 2, git true, name Subdomain;
    ResourceQuota => core::ResourceQuota, rank 2, git true, name Subdomain;
    PersistentVolumeClaim => core::PersistentVolumeClaim, rank 2, git true, name Subdomain;
    Service => core::Service, rank 3, git true, name ServiceName;
    Endpoints => core::Endpoints, rank 3, git true, name Subdomain;
    EndpointSlice => discovery::EndpointSlice, rank 3, git true, name Subdomain;
    Pod => core::Pod, rank 4, git true, name Subdomain;
    ReplicaSet => apps::ReplicaSet, rank 4, git true, name Subdomain;
    Deployment => apps::Deployment, rank 4, git true, name Subdomain;
    StatefulSet => apps::StatefulSet, rank 4, git true, name Subdomain;
    DaemonSet => apps::DaemonSet, rank 4, git true, name Subdomain;
    Job => batch::Job, rank 4, git true, name Subdomain;
    CronJob => batch::CronJob, rank 4, git true, name Subdomain;
    Ingress => networking::Ingress, rank 5, git true, name Subdomain;
    NetworkPolicy => networking::NetworkPolicy, rank 5, git true, name Subdomain;
    HorizontalPodAutoscaler => autoscaling::HorizontalPodAutoscaler, rank 5, git true, name Subdomain;
    PodDisruptionBudget => policy::PodDisruptionBudget, rank 5, git true, name Subdomain;
    Node => core::Node, rank 6, git false, name Subdomain;
    Lease => coordination::Lease, rank 6, git false, name Subdomain;
    Event => core::Event, rank 6, git false, name Subdomain;
    EventsEvent => events::Event, rank 6, git false, name Subdomain;
}

impl Kind {
    /// kubectl's short names for this kind (`deploy`, `svc`, `cm`, …).
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["po"],
            Kind::Deployment => &["deploy"],
            Kind::ReplicaSet => &["rs"],
            Kind::StatefulSet => &["sts"],
            Kind::DaemonSet => &["ds"],
            Kind::CronJob => &["cj"],
            Kind::Service => &["svc"],
            Kind::Endpoints => &["ep"],
            Kind::ConfigMap => &["cm"],
            Kind::Namespace => &["ns"],
            Kind::ServiceAccount => &["sa"],
            Kind::PersistentVolumeClaim => &["pvc"],
            Kind::PersistentVolume => &["pv"],
            Kind::StorageClass => &["sc"],
            Kind::Ingress => &["ing"],
            Kind::NetworkPolicy => &["netpol"],
            Kind::HorizontalPodAutoscaler => &["hpa"],
            Kind::PodDisruptionBudget => &["pdb"],
            Kind::Node => &["no"],
            Kind::Event => &["ev"],
            Kind::LimitRange => &["limits"],
            Kind::ResourceQuota => &["quota"],
            _ => &[],
        }
    }

    /// The kind a user typed: its name, plural, singular or short name, any case.
    pub fn from_user(text: &str) -> Option<Kind> {
        let lower = text.to_ascii_lowercase();
        Kind::ALL
            .iter()
            .copied()
            .find(|kind| kind.short_names().contains(&lower.as_str()))
            .or_else(|| Kind::by_name(&lower))
    }
}

/// What a lookup by `apiVersion` and `kind` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindLookup {
    /// A supported kind.
    Found(Kind),
    /// The kind is known but not at this apiVersion; the supported one is given.
    WrongVersion(Kind),
    /// No supported kind has this name.
    Unknown,
}

impl Kind {
    /// Finds the kind a manifest's `apiVersion` and `kind` name.
    pub fn lookup(api_version: &str, kind: &str) -> KindLookup {
        let mut same_name = None;
        for candidate in Kind::ALL {
            let info = candidate.info();
            if info.kind == kind {
                if info.api_version == api_version {
                    return KindLookup::Found(*candidate);
                }
                let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
                if same_name.is_none() || info.group == group {
                    same_name = Some(*candidate);
                }
            }
        }
        same_name.map_or(KindLookup::Unknown, KindLookup::WrongVersion)
    }

    /// Finds a kind by its name as users type it: `Deployment`, `deployments`, `deployment`,
    /// `deploy`-style short names are left to the CLI; `Event.events.k8s.io` picks the group.
    pub fn by_name(name: &str) -> Option<Kind> {
        let (name, group) = match name.split_once('.') {
            Some((name, group)) => (name, Some(group)),
            None => (name, None),
        };
        Kind::ALL.iter().copied().find(|kind| {
            let info = kind.info();
            let name_matches = info.kind.eq_ignore_ascii_case(name) || info.plural == name;
            let group_matches = match group {
                Some(group) => info.group == group,
                // Unqualified, the core group wins (as kubectl resolves `events`).
                None => {
                    info.group.is_empty()
                        || !Kind::ALL.iter().any(|other| {
                            other != kind
                                && other.info().kind == info.kind
                                && other.info().group.is_empty()
                        })
                }
            };
            name_matches && group_matches
        })
    }
}

impl Kind {
    /// The kind whose [`Display`](fmt::Display) form is `name` (`Pod`, `Event.events.k8s.io`):
    /// how storage keys name kinds. A table lookup, for the control plane reads the kind of
    /// every watch event several times over.
    pub fn by_display_name(name: &str) -> Option<Kind> {
        static TABLE: std::sync::LazyLock<std::collections::HashMap<String, Kind>> =
            std::sync::LazyLock::new(|| Kind::ALL.iter().map(|k| (k.to_string(), *k)).collect());
        TABLE.get(name).copied()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.info();
        let ambiguous = Kind::ALL
            .iter()
            .any(|other| other != self && other.info().kind == info.kind);
        if ambiguous && !info.group.is_empty() {
            write!(f, "{}.{}", info.kind, info.group)
        } else {
            f.write_str(info.kind)
        }
    }
}

/// The identity of an object in the cluster: kind, namespace (empty when cluster-scoped), name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace, or empty for cluster-scoped kinds.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why JSON could not be decoded into a supported object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// The field at fault (the root when the object as a whole is at fault).
    pub path: FieldPath,
    /// What is wrong, in a user's words.
    pub message: String,
}

impl DecodeError {
    fn at_root(message: impl Into<String>) -> Self {
        Self {
            path: FieldPath::root(),
            message: message.into(),
        }
    }

    fn from_serde(error: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let mut segments: Vec<Segment> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Segment::Field(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => {
                    Some(Segment::Field(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = error.inner().to_string();
        let message = if let Some(field) = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            segments.push(Segment::Field(field.to_string()));
            "required field is missing".to_string()
        } else if let Some(rest) = inner.strip_prefix("invalid type: ") {
            match rest.split_once(", expected ") {
                // YAML reads yes/no/on/off and bare numbers as non-strings, as Kubernetes does.
                Some((found, expected))
                    if expected.contains("string")
                        && !found.starts_with("map")
                        && !found.starts_with("sequence") =>
                {
                    format!("must be {expected}, not {found} (quote the value to keep it text)")
                }
                Some((found, expected)) => format!("must be {expected}, not {found}"),
                None => inner,
            }
        } else {
            inner
        };
        Self {
            path: FieldPath::from(segments),
            message,
        }
    }
}

impl Object {
    /// Decodes an object from its JSON form, choosing the kind from `apiVersion` and `kind`.
    /// Unknown fields are ignored here; [`unknown_fields`] finds them.
    pub fn from_json(value: serde_json::Value) -> Result<Self, DecodeError> {
        let text = |field: &str| value.get(field).and_then(serde_json::Value::as_str);
        let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
            return Err(DecodeError::at_root("apiVersion and kind are required"));
        };
        match Kind::lookup(api_version, kind) {
            KindLookup::Found(kind) => Self::decode(kind, value),
            KindLookup::WrongVersion(known) => Err(DecodeError {
                path: FieldPath::parse("apiVersion"),
                message: format!(
                    "{kind} is not supported at {api_version}: use {}",
                    known.info().api_version
                ),
            }),
            KindLookup::Unknown => Err(DecodeError {
                path: FieldPath::parse("kind"),
                message: format!("unsupported kind {kind} ({api_version})"),
            }),
        }
    }

    /// Decodes as the API server does with strict field validation. A wrong type is fatal
    /// (`Err`); unknown fields and missing required fields are returned beside the object, so
    /// a user sees every such problem at once.
    pub fn decode_strict(
        value: serde_json::Value,
    ) -> Result<(Self, Vec<DecodeError>), DecodeError> {
        let object = Self::from_json(value.clone())?;
        let mut problems: Vec<DecodeError> = unknown_fields(&value, &object.to_json())
            .into_iter()
            .map(|path| DecodeError {
                path,
                message: "unknown field".to_string(),
            })
            .collect();
        problems.extend(
            crate::schema::missing_required(object.kind(), &value)
                .into_iter()
                .map(|path| DecodeError {
                    path,
                    message: "required field is missing".to_string(),
                }),
        );
        Ok((object, problems))
    }

    /// The object's JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        // Serialising plain data into a Value cannot fail: no map has non-string keys.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A byte-stable serialisation: equal objects give equal bytes, so it can be hashed and
    /// compared across processes and versions.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).unwrap_or_default()
    }

    /// The object's identity.
    pub fn key(&self) -> ObjectKey {
        let metadata = self.metadata();
        ObjectKey {
            kind: self.kind(),
            namespace: if self.kind().info().namespaced {
                metadata.namespace.clone().unwrap_or_default()
            } else {
                String::new()
            },
            name: metadata.name.clone().unwrap_or_default(),
        }
    }

    /// The object's labels (empty when it has none).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.metadata().labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// The object's owner references (empty when it has none).
    pub fn owner_references(&self) -> &[OwnerReference] {
        self.metadata().owner_references.as_deref().unwrap_or(&[])
    }
}

/// The fields of `input` that decoding into `decoded` dropped: Kubernetes' strict field
/// validation. k8s-openapi ignores unknown fields, so the input is compared with the decoded
/// object's own JSON; a field present in the input but absent after the round trip is unknown.
/// Explicit `null`s are skipped (they mean "unset" for known fields too).
pub fn unknown_fields(input: &serde_json::Value, decoded: &serde_json::Value) -> Vec<FieldPath> {
    let mut found = Vec::new();
    walk_unknown(input, decoded, &FieldPath::root(), &mut found);
    found
}

fn walk_unknown(
    input: &serde_json::Value,
    decoded: &serde_json::Value,
    path: &FieldPath,
    found: &mut Vec<FieldPath>,
) {
    match (input, decoded) {
        (serde_json::Value::Object(input), serde_json::Value::Object(decoded)) => {
            for (key, value) in input {
                match decoded.get(key) {
                    Some(kept) => walk_unknown(value, kept, &path.field(key), found),
                    None if value.is_null() => {}
                    None => found.push(path.field(key)),
                }
            }
        }
        (serde_json::Value::Array(input), serde_json::Value::Array(decoded)) => {
            for (i, (value, kept)) in input.iter().zip(decoded).enumerate() {
                walk_unknown(value, kept, &path.index(i), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kind_is_found_by_the_name_it_prints_as() {
        for kind in Kind::ALL {
            assert_eq!(Kind::by_display_name(&kind.to_string()), Some(*kind));
        }
        assert_eq!(Kind::by_display_name("pods"), None);
        assert_eq!(Kind::by_display_name("Nope"), None);
    }

    #[test]
    fn every_kind_has_consistent_facts() {
        for kind in Kind::ALL {
            let info = kind.info();
            assert!(!info.plural.is_empty(), "{kind:?}");
            assert_eq!(
                Kind::lookup(info.api_version, info.kind),
                KindLookup::Found(*kind),
                "{kind:?}"
            );
        }
        assert!(Kind::Deployment.info().namespaced);
        assert!(!Kind::Namespace.info().namespaced);
        assert_eq!(Kind::EventsEvent.to_string(), "Event.events.k8s.io");
        assert_eq!(Kind::Event.to_string(), "Event");
        assert_eq!(Kind::by_name("deployments"), Some(Kind::Deployment));
        assert_eq!(Kind::by_name("Event"), Some(Kind::Event));
        assert_eq!(
            Kind::by_name("events.events.k8s.io"),
            Some(Kind::EventsEvent)
        );
    }

    #[test]
    fn lookup_explains_wrong_versions() {
        assert_eq!(
            Kind::lookup("extensions/v1beta1", "Deployment"),
            KindLookup::WrongVersion(Kind::Deployment)
        );
        assert_eq!(
            Kind::lookup("example.com/v1", "Widget"),
            KindLookup::Unknown
        );
        assert_eq!(
            Kind::lookup("events.k8s.io/v1beta1", "Event"),
            KindLookup::WrongVersion(Kind::EventsEvent)
        );
    }

    #[test]
    fn decoding_names_the_failing_field() {
        let error = Object::from_json(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": "two", "selector": {}, "template": {}}
        }))
        .expect_err("replicas as a word");
        assert_eq!(error.path.to_string(), "spec.replicas");
        assert!(
            error.message.starts_with("must be i32"),
            "{}",
            error.message
        );

        let error = Object::from_json(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"v": 1}}
        }))
        .expect_err("number as a label value");
        assert_eq!(error.path.to_string(), "metadata.labels.v");
        assert!(
            error.message.starts_with("must be a string"),
            "{}",
            error.message
        );
    }

    #[test]
    fn finds_unknown_fields_after_a_round_trip() {
        let input = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "x", "imagePolicy": "Always"}], "nodeSelektor": {}}
        });
        let object = Object::from_json(input.clone()).expect("decodes");
        let unknown: Vec<String> = unknown_fields(&input, &object.to_json())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            unknown,
            vec!["spec.containers[0].imagePolicy", "spec.nodeSelektor"]
        );
    }

    #[test]
    fn strict_decoding_reports_missing_required_fields() {
        let (object, problems) = Object::decode_strict(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"image": "x", "ports": [{"name": "http"}]}]}}}
        }))
        .expect("decodes");
        assert_eq!(object.kind(), Kind::Deployment);
        let paths: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
        assert_eq!(
            paths,
            vec![
                "spec.selector",
                "spec.template.spec.containers[0].name",
                "spec.template.spec.containers[0].ports[0].containerPort",
            ]
        );
    }

    #[test]
    fn canonical_json_is_independent_of_input_order() {
        let a = Object::from_json(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"b": "2", "a": "1"}}, "data": {"y": "1", "x": "2"}}))
        .expect("decodes");
        let b = Object::from_json(json!({"kind": "ConfigMap", "data": {"x": "2", "y": "1"},
            "metadata": {"labels": {"a": "1", "b": "2"}, "name": "c"}, "apiVersion": "v1"}))
        .expect("decodes");
        assert_eq!(a.to_canonical_json(), b.to_canonical_json());
        assert_eq!(a.key().to_string(), "ConfigMap c");
    }
}
