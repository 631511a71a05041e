//! Rules for pod specs, wherever they appear (Pods and every workload's template).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, LifecycleHandler, PodSpec, Probe, ResourceRequirements, Toleration, Volume,
};

use crate::names;
use crate::path::FieldPath;

use super::{Report, set_fields};

/// What differs between a bare Pod and the template of each workload kind.
pub(crate) struct PodRules {
    /// The restart policies the owner accepts (a Deployment's pods must restart; a Job's must not).
    pub restart_policies: &'static [&'static str],
    /// Whether an unset restartPolicy (meaning Always) is acceptable.
    pub restart_policy_optional: bool,
    /// Extra volume names a container may mount (a StatefulSet's volumeClaimTemplates).
    pub claim_templates: BTreeSet<String>,
}

impl PodRules {
    pub(crate) fn pod() -> Self {
        Self {
            restart_policies: &["Always", "OnFailure", "Never"],
            restart_policy_optional: true,
            claim_templates: BTreeSet::new(),
        }
    }

    pub(crate) fn long_running() -> Self {
        Self {
            restart_policies: &["Always"],
            restart_policy_optional: true,
            claim_templates: BTreeSet::new(),
        }
    }

    pub(crate) fn run_to_completion() -> Self {
        Self {
            restart_policies: &["OnFailure", "Never"],
            restart_policy_optional: false,
            claim_templates: BTreeSet::new(),
        }
    }
}

/// Volume types the kubelet can provide; others are refused up front rather than leaving a
/// pod stuck at start.
const SUPPORTED_VOLUMES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "configMap",
    "secret",
    "persistentVolumeClaim",
    "projected",
    "downwardAPI",
];

