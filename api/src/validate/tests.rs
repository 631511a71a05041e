//! One test per rule: each asserts the exact field path and the gist of the message.

use serde_json::{Value, json};

use super::*;

fn problems(value: Value) -> Vec<(String, String)> {
    let object = Object::from_json(value).expect("decodes");
    validate(&object)
        .into_iter()
        .map(|p| (p.path.to_string(), p.message))
        .collect()
}

fn assert_problem(value: Value, path: &str, needle: &str) {
    let found = problems(value);
    assert!(
        found.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected {path}: …{needle}… in {found:#?}"
    );
}

fn deployment(spec_patch: impl FnOnce(&mut Value)) -> Value {
    let mut value = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox:1.36",
                    "ports": [{"containerPort": 80, "name": "http"}]}]}
            }
        }
    });
    spec_patch(&mut value);
    value
}

fn container(value: &mut Value) -> &mut Value {
    &mut value["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn a_valid_deployment_has_no_problems() {
    assert_eq!(problems(deployment(|_| {})), vec![]);
}

#[test]
fn names_must_be_dns_subdomains() {
    assert_problem(
        deployment(|d| d["metadata"]["name"] = json!("Web_1")),
        "metadata.name",
        "not a valid name",
    );
    assert_problem(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web"},
               "spec": {"ports": [{"port": 80}]}}),
        "metadata.name",
        "starting with a letter",
    );
    assert_problem(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}),
        "metadata.name",
        "at most 63 characters",
    );
}

#[test]
fn names_are_required() {
    assert_problem(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        "metadata.name",
        "required",
    );
    assert_problem(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}),
        "metadata.name",
        "generateName is not supported",
    );
}

#[test]
fn labels_and_annotations_follow_the_syntax() {
    assert_problem(
        deployment(|d| d["metadata"]["labels"] = json!({"bad key!": "x"})),
        "metadata.labels[bad key!]",
        "not a valid key",
    );
    assert_problem(
        deployment(|d| d["metadata"]["labels"] = json!({"app": "has space"})),
        "metadata.labels[app]",
        "not a valid label value",
    );
    assert_problem(
        deployment(|d| d["metadata"]["annotations"] = json!({"UPPER.example.com/x": "1"})),
        "metadata.annotations[UPPER.example.com/x]",
        "prefix",
    );
}

#[test]
fn a_selector_must_match_its_template() {
    assert_problem(
        deployment(|d| d["spec"]["selector"] = json!({"matchLabels": {"app": "api"}})),
        "spec.template.metadata.labels",
        "do not match spec.selector",
    );
    assert_problem(
        deployment(|d| d["spec"]["selector"] = json!({})),
        "spec.selector",
        "must not be empty",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "In"}]})
        }),
        "spec.selector.matchExpressions[0].values",
        "must not be empty",
    );
}

#[test]
fn a_replication_controller_selects_its_template_with_a_label_map() {
    let controller = |selector: Value| {
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "nginx"},
            "spec": {"replicas": 3, "selector": selector, "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}})
    };
    // Left out, the selector is the template's labels (Kubernetes' defaulting).
    assert_eq!(problems(controller(Value::Null)), vec![]);
    assert_eq!(problems(controller(json!({"app": "nginx"}))), vec![]);
    assert_problem(
        controller(json!({"app": "web"})),
        "spec.template.metadata.labels",
        "do not match spec.selector",
    );
    let mut restarts = controller(Value::Null);
    restarts["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_problem(restarts, "spec.template.spec.restartPolicy", "");
}

#[test]
fn a_pod_deadline_fits_in_32_bits() {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"activeDeadlineSeconds": i64::MAX, "containers": [{"name": "c", "image": "busybox"}]}});
    assert_problem(
        pod.clone(),
        "spec.activeDeadlineSeconds",
        "between 1 and 2147483647",
    );
    pod["spec"]["activeDeadlineSeconds"] = json!(2147483647);
    assert_eq!(problems(pod), vec![]);
}

#[test]
fn ports_must_be_in_range() {
    assert_problem(
        deployment(|d| container(d)["ports"][0]["containerPort"] = json!(70000)),
        "spec.template.spec.containers[0].ports[0].containerPort",
        "not a valid port number",
    );
    assert_problem(
        deployment(|d| container(d)["ports"][0]["name"] = json!("http_port")),
        "spec.template.spec.containers[0].ports[0].name",
        "not a valid port name",
    );
    assert_problem(
        deployment(|d| container(d)["ports"][0]["protocol"] = json!("tcp")),
        "spec.template.spec.containers[0].ports[0].protocol",
        "\"TCP\"",
    );
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "ClusterIP", "ports": [{"port": 0}, {"port": 80, "targetPort": "bad_name", "nodePort": 30080}]}});
    assert_problem(
        service.clone(),
        "spec.ports[0].port",
        "not a valid port number",
    );
    assert_problem(service.clone(), "spec.ports[0].name", "more than one port");
    assert_problem(
        service.clone(),
        "spec.ports[1].targetPort",
        "not a valid port name",
    );
    assert_problem(
        service,
        "spec.ports[1].nodePort",
        "only be set for NodePort",
    );
}

