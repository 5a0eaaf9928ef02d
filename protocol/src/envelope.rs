//! Signed envelopes over exact bytes.
//!
//! The signer chooses the payload bytes (a JSON object, sent as a string) and signs
//!
//! ```text
//! "peerhub/1/" ‖ kind ‖ "\n" ‖ payload
//! ```
//!
//! as UTF-8. There is no canonicalisation: the receiver verifies the very string it
//! received, so any language can check a signature without re-encoding JSON. The
//! domain prefix binds the protocol version and the kind, so a signature made for one
//! kind never verifies as another. Verification is strict (`verify_strict`): it
//! refuses non-canonical signatures and small-order keys and components.

use std::marker::PhantomData;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::encoding::{PublicKey, SignatureBytes};
use crate::error::ProtocolError;
use crate::PROTOCOL_VERSION;

/// What an envelope is for. Part of the signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// Login: answers the connection's challenge.
    Auth,
    /// Redeem an invite token for a role.
    Redeem,
    /// Create a group (admins).
    CreateGroup,
    /// Join a group under a display name.
    Join,
    /// A chat message in a group (or a private check-in message).
    Post,
    /// Make an invite.
    Invite,
    /// Accept a group agreement version.
    Agree,
    /// A facilitator control.
    Control,
    /// Report a message to the facilitators.
    Report,
    /// Step out of (or back into) the conversation.
    StepOut,
    /// A co-produced record.
    Record,
    /// A distress flag.
    Flag,
    /// A supervisor's step on an escalation.
    Escalation,
    /// Replace the on-call rota.
    Rota,
    /// Add or remove a Web Push subscription.
    Push,
    /// Grant or revoke a facilitator's standing in one group (admins).
    Grant,
    /// An operator's command on the hub (backup, export, erase), signed with the
    /// hub's own key for the audit chain; never sent by a client.
    Admin,
}

impl Kind {
    /// The wire name, as it appears in the signing domain.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Redeem => "redeem",
            Self::CreateGroup => "create_group",
            Self::Join => "join",
            Self::Post => "post",
            Self::Invite => "invite",
            Self::Agree => "agree",
            Self::Control => "control",
            Self::Report => "report",
            Self::StepOut => "step_out",
            Self::Record => "record",
            Self::Flag => "flag",
            Self::Escalation => "escalation",
            Self::Rota => "rota",
            Self::Push => "push",
            Self::Grant => "grant",
            Self::Admin => "admin",
        }
    }
}

/// The prefix signed before the payload: `peerhub/1/<kind>\n`.
pub fn domain(kind: Kind) -> String {
    format!("peerhub/{PROTOCOL_VERSION}/{}\n", kind.as_str())
}

/// The exact bytes an envelope's signature covers.
pub fn signing_bytes(kind: Kind, payload: &str) -> Vec<u8> {
    let domain = domain(kind);
    let mut bytes = Vec::with_capacity(domain.len() + payload.len());
    bytes.extend_from_slice(domain.as_bytes());
    bytes.extend_from_slice(payload.as_bytes());
    bytes
}

/// Deserialises a `T` that must be written as a JSON object: serde's derive would
/// also accept an array of the fields in order, which a client in another language
/// would never produce or accept, so we refuse it.
pub(crate) struct ObjectOnly<T>(PhantomData<T>);

impl<T> ObjectOnly<T> {
    pub(crate) fn visitor() -> Self {
        Self(PhantomData)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

/// Parses JSON text that must be one object of type `T` (not an array, no trailing
/// data).
pub fn from_json_object<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = de.deserialize_map(ObjectOnly::<T>::visitor())?;
    de.end()?;
    Ok(value)
}

/// A payload string, its signer's key and the signature, exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedEnvelope {
    /// What the envelope is for; part of the signed bytes.
    pub kind: Kind,
    /// The signer's public key.
    pub key: PublicKey,
    /// The signed payload: a JSON object, carried as a string so its bytes survive.
    pub payload: String,
    /// Ed25519 signature over [`signing_bytes`].
    pub sig: SignatureBytes,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeFields {
    kind: Kind,
    key: PublicKey,
    payload: String,
    sig: SignatureBytes,
}

impl<'de> Deserialize<'de> for SignedEnvelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f: EnvelopeFields = d.deserialize_map(ObjectOnly::visitor())?;
        Ok(Self {
            kind: f.kind,
            key: f.key,
            payload: f.payload,
            sig: f.sig,
        })
    }
}