pub(crate) fn pod_spec(report: &mut Report, path: &FieldPath, spec: &PodSpec, rules: &PodRules) {
    let container_names: BTreeSet<String> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.clone())
        .collect();
    let volume_names = volumes(
        report,
        &path.field("volumes"),
        spec.volumes.as_deref(),
        &container_names,
    );
    let mut mountable = volume_names;
    mountable.extend(rules.claim_templates.iter().cloned());

    if spec.containers.is_empty() {
        report.push(
            path.field("containers"),
            "at least one container is required",
        );
    }
    let mut seen_names = BTreeSet::new();
    let groups = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
            true,
        ),
        ("containers", spec.containers.as_slice(), false),
    ];
    for (field, containers, init) in groups {
        for (i, c) in containers.iter().enumerate() {
            let at = path.field(field).index(i);
            if !c.name.is_empty() && !seen_names.insert(c.name.clone()) {
                report.push(
                    at.field("name"),
                    format!("duplicate container name {:?}", c.name),
                );
            }
            container(report, &at, c, &mountable, &container_names, init);
        }
    }

    let restart_path = path.field("restartPolicy");
    match spec.restart_policy.as_deref() {
        None if !rules.restart_policy_optional => report.push(
            restart_path,
            format!(
                "required field is missing: use {}",
                super::list_words(rules.restart_policies)
            ),
        ),
        value => report.one_of(&restart_path, value, rules.restart_policies),
    }
    // Off the host's network the node forwards a hostPort to the pod (CNI portmap, IPv4
    // only, so a hostIP must be an IPv4 address or portmap would skip the port); on it a
    // container port is the node's port already, and Kubernetes requires hostPort to equal it.
    let host_network = spec.host_network == Some(true);
    // One hostPort per protocol and host IP in a pod (Kubernetes' `AccumulateUniqueHostPorts`):
    // the app containers together, each init container alone, since those run one by one.
    // Stricter than Kubernetes, a wildcard host IP (unset or 0.0.0.0) also clashes with any
    // other host IP on that port, as the scheduler counts it: the node's forwarding rules
    // could not send one address to one port and the rest to another.
    let mut app_host_ports: Vec<(&str, &str, i32, String)> = Vec::new();
    for (field, containers, init) in groups {
        for (i, c) in containers.iter().enumerate() {
            let mut init_host_ports: Vec<(&str, &str, i32, String)> = Vec::new();
            let host_ports = if init {
                &mut init_host_ports
            } else {
                &mut app_host_ports
            };
            for (j, port) in c.ports.iter().flatten().enumerate() {
                let port_at = path.field(field).index(i).field("ports").index(j);
                let at = port_at.field("hostPort");
                let host_ip = port.host_ip.as_deref().unwrap_or("");
                if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
                    report.push(
                        port_at.field("hostIP"),
                        format!("{host_ip:?} must be a valid IP address"),
                    );
                }
                if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
                    let protocol = port.protocol.as_deref().unwrap_or("TCP");
                    let key = format!("{protocol}/{host_ip}/{host_port}");
                    let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
                    let taken = host_ports.iter().find(|(p, ip, n, _)| {
                        *p == protocol
                            && *n == host_port
                            && (*ip == host_ip || wildcard(ip) || wildcard(host_ip))
                    });
                    match taken {
                        Some((_, ip, _, _)) if *ip == host_ip => report.push(
                            at.clone(),
                            format!(
                                "duplicate value {key:?}: another port of the pod already has this protocol, hostIP and hostPort"
                            ),
                        ),
                        Some((_, _, _, other)) => report.push(
                            at.clone(),
                            format!(
                                "{key:?} overlaps {other:?} of another port of the pod (an unset or 0.0.0.0 hostIP takes the port on every address)"
                            ),
                        ),
                        None => host_ports.push((protocol, host_ip, host_port, key)),
                    }
                }
                match port.host_port.filter(|p| *p != 0) {
                    Some(host_port) if host_network && host_port != port.container_port => report
                        .push(
                            at,
                            format!(
                                "must equal containerPort ({}) when hostNetwork is true",
                                port.container_port
                            ),
                        ),
                    Some(_) if !host_network => {
                        if let Some(ip) = port.host_ip.as_deref().filter(|ip| !ip.is_empty())
                            && ip.parse::<std::net::Ipv6Addr>().is_ok()
                        {
                            report.push(
                                port_at.field("hostIP"),
                                format!(
                                    "{ip:?} is not an IPv4 address (the pod network is IPv4 only)"
                                ),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // The kubelet gives every pod its own PID and IPC namespaces.
    for (field, set) in [("hostPID", spec.host_pid), ("hostIPC", spec.host_ipc)] {
        if set == Some(true) {
            report.push(
                path.field(field),
                "is not supported by shipshape: every pod has its own namespaces",
            );
        }
    }
    report.one_of(
        &path.field("dnsPolicy"),
        spec.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    dns_config(report, path, spec);
    host_aliases(report, path, spec);
    unsupported_pod_features(report, path, spec);
    report.at_least(
        &path.field("terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
        0,
    );
    report.at_least(
        &path.field("activeDeadlineSeconds"),
        spec.active_deadline_seconds,
        1,
    );
    // As Kubernetes bounds it: a pod's deadline fits in 32 bits.
    if let Some(deadline) = spec.active_deadline_seconds
        && deadline > i64::from(i32::MAX)
    {
        report.push(
            path.field("activeDeadlineSeconds"),
            format!("must be between 1 and {} (got {deadline})", i32::MAX),
        );
    }
    report.labels(&path.field("nodeSelector"), spec.node_selector.as_ref());
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(value) = value {
            report.check(&path.field(field), names::dns1123_label(value));
        }
    }
    if let Some(account) = &spec.service_account_name {
        report.check(
            &path.field("serviceAccountName"),
            names::dns1123_subdomain(account),
        );
    }
    if let Some(context) = &spec.security_context {
        let at = path.field("securityContext");
        report.at_least(&at.field("runAsUser"), context.run_as_user, 0);
        report.at_least(&at.field("runAsGroup"), context.run_as_group, 0);
        report.at_least(&at.field("fsGroup"), context.fs_group, 0);
        for (i, group) in context.supplemental_groups.iter().flatten().enumerate() {
            report.at_least(&at.field("supplementalGroups").index(i), Some(*group), 0);
        }
        confinement(
            report,
            &at,
            context.seccomp_profile.as_ref(),
            context.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
            context.se_linux_options.is_some(),
        );
        if context.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
            report.push(
                at.field("sysctls"),
                "is not supported by shipshape: pods run with the node's sysctls",
            );
        }
    }
    if spec.share_process_namespace == Some(true) {
        report.push(
            path.field("shareProcessNamespace"),
            "is not supported by shipshape: each container has its own PID namespace",
        );
    }
    for (i, toleration) in spec.tolerations.iter().flatten().enumerate() {
        self::toleration(report, &path.field("tolerations").index(i), toleration);
    }
    if let Some(affinity) = &spec.affinity {
        self::affinity(report, &path.field("affinity"), affinity);
    }
    let mut spread_seen = BTreeSet::new();
    for (i, constraint) in spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        let at = path.field("topologySpreadConstraints").index(i);
        spread_constraint(report, &at, constraint);
        if !spread_seen.insert((&constraint.topology_key, &constraint.when_unsatisfiable)) {
            report.push(
                at,
                format!(
                    "duplicate constraint on topologyKey {:?} with whenUnsatisfiable {:?}",
                    constraint.topology_key, constraint.when_unsatisfiable
                ),
            );
        }
    }
}

/// Node and pod (anti-)affinity, required and preferred: everything the scheduler reads.
fn affinity(report: &mut Report, at: &FieldPath, affinity: &k8s_openapi::api::core::v1::Affinity) {
    for (field, required, preferred) in [
        (
            "podAffinity",
            affinity.pod_affinity.as_ref().and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            affinity.pod_affinity.as_ref().and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        ),
        (
            "podAntiAffinity",
            affinity.pod_anti_affinity.as_ref().and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            affinity.pod_anti_affinity.as_ref().and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        ),
    ] {
        for (i, term) in required.into_iter().flatten().enumerate() {
            let term_path = at
                .field(field)
                .field("requiredDuringSchedulingIgnoredDuringExecution")
                .index(i);
            pod_affinity_term(report, &term_path, term);
        }
        for (i, weighted) in preferred.into_iter().flatten().enumerate() {
            let term_path = at
                .field(field)
                .field("preferredDuringSchedulingIgnoredDuringExecution")
                .index(i);
            weight(report, &term_path.field("weight"), weighted.weight);
            pod_affinity_term(
                report,
                &term_path.field("podAffinityTerm"),
                &weighted.pod_affinity_term,
            );
        }
    }
    let node_affinity = affinity.node_affinity.as_ref();
    if let Some(required) = node_affinity.and_then(|a| {
        a.required_during_scheduling_ignored_during_execution
            .as_ref()
    }) {
        let terms_path = at
            .field("nodeAffinity")
            .field("requiredDuringSchedulingIgnoredDuringExecution")
            .field("nodeSelectorTerms");
        for (i, term) in required.node_selector_terms.iter().enumerate() {
            node_selector_term(report, &terms_path.index(i), term);
        }
    }
    let preferred = node_affinity.and_then(|a| {
        a.preferred_during_scheduling_ignored_during_execution
            .as_ref()
    });
    for (i, weighted) in preferred.into_iter().flatten().enumerate() {
        let term_path = at
            .field("nodeAffinity")
            .field("preferredDuringSchedulingIgnoredDuringExecution")
            .index(i);
        weight(report, &term_path.field("weight"), weighted.weight);
        node_selector_term(report, &term_path.field("preference"), &weighted.preference);
    }
}

/// A preferred term's weight: Kubernetes accepts 1 to 100.
fn weight(report: &mut Report, path: &FieldPath, weight: i32) {
    if !(1..=100).contains(&weight) {
        report.push(
            path.clone(),
            format!("must be between 1 and 100 (got {weight})"),
        );
    }
}

/// A pod (anti-)affinity term, required or preferred.
fn pod_affinity_term(
    report: &mut Report,
    term_path: &FieldPath,
    term: &k8s_openapi::api::core::v1::PodAffinityTerm,
) {
    report.required(&term_path.field("topologyKey"), Some(&term.topology_key));
    if let Some(selector) = &term.label_selector
        && let Err(problems) =
            crate::selector::Selector::parse(selector, &term_path.field("labelSelector"))
    {
        report.extend(problems);
    }
    // Only `{}` (every namespace) can be honoured: the scheduler does not read namespace
    // labels.
    if term.namespace_selector.as_ref().is_some_and(|selector| {
        selector
            .match_labels
            .as_ref()
            .is_some_and(|l| !l.is_empty())
            || selector
                .match_expressions
                .as_ref()
                .is_some_and(|e| !e.is_empty())
    }) {
        report.push(
            term_path.field("namespaceSelector"),
            "selecting namespaces by label is not supported: list them in `namespaces`, or use {} for every namespace",
        );
    }
    for (field, keys) in [
        ("matchLabelKeys", &term.match_label_keys),
        ("mismatchLabelKeys", &term.mismatch_label_keys),
    ] {
        if keys.as_ref().is_some_and(|k| !k.is_empty()) {
            report.push(
                term_path.field(field),
                format!("{field} is not supported in pod affinity terms: spell the labels out in labelSelector"),
            );
        }
    }
}

/// A nodeSelectorTerm of required or preferred node affinity.
fn node_selector_term(
    report: &mut Report,
    term_path: &FieldPath,
    term: &k8s_openapi::api::core::v1::NodeSelectorTerm,
) {
    for (j, expression) in term.match_expressions.iter().flatten().enumerate() {
        let expr_path = term_path.field("matchExpressions").index(j);
        report.one_of(
            &expr_path.field("operator"),
            Some(&expression.operator),
            &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
        );
        report.check(
            &expr_path.field("key"),
            names::qualified_name(&expression.key),
        );
    }
    for (j, field) in term.match_fields.iter().flatten().enumerate() {
        let field_path = term_path.field("matchFields").index(j);
        if field.key != "metadata.name" {
            report.push(
                field_path.field("key"),
                format!("{:?} is not a node field: only metadata.name is", field.key),
            );
        }
        report.one_of(
            &field_path.field("operator"),
            Some(&field.operator),
            &["In", "NotIn"],
        );
    }
}

/// A topologySpreadConstraint, as Kubernetes' API validation checks it.
fn spread_constraint(
    report: &mut Report,
    at: &FieldPath,
    constraint: &k8s_openapi::api::core::v1::TopologySpreadConstraint,
) {
    report.at_least(
        &at.field("maxSkew"),
        Some(i64::from(constraint.max_skew)),
        1,
    );
    if report
        .required(&at.field("topologyKey"), Some(&constraint.topology_key))
        .is_some()
    {
        report.check(
            &at.field("topologyKey"),
            names::qualified_name(&constraint.topology_key),
        );
    }
    let when = report.required(
        &at.field("whenUnsatisfiable"),
        Some(&constraint.when_unsatisfiable),
    );
    report.one_of(
        &at.field("whenUnsatisfiable"),
        when,
        &["DoNotSchedule", "ScheduleAnyway"],
    );
    if let Some(min_domains) = constraint.min_domains {
        report.at_least(&at.field("minDomains"), Some(i64::from(min_domains)), 1);
        if when == Some("ScheduleAnyway") {
            report.push(
                at.field("minDomains"),
                "minDomains may only be set with whenUnsatisfiable: DoNotSchedule",
            );
        }
    }
    for field in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
        let value = if field == "nodeAffinityPolicy" {
            &constraint.node_affinity_policy
        } else {
            &constraint.node_taints_policy
        };
        report.one_of(&at.field(field), value.as_deref(), &["Honor", "Ignore"]);
    }
    let mut selector_keys = BTreeSet::new();
    if let Some(selector) = &constraint.label_selector {
        if let Err(problems) =
            crate::selector::Selector::parse(selector, &at.field("labelSelector"))
        {
            report.extend(problems);
        }
        selector_keys.extend(selector.match_labels.iter().flatten().map(|(k, _)| k));
        selector_keys.extend(selector.match_expressions.iter().flatten().map(|e| &e.key));
    }
    let keys = constraint.match_label_keys.as_deref().unwrap_or_default();
    if !keys.is_empty() && constraint.label_selector.is_none() {
        report.push(
            at.field("matchLabelKeys"),
            "matchLabelKeys needs a labelSelector to narrow",
        );
    }
    for (i, key) in keys.iter().enumerate() {
        let key_path = at.field("matchLabelKeys").index(i);
        report.check(&key_path, names::qualified_name(key));
        if selector_keys.contains(key) {
            report.push(
                key_path,
                format!("{key:?} is also in labelSelector: use one or the other"),
            );
        }
    }
}

/// `dnsConfig` as the kubelet reads it into resolv.conf: nameservers are addresses (at most
/// three, and at least one when dnsPolicy is None), options have names.
fn dns_config(report: &mut Report, path: &FieldPath, spec: &PodSpec) {
    let at = path.field("dnsConfig");
    let config = spec.dns_config.as_ref();
    let nameservers = config.and_then(|c| c.nameservers.as_deref()).unwrap_or(&[]);
    if spec.dns_policy.as_deref() == Some("None") && nameservers.is_empty() {
        report.push(
            at.field("nameservers"),
            "at least one nameserver is required when dnsPolicy is None",
        );
    }
    if nameservers.len() > 3 {
        report.push(
            at.field("nameservers"),
            format!(
                "at most 3 nameservers are allowed, found {}",
                nameservers.len()
            ),
        );
    }
    for (i, server) in nameservers.iter().enumerate() {
        if server.parse::<std::net::IpAddr>().is_err() {
            report.push(
                at.field("nameservers").index(i),
                format!("{server:?} is not an IP address"),
            );
        }
    }
    for (i, search) in config
        .and_then(|c| c.searches.as_deref())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        report.check(
            &at.field("searches").index(i),
            names::dns1123_subdomain(search.trim_end_matches('.')),
        );
    }
    for (i, option) in config
        .and_then(|c| c.options.as_deref())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        report.required(
            &at.field("options").index(i).field("name"),
            option.name.as_deref(),
        );
    }
}

