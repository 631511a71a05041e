//! Loader behaviour and its properties: valid objects survive a YAML round trip unchanged,
//! and no input, however broken, panics the loader.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn file(relative: &str, text: &str) -> SourceFile {
    SourceFile {
        relative: relative.to_string(),
        display: format!("repo/{relative}"),
        bytes: text.as_bytes().to_vec(),
    }
}

fn lines(result: &LoadResult) -> Vec<String> {
    result.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn reads_documents_lists_and_json_and_skips_other_files() {
    let result = load(&[
        file(
            "namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
        ),
        file(
            "web/all.yaml",
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# nothing\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b, namespace: demo}\n",
        ),
        file(
            "web/c.json",
            "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"c\"}}",
        ),
        file("web/README.md", "# not a manifest\n"),
        file("web/run.sh", "#!/bin/sh\n"),
    ]);
    assert_eq!(lines(&result), Vec::<String>::new());
    let keys: Vec<String> = result
        .manifests
        .iter()
        .map(|m| m.object.key().to_string())
        .collect();
    assert_eq!(
        keys,
        vec![
            "Namespace demo",
            "ConfigMap default/a",
            "ConfigMap demo/b",
            "ConfigMap default/c"
        ]
    );
    assert_eq!(result.files, 3);
    assert_eq!(
        result
            .applications
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["root", "web"]
    );
    assert_eq!(result.manifests[1].line, 2);
}

#[test]
fn problems_name_file_line_object_and_field() {
    let result = load(&[file(
        "web/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n        imagePolicy: Always\n        resources:\n          requests:\n            cpu: 1x\n",
    )]);
    assert_eq!(
        lines(&result),
        vec![
            "repo/web/deploy.yaml:15: Deployment default/web: spec.template.spec.containers[0].imagePolicy: unknown field",
            "repo/web/deploy.yaml:18: Deployment default/web: spec.template.spec.containers[0].resources.requests[cpu]: \"1x\" is not a quantity (expected a number with an optional suffix such as 500m, 2, 128Mi, 1G)",
        ]
    );
    assert!(result.manifests.is_empty());
    assert_eq!(
        result.failed_applications().into_iter().collect::<Vec<_>>(),
        vec!["web"]
    );
}

#[test]
fn duplicates_name_both_places() {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: page\n  namespace: demo\n";
    let result = load(&[
        file("a/one.yaml", cm),
        file("b/two.yaml", &format!("# x\n{cm}")),
    ]);
    assert_eq!(
        lines(&result),
        vec![
            "repo/b/two.yaml:2: ConfigMap demo/page: duplicate object: also defined at repo/a/one.yaml:1"
        ]
    );
    // The first definition stays valid; only application b fails.
    let kept: Vec<&str> = result.manifests.iter().map(|m| m.file.as_str()).collect();
    assert_eq!(kept, vec!["repo/a/one.yaml"]);
    assert_eq!(
        result.failed_applications().into_iter().collect::<Vec<_>>(),
        vec!["b"]
    );
}

#[test]
fn applications_loaded_apart_find_the_same_duplicates_as_one_load() {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: page\n  namespace: demo\n";
    // a's copy is invalid (an unknown field): it still counts as the first definition.
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: page\n  namespace: demo\ncolour: red\n";
    let files = [
        file("a/one.yaml", bad),
        file("b/two.yaml", cm),
        file("c/three.yaml", &format!("# x\n{cm}")),
    ];
    let together = load(&files);
    let parts: Vec<(String, LoadResult)> = files
        .iter()
        .map(|f| (f.application().to_string(), load(std::slice::from_ref(f))))
        .collect();
    let across = duplicates_across(parts.iter().map(|(name, part)| (name.as_str(), part)));
    let apart: Vec<String> = across.iter().map(ToString::to_string).collect();
    let duplicates: Vec<String> = lines(&together)
        .into_iter()
        .filter(|line| line.contains("duplicate"))
        .collect();
    assert_eq!(
        apart,
        vec![
            "repo/b/two.yaml:1: ConfigMap demo/page: duplicate object: also defined at repo/a/one.yaml:1",
            "repo/c/three.yaml:2: ConfigMap demo/page: duplicate object: also defined at repo/a/one.yaml:1",
        ]
    );
    assert_eq!(apart, duplicates);
    // Inside one application a second copy is its own load's problem, not counted twice.
    let one = load(&[file("a/one.yaml", cm), file("a/two.yaml", cm)]);
    assert_eq!(lines(&one).len(), 1);
    assert!(duplicates_across([("a", &one)]).is_empty());
}

#[test]
fn refuses_kustomize_folders_whole() {
    let result = load(&[
        file("app/kustomization.yaml", "resources: [cm.yaml]\n"),
        file(
            "app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
        ),
        file(
            "other/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n",
        ),
    ]);
    assert_eq!(
        lines(&result),
        vec![
            "repo/app/kustomization.yaml:1: a kustomization renders only at the top of an application's folder or of the path: list this folder as a base there (or make it an application)"
        ]
    );
    let names: Vec<_> = result
        .manifests
        .iter()
        .map(|m| m.object.key().name)
        .collect();
    assert_eq!(names, vec!["b"]);
}

#[test]
fn explains_kinds_it_cannot_take() {
    let result = load(&[file(
        "x.yaml",
        "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: a}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node1}\n---\nkind: ConfigMap\nmetadata: {name: c}\n---\n- just\n- a list\n",
    )]);
    assert_eq!(
        lines(&result),
        vec![
            "repo/x.yaml:1: Deployment default/a: apiVersion: Deployment is not served at extensions/v1beta1: use apps/v1",
            "repo/x.yaml:6: Widget w: kind: unsupported kind Widget (example.com/v1): shipshape serves the built-in workload, service, config, storage and policy kinds, not custom resources or RBAC",
            "repo/x.yaml:10: Node node1: kind: Node objects are written by the cluster itself and cannot come from Git",
            "repo/x.yaml:13: ConfigMap default/c: apiVersion: required field is missing: every document must be a Kubernetes object",
            "repo/x.yaml:16: not a Kubernetes object: expected a mapping with apiVersion and kind",
        ]
    );
}

#[test]
fn a_missing_field_is_reported_once_at_the_line_that_lacks_it() {
    let result = load(&[
        file(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: b\n",
        ),
        file(
            "pod.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  restartPolicy: Never\n",
        ),
        file(
            "deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      restartPolicy: Always\n",
        ),
    ]);
    assert_eq!(
        lines(&result),
        vec![
            "repo/cm.yaml:1: ConfigMap (unnamed): metadata: required field is missing",
            "repo/deploy.yaml:11: Deployment default/web: spec.template.spec.containers: required field is missing",
            "repo/pod.yaml:5: Pod default/p: spec.containers: required field is missing",
        ]
    );
}

#[test]
fn explains_built_in_kinds_it_does_not_serve() {
    let result = load(&[file(
        "x.yaml",
        "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: rc}\n---\napiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1beta1.metrics.k8s.io}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n",
    )]);
    assert_eq!(
        lines(&result),
        vec![
            "repo/x.yaml:2: PodTemplate rc: kind: PodTemplate is not supported by shipshape yet: put the pod template in a Deployment, StatefulSet, DaemonSet or Job",
            "repo/x.yaml:6: APIService v1beta1.metrics.k8s.io: kind: APIService is not supported: shipshape has no aggregated APIs",
            "repo/x.yaml:10: Role r: kind: unsupported kind Role (rbac.authorization.k8s.io/v1): shipshape serves the built-in workload, service, config, storage and policy kinds, not custom resources or RBAC",
        ]
    );
}

#[test]
fn autoscaling_v1_is_served_and_stored_as_v2() {
    let result = load(&[file(
        "hpa.yaml",
        "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 1\n  maxReplicas: 4\n  targetCPUUtilizationPercentage: 60\n---\napiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: typo}\nspec:\n  scaleTargetRef: {kind: Deployment, name: web}\n  maxReplicas: 4\n  targetCPUUtilisationPercentage: 60\n",
    )]);
    assert_eq!(
        lines(&result),
        vec![
            "repo/hpa.yaml:16: HorizontalPodAutoscaler default/typo: spec.targetCPUUtilisationPercentage: unknown field"
        ]
    );
    let hpa = result.manifests.first().map(|m| m.object.to_json());
    let hpa = hpa.expect("the first one loads");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let result = load(&[
        file(
            "broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n",
        ),
        SourceFile {
            relative: "binary.yaml".into(),
            display: "repo/binary.yaml".into(),
            bytes: vec![0, 159, 146, 150],
        },
        file(
            "dup.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n",
        ),
    ]);
    let found = lines(&result);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with("repo/binary.yaml:1: not a text file"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("repo/broken.yaml:4: invalid YAML"),
        "{found:#?}"
    );
    assert_eq!(
        found[2],
        "repo/dup.yaml:5: ConfigMap default/b: metadata.name: duplicate field"
    );
}

#[test]
fn cluster_scoped_kinds_drop_a_namespace() {
    let result = load(&[file(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, namespace: x}\n",
    )]);
    assert!(result.is_valid());
    assert_eq!(result.manifests[0].object.metadata().namespace, None);
}

