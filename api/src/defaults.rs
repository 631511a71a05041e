//! The API server's defaulting: the values Kubernetes fills in when a manifest leaves them out.
//!
//! Stored objects carry these defaults, as Kubernetes' do, so that kubectl shows the same thing
//! (`Port: 8080/TCP`, probe timings) and controllers can read every field without guessing.
//! Git's comparison of "what changed" uses the manifest as written, not the defaulted object.

use k8s_openapi::api::apps::v1::{
    DaemonSetUpdateStrategy, DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
    RollingUpdateStatefulSetStrategy, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::object::Object;

fn set<T>(field: &mut Option<T>, value: T) {
    if field.is_none() {
        *field = Some(value);
    }
}

/// Fills in what Kubernetes would.
pub fn apply_defaults(object: &mut Object) {
    match object {
        Object::Pod(pod) => {
            if let Some(spec) = &mut pod.spec {
                pod_spec(spec);
            }
        }
        Object::Deployment(deployment) => {
            let spec = &mut deployment.spec;
            set(&mut spec.replicas, 1);
            set(&mut spec.revision_history_limit, 10);
            set(&mut spec.progress_deadline_seconds, 600);
            let strategy = spec
                .strategy
                .get_or_insert_with(DeploymentStrategy::default);
            set(&mut strategy.type_, "RollingUpdate".to_string());
            if strategy.type_.as_deref() == Some("RollingUpdate") {
                let rolling = strategy
                    .rolling_update
                    .get_or_insert_with(RollingUpdateDeployment::default);
                set(&mut rolling.max_surge, IntOrString::String("25%".into()));
                set(
                    &mut rolling.max_unavailable,
                    IntOrString::String("25%".into()),
                );
            }
            template(&mut spec.template);
        }
        Object::ReplicaSet(replica_set) => {
            set(&mut replica_set.spec.replicas, 1);
            if let Some(t) = &mut replica_set.spec.template {
                template(t);
            }
        }
        Object::ReplicationController(controller) => {
            // Kubernetes' SetDefaults_ReplicationController: an empty selector and empty
            // labels come from the template's labels.
            let spec = controller.spec.get_or_insert_with(Default::default);
            set(&mut spec.replicas, 1);
            if let Some(t) = &mut spec.template {
                template(t);
                let labels = t.metadata.as_ref().and_then(|m| m.labels.clone());
                if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
                    spec.selector = labels.clone();
                }
                if controller
                    .metadata
                    .labels
                    .as_ref()
                    .is_none_or(|l| l.is_empty())
                {
                    controller.metadata.labels = labels;
                }
            }
        }
        Object::StatefulSet(set_) => {
            let spec = &mut set_.spec;
            set(&mut spec.replicas, 1);
            set(&mut spec.revision_history_limit, 10);
            set(&mut spec.pod_management_policy, "OrderedReady".to_string());
            let strategy = spec
                .update_strategy
                .get_or_insert_with(StatefulSetUpdateStrategy::default);
            set(&mut strategy.type_, "RollingUpdate".to_string());
            if strategy.type_.as_deref() == Some("RollingUpdate") {
                let rolling = strategy
                    .rolling_update
                    .get_or_insert_with(RollingUpdateStatefulSetStrategy::default);
                set(&mut rolling.partition, 0);
            }
            template(&mut spec.template);
        }
        Object::DaemonSet(daemon_set) => {
            let spec = &mut daemon_set.spec;
            set(&mut spec.revision_history_limit, 10);
            let strategy = spec
                .update_strategy
                .get_or_insert_with(DaemonSetUpdateStrategy::default);
            set(&mut strategy.type_, "RollingUpdate".to_string());
            if strategy.type_.as_deref() == Some("RollingUpdate") {
                let rolling = strategy
                    .rolling_update
                    .get_or_insert_with(RollingUpdateDaemonSet::default);
                set(&mut rolling.max_unavailable, IntOrString::Int(1));
                set(&mut rolling.max_surge, IntOrString::Int(0));
            }
            template(&mut spec.template);
        }
        Object::Job(job) => {
            if let Some(spec) = &mut job.spec {
                if spec.completions.is_none() && spec.parallelism.is_none() {
                    spec.completions = Some(1);
                }
                set(&mut spec.parallelism, 1);
                set(&mut spec.backoff_limit, 6);
                set(&mut spec.completion_mode, "NonIndexed".to_string());
                set(&mut spec.suspend, false);
                template(&mut spec.template);
            }
        }
        Object::CronJob(cron_job) => {
            let spec = &mut cron_job.spec;
            set(&mut spec.concurrency_policy, "Allow".to_string());
            set(&mut spec.suspend, false);
            set(&mut spec.successful_jobs_history_limit, 3);
            set(&mut spec.failed_jobs_history_limit, 1);
            if let Some(job) = &mut spec.job_template.spec {
                set(&mut job.backoff_limit, 6);
                set(&mut job.completion_mode, "NonIndexed".to_string());
                template(&mut job.template);
            }
        }
        Object::Service(service) => {
            if let Some(spec) = &mut service.spec {
                set(&mut spec.type_, "ClusterIP".to_string());
                set(&mut spec.session_affinity, "None".to_string());
                if spec.type_.as_deref() != Some("ExternalName") {
                    set(&mut spec.internal_traffic_policy, "Cluster".to_string());
                }
                for port in spec.ports.iter_mut().flatten() {
                    set(&mut port.protocol, "TCP".to_string());
                    set(&mut port.target_port, IntOrString::Int(port.port));
                    // `nodePort: 0` asks for an allocated port, as leaving it out does. Stored
                    // without it, the port the cluster allocated survives Git's next update.
                    if port.node_port == Some(0) {
                        port.node_port = None;
                    }
                }
            }
        }
        Object::Ingress(ingress) => {
            // The DefaultIngressClass admission plugin: an Ingress naming no class (neither
            // field nor the old annotation) gets the default one at creation.
            let annotated = ingress
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubernetes.io/ingress.class"));
            if let Some(spec) = &mut ingress.spec
                && !annotated
            {
                set(
                    &mut spec.ingress_class_name,
                    crate::validate::INGRESS_CLASS.to_string(),
                );
            }
        }
        Object::Secret(secret) => {
            set(&mut secret.type_, "Opaque".to_string());
            // The API server merges `stringData` into `data` on write (a key in both takes the
            // `stringData` value) and stores no `stringData`: `kubectl get secret -o yaml`
            // shows base64 under `data` only.
            if let Some(plain) = secret.string_data.take() {
                let data = secret.data.get_or_insert_with(Default::default);
                for (key, value) in plain {
                    data.insert(key, k8s_openapi::ByteString(value.into_bytes()));
                }
            }
        }
        _ => {}
    }
}