#[test]
fn quantities_must_parse_and_requests_fit_limits() {
    assert_problem(
        deployment(|d| container(d)["resources"] = json!({"requests": {"cpu": "1x"}})),
        "spec.template.spec.containers[0].resources.requests[cpu]",
        "not a quantity",
    );
    assert_problem(
        deployment(|d| {
            container(d)["resources"] =
                json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}})
        }),
        "spec.template.spec.containers[0].resources.requests[memory]",
        "less than or equal to the memory limit",
    );
    assert_problem(
        deployment(|d| container(d)["resources"] = json!({"limits": {"gpu": "1"}})),
        "spec.template.spec.containers[0].resources.limits[gpu]",
        "not a resource name",
    );
}

#[test]
fn containers_need_images_and_unique_names() {
    assert_problem(
        deployment(|d| container(d)["image"] = Value::Null),
        "spec.template.spec.containers[0].image",
        "required",
    );
    assert_problem(
        deployment(|d| {
            let first = container(d).clone();
            d["spec"]["template"]["spec"]["containers"] = json!([first.clone(), first]);
        }),
        "spec.template.spec.containers[1].name",
        "duplicate container name",
    );
    assert_problem(
        deployment(|d| d["spec"]["template"]["spec"]["containers"] = json!([])),
        "spec.template.spec.containers",
        "at least one container",
    );
}

#[test]
fn images_must_be_references_a_registry_can_serve() {
    let field = "spec.template.spec.containers[0].image";
    for (image, reason) in [
        ("Nginx:1.27", "not an image reference"),
        ("nginx:1.27:2", "not an image reference"),
        ("nginx@sha256:abc", "not an image reference"),
        ("registry.example:5000/", "not an image reference"),
    ] {
        assert_problem(
            deployment(|d| container(d)["image"] = json!(image)),
            field,
            reason,
        );
    }
    assert_problem(
        deployment(|d| container(d)["image"] = json!(" nginx")),
        field,
        "whitespace",
    );
    for image in [
        "nginx",
        "ghcr.io/org/app:v1.2.3",
        "registry.example:5000/team/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "localhost/app:dev",
    ] {
        assert_eq!(
            problems(deployment(|d| container(d)["image"] = json!(image))),
            vec![],
            "{image}"
        );
    }
    assert_problem(
        deployment(|d| container(d)["imagePullPolicy"] = json!("Sometimes")),
        "spec.template.spec.containers[0].imagePullPolicy",
        "Always",
    );
}

#[test]
fn mounts_need_a_declared_volume() {
    assert_problem(
        deployment(|d| {
            container(d)["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}])
        }),
        "spec.template.spec.containers[0].volumeMounts[0].name",
        "no volume named \"data\"",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["volumes"] =
                json!([{"name": "data", "nfs": {"server": "x", "path": "/"}}])
        }),
        "spec.template.spec.volumes[0].nfs",
        "not supported",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["volumes"] =
                json!([{"name": "data", "emptyDir": {}, "hostPath": {"path": "/x"}}])
        }),
        "spec.template.spec.volumes[0]",
        "only one volume source",
    );
}

#[test]
fn probes_need_exactly_one_handler_and_sane_timing() {
    assert_problem(
        deployment(|d| container(d)["livenessProbe"] = json!({"periodSeconds": 5})),
        "spec.template.spec.containers[0].livenessProbe",
        "handler is required",
    );
    assert_problem(
        deployment(|d| {
            container(d)["readinessProbe"] =
                json!({"httpGet": {"port": 80}, "tcpSocket": {"port": 80}})
        }),
        "spec.template.spec.containers[0].readinessProbe",
        "only one handler",
    );
    assert_problem(
        deployment(|d| {
            container(d)["livenessProbe"] =
                json!({"tcpSocket": {"port": 80}, "successThreshold": 2, "periodSeconds": 0})
        }),
        "spec.template.spec.containers[0].livenessProbe.successThreshold",
        "must be 1",
    );
    assert_problem(
        deployment(|d| {
            container(d)["livenessProbe"] = json!({"tcpSocket": {"port": 80}, "periodSeconds": 0})
        }),
        "spec.template.spec.containers[0].livenessProbe.periodSeconds",
        "greater than or equal to 1",
    );
}

#[test]
fn env_sources_are_exclusive() {
    assert_problem(
        deployment(
            |d| container(d)["env"] = json!([{"name": "A", "value": "x", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]),
        ),
        "spec.template.spec.containers[0].env[0].valueFrom",
        "may not be set when value is set",
    );
    assert_problem(
        deployment(|d| container(d)["env"] = json!([{"name": "A=B", "value": "x"}])),
        "spec.template.spec.containers[0].env[0].name",
        "not a valid environment variable name",
    );
    assert_problem(
        deployment(|d| container(d)["envFrom"] = json!([{"prefix": "X_"}])),
        "spec.template.spec.containers[0].envFrom[0]",
        "source is required",
    );
}

#[test]
fn rollout_settings_are_checked() {
    assert_problem(
        deployment(
            |d| d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
        ),
        "spec.strategy.rollingUpdate.maxUnavailable",
        "may not be 0 when maxSurge is 0",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})
        }),
        "spec.strategy.rollingUpdate",
        "Recreate",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["strategy"] = json!({"rollingUpdate": {"maxUnavailable": "150%"}})
        }),
        "spec.strategy.rollingUpdate.maxUnavailable",
        "out of range",
    );
    assert_problem(
        deployment(|d| d["spec"]["replicas"] = json!(-1)),
        "spec.replicas",
        "greater than or equal to 0",
    );
    assert_problem(
        deployment(|d| d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never")),
        "spec.template.spec.restartPolicy",
        "\"Always\"",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["minReadySeconds"] = json!(30);
            d["spec"]["progressDeadlineSeconds"] = json!(10);
        }),
        "spec.progressDeadlineSeconds",
        "greater than minReadySeconds",
    );
}

