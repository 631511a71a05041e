//! The cluster's memory: objects, resourceVersions, the watch log, sync state and the audit
//! chain, in one redb database.
//!
//! [`Store`] is synchronous and has exactly one owner, the [`crate::StoreActor`]; nothing else
//! writes the database. A [`Batch`] is applied in one redb transaction, all or nothing: every
//! write's precondition is checked against the state the batch itself sees, and the batch is
//! acknowledged only after the transaction is durable (redb commits with fsync). The audit record
//! of a batch is written in the same transaction, so history and state cannot disagree.

use shipshape_api::pointer::At;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shipshape_api::{Kind, ObjectKey};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Where the watch log was kept on disk (dropped when a store opens; it lives in memory now).
const OLD_WATCH_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("watch_log");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

const RESOURCE_VERSION: &str = "store/resource-version";

/// How many watch events are kept for replay; a watcher further behind must relist.
pub const WATCH_LOG_LIMIT: usize = 10_000;

/// An object as stored: the object itself and what Git last applied to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// The full object, with uid, resourceVersion, generation and creationTimestamp set.
    pub object: Value,
    /// The manifest Git last applied (before provenance stamps), for objects Git manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<Value>,
    /// The application that manages it, for objects Git manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
}

impl StoredObject {
    /// The object's resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.object
            .at("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0)
    }

    /// The object's uid.
    pub fn uid(&self) -> &str {
        self.object
            .at("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// What a write must find before it may happen: one check, shared with the models.
pub use shipshape_reconciler::precondition::Precondition;

/// One change to the store.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Create an object that must not exist yet.
    Create {
        /// The object (apiVersion, kind, metadata.name and namespace set).
        object: Value,
        /// For Git-managed objects: the manifest as applied.
        applied: Option<Value>,
        /// For Git-managed objects: the application.
        application: Option<String>,
    },
    /// Replace an object's declared content; its uid, creation time and status are kept.
    Update {
        /// The object to replace.
        key: ObjectKey,
        /// The resourceVersion the change was decided on.
        resource_version: u64,
        /// The new content.
        object: Value,
        /// For Git-managed objects: the manifest as applied.
        applied: Option<Value>,
    },
    /// Replace an object's status only (what controllers and kubelets report); spec, metadata
    /// and generation are untouched.
    UpdateStatus {
        /// The object.
        key: ObjectKey,
        /// What it must still be (`None`: any version, for reports that supersede each other).
        precondition: Option<Precondition>,
        /// The new status.
        status: Value,
    },
    /// Set one condition in `status.conditions`, replacing the one of the same type (as
    /// Kubernetes' strategic merge keys conditions by type): a controller can flip a pod's
    /// Ready without holding the rest of its status. `lastTransitionTime` is kept when the
    /// condition's status does not change.
    SetCondition {
        /// The object.
        key: ObjectKey,
        /// What it must still be.
        precondition: Option<Precondition>,
        /// The condition (`type` and `status` at least).
        condition: Value,
    },
    /// Merge a JSON merge patch (RFC 7386) into an object: a scale (`spec.replicas`), a binding
    /// (`spec.nodeName`), a label. Identity fields (uid, name, creation time) cannot change;
    /// `generation` counts the change as an update would; the status is left alone unless the
    /// patch carries one.
    Patch {
        /// The object.
        key: ObjectKey,
        /// What it must still be.
        precondition: Option<Precondition>,
        /// The merge patch.
        patch: Value,
    },
    /// Start a graceful deletion: set `deletionTimestamp` (now + grace) so the object shows
    /// Terminating while whoever runs it (a kubelet) stops it and then deletes it.
    MarkDeleting {
        /// The object.
        key: ObjectKey,
        /// What it must still be.
        precondition: Precondition,
        /// The grace period.
        grace_seconds: i64,
    },
    /// Delete an object.
    Delete {
        /// The object.
        key: ObjectKey,
        /// What it must still be.
        precondition: Precondition,
    },
    /// Set a piece of control-plane state (an application's sync status, the Git head).
    SetMeta {
        /// The state's name.
        key: String,
        /// Its value.
        value: Value,
    },
}

impl Write {
    /// Deletes an object, gracefully when something runs it: a pod on a node is marked
    /// (`deletionTimestamp`) so its kubelet can stop it within `grace_seconds` and then remove
    /// it; anything else (a pod never scheduled has nothing to stop) goes at once.
    pub fn delete(
        key: ObjectKey,
        precondition: Precondition,
        graceful: bool,
        grace_seconds: i64,
    ) -> Write {
        if graceful {
            Write::MarkDeleting {
                key,
                precondition,
                grace_seconds,
            }
        } else {
            Write::Delete { key, precondition }
        }
    }
}

/// Who asked for a change and what it was, for the audit history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Who: `git`, `controller/replicaset`, `client/admin`, …
    pub actor: String,
    /// What: `sync`, `sync-failed`, `delete`, …
    pub action: String,
    /// About what: an application, an object key.
    pub subject: String,
    /// Everything else (commit, author, per-object changes, …).
    pub details: Value,
}

/// Changes applied together, all or nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The writes, in order.
    pub writes: Vec<Write>,
    /// The audit record, written in the same transaction.
    pub audit: Option<AuditEntry>,
}

/// What happened to an object, as a watcher sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted (the object is its last state).
    Deleted,
}

/// One change to one object, in resourceVersion order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The resourceVersion of the change.
    pub resource_version: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The object's key as stored (`Deployment/demo/web`).
    pub key: String,
    /// The object after the change (before it, for a deletion).
    pub object: Value,
}

/// One record of the append-only, hash-chained audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it was written (RFC 3339).
    pub time: String,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// The resourceVersion after the batch.
    pub resource_version: u64,
    /// The hash of the record before (empty for the first).
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this record's content.
    pub hash: String,
}

impl AuditRecord {
    fn compute_hash(&self) -> String {
        let content = serde_json::json!({
            "seq": self.seq,
            "time": self.time,
            "entry": self.entry,
            "resourceVersion": self.resource_version,
        });
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(b"\n");
        hasher.update(serde_json::to_vec(&content).unwrap_or_default());
        hex(&hasher.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Why the store refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A precondition no longer holds: decide again on a fresh read.
    #[error("conflict on {key}: {reason}")]
    Conflict {
        /// The object.
        key: String,
        /// What differs.
        reason: String,
    },
    /// A create found the object already there.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// An update or delete found no object.
    #[error("{0} not found")]
    NotFound(String),
    /// The write itself is malformed.
    #[error("invalid write: {0}")]
    Invalid(String),
    /// A create in a namespace that has no Namespace object (Kubernetes' NamespaceLifecycle
    /// admission): nothing may be made where the garbage collector would delete it again.
    #[error("{key}: namespaces \"{namespace}\" not found")]
    NamespaceNotFound {
        /// The object that was to be created.
        key: String,
        /// The namespace it names.
        namespace: String,
    },
    /// A watch asked for changes older than the log keeps: list again and watch from there.
    #[error("resourceVersion {requested} is too old (the oldest kept is {oldest}): list again")]
    Expired {
        /// What was asked.
        requested: u64,
        /// The oldest resourceVersion still replayable.
        oldest: u64,
    },
    /// Another process (a running `shipshape up`) has the database open.
    #[error("{0} is in use by another shipshape process (is `shipshape up` running?)")]
    InUse(String),
    /// The database failed (disk full, corruption).
    #[error("store database: {0}")]
    Database(String),
}

fn db_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database(error.to_string())
}

/// The text form of a key in the objects table: `Kind/namespace/name`.
pub fn storage_key(key: &ObjectKey) -> String {
    format!("{}/{}/{}", key.kind, key.namespace, key.name)
}

/// The key back from its text form.
pub fn parse_storage_key(text: &str) -> Option<ObjectKey> {
    let mut parts = text.splitn(3, '/');
    let kind = Kind::by_display_name(parts.next()?)?;
    Some(ObjectKey {
        kind,
        namespace: parts.next()?.to_string(),
        name: parts.next()?.to_string(),
    })
}

/// The storage key of Namespace `name`.
fn namespace_key(name: &str) -> String {
    storage_key(&ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: name.to_string(),
    })
}

/// The kind a storage key names, without taking the key apart.
pub fn storage_kind(text: &str) -> Option<Kind> {
    Kind::by_display_name(text.split_once('/')?.0)
}

