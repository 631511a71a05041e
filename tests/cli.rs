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
            "9 objects in 9 files, 5 applications: 2 Service, 2 Deployment, 1 Namespace, 1 ConfigMap, 1 StatefulSet, 1 CronJob, 1 Ingress\n"
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
            stdout(&output).starts_with(
                "27 objects in 12 files, 1 application: 5 Service, 2 Pod, 2 HorizontalPodAutoscaler"
            ),
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
    fn two_services_asking_for_one_address_are_refused_on_the_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = |name: &str, node_port: u16| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.50\n  ports:\n  - {{port: 80, nodePort: {node_port}}}\n"
            )
        };
        write(dir.path(), "a/web.yaml", &service("web", 30080));
        write(dir.path(), "b/api.yaml", &service("api", 30081));
        let output = shipshape(&["validate", "."], dir.path());
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            stdout(&output),
            "./b/api.yaml:1: Service default/api: spec.clusterIP: Invalid value: \"10.96.0.50\": provided IP is already allocated (held by Service default/web at ./a/web.yaml:1)\n"
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
    fn kustomize_applications_validate_with_the_source_file_of_each_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A checkout: bases outside the path given are read up to its top.
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        write(
            dir.path(),
            "base/kustomization.yaml",
            "resources:\n- deploy.yaml\n",
        );
        write(
            dir.path(),
            "base/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n",
        );
        // An overlay that asks for a negative count: the problem is in the base's object.
        write(
            dir.path(),
            "apps/web/kustomization.yaml",
            "resources:\n- ../../base\nnamePrefix: prod-\nreplicas:\n- name: web\n  count: -1\n",
        );
        write(
            dir.path(),
            "apps/broken/kustomization.yaml",
            "resources:\n- ../../base\nimages:\n- newTag: v2\n",
        );
        write(
            dir.path(),
            "apps/nested/sub/kustomization.yaml",
            "resources: []\n",
        );
        write(
            dir.path(),
            "apps/plain/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n",
        );
        let output = shipshape(&["validate", "apps"], dir.path());
        let out = stdout(&output);
        assert_eq!(output.status.code(), Some(1), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![
                "apps/broken/kustomization.yaml:4: images[0]: missing field `name`",
                "apps/nested/sub/kustomization.yaml:1: a kustomization renders only at the top of an application's folder or of the path: list this folder as a base there (or make it an application)",
                "base/deploy.yaml:1: Deployment default/prod-web: spec.replicas: must be greater than or equal to 0 (got -1)",
            ],
            "{out}"
        );
        // The rendered output itself.
        let rendered = shipshape(&["render", "apps/web"], dir.path());
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        assert!(stdout(&rendered).starts_with("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: prod-web\nspec:\n  replicas: -1\n"), "{}", stdout(&rendered));
        let refused = shipshape(&["render", "apps/broken"], dir.path());
        assert_eq!(refused.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&refused.stderr),
            "apps/broken/kustomization.yaml:4: images[0]: missing field `name`\n"
        );
    }

    #[test]
    fn a_fleet_file_at_the_top_is_checked_as_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fleet = "apiVersion: shipshape.dev/v1alpha1\nkind: Fleet\nrollout:\n  waves:\n  - name: canary\n    clusterNames: [store-1]\n    soak: 10m\n";
        write(dir.path(), "fleet.yaml", fleet);
        write(
            dir.path(),
            "apps/web/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n",
        );
        let output = shipshape(&["validate", "."], dir.path());
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(
            stdout(&output),
            "1 object in 1 file, 1 application: 1 ConfigMap\n"
        );
        write(dir.path(), "fleet.yaml", &fleet.replace("soak", "soaks"));
        let output = shipshape(&["validate", "."], dir.path());
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            stdout(&output),
            "./fleet.yaml:7: rollout.waves[0].soaks: unknown field `soaks`\n"
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

