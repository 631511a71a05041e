//! The machinery every controller shares: follow the store's watch, keep a cache of what the
//! controller needs, reconcile the keys that changed, write the decided batches, and look again
//! when a decision asks to.
//!
//! A [`Controller`] only projects objects into its views and turns a pure decision from
//! `shipshape_reconciler` into store writes; [`ControllerActor`] does the rest. Nothing here
//! is progress state a crash could lose: a restarted controller lists again and re-derives
//! everything (level-triggered, as the design asks).
//!
//! Supervision: a controller that panics in a handler is restarted in place (its `on_panic`
//! goes on rather than stopping): the cache, timers and writes in flight are forgotten, and
//! after a back-off ([`crate::supervision::RestartBackoff`]) it lists and watches again. A
//! generation number tells the fresh state's messages from the answers, events and timers of
//! the one that panicked, which may still be on their way; those are dropped.
//!
//! Read-your-writes: writes are sent without waiting, but a key is not decided again until the
//! store has answered its last writes, and the events a batch produced are fed into the cache
//! with the answer, so the next decision never repeats a write it already made (the
//! ReplicaSet controller would otherwise create a pod twice). The same events arriving later
//! through the watch are recognised by resourceVersion and skipped, and a deletion leaves a
//! tombstone so that an older event cannot bring the object back.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use kameo::Actor;
use kameo::actor::{ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, PanicError};
use kameo::message::{Context, Message};
use shipshape_api::Kind;
use tracing::Instrument;

use shipshape_reconciler::readwrites::{Seen, WriteLedger};

use crate::store::{Batch, EventType, StoreError, WatchEvent, storage_kind};
use crate::store_actor::{ApplyIn, ListWatch, StoreActor};
use crate::supervision::RestartBackoff;

/// How many watch events are handed to a controller at once.
const EVENT_BATCH: usize = 4096;

/// The most keys one round decides before its writes are sent. Later keys follow in the next
/// round, as a message to itself: the first writes reach the store while the rest are decided,
/// and other tasks (the watch pumps) get a thread between rounds.
const ROUND_KEYS: usize = 512;

/// The most writes one controller has sent and not yet had answered. Past it, the controller
/// decides nothing new until answers come back: writes are sent without waiting, and without
/// a bound one busy controller (a ReplicaSet controller creating 150,000 pods) queued seconds
/// of work in front of everyone else's writes, the scheduler's bindings and a user's apply
/// included. Two of the committer's groups: enough to keep it busy while the answers travel.
const WRITES_IN_FLIGHT: usize = 2 * crate::store_actor::GROUP_WRITES;

/// Tombstones kept before the old ones are dropped.
const TOMBSTONE_LIMIT: usize = 50_000;

/// What one reconcile decided.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Batches to write, each all or nothing on its own.
    pub batches: Vec<Batch>,
    /// Look at this key again after this long, even if nothing changes.
    pub requeue_after: Option<Duration>,
}

/// A controller: a cache of projected objects and a pure decision per key.
pub trait Controller: Send + 'static {
    /// Its name in logs, spans, events and the audit log (`replicaset`, `scheduler`).
    fn name(&self) -> &'static str;

    /// The kinds whose changes it follows.
    fn kinds(&self) -> Vec<Kind>;

    /// Forgets everything: a full list follows.
    fn reset(&mut self);

    /// Takes in one change (never an older one than the cache holds) and marks the keys that
    /// must be reconciled because of it, with why.
    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty);

    /// Called after a full list has been observed: mark what must be looked at even though
    /// no object announced it (a kubelet registering its node).
    fn listed(&mut self, _dirty: &mut Dirty) {}

    /// Decides for one key.
    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled;

    /// A batch decided for `key` was refused or failed: undo whatever the controller assumed
    /// would happen (the scheduler's assumed binding). The key is reconciled again shortly.
    fn write_failed(&mut self, _key: &str) {}
}

/// Keys waiting to be reconciled, each with the reason it was first marked, taken oldest
/// mark first: a work queue, as Kubernetes' controllers and scheduler use. Under a backlog the
/// change that has waited longest is decided next, whatever its name; taking keys in name
/// order let later pods with smaller names (`app-1000-…` before `app-2-…`) overtake earlier
/// ones again and again.
#[derive(Debug, Default)]
pub struct Dirty {
    reasons: HashMap<String, String>,
    /// Every marked key, in the order marked (each key once: a key is queued again only after
    /// it was taken).
    order: VecDeque<String>,
}

