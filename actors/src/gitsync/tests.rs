//! GitSync against real Git repositories made during the test: commits, an invalid commit, a
//! deleted application, prune protection and a force-push.

use std::path::Path;
use std::process::Command;

use kameo::actor::Spawn;
use shipshape_api::{Kind, ObjectKey};

use super::*;
use crate::store::{Store, StoredObject, verify_audit};
use crate::store_actor::{Get, StoreActor};

fn git(dir: &Path, args: &[&str]) -> String {
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

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn commit(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

fn config_map(name: &str, value: &str, extra_metadata: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: demo\n{extra_metadata}data:\n  value: \"{value}\"\n"
    )
}

fn key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: namespace.into(),
        name: name.into(),
    }
}

const DEMO_NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n";

/// A folder for one test with an empty Git repository in `repo/`.
fn new_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q"]);
    (dir, repo)
}

/// A store and a GitSync following `source`, with their data in `dir`.
fn start_sync(dir: &Path, source: GitSource) -> (ActorRef<StoreActor>, ActorRef<GitSync>) {
    let store = Store::open(&dir.join("db.redb")).expect("store");
    let store = StoreActor::spawn(StoreActor::new(store));
    let mirror = Mirror::open(&mirror_dir(dir), source).expect("mirror");
    let sync = GitSync::spawn(GitSync::new(mirror, store.clone()));
    (store, sync)
}

struct Cluster {
    _dir: tempfile::TempDir,
    repo: std::path::PathBuf,
    store: ActorRef<StoreActor>,
    sync: ActorRef<GitSync>,
}

impl Cluster {
    fn new() -> Self {
        let (dir, repo) = new_repo();
        write(&repo, "apps/namespaces.yaml", DEMO_NAMESPACE);
        write(&repo, "apps/web/page.yaml", &config_map("page", "v1", ""));
        write(
            &repo,
            "apps/web/keep.yaml",
            &config_map(
                "keep",
                "k",
                "  annotations:\n    shipshape.dev/prune: disabled\n",
            ),
        );
        write(
            &repo,
            "apps/api/settings.yaml",
            &config_map("settings", "fast", ""),
        );
        write(&repo, "apps/api/README.md", "# not a manifest\n");
        write(&repo, "README.md", "outside the path\n");
        commit(&repo, "first");
        let source = GitSource {
            url: repo.display().to_string(),
            reference: GitRef::Branch("main".into()),
            path: "apps".into(),
        };
        let (store, sync) = start_sync(dir.path(), source);
        Self {
            _dir: dir,
            repo,
            store,
            sync,
        }
    }

    async fn sync(&self, allow_empty: bool) -> SyncReport {
        self.sync
            .ask(SyncNow(SyncOptions { allow_empty }))
            .await
            .expect("sync runs")
    }

    async fn get(&self, key: ObjectKey) -> Option<StoredObject> {
        self.store.ask(Get(key)).await.expect("store answers")
    }

    async fn value(&self, name: &str) -> Option<String> {
        self.get(key(Kind::ConfigMap, "demo", name))
            .await
            .and_then(|s| s.object["data"]["value"].as_str().map(str::to_string))
    }
}

fn outcomes(report: &SyncReport) -> Vec<(String, Outcome)> {
    report.applications.clone()
}

/// What the sync did with one application.
fn outcome<'a>(report: &'a SyncReport, application: &str) -> &'a Outcome {
    report
        .applications
        .iter()
        .find(|(n, _)| n == application)
        .map(|(_, outcome)| outcome)
        .unwrap_or_else(|| panic!("no application {application} in {report:?}"))
}