/// Seccomp, AppArmor and SELinux in a security context. The kubelet gives `RuntimeDefault`
/// seccomp containerd's default profile and `Unconfined` none; it has no profile directory
/// for `Localhost`, and applies no AppArmor profile or SELinux label, so only what it does
/// is accepted.
fn confinement(
    report: &mut Report,
    at: &FieldPath,
    seccomp: Option<&k8s_openapi::api::core::v1::SeccompProfile>,
    app_armor: Option<&str>,
    se_linux: bool,
) {
    if let Some(profile) = seccomp {
        let at = at.field("seccompProfile");
        match profile.type_.as_str() {
            "Localhost" => report.push(
                at.field("type"),
                "\"Localhost\" is not supported: shipshape has no seccomp profile directory, use RuntimeDefault or Unconfined",
            ),
            kind => {
                report.one_of(&at.field("type"), Some(kind), &["RuntimeDefault", "Unconfined"]);
                // Kubernetes: a profile file is named only by a Localhost profile.
                if profile.localhost_profile.is_some() {
                    report.push(
                        at.field("localhostProfile"),
                        "may only be set when type is Localhost",
                    );
                }
            }
        }
    }
    if let Some(kind) = app_armor
        && kind != "Unconfined"
    {
        report.push(
            at.field("appArmorProfile").field("type"),
            format!(
                "{kind:?} is not supported: shipshape applies no AppArmor profile, use Unconfined"
            ),
        );
    }
    if se_linux {
        report.push(
            at.field("seLinuxOptions"),
            "is not supported by shipshape: containers run without SELinux labels",
        );
    }
}

