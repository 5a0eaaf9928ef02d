//! A person's key, as a client holds it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::payload::{
    AuthPayload, CreateGroupPayload, GroupKind, JoinPayload, PostPayload, RedeemPayload,
};
use peerhub_protocol::{GroupId, PublicKey, SignedEnvelope};
use serde::Serialize;

use crate::now_ms;

/// An Ed25519 identity with a shared, rising counter (clones share it, like tabs of
/// one browser sharing a key).
#[derive(Clone, Debug)]
pub struct Identity {
    /// The private key.
    pub signing: SigningKey,
    counter: Arc<AtomicU64>,
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random seed");
        Self::from_seed(seed)
    }

    /// A fixed identity.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The public key: the account id.
    pub fn key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The next counter: above every counter used before.
    pub fn next_counter(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Makes sure later counters are above `floor` (from `auth_ok`).
    pub fn raise_counter(&self, floor: u64) {
        self.counter.fetch_max(floor, Ordering::SeqCst);
    }

    /// Signs any serialisable payload as `kind`.
    pub fn sign<T: Serialize>(&self, kind: Kind, payload: &T) -> SignedEnvelope {
        SignedEnvelope::sign_json(&self.signing, kind, payload)
    }

    /// An `auth` envelope for a challenge.
    pub fn auth(&self, challenge: &str) -> SignedEnvelope {
        self.sign(
            Kind::Auth,
            &AuthPayload {
                challenge: challenge.to_string(),
                ts: now_ms(),
            },
        )
    }

    /// A `post` envelope.
    pub fn post(&self, group: &str, body: &str) -> SignedEnvelope {
        self.post_at(group, body, self.next_counter(), now_ms())
    }

    /// A `post` envelope with an explicit counter and time.
    pub fn post_at(&self, group: &str, body: &str, counter: u64, ts: u64) -> SignedEnvelope {
        self.sign(
            Kind::Post,
            &PostPayload {
                group: gid(group),
                body: body.to_string(),
                to: None,
                counter,
                ts,
            },
        )
    }

    /// A private check-in message to `to`.
    pub fn private_post(&self, group: &str, to: PublicKey, body: &str) -> SignedEnvelope {
        self.sign(
            Kind::Post,
            &PostPayload {
                group: gid(group),
                body: body.to_string(),
                to: Some(to),
                counter: self.next_counter(),
                ts: now_ms(),
            },
        )
    }

    /// A `record` envelope: a facilitator opens one `about` a member, or anyone it
    /// concerns adds words `reply_to` an existing record.
    pub fn record(
        &self,
        group: &str,
        about: Option<PublicKey>,
        reply_to: Option<u64>,
        text: &str,
    ) -> SignedEnvelope {
        self.sign(
            Kind::Record,
            &peerhub_protocol::payload::RecordPayload {
                group: gid(group),
                about,
                reply_to,
                text: text.to_string(),
                counter: self.next_counter(),
                ts: now_ms(),
            },
        )
    }

    /// A `join` envelope.
    pub fn join(&self, group: &str, name: &str) -> SignedEnvelope {
        self.sign(
            Kind::Join,
            &JoinPayload {
                group: gid(group),
                name: name.to_string(),
                counter: self.next_counter(),
                ts: now_ms(),
            },
        )
    }

    /// A `redeem` envelope.
    pub fn redeem(&self, token: &str) -> SignedEnvelope {
        self.sign(
            Kind::Redeem,
            &RedeemPayload {
                token: token.to_string(),
                name: None,
                counter: self.next_counter(),
                ts: now_ms(),
            },
        )
    }

    /// A `create_group` envelope for a group with no agreement and no waiting
    /// room (the foundation tests' plain conversation).
    pub fn create_group(&self, group: &str, title: &str, kind: GroupKind) -> SignedEnvelope {
        self.create_group_with(group, title, kind, |p| p.waiting_room = Some(false))
    }

    /// A `create_group` envelope with settings changed by `tweak`.
    pub fn create_group_with(
        &self,
        group: &str,
        title: &str,
        kind: GroupKind,
        tweak: impl FnOnce(&mut CreateGroupPayload),
    ) -> SignedEnvelope {
        let mut payload = CreateGroupPayload {
            group: gid(group),
            title: title.to_string(),
            group_kind: kind,
            agreement: None,
            access_code: None,
            schedule: Vec::new(),
            retention: Default::default(),
            waiting_room: None,
            counter: 0,
            ts: now_ms(),
        };
        tweak(&mut payload);
        payload.counter = self.next_counter();
        self.sign(Kind::CreateGroup, &payload)
    }

    /// A `flag` envelope about `about` in `group`: consent `own` when `about` is
    /// this key, `given` otherwise, no note; `tweak` may change any field.
    pub fn flag_with(
        &self,
        group: &str,
        about: PublicKey,
        severity: peerhub_protocol::escalation::Severity,
        tweak: impl FnOnce(&mut peerhub_protocol::payload::FlagPayload),
    ) -> SignedEnvelope {
        use peerhub_protocol::escalation::Consent;
        let consent = if about == self.key() {
            Consent::Own
        } else {
            Consent::Given
        };
        self.signed(Kind::Flag, |counter, ts| {
            let mut payload = peerhub_protocol::payload::FlagPayload {
                group: gid(group),
                about,
                seq: None,
                severity,
                consent,
                reason: None,
                withhold_notice: None,
                note: None,
                counter,
                ts,
            };
            tweak(&mut payload);
            payload
        })
    }

    /// Any group-scoped payload, signed with a fresh counter and time: `make` gets
    /// (counter, ts).
    pub fn signed<T: Serialize>(
        &self,
        kind: Kind,
        make: impl FnOnce(u64, u64) -> T,
    ) -> SignedEnvelope {
        let payload = make(self.next_counter(), now_ms());
        self.sign(kind, &payload)
    }
}

/// A group id from a literal (panics on a bad one: test data).
pub fn gid(text: &str) -> GroupId {
    GroupId::parse(text).expect("test group id")
}