fn applied(created: usize, updated: usize, pruned: usize, unchanged: usize) -> Outcome {
    Outcome::Applied {
        created,
        updated,
        pruned,
        unchanged,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn syncs_commits_into_the_store_application_by_application() {
    let cluster = Cluster::new();
    let first = git(&cluster.repo, &["rev-parse", "HEAD"]);

    // First sync: everything is created, root (the Namespace) first.
    let report = cluster.sync(false).await;
    assert_eq!(report.commit.id, first);
    assert_eq!(
        outcomes(&report),
        vec![
            ("root".into(), applied(1, 0, 0, 0)),
            ("api".into(), applied(1, 0, 0, 0)),
            ("web".into(), applied(2, 0, 0, 0)),
        ]
    );
    let page = cluster
        .get(key(Kind::ConfigMap, "demo", "page"))
        .await
        .expect("created");
    assert_eq!(
        page.object["metadata"]["labels"][MANAGED_BY_LABEL],
        "shipshape"
    );
    assert_eq!(
        page.object["metadata"]["annotations"][COMMIT_ANNOTATION],
        first.as_str()
    );
    assert_eq!(
        page.object["metadata"]["annotations"][SOURCE_ANNOTATION],
        "apps/web/page.yaml"
    );
    assert_eq!(page.application.as_deref(), Some("web"));

    // A commit that changes web and breaks api: web moves on, api stays on its last good commit.
    write(
        &cluster.repo,
        "apps/web/page.yaml",
        &config_map("page", "v2", ""),
    );
    write(
        &cluster.repo,
        "apps/api/settings.yaml",
        &config_map("settings", "slow", ""),
    );
    write(
        &cluster.repo,
        "apps/api/broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    let second = commit(&cluster.repo, "change the page, break api");
    let report = cluster.sync(false).await;
    let api = &report.applications[1];
    assert_eq!(api.0, "api");
    let Outcome::Failed(problems) = &api.1 else {
        panic!("api must fail: {api:?}");
    };
    assert_eq!(
        problems,
        &vec!["apps/api/broken.yaml:4: ConfigMap default/Bad_Name: metadata.name: \"Bad_Name\" is not a valid name: use at most 253 characters of a-z, 0-9, '-' and '.', each dot-separated part starting and ending with a letter or digit (e.g. 'example.com')".to_string()]
    );
    assert_eq!(report.applications[0], ("root".into(), Outcome::Unchanged));
    assert_eq!(report.applications[2], ("web".into(), applied(0, 1, 0, 1)));
    assert_eq!(cluster.value("page").await.as_deref(), Some("v2"));
    assert_eq!(
        cluster.value("settings").await.as_deref(),
        Some("fast"),
        "nothing of api applied"
    );
    let status: ApplicationStatus = serde_json::from_value(
        cluster
            .store
            .ask(GetMeta("app/api".into()))
            .await
            .expect("answers")
            .expect("status"),
    )
    .expect("parses");
    assert_eq!(status.sync, SyncState::Failed);
    assert_eq!(status.commit.as_deref(), Some(first.as_str()));
    assert_eq!(status.attempted.as_deref(), Some(second.as_str()));

    // Deleting an application's folder is held until allowed; the protected object stays.
    std::fs::remove_dir_all(cluster.repo.join("apps/web")).expect("rm");
    commit(&cluster.repo, "remove web");
    let report = cluster.sync(false).await;
    assert_eq!(report.applications[2], ("web".into(), Outcome::Held(2)));
    assert!(
        cluster.value("page").await.is_some(),
        "nothing pruned while held"
    );
    let report = cluster.sync(true).await;
    assert_eq!(report.applications[2], ("web".into(), applied(0, 0, 1, 0)));
    assert_eq!(cluster.value("page").await, None);
    assert_eq!(
        cluster.value("keep").await.as_deref(),
        Some("k"),
        "prune: disabled is kept"
    );

    // Force-push back to the first commit: applied as declared, and recorded as a rewrite.
    git(&cluster.repo, &["reset", "-q", "--hard", &first]);
    let report = cluster.sync(false).await;
    assert!(report.rewritten);
    assert_eq!(report.commit.id, first);
    assert_eq!(cluster.value("page").await.as_deref(), Some("v1"));
    assert_eq!(cluster.value("settings").await.as_deref(), Some("fast"));

    // The history says who changed what, and the chain is intact.
    let records = tokio::task::block_in_place(|| cluster.store.ask(crate::store_actor::AuditLog))
        .await
        .expect("answers");
    assert_eq!(verify_audit(&records), Ok(records.len()));
    let actions: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.entry.action.clone(), r.entry.subject.clone()))
        .collect();
    assert!(
        actions.contains(&("sync-invalid".into(), "api".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("sync-held".into(), "web".into())),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|(a, _)| a == "history-rewritten"),
        "{actions:?}"
    );
    let update = records
        .iter()
        .find(|r| r.entry.action == "sync" && r.entry.details["commit"]["id"] == second.as_str())
        .expect("the second commit's sync is recorded");
    assert_eq!(
        update.entry.details["commit"]["author"],
        "Ada <ada@example.com>"
    );
    assert_eq!(
        update.entry.details["commit"]["message"],
        "change the page, break api"
    );
    assert_eq!(
        update.entry.details["objects"][0]["changes"][0],
        serde_json::json!({"path": "/data/value", "before": "v1", "after": "v2"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_commit_replans_nothing() {
    let cluster = Cluster::new();
    cluster.sync(false).await;
    let before = cluster
        .store
        .ask(crate::store_actor::ResourceVersion)
        .await
        .expect("answers");
    commit(&cluster.repo, "an empty commit");
    write(&cluster.repo, "README.md", "changed outside the path\n");
    commit(&cluster.repo, "docs");
    let report = cluster.sync(false).await;
    assert!(
        report
            .applications
            .iter()
            .all(|(_, o)| *o == Outcome::Unchanged),
        "{report:?}"
    );
    let after = cluster
        .store
        .ask(crate::store_actor::ResourceVersion)
        .await
        .expect("answers");
    assert_eq!(before, after, "no object was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_object_fails_only_its_application() {
    let cluster = Cluster::new();
    cluster.sync(false).await;
    // web now declares api's ConfigMap.
    write(
        &cluster.repo,
        "apps/web/steal.yaml",
        &config_map("settings", "mine", ""),
    );
    write(
        &cluster.repo,
        "apps/api/settings.yaml",
        &config_map("settings", "fast", ""),
    );
    commit(&cluster.repo, "web copies settings");
    let report = cluster.sync(false).await;
    // The loader sees a duplicate: the later file (web, alphabetically after api) fails.
    let web = outcome(&report, "web");
    assert!(
        matches!(web, Outcome::Failed(p) if p[0].contains("duplicate object")),
        "{web:?}"
    );
    assert_eq!(cluster.value("settings").await.as_deref(), Some("fast"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_changing_an_immutable_config_map_is_refused_whole() {
    let cluster = Cluster::new();
    let immutable = "immutable: true\n";
    write(
        &cluster.repo,
        "apps/web/page.yaml",
        &(config_map("page", "v1", "") + immutable),
    );
    commit(&cluster.repo, "page is immutable");
    cluster.sync(false).await;
    // One commit changes a mutable ConfigMap and the immutable one: neither is applied.
    write(
        &cluster.repo,
        "apps/web/page.yaml",
        &(config_map("page", "v2", "") + immutable),
    );
    write(
        &cluster.repo,
        "apps/web/other.yaml",
        &config_map("other", "new", ""),
    );
    commit(&cluster.repo, "rewrite the page");
    let report = cluster.sync(false).await;
    let web = outcome(&report, "web");
    assert!(
        matches!(web, Outcome::Failed(p) if p.len() == 1
            && p[0].starts_with("apps/web/page.yaml: ConfigMap demo/page: data: field is immutable when `immutable` is set")),
        "{web:?}"
    );
    assert_eq!(cluster.value("page").await.as_deref(), Some("v1"));
    assert_eq!(cluster.value("other").await, None, "nothing half-applied");
    // Renamed, it goes through: the new object is made and the old one pruned.
    write(
        &cluster.repo,
        "apps/web/page.yaml",
        &(config_map("page-2", "v2", "") + immutable),
    );
    commit(&cluster.repo, "a new page");
    cluster.sync(false).await;
    assert_eq!(cluster.value("page-2").await.as_deref(), Some("v2"));
    assert_eq!(cluster.value("page").await, None);
    assert_eq!(cluster.value("other").await.as_deref(), Some("new"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_application_still_counts_against_a_changed_copy() {
    let cluster = Cluster::new();
    write(
        &cluster.repo,
        "apps/api/settings.yaml",
        &config_map("settings", "fast", ""),
    );
    commit(&cluster.repo, "api settings");
    cluster.sync(false).await;
    // Only web changes: api is not loaded again, yet its ConfigMap is still the first.
    write(
        &cluster.repo,
        "apps/web/steal.yaml",
        &config_map("settings", "mine", ""),
    );
    commit(&cluster.repo, "web copies settings");
    let report = cluster.sync(false).await;
    let outcome = |name: &str| {
        report
            .applications
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o.clone())
    };
    assert_eq!(outcome("api"), Some(Outcome::Unchanged), "{report:?}");
    assert!(
        matches!(outcome("web"), Some(Outcome::Failed(p)) if p[0].contains("duplicate object: also defined at apps/api/settings.yaml")),
        "{report:?}"
    );
    assert_eq!(cluster.value("settings").await.as_deref(), Some("fast"));
    // Once web drops its copy, it syncs again.
    std::fs::remove_file(cluster.repo.join("apps/web/steal.yaml")).expect("removes");
    commit(&cluster.repo, "web drops the copy");
    let report = cluster.sync(false).await;
    assert!(
        report
            .applications
            .iter()
            .any(|(n, o)| n == "web" && matches!(o, Outcome::Applied { .. })),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_a_file_url_and_a_tag() {
    let (dir, repo) = new_repo();
    write(&repo, "app/cm.yaml", &config_map("tagged", "v1", ""));
    write(&repo, "app/namespace.yaml", DEMO_NAMESPACE);
    commit(&repo, "release 1");
    git(&repo, &["tag", "v1"]);
    write(&repo, "app/cm.yaml", &config_map("tagged", "v2", ""));
    commit(&repo, "work in progress");

    let source = GitSource {
        url: format!("file://{}", repo.display()),
        reference: GitRef::Tag("v1".into()),
        path: String::new(),
    };
    let (store, sync) = start_sync(dir.path(), source);
    let report = sync
        .ask(SyncNow(SyncOptions::default()))
        .await
        .expect("syncs");
    assert_eq!(report.commit.message, "release 1");
    let stored = store
        .ask(Get(key(Kind::ConfigMap, "demo", "tagged")))
        .await
        .expect("answers")
        .expect("created");
    assert_eq!(
        stored.object["data"]["value"], "v1",
        "the tag, not the branch head"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_application_catches_up_at_an_unchanged_commit() {
    let cluster = Cluster::new();
    cluster.sync(false).await;
    cluster
        .sync
        .ask(Suspend {
            application: "web".into(),
            suspended: true,
        })
        .await
        .expect("suspends");
    write(
        &cluster.repo,
        "apps/web/page.yaml",
        &config_map("page", "v9", ""),
    );
    commit(&cluster.repo, "while suspended");
    let report = cluster.sync(false).await;
    assert!(
        report
            .applications
            .contains(&("web".into(), Outcome::Suspended)),
        "{report:?}"
    );
    assert_eq!(cluster.value("page").await.as_deref(), Some("v1"));
    // Nothing new is committed; resuming alone must bring web to the commit it missed.
    let idle = cluster.sync(false).await;
    assert!(
        idle.applications
            .contains(&("web".into(), Outcome::Suspended)),
        "{idle:?}"
    );
    cluster
        .sync
        .ask(Suspend {
            application: "web".into(),
            suspended: false,
        })
        .await
        .expect("resumes");
    let report = cluster.sync(false).await;
    assert!(
        report
            .applications
            .contains(&("web".into(), applied(0, 1, 0, 1))),
        "{report:?}"
    );
    assert_eq!(cluster.value("page").await.as_deref(), Some("v9"));
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_in_a_namespace_nothing_declares_are_refused_until_it_is() {
    let cluster = Cluster::new();
    cluster.sync(false).await;
    let in_shop = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cart\n  namespace: shop\n";
    write(&cluster.repo, "apps/web/cart.yaml", in_shop);
    commit(&cluster.repo, "web: a cart in shop");
    let report = cluster.sync(false).await;
    let web = outcome(&report, "web");
    assert!(
        matches!(web, Outcome::Failed(p) if p[0].contains("namespaces \"shop\" not found")),
        "{web:?}"
    );
    assert!(
        cluster
            .get(key(Kind::ConfigMap, "shop", "cart"))
            .await
            .is_none()
    );

    // Declared in a team folder that sorts after web: it is applied first all the same.
    write(
        &cluster.repo,
        "apps/zteam/namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
    );
    commit(&cluster.repo, "zteam: the shop namespace");
    let report = cluster.sync(false).await;
    let order: Vec<&str> = report
        .applications
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(order, ["root", "zteam", "api", "web"]);
    assert!(
        report
            .applications
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Applied { .. } | Outcome::Unchanged)),
        "{report:?}"
    );
    assert!(
        cluster
            .get(key(Kind::ConfigMap, "shop", "cart"))
            .await
            .is_some()
    );

    // The Namespace may not go while web still declares its cart there.
    std::fs::remove_dir_all(cluster.repo.join("apps/zteam")).expect("rm");
    commit(&cluster.repo, "zteam: gone");
    let report = cluster.sync(true).await;
    let zteam = outcome(&report, "zteam");
    assert!(
        matches!(zteam, Outcome::Failed(p) if p[0].contains("application web keeps objects in it")),
        "{zteam:?}"
    );
    assert!(
        cluster
            .get(key(Kind::Namespace, "", "shop"))
            .await
            .is_some()
    );

    // Both in one commit: the cart and the Namespace go.
    std::fs::remove_file(cluster.repo.join("apps/web/cart.yaml")).expect("rm");
    commit(&cluster.repo, "web: no cart");
    cluster.sync(true).await;
    assert!(
        cluster
            .get(key(Kind::ConfigMap, "shop", "cart"))
            .await
            .is_none()
    );
    assert!(
        cluster
            .get(key(Kind::Namespace, "", "shop"))
            .await
            .is_none()
    );
}

#[test]
fn a_path_is_read_as_the_tree_names_it() {
    assert_eq!(tree_path(".").as_deref(), Ok(""));
    assert_eq!(tree_path("./").as_deref(), Ok(""));
    assert_eq!(tree_path("").as_deref(), Ok(""));
    assert_eq!(tree_path("./apps/").as_deref(), Ok("apps"));
    assert_eq!(tree_path("apps//prod/.").as_deref(), Ok("apps/prod"));
    assert!(tree_path("../elsewhere").is_err());
    assert!(tree_path("apps/../../x").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_at_the_repository_root_sync_with_path_dot() {
    let (dir, repo) = new_repo();
    write(&repo, "namespace.yaml", DEMO_NAMESPACE);
    write(&repo, "web/page.yaml", &config_map("page", "v1", ""));
    commit(&repo, "at the root");
    let source = GitSource {
        url: repo.display().to_string(),
        reference: GitRef::Branch("main".into()),
        path: ".".into(),
    };
    let (_store, sync) = start_sync(dir.path(), source);
    let report = sync
        .ask(SyncNow(SyncOptions::default()))
        .await
        .expect("syncs");
    assert_eq!(
        outcomes(&report),
        vec![
            ("root".into(), applied(1, 0, 0, 0)),
            ("web".into(), applied(1, 0, 0, 0)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_folder_does_not_replace_the_top_level_files() {
    let cluster = Cluster::new();
    cluster.sync(false).await;
    write(
        &cluster.repo,
        "apps/root/extra.yaml",
        &config_map("extra", "x", ""),
    );
    commit(&cluster.repo, "a folder named root");
    let report = cluster.sync(false).await;
    let root = outcome(&report, "root");
    assert!(
        matches!(root, Outcome::Failed(p) if p[0].contains("clashes with application root")),
        "{root:?}"
    );
    // The top-level Namespace was not pruned by a root application that lost its files.
    assert!(
        cluster
            .get(key(Kind::Namespace, "", "demo"))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_that_never_answers_fails_the_fetch_in_bounded_time() {
    // A server on loopback that accepts connections and says nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = listener.local_addr().expect("address");
    let silent = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(std::time::Duration::from_secs(8));
        drop(held);
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let source = GitSource {
        url: format!("http://{address}/repo.git"),
        reference: GitRef::Branch("main".into()),
        path: String::new(),
    };
    let mirror = Mirror::open(&mirror_dir(dir.path()), source)
        .expect("mirror")
        .with_fetch_timeout(std::time::Duration::from_secs(2));
    let started = std::time::Instant::now();
    let error = tokio::task::spawn_blocking(move || mirror.fetch())
        .await
        .expect("joins")
        .expect_err("a silent remote cannot be fetched");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(7),
        "took {:?}",
        started.elapsed()
    );
    assert!(error.0.contains("cannot fetch"), "{error}");
    let _ = silent.join();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_fetch_is_recorded_for_status_until_one_succeeds() {
    let cluster = Cluster::new();
    cluster.sync(false).await;
    let recorded = || async {
        cluster
            .store
            .ask(GetMeta(GIT_ERROR_META.into()))
            .await
            .expect("store answers")
    };
    assert_eq!(recorded().await, None);
    let moved = cluster.repo.with_extension("moved");
    std::fs::rename(&cluster.repo, &moved).expect("mv");
    let failed = cluster.sync.ask(SyncNow(SyncOptions::default())).await;
    assert!(failed.is_err(), "{failed:?}");
    let error = recorded().await.expect("recorded");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot fetch")),
        "{error}"
    );
    // The same failure again is not written again: `time` stays when it was first seen.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = cluster.sync.ask(SyncNow(SyncOptions::default())).await;
    assert!(again.is_err(), "{again:?}");
    assert_eq!(recorded().await.expect("still recorded"), error);
    std::fs::rename(&moved, &cluster.repo).expect("mv back");
    cluster.sync(false).await;
    assert_eq!(recorded().await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_that_panics_fails_as_a_git_error_and_the_next_sync_runs() {
    let (dir, repo) = new_repo();
    write(&repo, "apps/namespaces.yaml", DEMO_NAMESPACE);
    write(&repo, "apps/web/page.yaml", &config_map("page", "v1", ""));
    commit(&repo, "first");
    let source = GitSource {
        url: repo.display().to_string(),
        reference: GitRef::Branch("main".into()),
        path: "apps".into(),
    };
    let store = StoreActor::spawn(StoreActor::new(
        Store::open(&dir.path().join("db.redb")).expect("store"),
    ));
    let mirror = Mirror::open(&mirror_dir(dir.path()), source).expect("mirror");
    let mut sync = GitSync::new(mirror, store.clone());
    sync.panic_next_sync = true;
    let sync = GitSync::spawn(sync);
    let restarts = crate::metrics::METRICS.actor_restart_count("gitsync");

    let failed = sync.ask(SyncNow(SyncOptions::default())).await;
    let Err(kameo::error::SendError::HandlerError(SyncError::Git(error))) = failed else {
        panic!("a Git error, not {failed:?}");
    };
    assert_eq!(error.0, "internal error: injected failure");
    let recorded = store
        .ask(GetMeta(GIT_ERROR_META.into()))
        .await
        .expect("store answers")
        .expect("recorded for status");
    assert_eq!(recorded["message"], "internal error: injected failure");
    assert_eq!(
        crate::metrics::METRICS.actor_restart_count("gitsync"),
        restarts + 1
    );

    let report = sync
        .ask(SyncNow(SyncOptions::default()))
        .await
        .expect("the next sync runs");
    assert!(
        report
            .applications
            .iter()
            .any(|(name, outcome)| name == "web" && matches!(outcome, Outcome::Applied { .. })),
        "{report:?}"
    );
    let page = store
        .ask(Get(key(Kind::ConfigMap, "demo", "page")))
        .await
        .expect("store answers");
    assert!(page.is_some(), "the next sync applied the commit");
    let cleared = store
        .ask(GetMeta(GIT_ERROR_META.into()))
        .await
        .expect("store answers");
    assert_eq!(cleared, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pruned_pod_on_a_node_stops_gracefully_and_is_pruned_once() {
    let cluster = Cluster::new();
    let pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n{node}  terminationGracePeriodSeconds: 7\n  containers:\n  - name: c\n    image: busybox:1.36\n"
        )
    };
    write(
        &cluster.repo,
        "apps/web/bound.yaml",
        &pod("bound", "  nodeName: node-1\n"),
    );
    write(&cluster.repo, "apps/web/pending.yaml", &pod("pending", ""));
    commit(&cluster.repo, "two pods");
    cluster.sync(false).await;
    assert!(cluster.get(key(Kind::Pod, "demo", "bound")).await.is_some());
    git(
        &cluster.repo,
        &["rm", "-q", "apps/web/bound.yaml", "apps/web/pending.yaml"],
    );
    commit(&cluster.repo, "no pods");
    cluster.sync(false).await;
    // The pod on a node is marked with its grace period for its kubelet to stop (preStop
    // hooks, SIGTERM); the one never scheduled has nothing to stop and is gone.
    let bound = cluster
        .get(key(Kind::Pod, "demo", "bound"))
        .await
        .expect("still there while its kubelet stops it");
    assert!(bound.object["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(bound.object["metadata"]["deletionGracePeriodSeconds"], 7);
    assert!(
        cluster
            .get(key(Kind::Pod, "demo", "pending"))
            .await
            .is_none()
    );
    // A later commit does not prune it again while it stops.
    let marked = bound.object["metadata"]["resourceVersion"].clone();
    write(
        &cluster.repo,
        "apps/web/page.yaml",
        &config_map("page", "v2", ""),
    );
    commit(&cluster.repo, "page v2");
    cluster.sync(false).await;
    assert_eq!(cluster.value("page").await.as_deref(), Some("v2"));
    let again = cluster
        .get(key(Kind::Pod, "demo", "bound"))
        .await
        .expect("still stopping");
    assert_eq!(again.object["metadata"]["resourceVersion"], marked);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_target_gives_a_cluster_its_own_folder_and_publishes_its_status() {
    let (dir, repo) = new_repo();
    write(
        &repo,
        "fleet.yaml",
        "apiVersion: shipshape.dev/v1alpha1\nkind: Fleet\ntargets:\n- clusterSelector: {matchLabels: {region: eu}}\n  path: clusters/eu\n",
    );
    write(&repo, "apps/namespaces.yaml", DEMO_NAMESPACE);
    write(
        &repo,
        "apps/web/page.yaml",
        &config_map("page", "default", ""),
    );
    write(&repo, "clusters/eu/namespaces.yaml", DEMO_NAMESPACE);
    write(
        &repo,
        "clusters/eu/web/page.yaml",
        &config_map("page", "eu", ""),
    );
    commit(&repo, "targets");
    // Clusters publish into what they pull: a bare repository, as a Git server holds
    // (libgit2 cannot push into a working clone).
    git(dir.path(), &["clone", "-q", "--bare", "repo", "origin.git"]);
    let origin = dir.path().join("origin.git");
    let value = |region: &'static str| {
        let repo = origin.clone();
        let dir = dir.path().join(region);
        async move {
            let source = GitSource {
                url: repo.display().to_string(),
                reference: GitRef::DefaultBranch,
                path: "apps".into(),
            };
            std::fs::create_dir_all(&dir).expect("mkdir");
            let store = Store::open(&dir.join("db.redb")).expect("store");
            let store = StoreActor::spawn(StoreActor::new(store));
            let mirror = Mirror::open(&mirror_dir(&dir), source)
                .expect("mirror")
                .with_cluster(shipshape_api::fleet::ClusterIdentity {
                    name: format!("store-{region}"),
                    labels: [("region".to_string(), region.to_string())].into(),
                });
            let sync = GitSync::spawn(GitSync::new(mirror, store.clone()));
            let report = sync
                .ask(SyncNow(SyncOptions::default()))
                .await
                .expect("syncs");
            assert_eq!(report.publish_error, None, "{report:?}");
            let stored = store
                .ask(Get(key(Kind::ConfigMap, "demo", "page")))
                .await
                .expect("answers")
                .expect("created");
            stored.object["data"]["value"].clone()
        }
    };
    assert_eq!(value("eu").await, "eu", "the target's folder");
    assert_eq!(value("us").await, "default", "no target: --path");
    // Both published their status into the repository they pull.
    let origin = git2::Repository::open(&origin).expect("opens");
    let statuses = crate::fleet::statuses(&origin);
    assert_eq!(
        statuses.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["store-eu", "store-us"]
    );
    assert_eq!(statuses["store-eu"].1.path, "clusters/eu");
    assert_eq!(statuses["store-us"].1.path, "apps");
}

#[test]
fn a_git_error_is_shown_once_in_an_error_chain() {
    // `up` prints errors with their chain (`{:#}`): the message must not repeat as its source.
    let error = SyncError::Git(GitError("cannot fetch git://127.0.0.1:1/x: refused".into()));
    assert_eq!(
        error.to_string(),
        "cannot fetch git://127.0.0.1:1/x: refused"
    );
    assert!(std::error::Error::source(&error).is_none());
}