#[test]
fn jobs_must_not_restart_always() {
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"backoffLimit": -1, "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    assert_problem(job.clone(), "spec.template.spec.restartPolicy", "required");
    assert_problem(job, "spec.backoffLimit", "greater than or equal to 0");
}

#[test]
fn cron_schedules_are_parsed() {
    let cron = |schedule: &str, name: &str| {
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    };
    assert_eq!(problems(cron("*/5 * * * *", "ok")), vec![]);
    assert_eq!(problems(cron("@hourly", "ok")), vec![]);
    assert_problem(
        cron("61 * * * *", "bad"),
        "spec.schedule",
        "not a valid cron schedule",
    );
    assert_problem(cron("0 * * * * *", "bad"), "spec.schedule", "five fields");
    assert_problem(
        cron("TZ=UTC 0 * * * *", "bad"),
        "spec.schedule",
        "spec.timeZone",
    );
    assert_problem(
        cron("@hourly", &"x".repeat(53)),
        "metadata.name",
        "52 characters",
    );
}

#[test]
fn services_check_their_type_and_addresses() {
    assert_problem(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"type": "NodePort", "clusterIP": "None", "ports": [{"port": 5432}]}}),
        "spec.clusterIP",
        "only valid for type ClusterIP",
    );
    assert_problem(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"clusterIP": "10.96.0.300", "ports": [{"port": 5432}]}}),
        "spec.clusterIP",
        "not an IP address",
    );
    assert_problem(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName"}}),
        "spec.externalName",
        "required",
    );
    assert_problem(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {}}),
        "spec.ports",
        "at least one port",
    );
}

#[test]
fn config_keys_become_file_names() {
    assert_problem(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a/b": "x"}}),
        "data[a/b]",
        "not a valid key",
    );
    assert_problem(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": "x"}}),
        "data[tls.key]",
        "required for type kubernetes.io/tls",
    );
}

#[test]
fn claims_need_storage_and_access_modes() {
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteSometimes"], "resources": {"requests": {}}}});
    assert_problem(claim.clone(), "spec.accessModes[0]", "\"ReadWriteOnce\"");
    assert_problem(claim, "spec.resources.requests[storage]", "required");
}

#[test]
fn stateful_sets_may_mount_their_claim_templates() {
    let set = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "podManagementPolicy": "Sometimes",
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "busybox",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}});
    assert_eq!(
        problems(set),
        vec![(
            "spec.podManagementPolicy".to_string(),
            "\"Sometimes\" is not supported: use \"OrderedReady\" or \"Parallel\"".to_string()
        )]
    );
}

#[test]
fn tolerations_follow_their_operator() {
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["tolerations"] =
                json!([{"key": "k", "operator": "Exists", "value": "v"}])
        }),
        "spec.template.spec.tolerations[0].value",
        "must be empty when operator is Exists",
    );
}

#[test]
fn affinity_terms_the_scheduler_cannot_honour_are_refused() {
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "topologyKey": "kubernetes.io/hostname",
                    "namespaceSelector": {"matchLabels": {"team": "a"}}}]}})
        }),
        "spec.template.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaceSelector",
        "not supported",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["affinity"] = json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.labels", "operator": "In", "values": ["x"]}]}]}}})
        }),
        "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key",
        "only metadata.name",
    );
}

#[test]
fn budgets_and_autoscalers_are_consistent() {
    assert_problem(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
            "spec": {"minAvailable": 1, "maxUnavailable": 1}}),
        "spec.maxUnavailable",
        "together with minAvailable",
    );
    assert_problem(
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "minReplicas": 5, "maxReplicas": 2}}),
        "spec.maxReplicas",
        "greater than or equal to minReplicas",
    );
}

#[test]
fn ingress_paths_and_backends_are_checked() {
    assert_problem(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
            "spec": {"rules": [{"host": "Example.COM", "http": {"paths": [
                {"path": "web", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        "spec.rules[0].http.paths[0].path",
        "absolute path",
    );
    let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
    assert_problem(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
            "spec": {"ingressClassName": "nginx", "defaultBackend": backend}}),
        "spec.ingressClassName",
        "\"nginx\": no controller here serves that class",
    );
    assert_problem(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "i", "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"}},
            "spec": {"defaultBackend": backend}}),
        "metadata.annotations[nginx.ingress.kubernetes.io/rewrite-target]",
        "annotation for ingress-nginx, which does not run here",
    );
    assert_problem(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
            "spec": {"defaultBackend": {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}}}}),
        "spec.defaultBackend.resource",
        "sends requests to Services",
    );
    assert_problem(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "nginx"},
            "spec": {"controller": "k8s.io/ingress-nginx"}}),
        "spec.controller",
        "no such controller runs here",
    );
    // The class served, named or by default, is accepted.
    for spec in [
        json!({"ingressClassName": "shipshape", "defaultBackend": backend}),
        json!({"defaultBackend": backend}),
    ] {
        let found = problems(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"}, "spec": spec}));
        assert!(found.is_empty(), "{found:?}");
    }
}

