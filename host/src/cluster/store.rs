//! The connection to NATS and the buckets on it: typed reads and writes of
//! the records, and the content-addressed object store.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;

use super::ClusterError;
use crate::boot::Digest;

/// The key-value bucket of node records.
pub const NODES: &str = "forgeone-nodes";
/// The key-value bucket of deployments (desired state).
pub const DEPLOYMENTS: &str = "forgeone-deployments";
/// The key-value bucket of assignments.
pub const ASSIGNMENTS: &str = "forgeone-assignments";
/// The key-value bucket of statuses.
pub const STATUS: &str = "forgeone-status";
/// The key-value bucket of the scheduler lease.
pub const LEASE: &str = "forgeone-lease";
/// The object store of components and envelopes.
pub const OBJECTS: &str = "forgeone-components";
/// The stream of every host's audit records (subjects `audit.<node>`).
pub const AUDIT_STREAM: &str = "FORGEONE_AUDIT";
/// The largest object read back (a component): 256 MiB.
pub const MAX_OBJECT_BYTES: usize = 256 << 20;

/// A connection to a NATS server with JetStream, and the cluster's buckets
/// on it (created on first use). Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    url: String,
    pub(crate) nodes: kv::Store,
    pub(crate) deployments: kv::Store,
    pub(crate) assignments: kv::Store,
    pub(crate) status: kv::Store,
    pub(crate) lease: kv::Store,
    objects: object_store::ObjectStore,
    pub(crate) js: jetstream::Context,
    pub(crate) audit: stream::Stream,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn nats_err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ClusterError + '_ {
    move |e| ClusterError::Nats {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: name.to_string(),
        history: 1,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another host created it meanwhile.
        Err(e) => js
            .get_key_value(name)
            .await
            .map_err(|_| nats_err(&format!("create bucket {name}"))(e)),
    }
}

