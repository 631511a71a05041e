//! End-to-end tests of the `shipshape` binary, run the way a user runs it.
//!
//! One integration-test binary for the whole suite keeps link time (and CI time) down; each
//! area is a module below.

mod validate {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    fn shipshape(args: &[&str], dir: &Path) -> Output {
        Command::new(env!("CARGO_BIN_EXE_shipshape"))
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the binary runs")
    }

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn stdout(output: &Output) -> String {
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn stderr(output: &Output) -> String {
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn write(dir: &Path, relative: &str, text: &str) {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn the_example_repository_is_valid() {
        let output = shipshape(&["validate", "examples-repo"], &root());
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(
            stdout(&output),
            "4 objects in 4 files, 2 applications: 1 Namespace, 1 ConfigMap, 1 Service, 1 Deployment\n"
        );
    }

    #[test]
    fn a_corpus_of_realistic_manifests_is_accepted() {
        let output = shipshape(&["validate", "tests/fixtures/corpus"], &root());
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            stdout(&output),
            stderr(&output)
        );
        assert!(
            stdout(&output).starts_with("24 objects in 10 files, 1 application: 5 Service, 2 Pod"),
            "{}",
            stdout(&output)
        );
    }

    fn broken_repository() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
        );
        write(
            dir.path(),
            "web/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: website\n    spec:\n      containers:\n        - name: web\n          image: busybox\n          ports:\n            - containerPort: 80800\n",
        );
        write(
            dir.path(),
            "api/config.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\ndata:\n  mode: fast\n  replicas: yes\n",
        );
        write(dir.path(), "api/README.md", "# not a manifest\n");
        dir
    }

    #[test]
    fn problems_are_one_line_each_naming_file_line_object_and_field() {
        let repo = broken_repository();
        let output = shipshape(&["validate", "."], repo.path());
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            stdout(&output),
            "./api/config.yaml:8: ConfigMap shop/settings: data.replicas: must be a string, not boolean `true` (quote the value to keep it text)\n\
             ./web/deploy.yaml:13: Deployment shop/web: spec.template.metadata.labels: do not match spec.selector: the workload would never find its own pods\n\
             ./web/deploy.yaml:20: Deployment shop/web: spec.template.spec.containers[0].ports[0].containerPort: 80800 is not a valid port number: use 1 to 65535\n"
        );
        assert_eq!(
            stderr(&output),
            "invalid: 3 problems in 2 applications (api, web)\n"
        );
    }

    #[test]
    fn json_output_carries_the_same_problems_for_ci_tools() {
        let repo = broken_repository();
        let output = shipshape(&["validate", "-o", "json", "."], repo.path());
        assert_eq!(output.status.code(), Some(1));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(report["valid"], false);
        assert_eq!(report["objects"], 1, "only the Namespace is valid");
        assert_eq!(
            report["applications"],
            serde_json::json!(["api", "root", "web"])
        );
        let problem = &report["problems"][2];
        assert_eq!(problem["file"], "./web/deploy.yaml");
        assert_eq!(problem["line"], 20);
        assert_eq!(problem["application"], "web");
        assert_eq!(problem["object"]["kind"], "Deployment");
        assert_eq!(problem["object"]["namespace"], "shop");
        assert_eq!(problem["object"]["name"], "web");
        assert_eq!(
            problem["field"],
            "spec.template.spec.containers[0].ports[0].containerPort"
        );
    }

    #[test]
    fn duplicates_across_applications_name_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n";
        write(dir.path(), "a/cm.yaml", cm);
        write(dir.path(), "b/cm.yml", cm);
        let output = shipshape(&["validate", "."], dir.path());
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            stdout(&output),
            "./b/cm.yml:1: ConfigMap default/shared: duplicate object: also defined at ./a/cm.yaml:1\n"
        );
    }

    #[test]
    fn garbage_and_missing_paths_are_errors_not_crashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("blob.yaml"),
            (0..=255u8).cycle().take(4096).collect::<Vec<u8>>(),
        )
        .expect("write");
        write(
            dir.path(),
            "broken.json",
            "{\"apiVersion\": \"v1\",\n \"kind\": [}\n",
        );
        let output = shipshape(&["validate", ".", "missing-folder"], dir.path());
        assert_eq!(output.status.code(), Some(1));
        let out = stdout(&output);
        assert!(out.contains("./blob.yaml:1: not a text file"), "{out}");
        assert!(out.contains("./broken.json:2: invalid JSON"), "{out}");
        assert!(
            out.contains("missing-folder:1: cannot read: No such file or directory"),
            "{out}"
        );
    }

    #[test]
    fn kustomize_folders_are_refused_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "app/kustomization.yaml",
            "resources: [cm.yaml]\n",
        );
        write(
            dir.path(),
            "app/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
        );
        let output = shipshape(&["validate", "."], dir.path());
        assert_eq!(output.status.code(), Some(1));
        assert!(
            stdout(&output)
                .starts_with("./app/kustomization.yaml:1: kustomize is not supported yet"),
            "{}",
            stdout(&output)
        );
    }

    #[test]
    fn usage_errors_exit_2() {
        let output = shipshape(&["validate"], &root());
        assert_eq!(output.status.code(), Some(2));
        let output = shipshape(&["validate", "-o", "xml", "examples-repo"], &root());
        assert_eq!(output.status.code(), Some(2));
    }
}

mod up {
    use std::process::Command;

    #[test]
    fn up_finds_the_example_repository_and_says_what_it_did() {
        let output = Command::new(env!("CARGO_BIN_EXE_shipshape"))
            .arg("up")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("examples-repo"), "{stderr}");
        assert!(stderr.contains("validated only"), "{stderr}");
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("4 objects in 4 files"));
    }

    #[test]
    fn up_refuses_an_invalid_desired_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n",
        )
        .expect("write");
        let output = Command::new(env!("CARGO_BIN_EXE_shipshape"))
            .args(["up", "--repo"])
            .arg(dir.path())
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(1));
        let expected = format!(
            "{}/bad.yaml:1: Pod default/p: spec: required field is missing\n",
            dir.path().display()
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    }
}