#[test]
fn downward_api_references_name_fields_the_kubelet_serves() {
    let env = |from: Value| {
        deployment(|d| container(d)["env"] = json!([{"name": "X", "valueFrom": from}]))
    };
    assert_problem(
        env(json!({"fieldRef": {"fieldPath": "spec.hostname"}})),
        "spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        "\"spec.hostname\" is not supported",
    );
    // The whole label map is for volumes only.
    assert_problem(
        env(json!({"fieldRef": {"fieldPath": "metadata.labels"}})),
        "spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        "is not supported",
    );
    assert_problem(
        env(json!({"fieldRef": {"fieldPath": "metadata.labels['bad key']"}})),
        "spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        "",
    );
    assert_problem(
        env(json!({"resourceFieldRef": {"resource": "limits.gpu"}})),
        "spec.template.spec.containers[0].env[0].valueFrom.resourceFieldRef.resource",
        "\"limits.gpu\" is not supported",
    );
    assert_problem(
        env(json!({"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1Mi"}})),
        "spec.template.spec.containers[0].env[0].valueFrom.resourceFieldRef.divisor",
        "is not a divisor of limits.cpu",
    );
    assert_problem(
        env(json!({"resourceFieldRef": {"resource": "limits.memory", "containerName": "db"}})),
        "spec.template.spec.containers[0].env[0].valueFrom.resourceFieldRef.containerName",
        "no container named \"db\"",
    );
    assert_problem(
        env(json!({"fileKeyRef": {"volumeName": "v", "path": "p", "key": "k"}})),
        "spec.template.spec.containers[0].env[0].valueFrom.fileKeyRef",
        "not supported",
    );
    for fine in [
        json!({"fieldRef": {"fieldPath": "metadata.labels['app']"}}),
        json!({"fieldRef": {"fieldPath": "metadata.annotations['example.com/owner']"}}),
        json!({"fieldRef": {"fieldPath": "status.hostIPs"}}),
        json!({"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}),
        json!({"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m", "containerName": "web"}}),
    ] {
        assert_eq!(problems(env(fine.clone())), vec![], "{fine}");
    }
}

#[test]
fn downward_api_and_projected_volumes_are_checked() {
    let volume = |v: Value| deployment(|d| d["spec"]["template"]["spec"]["volumes"] = json!([v]));
    let at = "spec.template.spec.volumes[0]";
    assert_problem(
        volume(json!({"name": "info", "downwardAPI": {"items": [
            {"path": "node", "fieldRef": {"fieldPath": "spec.nodeName"}}]}})),
        &format!("{at}.downwardAPI.items[0].fieldRef.fieldPath"),
        "\"spec.nodeName\" is not supported",
    );
    assert_problem(
        volume(json!({"name": "info", "downwardAPI": {"items": [
            {"path": "cpu", "resourceFieldRef": {"resource": "limits.cpu"}}]}})),
        &format!("{at}.downwardAPI.items[0].resourceFieldRef.containerName"),
        "required",
    );
    assert_problem(
        volume(json!({"name": "info", "downwardAPI": {"items": [
            {"path": "../x", "fieldRef": {"fieldPath": "metadata.name"}}]}})),
        &format!("{at}.downwardAPI.items[0].path"),
        "'..'",
    );
    assert_problem(
        volume(json!({"name": "all", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}}]}})),
        &format!("{at}.projected.sources[0].serviceAccountToken"),
        "no token or certificate issuer",
    );
    assert_problem(
        volume(json!({"name": "all", "projected": {"sources": [
            {"configMap": {"name": "a", "items": [{"key": "k", "path": "same"}]}},
            {"downwardAPI": {"items": [{"path": "same", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}})),
        &format!("{at}.projected.sources[1].downwardAPI.items[0].path"),
        "projected twice",
    );
    assert_problem(
        volume(json!({"name": "all", "projected": {"defaultMode": 0o1777, "sources": []}})),
        &format!("{at}.projected.defaultMode"),
        "not a file mode",
    );
    let fine = volume(
        json!({"name": "all", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "a"}},
        {"secret": {"name": "b", "optional": true}},
        {"downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "web", "resource": "limits.memory", "divisor": "1Mi"}}]}}]}}),
    );
    assert_eq!(problems(fine), vec![]);
}

#[test]
fn host_namespaces_are_refused() {
    // The host's network is honoured (the kubelet joins no namespace of the pod's).
    assert_eq!(
        problems(deployment(
            |d| d["spec"]["template"]["spec"]["hostNetwork"] = json!(true)
        )),
        vec![]
    );
    for field in ["hostPID", "hostIPC"] {
        assert_problem(
            deployment(|d| d["spec"]["template"]["spec"][field] = json!(true)),
            &format!("spec.template.spec.{field}"),
            "not supported",
        );
        assert_eq!(
            problems(deployment(
                |d| d["spec"]["template"]["spec"][field] = json!(false)
            )),
            vec![]
        );
    }
}

#[test]
fn dns_config_is_what_resolv_conf_can_hold() {
    let spec = |patch: Value| {
        deployment(|d| {
            let spec = &mut d["spec"]["template"]["spec"];
            for (key, value) in patch.as_object().into_iter().flatten() {
                spec[key] = value.clone();
            }
        })
    };
    let at = "spec.template.spec.dnsConfig";
    assert_problem(
        spec(json!({"dnsPolicy": "None"})),
        &format!("{at}.nameservers"),
        "at least one nameserver",
    );
    assert_problem(
        spec(json!({"dnsConfig": {"nameservers": ["dns.example"]}})),
        &format!("{at}.nameservers[0]"),
        "not an IP address",
    );
    assert_problem(
        spec(json!({"dnsConfig": {"nameservers": ["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]}})),
        &format!("{at}.nameservers"),
        "at most 3",
    );
    assert_problem(
        spec(json!({"dnsConfig": {"options": [{"value": "2"}]}})),
        &format!("{at}.options[0].name"),
        "required",
    );
    assert_eq!(
        problems(spec(json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["example.com"],
            "options": [{"name": "ndots", "value": "2"}]}}))),
        vec![]
    );
}

#[test]
fn spread_constraints_and_preferred_terms_are_checked() {
    let with_spread = |constraint: Value| {
        deployment(|d| {
            d["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([constraint])
        })
    };
    let at = "spec.template.spec.topologySpreadConstraints[0]";
    let zone = "topology.kubernetes.io/zone";
    assert_problem(
        with_spread(
            json!({"maxSkew": 0, "topologyKey": zone, "whenUnsatisfiable": "DoNotSchedule"}),
        ),
        &format!("{at}.maxSkew"),
        "greater than or equal to 1",
    );
    assert_problem(
        with_spread(json!({"maxSkew": 1, "topologyKey": zone, "whenUnsatisfiable": "Sometimes"})),
        &format!("{at}.whenUnsatisfiable"),
        "not supported",
    );
    assert_problem(
        with_spread(json!({"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "DoNotSchedule"})),
        &format!("{at}.topologyKey"),
        "required",
    );
    assert_problem(
        with_spread(
            json!({"maxSkew": 1, "topologyKey": zone, "whenUnsatisfiable": "ScheduleAnyway",
                           "minDomains": 2}),
        ),
        &format!("{at}.minDomains"),
        "DoNotSchedule",
    );
    assert_problem(
        with_spread(
            json!({"maxSkew": 1, "topologyKey": zone, "whenUnsatisfiable": "DoNotSchedule",
                           "nodeTaintsPolicy": "Always"}),
        ),
        &format!("{at}.nodeTaintsPolicy"),
        "not supported",
    );
    assert_problem(
        with_spread(
            json!({"maxSkew": 1, "topologyKey": zone, "whenUnsatisfiable": "DoNotSchedule",
                           "labelSelector": {"matchLabels": {"app": "web"}},
                           "matchLabelKeys": ["app"]}),
        ),
        &format!("{at}.matchLabelKeys[0]"),
        "also in labelSelector",
    );
    let fine = json!({"maxSkew": 1, "topologyKey": zone, "whenUnsatisfiable": "DoNotSchedule",
                      "minDomains": 2, "nodeAffinityPolicy": "Ignore", "nodeTaintsPolicy": "Honor",
                      "labelSelector": {"matchLabels": {"app": "web"}},
                      "matchLabelKeys": ["pod-template-hash"]});
    assert_eq!(problems(with_spread(fine.clone())), Vec::new());
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([fine.clone(), fine])
        }),
        "spec.template.spec.topologySpreadConstraints[1]",
        "duplicate constraint",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["affinity"] = json!({"nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 0, "preference": {
                    "matchExpressions": [{"key": "disk", "operator": "Near"}]}}]}})
        }),
        "spec.template.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
        "between 1 and 100",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["affinity"] = json!({"nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {
                    "matchExpressions": [{"key": "disk", "operator": "Near"}]}}]}})
        }),
        "spec.template.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].operator",
        "not supported",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 101, "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "topologyKey": "kubernetes.io/hostname"}}]}})
        }),
        "spec.template.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
        "between 1 and 100",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["affinity"] = json!({"podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "matchLabelKeys": ["pod-template-hash"],
                    "topologyKey": "kubernetes.io/hostname"}]}})
        }),
        "spec.template.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].matchLabelKeys",
        "not supported",
    );
}

