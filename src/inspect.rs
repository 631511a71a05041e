//! Reading a stopped cluster's state: `status`, `get`, `history`, `audit verify`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;
use shipshape_actors::GitSource;
use shipshape_actors::fleet::MemberStatus;
use shipshape_actors::gitsync::{self, ApplicationStatus};
use shipshape_actors::health::{self, ApplicationHealth};
use shipshape_actors::store::{AuditRecord, AuditVerifier, PageSize};
use shipshape_api::{Kind, ObjectKey};

use crate::data::{self, Cluster};
use crate::remote::PAGE_ITEMS;
use shipshape_actors::api::tables::age;

/// Output formats of the reading commands.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns for people.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

fn connect(data_dir: Option<&Path>) -> anyhow::Result<Cluster> {
    data::connect(&data::data_dir(data_dir)?)
}

/// What `status` shows, from the database or the API server.
struct StatusData {
    source: Option<GitSource>,
    head: Option<String>,
    /// Each application's sync status and health (`None`: a server too old to report it).
    applications: Vec<(ApplicationStatus, Option<ApplicationHealth>)>,
    /// Read from a stopped cluster's database: health is as the objects were last seen.
    stopped: bool,
    /// Why the last sync could not fetch or read Git, when it could not.
    git_error: Option<Value>,
    /// A fleet member's name, labels, wave and what it holds back.
    fleet: Option<MemberStatus>,
}

/// What `status` shows, from the database or the API server.
fn status_data(cluster: &Cluster) -> anyhow::Result<StatusData> {
    match cluster {
        Cluster::Stopped(store) => {
            let source = store
                .get_meta(GitSource::META_KEY)?
                .and_then(|v| serde_json::from_value(v).ok());
            let head = store
                .get_meta(gitsync::HEAD_META)?
                .and_then(|v| v.as_str().map(str::to_string));
            let objects = store.list(None, None)?;
            let healths = health::applications(objects.iter().map(|(k, s)| (k, s)));
            let applications = store
                .list_meta(gitsync::APP_META_PREFIX)?
                .into_values()
                .filter_map(|v| serde_json::from_value::<ApplicationStatus>(v).ok())
                .map(|status| {
                    let health = healths.get(&status.application).cloned();
                    (status, Some(health.unwrap_or_default()))
                })
                .collect();
            Ok(StatusData {
                source,
                head,
                applications,
                stopped: true,
                git_error: store.get_meta(gitsync::GIT_ERROR_META)?,
                fleet: store
                    .get_meta(gitsync::FLEET_MEMBER_META)?
                    .and_then(|v| serde_json::from_value(v).ok()),
            })
        }
        Cluster::Running(remote) => {
            let answer = remote.get("/apis/shipshape.dev/v1/status")?;
            let applications = answer["applications"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| {
                    let status = serde_json::from_value(v.clone()).ok()?;
                    Some((status, serde_json::from_value(v["health"].clone()).ok()))
                })
                .collect();
            Ok(StatusData {
                source: serde_json::from_value(answer["source"].clone()).ok(),
                head: answer["commit"].as_str().map(str::to_string),
                applications,
                stopped: false,
                git_error: Some(answer["gitError"].clone()).filter(|e| !e.is_null()),
                fleet: serde_json::from_value(answer["fleet"].clone()).ok(),
            })
        }
    }
}

/// The most bytes of records one page read from a stopped cluster's database holds (unless one
/// record alone is larger), as the API server's pages do.
const PAGE_BYTES: usize = 4 << 20;

