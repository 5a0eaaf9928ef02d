//! The audit chains' copy in NATS: one replicated file stream, `PEERHUB_AUDIT`,
//! holding every node's sled chain as that node shipped it
//! ([`super::audit_ship`]), so a node's record outlives its data folder and
//! `peerhub audit verify --cluster` checks every chain with NATS alone.
//!
//! # Subjects
//!
//! A chain is named by its node's name and its chain id (made once per data
//! folder: [`crate::store::Store::audit_chain_id`]), so a node started again on
//! a fresh folder under the same name ships a new chain beside its old one:
//!
//! | subject                                   | payload |
//! | ----------------------------------------- | ------- |
//! | `peerhub.audit.<node>.<chain>.e.<seq>`    | entry `seq`, its bytes exactly as sled stores them (hash line, newline, body) |
//! | `peerhub.audit.<node>.<chain>.anchor`     | JSON `{"seq":N,"hash":"<64 hex>"}`: the last entry pruned from the front |
//!
//! An entry's copy is its subject's last message. A rewrite (an erasure, an
//! ephemeral session's end) publishes the new copies first, then erases the old
//! messages with JetStream's message delete, which overwrites their bytes; a
//! reader that comes between sees the new copy, since it is the later. Older
//! copies found on a subject (a rewrite cut short) are erased by the next
//! shipper to start. Pruning publishes the new anchor first, then erases the
//! entries at or before it.
//!
//! Logs name subjects and sequence numbers, never an entry's content.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    check_token, open_stream, publish_ack, retry_unavailable, ClusterError, Nats, StreamShape,
    READ_DEADLINE,
};
use crate::audit::{self, Anchor, ChainBreak, EntryHash, VerifyReport};

/// Where the chains are kept.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The stream's name.
    pub stream: String,
    /// The subject prefix.
    pub prefix: String,
    /// Copies of the stream (R3 by default; 1 for a one-server NATS).
    pub replicas: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            stream: "PEERHUB_AUDIT".to_string(),
            prefix: "peerhub.audit".to_string(),
            replicas: 3,
        }
    }
}

/// A chain's name: the node that writes it and the chain id of its data folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainName {
    /// The node's name (`cluster.node_name`).
    pub node: String,
    /// The data folder's chain id.
    pub chain: String,
}

/// One stored copy of an entry: where the stream holds it, and its bytes.
#[derive(Debug, Clone)]
pub struct EntryCopy {
    /// Its stream sequence.
    pub stream_seq: u64,
    /// Its hash line, if it has a readable one.
    hash: Option<EntryHash>,
    /// Its bytes (empty in the shipper's own record of what it shipped, which
    /// needs only the hashes).
    pub payload: Bytes,
}

impl EntryCopy {
    /// A copy of the entry `payload` at `stream_seq`.
    pub fn new(stream_seq: u64, payload: Bytes) -> Self {
        let hash = payload.get(..64).and_then(EntryHash::parse_hex);
        Self {
            stream_seq,
            hash,
            payload,
        }
    }

    /// The hash line of the entry's copy, if it has a readable one.
    pub fn hash(&self) -> Option<EntryHash> {
        self.hash
    }

    /// The same copy without its bytes.
    pub fn without_payload(self) -> Self {
        Self {
            payload: Bytes::new(),
            ..self
        }
    }
}

/// A chain as the stream holds it.
#[derive(Debug, Clone, Default)]
pub struct StoredChain {
    /// The anchor's copy and value, if the chain was pruned.
    pub anchor: Option<(u64, Anchor)>,
    /// Each entry's current copy (its subject's last message), by entry seq.
    pub entries: BTreeMap<u64, EntryCopy>,
    /// Messages that are no longer part of the chain: older copies of an entry
    /// or of the anchor, and entries at or before the anchor (a rewrite or a
    /// prune cut short). Stream sequences, to erase.
    pub stale: Vec<u64>,
    /// Messages on the chain's subjects that are neither an entry nor an anchor
    /// (someone else published there), or an anchor that does not parse.
    pub unreadable: Vec<(String, String)>,
}

