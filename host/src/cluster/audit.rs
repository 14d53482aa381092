//! The replicated audit: every host publishes its audit records, byte for
//! byte, to the JetStream stream `FORGEONE_AUDIT` on subject
//! `audit.<node>`, each with the message id `<node>:<seq>` so a record
//! published twice is stored once. The host's local hash-chained log stays
//! the source of truth; the stream is the external witness: a host's chain
//! can be verified from the stream alone, and a local log cut back behind
//! what the stream holds is detected.

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
    /// Where reading the local log (across its segments) stands.
    cursor: crate::audit::LogCursor,
    /// Nothing read yet.
    first_pass: bool,
    /// Lines read and not yet published (kept across a failed publish).
    pending: Vec<Vec<u8>>,
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
            cursor: crate::audit::LogCursor::new(&path),
            path,
            first_pass: true,
            pending: Vec::new(),
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
        // Only complete lines, across segments: the writer may be mid-record.
        // The first pass reads the whole log, to compare its end with the
        // stream's.
        let first_pass = self.first_pass;
        let mut lines = std::mem::take(&mut self.pending);
        loop {
            let more = self.cursor.poll().map_err(|e| ClusterError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let done = more.is_empty() || !first_pass;
            lines.extend(more);
            if done {
                break;
            }
        }
        self.first_pass = false;
        let mut local_last = 0;
        let mut sent = 0;
        for (i, line) in lines.iter().enumerate() {
            let line = line.as_slice();
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
            if let Err(e) = cluster.publish_audit(&self.node, seq, line).await {
                self.pending = lines[i..].to_vec();
                return Err(e);
            }
            last = seq;
            self.published = Some(seq);
            sent += 1;
        }
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
