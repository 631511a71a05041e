//! The Store actor: the only writer of the database, and the source of watch events.
//!
//! Every write arrives as an [`Apply`] message holding one [`Batch`]; the actor commits it
//! durably, then publishes the resulting events to watchers. Reads are messages too, so every
//! caller sees a state that some committed transaction produced.

use std::sync::Arc;
use std::sync::mpsc;

use kameo::Actor;
use kameo::message::{Context, Message};
use kameo::reply::{DelegatedReply, ReplySender};
use serde_json::Value;
use shipshape_api::{Kind, ObjectKey};
use tokio::sync::broadcast;

use crate::store::{Applied, Batch, Store, StoreError, StoredObject, WatchEvent};

/// How many events a live watcher may fall behind before it must relist. An event a watcher
/// has read is dropped from the buffer by the last reader, so the size costs memory only while
/// someone lags; relisting 150,000 pods costs far more.
const WATCH_BUFFER: usize = 262_144;

/// Roughly the most writes one transaction commits together (whole batches are never split).
const GROUP_WRITES: usize = 2048;

/// A batch waiting for the committer, and whom to tell (nobody, for a `tell`).
type Pending = (Batch, Option<ReplySender<Applied>>);

/// Owns the [`Store`] and fans out its changes.
///
/// Writes go to one committer thread that takes every batch waiting and commits them in one
/// transaction (group commit): each batch is acknowledged only once durable, yet many writers
/// share one fsync. Reads run on the actor against redb's snapshot isolation, never waiting for
/// a commit.
#[derive(Actor)]
pub struct StoreActor {
    store: Arc<Store>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    committer: mpsc::Sender<Pending>,
}

impl StoreActor {
    /// Wraps an opened store and starts its committer thread (which ends with the actor).
    pub fn new(store: Store) -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let store = Arc::new(store);
        let (committer, queue) = mpsc::channel();
        let (thread_store, thread_events) = (store.clone(), events.clone());
        let spawned = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || commit_loop(&thread_store, &thread_events, &queue));
        if let Err(error) = spawned {
            // Without the thread every write answers "database unavailable" (its queue is gone).
            tracing::error!(%error, "cannot start the store's committer thread");
        }
        Self {
            store,
            events,
            committer,
        }
    }
}

fn commit_loop(
    store: &Store,
    events: &broadcast::Sender<Arc<WatchEvent>>,
    queue: &mpsc::Receiver<Pending>,
) {
    while let Ok(first) = queue.recv() {
        let mut writes = first.0.writes.len();
        let mut group = vec![first];
        while writes < GROUP_WRITES {
            match queue.try_recv() {
                Ok(next) => {
                    writes += next.0.writes.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let (batches, replies): (Vec<Batch>, Vec<_>) = group.into_iter().unzip();
        let count = batches.len();
        let started = std::time::Instant::now();
        let results: Vec<Applied> = match store.apply_group(batches, jiff::Timestamp::now()) {
            Ok(results) => results,
            Err(error) => vec![Err(error); count],
        };
        let metrics = &crate::metrics::METRICS;
        let written: Vec<&Arc<WatchEvent>> = results.iter().flatten().flatten().collect();
        if let Some(last) = written.last() {
            metrics.store_write(written.len(), started.elapsed(), last.resource_version);
        }
        metrics
            .watchers
            .set(i64::try_from(events.receiver_count()).unwrap_or(i64::MAX));
        for event in written {
            // No receiver is not an error: nobody is watching yet.
            let _ = events.send(event.clone());
        }
        for (result, reply) in results.into_iter().zip(replies) {
            match reply {
                Some(reply) => reply.send(result),
                None => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "a store write nobody waited for was refused");
                    }
                }
            }
        }
    }
}

/// Apply a batch, all or nothing; replies once it is durable.
pub struct Apply(pub Batch);

impl Message<Apply> for StoreActor {
    type Reply = DelegatedReply<Applied>;

    async fn handle(
        &mut self,
        Apply(batch): Apply,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        // A `tell` has no reply sender: the write still happens, nobody hears of it.
        let (delegated, reply) = ctx.reply_sender();
        if let Err(mpsc::SendError((_, Some(reply)))) = self.committer.send((batch, reply)) {
            reply.send(Err(StoreError::Database(
                "the store's committer has stopped".into(),
            )));
        }
        delegated
    }
}

