//! Checks `PROTOCOL.md` against the crate, so the specification cannot drift from the
//! reference implementation unnoticed.
//!
//! The document marks what these tests read with the info string of fenced blocks:
//!
//! - ```` ```text worked-example-<name> ```` and ```` ```json … worked-example-frame ````:
//!   the values of the worked example (§14), recomputed here from the seed;
//! - ```` ```json client-frame ```` / ```` ```json server-frame ````: frame examples,
//!   which must decode with the crate and whose envelopes must verify;
//! - ```` ```text payload-<kind> ````: a payload shown on its own, which must parse as
//!   that kind and be the payload of one of the client-frame examples.
//!
//! Frame types are checked against the headings of the "Client frames" and "Server
//! frames" sections, error codes against the table of the "Error codes" section and
//! limits against the table of the "Limits" section.

#![allow(
    clippy::unwrap_used,
    reason = "tests may unwrap; allow-unwrap-in-tests does not reach helpers outside #[test] fns"
)]

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use peerhub_protocol::encoding::{b64, PublicKey};
use peerhub_protocol::envelope::{signing_bytes, Kind, SignedEnvelope};
use peerhub_protocol::frame::{
    decode_client_frame, ClientFrame, GroupInfo, Limits, MemberInfo, Role, ServerFrame,
    CLIENT_FRAME_TYPES,
};
use peerhub_protocol::ids::MAX_GROUP_ID_LEN;
use peerhub_protocol::payload::{
    AuthPayload, CreateGroupPayload, GroupKind, JoinPayload, PostPayload, RedeemPayload,
};
use peerhub_protocol::{limits, ErrorCode, GroupId, ProtocolError};

const SPEC: &str = include_str!("../PROTOCOL.md");

// ---------------------------------------------------------------------------------
// Reading the document

/// A fenced code block: its info string split into words, its text (lines joined by
/// `\n`, no trailing newline) and the line it starts on.
#[derive(Debug)]
struct Block {
    info: Vec<String>,
    body: String,
    line: usize,
}

impl Block {
    fn has_tag(&self, tag: &str) -> bool {
        self.info.iter().any(|word| word == tag)
    }
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(Vec<String>, Vec<&str>, usize)> = None;
    for (n, line) in doc.lines().enumerate() {
        match open.as_mut() {
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```") {
                    let info = info.split_whitespace().map(str::to_string).collect();
                    open = Some((info, Vec::new(), n + 1));
                }
            }
            Some((_, body, _)) => {
                if line.trim() == "```" {
                    let (info, body, start) = open.take().unwrap();
                    out.push(Block {
                        info,
                        body: body.join("\n"),
                        line: start,
                    });
                } else {
                    body.push(line);
                }
            }
        }
    }
    assert!(open.is_none(), "PROTOCOL.md has an unclosed code block");
    out
}

fn tagged(tag: &str) -> Vec<Block> {
    blocks(SPEC)
        .into_iter()
        .filter(|b| b.has_tag(tag))
        .collect()
}

/// The one block carrying `tag`.
fn one(tag: &str) -> Block {
    let mut found = tagged(tag);
    assert_eq!(
        found.len(),
        1,
        "PROTOCOL.md needs exactly one block tagged {tag}"
    );
    found.remove(0)
}

/// Bytes written in hex in the block tagged `tag` (white space ignored).
fn hex_block(tag: &str) -> Vec<u8> {
    let text: String = one(tag).body.split_whitespace().collect();
    hex::decode(&text).unwrap_or_else(|e| panic!("{tag} is not hex: {e}"))
}

/// Lines of the document outside code blocks.
fn prose_lines(doc: &str) -> Vec<&str> {
    let mut in_block = false;
    let mut out = Vec::new();
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            out.push(line);
        }
    }
    out
}

fn heading_level(line: &str) -> Option<usize> {
    let level = line.chars().take_while(|&c| c == '#').count();
    (level > 0 && line[level..].starts_with(' ')).then_some(level)
}

