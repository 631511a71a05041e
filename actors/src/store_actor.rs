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
pub(crate) const GROUP_WRITES: usize = 2048;

/// A batch waiting for the committer, its lane, and whom to tell (nobody, for a `tell`).
type Pending = (&'static str, Batch, Option<ReplySender<Applied>>);

/// A batch in its lane, and whom to tell.
type Waiting = (Batch, Option<ReplySender<Applied>>);

/// The lane of writes sent with plain [`Apply`]: users, Git sync, the API.
const CLIENT_LANE: &str = "clients";

/// Owns the [`Store`] and fans out its changes.
///
/// Writes go to one committer thread that takes every batch waiting and commits them in one
/// transaction (group commit): each batch is acknowledged only once durable, yet many writers
/// share one fsync. Reads run on the actor against redb's snapshot isolation, never waiting for
/// a commit.
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
            .spawn(move || {
                let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    commit_loop(&thread_store, &thread_events, &queue);
                }));
                // A committer that panicked leaves writes unanswered and the watch behind
                // the database: the store has failed, as if its actor had panicked.
                if let Err(payload) = committed {
                    let message = crate::supervision::payload_message(payload.as_ref());
                    crate::supervision::store_failed(&message, thread_store.path());
                }
            });
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

impl Actor for StoreActor {
    type Args = Self;
    type Error = std::convert::Infallible;

    fn name() -> &'static str {
        "StoreActor"
    }

    async fn on_start(state: Self, _: kameo::actor::ActorRef<Self>) -> Result<Self, Self::Error> {
        Ok(state)
    }

    /// A panic ends the process (see [`crate::supervision::store_failed`]): the store is the
    /// one actor that cannot simply be restarted in place, and a restart resumes from redb.
    async fn on_panic(
        &mut self,
        _: kameo::actor::WeakActorRef<Self>,
        error: kameo::error::PanicError,
    ) -> Result<std::ops::ControlFlow<kameo::error::ActorStopReason>, Self::Error> {
        let message = crate::supervision::panic_message(&error);
        crate::supervision::store_failed(&message, self.store.path())
    }
}

