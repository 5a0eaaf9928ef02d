//! Exactly-once effects across nodes: an escalation's routing step happens once
//! however many nodes try it, and however late a retry comes.
//!
//! A step is one record in the `PEERHUB_STEPS` stream on its own subject,
//! `peerhub.steps.<escalation>.<step>`, published with two guards:
//!
//! - the message id `esc-<id>-step-<n>` ([`step_message_id`]): within the stream's
//!   duplicate window a repeat is answered as a duplicate of the first, without a
//!   second record ([`StepOutcome::Repeat`] with `within_window: true`);
//! - `Nats-Expected-Last-Subject-Sequence: 0` ("no record on this subject yet"):
//!   after the window the id is forgotten, and a bare message-id publish would be
//!   stored a second time; the subject check still refuses it, and the first
//!   record's sequence is read back (`within_window: false`).
//!
//! Whoever gets [`StepOutcome::First`] performs the step's effects (the pager and
//! push hooks); everyone else skips them. Effects done are marked on
//! `peerhub.steps.<escalation>.<step>.done` ([`Steps::mark_done`], once too), so
//! that a node taking over from one that died between recording a step and
//! performing it finds the step not done ([`Steps::is_done`]) and performs it.
//! The stream's max age bounds how long a step is remembered at all: keep it far
//! longer than any escalation stays open.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;

use super::{
    last_message, open_stream, publish_ack, put_expecting, ClusterError, Nats, Put, StreamShape,
};

/// The steps stream's settings.
#[derive(Debug, Clone)]
pub struct StepsConfig {
    /// The stream's name.
    pub stream: String,
    /// Subject prefix: a step's subject is `<prefix>.<escalation>.<step>`.
    pub prefix: String,
    /// Copies of the stream (R3 by default).
    pub replicas: usize,
    /// The stream's duplicate window.
    pub duplicate_window: Duration,
    /// How long steps are remembered.
    pub max_age: Duration,
}

impl Default for StepsConfig {
    fn default() -> Self {
        Self {
            stream: "PEERHUB_STEPS".to_string(),
            prefix: "peerhub.steps".to_string(),
            replicas: 3,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// What recording a step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// This call recorded the step: perform its effects.
    First {
        /// The step's record in the stream.
        stream_seq: u64,
    },
    /// The step was recorded before (by this node or another): skip its effects.
    Repeat {
        /// The first record of the step.
        stream_seq: u64,
        /// Recognised by message id within the duplicate window (`true`) or by
        /// the per-step subject after it (`false`).
        within_window: bool,
    },
}

/// How often a publish that met another node's in-flight publish of the same step
/// asks again (10, 20, ... ms apart: 3.6 s in all).
const IN_PROCESS_RETRIES: u32 = 27;

/// Whether the server answered "duplicate message id is in process" (10158).
fn in_process(error: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    error
        .source()
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|error| {
            error.error_code() == jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT
        })
}

/// The message id of an escalation's routing step.
pub fn step_message_id(escalation: u64, step: u32) -> String {
    format!("esc-{escalation}-step-{step}")
}

/// The steps stream.
#[derive(Debug, Clone)]
pub struct Steps {
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

impl Steps {
    /// Opens the stream, creating it if it does not exist.
    pub async fn open(nats: &Nats, config: &StepsConfig) -> Result<Self, ClusterError> {
        let js = nats.jetstream().clone();
        let stream = open_stream(
            &js,
            StreamShape {
                name: &config.stream,
                prefix: &config.prefix,
                replicas: config.replicas,
                duplicate_window: config.duplicate_window,
                max_age: config.max_age,
            },
        )
        .await?;
        Ok(Self {
            js,
            stream,
            prefix: config.prefix.clone(),
        })
    }

    /// A step's subject.
    pub fn subject(&self, escalation: u64, step: u32) -> String {
        format!("{}.{escalation}.{step}", self.prefix)
    }

    /// Marks step `step` of escalation `escalation` done: its effects were
    /// performed. Once, however many nodes mark it.
    pub async fn mark_done(&self, escalation: u64, step: u32) -> Result<(), ClusterError> {
        let subject = format!("{}.done", self.subject(escalation, step));
        match put_expecting(&self.js, subject, Bytes::new(), 0).await {
            Ok(_) | Err(Put::Conflict) => Ok(()),
            Err(Put::Failed(error)) => Err(ClusterError::unavailable("step done", error)),
        }
    }

    /// Whether step `step` of escalation `escalation` was marked done, as the
    /// stream's leader has it.
    pub async fn is_done(&self, escalation: u64, step: u32) -> Result<bool, ClusterError> {
        let subject = format!("{}.done", self.subject(escalation, step));
        Ok(last_message(&self.stream, &subject, "step done read")
            .await?
            .is_some())
    }

    /// Records step `step` of escalation `escalation` once. `payload` describes
    /// the step (who was paged) for the new router leader; it is never logged.
    pub async fn record(
        &self,
        escalation: u64,
        step: u32,
        payload: Bytes,
    ) -> Result<StepOutcome, ClusterError> {
        let subject = self.subject(escalation, step);
        let mut attempt = 0u32;
        let outcome = loop {
            attempt += 1;
            let message = || {
                PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(step_message_id(escalation, step))
                    .expected_last_subject_sequence(0)
            };
            // A stream just made elsewhere that this server does not know yet is
            // asked again by `publish_ack`. Another node's publish of the same step
            // still being replicated ("duplicate message id is in process", 10158):
            // ask again shortly, when it is either stored (a duplicate) or gone
            // (ours may go in).
            match publish_ack(&self.js, &subject, message).await {
                Err(error) if in_process(&error) && attempt < IN_PROCESS_RETRIES => {
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                }
                outcome => break outcome,
            }
        };
        match outcome {
            Ok(ack) if ack.duplicate => Ok(StepOutcome::Repeat {
                stream_seq: ack.sequence,
                within_window: true,
            }),
            Ok(ack) => Ok(StepOutcome::First {
                stream_seq: ack.sequence,
            }),
            Err(error) if super::is_sequence_conflict(&error) => {
                let first = self
                    .stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                    .map_err(|error| ClusterError::unavailable("step read", error))?;
                Ok(StepOutcome::Repeat {
                    stream_seq: first.sequence,
                    within_window: false,
                })
            }
            Err(error) => Err(ClusterError::unavailable("step record", error)),
        }
    }
}