fn template(template: &mut PodTemplateSpec) {
    if let Some(spec) = &mut template.spec {
        pod_spec(spec);
    }
}

fn pod_spec(spec: &mut PodSpec) {
    set(&mut spec.restart_policy, "Always".to_string());
    set(&mut spec.dns_policy, "ClusterFirst".to_string());
    set(&mut spec.termination_grace_period_seconds, 30);
    set(&mut spec.scheduler_name, "default-scheduler".to_string());
    for c in spec.init_containers.iter_mut().flatten() {
        container(c);
    }
    for c in &mut spec.containers {
        container(c);
    }
}

fn container(container: &mut Container) {
    // Kubernetes pulls `latest` (or an untagged image) every time, anything else if missing.
    let image = container.image.as_deref().unwrap_or_default();
    let latest = crate::image_ref::ImageRef::parse(image)
        .map(|r| r.pulls_always_by_default())
        .unwrap_or(true);
    set(
        &mut container.image_pull_policy,
        if latest { "Always" } else { "IfNotPresent" }.to_string(),
    );
    set(
        &mut container.termination_message_path,
        "/dev/termination-log".to_string(),
    );
    set(
        &mut container.termination_message_policy,
        "File".to_string(),
    );
    for port in container.ports.iter_mut().flatten() {
        set(&mut port.protocol, "TCP".to_string());
    }
    for probe in [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
        &mut container.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        self::probe(probe);
    }
}

fn probe(probe: &mut Probe) {
    set(&mut probe.timeout_seconds, 1);
    set(&mut probe.period_seconds, 10);
    set(&mut probe.success_threshold, 1);
    set(&mut probe.failure_threshold, 3);
    if let Some(http) = &mut probe.http_get {
        set(&mut http.scheme, "HTTP".to_string());
        set(&mut http.path, "/".to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_what_kubernetes_fills() {
        let mut object = Object::from_json(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox",
                    "ports": [{"containerPort": 80}], "readinessProbe": {"httpGet": {"port": 80}}},
                    {"name": "pinned", "image": "registry.local:5000/app:1.2"}]}}}
        }))
        .expect("decodes");
        apply_defaults(&mut object);
        let value = object.to_json();
        let spec = &value["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        let web = &pod["containers"][0];
        assert_eq!(web["imagePullPolicy"], "Always");
        assert_eq!(web["ports"][0]["protocol"], "TCP");
        assert_eq!(web["readinessProbe"]["timeoutSeconds"], 1);
        assert_eq!(web["readinessProbe"]["httpGet"]["path"], "/");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "IfNotPresent");
        // Defaulting twice changes nothing.
        let mut again = object.clone();
        apply_defaults(&mut again);
        assert_eq!(again, object);
    }

    #[test]
    fn a_secret_stores_its_string_data_under_data() {
        let mut object = Object::from_json(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "data": {"user": "YWRh", "password": "b2xk"},
            "stringData": {"password": "new", "host": "db.local"}
        }))
        .expect("decodes");
        apply_defaults(&mut object);
        let value = object.to_json();
        assert_eq!(value["type"], "Opaque");
        assert!(value.get("stringData").is_none(), "{value}");
        assert_eq!(
            value["data"],
            json!({"user": "YWRh", "password": "bmV3", "host": "ZGIubG9jYWw="})
        );
    }

    #[test]
    fn a_replication_controller_selects_its_template_labels_by_default() {
        let mut object = Object::from_json(json!({
            "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "nginx"},
            "spec": {"template": {"metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}
        }))
        .expect("decodes");
        apply_defaults(&mut object);
        let value = object.to_json();
        assert_eq!(value["spec"]["replicas"], 1);
        assert_eq!(value["spec"]["selector"], json!({"app": "nginx"}));
        assert_eq!(value["metadata"]["labels"], json!({"app": "nginx"}));
        assert_eq!(value["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn services_get_protocols_and_target_ports() {
        let mut object = Object::from_json(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}]}
        }))
        .expect("decodes");
        apply_defaults(&mut object);
        let value = object.to_json();
        assert_eq!(value["spec"]["type"], "ClusterIP");
        assert_eq!(value["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(value["spec"]["ports"][0]["targetPort"], 80);
    }

    #[test]
    fn node_port_zero_is_left_for_the_cluster_to_allocate() {
        let mut object = Object::from_json(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 0}, {"port": 81, "nodePort": 30081}]}
        }))
        .expect("decodes");
        apply_defaults(&mut object);
        let value = object.to_json();
        assert!(
            value["spec"]["ports"][0].get("nodePort").is_none(),
            "{value}"
        );
        assert_eq!(value["spec"]["ports"][1]["nodePort"], 30081);
    }
}
