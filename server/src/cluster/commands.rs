//! Commands from other nodes (docs/CLUSTER.md §4). A session stays on the node
//! its client reached; a verified command for a group whose actor runs elsewhere
//! goes to that actor as a NATS request on `peerhub.cmd.<group>`, a subject only
//! the group's lease holder subscribes to, and the reply is the frame the client
//! gets.
//!
//! - [`ask`] sends one command and waits for its answer. Nobody subscribed means
//!   nobody owns the group ([`Asked::NoOwner`], at once, not after a timeout): the
//!   asking node may then take the group's lease itself. It is a hint, not a
//!   verdict: a new owner's subscription reaches the other NATS servers a moment
//!   after it is made, so a node attached to another server can still hear "no
//!   owner" just after; it then finds the lease held and asks again. A timeout is
//!   retryable, with the same command id.
//! - [`Inbox`] is the owner's side: commands one at a time, in arrival order, as
//!   an actor takes them, each answered with [`Inbox::answer`].
//! - [`Replies`] is the owner's memory of recent answers by command id (the key
//!   and its counter), so a command sent again after a timeout gets its first
//!   answer instead of being applied twice or refused as a replay.
//!
//! The command id travels in the `Peerhub-Command` header. Logs name groups and
//! command counts, never payloads.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;

use super::{check_token, ClusterError, Nats};

/// The header carrying a command's id.
pub const COMMAND_HEADER: &str = "Peerhub-Command";

/// The subject a group's owner takes commands on.
pub fn subject(group: &str) -> Result<String, ClusterError> {
    check_token(group)?;
    Ok(format!("peerhub.cmd.{group}"))
}

/// How a command sent to a group's owner went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// The owner's answer.
    Answered(Bytes),
    /// Nobody owns the group now: no node subscribes to its commands.
    NoOwner,
}

/// Sends command `id` for `group` and waits up to `timeout` for the answer.
/// [`ClusterError::Unavailable`] on a timeout or a lost connection: the command
/// may or may not have been applied; send it again with the same `id`.
pub async fn ask(
    nats: &Nats,
    group: &str,
    id: &str,
    payload: Bytes,
    timeout: Duration,
) -> Result<Asked, ClusterError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(COMMAND_HEADER, id);
    let request = async_nats::Request::new()
        .payload(payload)
        .headers(headers)
        .timeout(Some(timeout));
    match nats.client().send_request(subject(group)?, request).await {
        Ok(message) => Ok(Asked::Answered(message.payload)),
        Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
            Ok(Asked::NoOwner)
        }
        Err(error) => Err(ClusterError::unavailable("command", error)),
    }
}

/// A command taken from the inbox.
#[derive(Debug)]
pub struct Command {
    /// Its id (the key and its counter, as the session's node names it).
    pub id: String,
    /// What the session's node sent.
    pub payload: Bytes,
    reply: Option<async_nats::Subject>,
}

/// The owner's inbox of a group's commands.
#[derive(Debug)]
pub struct Inbox {
    nats: Nats,
    subscriber: async_nats::Subscriber,
}

impl Inbox {
    /// Starts taking `group`'s commands. Only the lease holder does this; it stops
    /// (drops the inbox) the moment it loses the lease.
    pub async fn serve(nats: &Nats, group: &str) -> Result<Self, ClusterError> {
        let subscriber = nats
            .client()
            .subscribe(subject(group)?)
            .await
            .map_err(|error| ClusterError::unavailable("command subscribe", error))?;
        // Flushed, so a command sent right after this returns finds the subscription.
        nats.client()
            .flush()
            .await
            .map_err(|error| ClusterError::unavailable("command subscribe", error))?;
        Ok(Self {
            nats: nats.clone(),
            subscriber,
        })
    }

    /// The next command; `None` once the subscription ended. A message without a
    /// command id is dropped (its sender gets no answer and times out).
    pub async fn next(&mut self) -> Option<Command> {
        loop {
            let message = self.subscriber.next().await?;
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(COMMAND_HEADER))
                .map(|value| value.as_str().to_string());
            match id {
                Some(id) if !id.is_empty() => {
                    return Some(Command {
                        id,
                        payload: message.payload,
                        reply: message.reply,
                    })
                }
                _ => tracing::warn!("a command without an id was dropped"),
            }
        }
    }

    /// Answers `command` (a sender that gave up needs no answer).
    pub async fn answer(&self, command: &Command, answer: Bytes) -> Result<(), ClusterError> {
        let Some(reply) = &command.reply else {
            return Ok(());
        };
        self.nats
            .client()
            .publish(reply.clone(), answer)
            .await
            .map_err(|error| ClusterError::unavailable("command answer", error))
    }

    /// Stops taking commands: senders then hear there is no owner.
    pub async fn close(mut self) {
        let _ = self.subscriber.unsubscribe().await;
    }
}

/// The owner's recent answers by command id, at most `capacity` of them (the
/// oldest forgotten first).
#[derive(Debug)]
pub struct Replies {
    capacity: usize,
    answers: HashMap<String, Bytes>,
    order: VecDeque<String>,
}

impl Replies {
    /// Remembers up to `capacity` answers.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            answers: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The answer already given to command `id`, if it is remembered.
    pub fn get(&self, id: &str) -> Option<&Bytes> {
        self.answers.get(id)
    }

    /// Remembers the answer given to command `id`.
    pub fn remember(&mut self, id: &str, answer: Bytes) {
        if self.answers.insert(id.to_string(), answer).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_forget_the_oldest_beyond_their_capacity() {
        let mut replies = Replies::new(2);
        replies.remember("a", Bytes::from_static(b"1"));
        replies.remember("b", Bytes::from_static(b"2"));
        replies.remember("a", Bytes::from_static(b"1"));
        assert_eq!(replies.get("a").map(|b| &b[..]), Some(&b"1"[..]));
        replies.remember("c", Bytes::from_static(b"3"));
        assert!(replies.get("a").is_none(), "the oldest is forgotten");
        assert!(replies.get("b").is_some() && replies.get("c").is_some());
    }

    #[test]
    fn subjects_take_only_plain_group_names() {
        assert_eq!(subject("circle").unwrap(), "peerhub.cmd.circle");
        assert!(subject("a.b").is_err());
        assert!(subject("*").is_err());
    }
}