fn toleration(report: &mut Report, path: &FieldPath, toleration: &Toleration) {
    report.one_of(
        &path.field("operator"),
        toleration.operator.as_deref(),
        &["Exists", "Equal"],
    );
    report.one_of(
        &path.field("effect"),
        toleration.effect.as_deref(),
        &["NoSchedule", "PreferNoSchedule", "NoExecute"],
    );
    if toleration.operator.as_deref() == Some("Exists")
        && toleration.value.as_deref().is_some_and(|v| !v.is_empty())
    {
        report.push(path.field("value"), "must be empty when operator is Exists");
    }
    if toleration.key.as_deref().is_none_or(str::is_empty)
        && toleration.operator.as_deref() != Some("Exists")
    {
        report.push(
            path.field("operator"),
            "must be Exists when key is empty (a toleration of every taint)",
        );
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
        report.check(&path.field("key"), names::qualified_name(key));
    }
    if toleration.toleration_seconds.is_some() && toleration.effect.as_deref() != Some("NoExecute")
    {
        report.push(
            path.field("tolerationSeconds"),
            "may only be set when effect is NoExecute",
        );
    }
}

/// Checks the pod's volumes and returns their names; `containers` are the pod's container
/// names, which a downward API resourceFieldRef must name.
fn volumes(
    report: &mut Report,
    path: &FieldPath,
    volumes: Option<&[Volume]>,
    containers: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (i, volume) in volumes.unwrap_or(&[]).iter().enumerate() {
        let at = path.index(i);
        report.name(&at.field("name"), &volume.name, names::dns1123_label);
        if !seen.insert(volume.name.clone()) {
            report.push(
                at.field("name"),
                format!("duplicate volume name {:?}", volume.name),
            );
        }
        let sources: Vec<String> = set_fields(volume, None)
            .into_iter()
            .filter(|key| key != "name")
            .collect();
        match sources.as_slice() {
            [] => report.push(
                at.clone(),
                format!(
                    "a volume source is required: set one of {}",
                    SUPPORTED_VOLUMES.join(", ")
                ),
            ),
            [source] if !SUPPORTED_VOLUMES.contains(&source.as_str()) => report.push(
                at.field(source),
                format!(
                    "volume type {source} is not supported by shipshape: use one of {}",
                    SUPPORTED_VOLUMES.join(", ")
                ),
            ),
            [_] => {}
            many => report.push(
                at.clone(),
                format!(
                    "only one volume source may be set, found {}",
                    many.join(", ")
                ),
            ),
        }
        if let Some(host_path) = &volume.host_path {
            if !host_path.path.starts_with('/') {
                report.push(
                    at.field("hostPath").field("path"),
                    "must be an absolute path",
                );
            }
            report.one_of(
                &at.field("hostPath").field("type"),
                host_path.type_.as_deref(),
                &[
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ],
            );
        }
        if let Some(empty_dir) = &volume.empty_dir {
            let at = at.field("emptyDir");
            report.one_of(
                &at.field("medium"),
                empty_dir.medium.as_deref(),
                &["", "Memory"],
            );
            if let Some(limit) = &empty_dir.size_limit
                && let Err(why) = limit.0.parse::<crate::quantity::Quantity>()
            {
                report.push(at.field("sizeLimit"), why.to_string());
            }
        }
        if let Some(config_map) = &volume.config_map {
            let at = at.field("configMap");
            report.required(&at.field("name"), Some(&config_map.name));
            key_paths(
                report,
                &at,
                config_map.items.as_deref(),
                config_map.default_mode,
            );
        }
        if let Some(secret) = &volume.secret {
            let at = at.field("secret");
            report.required(&at.field("secretName"), secret.secret_name.as_deref());
            key_paths(report, &at, secret.items.as_deref(), secret.default_mode);
        }
        if let Some(downward) = &volume.downward_api {
            let at = at.field("downwardAPI");
            file_mode(report, &at.field("defaultMode"), downward.default_mode);
            downward_items(report, &at, downward.items.as_deref(), containers);
        }
        if let Some(projected) = &volume.projected {
            projected_volume(report, &at.field("projected"), projected, containers);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            report.required(
                &at.field("persistentVolumeClaim").field("claimName"),
                Some(&claim.claim_name),
            );
        }
    }
    seen
}

/// Pod fields a downwardAPI volume item may name (beside `metadata.labels['k']` and
/// `metadata.annotations['k']`), as Kubernetes allows.
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
];

/// Pod fields an env var's fieldRef may name (beside the subscripted labels and annotations).
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
];

/// Container resources the downward API reports.
const DOWNWARD_RESOURCES: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
];