mod gitops {
    //! `shipshape up` against real Git repositories made during the test, then the reading
    //! commands on its data directory, as a user would run them.

    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    /// Runs git as the tests' author; its standard output, trimmed.
    pub(super) fn git(dir: &Path, args: &[&str]) -> String {
        let output = Command::new("git")
            .args([
                "-c",
                "user.name=Ada",
                "-c",
                "user.email=ada@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub(super) fn write(dir: &Path, relative: &str, text: &str) {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn commit(dir: &Path, message: &str) {
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", message]);
    }

    fn config_map(name: &str, value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: demo\ndata:\n  value: \"{value}\"\n"
        )
    }

    struct Repo {
        dir: tempfile::TempDir,
    }

    /// A process a test started (`shipshape up`, a watch), killed when the test ends or fails.
    pub(super) struct Running(pub(super) Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Repo {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(dir.path().join("repo")).expect("mkdir");
            git(&dir.path().join("repo"), &["init", "-q"]);
            Self { dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("repo")
        }

        fn data(&self) -> PathBuf {
            self.dir.path().join("data")
        }

        fn shipshape(&self, args: &[&str]) -> Output {
            Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args(args)
                .arg("--data-dir")
                .arg(self.data())
                .output()
                .expect("runs")
        }

        fn up(&self) -> (Running, PathBuf) {
            self.up_with(&[])
        }

        fn up_with(&self, extra: &[&str]) -> (Running, PathBuf) {
            let log = self
                .dir
                .path()
                .join(format!("up-{}.log", std::process::id()));
            let child = Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args([
                    "up",
                    "--path",
                    "apps",
                    "--interval",
                    "200ms",
                    "--api-listen",
                    "127.0.0.1:0",
                    "--dns-listen",
                    "127.0.0.1:0",
                    "--repo",
                ])
                .arg(self.path())
                .arg("--data-dir")
                .arg(self.data())
                .args(extra)
                // Real containers only where a test asks for them (they need root and own
                // the host's bridges); everything else runs on simulated nodes.
                .args(if extra.contains(&"--runtime") {
                    &[][..]
                } else {
                    &["--runtime", "simulated"][..]
                })
                // The ingress stays off the host's ports 80 and 443 unless a test asks.
                .args(if extra.contains(&"--ingress-http") {
                    &[][..]
                } else {
                    &["--ingress-http", "off", "--ingress-https", "off"][..]
                })
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("starts");
            (Running(child), log)
        }
    }

    /// Output with runs of spaces collapsed, so assertions do not depend on column widths.
    fn squash(text: &str) -> String {
        text.lines()
            .map(|line| {
                line.split(' ')
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn text(output: &Output) -> String {
        squash(&format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    /// Polls `check` until it returns something, for at most a minute; `what` says what was
    /// awaited, and the last attempt's text is shown if it never comes.
    fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match check() {
                Ok(value) => return value,
                Err(last) => assert!(
                    Instant::now() < deadline,
                    "{what} never happened; last seen:\n{last}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the log holds `needle` (a process's progress output).
    fn wait_for(log: &Path, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let content = squash(&std::fs::read_to_string(log).unwrap_or_default());
            if content.contains(needle) {
                return content;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never appeared in:\n{content}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback address the cluster DNS of a running `up` listens on (from its log).
    fn dns_address(log: &Path) -> (String, String) {
        let content = wait_for(log, "cluster DNS on ");
        let address = content
            .split("cluster DNS on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("an address");
        let (ip, port) = address.rsplit_once(':').expect("ip:port");
        (ip.to_string(), port.to_string())
    }

    /// What `dig` says: the status and each answer's data (`dig` must be installed: CI's set-up
    /// installs it).
    fn dig(server: &(String, String), args: &[&str]) -> (String, Vec<String>) {
        let output = Command::new("dig")
            .arg(format!("@{}", server.0))
            .args([
                "-p",
                &server.1,
                "+noall",
                "+answer",
                "+comments",
                "+time=2",
                "+tries=1",
            ])
            .args(args)
            .output()
            .expect("dig runs (sudo scripts/setup installs it)");
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        let status = out
            .split("status: ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or("no answer")
            .to_string();
        let mut answers: Vec<String> = out
            .lines()
            .filter(|line| !line.starts_with(';') && !line.trim().is_empty())
            .map(|line| {
                line.split_whitespace()
                    .skip(4)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        answers.sort();
        (status, answers)
    }

    /// Ctrl-C, then a clean exit within 30 seconds.
    fn interrupt(mut running: Running) {
        let child = &mut running.0;
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("waits") {
                assert!(status.success(), "Ctrl-C exits cleanly: {status:?}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shipshape up did not stop within 30 s of Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The real kubectl against a running cluster, with its own discovery cache.
    fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .output()
            .expect("kubectl runs (scripts/setup installs it)")
    }

    /// What `path` (a JSONPath) picks out of `kubectl get …`.
    fn jsonpath(kubeconfig: &Path, cache: &Path, args: &[&str], path: &str) -> String {
        let mut all = args.to_vec();
        let expression = format!("jsonpath={path}");
        all.extend(["-o", &expression]);
        String::from_utf8_lossy(&kubectl(kubeconfig, cache, &all).stdout).into_owned()
    }

    fn items(repo: &Repo, namespace: &str) -> Vec<serde_json::Value> {
        let output = repo.shipshape(&["get", "configmaps", "-n", namespace, "-o", "json"]);
        assert!(output.status.success(), "{}", text(&output));
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// A Deployment of `replicas` busybox pods with `image`, paused or not.
    fn deployment(replicas: u32, image: &str, paused: bool) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  replicas: {replicas}\n  paused: {paused}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        command: [sleep, \"3600\"]\n"
        )
    }

    /// The Deployment's ReplicaSets in `demo`: (image, replicas), sorted.
    fn replica_sets(repo: &Repo) -> Result<Vec<(String, u64)>, String> {
        let output = repo.shipshape(&["get", "replicasets", "-n", "demo", "-o", "json"]);
        if !output.status.success() {
            return Err(text(&output));
        }
        let list: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
        let mut sets: Vec<(String, u64)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|rs| {
                (
                    rs["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    rs["spec"]["replicas"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        sets.sort();
        Ok(sets)
    }

    /// Waits until the Deployment's ReplicaSets are `expected` (image, replicas).
    fn wait_for_sets(repo: &Repo, what: &str, expected: &[(&str, u64)]) {
        let expected: Vec<(String, u64)> =
            expected.iter().map(|(i, n)| (i.to_string(), *n)).collect();
        eventually(what, || {
            let sets = replica_sets(repo)?;
            (sets == expected).then_some(()).ok_or(format!("{sets:?}"))
        });
    }

    #[test]
    fn a_paused_deployment_scales_without_rolling_until_resumed() {
        let repo = Repo::new();
        write(
            &repo.path(),
            "apps/namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
        );
        write(
            &repo.path(),
            "apps/web/deployment.yaml",
            &deployment(2, "busybox:1.35", false),
        );
        commit(&repo.path(), "web");
        let (child, log) = repo.up();
        wait_for(&log, "web Synced");
        wait_for_sets(&repo, "the first ReplicaSet", &[("busybox:1.35", 2)]);

        // Paused, with a new image and a new size: the size is honoured, the image waits.
        write(
            &repo.path(),
            "apps/web/deployment.yaml",
            &deployment(3, "busybox:1.36", true),
        );
        commit(&repo.path(), "pause, resize and change the image");
        wait_for_sets(&repo, "the old ReplicaSet at 3", &[("busybox:1.35", 3)]);
        let shown = eventually("the paused condition", || {
            let output = repo.shipshape(&["get", "deployments", "-n", "demo", "web", "-o", "json"]);
            let deployment: serde_json::Value =
                serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
            let conditions = deployment["status"]["conditions"].clone();
            conditions
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"] == "Progressing"
                        && c["reason"] == "DeploymentPaused"
                        && c["status"] == "Unknown"
                })
                .then_some(conditions.clone())
                .ok_or(format!("{conditions}"))
        });
        assert!(
            shown.to_string().contains("Deployment is paused"),
            "{shown}"
        );
        // Still no second ReplicaSet a few seconds on.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            replica_sets(&repo).expect("listed"),
            [("busybox:1.35".to_string(), 3)]
        );
        let status = text(&repo.shipshape(&["status"]));
        assert!(status.contains("Suspended"), "{status}");

        // Resumed: the rollout runs to the new image.
        write(
            &repo.path(),
            "apps/web/deployment.yaml",
            &deployment(3, "busybox:1.36", false),
        );
        commit(&repo.path(), "resume");
        wait_for_sets(
            &repo,
            "rolled out to the new image",
            &[("busybox:1.35", 0), ("busybox:1.36", 3)],
        );
        interrupt(child);
    }

    #[test]
    fn a_commit_rolls_out_and_the_history_says_who_changed_what() {
        let repo = Repo::new();
        write(
            &repo.path(),
            "apps/namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
        );
        write(
            &repo.path(),
            "apps/web/page.yaml",
            &config_map("page", "hello"),
        );
        write(
            &repo.path(),
            "apps/api/settings.yaml",
            &config_map("settings", "fast"),
        );
        commit(&repo.path(), "first");

        let (child, log) = repo.up();
        let started = wait_for(&log, "web Synced");
        assert!(started.contains("root Synced 1 created"), "{started}");
        assert!(started.contains("api Synced 1 created"), "{started}");

        write(
            &repo.path(),
            "apps/web/page.yaml",
            &config_map("page", "goodbye"),
        );
        write(
            &repo.path(),
            "apps/api/broken.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  n: 1\n",
        );
        commit(&repo.path(), "say goodbye");
        let progress = wait_for(&log, "web Synced 1 updated");
        assert!(
            progress.contains("api Failed 1 problem (stays on its last good commit)"),
            "{progress}"
        );
        assert!(
            progress
                .contains("apps/api/broken.yaml:6: ConfigMap default/x: data.n: must be a string"),
            "{progress}"
        );
        interrupt(child);

        let status = repo.shipshape(&["status"]);
        let status_text = text(&status);
        assert!(status_text.contains("api Failed"), "{status_text}");
        assert!(
            status_text.contains("1 problem invalid in commit"),
            "{status_text}"
        );
        assert!(status_text.contains("web Synced"), "{status_text}");

        let page: Vec<_> = items(&repo, "demo")
            .into_iter()
            .filter(|i| i["metadata"]["name"] == "page")
            .collect();
        assert_eq!(page[0]["data"]["value"], "goodbye");

        let history = text(&repo.shipshape(&["history", "--object", "configmap/demo/page"]));
        assert!(history.contains("sync web commit"), "{history}");
        assert!(
            history.contains("\"say goodbye\" by Ada <ada@example.com>"),
            "{history}"
        );
        assert!(
            history.contains("updated ConfigMap demo/page (apps/web/page.yaml): /data/value: \"hello\" → \"goodbye\""),
            "{history}"
        );
        assert!(
            !history.contains("settings"),
            "only the asked object: {history}"
        );

        let verify = repo.shipshape(&["audit", "verify"]);
        assert!(verify.status.success());
        assert!(
            text(&verify).starts_with("audit log intact:"),
            "{}",
            text(&verify)
        );
    }

    #[test]
    fn a_history_larger_than_one_answer_is_read_in_pages_and_reads_the_same_when_stopped() {
        let repo = Repo::new();
        write(
            &repo.path(),
            "apps/namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
        );
        // Seven applications, each a ConfigMap near Kubernetes' 1 MiB: their updates' field
        // diffs (before and after) make a history of over 12 MB, past the 10 MiB a client
        // reads in one answer.
        let apps = 7;
        let big = |fill: &str, i: usize| {
            for app in 0..apps {
                write(
                    &repo.path(),
                    &format!("apps/big{app}/value.yaml"),
                    &config_map(&format!("big{app}"), &fill.repeat(900_000 + i)),
                );
            }
        };
        let synced = |log: &Path, what: &str| {
            eventually(&format!("{apps} applications {what}"), || {
                let content = squash(&std::fs::read_to_string(log).unwrap_or_default());
                if content.matches(what).count() >= apps {
                    Ok(())
                } else {
                    Err(content)
                }
            })
        };
        big("a", 0);
        commit(&repo.path(), "big values");
        let (child, log) = repo.up();
        synced(&log, "Synced 1 created");
        big("b", 1);
        commit(&repo.path(), "other big values");
        synced(&log, "Synced 1 updated");

        let running = repo.shipshape(&["history"]);
        assert!(running.status.success(), "{}", text(&running));
        let running_json = repo.shipshape(&["history", "-o", "json"]);
        assert!(running_json.status.success(), "{}", text(&running_json));
        let verified = repo.shipshape(&["audit", "verify"]);
        assert!(verified.status.success(), "{}", text(&verified));
        interrupt(child);

        assert!(
            running_json.stdout.len() > 10 << 20,
            "the history is larger than one answer may be: {} bytes",
            running_json.stdout.len()
        );
        let records: Vec<serde_json::Value> =
            serde_json::from_slice(&running_json.stdout).expect("one JSON array");
        let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
        let expected: Vec<u64> = (1..=records.len() as u64).collect();
        assert_eq!(seqs, expected, "every record once, in order");
        let history = text(&running);
        for app in 0..apps {
            let updated = format!(
                "updated ConfigMap demo/big{app} (apps/big{app}/value.yaml): /data/value: (text) → (text)"
            );
            assert_eq!(
                history.matches(&updated).count(),
                1,
                "{updated}:\n{history}"
            );
        }
        assert_eq!(
            text(&verified),
            squash(&format!(
                "audit log intact: {} records, newest hash {}",
                records.len(),
                records
                    .last()
                    .and_then(|r| r["hash"].as_str())
                    .and_then(|h| h.get(..16))
                    .unwrap_or_default()
            ))
        );
        // Read from the database once stopped: the very same output.
        let stopped = repo.shipshape(&["history"]);
        assert_eq!(
            String::from_utf8_lossy(&stopped.stdout),
            String::from_utf8_lossy(&running.stdout)
        );
        let stopped_json = repo.shipshape(&["history", "-o", "json"]);
        assert!(stopped_json.stdout == running_json.stdout, "the same JSON");
    }

    #[test]
    fn emptying_an_application_waits_for_allow_empty_and_suspend_stops_syncing() {
        let repo = Repo::new();
        write(
            &repo.path(),
            "apps/namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
        );
        write(&repo.path(), "apps/web/a.yaml", &config_map("a", "1"));
        write(&repo.path(), "apps/web/b.yaml", &config_map("b", "1"));
        write(&repo.path(), "apps/other/c.yaml", &config_map("c", "1"));
        commit(&repo.path(), "first");
        let (child, log) = repo.up();
        wait_for(&log, "web Synced");
        interrupt(child);

        std::fs::remove_dir_all(repo.path().join("apps/web")).expect("rm");
        write(&repo.path(), "apps/other/c.yaml", &config_map("c", "2"));
        commit(&repo.path(), "retire web");
        repo.shipshape(&["suspend", "other"]);
        let held = repo.shipshape(&["sync"]);
        assert_eq!(held.status.code(), Some(1));
        let held_text = text(&held);
        assert!(
            held_text.contains("held: the commit would prune all 2 objects"),
            "{held_text}"
        );
        assert!(
            held_text.contains("other OutOfSync suspended"),
            "{held_text}"
        );
        assert_eq!(
            items(&repo, "demo").len(),
            3,
            "nothing pruned, nothing of other applied"
        );

        let allowed = repo.shipshape(&["sync", "--allow-empty"]);
        assert!(allowed.status.success(), "{}", text(&allowed));
        assert!(
            text(&allowed).contains("web Synced 2 pruned"),
            "{}",
            text(&allowed)
        );
        repo.shipshape(&["resume", "other"]);
        let resumed = repo.shipshape(&["sync"]);
        assert!(
            text(&resumed).contains("other Synced 1 updated"),
            "{}",
            text(&resumed)
        );
        let left: Vec<_> = items(&repo, "demo")
            .iter()
            .map(|i| i["data"]["value"].clone())
            .collect();
        assert_eq!(left, vec![serde_json::json!("2")]);
    }

    /// Writes ten applications of a hundred ConfigMaps each, every one holding `round`.
    fn bulk_round(repo: &Repo, round: u32) {
        for app in 0..BULK_APPS {
            let objects: String = (0..BULK_OBJECTS)
                .map(|i| format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{app}-{i}\n  namespace: bulk\ndata:\n  round: \"{round}\"\n"))
                .collect();
            write(
                &repo.path(),
                &format!("apps/app-{app}/objects.yaml"),
                &objects,
            );
        }
        commit(&repo.path(), &format!("round {round}"));
    }

    const BULK_APPS: usize = 10;
    const BULK_OBJECTS: usize = 100;

    /// The round each application's objects hold, read from the stopped cluster's data; fails
    /// unless every application has exactly its hundred objects, all of one round.
    fn bulk_rounds(repo: &Repo) -> Vec<u32> {
        let objects = items(repo, "bulk");
        let mut rounds = vec![Vec::new(); BULK_APPS];
        for object in &objects {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let app: usize = name
                .split('-')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("an object nobody declared: {name}"));
            let round: u32 = object["data"]["round"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("{name} holds no round"));
            rounds[app].push((name.to_string(), round));
        }
        rounds
            .into_iter()
            .enumerate()
            .map(|(app, mut objects)| {
                objects.sort();
                let mut expected: Vec<String> =
                    (0..BULK_OBJECTS).map(|i| format!("cm-{app}-{i}")).collect();
                expected.sort();
                let names: Vec<&String> = objects.iter().map(|(name, _)| name).collect();
                assert_eq!(
                    names,
                    expected.iter().collect::<Vec<_>>(),
                    "app-{app} lost or duplicated objects"
                );
                let round = objects[0].1;
                assert!(
                    objects.iter().all(|(_, r)| *r == round),
                    "app-{app} is half applied: {objects:?}"
                );
                round
            })
            .collect()
    }

    /// `kill -9` of `up` at twenty random points, half of them while its commit is being
    /// applied (after a watch outside the process has seen some of it land), never loses or
    /// duplicates an object, never leaves an application half applied, never breaks the audit
    /// chain, and the next start finishes what was left.
    #[test]
    fn kill_9_at_random_points_of_an_apply_loses_nothing_and_duplicates_nothing() {
        use std::io::BufRead;
        let repo = Repo::new();
        write(
            &repo.path(),
            "apps/namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bulk\n",
        );
        bulk_round(&repo, 0);
        let (first, log) = repo.up();
        wait_for(&log, "ready in");
        interrupt(first);
        let mut rounds = bulk_rounds(&repo);
        assert_eq!(rounds, vec![0; BULK_APPS]);

        // A seed from the clock, printed, so a failure can be read back.
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("kill -9 points from seed {seed}");
        let mut random = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below.max(1)
        };
        let mut mid_apply = 0;
        for round in 1..=20u32 {
            bulk_round(&repo, round);
            let (mut up, log) = repo.up();
            if round % 2 == 0 {
                // At any moment from start to well past the apply.
                wait_for(&log, "syncing branch");
                std::thread::sleep(Duration::from_millis(random(2500)));
            } else {
                // After a watch from outside has seen a random number of objects change.
                wait_for(&log, "API server on");
                let mut watch = Running(
                    Command::new(env!("CARGO_BIN_EXE_shipshape"))
                        .args(["get", "configmaps", "-n", "bulk", "--watch", "--data-dir"])
                        .arg(repo.data())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("watches"),
                );
                let wanted = 1 + random((BULK_APPS * BULK_OBJECTS) as u64 - 1) as usize;
                let lines = std::io::BufReader::new(watch.0.stdout.take().expect("stdout"));
                let (changed, changes) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    for line in lines.lines().map_while(Result::ok) {
                        if line.trim_end().ends_with("modified") && changed.send(()).is_err() {
                            return;
                        }
                    }
                });
                for seen in 0..wanted {
                    if changes.recv_timeout(Duration::from_secs(60)).is_err() {
                        panic!("round {round}: the watch saw {seen} changes, never {wanted}");
                    }
                }
            }
            up.0.kill().expect("kill -9");
            up.0.wait().expect("reaped");

            let after = bulk_rounds(&repo);
            for (app, (before, now)) in rounds.iter().zip(&after).enumerate() {
                assert!(
                    *now == *before || *now == round,
                    "round {round}: app-{app} went from round {before} to {now}"
                );
            }
            let applied = after.iter().filter(|r| **r == round).count();
            if applied > 0 && applied < BULK_APPS {
                mid_apply += 1;
            }
            eprintln!("round {round}: {applied} of {BULK_APPS} applications applied at the kill");
            rounds = after;
            let verify = repo.shipshape(&["audit", "verify"]);
            assert!(verify.status.success(), "{}", text(&verify));
        }
        assert!(
            mid_apply > 0,
            "no kill landed while a commit was being applied"
        );

        let finish = repo.shipshape(&["sync"]);
        assert!(finish.status.success(), "{}", text(&finish));
        assert_eq!(bulk_rounds(&repo), vec![20; BULK_APPS]);
        let again = repo.shipshape(&["sync"]);
        assert!(
            text(&again).contains("every application is in sync"),
            "{}",
            text(&again)
        );
    }

    #[test]
    fn up_defaults_to_this_repository_and_its_examples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("up.log");
        let child = Running(
            Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args([
                    "up",
                    "--runtime",
                    "simulated",
                    "--interval",
                    "1s",
                    "--api-listen",
                    "127.0.0.1:0",
                    "--dns-listen",
                    "127.0.0.1:0",
                    "--data-dir",
                ])
                .arg(dir.path().join("data"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("starts"),
        );
        let progress = wait_for(&log, "web Synced");
        let project = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).expect("path");
        assert!(
            progress.contains(&format!("of {}, path examples-repo", project.display())),
            "{progress}"
        );
        assert!(progress.contains("root Synced 1 created"), "{progress}");
        interrupt(child);
        let stopped = std::fs::read_to_string(&log).expect("log");
        assert!(stopped.contains("resumes from it"), "{stopped}");
    }

    #[test]
    fn up_outside_a_repository_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new(env!("CARGO_BIN_EXE_shipshape"))
            .args(["up", "--repo"])
            .arg(dir.path())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            format!(
                "shipshape: {} is not a Git repository: pass --repo with the repository holding your manifests\n",
                dir.path().display()
            )
        );
    }

    mod kubectl {
        //! The real kubectl against the API server `up` starts, with the kubeconfig it writes.

        use super::*;

        fn deployment(image: &str, cpu: &str) -> String {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  replicas: 3\n  strategy:\n    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        resources:\n          requests: {{cpu: {cpu}}}\n        ports:\n        - {{name: http, containerPort: 8080}}\n"
            )
        }

        /// `(name, status, ip, node)` of each pod, from `kubectl get pods -o wide`.
        fn pods(kubeconfig: &Path, cache: &Path) -> Result<Vec<Vec<String>>, String> {
            let output = kubectl(
                kubeconfig,
                cache,
                &["get", "pods", "-n", "demo", "-o", "wide", "--no-headers"],
            );
            if !output.status.success() {
                return Err(text(&output));
            }
            Ok(String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|line| {
                    let cells: Vec<&str> = line.split_whitespace().collect();
                    [0, 2, 5, 6]
                        .iter()
                        .map(|i| cells.get(*i).unwrap_or(&"").to_string())
                        .collect()
                })
                .collect())
        }

        const SERVICES: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.35
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: peers, namespace: demo}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: demo, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers: [{name: db, image: busybox:1.35}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec:
  clusterIP: None
  selector: {app: db}
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: demo}
spec:
  type: ExternalName
  externalName: search.example.org
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: demo}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

        #[test]
        fn the_cluster_dns_answers_for_services_and_pods_as_they_change() {
            let repo = Repo::new();
            write(
                &repo.path(),
                "apps/namespaces.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
            );
            write(
                &repo.path(),
                "apps/web/all.yaml",
                &SERVICES.replace("REPLICAS", "2"),
            );
            commit(&repo.path(), "services");
            let (child, log) =
                repo.up_with(&["--nodes", "2", "--lb-pool", "10.200.0.1-10.200.0.3"]);
            let server = dns_address(&log);
            let kubeconfig = repo.data().join("kubeconfig");
            let cache = repo.dir.path().join("kube-cache");
            let peers = |count: usize| {
                eventually(&format!("{count} peers in DNS"), || {
                    let (status, answers) = dig(&server, &["peers.demo.svc.cluster.local"]);
                    (status == "NOERROR" && answers.len() == count)
                        .then_some(answers.clone())
                        .ok_or(format!("{status} {answers:?}"))
                })
            };
            let two = peers(2);
            let ips = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "pods", "-n", "demo", "-l", "app=web"],
                "{.items[*].status.podIP}",
            );
            let mut pod_ips: Vec<String> = ips.split_whitespace().map(str::to_string).collect();
            pod_ips.sort();
            assert_eq!(two, pod_ips, "a headless Service answers its ready pods");

            // A ClusterIP Service: its address, SRV for its named port, PTR back.
            let cluster_ip = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "service", "web", "-n", "demo"],
                "{.spec.clusterIP}",
            );
            let (status, answers) = dig(&server, &["web.demo.svc.cluster.local", "A"]);
            assert_eq!(
                (status.as_str(), answers),
                ("NOERROR", vec![cluster_ip.clone()])
            );
            let (_, srv) = dig(&server, &["_http._tcp.web.demo.svc.cluster.local", "SRV"]);
            assert_eq!(srv, ["0 100 80 web.demo.svc.cluster.local."]);
            let (_, ptr) = dig(&server, &["-x", &cluster_ip]);
            assert_eq!(ptr, ["web.demo.svc.cluster.local."]);
            // Over TCP too.
            let (_, over_tcp) = dig(&server, &["+tcp", "web.demo.svc.cluster.local"]);
            assert_eq!(over_tcp, std::slice::from_ref(&cluster_ip));

            // Pods by dashed address; a pod by hostname under its subdomain's Service.
            let dashed = pod_ips[0].replace('.', "-");
            let (_, pod) = dig(&server, &[&format!("{dashed}.demo.pod.cluster.local")]);
            assert_eq!(pod, [pod_ips[0].clone()]);
            let db_ip = eventually("db-0's address", || {
                let ip = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "pod", "db-0", "-n", "demo"],
                    "{.status.podIP}",
                );
                (!ip.is_empty()).then_some(ip.clone()).ok_or(ip)
            });
            eventually("db-0.db", || {
                let (_, answers) = dig(&server, &["db-0.db.demo.svc.cluster.local"]);
                (answers == [db_ip.clone()])
                    .then_some(())
                    .ok_or(format!("{answers:?}"))
            });
            let (_, ptr) = dig(&server, &["-x", &db_ip]);
            assert_eq!(ptr, ["db-0.db.demo.svc.cluster.local."]);

            // ExternalName is a CNAME; absent names and types are told apart; other names refused.
            let (_, alias) = dig(&server, &["search.demo.svc.cluster.local"]);
            assert_eq!(alias, ["search.example.org."]);
            let (status, _) = dig(&server, &["nope.demo.svc.cluster.local"]);
            assert_eq!(status, "NXDOMAIN");
            let (status, answers) = dig(&server, &["web.demo.svc.cluster.local", "AAAA"]);
            assert_eq!((status.as_str(), answers.len()), ("NOERROR", 0), "NODATA");
            let (status, _) = dig(&server, &["example.org"]);
            assert_eq!(status, "REFUSED");

            // A LoadBalancer Service gets an address from the pool, as kubectl shows.
            eventually("the load balancer's address", || {
                let shown = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "service", "front", "-n", "demo"],
                ));
                shown.contains("10.200.0.1").then_some(()).ok_or(shown)
            });

            // A Service asking for an address another holds is refused before it is written.
            write(
                &repo.path(),
                "apps/thief/service.yaml",
                &format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: thief, namespace: demo}}\nspec:\n  clusterIP: {cluster_ip}\n  ports: [{{port: 80}}]\n"
                ),
            );
            commit(&repo.path(), "thief");
            wait_for(
                &log,
                &format!(
                    "Service demo/thief: spec.clusterIP: Invalid value: \"{cluster_ip}\": provided IP is already allocated (held by Service demo/web)"
                ),
            );
            let thief = kubectl(
                &kubeconfig,
                &cache,
                &["get", "service", "thief", "-n", "demo"],
            );
            assert!(!thief.status.success(), "nothing written: {}", text(&thief));

            // Scaling the backend changes the answers.
            write(
                &repo.path(),
                "apps/web/all.yaml",
                &SERVICES.replace("REPLICAS", "3"),
            );
            commit(&repo.path(), "three");
            peers(3);
            interrupt(child);
        }

        /// A Flux-style layout: applications (`apps/prod`, `apps/staging`) whose kustomizations
        /// build overlays (`overlays/NAME`) of a shared base (`base/web`), outside the path.
        fn kustomize_layout(repo: &Repo, web_tag: &str, staging_replicas: u32, colour: &str) {
            write(
                &repo.path(),
                "base/web/kustomization.yaml",
                "resources:\n- deploy.yaml\n- service.yaml\nconfigMapGenerator:\n- name: web-config\n  literals:\n  - colour=blue\n",
            );
            write(
                &repo.path(),
                "base/web/deploy.yaml",
                &format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: busybox:{web_tag}\n        command: [sleep, \"3600\"]\n        envFrom:\n        - configMapRef:\n            name: web-config\n"
                ),
            );
            write(
                &repo.path(),
                "base/web/service.yaml",
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80}\n",
            );
            for (env, replicas) in [("prod", 2), ("staging", staging_replicas)] {
                write(
                    &repo.path(),
                    &format!("overlays/{env}/namespace.yaml"),
                    &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {env}\n"),
                );
                write(
                    &repo.path(),
                    &format!("overlays/{env}/kustomization.yaml"),
                    &format!(
                        "resources:\n- namespace.yaml\n- ../../base/web\nnamespace: {env}\nnamePrefix: {env}-\nlabels:\n- pairs: {{env: {env}}}\nreplicas:\n- name: web\n  count: {replicas}\nconfigMapGenerator:\n- name: web-config\n  behavior: merge\n  literals:\n  - colour={colour}\n"
                    ),
                );
                write(
                    &repo.path(),
                    &format!("apps/{env}/kustomization.yaml"),
                    &format!("resources:\n- ../../overlays/{env}\n"),
                );
            }
        }

        /// A kustomization at the top of the path (Flux's `clusters/NAME`): the path is one
        /// application, `root`, and only what it lists is applied.
        #[test]
        fn a_kustomization_at_the_top_of_the_path_is_the_whole_desired_state() {
            let repo = Repo::new();
            write(
                &repo.path(),
                "apps/kustomization.yaml",
                "resources:\n- namespace.yaml\n- ../base\nnamespace: top\n",
            );
            write(
                &repo.path(),
                "apps/namespace.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: top\n",
            );
            write(
                &repo.path(),
                "base/kustomization.yaml",
                "resources:\n- cm.yaml\n",
            );
            write(&repo.path(), "base/cm.yaml", &config_map("listed", "1"));
            // Not listed by the kustomization: not part of the desired state.
            write(
                &repo.path(),
                "apps/unlisted/cm.yaml",
                &config_map("unlisted", "1"),
            );
            commit(&repo.path(), "first");
            let validated = Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args(["validate", "apps"])
                .current_dir(repo.path())
                .output()
                .expect("runs");
            assert_eq!(
                String::from_utf8_lossy(&validated.stdout),
                "2 objects in 2 files, 1 application: 1 Namespace, 1 ConfigMap\n",
                "{}",
                text(&validated)
            );
            let (_child, log) = repo.up_with(&["--runtime", "simulated", "--nodes", "1"]);
            wait_for(&log, "root Synced 2 created");
            let names: Vec<_> = items(&repo, "top")
                .iter()
                .map(|i| i["metadata"]["name"].clone())
                .collect();
            assert_eq!(names, vec![serde_json::json!("listed")]);
            assert!(
                items(&repo, "demo").is_empty(),
                "nothing unlisted is applied"
            );
        }

        #[test]
        fn kustomize_overlays_of_a_shared_base_sync_render_only_what_changed_and_prune() {
            let repo = Repo::new();
            kustomize_layout(&repo, "1.35", 1, "green");
            commit(&repo.path(), "first");
            let (_child, log) = repo.up_with(&[
                "--runtime",
                "simulated",
                "--nodes",
                "1",
                "--pod-start-delay",
                "100ms",
            ]);
            wait_for(&log, "staging Synced 4 created");
            wait_for(&log, "prod Synced 4 created");
            let kubeconfig = repo.data().join("kubeconfig");
            let cache = repo.dir.path().join("kube-cache");
            // The overlay's prefix, namespace, replicas and merged, hash-named ConfigMap; the
            // Deployment refers to the ConfigMap's new name.
            let deployment = |env: &str| -> serde_json::Value {
                let out = kubectl(
                    &kubeconfig,
                    &cache,
                    &[
                        "get",
                        "deployment",
                        &format!("{env}-web"),
                        "-n",
                        env,
                        "-o",
                        "json",
                    ],
                );
                assert!(out.status.success(), "{}", text(&out));
                serde_json::from_slice(&out.stdout).expect("JSON")
            };
            let prod = deployment("prod");
            assert_eq!(prod["spec"]["replicas"], 2);
            assert_eq!(prod["metadata"]["labels"]["env"], "prod");
            let config = prod["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                config.starts_with("prod-web-config-")
                    && config.len() == "prod-web-config-".len() + 10,
                "{config}"
            );
            let data = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "configmap", &config, "-n", "prod"],
                "{.data.colour}",
            );
            assert_eq!(data, "green");
            // Each object says which file of which commit it came from: the base's.
            assert!(
                prod["metadata"]["annotations"]["shipshape.dev/source"] == "base/web/deploy.yaml",
                "{}",
                prod["metadata"]["annotations"]
            );
            eventually("two prod pods and one staging pod running", || {
                let pods = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "pods", "-A", "--no-headers"],
                ));
                let running = |ns: &str| {
                    pods.lines()
                        .filter(|l| l.starts_with(ns) && l.contains("Running"))
                        .count()
                };
                (running("prod ") == 2 && running("staging ") == 1)
                    .then_some(())
                    .ok_or(pods)
            });

            // A push that changes one overlay renders and applies only that application.
            kustomize_layout(&repo, "1.35", 3, "green");
            commit(&repo.path(), "staging: three replicas");
            let pushed = wait_for(&log, "staging Synced 1 updated");
            let after = pushed
                .split("staging: three replicas")
                .nth(1)
                .unwrap_or_default();
            assert!(
                !after.contains("prod "),
                "prod is not applied again: {after}"
            );
            assert_eq!(deployment("staging")["spec"]["replicas"], 3);

            // A change to the shared base reaches both; a changed generator gets a new name,
            // the workloads follow it and the old ConfigMap is pruned.
            kustomize_layout(&repo, "1.36", 3, "red");
            commit(&repo.path(), "base: busybox 1.36, red");
            wait_for(&log, "prod Synced 1 created, 1 updated, 1 pruned");
            wait_for(&log, "staging Synced 1 created, 1 updated, 1 pruned");
            let prod = deployment("prod");
            assert_eq!(
                prod["spec"]["template"]["spec"]["containers"][0]["image"],
                "busybox:1.36"
            );
            let renamed = prod["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert_ne!(renamed, config);
            let maps = text(&kubectl(
                &kubeconfig,
                &cache,
                &["get", "configmaps", "-n", "prod", "--no-headers"],
            ));
            assert!(maps.contains(&renamed) && !maps.contains(&config), "{maps}");

            // A broken overlay fails its application with the file and line; the other stays.
            write(
                &repo.path(),
                "overlays/staging/kustomization.yaml",
                "resources:\n- namespace.yaml\n- ../../base/web\nnamespace: staging\npatches:\n- patch: |-\n    apiVersion: apps/v1\n    kind: Deployment\n    metadata:\n      name: api\n    spec:\n      replicas: 2\n",
            );
            commit(&repo.path(), "staging: a patch for nothing");
            let failed = wait_for(
                &log,
                "overlays/staging/kustomization.yaml:6: the patch targets Deployment api, which no resource defines",
            );
            assert!(failed.contains("staging Failed"), "{failed}");
            let status = text(&repo.shipshape(&["status"]));
            assert!(status.contains("prod Synced"), "{status}");
            assert_eq!(
                deployment("staging")["spec"]["replicas"],
                3,
                "the last good commit stays"
            );
        }

        #[test]
        fn deployments_roll_out_on_simulated_nodes_and_roll_back_on_revert() {
            let repo = Repo::new();
            write(
                &repo.path(),
                "apps/namespaces.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
            );
            write(
                &repo.path(),
                "apps/web/deploy.yaml",
                &deployment("busybox:1.35", "100m"),
            );
            write(
                &repo.path(),
                "apps/web/service.yaml",
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n",
            );
            commit(&repo.path(), "first");
            let (_child, log) = repo.up_with(&[
                "--runtime",
                "simulated",
                "--nodes",
                "2",
                "--node-cpu",
                "1",
                "--pod-start-delay",
                "200ms",
            ]);
            wait_for(&log, "web Synced");
            let kubeconfig = repo.data().join("kubeconfig");
            let cache = repo.dir.path().join("kube-cache");

            let nodes = text(&kubectl(&kubeconfig, &cache, &["get", "nodes"]));
            assert!(nodes.contains("node-1 Ready <none>"), "{nodes}");
            assert!(nodes.contains("node-2 Ready <none>"), "{nodes}");

            // Three pods, Running, each with an address from its node's /24, spread over both.
            let first = eventually("three Running pods", || {
                let pods = pods(&kubeconfig, &cache)?;
                let running = pods.iter().filter(|p| p[1] == "Running").count();
                if pods.len() == 3 && running == 3 {
                    Ok(pods)
                } else {
                    Err(format!("{pods:?}"))
                }
            });
            for pod in &first {
                let subnet = if pod[3] == "node-1" {
                    "10.244.0."
                } else {
                    "10.244.1."
                };
                assert!(pod[2].starts_with(subnet), "{pod:?}");
            }
            assert!(
                first.iter().any(|p| p[3] == "node-1") && first.iter().any(|p| p[3] == "node-2")
            );
            let first_set = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "replicasets", "-n", "demo"],
                "{.items[0].metadata.name}",
            );
            assert!(first_set.starts_with("web-"), "{first_set}");
            // Every pod is traceable to the commit that asked for it.
            let commits = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "pods", "-n", "demo"],
                "{.items[*].metadata.annotations.shipshape\\.dev/commit}",
            );
            assert_eq!(commits.split_whitespace().count(), 3, "{commits}");

            // The Service's Endpoints list the ready pods, on the named target port.
            eventually("endpoints for the three pods", || {
                let endpoints = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &[
                        "get",
                        "endpoints",
                        "web",
                        "-n",
                        "demo",
                        "-o",
                        "jsonpath={.subsets[0].addresses[*].ip} {.subsets[0].ports[0].port}",
                    ],
                ));
                let ips: Vec<&str> = endpoints.split_whitespace().collect();
                if ips.len() == 4 && ips[3] == "8080" {
                    Ok(())
                } else {
                    Err(endpoints)
                }
            });

            // The Service got a ClusterIP from the service CIDR; a change to it keeps it.
            let cluster_ip = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "service", "web", "-n", "demo"],
                "{.spec.clusterIP}",
            );
            assert!(cluster_ip.starts_with("10.96."), "{cluster_ip:?}");
            write(
                &repo.path(),
                "apps/web/service.yaml",
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\n  labels: {tier: front}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n",
            );
            commit(&repo.path(), "label the service");
            eventually("the service relabelled, same address", || {
                let seen = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "service", "web", "-n", "demo"],
                    "{.metadata.labels.tier} {.spec.clusterIP}",
                );
                (seen == format!("front {cluster_ip}"))
                    .then_some(())
                    .ok_or(seen)
            });

            // A template change rolls out; kubectl follows it to the end.
            write(
                &repo.path(),
                "apps/web/deploy.yaml",
                &deployment("busybox:1.36", "100m"),
            );
            commit(&repo.path(), "busybox 1.36");
            let rollout = kubectl(
                &kubeconfig,
                &cache,
                &[
                    "rollout",
                    "status",
                    "deployment/web",
                    "-n",
                    "demo",
                    "--timeout=60s",
                ],
            );
            assert!(rollout.status.success(), "{}", text(&rollout));
            assert!(
                text(&rollout).contains("successfully rolled out"),
                "{}",
                text(&rollout)
            );
            eventually("every pod on the new template", || {
                let images = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "pods", "-n", "demo"],
                    "{.items[*].spec.containers[0].image}",
                );
                let images: Vec<&str> = images.split_whitespace().collect();
                if images == ["busybox:1.36"; 3] {
                    Ok(())
                } else {
                    Err(format!("{images:?}"))
                }
            });
            let described = text(&kubectl(
                &kubeconfig,
                &cache,
                &["describe", "deployment", "web", "-n", "demo"],
            ));
            assert!(described.contains("ScalingReplicaSet"), "{described}");

            // Rollback is a Git revert: the old ReplicaSet comes back into service.
            super::git(&repo.path(), &["revert", "--no-edit", "HEAD"]);
            eventually("the first ReplicaSet serving again", || {
                let sets = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "replicasets", "-n", "demo", "--no-headers"],
                ));
                let serving: Vec<&str> = sets
                    .lines()
                    .filter(|l| l.split(' ').nth(1) == Some("3"))
                    .filter_map(|l| l.split(' ').next())
                    .collect();
                if serving == [first_set.as_str()] && sets.lines().count() == 2 {
                    Ok(())
                } else {
                    Err(sets)
                }
            });

            // A pod that fits nowhere says why, in Kubernetes' words.
            write(
                &repo.path(),
                "apps/web/deploy.yaml",
                &deployment("busybox:1.35", "64"),
            );
            commit(&repo.path(), "too big");
            eventually("a FailedScheduling event", || {
                let events = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "events", "-n", "demo"],
                ));
                if events.contains("FailedScheduling")
                    && events.contains("0/2 nodes are available: 2 Insufficient cpu.")
                {
                    Ok(())
                } else {
                    Err(events)
                }
            });
            // maxUnavailable 0: the old pods keep serving while the new one cannot start.
            let running = pods(&kubeconfig, &cache).unwrap_or_default();
            assert_eq!(
                running.iter().filter(|p| p[1] == "Running").count(),
                3,
                "{running:?}"
            );

            // Required anti-affinity on the hostname: one replica per node, the third waits.
            write(
                &repo.path(),
                "apps/solo/deploy.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: solo\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: solo\n  namespace: solo\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: solo}\n  template:\n    metadata:\n      labels: {app: solo}\n    spec:\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {matchLabels: {app: solo}}\n            topologyKey: kubernetes.io/hostname\n      containers:\n      - name: solo\n        image: busybox:1.35\n",
            );
            commit(&repo.path(), "one per node");
            eventually(
                "two solo pods on two nodes, the third pending with the reason",
                || {
                    let listed = text(&kubectl(
                        &kubeconfig,
                        &cache,
                        &["get", "pods", "-n", "solo", "-o", "wide", "--no-headers"],
                    ));
                    let rows: Vec<Vec<&str>> = listed
                        .lines()
                        .map(|l| l.split_whitespace().collect())
                        .collect();
                    let mut nodes: Vec<&str> = rows
                        .iter()
                        .filter(|r| r.get(2) == Some(&"Running"))
                        .filter_map(|r| r.get(6).copied())
                        .collect();
                    nodes.sort();
                    let pending = rows.iter().filter(|r| r.get(2) == Some(&"Pending")).count();
                    let events = text(&kubectl(
                        &kubeconfig,
                        &cache,
                        &["get", "events", "-n", "solo"],
                    ));
                    if nodes == ["node-1", "node-2"]
                    && pending == 1
                    && events.contains(
                        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.",
                    )
                {
                    Ok(())
                } else {
                    Err(format!("{listed}\n{events}"))
                }
                },
            );
        }

        #[test]
        fn kubectl_lists_in_chunks_and_sees_every_pod_once() {
            let repo = Repo::new();
            write(
                &repo.path(),
                "apps/namespaces.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
            );
            write(
                &repo.path(),
                "apps/web/deploy.yaml",
                &deployment("busybox:1.35", "10m").replace("replicas: 3", "replicas: 5"),
            );
            commit(&repo.path(), "five pods");
            let (_child, log) = repo.up_with(&["--runtime", "simulated", "--nodes", "2"]);
            wait_for(&log, "web Synced");
            let kubeconfig = repo.data().join("kubeconfig");
            let cache = repo.dir.path().join("kube-cache");
            let listed = |chunk: &str| {
                let chunk = format!("--chunk-size={chunk}");
                let args = ["get", "pods", "-n", "demo", "--no-headers", "-v=6", &chunk];
                let output = kubectl(&kubeconfig, &cache, &args);
                let names: Vec<String> = String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter_map(|line| line.split_whitespace().next().map(str::to_string))
                    .collect();
                (names, String::from_utf8_lossy(&output.stderr).into_owned())
            };
            let (whole, _) = eventually("five Running pods", || {
                let pods = pods(&kubeconfig, &cache)?;
                if pods.iter().filter(|p| p[1] == "Running").count() == 5 {
                    Ok(listed("0"))
                } else {
                    Err(format!("{pods:?}"))
                }
            });
            assert_eq!(whole.len(), 5, "{whole:?}");
            let (chunked, requests) = listed("2");
            assert_eq!(chunked, whole, "every pod once, in order");
            // Three pages: the first asks for two, the next two continue from the one before.
            let pages: Vec<&str> = requests
                .lines()
                .filter(|line| line.contains("/namespaces/demo/pods?") && line.contains("limit=2"))
                .collect();
            assert_eq!(pages.len(), 3, "{requests}");
            assert_eq!(
                pages.iter().filter(|l| l.contains("continue=")).count(),
                2,
                "{requests}"
            );

            // The raw list says what is left, and a token this server never gave is refused.
            let raw = |path: &str| kubectl(&kubeconfig, &cache, &["get", "--raw", path]);
            let first: serde_json::Value =
                serde_json::from_slice(&raw("/api/v1/namespaces/demo/pods?limit=2").stdout)
                    .expect("JSON");
            assert_eq!(first["metadata"]["remainingItemCount"], 3, "{first}");
            let refused = raw("/api/v1/namespaces/demo/pods?limit=2&continue=garbage");
            assert!(!refused.status.success());
            assert!(
                text(&refused).contains("continue: invalid token"),
                "{}",
                text(&refused)
            );
        }

        #[test]
        fn kubectl_reads_watches_and_is_told_where_desired_state_lives() {
            let repo = Repo::new();
            write(
                &repo.path(),
                "apps/namespaces.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
            );
            write(
                &repo.path(),
                "apps/web/page.yaml",
                &config_map("page", "hello"),
            );
            write(
                &repo.path(),
                "apps/web/deploy.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: demo\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: busybox:1.35\n        ports:\n        - containerPort: 8080\n",
            );
            write(
                &repo.path(),
                "apps/web/pod.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: debug\n  namespace: demo\nspec:\n  containers:\n  - name: sh\n    image: busybox:1.35\n",
            );
            commit(&repo.path(), "first");
            let (child, log) = repo.up();
            wait_for(&log, "web Synced");
            let kubeconfig = repo.data().join("kubeconfig");
            let cache = repo.dir.path().join("kube-cache");

            // The controllers, scheduler and (simulated) nodes bring the Deployment up.
            eventually("the Deployment becoming available", || {
                let deployments =
                    kubectl(&kubeconfig, &cache, &["get", "deployments", "-n", "demo"]);
                let table = squash(&String::from_utf8_lossy(&deployments.stdout));
                if table.starts_with("NAME READY UP-TO-DATE AVAILABLE AGE\nweb 2/2 2 2 ") {
                    Ok(())
                } else {
                    Err(text(&deployments))
                }
            });

            let yaml = String::from_utf8_lossy(
                &kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "configmap", "page", "-n", "demo", "-o", "yaml"],
                )
                .stdout,
            )
            .into_owned();
            assert!(
                yaml.contains("shipshape.dev/source: apps/web/page.yaml"),
                "{yaml}"
            );
            assert!(yaml.contains("value: hello"), "{yaml}");

            let describe = text(&kubectl(
                &kubeconfig,
                &cache,
                &["describe", "deployment", "web", "-n", "demo"],
            ));
            assert!(describe.contains("Replicas: 2 desired"), "{describe}");
            assert!(describe.contains("Port: 8080/TCP"), "{describe}");

            let watch_log = repo.dir.path().join("watch.log");
            let watch = Running(
                Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .arg("--cache-dir")
                    .arg(&cache)
                    .args(["get", "configmaps", "-n", "demo", "-w"])
                    .stdout(std::fs::File::create(&watch_log).expect("log"))
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("kubectl watches"),
            );
            wait_for(&watch_log, "page 1");
            let own_watch_log = repo.dir.path().join("own-watch.log");
            let own_watch = Running(
                Command::new(env!("CARGO_BIN_EXE_shipshape"))
                    .args(["get", "configmaps", "-n", "demo", "-w", "--data-dir"])
                    .arg(repo.data())
                    .stdout(std::fs::File::create(&own_watch_log).expect("log"))
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("shipshape watches"),
            );
            wait_for(&own_watch_log, "page web");
            let json_watch_log = repo.dir.path().join("json-watch.log");
            let json_watch = Running(
                Command::new(env!("CARGO_BIN_EXE_shipshape"))
                    .args([
                        "get",
                        "configmaps",
                        "-n",
                        "demo",
                        "-w",
                        "-o",
                        "json",
                        "--data-dir",
                    ])
                    .arg(repo.data())
                    .stdout(std::fs::File::create(&json_watch_log).expect("log"))
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("shipshape watches"),
            );
            wait_for(&json_watch_log, "\"name\":\"page\"");
            write(
                &repo.path(),
                "apps/web/extra.yaml",
                &config_map("extra", "new"),
            );
            commit(&repo.path(), "add extra");
            wait_for(&watch_log, "extra 1");
            let seen = wait_for(&own_watch_log, "extra web");
            assert!(
                seen.lines()
                    .any(|l| l.starts_with("extra web") && l.ends_with("added")),
                "{seen}"
            );
            wait_for(&json_watch_log, "\"name\":\"extra\"");
            let events: Vec<serde_json::Value> = std::fs::read_to_string(&json_watch_log)
                .expect("log")
                .lines()
                .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
                .collect();
            assert!(
                events.iter().any(|e| e["type"] == "ADDED"
                    && e["object"]["metadata"]["name"] == "extra"
                    && e["object"]["data"]["value"] == "new"),
                "{events:?}"
            );
            drop(json_watch);
            drop(own_watch);
            drop(watch);

            let metrics = String::from_utf8_lossy(
                &kubectl(&kubeconfig, &cache, &["get", "--raw", "/metrics"]).stdout,
            )
            .into_owned();
            assert!(
                metrics.contains("shipshape_syncs_total{application=\"web\",result=\"synced\"}"),
                "{metrics}"
            );
            assert!(
                metrics.contains("shipshape_store_write_duration_seconds_count"),
                "{metrics}"
            );

            let events = text(&kubectl(
                &kubeconfig,
                &cache,
                &["get", "events", "-n", "demo"],
            ));
            assert!(
                events.starts_with("LAST SEEN TYPE REASON OBJECT MESSAGE"),
                "{events}"
            );
            assert!(
                events.contains("Normal Created configmap/extra created from commit"),
                "{events}"
            );
            let described = text(&kubectl(
                &kubeconfig,
                &cache,
                &["describe", "configmap", "extra", "-n", "demo"],
            ));
            assert!(
                described.contains("\"add extra\" (apps/web/extra.yaml)"),
                "{described}"
            );

            let refused = kubectl(
                &kubeconfig,
                &cache,
                &["delete", "configmap", "page", "-n", "demo"],
            );
            assert_eq!(refused.status.code(), Some(1));
            assert!(
                text(&refused)
                    .contains("desired state comes from Git: edit apps/web/page.yaml and commit"),
                "{}",
                text(&refused)
            );
            // `kubectl scale` goes through the scale subresource: refused the same way.
            let scaled = kubectl(
                &kubeconfig,
                &cache,
                &[
                    "scale",
                    "deployment",
                    "web",
                    "-n",
                    "demo",
                    "--replicas",
                    "5",
                ],
            );
            assert_eq!(scaled.status.code(), Some(1), "{}", text(&scaled));
            assert!(
                text(&scaled)
                    .contains("desired state comes from Git: edit apps/web/deploy.yaml and commit"),
                "{}",
                text(&scaled)
            );
            let uid = |kubeconfig: &Path, cache: &Path| {
                String::from_utf8_lossy(
                    &kubectl(
                        kubeconfig,
                        cache,
                        &[
                            "get",
                            "pod",
                            "debug",
                            "-n",
                            "demo",
                            "-o",
                            "jsonpath={.metadata.uid}",
                        ],
                    )
                    .stdout,
                )
                .into_owned()
            };
            let first_uid = uid(&kubeconfig, &cache);
            assert!(!first_uid.is_empty());
            let deleted = kubectl(
                &kubeconfig,
                &cache,
                &["delete", "pod", "debug", "-n", "demo", "--wait=false"],
            );
            assert!(deleted.status.success(), "{}", text(&deleted));
            assert!(
                text(&deleted).contains("pod \"debug\" deleted"),
                "{}",
                text(&deleted)
            );
            // Git declares that pod: GitSync, its controller, brings it back on the next poll.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let back = kubectl(&kubeconfig, &cache, &["get", "pod", "debug", "-n", "demo"]);
                if back.status.success() {
                    assert_ne!(
                        uid(&kubeconfig, &cache),
                        first_uid,
                        "a new pod, not the old one"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the pod never came back: {}",
                    text(&back)
                );
                std::thread::sleep(Duration::from_millis(100));
            }

            let stranger = repo.dir.path().join("stranger");
            let config = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
            let token_line = config
                .lines()
                .find(|l| l.trim_start().starts_with("token:"))
                .expect("token")
                .to_string();
            std::fs::write(
                &stranger,
                config.replace(&token_line, "    token: not-the-token"),
            )
            .expect("write");
            let unauthorized = kubectl(
                &stranger,
                &cache.join("stranger"),
                &["get", "configmaps", "-A"],
            );
            assert_ne!(unauthorized.status.code(), Some(0));
            assert!(
                text(&unauthorized).contains("provide credentials"),
                "{}",
                text(&unauthorized)
            );

            // shipshape's own commands reach the running cluster through the same API.
            let status = text(&repo.shipshape(&["status"]));
            assert!(status.contains("web Synced"), "{status}");
            let listed = text(&repo.shipshape(&["get", "configmaps", "-n", "demo"]));
            assert!(listed.contains("extra web"), "{listed}");
            let synced = repo.shipshape(&["sync"]);
            assert!(synced.status.success(), "{}", text(&synced));
            assert!(
                text(&synced).contains("web Synced unchanged"),
                "{}",
                text(&synced)
            );
            assert!(repo.shipshape(&["suspend", "web"]).status.success());
            assert!(text(&repo.shipshape(&["status"])).contains("web Synced"));
            assert!(text(&repo.shipshape(&["status"])).contains("suspended"));
            assert!(repo.shipshape(&["resume", "web"]).status.success());
            let verify = repo.shipshape(&["audit", "verify"]);
            assert!(
                text(&verify).starts_with("audit log intact"),
                "{}",
                text(&verify)
            );

            interrupt(child);
            let history = text(&repo.shipshape(&["history", "--object", "pod/demo/debug"]));
            assert!(history.contains("client/admin (kubectl"), "{history}");
            assert!(history.contains("deleted Pod demo/debug"), "{history}");
        }
    }

    pub(super) mod containerd {
        //! Real pods: `up --runtime containerd` on this machine's containerd, runc and CNI
        //! plugins, with real kubectl. Runs as root (CI does); everything it creates is removed
        //! even when an assertion fails.

        use super::*;

        pub(crate) fn is_root() -> bool {
            std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().nth(1).map(|id| id == "0"))
                    .unwrap_or(false)
            })
        }

        fn pod_list(kubeconfig: &Path, cache: &Path) -> Result<Vec<serde_json::Value>, String> {
            let output = kubectl(
                kubeconfig,
                cache,
                &["get", "pods", "-n", "demo", "-o", "json"],
            );
            if !output.status.success() {
                return Err(text(&output));
            }
            let list: serde_json::Value =
                serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
            Ok(list["items"].as_array().cloned().unwrap_or_default())
        }

        fn pod(kubeconfig: &Path, cache: &Path, name: &str) -> Result<serde_json::Value, String> {
            pod_list(kubeconfig, cache)?
                .into_iter()
                .find(|p| p["metadata"]["name"] == name)
                .ok_or_else(|| format!("no pod {name}"))
        }

        fn web_pods(kubeconfig: &Path, cache: &Path) -> Result<Vec<serde_json::Value>, String> {
            let pods: Vec<_> = pod_list(kubeconfig, cache)?
                .into_iter()
                .filter(|p| p["metadata"]["labels"]["app"] == "web")
                .collect();
            let ready = |p: &serde_json::Value| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            };
            if pods.len() == 2 && pods.iter().all(ready) {
                Ok(pods)
            } else {
                Err(serde_json::to_string_pretty(&pods).unwrap_or_default())
            }
        }

        /// A plain HTTP GET to a pod address (inside the bridges the cluster made).
        fn http_get(address: &str) -> Result<String, String> {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect_timeout(
                &address.parse().map_err(|e| format!("{address}: {e}"))?,
                Duration::from_secs(2),
            )
            .map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .map_err(|e| e.to_string())?;
            write!(stream, "GET / HTTP/1.0\r\nHost: {address}\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .map_err(|e| e.to_string())?;
            Ok(answer)
        }

        /// Builds busybox:1.35 from Debian's static busybox with `shipshape image pack`.
        pub(crate) fn busybox_image(dir: &Path) -> PathBuf {
            let root = dir.join("rootfs");
            for sub in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
                std::fs::create_dir_all(root.join(sub)).expect("mkdir");
            }
            let busybox = ["/bin/busybox", "/usr/bin/busybox"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .expect("busybox-static is installed (scripts/setup)");
            std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
            let list = Command::new(busybox)
                .arg("--list")
                .output()
                .expect("busybox --list");
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                if applet != "busybox" {
                    std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                        .expect("symlink");
                }
            }
            let archive = dir.join("busybox.tar");
            let output = Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args(["image", "pack"])
                .arg(&root)
                .args(["--tag", "busybox:1.35", "-o"])
                .arg(&archive)
                .output()
                .expect("pack runs");
            assert!(output.status.success(), "{}", text(&output));
            archive
        }

        /// Removes whatever a failed run left: processes, mounts, namespaces, bridges, cgroups.
        pub(crate) struct Cleanup {
            pub(crate) data: PathBuf,
            /// `route_localnet` before the test (the proxy sets it; a killed `up` cannot put it
            /// back).
            pub(crate) route_localnet: String,
            /// A containerd that is not ours (the system's), once known: what the test put in
            /// it (containers, the image, the node namespaces) is removed from it too.
            pub(crate) shared_socket: Option<String>,
        }

        impl Cleanup {
            fn clean_shared_containerd(&self) {
                let Some(socket) = &self.shared_socket else {
                    return;
                };
                let ctr = |namespace: &str, args: &[&str]| {
                    Command::new("ctr")
                        .args(["--address", socket, "--namespace", namespace])
                        .args(args)
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default()
                };
                for namespace in ["shipshape-node-1", "shipshape-node-2", "shipshape-node-3"] {
                    for id in ctr(namespace, &["task", "ls", "-q"]).lines() {
                        ctr(namespace, &["task", "delete", "--force", id]);
                    }
                    for id in ctr(namespace, &["container", "ls", "-q"]).lines() {
                        ctr(namespace, &["container", "delete", id]);
                    }
                    for image in ctr(namespace, &["image", "ls", "-q"]).lines() {
                        ctr(namespace, &["image", "remove", "--sync", image]);
                    }
                    // The collector removes the unpacked layers shortly after the image.
                    for _ in 0..20 {
                        let left = ctr(namespace, &["snapshot", "ls"]);
                        if left.lines().count() <= 1 {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Command::new("ctr")
                        .args(["--address", socket, "namespace", "remove", namespace])
                        .output()
                        .ok();
                }
            }
        }

        impl Drop for Cleanup {
            fn drop(&mut self) {
                self.clean_shared_containerd();
                let data = self.data.display().to_string();
                // Our containerd and its shims name the data directory on their command line.
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    if cmdline.contains(&data)
                        && (cmdline.contains("containerd") || cmdline.contains("shipshape"))
                    {
                        let _ = Command::new("kill")
                            .args(["-9", &entry.file_name().to_string_lossy()])
                            .status();
                    }
                }
                // With their shims gone, the containers' processes are only found by cgroup.
                let procs = Command::new("sh")
                    .args(["-c", "cat $(find /sys/fs/cgroup -path '*/shipshape/node-*' -name cgroup.procs) 2>/dev/null"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
                std::thread::sleep(Duration::from_millis(300));
                let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
                let mut ours: Vec<&str> = mounts
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .filter(|m| m.starts_with(&data))
                    .collect();
                ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
                for mount in ours {
                    let _ = Command::new("umount").args(["-l", mount]).status();
                }
                for name in std::fs::read_dir("/run/netns")
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let name = name.file_name().to_string_lossy().into_owned();
                    if name.starts_with("shipshape-") {
                        let _ = Command::new("ip").args(["netns", "delete", &name]).status();
                    }
                }
                for bridge in ["ship-node-1", "ship-node-2", "ship-node-3"] {
                    if Path::new("/sys/class/net").join(bridge).exists() {
                        let _ = Command::new("ip").args(["link", "delete", bridge]).status();
                    }
                }
                let _ = Command::new("sh")
                    .args(["-c", "find /sys/fs/cgroup -depth -type d -path '*/shipshape*' -exec rmdir {} + 2>/dev/null"])
                    .status();
                let _ = Command::new("sh")
                    .args(["-c", "nft list table ip shipshape >/dev/null 2>&1 && nft delete table ip shipshape"])
                    .status();
                // portmap's rules for the nodes' pods (hostPort), then its shared chains.
                let _ = Command::new("sh").args(["-c", PORTMAP_CLEANUP]).status();
                if !self.route_localnet.is_empty() {
                    let _ = std::fs::write(ROUTE_LOCALNET, &self.route_localnet);
                }
            }
        }

        pub(crate) const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

        /// Removes the portmap chains of the test nodes' pods (their jumps carry the network
        /// name `shipshape-ship-node-N`), then the shared `CNI-HOSTPORT-*` chains once nothing
        /// else jumps from them to a pod.
        const PORTMAP_CLEANUP: &str = r#"
iptables -t nat -S CNI-HOSTPORT-DNAT 2>/dev/null | grep -e '-A CNI-HOSTPORT-DNAT .*name: \\"shipshape-ship-node-' | while read -r rule; do
  chain=${rule##*-j }
  eval "iptables -t nat -D ${rule#-A }"
  iptables -t nat -F "$chain"; iptables -t nat -X "$chain"
done
if iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 && ! iptables -t nat -S CNI-HOSTPORT-DNAT | grep -q '^-A'; then
  while iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null; do :; done
  while iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null; do :; done
  while iptables -t nat -D POSTROUTING -m comment --comment 'CNI portfwd requiring masquerade' -j CNI-HOSTPORT-MASQ 2>/dev/null; do :; done
  for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-SETMARK CNI-HOSTPORT-MASQ; do
    iptables -t nat -F $chain; iptables -t nat -X $chain
  done
fi
"#;

        /// What every real-pod test starts from: a repository with the `demo` namespace and
        /// what `apps` writes, committed; `up` on containerd with two nodes, busybox imported, and
        /// `flags`; the cleanup guard. `None` (the test skips) without root outside CI. Fields
        /// drop in order: `up` first, then the guard, then the repository.
        struct RealCluster {
            child: Running,
            cleanup: Cleanup,
            log: PathBuf,
            kubeconfig: PathBuf,
            cache: PathBuf,
            socket: String,
            repo: Repo,
        }

        fn real_cluster(apps: impl FnOnce(&Repo), flags: &[&str]) -> Option<RealCluster> {
            if !is_root() {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI runs as root: the containerd tests must run there"
                );
                eprintln!("skipped: real pods need root (CI runs this as root)");
                return None;
            }
            let repo = Repo::new();
            let mut cleanup = Cleanup {
                data: repo.data(),
                route_localnet: std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_default(),
                shared_socket: None,
            };
            let image = busybox_image(repo.dir.path());
            write(
                &repo.path(),
                "apps/namespaces.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n",
            );
            apps(&repo);
            commit(&repo.path(), "apps");
            let image_arg = image.display().to_string();
            let mut args = vec![
                "--runtime",
                "containerd",
                "--nodes",
                "2",
                "--import",
                &image_arg,
            ];
            args.extend_from_slice(flags);
            let (child, log) = repo.up_with(&args);
            wait_for(&log, "images: docker.io/library/busybox:1.35");
            wait_for(&log, "nodes: 2 on containerd");
            let socket = socket_in_use(&repo.data());
            if !socket.starts_with(&repo.data().display().to_string()) {
                cleanup.shared_socket = Some(socket.clone());
            }
            Some(RealCluster {
                child,
                cleanup,
                log,
                kubeconfig: repo.data().join("kubeconfig"),
                cache: repo.dir.path().join("kube-cache"),
                socket,
                repo,
            })
        }

        /// The containerd socket the running cluster uses (its own, or the system's when one
        /// answers, as on a stock Debian with the containerd service running).
        pub(crate) fn socket_in_use(data: &Path) -> String {
            let record: serde_json::Value = serde_json::from_slice(
                &std::fs::read(data.join("runtime.json")).expect("up records its runtime"),
            )
            .expect("runtime.json is JSON");
            record["socket"].as_str().expect("a socket").to_string()
        }

        /// The shims running our nodes' containers on `socket`.
        fn shims_of(socket: &str) -> usize {
            let address = format!("-address {socket}");
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| {
                    let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    cmdline.contains("containerd-shim")
                        && cmdline.contains("-namespace shipshape-node-")
                        && cmdline.contains(&address)
                })
                .count()
        }

        const DEPLOYMENT: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: demo}
