//! Semantic validation: the rules Kubernetes' API server enforces on create, applied to a decoded
//! object before anything of it is stored.
//!
//! Decoding (in [`crate::object`]) already rejects wrong types, missing required fields and,
//! through [`crate::object::unknown_fields`], unknown fields. What is left here is what a
//! well-typed object can still get wrong: names, label syntax, ports, quantities, selectors that
//! do not select their own template, enum-like strings, and mutually exclusive fields. Each
//! problem names the exact field path, so the loader can point at the line.

mod meta;
mod other;
mod pod;
mod service;
mod workloads;
pub use service::{INGRESS_CLASS, INGRESS_CONTROLLER};
pub use workloads::parse_schedule;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names;
use crate::object::Object;
use crate::path::FieldPath;
use crate::quantity::Quantity;

/// One problem with one field of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field at fault.
    pub path: FieldPath,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl FieldProblem {
    /// A problem at `path`.
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

/// Every rule-level problem of `object` (empty when it is valid).
pub fn validate(object: &Object) -> Vec<FieldProblem> {
    let mut report = Report::default();
    meta::object_meta(&mut report, object);
    match object {
        Object::Pod(pod) => match &pod.spec {
            Some(spec) => pod::pod_spec(
                &mut report,
                &FieldPath::parse("spec"),
                spec,
                &pod::PodRules::pod(),
            ),
            None => report.push(FieldPath::parse("spec"), "required field is missing"),
        },
        Object::Deployment(d) => workloads::deployment(&mut report, d),
        Object::ReplicaSet(rs) => workloads::replica_set(&mut report, rs),
        Object::ReplicationController(rc) => workloads::replication_controller(&mut report, rc),
        Object::StatefulSet(ss) => workloads::stateful_set(&mut report, ss),
        Object::DaemonSet(ds) => workloads::daemon_set(&mut report, ds),
        Object::Job(job) => workloads::job(&mut report, job),
        Object::CronJob(cron_job) => workloads::cron_job(&mut report, cron_job),
        Object::Service(svc) => service::service(&mut report, svc),
        Object::Ingress(ingress) => service::ingress(&mut report, ingress),
        Object::IngressClass(class) => service::ingress_class(&mut report, class),
        Object::Endpoints(endpoints) => service::endpoints(&mut report, endpoints),
        Object::ConfigMap(cm) => other::config_map(&mut report, cm),
        Object::Secret(secret) => other::secret(&mut report, secret),
        Object::PersistentVolumeClaim(pvc) => match &pvc.spec {
            Some(spec) => other::claim_spec(&mut report, &FieldPath::parse("spec"), spec),
            None => report.push(FieldPath::parse("spec"), "required field is missing"),
        },
        Object::PersistentVolume(pv) => other::persistent_volume(&mut report, pv),
        Object::StorageClass(sc) => other::storage_class(&mut report, sc),
        Object::HorizontalPodAutoscaler(hpa) => other::autoscaler(&mut report, hpa),
        Object::PodDisruptionBudget(pdb) => other::disruption_budget(&mut report, pdb),
        Object::NetworkPolicy(np) => other::network_policy(&mut report, np),
        Object::ResourceQuota(quota) => {
            if let Some(spec) = &quota.spec {
                report.quantities(&FieldPath::parse("spec.hard"), spec.hard.as_ref());
            }
        }
        Object::LimitRange(range) => other::limit_range(&mut report, range),
        Object::Namespace(_)
        | Object::ServiceAccount(_)
        | Object::EndpointSlice(_)
        | Object::Node(_)
        | Object::Lease(_)
        | Object::Event(_)
        | Object::EventsEvent(_) => {}
    }
    report.problems
}

/// Collects problems; the helpers encode Kubernetes' recurring rules once.
#[derive(Default)]
pub(crate) struct Report {
    problems: Vec<FieldProblem>,
}

impl Report {
    pub(crate) fn push(&mut self, path: FieldPath, message: impl Into<String>) {
        self.problems.push(FieldProblem::new(path, message));
    }

    pub(crate) fn extend(&mut self, problems: Vec<FieldProblem>) {
        self.problems.extend(problems);
    }

    /// Reports a failed syntax check at `path`.
    pub(crate) fn check(&mut self, path: &FieldPath, result: Result<(), String>) {
        if let Err(why) = result {
            self.push(path.clone(), why);
        }
    }

    /// Reports `value` missing or empty; returns it when present.
    pub(crate) fn required<'a>(
        &mut self,
        path: &FieldPath,
        value: Option<&'a str>,
    ) -> Option<&'a str> {
        match value {
            Some(v) if !v.trim().is_empty() => Some(v),
            _ => {
                self.push(path.clone(), "required field is missing");
                None
            }
        }
    }

    /// A name that must be present and spelled by `rule`.
    pub(crate) fn name(
        &mut self,
        path: &FieldPath,
        value: &str,
        rule: fn(&str) -> Result<(), String>,
    ) {
        if value.is_empty() {
            self.push(path.clone(), "required field is missing");
        } else {
            self.check(path, rule(value));
        }
    }

    pub(crate) fn at_least(&mut self, path: &FieldPath, value: Option<i64>, min: i64) {
        if let Some(v) = value
            && v < min
        {
            self.push(
                path.clone(),
                format!("must be greater than or equal to {min} (got {v})"),
            );
        }
    }

    /// Reports a string outside the values Kubernetes accepts.
    pub(crate) fn one_of(&mut self, path: &FieldPath, value: Option<&str>, allowed: &[&str]) {
        if let Some(v) = value
            && !allowed.contains(&v)
        {
            self.push(
                path.clone(),
                format!("{v:?} is not supported: use {}", list_words(allowed)),
            );
        }
    }

    pub(crate) fn port(&mut self, path: &FieldPath, port: i32) {
        if !(1..=65535).contains(&port) {
            self.push(
                path.clone(),
                format!("{port} is not a valid port number: use 1 to 65535"),
            );
        }
    }

    /// A port given as a number or as the name of a container port.
    pub(crate) fn port_or_name(&mut self, path: &FieldPath, port: &IntOrString) {
        match port {
            IntOrString::Int(number) => self.port(path, *number),
            IntOrString::String(name) => self.check(path, names::iana_svc_name(name)),
        }
    }

    /// A count given as a number or a percentage (`25%`); returns whether it is zero.
    pub(crate) fn int_or_percent(
        &mut self,
        path: &FieldPath,
        value: &IntOrString,
        max_percent: Option<i64>,
    ) -> bool {
        match value {
            IntOrString::Int(n) => {
                self.at_least(path, Some(i64::from(*n)), 0);
                *n == 0
            }
            IntOrString::String(text) => {
                let parsed = text.strip_suffix('%').and_then(|n| n.parse::<i64>().ok());
                match parsed {
                    Some(p) if p >= 0 && max_percent.is_none_or(|max| p <= max) => p == 0,
                    Some(_) => {
                        self.push(
                            path.clone(),
                            format!("{text:?} is out of range: use 0% to 100%"),
                        );
                        false
                    }
                    None => {
                        self.push(
                            path.clone(),
                            format!("{text:?} is not a number or a percentage (e.g. 1 or 25%)"),
                        );
                        false
                    }
                }
            }
        }
    }

    /// Label keys and values of a map (`metadata.labels`, `nodeSelector`, `selector`).
    pub(crate) fn labels(&mut self, path: &FieldPath, labels: Option<&BTreeMap<String, String>>) {
        for (key, value) in labels.into_iter().flatten() {
            let mut found = Vec::new();
            crate::selector::check_label(path, key, value, &mut found);
            self.extend(found);
        }
    }

    /// Parses every quantity of a map; returns the parsed ones.
    pub(crate) fn quantities(
        &mut self,
        path: &FieldPath,
        map: Option<&BTreeMap<String, ApiQuantity>>,
    ) -> BTreeMap<String, Quantity> {
        let mut parsed = BTreeMap::new();
        for (name, quantity) in map.into_iter().flatten() {
            match quantity.0.parse::<Quantity>() {
                Ok(q) if q.is_negative() => {
                    self.push(
                        path.key(name),
                        format!("{:?} must not be negative", quantity.0),
                    );
                }
                Ok(q) => {
                    parsed.insert(name.clone(), q);
                }
                Err(why) => self.push(path.key(name), why.to_string()),
            }
        }
        parsed
    }

    /// Exactly one of `present` may be set (a volume's source, a probe's handler).
    pub(crate) fn exactly_one(
        &mut self,
        path: &FieldPath,
        present: &[String],
        what: &str,
        choices: &str,
    ) {
        match present.len() {
            1 => {}
            0 => self.push(
                path.clone(),
                format!("{what} is required: set one of {choices}"),
            ),
            _ => self.push(
                path.clone(),
                format!("only one {what} may be set, found {}", present.join(", ")),
            ),
        }
    }
}

/// The keys set in a struct's JSON form, among `candidates`: which of several mutually
/// exclusive fields a user filled in.
pub(crate) fn set_fields<T: serde::Serialize>(
    value: &T,
    candidates: Option<&[&str]>,
) -> Vec<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(key, v)| !v.is_null() && candidates.is_none_or(|c| c.contains(&key.as_str())))
            .map(|(key, _)| key)
            .collect(),
        _ => Vec::new(),
    }
}

fn list_words(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => format!("{one:?}"),
        [rest @ .., last] => format!(
            "{} or {last:?}",
            rest.iter()
                .map(|w| format!("{w:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests;