fn commit_loop(
    store: &Store,
    events: &broadcast::Sender<Arc<WatchEvent>>,
    queue: &mpsc::Receiver<Pending>,
) {
    let mut lanes = Lanes::default();
    loop {
        if lanes.is_empty() {
            match queue.recv() {
                Ok(first) => lanes.push(first),
                Err(_) => return,
            }
        }
        while let Ok(next) = queue.try_recv() {
            lanes.push(next);
        }
        let (batches, replies): (Vec<Batch>, Vec<_>) =
            lanes.group(GROUP_WRITES).into_iter().unzip();
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

/// Writes waiting for the committer, one queue per writer, shared out by writes rather than
/// by batches (deficit round robin): each turn a lane may take [`LANE_QUANTUM`] more writes,
/// and what it could not spend carries over. A writer with seconds of work queued (a
/// ReplicaSet controller creating 150,000 pods) delays a user's apply or the scheduler's
/// bindings by one group, not by its whole queue, and a lane of one-write batches (bindings)
/// gets as many writes into a group as a lane of hundred-write batches (pod creates); taking a
/// batch per lane per turn let creates outrun bindings a hundred to one. This is the role the
/// API server's priority and fairness plays for etcd. Within a lane batches keep their order.
#[derive(Default)]
struct Lanes {
    /// Each lane's unspent writes and waiting batches, lanes in the order they first had
    /// work.
    queues: Vec<Lane>,
    /// The lane the next turn starts with, so no lane is always first.
    next: usize,
}

/// One writer's queue in [`Lanes`].
struct Lane {
    name: &'static str,
    /// Writes the lane may still take before the next turn adds [`LANE_QUANTUM`].
    deficit: usize,
    waiting: std::collections::VecDeque<Waiting>,
}

/// The writes a lane may take per turn of [`Lanes::group`].
const LANE_QUANTUM: usize = 128;

impl Lanes {
    fn push(&mut self, (lane, batch, reply): Pending) {
        let index = match self.queues.iter().position(|queue| queue.name == lane) {
            Some(index) => index,
            None => {
                self.queues.push(Lane {
                    name: lane,
                    deficit: 0,
                    waiting: Default::default(),
                });
                self.queues.len() - 1
            }
        };
        self.queues[index].waiting.push_back((batch, reply));
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(|queue| queue.waiting.is_empty())
    }

    /// Takes batches lane by lane, [`LANE_QUANTUM`] writes a turn, until about `limit`
    /// writes (at least one batch; whole batches only, however large).
    fn group(&mut self, limit: usize) -> Vec<Waiting> {
        let mut group = Vec::new();
        let mut writes = 0;
        'turns: while writes < limit && !self.is_empty() {
            let lanes = self.queues.len();
            for turn in 0..lanes {
                let index = (self.next + turn) % lanes;
                let lane = &mut self.queues[index];
                if lane.waiting.is_empty() {
                    continue;
                }
                lane.deficit += LANE_QUANTUM;
                while let Some(size) = lane.waiting.front().map(|(batch, _)| batch.writes.len())
                    && size.max(1) <= lane.deficit
                {
                    lane.deficit -= size.max(1);
                    writes += size;
                    group.extend(lane.waiting.pop_front());
                    if writes >= limit {
                        self.next = index + 1;
                        break 'turns;
                    }
                }
                if lane.waiting.is_empty() {
                    // An idle lane saves nothing up for later.
                    lane.deficit = 0;
                }
            }
        }
        self.queues.retain(|queue| !queue.waiting.is_empty());
        if !self.queues.is_empty() {
            self.next %= self.queues.len();
        }
        group
    }
}

/// Apply a batch, all or nothing; replies once it is durable. It shares the [`CLIENT_LANE`]
/// with every other client.
pub struct Apply(pub Batch);

/// Apply a batch in a lane of its own writer (a controller, by name), so that its backlog is
/// committed in turn with other writers' rather than ahead of them.
pub struct ApplyIn {
    /// The writer's lane.
    pub lane: &'static str,
    /// The batch.
    pub batch: Batch,
}

impl Message<ApplyIn> for StoreActor {
    type Reply = DelegatedReply<Applied>;

    async fn handle(
        &mut self,
        ApplyIn { lane, batch }: ApplyIn,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        let (delegated, reply) = ctx.reply_sender();
        self.send(lane, batch, reply);
        delegated
    }
}

impl StoreActor {
    fn send(&self, lane: &'static str, batch: Batch, reply: Option<ReplySender<Applied>>) {
        if let Err(mpsc::SendError((_, _, Some(reply)))) = self.committer.send((lane, batch, reply))
        {
            reply.send(Err(StoreError::Database(
                "the store's committer has stopped".into(),
            )));
        }
    }
}

impl Message<Apply> for StoreActor {
    type Reply = DelegatedReply<Applied>;

    async fn handle(
        &mut self,
        Apply(batch): Apply,
        ctx: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        // A `tell` has no reply sender: the write still happens, nobody hears of it.
        let (delegated, reply) = ctx.reply_sender();
        self.send(CLIENT_LANE, batch, reply);
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

/// List one kind with the resourceVersion it is at, from one read.
pub struct ListAt {
    /// The kind.
    pub kind: Kind,
    /// Only this namespace.
    pub namespace: Option<String>,
}

impl Message<ListAt> for StoreActor {
    type Reply = Result<(u64, Vec<(ObjectKey, StoredObject)>), StoreError>;

    async fn handle(&mut self, list: ListAt, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.store.list_at(list.kind, list.namespace.as_deref())
    }
}

/// Open a snapshot of the objects to list from in pages, all at its resourceVersion
/// (see [`Store::read_view`]). Reading it needs no actor: pages are read wherever the view is.
pub struct OpenReadView;

impl Message<OpenReadView> for StoreActor {
    type Reply = Result<Arc<crate::store::ReadView>, StoreError>;

    async fn handle(&mut self, _: OpenReadView, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.store.read_view().map(Arc::new)
    }
}

/// Read one page of the audit log (see [`Store::audit_page`]).
pub struct ReadAuditPage {
    /// Records after this sequence number.
    pub after: u64,
    /// None after this one (the newest if `None`): where the first page of a list stopped.
    pub until: Option<u64>,
    /// How many records, and bytes of them, the page may hold.
    pub size: crate::store::PageSize,
}

impl Message<ReadAuditPage> for StoreActor {
    type Reply = Result<crate::store::AuditPage, StoreError>;

    async fn handle(
        &mut self,
        page: ReadAuditPage,
        _: &mut Context<Self, Self::Reply>,
    ) -> Self::Reply {
        self.store.audit_page(page.after, page.until, page.size)
    }
}

/// The cluster's resourceVersion now.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Write;
    use serde_json::json;

    /// A batch of `writes` ConfigMaps, the first named `name`.
    fn batch(name: &str, writes: usize) -> Batch {
        Batch {
            writes: (0..writes)
                .map(|i| Write::Create {
                    object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": if i == 0 { name.to_string() } else { format!("{name}-{i}") }}}),
                    applied: None,
                    application: None,
                })
                .collect(),
            audit: None,
        }
    }

    fn names(group: &[Waiting]) -> Vec<String> {
        group
            .iter()
            .map(|(batch, _)| match &batch.writes[0] {
                Write::Create { object, .. } => object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn lanes_share_a_group_by_writes_not_by_batches() {
        let mut lanes = Lanes::default();
        for i in 0..40 {
            lanes.push(("replicaset", batch(&format!("rs-{i}"), 100), None));
        }
        for i in 0..4000 {
            lanes.push(("scheduler", batch(&format!("bind-{i}"), 1), None));
        }
        for _ in 0..3 {
            let group = names(&lanes.group(2048));
            let creates = 100 * group.iter().filter(|n| n.starts_with("rs-")).count();
            let binds = group.iter().filter(|n| n.starts_with("bind-")).count();
            // Within a quantum and a batch of each other (one create batch is 100 writes).
            assert!(
                creates.abs_diff(binds) <= LANE_QUANTUM + 100,
                "{creates} creates and {binds} binds in one group"
            );
        }
    }

    #[test]
    fn a_writer_with_a_backlog_delays_another_by_one_group_at_most() {
        let mut lanes = Lanes::default();
        for i in 0..10 {
            lanes.push(("replicaset", batch(&format!("rs-{i}"), 100), None));
        }
        lanes.push(("scheduler", batch("bind-0", 1), None));
        lanes.push((CLIENT_LANE, batch("user-0", 1), None));
        lanes.push(("scheduler", batch("bind-1", 1), None));
        let first = names(&lanes.group(250));
        assert!(first.contains(&"user-0".to_string()), "{first:?}");
        assert!(first.contains(&"bind-0".to_string()), "{first:?}");
        let rs: Vec<&String> = first.iter().filter(|n| n.starts_with("rs-")).collect();
        assert!(rs.len() <= 3, "the backlog took the group: {first:?}");
        let mut rest = Vec::new();
        while !lanes.is_empty() {
            rest.extend(names(&lanes.group(250)));
        }
        let all: Vec<String> = first.into_iter().chain(rest).collect();
        let rs_order: Vec<&String> = all.iter().filter(|n| n.starts_with("rs-")).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("rs-{i}")).collect();
        assert_eq!(
            rs_order,
            expected.iter().collect::<Vec<_>>(),
            "a lane keeps its order"
        );
        assert_eq!(all.len(), 13, "nothing lost: {all:?}");
        let binds: Vec<&String> = all.iter().filter(|n| n.starts_with("bind-")).collect();
        assert_eq!(binds, ["bind-0", "bind-1"]);
    }
}