/// Whether `path` is `metadata.labels['key']` or `metadata.annotations['key']` with a valid key.
fn subscripted_field(path: &str) -> Option<Result<(), String>> {
    ["metadata.labels", "metadata.annotations"]
        .iter()
        .find_map(|prefix| {
            path.strip_prefix(prefix)?
                .strip_prefix("['")?
                .strip_suffix("']")
        })
        .map(names::qualified_name)
}

/// A downward API fieldPath, among `allowed` or subscripted.
fn field_path(report: &mut Report, path: &FieldPath, value: &str, allowed: &[&str]) {
    if value.is_empty() {
        report.push(path.clone(), "required field is missing");
    } else if let Some(key) = subscripted_field(value) {
        report.check(path, key);
    } else if !allowed.contains(&value) {
        report.push(
            path.clone(),
            format!(
                "{value:?} is not supported: use {}, metadata.labels['KEY'] or metadata.annotations['KEY']",
                allowed.join(", ")
            ),
        );
    }
}

/// A downward API resourceFieldRef: a known resource, a container of the pod (required in a
/// volume, where there is no "this container"), a divisor Kubernetes allows for it.
fn resource_field(
    report: &mut Report,
    path: &FieldPath,
    selector: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    containers: &BTreeSet<String>,
    container_required: bool,
) {
    match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        None if container_required => {
            report.push(path.field("containerName"), "required field is missing");
        }
        Some(name) if !containers.contains(name) => report.push(
            path.field("containerName"),
            format!("no container named {name:?} in the pod"),
        ),
        _ => {}
    }
    let resource = selector.resource.as_str();
    if resource.is_empty() {
        report.push(path.field("resource"), "required field is missing");
        return;
    }
    if !DOWNWARD_RESOURCES.contains(&resource) {
        report.push(
            path.field("resource"),
            format!(
                "{resource:?} is not supported: use {}",
                DOWNWARD_RESOURCES.join(", ")
            ),
        );
        return;
    }
    let Some(divisor) = &selector.divisor else {
        return;
    };
    let at = path.field("divisor");
    let parsed = match divisor.0.parse::<crate::quantity::Quantity>() {
        Ok(q) => q,
        Err(why) => {
            report.push(at, why.to_string());
            return;
        }
    };
    if parsed == crate::quantity::Quantity::default() {
        return;
    }
    let allowed: &[&str] = if resource.ends_with(".cpu") {
        &["1m", "1"]
    } else {
        &[
            "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei",
        ]
    };
    let valid = allowed
        .iter()
        .any(|a| a.parse::<crate::quantity::Quantity>().ok() == Some(parsed));
    if !valid {
        report.push(
            at,
            format!(
                "{:?} is not a divisor of {resource}: use {}",
                divisor.0,
                allowed.join(", ")
            ),
        );
    }
}

/// The items of a downwardAPI volume or projection.
fn downward_items(
    report: &mut Report,
    path: &FieldPath,
    items: Option<&[k8s_openapi::api::core::v1::DownwardAPIVolumeFile]>,
    containers: &BTreeSet<String>,
) {
    for (i, item) in items.unwrap_or(&[]).iter().enumerate() {
        let at = path.field("items").index(i);
        relative_path(report, &at.field("path"), &item.path);
        file_mode(report, &at.field("mode"), item.mode);
        let set = set_fields(item, Some(&["fieldRef", "resourceFieldRef"]));
        report.exactly_one(&at, &set, "source", "fieldRef or resourceFieldRef");
        if let Some(field_ref) = &item.field_ref {
            field_path(
                report,
                &at.field("fieldRef").field("fieldPath"),
                &field_ref.field_path,
                VOLUME_FIELD_PATHS,
            );
        }
        if let Some(selector) = &item.resource_field_ref {
            resource_field(
                report,
                &at.field("resourceFieldRef"),
                selector,
                containers,
                true,
            );
        }
    }
}

/// A projected volume: ConfigMaps, Secrets and downward API items into one directory.
fn projected_volume(
    report: &mut Report,
    path: &FieldPath,
    projected: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    containers: &BTreeSet<String>,
) {
    file_mode(report, &path.field("defaultMode"), projected.default_mode);
    let mut paths = BTreeSet::new();
    for (i, source) in projected.sources.iter().flatten().enumerate() {
        let at = path.field("sources").index(i);
        let set = set_fields(source, None);
        report.exactly_one(&at, &set, "source", "configMap, secret or downwardAPI");
        for unsupported in [
            "serviceAccountToken",
            "clusterTrustBundle",
            "podCertificate",
        ] {
            if set.iter().any(|s| s == unsupported) {
                report.push(
                    at.field(unsupported),
                    format!(
                        "{unsupported} projections are not supported: shipshape has no token or certificate issuer; use configMap, secret or downwardAPI"
                    ),
                );
            }
        }
        let mut item_paths: Vec<(FieldPath, String)> = Vec::new();
        if let Some(config_map) = &source.config_map {
            let at = at.field("configMap");
            report.required(&at.field("name"), Some(&config_map.name));
            key_paths(report, &at, config_map.items.as_deref(), None);
            for (j, item) in config_map.items.iter().flatten().enumerate() {
                item_paths.push((at.field("items").index(j).field("path"), item.path.clone()));
            }
        }
        if let Some(secret) = &source.secret {
            let at = at.field("secret");
            report.required(&at.field("name"), Some(&secret.name));
            key_paths(report, &at, secret.items.as_deref(), None);
            for (j, item) in secret.items.iter().flatten().enumerate() {
                item_paths.push((at.field("items").index(j).field("path"), item.path.clone()));
            }
        }
        if let Some(downward) = &source.downward_api {
            let at = at.field("downwardAPI");
            downward_items(report, &at, downward.items.as_deref(), containers);
            for (j, item) in downward.items.iter().flatten().enumerate() {
                item_paths.push((at.field("items").index(j).field("path"), item.path.clone()));
            }
        }
        for (at, item_path) in item_paths {
            if !item_path.is_empty() && !paths.insert(item_path.clone()) {
                report.push(
                    at,
                    format!("{item_path:?} is projected twice: each path may appear once"),
                );
            }
        }
    }
}

