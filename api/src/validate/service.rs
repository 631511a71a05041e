//! Rules for Services, Endpoints and Ingresses: the kinds that route traffic.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service, ServiceSpec};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names;
use crate::path::FieldPath;

use super::{Report, set_fields};

pub(super) fn service(report: &mut Report, service: &Service) {
    let spec_path = FieldPath::parse("spec");
    let Some(spec) = &service.spec else {
        report.push(spec_path, "required field is missing");
        return;
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    report.one_of(
        &spec_path.field("type"),
        Some(kind),
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
    );
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        report.push(
            spec_path.field("clusterIP"),
            format!("{cluster_ip:?} is not an IP address (or None for a headless Service)"),
        );
    }
    if headless && kind != "ClusterIP" {
        report.push(
            spec_path.field("clusterIP"),
            format!("None (headless) is only valid for type ClusterIP, not {kind}"),
        );
    }
    if kind == "ExternalName" {
        match spec.external_name.as_deref() {
            Some(name) => report.check(
                &spec_path.field("externalName"),
                names::dns1123_subdomain(name.strip_suffix('.').unwrap_or(name)),
            ),
            None => report.push(
                spec_path.field("externalName"),
                "required field is missing for type ExternalName",
            ),
        }
    }
    report.labels(&spec_path.field("selector"), spec.selector.as_ref());
    report.one_of(
        &spec_path.field("sessionAffinity"),
        spec.session_affinity.as_deref(),
        &["None", "ClientIP"],
    );
    report.one_of(
        &spec_path.field("externalTrafficPolicy"),
        spec.external_traffic_policy.as_deref(),
        &["Cluster", "Local"],
    );
    report.one_of(
        &spec_path.field("internalTrafficPolicy"),
        spec.internal_traffic_policy.as_deref(),
        &["Cluster", "Local"],
    );
    unsupported_service_features(report, &spec_path, spec, kind);

    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() && !headless && kind != "ExternalName" {
        report.push(
            spec_path.field("ports"),
            "at least one port is required (only headless and ExternalName Services may have none)",
        );
    }
    let mut names_seen = BTreeSet::new();
    let mut ports_seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = spec_path.field("ports").index(i);
        report.port(&at.field("port"), port.port);
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        report.one_of(
            &at.field("protocol"),
            Some(protocol),
            &["TCP", "UDP", "SCTP"],
        );
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => {
                report.check(&at.field("name"), names::dns1123_label(name));
                if !names_seen.insert(name.to_string()) {
                    report.push(at.field("name"), format!("duplicate port name {name:?}"));
                }
            }
            None if ports.len() > 1 => report.push(
                at.field("name"),
                "required when a Service has more than one port",
            ),
            None => {}
        }
        if !ports_seen.insert((port.port, protocol.to_string())) {
            report.push(
                at.field("port"),
                format!("duplicate port {}/{protocol}", port.port),
            );
        }
        if let Some(target) = &port.target_port {
            match target {
                IntOrString::Int(0) => {}
                other => report.port_or_name(&at.field("targetPort"), other),
            }
        }
        if let Some(node_port) = port.node_port
            && node_port != 0
        {
            if matches!(kind, "NodePort" | "LoadBalancer") {
                report.port(&at.field("nodePort"), node_port);
            } else {
                report.push(
                    at.field("nodePort"),
                    format!("may only be set for NodePort and LoadBalancer Services, not {kind}"),
                );
            }
        }
    }
}