/// The key of an object given as JSON.
pub fn key_of(object: &Value) -> Result<ObjectKey, StoreError> {
    let text = |pointer: &str| object.at(pointer).and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (text("/apiVersion"), text("/kind")) else {
        return Err(StoreError::Invalid(
            "apiVersion and kind are required".into(),
        ));
    };
    let shipshape_api::object::KindLookup::Found(kind) = Kind::lookup(api_version, kind) else {
        return Err(StoreError::Invalid(format!(
            "unsupported kind {kind} ({api_version})"
        )));
    };
    let name = text("/metadata/name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| StoreError::Invalid("metadata.name is required".into()))?;
    let namespace = if kind.info().namespaced {
        text("/metadata/namespace").unwrap_or("default")
    } else {
        ""
    };
    Ok(ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// One batch's verdict: the events it made (shared with the watch), or why it was refused.
pub type Applied = Result<Vec<Arc<WatchEvent>>, StoreError>;

/// The redb database and the rules for writing it.
pub struct Store {
    db: Database,
    /// Where the database lives: what a restart resumes from.
    path: std::path::PathBuf,
    /// The newest [`WATCH_LOG_LIMIT`] changes, oldest first: what a watch replays. Kept in
    /// memory, as the Kubernetes API server's watch cache is; after a restart a watcher from
    /// an older resourceVersion is told to list again (`Expired`, Kubernetes' 410).
    recent: Mutex<VecDeque<Arc<WatchEvent>>>,
    /// The committer's own: recently written objects, for the next write to copy.
    cached: Mutex<ObjectCache>,
    /// Events the store no longer holds go to a thread that frees them: the committer is the
    /// one thread every write waits for, and freeing an object costs about as much as copying
    /// it.
    dropper: Option<std::sync::mpsc::Sender<Vec<Arc<WatchEvent>>>>,
    /// Which objects each application manages, built on first use and kept by every commit:
    /// a sync asks per application, and scanning every object each time made a sync of many
    /// applications quadratic.
    managed: Mutex<Option<ManagedIndex>>,
}

/// Storage keys by application, and each key's application.
#[derive(Default)]
struct ManagedIndex {
    by_application: std::collections::HashMap<String, BTreeSet<String>>,
    application_of: std::collections::HashMap<String, String>,
}

impl ManagedIndex {
    /// Records that `key` is now managed by `application` (or by none, or gone).
    fn set(&mut self, key: &str, application: Option<&str>) {
        if let Some(old) = self.application_of.remove(key)
            && let Some(keys) = self.by_application.get_mut(&old)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_application.remove(&old);
            }
        }
        if let Some(application) = application {
            self.application_of
                .insert(key.to_string(), application.to_string());
            self.by_application
                .entry(application.to_string())
                .or_default()
                .insert(key.to_string());
        }
    }
}

/// How many objects [`ObjectCache`] holds: the most recently written ones, each at its newest
/// write. A write to an object still here copies it; one written longer ago is read and parsed
/// from disk, which costs about three copies.
const CACHED_OBJECTS: usize = 50_000;

/// The current state of recently written objects that are stored with nothing beside them
/// (controller-made ones, the bulk of writes at scale). A write to such an object copies it
/// from here instead of reading and parsing it again: a copy costs a third of a parse.
#[derive(Default)]
struct ObjectCache {
    /// Each cached key's newest event.
    by_key: foldhash::HashMap<String, Arc<WatchEvent>>,
    /// The cached events in the order they were written, oldest first. An entry whose key has
    /// been written since is stale: it no longer counts, and it does not keep the event's
    /// object alive (a `Weak`). Stale entries are dropped when they reach the front, or all at
    /// once when they outnumber the live ones.
    order: VecDeque<std::sync::Weak<WatchEvent>>,
    /// How often a write found its object here, and how often it had to parse it.
    reads: Arc<ObjectReads>,
}

/// How the committer came by the objects that writes changed: copied from its cache of recent
/// writes, or read and parsed from disk. The scale benchmark prints it: a parse costs three
/// copies, and the share tells whether the cache is sized for the load.
#[derive(Debug, Default)]
pub struct ObjectReads {
    /// Objects copied from the cache.
    pub copied: AtomicU64,
    /// Objects parsed from disk.
    pub parsed: AtomicU64,
}

impl ObjectCache {
    fn get(&self, key: &str) -> Option<&Arc<WatchEvent>> {
        self.by_key.get(key)
    }

    /// `entry` of `order`, if it is still its key's newest event.
    fn live(&self, entry: &std::sync::Weak<WatchEvent>) -> Option<Arc<WatchEvent>> {
        let event = entry.upgrade()?;
        let newest = self.by_key.get(&event.key)?;
        Arc::ptr_eq(newest, &event).then_some(event)
    }

    /// Remembers `event` as its key's newest; the events that leave (superseded, or the least
    /// recently written beyond [`CACHED_OBJECTS`]) go to `evicted`, to be freed off the
    /// committer.
    fn insert(&mut self, event: &Arc<WatchEvent>, evicted: &mut Vec<Arc<WatchEvent>>) {
        let superseded = match self.by_key.get_mut(&event.key) {
            Some(newest) => Some(std::mem::replace(newest, event.clone())),
            None => self.by_key.insert(event.key.clone(), event.clone()),
        };
        evicted.extend(superseded);
        self.order.push_back(Arc::downgrade(event));
        while self.by_key.len() > CACHED_OBJECTS {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(live) = self.live(&oldest) {
                self.by_key.remove(&live.key);
                evicted.push(live);
            }
        }
        if self.order.len() > 2 * self.by_key.len().max(CACHED_OBJECTS) {
            let order = std::mem::take(&mut self.order);
            self.order = order
                .into_iter()
                .filter(|entry| self.live(entry).is_some())
                .collect();
        }
    }

    fn remove(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    /// Forgets everything, handing the events over to be freed.
    fn clear(&mut self, evicted: &mut Vec<Arc<WatchEvent>>) {
        self.order.clear();
        evicted.extend(self.by_key.drain().map(|(_, event)| event));
    }
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::InUse(path.display().to_string())
            }
            other => db_error(other),
        })?;
        let txn = db.begin_write().map_err(db_error)?;
        {
            // Create every table up front so that readers never find one missing.
            txn.open_table(OBJECTS).map_err(db_error)?;
            txn.open_table(META).map_err(db_error)?;
            txn.open_table(AUDIT).map_err(db_error)?;
        }
        // Data directories from before the watch log moved to memory still hold it on disk.
        txn.delete_table(OLD_WATCH_LOG).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        let (dropper, dropped) = std::sync::mpsc::channel::<Vec<Arc<WatchEvent>>>();
        let dropper = std::thread::Builder::new()
            .name("store-free".into())
            .spawn(move || while dropped.recv().is_ok() {})
            // Without the thread the committer frees old events itself.
            .ok()
            .map(|_| dropper);
        Ok(Self {
            db,
            path: path.to_path_buf(),
            recent: Mutex::new(VecDeque::new()),
            cached: Mutex::new(ObjectCache::default()),
            dropper,
            managed: Mutex::new(None),
        })
    }

    /// The database file, for messages that tell where a restart resumes from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts of how writes came by the objects they changed (see [`ObjectReads`]).
    pub fn object_reads(&self) -> Arc<ObjectReads> {
        self.cached
            .lock()
            .map(|cache| cache.reads.clone())
            .unwrap_or_default()
    }

    /// The newest resourceVersion written.
    pub fn resource_version(&self) -> Result<u64, StoreError> {
        Ok(self
            .get_meta(RESOURCE_VERSION)?
            .and_then(|v| v.as_u64())
            .unwrap_or(0))
    }

    /// Applies a batch in one durable transaction; returns the watch events it produced.
    pub fn apply(
        &mut self,
        batch: Batch,
        now: jiff::Timestamp,
    ) -> Result<Vec<Arc<WatchEvent>>, StoreError> {
        self.apply_group(vec![batch], now)?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Invalid("no batch".into())))
    }

    /// Applies independent batches in one durable transaction (group commit): each batch is
    /// still all or nothing on its own, checked against the state the batches before it left,
    /// and a refused batch does not affect the others. One fsync then pays for all of them,
    /// which is what makes thousands of durable writes per second possible.
    ///
    /// The outer error is a database failure, in which case nothing was written.
    pub fn apply_group(
        &self,
        batches: Vec<Batch>,
        now: jiff::Timestamp,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = Vec::new();
        let mut managed_changes = Vec::new();
        let results = self.commit_group(
            batches,
            now,
            &mut cached,
            &mut evicted,
            &mut managed_changes,
        );
        if results.is_ok() {
            let mut managed = self.managed.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(index) = managed.as_mut() {
                for (key, application) in &managed_changes {
                    index.set(key, application.as_deref());
                }
            }
        }
        if results.is_err() {
            // The cache took in batches that are not durable after all.
            cached.clear(&mut evicted);
        }
        drop(cached);
        if let Ok(results) = &results {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            for event in results.iter().flatten().flatten() {
                if recent.len() >= WATCH_LOG_LIMIT
                    && let Some(old) = recent.pop_front()
                {
                    evicted.push(old);
                }
                recent.push_back(event.clone());
            }
        }
        if let Some(dropper) = &self.dropper
            && !evicted.is_empty()
        {
            // A stopped thread hands the events back, and they are freed here.
            let _ = dropper.send(evicted);
        }
        results
    }

    /// The transaction of [`Store::apply_group`].
    fn commit_group(
        &self,
        batches: Vec<Batch>,
        now: jiff::Timestamp,
        cached: &mut ObjectCache,
        evicted: &mut Vec<Arc<WatchEvent>>,
        managed_changes: &mut Vec<(String, Option<String>)>,
    ) -> Result<Vec<Applied>, StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let results = {
            let mut tables = Tables {
                objects: txn.open_table(OBJECTS).map_err(db_error)?,
                meta: txn.open_table(META).map_err(db_error)?,
                audit: txn.open_table(AUDIT).map_err(db_error)?,
                cached,
                evicted,
                last_audit: None,
                managed_changes,
            };
            let mut rv = read_json(tables.meta.get(RESOURCE_VERSION).map_err(db_error)?)?
                .and_then(|v: Value| v.as_u64())
                .unwrap_or(0);
            let mut results = Vec::with_capacity(batches.len());
            for batch in batches {
                results.push(tables.apply_batch(batch, &mut rv, now)?);
            }
            tables
                .meta
                .insert(RESOURCE_VERSION, to_bytes(&Value::from(rv)).as_slice())
                .map_err(db_error)?;
            results
        };
        txn.commit().map_err(db_error)?;
        Ok(results)
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let objects = txn.open_table(OBJECTS).map_err(db_error)?;
        read_json(objects.get(storage_key(key).as_str()).map_err(db_error)?)
    }

    /// Every object, or those of one kind (and namespace), in key order.
    pub fn list(
        &self,
        kind: Option<Kind>,
        namespace: Option<&str>,
    ) -> Result<Vec<(ObjectKey, StoredObject)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let objects = txn.open_table(OBJECTS).map_err(db_error)?;
        let mut found = Vec::new();
        list_into(&objects, kind, namespace, &mut found)?;
        Ok(found)
    }

    /// The objects of one kind (in one namespace, if given) and the resourceVersion they are
    /// at, from one consistent read: a list's resourceVersion must be the one its items are
    /// at, or a watch started from it repeats or misses changes.
    pub fn list_at(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(u64, Vec<(ObjectKey, StoredObject)>), StoreError> {
        self.read_at(&[kind], namespace)
    }

    /// The objects of these kinds and the resourceVersion they are at, from one consistent
    /// read: what a controller starts from before following the watch.
    pub fn snapshot(
        &self,
        kinds: &[Kind],
    ) -> Result<(u64, Vec<(ObjectKey, StoredObject)>), StoreError> {
        self.read_at(kinds, None)
    }

    fn read_at(
        &self,
        kinds: &[Kind],
        namespace: Option<&str>,
    ) -> Result<(u64, Vec<(ObjectKey, StoredObject)>), StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let objects = txn.open_table(OBJECTS).map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        let rv = read_json(meta.get(RESOURCE_VERSION).map_err(db_error)?)?
            .and_then(|v: Value| v.as_u64())
            .unwrap_or(0);
        let mut found = Vec::new();
        for kind in kinds {
            list_into(&objects, Some(*kind), namespace, &mut found)?;
        }
        Ok((rv, found))
    }

    /// The objects an application manages.
    pub fn managed_by(
        &self,
        application: &str,
    ) -> Result<Vec<(ObjectKey, StoredObject)>, StoreError> {
        let keys: Vec<String> = {
            let mut managed = self.managed.lock().unwrap_or_else(|e| e.into_inner());
            if managed.is_none() {
                let mut index = ManagedIndex::default();
                for (key, stored) in self.list(None, None)? {
                    if let Some(application) = &stored.application {
                        index.set(&storage_key(&key), Some(application));
                    }
                }
                *managed = Some(index);
            }
            managed
                .as_ref()
                .and_then(|index| index.by_application.get(application))
                .map(|keys| keys.iter().cloned().collect())
                .unwrap_or_default()
        };
        let txn = self.db.begin_read().map_err(db_error)?;
        let objects = txn.open_table(OBJECTS).map_err(db_error)?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let stored: Option<StoredObject> =
                read_json(objects.get(key.as_str()).map_err(db_error)?)?;
            if let Some(stored) = stored.filter(|s| s.application.as_deref() == Some(application))
                && let Some(object_key) = parse_storage_key(&key)
            {
                found.push((object_key, stored));
            }
        }
        Ok(found)
    }

    /// A piece of control-plane state.
    pub fn get_meta(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        read_json(meta.get(key).map_err(db_error)?)
    }

    /// All control-plane state whose name starts with `prefix`.
    pub fn list_meta(&self, prefix: &str) -> Result<BTreeMap<String, Value>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        let mut found = BTreeMap::new();
        for entry in meta.range(prefix..).map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            found.insert(
                key.value().to_string(),
                serde_json::from_slice(value.value()).map_err(db_error)?,
            );
        }
        Ok(found)
    }

    /// The changes after `resource_version`, from the log; `Expired` if the log no longer
    /// reaches back that far (or the store has restarted since).
    pub fn events_since(&self, resource_version: u64) -> Result<Vec<Arc<WatchEvent>>, StoreError> {
        let newest = self.resource_version()?;
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = recent
            .front()
            .map_or(newest.saturating_add(1), |e| e.resource_version);
        if resource_version.saturating_add(1) < oldest && resource_version < newest {
            return Err(StoreError::Expired {
                requested: resource_version,
                oldest,
            });
        }
        let start = recent.partition_point(|e| e.resource_version <= resource_version);
        Ok(recent.range(start..).cloned().collect())
    }

    /// A consistent read of every object as it is now, to list from in pages: each page read
    /// from one view is at the view's resourceVersion whatever is written meanwhile (a redb read
    /// transaction is a snapshot), which is what Kubernetes promises of a list in chunks.
    /// While a view lives the database cannot reuse the pages it sees, so whoever keeps one
    /// must let it go within minutes (the API server does).
    pub fn read_view(&self) -> Result<ReadView, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let resource_version = {
            let meta = txn.open_table(META).map_err(db_error)?;
            read_json(meta.get(RESOURCE_VERSION).map_err(db_error)?)?
                .and_then(|v: Value| v.as_u64())
                .unwrap_or(0)
        };
        Ok(ReadView {
            txn,
            resource_version,
        })
    }

    /// Audit records after sequence number `after` and at most `until` (the newest if
    /// `None`), oldest first, as many as `size` allows. The log is append-only, so a page of
    /// records up to `until` read now is the page any earlier read would have given.
    pub fn audit_page(
        &self,
        after: u64,
        until: Option<u64>,
        size: PageSize,
    ) -> Result<AuditPage, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let audit = txn.open_table(AUDIT).map_err(db_error)?;
        let newest = audit
            .last()
            .map_err(db_error)?
            .map_or(0, |(seq, _)| seq.value());
        let until = until.unwrap_or(newest).min(newest);
        let mut records = Vec::new();
        let mut bytes = 0usize;
        if after < until {
            for entry in audit
                .range(after.saturating_add(1)..=until)
                .map_err(db_error)?
            {
                let (_, value) = entry.map_err(db_error)?;
                if !size.admits(records.len(), bytes, value.value().len()) {
                    break;
                }
                bytes = bytes.saturating_add(value.value().len());
                records.push(serde_json::from_slice(value.value()).map_err(db_error)?);
            }
        }
        Ok(AuditPage { records, newest })
    }

    /// The audit log, oldest first.
    pub fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let audit = txn.open_table(AUDIT).map_err(db_error)?;
        let mut records = Vec::new();
        for entry in audit.iter().map_err(db_error)? {
            let (_, value) = entry.map_err(db_error)?;
            records.push(serde_json::from_slice(value.value()).map_err(db_error)?);
        }
        Ok(records)
    }
}