fn key_paths(
    report: &mut Report,
    path: &FieldPath,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    default_mode: Option<i32>,
) {
    file_mode(report, &path.field("defaultMode"), default_mode);
    for (i, item) in items.unwrap_or(&[]).iter().enumerate() {
        let at = path.field("items").index(i);
        report.check(&at.field("key"), names::config_map_key(&item.key));
        relative_path(report, &at.field("path"), &item.path);
        file_mode(report, &at.field("mode"), item.mode);
    }
}

fn file_mode(report: &mut Report, path: &FieldPath, mode: Option<i32>) {
    if let Some(mode) = mode
        && !(0..=0o777).contains(&mode)
    {
        report.push(
            path.clone(),
            format!("{mode} is not a file mode: use 0 to 0777 (octal) / 511 (decimal)"),
        );
    }
}

fn relative_path(report: &mut Report, path: &FieldPath, value: &str) {
    if value.is_empty() {
        report.push(path.clone(), "required field is missing");
    } else if value.starts_with('/') {
        report.push(path.clone(), "must be a relative path");
    } else if value.split('/').any(|part| part == "..") {
        report.push(path.clone(), "must not contain '..'");
    }
}

fn container(
    report: &mut Report,
    path: &FieldPath,
    c: &Container,
    volumes: &BTreeSet<String>,
    containers: &BTreeSet<String>,
    init: bool,
) {
    report.name(&path.field("name"), &c.name, names::dns1123_label);
    match c.image.as_deref() {
        Some(image) if image.trim() != image => report.push(
            path.field("image"),
            "must not have leading or trailing whitespace",
        ),
        Some(image) if !image.is_empty() => {
            if let Err(error) = crate::image_ref::ImageRef::parse(image) {
                report.push(path.field("image"), error.to_string());
            }
        }
        image => {
            report.required(&path.field("image"), image);
        }
    }
    report.one_of(
        &path.field("imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
    );
    if let Some(dir) = &c.working_dir
        && !dir.is_empty()
        && !dir.starts_with('/')
    {
        report.push(path.field("workingDir"), "must be an absolute path");
    }

    let mut port_names = BTreeSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let at = path.field("ports").index(i);
        report.port(&at.field("containerPort"), port.container_port);
        if let Some(host_port) = port.host_port
            && host_port != 0
        {
            report.port(&at.field("hostPort"), host_port);
        }
        report.one_of(
            &at.field("protocol"),
            port.protocol.as_deref(),
            &["TCP", "UDP", "SCTP"],
        );
        if let Some(name) = &port.name {
            report.check(&at.field("name"), names::iana_svc_name(name));
            if !port_names.insert(name.clone()) {
                report.push(at.field("name"), format!("duplicate port name {name:?}"));
            }
        }
    }

    for (i, env) in c.env.iter().flatten().enumerate() {
        env_var(report, &path.field("env").index(i), env, containers);
    }
    for (i, source) in c.env_from.iter().flatten().enumerate() {
        let at = path.field("envFrom").index(i);
        let set = set_fields(source, Some(&["configMapRef", "secretRef"]));
        report.exactly_one(&at, &set, "source", "configMapRef or secretRef");
        if let Some(prefix) = &source.prefix
            && !prefix.is_empty()
        {
            report.check(&at.field("prefix"), names::env_var_name(prefix));
        }
    }

    if let Some(resources) = &c.resources {
        self::resources(report, &path.field("resources"), resources);
    }

    let mut mount_paths = BTreeSet::new();
    for (i, mount) in c.volume_mounts.iter().flatten().enumerate() {
        let at = path.field("volumeMounts").index(i);
        if !volumes.contains(&mount.name) {
            report.push(
                at.field("name"),
                format!("no volume named {:?} in the pod's volumes", mount.name),
            );
        }
        if mount.mount_path.is_empty() {
            report.push(at.field("mountPath"), "required field is missing");
        } else if !mount.mount_path.starts_with('/') {
            report.push(at.field("mountPath"), "must be an absolute path");
        } else if !mount_paths.insert(mount.mount_path.clone()) {
            report.push(
                at.field("mountPath"),
                format!("{:?} is mounted twice in this container", mount.mount_path),
            );
        }
        if let Some(sub_path) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub_path.starts_with('/') {
                report.push(at.field("subPath"), "must be a relative path");
            } else if sub_path.split('/').any(|part| part == "..") {
                report.push(at.field("subPath"), "must not contain '..'");
            }
        }
    }

    let probes = [
        ("livenessProbe", c.liveness_probe.as_ref(), true),
        ("readinessProbe", c.readiness_probe.as_ref(), false),
        ("startupProbe", c.startup_probe.as_ref(), true),
    ];
    for (field, probe, success_must_be_one) in probes {
        let Some(probe) = probe else { continue };
        let at = path.field(field);
        // Init containers run to completion; only restartable (sidecar) ones may be probed.
        if init && c.restart_policy.as_deref() != Some("Always") {
            report.push(
                at,
                "may not be set for init containers (unless restartPolicy is Always)",
            );
            continue;
        }
        self::probe(report, &at, probe, success_must_be_one);
    }
    if let Some(lifecycle) = &c.lifecycle {
        // As for probes: a plain init container runs to completion, with no hooks.
        if init && c.restart_policy.as_deref() != Some("Always") {
            report.push(
                path.field("lifecycle"),
                "may not be set for init containers (unless restartPolicy is Always)",
            );
        }
        for (field, handler) in [
            ("postStart", lifecycle.post_start.as_ref()),
            ("preStop", lifecycle.pre_stop.as_ref()),
        ] {
            if let Some(handler) = handler {
                lifecycle_handler(report, &path.field("lifecycle").field(field), handler);
            }
        }
    }
    if let Some(context) = &c.security_context {
        let at = path.field("securityContext");
        report.at_least(&at.field("runAsUser"), context.run_as_user, 0);
        report.at_least(&at.field("runAsGroup"), context.run_as_group, 0);
        if context.allow_privilege_escalation == Some(false) && context.privileged == Some(true) {
            report.push(
                at.field("allowPrivilegeEscalation"),
                "cannot be false when privileged is true",
            );
        }
        confinement(
            report,
            &at,
            context.seccomp_profile.as_ref(),
            context.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
            context.se_linux_options.is_some(),
        );
        report.one_of(
            &at.field("procMount"),
            context.proc_mount.as_deref(),
            &["Default"],
        );
    }
    unsupported_container_features(report, path, c);
    if init {
        report.one_of(
            &path.field("restartPolicy"),
            c.restart_policy.as_deref(),
            &["Always"],
        );
        if c.restart_policy.as_deref() == Some("Always") {
            report.push(
                path.field("restartPolicy"),
                "Always is not supported by shipshape yet (the sidecar would run as a plain init container and block the pod's start)",
            );
        }
    } else if c.restart_policy.is_some() {
        report.push(
            path.field("restartPolicy"),
            "may only be set on init containers (sidecars); use the pod's restartPolicy",
        );
    }
}

