//! Property tests of the parts every party must agree on: signatures over exact
//! bytes, frame encoding, the frame decoder's refusal of bad input, display-name
//! normalisation and group ids.
//!
//! Case counts are kept small enough for each property to finish in about a second
//! in a debug build on two cores. Failing cases are not persisted to files: proptest
//! prints the minimal input, which belongs in a unit test next to the code it breaks.

#![allow(
    clippy::unwrap_used,
    reason = "tests may unwrap; allow-unwrap-in-tests does not reach helpers outside #[test] fns"
)]

use ed25519_dalek::{Signature, SigningKey};
use peerhub_protocol::encoding::{PublicKey, SignatureBytes};
use peerhub_protocol::envelope::{signing_bytes, Kind, SignedEnvelope};
use peerhub_protocol::frame::{decode_client_frame, ClientFrame, CLIENT_FRAME_TYPES};
use peerhub_protocol::ids::MAX_GROUP_ID_LEN;
use peerhub_protocol::limits::{MAX_FRAME_BYTES, MAX_NAME_CHARS};
use peerhub_protocol::names::normalise_display_name;
use peerhub_protocol::{ErrorCode, GroupId, ProtocolError};
use proptest::prelude::*;
use proptest::sample::Index;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const KINDS: [Kind; 5] = [
    Kind::Auth,
    Kind::Redeem,
    Kind::CreateGroup,
    Kind::Join,
    Kind::Post,
];

fn kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(&KINDS[..])
}

/// Any text, control characters and astral planes included.
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max_chars).prop_map(String::from_iter)
}

fn nonempty_text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 1..=max_chars).prop_map(String::from_iter)
}

fn group_id() -> impl Strategy<Value = GroupId> {
    "[a-z0-9][a-z0-9-]{0,31}".prop_map(|s| GroupId::parse(&s).unwrap())
}

fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().unwrap())
}

/// An envelope of `kind` with arbitrary key, payload and signature bytes: the frame
/// layer carries them without checking the signature.
fn envelope(kind: Kind) -> impl Strategy<Value = SignedEnvelope> {
    (bytes::<32>(), text(60), bytes::<64>()).prop_map(move |(key, payload, sig)| SignedEnvelope {
        kind,
        key: PublicKey(key),
        payload,
        sig: SignatureBytes(sig),
    })
}

fn request_id() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(any::<u64>())
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (request_id(), envelope(Kind::Auth)).prop_map(|(id, env)| ClientFrame::Auth { id, env }),
        (request_id(), envelope(Kind::Redeem))
            .prop_map(|(id, env)| ClientFrame::Redeem { id, env }),
        (request_id(), envelope(Kind::CreateGroup))
            .prop_map(|(id, env)| ClientFrame::CreateGroup { id, env }),
        (
            request_id(),
            group_id(),
            proptest::option::of(any::<u64>()),
            envelope(Kind::Join)
        )
            .prop_map(|(id, group, after, env)| ClientFrame::Join {
                id,
                group,
                after,
                env
            }),
        (request_id(), group_id(), envelope(Kind::Post))
            .prop_map(|(id, group, env)| ClientFrame::Post { id, group, env }),
        (request_id(), group_id()).prop_map(|(id, group)| ClientFrame::Leave { id, group }),
    ]
}

