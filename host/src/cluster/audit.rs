//! The replicated audit: every host publishes its audit records, byte for
//! byte, to the JetStream stream `FORGEONE_AUDIT` on subject
//! `audit.<node>`, each with the message id `<node>:<seq>` so a record
//! published twice is stored once. The host's local hash-chained log stays
//! the source of truth; the stream is the external witness: a host's chain
//! can be verified from the stream alone, and a local log cut back behind
//! what the stream holds is detected.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use async_nats::jetstream::stream;
use serde::Deserialize;

use super::ClusterError;
use super::store::Cluster;

/// The subject of a node's audit records.
pub fn audit_subject(node: &str) -> String {
    format!("audit.{node}")
}

fn nats<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ClusterError + '_ {
    move |e| ClusterError::Nats {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

#[derive(Deserialize)]
struct Seq {
    seq: u64,
}

fn seq_of(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Seq>(line).ok().map(|s| s.seq)
}

/// One record of the stream: the node that published it and its exact
/// bytes (one JSON line of that node's audit log).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamRecord {
    /// The publishing node.
    pub node: String,
    /// The record's sequence number in that node's log.
    pub seq: u64,
    /// The record, exactly as the node's log holds it (no newline).
    pub line: Vec<u8>,
}

impl Cluster {
    /// The last record the stream holds for `node`: its sequence number
    /// and bytes; `(0, empty)` when none.
    pub async fn audit_head(&self, node: &str) -> Result<(u64, Vec<u8>), ClusterError> {
        match self
            .audit
            .get_last_raw_message_by_subject(&audit_subject(node))
            .await
        {
            Ok(m) => Ok((seq_of(&m.payload).unwrap_or(0), m.payload.to_vec())),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok((0, Vec::new()))
            }
            Err(e) => Err(nats("read the audit stream")(e)),
        }
    }

    /// Every record the stream holds for `node` (all nodes with `None`),
    /// in the order they were stored.
    pub async fn audit_records(
        &self,
        node: Option<&str>,
    ) -> Result<Vec<StreamRecord>, ClusterError> {
        let subject = node.map_or_else(|| "audit.>".to_string(), audit_subject);
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            let message = match self
                .audit
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject.clone())
                .send()
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(nats("read the audit stream")(e)),
            };
            next = message.sequence + 1;
            let node = message
                .subject
                .as_str()
                .strip_prefix("audit.")
                .unwrap_or_default()
                .to_string();
            let seq = seq_of(&message.payload).unwrap_or(0);
            out.push(StreamRecord {
                node,
                seq,
                line: message.payload.to_vec(),
            });
        }
        Ok(out)
    }

    /// Publishes one record of `node`'s log, de-duplicated by (node, seq).
    async fn publish_audit(&self, node: &str, seq: u64, line: &[u8]) -> Result<(), ClusterError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{node}:{seq}").as_str());
        self.js
            .publish_with_headers(audit_subject(node), headers, line.to_vec().into())
            .await
            .map_err(nats("publish an audit record"))?
            .await
            .map_err(nats("publish an audit record"))?;
        Ok(())
    }
}

/// Follows a host's local audit log and publishes what it has not yet.
///
/// When it starts it reads the stream's last record of this node. The
/// local log must hold that very record (same bytes at the same sequence
/// number); if it ends before it, or holds another record there, it was
/// cut back (and perhaps rewritten): that is reported, and nothing more is
/// published, so the stream keeps the chain as it was.
#[derive(Debug)]
pub(crate) struct AuditPublisher {
    node: String,
    path: PathBuf,
    offset: u64,
    /// The highest sequence number published (or found in the stream).
    published: Option<u64>,
    /// The stream's last record when this publisher started.
    head: Option<(u64, Vec<u8>)>,
    /// Why the local log is behind the stream, once found.
    pub(crate) behind: Option<String>,
}

impl AuditPublisher {
    pub(crate) fn new(node: String, path: PathBuf) -> AuditPublisher {
        AuditPublisher {
            node,
            path,
            offset: 0,
            published: None,
            head: None,
            behind: None,
        }
    }

    /// Publishes every complete record after the last one published.
    pub(crate) async fn publish(&mut self, cluster: &Cluster) -> Result<usize, ClusterError> {
        if self.behind.is_some() {
            return Ok(0);
        }
        if self.head.is_none() {
            let head = cluster.audit_head(&self.node).await?;
            self.published = Some(head.0);
            self.head = Some(head);
        }
        let (head_seq, head_line) = self.head.clone().unwrap_or_default();
        let mut last = self.published.unwrap_or(0);
        let io = |source| ClusterError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        // Only complete lines: the writer may be mid-record.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let first_pass = self.offset == 0;
        let mut local_last = 0;
        let mut sent = 0;
        for line in bytes[..complete].split(|b| *b == b'\n') {
            let Some(seq) = seq_of(line) else { continue };
            local_last = seq;
            if seq == head_seq && line != head_line.as_slice() {
                return Err(self.cut_back(format!(
                    "holds another record at seq {seq} than the audit stream"
                )));
            }
            if seq <= last {
                continue;
            }
            cluster.publish_audit(&self.node, seq, line).await?;
            last = seq;
            self.published = Some(seq);
            sent += 1;
        }
        self.offset += complete as u64;
        if first_pass && local_last < head_seq {
            return Err(self.cut_back(format!(
                "ends at seq {local_last}, but the audit stream holds up to seq {head_seq}"
            )));
        }
        Ok(sent)
    }

    fn cut_back(&mut self, what: String) -> ClusterError {
        let why = format!(
            "the local audit log {} {what}: the local log was cut back; nothing more is published",
            self.path.display()
        );
        tracing::error!(node = %self.node, "{why}");
        self.behind = Some(why.clone());
        ClusterError::Invalid(why)
    }
}