// --- properties ---

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,14}[a-z0-9])?"
}

fn label_map() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
    proptest::collection::btree_map(
        "([a-z0-9.]{1,10}/)?[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,8}[a-zA-Z0-9])?".prop_filter(
            "prefix must be a subdomain",
            |k| {
                k.split_once('/')
                    .is_none_or(|(p, _)| crate::names::dns1123_subdomain(p).is_ok())
            },
        ),
        "([a-zA-Z0-9]([a-zA-Z0-9_.-]{0,8}[a-zA-Z0-9])?)?",
        0..4,
    )
}

/// Free text: the values most likely to trip a YAML emitter or reader.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("yes".to_string()),
        Just("null".to_string()),
        Just("0x1F".to_string()),
        Just("1e3".to_string()),
        Just("- item".to_string()),
        Just("key: value".to_string()),
        Just("  leading space".to_string()),
        Just("#not a comment".to_string()),
        Just("multi\nline\n".to_string()),
        "\\PC{0,30}",
        "[ -~\\n\\t]{0,30}",
    ]
}

fn config_map() -> impl Strategy<Value = Value> {
    (
        dns_label(),
        dns_label(),
        label_map(),
        proptest::collection::btree_map(
            "[a-zA-Z0-9_.-]{1,12}"
                .prop_filter("not dots", |k| crate::names::config_map_key(k).is_ok()),
            tricky_text(),
            0..5,
        ),
    )
        .prop_map(|(name, namespace, labels, data)| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": labels}, "data": data})
        })
}