impl SignedEnvelope {
    /// Signs `payload` as `kind` with `signer`.
    pub fn sign(signer: &SigningKey, kind: Kind, payload: String) -> Self {
        let sig = signer.sign(&signing_bytes(kind, &payload));
        Self {
            kind,
            key: PublicKey(signer.verifying_key().to_bytes()),
            payload,
            sig: SignatureBytes(sig.to_bytes()),
        }
    }

    /// Serialises `payload` to JSON and signs it.
    pub fn sign_json<T: Serialize>(signer: &SigningKey, kind: Kind, payload: &T) -> Self {
        // Serialising our own plain structs cannot fail.
        let text = serde_json::to_string(payload).unwrap_or_default();
        Self::sign(signer, kind, text)
    }

    /// Verifies the signature strictly against the key named in the envelope.
    pub fn verify(&self) -> Result<VerifyingKey, ProtocolError> {
        let key = decode_key(&self.key)?;
        self.verify_with(&key)?;
        Ok(key)
    }

    /// Verifies the signature strictly against an already-decoded key (which must be
    /// the envelope's own; decoding costs several microseconds, so callers cache it).
    pub fn verify_with(&self, key: &VerifyingKey) -> Result<(), ProtocolError> {
        if key.as_bytes() != &self.key.0 {
            return Err(ProtocolError::BadSignature);
        }
        let sig = ed25519_dalek::Signature::from_bytes(&self.sig.0);
        key.verify_strict(&signing_bytes(self.kind, &self.payload), &sig)
            .map_err(|_| ProtocolError::BadSignature)
    }

    /// Checks the envelope is of the kind a frame needs.
    pub fn expect_kind(&self, expected: Kind) -> Result<(), ProtocolError> {
        if self.kind == expected {
            Ok(())
        } else {
            Err(ProtocolError::WrongKind {
                expected: expected.as_str(),
                found: self.kind.as_str().to_string(),
            })
        }
    }

    /// Parses the payload as `T`: one JSON object, unknown fields refused.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, ProtocolError> {
        from_json_object(&self.payload)
            .map_err(|e| ProtocolError::Malformed(format!("payload: {e}")))
    }
}

/// Decodes a public key, refusing invalid points and weak (small-order) keys.
pub fn decode_key(key: &PublicKey) -> Result<VerifyingKey, ProtocolError> {
    let key = VerifyingKey::from_bytes(&key.0).map_err(|_| ProtocolError::BadKey)?;
    if key.is_weak() {
        return Err(ProtocolError::BadKey);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    #[test]
    fn sign_then_verify() {
        let env = SignedEnvelope::sign(&signer(), Kind::Post, r#"{"a":1}"#.into());
        env.verify().unwrap();
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let env = SignedEnvelope::sign(&signer(), Kind::Post, r#"{"a":1}"#.into());
        let mut other_payload = env.clone();
        other_payload.payload = r#"{"a":2}"#.into();
        assert_eq!(other_payload.verify(), Err(ProtocolError::BadSignature));
        let mut other_kind = env.clone();
        other_kind.kind = Kind::Join;
        assert_eq!(other_kind.verify(), Err(ProtocolError::BadSignature));
        let mut other_key = env.clone();
        other_key.key = PublicKey(SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes());
        assert_eq!(other_key.verify(), Err(ProtocolError::BadSignature));
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (a small-order point) encoded as a key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            decode_key(&PublicKey(identity)).err(),
            Some(ProtocolError::BadKey)
        );
    }

    #[test]
    fn payloads_and_envelopes_must_be_objects() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct P {
            a: u32,
        }
        let env = SignedEnvelope::sign(&signer(), Kind::Post, "[1]".into());
        assert!(env.payload_as::<P>().is_err(), "array payload refused");
        let env = SignedEnvelope::sign(&signer(), Kind::Post, r#"{"a":1} trailing"#.into());
        assert!(env.payload_as::<P>().is_err(), "trailing data refused");
        let env = SignedEnvelope::sign(&signer(), Kind::Post, r#"{"a":1}"#.into());
        assert!(env.payload_as::<P>().is_ok());
        let as_array = format!(
            r#"["post","{}","{{}}","{}"]"#,
            env.key.to_b64(),
            env.sig.to_b64()
        );
        assert!(serde_json::from_str::<SignedEnvelope>(&as_array).is_err());
        let as_object = serde_json::to_string(&env).unwrap();
        assert_eq!(
            serde_json::from_str::<SignedEnvelope>(&as_object).unwrap(),
            env
        );
    }

    #[test]
    fn signing_bytes_are_domain_then_payload() {
        assert_eq!(
            signing_bytes(Kind::Post, "{}"),
            b"peerhub/1/post\n{}".to_vec()
        );
    }
}