/// Checks the audit chain: every record's hash matches its content and links to the one before.
/// Returns how many records were checked, or the first broken one and why.
pub fn verify_audit(records: &[AuditRecord]) -> Result<usize, (u64, String)> {
    let mut verifier = AuditVerifier::default();
    for record in records {
        verifier.check(record)?;
    }
    Ok(verifier.checked())
}

/// [`verify_audit`] one record at a time, oldest first, so that a log of any length is
/// checked in the memory of one page of it.
#[derive(Clone, Debug, Default)]
pub struct AuditVerifier {
    prev_hash: String,
    checked: usize,
}

impl AuditVerifier {
    /// Checks the next record: its position, its link to the record before, its hash.
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), (u64, String)> {
        let expected_seq = u64::try_from(self.checked)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        if record.seq != expected_seq {
            return Err((
                record.seq,
                format!("expected record {expected_seq}: records are missing"),
            ));
        }
        if record.prev_hash != self.prev_hash {
            return Err((record.seq, "does not link to the record before it".into()));
        }
        if record.compute_hash() != record.hash {
            return Err((
                record.seq,
                "its content does not match its hash (altered)".into(),
            ));
        }
        self.prev_hash.clone_from(&record.hash);
        self.checked += 1;
        Ok(())
    }

    /// How many records have been checked and found intact.
    pub fn checked(&self) -> usize {
        self.checked
    }
}