/// `hostAliases` as Kubernetes checks them (`validateHostAliases`): each `ip` an IP address and
/// each hostname a DNS subdomain, so that every line the kubelet adds to /etc/hosts resolves.
fn host_aliases(report: &mut Report, path: &FieldPath, spec: &PodSpec) {
    for (i, alias) in spec.host_aliases.iter().flatten().enumerate() {
        let at = path.field("hostAliases").index(i);
        if alias.ip.parse::<std::net::IpAddr>().is_err() {
            report.push(
                at.field("ip"),
                format!("{:?} is not an IP address", alias.ip),
            );
        }
        for (j, hostname) in alias.hostnames.iter().flatten().enumerate() {
            report.check(
                &at.field("hostnames").index(j),
                names::dns1123_subdomain(hostname),
            );
        }
    }
}

/// Pod fields the scheduler and the kubelet do not implement. Each is refused unless it is unset
/// or at its default, because the pod would otherwise be scheduled, started or reported
/// differently from what Kubernetes documents.
fn unsupported_pod_features(report: &mut Report, path: &FieldPath, spec: &PodSpec) {
    let non_empty = |len: Option<usize>| len.is_some_and(|n| n > 0);
    let refusals = [
        (
            "priorityClassName",
            spec.priority_class_name
                .as_deref()
                .is_some_and(|n| !n.is_empty()),
            "is not supported by shipshape yet (pods are scheduled without priority or preemption)",
        ),
        (
            "priority",
            spec.priority.is_some_and(|p| p != 0),
            "is not supported by shipshape yet (pods are scheduled without priority or preemption)",
        ),
        (
            "runtimeClassName",
            spec.runtime_class_name
                .as_deref()
                .is_some_and(|n| !n.is_empty()),
            "is not supported by shipshape: every container runs on containerd's default runtime (runc)",
        ),
        (
            "overhead",
            spec.overhead.as_ref().is_some_and(|o| !o.is_empty()),
            "is not supported by shipshape: it comes from a RuntimeClass, which shipshape has none of",
        ),
        (
            "readinessGates",
            non_empty(spec.readiness_gates.as_ref().map(Vec::len)),
            "is not supported by shipshape yet (the pod would be Ready without its gate conditions)",
        ),
        (
            "schedulingGates",
            non_empty(spec.scheduling_gates.as_ref().map(Vec::len)),
            "is not supported by shipshape yet (the pod would be scheduled despite its gates)",
        ),
        (
            "resourceClaims",
            non_empty(spec.resource_claims.as_ref().map(Vec::len)),
            "is not supported by shipshape: it has no dynamic resource allocation",
        ),
        (
            "setHostnameAsFQDN",
            spec.set_hostname_as_fqdn == Some(true),
            "is not supported by shipshape yet (the hostname would stay the short name)",
        ),
        (
            "hostUsers",
            spec.host_users == Some(false),
            "false is not supported by shipshape: pods run without user namespaces",
        ),
        (
            "schedulerName",
            spec.scheduler_name
                .as_deref()
                .is_some_and(|n| !n.is_empty() && n != "default-scheduler"),
            "is not supported by shipshape: its one scheduler would bind the pod anyway (use default-scheduler or leave it unset)",
        ),
        (
            "ephemeralContainers",
            non_empty(spec.ephemeral_containers.as_ref().map(Vec::len)),
            "are not supported by shipshape: they are added to running pods, not declared in manifests",
        ),
    ];
    for (field, set, why) in refusals {
        if set {
            report.push(path.field(field), why);
        }
    }
    if let Some(os) = &spec.os
        && os.name != "linux"
    {
        report.push(
            path.field("os").field("name"),
            format!("{:?} is not supported: shipshape nodes run linux", os.name),
        );
    }
}

/// Container fields the kubelet does not implement, refused unless unset or at their default
/// (see `unsupported_pod_features`).
fn unsupported_container_features(report: &mut Report, path: &FieldPath, c: &Container) {
    for (field, set) in [
        ("stdin", c.stdin),
        ("stdinOnce", c.stdin_once),
        ("tty", c.tty),
    ] {
        if set == Some(true) {
            report.push(
                path.field(field),
                "true is not supported by shipshape yet (the container's stdin would be closed and it would have no terminal)",
            );
        }
    }
    if c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") {
        report.push(
            path.field("terminationMessagePolicy"),
            "FallbackToLogsOnError is not supported by shipshape yet (no termination message is reported): use File",
        );
    }
    report.one_of(
        &path.field("terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        &["File", "FallbackToLogsOnError"],
    );
    if c.volume_devices.as_ref().is_some_and(|d| !d.is_empty()) {
        report.push(
            path.field("volumeDevices"),
            "is not supported by shipshape: volumes are filesystems, never raw block devices",
        );
    }
    if c.resources
        .as_ref()
        .and_then(|r| r.claims.as_ref())
        .is_some_and(|claims| !claims.is_empty())
    {
        report.push(
            path.field("resources").field("claims"),
            "is not supported by shipshape: it has no dynamic resource allocation",
        );
    }
    for (i, mount) in c.volume_mounts.iter().flatten().enumerate() {
        let at = path.field("volumeMounts").index(i);
        if mount
            .sub_path_expr
            .as_deref()
            .is_some_and(|e| !e.is_empty())
        {
            report.push(
                at.field("subPathExpr"),
                "is not supported by shipshape yet (the whole volume would be mounted): use subPath",
            );
        }
        if mount
            .mount_propagation
            .as_deref()
            .is_some_and(|p| p != "None")
        {
            report.push(
                at.field("mountPropagation"),
                "is not supported by shipshape: mounts are private (None)",
            );
        }
        if mount.recursive_read_only.as_deref() == Some("Enabled") {
            report.push(
                at.field("recursiveReadOnly"),
                "Enabled is not supported by shipshape yet (submounts would stay writable): use IfPossible or Disabled",
            );
        }
    }
}