/// The audit log, oldest first, a page at a time, from the database or the API server: the
/// memory of one page, however long the history.
fn for_each_audit_page(
    cluster: &Cluster,
    mut on_page: impl FnMut(Vec<AuditRecord>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match cluster {
        Cluster::Stopped(store) => {
            let size = PageSize {
                limit: PAGE_ITEMS,
                budget: PAGE_BYTES,
            };
            let mut after = 0;
            let mut until = None;
            loop {
                let page = store.audit_page(after, until, size)?;
                let until = *until.get_or_insert(page.newest);
                let Some(last) = page.records.last().map(|r| r.seq) else {
                    return Ok(());
                };
                on_page(page.records)?;
                if last >= until {
                    return Ok(());
                }
                after = last;
            }
        }
        Cluster::Running(remote) => {
            remote.list_pages("/apis/shipshape.dev/v1/history", PAGE_ITEMS, |items| {
                let records = items
                    .into_iter()
                    .map(serde_json::from_value)
                    .collect::<Result<Vec<AuditRecord>, _>>()?;
                on_page(records)
            })
        }
    }
}

/// The API path listing `kind` (in one namespace, unless `scope` is `None`).
fn list_path(kind: Kind, scope: Option<&str>) -> String {
    let info = kind.info();
    let base = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    match scope {
        Some(namespace) => format!("{base}/namespaces/{namespace}/{}", info.plural),
        None => format!("{base}/{}", info.plural),
    }
}

/// Objects of one kind (in one namespace, unless `scope` is `None`), a page at a time, every
/// page at one resourceVersion.
fn for_each_object_page(
    cluster: &Cluster,
    kind: Kind,
    scope: Option<&str>,
    mut on_page: impl FnMut(Vec<Value>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match cluster {
        Cluster::Stopped(store) => {
            let view = store.read_view()?;
            let size = PageSize {
                limit: PAGE_ITEMS,
                budget: PAGE_BYTES,
            };
            let mut from = None;
            loop {
                let page = view.page(kind, scope, from.as_deref(), size, |_| true)?;
                on_page(page.objects.into_iter().map(|(_, s)| s.object).collect())?;
                match page.next {
                    Some(next) => from = Some(next),
                    None => return Ok(()),
                }
            }
        }
        Cluster::Running(remote) => remote.list_pages(&list_path(kind, scope), PAGE_ITEMS, on_page),
    }
}

/// Writes a JSON array an item at a time exactly as `serde_json::to_string_pretty` writes the
/// whole array, so a long list is printed without being held.
struct PrettyArray {
    /// The indent of the line the array opens on.
    indent: String,
    items: usize,
}

impl PrettyArray {
    /// Opens the array (the text before it is the caller's).
    fn open(out: &mut impl std::io::Write, indent: &str) -> std::io::Result<Self> {
        write!(out, "[")?;
        Ok(Self {
            indent: indent.to_string(),
            items: 0,
        })
    }

    fn push(
        &mut self,
        out: &mut impl std::io::Write,
        item: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        // Pretty JSON has no newline inside a string: every line break is the layout's.
        let inner = format!("{}  ", self.indent);
        let text = serde_json::to_string_pretty(item)?.replace('\n', &format!("\n{inner}"));
        let separator = if self.items == 0 { "" } else { "," };
        write!(out, "{separator}\n{inner}{text}")?;
        self.items += 1;
        Ok(())
    }

    fn close(self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.items == 0 {
            write!(out, "]")
        } else {
            write!(out, "\n{}]", self.indent)
        }
    }
}

/// One row of `get`'s table: NAME, APPLICATION, COMMIT, AGE (NAMESPACE first with -A).
fn object_row(object: &Value, show_namespace: bool, now: jiff::Timestamp) -> Vec<String> {
    let metadata = &object["metadata"];
    let annotations = &metadata["annotations"];
    let mut row = vec![
        metadata["name"].as_str().unwrap_or_default().to_string(),
        annotations["shipshape.dev/application"]
            .as_str()
            .unwrap_or("-")
            .to_string(),
        short(annotations["shipshape.dev/commit"].as_str()).to_string(),
        age(metadata["creationTimestamp"].as_str(), now),
    ];
    if show_namespace {
        row.insert(
            0,
            metadata["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    row
}

/// `shipshape get KIND -w`: the objects now, then every change, as rows, or as one watch event
/// (`{"type": "MODIFIED", "object": …}`) per line for `-o json` and per document for `-o yaml`,
/// as `kubectl get -w --output-watch-events` prints them.
pub fn watch(
    kind: &str,
    namespace: Option<&str>,
    all_namespaces: bool,
    output: Output,
    data_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let kind = parse_kind(kind)?;
    let Cluster::Running(remote) = connect(data_dir)? else {
        anyhow::bail!("watching needs a running cluster: start it with `shipshape up`");
    };
    let namespaced = kind.info().namespaced;
    let scope = (namespaced && !all_namespaces).then_some(namespace.unwrap_or("default"));
    let show_namespace = namespaced && all_namespaces;
    let mut header = vec!["NAME", "APPLICATION", "COMMIT", "AGE", "EVENT"];
    if show_namespace {
        header.insert(0, "NAMESPACE");
    }
    if output != Output::Table {
        let mut failed = None;
        remote.watch(&list_path(kind, scope), |event| {
            let printed = match output {
                Output::Yaml => serde_saphyr::to_string(&event)
                    .map(|text| print!("---\n{text}"))
                    .map_err(anyhow::Error::from),
                _ => serde_json::to_string(&event)
                    .map(|line| println!("{line}"))
                    .map_err(anyhow::Error::from),
            };
            match printed {
                Ok(()) => true,
                Err(error) => {
                    failed = Some(error);
                    false
                }
            }
        })?;
        return failed.map_or(Ok(ExitCode::SUCCESS), Err);
    }
    println!("{}", header.join("   "));
    remote.watch(&list_path(kind, scope), |event| {
        let mut row = object_row(&event["object"], show_namespace, jiff::Timestamp::now());
        row.push(
            event["type"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        );
        println!("{}", row.join("   "));
        true
    })?;
    Ok(ExitCode::SUCCESS)
}
/// A commit id as shown (seven characters; `-` for none).
pub(crate) fn short(commit: Option<&str>) -> &str {
    commit.map_or("-", |c| c.get(..7).unwrap_or(c))
}

/// `shipshape status`: each application's sync and health, as Argo CD shows them.
pub fn status(data_dir: Option<&Path>, output: Output) -> anyhow::Result<ExitCode> {
    let StatusData {
        source,
        head,
        applications,
        stopped,
        git_error,
        fleet,
    } = status_data(&connect(data_dir)?)?;
    match output {
        Output::Json | Output::Yaml => {
            let applications: Vec<Value> = applications
                .iter()
                .map(|(status, health)| match health {
                    Some(health) => health::status_json(status, health),
                    None => serde_json::json!(status),
                })
                .collect();
            let value = serde_json::json!({
                "source": source,
                "commit": head,
                "applications": applications,
                "gitError": git_error,
                "fleet": fleet,
            });
            print_value(&value, output)?;
        }
        Output::Table => {
            if let Some(source) = &source {
                let path = if source.path.is_empty() {
                    String::new()
                } else {
                    format!(", path {}", source.path)
                };
                println!(
                    "following {} of {}{path}; newest commit synced: {}",
                    source.describe_reference(),
                    source.url,
                    short(head.as_deref())
                );
            }
            if let Some(member) = &fleet {
                println!("{}", member.line());
            }
            if let Some(error) = &git_error {
                println!(
                    "syncs cannot read Git (since {}): {}",
                    error["time"].as_str().unwrap_or("an unknown time"),
                    error["message"].as_str().unwrap_or("unknown error")
                );
            }
            let mut rows = vec![
                [
                    "APPLICATION",
                    "SYNC",
                    "HEALTH",
                    "COMMIT",
                    "OBJECTS",
                    "MESSAGE",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for (status, health) in &applications {
                let sync = status.sync.as_str();
                // A sync problem comes first; otherwise the column says why it is not Healthy.
                let why = if status.message.is_empty() {
                    health.as_ref().map_or("", |h| h.message.as_str())
                } else {
                    status.message.as_str()
                };
                let message = match (status.suspended, why.is_empty()) {
                    (true, true) => "suspended".to_string(),
                    (true, false) => format!("suspended; {why}"),
                    (false, _) => why.to_string(),
                };
                rows.push(vec![
                    status.application.clone(),
                    sync.to_string(),
                    health
                        .as_ref()
                        .map_or("-", |h| h.status.as_str())
                        .to_string(),
                    short(status.commit.as_deref()).to_string(),
                    status.objects.to_string(),
                    message,
                ]);
            }
            print_table(&rows);
            if stopped {
                println!("(cluster stopped: health as last seen)");
            }
            for (status, _) in applications.iter().filter(|(s, _)| !s.problems.is_empty()) {
                println!("\n{}:", status.application);
                for problem in &status.problems {
                    println!("  {problem}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints rows as columns three spaces apart, the last column unpadded.
pub(crate) fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

fn print_value(value: &Value, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        _ => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

/// The kind a user typed: a kind, its plural, or kubectl's short name.
fn parse_kind(text: &str) -> anyhow::Result<Kind> {
    Kind::from_user(text)
        .or_else(|| Kind::from_user(text.trim_end_matches('s')))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown kind {text:?}: use a kind such as deployments, services, configmaps"
            )
        })
}

/// `shipshape get KIND [NAME]`.
pub fn get(
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    all_namespaces: bool,
    output: Output,
    data_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let kind = parse_kind(kind)?;
    let cluster = connect(data_dir)?;
    let namespaced = kind.info().namespaced;
    let namespace = namespace.unwrap_or("default");
    let scope = (namespaced && !all_namespaces).then_some(namespace);
    if name.is_none() && output == Output::Json {
        return print_json_list(&cluster, kind, scope);
    }
    let show_namespace = namespaced && all_namespaces;
    let now = jiff::Timestamp::now();
    // A table keeps its rows, not the objects, to size its columns.
    let table = output == Output::Table;
    let mut found = Vec::new();
    let mut rows = Vec::new();
    for_each_object_page(&cluster, kind, scope, |objects| {
        for object in objects {
            if name.is_some_and(|name| object["metadata"]["name"] != name) {
                continue;
            }
            if table {
                rows.push(object_row(&object, show_namespace, now));
            } else {
                found.push(object);
            }
        }
        Ok(())
    })?;
    if let Some(name) = name
        && found.is_empty()
        && rows.is_empty()
    {
        let key = ObjectKey {
            kind,
            namespace: if namespaced {
                namespace.into()
            } else {
                String::new()
            },
            name: name.into(),
        };
        eprintln!("{key} not found");
        return Ok(ExitCode::from(1));
    }
    match output {
        Output::Json | Output::Yaml => {
            let objects = found;
            let value = if name.is_some() && objects.len() == 1 {
                objects.into_iter().next().unwrap_or(Value::Null)
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects})
            };
            print_value(&value, output)?;
        }
        Output::Table => {
            if rows.is_empty() {
                eprintln!(
                    "No {} found{}.",
                    kind.info().plural,
                    scope.map_or(String::new(), |ns| format!(" in namespace {ns}"))
                );
                return Ok(ExitCode::SUCCESS);
            }
            let mut header = vec!["NAME", "APPLICATION", "COMMIT", "AGE"];
            if show_namespace {
                header.insert(0, "NAMESPACE");
            }
            rows.insert(0, header.into_iter().map(String::from).collect());
            print_table(&rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `get KIND -o json`: the list as one JSON document, printed a page at a time.
fn print_json_list(cluster: &Cluster, kind: Kind, scope: Option<&str>) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    // The document around the items as `print_value` lays it out, split where they go.
    let wrapper = serde_json::to_string_pretty(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": []}),
    )?;
    let marker = "\"items\": []";
    let Some((before, after)) = wrapper.split_once(marker) else {
        bail!("cannot lay out the list");
    };
    let indent: String = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .take_while(|c| *c == ' ')
        .collect();
    let mut out = std::io::stdout().lock();
    write!(out, "{before}\"items\": ")?;
    let mut items = PrettyArray::open(&mut out, &indent)?;
    for_each_object_page(cluster, kind, scope, |objects| {
        for object in &objects {
            items.push(&mut out, object)?;
        }
        Ok(())
    })?;
    items.close(&mut out)?;
    writeln!(out, "{after}")?;
    Ok(ExitCode::SUCCESS)
}

/// Whether an audit record is about the object written `Kind ns/name` (or `Kind name`).
fn concerns(record: &AuditRecord, object: &str) -> bool {
    record.entry.subject == object
        || record.entry.details["objects"]
            .as_array()
            .is_some_and(|objects| objects.iter().any(|o| o["object"] == object))
}

/// Turns `KIND/NS/NAME` or `KIND/NAME` into the way audit records name objects.
fn object_reference(text: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = text.split('/').collect();
    let (kind, namespace, name) = match parts.as_slice() {
        [kind, namespace, name] => (parse_kind(kind)?, namespace.to_string(), name.to_string()),
        [kind, name] => {
            let kind = parse_kind(kind)?;
            let namespace = if kind.info().namespaced {
                "default".to_string()
            } else {
                String::new()
            };
            (kind, namespace, name.to_string())
        }
        _ => bail!("--object takes KIND/NAMESPACE/NAME (or KIND/NAME), e.g. deployment/demo/web"),
    };
    Ok(ObjectKey {
        kind,
        namespace,
        name,
    }
    .to_string())
}

fn since_cutoff(text: &str) -> anyhow::Result<jiff::Timestamp> {
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(time);
    }
    let ago: jiff::SignedDuration = text.parse().map_err(|_| {
        anyhow::anyhow!("--since takes a time (2026-11-21T10:00:00Z) or a duration (1h, 30m)")
    })?;
    Ok(jiff::Timestamp::now() - ago)
}

fn describe_value(value: Option<&Value>) -> String {
    match value {
        None => "(none)".into(),
        Some(Value::String(s)) if s.len() <= 60 && !s.contains('\n') => format!("{s:?}"),
        Some(Value::String(_)) => "(text)".into(),
        Some(other) => {
            let text = other.to_string();
            if text.len() <= 60 {
                text
            } else {
                "(…)".into()
            }
        }
    }
}

/// `shipshape history`, printed a page at a time as it is read.
pub fn history(
    object: Option<&str>,
    since: Option<&str>,
    json: bool,
    data_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let object = object.map(object_reference).transpose()?;
    let cutoff = since.map(since_cutoff).transpose()?;
    let cluster = connect(data_dir)?;
    let mut out = std::io::stdout().lock();
    let mut array = if json {
        Some(PrettyArray::open(&mut out, "")?)
    } else {
        None
    };
    let mut shown = 0usize;
    for_each_audit_page(&cluster, |records| {
        let chosen = records
            .iter()
            .filter(|r| object.as_deref().is_none_or(|o| concerns(r, o)))
            .filter(|r| {
                cutoff.is_none_or(|c| r.time.parse::<jiff::Timestamp>().is_ok_and(|t| t >= c))
            });
        for record in chosen {
            shown += 1;
            match &mut array {
                Some(array) => array.push(&mut out, record)?,
                None => print_record(&mut out, record, object.as_deref())?,
            }
        }
        out.flush()?;
        Ok(())
    })?;
    if let Some(array) = array {
        array.close(&mut out)?;
        writeln!(out)?;
    } else if shown == 0 {
        eprintln!(
            "no history{}",
            object
                .as_deref()
                .map_or(String::new(), |o| format!(" for {o}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One record as `shipshape history` prints it (only `object`'s changes, if given).
fn print_record(
    out: &mut impl std::io::Write,
    record: &AuditRecord,
    object: Option<&str>,
) -> std::io::Result<()> {
    let details = &record.entry.details;
    let commit = &details["commit"];
    let mut line = format!(
        "{}  {}  {} {}",
        record.time, record.entry.actor, record.entry.action, record.entry.subject
    );
    if let Some(id) = commit["id"].as_str() {
        line.push_str(&format!("  commit {}", short(Some(id))));
        // A kubelet's record names only the commit; git's says what it was.
        if let Some(message) = commit["message"].as_str() {
            line.push_str(&format!(
                " \"{message}\" by {}",
                commit["author"].as_str().unwrap_or_default()
            ));
        }
    }
    writeln!(out, "{line}")?;
    for change in details["objects"].as_array().into_iter().flatten() {
        let name = change["object"].as_str().unwrap_or_default();
        if object.is_some_and(|o| o != name) {
            continue;
        }
        let action = change["action"].as_str().unwrap_or_default();
        let fields: Vec<String> = change["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{}: {} → {}",
                    c["path"].as_str().unwrap_or_default(),
                    describe_value(c.get("before")),
                    describe_value(c.get("after"))
                )
            })
            .collect();
        // The file the object came from (for a kustomization, the resource file it renders).
        let from = change["source"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        if fields.is_empty() {
            writeln!(out, "    {action} {name}{from}")?;
        } else {
            writeln!(out, "    {action} {name}{from}: {}", fields.join(", "))?;
        }
    }
    for image in details["images"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "    {}: {} is {}",
            image["container"].as_str().unwrap_or_default(),
            image["image"].as_str().unwrap_or_default(),
            image["imageID"].as_str().unwrap_or_default()
        )?;
    }
    for problem in details["problems"].as_array().into_iter().flatten() {
        writeln!(out, "    {}", problem.as_str().unwrap_or_default())?;
    }
    if let Some(message) = details["message"]
        .as_str()
        .filter(|_| details["problems"].as_array().is_none_or(Vec::is_empty))
    {
        writeln!(out, "    {message}")?;
    }
    Ok(())
}

/// `shipshape audit verify`, a page of the log at a time.
pub fn audit_verify(data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut verifier = AuditVerifier::default();
    let mut newest_hash = None;
    let mut broken = None;
    for_each_audit_page(&connect(data_dir)?, |records| {
        for record in &records {
            if broken.is_some() {
                break;
            }
            match verifier.check(record) {
                Ok(()) => newest_hash = Some(record.hash.clone()),
                Err(failure) => broken = Some(failure),
            }
        }
        Ok(())
    })?;
    match broken {
        None => {
            let last = newest_hash.map_or(String::new(), |hash| {
                format!(", newest hash {}", hash.get(..16).unwrap_or(&hash))
            });
            println!("audit log intact: {} records{last}", verifier.checked());
            Ok(ExitCode::SUCCESS)
        }
        Some((seq, why)) => {
            println!("audit log broken at record {seq}: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `shipshape logs`: a container's output through the running cluster's API server.
pub fn logs(
    pod: &str,
    container: Option<&str>,
    follow: bool,
    previous: bool,
    tail: Option<usize>,
    namespace: Option<&str>,
    data_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let data_dir = data::data_dir(data_dir)?;
    let remote = match data::connect(&data_dir)? {
        Cluster::Running(remote) => remote,
        Cluster::Stopped(_) => {
            anyhow::bail!(
                "the cluster in {} is not running: logs are read from a running cluster (`shipshape up`)",
                data_dir.display()
            )
        }
    };
    let namespace = namespace.unwrap_or("default");
    let mut query = Vec::new();
    if let Some(container) = container {
        query.push(format!("container={container}"));
    }
    if follow {
        query.push("follow=true".into());
    }
    if previous {
        query.push("previous=true".into());
    }
    if let Some(tail) = tail {
        query.push(format!("tailLines={tail}"));
    }
    let path = format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}/log?{}",
        query.join("&")
    );
    remote.copy_text(&path, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_printed_item_by_item_reads_as_the_whole_list_pretty_printed() {
        for count in [0, 1, 3] {
            let items: Vec<Value> = (0..count)
                .map(|i| json!({"n": i, "nested": {"list": [1, 2], "text": "two\nlines"}}))
                .collect();
            for (indent, whole) in [
                ("", serde_json::to_string_pretty(&items)),
                ("  ", serde_json::to_string_pretty(&json!({"items": items}))),
            ] {
                let mut out = Vec::new();
                if !indent.is_empty() {
                    out.extend_from_slice(b"{\n  \"items\": ");
                }
                let mut array = PrettyArray::open(&mut out, indent).expect("writes");
                for item in &items {
                    array.push(&mut out, item).expect("writes");
                }
                array.close(&mut out).expect("writes");
                if !indent.is_empty() {
                    out.extend_from_slice(b"\n}");
                }
                assert_eq!(
                    String::from_utf8(out).expect("text"),
                    whole.expect("serialises")
                );
            }
        }
    }
}
