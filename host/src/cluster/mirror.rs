//! A local copy of one key-value bucket, kept current by a single watch.
//!
//! Reading a bucket key by key costs a round trip per key; a host that did
//! so on every change read every assignment once per assignment written
//! (quadratic in the deployment's size). A mirror instead opens one watch
//! that first delivers the last value of every key, then each change as it
//! is written, and keeps them in memory: readers look records up locally.
//! A mirror is [`ready`](Mirror::ready) once it has caught up with what the
//! bucket held when it opened; the lease holder places nothing before, so
//! it never mistakes a partial copy for the cluster's state.
//!
//! When the watch ends or fails (the server restarted, the connection was
//! lost), the mirror is reopened from scratch and is not ready until it has
//! caught up again.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use async_nats::jetstream::kv;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;

use super::ClusterError;
use super::store::Versioned;

/// A record as mirrored: parsed, or the reason it does not parse.
pub(crate) type Mirrored<T> = Result<Versioned<T>, String>;

/// The last value of every key of one bucket (see the module docs).
pub(crate) struct Mirror<T> {
    store: kv::Store,
    watch: Option<kv::Watch>,
    /// The bucket's last revision when the watch opened: ready once seen.
    target: u64,
    ready: bool,
    entries: BTreeMap<String, Mirrored<T>>,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Mirror<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("bucket", &self.store.name)
            .field("ready", &self.ready)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// What a mirror holds at one moment, to read without the watch (which
/// cannot be shared between threads).
#[derive(Debug)]
pub(crate) struct View<'a, T> {
    entries: &'a BTreeMap<String, Mirrored<T>>,
    ready: bool,
}

impl<T> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for View<'_, T> {}

impl<'a, T> View<'a, T> {
    /// Whether the mirror had caught up.
    pub(crate) fn ready(self) -> bool {
        self.ready
    }

    /// Every key's record.
    pub(crate) fn entries(self) -> &'a BTreeMap<String, Mirrored<T>> {
        self.entries
    }

    /// The record at `key`, when it parses.
    pub(crate) fn get(self, key: &str) -> Option<&'a Versioned<T>> {
        self.entries.get(key).and_then(|e| e.as_ref().ok())
    }
}

impl<T: DeserializeOwned> Mirror<T> {
    /// What it holds now.
    pub(crate) fn view(&self) -> View<'_, T> {
        View {
            entries: &self.entries,
            ready: self.ready,
        }
    }

    /// A mirror of `store`, not yet open (it opens on the first
    /// [`changed`](Mirror::changed)).
    pub(crate) fn new(store: kv::Store) -> Mirror<T> {
        Mirror {
            store,
            watch: None,
            target: 0,
            ready: false,
            entries: BTreeMap::new(),
            _type: PhantomData,
        }
    }

    /// Whether it holds everything the bucket held when it opened.
    pub(crate) fn ready(&self) -> bool {
        self.ready
    }

    /// Every key's record.
    pub(crate) fn entries(&self) -> &BTreeMap<String, Mirrored<T>> {
        &self.entries
    }

    /// The record at `key`, when it parses.
    pub(crate) fn get(&self, key: &str) -> Option<&Versioned<T>> {
        self.entries.get(key).and_then(|e| e.as_ref().ok())
    }

    /// Records a write this host made itself, so it reads its own write
    /// before the watch delivers it (the watch's copy, when it comes, has
    /// the same revision).
    pub(crate) fn wrote(&mut self, key: &str, value: T, revision: u64) {
        let newer = match self.entries.get(key) {
            Some(Ok(v)) => v.revision < revision,
            _ => true,
        };
        if newer {
            self.entries
                .insert(key.to_string(), Ok(Versioned { value, revision }));
        }
    }

    /// Drops the watch and the copy: the next [`changed`](Mirror::changed)
    /// reopens it, and it is not ready until it has caught up with the
    /// bucket as it is then (after this host was cut off, what it holds
    /// may be long out of date).
    pub(crate) fn reset(&mut self) {
        self.watch = None;
        self.ready = false;
        self.entries.clear();
    }

    /// Records a delete this host made itself.
    pub(crate) fn removed(&mut self, key: &str) {
        self.entries.remove(key);
    }

    async fn open(&mut self) -> Result<(), ClusterError> {
        let nats = |e: &dyn std::fmt::Display| ClusterError::Nats {
            what: format!("watch bucket {}", self.store.name),
            reason: e.to_string(),
        };
        let mut stream = self.store.stream.clone();
        let last = stream
            .info()
            .await
            .map_err(|e| nats(&e))?
            .state
            .last_sequence;
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| nats(&e))?;
        self.entries.clear();
        self.target = last;
        self.ready = last == 0;
        self.watch = Some(watch);
        Ok(())
    }

    fn apply(&mut self, entry: kv::Entry) {
        if entry.revision >= self.target || entry.seen_current {
            self.ready = true;
        }
        if entry.operation != kv::Operation::Put {
            self.entries.remove(&entry.key);
            return;
        }
        let parsed = serde_json::from_slice::<T>(&entry.value)
            .map(|value| Versioned {
                value,
                revision: entry.revision,
            })
            .map_err(|e| format!("record `{}` is malformed: {e}", entry.key));
        // A write this host recorded itself may be newer than the watch's
        // copy still in flight.
        if let Some(Ok(mine)) = self.entries.get(&entry.key)
            && mine.revision > entry.revision
        {
            return;
        }
        self.entries.insert(entry.key, parsed);
    }

    /// Waits for the next change, applies it and every change already
    /// delivered after it (so a burst of writes costs one wake-up). Opens
    /// the watch first when it is not open; when the watch ends or fails,
    /// drops it (the next call reopens it) and returns the error.
    pub(crate) async fn changed(&mut self) -> Result<(), ClusterError> {
        if self.watch.is_none() {
            self.open().await?;
            if self.ready {
                return Ok(());
            }
        }
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        let first = watch.next().await;
        let mut batch = vec![first];
        while let Some(more) = watch.next().now_or_never() {
            let end = !matches!(more, Some(Ok(_)));
            batch.push(more);
            if end || batch.len() >= 4096 {
                break;
            }
        }
        for item in batch {
            match item {
                Some(Ok(entry)) => self.apply(entry),
                Some(Err(e)) => {
                    self.watch = None;
                    self.ready = false;
                    return Err(ClusterError::Nats {
                        what: format!("watch bucket {}", self.store.name),
                        reason: e.to_string(),
                    });
                }
                None => {
                    self.watch = None;
                    self.ready = false;
                    return Err(ClusterError::Nats {
                        what: format!("watch bucket {}", self.store.name),
                        reason: "the watch ended".into(),
                    });
                }
            }
        }
        Ok(())
    }
}