impl Dirty {
    /// Marks `key`, keeping the first reason given and its place in the queue.
    pub fn mark(&mut self, key: impl Into<String>, reason: impl FnOnce() -> String) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.reasons.entry(key.into()) {
            self.order.push_back(slot.key().clone());
            slot.insert(reason());
        }
    }

    /// Takes the key marked longest ago.
    fn pop(&mut self) -> Option<(String, String)> {
        while let Some(key) = self.order.pop_front() {
            if let Some(reason) = self.reasons.remove(&key) {
                return Some((key, reason));
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The reason a watch event gives: `Pod demo/web-x modified`.
pub fn because(event: &WatchEvent) -> String {
    let what = match event.kind {
        EventType::Added => "added",
        EventType::Modified => "modified",
        EventType::Deleted => "deleted",
    };
    format!("{} {what}", event.key)
}

/// Runs a [`Controller`] as an actor fed by the store's watch.
pub struct ControllerActor<C: Controller> {
    controller: C,
    store: ActorRef<StoreActor>,
    dirty: Dirty,
    /// What the cache has taken in, per object (events at or below it are skipped).
    seen: Seen,
    /// Keys with a wake-up pending, and when.
    timers: HashMap<String, Instant>,
    /// Writes unanswered per key and in all (bounded by [`WRITES_IN_FLIGHT`]), and the dirty
    /// keys held back until theirs are answered.
    ledger: WriteLedger,
    /// A [`Run`] is in the mailbox.
    run_pending: bool,
    /// Lists, then follows the watch (see [`pump`]).
    pump: Option<tokio::task::JoinHandle<()>>,
    /// Bumped by every restart; messages from before it carry an older one and are dropped.
    generation: u64,
    /// This generation's list has been taken in: until then nothing is decided, as the cache
    /// is empty, not the store.
    synced: bool,
    /// The waits between restarts after panics.
    backoff: RestartBackoff,
}

impl<C: Controller> ControllerActor<C> {
    /// A controller over `store`; it lists and starts watching once spawned.
    pub fn new(controller: C, store: ActorRef<StoreActor>) -> Self {
        Self {
            controller,
            store,
            dirty: Dirty::default(),
            seen: Seen::default(),
            timers: HashMap::default(),
            ledger: WriteLedger::default(),
            run_pending: false,
            pump: None,
            generation: 0,
            synced: false,
            backoff: RestartBackoff::default(),
        }
    }

    /// Spawns a controller over `store`. Its mailbox is unbounded: it sends itself messages
    /// from inside its handlers (continue with what its own writes made dirty) and receives
    /// its timers' wake-ups, and a bounded mailbox that filled up would wait on itself forever.
    pub fn start(controller: C, store: ActorRef<StoreActor>) -> ActorRef<Self> {
        use kameo::actor::Spawn;
        Self::spawn_with_mailbox(Self::new(controller, store), kameo::mailbox::unbounded())
    }

    /// Starts the pump for the current generation after `delay`.
    fn start_pump(&mut self, delay: Duration, me: WeakActorRef<Self>) {
        if let Some(old) = self.pump.take() {
            old.abort();
        }
        let kinds = self.controller.kinds();
        let store = self.store.clone();
        let name = self.controller.name();
        let generation = self.generation;
        self.pump = Some(tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            pump(name, kinds, store, me, generation).await;
        }));
    }

    /// Starts over after a panic: the controller's cache and everything this actor tracked
    /// is forgotten, and a fresh list follows after `delay`. Whatever the panicking handler
    /// left half done is re-derived from the store (level-triggered).
    fn restart(&mut self, delay: Duration, me: WeakActorRef<Self>) {
        self.generation = self.generation.wrapping_add(1);
        self.synced = false;
        self.controller.reset();
        self.dirty = Dirty::default();
        self.seen.clear();
        self.timers.clear();
        self.ledger.clear();
        self.run_pending = false;
        self.start_pump(delay, me);
    }

    /// Feeds one event to the controller unless the cache already has it (or newer).
    fn observe(&mut self, event: &WatchEvent) {
        let deleted = event.kind == EventType::Deleted;
        if self.seen.admit(&event.key, event.resource_version, deleted) {
            self.controller.observe(event, &mut self.dirty);
        }
    }

    /// Drops tombstones the watch has passed: the watch is ordered, so no older event for
    /// them can still arrive.
    fn forget_tombstones(&mut self, watched_up_to: u64) {
        self.seen.forget_tombstones(watched_up_to, TOMBSTONE_LIMIT);
    }

    fn schedule(&mut self, key: &str, after: Duration, me: &ActorRef<Self>) {
        let at = Instant::now() + after;
        if self.timers.get(key).is_some_and(|pending| *pending <= at) {
            return;
        }
        self.timers.insert(key.to_string(), at);
        let (me, key, generation) = (me.downgrade(), key.to_string(), self.generation);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(me) = me.upgrade() {
                let _ = me.tell(Wake { key, generation }).await;
            }
        });
    }

    /// Reconciles up to [`ROUND_KEYS`] dirty keys whose earlier writes are all answered, and
    /// sends what was decided to the store without waiting: the answers come back as [`Written`], so the
    /// controller keeps deciding other keys while the store commits (the scheduler binds the
    /// next pods while the last bindings are made durable).
    ///
    /// A key with writes still unanswered is held back until they are: its next decision must
    /// see what its last one wrote (read-your-writes), or the ReplicaSet controller would
    /// create the same pods twice. Other keys decide on a cache that may lack those writes,
    /// which is a stale read: every write a decision makes carries the preconditions that make
    /// that safe, and the models explore exactly that fault.
    ///
    /// A round stops early once [`WRITES_IN_FLIGHT`] writes await answers; the keys left stay
    /// marked and the next answer starts the next round.
    fn run(&mut self, me: &ActorRef<Self>) {
        if !self.synced {
            // The list that follows decides what is marked by then.
            return;
        }
        let name = self.controller.name();
        let now = jiff::Timestamp::now();
        let mut writes = Vec::new();
        let mut looked = 0;
        // Keys are taken one at a time, so those a round does not reach keep their place.
        while looked < ROUND_KEYS && self.ledger.writes() < WRITES_IN_FLIGHT {
            let Some((key, reason)) = self.dirty.pop() else {
                break;
            };
            looked += 1;
            if self.ledger.awaiting(&key) {
                self.ledger.hold(key, reason);
                continue;
            }
            let span = tracing::debug_span!("reconcile", controller = name, object = %key, %reason);
            let started = Instant::now();
            let decided = span.in_scope(|| self.controller.reconcile(&key, now));
            crate::metrics::METRICS.reconciled(name, started.elapsed());
            span.in_scope(|| {
                tracing::debug!(
                    batches = decided.batches.len(),
                    requeue_after = ?decided.requeue_after,
                    "decided"
                );
            });
            if let Some(after) = decided.requeue_after {
                self.schedule(&key, after, me);
            }
            for batch in decided.batches {
                self.ledger.sent(&key, batch.writes.len());
                writes.push((key.clone(), batch, span.clone()));
            }
        }
        // More keys wait: the next round follows as a message to itself, unless the bound on
        // writes in flight stopped this one (then the answers start the next).
        if !self.dirty.is_empty() && !self.run_pending && self.ledger.writes() < WRITES_IN_FLIGHT {
            self.run_pending = true;
            // The mailbox is unbounded: this fails only when the actor is stopping.
            let _ = me.tell(Run).try_send();
        }
        if writes.is_empty() {
            return;
        }
        // Every batch goes to the store at once (the store commits them together); the answers
        // come back as one message, in the order the batches were sent.
        let (store, me, generation) = (self.store.clone(), me.downgrade(), self.generation);
        tokio::spawn(async move {
            let results =
                futures_util::future::join_all(writes.into_iter().map(|(key, batch, span)| {
                    let store = store.clone();
                    let count = batch.writes.len();
                    let lane = ApplyIn { lane: name, batch };
                    async move { (key, count, store.ask(lane).await) }.instrument(span)
                }))
                .await;
            if let Some(me) = me.upgrade() {
                let _ = me.tell(Written(results, generation)).await;
            }
        });
    }

    /// Takes in the store's answers to one round of writes.
    fn written(&mut self, results: WriteResults, me: &ActorRef<Self>) {
        let name = self.controller.name();
        for (key, count, result) in results {
            match result {
                Ok(events) => {
                    for event in &events {
                        self.observe(event);
                    }
                }
                Err(kameo::error::SendError::HandlerError(
                    error @ (StoreError::Conflict { .. }
                    | StoreError::NotFound(_)
                    | StoreError::AlreadyExists(_)),
                )) => {
                    // Decided on a stale view: the change that made it stale is on its way
                    // through the watch; look again shortly in case it already came.
                    tracing::debug!(controller = name, object = %key, %error, "stale decision");
                    self.controller.write_failed(&key);
                    self.schedule(&key, Duration::from_millis(200), me);
                }
                Err(kameo::error::SendError::HandlerError(
                    error @ StoreError::NamespaceNotFound { .. },
                )) => {
                    // Its namespace is gone (Git pruned it): nothing can be made there until
                    // it is back, and Namespaces are not among the watched kinds.
                    tracing::debug!(controller = name, object = %key, %error, "namespace missing");
                    self.controller.write_failed(&key);
                    self.schedule(&key, Duration::from_secs(5), me);
                }
                Err(error) => {
                    tracing::warn!(controller = name, object = %key, %error, "write failed");
                    self.controller.write_failed(&key);
                    self.schedule(&key, Duration::from_secs(2), me);
                }
            }
            if let Some(reason) = self.ledger.answered(&key, count) {
                self.dirty.mark(key, || reason);
            }
        }
    }
}