data: {GREETING: hello-from-configmap}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: page, namespace: demo}
data: {index.html: "<h1>served by busybox</h1>"}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: busybox:1.35
        command: ["sh", "-c", "echo greeting=$GREETING; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
        env:
        - name: GREETING
          valueFrom:
            configMapKeyRef: {name: settings, key: GREETING}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec: {command: ["sh", "-c", "echo stopping > /hooks/$HOSTNAME"]}
        volumeMounts: [{name: page, mountPath: /www}, {name: hooks, mountPath: /hooks}]
      volumes:
      - name: page
        configMap: {name: page}
      - name: hooks
        hostPath: {path: HOOKS, type: DirectoryOrCreate}
"#;

        const TROUBLE: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: never-ready, namespace: demo, labels: {app: never-ready}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sleep", "3600"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
  - name: closed
    image: busybox:1.35
    command: ["sleep", "3600"]
    readinessProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: never-ready, namespace: demo}
spec:
  selector: {app: never-ready}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: forgetful, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/alive"]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: pair, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: prepare
    image: busybox:1.35
    command: ["sh", "-c", "echo from-init > /shared/index.html"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: server
    image: busybox:1.35
    command: ["httpd", "-f", "-p", "8081", "-h", "/shared"]
    readinessProbe:
      tcpSocket: {port: 8081}
      periodSeconds: 1
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: client
    image: busybox:1.35
    command: ["sh", "-c", "until wget -qO- http://127.0.0.1:8081/; do sleep 0.2; done; exec sleep 3600"]
    securityContext: {runAsUser: 1000, runAsNonRoot: true, readOnlyRootFilesystem: true}
  volumes:
  - name: shared
    emptyDir: {}
---
apiVersion: v1
kind: Pod
metadata: {name: rooted, namespace: demo}
spec:
  containers:
  - name: main
    image: busybox:1.35
    command: ["sleep", "3600"]
    securityContext: {runAsNonRoot: true}
---
apiVersion: v1
kind: Pod
metadata: {name: hog, namespace: demo}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.35
    command: ["sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"]
    resources:
      limits: {memory: 16Mi}
"#;

        const SERVED: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox:1.35
        command: ["sh", "-c", "mkdir -p /tmp/www; echo $HOSTNAME > /tmp/www/index.html; exec httpd -f -p 8080 -h /tmp/www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-outside, namespace: demo}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: demo}
spec:
  type: LoadBalancer
  sessionAffinity: ClientIP
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: demo}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sleep", "3600"]
    env:
    - {name: WEB_URL, value: "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)"}
    - {name: NOBODY_SERVICE_PORT, value: "8080"}
---
apiVersion: v1
kind: Pod
metadata: {name: linkless, namespace: demo}
spec:
  enableServiceLinks: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sleep", "3600"]
"#;

        /// The pod names that answer at `address` over a number of requests.
        fn answering(address: &str, tries: usize) -> std::collections::BTreeSet<String> {
            (0..tries)
                .filter_map(|_| http_get(address).ok())
                .filter_map(|answer| answer.lines().last().map(|l| l.trim().to_string()))
                .filter(|name| name.starts_with("web-"))
                .collect()
        }

        #[test]
        fn services_reach_ready_pods_by_name_and_address() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            let route_localnet_before = std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_default();
            let apps = |repo: &Repo| {
                write(
                    &repo.path(),
                    "apps/web/all.yaml",
                    &SERVED.replace("REPLICAS", "2"),
                );
            };
            let Some(RealCluster {
                child,
                cleanup,
                log,
                kubeconfig,
                cache,
                socket: _socket,
                repo,
            }) = real_cluster(apps, &["--lb-pool", "10.200.0.1-10.200.0.1"])
            else {
                return;
            };
            let server = dns_address(&log);
            let cluster_ip = eventually("the web Service's address", || {
                let ip = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "service", "web", "-n", "demo"],
                    "{.spec.clusterIP}",
                );
                (!ip.is_empty()).then_some(ip.clone()).ok_or(ip)
            });
            eventually("two ready web pods", || web_pods(&kubeconfig, &cache));
            let env_of = |name: &str| {
                eventually(&format!("{name} running and its environment"), || {
                    let p = pod(&kubeconfig, &cache, name)?;
                    if p["status"]["phase"] != "Running" {
                        return Err(p["status"].to_string());
                    }
                    let out = kubectl(
                        &kubeconfig,
                        &cache,
                        &["exec", "-n", "demo", name, "--", "env"],
                    );
                    let env = String::from_utf8_lossy(&out.stdout).into_owned();
                    out.status.success().then_some(env).ok_or(text(&out))
                })
            };
            // Service links: the namespace's Services as variables (the Services are applied
            // before the pods), explicit env winning over them and able to refer to them; none
            // for a pod that turned them off.
            let env = env_of("client");
            for expected in [
                format!("WEB_SERVICE_HOST={cluster_ip}"),
                "WEB_SERVICE_PORT=80".to_string(),
                "WEB_SERVICE_PORT_HTTP=80".to_string(),
                format!("WEB_PORT=tcp://{cluster_ip}:80"),
                format!("WEB_PORT_80_TCP_ADDR={cluster_ip}"),
                format!("WEB_URL=http://{cluster_ip}:80"),
                "NOBODY_SERVICE_PORT=8080".to_string(),
            ] {
                assert!(env.lines().any(|l| l == expected), "{expected} in {env}");
            }
            assert!(env.contains("WEB_OUTSIDE_SERVICE_HOST="), "{env}");
            let linkless = env_of("linkless");
            assert!(!linkless.contains("_SERVICE_HOST="), "{linkless}");

            // From inside a pod: the short name resolves through resolv.conf to the ClusterIP,
            // and a fetch by name lands on a ready backend.
            let looked_up = eventually("nslookup web in the client", || {
                let out = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["exec", "-n", "demo", "client", "--", "nslookup", "web"],
                ));
                (out.contains("web.demo.svc.cluster.local") && out.contains(&cluster_ip))
                    .then_some(out.clone())
                    .ok_or(out)
            });
            assert!(
                looked_up.contains("10.96.0.10"),
                "asked the DNS service address: {looked_up}"
            );
            let fetched = eventually("wget http://web in the client", || {
                let out = kubectl(
                    &kubeconfig,
                    &cache,
                    &[
                        "exec",
                        "-n",
                        "demo",
                        "client",
                        "--",
                        "wget",
                        "-qO-",
                        "http://web",
                    ],
                );
                let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
                body.starts_with("web-").then_some(body).ok_or(text(&out))
            });
            assert!(fetched.starts_with("web-"), "{fetched}");

            // From the host: the ClusterIP, and the NodePort on loopback, spread over both pods.
            let spread = eventually("both pods behind the ClusterIP", || {
                let seen = answering(&format!("{cluster_ip}:80"), 20);
                (seen.len() == 2)
                    .then_some(seen.clone())
                    .ok_or(format!("{seen:?}"))
            });
            eventually("both pods behind the NodePort on 127.0.0.1", || {
                let seen = answering("127.0.0.1:30080", 20);
                (seen == spread).then_some(()).ok_or(format!("{seen:?}"))
            });
            // ClientIP affinity: one client, one pod; the load-balancer address from the pool
            // is served like the ClusterIP.
            let sticky = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "service", "sticky", "-n", "demo"],
                "{.spec.clusterIP}",
            );
            let seen = answering(&format!("{sticky}:80"), 20);
            assert_eq!(seen.len(), 1, "sessionAffinity ClientIP: {seen:?}");
            eventually("the load-balancer address answering", || {
                let seen = answering("10.200.0.1:80", 5);
                (seen.len() == 1).then_some(()).ok_or(format!("{seen:?}"))
            });
            // A Service nothing serves refuses at once rather than hanging.
            let nobody = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "service", "nobody", "-n", "demo"],
                "{.spec.clusterIP}",
            );
            let started = Instant::now();
            let refused = http_get(&format!("{nobody}:80"));
            assert!(refused.is_err(), "{refused:?}");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "refused, not timed out: {refused:?}"
            );

            // Scaling the backend changes what the proxy and DNS return.
            write(
                &repo.path(),
                "apps/web/all.yaml",
                &SERVED.replace("REPLICAS", "3"),
            );
            commit(&repo.path(), "three");
            eventually("three pods behind the ClusterIP", || {
                let seen = answering(&format!("{cluster_ip}:80"), 30);
                (seen.len() == 3).then_some(()).ok_or(format!("{seen:?}"))
            });
            let (_, records) = dig(&server, &["web.demo.svc.cluster.local"]);
            assert_eq!(records, std::slice::from_ref(&cluster_ip));

            // Stopping removes every rule the proxy added, and puts route_localnet back.
            interrupt(child);
            let tables = Command::new("nft")
                .args(["list", "tables"])
                .output()
                .expect("nft runs");
            let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
            assert!(!tables.contains("shipshape"), "{tables}");
            let after = std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_default();
            assert_eq!(after, route_localnet_before);
            drop(cleanup);
        }

        const SHOP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 2
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: httpd
        image: busybox:1.35
        command: ["sh", "-c", "mkdir -p /tmp/www/api; echo $HOSTNAME $VERSION > /tmp/www/index.html; cp /tmp/www/index.html /tmp/www/api/; exec httpd -f -p 8080 -h /tmp/www"]
        env: [{name: VERSION, value: VERSION_VALUE}]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec: {command: ["sleep", "2"]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: demo}