/// Read one object.
pub struct Get(pub ObjectKey);

impl Message<Get> for StoreActor {
    type Reply = Result<Option<StoredObject>, StoreError>;

    async fn handle(&mut self, Get(key): Get, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.store.get(&key)
    }
}

/// List objects, optionally of one kind and namespace.
pub struct List {
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only this namespace.
    pub namespace: Option<String>,
}

impl Message<List> for StoreActor {
    type Reply = Result<Vec<(ObjectKey, StoredObject)>, StoreError>;

    async fn handle(&mut self, list: List, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.store.list(list.kind, list.namespace.as_deref())
    }
}

/// List the objects one application manages.
pub struct ManagedBy(pub String);

impl Message<ManagedBy> for StoreActor {
    type Reply = Result<Vec<(ObjectKey, StoredObject)>, StoreError>;

    async fn handle(
        &mut self,
        ManagedBy(app): ManagedBy,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.store.managed_by(&app)
    }
}

/// Read one piece of control-plane state.
pub struct GetMeta(pub String);

impl Message<GetMeta> for StoreActor {
    type Reply = Result<Option<Value>, StoreError>;

    async fn handle(
        &mut self,
        GetMeta(key): GetMeta,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.store.get_meta(&key)
    }
}

/// Read all control-plane state under a prefix.
pub struct ListMeta(pub String);

impl Message<ListMeta> for StoreActor {
    type Reply = Result<std::collections::BTreeMap<String, Value>, StoreError>;

    async fn handle(
        &mut self,
        ListMeta(prefix): ListMeta,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.store.list_meta(&prefix)
    }
}

/// Start watching after a resourceVersion.
pub struct Watch {
    /// Changes after this resourceVersion are delivered.
    pub after: u64,
}

/// A watch: the changes already logged, then every later one live.
pub struct WatchStart {
    /// Logged changes after the requested resourceVersion, in order.
    pub replay: Vec<Arc<WatchEvent>>,
    /// Later changes. Skip those at or below the last replayed resourceVersion; a `Lagged`
    /// error means the watcher fell too far behind and must list again.
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
}

impl Message<Watch> for StoreActor {
    type Reply = Result<WatchStart, StoreError>;

    async fn handle(&mut self, watch: Watch, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        // Subscribe before reading the log, so no change falls between the two.
        let live = self.events.subscribe();
        let replay = self.store.events_since(watch.after)?;
        Ok(WatchStart { replay, live })
    }
}

/// List every object of some kinds and follow their changes: the consistent start of a
/// controller's cache.
pub struct ListWatch(pub Vec<Kind>);

/// The objects of a [`ListWatch`] and the watch that continues from them.
pub struct ListWatchStart {
    /// The resourceVersion the list is at: live events at or below it are already in it.
    pub resource_version: u64,
    /// The objects, in key order.
    pub objects: Vec<(ObjectKey, StoredObject)>,
    /// Every later change (of every kind: filter).
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
}

impl Message<ListWatch> for StoreActor {
    type Reply = Result<ListWatchStart, StoreError>;

    async fn handle(
        &mut self,
        ListWatch(kinds): ListWatch,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        // Subscribe before reading, so no change falls between the two.
        let live = self.events.subscribe();
        let (resource_version, objects) = self.store.snapshot(&kinds)?;
        Ok(ListWatchStart {
            resource_version,
            objects,
            live,
        })
    }
}

/// Read the whole audit log, oldest first.
pub struct AuditLog;

impl Message<AuditLog> for StoreActor {
    type Reply = Result<Vec<crate::store::AuditRecord>, StoreError>;

    async fn handle(&mut self, _: AuditLog, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.store.audit_records()
    }
}

/// Read the newest resourceVersion.
pub struct ResourceVersion;

impl Message<ResourceVersion> for StoreActor {
    type Reply = Result<u64, StoreError>;

    async fn handle(
        &mut self,
        _: ResourceVersion,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.store.resource_version()
    }
}
