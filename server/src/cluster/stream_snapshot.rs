//! JetStream's own stream snapshot and restore (`$JS.API.STREAM.SNAPSHOT.<stream>`,
//! `$JS.API.STREAM.RESTORE.<stream>`, the protocol `nats stream backup` and
//! `restore` speak), which async-nats does not offer. A snapshot is the stream's
//! store as the server keeps it — its messages with their sequences, the gaps
//! deleted messages left, its first and last sequence — so a stream restored
//! from it numbers its messages exactly as before: the group logs' fences and
//! the nodes' replica marks name stream sequences, and a copy read and
//! published again message by message would renumber them.
//!
//! The snapshot's bytes are the server's (a compressed archive); peerhub keeps
//! them as they came and never reads into them. Consumers are left out (peerhub's
//! are all made on demand).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::Value;

use super::ClusterError;

/// The size of each chunk the server sends.
const CHUNK: usize = 128 * 1024;

/// How long the next chunk of a snapshot, or the answer to one sent, may take.
const STALL: Duration = Duration::from_secs(20);

/// How long the server may take to put a restored stream in place after its last
/// chunk (it writes every copy).
const FINISH: Duration = Duration::from_secs(60);

/// What the server said of a stream when it took its snapshot.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The stream's configuration, as the server gave it (every field kept).
    pub config: Value,
    /// Its state: messages, bytes, first and last sequence, deleted count.
    pub state: Value,
}

