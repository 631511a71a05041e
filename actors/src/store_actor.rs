//! The Store actor: the only writer of the database, and the source of watch events.
//!
//! Every write arrives as an [`Apply`] message holding one [`Batch`]; the actor commits it
//! durably, then publishes the resulting events to watchers. Reads are messages too, so every
//! caller sees a state that some committed transaction produced.

use kameo::Actor;
use kameo::message::{Context, Message};
use serde_json::Value;
use shipshape_api::{Kind, ObjectKey};
use tokio::sync::broadcast;

use crate::store::{Batch, Store, StoreError, StoredObject, WatchEvent};

/// How many events a live watcher may fall behind before it must relist.
const WATCH_BUFFER: usize = 16_384;

/// Owns the [`Store`] and fans out its changes.
#[derive(Actor)]
pub struct StoreActor {
    store: Store,
    events: broadcast::Sender<WatchEvent>,
}

impl StoreActor {
    /// Wraps an opened store.
    pub fn new(store: Store) -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Self { store, events }
    }
}

/// Apply a batch, all or nothing; replies once it is durable.
pub struct Apply(pub Batch);

impl Message<Apply> for StoreActor {
    type Reply = Result<Vec<WatchEvent>, StoreError>;

    async fn handle(
        &mut self,
        Apply(batch): Apply,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        // redb commits with fsync: let the runtime move other tasks off this thread meanwhile.
        let started = std::time::Instant::now();
        let events =
            tokio::task::block_in_place(|| self.store.apply(batch, jiff::Timestamp::now()))?;
        let metrics = &crate::metrics::METRICS;
        if let Some(last) = events.last() {
            metrics.store_write(events.len(), started.elapsed(), last.resource_version);
        }
        metrics
            .watchers
            .set(i64::try_from(self.events.receiver_count()).unwrap_or(i64::MAX));
        for event in &events {
            // No receiver is not an error: nobody is watching yet.
            let _ = self.events.send(event.clone());
        }
        Ok(events)
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
    pub replay: Vec<WatchEvent>,
    /// Later changes. Skip those at or below the last replayed resourceVersion; a `Lagged`
    /// error means the watcher fell too far behind and must list again.
    pub live: broadcast::Receiver<WatchEvent>,
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