/// Service features the proxy and the allocator do not implement. Each is refused unless it
/// is unset or at its default, because the Service would otherwise route, expose or address
/// differently from what Kubernetes documents.
fn unsupported_service_features(
    report: &mut Report,
    spec_path: &FieldPath,
    spec: &ServiceSpec,
    kind: &str,
) {
    for (field, policy) in [
        ("externalTrafficPolicy", &spec.external_traffic_policy),
        ("internalTrafficPolicy", &spec.internal_traffic_policy),
    ] {
        if policy.as_deref() == Some("Local") {
            report.push(
                spec_path.field(field),
                "Local is not supported by shipshape yet (the proxy would still send traffic to pods on every node)",
            );
        }
    }
    report.one_of(
        &spec_path.field("ipFamilyPolicy"),
        spec.ip_family_policy.as_deref(),
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
    );
    if spec.ip_family_policy.as_deref() == Some("RequireDualStack") {
        report.push(
            spec_path.field("ipFamilyPolicy"),
            "RequireDualStack is not supported by shipshape: Services get IPv4 addresses only (use SingleStack or PreferDualStack)",
        );
    }
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        let at = spec_path.field("ipFamilies").index(i);
        match family.as_str() {
            "IPv4" => {}
            "IPv6" => report.push(
                at,
                "IPv6 is not supported by shipshape: Services get IPv4 addresses only",
            ),
            other => report.push(at, format!("{other:?} is not an IP family: use IPv4")),
        }
    }
    let non_empty = |list: &Option<Vec<String>>| list.as_ref().is_some_and(|l| !l.is_empty());
    if non_empty(&spec.external_ips) {
        report.push(
            spec_path.field("externalIPs"),
            "is not supported by shipshape yet (nothing would answer on those addresses): use a NodePort or LoadBalancer Service",
        );
    }
    if non_empty(&spec.load_balancer_source_ranges) {
        report.push(
            spec_path.field("loadBalancerSourceRanges"),
            "is not supported by shipshape yet (the load balancer would accept every client)",
        );
    }
    if spec.health_check_node_port.is_some_and(|port| port != 0) {
        report.push(
            spec_path.field("healthCheckNodePort"),
            "is not supported by shipshape: it needs externalTrafficPolicy Local",
        );
    }
    if spec.load_balancer_class.is_some() {
        report.push(
            spec_path.field("loadBalancerClass"),
            "is not supported by shipshape: its built-in load balancer would serve the Service anyway (leave it unset)",
        );
    }
    if kind == "LoadBalancer" && spec.allocate_load_balancer_node_ports == Some(false) {
        report.push(
            spec_path.field("allocateLoadBalancerNodePorts"),
            "false is not supported by shipshape yet (LoadBalancer Services always get node ports)",
        );
    }
}

pub(super) fn endpoints(report: &mut Report, endpoints: &Endpoints) {
    for (i, subset) in endpoints.subsets.iter().flatten().enumerate() {
        let at = FieldPath::parse("subsets").index(i);
        for (field, addresses) in [
            ("addresses", subset.addresses.as_deref()),
            ("notReadyAddresses", subset.not_ready_addresses.as_deref()),
        ] {
            for (j, address) in addresses.unwrap_or(&[]).iter().enumerate() {
                if address.ip.parse::<IpAddr>().is_err() {
                    report.push(
                        at.field(field).index(j).field("ip"),
                        format!("{:?} is not an IP address", address.ip),
                    );
                }
            }
        }
        for (j, port) in subset.ports.iter().flatten().enumerate() {
            report.port(&at.field("ports").index(j).field("port"), port.port);
        }
    }
}

