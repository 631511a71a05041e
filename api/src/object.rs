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
    ReplicationController => core::ReplicationController, rank 4, git true, name Subdomain;
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
            Kind::ReplicationController => &["rc"],
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
    /// A kind built into Kubernetes that shipshape does not serve, with the reason.
    NotServed(&'static UnservedKind),
    /// No kind shipshape knows of: a custom resource, RBAC, or a misspelling.
    Unknown,
}

/// A kind built into Kubernetes that shipshape does not serve. Users apply these with kubectl
/// every day, so "unsupported kind" alone would read as a bug; each says why, or what to use.
#[derive(Debug, PartialEq, Eq)]
pub struct UnservedKind {
    /// The API group (empty for the core group); any version of it matches.
    pub group: &'static str,
    /// `PodTemplate`.
    pub kind: &'static str,
    /// The rest of a sentence that starts with the kind: `is not supported by shipshape yet:
    /// use a Deployment`.
    pub why: &'static str,
}

impl UnservedKind {
    /// The sentence a user reads: `PodTemplate is not supported by shipshape yet: …`.
    pub fn message(&self) -> String {
        format!("{} {}", self.kind, self.why)
    }
}

const ADMISSION: &str = "is not supported: shipshape has no admission webhooks or policies";
const REVIEW: &str =
    "is not supported: it is a question put to the API server, not an object to keep in Git";
const CERTIFICATES: &str = "is not supported: shipshape has no certificate signing API";
const FLOW_CONTROL: &str = "is not supported: shipshape has no API priority and fairness";
const DEVICES: &str = "is not supported: shipshape has no dynamic resource allocation";
const CSI: &str =
    "is not supported: shipshape's storage is its built-in local-path provisioner, not CSI";
const SERVICE_ADDRESSES: &str =
    "is not supported: Service addresses come from shipshape's --service-cidr";