/// A page of the audit log (see [`Store::audit_page`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditPage {
    /// The records, oldest first.
    pub records: Vec<AuditRecord>,
    /// The sequence number of the newest record in the log when the page was read (0: none).
    pub newest: u64,
}

/// How much one page of a list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize {
    /// At most this many items (of those a filter keeps).
    pub limit: usize,
    /// At most this many stored bytes, unless the first item alone is larger: what keeps a
    /// page of large items (audit records of big commits) within what a client will read.
    pub budget: usize,
}

impl PageSize {
    /// One page holding the whole list.
    pub const ALL: Self = Self {
        limit: usize::MAX,
        budget: usize::MAX,
    };

    /// Whether a page already holding `items` of `bytes` takes one more of `size` bytes.
    fn admits(&self, items: usize, bytes: usize, size: usize) -> bool {
        items == 0 || (items < self.limit && bytes.saturating_add(size) <= self.budget)
    }
}

/// A snapshot of the objects (see [`Store::read_view`]) to list from in pages, all at one
/// resourceVersion.
pub struct ReadView {
    txn: redb::ReadTransaction,
    resource_version: u64,
}

/// One page of a list read from a [`ReadView`].
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectPage {
    /// The objects the filter kept, in key order.
    pub objects: Vec<(ObjectKey, StoredObject)>,
    /// The storage key the next page starts at, when the list has keys left.
    pub next: Option<String>,
    /// How many keys of the list this page went past (kept or not): subtracted from the
    /// count of keys from where it started, the count left after it.
    pub scanned: u64,
}

impl ReadView {
    /// The resourceVersion every page of this view is at.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// The prefix of the storage keys a list of `kind` (in `namespace`) reads: every key of
    /// the list starts with it, so a continue key that does not belongs to another list.
    pub fn list_prefix(kind: Kind, namespace: Option<&str>) -> String {
        list_prefix(Some(kind), namespace)
    }

    /// The objects of `kind` (in `namespace`) from storage key `from` on (inclusive; the
    /// start of the list if `None`) that `keep` accepts, in key order, as many as `size`
    /// allows.
    pub fn page(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        from: Option<&str>,
        size: PageSize,
        keep: impl Fn(&StoredObject) -> bool,
    ) -> Result<ObjectPage, StoreError> {
        let objects = self.txn.open_table(OBJECTS).map_err(db_error)?;
        let prefix = list_prefix(Some(kind), namespace);
        let start = from.filter(|f| *f > prefix.as_str()).unwrap_or(&prefix);
        let mut page = ObjectPage {
            objects: Vec::new(),
            next: None,
            scanned: 0,
        };
        let mut bytes = 0usize;
        for entry in objects.range(start..).map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            let text = key.value();
            if !text.starts_with(&prefix) {
                break;
            }
            let stored_bytes = value.value().len();
            if !size.admits(page.objects.len(), bytes, stored_bytes) {
                page.next = Some(text.to_string());
                break;
            }
            page.scanned += 1;
            let Some(parsed) = parse_storage_key(text) else {
                continue;
            };
            if parsed.kind != kind || namespace.is_some_and(|ns| ns != parsed.namespace) {
                continue;
            }
            let stored: StoredObject = serde_json::from_slice(value.value()).map_err(db_error)?;
            if keep(&stored) {
                bytes = bytes.saturating_add(stored_bytes);
                page.objects.push((parsed, stored));
            }
        }
        Ok(page)
    }

    /// How many keys the list of `kind` (in `namespace`) has from storage key `from` on:
    /// Kubernetes' `remainingItemCount`. It reads keys only, no object is parsed.
    pub fn count(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        from: &str,
    ) -> Result<u64, StoreError> {
        let objects = self.txn.open_table(OBJECTS).map_err(db_error)?;
        let prefix = list_prefix(Some(kind), namespace);
        let start = if from > prefix.as_str() {
            from
        } else {
            &prefix
        };
        let mut count = 0u64;
        for entry in objects.range(start..).map_err(db_error)? {
            let (key, _) = entry.map_err(db_error)?;
            if !key.value().starts_with(&prefix) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }
}

/// The storage keys of one kind (and namespace) share a prefix, `Kind/namespace/`, so one
/// list is one contiguous range.
fn list_prefix(kind: Option<Kind>, namespace: Option<&str>) -> String {
    match (kind, namespace) {
        (Some(kind), Some(ns)) if kind.info().namespaced => format!("{kind}/{ns}/"),
        (Some(kind), _) => format!("{kind}/"),
        (None, _) => String::new(),
    }
}

fn list_into(
    objects: &redb::ReadOnlyTable<&str, &[u8]>,
    kind: Option<Kind>,
    namespace: Option<&str>,
    found: &mut Vec<(ObjectKey, StoredObject)>,
) -> Result<(), StoreError> {
    let prefix = list_prefix(kind, namespace);
    for entry in objects.range(prefix.as_str()..).map_err(db_error)? {
        let (key, value) = entry.map_err(db_error)?;
        if !key.value().starts_with(&prefix) {
            break;
        }
        let Some(parsed) = parse_storage_key(key.value()) else {
            continue;
        };
        if kind.is_some_and(|k| k != parsed.kind)
            || namespace.is_some_and(|ns| ns != parsed.namespace)
        {
            continue;
        }
        let stored: StoredObject = serde_json::from_slice(value.value()).map_err(db_error)?;
        found.push((parsed, stored));
    }
    Ok(())
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data with string keys always serialises.
    serde_json::to_vec(value).unwrap_or_default()
}

fn read_json<T: serde::de::DeserializeOwned>(
    value: Option<redb::AccessGuard<'_, &[u8]>>,
) -> Result<Option<T>, StoreError> {
    value
        .map(|v| serde_json::from_slice(v.value()).map_err(db_error))
        .transpose()
}

fn set_metadata(object: &mut Value, field: &str, value: Value) {
    if let Some(metadata) = object
        .as_object_mut()
        .map(|o| {
            o.entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()))
        })
        .and_then(Value::as_object_mut)
    {
        metadata.insert(field.to_string(), value);
    }
}

/// Everything but metadata and status: what `generation` counts changes of.
/// Keeps what the cluster allocated and the new version leaves unset, as the Kubernetes API
/// server does: a Service's ClusterIP(s) and each port's NodePort (matched by port and
/// protocol). Git declares a Service without them; its next update must not take them away.
fn keep_allocated(current: &Value, new: &mut Value) {
    if current.get("kind").and_then(Value::as_str) != Some("Service") {
        return;
    }
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let old = &current["spec"];
    for field in ["clusterIP", "clusterIPs"] {
        if !spec.contains_key(field)
            && let Some(value) = old.get(field)
        {
            spec.insert(field.to_string(), value.clone());
        }
    }
    let old_ports = old["ports"].as_array().cloned().unwrap_or_default();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            // 0 means unset, as in Kubernetes: the allocated port stays.
            if port.get("nodePort").is_some_and(|n| n.as_u64() != Some(0)) {
                continue;
            }
            let same = |p: &&Value| {
                p["port"] == port["port"]
                    && p["protocol"].as_str().unwrap_or("TCP")
                        == port["protocol"].as_str().unwrap_or("TCP")
            };
            if let Some(node_port) = old_ports.iter().find(same).and_then(|p| p.get("nodePort"))
                && let Some(map) = port.as_object_mut()
            {
                map.insert("nodePort".into(), node_port.clone());
            }
        }
    }
}

/// What a merge patch may change outside `metadata` and `status`, as it was before the patch.
enum Before {
    /// The top-level fields the patch names (a merge patch touches only those).
    Fields(Vec<(String, Option<Value>)>),
    /// The whole object (a patch that is not an object replaces it all).
    Whole(Value),
}

/// Whether two objects declare the same thing: equal outside `metadata` and `status`.
/// Compared in place: a write used to copy both sides whole to compare them.
fn same_declared(a: &Value, b: &Value) -> bool {
    let declared = |k: &String| !matches!(k.as_str(), "metadata" | "status");
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.keys().filter(|k| declared(k)).count() == b.keys().filter(|k| declared(k)).count()
                && a.iter()
                    .filter(|(k, _)| declared(k))
                    .all(|(k, v)| b.get(k) == Some(v))
        }
        (a, b) => a == b,
    }
}