pub(super) fn ingress(report: &mut Report, ingress: &Ingress) {
    let spec_path = FieldPath::parse("spec");
    let Some(spec) = &ingress.spec else {
        report.push(spec_path, "required field is missing");
        return;
    };
    if let Some(class) = &spec.ingress_class_name
        && class != INGRESS_CLASS
    {
        report.push(spec_path.field("ingressClassName"), not_our_class(class));
    }
    let annotations = FieldPath::parse("metadata.annotations");
    for (key, value) in ingress.metadata.annotations.iter().flatten() {
        if key == "kubernetes.io/ingress.class" {
            if value != INGRESS_CLASS {
                report.push(annotations.key(key), not_our_class(value));
            }
        } else if let Some(owner) = FOREIGN_ANNOTATIONS
            .iter()
            .find(|(prefix, _)| key.starts_with(prefix))
            .map(|(_, owner)| owner)
        {
            report.push(
                annotations.key(key),
                format!("is an annotation for {owner}, which does not run here: shipshape's ingress would not act on it (remove it)"),
            );
        }
    }
    if let Some(backend) = &spec.default_backend {
        ingress_backend(report, &spec_path.field("defaultBackend"), backend);
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let at = spec_path.field("rules").index(i);
        if let Some(host) = &rule.host {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            report.check(&at.field("host"), names::dns1123_subdomain(bare));
        }
        let Some(http) = &rule.http else { continue };
        for (j, path) in http.paths.iter().enumerate() {
            let path_at = at.field("http").field("paths").index(j);
            report.one_of(
                &path_at.field("pathType"),
                Some(&path.path_type),
                &["Exact", "Prefix", "ImplementationSpecific"],
            );
            if let Some(p) = &path.path
                && path.path_type != "ImplementationSpecific"
                && !p.starts_with('/')
            {
                report.push(
                    path_at.field("path"),
                    "must be an absolute path (start with '/')",
                );
            }
            ingress_backend(report, &path_at.field("backend"), &path.backend);
        }
    }
}

/// The IngressClass shipshape's ingress controller serves (the default class).
pub const INGRESS_CLASS: &str = "shipshape";

/// The `spec.controller` of that class.
pub const INGRESS_CONTROLLER: &str = "shipshape.dev/ingress";

/// Annotation prefixes other ingress controllers (and cert-manager) act on.
const FOREIGN_ANNOTATIONS: [(&str, &str); 8] = [
    ("nginx.ingress.kubernetes.io/", "ingress-nginx"),
    ("nginx.org/", "NGINX Ingress Controller"),
    ("traefik.ingress.kubernetes.io/", "Traefik"),
    ("ingress.kubernetes.io/", "another ingress controller"),
    ("haproxy.org/", "HAProxy Ingress"),
    (
        "alb.ingress.kubernetes.io/",
        "the AWS Load Balancer Controller",
    ),
    ("cert-manager.io/", "cert-manager"),
    ("acme.cert-manager.io/", "cert-manager"),
];

fn not_our_class(class: &str) -> String {
    format!(
        "{class:?}: no controller here serves that class; shipshape's ingress serves class {INGRESS_CLASS:?} (the default: leave it unset)"
    )
}

/// IngressClasses are not taken from Git: the one class served, `shipshape`, is kept by the
/// ingress controller itself (as the default), and another would serve nothing.
pub(super) fn ingress_class(report: &mut Report, class: &IngressClass) {
    let controller = class
        .spec
        .as_ref()
        .and_then(|spec| spec.controller.as_deref())
        .unwrap_or("");
    let why = if controller == INGRESS_CONTROLLER {
        format!(
            "IngressClass {INGRESS_CLASS:?} is built in (the default class, kept by shipshape's ingress): remove this object"
        )
    } else {
        format!(
            "{controller:?}: no such controller runs here; shipshape's ingress ({INGRESS_CONTROLLER}) serves the built-in class {INGRESS_CLASS:?}: remove this object"
        )
    };
    report.push(FieldPath::parse("spec.controller"), why);
}

fn ingress_backend(report: &mut Report, path: &FieldPath, backend: &IngressBackend) {
    let set = set_fields(backend, Some(&["service", "resource"]));
    report.exactly_one(path, &set, "backend", "service or resource");
    if backend.resource.is_some() {
        report.push(
            path.field("resource"),
            "is not supported: shipshape's ingress sends requests to Services (use backend.service)",
        );
    }
    let Some(service) = &backend.service else {
        return;
    };
    let at = path.field("service");
    report.check(&at.field("name"), names::dns1035_label(&service.name));
    match &service.port {
        Some(port) => {
            let set = set_fields(port, Some(&["name", "number"]));
            report.exactly_one(&at.field("port"), &set, "port", "name or number");
            if let Some(number) = port.number {
                report.port(&at.field("port").field("number"), number);
            }
        }
        None => report.push(at.field("port"), "required field is missing"),
    }
}