/// The prose of the section whose heading contains `title`, up to the next heading
/// of the same or a higher level.
fn section(title: &str) -> Vec<&'static str> {
    let lines = prose_lines(SPEC);
    let start = lines
        .iter()
        .position(|l| heading_level(l).is_some() && l.contains(title))
        .unwrap_or_else(|| panic!("PROTOCOL.md has no heading containing {title:?}"));
    let level = heading_level(lines[start]).unwrap();
    lines[start + 1..]
        .iter()
        .take_while(|l| heading_level(l).is_none_or(|other| other > level))
        .copied()
        .collect()
}

/// The text between backticks in `line`.
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

fn headings(lines: &[&'static str]) -> Vec<&'static str> {
    lines
        .iter()
        .filter(|l| heading_level(l).is_some())
        .copied()
        .collect()
}

/// The cells of every table row in `lines`, separator rows left out.
fn table_rows(lines: &[&str]) -> Vec<Vec<String>> {
    lines
        .iter()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            let cells: Vec<String> = l.trim().split('|').map(|c| c.trim().to_string()).collect();
            cells[1..cells.len().saturating_sub(1)].to_vec()
        })
        .filter(|cells| {
            !cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        })
        .collect()
}

/// The first cell of each table row that is exactly one backticked word.
fn first_column_names(lines: &[&str]) -> BTreeSet<String> {
    table_rows(lines)
        .into_iter()
        .filter_map(|cells| {
            let first = cells.first()?;
            let inner = first.strip_prefix('`')?.strip_suffix('`')?;
            Some(inner.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// One value of every frame variant

fn signer() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn demo() -> GroupId {
    GroupId::parse("demo").unwrap()
}

fn env(kind: Kind) -> SignedEnvelope {
    SignedEnvelope::sign(&signer(), kind, "{}".into())
}

/// The wire `type` of a variant. The match has no wildcard on purpose: a new variant
/// does not compile until it is named here, and then needs an example below.
fn client_variant(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Auth { .. } => "auth",
        ClientFrame::Redeem { .. } => "redeem",
        ClientFrame::CreateGroup { .. } => "create_group",
        ClientFrame::Join { .. } => "join",
        ClientFrame::Post { .. } => "post",
        ClientFrame::Leave { .. } => "leave",
    }
}

fn every_client_frame() -> Vec<ClientFrame> {
    vec![
        ClientFrame::Auth {
            id: Some(1),
            env: env(Kind::Auth),
        },
        ClientFrame::Redeem {
            id: None,
            env: env(Kind::Redeem),
        },
        ClientFrame::CreateGroup {
            id: Some(3),
            env: env(Kind::CreateGroup),
        },
        ClientFrame::Join {
            id: Some(4),
            group: demo(),
            after: Some(9),
            env: env(Kind::Join),
        },
        ClientFrame::Post {
            id: Some(5),
            group: demo(),
            env: env(Kind::Post),
        },
        ClientFrame::Leave {
            id: Some(6),
            group: demo(),
        },
    ]
}

/// As [`client_variant`], for server frames.
fn server_variant(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Hello { .. } => "hello",
        ServerFrame::AuthOk { .. } => "auth_ok",
        ServerFrame::Redeemed { .. } => "redeemed",
        ServerFrame::GroupCreated { .. } => "group_created",
        ServerFrame::Joined { .. } => "joined",
        ServerFrame::Left { .. } => "left",
        ServerFrame::Ack { .. } => "ack",
        ServerFrame::Event { .. } => "event",
        ServerFrame::Presence { .. } => "presence",
        ServerFrame::Error { .. } => "error",
        ServerFrame::Shutdown { .. } => "shutdown",
    }
}

fn every_server_frame() -> Vec<ServerFrame> {
    let key = PublicKey(signer().verifying_key().to_bytes());
    let info = GroupInfo {
        id: demo(),
        title: "Demo".into(),
        kind: GroupKind::DropIn,
    };
    let member = MemberInfo {
        key,
        name: "River".into(),
        roles: vec![Role::Facilitator],
        online: true,
        join: env(Kind::Join),
    };
    vec![
        ServerFrame::Hello {
            protocol: peerhub_protocol::PROTOCOL_VERSION,
            challenge: "c".into(),
            server_time: 1,
            limits: Limits::default(),
        },
        ServerFrame::AuthOk {
            id: Some(1),
            key,
            roles: vec![],
            counter: 0,
        },
        ServerFrame::Redeemed {
            id: Some(2),
            role: Role::Admin,
            roles: vec![Role::Admin],
        },
        ServerFrame::GroupCreated {
            id: Some(3),
            group: info.clone(),
        },
        ServerFrame::Joined {
            id: Some(4),
            group: info,
            head: 0,
            members: vec![member.clone()],
        },
        ServerFrame::Left {
            id: Some(5),
            group: demo(),
        },
        ServerFrame::Ack {
            id: Some(6),
            group: demo(),
            seq: 1,
            counter: 2,
        },
        ServerFrame::Event {
            group: demo(),
            seq: 1,
            ts: 1,
            env: env(Kind::Post),
        },
        ServerFrame::Presence {
            group: demo(),
            member,
        },
        ServerFrame::error(Some(7), ErrorCode::Replay, "replay"),
        ServerFrame::Shutdown {
            reason: "bye".into(),
        },
    ]
}

fn type_of(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no string type in {json}"))
        .to_string()
}

fn client_types() -> BTreeSet<String> {
    let types: BTreeSet<String> = every_client_frame()
        .iter()
        .map(|frame| {
            let wire = type_of(&frame.to_json());
            assert_eq!(wire, client_variant(frame), "serde name of {frame:?}");
            wire
        })
        .collect();
    let listed: BTreeSet<String> = CLIENT_FRAME_TYPES.iter().map(|t| t.to_string()).collect();
    assert_eq!(types, listed, "CLIENT_FRAME_TYPES differs from ClientFrame");
    types
}

fn server_types() -> BTreeSet<String> {
    let frames = every_server_frame();
    let types: BTreeSet<String> = frames
        .iter()
        .map(|frame| {
            let wire = type_of(&frame.to_json());
            assert_eq!(wire, server_variant(frame), "serde name of {frame:?}");
            wire
        })
        .collect();
    assert_eq!(types.len(), frames.len(), "two examples of one variant");
    types
}

// ---------------------------------------------------------------------------------
// Checking envelopes found in examples

/// Parses `payload` as the payload type of `kind` (unknown fields refused) and
/// returns the group it names, if any.
fn parse_payload(kind: Kind, payload: &str) -> Result<Option<GroupId>, ProtocolError> {
    let probe = SignedEnvelope {
        kind,
        key: PublicKey([0; 32]),
        payload: payload.to_string(),
        sig: peerhub_protocol::SignatureBytes([0; 64]),
    };
    Ok(match kind {
        Kind::Auth => {
            probe.payload_as::<AuthPayload>()?;
            None
        }
        Kind::Redeem => {
            probe.payload_as::<RedeemPayload>()?;
            None
        }
        Kind::CreateGroup => Some(probe.payload_as::<CreateGroupPayload>()?.group),
        Kind::Join => Some(probe.payload_as::<JoinPayload>()?.group),
        Kind::Post => Some(probe.payload_as::<PostPayload>()?.group),
        other => panic!("no payload type known to this test for {other:?}"),
    })
}

/// What a conforming recipient checks of an envelope: it verifies, is of the
/// expected kind, and its payload parses (and names `group`, when given).
fn check_envelope(env: &SignedEnvelope, kind: Kind, group: Option<&GroupId>, at: &str) {
    env.verify()
        .unwrap_or_else(|e| panic!("{at}: envelope does not verify: {e}"));
    assert_eq!(env.kind, kind, "{at}: envelope kind");
    let named = parse_payload(env.kind, &env.payload)
        .unwrap_or_else(|e| panic!("{at}: payload does not parse: {e}"));
    if let Some(group) = group {
        assert_eq!(
            named.as_ref(),
            Some(group),
            "{at}: payload names another group"
        );
    }
}

fn check_member(member: &MemberInfo, group: &GroupId, at: &str) {
    check_envelope(&member.join, Kind::Join, Some(group), at);
    assert_eq!(
        member.join.key, member.key,
        "{at}: join signed by another key"
    );
    let join: JoinPayload = member.join.payload_as().unwrap();
    assert_eq!(
        join.name, member.name,
        "{at}: name differs from the signed join"
    );
}

/// Decodes a documented client frame and checks it as the server would.
fn check_client_example(block: &Block) -> ClientFrame {
    let at = format!("client-frame example at PROTOCOL.md line {}", block.line);
    let frame = decode_client_frame(&block.body)
        .unwrap_or_else(|e| panic!("{at} does not decode: {:?}", e.error));
    let documented: serde_json::Value = serde_json::from_str(&block.body).unwrap();
    let encoded: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
    assert_eq!(documented, encoded, "{at} does not re-encode to itself");
    match &frame {
        ClientFrame::Auth { env, .. } => check_envelope(env, Kind::Auth, None, &at),
        ClientFrame::Redeem { env, .. } => check_envelope(env, Kind::Redeem, None, &at),
        ClientFrame::CreateGroup { env, .. } => check_envelope(env, Kind::CreateGroup, None, &at),
        ClientFrame::Join { group, env, .. } => check_envelope(env, Kind::Join, Some(group), &at),
        ClientFrame::Post { group, env, .. } => check_envelope(env, Kind::Post, Some(group), &at),
        ClientFrame::Leave { .. } => {}
    }
    frame
}

// ---------------------------------------------------------------------------------
// (a) The worked example

fn worked_signer() -> SigningKey {
    let seed: [u8; 32] = hex_block("worked-example-seed-hex")
        .try_into()
        .expect("the seed is 32 bytes");
    SigningKey::from_bytes(&seed)
}

fn worked_payload() -> String {
    one("worked-example-payload").body
}

#[test]
fn worked_example_seed_gives_the_documented_public_key() {
    let key = worked_signer().verifying_key().to_bytes();
    assert_eq!(hex_block("worked-example-public-key-hex"), key);
    assert_eq!(one("worked-example-public-key-base64url").body, b64(&key));
}

#[test]
fn worked_example_payload_is_the_post_the_text_describes() {
    let payload = worked_payload();
    let post: PostPayload = serde_json::from_str(&payload).expect("a post payload");
    assert_eq!(post.group, demo());
    assert_eq!(post.counter, 1);
    assert_eq!(post.ts, 1_764_000_000_000);
    assert!(!post.body.is_empty());
    assert!(
        payload.is_ascii(),
        "keep the example's bytes easy to check by hand"
    );
}

#[test]
fn worked_example_signing_bytes_are_exact() {
    let bytes = signing_bytes(Kind::Post, &worked_payload());
    assert_eq!(
        one("worked-example-signing-bytes").body.as_bytes(),
        bytes.as_slice(),
        "signing bytes as text"
    );
    assert_eq!(
        hex_block("worked-example-signing-bytes-hex"),
        bytes,
        "signing bytes as hex"
    );
}

#[test]
fn worked_example_signature_is_reproduced() {
    let env = SignedEnvelope::sign(&worked_signer(), Kind::Post, worked_payload());
    assert_eq!(hex_block("worked-example-signature-hex"), env.sig.0);
    assert_eq!(
        one("worked-example-signature-base64url").body,
        env.sig.to_b64()
    );
}

#[test]
fn worked_example_frame_decodes_to_a_post_that_verifies() {
    let block = one("worked-example-frame");
    assert!(
        block.has_tag("client-frame"),
        "the frame is also a client-frame example"
    );
    let frame = decode_client_frame(&block.body).expect("the frame decodes");
    let ClientFrame::Post { group, env, .. } = frame else {
        panic!("the worked example is not a post: {frame:?}");
    };
    assert_eq!(group, demo());
    let expected = SignedEnvelope::sign(&worked_signer(), Kind::Post, worked_payload());
    assert_eq!(env, expected, "the frame carries the documented envelope");
    let key = env.verify().expect("the documented envelope verifies");
    assert_eq!(key, worked_signer().verifying_key());
}

#[test]
fn worked_example_breaks_when_any_payload_byte_changes() {
    let env = SignedEnvelope::sign(&worked_signer(), Kind::Post, worked_payload());
    let payload = worked_payload().into_bytes();
    for i in 0..payload.len() {
        let mut bytes = payload.clone();
        bytes[i] ^= 0x01; // ASCII stays ASCII, so still a string
        let mut tampered = env.clone();
        tampered.payload = String::from_utf8(bytes).unwrap();
        assert_eq!(
            tampered.verify(),
            Err(ProtocolError::BadSignature),
            "byte {i}"
        );
    }
    let mut other_kind = env.clone();
    other_kind.kind = Kind::Join;
    assert_eq!(other_kind.verify(), Err(ProtocolError::BadSignature));
    let mut other_sig = env;
    other_sig.sig.0[0] ^= 0x01;
    assert_eq!(other_sig.verify(), Err(ProtocolError::BadSignature));
}

// ---------------------------------------------------------------------------------
// (b) Error codes

#[test]
fn every_error_code_is_documented() {
    for code in ErrorCode::ALL {
        assert!(
            SPEC.contains(&format!("`{}`", code.as_str())),
            "PROTOCOL.md never mentions `{code}`"
        );
    }
    let table = first_column_names(&section("Error codes"));
    let all: BTreeSet<String> = ErrorCode::ALL.iter().map(|c| c.as_str().into()).collect();
    let missing: Vec<_> = all.difference(&table).collect();
    let unknown: Vec<_> = table.difference(&all).collect();
    assert!(
        missing.is_empty(),
        "codes without a row in the error table: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "error table rows that are not codes: {unknown:?}"
    );
}

// ---------------------------------------------------------------------------------
// (c) Frame types

/// Every type has a heading of its own in `title`'s section, and every name in those
/// headings is a type.
fn assert_headings_match(title: &str, types: &BTreeSet<String>) {
    let lines = section(title);
    let named: BTreeSet<String> = headings(&lines)
        .into_iter()
        .flat_map(backticked)
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = types.difference(&named).collect();
    let unknown: Vec<_> = named.difference(types).collect();
    assert!(missing.is_empty(), "{title}: no heading for {missing:?}");
    assert!(
        unknown.is_empty(),
        "{title}: headings for unknown types {unknown:?}"
    );
}

#[test]
fn every_client_frame_type_has_a_heading() {
    assert_headings_match("Client frames", &client_types());
    // The summary table of the section lists them too.
    let table = first_column_names(&section("Client frames"));
    for t in client_types() {
        assert!(table.contains(&t), "client frame summary table lacks `{t}`");
    }
}

#[test]
fn every_server_frame_type_has_a_heading() {
    assert_headings_match("Server frames", &server_types());
}

#[test]
fn every_signed_kind_is_in_the_kinds_table() {
    let table = first_column_names(&section("Kinds"));
    for frame in every_client_frame() {
        let env = match frame {
            ClientFrame::Auth { env, .. }
            | ClientFrame::Redeem { env, .. }
            | ClientFrame::CreateGroup { env, .. }
            | ClientFrame::Join { env, .. }
            | ClientFrame::Post { env, .. } => env,
            ClientFrame::Leave { .. } => continue,
        };
        assert!(
            table.contains(env.kind.as_str()),
            "kinds table lacks `{}`",
            env.kind.as_str()
        );
    }
}

#[test]
fn every_frame_type_has_an_example() {
    let client: BTreeSet<String> = tagged("client-frame")
        .iter()
        .map(|b| type_of(&b.body))
        .collect();
    assert_eq!(client, client_types(), "client frame types with examples");
    let server: BTreeSet<String> = tagged("server-frame")
        .iter()
        .map(|b| type_of(&b.body))
        .collect();
    assert_eq!(server, server_types(), "server frame types with examples");
}

// ---------------------------------------------------------------------------------
// (d) Examples decode

#[test]
fn client_frame_examples_decode_and_their_envelopes_verify() {
    let examples = tagged("client-frame");
    assert!(examples.len() >= CLIENT_FRAME_TYPES.len());
    for block in &examples {
        check_client_example(block);
    }
}

#[test]
fn server_frame_examples_deserialize_and_their_envelopes_verify() {
    let examples = tagged("server-frame");
    assert!(examples.len() >= server_types().len());
    for block in &examples {
        let at = format!("server-frame example at PROTOCOL.md line {}", block.line);
        let frame: ServerFrame = serde_json::from_str(&block.body)
            .unwrap_or_else(|e| panic!("{at} does not deserialize: {e}"));
        // ServerFrame ignores unknown fields, so compare again after encoding: a field
        // that was renamed or removed in the crate but not here fails.
        let documented: serde_json::Value = serde_json::from_str(&block.body).unwrap();
        let encoded: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(documented, encoded, "{at} does not re-encode to itself");
        match &frame {
            ServerFrame::Hello {
                protocol, limits, ..
            } => {
                assert_eq!(*protocol, peerhub_protocol::PROTOCOL_VERSION, "{at}");
                assert_eq!(
                    *limits,
                    Limits::default(),
                    "{at}: limits differ from limits.rs"
                );
            }
            ServerFrame::Event { group, env, .. } => {
                check_envelope(env, Kind::Post, Some(group), &at)
            }
            ServerFrame::Presence { group, member } => check_member(member, group, &at),
            ServerFrame::Joined { group, members, .. } => {
                for member in members {
                    check_member(member, &group.id, &at);
                }
            }
            _ => {}
        }
    }
}

#[test]
fn payload_examples_parse_and_match_a_frame_example() {
    let frames: Vec<ClientFrame> = tagged("client-frame")
        .iter()
        .map(check_client_example)
        .collect();
    let shown: Vec<(Kind, String)> = frames
        .into_iter()
        .filter_map(|frame| match frame {
            ClientFrame::Auth { env, .. }
            | ClientFrame::Redeem { env, .. }
            | ClientFrame::CreateGroup { env, .. }
            | ClientFrame::Join { env, .. }
            | ClientFrame::Post { env, .. } => Some((env.kind, env.payload)),
            ClientFrame::Leave { .. } => None,
        })
        .collect();
    let mut count = 0;
    for block in blocks(SPEC) {
        let Some(kind) = block.info.iter().find_map(|w| w.strip_prefix("payload-")) else {
            continue;
        };
        count += 1;
        let at = format!("payload example at PROTOCOL.md line {}", block.line);
        let kind: Kind = serde_json::from_value(serde_json::Value::String(kind.into()))
            .unwrap_or_else(|_| panic!("{at}: {kind} is not a kind"));
        parse_payload(kind, &block.body).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(
            shown.contains(&(kind, block.body.clone())),
            "{at} is not the payload of any client-frame example"
        );
    }
    assert!(count >= 5, "a payload example for every kind");
}

// ---------------------------------------------------------------------------------
// Limits and names

#[test]
fn limits_table_matches_limits_rs() {
    let expected: [(&str, u64); 8] = [
        ("max_frame_bytes", limits::MAX_FRAME_BYTES as u64),
        ("hard_frame_bytes", limits::HARD_FRAME_BYTES as u64),
        ("max_body_chars", limits::MAX_BODY_CHARS as u64),
        ("max_name_chars", limits::MAX_NAME_CHARS as u64),
        ("max_title_chars", limits::MAX_TITLE_CHARS as u64),
        ("max_clock_skew_ms", limits::MAX_CLOCK_SKEW_MS),
        ("history_on_join", limits::HISTORY_ON_JOIN),
        ("max_group_id_len", MAX_GROUP_ID_LEN as u64),
    ];
    let rows = table_rows(&section("Limits"));
    for (name, value) in expected {
        let row = rows
            .iter()
            .find(|cells| cells.first().map(String::as_str) == Some(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("the limits table has no row for `{name}`"));
        let documented: u64 = row[1]
            .parse()
            .unwrap_or_else(|_| panic!("`{name}`: {:?} is not a number", row[1]));
        assert_eq!(documented, value, "`{name}` in PROTOCOL.md");
    }
}

#[test]
fn reserved_role_words_are_listed_in_the_name_rules() {
    let text = section("Identifiers and names").join("\n");
    for word in peerhub_protocol::names::RESERVED_ROLE_WORDS {
        assert!(
            text.contains(&format!("`{word}`")),
            "reserved word `{word}` not listed"
        );
    }
}