/// The open tables of one write transaction, and the committer's cache of recent objects.
struct Tables<'txn> {
    objects: redb::Table<'txn, &'static str, &'static [u8]>,
    meta: redb::Table<'txn, &'static str, &'static [u8]>,
    audit: redb::Table<'txn, u64, &'static [u8]>,
    cached: &'txn mut ObjectCache,
    /// Events the cache let go of, to be freed off the committer.
    evicted: &'txn mut Vec<Arc<WatchEvent>>,
    /// The newest audit record's position and hash, once read in this transaction: every
    /// audited batch chains onto it, and parsing the last record again for each batch of a
    /// group cost more than hashing.
    last_audit: Option<(u64, String)>,
    /// Each key written and the application it is managed by now (`None`: none, or gone).
    managed_changes: &'txn mut Vec<(String, Option<String>)>,
}

/// A batch's changes before they reach the table: the batch's writes see each other, and a
/// refused batch leaves no trace.
///
/// Each object lives once, in its newest event: that event goes to the watch and its object
/// is what the table stores, so a write neither copies the object nor serialises it twice.
#[derive(Default)]
struct Overlay {
    /// The batch's events so far, in order.
    events: Vec<WatchEvent>,
    /// Per key written: where its object now is, or `None` once deleted.
    latest: BTreeMap<String, Option<Latest>>,
}

/// Where a key's object is in an [`Overlay`], and what is stored beside it.
struct Latest {
    /// Its newest event.
    event: usize,
    applied: Option<Value>,
    application: Option<String>,
}

impl Overlay {
    /// Records a change; `kept` (what is stored beside the object) is None for a deletion.
    fn record(&mut self, event: WatchEvent, kept: Option<(Option<Value>, Option<String>)>) {
        let index = self.events.len();
        self.latest.insert(
            event.key.clone(),
            kept.map(|(applied, application)| Latest {
                event: index,
                applied,
                application,
            }),
        );
        self.events.push(event);
    }
}

/// A [`StoredObject`] borrowed for serialising: the same JSON.
#[derive(Serialize)]
struct StoredRef<'a> {
    object: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application: Option<&'a str>,
}

impl Tables<'_> {
    /// Applies one batch. The inner result is the batch's own verdict; the outer error is a
    /// database failure that must abort the whole transaction.
    fn apply_batch(
        &mut self,
        batch: Batch,
        rv: &mut u64,
        now: jiff::Timestamp,
    ) -> Result<Applied, StoreError> {
        let mut overlay = Overlay::default();
        let mut meta_writes = Vec::new();
        let mut next = *rv;
        for write in batch.writes {
            if let Write::SetMeta { key, value } = write {
                meta_writes.push((key, value));
                continue;
            }
            next += 1;
            match apply_write(&self.objects, self.cached, &mut overlay, write, next, now) {
                Ok(()) => {}
                Err(StoreError::Database(error)) => return Err(StoreError::Database(error)),
                Err(refused) => return Ok(Err(refused)),
            }
        }
        let Overlay { events, latest } = overlay;
        // Whether each event leaves its object as the cache keeps it (the newest for its key,
        // stored with nothing beside it).
        let mut plain = vec![false; events.len()];
        for (key, stored) in latest {
            match stored {
                Some(latest) => {
                    plain[latest.event] = latest.applied.is_none() && latest.application.is_none();
                    let stored = StoredRef {
                        object: &events[latest.event].object,
                        applied: latest.applied.as_ref(),
                        application: latest.application.as_deref(),
                    };
                    self.objects
                        .insert(key.as_str(), to_bytes(&stored).as_slice())
                        .map_err(db_error)?;
                    self.managed_changes
                        .push((key.clone(), latest.application.clone()));
                }
                None => {
                    self.objects.remove(key.as_str()).map_err(db_error)?;
                    self.managed_changes.push((key.clone(), None));
                }
            }
        }
        for (key, value) in meta_writes {
            // Null removes the entry.
            if value.is_null() {
                self.meta.remove(key.as_str()).map_err(db_error)?;
            } else {
                self.meta
                    .insert(key.as_str(), to_bytes(&value).as_slice())
                    .map_err(db_error)?;
            }
        }
        *rv = next;
        if let Some(entry) = batch.audit {
            let (seq, prev_hash) = match self.last_audit.take() {
                Some((seq, hash)) => (seq + 1, hash),
                None => match self.audit.last().map_err(db_error)? {
                    Some((seq, bytes)) => {
                        let record: AuditRecord = serde_json::from_slice(bytes.value())
                            .map_err(|e| db_error(format!("audit record {}: {e}", seq.value())))?;
                        (seq.value() + 1, record.hash)
                    }
                    None => (1, String::new()),
                },
            };
            let mut record = AuditRecord {
                seq,
                time: now.to_string(),
                entry,
                resource_version: next,
                prev_hash,
                hash: String::new(),
            };
            record.hash = record.compute_hash();
            self.audit
                .insert(seq, to_bytes(&record).as_slice())
                .map_err(db_error)?;
            self.last_audit = Some((seq, record.hash));
        }
        let events: Vec<Arc<WatchEvent>> = events.into_iter().map(Arc::new).collect();
        for (event, plain) in events.iter().zip(plain) {
            if plain {
                self.cached.insert(event, self.evicted);
            } else {
                self.cached.remove(&event.key);
            }
        }
        Ok(Ok(events))
    }
}