spec:
  replicas: API_REPLICAS
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox:1.35
        command: ["sh", "-c", "mkdir -p /tmp/www/api; echo $HOSTNAME > /tmp/www/index.html; cp /tmp/www/index.html /tmp/www/api/; exec httpd -f -p 8080 -h /tmp/www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
      - name: echo
        image: busybox:1.35
        command: ["sh", "-c", "printf '%s\\n' 'while read -r line; do case \"$line\" in \"\"|\"$(printf \"\\r\")\") break;; esac; done' 'printf \"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n\"' 'exec cat' > /tmp/ws.sh; chmod +x /tmp/ws.sh; exec nc -ll -p 9000 -e /tmp/ws.sh"]
        ports: [{name: ws, containerPort: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: demo}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: http}, {name: ws, port: 9000, targetPort: ws}]
---
apiVersion: v1
kind: Secret
metadata: {name: secure-cert, namespace: demo}
type: kubernetes.io/tls
data: {tls.crt: CERT, tls.key: KEY}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: demo}
spec:
  tls: [{hosts: [secure.example.com], secretName: secure-cert}]
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
  - host: "*.api.example.com"
    http:
      paths:
      - {path: /ws, pathType: Exact, backend: {service: {name: api, port: {name: ws}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
  - host: secure.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

        /// A free loopback port (for the ingress' listeners).
        fn free_port() -> u16 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        }

        /// A self-signed certificate for `host` (PEM certificate, PEM key).
        fn self_signed(dir: &Path, host: &str) -> (String, String) {
            let (cert, key) = (
                dir.join(format!("{host}.crt")),
                dir.join(format!("{host}.key")),
            );
            let status = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-days", "2", "-subj"])
                .arg(format!("/CN={host}"))
                .arg("-addext")
                .arg(format!("subjectAltName=DNS:{host}"))
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success());
            (
                std::fs::read_to_string(cert).expect("cert"),
                std::fs::read_to_string(key).expect("key"),
            )
        }

        fn shop(version: &str, api_replicas: &str, cert: &(String, String)) -> String {
            use base64::Engine as _;
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            SHOP.replace("VERSION_VALUE", version)
                .replace("API_REPLICAS", api_replicas)
                .replace("CERT", &b64(&cert.0))
                .replace("KEY", &b64(&cert.1))
        }

        /// `curl` through the ingress: (status, body).
        fn curl(args: &[&str]) -> (String, String) {
            let output = Command::new("curl")
                .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
                .args(args)
                .output()
                .expect("curl runs");
            let out = String::from_utf8_lossy(&output.stdout).into_owned();
            let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
            (status.to_string(), body.trim().to_string())
        }

        #[test]
        fn an_ingress_serves_pods_by_host_and_path_over_http_and_https() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            let certs = tempfile::tempdir().expect("tempdir");
            let first = self_signed(certs.path(), "secure.example.com");
            let apps = |repo: &Repo| {
                write(
                    &repo.path(),
                    "apps/shop/all.yaml",
                    &shop("one", "1", &first),
                );
            };
            let (http_port, https_port) = (free_port(), free_port());
            let http = format!("127.0.0.1:{http_port}");
            let https = format!("127.0.0.1:{https_port}");
            let Some(RealCluster {
                child,
                cleanup,
                log,
                kubeconfig,
                cache,
                socket: _socket,
                repo,
            }) = real_cluster(apps, &["--ingress-http", &http, "--ingress-https", &https])
            else {
                return;
            };
            wait_for(
                &log,
                &format!("ingress (class shipshape) on http://{http} and https://{https}"),
            );
            // The built-in class, the Ingress's address, and the application Healthy.
            let address = eventually("the Ingress's status", || {
                let ip = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "ingress", "shop", "-n", "demo"],
                    "{.status.loadBalancer.ingress[0].ip}",
                );
                (ip == "127.0.0.1").then_some(ip.clone()).ok_or(ip)
            });
            assert_eq!(address, "127.0.0.1");
            let class = text(&kubectl(&kubeconfig, &cache, &["get", "ingressclass"]));
            assert!(class.contains("shipshape shipshape.dev/ingress"), "{class}");
            let web = format!("http://{http}/");
            let host = |h: &str| format!("Host: {h}");
            let (status, body) = eventually("web through the ingress", || {
                let (status, body) = curl(&["-H", &host("web.example.com"), &web]);
                (status == "200" && body.starts_with("web-"))
                    .then(|| (status.clone(), body.clone()))
                    .ok_or(format!("{status} {body}"))
            });
            assert!(body.ends_with(" one"), "{status} {body}");
            // Both web pods answer in turn; a path goes to the other Service; a wildcard host.
            eventually("both web pods through the ingress", || {
                let seen: std::collections::BTreeSet<String> = (0..10)
                    .map(|_| curl(&["-H", &host("web.example.com"), &web]).1)
                    .filter(|b| b.starts_with("web-"))
                    .collect();
                (seen.len() == 2).then_some(()).ok_or(format!("{seen:?}"))
            });
            let (status, body) = curl(&[
                "-H",
                &host("web.example.com"),
                &format!("http://{http}/api/"),
            ]);
            assert!(
                status == "200" && body.starts_with("api-"),
                "{status} {body}"
            );
            let (status, body) = curl(&["-H", &host("eu.api.example.com"), &web]);
            assert!(
                status == "200" && body.starts_with("api-"),
                "{status} {body}"
            );
            let (status, _) = curl(&["-H", &host("nothing.example.com"), &web]);
            assert_eq!(status, "404");
            eventually("the application Healthy", || {
                let status = text(&repo.shipshape(&["status"]));
                status
                    .lines()
                    .any(|l| l.starts_with("shop ") && l.contains("Healthy"))
                    .then_some(())
                    .ok_or(status)
            });

            // HTTPS by SNI with the Secret's certificate (HTTP/2 when offered).
            let ca = certs.path().join("secure.example.com.crt");
            let resolve = format!("secure.example.com:{https_port}:127.0.0.1");
            let secure = format!("https://secure.example.com:{https_port}/");
            let (status, body) = curl(&[
                "--http2",
                "--cacert",
                &ca.display().to_string(),
                "--resolve",
                &resolve,
                &secure,
            ]);
            assert!(
                status == "200" && body.starts_with("web-"),
                "{status} {body}"
            );
            let version = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_version}",
                    "--http2",
                    "--cacert",
                ])
                .arg(&ca)
                .args(["--resolve", &resolve, &secure])
                .output()
                .expect("curl");
            assert_eq!(String::from_utf8_lossy(&version.stdout), "2");

            // A WebSocket upgrade through the ingress to the pod's echo.
            let echoed = eventually("a WebSocket echo through the ingress", || {
                use std::io::{Read, Write};
                let mut stream = std::net::TcpStream::connect(&http).map_err(|e| e.to_string())?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .map_err(|e| e.to_string())?;
                write!(stream, "GET /ws HTTP/1.1\r\nHost: a.api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").map_err(|e| e.to_string())?;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    stream
                        .read_exact(&mut byte)
                        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&head)))?;
                    head.push(byte[0]);
                }
                if !head.starts_with(b"HTTP/1.1 101") {
                    return Err(String::from_utf8_lossy(&head).into_owned());
                }
                stream.write_all(b"ping\n").map_err(|e| e.to_string())?;
                let mut echoed = [0u8; 5];
                stream.read_exact(&mut echoed).map_err(|e| e.to_string())?;
                Ok(String::from_utf8_lossy(&echoed).into_owned())
            });
            assert_eq!(echoed, "ping\n");

            // kubectl port-forward (SPDY over WebSocket, as kubectl 1.31+ speaks it) to a pod's
            // port and to a Service, and shipshape port-forward by a Service's port name.
            let web_pod = web_pods(&kubeconfig, &cache)
                .ok()
                .and_then(|pods| pods[0]["metadata"]["name"].as_str().map(str::to_string))
                .expect("a web pod");
            let forwarded = |command: &mut Command, local: u16, expect: &str| {
                let _running = Running(
                    command
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("port-forward starts"),
                );
                let url = format!("http://127.0.0.1:{local}/");
                eventually(
                    &format!("{expect} through the forwarded port {local}"),
                    || {
                        let (status, body) = curl(&[&url]);
                        (status == "200" && body.starts_with(expect))
                            .then_some(())
                            .ok_or(format!("{status} {body}"))
                    },
                );
                // A second connection over the same forwarding.
                let (status, body) = curl(&[&url]);
                assert!(
                    status == "200" && body.starts_with(expect),
                    "{status} {body}"
                );
            };
            let kubectl_forward = |target: &str, local: u16, remote: &str| {
                let mut command = Command::new("kubectl");
                command
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .arg("--cache-dir")
                    .arg(&cache)
                    .args([
                        "port-forward",
                        "-n",
                        "demo",
                        target,
                        &format!("{local}:{remote}"),
                    ]);
                command
            };
            let local = free_port();
            forwarded(
                &mut kubectl_forward(&format!("pod/{web_pod}"), local, "8080"),
                local,
                &web_pod,
            );
            let local = free_port();
            forwarded(
                &mut kubectl_forward("service/web", local, "80"),
                local,
                "web-",
            );
            let local = free_port();
            let mut ours = Command::new(env!("CARGO_BIN_EXE_shipshape"));
            ours.args([
                "port-forward",
                "-n",
                "demo",
                "service/api",
                &format!("{local}:http"),
            ])
            .arg("--data-dir")
            .arg(repo.data());
            forwarded(&mut ours, local, "api-");

            // A rolling update under steady load: not one request fails. Then the rotated
            // certificate serves, and a backend scaled to zero answers 503.
            std::fs::create_dir_all(certs.path().join("rotated")).expect("mkdir");
            let second = self_signed(&certs.path().join("rotated"), "secure.example.com");
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let load = {
                let stop = stop.clone();
                let web = web.clone();
                std::thread::spawn(move || {
                    let mut answers: std::collections::BTreeMap<String, usize> =
                        std::collections::BTreeMap::new();
                    let mut failures = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (status, body) = curl(&["-H", "Host: web.example.com", &web]);
                        if status == "200" {
                            let version = body.rsplit(' ').next().unwrap_or("").to_string();
                            *answers.entry(version).or_default() += 1;
                        } else {
                            failures.push(format!("{status} {body}"));
                        }
                    }
                    (answers, failures)
                })
            };
            std::thread::sleep(Duration::from_secs(1));
            write(
                &repo.path(),
                "apps/shop/all.yaml",
                &shop("two", "0", &second),
            );
            commit(&repo.path(), "two, api scaled to zero, rotated certificate");
            eventually("the rollout complete", || {
                let pods = pod_list(&kubeconfig, &cache)?;
                let web: Vec<_> = pods
                    .iter()
                    .filter(|p| p["metadata"]["labels"]["app"] == "web")
                    .collect();
                let done = web.len() == 2
                    && web.iter().all(|p| {
                        p["spec"]["containers"][0]["env"][0]["value"] == "two"
                            && p["status"]["phase"] == "Running"
                    });
                done.then_some(()).ok_or(format!("{} web pods", web.len()))
            });
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (answers, failures) = load.join().expect("load");
            assert!(
                failures.is_empty(),
                "failed during the rollout: {failures:?} (answered {answers:?})"
            );
            assert!(
                answers.get("one").is_some_and(|n| *n > 0)
                    && answers.get("two").is_some_and(|n| *n > 0),
                "{answers:?}"
            );

            let rotated = certs.path().join("rotated/secure.example.com.crt");
            eventually("the rotated certificate", || {
                let (status, body) = curl(&[
                    "--cacert",
                    &rotated.display().to_string(),
                    "--resolve",
                    &resolve,
                    &secure,
                ]);
                (status == "200")
                    .then_some(())
                    .ok_or(format!("{status} {body}"))
            });
            let (status, _) = curl(&[
                "--cacert",
                &ca.display().to_string(),
                "--resolve",
                &resolve,
                &secure,
            ]);
            assert_eq!(status, "000", "the old certificate is no longer served");
            let (status, body) = eventually("503 from the api scaled to zero", || {
                let (status, body) = curl(&["-H", &host("eu.api.example.com"), &web]);
                (status == "503")
                    .then(|| (status.clone(), body.clone()))
                    .ok_or(format!("{status} {body}"))
            });
            assert!(
                body.contains("service demo/api has no ready endpoints"),
                "{status} {body}"
            );

            // The access log and metrics name the route.
            let access =
                std::fs::read_to_string(repo.data().join("ingress/access.log")).unwrap_or_default();
            assert!(
                access
                    .lines()
                    .any(|l| l.contains("web.example.com demo/shop demo/web:http")),
                "{access}"
            );
            interrupt(child);
            drop(cleanup);
        }

        const BATCH: &str = r#"apiVersion: batch/v1
kind: Job
metadata: {name: count, namespace: demo}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: "busybox:1.35", command: ["sh", "-c", "echo counted"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: doomed, namespace: demo}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: "busybox:1.35", command: ["sh", "-c", "exit 3"]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick, namespace: demo}
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 2
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - {name: main, image: "busybox:1.35", command: ["sh", "-c", "echo tick"]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: slow, namespace: demo}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - {name: main, image: "busybox:1.35", command: ["sleep", "3"]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: demo}
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: main, image: "busybox:1.35", command: ["sleep", "3600"]}
"#;

        /// Pods using what the downward API, projected and memory volumes, privilege and an
        /// emptyDir sizeLimit offer.
        const POD_FIELDS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: demo}