#[test]
fn security_settings_the_kubelet_cannot_apply_are_refused() {
    let pod = "spec.template.spec";
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["securityContext"] =
                json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "my.json"}})
        }),
        &format!("{pod}.securityContext.seccompProfile.type"),
        "no seccomp profile directory",
    );
    assert_problem(
        deployment(|d| {
            container(d)["securityContext"] = json!({"appArmorProfile": {"type": "Localhost",
                "localhostProfile": "k8s-apparmor-example"}})
        }),
        &format!("{pod}.containers[0].securityContext.appArmorProfile.type"),
        "no AppArmor profile",
    );
    assert_problem(
        deployment(|d| {
            container(d)["securityContext"] = json!({"seLinuxOptions": {"level": "s0:c123,c456"}})
        }),
        &format!("{pod}.containers[0].securityContext.seLinuxOptions"),
        "not supported",
    );
    assert_problem(
        deployment(|d| container(d)["securityContext"] = json!({"procMount": "Unmasked"})),
        &format!("{pod}.containers[0].securityContext.procMount"),
        "not supported",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["securityContext"] =
                json!({"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]})
        }),
        &format!("{pod}.securityContext.sysctls"),
        "not supported",
    );
    assert_problem(
        deployment(|d| d["spec"]["template"]["spec"]["shareProcessNamespace"] = json!(true)),
        &format!("{pod}.shareProcessNamespace"),
        "not supported",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["securityContext"] = json!({"supplementalGroups": [-1]})
        }),
        &format!("{pod}.securityContext.supplementalGroups[0]"),
        "greater than or equal to 0",
    );
    let honoured = deployment(|d| {
        d["spec"]["template"]["spec"]["securityContext"] = json!({
            "fsGroup": 2000, "supplementalGroups": [3000],
            "seccompProfile": {"type": "Unconfined"}});
        container(d)["securityContext"] = json!({"privileged": true, "procMount": "Default",
            "appArmorProfile": {"type": "Unconfined"}});
    });
    assert_eq!(problems(honoured), vec![]);
}

