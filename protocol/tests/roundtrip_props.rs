//! Property tests of the parts every party must agree on: signatures over exact
//! bytes, frame and payload encoding (every client frame, every signed payload, every
//! facilitator control and escalation action, and the server's `event` frames with
//! their channels),
//! the frame decoder's refusal of bad input, display-name normalisation and group ids.
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
use peerhub_protocol::escalation::{Consent, RotaEntry, Severity};
use peerhub_protocol::frame::{
    decode_client_frame, Channel, ClientFrame, Note, Redaction, ServerFrame, CLIENT_FRAME_TYPES,
};
use peerhub_protocol::ids::MAX_GROUP_ID_LEN;
use peerhub_protocol::limits::{MAX_FRAME_BYTES, MAX_NAME_CHARS};
use peerhub_protocol::names::normalise_display_name;
use peerhub_protocol::payload::{
    AgreePayload, AuthPayload, ControlAction, ControlPayload, CreateGroupPayload,
    EscalationActPayload, EscalationAction, FlagPayload, GroupKind, InvitePayload, InviteRole,
    JoinPayload, PostPayload, RecordPayload, RedeemPayload, ReportPayload, Retention, RotaPayload,
    SessionWindow, StepOutPayload,
};
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

const KINDS: [Kind; 14] = [
    Kind::Auth,
    Kind::Redeem,
    Kind::CreateGroup,
    Kind::Join,
    Kind::Post,
    Kind::Invite,
    Kind::Agree,
    Kind::Control,
    Kind::Report,
    Kind::StepOut,
    Kind::Record,
    Kind::Flag,
    Kind::Escalation,
    Kind::Rota,
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

fn public_key() -> impl Strategy<Value = PublicKey> {
    bytes::<32>().prop_map(PublicKey)
}

/// A frame that names a group and carries an envelope of `kind`.
fn group_frame(
    kind: Kind,
    make: fn(Option<u64>, GroupId, SignedEnvelope) -> ClientFrame,
) -> impl Strategy<Value = ClientFrame> {
    (request_id(), group_id(), envelope(kind)).prop_map(move |(id, g, env)| make(id, g, env))
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (request_id(), envelope(Kind::Auth)).prop_map(|(id, env)| ClientFrame::Auth { id, env }),
        (request_id(), envelope(Kind::Redeem))
            .prop_map(|(id, env)| ClientFrame::Redeem { id, env }),
        (
            request_id(),
            proptest::option::of(text(64)),
            envelope(Kind::CreateGroup)
        )
            .prop_map(|(id, access_code, env)| ClientFrame::CreateGroup {
                id,
                access_code,
                env
            }),
        (
            request_id(),
            group_id(),
            proptest::option::of(any::<u64>()),
            proptest::option::of("[a-z]{1,12}"),
            envelope(Kind::Join)
        )
            .prop_map(|(id, group, after, access_code, env)| ClientFrame::Join {
                id,
                group,
                after,
                access_code,
                env
            }),
        (request_id(), group_id(), envelope(Kind::Post))
            .prop_map(|(id, group, env)| ClientFrame::Post { id, group, env }),
        (request_id(), group_id()).prop_map(|(id, group)| ClientFrame::Leave { id, group }),
        (request_id(), envelope(Kind::Invite))
            .prop_map(|(id, env)| ClientFrame::Invite { id, env }),
        group_frame(Kind::Agree, |id, group, env| ClientFrame::Agree {
            id,
            group,
            env
        }),
        group_frame(Kind::Control, |id, group, env| ClientFrame::Control {
            id,
            group,
            env
        }),
        group_frame(Kind::Report, |id, group, env| ClientFrame::Report {
            id,
            group,
            env
        }),
        group_frame(Kind::StepOut, |id, group, env| ClientFrame::StepOut {
            id,
            group,
            env
        }),
        group_frame(Kind::Record, |id, group, env| ClientFrame::Record {
            id,
            group,
            env
        }),
        (request_id(), proptest::option::of(any::<u64>()))
            .prop_map(|(id, after)| ClientFrame::Records { id, after }),
        group_frame(Kind::Flag, |id, group, env| ClientFrame::Flag {
            id,
            group,
            env
        }),
        (request_id(), envelope(Kind::Escalation))
            .prop_map(|(id, env)| ClientFrame::Escalation { id, env }),
        (request_id(), proptest::option::of(text(12)))
            .prop_map(|(id, after)| ClientFrame::Escalations { id, after }),
        (
            request_id(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(text(22)),
            prop_oneof![
                Just(peerhub_protocol::escalation::EscalationPart::Flags),
                Just(peerhub_protocol::escalation::EscalationPart::Steps),
                Just(peerhub_protocol::escalation::EscalationPart::Context),
            ],
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(id, escalation, reference, part, offset)| {
                ClientFrame::EscalationDetail {
                    id,
                    escalation,
                    reference,
                    part,
                    offset,
                }
            }),
        (request_id(), envelope(Kind::Rota)).prop_map(|(id, env)| ClientFrame::SetRota { id, env }),
        request_id().prop_map(|id| ClientFrame::Rota { id }),
    ]
}

/// Every supervisor's step on an escalation.
fn escalation_action() -> impl Strategy<Value = EscalationAction> {
    prop_oneof![
        Just(EscalationAction::Ack),
        text(20).prop_map(|text| EscalationAction::Note { text }),
        public_key().prop_map(|to| EscalationAction::Handover { to }),
        text(20).prop_map(|outcome| EscalationAction::Resolve { outcome }),
    ]
}

/// Every facilitator control action, with arbitrary values (the protocol layer
/// carries out-of-range values; the server refuses them).
fn control_action() -> impl Strategy<Value = ControlAction> {
    let reason = || proptest::option::of(text(20));
    prop_oneof![
        public_key().prop_map(|member| ControlAction::Admit { member }),
        (public_key(), reason())
            .prop_map(|(member, reason)| ControlAction::Decline { member, reason }),
        (public_key(), any::<u32>())
            .prop_map(|(member, minutes)| ControlAction::Mute { member, minutes }),
        public_key().prop_map(|member| ControlAction::Unmute { member }),
        (public_key(), any::<bool>(), reason()).prop_map(|(member, until_session_end, reason)| {
            ControlAction::Remove {
                member,
                until_session_end,
                reason,
            }
        }),
        Just(ControlAction::Lock),
        Just(ControlAction::Unlock),
        any::<u32>().prop_map(|seconds| ControlAction::SlowMode { seconds }),
        Just(ControlAction::Pause),
        Just(ControlAction::Resume),
        (any::<u64>(), text(20)).prop_map(|(seq, reason)| ControlAction::Redact { seq, reason }),
        any::<u64>().prop_map(|seq| ControlAction::Pin { seq }),
        any::<u64>().prop_map(|seq| ControlAction::Unpin { seq }),
        public_key().prop_map(|member| ControlAction::AddCofacilitator { member }),
        public_key().prop_map(|member| ControlAction::HandOver { member }),
        text(20).prop_map(|text| ControlAction::SetAgreement { text }),
        public_key().prop_map(|member| ControlAction::CheckIn { member }),
        Just(ControlAction::OpenSession),
        Just(ControlAction::EndSession),
        Just(ControlAction::ClearWaiting),
    ]
}

/// A signed payload of every kind, as the kind and its JSON text, with arbitrary
/// field values and every optional field sometimes present.
fn payload() -> impl Strategy<Value = (Kind, String)> {
    fn json<T: serde::Serialize>(kind: Kind, payload: &T) -> (Kind, String) {
        (kind, serde_json::to_string(payload).unwrap())
    }
    let counted = || (any::<u64>(), any::<u64>());
    let opt_text = || proptest::option::of(text(20));
    let window = (any::<u64>(), any::<u64>())
        .prop_map(|(start_ms, end_ms)| SessionWindow { start_ms, end_ms });
    let retention = (any::<bool>(), proptest::option::of(any::<u32>())).prop_map(
        |(ephemeral, history_days)| Retention {
            ephemeral,
            history_days,
        },
    );
    let group_kind = proptest::sample::select(vec![GroupKind::DropIn, GroupKind::Virtual]);
    let role = proptest::sample::select(vec![
        InviteRole::Admin,
        InviteRole::Facilitator,
        InviteRole::Supervisor,
        InviteRole::Member,
    ]);
    prop_oneof![
        (text(20), any::<u64>())
            .prop_map(|(challenge, ts)| json(Kind::Auth, &AuthPayload { challenge, ts })),
        (text(20), counted()).prop_map(|(token, (counter, ts))| json(
            Kind::Redeem,
            &RedeemPayload {
                token,
                name: None,
                counter,
                ts
            }
        )),
        (
            (group_id(), text(20), group_kind, opt_text(), opt_text()),
            (
                proptest::collection::vec(window, 0..3),
                retention,
                proptest::option::of(any::<bool>()),
                counted()
            )
        )
            .prop_map(
                |(
                    (group, title, group_kind, agreement, access_code),
                    (schedule, retention, waiting_room, (counter, ts)),
                )| json(
                    Kind::CreateGroup,
                    &CreateGroupPayload {
                        group,
                        title,
                        group_kind,
                        agreement,
                        access_code,
                        schedule,
                        retention,
                        waiting_room,
                        counter,
                        ts,
                    }
                )
            ),
        (group_id(), text(20), counted()).prop_map(|(group, name, (counter, ts))| json(
            Kind::Join,
            &JoinPayload {
                group,
                name,
                counter,
                ts,
            }
        )),
        (
            group_id(),
            text(40),
            proptest::option::of(public_key()),
            counted()
        )
            .prop_map(|(group, body, to, (counter, ts))| json(
                Kind::Post,
                &PostPayload {
                    group,
                    body,
                    to,
                    counter,
                    ts,
                }
            )),
        (
            role,
            proptest::option::of(group_id()),
            proptest::collection::vec(group_id(), 0..3),
            proptest::option::of(any::<u64>()),
            counted()
        )
            .prop_map(|(role, group, groups, ttl_ms, (counter, ts))| json(
                Kind::Invite,
                &InvitePayload {
                    role,
                    group,
                    groups,
                    ttl_ms,
                    counter,
                    ts,
                }
            )),
        (group_id(), any::<u32>(), counted()).prop_map(|(group, version, (counter, ts))| json(
            Kind::Agree,
            &AgreePayload {
                group,
                version,
                counter,
                ts,
            }
        )),
        (group_id(), control_action(), counted()).prop_map(|(group, action, (counter, ts))| {
            json(
                Kind::Control,
                &ControlPayload {
                    group,
                    action,
                    counter,
                    ts,
                },
            )
        }),
        (group_id(), any::<u64>(), text(20), counted()).prop_map(
            |(group, seq, reason, (counter, ts))| json(
                Kind::Report,
                &ReportPayload {
                    group,
                    seq,
                    reason,
                    counter,
                    ts,
                }
            )
        ),
        (group_id(), any::<bool>(), counted()).prop_map(|(group, away, (counter, ts))| json(
            Kind::StepOut,
            &StepOutPayload {
                group,
                away,
                counter,
                ts,
            }
        )),
        (
            group_id(),
            proptest::option::of(public_key()),
            proptest::option::of(any::<u64>()),
            text(20),
            counted()
        )
            .prop_map(|(group, about, reply_to, text, (counter, ts))| json(
                Kind::Record,
                &RecordPayload {
                    group,
                    about,
                    reply_to,
                    text,
                    counter,
                    ts,
                }
            )),
        (
            (group_id(), public_key(), proptest::option::of(any::<u64>())),
            (
                proptest::sample::select(vec![
                    Severity::Concern,
                    Severity::Urgent,
                    Severity::Emergency
                ]),
                proptest::sample::select(vec![Consent::Own, Consent::Given, Consent::ImminentRisk]),
            ),
            (opt_text(), opt_text(), opt_text()),
            counted()
        )
            .prop_map(
                |(
                    (group, about, seq),
                    (severity, consent),
                    (reason, withhold_notice, note),
                    (counter, ts),
                )| json(
                    Kind::Flag,
                    &FlagPayload {
                        group,
                        about,
                        seq,
                        severity,
                        consent,
                        reason,
                        withhold_notice,
                        note,
                        counter,
                        ts,
                    }
                )
            ),
        (any::<u64>(), escalation_action(), counted()).prop_map(
            |(escalation, action, (counter, ts))| json(
                Kind::Escalation,
                &EscalationActPayload {
                    escalation,
                    action,
                    counter,
                    ts,
                }
            )
        ),
        (
            proptest::collection::vec(
                (public_key(), any::<u64>(), any::<u64>(), any::<u8>()).prop_map(
                    |(supervisor, start_ms, end_ms, level)| RotaEntry {
                        supervisor,
                        start_ms,
                        end_ms,
                        level,
                    }
                ),
                0..3
            ),
            counted()
        )
            .prop_map(|(entries, (counter, ts))| json(
                Kind::Rota,
                &RotaPayload {
                    entries,
                    counter,
                    ts,
                }
            )),
    ]
}

/// Parses `payload` as `kind`'s payload type and encodes it again.
fn reencode_payload(kind: Kind, payload: &str) -> Result<String, ProtocolError> {
    fn again<T: serde::de::DeserializeOwned + serde::Serialize>(
        env: &SignedEnvelope,
    ) -> Result<String, ProtocolError> {
        Ok(serde_json::to_string(&env.payload_as::<T>()?).unwrap())
    }
    let env = SignedEnvelope {
        kind,
        key: PublicKey([0; 32]),
        payload: payload.to_string(),
        sig: SignatureBytes([0; 64]),
    };
    match kind {
        Kind::Auth => again::<AuthPayload>(&env),
        Kind::Redeem => again::<RedeemPayload>(&env),
        Kind::CreateGroup => again::<CreateGroupPayload>(&env),
        Kind::Join => again::<JoinPayload>(&env),
        Kind::Post => again::<PostPayload>(&env),
        Kind::Invite => again::<InvitePayload>(&env),
        Kind::Agree => again::<AgreePayload>(&env),
        Kind::Control => again::<ControlPayload>(&env),
        Kind::Report => again::<ReportPayload>(&env),
        Kind::StepOut => again::<StepOutPayload>(&env),
        Kind::Record => again::<RecordPayload>(&env),
        Kind::Flag => again::<FlagPayload>(&env),
        Kind::Escalation => again::<EscalationActPayload>(&env),
        Kind::Rota => again::<RotaPayload>(&env),
        other => panic!("no payload type known to this test for {other:?}"),
    }
}

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Main),
        Just(Channel::Staff),
        (public_key(), public_key()).prop_map(|(a, b)| Channel::pair(a, b)),
    ]
}