data: {mode: fast}
binaryData: {blob: aGk=}
---
apiVersion: v1
kind: Pod
metadata:
  name: facts
  namespace: demo
  labels: {app: facts, tier: front}
  annotations: {owner: ada}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {fsGroup: 2000, supplementalGroups: [3000]}
  containers:
  - name: main
    image: busybox:1.35
    command: ["sleep", "3600"]
    resources:
      limits: {memory: 64Mi}
      requests: {cpu: 250m, memory: 32Mi}
    securityContext: {privileged: true}
    env:
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: OWNER, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['owner']"}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: CPU_REQ_M, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}
    - {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
    volumeMounts:
    - {name: info, mountPath: /etc/info}
    - {name: all, mountPath: /etc/all}
    - {name: cache, mountPath: /cache}
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: mem, resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}
  - name: all
    projected:
      sources:
      - configMap: {name: settings}
      - downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}
  - name: cache
    emptyDir: {medium: Memory, sizeLimit: 4Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: filler, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sh", "-c", "dd if=/dev/zero of=/scratch/blob bs=1M count=3; exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  volumes:
  - name: scratch
    emptyDir: {sizeLimit: 1Mi}
---
apiVersion: v1
kind: Pod
metadata: {name: deadline, namespace: demo}
spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: "busybox:1.35", command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: binenv, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sleep", "3600"]
    env:
    - {name: BLOB, valueFrom: {configMapKeyRef: {name: settings, key: blob}}}
---
apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: demo}
spec:
  hostNetwork: true
  hostAliases: [{ip: 10.1.2.3, hostnames: [foo.remote]}]
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sleep", "3600"]
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
---
apiVersion: v1
kind: Pod
metadata: {name: aliased, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  hostname: db-0
  subdomain: db
  hostAliases:
  - {ip: 127.0.0.1, hostnames: [foo.local, bar.local]}
  - {ip: 10.1.2.3, hostnames: [foo.remote, bar.remote]}
  containers:
  - {name: main, image: "busybox:1.35", command: ["sh", "-c", "cat /etc/hosts; exec sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: hooked, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sh", "-c", "until [ -f /tmp/hooked ]; do sleep 0.1; done; exec sleep 3600"]
    lifecycle:
      postStart: {exec: {command: ["sh", "-c", "sleep 1; echo by-hook > /tmp/hooked"]}}
---
apiVersion: v1
kind: Pod
metadata: {name: unhooked, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sleep", "3600"]
    lifecycle:
      postStart: {exec: {command: ["false"]}}
---
apiVersion: v1
kind: Pod
metadata: {name: confined, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {seccompProfile: {type: RuntimeDefault}}
  containers:
  - {name: main, image: "busybox:1.35", command: ["sleep", "3600"]}
  - name: open
    image: busybox:1.35
    command: ["sleep", "3600"]
    securityContext: {seccompProfile: {type: Unconfined}}
---
apiVersion: v1
kind: Pod
metadata: {name: hostport, namespace: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.35
    command: ["sh", "-c", "mkdir /www && echo through-hostport > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080, hostPort: 18080}]
"#;

        #[test]
        fn pods_get_their_downward_api_memory_volumes_privilege_and_size_limits() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            let apps = |repo: &Repo| write(&repo.path(), "apps/facts/all.yaml", POD_FIELDS);
            let Some(RealCluster {
                child,
                cleanup,
                log: _log,
                kubeconfig,
                cache,
                socket: _socket,
                repo,
            }) = real_cluster(apps, &["--node-cpu", "3"])
            else {
                return;
            };
            eventually("the facts pod running", || {
                let p = pod(&kubeconfig, &cache, "facts")?;
                (p["status"]["phase"] == "Running")
                    .then_some(())
                    .ok_or(p["status"].to_string())
            });
            let inside = |script: &str| {
                let out = kubectl(
                    &kubeconfig,
                    &cache,
                    &["exec", "-n", "demo", "facts", "--", "sh", "-c", script],
                );
                assert!(out.status.success(), "{script}: {}", text(&out));
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            // Env: labels and annotations by key; resources rounded up, the unset cpu limit
            // being the node's 3 cores.
            let env = inside("env");
            for expected in [
                "APP=facts",
                "OWNER=ada",
                "MEM_MI=64",
                "CPU_REQ_M=250",
                "CPU_LIMIT=3",
            ] {
                assert!(env.lines().any(|l| l == expected), "{expected} in:\n{env}");
            }
            assert!(env.lines().any(|l| l.starts_with("NODE=node-")), "{env}");
            // A downwardAPI volume (GitSync's own label included) and a projection of a
            // ConfigMap with pod fields.
            assert_eq!(
                inside("cat /etc/info/labels"),
                "app=\"facts\"\napp.kubernetes.io/managed-by=\"shipshape\"\ntier=\"front\""
            );
            assert_eq!(inside("cat /etc/info/mem"), "64");
            assert_eq!(
                inside("cat /etc/all/mode; echo; cat /etc/all/name"),
                "fast\nfacts"
            );
            // The memory emptyDir is a tmpfs of its sizeLimit (below the pod's 64Mi).
            let cache_mount = inside("grep ' /cache ' /proc/mounts");
            assert!(
                cache_mount.starts_with("tmpfs /cache tmpfs") && cache_mount.contains("size=4096k"),
                "{cache_mount}"
            );
            // fsGroup and supplementalGroups: the process's groups; fsGroup owns the volumes.
            let groups = inside("id -G");
            let groups: Vec<&str> = groups.split_whitespace().collect();
            assert!(
                groups.contains(&"2000") && groups.contains(&"3000"),
                "{groups:?}"
            );
            assert_eq!(
                inside("stat -c '%g %a' /cache; stat -L -c '%g' /etc/info/labels"),
                "2000 2777\n2000\n"
            );
            // Privileged: every capability, a writable /sys, the host's devices.
            // Every capability shipshape holds itself (as root: all the host allows it).
            let ours = std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("CapBnd:"))
                .map(str::to_string)
                .expect("CapBnd");
            let bounding = inside("grep CapBnd /proc/self/status");
            assert_eq!(bounding.trim(), ours, "the container's bounding set");
            let sys = inside("grep ' /sys ' /proc/mounts");
            assert!(sys.starts_with("sysfs /sys sysfs rw"), "{sys}");
            if let Some(device) = ["/dev/kmsg", "/dev/loop-control", "/dev/mem"]
                .into_iter()
                .find(|d| Path::new(d).exists())
            {
                inside(&format!("test -c {device}"));
            }

            // RuntimeDefault (the pod's): containerd's default filter, so ordinary commands
            // run and a new user namespace is refused; the container asking for Unconfined
            // and the privileged facts pod run unfiltered.
            eventually("the confined pod running", || {
                let p = pod(&kubeconfig, &cache, "confined")?;
                (p["status"]["phase"] == "Running")
                    .then_some(())
                    .ok_or(p["status"].to_string())
            });
            let confined = |container: &str, script: &str| {
                kubectl(
                    &kubeconfig,
                    &cache,
                    &[
                        "exec", "-n", "demo", "confined", "-c", container, "--", "sh", "-c", script,
                    ],
                )
            };
            let seccomp = |out: Output| {
                assert!(out.status.success(), "{}", text(&out));
                text(&out).split_whitespace().collect::<Vec<_>>().join(" ")
            };
            assert_eq!(
                seccomp(confined("main", "grep Seccomp: /proc/self/status")),
                "Seccomp: 2"
            );
            assert_eq!(
                seccomp(confined("main", "echo hello > /tmp/x && cat /tmp/x")),
                "hello"
            );
            let userns = confined("main", "unshare -U true");
            assert!(
                !userns.status.success() && text(&userns).contains("Operation not permitted"),
                "{}",
                text(&userns)
            );
            assert_eq!(
                seccomp(confined("open", "grep Seccomp: /proc/self/status")),
                "Seccomp: 0"
            );
            let host_userns = Command::new("unshare")
                .args(["-U", "true"])
                .status()
                .is_ok_and(|s| s.success());
            if host_userns {
                seccomp(confined("open", "unshare -U true"));
            }
            assert_eq!(
                inside("grep Seccomp: /proc/self/status")
                    .split_whitespace()
                    .collect::<Vec<_>>(),
                ["Seccomp:", "0"],
                "privileged"
            );

            // Past activeDeadlineSeconds (from its startTime) the pod's containers are killed
            // and it is Failed, reason DeadlineExceeded, with the event; never restarted.
            eventually("the deadline pod past its deadline, stopped", || {
                let p = pod(&kubeconfig, &cache, "deadline")?;
                let status = &p["status"];
                (status["phase"] == "Failed"
                    && status["reason"] == "DeadlineExceeded"
                    && status["message"]
                        == "Pod was active on the node longer than the specified deadline"
                    && status["containerStatuses"][0]["state"]["terminated"].is_object())
                .then_some(())
                .ok_or(status.to_string())
            });
            eventually("a DeadlineExceeded event", || {
                let events = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "events", "-n", "demo", "-o", "json"],
                ));
                events
                    .contains("\"DeadlineExceeded\"")
                    .then_some(())
                    .ok_or(events)
            });
            let deadline = pod(&kubeconfig, &cache, "deadline").expect("deadline");
            assert_eq!(deadline["status"]["phase"], "Failed", "stays failed");
            assert_eq!(
                deadline["status"]["containerStatuses"][0]["restartCount"], 0,
                "never restarted"
            );

            // env reads a ConfigMap's data only: a key only in binaryData is not found.
            eventually("the binenv pod refused its binaryData key", || {
                let p = pod(&kubeconfig, &cache, "binenv")?;
                let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
                (waiting["reason"] == "CreateContainerConfigError"
                    && waiting["message"] == "couldn't find key blob in ConfigMap demo/settings")
                    .then_some(())
                    .ok_or(p["status"].to_string())
            });

            // hostNetwork: the node's network namespace (its bridge in sight), address,
            // name and resolv.conf (ClusterFirst falls back to Default there).
            let hostnet = eventually("the hostnet pod running", || {
                let p = pod(&kubeconfig, &cache, "hostnet")?;
                (p["status"]["phase"] == "Running")
                    .then_some(p.clone())
                    .ok_or(p["status"].to_string())
            });
            let host_ip = hostnet["status"]["hostIP"].as_str().unwrap_or_default();
            assert!(!host_ip.is_empty(), "{}", hostnet["status"]);
            assert_eq!(hostnet["status"]["podIP"], host_ip);
            let on_host = |script: &str| {
                let out = kubectl(
                    &kubeconfig,
                    &cache,
                    &["exec", "-n", "demo", "hostnet", "--", "sh", "-c", script],
                );
                assert!(out.status.success(), "{script}: {}", text(&out));
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            assert_eq!(on_host("echo $POD_IP").trim(), host_ip);
            assert!(on_host("cat /proc/net/dev").contains("ship-node-"));
            assert_eq!(
                on_host("cat /etc/resolv.conf"),
                std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
            );
            assert_eq!(
                on_host("hostname").trim(),
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim()
            );
            // The node's hosts file under the kubelet's header, then the pod's hostAliases.
            assert_eq!(
                on_host("cat /etc/hosts"),
                format!(
                    "# Kubernetes-managed hosts file (host network).\n{}\n# Entries added by HostAliases.\n10.1.2.3\tfoo.remote\n",
                    std::fs::read_to_string("/etc/hosts").unwrap_or_default()
                )
            );

            // hostAliases: the managed /etc/hosts names the pod (by its hostname and, with a
            // subdomain, its fully qualified name), then one line per alias.
            let aliased = eventually("the aliased pod running", || {
                let p = pod(&kubeconfig, &cache, "aliased")?;
                (p["status"]["phase"] == "Running")
                    .then_some(p.clone())
                    .ok_or(p["status"].to_string())
            });
            let aliased_ip = aliased["status"]["podIP"].as_str().unwrap_or_default();
            let hosts = eventually("the aliased pod's /etc/hosts in its log", || {
                let out = kubectl(&kubeconfig, &cache, &["logs", "-n", "demo", "aliased"]);
                let log = String::from_utf8_lossy(&out.stdout).into_owned();
                log.contains("HostAliases")
                    .then_some(log.clone())
                    .ok_or(text(&out))
            });
            assert!(
                hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
                "{hosts}"
            );
            let named = kubectl(
                &kubeconfig,
                &cache,
                &[
                    "exec",
                    "-n",
                    "demo",
                    "aliased",
                    "--",
                    "sh",
                    "-c",
                    "hostname; cat /etc/hostname; echo $HOSTNAME",
                ],
            );
            assert_eq!(
                text(&named).trim(),
                "db-0\ndb-0\ndb-0",
                "the hostname everywhere"
            );
            assert!(
                hosts.ends_with(&format!(
                    "{aliased_ip}\tdb-0.db.demo.svc.cluster.local\tdb-0\n\n# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n10.1.2.3\tfoo.remote\tbar.remote\n"
                )),
                "{hosts}"
            );

            // postStart runs right after the start, before the container counts as running; a
            // failed one kills the container (restarted per restartPolicy) with an event.
            eventually("the hooked pod ready", || {
                let p = pod(&kubeconfig, &cache, "hooked")?;
                (p["status"]["containerStatuses"][0]["ready"] == true)
                    .then_some(())
                    .ok_or(p["status"].to_string())
            });
            let hooked = kubectl(
                &kubeconfig,
                &cache,
                &["exec", "-n", "demo", "hooked", "--", "cat", "/tmp/hooked"],
            );
            assert_eq!(text(&hooked).trim(), "by-hook");
            let hooked = pod(&kubeconfig, &cache, "hooked").expect("hooked");
            assert_eq!(hooked["status"]["containerStatuses"][0]["restartCount"], 0);
            eventually(
                "the unhooked pod restarted after a FailedPostStartHook",
                || {
                    let p = pod(&kubeconfig, &cache, "unhooked")?;
                    let status = &p["status"]["containerStatuses"][0];
                    let events = text(&kubectl(
                        &kubeconfig,
                        &cache,
                        &["get", "events", "-n", "demo", "-o", "json"],
                    ));
                    (status["restartCount"].as_u64().unwrap_or(0) >= 1
                        && status["ready"] == false
                        && events.contains("\"FailedPostStartHook\"")
                        && events
                            .contains("Exec lifecycle hook ([false]) for Container \\\"main\\\""))
                    .then_some(())
                    .ok_or(format!("{status}\n{events}"))
                },
            );

            // Past its disk emptyDir's sizeLimit, a pod is evicted: Failed, reason Evicted,
            // an Evicted event, and it is not restarted.
            let limit = "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\".";
            eventually("the filler pod evicted", || {
                let p = pod(&kubeconfig, &cache, "filler")?;
                let status = &p["status"];
                (status["phase"] == "Failed"
                    && status["reason"] == "Evicted"
                    && status["message"] == limit)
                    .then_some(())
                    .ok_or(status.to_string())
            });
            eventually("an Evicted event", || {
                let events = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "events", "-n", "demo", "-o", "json"],
                ));
                (events.contains("\"Evicted\"") && events.contains("exceeds the limit"))
                    .then_some(())
                    .ok_or(events)
            });
            let filler = pod(&kubeconfig, &cache, "filler").expect("filler");
            assert_eq!(filler["status"]["phase"], "Failed", "stays evicted");

            // hostPort off the host's network: the node's address (its bridge's gateway)
            // forwards the port to the pod.
            let forwarded = eventually("the hostport pod running", || {
                let p = pod(&kubeconfig, &cache, "hostport")?;
                (p["status"]["phase"] == "Running")
                    .then_some(p.clone())
                    .ok_or(p["status"].to_string())
            });
            let node_ip = forwarded["status"]["hostIP"].as_str().unwrap_or_default();
            assert!(node_ip.starts_with("10.244."), "{}", forwarded["status"]);
            let url = format!("http://{node_ip}:18080/");
            eventually("the pod's page on the node's port 18080", || {
                let out = Command::new("wget")
                    .args(["-qO-", "-T", "2", &url])
                    .output()
                    .map_err(|e| e.to_string())?;
                (text(&out).trim() == "through-hostport")
                    .then_some(())
                    .ok_or(text(&out))
            });

            // Stopping removes the pods and unmounts their tmpfs.
            interrupt(child);
            let nat = Command::new("iptables")
                .args(["-t", "nat", "-S"])
                .output()
                .map(|o| text(&o))
                .unwrap_or_default();
            assert!(
                !nat.contains("CNI-HOSTPORT") && !nat.contains("CNI-DN-"),
                "portmap's chains left:\n{nat}"
            );
            let data = repo.data().display().to_string();
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            let left: Vec<&str> = mounts
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|m| m.starts_with(&data))
                })
                .collect();
            assert!(left.is_empty(), "mounts left: {left:?}");
            drop(cleanup);
        }

        #[test]
        fn jobs_complete_or_give_up_and_cronjobs_run_on_schedule() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            let apps = |repo: &Repo| write(&repo.path(), "apps/batch/all.yaml", BATCH);
            // A minute of CronJob time passes every second.
            let Some(RealCluster {
                child,
                cleanup,
                log: _log,
                kubeconfig,
                cache,
                socket: _socket,
                repo,
            }) = real_cluster(apps, &["--cronjob-time-scale", "60"])
            else {
                return;
            };
            let phases = |selector: &str| {
                jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "pods", "-n", "demo", "-l", selector],
                    "{.items[*].status.phase}",
                )
            };

            // Three successes, two at a time, and not one more.
            eventually("the count Job complete", || {
                let shown = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "job", "count", "-n", "demo", "--no-headers"],
                ));
                shown.contains("Complete 3/3").then_some(()).ok_or(shown)
            });
            assert_eq!(phases("job-name=count"), "Succeeded Succeeded Succeeded");

            // The failing Job retries once (after its 10 s back-off) and then gives up.
            eventually("the doomed Job failed", || {
                let reason = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "job", "doomed", "-n", "demo"],
                    "{.status.conditions[?(@.type==\"Failed\")].reason}",
                );
                (reason == "BackoffLimitExceeded")
                    .then_some(())
                    .ok_or(reason)
            });
            assert_eq!(phases("job-name=doomed"), "Failed Failed");
            let failed = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "job", "doomed", "-n", "demo"],
                "{.status.failed}",
            );
            assert_eq!(failed, "2");

            // The CronJob runs on its schedule and keeps two finished Jobs.
            eventually("three tick runs", || {
                let events = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &[
                        "get",
                        "events",
                        "-n",
                        "demo",
                        "--field-selector",
                        "involvedObject.name=tick",
                    ],
                ));
                let runs = events.matches("Created job tick-").count();
                (runs >= 3 && events.contains("Deleted job tick-"))
                    .then_some(())
                    .ok_or(events)
            });
            let ticks = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "jobs", "-n", "demo"],
                "{.items[*].metadata.name}",
            );
            assert!(
                ticks
                    .split_whitespace()
                    .filter(|n| n.starts_with("tick-"))
                    .count()
                    <= 3,
                "{ticks}"
            );
            let tick_pod = jsonpath(
                &kubeconfig,
                &cache,
                &["get", "pods", "-n", "demo", "-l", "job-name", "-o", "name"],
                "{.items[*].metadata.name}",
            );
            let tick_pod = tick_pod
                .split_whitespace()
                .find(|n| n.starts_with("tick-"))
                .unwrap_or_default()
                .to_string();
            eventually("a tick's log", || {
                let logs = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["logs", "-n", "demo", &tick_pod],
                ));
                logs.contains("tick").then_some(()).ok_or(logs)
            });

            // Forbid: a run that would overlap the running one is skipped; never two at once.
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                let active = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "cronjob", "slow", "-n", "demo"],
                    "{.status.active[*].name}",
                );
                assert!(
                    active.split_whitespace().count() <= 1,
                    "two slow runs at once: {active}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            let events = text(&kubectl(
                &kubeconfig,
                &cache,
                &[
                    "get",
                    "events",
                    "-n",
                    "demo",
                    "--field-selector",
                    "involvedObject.name=slow",
                ],
            ));
            assert!(events.contains("JobAlreadyActive"), "{events}");
            assert!(events.matches("Created job slow-").count() >= 2, "{events}");

            // The DaemonSet runs one pod per node; started again with a third node, it gets one.
            let agents = |kubeconfig: &Path| {
                let nodes = jsonpath(
                    kubeconfig,
                    &cache,
                    &[
                        "get",
                        "pods",
                        "-n",
                        "demo",
                        "-l",
                        "app=agent",
                        "--field-selector",
                        "status.phase=Running",
                    ],
                    "{.items[*].spec.nodeName}",
                );
                let mut nodes: Vec<String> = nodes.split_whitespace().map(str::to_string).collect();
                nodes.sort();
                nodes
            };
            eventually("an agent on each node", || {
                let nodes = agents(&kubeconfig);
                (nodes == ["node-1", "node-2"])
                    .then_some(())
                    .ok_or(format!("{nodes:?}"))
            });
            interrupt(child);
            let (child, log) = repo.up_with(&["--runtime", "containerd", "--nodes", "3"]);
            wait_for(&log, "nodes: 3 on containerd");
            eventually("an agent on the new node too", || {
                let nodes = agents(&kubeconfig);
                (nodes == ["node-1", "node-2", "node-3"])
                    .then_some(())
                    .ok_or(format!("{nodes:?}"))
            });
            // The DaemonSet's status follows its pods' readiness a moment later.
            eventually("the DaemonSet counting three ready agents", || {
                let shown = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "daemonset", "agent", "-n", "demo", "--no-headers"],
                ));
                shown
                    .starts_with("agent 3 3 3 3 3 <none>")
                    .then_some(())
                    .ok_or(shown)
            });
            interrupt(child);
            drop(cleanup);
        }

        const STATEFUL: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: demo}