fn env_var(report: &mut Report, path: &FieldPath, env: &EnvVar, containers: &BTreeSet<String>) {
    report.name(&path.field("name"), &env.name, names::env_var_name);
    let Some(from) = &env.value_from else {
        return;
    };
    if env.value.as_deref().is_some_and(|v| !v.is_empty()) {
        report.push(
            path.field("valueFrom"),
            "may not be set when value is set: use one or the other",
        );
    }
    let at = path.field("valueFrom");
    let set = set_fields(
        from,
        Some(&[
            "configMapKeyRef",
            "secretKeyRef",
            "fieldRef",
            "resourceFieldRef",
            "fileKeyRef",
        ]),
    );
    report.exactly_one(
        &at,
        &set,
        "source",
        "configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
    );
    if let Some(selector) = &from.config_map_key_ref {
        let at = at.field("configMapKeyRef");
        report.required(&at.field("name"), Some(&selector.name));
        report.check(&at.field("key"), names::config_map_key(&selector.key));
    }
    if let Some(selector) = &from.secret_key_ref {
        let at = at.field("secretKeyRef");
        report.required(&at.field("name"), Some(&selector.name));
        report.check(&at.field("key"), names::config_map_key(&selector.key));
    }
    if let Some(field_ref) = &from.field_ref {
        field_path(
            report,
            &at.field("fieldRef").field("fieldPath"),
            &field_ref.field_path,
            ENV_FIELD_PATHS,
        );
    }
    if let Some(selector) = &from.resource_field_ref {
        resource_field(
            report,
            &at.field("resourceFieldRef"),
            selector,
            containers,
            false,
        );
    }
    if from.file_key_ref.is_some() {
        report.push(
            at.field("fileKeyRef"),
            "is not supported by shipshape: use configMapKeyRef or secretKeyRef",
        );
    }
}

/// Resource names Kubernetes knows without a domain prefix.
const STANDARD_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage", "storage", "pods"];

fn resources(report: &mut Report, path: &FieldPath, resources: &ResourceRequirements) {
    let mut parsed: [BTreeMap<String, crate::quantity::Quantity>; 2] = Default::default();
    for (slot, (field, map)) in [
        ("requests", resources.requests.as_ref()),
        ("limits", resources.limits.as_ref()),
    ]
    .into_iter()
    .enumerate()
    {
        let at = path.field(field);
        for name in map.into_iter().flat_map(|m| m.keys()) {
            let known = STANDARD_RESOURCES.contains(&name.as_str())
                || name.starts_with("hugepages-")
                || (name.contains('/') && names::qualified_name(name).is_ok());
            if !known {
                report.push(
                    at.key(name),
                    format!(
                        "{name:?} is not a resource name: use cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed name (example.com/gpu)"
                    ),
                );
            }
        }
        parsed[slot] = report.quantities(&at, map);
    }
    let [requests, limits] = &parsed;
    for (name, request) in requests {
        if let Some(limit) = limits.get(name)
            && request > limit
        {
            report.push(
                path.field("requests").key(name),
                format!("must be less than or equal to the {name} limit ({request} > {limit})"),
            );
        }
    }
}

fn probe(report: &mut Report, path: &FieldPath, probe: &Probe, success_must_be_one: bool) {
    let set = set_fields(probe, Some(&["exec", "httpGet", "tcpSocket", "grpc"]));
    report.exactly_one(path, &set, "handler", "exec, httpGet, tcpSocket or grpc");
    if let Some(http) = &probe.http_get {
        report.port_or_name(&path.field("httpGet").field("port"), &http.port);
        report.one_of(
            &path.field("httpGet").field("scheme"),
            http.scheme.as_deref(),
            &["HTTP", "HTTPS"],
        );
    }
    if let Some(tcp) = &probe.tcp_socket {
        report.port_or_name(&path.field("tcpSocket").field("port"), &tcp.port);
    }
    if let Some(exec) = &probe.exec
        && exec.command.as_ref().is_none_or(Vec::is_empty)
    {
        report.push(
            path.field("exec").field("command"),
            "required field is missing",
        );
    }
    if let Some(grpc) = &probe.grpc {
        report.port(&path.field("grpc").field("port"), grpc.port);
    }
    report.at_least(
        &path.field("initialDelaySeconds"),
        probe.initial_delay_seconds.map(i64::from),
        0,
    );
    for (field, value) in [
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("failureThreshold", probe.failure_threshold),
        ("successThreshold", probe.success_threshold),
    ] {
        report.at_least(&path.field(field), value.map(i64::from), 1);
    }
    if success_must_be_one && probe.success_threshold.is_some_and(|s| s != 1) {
        report.push(
            path.field("successThreshold"),
            "must be 1 for liveness and startup probes",
        );
    }
}

fn lifecycle_handler(report: &mut Report, path: &FieldPath, handler: &LifecycleHandler) {
    let set = set_fields(handler, Some(&["exec", "httpGet", "tcpSocket", "sleep"]));
    report.exactly_one(path, &set, "handler", "exec, httpGet, tcpSocket or sleep");
    if let Some(http) = &handler.http_get {
        report.port_or_name(&path.field("httpGet").field("port"), &http.port);
    }
    if let Some(tcp) = &handler.tcp_socket {
        report.port_or_name(&path.field("tcpSocket").field("port"), &tcp.port);
    }
    if let Some(sleep) = &handler.sleep {
        report.at_least(
            &path.field("sleep").field("seconds"),
            Some(sleep.seconds),
            0,
        );
    }
}