#[test]
fn host_ports_are_forwarded_to_pods_and_must_be_the_host_networks_own_on_it() {
    let at = "spec.template.spec.containers[0].ports[0].hostPort";
    assert_eq!(
        problems(deployment(|d| {
            container(d)["ports"][0]["hostPort"] = json!(8080);
            container(d)["ports"][0]["hostIP"] = json!("127.0.0.1");
        })),
        vec![],
        "off the host's network the node forwards it to the pod"
    );
    assert_problem(
        deployment(|d| container(d)["ports"][0]["hostPort"] = json!(70000)),
        at,
        "65535",
    );
    assert_problem(
        deployment(|d| {
            container(d)["ports"][0]["hostPort"] = json!(8080);
            container(d)["ports"][0]["hostIP"] = json!("::1");
        }),
        "spec.template.spec.containers[0].ports[0].hostIP",
        "\"::1\" is not an IPv4 address",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
            container(d)["ports"][0]["hostPort"] = json!(8080);
        }),
        at,
        "must equal containerPort (80)",
    );
    assert_eq!(
        problems(deployment(|d| {
            d["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
            container(d)["ports"][0]["hostPort"] = json!(80);
        })),
        vec![]
    );
}

#[test]
fn a_host_port_is_taken_once_per_protocol_and_host_ip_in_a_pod() {
    let second = json!({"name": "second", "image": "busybox:1.36", "ports": [
        {"containerPort": 81, "hostPort": 8080}
    ]});
    let twice = deployment(|d| {
        container(d)["ports"][0]["hostPort"] = json!(8080);
        let first = container(d).clone();
        d["spec"]["template"]["spec"]["containers"] = json!([first, second]);
    });
    assert_eq!(
        problems(twice),
        vec![(
            "spec.template.spec.containers[1].ports[0].hostPort".to_string(),
            "duplicate value \"TCP//8080\": another port of the pod already has this protocol, hostIP and hostPort".to_string()
        )]
    );
    assert_problem(
        deployment(|d| {
            container(d)["ports"] = json!([
                {"containerPort": 80, "hostPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 81, "hostPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"}
            ]);
        }),
        "spec.template.spec.containers[0].ports[1].hostPort",
        "duplicate value \"UDP/127.0.0.1/53\"",
    );
    // A wildcard host IP takes the port on every address.
    assert_problem(
        deployment(|d| {
            container(d)["ports"] = json!([
                {"containerPort": 80, "hostPort": 8080, "hostIP": "127.0.0.1"},
                {"containerPort": 81, "hostPort": 8080, "hostIP": "0.0.0.0"}
            ]);
        }),
        "spec.template.spec.containers[0].ports[1].hostPort",
        "\"TCP/0.0.0.0/8080\" overlaps \"TCP/127.0.0.1/8080\"",
    );
    // Another protocol, other host IPs, or an init container (they run one at a time).
    let apart = deployment(|d| {
        container(d)["ports"] = json!([
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 80, "hostPort": 8080, "protocol": "UDP"},
            {"containerPort": 81, "hostPort": 8081, "hostIP": "127.0.0.1"},
            {"containerPort": 82, "hostPort": 8081, "hostIP": "127.0.0.2"}
        ]);
        d["spec"]["template"]["spec"]["initContainers"] = json!([
            {"name": "init", "image": "busybox:1.36", "ports": [{"containerPort": 80, "hostPort": 8080}]}
        ]);
    });
    assert_eq!(problems(apart), vec![]);
}

#[test]
fn a_host_ip_must_be_an_ip_address() {
    for host_port in [json!(8080), json!(null)] {
        assert_problem(
            deployment(|d| {
                container(d)["ports"][0]["hostPort"] = host_port.clone();
                container(d)["ports"][0]["hostIP"] = json!("localhost");
            }),
            "spec.template.spec.containers[0].ports[0].hostIP",
            "\"localhost\" must be a valid IP address",
        );
    }
}

#[test]
fn plain_init_containers_may_not_have_lifecycle_hooks() {
    let hooked = deployment(|d| {
        d["spec"]["template"]["spec"]["initContainers"] = json!([
            {"name": "init", "image": "busybox:1.36",
             "lifecycle": {"postStart": {"exec": {"command": ["true"]}}}}
        ]);
    });
    assert_eq!(
        problems(hooked),
        vec![(
            "spec.template.spec.initContainers[0].lifecycle".to_string(),
            "may not be set for init containers (unless restartPolicy is Always)".to_string()
        )]
    );
    let app = deployment(|d| {
        container(d)["lifecycle"] = json!({"postStart": {"exec": {"command": ["true"]}}});
    });
    assert_eq!(problems(app), vec![]);
}