/// `event` frames in every shape the server sends: an envelope, a hub note, a
/// redacted message with or without its envelope, in any channel.
fn event_frame() -> impl Strategy<Value = ServerFrame> {
    let note = prop_oneof![
        (public_key(), any::<u64>(), text(20)).prop_map(|(member, seq, suggestion)| {
            Note::RiskNudge {
                member,
                seq,
                suggestion,
            }
        }),
        public_key().prop_map(|member| Note::MuteEnded { member }),
        (
            public_key(),
            prop_oneof![
                Just(Severity::Concern),
                Just(Severity::Urgent),
                Just(Severity::Emergency)
            ],
            any::<(bool, bool, u32)>(),
            proptest::option::of(text(20)),
        )
            .prop_map(|(member, severity, (own, withheld, flags), words)| {
                Note::SupportAsked {
                    member,
                    severity,
                    own,
                    flags,
                    withheld,
                    words,
                }
            }),
        public_key().prop_map(|member| Note::SupportResolved { member }),
    ];
    let redaction =
        (public_key(), text(20), any::<u64>()).prop_map(|(by, reason, control_seq)| Redaction {
            by,
            reason,
            control_seq,
        });
    (
        group_id(),
        channel(),
        (any::<u64>(), any::<u64>()),
        proptest::option::of(envelope(Kind::Post)),
        proptest::option::of(note),
        proptest::option::of(redaction),
    )
        .prop_map(
            |(group, channel, (seq, ts), env, note, redacted)| ServerFrame::Event {
                group,
                channel,
                seq,
                ts,
                env,
                note,
                redacted,
            },
        )
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

/// Every error the frame decoder can give, per PROTOCOL.md §10 step 2.
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
    fn payloads_of_every_kind_round_trip_and_refuse_unknown_fields(
        (kind, payload) in payload(),
    ) {
        prop_assert_eq!(reencode_payload(kind, &payload), Ok(payload.clone()));
        let extra = format!("{},\"extra\":1}}", &payload[..payload.len() - 1]);
        let refused = reencode_payload(kind, &extra).map_err(|e| e.code());
        prop_assert_eq!(refused, Err(ErrorCode::Malformed));
    }

    #[test]
    fn server_events_round_trip_with_their_channels(frame in event_frame()) {
        let json = frame.to_json();
        let back: ServerFrame = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &frame);
        let ServerFrame::Event { channel, .. } = frame else { unreachable!() };
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        // The main channel is the absent one; a pair is in byte order.
        prop_assert_eq!(value.get("channel").is_none(), channel.is_main());
        if let Channel::Pair([a, b]) = channel {
            prop_assert!(a.0 <= b.0);
        }
    }

    #[test]
    fn pair_channels_do_not_depend_on_who_is_first(a in public_key(), b in public_key()) {
        prop_assert_eq!(Channel::pair(a, b), Channel::pair(b, a));
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

proptest! {
    // Each case signs once and verifies once: about 20 ms in a debug build.
    #![proptest_config(config(48))]

    /// A facilitator's control travels intact: frame, envelope and action.
    #[test]
    fn control_frames_carry_every_action_intact(
        seed in bytes::<32>(),
        id in request_id(),
        group in group_id(),
        action in control_action(),
        (counter, ts) in (any::<u64>(), any::<u64>()),
    ) {
        let signer = SigningKey::from_bytes(&seed);
        let payload = ControlPayload { group: group.clone(), action, counter, ts };
        let env = SignedEnvelope::sign_json(&signer, Kind::Control, &payload);
        let frame = ClientFrame::Control { id, group, env };
        let decoded = decode_client_frame(&frame.to_json()).map_err(|e| e.error);
        prop_assert_eq!(decoded.as_ref(), Ok(&frame));
        let ClientFrame::Control { env, .. } = frame else { unreachable!() };
        env.verify().expect("the relayed control verifies");
        prop_assert_eq!(env.payload_as::<ControlPayload>(), Ok(payload));
    }
}

/// PROTOCOL.md §8.6 and §9.3: an action inside a payload is an object with exactly
/// its fields (no stray key, no `null`), whether or not the action has fields.
#[test]
fn actions_in_payloads_are_strict_objects() {
    fn control(action: &str) -> Result<ControlPayload, ProtocolError> {
        let payload = format!(r#"{{"group":"g","action":{action},"counter":1,"ts":1}}"#);
        probe(Kind::Control, payload).payload_as()
    }
    fn step(action: &str) -> Result<EscalationActPayload, ProtocolError> {
        let payload = format!(r#"{{"escalation":1,"action":{action},"counter":1,"ts":1}}"#);
        probe(Kind::Escalation, payload).payload_as()
    }
    fn probe(kind: Kind, payload: String) -> SignedEnvelope {
        SignedEnvelope {
            kind,
            key: PublicKey([0; 32]),
            payload,
            sig: SignatureBytes([0; 64]),
        }
    }
    for action in [
        "lock",
        "unlock",
        "pause",
        "resume",
        "open_session",
        "end_session",
        "clear_waiting",
    ] {
        assert!(
            control(&format!(r#"{{"do":"{action}"}}"#)).is_ok(),
            "{action}"
        );
        let stray = format!(r#"{{"do":"{action}","x":1}}"#);
        assert!(control(&stray).is_err(), "{stray} was accepted");
    }
    for refused in [
        r#"{"do":"pin","seq":1,"x":1}"#,
        r#"{"do":"decline","member":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","reason":null}"#,
        r#"["lock"]"#,
        r#""lock""#,
    ] {
        assert!(control(refused).is_err(), "{refused} was accepted");
    }
    assert!(step(r#"{"do":"ack"}"#).is_ok());
    for refused in [
        r#"{"do":"ack","x":1}"#,
        r#"["ack"]"#,
        r#"{"do":"note","text":"t","x":1}"#,
    ] {
        assert!(step(refused).is_err(), "{refused} was accepted");
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