/// The store's answer to each batch of one round, with the key that decided it and how many
/// writes the batch held.
type WriteResults = Vec<(
    String,
    usize,
    Result<Vec<Arc<WatchEvent>>, kameo::error::SendError<ApplyIn, StoreError>>,
)>;

/// The answers to a round of writes (see [`ControllerActor::run`]), and the generation that
/// sent them.
struct Written(WriteResults, u64);

impl<C: Controller> Message<Written> for ControllerActor<C> {
    type Reply = ();

    async fn handle(
        &mut self,
        Written(results, generation): Written,
        ctx: &mut Context<Self, Self::Reply>,
    ) {
        if generation != self.generation {
            // Sent before a restart: the fresh list already has (or the watch brings) what
            // these writes did, and their keys' counts were forgotten.
            return;
        }
        let me = ctx.actor_ref().clone();
        self.written(results, &me);
        self.run(&me);
    }
}

impl<C: Controller> Actor for ControllerActor<C> {
    type Args = Self;
    type Error = std::convert::Infallible;

    fn name() -> &'static str {
        "ControllerActor"
    }

    async fn on_start(mut state: Self, me: ActorRef<Self>) -> Result<Self, Self::Error> {
        state.start_pump(Duration::ZERO, me.downgrade());
        Ok(state)
    }

    /// Goes on after a panic, from a fresh list (see the module's doc): a controller keeps
    /// nothing a list cannot give back, and one stopped for good would leave its objects
    /// unreconciled with nobody told.
    async fn on_panic(
        &mut self,
        me: WeakActorRef<Self>,
        error: PanicError,
    ) -> Result<ControlFlow<ActorStopReason>, Self::Error> {
        let name = self.controller.name();
        let delay = self.backoff.next_delay(Instant::now());
        crate::supervision::record_restart(name, &crate::supervision::panic_message(&error), delay);
        self.restart(delay, me);
        Ok(ControlFlow::Continue(()))
    }

    async fn on_stop(
        &mut self,
        _: WeakActorRef<Self>,
        _: ActorStopReason,
    ) -> Result<(), Self::Error> {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        Ok(())
    }
}