#[test]
fn runtime_default_seccomp_is_accepted_and_localhost_refused_at_either_level() {
    let pod = "spec.template.spec";
    let restricted = deployment(|d| {
        d["spec"]["template"]["spec"]["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 1000,
                   "seccompProfile": {"type": "RuntimeDefault"}});
        container(d)["securityContext"] = json!({"allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}});
    });
    assert_eq!(problems(restricted), vec![]);
    assert_problem(
        deployment(|d| {
            container(d)["securityContext"] = json!({"seccompProfile": {"type": "Localhost",
                "localhostProfile": "profiles/audit.json"}})
        }),
        &format!("{pod}.containers[0].securityContext.seccompProfile.type"),
        "use RuntimeDefault or Unconfined",
    );
    assert_problem(
        deployment(|d| {
            container(d)["securityContext"] = json!({"seccompProfile": {"type": "Strict"}})
        }),
        &format!("{pod}.containers[0].securityContext.seccompProfile.type"),
        "\"Strict\" is not supported",
    );
    assert_problem(
        deployment(|d| {
            d["spec"]["template"]["spec"]["securityContext"] = json!({"seccompProfile":
                {"type": "RuntimeDefault", "localhostProfile": "audit.json"}})
        }),
        &format!("{pod}.securityContext.seccompProfile.localhostProfile"),
        "only be set when type is Localhost",
    );
}

/// Every problem of `value`, which must be exactly the refusals at `paths` (one each).
fn assert_only_refused(value: Value, paths: &[&str]) {
    let found = problems(value);
    let mut refused: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    refused.sort_unstable();
    let mut expected = paths.to_vec();
    expected.sort_unstable();
    assert_eq!(refused, expected, "{found:#?}");
    assert!(
        found.iter().all(|(_, m)| m.contains("not supported")),
        "{found:#?}"
    );
}

fn job_with(spec: Value) -> Value {
    let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"completions": 3, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
    if let (Some(target), Some(patch)) = (job["spec"].as_object_mut(), spec.as_object()) {
        target.extend(patch.clone());
    }
    job
}

#[test]
fn job_features_the_controller_lacks_are_refused_and_their_defaults_kept() {
    assert_only_refused(
        job_with(
            json!({"completionMode": "Indexed", "backoffLimitPerIndex": 1,
            "maxFailedIndexes": 1, "podReplacementPolicy": "Failed",
            "managedBy": "kueue.x-k8s.io/multikueue",
            "podFailurePolicy": {"rules": [{"action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget"}]}]},
            "successPolicy": {"rules": [{"succeededCount": 1}]}}),
        ),
        &[
            "spec.completionMode",
            "spec.backoffLimitPerIndex",
            "spec.maxFailedIndexes",
            "spec.podReplacementPolicy",
            "spec.managedBy",
            "spec.podFailurePolicy",
            "spec.successPolicy",
        ],
    );
    assert_problem(
        job_with(json!({"completionMode": "Indexed"})),
        "spec.completionMode",
        "Indexed is not supported by shipshape yet (pods would run without completion indexes)",
    );
    assert_eq!(
        problems(job_with(json!({"completionMode": "NonIndexed",
            "podReplacementPolicy": "TerminatingOrFailed",
            "managedBy": "kubernetes.io/job-controller"}))),
        vec![]
    );
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"completions": 2,
            "completionMode": "Indexed",
            "template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    assert_only_refused(cron, &["spec.jobTemplate.spec.completionMode"]);
}

#[test]
fn rollout_features_the_controllers_lack_are_refused_and_their_defaults_kept() {
    for paused in [true, false] {
        assert_eq!(
            problems(deployment(|d| d["spec"]["paused"] = json!(paused))),
            vec![]
        );
    }
    let daemon_set = |rolling: Value| {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "a", "image": "busybox"}]}}}})
    };
    assert_only_refused(
        daemon_set(json!({"maxSurge": 1, "maxUnavailable": 0})),
        &["spec.updateStrategy.rollingUpdate.maxSurge"],
    );
    assert_only_refused(
        daemon_set(json!({"maxSurge": "10%"})),
        &["spec.updateStrategy.rollingUpdate.maxSurge"],
    );
    assert_eq!(
        problems(daemon_set(json!({"maxSurge": 0, "maxUnavailable": 1}))),
        vec![]
    );
    let stateful_set = |start: i64| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"serviceName": "db", "ordinals": {"start": start},
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "db", "image": "busybox"}]}}}})
    };
    assert_only_refused(stateful_set(5), &["spec.ordinals.start"]);
    assert_eq!(problems(stateful_set(0)), vec![]);
}