/// The kinds Kubernetes (1.34) builds in that shipshape does not serve. RBAC's kinds are left
/// out on purpose: with custom resources they get the general "not custom resources or RBAC".
static UNSERVED_KINDS: &[UnservedKind] = &[
    UnservedKind {
        group: "",
        kind: "PodTemplate",
        why: "is not supported by shipshape yet: put the pod template in a Deployment, StatefulSet, DaemonSet or Job",
    },
    UnservedKind {
        group: "",
        kind: "Binding",
        why: "is not supported: the scheduler binds pods; use spec.nodeName or a nodeSelector",
    },
    UnservedKind {
        group: "",
        kind: "ComponentStatus",
        why: "is not supported: it reports the control plane's health and cannot be declared",
    },
    UnservedKind {
        group: "apps",
        kind: "ControllerRevision",
        why: "is not supported: controllers record their own revisions, not Git",
    },
    UnservedKind {
        group: "apiregistration.k8s.io",
        kind: "APIService",
        why: "is not supported: shipshape has no aggregated APIs",
    },
    UnservedKind {
        group: "apiextensions.k8s.io",
        kind: "CustomResourceDefinition",
        why: "is not supported: shipshape serves no custom resources",
    },
    UnservedKind {
        group: "admissionregistration.k8s.io",
        kind: "MutatingWebhookConfiguration",
        why: ADMISSION,
    },
    UnservedKind {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingWebhookConfiguration",
        why: ADMISSION,
    },
    UnservedKind {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingAdmissionPolicy",
        why: ADMISSION,
    },
    UnservedKind {
        group: "admissionregistration.k8s.io",
        kind: "ValidatingAdmissionPolicyBinding",
        why: ADMISSION,
    },
    UnservedKind {
        group: "admissionregistration.k8s.io",
        kind: "MutatingAdmissionPolicy",
        why: ADMISSION,
    },
    UnservedKind {
        group: "admissionregistration.k8s.io",
        kind: "MutatingAdmissionPolicyBinding",
        why: ADMISSION,
    },
    UnservedKind {
        group: "authentication.k8s.io",
        kind: "TokenReview",
        why: REVIEW,
    },
    UnservedKind {
        group: "authentication.k8s.io",
        kind: "SelfSubjectReview",
        why: REVIEW,
    },
    UnservedKind {
        group: "authentication.k8s.io",
        kind: "TokenRequest",
        why: REVIEW,
    },
    UnservedKind {
        group: "authorization.k8s.io",
        kind: "SubjectAccessReview",
        why: REVIEW,
    },
    UnservedKind {
        group: "authorization.k8s.io",
        kind: "LocalSubjectAccessReview",
        why: REVIEW,
    },
    UnservedKind {
        group: "authorization.k8s.io",
        kind: "SelfSubjectAccessReview",
        why: REVIEW,
    },
    UnservedKind {
        group: "authorization.k8s.io",
        kind: "SelfSubjectRulesReview",
        why: REVIEW,
    },
    UnservedKind {
        group: "certificates.k8s.io",
        kind: "CertificateSigningRequest",
        why: CERTIFICATES,
    },
    UnservedKind {
        group: "certificates.k8s.io",
        kind: "ClusterTrustBundle",
        why: CERTIFICATES,
    },
    UnservedKind {
        group: "certificates.k8s.io",
        kind: "PodCertificateRequest",
        why: CERTIFICATES,
    },
    UnservedKind {
        group: "coordination.k8s.io",
        kind: "LeaseCandidate",
        why: "is not supported: the control plane writes these, not Git",
    },
    UnservedKind {
        group: "flowcontrol.apiserver.k8s.io",
        kind: "FlowSchema",
        why: FLOW_CONTROL,
    },
    UnservedKind {
        group: "flowcontrol.apiserver.k8s.io",
        kind: "PriorityLevelConfiguration",
        why: FLOW_CONTROL,
    },
    UnservedKind {
        group: "networking.k8s.io",
        kind: "IPAddress",
        why: SERVICE_ADDRESSES,
    },
    UnservedKind {
        group: "networking.k8s.io",
        kind: "ServiceCIDR",
        why: SERVICE_ADDRESSES,
    },
    UnservedKind {
        group: "node.k8s.io",
        kind: "RuntimeClass",
        why: "is not supported by shipshape yet",
    },
    UnservedKind {
        group: "policy",
        kind: "Eviction",
        why: "is not supported: it is a request to evict a pod (as kubectl drain makes), not an object to keep in Git",
    },
    UnservedKind {
        group: "policy",
        kind: "PodSecurityPolicy",
        why: "is not supported: Kubernetes removed it in 1.25",
    },
    UnservedKind {
        group: "resource.k8s.io",
        kind: "DeviceClass",
        why: DEVICES,
    },
    UnservedKind {
        group: "resource.k8s.io",
        kind: "ResourceClaim",
        why: DEVICES,
    },
    UnservedKind {
        group: "resource.k8s.io",
        kind: "ResourceClaimTemplate",
        why: DEVICES,
    },
    UnservedKind {
        group: "resource.k8s.io",
        kind: "ResourceSlice",
        why: DEVICES,
    },
    UnservedKind {
        group: "resource.k8s.io",
        kind: "DeviceTaintRule",
        why: DEVICES,
    },
    UnservedKind {
        group: "scheduling.k8s.io",
        kind: "PriorityClass",
        why: "is not supported by shipshape yet",
    },
    UnservedKind {
        group: "storage.k8s.io",
        kind: "CSIDriver",
        why: CSI,
    },
    UnservedKind {
        group: "storage.k8s.io",
        kind: "CSINode",
        why: CSI,
    },
    UnservedKind {
        group: "storage.k8s.io",
        kind: "CSIStorageCapacity",
        why: CSI,
    },
    UnservedKind {
        group: "storage.k8s.io",
        kind: "VolumeAttachment",
        why: CSI,
    },
    UnservedKind {
        group: "storage.k8s.io",
        kind: "VolumeAttributesClass",
        why: CSI,
    },
    UnservedKind {
        group: "storagemigration.k8s.io",
        kind: "StorageVersionMigration",
        why: "is not supported: shipshape migrates its own storage",
    },
    UnservedKind {
        group: "internal.apiserver.k8s.io",
        kind: "StorageVersion",
        why: "is not supported: the API server writes these, not Git",
    },
];