spec:
  serviceName: web
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox:1.35
        command: ["sh", "-c", "[ -f /data/index.html ] || echo first-$HOSTNAME-$RANDOM > /data/index.html; exec httpd -f -p 8080 -h /data"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
"#;

        #[test]
        fn statefulset_pods_start_in_order_find_each_other_and_keep_their_data() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            let apps = |repo: &Repo| {
                write(
                    &repo.path(),
                    "apps/db/all.yaml",
                    &STATEFUL.replace("REPLICAS", "3"),
                );
            };
            let Some(RealCluster {
                child,
                cleanup,
                log: _log,
                kubeconfig,
                cache,
                socket: _socket,
                repo,
            }) = real_cluster(apps, &[])
            else {
                return;
            };
            eventually("three ready members", || {
                let shown = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "statefulset", "web", "-n", "demo", "--no-headers"],
                ));
                shown.starts_with("web 3/3").then_some(()).ok_or(shown)
            });
            // In order: each member was created only after the one before it was Ready.
            for ordinal in 1..3 {
                let created = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "pod", &format!("web-{ordinal}"), "-n", "demo"],
                    "{.metadata.creationTimestamp}",
                );
                let before_ready = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "pod", &format!("web-{}", ordinal - 1), "-n", "demo"],
                    "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
                );
                // (Whole seconds: the Ready time has no fraction.)
                let seconds = |t: &str| t.get(..19).unwrap_or_default().to_string();
                assert!(
                    !before_ready.is_empty() && seconds(&created) >= seconds(&before_ready),
                    "web-{ordinal} created {created}, web-{} ready {before_ready}",
                    ordinal - 1
                );
            }
            // Each has its own claim, bound to a local-path volume.
            let claims = text(&kubectl(
                &kubeconfig,
                &cache,
                &["get", "pvc", "-n", "demo", "--no-headers"],
            ));
            for ordinal in 0..3 {
                assert!(
                    claims.contains(&format!("data-web-{ordinal} Bound pvc-")),
                    "{claims}"
                );
            }
            // They find each other by stable name.
            let page = |from: &str, to: &str| {
                let out = kubectl(
                    &kubeconfig,
                    &cache,
                    &[
                        "exec",
                        "-n",
                        "demo",
                        from,
                        "--",
                        "wget",
                        "-qO-",
                        &format!("http://{to}.web:8080/"),
                    ],
                );
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            let first = eventually("web-1 reaching web-0 by name", || {
                let answer = page("web-1", "web-0");
                answer
                    .starts_with("first-web-0-")
                    .then_some(answer.clone())
                    .ok_or(answer)
            });
            // Deleted, web-0 comes back under its name with its data.
            let deleted = kubectl(
                &kubeconfig,
                &cache,
                &["delete", "pod", "web-0", "-n", "demo"],
            );
            assert!(deleted.status.success(), "{}", text(&deleted));
            eventually("web-0 back with its data", || {
                let answer = page("web-2", "web-0");
                (answer == first).then_some(()).ok_or(answer)
            });
            // Scaled down, the highest goes and its claim stays.
            write(
                &repo.path(),
                "apps/db/all.yaml",
                &STATEFUL.replace("REPLICAS", "2"),
            );
            commit(&repo.path(), "two");
            eventually("web-2 gone", || {
                let names = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "pods", "-n", "demo"],
                    "{.items[*].metadata.name}",
                );
                (names == "web-0 web-1").then_some(()).ok_or(names)
            });
            let kept = text(&kubectl(
                &kubeconfig,
                &cache,
                &["get", "pvc", "data-web-2", "-n", "demo", "--no-headers"],
            ));
            assert!(kept.contains("Bound"), "{kept}");
            interrupt(child);
            drop(cleanup);
        }

        /// A CNCF distribution registry (Debian's `docker-registry`) on a free loopback port,
        /// storing in `dir`, optionally behind htpasswd basic auth; killed when dropped.
        struct Registry {
            child: Child,
            address: String,
            store: PathBuf,
            /// Its configuration and log, to start it again.
            config: PathBuf,
            log: PathBuf,
        }

        impl Registry {
            /// `tls` is a certificate and key in PEM: the registry then speaks only HTTPS.
            /// `auth` is the configuration's `auth:` block, if any (htpasswd, token).
            fn start(
                dir: &Path,
                name: &str,
                auth: Option<String>,
                tls: Option<(&Path, &Path)>,
            ) -> Registry {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("a free port")
                    .port();
                let address = format!("127.0.0.1:{port}");
                let store = dir.join(format!("{name}-store"));
                let auth = auth.unwrap_or_default();
                let tls = tls.map_or_else(String::new, |(certificate, key)| {
                    format!(
                        "  tls:\n    certificate: {}\n    key: {}\n",
                        certificate.display(),
                        key.display()
                    )
                });
                let config = dir.join(format!("{name}.yml"));
                std::fs::write(
                    &config,
                    format!(
                        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n{tls}{auth}",
                        store.display()
                    ),
                )
                .expect("registry config");
                let log = dir.join(format!("{name}.log"));
                let registry = Registry {
                    child: Registry::spawn(&config, &log),
                    address,
                    store,
                    config,
                    log,
                };
                registry.wait_listening();
                registry
            }

            fn spawn(config: &Path, log: &Path) -> Child {
                Command::new("docker-registry")
                    .arg("serve")
                    .arg(config)
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(log)
                            .expect("log"),
                    )
                    .spawn()
                    .expect("docker-registry is installed (scripts/setup)")
            }

            fn wait_listening(&self) {
                eventually("the registry listening", || {
                    std::net::TcpStream::connect(&self.address)
                        .map(drop)
                        .map_err(|e| e.to_string())
                });
            }

            /// Stops the registry (its storage stays).
            fn stop(&mut self) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }

            /// Starts it again on the same address and storage.
            fn start_again(&mut self) {
                self.child = Registry::spawn(&self.config, &self.log);
                self.wait_listening();
            }

            /// Pushes an OCI archive as `repository:tag` with skopeo.
            /// skopeo compresses the layers with gzip on the way (zstd with `zstd`).
            fn push(&self, archive: &Path, reference: &str, creds: Option<&str>) {
                self.push_compressed(archive, reference, creds, "gzip");
            }

            fn push_compressed(
                &self,
                archive: &Path,
                reference: &str,
                creds: Option<&str>,
                format: &str,
            ) {
                let mut skopeo = Command::new("skopeo");
                skopeo.args(["copy", "-q", "--dest-tls-verify=false"]);
                skopeo.args(["--dest-compress-format", format]);
                if let Some(creds) = creds {
                    skopeo.args(["--dest-creds", creds]);
                }
                let output = skopeo
                    .arg(format!("oci-archive:{}", archive.display()))
                    .arg(format!("docker://{}/{reference}", self.address))
                    .output()
                    .expect("skopeo is installed (scripts/setup)");
                assert!(
                    output.status.success(),
                    "push {reference}: {}",
                    text(&output)
                );
            }

            /// Pushes the image index tagged `multi` in OCI layout `dir`, every platform.
            fn push_index(&self, dir: &Path, reference: &str) {
                let output = Command::new("skopeo")
                    .args(["copy", "-q", "--all", "--dest-tls-verify=false"])
                    .arg(format!("oci:{}:multi", dir.display()))
                    .arg(format!("docker://{}/{reference}", self.address))
                    .output()
                    .expect("skopeo");
                assert!(
                    output.status.success(),
                    "push {reference}: {}",
                    text(&output)
                );
            }

            /// The blobs the registry stores, by path.
            fn blobs(&self) -> std::collections::BTreeSet<PathBuf> {
                let output = Command::new("find")
                    .arg(self.store.join("docker/registry/v2/blobs"))
                    .args(["-name", "data", "-type", "f"])
                    .output()
                    .expect("find");
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(PathBuf::from)
                    .collect()
            }
        }

        impl Drop for Registry {
            fn drop(&mut self) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }

        /// A throwaway CA and a certificate it signs for 127.0.0.1, made with openssl:
        /// `(ca, certificate, key)`.
        fn loopback_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
            let [ca, ca_key, certificate, key, request, extensions] = [
                "ca.pem",
                "ca.key",
                "server.pem",
                "server.key",
                "server.csr",
                "server.ext",
            ]
            .map(|f| dir.join(f));
            std::fs::write(
                &extensions,
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            )
            .expect("extensions");
            let openssl = |args: Vec<&std::ffi::OsStr>| {
                let output = Command::new("openssl")
                    .args(args)
                    .output()
                    .expect("openssl is installed (scripts/setup)");
                assert!(output.status.success(), "openssl: {}", text(&output));
            };
            let os = |s: &'static str| std::ffi::OsStr::new(s);
            let ec = [
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            let mut args: Vec<&std::ffi::OsStr> = vec![os("req"), os("-x509")];
            args.extend(ec.map(os));
            args.extend([
                os("-days"),
                os("1"),
                os("-subj"),
                os("/CN=shipshape test CA"),
            ]);
            args.extend([
                os("-keyout"),
                ca_key.as_os_str(),
                os("-out"),
                ca.as_os_str(),
            ]);
            openssl(args);
            let mut args: Vec<&std::ffi::OsStr> = vec![os("req")];
            args.extend(ec.map(os));
            args.extend([os("-subj"), os("/CN=127.0.0.1")]);
            args.extend([
                os("-keyout"),
                key.as_os_str(),
                os("-out"),
                request.as_os_str(),
            ]);
            openssl(args);
            openssl(vec![
                os("x509"),
                os("-req"),
                os("-days"),
                os("1"),
                os("-in"),
                request.as_os_str(),
                os("-CA"),
                ca.as_os_str(),
                os("-CAkey"),
                ca_key.as_os_str(),
                os("-CAcreateserial"),
                os("-extfile"),
                extensions.as_os_str(),
                os("-out"),
                certificate.as_os_str(),
            ]);
            (ca, certificate, key)
        }

        /// Base64 as JWTs and `x5c` headers want it (`url`: URL-safe, unpadded).
        fn base64(bytes: &[u8], url: bool) -> String {
            let table: &[u8; 64] = if url {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            } else {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            };
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
                for i in 0..=chunk.len() {
                    out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
                if !url {
                    out.push_str(&"=".repeat(3 - chunk.len()));
                }
            }
            out
        }

        /// A token server for the registry's bearer-token challenge, as Docker Hub and ghcr.io
        /// answer one: it grants whatever scope is asked, in a JWT signed (RS256, openssl) with a
        /// key whose certificate the registry trusts. Stops when dropped.
        struct TokenServer {
            address: String,
            /// The certificate bundle the registry checks tokens against.
            bundle: PathBuf,
            stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
            served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        }

        const TOKEN_SERVICE: &str = "shipshape-test-registry";
        const TOKEN_ISSUER: &str = "shipshape-test-issuer";

        impl TokenServer {
            fn start(dir: &Path) -> TokenServer {
                let key = dir.join("token.key");
                let bundle = dir.join("token.pem");
                let made = Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    ])
                    .args(["-subj", "/CN=shipshape test token signer", "-keyout"])
                    .arg(&key)
                    .arg("-out")
                    .arg(&bundle)
                    .output()
                    .expect("openssl");
                assert!(made.status.success(), "{}", text(&made));
                let der = Command::new("openssl")
                    .args(["x509", "-outform", "DER", "-in"])
                    .arg(&bundle)
                    .output()
                    .expect("openssl");
                assert!(der.status.success(), "{}", text(&der));
                let header = base64(
                    serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [base64(&der.stdout, false)]})
                        .to_string()
                        .as_bytes(),
                    true,
                );
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let address = listener.local_addr().expect("address").to_string();
                listener.set_nonblocking(true).expect("nonblocking");
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let (stopping, counting) = (stop.clone(), served.clone());
                std::thread::spawn(move || {
                    use std::io::{BufRead, Write};
                    while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        let Ok((stream, _)) = listener.accept() else {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        };
                        let _ = stream.set_nonblocking(false);
                        let mut reader = std::io::BufReader::new(&stream);
                        let mut line = String::new();
                        if reader.read_line(&mut line).is_err() {
                            continue;
                        }
                        // GET /token?scope=repository:team/app:pull,push&service=… HTTP/1.1
                        let query = line
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or("")
                            .split_once('?')
                            .map(|(_, q)| q.to_string())
                            .unwrap_or_default();
                        let access: Vec<serde_json::Value> = query
                            .split('&')
                            .filter_map(|pair| pair.strip_prefix("scope="))
                            .filter_map(|scope| {
                                let scope = scope.replace("%3A", ":").replace("%2F", "/").replace("%2C", ",");
                                let mut parts = scope.splitn(3, ':');
                                let (kind, name) = (parts.next()?.to_string(), parts.next()?.to_string());
                                let actions: Vec<String> = parts.next()?.split(',').map(str::to_string).collect();
                                Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
                            })
                            .collect();
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0);
                        let claims = serde_json::json!({
                            "iss": TOKEN_ISSUER, "sub": "", "aud": TOKEN_SERVICE,
                            "exp": now + 600, "nbf": now - 60, "iat": now,
                            "jti": format!("{now}-{}", counting.load(std::sync::atomic::Ordering::Relaxed)),
                            "access": access,
                        });
                        let signing =
                            format!("{header}.{}", base64(claims.to_string().as_bytes(), true));
                        let signed = Command::new("openssl")
                            .args(["dgst", "-sha256", "-sign"])
                            .arg(&key)
                            .stdin(Stdio::piped())
                            .stdout(Stdio::piped())
                            .spawn()
                            .and_then(|mut child| {
                                if let Some(mut stdin) = child.stdin.take() {
                                    stdin.write_all(signing.as_bytes())?;
                                }
                                child.wait_with_output()
                            });
                        let Ok(signed) = signed else { continue };
                        let token = format!("{signing}.{}", base64(&signed.stdout, true));
                        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 600}).to_string();
                        let mut stream = &stream;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        counting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
                TokenServer {
                    address,
                    bundle,
                    stop,
                    served,
                }
            }

            /// The registry's `auth:` block pointing at this server.
            fn registry_auth(&self) -> String {
                format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    self.address,
                    self.bundle.display()
                )
            }
        }

        impl Drop for TokenServer {
            fn drop(&mut self) {
                self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }

        /// An OCI layout in `dir` whose `multi` tag is a two-platform index: linux/arm64 first
        /// (a layer without busybox: it cannot run), then `archive`'s linux/amd64 image. Returns
        /// the index's digest in the layout.
        fn two_platform_layout(archive: &Path, dir: &Path) -> String {
            std::fs::create_dir_all(dir).expect("mkdir");
            let untar = Command::new("tar")
                .arg("-xf")
                .arg(archive)
                .arg("-C")
                .arg(dir)
                .output()
                .expect("tar");
            assert!(untar.status.success(), "{}", text(&untar));
            let blob = |digest: &str| {
                dir.join("blobs/sha256")
                    .join(digest.trim_start_matches("sha256:"))
            };
            let put = |bytes: &[u8]| -> (String, usize) {
                let scratch = dir.join("scratch");
                std::fs::write(&scratch, bytes).expect("write");
                let sum = Command::new("sha256sum")
                    .arg(&scratch)
                    .output()
                    .expect("sha256sum");
                let hex = String::from_utf8_lossy(&sum.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let digest = format!("sha256:{hex}");
                std::fs::rename(&scratch, blob(&digest)).expect("rename");
                (digest, bytes.len())
            };
            let read_json = |path: PathBuf| -> serde_json::Value {
                serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
            };
            let amd64 = read_json(dir.join("index.json"))["manifests"][0].clone();
            // arm64: a config saying so, and a layer holding one file and no shell.
            let other = dir.join("arm64-root");
            std::fs::create_dir_all(&other).expect("mkdir");
            std::fs::write(other.join("arm64-only"), "not for this host\n").expect("write");
            let layer_tar = dir.join("arm64-layer.tar");
            let tarred = Command::new("tar")
                .arg("-cf")
                .arg(&layer_tar)
                .arg("-C")
                .arg(&other)
                .arg(".")
                .output()
                .expect("tar");
            assert!(tarred.status.success(), "{}", text(&tarred));
            let (layer, layer_size) = put(&std::fs::read(&layer_tar).expect("layer"));
            let manifest = read_json(blob(amd64["digest"].as_str().unwrap_or("")));
            let mut config = read_json(blob(manifest["config"]["digest"].as_str().unwrap_or("")));
            config["architecture"] = "arm64".into();
            config["rootfs"]["diff_ids"] = serde_json::json!([layer]);
            let (config_digest, config_size) = put(config.to_string().as_bytes());
            let arm64_manifest = serde_json::json!({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
            });
            let (arm64_digest, arm64_size) = put(arm64_manifest.to_string().as_bytes());
            let index = serde_json::json!({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm64_digest, "size": arm64_size,
                     "platform": {"os": "linux", "architecture": "arm64"}},
                    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd64["digest"], "size": amd64["size"],
                     "platform": {"os": "linux", "architecture": "amd64"}},
                ],
            });
            let (index_digest, index_size) = put(index.to_string().as_bytes());
            std::fs::write(
                dir.join("index.json"),
                serde_json::json!({"schemaVersion": 2, "manifests": [{
                    "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_size,
                    "annotations": {"org.opencontainers.image.ref.name": "multi"}}]})
                .to_string(),
            )
            .expect("index.json");
            index_digest
        }

        /// A pod named `name` running `image`, with `extra` spec lines.
        fn image_pod(name: &str, image: &str, extra: &str) -> String {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n{extra}  containers:\n  - name: main\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n"
            )
        }

        /// A registry that answers every request and then sends its body a byte every 200 ms,
        /// forever: a pull from it never fails and never ends (no read timeout fires).
        struct TrickleRegistry {
            address: String,
            /// Connections open now.
            open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
            /// Connections seen so far.
            seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
            done: std::sync::Arc<std::sync::atomic::AtomicBool>,
        }

        impl TrickleRegistry {
            fn start() -> TrickleRegistry {
                use std::sync::Arc;
                use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let address = listener.local_addr().expect("address").to_string();
                let open = Arc::new(AtomicUsize::new(0));
                let seen = Arc::new(AtomicUsize::new(0));
                let done = Arc::new(AtomicBool::new(false));
                let (o, n, d) = (open.clone(), seen.clone(), done.clone());
                listener.set_nonblocking(true).expect("nonblocking");
                std::thread::spawn(move || {
                    while !d.load(Ordering::Relaxed) {
                        let Ok((mut stream, _)) = listener.accept() else {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        };
                        n.fetch_add(1, Ordering::Relaxed);
                        o.fetch_add(1, Ordering::Relaxed);
                        let (o, d) = (o.clone(), d.clone());
                        std::thread::spawn(move || {
                            use std::io::{Read, Write};
                            let _ = stream.set_nonblocking(false);
                            let mut request = [0u8; 4096];
                            let _ = stream.read(&mut request);
                            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n";
                            let mut alive = stream.write_all(head.as_bytes()).is_ok();
                            while alive && !d.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(200));
                                alive =
                                    stream.write_all(b" ").and_then(|()| stream.flush()).is_ok();
                            }
                            o.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                });
                TrickleRegistry {
                    address,
                    open,
                    seen,
                    done,
                }
            }
        }

        impl Drop for TrickleRegistry {
            fn drop(&mut self) {
                self.done.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }

        /// The waiting reason of a pod's first container, or its phase once it runs.
        fn pod_state(kubeconfig: &Path, cache: &Path, name: &str) -> Result<String, String> {
            let p = pod(kubeconfig, cache, name)?;
            if p["status"]["phase"] == "Running" {
                return Ok("Running".into());
            }
            Ok(
                p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        }

        #[test]
        fn pods_pull_registry_images_through_mirrors_with_credentials_and_back_off() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            if !is_root() {
                assert!(std::env::var_os("CI").is_none(), "CI runs as root");
                eprintln!("skipped: real pods need root (CI runs this as root)");
                return;
            }
            let work = tempfile::tempdir().expect("tempdir");
            let archive = busybox_image(work.path());
            // Another image whose only layer no other image has: the one whose bytes the
            // registry will be made to lie about.
            let other = work.path().join("other");
            std::fs::create_dir_all(other.join("bin")).expect("mkdir");
            std::fs::copy("/bin/busybox", other.join("bin/other")).expect("copy");
            // An image of its own (one more file than busybox), for a pod that goes away: image
            // garbage collection then removes it.
            std::fs::write(work.path().join("rootfs/etc/doomed"), "doomed\n").expect("write");
            let doomed_archive = work.path().join("doomed.tar");
            let packed = Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args(["image", "pack"])
                .arg(work.path().join("rootfs"))
                .args(["--tag", "doomed:1", "-o"])
                .arg(&doomed_archive)
                .output()
                .expect("pack runs");
            assert!(packed.status.success(), "{}", text(&packed));
            let other_archive = work.path().join("other.tar");
            let packed = Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args(["image", "pack"])
                .arg(&other)
                .args(["--tag", "other:1", "-o"])
                .arg(&other_archive)
                .output()
                .expect("pack runs");
            assert!(packed.status.success(), "{}", text(&packed));

            // A mirror for Docker Hub names (anonymous), and a private registry behind
            // htpasswd basic auth.
            let mut mirror = Registry::start(work.path(), "mirror", None, None);
            mirror.push(&archive, "library/busybox:1.36", None);
            mirror.push_compressed(&archive, "library/zstd:1", None, "zstd");
            mirror.push(&doomed_archive, "library/doomed:1", None);
            two_platform_layout(&archive, &work.path().join("multi"));
            mirror.push_index(&work.path().join("multi"), "library/multi:1");
            // The digest of the index as the registry serves it (the push may re-encode it).
            let served = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "skopeo inspect --raw --tls-verify=false docker://{}/library/multi:1 | sha256sum",
                    mirror.address
                ))
                .output()
                .expect("skopeo");
            let multi_digest = format!(
                "sha256:{}",
                String::from_utf8_lossy(&served.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
            );
            let raw = Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{}/library/multi:1", mirror.address))
                .output()
                .expect("skopeo");
            assert!(
                String::from_utf8_lossy(&raw.stdout).contains("\"architecture\":\"arm64\""),
                "the registry serves an index: {}",
                text(&raw)
            );
            let before = mirror.blobs();
            mirror.push(&other_archive, "library/tampered:1", None);
            let layer = mirror
                .blobs()
                .difference(&before)
                .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .cloned()
                .expect("the tampered image's layer");
            let mut bytes = std::fs::read(&layer).expect("layer");
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(&layer, bytes).expect("tamper");
            let htpasswd = work.path().join("htpasswd");
            let hashed = Command::new("htpasswd")
                .args(["-Bbn", "ship", "s3cret-pass"])
                .output()
                .expect("htpasswd is installed (apache2-utils, scripts/setup)");
            assert!(hashed.status.success(), "{}", text(&hashed));
            std::fs::write(&htpasswd, &hashed.stdout).expect("htpasswd file");
            let private = Registry::start(
                work.path(),
                "private",
                Some(format!(
                    "auth:\n  htpasswd:\n    realm: shipshape-test\n    path: {}\n",
                    htpasswd.display()
                )),
                None,
            );
            private.push(&archive, "team/tool:v1", Some("ship:s3cret-pass"));
            // A registry behind a bearer-token challenge, as Docker Hub and ghcr.io are.
            let tokens = TokenServer::start(work.path());
            let tokened =
                Registry::start(work.path(), "tokened", Some(tokens.registry_auth()), None);
            tokened.push(&archive, "team/tokened:v1", None);
            let tokens_for_push = tokens.served.load(std::sync::atomic::Ordering::Relaxed);
            // A registry over HTTPS with a certificate from a CA only the configuration names.
            let (ca, certificate, key) = loopback_certificate(work.path());
            let secure = Registry::start(work.path(), "secure", None, Some((&certificate, &key)));
            secure.push(&archive, "team/secure:v1", None);

            // A registry that never finishes an answer.
            let trickle = TrickleRegistry::start();

            let config = work.path().join("registries.yaml");
            std::fs::write(
                &config,
                format!(
                    "mirrors:\n  docker.io:\n    endpoint: [\"http://{m}\"]\n  \"{p}\":\n    endpoint: [\"http://{p}\"]\n  \"{t}\":\n    endpoint: [\"http://{t}\"]\n  \"{w}\":\n    endpoint: [\"http://{w}\"]\nconfigs:\n  \"{s}\":\n    tls:\n      ca_file: {ca}\n",
                    m = mirror.address,
                    p = private.address,
                    t = tokened.address,
                    w = trickle.address,
                    s = secure.address,
                    ca = ca.display(),
                ),
            )
            .expect("registries.yaml");
            let private_image = format!("{}/team/tool:v1", private.address);
            let secret = format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: demo\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{{\"auths\":{{\"{}\":{{\"username\":\"ship\",\"password\":\"s3cret-pass\"}}}}}}'\n",
                private.address
            );
            let doomed = image_pod("doomed", "doomed:1", "");
            let manifests = [
                secret,
                image_pod("mirrored", "busybox:1.36", ""),
                image_pod("multi", "multi:1", ""),
                image_pod("zstd", "zstd:1", ""),
                image_pod(
                    "private",
                    &private_image,
                    "  imagePullSecrets: [{name: regcred}]\n",
                ),
                image_pod("refused", &private_image, ""),
                image_pod("later", "busybox:1.37", ""),
                image_pod("tampered", "tampered:1", ""),
                image_pod("secure", &format!("{}/team/secure:v1", secure.address), ""),
                image_pod(
                    "tokened",
                    &format!("{}/team/tokened:v1", tokened.address),
                    "",
                ),
                // The same registry by another name: the CA is configured for 127.0.0.1 only.
                image_pod(
                    "untrusted",
                    &format!(
                        "localhost:{}/team/secure:v1",
                        secure.address.rsplit(':').next().unwrap_or("")
                    ),
                    "",
                ),
            ]
            .concat();
            let config_arg = config.display().to_string();
            let with_doomed = format!("{manifests}{doomed}");
            let apps = |repo: &Repo| write(&repo.path(), "apps/images.yaml", &with_doomed);
            let Some(RealCluster {
                child,
                cleanup,
                log,
                kubeconfig,
                cache,
                socket: _socket,
                repo,
            }) = real_cluster(
                apps,
                &[
                    "--registry-config",
                    &config_arg,
                    // Never Docker Hub itself: the tests talk to loopback only.
                    "--disable-default-registry-endpoint",
                    // Collect unused images whatever the disk, at once.
                    "--image-gc-high-threshold",
                    "1",
                    "--image-gc-low-threshold",
                    "0",
                    "--image-minimum-gc-age",
                    "0s",
                ],
            )
            else {
                return;
            };
            // The state, and on failure the pod's events, so a failure says why.
            let state = |name: &str| -> Result<String, String> {
                let s = pod_state(&kubeconfig, &cache, name)?;
                if s == "Running" {
                    return Ok(s);
                }
                let events = kubectl(
                    &kubeconfig,
                    &cache,
                    &[
                        "get",
                        "events",
                        "-n",
                        "demo",
                        "--field-selector",
                        &format!("involvedObject.name={name}"),
                    ],
                );
                Ok(format!("{s}\n{}", text(&events)))
            };
            // A Docker Hub name, unchanged in the manifest, comes from the mirror; its imageID
            // is the digest it ran.
            eventually("the mirrored pod running", || {
                let s = state("mirrored")?;
                (s == "Running").then_some(()).ok_or(s)
            });
            let mirrored = pod(&kubeconfig, &cache, "mirrored").expect("pod");
            let image_id = mirrored["status"]["containerStatuses"][0]["imageID"]
                .as_str()
                .unwrap_or("");
            assert!(
                image_id.starts_with("docker.io/library/busybox@sha256:"),
                "{image_id}"
            );
            // An index gives this host's platform (the arm64 entry listed first cannot run); the
            // imageID is the index's digest, as containerd reports it.
            eventually("the pod of a two-platform image running", || {
                let s = state("multi")?;
                (s == "Running").then_some(()).ok_or(s)
            });
            let multi = pod(&kubeconfig, &cache, "multi").expect("pod");
            assert_eq!(
                multi["status"]["containerStatuses"][0]["imageID"],
                format!("docker.io/library/multi@{multi_digest}")
            );
            // Layers compressed with zstd (the others here are gzip, as skopeo pushes them).
            eventually("the pod of a zstd image running", || {
                let s = state("zstd")?;
                (s == "Running").then_some(()).ok_or(s)
            });
            // The pull secret opens the private registry; without it the registry refuses.
            eventually("the private pod running", || {
                let s = state("private")?;
                (s == "Running").then_some(()).ok_or(s)
            });
            eventually("the pod without credentials in back-off", || {
                let s = state("refused")?;
                (s.starts_with("ImagePullBackOff\n") || s.starts_with("ErrImagePull\n"))
                    .then_some(())
                    .ok_or(s)
            });
            // The token challenge is answered anonymously, as for a public image.
            eventually("the pod from the token registry running", || {
                let s = state("tokened")?;
                (s == "Running").then_some(()).ok_or(s)
            });
            assert!(
                tokens.served.load(std::sync::atomic::Ordering::Relaxed) > tokens_for_push,
                "the pull asked the token server for a token"
            );
            // HTTPS with the configured CA; without it the certificate is refused.
            eventually("the pod from the TLS registry running", || {
                let s = state("secure")?;
                (s == "Running").then_some(()).ok_or(s)
            });
            eventually("the pod from an untrusted name in back-off", || {
                let s = state("untrusted")?;
                (s.starts_with("ImagePullBackOff\n") || s.starts_with("ErrImagePull\n"))
                    .then_some(())
                    .ok_or(s)
            });
            // A layer whose bytes do not match its digest is refused, never run.
            eventually("the tampered pod in back-off", || {
                let s = state("tampered")?;
                (s.starts_with("ImagePullBackOff\n") || s.starts_with("ErrImagePull\n"))
                    .then_some(())
                    .ok_or(s)
            });
            // A tag the registry does not have yet: back-off, then running once it is pushed.
            eventually("the later pod in back-off", || {
                let s = state("later")?;
                s.starts_with("ImagePullBackOff\n").then_some(()).ok_or(s)
            });
            mirror.push(&archive, "library/busybox:1.37", None);
            eventually("the later pod running once its tag exists", || {
                let s = state("later")?;
                (s == "Running").then_some(()).ok_or(s)
            });

            let events = kubectl(
                &kubeconfig,
                &cache,
                &["get", "events", "-n", "demo", "-o", "json"],
            );
            assert!(events.status.success(), "{}", text(&events));
            let events: serde_json::Value =
                serde_json::from_slice(&events.stdout).expect("events JSON");
            let said = |pod: &str, reason: &str| -> Vec<String> {
                events["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
                    .filter_map(|e| e["message"].as_str().map(str::to_string))
                    .collect()
            };
            let pulled = said("mirrored", "Pulled").join("\n");
            assert!(
                pulled.contains(&format!("downloaded from {}", mirror.address)),
                "{pulled}"
            );
            let refused = said("refused", "Failed").join("\n");
            assert!(refused.contains("unauthorized"), "{refused}");
            let untrusted = said("untrusted", "Failed").join("\n");
            assert!(untrusted.contains("certificate"), "{untrusted}");
            let tampered = said("tampered", "Failed").join("\n");
            assert!(tampered.contains("digest"), "{tampered}");
            assert!(!said("later", "BackOff").is_empty(), "a BackOff event");
            assert!(
                said("later", "Pulled")
                    .iter()
                    .any(|m| m.starts_with("Successfully pulled image \"busybox:1.37\"")),
                "{:?}",
                said("later", "Pulled")
            );
            // The history says which digest ran, on which node, for which commit.
            let history = repo.shipshape(&["history", "--object", "pod/demo/mirrored"]);
            let history = text(&history);
            let ran = history
                .lines()
                .position(|l| {
                    l.contains("kubelet/node-")
                        && l.contains(" run Pod demo/mirrored")
                        && l.contains(" commit ")
                })
                .unwrap_or_else(|| panic!("a run record in:\n{history}"));
            assert!(
                history
                    .lines()
                    .nth(ran + 1)
                    .is_some_and(|l| l.trim() == format!("main: busybox:1.36 is {image_id}")),
                "{history}"
            );
            // `image pull` uses the cluster's registry configuration, into every node.
            mirror.push(&archive, "library/busybox:1.38", None);
            let pulled = repo.shipshape(&["image", "pull", "busybox:1.38"]);
            assert!(pulled.status.success(), "{}", text(&pulled));
            assert!(
                String::from_utf8_lossy(&pulled.stdout).starts_with(
                    "pulled docker.io/library/busybox:1.38 (docker.io/library/busybox@sha256:"
                ) && String::from_utf8_lossy(&pulled.stdout).contains(") into 2 nodes: "),
                "{}",
                text(&pulled)
            );
            let refused = repo.shipshape(&["image", "pull", &private_image]);
            assert!(!refused.status.success());
            assert!(
                String::from_utf8_lossy(&refused.stderr).contains("unauthorized"),
                "{}",
                text(&refused)
            );
            let listed = repo.shipshape(&["image", "ls"]);
            let listed = String::from_utf8_lossy(&listed.stdout);
            assert!(
                listed
                    .lines()
                    .any(|l| l.starts_with("docker.io/library/busybox:1.38 ")
                        && l.ends_with(" node-1,node-2")),
                "{listed}"
            );
            // A pod gone, its image is collected; the imported image (pinned) and those in use
            // stay.
            eventually("the doomed pod running", || {
                let s = state("doomed")?;
                (s == "Running").then_some(()).ok_or(s)
            });
            write(&repo.path(), "apps/images.yaml", &manifests);
            commit(&repo.path(), "without the doomed pod");
            eventually("the unused image collected", || {
                let listed = repo.shipshape(&["image", "ls"]);
                let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
                let has = |name: &str| listed.lines().any(|l| l.starts_with(&format!("{name} ")));
                (!has("docker.io/library/doomed:1")
                    && has("docker.io/library/busybox:1.35")
                    && has("docker.io/library/busybox:1.36"))
                .then_some(())
                .ok_or(listed)
            });
            // A registry that is down: the pull fails with its reason, backs off, and the pod
            // runs once the registry is back.
            mirror.push(&archive, "library/busybox:outage", None);
            mirror.stop();
            let outage = image_pod("outage", "busybox:outage", "");
            write(
                &repo.path(),
                "apps/images.yaml",
                &format!("{manifests}{outage}"),
            );
            commit(&repo.path(), "a pod while the mirror is down");
            eventually("the pod in back-off while the registry is down", || {
                let s = state("outage")?;
                (s.starts_with("ImagePullBackOff\n") && s.contains("connect"))
                    .then_some(())
                    .ok_or(s)
            });
            mirror.start_again();
            eventually("the pod running once the registry is back", || {
                let s = state("outage")?;
                (s == "Running").then_some(()).ok_or(s)
            });
            // A pull that never ends is cancelled when its pod is deleted: the pod goes away
            // (the kubelet does not wait for the registry) and the connection is dropped.
            let with_outage = format!("{manifests}{outage}");
            let slow = image_pod("slow", &format!("{}/team/slow:v1", trickle.address), "");
            write(
                &repo.path(),
                "apps/images.yaml",
                &format!("{with_outage}{slow}"),
            );
            commit(&repo.path(), "a pod whose registry never answers in full");
            eventually("the slow pod pulling", || {
                let s = state("slow")?;
                let open = trickle.open.load(std::sync::atomic::Ordering::Relaxed);
                (s.starts_with("ContainerCreating\n") && open > 0)
                    .then_some(())
                    .ok_or(format!("{open} connections open; {s}"))
            });
            write(&repo.path(), "apps/images.yaml", &with_outage);
            commit(&repo.path(), "without the slow pod");
            eventually("the slow pod gone and its pull dropped", || {
                let gone = !pod_list(&kubeconfig, &cache)?
                    .iter()
                    .any(|p| p["metadata"]["name"] == "slow");
                let open = trickle.open.load(std::sync::atomic::Ordering::Relaxed);
                (gone && open == 0)
                    .then_some(())
                    .ok_or(format!("gone: {gone}; {open} connections open"))
            });
            assert!(trickle.seen.load(std::sync::atomic::Ordering::Relaxed) > 0);
            // The password is never written where people read.
            let shown = format!(
                "{}{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                events
            );
            assert!(!shown.contains("s3cret-pass"), "the password leaked");
            interrupt(child);
            drop(cleanup);
        }

        /// One containerd cluster per host at a time: the node, bridge and table names are
        /// the host's.
        pub(crate) static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

        /// The commit-to-running benchmark on real pods, with one commit per trigger, so it
        /// cannot rot (`scripts/bench` runs it with more).
        #[test]
        fn the_commit_benchmark_times_rollouts_on_real_pods() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            if !is_root() {
                assert!(std::env::var_os("CI").is_none(), "CI runs as root");
                eprintln!("skipped: real pods need root (CI runs this as root)");
                return;
            }
            // Its own temporary directory, so the guard never touches another benchmark's.
            let dir = tempfile::tempdir().expect("tempdir");
            let cleanup = Cleanup {
                data: dir.path().to_path_buf(),
                route_localnet: std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_default(),
                shared_socket: None,
            };
            let output = Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args([
                    "bench",
                    "--objects",
                    "1",
                    "--writes",
                    "1",
                    "--watchers",
                    "1",
                    "--scale-nodes",
                    "0",
                    "--pod-runs",
                    "0",
                    "--dns-records",
                    "0",
                    "--commit-runs",
                    "1",
                    // The ingress benchmark needs the same lock (it runs nodes named alike).
                    "--ingress-seconds",
                    "1",
                ])
                .env("TMPDIR", dir.path())
                .output()
                .expect("runs");
            let out = text(&output);
            assert!(output.status.success(), "{out}");
            for line in [
                "commit to running (examples-repo/web: 2 replicas",
                "sync-now trigger first new pod Running p50",
                "1 s poll first new pod Running p50",
                "rollout complete p50",
                "ingress vs nginx (reverse proxy to the same 2 nginx pods",
                "plain shipshape",
                "TLS shipshape",
                "ratio shipshape / nginx: requests/s",
            ] {
                assert!(out.contains(line), "{line:?} in:\n{out}");
            }
            assert!(!out.contains("ingress vs nginx: skipped"), "{out}");
            // nginx stopped with its workers (SIGKILL to its master orphans them: live nginx
            // workers whose parent is init).
            let orphans = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| {
                    let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                    let stat =
                        std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                    // "pid (comm) state ppid …"
                    let fields: Vec<&str> = stat
                        .rsplit(')')
                        .next()
                        .unwrap_or("")
                        .split_whitespace()
                        .collect();
                    String::from_utf8_lossy(&cmdline).starts_with("nginx: worker process")
                        && fields.first() != Some(&"Z")
                        && fields.get(1) == Some(&"1")
                })
                .count();
            assert_eq!(orphans, 0, "nginx workers left running by the benchmark");
            let bridges = Path::new("/sys/class/net/ship-node-1").exists();
            assert!(!bridges, "the benchmark left its bridge");
            drop(cleanup);
        }

        /// One command of the README's walkthrough and the output the README shows for it.
        #[derive(Debug)]
        struct Step {
            command: String,
            shown: Vec<String>,
        }

        /// The `console` blocks of the README's walkthrough section: `$ ` starts a command
        /// (a trailing `  # …` is a comment), `^C` stops the run command, other lines are what
        /// the command before prints.
        fn walkthrough(readme: &str) -> Vec<Step> {
            let section = readme
                .split("\n## ")
                .find(|s| s.starts_with("Walkthrough"))
                .expect("the README has a Walkthrough section");
            let mut steps = Vec::new();
            let mut in_block = false;
            for line in section.lines() {
                if line.starts_with("```") {
                    in_block = line == "```console";
                    continue;
                }
                if !in_block {
                    continue;
                }
                if let Some(command) = line.strip_prefix("$ ") {
                    let command = command.split("  # ").next().unwrap_or(command).trim();
                    steps.push(Step {
                        command: command.to_string(),
                        shown: Vec::new(),
                    });
                } else if line == "^C" {
                    steps.push(Step {
                        command: line.to_string(),
                        shown: Vec::new(),
                    });
                } else if !line.trim().is_empty() && line.trim() != "…" {
                    steps
                        .last_mut()
                        .expect("shown output follows a command")
                        .shown
                        .push(line.to_string());
                }
            }
            steps
        }

        /// One word of shown output against one printed word; `…` inside it matches any text.
        fn word_matches(pattern: &str, word: &str) -> bool {
            let parts: Vec<&str> = pattern.split('…').collect();
            let [first, middle @ .., last] = parts.as_slice() else {
                return pattern == word;
            };
            let Some(rest) = word.strip_prefix(first) else {
                return false;
            };
            let Some(mut rest) = rest.strip_suffix(last) else {
                return false;
            };
            for part in middle {
                match rest.find(part) {
                    Some(at) => rest = &rest[at + part.len()..],
                    None => return false,
                }
            }
            true
        }

        /// A shown line against a printed one, word by word (spacing ignored); a `…` on its
        /// own matches any number of words.
        fn line_matches(pattern: &[&str], printed: &[&str]) -> bool {
            match pattern.split_first() {
                None => printed.is_empty(),
                Some((&"…", rest)) => {
                    (0..=printed.len()).any(|skip| line_matches(rest, &printed[skip..]))
                }
                Some((word, rest)) => printed.split_first().is_some_and(|(first, others)| {
                    word_matches(word, first) && line_matches(rest, others)
                }),
            }
        }

        /// The shown lines that no printed line matches in the order shown (each printed line
        /// matches one, and each shown line must be printed after the one before it).
        fn missing<'a>(shown: &'a [String], printed: &str) -> Vec<&'a str> {
            let lines: Vec<Vec<&str>> = printed
                .lines()
                .map(|l| l.split_whitespace().collect())
                .collect();
            let mut next = 0;
            let mut missing = Vec::new();
            for line in shown {
                let pattern: Vec<&str> = line.split_whitespace().collect();
                match lines[next..]
                    .iter()
                    .position(|printed| line_matches(&pattern, printed))
                {
                    Some(at) => next += at + 1,
                    None => missing.push(line.as_str()),
                }
            }
            missing
        }

        #[test]
        fn shown_output_matches_words_and_wildcards() {
            let shown = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
            let printed =
                "NAME   READY   STATUS\nweb-7d9f   2   2   2   30s\nkv-1: started 3 time(s)\n";
            assert!(
                missing(
                    &shown(&["web-… 2 … 2 … 2 … …", "kv-1: started … time(s)"]),
                    printed
                )
                .is_empty()
            );
            assert_eq!(
                missing(&shown(&["web-… 0 … 0 … 0 … …"]), printed),
                ["web-… 0 … 0 … 0 … …"]
            );
            assert_eq!(
                missing(&shown(&["kv-1: started"]), printed),
                ["kv-1: started"]
            );
            assert!(missing(&shown(&["… READY …"]), printed).is_empty());
            // Each printed line stands for one shown line only.
            assert_eq!(missing(&shown(&["NAME …", "NAME …"]), printed), ["NAME …"]);
            // Shown lines are printed in the order shown.
            assert_eq!(missing(&shown(&["kv-1: …", "NAME …"]), printed), ["NAME …"]);
            assert!(missing(&shown(&["NAME …", "kv-1: …"]), printed).is_empty());
        }

        /// The README's walkthrough, command by command, in a temporary clone of this
        /// repository (set-up done: the binary under test stands in for the release build, and
        /// the data directory is a temporary one instead of /var/lib/shipshape). A command that
        /// changes nothing is retried until it prints what the README shows, as a person
        /// would look again; `git` and `sed` run once.
        #[test]
        fn the_readme_walkthrough_runs_as_written() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            if !is_root() {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI runs as root: the walkthrough test must run there"
                );
                eprintln!("skipped: real pods need root (CI runs this as root)");
                return;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let clone = dir.path().join("shipshape");
            let data = dir.path().join("data");
            let home = dir.path().join("home");
            std::fs::create_dir_all(&home).expect("mkdir");
            let cloned = Command::new("git")
                .args(["clone", "-q", env!("CARGO_MANIFEST_DIR")])
                .arg(&clone)
                .output()
                .expect("git runs");
            assert!(cloned.status.success(), "{}", text(&cloned));
            let readme = std::fs::read_to_string(clone.join("README.md")).expect("README.md");
            let steps = walkthrough(&readme);
            assert!(
                steps.len() >= 15,
                "the walkthrough has its steps: {steps:?}"
            );
            std::fs::create_dir_all(clone.join("target/release")).expect("mkdir");
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_shipshape"),
                clone.join("target/release/shipshape"),
            )
            .expect("symlink");
            let mut cleanup = Cleanup {
                data: data.clone(),
                route_localnet: std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_default(),
                shared_socket: None,
            };
            let data_text = data.display().to_string();
            let adapt = |text: &str| text.replace("/var/lib/shipshape", &data_text);
            let shell = |command: &str| {
                let mut shell = Command::new("bash");
                shell
                    .args(["-c", command])
                    .current_dir(&clone)
                    .env("HOME", &home)
                    .env("SHIPSHAPE_DATA_DIR", &data)
                    .env("GIT_AUTHOR_NAME", "Walk Through")
                    .env("GIT_AUTHOR_EMAIL", "walk@example.com")
                    .env("GIT_COMMITTER_NAME", "Walk Through")
                    .env("GIT_COMMITTER_EMAIL", "walk@example.com");
                shell
            };
            let log = dir.path().join("up.log");
            let up_log = || std::fs::read_to_string(&log).unwrap_or_default();
            let mut up: Option<Running> = None;
            let mut exports = String::new();
            for step in &steps {
                let command = adapt(step.command.strip_prefix("sudo ").unwrap_or(&step.command));
                let shown: Vec<String> = step.shown.iter().map(|l| adapt(l)).collect();
                eprintln!("walkthrough: $ {command}");
                if command == "scripts/up" {
                    let file = std::fs::File::create(&log).expect("log file");
                    let child = shell(&command)
                        .env("SHIPSHAPE_PREBUILT", "1")
                        .stdout(file.try_clone().expect("log file"))
                        .stderr(file)
                        .spawn()
                        .expect("scripts/up starts");
                    let running = up.insert(Running(child));
                    let deadline = Instant::now() + Duration::from_secs(240);
                    loop {
                        let printed = up_log();
                        if missing(&shown, &printed).is_empty() {
                            break;
                        }
                        let exited = running.0.try_wait().ok().flatten();
                        assert!(
                            exited.is_none() && Instant::now() < deadline,
                            "`{}` did not print {:?} (exit: {exited:?}):\n{printed}",
                            step.command,
                            missing(&shown, &printed)
                        );
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    let socket = socket_in_use(&data);
                    if !socket.starts_with(&data_text) {
                        cleanup.shared_socket = Some(socket);
                    }
                    continue;
                }
                if command == "^C" {
                    let running = up.as_mut().expect("the run command is running");
                    let pid = running.0.id().to_string();
                    assert!(
                        Command::new("kill")
                            .args(["-INT", &pid])
                            .status()
                            .expect("kill")
                            .success()
                    );
                    let deadline = Instant::now() + Duration::from_secs(90);
                    while running.0.try_wait().ok().flatten().is_none() {
                        assert!(
                            Instant::now() < deadline,
                            "Ctrl-C did not stop it:\n{}",
                            up_log()
                        );
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    let printed = up_log();
                    assert!(
                        missing(&shown, &printed).is_empty(),
                        "after Ctrl-C, missing {:?} in:\n{printed}",
                        missing(&shown, &printed)
                    );
                    continue;
                }
                if command.starts_with("export ") {
                    exports.push_str(&command);
                    exports.push('\n');
                    continue;
                }
                let once = command.starts_with("git ") || command.starts_with("sed ");
                let deadline = Instant::now() + Duration::from_secs(150);
                loop {
                    let output = shell(&format!("{exports}{command}"))
                        .output()
                        .expect("bash runs");
                    let printed = format!(
                        "{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                    let missing = missing(&shown, &printed);
                    if output.status.success() && missing.is_empty() {
                        eprint!("{printed}");
                        break;
                    }
                    assert!(
                        !once && Instant::now() < deadline,
                        "walkthrough step `{}` ({}) printed:\n{printed}\nmissing: {missing:?}\nup's log:\n{}",
                        step.command,
                        output.status,
                        up_log()
                    );
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
            assert!(
                up.as_mut()
                    .is_some_and(|r| r.0.try_wait().ok().flatten().is_some()),
                "the walkthrough ends by stopping the cluster"
            );
            // Stopping removed what the cluster made on the host.
            let tables = Command::new("nft")
                .args(["list", "tables"])
                .output()
                .expect("nft");
            assert!(
                !String::from_utf8_lossy(&tables.stdout).contains("shipshape"),
                "nftables table left behind"
            );
            let netns: Vec<String> = std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("shipshape-"))
                .collect();
            assert!(
                netns.is_empty(),
                "network namespaces left behind: {netns:?}"
            );
            for bridge in ["ship-node-1", "ship-node-2", "ship-node-3"] {
                assert!(
                    !Path::new("/sys/class/net").join(bridge).exists(),
                    "bridge {bridge} left behind"
                );
            }
        }

        /// A kustomize overlay of a base outside the application, on real containers: the
        /// generated ConfigMap's content reaches the pods, and changing it rolls them (its
        /// hashed name changes, and so does the pod template) and prunes the old one; what the
        /// base stops listing is pruned.
        #[test]
        fn kustomize_overlays_run_real_pods_and_a_changed_generator_rolls_them() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            // Flux's layout: the application (`apps/prod`, as `clusters/NAME`) lists an overlay
            // (`overlays/prod`), which lists the base (`base/web`).
            let overlay = |colour: &str| {
                format!(
                    "resources:\n- ../../base/web\nnamespace: demo\nnamePrefix: prod-\nreplicas:\n- name: web\n  count: 2\nconfigMapGenerator:\n- name: web-config\n  behavior: merge\n  literals:\n  - colour={colour}\n"
                )
            };
            let base = |service: bool| {
                let service = if service { "- service.yaml\n" } else { "" };
                format!(
                    "resources:\n- deploy.yaml\n{service}configMapGenerator:\n- name: web-config\n  literals:\n  - colour=blue\n"
                )
            };
            let apps = |repo: &Repo| {
                write(&repo.path(), "base/web/kustomization.yaml", &base(true));
                write(
                    &repo.path(),
                    "base/web/service.yaml",
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: kweb}\n  ports:\n  - port: 80\n",
                );
                write(
                    &repo.path(),
                    "base/web/deploy.yaml",
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: kweb}\n  template:\n    metadata:\n      labels: {app: kweb}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: busybox:1.35\n        command: [sh, -c, 'echo colour=$colour; exec sleep 3600']\n        envFrom:\n        - configMapRef:\n            name: web-config\n",
                );
                write(
                    &repo.path(),
                    "overlays/prod/kustomization.yaml",
                    &overlay("green"),
                );
                write(
                    &repo.path(),
                    "apps/prod/kustomization.yaml",
                    "resources:\n- ../../overlays/prod\n",
                );
            };
            let Some(RealCluster {
                child,
                cleanup,
                log,
                kubeconfig,
                cache,
                socket: _socket,
                repo,
            }) = real_cluster(apps, &[])
            else {
                return;
            };
            wait_for(&log, "prod Synced");
            let said = |colour: &str| -> Result<(), String> {
                let pods = pod_list(&kubeconfig, &cache)?;
                let running: Vec<&serde_json::Value> = pods
                    .iter()
                    .filter(|p| p["metadata"]["labels"]["app"] == "kweb")
                    .collect();
                let logs = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["logs", "-n", "demo", "-l", "app=kweb", "--tail", "1"],
                ));
                let all_running =
                    running.len() == 2 && running.iter().all(|p| p["status"]["phase"] == "Running");
                let wanted = format!("colour={colour}");
                (all_running && logs.lines().filter(|l| l.trim() == wanted).count() == 2)
                    .then_some(())
                    .ok_or(format!("{} pods; logs:\n{logs}", running.len()))
            };
            eventually("two pods saying green", || said("green"));
            let maps = |repo: &Repo| -> Vec<String> {
                let out = repo.shipshape(&["get", "configmaps", "-n", "demo", "-o", "json"]);
                let list: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                    .filter(|n| n.starts_with("prod-web-config-"))
                    .collect()
            };
            let before = maps(&repo);
            assert_eq!(before.len(), 1, "{before:?}");
            let service = || repo.shipshape(&["get", "services", "prod-web", "-n", "demo"]);
            assert!(service().status.success(), "{}", text(&service()));
            write(
                &repo.path(),
                "overlays/prod/kustomization.yaml",
                &overlay("red"),
            );
            commit(&repo.path(), "prod: red");
            eventually("two new pods saying red", || said("red"));
            let after = maps(&repo);
            assert!(
                after.len() == 1 && after != before,
                "{before:?} then {after:?}"
            );
            // What the base no longer lists is pruned.
            write(&repo.path(), "base/web/kustomization.yaml", &base(false));
            commit(&repo.path(), "base: no Service");
            eventually("the Service pruned", || {
                let out = service();
                (!out.status.success()).then_some(()).ok_or(text(&out))
            });
            eventually("the pods still saying red", || said("red"));
            interrupt(child);
            drop(cleanup);
        }

        #[test]
        fn pods_run_on_containerd_reach_each_other_restart_and_are_adopted() {
            let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
            let apps = |repo: &Repo| {
                let hooks = repo.dir.path().join("hooks");
                write(
                    &repo.path(),
                    "apps/web/web.yaml",
                    &DEPLOYMENT.replace("HOOKS", &hooks.display().to_string()),
                );
                write(&repo.path(), "apps/trouble/pods.yaml", TROUBLE);
            };
            let Some(RealCluster {
                child,
                cleanup,
                log: _log,
                kubeconfig,
                cache,
                socket,
                repo,
            }) = real_cluster(apps, &["--keep-workloads"])
            else {
                return;
            };
            let hooks = repo.dir.path().join("hooks");

            // Both replicas run, one per node, each with an address in its node's /24, and
            // answer from their ConfigMap volume; the environment came from a ConfigMap.
            let pods = eventually("two ready web pods", || web_pods(&kubeconfig, &cache));
            let mut nodes: Vec<String> = pods
                .iter()
                .map(|p| {
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            nodes.sort();
            assert_eq!(nodes, vec!["node-1", "node-2"]);
            let first = &pods[0];
            let first_name = first["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_string();
            let first_ip = first["status"]["podIP"]
                .as_str()
                .expect("pod IP")
                .to_string();
            let first_node = first["spec"]["nodeName"]
                .as_str()
                .expect("node")
                .to_string();
            let subnet = if first_node == "node-1" {
                "10.244.0."
            } else {
                "10.244.1."
            };
            assert!(first_ip.starts_with(subnet), "{first_ip} on {first_node}");
            let page = eventually("the page", || http_get(&format!("{first_ip}:8080")));
            assert!(page.contains("served by busybox"), "{page}");
            let logs = text(&kubectl(
                &kubeconfig,
                &cache,
                &["logs", "-n", "demo", &first_name],
            ));
            assert!(logs.contains("greeting=hello-from-configmap"), "{logs}");

            // kubectl exec runs a command in the container: output, stdin, exit code.
            let exec = kubectl(
                &kubeconfig,
                &cache,
                &[
                    "exec",
                    "-n",
                    "demo",
                    &first_name,
                    "--",
                    "sh",
                    "-c",
                    "echo in-$HOSTNAME; exit 3",
                ],
            );
            assert_eq!(exec.status.code(), Some(3), "{}", text(&exec));
            assert!(
                String::from_utf8_lossy(&exec.stdout).contains(&format!("in-{first_name}")),
                "{}",
                text(&exec)
            );
            let mut piped = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "exec",
                    "-i",
                    "-n",
                    "demo",
                    &first_name,
                    "--",
                    "sh",
                    "-c",
                    "tr a-z A-Z",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("kubectl exec");
            {
                use std::io::Write as _;
                let mut input = piped.stdin.take().expect("stdin");
                input.write_all(b"shouting\n").expect("write");
            }
            let piped = piped.wait_with_output().expect("kubectl exec -i");
            assert_eq!(String::from_utf8_lossy(&piped.stdout), "SHOUTING\n");
            // (--data-dir before the subcommand: after `--` everything is the command.)
            let own = Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .arg("--data-dir")
                .arg(repo.data())
                .args([
                    "exec",
                    "-n",
                    "demo",
                    &first_name,
                    "--",
                    "sh",
                    "-c",
                    "test -f /www/index.html && exit 7",
                ])
                .output()
                .expect("runs");
            assert_eq!(own.status.code(), Some(7), "{}", text(&own));

            // A pod on the other node reaches it by address.
            let other = if first_node == "node-1" {
                "node-2"
            } else {
                "node-1"
            };
            write(
                &repo.path(),
                "apps/client/pod.yaml",
                &format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: demo}}\nspec:\n  nodeName: {other}\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox:1.35\n    command: [\"wget\", \"-qO-\", \"http://{first_ip}:8080/\"]\n"
                ),
            );
            commit(&repo.path(), "client");
            eventually("the client's fetch, across nodes", || {
                let client = pod(&kubeconfig, &cache, "client")?;
                if client["status"]["phase"] != "Succeeded" {
                    return Err(client["status"].to_string());
                }
                let logs = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["logs", "-n", "demo", "client"],
                ));
                logs.contains("served by busybox").then_some(()).ok_or(logs)
            });

            // Endpoints list the ready web pods and keep the never-ready pod out.
            eventually("endpoints", || {
                let web = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "endpoints", "-n", "demo", "web"],
                    "{.subsets[0].addresses[*].ip}",
                );
                let never = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "endpoints", "-n", "demo", "never-ready"],
                    "{.subsets[0].notReadyAddresses[*].ip}",
                );
                let never_ready = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "endpoints", "-n", "demo", "never-ready"],
                    "{.subsets[0].addresses}",
                );
                (web.split_whitespace().count() == 2
                    && web.contains(&first_ip)
                    && !never.is_empty()
                    && never_ready.is_empty())
                .then_some(())
                .ok_or(format!("web: {web}; never-ready: {never} / {never_ready}"))
            });

            // tcpSocket probes: a listening port is ready, a closed one is not, with the dial's
            // error in the event.
            eventually("tcpSocket readiness", || {
                let server = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "pod", "-n", "demo", "pair"],
                    "{.status.containerStatuses[?(@.name==\"server\")].ready}",
                );
                let closed = jsonpath(
                    &kubeconfig,
                    &cache,
                    &["get", "pod", "-n", "demo", "never-ready"],
                    "{.status.containerStatuses[?(@.name==\"closed\")].ready}",
                );
                let described = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["describe", "pod", "-n", "demo", "never-ready"],
                ));
                let refused = described.contains("Readiness probe failed: dial tcp");
                (server == "true" && closed == "false" && refused)
                    .then_some(())
                    .ok_or(format!(
                        "server ready {server:?}, closed ready {closed:?}:\n{described}"
                    ))
            });

            // Init containers run first; containers of a pod share its network namespace; the
            // security context applies; a root image is refused under runAsNonRoot.
            eventually("the pair's client fetching over localhost", || {
                let logs = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["logs", "-n", "demo", "pair", "-c", "client"],
                ));
                logs.contains("from-init").then_some(()).ok_or(logs)
            });
            let uid = kubectl(
                &kubeconfig,
                &cache,
                &[
                    "exec", "-n", "demo", "pair", "-c", "client", "--", "id", "-u",
                ],
            );
            assert_eq!(
                String::from_utf8_lossy(&uid.stdout).trim(),
                "1000",
                "{}",
                text(&uid)
            );
            let touched = kubectl(
                &kubeconfig,
                &cache,
                &[
                    "exec", "-n", "demo", "pair", "-c", "client", "--", "touch", "/made",
                ],
            );
            assert_ne!(
                touched.status.code(),
                Some(0),
                "a read-only root filesystem: {}",
                text(&touched)
            );
            eventually("runAsNonRoot refusing a root image", || {
                let p = pod(&kubeconfig, &cache, "rooted")?;
                let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
                (waiting["reason"] == "CreateContainerConfigError"
                    && waiting["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("runAsNonRoot")))
                .then_some(())
                .ok_or(p["status"].to_string())
            });

            // A failing liveness probe restarts its container; a memory hog is OOMKilled.
            eventually("a liveness restart", || {
                let p = pod(&kubeconfig, &cache, "forgetful")?;
                (p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1))
                    .then_some(())
                    .ok_or(p["status"].to_string())
            });
            eventually("the hog OOMKilled", || {
                let p = pod(&kubeconfig, &cache, "hog")?;
                let state = &p["status"]["containerStatuses"][0]["state"]["terminated"];
                (state["reason"] == "OOMKilled" && p["status"]["phase"] == "Failed")
                    .then_some(())
                    .ok_or(p["status"].to_string())
            });

            // A killed container process is restarted and counted.
            let container_id = first["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .expect("container ID")
                .trim_start_matches("containerd://")
                .to_string();

            let tasks = Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .args(["-n", &format!("shipshape-{first_node}"), "task", "ls"])
                .output()
                .expect("ctr runs");
            let tasks = String::from_utf8_lossy(&tasks.stdout).into_owned();
            let pid = tasks
                .lines()
                .find(|l| l.starts_with(&container_id))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or_else(|| panic!("{container_id} in {tasks}"))
                .to_string();
            assert!(
                Command::new("kill")
                    .args(["-9", &pid])
                    .status()
                    .expect("kill")
                    .success()
            );
            eventually("the restart", || {
                let p = pod(&kubeconfig, &cache, &first_name)?;
                let status = &p["status"]["containerStatuses"][0];
                let events = text(&kubectl(
                    &kubeconfig,
                    &cache,
                    &["get", "events", "-n", "demo"],
                ));
                (status["restartCount"] == 1 && status["ready"] == true)
                    .then_some(())
                    .ok_or(format!("{}\n{events}", p["status"]))
            });

            // A deleted pod is replaced.
            let deleted = kubectl(
                &kubeconfig,
                &cache,
                &["delete", "pod", "-n", "demo", &first_name],
            );
            assert!(deleted.status.success(), "{}", text(&deleted));
            // Its preStop hook ran before it was stopped (into a hostPath volume).
            let said = std::fs::read_to_string(hooks.join(&first_name)).unwrap_or_default();
            assert_eq!(said, "stopping\n", "the preStop hook's file");
            let replaced = eventually("a replacement", || {
                let pods = web_pods(&kubeconfig, &cache)?;
                pods.iter()
                    .all(|p| p["metadata"]["name"] != first_name.as_str())
                    .then_some(pods)
                    .ok_or_else(|| "the deleted pod is still listed".to_string())
            });
            let ids = |pods: &[serde_json::Value]| {
                let mut ids: Vec<String> = pods
                    .iter()
                    .map(|p| p["status"]["containerStatuses"][0]["containerID"].to_string())
                    .collect();
                ids.sort();
                ids
            };
            let before = ids(&replaced);

            // Pruning pods from Git stops and removes them.
            let leftover =
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: NAME, namespace: demo}\n";
            std::fs::remove_file(repo.path().join("apps/trouble/pods.yaml")).expect("rm");
            std::fs::remove_file(repo.path().join("apps/client/pod.yaml")).expect("rm");
            write(
                &repo.path(),
                "apps/trouble/config.yaml",
                &leftover.replace("NAME", "trouble"),
            );
            write(
                &repo.path(),
                "apps/client/config.yaml",
                &leftover.replace("NAME", "client"),
            );
            commit(&repo.path(), "only web");
            eventually("only the web pods", || {
                let names: Vec<String> = pod_list(&kubeconfig, &cache)?
                    .iter()
                    .map(|p| {
                        p["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect();
                (names.len() == 2 && shims_of(&socket) == 2)
                    .then_some(())
                    .ok_or(format!("{names:?}, {} shims", shims_of(&socket)))
            });

            // Stopped with --keep-workloads, the containers keep running; the next start adopts
            // them: same containers, no duplicates, no restarts.
            let running = shims_of(&socket);
            let versions: Vec<String> = replaced
                .iter()
                .map(|p| p["metadata"]["resourceVersion"].to_string())
                .collect();
            interrupt(child);
            assert_eq!(shims_of(&socket), running, "containers keep running");
            let (child, log) = repo.up_with(&["--runtime", "containerd", "--nodes", "2"]);
            wait_for(&log, "nodes: 2 on containerd");
            // Adopted: the new kubelets reported on the same containers.
            let adopted = eventually("adopted pods", || {
                let pods = web_pods(&kubeconfig, &cache)?;
                let reported = pods
                    .iter()
                    .all(|p| !versions.contains(&p["metadata"]["resourceVersion"].to_string()));
                (reported && ids(&pods) == before)
                    .then_some(pods)
                    .ok_or_else(|| {
                        format!(
                            "not yet: {:?} vs {before:?}",
                            ids(&web_pods(&kubeconfig, &cache).unwrap_or_default())
                        )
                    })
            });
            for p in &adopted {
                assert_eq!(
                    p["status"]["containerStatuses"][0]["restartCount"], 0,
                    "{p}"
                );
            }
            assert_eq!(shims_of(&socket), running, "no duplicate containers");

            // Without --keep-workloads, stopping removes everything the nodes made.
            let uids: Vec<String> = pod_list(&kubeconfig, &cache)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_string))
                .collect();
            assert_eq!(uids.len(), 2);
            interrupt(child);
            assert_eq!(shims_of(&socket), 0, "no container left running");
            let netns: Vec<String> = std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| uids.iter().any(|uid| n.ends_with(uid.as_str())))
                .collect();
            assert!(netns.is_empty(), "network namespaces left: {netns:?}");
            assert!(
                !Path::new("/sys/class/net/ship-node-1").exists(),
                "bridge left"
            );
            assert!(
                !Path::new("/sys/class/net/ship-node-2").exists(),
                "bridge left"
            );
            drop(cleanup);
        }
    }

    #[test]
    fn the_benchmark_runs_and_prints_its_figures() {
        let output = Command::new(env!("CARGO_BIN_EXE_shipshape"))
            .args([
                "bench",
                "--objects",
                "20",
                "--writes",
                "30",
                "--watchers",
                "3",
                "--scale-nodes",
                "20",
                "--scale-pods",
                "300",
                "--pod-runs",
                "1",
                "--parallel-pods",
                "3",
                "--dns-records",
                "100",
                "--dns-seconds",
                "1",
                // Real pods on nodes named like the cluster tests' (their own test, under
                // their lock).
                "--commit-runs",
                "0",
                "--pull-runs",
                "1",
                "--pull-megabytes",
                "10",
                "--pull-pods",
                "3",
                "--kustomize-apps",
                "20",
                "--kustomize-pushes",
                "2",
                "--fleet-clusters",
                "10",
                // Real nodes named like the cluster tests': the commit benchmark's test runs it.
                "--ingress-seconds",
                "0",
            ])
            .output()
            .expect("runs");
        let out = text(&output);
        assert!(output.status.success(), "{out}");
        assert!(
            out.contains("fleet of 10 clusters in one process, 3 waves (1/3/6)")
                && out.contains("wave 2 applied")
                && out.contains("Git requests per cluster for the rollout"),
            "{out}"
        );
        assert!(
            out.contains("commit of 20 objects, push to applied"),
            "{out}"
        );
        assert!(
            out.contains("kustomize monorepo (20 applications, each an overlay of one base")
                && out.contains("push changing one overlay, to applied p50")
                && out.contains("push changing the base (all re-render)"),
            "{out}"
        );
        assert!(
            out.contains("1 object per transaction 30 writes in"),
            "{out}"
        );
        assert!(
            out.contains("watch fan-out: 3 watchers x 30 events"),
            "{out}"
        );
        assert!(
            out.contains("scale: 20 simulated nodes, 300 pods in 3 Deployments of 100"),
            "{out}"
        );
        assert!(out.contains("all pods scheduled"), "{out}");
        assert!(out.contains("converged (all Running)"), "{out}");
        assert!(out.contains("per pod: create, bind, status"), "{out}");
        // CI runs as root with scripts/setup's packages: nothing may be skipped there.
        let ci = std::env::var_os("CI").is_some();
        assert!(
            out.contains("3 pods bound to one node at once: all Running in")
                || (!ci && out.contains("pod start: skipped (the containerd runtime needs root")),
            "{out}"
        );
        assert!(
            out.contains("ratio shipshape / ctr image pull: ")
                || (!ci && out.contains("image pull: skipped (")),
            "{out}"
        );
        // Three nodes pulling one new image download it once.
        assert!(
            !out.contains("ratio shipshape / ctr image pull: ")
                || out.contains(
                    "3 pods of that image (new to every node) on 3 nodes: all Running in"
                ) && out.contains("(1.00x the image: one download"),
            "{out}"
        );
        assert!(
            out.contains("ratio shipshape / etcd") || out.contains("etcd: not installed"),
            "{out}"
        );
        assert!(
            out.contains("cluster DNS, dnsperf for 1 s per server, 100 A records"),
            "{out}"
        );
        assert!(
            out.contains("ratio shipshape / BIND")
                || (!ci && out.contains("BIND 9: not installed")),
            "{out}"
        );
        assert!(
            out.contains("Endpoints change to new answer: median"),
            "{out}"
        );
        let figures = figures(&out);
        let zero: Vec<&(String, f64)> = figures.iter().filter(|(_, n)| *n <= 0.0).collect();
        assert!(
            zero.is_empty(),
            "figures that are not above zero: {zero:?}\n{out}"
        );
        assert!(
            figures.len() >= 25,
            "too few figures ({}):\n{out}",
            figures.len()
        );
    }

    /// Every measured figure in a benchmark's output: a number before a unit (`67 ms`,
    /// `674 writes/s`, `103 MiB`) or a ratio (`0.84x`), with the line it is on.
    fn figures(out: &str) -> Vec<(String, f64)> {
        const UNITS: &[&str] = &[
            "s",
            "ms",
            "µs",
            "MiB",
            "objects/s",
            "writes/s",
            "deliveries/s",
            "pods/s",
            "queries/s",
        ];
        let mut figures = Vec::new();
        for line in out.lines() {
            let words: Vec<&str> = line
                .split_whitespace()
                .map(|w| w.trim_matches(|c: char| "(),;:".contains(c)))
                .collect();
            for (i, word) in words.iter().enumerate() {
                let unit = words.get(i + 1).is_some_and(|next| UNITS.contains(next));
                let number = match word.strip_suffix('x') {
                    Some(ratio) => ratio.parse::<f64>().ok(),
                    None if unit => word.parse::<f64>().ok(),
                    None => None,
                };
                if let Some(number) = number {
                    figures.push((line.trim().to_string(), number));
                }
            }
        }
        figures
    }

    #[test]
    fn benchmark_figures_are_read_with_their_units() {
        let found = figures(
            "  first apply      67 ms   (299 objects/s)\n  ratio pod / ctr run: 1.31x (goal: at most 1.5x)\n  objects copied, parsed 937 0\n  nodes registered 0.0 s\n",
        );
        let numbers: Vec<f64> = found.iter().map(|(_, n)| *n).collect();
        assert_eq!(numbers, [67.0, 299.0, 1.31, 1.5, 0.0]);
    }
}