fn deployment() -> impl Strategy<Value = Value> {
    (
        dns_label(),
        0..20i32,
        dns_label(),
        1..65535i32,
        proptest::collection::vec(("[A-Z_][A-Z0-9_]{0,8}", tricky_text()), 0..4),
        proptest::collection::vec(tricky_text(), 0..3),
    )
        .prop_map(|(name, replicas, container, port, env, args)| {
            let env: Vec<Value> = env
                .into_iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": container, "image": "busybox:1.35",
                            "args": args, "env": env, "ports": [{"containerPort": port}],
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}})
        })
}

fn service() -> impl Strategy<Value = Value> {
    (dns_label(), prop_oneof![Just("ClusterIP"), Just("NodePort"), Just("LoadBalancer")], 1..65535i32, label_map())
        .prop_map(|(name, kind, port, selector)| {
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": kind, "selector": selector, "ports": [{"port": port, "targetPort": port}]}})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn valid_objects_round_trip_through_yaml(values in proptest::collection::vec(
        prop_oneof![config_map(), deployment(), service()], 1..4)
        .prop_filter("one object per key", |values| {
            let keys: std::collections::BTreeSet<_> = values
                .iter()
                .map(|v| (v["kind"].clone().to_string(), v["metadata"]["namespace"].to_string(), v["metadata"]["name"].to_string()))
                .collect();
            keys.len() == values.len()
        })) {
        let objects: Vec<Object> = values
            .into_iter()
            .map(|v| Object::from_json(v).expect("strategy builds decodable objects"))
            .collect();
        let text: String = objects
            .iter()
            .map(|o| format!("---\n{}", serde_saphyr::to_string(o).expect("emits")))
            .collect();
        let result = load(&[file("app/objects.yaml", &text)]);
        prop_assert_eq!(lines(&result), Vec::<String>::new(), "{}", text);
        let loaded: Vec<&Object> = result.manifests.iter().map(|m| &m.object).collect();
        prop_assert_eq!(loaded, objects.iter().collect::<Vec<_>>());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = load(&[SourceFile { relative: "a.yaml".into(), display: "a.yaml".into(), bytes: bytes.clone() }]);
        let _ = load(&[SourceFile { relative: "a.json".into(), display: "a.json".into(), bytes }]);
    }

    #[test]
    fn yaml_like_text_never_panics(text in "[ -~\\n\\t:{}\\[\\],&*!|>'\"%@`#-]{0,300}") {
        let _ = load(&[file("a.yaml", &text)]);
        let prefixed = format!("apiVersion: apps/v1\nkind: Deployment\n{text}");
        let _ = load(&[file("b.yaml", &prefixed)]);
    }
}

#[test]
fn a_root_folder_beside_top_level_files_is_refused() {
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n";
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
    let result = load(&[
        file("namespaces.yaml", namespace),
        file("root/config.yaml", config),
    ]);
    assert_eq!(
        lines(&result),
        [
            "repo/root/config.yaml:1: the folder root/ clashes with application root (the files at the top of the path): rename the folder"
        ]
    );
    // Alone, a folder named root is simply the application root.
    let alone = load(&[file("root/config.yaml", config)]);
    assert_eq!(lines(&alone), Vec::<String>::new());
    assert_eq!(alone.manifests.len(), 1);
}