impl Kind {
    /// Finds the kind a manifest's `apiVersion` and `kind` name.
    pub fn lookup(api_version: &str, kind: &str) -> KindLookup {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        let api_version = crate::versions::stored_version(api_version, kind).unwrap_or(api_version);
        let mut same_name = None;
        for candidate in Kind::ALL {
            let info = candidate.info();
            if info.kind == kind {
                if info.api_version == api_version {
                    return KindLookup::Found(*candidate);
                }
                if same_name.is_none() || info.group == group {
                    same_name = Some(*candidate);
                }
            }
        }
        if let Some(unserved) = UNSERVED_KINDS
            .iter()
            .find(|unserved| unserved.group == group && unserved.kind == kind)
        {
            return KindLookup::NotServed(unserved);
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

/// The message for a required field that the input leaves out (or sets to `null`), as decoding
/// reports it; the loader relies on it to report one missing field once.
pub const REQUIRED_FIELD_MISSING: &str = "required field is missing";

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
            REQUIRED_FIELD_MISSING.to_string()
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

impl DecodeError {
    /// Names what to do about a value of Secret `data` or ConfigMap `binaryData` that is not
    /// base64, the form Kubernetes keeps those maps in. The decoder's own words ("Invalid
    /// symbol 95, offset 7.") say neither that base64 was expected nor where plain text goes.
    fn explain_base64(self, kind: Kind) -> Self {
        let (map, plain) = match kind {
            Kind::Secret => ("data", "put plain text under stringData instead"),
            Kind::ConfigMap => ("binaryData", "put text under data instead"),
            _ => return self,
        };
        match self.path.segments() {
            [Segment::Field(field), Segment::Field(key)] if field == map => Self {
                path: FieldPath::parse(map).key(key),
                message: format!("must be base64-encoded ({plain})"),
            },
            _ => self,
        }
    }
}

impl Object {
    /// Decodes an object from its JSON form, choosing the kind from `apiVersion` and `kind`.
    /// Unknown fields are ignored here; [`unknown_fields`] finds them.
    pub fn from_json(value: serde_json::Value) -> Result<Self, DecodeError> {
        let value = crate::versions::to_stored_version(value);
        let text = |field: &str| value.get(field).and_then(serde_json::Value::as_str);
        let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
            return Err(DecodeError::at_root("apiVersion and kind are required"));
        };
        match Kind::lookup(api_version, kind) {
            KindLookup::Found(kind) => {
                Self::decode(kind, value).map_err(|error| error.explain_base64(kind))
            }
            KindLookup::WrongVersion(known) => Err(DecodeError {
                path: FieldPath::parse("apiVersion"),
                message: format!(
                    "{kind} is not supported at {api_version}: use {}",
                    known.info().api_version
                ),
            }),
            KindLookup::NotServed(unserved) => Err(DecodeError {
                path: FieldPath::parse("kind"),
                message: unserved.message(),
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
        let value = crate::versions::to_stored_version(value);
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
                    message: REQUIRED_FIELD_MISSING.to_string(),
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
    fn built_in_kinds_shipshape_does_not_serve_say_so_plainly() {
        let message = |api_version: &str, kind: &str| match Kind::lookup(api_version, kind) {
            KindLookup::NotServed(unserved) => unserved.message(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            message("v1", "PodTemplate"),
            "PodTemplate is not supported by shipshape yet: put the pod template in a Deployment, StatefulSet, DaemonSet or Job"
        );
        assert_eq!(
            message("apiregistration.k8s.io/v1", "APIService"),
            "APIService is not supported: shipshape has no aggregated APIs"
        );
        // RBAC and custom resources keep the general message; a kind by the same name in
        // another group is someone's custom resource.
        assert_eq!(
            Kind::lookup("rbac.authorization.k8s.io/v1", "Role"),
            KindLookup::Unknown
        );
        assert_eq!(
            Kind::lookup("example.com/v1", "APIService"),
            KindLookup::Unknown
        );
        for unserved in UNSERVED_KINDS {
            let api_version = match unserved.group {
                "" => "v1".to_string(),
                group => format!("{group}/v1"),
            };
            assert_eq!(
                Kind::lookup(&api_version, unserved.kind),
                KindLookup::NotServed(unserved)
            );
            assert!(Kind::by_name(unserved.kind).is_none(), "{unserved:?}");
        }
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
    fn data_that_is_not_base64_says_where_plain_text_goes() {
        let error = Object::from_json(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "data": {"user": "YWRtaW4=", "password": "hunter2_"}
        }))
        .expect_err("plain text under data");
        assert_eq!(
            error.to_string(),
            "data[password]: must be base64-encoded (put plain text under stringData instead)"
        );
        let error = Object::from_json(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "binaryData": {"logo.png": 42}
        }))
        .expect_err("a number under binaryData");
        assert_eq!(
            error.to_string(),
            "binaryData[logo.png]: must be base64-encoded (put text under data instead)"
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