impl Cluster {
    /// Connects once to `url` (waiting at most `timeout`) and opens the
    /// buckets, creating those that do not exist yet.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Cluster, ClusterError> {
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .name("forgeone");
        let client = tokio::time::timeout(timeout, options.connect(url))
            .await
            .map_err(|_| ClusterError::Connect {
                url: url.to_string(),
                reason: format!("no answer within {timeout:?}"),
            })?
            .map_err(|e| ClusterError::Connect {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let objects = match js.get_object_store(OBJECTS).await {
            Ok(s) => s,
            Err(_) => {
                let config = object_store::Config {
                    bucket: OBJECTS.to_string(),
                    ..Default::default()
                };
                match js.create_object_store(config).await {
                    Ok(s) => s,
                    Err(e) => js
                        .get_object_store(OBJECTS)
                        .await
                        .map_err(|_| nats_err("create the object store")(e))?,
                }
            }
        };
        Ok(Cluster {
            url: url.to_string(),
            nodes: bucket(&js, NODES).await?,
            deployments: bucket(&js, DEPLOYMENTS).await?,
            assignments: bucket(&js, ASSIGNMENTS).await?,
            status: bucket(&js, STATUS).await?,
            lease: bucket(&js, LEASE).await?,
            objects,
            audit: audit_stream(&js).await?,
            js,
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stores `bytes` as object `<kind>.<blake3 hex>` unless an object of
    /// that name and size is there already (the same bytes are stored
    /// once). Returns the digest.
    pub async fn put_object(&self, kind: &str, bytes: &[u8]) -> Result<Digest, ClusterError> {
        let digest = Digest::of(bytes);
        let name = format!("{kind}.{}", digest.to_hex());
        if let Ok(info) = self.objects.info(&name).await
            && info.size == bytes.len()
        {
            return Ok(digest);
        }
        let mut reader = bytes;
        self.objects
            .put(name.as_str(), &mut reader)
            .await
            .map_err(nats_err(&format!("store object {name}")))?;
        Ok(digest)
    }

    /// Reads object `<kind>.<hex>` and checks that its bytes hash to
    /// `hex`: bytes that do not match their name are refused.
    pub async fn get_object(&self, kind: &str, hex: &str) -> Result<Vec<u8>, ClusterError> {
        let name = format!("{kind}.{hex}");
        let expected = Digest::from_hex(hex).ok_or_else(|| ClusterError::ObjectMismatch {
            name: name.clone(),
            reason: "not a blake3 digest".into(),
        })?;
        let info = self
            .objects
            .info(&name)
            .await
            .map_err(nats_err(&format!("find object {name}")))?;
        if info.size > MAX_OBJECT_BYTES {
            return Err(ClusterError::ObjectMismatch {
                name,
                reason: format!("{} bytes, more than {MAX_OBJECT_BYTES}", info.size),
            });
        }
        let mut object = self
            .objects
            .get(&name)
            .await
            .map_err(nats_err(&format!("read object {name}")))?;
        let mut bytes = Vec::with_capacity(info.size);
        (&mut object)
            .take(MAX_OBJECT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(nats_err(&format!("read object {name}")))?;
        let actual = Digest::of(&bytes);
        if actual != expected {
            return Err(ClusterError::ObjectMismatch {
                name,
                reason: format!("its bytes hash to {}", actual.to_hex()),
            });
        }
        Ok(bytes)
    }

    /// Writes `record` under its id in the nodes bucket, as a host's
    /// heartbeat does (for simulated nodes; a host agent writes its own).
    pub async fn put_node(&self, record: &super::NodeRecord) -> Result<(), ClusterError> {
        put(&self.nodes, &record.id, record).await.map(drop)
    }

    /// Writes an assignment as the lease holder would, whoever holds the
    /// lease (for tests of hosts and `ps` facing a hostile or stale writer).
    #[doc(hidden)]
    pub async fn put_assignment(&self, assignment: &super::Assignment) -> Result<(), ClusterError> {
        let key = super::replica_key(
            &assignment.deployment,
            &assignment.workload,
            assignment.replica,
        );
        put(&self.assignments, &key, assignment).await.map(drop)
    }

    /// Overwrites object `<kind>.<hex>` with `bytes` whatever they hash to
    /// (for tests of hosts that must refuse a tampered object).
    #[doc(hidden)]
    pub async fn overwrite_object(
        &self,
        kind: &str,
        hex: &str,
        bytes: &[u8],
    ) -> Result<(), ClusterError> {
        let name = format!("{kind}.{hex}");
        let mut reader = bytes;
        self.objects
            .put(name.as_str(), &mut reader)
            .await
            .map_err(nats_err(&format!("store object {name}")))?;
        Ok(())
    }
}

/// The audit stream, created on first use.
async fn audit_stream(js: &jetstream::Context) -> Result<stream::Stream, ClusterError> {
    js.get_or_create_stream(stream::Config {
        name: AUDIT_STREAM.to_string(),
        subjects: vec!["audit.>".to_string()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(nats_err("create the audit stream"))
}

/// A record read from a bucket: its value and its revision.
#[derive(Debug, Clone)]
pub(crate) struct Versioned<T> {
    pub(crate) value: T,
    pub(crate) revision: u64,
}

pub(crate) async fn get<T: DeserializeOwned>(
    store: &kv::Store,
    key: &str,
) -> Result<Option<Versioned<T>>, ClusterError> {
    let entry = store
        .entry(key)
        .await
        .map_err(nats_err(&format!("read {key}")))?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            let value =
                serde_json::from_slice(&e.value).map_err(|source| ClusterError::BadRecord {
                    key: key.to_string(),
                    reason: source.to_string(),
                })?;
            Ok(Some(Versioned {
                value,
                revision: e.revision,
            }))
        }
        _ => Ok(None),
    }
}

/// Every key of a bucket (deleted keys too: their reads return `None`),
/// sorted. From the stream's subjects, in one request: the store's own key
/// listing makes a consumer per call, and hosts reading every step would
/// exhaust the server's consumer limit.
pub(crate) async fn keys(store: &kv::Store) -> Result<Vec<String>, ClusterError> {
    let mut subjects = store
        .stream
        .info_with_subjects(format!("{}>", store.prefix))
        .await
        .map_err(nats_err("list keys"))?;
    let mut out = Vec::new();
    while let Some(item) = subjects.next().await {
        let (subject, _count) = item.map_err(nats_err("list keys"))?;
        if let Some(key) = subject.strip_prefix(store.prefix.as_str()) {
            out.push(key.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Every record of a bucket, by key; a record that does not parse is
/// returned as an error beside its key (the caller decides what to do).
pub(crate) async fn all<T: DeserializeOwned>(
    store: &kv::Store,
) -> Result<Vec<(String, Result<Versioned<T>, ClusterError>)>, ClusterError> {
    let mut out = Vec::new();
    for key in keys(store).await? {
        match get::<T>(store, &key).await {
            Ok(Some(v)) => out.push((key, Ok(v))),
            Ok(None) => {}
            Err(e @ ClusterError::BadRecord { .. }) => out.push((key, Err(e))),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

pub(crate) async fn put<T: Serialize>(
    store: &kv::Store,
    key: &str,
    value: &T,
) -> Result<u64, ClusterError> {
    let bytes = serde_json::to_vec(value).map_err(nats_err(key))?;
    store
        .put(key, bytes.into())
        .await
        .map_err(nats_err(&format!("write {key}")))
}

/// The revision of `key` when it holds a value (a deleted key has none:
/// it is written by a create).
pub(crate) async fn revision(store: &kv::Store, key: &str) -> Result<Option<u64>, ClusterError> {
    let entry = store
        .entry(key)
        .await
        .map_err(nats_err(&format!("read {key}")))?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .map(|e| e.revision))
}

pub(crate) async fn delete(store: &kv::Store, key: &str) -> Result<(), ClusterError> {
    store
        .delete(key)
        .await
        .map_err(nats_err(&format!("delete {key}")))
}

/// Writes `value` at `key` only if the key is still at `revision` (`None`:
/// only if absent). `Ok(None)` when another writer came first.
pub(crate) async fn compare_and_set<T: Serialize>(
    store: &kv::Store,
    key: &str,
    value: &T,
    revision: Option<u64>,
) -> Result<Option<u64>, ClusterError> {
    let bytes = serde_json::to_vec(value).map_err(nats_err(key))?;
    match revision {
        None => match store.create(key, bytes.into()).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(nats_err(&format!("create {key}"))(e)),
        },
        Some(r) => match store.update(key, bytes.into(), r).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(nats_err(&format!("update {key}"))(e)),
        },
    }
}