/// The object as the batch so far left it.
fn current(
    objects: &redb::Table<'_, &str, &[u8]>,
    cached: &ObjectCache,
    overlay: &Overlay,
    key: &str,
) -> Result<Option<StoredObject>, StoreError> {
    match overlay.latest.get(key) {
        // Written twice in one batch (rare): the earlier event keeps its own copy.
        Some(Some(latest)) => Ok(Some(StoredObject {
            object: overlay.events[latest.event].object.clone(),
            applied: latest.applied.clone(),
            application: latest.application.clone(),
        })),
        Some(None) => Ok(None),
        None => match cached.get(key) {
            // A copy costs about a third of parsing the stored text again.
            Some(event) => {
                cached.reads.copied.fetch_add(1, Ordering::Relaxed);
                Ok(Some(StoredObject {
                    object: event.object.clone(),
                    applied: None,
                    application: None,
                }))
            }
            None => {
                let stored = read_json(objects.get(key).map_err(db_error)?)?;
                if stored.is_some() {
                    cached.reads.parsed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(stored)
            }
        },
    }
}

fn check(key: &str, current: &StoredObject, precondition: &Precondition) -> Result<(), StoreError> {
    precondition
        .check(current.resource_version(), current.uid())
        .map_err(|refusal| StoreError::Conflict {
            key: key.to_string(),
            reason: refusal.to_string(),
        })
}

fn apply_write(
    objects: &redb::Table<'_, &str, &[u8]>,
    cached: &ObjectCache,
    overlay: &mut Overlay,
    write: Write,
    rv: u64,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    let existing = |overlay: &Overlay, key: &str| -> Result<StoredObject, StoreError> {
        current(objects, cached, overlay, key)?.ok_or_else(|| StoreError::NotFound(key.to_string()))
    };
    let (kind, key, stored) = match write {
        Write::Create {
            mut object,
            applied,
            application,
        } => {
            let object_key = key_of(&object)?;
            let key = storage_key(&object_key);
            if current(objects, cached, overlay, &key)?.is_some() {
                return Err(StoreError::AlreadyExists(key));
            }
            // Invariant: nothing lives in a namespace that does not exist, so no controller can
            // make an object that the garbage collector deletes for its namespace, round after
            // round (each round an audit record). Events are let through: they ride in the
            // same batch as the status they explain (a kubelet stopping a pod in a namespace
            // just pruned), nothing recreates them, and the collector removes them.
            let namespace = &object_key.namespace;
            if object_key.kind != Kind::Event
                && shipshape_reconciler::gc::needs_namespace_object(namespace)
                && current(objects, cached, overlay, &namespace_key(namespace))?.is_none()
            {
                return Err(StoreError::NamespaceNotFound {
                    key,
                    namespace: namespace.clone(),
                });
            }
            if object.at("/metadata/uid").and_then(Value::as_str).is_none() {
                set_metadata(
                    &mut object,
                    "uid",
                    Value::from(uuid::Uuid::new_v4().to_string()),
                );
            }
            set_metadata(
                &mut object,
                "creationTimestamp",
                Value::from(now.to_string()),
            );
            set_metadata(&mut object, "resourceVersion", Value::from(rv.to_string()));
            set_metadata(&mut object, "generation", Value::from(1));
            let stored = StoredObject {
                object,
                applied,
                application,
            };
            (EventType::Added, key, stored)
        }
        Write::Update {
            key,
            resource_version,
            mut object,
            applied,
        } => {
            let key = storage_key(&key);
            let current = existing(overlay, &key)?;
            check(
                &key,
                &current,
                &Precondition::ResourceVersion(resource_version),
            )?;
            if storage_key(&key_of(&object)?) != key {
                return Err(StoreError::Invalid(format!(
                    "an update of {key} must not rename it"
                )));
            }
            let generation = current
                .object
                .at("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            keep_allocated(&current.object, &mut object);
            let changed = !same_declared(&current.object, &object);
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                if let Some(value) = current.object.at(&format!("/metadata/{field}")) {
                    set_metadata(&mut object, field, value.clone());
                }
            }
            set_metadata(&mut object, "resourceVersion", Value::from(rv.to_string()));
            set_metadata(
                &mut object,
                "generation",
                Value::from(generation + i64::from(changed)),
            );
            if let Some(map) = object.as_object_mut() {
                match current.object.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            let stored = StoredObject {
                object,
                applied: applied.or(current.applied),
                application: current.application,
            };
            (EventType::Modified, key, stored)
        }
        Write::UpdateStatus {
            key,
            precondition,
            status,
        } => {
            let key = storage_key(&key);
            let mut current = existing(overlay, &key)?;
            if let Some(precondition) = &precondition {
                check(&key, &current, precondition)?;
            }
            if let Some(map) = current.object.as_object_mut() {
                map.insert("status".into(), status);
            }
            set_metadata(
                &mut current.object,
                "resourceVersion",
                Value::from(rv.to_string()),
            );
            (EventType::Modified, key, current)
        }
        Write::SetCondition {
            key,
            precondition,
            condition,
        } => {
            let key = storage_key(&key);
            let mut current = existing(overlay, &key)?;
            if let Some(precondition) = &precondition {
                check(&key, &current, precondition)?;
            }
            set_condition(&mut current.object, condition);
            set_metadata(
                &mut current.object,
                "resourceVersion",
                Value::from(rv.to_string()),
            );
            (EventType::Modified, key, current)
        }
        Write::Patch {
            key,
            precondition,
            patch,
        } => {
            let key = storage_key(&key);
            let mut current = existing(overlay, &key)?;
            if let Some(precondition) = &precondition {
                check(&key, &current, precondition)?;
            }
            // What the patch may change outside metadata and status, as it was: a merge patch
            // touches only its own top-level keys (a patch that is not an object replaces all).
            let before = match patch.as_object() {
                Some(p) => Before::Fields(
                    p.keys()
                        .filter(|k| !matches!(k.as_str(), "metadata" | "status"))
                        .map(|k| (k.clone(), current.object.get(k).cloned()))
                        .collect(),
                ),
                None => Before::Whole(current.object.clone()),
            };
            let identity: Vec<(&str, Option<Value>)> = [
                "uid",
                "creationTimestamp",
                "name",
                "namespace",
                "generation",
            ]
            .into_iter()
            .map(|field| {
                (
                    field,
                    current.object.at(&format!("/metadata/{field}")).cloned(),
                )
            })
            .collect();
            json_patch::merge(&mut current.object, &patch);
            for (field, value) in identity {
                if let Some(value) = value {
                    set_metadata(&mut current.object, field, value);
                }
            }
            let changed = match &before {
                Before::Fields(fields) => fields
                    .iter()
                    .any(|(k, old)| current.object.get(k) != old.as_ref()),
                Before::Whole(whole) => !same_declared(whole, &current.object),
            };
            if changed {
                let generation = current
                    .object
                    .at("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                set_metadata(
                    &mut current.object,
                    "generation",
                    Value::from(generation + 1),
                );
            }
            set_metadata(
                &mut current.object,
                "resourceVersion",
                Value::from(rv.to_string()),
            );
            (EventType::Modified, key, current)
        }
        Write::MarkDeleting {
            key,
            precondition,
            grace_seconds,
        } => {
            let key = storage_key(&key);
            let mut current = existing(overlay, &key)?;
            check(&key, &current, &precondition)?;
            if current.object.at("/metadata/deletionTimestamp").is_none() {
                let deadline = now
                    .checked_add(jiff::SignedDuration::from_secs(grace_seconds))
                    .unwrap_or(now);
                set_metadata(
                    &mut current.object,
                    "deletionTimestamp",
                    Value::from(deadline.to_string()),
                );
                set_metadata(
                    &mut current.object,
                    "deletionGracePeriodSeconds",
                    Value::from(grace_seconds),
                );
            }
            set_metadata(
                &mut current.object,
                "resourceVersion",
                Value::from(rv.to_string()),
            );
            (EventType::Modified, key, current)
        }
        Write::Delete { key, precondition } => {
            let key = storage_key(&key);
            let current = existing(overlay, &key)?;
            check(&key, &current, &precondition)?;
            let mut object = current.object;
            set_metadata(&mut object, "resourceVersion", Value::from(rv.to_string()));
            let event = WatchEvent {
                resource_version: rv,
                kind: EventType::Deleted,
                key,
                object,
            };
            overlay.record(event, None);
            return Ok(());
        }
        Write::SetMeta { .. } => {
            return Err(StoreError::Invalid(
                "meta writes are not object writes".into(),
            ));
        }
    };
    let StoredObject {
        object,
        applied,
        application,
    } = stored;
    let event = WatchEvent {
        resource_version: rv,
        kind,
        key,
        object,
    };
    overlay.record(event, Some((applied, application)));
    Ok(())
}

/// Puts `condition` into `object`'s `status.conditions` in place of the one of its type.
fn set_condition(object: &mut Value, mut condition: Value) {
    let kind = condition.get("type").cloned();
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let status = map
        .entry("status")
        .or_insert_with(|| Value::Object(Default::default()));
    if !status.is_object() {
        *status = Value::Object(Default::default());
    }
    let conditions = &mut status["conditions"];
    if !conditions.is_array() {
        *conditions = Value::Array(Vec::new());
    }
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    match list.iter_mut().find(|c| c.get("type") == kind.as_ref()) {
        Some(old) => {
            if old.get("status") == condition.get("status")
                && let (Some(time), Some(new)) = (
                    old.get("lastTransitionTime").cloned(),
                    condition.as_object_mut(),
                )
            {
                new.insert("lastTransitionTime".into(), time);
            }
            *old = condition;
        }
        None => list.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_map(name: &str, data: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "default"}, "data": {"k": data}})
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).expect("valid")
    }

    fn create(name: &str) -> Write {
        Write::Create {
            object: config_map(name, "1"),
            applied: None,
            application: Some("web".into()),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db.redb")).expect("opens");
        (dir, store)
    }

    fn key(name: &str) -> ObjectKey {
        parse_storage_key(&format!("ConfigMap/default/{name}")).expect("key")
    }

    #[test]
    fn the_objects_of_an_application_follow_creates_deletes_and_refused_batches() {
        let (_dir, mut store) = store();
        let names = |store: &Store, app: &str| -> Vec<String> {
            store
                .managed_by(app)
                .expect("reads")
                .into_iter()
                .map(|(key, _)| key.name)
                .collect()
        };
        let batch = |writes: Vec<Write>| Batch {
            writes,
            audit: None,
        };
        store
            .apply(batch(vec![create("a"), create("b")]), now())
            .expect("applies");
        // The index is built on first use, then kept by each commit.
        assert_eq!(names(&store, "web"), vec!["a", "b"]);
        let other = Write::Create {
            object: config_map("c", "1"),
            applied: None,
            application: Some("api".into()),
        };
        let plain = Write::Create {
            object: config_map("d", "1"),
            applied: None,
            application: None,
        };
        store
            .apply(batch(vec![other, plain]), now())
            .expect("applies");
        let uid = store
            .get(&key("a"))
            .expect("reads")
            .expect("a exists")
            .uid()
            .to_string();
        let delete = Write::Delete {
            key: key("a"),
            precondition: Precondition::Uid(uid),
        };
        store.apply(batch(vec![delete]), now()).expect("applies");
        // A refused batch (b exists) changes nothing.
        let refused = store.apply(batch(vec![create("e"), create("b")]), now());
        assert!(refused.is_err());
        assert_eq!(names(&store, "web"), vec!["b"]);
        assert_eq!(names(&store, "api"), vec!["c"]);
        assert!(names(&store, "none").is_empty());
    }

    #[test]
    fn a_service_keeps_its_allocated_addresses_across_updates_that_leave_them_unset() {
        let current = json!({"kind": "Service", "spec": {
            "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"], "type": "NodePort",
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP", "nodePort": 30053}],
        }});
        let mut from_git = json!({"kind": "Service", "spec": {"type": "NodePort",
            "ports": [{"port": 80, "targetPort": 9090}, {"port": 53, "protocol": "TCP"}]}});
        keep_allocated(&current, &mut from_git);
        assert_eq!(from_git["spec"]["clusterIP"], "10.96.0.7");
        assert_eq!(from_git["spec"]["ports"][0]["nodePort"], 30080);
        assert!(
            from_git["spec"]["ports"][1].get("nodePort").is_none(),
            "a different protocol is another port"
        );
        let mut explicit = json!({"kind": "Service", "spec": {"clusterIP": "10.96.0.9"}});
        keep_allocated(&current, &mut explicit);
        assert_eq!(
            explicit["spec"]["clusterIP"], "10.96.0.9",
            "what Git sets wins"
        );
        let mut config = json!({"kind": "ConfigMap", "spec": {}});
        keep_allocated(
            &json!({"kind": "ConfigMap", "spec": {"clusterIP": "x"}}),
            &mut config,
        );
        assert!(config["spec"].get("clusterIP").is_none());
    }

    /// Applies `write` alone and returns object `a` as it is afterwards.
    fn write_a(store: &mut Store, write: Write) -> Value {
        store
            .apply(
                Batch {
                    writes: vec![write],
                    audit: None,
                },
                now(),
            )
            .expect("applies");
        store.get(&key("a")).expect("reads").expect("exists").object
    }

    #[test]
    fn a_condition_replaces_its_own_type_and_keeps_its_transition_time_when_unchanged() {
        let (_dir, mut store) = store();
        write_a(&mut store, create("a"));
        let set = |store: &mut Store, status: &str, time: &str| {
            let condition = json!({"type": "Ready", "status": status, "lastTransitionTime": time});
            write_a(
                store,
                Write::SetCondition {
                    key: key("a"),
                    precondition: None,
                    condition,
                },
            )
        };
        let first = set(&mut store, "True", "t1");
        assert_eq!(
            first["status"]["conditions"],
            json!([{"type": "Ready", "status": "True", "lastTransitionTime": "t1"}])
        );
        let same = set(&mut store, "True", "t2");
        assert_eq!(same["status"]["conditions"][0]["lastTransitionTime"], "t1");
        let flipped = set(&mut store, "False", "t3");
        assert_eq!(
            flipped["status"]["conditions"],
            json!([{"type": "Ready", "status": "False", "lastTransitionTime": "t3"}])
        );
        assert_eq!(flipped["data"], json!({"k": "1"}), "the rest is untouched");
    }

    #[test]
    fn the_object_cache_forgets_the_least_recently_written_objects() {
        let event = |key: &str, rv: u64| {
            Arc::new(WatchEvent {
                resource_version: rv,
                kind: EventType::Modified,
                key: key.to_string(),
                object: json!({}),
            })
        };
        let mut cache = ObjectCache::default();
        let mut evicted = Vec::new();
        cache.insert(&event("old", 1), &mut evicted);
        cache.insert(&event("renewed", 2), &mut evicted);
        cache.insert(&event("renewed", 3), &mut evicted);
        let rvs = |evicted: &[Arc<WatchEvent>]| -> Vec<u64> {
            evicted.iter().map(|e| e.resource_version).collect()
        };
        assert_eq!(rvs(&evicted), vec![2], "a superseded write leaves at once");
        // One object more than the cache holds: `old`, the least recently written, leaves.
        let last = u64::try_from(CACHED_OBJECTS).expect("fits") + 2;
        for rv in 4..=last {
            cache.insert(&event(&format!("filler-{rv}"), rv), &mut evicted);
        }
        assert_eq!(rvs(&evicted), vec![2, 1]);
        assert!(cache.get("old").is_none());
        assert_eq!(cache.get("renewed").map(|e| e.resource_version), Some(3));
        // A new key pushes out one object, the least recently written (`renewed`); rewriting
        // it over and over pushes out no more, and the queue of writes stays bounded.
        evicted.clear();
        let hot_last = last + 3 * u64::try_from(CACHED_OBJECTS).expect("fits");
        for rv in last + 1..=hot_last {
            cache.insert(&event("hot", rv), &mut evicted);
        }
        let others: Vec<&str> = evicted
            .iter()
            .map(|e| e.key.as_str())
            .filter(|key| *key != "hot")
            .collect();
        assert_eq!(others, vec!["renewed"]);
        assert_eq!(cache.get("hot").map(|e| e.resource_version), Some(hot_last));
        assert_eq!(cache.by_key.len(), CACHED_OBJECTS);
        assert!(cache.order.len() <= 2 * CACHED_OBJECTS + 1);
        evicted.clear();
        cache.clear(&mut evicted);
        assert!(cache.get("renewed").is_none());
        assert_eq!(evicted.len(), CACHED_OBJECTS);
    }

    #[test]
    fn writes_to_recently_written_objects_see_exactly_what_was_stored() {
        let (dir, store) = store();
        let plain = |name: &str| Write::Create {
            object: config_map(name, "1"),
            applied: None,
            application: None,
        };
        let patch = |name: &str, data: &str, precondition: Option<Precondition>| Batch {
            writes: vec![Write::Patch {
                key: key(name),
                precondition,
                patch: json!({"data": {"k": data}}),
            }],
            audit: None,
        };
        let one = |write: Write| Batch {
            writes: vec![write],
            audit: None,
        };
        // One group: a plain object and a Git-managed one created, patched by a later batch
        // (which must see the earlier one), a stale patch refused, and a deletion.
        let results = store
            .apply_group(
                vec![
                    one(plain("a")),
                    one(create("g")),
                    one(plain("gone")),
                    patch("a", "2", None),
                    patch("a", "stale", Some(Precondition::ResourceVersion(1))),
                    patch("g", "2", None),
                    one(Write::Delete {
                        key: key("gone"),
                        precondition: Precondition::ResourceVersion(3),
                    }),
                ],
                now(),
            )
            .expect("commits");
        assert!(matches!(results[4], Err(StoreError::Conflict { .. })));
        // Later groups write on top of what the cache holds.
        store
            .apply_group(vec![patch("a", "3", None), patch("g", "3", None)], now())
            .expect("commits");
        assert!(matches!(
            store
                .apply_group(vec![patch("gone", "x", None)], now())
                .expect("runs")[0],
            Err(StoreError::NotFound(_))
        ));
        let read = |store: &Store, name: &str| store.get(&key(name)).expect("reads");
        let a = read(&store, "a").expect("a exists");
        assert_eq!(a.object["data"]["k"], "3");
        assert_eq!(a.resource_version(), 7);
        assert_eq!(
            read(&store, "g").expect("g exists").application.as_deref(),
            Some("web")
        );
        assert_eq!(read(&store, "gone"), None);
        // What a fresh process reads from disk is what the cache held.
        let before: Vec<_> = ["a", "g"].iter().map(|n| read(&store, n)).collect();
        drop(store);
        let store = Store::open(&dir.path().join("db.redb")).expect("reopens");
        let after: Vec<_> = ["a", "g"].iter().map(|n| read(&store, n)).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn a_patch_counts_a_generation_only_when_it_changes_what_is_declared() {
        let (_dir, mut store) = store();
        write_a(&mut store, create("a"));
        let generation_after = |store: &mut Store, patch: Value| {
            let patched = write_a(
                store,
                Write::Patch {
                    key: key("a"),
                    precondition: None,
                    patch,
                },
            );
            patched["metadata"]["generation"].clone()
        };
        assert_eq!(
            generation_after(&mut store, json!({"status": {"x": 1}})),
            1,
            "status only"
        );
        assert_eq!(
            generation_after(&mut store, json!({"metadata": {"labels": {"l": "v"}}})),
            1,
            "metadata only"
        );
        assert_eq!(
            generation_after(&mut store, json!({"data": {"k": "1"}})),
            1,
            "the same value"
        );
        assert_eq!(
            generation_after(&mut store, json!({"data": {"k": "2"}})),
            2,
            "a new value"
        );
        assert_eq!(
            generation_after(&mut store, json!({"spec": {"n": 1}})),
            3,
            "a new key"
        );
        assert_eq!(
            generation_after(&mut store, json!({"spec": null})),
            4,
            "a removed key"
        );
    }

    #[test]
    fn versions_every_write_and_keeps_identity_on_update() {
        let (_dir, mut store) = store();
        let events = store
            .apply(
                Batch {
                    writes: vec![create("a"), create("b")],
                    audit: None,
                },
                now(),
            )
            .expect("applies");
        assert_eq!(
            events
                .iter()
                .map(|e| e.resource_version)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
        let before = store.get(&key("a")).expect("reads").expect("exists");
        assert_eq!(before.resource_version(), 1);
        assert_eq!(before.object["metadata"]["generation"], 1);

        store
            .apply(
                Batch {
                    writes: vec![Write::Update {
                        key: key("a"),
                        resource_version: 1,
                        object: config_map("a", "2"),
                        applied: None,
                    }],
                    audit: None,
                },
                now(),
            )
            .expect("updates");
        let after = store.get(&key("a")).expect("reads").expect("exists");
        assert_eq!(after.resource_version(), 3);
        assert_eq!(after.uid(), before.uid());
        assert_eq!(after.object["metadata"]["generation"], 2);
        assert_eq!(after.application.as_deref(), Some("web"));
        assert_eq!(store.resource_version().expect("reads"), 3);
    }

    #[test]
    fn nothing_is_created_in_a_namespace_that_does_not_exist() {
        let (_dir, mut store) = store();
        let in_shop = |name: &str| Write::Create {
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": "shop"}}),
            applied: None,
            application: None,
        };
        let namespace = Write::Create {
            object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
            applied: None,
            application: None,
        };
        let batch = |writes| Batch {
            writes,
            audit: None,
        };
        match store.apply(batch(vec![create("a"), in_shop("x")]), now()) {
            Err(error @ StoreError::NamespaceNotFound { .. }) => assert_eq!(
                error.to_string(),
                "ConfigMap/shop/x: namespaces \"shop\" not found"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(store.resource_version().expect("reads"), 0);
        // The Namespace earlier in the same batch, or already stored, lets the create through.
        store
            .apply(batch(vec![namespace, in_shop("x")]), now())
            .expect("applies");
        store
            .apply(batch(vec![in_shop("y")]), now())
            .expect("applies");
        // Built-in namespaces and cluster-scoped objects need no Namespace object.
        store
            .apply(batch(vec![create("a")]), now())
            .expect("applies");
    }

    #[test]
    fn a_stale_precondition_refuses_the_whole_batch() {
        let (_dir, mut store) = store();
        store
            .apply(
                Batch {
                    writes: vec![create("a")],
                    audit: None,
                },
                now(),
            )
            .expect("applies");
        let stale = Batch {
            writes: vec![
                create("b"),
                Write::Delete {
                    key: key("a"),
                    precondition: Precondition::ResourceVersion(99),
                },
            ],
            audit: None,
        };
        assert!(matches!(
            store.apply(stale, now()),
            Err(StoreError::Conflict { .. })
        ));
        // Nothing of the batch happened: b was not created, the version did not move.
        assert_eq!(store.get(&key("b")).expect("reads"), None);
        assert_eq!(store.resource_version().expect("reads"), 1);
        assert!(matches!(
            store.apply(
                Batch {
                    writes: vec![create("a")],
                    audit: None
                },
                now()
            ),
            Err(StoreError::AlreadyExists(_))
        ));
    }

    #[test]
    fn replays_events_and_expires_old_positions() {
        let (dir, mut store) = store();
        store
            .apply(
                Batch {
                    writes: vec![create("a"), create("b")],
                    audit: None,
                },
                now(),
            )
            .expect("applies");
        store
            .apply(
                Batch {
                    writes: vec![Write::Delete {
                        key: key("a"),
                        precondition: Precondition::ResourceVersion(1),
                    }],
                    audit: None,
                },
                now(),
            )
            .expect("deletes");
        let kinds: Vec<EventType> = store
            .events_since(1)
            .expect("replays")
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, vec![EventType::Added, EventType::Deleted]);
        assert_eq!(store.events_since(3).expect("replays"), vec![]);

        // Push the log past its limit: the start is no longer replayable.
        for chunk in 0..(WATCH_LOG_LIMIT / 1000 + 1) {
            let writes = (0..1000)
                .map(|i| create(&format!("n{chunk}-{i}")))
                .collect();
            store
                .apply(
                    Batch {
                        writes,
                        audit: None,
                    },
                    now(),
                )
                .expect("applies");
        }
        assert!(matches!(
            store.events_since(1),
            Err(StoreError::Expired { .. })
        ));
        let newest = store.resource_version().expect("reads");
        assert_eq!(store.events_since(newest - 5).expect("recent").len(), 5);

        // The log lives in memory: after a restart only the present can be watched from,
        // and an older position is told to list again.
        drop(store);
        let store = Store::open(&dir.path().join("db.redb")).expect("reopens");
        assert!(matches!(
            store.events_since(newest - 5),
            Err(StoreError::Expired { .. })
        ));
        assert_eq!(store.events_since(newest).expect("present"), vec![]);
        // A position past the end (a live-only watch) replays nothing and overflows nothing.
        for future in [newest + 1, u64::MAX] {
            assert_eq!(store.events_since(future).expect("future"), vec![]);
        }
    }

    #[test]
    fn audited_batches_of_one_group_chain_onto_each_other() {
        let (_dir, store) = store();
        let audited = |write: Write, name: &str| Batch {
            writes: vec![write],
            audit: Some(AuditEntry {
                actor: "git".into(),
                action: "sync".into(),
                subject: "web".into(),
                details: json!({"object": name}),
            }),
        };
        let results = store
            .apply_group(
                vec![
                    audited(create("a"), "a"),
                    // Refused (it exists): no record.
                    audited(create("a"), "a again"),
                    audited(create("b"), "b"),
                ],
                now(),
            )
            .expect("commits");
        assert!(matches!(results[1], Err(StoreError::AlreadyExists(_))));
        store
            .apply_group(vec![audited(create("c"), "c")], now())
            .expect("commits");
        let records = store.audit_records().expect("reads");
        assert_eq!(verify_audit(&records), Ok(3));
        let subjects: Vec<(u64, &Value)> = records
            .iter()
            .map(|r| (r.seq, &r.entry.details["object"]))
            .collect();
        assert_eq!(
            subjects,
            [(1, &json!("a")), (2, &json!("b")), (3, &json!("c"))]
        );
    }

    #[test]
    fn pages_stop_at_their_byte_budget_but_always_hold_one_item() {
        let (_dir, store) = store();
        let big = "x".repeat(1000);
        let writes = ["a", "b", "c"]
            .iter()
            .map(|name| Write::Create {
                object: config_map(name, &big),
                applied: None,
                application: None,
            })
            .collect();
        let audit = |subject: &str| AuditEntry {
            actor: "git".into(),
            action: "sync".into(),
            subject: subject.into(),
            details: json!({"value": big}),
        };
        store
            .apply_group(
                vec![
                    Batch {
                        writes,
                        audit: Some(audit("first")),
                    },
                    Batch {
                        writes: vec![create("d")],
                        audit: Some(audit("second")),
                    },
                ],
                now(),
            )
            .expect("commits");
        let view = store.read_view().expect("a view");
        let size = PageSize {
            limit: 10,
            budget: 1500,
        };
        let first = view
            .page(Kind::ConfigMap, Some("default"), None, size, |_| true)
            .expect("reads");
        assert_eq!(first.objects.len(), 1, "one big object fills the budget");
        assert_eq!(first.next.as_deref(), Some("ConfigMap/default/b"));
        let tiny = PageSize {
            limit: 10,
            budget: 1,
        };
        let rest = view
            .page(
                Kind::ConfigMap,
                Some("default"),
                first.next.as_deref(),
                tiny,
                |_| true,
            )
            .expect("reads");
        assert_eq!(
            rest.objects.len(),
            1,
            "an item larger than the budget still comes"
        );
        assert_eq!(
            view.count(Kind::ConfigMap, Some("default"), "ConfigMap/default/b")
                .expect("counts"),
            3
        );
        let page = store.audit_page(0, None, tiny).expect("reads");
        assert_eq!((page.records.len(), page.newest), (1, 2));
        let page = store.audit_page(1, Some(1), PageSize::ALL).expect("reads");
        assert!(
            page.records.is_empty(),
            "nothing after the first page's end"
        );
    }

    #[test]
    fn the_audit_chain_detects_tampering() {
        let (_dir, mut store) = store();
        for name in ["a", "b", "c"] {
            let audit = AuditEntry {
                actor: "git".into(),
                action: "sync".into(),
                subject: "web".into(),
                details: json!({"object": name}),
            };
            store
                .apply(
                    Batch {
                        writes: vec![create(name)],
                        audit: Some(audit),
                    },
                    now(),
                )
                .expect("applies");
        }
        let mut records = store.audit_records().expect("reads");
        assert_eq!(verify_audit(&records), Ok(3));
        records[1].entry.details = json!({"object": "forged"});
        assert_eq!(
            verify_audit(&records),
            Err((2, "its content does not match its hash (altered)".into()))
        );
        records.remove(1);
        assert!(verify_audit(&records).is_err());
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.redb");
        {
            let mut store = Store::open(&path).expect("opens");
            store
                .apply(
                    Batch {
                        writes: vec![create("a")],
                        audit: None,
                    },
                    now(),
                )
                .expect("applies");
            assert!(Store::open(&path).is_err(), "a second writer is refused");
        }
        let store = Store::open(&path).expect("reopens");
        assert_eq!(store.resource_version().expect("reads"), 1);
        assert!(store.get(&key("a")).expect("reads").is_some());
    }
}