fn flip_bit(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

// ---------------------------------------------------------------------------------
// Signatures

proptest! {
    // Each case signs once and verifies six times: about 60 ms in a debug build.
    #![proptest_config(config(32))]

    #[test]
    fn signed_payloads_verify_and_every_bit_flip_breaks_them(
        seed in bytes::<32>(),
        kind in kind(),
        payload in nonempty_text(60),
        payload_bit in any::<Index>(),
        sig_bit in 0usize..512,
        domain_bit in any::<Index>(),
        other_kind in any::<Index>(),
        key_bit in 0usize..256,
    ) {
        let signer = SigningKey::from_bytes(&seed);
        let env = SignedEnvelope::sign(&signer, kind, payload.clone());
        let key = env.verify().expect("a fresh signature verifies");

        // One bit of the payload. A flip can leave invalid UTF-8, which no envelope
        // can carry; the lossy repair of it is still a different payload.
        let mut raw = payload.clone().into_bytes();
        let bit = payload_bit.index(raw.len() * 8);
        flip_bit(&mut raw, bit);
        let changed = String::from_utf8_lossy(&raw).into_owned();
        prop_assume!(changed != payload);
        let mut tampered = env.clone();
        tampered.payload = changed;
        prop_assert_eq!(tampered.verify(), Err(ProtocolError::BadSignature));

        // One bit of the signature.
        let mut tampered = env.clone();
        flip_bit(&mut tampered.sig.0, sig_bit);
        prop_assert_eq!(tampered.verify(), Err(ProtocolError::BadSignature));

        // One bit of the kind's domain (`peerhub/1/<kind>\n`), at the byte level...
        let domain_len = signing_bytes(kind, "").len();
        let mut signed = signing_bytes(kind, &payload);
        flip_bit(&mut signed, domain_bit.index(domain_len * 8));
        let sig = Signature::from_bytes(&env.sig.0);
        prop_assert!(key.verify_strict(&signed, &sig).is_err());
        // ...and another kind, at the envelope level.
        let others: Vec<Kind> = KINDS.into_iter().filter(|&k| k != kind).collect();
        let mut tampered = env.clone();
        tampered.kind = *other_kind.get(&others);
        prop_assert_eq!(tampered.verify(), Err(ProtocolError::BadSignature));

        // One bit of the key: either no longer a usable key, or the wrong one.
        let mut tampered = env;
        flip_bit(&mut tampered.key.0, key_bit);
        let err = tampered.verify().expect_err("a changed key must not verify");
        prop_assert!(
            matches!(err, ProtocolError::BadKey | ProtocolError::BadSignature),
            "unexpected {:?}", err
        );
    }
}

// ---------------------------------------------------------------------------------
// Frames

/// Every error the frame decoder can give, per PROTOCOL.md §8 step 2.
const DECODE_CODES: [ErrorCode; 3] = [
    ErrorCode::Malformed,
    ErrorCode::UnknownType,
    ErrorCode::TooLarge,
];

/// Decodes `text` and checks the result is well-formed either way: an error has a
/// decoding code (too_large exactly when the text is too long), and a frame is one
/// that encodes and decodes to itself.
fn decode_is_total(text: &str) -> Result<(), TestCaseError> {
    match decode_client_frame(text) {
        Ok(frame) => {
            let again = decode_client_frame(&frame.to_json());
            prop_assert_eq!(again.as_ref(), Ok(&frame), "accepted frame is not stable");
        }
        Err(e) => {
            let code = e.error.code();
            prop_assert!(ErrorCode::ALL.contains(&code));
            prop_assert!(DECODE_CODES.contains(&code), "decoder gave {}", code);
            prop_assert_eq!(code == ErrorCode::TooLarge, text.len() > MAX_FRAME_BYTES);
            prop_assert!(!e.error.to_string().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let json = frame.to_json();
        let decoded = decode_client_frame(&json).map_err(|e| e.error);
        prop_assert_eq!(decoded.as_ref(), Ok(&frame));
        // White space between tokens is not significant.
        let pretty = serde_json::to_string_pretty(&frame).unwrap();
        prop_assert_eq!(decode_client_frame(&pretty).map_err(|e| e.error), Ok(frame.clone()));
        // The `type` on the wire is one the decoder lists.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        prop_assert!(CLIENT_FRAME_TYPES.contains(&value["type"].as_str().unwrap()));
        prop_assert_eq!(value.get("id").and_then(serde_json::Value::as_u64), frame.id());
    }

    #[test]
    fn decode_never_panics_on_arbitrary_text(text in text(300)) {
        decode_is_total(&text)?;
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        decode_is_total(&String::from_utf8_lossy(&raw))?;
    }

    /// Near misses reach deeper into the decoder than random text does.
    #[test]
    fn decode_never_panics_on_mutated_frames(
        frame in client_frame(),
        at in any::<Index>(),
        len in 0usize..8,
        insert in text(3),
    ) {
        let mut chars: Vec<char> = frame.to_json().chars().collect();
        let start = at.index(chars.len() + 1);
        let end = (start + len).min(chars.len());
        chars.splice(start..end, insert.chars());
        decode_is_total(&String::from_iter(chars))?;
    }

    #[test]
    fn decode_refuses_oversize_frames_before_parsing(
        extra in 1usize..64,
        filler in proptest::sample::select(vec!['a', ' ', '"', 'é', '😀']),
    ) {
        // Valid JSON that is only wrong because of its size.
        let head = r#"{"type":"leave","group":"demo","pad":""#;
        let mut text = String::from(head);
        while text.len() + 2 <= MAX_FRAME_BYTES + extra {
            text.push(if filler == '"' { 'x' } else { filler });
        }
        text.push_str("\"}");
        prop_assert!(text.len() > MAX_FRAME_BYTES);
        let err = decode_client_frame(&text).expect_err("oversize frame accepted");
        prop_assert_eq!(err.error.code(), ErrorCode::TooLarge);
        prop_assert_eq!(err.id, None);
    }
}

// ---------------------------------------------------------------------------------
// Names and group ids

/// Characters that exercise normalisation: white space of several kinds, combining
/// marks, compatibility forms, Hangul jamo, hidden characters and role-word letters.
fn tricky_char() -> impl Strategy<Value = char> {
    proptest::sample::select(vec![
        ' ', '\t', '\n', '\u{85}', '\u{A0}', '\u{2028}', '\u{3000}', '\u{0301}', '\u{0345}',
        '\u{0F73}', 'Ａ', 'ｉ', 'ﬁ', 'Å', 'ǅ', 'ß', 'İ', '①', 'ⅷ', '\u{1100}', '\u{1161}',
        '\u{11A8}', '\u{3164}', '\u{200B}', '\u{202E}', '\u{FEFF}', '\u{E000}', 'a', 'd', 'm', 'n',
        'i', 'l', 'o', 's', 't', '1', '0', '$', '@', 'Ѕ', 'е', 'ο', '.', '-', '_',
    ])
}

fn name_candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        text(48),
        proptest::collection::vec(tricky_char(), 0..48).prop_map(String::from_iter),
        "[A-Za-z ]{0,40}",
    ]
}

/// The rule of PROTOCOL.md §5, written independently of ids.rs.
fn is_group_id(text: &str) -> bool {
    (1..=MAX_GROUP_ID_LEN).contains(&text.len())
        && !text.starts_with('-')
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn normalised_names_are_fixed_points_within_the_limit(raw in name_candidate()) {
        match normalise_display_name(&raw) {
            Ok(name) => {
                prop_assert_eq!(normalise_display_name(&name), Ok(name.clone()));
                let len = name.chars().count();
                prop_assert!((1..=MAX_NAME_CHARS).contains(&len), "{} characters", len);
                prop_assert_eq!(name.trim(), name.as_str());
                prop_assert!(!name.contains("  "));
                prop_assert!(name.chars().all(|c| c == ' ' || !c.is_whitespace()));
            }
            Err(e) => {
                let code = e.code();
                prop_assert!(
                    code == ErrorCode::Invalid || code == ErrorCode::BodyTooLong,
                    "name refused with {}", code
                );
            }
        }
    }

    #[test]
    fn group_id_parse_follows_the_documented_rule(
        raw in prop_oneof![text(40), "[a-z0-9-]{0,34}", "[a-zA-Z0-9_ -]{0,34}"],
    ) {
        match GroupId::parse(&raw) {
            Ok(id) => {
                prop_assert!(is_group_id(&raw), "{:?} accepted", raw);
                prop_assert_eq!(id.as_str(), raw.as_str());
                let json = serde_json::to_string(&id).unwrap();
                prop_assert_eq!(serde_json::from_str::<GroupId>(&json).unwrap(), id);
            }
            Err(e) => {
                prop_assert!(!is_group_id(&raw), "{:?} refused", raw);
                prop_assert_eq!(e.code(), ErrorCode::Invalid);
            }
        }
    }
}
