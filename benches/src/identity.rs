//! A load client's key: signs what it sends, with a per-key counter that only rises
//! (the replay rule in `peerhub_protocol::payload`).

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::payload::PostPayload;
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use serde_json::json;

use crate::now_ms;

/// An Ed25519 identity and the last counter it used. One connection per identity,
/// so the counter is never shared.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The private key.
    pub signing: SigningKey,
    counter: u64,
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        Ok(Self::from_seed(seed))
    }

    /// A fixed identity.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
            counter: 0,
        }
    }

    /// The public key (the account id).
    pub fn key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The next counter: above every counter used before.
    pub fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Makes later counters exceed `floor` (the `counter` in `auth_ok`).
    pub fn raise_counter(&mut self, floor: u64) {
        self.counter = self.counter.max(floor);
    }

    /// Signs a payload written as JSON. The payloads are built here as JSON objects
    /// holding only the fields the generator needs (the rest take their defaults),
    /// so a new optional field in `peerhub_protocol::payload` does not break it.
    fn sign_value(&self, kind: Kind, payload: serde_json::Value) -> SignedEnvelope {
        SignedEnvelope::sign(&self.signing, kind, payload.to_string())
    }

    /// Answers a connection's challenge.
    pub fn auth(&self, challenge: &str) -> SignedEnvelope {
        self.sign_value(
            Kind::Auth,
            json!({ "challenge": challenge, "ts": now_ms() }),
        )
    }

    /// Redeems an invite token.
    pub fn redeem(&mut self, token: &str) -> SignedEnvelope {
        let counter = self.next_counter();
        self.sign_value(
            Kind::Redeem,
            json!({ "token": token, "counter": counter, "ts": now_ms() }),
        )
    }

    /// Creates a drop-in group with no agreement and no waiting room, so members
    /// post as soon as they join.
    pub fn create_group(&mut self, group: &GroupId) -> SignedEnvelope {
        let counter = self.next_counter();
        self.sign_value(
            Kind::CreateGroup,
            json!({
                "group": group,
                "title": format!("Load {group}"),
                "group_kind": "drop_in",
                "waiting_room": false,
                "counter": counter,
                "ts": now_ms(),
            }),
        )
    }

    /// Joins a group under `name` (already in normalised form).
    pub fn join(&mut self, group: &GroupId, name: &str) -> SignedEnvelope {
        let counter = self.next_counter();
        self.sign_value(
            Kind::Join,
            json!({ "group": group, "name": name, "counter": counter, "ts": now_ms() }),
        )
    }

    /// A post with the next counter, signed now with time `ts`.
    pub fn post(&mut self, group: &GroupId, body: &str, ts: u64) -> SignedEnvelope {
        let payload = self.post_payload(group, body, ts);
        SignedEnvelope::sign(&self.signing, Kind::Post, payload)
    }

    /// The payload text of a post with the next counter (what [`Identity::post`]
    /// signs).
    pub fn post_payload(&mut self, group: &GroupId, body: &str, ts: u64) -> String {
        let payload = PostPayload {
            group: group.clone(),
            body: body.to_string(),
            to: None,
            counter: self.next_counter(),
            ts,
        };
        serde_json::to_string(&payload).unwrap_or_default()
    }
}