impl StoredChain {
    /// The anchor, or the start of an unpruned chain.
    pub fn anchor(&self) -> Anchor {
        self.anchor.map(|(_, a)| a).unwrap_or(Anchor {
            seq: 0,
            hash: EntryHash::GENESIS,
        })
    }

    /// Checks the chain with the one-node verifier, from its anchor.
    pub fn verify(&self) -> Result<VerifyReport, ChainBreak> {
        audit::verify_entries(
            self.anchor(),
            self.entries
                .iter()
                .map(|(seq, copy)| Ok::<_, String>((*seq, copy.payload.to_vec()))),
        )
    }

    /// Takes in one message read from the chain's subjects (`rest`: what follows
    /// `<node>.<chain>.`), in stream order.
    fn take(&mut self, rest: &str, stream_seq: u64, payload: Bytes) {
        if rest == "anchor" {
            match serde_json::from_slice::<AnchorJson>(&payload) {
                Ok(anchor) => {
                    if let Some((old, _)) = self.anchor.replace((
                        stream_seq,
                        Anchor {
                            seq: anchor.seq,
                            hash: anchor.hash,
                        },
                    )) {
                        self.stale.push(old);
                    }
                }
                Err(error) => self
                    .unreadable
                    .push((rest.to_string(), format!("anchor: {error}"))),
            }
            return;
        }
        let seq = rest
            .strip_prefix("e.")
            .and_then(|seq| seq.parse::<u64>().ok())
            .filter(|seq| *seq > 0);
        let Some(seq) = seq else {
            self.unreadable
                .push((rest.to_string(), "not an entry's subject".to_string()));
            return;
        };
        let copy = EntryCopy::new(stream_seq, payload);
        if let Some(old) = self.entries.insert(seq, copy) {
            self.stale.push(old.stream_seq);
        }
    }

    /// Moves the entries at or before the anchor to `stale`.
    fn settle(&mut self) {
        let anchor = self.anchor().seq;
        let kept = self.entries.split_off(&(anchor + 1));
        let pruned = std::mem::replace(&mut self.entries, kept);
        self.stale.extend(pruned.values().map(|c| c.stream_seq));
    }
}

/// The anchor as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorJson {
    seq: u64,
    hash: EntryHash,
}

/// The chains' stream.
#[derive(Debug, Clone)]
pub struct ClusterAudit {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    config: AuditConfig,
}

impl ClusterAudit {
    /// Opens the stream, creating it (file storage, kept for ever) if needed.
    pub async fn open(nats: &Nats, config: &AuditConfig) -> Result<Self, ClusterError> {
        let stream = open_stream(
            nats.jetstream(),
            StreamShape {
                name: &config.stream,
                prefix: &config.prefix,
                replicas: config.replicas,
                duplicate_window: Duration::from_secs(120),
                max_age: Duration::ZERO,
            },
        )
        .await?;
        Ok(Self {
            js: nats.jetstream().clone(),
            stream,
            config: config.clone(),
        })
    }

    /// The subjects' common part for `chain`: `<prefix>.<node>.<chain>`.
    fn base(&self, chain: &ChainName) -> Result<String, ClusterError> {
        check_token(&chain.node)?;
        check_token(&chain.chain)?;
        Ok(format!(
            "{}.{}.{}",
            self.config.prefix, chain.node, chain.chain
        ))
    }

    /// Publishes `stored` as entry `seq`'s copy in `chain` and waits for the
    /// stream's acknowledgement; returns its stream sequence. The message id
    /// names the entry and its hash, so a publish sent again after a lost
    /// acknowledgement is stored once.
    pub async fn put_entry(
        &self,
        chain: &ChainName,
        seq: u64,
        hash: &EntryHash,
        stored: Bytes,
    ) -> Result<u64, ClusterError> {
        let subject = format!("{}.e.{seq}", self.base(chain)?);
        let id = format!("audit-{}-{}-{seq}-{hash}", chain.node, chain.chain);
        let message = || {
            jetstream::message::PublishMessage::build()
                .payload(stored.clone())
                .message_id(id.as_str())
        };
        publish_ack(&self.js, &subject, message)
            .await
            .map(|ack| ack.sequence)
            .map_err(|error| ClusterError::unavailable("audit ship", error))
    }

