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
}