mod fleet {
    //! A fleet on one machine: a cluster on real containerd (the canary, when run as root, as
    //! CI does) and five simulated-runtime clusters (separate processes, data directories and
    //! ports) pulling one repository that `git daemon` serves on loopback, in three waves. Each
    //! publishes its status into the repository and reads the others' there.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::gitops::containerd::{
        Cleanup, ONE_CLUSTER, ROUTE_LOCALNET, busybox_image, is_root, socket_in_use,
    };
    use super::gitops::{Running, git, write};

    const FLEET: &str = "apiVersion: shipshape.dev/v1alpha1\nkind: Fleet\nrollout:\n  waves:\n  - name: canary\n    clusterSelector: {matchLabels: {ring: canary}}\n    soak: 1s\n  - name: main\n    clusterSelector: {matchLabels: {ring: main}}\n    soak: 1s\n    maxUnavailable: 1\n  - name: last\n    clusterSelector: {matchLabels: {ring: last}}\n";

    fn config_map(version: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: default\ndata:\n  version: \"{version}\"\n"
        )
    }

    /// A Job that outlives its deadline: Degraded on every cluster that applies it.
    const FAILING_JOB: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  namespace: default\nspec:\n  backoffLimit: 0\n  activeDeadlineSeconds: 1\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: migrate\n        image: busybox:1.35\n        command: [sleep, \"60\"]\n";

    const CLUSTERS: [(&str, &str); 6] = [
        ("c1", "canary"),
        ("c2", "main"),
        ("c3", "main"),
        ("c4", "last"),
        ("c5", "last"),
        ("c6", "last"),
    ];

    /// The cluster that runs real pods.
    const REAL: &str = "c1";

    struct Fleet {
        dir: tempfile::TempDir,
        url: String,
        daemon: Option<Running>,
        clusters: BTreeMap<&'static str, Running>,
        /// The real cluster's host resources, removed once the clusters are stopped (fields
        /// drop in order).
        cleanup: Option<Cleanup>,
        /// busybox:1.35 for the real cluster.
        image: Option<PathBuf>,
    }

    impl Fleet {
        fn work(&self) -> PathBuf {
            self.dir.path().join("work")
        }

        fn data(&self, cluster: &str) -> PathBuf {
            self.dir.path().join(format!("data-{cluster}"))
        }

        /// Commits everything in the work tree and pushes it; returns the commit id.
        fn push(&self, message: &str) -> String {
            git(&self.work(), &["add", "-A"]);
            git(&self.work(), &["commit", "-q", "-m", message]);
            git(&self.work(), &["push", "-q", "origin", "main"]);
            git(&self.work(), &["rev-parse", "HEAD"])
        }

        fn start(&mut self, name: &'static str, ring: &str) {
            let log = self.dir.path().join(format!("up-{name}.log"));
            let runtime: Vec<String> = match (&self.image, name == REAL) {
                (Some(image), true) => vec![
                    "--runtime".into(),
                    "containerd".into(),
                    "--import".into(),
                    image.display().to_string(),
                ],
                _ => vec!["--runtime".into(), "simulated".into()],
            };
            let child = Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args([
                    "up", "--repo", &self.url, "--branch", "main", "--path", "apps",
                ])
                .args(&runtime)
                .args(["--nodes", "1", "--interval", "300ms"])
                .args(["--api-listen", "127.0.0.1:0", "--dns-listen", "127.0.0.1:0"])
                .args(["--ingress-http", "off", "--ingress-https", "off"])
                .args(["--cluster-name", name, "--cluster-label"])
                .arg(format!("ring={ring}"))
                .arg("--data-dir")
                .arg(self.data(name))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("starts");
            self.clusters.insert(name, Running(child));
        }

        fn shipshape(&self, args: &[&str]) -> Output {
            Command::new(env!("CARGO_BIN_EXE_shipshape"))
                .args(args)
                .output()
                .expect("runs")
        }

        /// Each cluster's published status, read from the repository as an auditor would.
        fn statuses(&self) -> Result<BTreeMap<String, Value>, String> {
            let output = self.shipshape(&["fleet", "status", "--json", "--repo", &self.url]);
            if !output.status.success() {
                return Err(String::from_utf8_lossy(&output.stderr).into_owned());
            }
            serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
        }

        /// The state cluster `name` reports for `commit` (`None`: it is not on it).
        fn state(statuses: &BTreeMap<String, Value>, name: &str, commit: &str) -> Option<String> {
            let status = statuses.get(name)?;
            (status["commit"].as_str() == Some(commit))
                .then(|| {
                    status["commits"]
                        .as_array()?
                        .iter()
                        .find(|r| r["commit"].as_str() == Some(commit))?["state"]
                        .as_str()
                        .map(str::to_string)
                })
                .flatten()
        }

        /// Waits until cluster `name` publishes a hold that says `needle`.
        fn wait_held(&self, name: &str, needle: &str) {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let statuses = self.statuses();
                let held = statuses
                    .as_ref()
                    .ok()
                    .and_then(|s| s.get(name)?["held"].as_str().map(str::to_string));
                if held.as_deref().is_some_and(|h| h.contains(needle)) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} never held with {needle:?}; last: {held:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }

        /// Waits until every cluster in `names` reports `commit` in `state`.
        fn wait_for(&self, names: &[&str], commit: &str, state: &str) -> BTreeMap<String, Value> {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let statuses = self.statuses();
                if let Ok(statuses) = &statuses
                    && names
                        .iter()
                        .all(|n| Self::state(statuses, n, commit).as_deref() == Some(state))
                {
                    return statuses.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "{names:?} never reported {} {state}; last seen: {statuses:#?}",
                    &commit[..7]
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    fn serve(dir: &Path) -> (Running, String) {
        let port = free_port();
        // git-daemon itself, not `git daemon`: killing that wrapper would leave the daemon
        // serving.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git runs");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let daemon = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--enable=receive-pack"])
            .arg(format!("--base-path={}", dir.display()))
            .args(["--listen=127.0.0.1", &format!("--port={port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        (
            Running(daemon),
            format!("git://127.0.0.1:{port}/origin.git"),
        )
    }

    /// The earliest time (RFC 3339) `cluster`'s history shows it on `commit` in `state` (any
    /// state when `None`).
    fn first(
        history: &[Value],
        cluster: &str,
        commit: &str,
        state: Option<&str>,
    ) -> Option<String> {
        history
            .iter()
            .filter(|s| s["cluster"] == cluster && s["commit"].as_str() == Some(commit))
            .filter(|s| {
                state.is_none_or(|wanted| {
                    s["commits"][0]["commit"].as_str() == Some(commit)
                        && s["commits"][0]["state"].as_str() == Some(wanted)
                })
            })
            .filter_map(|s| s["time"].as_str().map(str::to_string))
            .min()
    }

    #[test]
    fn a_commit_rolls_out_wave_by_wave_a_failure_halts_it_and_the_fix_flows_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q", "--bare", "origin.git"]);
        git(dir.path(), &["clone", "-q", "origin.git", "work"]);
        let (daemon, url) = serve(dir.path());
        // One containerd cluster per host at a time (node, bridge and table names are the
        // host's); the guard outlives the fleet, which removes what its real cluster made.
        let _one = ONE_CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        let real = is_root();
        if !real {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("c1 runs simulated: real pods need root (CI runs this as root)");
        }
        let image = real.then(|| busybox_image(dir.path()));
        let cleanup = real.then(|| Cleanup {
            data: dir.path().join(format!("data-{REAL}")),
            route_localnet: std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_default(),
            shared_socket: None,
        });
        let mut fleet = Fleet {
            dir,
            url,
            daemon: Some(daemon),
            clusters: BTreeMap::new(),
            cleanup,
            image,
        };
        write(&fleet.work(), "fleet.yaml", FLEET);
        write(&fleet.work(), "apps/web/cm.yaml", &config_map("1"));
        let v1 = fleet.push("v1");
        for (name, ring) in CLUSTERS {
            fleet.start(name, ring);
        }
        let names: Vec<&str> = CLUSTERS.iter().map(|(n, _)| *n).collect();
        fleet.wait_for(&names, &v1, "Soaked");
        if real {
            // What a cluster on the system's containerd puts there is removed from it too.
            let data = fleet.data(REAL);
            let socket = socket_in_use(&data);
            if let Some(cleanup) = &mut fleet.cleanup
                && !socket.starts_with(&data.display().to_string())
            {
                cleanup.shared_socket = Some(socket);
            }
            let log =
                std::fs::read_to_string(fleet.dir.path().join("up-c1.log")).unwrap_or_default();
            assert!(log.contains("nodes: 1 on containerd"), "{log}");
        }

        // A good commit, wave by wave: main takes it only once canary soaked it, last only
        // once main did too (one of its two may lack it).
        write(&fleet.work(), "apps/web/cm.yaml", &config_map("2"));
        let v2 = fleet.push("v2");
        fleet.wait_for(&names, &v2, "Soaked");
        let output = fleet.shipshape(&["fleet", "history", "--repo", &fleet.url]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let history: Vec<Value> = names
            .iter()
            .flat_map(|name| {
                let output = Command::new("git")
                    .args(["--git-dir", "origin.git", "log", "--format=%H"])
                    .arg(format!("refs/shipshape/status/{name}"))
                    .current_dir(fleet.dir.path())
                    .output()
                    .expect("git log");
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(|id| {
                        let shown = Command::new("git")
                            .args(["--git-dir", "origin.git", "show"])
                            .arg(format!("{id}:status.json"))
                            .current_dir(fleet.dir.path())
                            .output()
                            .expect("git show");
                        serde_json::from_slice::<Value>(&shown.stdout).expect("status JSON")
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let canary_soaked = first(&history, "c1", &v2, Some("Soaked")).expect("c1 soaked v2");
        let main_soaked = ["c2", "c3"]
            .iter()
            .filter_map(|n| first(&history, n, &v2, Some("Soaked")))
            .min()
            .expect("main soaked v2");
        for name in ["c2", "c3"] {
            let took = first(&history, name, &v2, None).expect("main took v2");
            assert!(
                took >= canary_soaked,
                "{name} took v2 at {took}, before canary soaked it at {canary_soaked}"
            );
        }
        for name in ["c4", "c5", "c6"] {
            let took = first(&history, name, &v2, None).expect("last took v2");
            assert!(
                took >= main_soaked,
                "{name} took v2 at {took}, before main soaked it at {main_soaked}"
            );
        }
        let printed = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(printed.starts_with("TIME"), "{printed}");
        assert!(printed.contains(&v2[..7]), "{printed}");

        // A commit that breaks health in the first wave never reaches the second.
        write(&fleet.work(), "apps/web/job.yaml", FAILING_JOB);
        let v3 = fleet.push("v3: a migration that fails");
        fleet.wait_for(&["c1"], &v3, "Failed");
        let halted = fleet.wait_for(&["c2", "c3", "c4", "c5", "c6"], &v2, "Soaked");
        std::thread::sleep(Duration::from_secs(2));
        let statuses = fleet.statuses().expect("statuses");
        for name in ["c2", "c3", "c4", "c5", "c6"] {
            assert_eq!(
                statuses[name]["commit"].as_str(),
                Some(v2.as_str()),
                "{name} left v2: {statuses:#?}"
            );
        }
        drop(halted);
        for name in ["c2", "c4"] {
            fleet.wait_held(name, "halted: c1 (wave canary) reported it Failed");
        }
        let table = fleet.shipshape(&["fleet", "status", "--repo", &fleet.url]);
        let table = String::from_utf8_lossy(&table.stdout).into_owned();
        assert!(table.contains("Degraded"), "{table}");
        assert!(table.contains("c2: holding commit"), "{table}");

        // The fix flows through every wave.
        std::fs::remove_file(fleet.work().join("apps/web/job.yaml")).expect("rm");
        let v4 = fleet.push("v4: fix");
        fleet.wait_for(&names, &v4, "Soaked");

        // A cluster that is down holds its wave only as far as maxUnavailable says: one of
        // main's two may be missing, both may not.
        fleet.clusters.remove("c3");
        write(&fleet.work(), "apps/web/cm.yaml", &config_map("5"));
        let v5 = fleet.push("v5");
        fleet.wait_for(&["c1", "c2", "c4", "c5", "c6"], &v5, "Soaked");
        fleet.clusters.remove("c2");
        write(&fleet.work(), "apps/web/cm.yaml", &config_map("6"));
        let v6 = fleet.push("v6");
        fleet.wait_for(&["c1"], &v6, "Soaked");
        // Published without the counts, once it has lasted a few seconds.
        fleet.wait_held("c5", &format!("commit {}: waiting for wave main", &v6[..7]));
        // The cluster itself says so with the counts.
        let status = fleet.shipshape(&[
            "status",
            "--data-dir",
            fleet.data("c5").to_str().expect("utf-8"),
        ]);
        let status = String::from_utf8_lossy(&status.stdout).into_owned();
        assert!(
            status.contains(&format!(
                "fleet member c5 (ring=last), wave last; holding commit {}: waiting for wave main: 0 of 2 clusters soaked, 1 may lack it",
                &v6[..7]
            )),
            "{status}"
        );
        std::thread::sleep(Duration::from_secs(2));
        let statuses = fleet.statuses().expect("statuses");
        for name in ["c4", "c5", "c6"] {
            assert_eq!(
                statuses[name]["commit"].as_str(),
                Some(v5.as_str()),
                "{statuses:#?}"
            );
        }

        // Git unreachable: every cluster stays on its last good commit and says so.
        fleet.daemon = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let output = fleet.shipshape(&[
                "status",
                "--data-dir",
                fleet.data("c4").to_str().expect("utf-8"),
            ]);
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            if text.contains("syncs cannot read Git") {
                assert!(text.contains("cannot fetch"), "{text}");
                assert!(text.contains(&v5[..7]), "{text}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "c4 never said Git is unreachable:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