    /// Publishes `anchor` as `chain`'s anchor; returns its stream sequence.
    pub async fn put_anchor(&self, chain: &ChainName, anchor: Anchor) -> Result<u64, ClusterError> {
        let subject = format!("{}.anchor", self.base(chain)?);
        let payload = super::to_json(&AnchorJson {
            seq: anchor.seq,
            hash: anchor.hash,
        });
        let id = format!(
            "audit-{}-{}-anchor-{}-{}",
            chain.node, chain.chain, anchor.seq, anchor.hash
        );
        let message = || {
            jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(id.as_str())
        };
        publish_ack(&self.js, &subject, message)
            .await
            .map(|ack| ack.sequence)
            .map_err(|error| ClusterError::unavailable("audit anchor", error))
    }

    /// Erases the messages at `stream_seqs` with JetStream's message delete,
    /// which overwrites their bytes in every replica's store. A message already
    /// gone counts as erased.
    pub async fn erase(&self, stream_seqs: &[u64]) -> Result<(), ClusterError> {
        /// JetStream's "no message found".
        const NO_MESSAGE: u64 = 10037;
        for &seq in stream_seqs {
            match self.stream.delete_message(seq).await {
                Ok(_) => {}
                Err(error) => match error.kind() {
                    jetstream::stream::DeleteMessageErrorKind::JetStream(js)
                        if js.code() == 404 || js.error_code().0 == NO_MESSAGE => {}
                    _ => return Err(ClusterError::unavailable("audit erase", error)),
                },
            }
        }
        Ok(())
    }

    /// One chain as the stream holds it now.
    pub async fn read_chain(&self, chain: &ChainName) -> Result<StoredChain, ClusterError> {
        let base = self.base(chain)?;
        let all = self.read_chains(&format!("{base}.>")).await?;
        Ok(all.into_values().next().unwrap_or_default())
    }

    /// Every chain the stream holds, by name; each with its messages that are
    /// not entries or anchors in `unreadable`. Messages on no chain's subject
    /// are returned under the node name `?`.
    pub async fn read_all(&self) -> Result<BTreeMap<ChainName, StoredChain>, ClusterError> {
        self.read_chains(&format!("{}.>", self.config.prefix)).await
    }

    async fn read_chains(
        &self,
        filter: &str,
    ) -> Result<BTreeMap<ChainName, StoredChain>, ClusterError> {
        let messages =
            retry_unavailable(READ_DEADLINE, || read_filtered(&self.stream, filter)).await?;
        let prefix = format!("{}.", self.config.prefix);
        let mut chains: BTreeMap<ChainName, StoredChain> = BTreeMap::new();
        for (subject, stream_seq, payload) in messages {
            let rest = subject.strip_prefix(&prefix).unwrap_or(&subject);
            let mut parts = rest.splitn(3, '.');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(node), Some(chain), Some(rest)) => {
                    let name = ChainName {
                        node: node.to_string(),
                        chain: chain.to_string(),
                    };
                    chains
                        .entry(name)
                        .or_default()
                        .take(rest, stream_seq, payload);
                }
                _ => chains
                    .entry(ChainName {
                        node: "?".to_string(),
                        chain: "?".to_string(),
                    })
                    .or_default()
                    .unreadable
                    .push((subject.clone(), "on no chain's subject".to_string())),
            }
        }
        for chain in chains.values_mut() {
            chain.settle();
        }
        Ok(chains)
    }
}

/// A chain's verdict from [`verify_cluster`].
#[derive(Debug, Clone)]
pub struct ChainVerdict {
    /// Whose chain.
    pub name: ChainName,
    /// What the one-node verifier says of it, or the first message found on
    /// its subjects that is neither an entry nor an anchor.
    pub verdict: Result<VerifyReport, ChainProblem>,
}

/// Why a chain in the stream is not intact.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainProblem {
    /// The chain breaks at an entry.
    #[error("at entry {}: {}", .0.seq, .0.reason)]
    Break(ChainBreak),
    /// A message on the chain's subjects is neither an entry nor an anchor.
    #[error("with a message on {subject} that is not part of a chain: {why}")]
    Unexpected {
        /// Its subject, after the chain's name.
        subject: String,
        /// Why it is not.
        why: String,
    },
}