#[test]
fn service_features_the_proxy_lacks_are_refused_and_their_defaults_kept() {
    let service = |patch: Value| {
        let mut service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}]}});
        if let (Some(target), Some(patch)) = (service["spec"].as_object_mut(), patch.as_object()) {
            target.extend(patch.clone());
        }
        service
    };
    assert_only_refused(
        service(
            json!({"externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
            "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
            "externalIPs": ["198.51.100.7"], "loadBalancerSourceRanges": ["10.0.0.0/8"],
            "healthCheckNodePort": 30999, "loadBalancerClass": "example.com/lb",
            "allocateLoadBalancerNodePorts": false}),
        ),
        &[
            "spec.externalTrafficPolicy",
            "spec.internalTrafficPolicy",
            "spec.ipFamilyPolicy",
            "spec.ipFamilies[1]",
            "spec.externalIPs",
            "spec.loadBalancerSourceRanges",
            "spec.healthCheckNodePort",
            "spec.loadBalancerClass",
            "spec.allocateLoadBalancerNodePorts",
        ],
    );
    assert_eq!(
        problems(service(json!({"externalTrafficPolicy": "Cluster",
            "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack",
            "ipFamilies": ["IPv4"], "externalIPs": [], "loadBalancerSourceRanges": [],
            "allocateLoadBalancerNodePorts": true, "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}))),
        vec![]
    );
    assert_eq!(
        problems(service(json!({"ipFamilyPolicy": "PreferDualStack"}))),
        vec![]
    );
}

#[test]
fn pod_features_the_kubelet_and_scheduler_lack_are_refused_and_their_defaults_kept() {
    let pod = "spec.template.spec";
    assert_only_refused(
        deployment(|d| {
            let spec = &mut d["spec"]["template"]["spec"];
            spec["priorityClassName"] = json!("system-cluster-critical");
            spec["priority"] = json!(1000);
            spec["runtimeClassName"] = json!("gvisor");
            spec["overhead"] = json!({"cpu": "250m"});
            spec["readinessGates"] = json!([{"conditionType": "example.com/ready"}]);
            spec["schedulingGates"] = json!([{"name": "example.com/wait"}]);
            spec["resourceClaims"] = json!([{"name": "gpu", "resourceClaimName": "gpu"}]);
            spec["setHostnameAsFQDN"] = json!(true);
            spec["hostUsers"] = json!(false);
            spec["schedulerName"] = json!("volcano");
            spec["os"] = json!({"name": "windows"});
        }),
        &[
            &format!("{pod}.priorityClassName"),
            &format!("{pod}.priority"),
            &format!("{pod}.runtimeClassName"),
            &format!("{pod}.overhead"),
            &format!("{pod}.readinessGates"),
            &format!("{pod}.schedulingGates"),
            &format!("{pod}.resourceClaims"),
            &format!("{pod}.setHostnameAsFQDN"),
            &format!("{pod}.hostUsers"),
            &format!("{pod}.schedulerName"),
            &format!("{pod}.os.name"),
        ],
    );
    assert_eq!(
        problems(deployment(|d| {
            let spec = &mut d["spec"]["template"]["spec"];
            spec["priority"] = json!(0);
            spec["readinessGates"] = json!([]);
            spec["setHostnameAsFQDN"] = json!(false);
            spec["hostUsers"] = json!(true);
            spec["schedulerName"] = json!("default-scheduler");
            spec["os"] = json!({"name": "linux"});
            spec["enableServiceLinks"] = json!(false);
            spec["preemptionPolicy"] = json!("Never");
        })),
        vec![]
    );
}

#[test]
fn container_features_the_kubelet_lacks_are_refused_and_their_defaults_kept() {
    let at = "spec.template.spec.containers[0]";
    assert_only_refused(
        deployment(|d| {
            d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            let c = container(d);
            c["stdin"] = json!(true);
            c["stdinOnce"] = json!(true);
            c["tty"] = json!(true);
            c["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
            c["volumeDevices"] = json!([{"name": "data", "devicePath": "/dev/xvda"}]);
            c["resources"] = json!({"claims": [{"name": "gpu"}]});
            c["volumeMounts"] = json!([{"name": "data", "mountPath": "/data",
                "subPathExpr": "$(POD_NAME)", "mountPropagation": "HostToContainer",
                "readOnly": true, "recursiveReadOnly": "Enabled"}]);
        }),
        &[
            &format!("{at}.stdin"),
            &format!("{at}.stdinOnce"),
            &format!("{at}.tty"),
            &format!("{at}.terminationMessagePolicy"),
            &format!("{at}.volumeDevices"),
            &format!("{at}.resources.claims"),
            &format!("{at}.volumeMounts[0].subPathExpr"),
            &format!("{at}.volumeMounts[0].mountPropagation"),
            &format!("{at}.volumeMounts[0].recursiveReadOnly"),
        ],
    );
    assert_eq!(
        problems(deployment(|d| {
            d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            let c = container(d);
            c["stdin"] = json!(false);
            c["tty"] = json!(false);
            c["workingDir"] = json!("/srv");
            c["terminationMessagePath"] = json!("/dev/termination-log");
            c["terminationMessagePolicy"] = json!("File");
            c["volumeMounts"] = json!([{"name": "data", "mountPath": "/data",
                "mountPropagation": "None", "readOnly": true,
                "recursiveReadOnly": "IfPossible"}]);
        })),
        vec![]
    );
    let mut sidecar = deployment(|_| {});
    sidecar["spec"]["template"]["spec"]["initContainers"] =
        json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
    assert_only_refused(
        sidecar,
        &["spec.template.spec.initContainers[0].restartPolicy"],
    );
}

#[test]
fn host_aliases_are_accepted_with_an_ip_and_dns_hostnames_as_kubernetes_checks_them() {
    let with_aliases =
        |aliases: Value| deployment(|d| d["spec"]["template"]["spec"]["hostAliases"] = aliases);
    assert_eq!(
        problems(with_aliases(json!([
            {"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]},
            {"ip": "fd00::1", "hostnames": ["v6.remote"]},
            {"ip": "10.1.2.3"},
        ]))),
        vec![]
    );
    let at = "spec.template.spec.hostAliases";
    assert_eq!(
        problems(with_aliases(json!([
            {"ip": "db.local", "hostnames": ["db"]},
            {"ip": "10.1.2.3", "hostnames": ["ok.remote", "Not_A_Name"]},
            {"ip": "010.1.2.3", "hostnames": ["x"]},
        ])))
        .into_iter()
        .map(|(path, _)| path)
        .collect::<Vec<_>>(),
        vec![
            format!("{at}[0].ip"),
            format!("{at}[1].hostnames[1]"),
            format!("{at}[2].ip"),
        ]
    );
    assert_problem(
        with_aliases(json!([{"ip": "db.local", "hostnames": ["db"]}])),
        &format!("{at}[0].ip"),
        "is not an IP address",
    );
}