/// What the pump hands the feeder, in order.
enum Feed {
    /// A fresh list, at a resourceVersion.
    Listed(Listed),
    /// One change after it.
    Event(Arc<WatchEvent>),
}

/// Lists, then follows the watch, queueing the changes of the controller's kinds; lists again
/// when the watch falls too far behind. The pump only filters, so it keeps up with the store
/// however long the controller takes over a batch: the queue, not the shared watch buffer,
/// absorbs the difference.
async fn pump<C: Controller>(
    name: &'static str,
    kinds: Vec<Kind>,
    store: ActorRef<StoreActor>,
    me: WeakActorRef<ControllerActor<C>>,
    generation: u64,
) {
    let (queue, feed) = tokio::sync::mpsc::unbounded_channel();
    // Aborted with the pump (a restart aborts it): nothing queued before is handed on.
    let _feeder = AbortOnDrop(tokio::spawn(feeder(feed, me, generation)));
    let wanted =
        |event: &WatchEvent| storage_kind(&event.key).is_some_and(|kind| kinds.contains(&kind));
    'relist: loop {
        let start = match store.ask(ListWatch(kinds.clone())).await {
            Ok(start) => start,
            Err(error) => {
                tracing::warn!(controller = name, %error, "cannot list; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let listed = start.resource_version;
        let objects = start
            .objects
            .into_iter()
            .map(|(key, stored)| WatchEvent {
                resource_version: stored.resource_version(),
                kind: EventType::Added,
                key: crate::store::storage_key(&key),
                object: stored.object,
            })
            .collect();
        if queue
            .send(Feed::Listed(Listed {
                resource_version: listed,
                objects,
                generation,
            }))
            .is_err()
        {
            break;
        }
        let mut live = start.live;
        loop {
            match live.recv().await {
                Ok(event) => {
                    if event.resource_version > listed
                        && wanted(&event)
                        && queue.send(Feed::Event(event)).is_err()
                    {
                        break 'relist;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        controller = name,
                        missed,
                        "fell behind the watch; listing again"
                    );
                    continue 'relist;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break 'relist,
            }
        }
    }
}

/// Aborts a task when dropped, so that a task's helper ends with it, aborted or not.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands queued changes to the actor, as many at a time as have gathered.
async fn feeder<C: Controller>(
    mut feed: tokio::sync::mpsc::UnboundedReceiver<Feed>,
    me: WeakActorRef<ControllerActor<C>>,
    generation: u64,
) {
    let mut pending = None;
    loop {
        let first = match pending.take() {
            Some(first) => first,
            None => match feed.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Some(actor) = me.upgrade() else { return };
        match first {
            Feed::Listed(listed) => {
                if actor.ask(listed).await.is_err() {
                    return;
                }
            }
            Feed::Event(event) => {
                let mut last = event.resource_version;
                let mut events = vec![event];
                while events.len() < EVENT_BATCH {
                    match feed.try_recv() {
                        Ok(Feed::Event(event)) => {
                            last = event.resource_version;
                            events.push(event);
                        }
                        Ok(listed @ Feed::Listed(_)) => {
                            pending = Some(listed);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let observed = Observed {
                    events,
                    last,
                    generation,
                };
                if actor.ask(observed).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A fresh list: the cache starts over from it.
struct Listed {
    resource_version: u64,
    objects: Vec<WatchEvent>,
    /// The generation whose pump listed.
    generation: u64,
}

impl<C: Controller> Message<Listed> for ControllerActor<C> {
    type Reply = ();

    async fn handle(&mut self, listed: Listed, ctx: &mut Context<Self, Self::Reply>) {
        if listed.generation != self.generation {
            return;
        }
        self.synced = true;
        self.controller.reset();
        self.seen.clear();
        for event in &listed.objects {
            self.observe(event);
        }
        self.controller.listed(&mut self.dirty);
        tracing::debug!(
            controller = self.controller.name(),
            objects = listed.objects.len(),
            resource_version = listed.resource_version,
            "listed"
        );
        let me = ctx.actor_ref().clone();
        self.run(&me);
    }
}

/// Changes from the watch, in order.
struct Observed {
    events: Vec<Arc<WatchEvent>>,
    last: u64,
    /// The generation whose pump watched.
    generation: u64,
}

impl<C: Controller> Message<Observed> for ControllerActor<C> {
    type Reply = ();

    async fn handle(&mut self, observed: Observed, ctx: &mut Context<Self, Self::Reply>) {
        if observed.generation != self.generation {
            return;
        }
        for event in &observed.events {
            self.observe(event);
        }
        self.forget_tombstones(observed.last);
        let me = ctx.actor_ref().clone();
        self.run(&me);
    }
}

/// A timer a decision asked for, by the generation that set it.
struct Wake {
    key: String,
    generation: u64,
}

impl<C: Controller> Message<Wake> for ControllerActor<C> {
    type Reply = ();

    async fn handle(
        &mut self,
        Wake { key, generation }: Wake,
        ctx: &mut Context<Self, Self::Reply>,
    ) {
        if generation != self.generation {
            return;
        }
        if self
            .timers
            .get(&key)
            .is_some_and(|at| *at <= Instant::now() + Duration::from_millis(5))
        {
            self.timers.remove(&key);
        }
        self.dirty.mark(key, || "timer".into());
        let me = ctx.actor_ref().clone();
        self.run(&me);
    }
}

/// Continue with the keys a round left marked.
struct Run;

impl<C: Controller> Message<Run> for ControllerActor<C> {
    type Reply = ();

    async fn handle(&mut self, _: Run, ctx: &mut Context<Self, Self::Reply>) {
        self.run_pending = false;
        let me = ctx.actor_ref().clone();
        self.run(&me);
    }
}

/// A change made to the controller itself from outside (a test instrument telling the
/// simulated kubelet to crash a pod); the keys it marks are reconciled at once.
pub struct Poke<C>(pub Change<C>);

/// A change to a controller's state, marking what it affects.
pub type Change<C> = Box<dyn FnOnce(&mut C, &mut Dirty) + Send>;

impl<C: Controller> Message<Poke<C>> for ControllerActor<C> {
    type Reply = ();

    async fn handle(&mut self, Poke(change): Poke<C>, ctx: &mut Context<Self, Self::Reply>) {
        change(&mut self.controller, &mut self.dirty);
        let me = ctx.actor_ref().clone();
        self.run(&me);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, Write};
    use crate::store_actor::List;
    use serde_json::json;

    #[test]
    fn dirty_keys_are_taken_in_the_order_first_marked() {
        let mut dirty = Dirty::default();
        for key in ["Pod/a/web-9", "Pod/a/web-10", "Pod/a/app-1"] {
            dirty.mark(key, || format!("{key} added"));
        }
        dirty.mark("Pod/a/web-9", || "modified later".into());
        let mut taken = Vec::new();
        while let Some(next) = dirty.pop() {
            taken.push(next);
        }
        assert_eq!(taken[0].1, "Pod/a/web-9 added", "the first reason is kept");
        let keys: Vec<&str> = taken.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["Pod/a/web-9", "Pod/a/web-10", "Pod/a/app-1"]);
        assert!(dirty.is_empty());
    }

    /// A store actor over a fresh database in `dir`.
    fn spawn_store(dir: &tempfile::TempDir) -> ActorRef<StoreActor> {
        use kameo::actor::Spawn;
        StoreActor::spawn(StoreActor::new(
            Store::open(&dir.path().join("db.redb")).expect("opens"),
        ))
    }

    /// How many ConfigMaps the store holds.
    async fn config_maps(store: &ActorRef<StoreActor>) -> usize {
        store
            .ask(List {
                kind: Some(Kind::ConfigMap),
                namespace: None,
            })
            .await
            .expect("lists")
            .len()
    }

    /// Waits until the store holds at least `count` ConfigMaps or `limit` has passed, and
    /// says how many it holds.
    async fn wait_for_config_maps(
        store: &ActorRef<StoreActor>,
        count: usize,
        limit: Duration,
    ) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let made = config_maps(store).await;
            if made >= count || Instant::now() >= deadline {
                return made;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops a controller, then the store it writes to.
    async fn stop<C: Controller>(
        controller: ActorRef<ControllerActor<C>>,
        store: ActorRef<StoreActor>,
    ) {
        let _ = controller.stop_gracefully().await;
        controller.wait_for_shutdown().await;
        let _ = store.stop_gracefully().await;
        store.wait_for_shutdown().await;
    }

    /// Creates a ConfigMap under a new name whenever its cache holds none: the shape of a
    /// ReplicaSet creating pods, which must see its own creations before deciding again.
    #[derive(Default)]
    struct MakesOne {
        seen: usize,
        made: usize,
    }

    impl Controller for MakesOne {
        fn name(&self) -> &'static str {
            "makes-one"
        }

        fn kinds(&self) -> Vec<Kind> {
            vec![Kind::ConfigMap]
        }

        fn reset(&mut self) {
            self.seen = 0;
        }

        fn observe(&mut self, event: &WatchEvent, _: &mut Dirty) {
            if event.kind == EventType::Added {
                self.seen += 1;
            }
        }

        fn reconcile(&mut self, _: &str, _: jiff::Timestamp) -> Reconciled {
            if self.seen > 0 {
                return Reconciled::default();
            }
            self.made += 1;
            Reconciled {
                batches: vec![Batch {
                    writes: vec![Write::Create {
                        object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": format!("made-{}", self.made), "namespace": "default"}}),
                        applied: None,
                        application: None,
                    }],
                    audit: None,
                }],
                requeue_after: None,
            }
        }
    }

    fn poke() -> Poke<MakesOne> {
        Poke(Box::new(|_: &mut MakesOne, dirty: &mut Dirty| {
            dirty.mark("k", || "poked".into());
        }))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_key_is_not_decided_again_until_its_writes_are_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = spawn_store(&dir);
        let controller = ControllerActor::start(MakesOne::default(), store.clone());
        // Three nudges in a row: the second and third reach the actor while the first
        // decision's create is still on its way to disk.
        for _ in 0..3 {
            controller.tell(poke()).await.expect("delivered");
        }
        wait_for_config_maps(&store, 1, Duration::from_secs(10)).await;
        // Let any duplicate decision land before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(config_maps(&store).await, 1, "one ConfigMap, decided once");
        stop(controller, store).await;
    }

    /// Decides, once per key, a batch of `per_key` ConfigMaps named after the key.
    struct MakesMany {
        per_key: usize,
        decided: std::collections::HashSet<String>,
    }

    impl Controller for MakesMany {
        fn name(&self) -> &'static str {
            "makes-many"
        }

        fn kinds(&self) -> Vec<Kind> {
            vec![Kind::ConfigMap]
        }

        fn reset(&mut self) {}

        fn observe(&mut self, _: &WatchEvent, _: &mut Dirty) {}

        fn reconcile(&mut self, key: &str, _: jiff::Timestamp) -> Reconciled {
            if !self.decided.insert(key.to_string()) {
                return Reconciled::default();
            }
            let writes = (0..self.per_key)
                .map(|i| Write::Create {
                    object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("{key}-{i}"), "namespace": "default"}}),
                    applied: None,
                    application: None,
                })
                .collect();
            Reconciled {
                batches: vec![Batch {
                    writes,
                    audit: None,
                }],
                requeue_after: None,
            }
        }
    }

    /// Creates the ConfigMap `name` in `default`.
    async fn create_config_map(store: &ActorRef<StoreActor>, name: &str) {
        let batch = Batch {
            writes: vec![Write::Create {
                object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "default"}}),
                applied: None,
                application: None,
            }],
            audit: None,
        };
        store
            .ask(crate::store_actor::Apply(batch))
            .await
            .expect("created");
    }

    /// Waits until the store holds the ConfigMap `name` or `limit` has passed.
    async fn wait_for_config_map(
        store: &ActorRef<StoreActor>,
        name: &str,
        limit: Duration,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let found = store
                .ask(crate::store_actor::Get(shipshape_api::ObjectKey {
                    kind: Kind::ConfigMap,
                    namespace: "default".into(),
                    name: name.into(),
                }))
                .await
                .expect("reads");
            if found.is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `actor` has been restarted `count` times or `limit` has passed, and says
    /// how many times it has.
    async fn wait_for_restarts(actor: &str, count: u64, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let restarts = crate::metrics::METRICS.actor_restart_count(actor);
            if restarts >= count || Instant::now() >= deadline {
                return restarts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Answers every ConfigMap `req-N` with a ConfigMap `done-N` (unless its cache has one),
    /// and panics the first time it decides `boom`, as a bug would.
    struct AnswersRequests {
        seen: std::collections::HashSet<String>,
        panicked: bool,
    }

    impl AnswersRequests {
        /// Its name, unique among the tests: the restart counter is process-wide.
        const NAME: &'static str = "answers-requests";
    }

    impl Controller for AnswersRequests {
        fn name(&self) -> &'static str {
            Self::NAME
        }

        fn kinds(&self) -> Vec<Kind> {
            vec![Kind::ConfigMap]
        }

        fn reset(&mut self) {
            self.seen.clear();
        }

        fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
            let Some(name) = event.key.rsplit('/').next() else {
                return;
            };
            if event.kind == EventType::Deleted {
                self.seen.remove(name);
            } else {
                self.seen.insert(name.to_string());
            }
            if name == "boom" || name.starts_with("req-") {
                dirty.mark(name, || because(event));
            }
        }

        fn reconcile(&mut self, key: &str, _: jiff::Timestamp) -> Reconciled {
            if key == "boom" && !self.panicked {
                self.panicked = true;
                panic!("injected panic deciding {key}");
            }
            let Some(number) = key.strip_prefix("req-") else {
                return Reconciled::default();
            };
            let done = format!("done-{number}");
            if self.seen.contains(&done) {
                return Reconciled::default();
            }
            Reconciled {
                batches: vec![Batch {
                    writes: vec![Write::Create {
                        object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": done, "namespace": "default"}}),
                        applied: None,
                        application: None,
                    }],
                    audit: None,
                }],
                requeue_after: None,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_controller_that_panics_lists_again_and_reconciles_later_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = spawn_store(&dir);
        let controller = ControllerActor::start(
            AnswersRequests {
                seen: Default::default(),
                panicked: false,
            },
            store.clone(),
        );
        let limit = Duration::from_secs(15);
        create_config_map(&store, "req-1").await;
        assert!(wait_for_config_map(&store, "done-1", limit).await);

        create_config_map(&store, "boom").await;
        let name = AnswersRequests::NAME;
        assert_eq!(wait_for_restarts(name, 1, limit).await, 1, "restarted once");
        create_config_map(&store, "req-2").await;
        assert!(
            wait_for_config_map(&store, "done-2", limit).await,
            "a change after the panic is reconciled"
        );
        assert!(controller.is_alive());
        assert_eq!(crate::metrics::METRICS.actor_restart_count(name), 1);
        let exposed = format!("shipshape_actor_restarts_total{{actor=\"{name}\"}} 1");
        assert!(
            crate::metrics::METRICS
                .encode()
                .lines()
                .any(|line| line == exposed),
            "{exposed} in /metrics"
        );
        stop(controller, store).await;
    }

    /// Panics whenever it has listed: a crash loop.
    struct PanicsOnEveryList;

    impl PanicsOnEveryList {
        /// Its name, unique among the tests: the restart counter is process-wide.
        const NAME: &'static str = "panics-on-every-list";
    }

    impl Controller for PanicsOnEveryList {
        fn name(&self) -> &'static str {
            Self::NAME
        }

        fn kinds(&self) -> Vec<Kind> {
            vec![Kind::ConfigMap]
        }

        fn reset(&mut self) {}

        fn observe(&mut self, _: &WatchEvent, _: &mut Dirty) {}

        fn listed(&mut self, _: &mut Dirty) {
            panic!("cannot take in a list");
        }

        fn reconcile(&mut self, _: &str, _: jiff::Timestamp) -> Reconciled {
            Reconciled::default()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_controller_that_panics_on_every_list_is_restarted_with_a_growing_back_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = spawn_store(&dir);
        let controller = ControllerActor::start(PanicsOnEveryList, store.clone());
        // Panics at about 0 s, 1 s (after waiting 1 s) and 3 s (after 2 s); the next waits 4 s.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let restarts = crate::metrics::METRICS.actor_restart_count(PanicsOnEveryList::NAME);
        assert!((2..=3).contains(&restarts), "{restarts} restarts in 3.5 s");
        assert!(controller.is_alive(), "still restarting");
        stop(controller, store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keys_past_the_bound_on_writes_in_flight_are_decided_when_answers_come() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = spawn_store(&dir);
        // Each key's one batch is larger than half the bound, so the round must stop after
        // two keys and the answers must start the rest; one batch alone exceeds nothing.
        let per_key = WRITES_IN_FLIGHT / 2 + 1;
        let keys = ["a", "b", "c", "d", "e"];
        let controller = ControllerActor::start(
            MakesMany {
                per_key,
                decided: Default::default(),
            },
            store.clone(),
        );
        controller
            .tell(Poke(Box::new(
                move |_: &mut MakesMany, dirty: &mut Dirty| {
                    for key in keys {
                        dirty.mark(key, || "poked".into());
                    }
                },
            )))
            .await
            .expect("delivered");
        let made =
            wait_for_config_maps(&store, keys.len() * per_key, Duration::from_secs(60)).await;
        assert_eq!(made, keys.len() * per_key, "every key's batch written");
        stop(controller, store).await;
    }
}