impl ClusterAudit {
    /// Opens the stream without creating it (a check must not make one).
    pub async fn open_existing(nats: &Nats, config: &AuditConfig) -> Result<Self, ClusterError> {
        let stream = nats
            .jetstream()
            .get_stream(&config.stream)
            .await
            .map_err(|error| ClusterError::Setup {
                what: format!("stream {}", config.stream),
                reason: error.to_string(),
            })?;
        Ok(Self {
            js: nats.jetstream().clone(),
            stream,
            config: config.clone(),
        })
    }

    /// Every chain in the stream, checked: see [`verify_cluster`].
    pub async fn verify_all(&self) -> Result<Vec<ChainVerdict>, ClusterError> {
        let chains = self.read_all().await?;
        Ok(chains
            .into_iter()
            .map(|(name, chain)| {
                let verdict = match chain.unreadable.first() {
                    Some((subject, why)) => Err(ChainProblem::Unexpected {
                        subject: subject.clone(),
                        why: why.clone(),
                    }),
                    None => chain.verify().map_err(ChainProblem::Break),
                };
                ChainVerdict { name, verdict }
            })
            .collect())
    }
}

/// `peerhub audit verify --cluster`: reads every node's chain from the
/// cluster's audit stream (NATS alone: no node need be running) and checks each
/// with the one-node verifier, from its anchor. The error is NATS or the stream
/// being out of reach.
pub async fn verify_cluster(
    settings: &crate::config::ClusterSettings,
) -> Result<Vec<ChainVerdict>, ClusterError> {
    let nats = Nats::connect_with(settings, "audit-verify", super::node::REQUEST_TIMEOUT).await?;
    let audit = ClusterAudit::open_existing(&nats, &AuditConfig::default()).await?;
    audit.verify_all().await
}

/// Every message on `filter` (wildcards allowed) as (subject, stream sequence,
/// payload), in stream order, up to the last there was when the read began.
async fn read_filtered(
    stream: &jetstream::stream::Stream,
    filter: &str,
) -> Result<Vec<(String, u64, Bytes)>, ClusterError> {
    const OP: &str = "audit read";
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|error| ClusterError::unavailable(OP, error))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| ClusterError::unavailable(OP, error))?;
    let mut out = Vec::new();
    loop {
        let (message, stream_seq, pending) = super::next_message(&mut messages, OP).await?;
        out.push((
            message.subject.to_string(),
            stream_seq,
            message.payload.clone(),
        ));
        if pending == 0 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(seq: u64, text: &str) -> Bytes {
        let _ = seq;
        Bytes::from(text.to_string())
    }

    #[test]
    fn a_subjects_last_message_is_the_entry_and_older_ones_are_stale() {
        let mut chain = StoredChain::default();
        chain.take("e.1", 10, copy(1, "a"));
        chain.take("e.2", 11, copy(2, "b"));
        chain.take("e.2", 14, copy(2, "b2"));
        chain.take("junk", 15, copy(0, "x"));
        chain.take("e.0", 16, copy(0, "x"));
        chain.settle();
        assert_eq!(chain.entries.len(), 2);
        assert_eq!(chain.entries[&2].stream_seq, 14);
        assert_eq!(chain.stale, vec![11]);
        assert_eq!(chain.unreadable.len(), 2);
    }

    #[test]
    fn entries_at_or_before_the_anchor_are_stale() {
        let mut chain = StoredChain::default();
        for seq in 1..=4 {
            chain.take(&format!("e.{seq}"), seq, copy(seq, "x"));
        }
        let anchor = format!(r#"{{"seq":2,"hash":"{}"}}"#, "ab".repeat(32));
        chain.take("anchor", 5, Bytes::from(anchor.clone()));
        chain.take("anchor", 6, Bytes::from(anchor));
        chain.settle();
        assert_eq!(chain.anchor().seq, 2);
        assert_eq!(
            chain.entries.keys().copied().collect::<Vec<_>>(),
            vec![3, 4]
        );
        let mut stale = chain.stale.clone();
        stale.sort();
        assert_eq!(stale, vec![1, 2, 5]);
    }
}