/// What a snapshot hands on, in order: what the server said, then each chunk.
#[derive(Debug)]
pub enum Piece<'a> {
    /// The stream's configuration and state, before any chunk.
    Start(&'a Taken),
    /// The snapshot's next bytes.
    Chunk(&'a [u8]),
}

/// Takes a snapshot of `stream` from its leader, handing what the server said
/// and then each chunk to `sink` as they arrive (the sink's error stops it).
pub async fn snapshot(
    client: &async_nats::Client,
    stream: &str,
    mut sink: impl FnMut(Piece<'_>) -> Result<(), ClusterError>,
) -> Result<Taken, ClusterError> {
    let op = "stream snapshot";
    let inbox = client.new_inbox();
    let mut chunks = client
        .subscribe(inbox.clone())
        .await
        .map_err(|error| ClusterError::unavailable(op, error))?;
    let body = serde_json::json!({
        "deliver_subject": inbox,
        "no_consumers": true,
        "chunk_size": CHUNK,
    });
    let answer = api_request(
        client,
        format!("$JS.API.STREAM.SNAPSHOT.{stream}"),
        &body,
        STALL,
        op,
    )
    .await?;
    let taken = Taken {
        config: answer.get("config").cloned().unwrap_or(Value::Null),
        state: answer.get("state").cloned().unwrap_or(Value::Null),
    };
    if !taken.config.is_object() || !taken.state.is_object() {
        return Err(ClusterError::Corrupt {
            what: "snapshot answer",
            reason: format!("{stream}: no config or state in the server's answer"),
        });
    }
    sink(Piece::Start(&taken))?;
    loop {
        let message = tokio::time::timeout(STALL, chunks.next())
            .await
            .map_err(|_| ClusterError::unavailable(op, format!("{stream}: no chunk came")))?
            .ok_or_else(|| ClusterError::unavailable(op, "the subscription ended"))?;
        if message.payload.is_empty() {
            // The end; a status other than "no content" says why it ended early.
            return match message.status.map(u16::from) {
                None | Some(200) | Some(204) => Ok(taken),
                Some(status) => Err(ClusterError::unavailable(
                    op,
                    format!(
                        "{stream}: the server ended the snapshot with {status} {}",
                        message.description.unwrap_or_default()
                    ),
                )),
            };
        }
        sink(Piece::Chunk(&message.payload))?;
        // The server sends on only as chunks are acknowledged.
        if let Some(reply) = message.reply {
            client
                .publish(reply, Bytes::new())
                .await
                .map_err(|error| ClusterError::unavailable(op, error))?;
        }
    }
}

/// Creates `stream` from a snapshot: `config` and `state` as [`snapshot`] gave
/// them (the caller may change the copies), then every chunk `chunks` yields, in
/// order. Returns the stream's state as the server reports it once in place.
pub async fn restore(
    client: &async_nats::Client,
    stream: &str,
    config: &Value,
    state: &Value,
    mut chunks: impl FnMut() -> Result<Option<Vec<u8>>, ClusterError>,
) -> Result<Value, ClusterError> {
    let op = "stream restore";
    let body = serde_json::json!({ "config": config, "state": state });
    let answer = api_request(
        client,
        format!("$JS.API.STREAM.RESTORE.{stream}"),
        &body,
        STALL,
        op,
    )
    .await?;
    let deliver = answer
        .get("deliver_subject")
        .and_then(Value::as_str)
        .ok_or_else(|| ClusterError::Corrupt {
            what: "restore answer",
            reason: format!("{stream}: no deliver_subject in the server's answer"),
        })?
        .to_string();
    while let Some(chunk) = chunks()? {
        let reply = request(client, &deliver, Bytes::from(chunk), STALL, op).await?;
        if !reply.payload.is_empty() {
            return Err(ClusterError::unavailable(
                op,
                format!(
                    "{stream}: a chunk was refused: {}",
                    String::from_utf8_lossy(&reply.payload)
                ),
            ));
        }
    }
    // An empty message ends it; the answer is the stream's info, or why not.
    let done = request(client, &deliver, Bytes::new(), FINISH, op).await?;
    let info = parse_answer(&done.payload, op, stream)?;
    Ok(info.get("state").cloned().unwrap_or(Value::Null))
}

/// One JetStream API request with a JSON body; its answer, or the server's error.
async fn api_request(
    client: &async_nats::Client,
    subject: String,
    body: &Value,
    timeout: Duration,
    op: &'static str,
) -> Result<Value, ClusterError> {
    let payload = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let answer = request(client, &subject, payload, timeout, op).await?;
    parse_answer(
        &answer.payload,
        op,
        subject.rsplit('.').next().unwrap_or(""),
    )
}

/// How long a request nobody subscribes to yet is sent again: the server that
/// takes a restore's chunks subscribes to their subject as it answers, and the
/// other servers learn of it a moment later.
const NO_RESPONDERS_GRACE: Duration = Duration::from_secs(5);

/// One request and its answer. "No responders" means nobody received it, so it
/// is sent again for up to [`NO_RESPONDERS_GRACE`].
async fn request(
    client: &async_nats::Client,
    subject: &str,
    payload: Bytes,
    timeout: Duration,
    op: &'static str,
) -> Result<async_nats::Message, ClusterError> {
    let deadline = tokio::time::Instant::now() + NO_RESPONDERS_GRACE;
    loop {
        let sent = client
            .send_request(
                subject.to_string(),
                async_nats::Request::new()
                    .payload(payload.clone())
                    .timeout(Some(timeout)),
            )
            .await;
        match sent {
            Err(error)
                if error.kind() == async_nats::RequestErrorKind::NoResponders
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent => return sent.map_err(|error| ClusterError::unavailable(op, error)),
        }
    }
}

/// A JetStream API answer: the JSON, or its `error` as [`ClusterError::Setup`].
fn parse_answer(payload: &[u8], op: &'static str, stream: &str) -> Result<Value, ClusterError> {
    let answer: Value = serde_json::from_slice(payload).map_err(|error| ClusterError::Corrupt {
        what: "JetStream answer",
        reason: format!("{op}: {error}"),
    })?;
    match answer.get("error") {
        Some(error) => Err(ClusterError::Setup {
            what: format!("{op} of {stream}"),
            reason: error
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("refused")
                .to_string(),
        }),
        None => Ok(answer),
    }
}
