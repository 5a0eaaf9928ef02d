//! Checks `PROTOCOL.md` against the crate, so the specification cannot drift from the
//! reference implementation unnoticed.
//!
//! The document marks what these tests read with the info string of fenced blocks:
//!
//! - ```` ```text worked-example-<name> ```` and ```` ```json … worked-example-frame ````:
//!   the values of the worked example (§16), recomputed here from the seed;
//! - ```` ```json client-frame ```` / ```` ```json server-frame ````: frame examples,
//!   which must decode with the crate, re-encode to themselves, and whose envelopes
//!   must verify and pass every check §12.8 asks of a client;
//! - ```` ```text payload-<kind> ````: a payload shown on its own, which must parse as
//!   that kind and be the payload of one of the client-frame examples;
//! - ```` ```json control-actions ```` / ```` ```json escalation-actions ````: every
//!   facilitator control action and every supervisor's step, as the crate encodes them.
//!
//! Frame types are checked against the level-3 headings of the "Client frames" and
//! "Server frames" sections; the field tables of each frame, payload and shared object
//! (the `#### `Name`` headings) against the crate's serialised fields; the kinds,
//! controls, escalation steps, statuses, notices, error codes and limits against their
//! tables. A new variant of a frame, action, note or status enum does not compile here
//! until it is named, and then fails until PROTOCOL.md documents it.

#![allow(
    clippy::unwrap_used,
    reason = "tests may unwrap; allow-unwrap-in-tests does not reach helpers outside #[test] fns"
)]

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use peerhub_protocol::encoding::{b64, PublicKey};
use peerhub_protocol::envelope::{signing_bytes, Kind, SignedEnvelope};
use peerhub_protocol::escalation::{
    Consent, ContextEvent, EscalationCounts, EscalationPart, EscalationStatus, EscalationStep,
    EscalationSummary, Helpline, RotaEntry, Severity,
};
use peerhub_protocol::frame::{
    decode_client_frame, Agreement, Channel, ClientFrame, GroupInfo, GroupState, Limits,
    MemberInfo, MemberStatus, Note, RecordInfo, Redaction, Role, ServerFrame, CLIENT_FRAME_TYPES,
};
use peerhub_protocol::ids::MAX_GROUP_ID_LEN;
use peerhub_protocol::payload::{
    AdminPayload, AgreePayload, AuthPayload, ControlAction, ControlPayload, CreateGroupPayload,
    EscalationActPayload, EscalationAction, FlagPayload, GrantPayload, GroupKind, InvitePayload,
    InviteRole, JoinPayload, PostPayload, PushAction, PushPayload, RecordPayload, RedeemPayload,
    ReportPayload, Retention, RotaPayload, SessionWindow, StepOutPayload,
};
use peerhub_protocol::{limits, ErrorCode, GroupId, ProtocolError};
use serde::Serialize;
use serde_json::Value;

const SPEC: &str = include_str!("../PROTOCOL.md");
const LIMITS_RS: &str = include_str!("../src/limits.rs");

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

/// A heading's text without its `#`s and its number: `### 6.1 `auth`` → `` `auth` ``.
fn heading_title(line: &str) -> Option<&str> {
    let level = heading_level(line)?;
    let text = line[level..].trim();
    match text.split_once(' ') {
        Some((number, rest))
            if number.chars().all(|c| c.is_ascii_digit() || c == '.')
                && number.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            Some(rest.trim())
        }
        _ => Some(text),
    }
}

/// The lines under the first heading in `lines` that `pick` accepts, up to the next
/// heading of the same or a higher level.
fn part<'a>(lines: &[&'a str], what: &str, pick: impl Fn(&str) -> bool) -> Vec<&'a str> {
    let start = lines
        .iter()
        .position(|l| heading_level(l).is_some() && pick(l))
        .unwrap_or_else(|| panic!("PROTOCOL.md has no heading for {what}"));
    let level = heading_level(lines[start]).unwrap();
    lines[start + 1..]
        .iter()
        .take_while(|l| heading_level(l).is_none_or(|other| other > level))
        .copied()
        .collect()
}

/// The prose of the section titled exactly `title` (its number aside).
fn section(title: &str) -> Vec<&'static str> {
    part(&prose_lines(SPEC), title, |l| {
        heading_title(l) == Some(title)
    })
}

/// The prose under the level-3 heading of frame `ty` in the section `title`.
fn frame_section(title: &str, ty: &str) -> Vec<&'static str> {
    let lines = section(title);
    part(&lines, &format!("{title}: `{ty}`"), |l| {
        heading_level(l) == Some(3) && backticked(l) == [ty]
    })
}

/// The prose under the `#### `name`` heading of a shared object.
fn object_section(name: &str) -> Vec<&'static str> {
    let title = format!("`{name}`");
    part(&prose_lines(SPEC), &title, |l| {
        heading_level(l) == Some(4) && heading_title(l) == Some(title.as_str())
    })
}

/// The text between backticks in `line`.
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// The names of the level-3 headings in `lines` (the words in backticks).
fn level3_names(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| heading_level(l) == Some(3))
        .flat_map(|l| backticked(l))
        .map(str::to_string)
        .collect()
}

/// The tables in `lines`: each a list of rows of trimmed cells, header first,
/// separator rows left out.
fn tables(lines: &[&str]) -> Vec<Vec<Vec<String>>> {
    let mut out: Vec<Vec<Vec<String>>> = Vec::new();
    let mut in_table = false;
    for line in lines {
        let is_row = line.trim_start().starts_with('|');
        if !is_row {
            in_table = false;
            continue;
        }
        let cells: Vec<String> = line
            .trim()
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        let cells = cells[1..cells.len().saturating_sub(1)].to_vec();
        if !in_table {
            out.push(Vec::new());
            in_table = true;
        }
        let separator = cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'));
        if !separator {
            out.last_mut().unwrap().push(cells);
        }
    }
    out
}

/// Every table row in `lines`, headers included.
fn table_rows(lines: &[&str]) -> Vec<Vec<String>> {
    tables(lines).into_iter().flatten().collect()
}

/// A cell that is exactly one backticked word, as that word.
fn code_cell(cell: &str) -> Option<String> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then(|| inner.to_string())
}

/// The body rows of the one table in `lines` whose header starts with `header`.
fn table_under(lines: &[&str], header: &str, at: &str) -> Vec<Vec<String>> {
    let mut found: Vec<_> = tables(lines)
        .into_iter()
        .filter(|t| t.first().and_then(|h| h.first()).map(String::as_str) == Some(header))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{at}: needs exactly one table whose header starts with {header:?}"
    );
    found.remove(0).into_iter().skip(1).collect()
}

/// The field names (backticked first cells) of that table.
fn field_table(lines: &[&str], header: &str, at: &str) -> BTreeSet<String> {
    table_under(lines, header, at)
        .iter()
        .map(|row| {
            code_cell(&row[0]).unwrap_or_else(|| panic!("{at}: {:?} is not a `field` cell", row[0]))
        })
        .collect()
}

/// The keys of `value`'s JSON object.
fn keys<T: Serialize>(value: &T) -> BTreeSet<String> {
    match serde_json::to_value(value).unwrap() {
        Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

#[track_caller]
fn assert_same_fields(documented: &BTreeSet<String>, actual: &BTreeSet<String>, at: &str) {
    let missing: Vec<_> = actual.difference(documented).collect();
    let unknown: Vec<_> = documented.difference(actual).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{at}: fields missing from the table {missing:?}, in the table but not in the crate {unknown:?}"
    );
}

// ---------------------------------------------------------------------------------
// One value of every variant, with every optional field present

fn signer() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn someone() -> PublicKey {
    PublicKey(signer().verifying_key().to_bytes())
}

fn demo() -> GroupId {
    GroupId::parse("demo").unwrap()
}

fn env(kind: Kind) -> SignedEnvelope {
    SignedEnvelope::sign(&signer(), kind, "{}".into())
}

/// The wire `type` of a variant and the kind of envelope it carries. The match has no
/// wildcard on purpose: a new variant does not compile until it is named here, and
/// then needs a heading, tables and an example in PROTOCOL.md.
fn client_variant(frame: &ClientFrame) -> (&'static str, Option<Kind>) {
    match frame {
        ClientFrame::Auth { .. } => ("auth", Some(Kind::Auth)),
        ClientFrame::Redeem { .. } => ("redeem", Some(Kind::Redeem)),
        ClientFrame::CreateGroup { .. } => ("create_group", Some(Kind::CreateGroup)),
        ClientFrame::Join { .. } => ("join", Some(Kind::Join)),
        ClientFrame::Post { .. } => ("post", Some(Kind::Post)),
        ClientFrame::Leave { .. } => ("leave", None),
        ClientFrame::Invite { .. } => ("invite", Some(Kind::Invite)),
        ClientFrame::Agree { .. } => ("agree", Some(Kind::Agree)),
        ClientFrame::Control { .. } => ("control", Some(Kind::Control)),
        ClientFrame::Report { .. } => ("report", Some(Kind::Report)),
        ClientFrame::StepOut { .. } => ("step_out", Some(Kind::StepOut)),
        ClientFrame::Record { .. } => ("record", Some(Kind::Record)),
        ClientFrame::Records { .. } => ("records", None),
        ClientFrame::Flag { .. } => ("flag", Some(Kind::Flag)),
        ClientFrame::Escalation { .. } => ("escalation", Some(Kind::Escalation)),
        ClientFrame::Escalations { .. } => ("escalations", None),
        ClientFrame::EscalationDetail { .. } => ("escalation_detail", None),
        ClientFrame::SetRota { .. } => ("set_rota", Some(Kind::Rota)),
        ClientFrame::Rota { .. } => ("rota", None),
        ClientFrame::Push { .. } => ("push", Some(Kind::Push)),
        ClientFrame::Alerting { .. } => ("alerting", None),
        ClientFrame::LinePost { .. } => ("line_post", Some(Kind::Post)),
        ClientFrame::Line { .. } => ("line", None),
        ClientFrame::Staff { .. } => ("staff", None),
        ClientFrame::Grant { .. } => ("grant", Some(Kind::Grant)),
    }
}

/// The frame's envelope and the group it is sent to, if it has them.
fn client_env(frame: &ClientFrame) -> Option<(&SignedEnvelope, Option<&GroupId>)> {
    match frame {
        ClientFrame::Auth { env, .. }
        | ClientFrame::Redeem { env, .. }
        | ClientFrame::CreateGroup { env, .. }
        | ClientFrame::Invite { env, .. }
        | ClientFrame::Escalation { env, .. }
        | ClientFrame::SetRota { env, .. }
        | ClientFrame::Push { env, .. }
        | ClientFrame::Grant { env, .. } => Some((env, None)),
        ClientFrame::Join { group, env, .. }
        | ClientFrame::Post { group, env, .. }
        | ClientFrame::Agree { group, env, .. }
        | ClientFrame::Control { group, env, .. }
        | ClientFrame::Report { group, env, .. }
        | ClientFrame::StepOut { group, env, .. }
        | ClientFrame::Record { group, env, .. }
        | ClientFrame::Flag { group, env, .. }
        | ClientFrame::LinePost { group, env, .. } => Some((env, Some(group))),
        ClientFrame::Leave { .. }
        | ClientFrame::Records { .. }
        | ClientFrame::Escalations { .. }
        | ClientFrame::EscalationDetail { .. }
        | ClientFrame::Rota { .. }
        | ClientFrame::Alerting { .. }
        | ClientFrame::Line { .. }
        | ClientFrame::Staff { .. } => None,
    }
}

fn every_client_frame() -> Vec<ClientFrame> {
    let id = Some(1);
    vec![
        ClientFrame::Auth {
            id,
            env: env(Kind::Auth),
        },
        ClientFrame::Redeem {
            id,
            env: env(Kind::Redeem),
        },
        ClientFrame::CreateGroup {
            id,
            access_code: Some("tulip".into()),
            env: env(Kind::CreateGroup),
        },
        ClientFrame::Join {
            id,
            group: demo(),
            after: Some(9),
            access_code: Some("tulip".into()),
            env: env(Kind::Join),
        },
        ClientFrame::Post {
            id,
            group: demo(),
            env: env(Kind::Post),
        },
        ClientFrame::Leave { id, group: demo() },
        ClientFrame::Invite {
            id,
            env: env(Kind::Invite),
        },
        ClientFrame::Agree {
            id,
            group: demo(),
            env: env(Kind::Agree),
        },
        ClientFrame::Control {
            id,
            group: demo(),
            env: env(Kind::Control),
        },
        ClientFrame::Report {
            id,
            group: demo(),
            env: env(Kind::Report),
        },
        ClientFrame::StepOut {
            id,
            group: demo(),
            env: env(Kind::StepOut),
        },
        ClientFrame::Record {
            id,
            group: demo(),
            env: env(Kind::Record),
        },
        ClientFrame::Records { id, after: Some(3) },
        ClientFrame::Flag {
            id,
            group: demo(),
            env: env(Kind::Flag),
        },
        ClientFrame::Escalation {
            id,
            env: env(Kind::Escalation),
        },
        ClientFrame::Escalations {
            id,
            after: Some("1.2.3".into()),
        },
        ClientFrame::EscalationDetail {
            id,
            escalation: Some(3),
            reference: Some("r".into()),
            part: EscalationPart::Steps,
            offset: Some(1),
        },
        ClientFrame::SetRota {
            id,
            env: env(Kind::Rota),
        },
        ClientFrame::Rota { id },
        ClientFrame::Push {
            id,
            env: env(Kind::Push),
        },
        ClientFrame::Alerting { id },
        ClientFrame::LinePost {
            id,
            group: demo(),
            escalation: 3,
            env: env(Kind::Post),
        },
        ClientFrame::Line { id, escalation: 3 },
        ClientFrame::Staff { id },
        ClientFrame::Grant {
            id,
            env: env(Kind::Grant),
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
        ServerFrame::GroupUpdate { .. } => "group_update",
        ServerFrame::Dismissed { .. } => "dismissed",
        ServerFrame::Invited { .. } => "invited",
        ServerFrame::Ok { .. } => "ok",
        ServerFrame::Records { .. } => "records",
        ServerFrame::Flagged { .. } => "flagged",
        ServerFrame::Escalation { .. } => "escalation",
        ServerFrame::Escalations { .. } => "escalations",
        ServerFrame::EscalationDetail { .. } => "escalation_detail",
        ServerFrame::SupportNotice { .. } => "support_notice",
        ServerFrame::Coverage { .. } => "coverage",
        ServerFrame::Rota { .. } => "rota",
        ServerFrame::Alerting { .. } => "alerting",
        ServerFrame::Line { .. } => "line",
        ServerFrame::Staff { .. } => "staff",
        ServerFrame::Error { .. } => "error",
        ServerFrame::Shutdown { .. } => "shutdown",
    }
}

fn group_info() -> GroupInfo {
    GroupInfo {
        id: demo(),
        title: "Demo".into(),
        kind: GroupKind::DropIn,
    }
}

fn member_info() -> MemberInfo {
    MemberInfo {
        key: someone(),
        name: "River".into(),
        roles: vec![Role::Facilitator],
        online: true,
        join: env(Kind::Join),
        status: MemberStatus::Admitted,
        facilitator: true,
        muted_until_ms: Some(5),
        away: false,
    }
}

fn group_state() -> GroupState {
    GroupState {
        session: 1,
        session_open: true,
        door_open: true,
        next_session_ms: Some(7),
        paused: false,
        locked: false,
        slow_mode_secs: 0,
        agreement: Agreement {
            version: 1,
            text: "Be kind.".into(),
        },
        pinned: vec![1],
        lead: Some(someone()),
        co_facilitators: vec![someone()],
    }
}

fn redaction() -> Redaction {
    Redaction {
        by: someone(),
        reason: "why".into(),
        control_seq: 2,
    }
}

fn record_info() -> RecordInfo {
    RecordInfo {
        id: 1,
        group: demo(),
        about: Some(someone()),
        entries: vec![env(Kind::Record)],
    }
}

fn helpline() -> Helpline {
    Helpline {
        name: "Samaritans".into(),
        contact: "116 123".into(),
        hours: "24 hours".into(),
        nation: "UK".into(),
        emergency: false,
    }
}

fn rota_entry() -> RotaEntry {
    RotaEntry {
        supervisor: someone(),
        start_ms: 1,
        end_ms: 2,
        level: 1,
    }
}

fn context_event() -> ContextEvent {
    ContextEvent {
        seq: 1,
        ts: 1,
        env: env(Kind::Post),
    }
}

fn escalation_step() -> EscalationStep {
    EscalationStep {
        ts: 1,
        step: "handover".into(),
        actor: Some(someone()),
        env: Some(env(Kind::Escalation)),
        level: Some(1),
        to: vec![someone()],
        text: Some("t".into()),
    }
}

fn escalation_counts() -> EscalationCounts {
    EscalationCounts {
        flags: 1,
        merged: 2,
        counted: 1,
        context: 1,
        steps: 1,
    }
}

fn escalation_summary() -> EscalationSummary {
    EscalationSummary {
        id: Some(1),
        reference: Some("r".into()),
        group: demo(),
        about: someone(),
        name: Some("River".into()),
        severity: Severity::Urgent,
        consent: Consent::Given,
        status: EscalationStatus::Open,
        level: 1,
        waiting_for: vec![someone()],
        deadline_ms: Some(2),
        created_ms: 1,
        handler: Some(someone()),
        outcome: Some("o".into()),
        counts: escalation_counts(),
    }
}

fn every_server_frame() -> Vec<ServerFrame> {
    let id = Some(1);
    vec![
        ServerFrame::Hello {
            protocol: peerhub_protocol::PROTOCOL_VERSION,
            challenge: "c".into(),
            server_time: 1,
            limits: Limits::default(),
        },
        ServerFrame::AuthOk {
            id,
            key: someone(),
            roles: vec![],
            counter: 0,
        },
        ServerFrame::Redeemed {
            id,
            role: InviteRole::Member,
            group: Some(demo()),
            groups: vec![demo()],
            roles: vec![Role::Admin],
        },
        ServerFrame::GroupCreated {
            id,
            group: group_info(),
        },
        ServerFrame::Joined {
            id,
            group: group_info(),
            head: 0,
            oldest: 1,
            members: vec![member_info()],
            members_total: 1,
            status: MemberStatus::Waiting,
            state: group_state(),
        },
        ServerFrame::Left { id, group: demo() },
        ServerFrame::Ack {
            id,
            group: demo(),
            channel: Channel::Staff,
            seq: 1,
            counter: 2,
        },
        ServerFrame::Event {
            group: demo(),
            channel: Channel::Staff,
            seq: 1,
            ts: 1,
            env: Some(env(Kind::Post)),
            note: Some(Note::MuteEnded { member: someone() }),
            redacted: Some(redaction()),
        },
        ServerFrame::Presence {
            group: demo(),
            member: member_info(),
        },
        ServerFrame::GroupUpdate {
            group: demo(),
            state: group_state(),
        },
        ServerFrame::Dismissed {
            group: demo(),
            reason: "removed".into(),
            message: "m".into(),
        },
        ServerFrame::Invited {
            id,
            token: "t".into(),
            role: InviteRole::Member,
            group: Some(demo()),
            groups: vec![demo()],
            expires_ms: 3,
        },
        ServerFrame::Ok { id },
        ServerFrame::Records {
            id,
            records: vec![record_info()],
            more: true,
        },
        ServerFrame::Error {
            id,
            code: ErrorCode::Closed,
            message: "closed".into(),
            retry_after_ms: Some(1),
            next_session_ms: Some(2),
            helplines: Some(vec![helpline()]),
        },
        ServerFrame::Shutdown {
            reason: "bye".into(),
        },
        ServerFrame::Flagged {
            id,
            reference: "r".into(),
            on_call: true,
            helplines: vec![helpline()],
        },
        ServerFrame::Escalation {
            escalation: escalation_summary(),
        },
        ServerFrame::Escalations {
            id,
            escalations: vec![escalation_summary()],
            total: 1,
            next: Some("1.2.3".into()),
        },
        ServerFrame::EscalationDetail {
            id,
            escalation: Some(1),
            reference: Some("r".into()),
            part: EscalationPart::Steps,
            offset: 0,
            total: 1,
            flags: vec![env(Kind::Flag)],
            steps: vec![escalation_step()],
            context: vec![context_event()],
        },
        ServerFrame::SupportNotice {
            group: demo(),
            reference: "r".into(),
            notice: "resolved".into(),
            message: "m".into(),
            helplines: vec![helpline()],
        },
        ServerFrame::Coverage {
            on_call: false,
            helplines: vec![helpline()],
        },
        ServerFrame::Rota {
            id,
            entries: vec![rota_entry()],
        },
        ServerFrame::Alerting {
            id,
            vapid_key: Some("k".into()),
            subscriptions: 1,
            pager: false,
            unreachable: vec![someone()],
            low_space_free_mb: Some(180),
        },
        ServerFrame::Line {
            id,
            escalation: 3,
            group: demo(),
            to: vec![someone()],
        },
        ServerFrame::Staff {
            id,
            staff: vec![peerhub_protocol::frame::StaffMember {
                key: someone(),
                roles: vec![Role::Facilitator, Role::Supervisor],
                name: Some("Sam".into()),
                groups: vec![demo()],
            }],
            more: false,
        },
    ]
}

/// As [`client_variant`], for control actions: the wire name, and the channel the
/// control is written to when signed by `by` (§8.1).
fn control_variant(action: &ControlAction, by: PublicKey) -> (&'static str, Channel) {
    let name = action.name();
    let channel = match action {
        ControlAction::Decline { .. } | ControlAction::ClearWaiting => Channel::Staff,
        ControlAction::CheckIn { member } => Channel::pair(by, *member),
        ControlAction::Admit { .. }
        | ControlAction::Mute { .. }
        | ControlAction::Unmute { .. }
        | ControlAction::Remove { .. }
        | ControlAction::Lock
        | ControlAction::Unlock
        | ControlAction::SlowMode { .. }
        | ControlAction::Pause
        | ControlAction::Resume
        | ControlAction::Redact { .. }
        | ControlAction::Pin { .. }
        | ControlAction::Unpin { .. }
        | ControlAction::AddCofacilitator { .. }
        | ControlAction::HandOver { .. }
        | ControlAction::SetAgreement { .. }
        | ControlAction::OpenSession
        | ControlAction::EndSession => Channel::Main,
    };
    (name, channel)
}

fn every_control_action() -> Vec<ControlAction> {
    let member = someone();
    let reason = Some("why".to_string());
    vec![
        ControlAction::Admit { member },
        ControlAction::Decline {
            member,
            reason: reason.clone(),
        },
        ControlAction::Mute { member, minutes: 5 },
        ControlAction::Unmute { member },
        ControlAction::Remove {
            member,
            until_session_end: true,
            reason,
        },
        ControlAction::Lock,
        ControlAction::Unlock,
        ControlAction::SlowMode { seconds: 30 },
        ControlAction::Pause,
        ControlAction::Resume,
        ControlAction::Redact {
            seq: 1,
            reason: "why".into(),
        },
        ControlAction::Pin { seq: 1 },
        ControlAction::Unpin { seq: 1 },
        ControlAction::AddCofacilitator { member },
        ControlAction::HandOver { member },
        ControlAction::SetAgreement { text: "t".into() },
        ControlAction::CheckIn { member },
        ControlAction::OpenSession,
        ControlAction::EndSession,
        ControlAction::ClearWaiting,
    ]
}

/// The wire name of a note and the channel the hub writes it to (§8.10).
fn note_variant(note: &Note) -> (&'static str, Channel) {
    match note {
        Note::RiskNudge { .. } => ("risk_nudge", Channel::Staff),
        Note::MuteEnded { .. } => ("mute_ended", Channel::Main),
        Note::SupportAsked { .. } => ("support_asked", Channel::Staff),
        Note::SupportResolved { .. } => ("support_resolved", Channel::Staff),
    }
}

fn every_note() -> Vec<Note> {
    vec![
        Note::RiskNudge {
            member: someone(),
            seq: 1,
            suggestion: "s".into(),
        },
        Note::MuteEnded { member: someone() },
        Note::SupportAsked {
            member: someone(),
            severity: Severity::Urgent,
            own: true,
            flags: 1,
            withheld: false,
            words: Some("w".into()),
        },
        Note::SupportResolved { member: someone() },
    ]
}

fn status_name(status: MemberStatus) -> &'static str {
    match status {
        MemberStatus::NeedsAgreement => "needs_agreement",
        MemberStatus::Waiting => "waiting",
        MemberStatus::Admitted => "admitted",
        MemberStatus::Declined => "declined",
        MemberStatus::Removed => "removed",
    }
}

const EVERY_STATUS: [MemberStatus; 5] = [
    MemberStatus::NeedsAgreement,
    MemberStatus::Waiting,
    MemberStatus::Admitted,
    MemberStatus::Declined,
    MemberStatus::Removed,
];

/// As [`client_variant`], for a supervisor's step: its wire name and the name of the
/// step it adds to an escalation's steps.
fn escalation_action_variant(action: &EscalationAction) -> (&'static str, &'static str) {
    match action {
        EscalationAction::Ack => ("ack", "acknowledged"),
        EscalationAction::Note { .. } => ("note", "note"),
        EscalationAction::Handover { .. } => ("handover", "handover"),
        EscalationAction::Resolve { .. } => ("resolve", "resolved"),
    }
}

fn every_escalation_action() -> Vec<EscalationAction> {
    vec![
        EscalationAction::Ack,
        EscalationAction::Note { text: "t".into() },
        EscalationAction::Handover { to: someone() },
        EscalationAction::Resolve {
            outcome: "o".into(),
        },
    ]
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Concern => "concern",
        Severity::Urgent => "urgent",
        Severity::Emergency => "emergency",
    }
}

fn consent_name(consent: Consent) -> &'static str {
    match consent {
        Consent::Own => "own",
        Consent::Given => "given",
        Consent::ImminentRisk => "imminent_risk",
    }
}

fn escalation_status_name(status: EscalationStatus) -> &'static str {
    match status {
        EscalationStatus::Open => "open",
        EscalationStatus::Acknowledged => "acknowledged",
        EscalationStatus::Resolved => "resolved",
    }
}

/// The `notice` values of `support_notice` the server sends (a string in the crate).
const NOTICES: [&str; 4] = ["support_asked", "acknowledged", "unanswered", "resolved"];

/// The `step` values of `EscalationStep` the server writes (a string in the crate).
const STEPS: [&str; 8] = [
    "raised",
    "merged",
    "routed",
    "unanswered",
    "acknowledged",
    "note",
    "handover",
    "resolved",
];

/// A payload of `kind` with every optional field present, as JSON.
fn full_payload(kind: Kind) -> Value {
    let group = demo();
    let (counter, ts) = (1, 2);
    let value = match kind {
        Kind::Auth => serde_json::to_value(AuthPayload {
            challenge: "c".into(),
            ts,
        }),
        Kind::Redeem => serde_json::to_value(RedeemPayload {
            token: "t".into(),
            name: Some("Sam".into()),
            counter,
            ts,
        }),
        Kind::CreateGroup => serde_json::to_value(CreateGroupPayload {
            group,
            title: "T".into(),
            group_kind: GroupKind::Virtual,
            agreement: Some("a".into()),
            access_code: Some("c".into()),
            schedule: vec![full_window()],
            retention: full_retention(),
            waiting_room: Some(false),
            counter,
            ts,
        }),
        Kind::Join => serde_json::to_value(JoinPayload {
            group,
            name: "n".into(),
            counter,
            ts,
        }),
        Kind::Post => serde_json::to_value(PostPayload {
            group,
            body: "b".into(),
            to: Some(someone()),
            counter,
            ts,
        }),
        Kind::Invite => serde_json::to_value(InvitePayload {
            role: InviteRole::Member,
            group: Some(group.clone()),
            groups: vec![group],
            ttl_ms: Some(1),
            counter,
            ts,
        }),
        Kind::Agree => serde_json::to_value(AgreePayload {
            group,
            version: 1,
            counter,
            ts,
        }),
        Kind::Control => serde_json::to_value(ControlPayload {
            group,
            action: ControlAction::Lock,
            counter,
            ts,
        }),
        Kind::Report => serde_json::to_value(ReportPayload {
            group,
            seq: 1,
            reason: "r".into(),
            counter,
            ts,
        }),
        Kind::StepOut => serde_json::to_value(StepOutPayload {
            group,
            away: true,
            counter,
            ts,
        }),
        Kind::Record => serde_json::to_value(RecordPayload {
            group,
            about: Some(someone()),
            reply_to: Some(1),
            text: "t".into(),
            counter,
            ts,
        }),
        Kind::Flag => serde_json::to_value(FlagPayload {
            group,
            about: someone(),
            seq: Some(1),
            severity: Severity::Emergency,
            consent: Consent::ImminentRisk,
            reason: Some("r".into()),
            withhold_notice: Some("w".into()),
            note: Some("n".into()),
            counter,
            ts,
        }),
        Kind::Escalation => serde_json::to_value(EscalationActPayload {
            escalation: 1,
            action: EscalationAction::Ack,
            counter,
            ts,
        }),
        Kind::Rota => serde_json::to_value(RotaPayload {
            entries: vec![rota_entry()],
            counter,
            ts,
        }),
        Kind::Push => serde_json::to_value(PushPayload {
            action: PushAction::Subscribe,
            endpoint: "https://push.example/1".into(),
            p256dh: Some("p".into()),
            auth: Some("a".into()),
            counter,
            ts,
        }),
        Kind::Grant => serde_json::to_value(GrantPayload {
            key: someone(),
            group,
            revoke: true,
            counter,
            ts,
        }),
        Kind::Admin => serde_json::to_value(AdminPayload {
            action: "export".into(),
            subject: Some(someone()),
            group: Some(group),
            detail: Some("[]".into()),
            counter,
            ts,
        }),
        other => panic!("no payload type known to this test for {other:?}"),
    };
    value.unwrap()
}

fn full_window() -> SessionWindow {
    SessionWindow {
        start_ms: 1,
        end_ms: 2,
    }
}

fn full_retention() -> Retention {
    Retention {
        ephemeral: false,
        history_days: Some(30),
    }
}

fn type_of(json: &str) -> String {
    let value: Value = serde_json::from_str(json).unwrap();
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
            assert_eq!(wire, client_variant(frame).0, "serde name of {frame:?}");
            wire
        })
        .collect();
    let listed: BTreeSet<String> = CLIENT_FRAME_TYPES.iter().map(|t| t.to_string()).collect();
    assert_eq!(types, listed, "CLIENT_FRAME_TYPES differs from ClientFrame");
    types
}

/// Every kind a client frame carries.
fn client_kinds() -> BTreeSet<&'static str> {
    every_client_frame()
        .iter()
        .filter_map(|frame| client_variant(frame).1)
        .map(Kind::as_str)
        .collect()
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
// Checking what examples carry, as a conforming client would (§12.8)

/// Parses `payload` as the payload type of `kind` (unknown fields refused) and
/// returns the group it is bound to, for the kinds sent to a group.
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
        Kind::Invite => {
            probe.payload_as::<InvitePayload>()?;
            None
        }
        Kind::Escalation => {
            probe.payload_as::<EscalationActPayload>()?;
            None
        }
        Kind::Rota => {
            probe.payload_as::<RotaPayload>()?;
            None
        }
        Kind::Push => {
            probe.payload_as::<PushPayload>()?;
            None
        }
        Kind::Grant => {
            probe.payload_as::<GrantPayload>()?;
            None
        }
        Kind::Flag => Some(probe.payload_as::<FlagPayload>()?.group),
        Kind::CreateGroup => Some(probe.payload_as::<CreateGroupPayload>()?.group),
        Kind::Join => Some(probe.payload_as::<JoinPayload>()?.group),
        Kind::Post => Some(probe.payload_as::<PostPayload>()?.group),
        Kind::Agree => Some(probe.payload_as::<AgreePayload>()?.group),
        Kind::Control => Some(probe.payload_as::<ControlPayload>()?.group),
        Kind::Report => Some(probe.payload_as::<ReportPayload>()?.group),
        Kind::StepOut => Some(probe.payload_as::<StepOutPayload>()?.group),
        Kind::Record => Some(probe.payload_as::<RecordPayload>()?.group),
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

/// The channel an envelope relayed in an `event` belongs to (§8.1, §12.8).
fn channel_of(env: &SignedEnvelope, at: &str) -> Channel {
    match env.kind {
        Kind::Post => match env.payload_as::<PostPayload>().unwrap().to {
            None => Channel::Main,
            Some(to) => Channel::pair(env.key, to),
        },
        Kind::Control => {
            let payload: ControlPayload = env.payload_as().unwrap();
            control_variant(&payload.action, env.key).1
        }
        Kind::Report => Channel::Staff,
        other => panic!("{at}: an event never carries a {other:?} envelope"),
    }
}

/// A pair channel names two different keys, in ascending byte order (§8.1).
fn check_channel(channel: &Channel, at: &str) {
    if let Channel::Pair([a, b]) = channel {
        assert!(a.0 < b.0, "{at}: pair keys not in ascending byte order");
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

fn check_state(state: &GroupState, at: &str) {
    assert_eq!(
        state.agreement.version == 0,
        state.agreement.text.is_empty(),
        "{at}: agreement version 0 is exactly the empty agreement"
    );
    assert!(state.session >= 1, "{at}: sessions count from 1");
    assert!(
        !state.door_open || state.session_open,
        "{at}: the door is only open in a session"
    );
}

/// §8.9: the entries of a record, in order.
fn check_record(record: &RecordInfo, at: &str) {
    assert!(!record.entries.is_empty(), "{at}: a record has an entry");
    for (i, entry) in record.entries.iter().enumerate() {
        check_envelope(entry, Kind::Record, Some(&record.group), at);
        let payload: RecordPayload = entry.payload_as().unwrap();
        if i == 0 {
            assert_eq!(payload.reply_to, None, "{at}: the first entry opens it");
            assert_eq!(payload.about, record.about, "{at}: about differs");
        } else {
            assert_eq!(payload.reply_to, Some(record.id), "{at}: entry {i}");
            assert_eq!(payload.about, None, "{at}: entry {i} names about");
        }
    }
}

/// §12.8: an escalation's flags, context and steps.
fn check_summary(summary: &EscalationSummary, at: &str) {
    assert!(
        summary.id.is_some() != summary.reference.is_some(),
        "{at}: an id (staff) or a reference (anyone else), not both"
    );
    assert!(
        summary.counts.counted <= summary.counts.merged,
        "{at}: counted merges are merges"
    );
    match summary.status {
        EscalationStatus::Open => assert!(summary.handler.is_none(), "{at}: open but taken"),
        EscalationStatus::Acknowledged => {
            assert!(summary.handler.is_some(), "{at}: no handler")
        }
        EscalationStatus::Resolved => assert!(summary.outcome.is_some(), "{at}: no outcome"),
    }
}

/// Checks one page of an escalation's part: its envelopes verify and say what their
/// step says.
fn check_detail(frame: &ServerFrame, at: &str) {
    let ServerFrame::EscalationDetail {
        escalation,
        part,
        total,
        offset,
        flags,
        steps,
        context,
        ..
    } = frame
    else {
        return;
    };
    let items = flags.len() + steps.len() + context.len();
    assert!(
        (*offset as usize) + items <= *total as usize,
        "{at}: more items than the total"
    );
    let filled = [
        (EscalationPart::Flags, flags.len()),
        (EscalationPart::Steps, steps.len()),
        (EscalationPart::Context, context.len()),
    ];
    for (which, n) in filled {
        assert!(which == *part || n == 0, "{at}: items of another part");
    }
    for flag in flags {
        check_envelope(flag, Kind::Flag, None, at);
    }
    for event in context {
        check_envelope(&event.env, event.env.kind, None, at);
    }
    for step in steps {
        assert!(
            STEPS.contains(&step.step.as_str()),
            "{at}: step {:?}",
            step.step
        );
        match (&step.actor, &step.env) {
            (Some(actor), Some(env)) => {
                env.verify()
                    .unwrap_or_else(|e| panic!("{at}: step does not verify: {e}"));
                assert_eq!(env.key, *actor, "{at}: step signed by another key");
                if !["raised", "merged"].contains(&step.step.as_str()) {
                    check_envelope(env, Kind::Escalation, None, at);
                    let payload: EscalationActPayload = env.payload_as().unwrap();
                    if let Some(id) = escalation {
                        assert_eq!(payload.escalation, *id, "{at}: another escalation");
                    }
                    let step_name = escalation_action_variant(&payload.action).1;
                    assert_eq!(step.step, step_name, "{at}: step and action differ");
                }
            }
            (None, None) => {
                assert!(step.level.is_some() || step.step != "routed", "{at}: level");
            }
            (Some(_), None) => {}
            (None, Some(_)) => panic!("{at}: a step has an envelope without its actor"),
        }
    }
}

/// Decodes a documented client frame and checks it as the server would.
fn check_client_example(block: &Block) -> ClientFrame {
    let at = format!("client-frame example at PROTOCOL.md line {}", block.line);
    let frame = decode_client_frame(&block.body)
        .unwrap_or_else(|e| panic!("{at} does not decode: {:?}", e.error));
    let documented: Value = serde_json::from_str(&block.body).unwrap();
    let encoded: Value = serde_json::from_str(&frame.to_json()).unwrap();
    assert_eq!(documented, encoded, "{at} does not re-encode to itself");
    if let (Some((env, group)), Some(kind)) = (client_env(&frame), client_variant(&frame).1) {
        check_envelope(env, kind, group, &at);
    }
    frame
}

/// Checks a documented server frame; returns it with where it was found.
fn check_server_example(block: &Block) -> (ServerFrame, String) {
    let at = format!("server-frame example at PROTOCOL.md line {}", block.line);
    let frame: ServerFrame = serde_json::from_str(&block.body)
        .unwrap_or_else(|e| panic!("{at} does not deserialize: {e}"));
    // ServerFrame ignores unknown fields, so compare again after encoding: a field
    // that was renamed or removed in the crate but not here fails.
    let documented: Value = serde_json::from_str(&block.body).unwrap();
    let encoded: Value = serde_json::from_str(&frame.to_json()).unwrap();
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
        ServerFrame::Ack { channel, .. } => check_channel(channel, &at),
        ServerFrame::Event {
            group,
            channel,
            env,
            note,
            redacted,
            ..
        } => {
            check_channel(channel, &at);
            match (env, note) {
                (Some(env), None) => {
                    check_envelope(env, env.kind, Some(group), &at);
                    assert_eq!(*channel, channel_of(env, &at), "{at}: wrong channel");
                    if redacted.is_some() {
                        assert_eq!(env.kind, Kind::Post, "{at}: only posts are redacted");
                        assert_eq!(*channel, Channel::Main, "{at}: redacted outside main");
                    }
                }
                (None, Some(note)) => {
                    assert_eq!(*channel, note_variant(note).1, "{at}: note channel");
                    assert!(redacted.is_none(), "{at}: a note is never redacted");
                }
                (None, None) => {
                    assert!(redacted.is_some(), "{at}: an event without env or note");
                    assert_eq!(*channel, Channel::Main, "{at}: redacted outside main");
                }
                (Some(_), Some(_)) => panic!("{at}: an event with both env and note"),
            }
        }
        ServerFrame::Presence { group, member } => check_member(member, group, &at),
        ServerFrame::Joined {
            group,
            members,
            members_total,
            head,
            oldest,
            state,
            ..
        } => {
            for member in members {
                check_member(member, &group.id, &at);
            }
            assert!(
                *members_total >= members.len() as u64,
                "{at}: members_total counts at least the members listed"
            );
            assert!(
                members.len() <= peerhub_protocol::limits::JOINED_MEMBERS_MAX,
                "{at}: at most JOINED_MEMBERS_MAX members"
            );
            assert!(
                (1..=head + 1).contains(oldest),
                "{at}: oldest is within 1..=head+1"
            );
            check_state(state, &at);
        }
        ServerFrame::GroupUpdate { state, .. } => check_state(state, &at),
        ServerFrame::Records { records, .. } => {
            for record in records {
                check_record(record, &at);
            }
        }
        ServerFrame::Escalation { escalation } => check_summary(escalation, &at),
        ServerFrame::Escalations { escalations, .. } => {
            for summary in escalations {
                check_summary(summary, &at);
            }
        }
        ServerFrame::EscalationDetail { .. } => check_detail(&frame, &at),
        ServerFrame::SupportNotice { notice, .. } => assert!(
            NOTICES.contains(&notice.as_str()),
            "{at}: notice {notice:?}"
        ),
        ServerFrame::Dismissed { reason, .. } => assert!(
            ["removed", "declined", "session_ended"].contains(&reason.as_str()),
            "{at}: dismissed for {reason:?}"
        ),
        ServerFrame::Error {
            code,
            retry_after_ms,
            next_session_ms,
            ..
        } => {
            let waits = [
                ErrorCode::Muted,
                ErrorCode::SlowMode,
                ErrorCode::RateLimited,
            ];
            assert!(
                retry_after_ms.is_none() || waits.contains(code),
                "{at}: retry_after_ms with {code}"
            );
            assert!(
                next_session_ms.is_none() || *code == ErrorCode::Closed,
                "{at}: next_session_ms with {code}"
            );
        }
        _ => {}
    }
    (frame, at)
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
    assert_eq!(post.to, None, "a main-channel post");
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
    let table = field_table(&section("Error codes"), "code", "error codes");
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
// (c) Frame types, kinds and their tables

/// Every type has a level-3 heading of its own in `title`'s section, and every name
/// in those headings is a type.
fn assert_headings_match(title: &str, types: &BTreeSet<String>) {
    let named = level3_names(&section(title));
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
    // The summary table of the section lists them too, with the kind each carries.
    let rows = table_under(&section("Client frames"), "`type`", "client frame summary");
    for frame in every_client_frame() {
        let (ty, kind) = client_variant(&frame);
        let row = rows
            .iter()
            .find(|r| code_cell(&r[0]).as_deref() == Some(ty))
            .unwrap_or_else(|| panic!("client frame summary table lacks `{ty}`"));
        let documented = code_cell(&row[1]);
        assert_eq!(
            documented.as_deref(),
            kind.map(Kind::as_str),
            "summary table: the signed kind of `{ty}`"
        );
        assert!(
            kind.is_some() || row[1] == "none",
            "summary table: `{ty}` is not signed"
        );
    }
    assert_eq!(rows.len(), CLIENT_FRAME_TYPES.len(), "summary table rows");
}

#[test]
fn every_server_frame_type_has_a_heading() {
    assert_headings_match("Server frames", &server_types());
}

#[test]
fn every_signed_kind_is_in_the_kinds_table_with_its_fields() {
    let rows = table_under(&section("Kinds"), "kind", "kinds table");
    let mut seen = BTreeSet::new();
    for frame in every_client_frame() {
        let (ty, Some(kind)) = client_variant(&frame) else {
            continue;
        };
        let row = rows
            .iter()
            .find(|r| code_cell(&r[0]).as_deref() == Some(kind.as_str()))
            .unwrap_or_else(|| panic!("kinds table lacks `{}`", kind.as_str()));
        // One kind may be carried by several frames (`post` by `post` and
        // `line_post`): each is listed in the cell.
        assert!(
            backticked(&row[1]).contains(&ty),
            "kinds table: the frames that carry `{}` lack `{ty}`",
            kind.as_str()
        );
        let fields: BTreeSet<String> = backticked(&row[2]).into_iter().map(Into::into).collect();
        assert_same_fields(
            &fields,
            &keys(&full_payload(kind)),
            &format!("kinds table row `{}`", kind.as_str()),
        );
        seen.insert(kind.as_str());
    }
    // The kind no client frame carries: the hub signs it itself.
    {
        let kind = Kind::Admin;
        let row = rows
            .iter()
            .find(|r| code_cell(&r[0]).as_deref() == Some(kind.as_str()))
            .unwrap_or_else(|| panic!("kinds table lacks `{}`", kind.as_str()));
        assert!(
            row[1].starts_with("none"),
            "kinds table: no frame carries `{}`",
            kind.as_str()
        );
        let fields: BTreeSet<String> = backticked(&row[2]).into_iter().map(Into::into).collect();
        assert_same_fields(
            &fields,
            &keys(&full_payload(kind)),
            &format!("kinds table row `{}`", kind.as_str()),
        );
        seen.insert(kind.as_str());
    }
    assert_eq!(rows.len(), seen.len(), "kinds table rows that are no kind");
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

#[test]
fn client_frame_and_payload_field_tables_match_the_crate() {
    for frame in every_client_frame() {
        let (ty, kind) = client_variant(&frame);
        let lines = frame_section("Client frames", ty);
        let at = format!("client frame `{ty}`");
        assert_same_fields(&field_table(&lines, "field", &at), &keys(&frame), &at);
        if let Some(kind) = kind {
            let at = format!("payload of `{}`", kind.as_str());
            let documented = field_table(&lines, "payload field", &at);
            assert_same_fields(&documented, &keys(&full_payload(kind)), &at);
        }
    }
    let lines = frame_section("Client frames", "create_group");
    let at = "create_group schedule windows";
    assert_same_fields(
        &field_table(&lines, "window field", at),
        &keys(&full_window()),
        at,
    );
    let at = "create_group retention";
    assert_same_fields(
        &field_table(&lines, "retention field", at),
        &keys(&full_retention()),
        at,
    );
}

#[test]
fn server_frame_and_object_field_tables_match_the_crate() {
    for frame in every_server_frame() {
        let ty = server_variant(&frame);
        let lines = frame_section("Server frames", ty);
        let at = format!("server frame `{ty}`");
        assert_same_fields(&field_table(&lines, "field", &at), &keys(&frame), &at);
    }
    let note_fields: BTreeSet<String> = every_note().iter().flat_map(keys).collect();
    let objects: [(&str, BTreeSet<String>); 14] = [
        ("Limits", keys(&Limits::default())),
        ("GroupInfo", keys(&group_info())),
        ("MemberInfo", keys(&member_info())),
        ("GroupState", keys(&group_state())),
        ("Agreement", keys(&group_state().agreement)),
        ("Note", note_fields),
        ("Redaction", keys(&redaction())),
        ("RecordInfo", keys(&record_info())),
        ("Helpline", keys(&helpline())),
        ("RotaEntry", keys(&rota_entry())),
        ("EscalationSummary", keys(&escalation_summary())),
        ("EscalationCounts", keys(&escalation_counts())),
        ("EscalationStep", keys(&escalation_step())),
        ("ContextEvent", keys(&context_event())),
    ];
    for (name, fields) in objects {
        let at = format!("shared object `{name}`");
        let documented = field_table(&object_section(name), "field", &at);
        assert_same_fields(&documented, &fields, &at);
    }
    let at = "the envelope object";
    let documented = field_table(&section("The envelope object"), "field", at);
    assert_same_fields(&documented, &keys(&env(Kind::Post)), at);
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
    let frames: Vec<(ServerFrame, String)> = examples.iter().map(check_server_example).collect();
    // A redaction points at a `redact` control, by the same facilitator, naming the
    // message and the reason (§8.7): the examples show one, so it must be there.
    let events: Vec<(Channel, u64, &SignedEnvelope)> = frames
        .iter()
        .filter_map(|(frame, _)| match frame {
            ServerFrame::Event {
                channel,
                seq,
                env: Some(env),
                ..
            } => Some((*channel, *seq, env)),
            _ => None,
        })
        .collect();
    for (frame, at) in &frames {
        let ServerFrame::Event {
            seq,
            redacted: Some(redaction),
            ..
        } = frame
        else {
            continue;
        };
        let (_, _, control) = events
            .iter()
            .find(|(channel, s, _)| channel.is_main() && *s == redaction.control_seq)
            .unwrap_or_else(|| panic!("{at}: no example of main event {}", redaction.control_seq));
        assert_eq!(control.key, redaction.by, "{at}: redacted by another key");
        let payload: ControlPayload = control.payload_as().unwrap();
        assert_eq!(
            payload.action,
            ControlAction::Redact {
                seq: *seq,
                reason: redaction.reason.clone()
            },
            "{at}: the control at control_seq is not this redaction"
        );
    }
}

#[test]
fn payload_examples_parse_and_match_a_frame_example() {
    let frames: Vec<ClientFrame> = tagged("client-frame")
        .iter()
        .map(check_client_example)
        .collect();
    let shown: Vec<(Kind, String)> = frames
        .iter()
        .filter_map(client_env)
        .map(|(env, _)| (env.kind, env.payload.clone()))
        .collect();
    let mut kinds = BTreeSet::new();
    for block in blocks(SPEC) {
        let Some(kind) = block.info.iter().find_map(|w| w.strip_prefix("payload-")) else {
            continue;
        };
        let at = format!("payload example at PROTOCOL.md line {}", block.line);
        let kind: Kind = serde_json::from_value(Value::String(kind.into()))
            .unwrap_or_else(|_| panic!("{at}: {kind} is not a kind"));
        parse_payload(kind, &block.body).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(
            shown.contains(&(kind, block.body.clone())),
            "{at} is not the payload of any client-frame example"
        );
        kinds.insert(kind.as_str());
    }
    assert_eq!(kinds, client_kinds(), "kinds with a payload example");
}

// ---------------------------------------------------------------------------------
// (e) Groups: controls, notes, channels, standing

#[test]
fn every_control_action_is_in_the_table_and_the_example_block() {
    let by = someone();
    let all: Vec<(&str, ControlAction)> = every_control_action()
        .into_iter()
        .map(|a| (control_variant(&a, by).0, a))
        .collect();
    // The table: one row per action, with its fields and its channel.
    let rows = table_under(&section("Facilitator controls"), "`do`", "controls table");
    assert_eq!(rows.len(), all.len(), "controls table rows");
    for (name, action) in &all {
        let row = rows
            .iter()
            .find(|r| code_cell(&r[0]).as_deref() == Some(name))
            .unwrap_or_else(|| panic!("controls table lacks `{name}`"));
        let mut fields = keys(action);
        fields.remove("do");
        let documented: BTreeSet<String> =
            backticked(&row[1]).into_iter().map(Into::into).collect();
        assert_same_fields(&documented, &fields, &format!("control `{name}`"));
        let channel = match control_variant(action, by).1 {
            Channel::Main => "main",
            Channel::Staff => "staff",
            Channel::Pair(_) => "pair of the two",
        };
        assert_eq!(row[3], channel, "control `{name}`: channel column");
    }
    // The example block: every action once, each as the crate encodes it.
    let block = one("control-actions");
    let documented: Vec<Value> = serde_json::from_str(&block.body).unwrap();
    let mut names = BTreeSet::new();
    for value in documented {
        let action: ControlAction = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("control-actions: {value} does not decode: {e}"));
        assert_eq!(
            serde_json::to_value(&action).unwrap(),
            value,
            "control-actions: {value} does not re-encode to itself"
        );
        assert!(names.insert(action.name()), "{} twice", action.name());
    }
    let expected: BTreeSet<&str> = all.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected, "control-actions block");
}

#[test]
fn every_note_and_channel_has_an_event_example() {
    let mut channels = BTreeSet::new();
    let mut notes = BTreeSet::new();
    for block in tagged("server-frame") {
        let Ok(ServerFrame::Event { channel, note, .. }) = serde_json::from_str(&block.body) else {
            continue;
        };
        channels.insert(match channel {
            Channel::Main => "main",
            Channel::Staff => "staff",
            Channel::Pair(_) => "pair",
        });
        if let Some(note) = note {
            notes.insert(note_variant(&note).0);
        }
    }
    assert_eq!(channels, BTreeSet::from(["main", "staff", "pair"]));
    let all: BTreeSet<&str> = every_note().iter().map(|n| note_variant(n).0).collect();
    assert_eq!(notes, all, "notes with an event example");
    // The `note` row of the `Note` table names every note, by its wire tag.
    let rows = table_under(&object_section("Note"), "field", "Note");
    let row = rows
        .iter()
        .find(|r| r[0] == "`note`")
        .expect("the Note table has a `note` row");
    let documented: BTreeSet<&str> = backticked(&row[1])
        .into_iter()
        .map(|w| w.trim_matches('"'))
        .collect();
    for note in every_note() {
        let tag = serde_json::to_value(&note).unwrap()["note"].clone();
        assert_eq!(tag, note_variant(&note).0, "wire tag of {note:?}");
    }
    assert_eq!(documented, all, "notes named in the Note table");
}

#[test]
fn every_member_status_is_in_the_standing_table() {
    let lines = section("Standing, the room and the waiting room");
    let documented = field_table(&lines, "status", "standing table");
    let all: BTreeSet<String> = EVERY_STATUS
        .iter()
        .map(|s| {
            let wire = serde_json::to_value(s).unwrap();
            assert_eq!(wire, status_name(*s), "wire name of {s:?}");
            status_name(*s).to_string()
        })
        .collect();
    assert_same_fields(&documented, &all, "standing table");
}

// ---------------------------------------------------------------------------------
// (f) Escalation: steps, notices and the values of its enums

#[test]
fn every_escalation_action_is_in_the_table_and_the_example_block() {
    let all: Vec<(&str, EscalationAction)> = every_escalation_action()
        .into_iter()
        .map(|a| (escalation_action_variant(&a).0, a))
        .collect();
    let rows = table_under(&section("Supervisors' steps"), "`do`", "steps table");
    assert_eq!(rows.len(), all.len(), "steps table rows");
    for (name, action) in &all {
        assert_eq!(action.name(), *name, "wire name of {action:?}");
        let row = rows
            .iter()
            .find(|r| code_cell(&r[0]).as_deref() == Some(name))
            .unwrap_or_else(|| panic!("steps table lacks `{name}`"));
        let mut fields = keys(action);
        fields.remove("do");
        let documented: BTreeSet<String> =
            backticked(&row[1]).into_iter().map(Into::into).collect();
        assert_same_fields(&documented, &fields, &format!("escalation action `{name}`"));
    }
    let block = one("escalation-actions");
    let documented: Vec<Value> = serde_json::from_str(&block.body).unwrap();
    let mut names = BTreeSet::new();
    for value in documented {
        let action: EscalationAction = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("escalation-actions: {value} does not decode: {e}"));
        assert_eq!(
            serde_json::to_value(&action).unwrap(),
            value,
            "escalation-actions: {value} does not re-encode to itself"
        );
        assert!(names.insert(action.name()), "{} twice", action.name());
    }
    let expected: BTreeSet<&str> = all.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected, "escalation-actions block");
}

/// The quoted values listed in the type cell of `field`'s row of a field table.
fn listed_values(lines: &[&str], header: &str, field: &str, at: &str) -> BTreeSet<String> {
    let rows = table_under(lines, header, at);
    let row = rows
        .iter()
        .find(|r| code_cell(&r[0]).as_deref() == Some(field))
        .unwrap_or_else(|| panic!("{at}: no row for `{field}`"));
    backticked(&row[1])
        .into_iter()
        .map(|w| w.trim_matches('"').to_string())
        .collect()
}

#[test]
fn escalation_values_are_listed_where_they_are_used() {
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    let severities = [Severity::Concern, Severity::Urgent, Severity::Emergency];
    let consents = [Consent::Own, Consent::Given, Consent::ImminentRisk];
    let statuses = [
        EscalationStatus::Open,
        EscalationStatus::Acknowledged,
        EscalationStatus::Resolved,
    ];
    for severity in severities {
        assert_eq!(
            serde_json::to_value(severity).unwrap(),
            severity_name(severity)
        );
    }
    for consent in consents {
        assert_eq!(
            serde_json::to_value(consent).unwrap(),
            consent_name(consent)
        );
    }
    for status in statuses {
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            escalation_status_name(status)
        );
    }
    let severities = set(&severities.map(severity_name));
    let flag = frame_section("Client frames", "flag");
    let at = "flag payload";
    assert_eq!(
        listed_values(&flag, "payload field", "severity", at),
        severities
    );
    let consents = set(&consents.map(consent_name));
    assert_eq!(
        listed_values(&flag, "payload field", "consent", at),
        consents
    );
    let view = object_section("EscalationSummary");
    let at = "EscalationSummary";
    assert_eq!(listed_values(&view, "field", "severity", at), severities);
    assert_eq!(listed_values(&view, "field", "consent", at), consents);
    let statuses = set(&statuses.map(escalation_status_name));
    assert_eq!(listed_values(&view, "field", "status", at), statuses);
    // Steps and notices are strings in the crate: the lists the server uses.
    let steps = object_section("EscalationStep");
    let rows = table_under(&steps, "field", "EscalationStep");
    let row = rows
        .iter()
        .find(|r| r[0] == "`step`")
        .expect("a `step` row");
    let documented: BTreeSet<String> = backticked(&row[2]).into_iter().map(Into::into).collect();
    assert_eq!(documented, set(&STEPS), "EscalationStep.step values");
    let notices = field_table(&section("Who is told"), "`notice`", "notices table");
    assert_eq!(notices, set(&NOTICES), "support_notice values");
}

// ---------------------------------------------------------------------------------
// Limits and names

#[test]
fn limits_table_matches_limits_rs() {
    let expected: [(&str, u64); 11] = [
        ("max_frame_bytes", limits::MAX_FRAME_BYTES as u64),
        ("hard_frame_bytes", limits::HARD_FRAME_BYTES as u64),
        ("max_body_chars", limits::MAX_BODY_CHARS as u64),
        ("max_name_chars", limits::MAX_NAME_CHARS as u64),
        ("max_text_chars", limits::MAX_TEXT_CHARS as u64),
        ("max_title_chars", limits::MAX_TITLE_CHARS as u64),
        ("max_clock_skew_ms", limits::MAX_CLOCK_SKEW_MS),
        ("history_on_join", limits::HISTORY_ON_JOIN),
        ("joined_members_max", limits::JOINED_MEMBERS_MAX as u64),
        ("max_staff_listed", limits::MAX_STAFF_LISTED as u64),
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
    // A limit added to limits.rs must be added to the list above (and the table).
    let declared: BTreeSet<String> = LIMITS_RS
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_lowercase)
        .collect();
    let checked: BTreeSet<String> = expected.iter().map(|(n, _)| n.to_string()).collect();
    let unchecked: Vec<_> = declared.difference(&checked).collect();
    assert!(
        unchecked.is_empty(),
        "limits.rs constants not checked: {unchecked:?}"
    );
}

#[test]
fn reserved_role_words_are_listed_in_the_name_rules() {
    let text = section("Identifiers and names").join("\n");
    use peerhub_protocol::names::{RESERVED_NUMBERS, RESERVED_ROLE_WORDS, RESERVED_TITLE_WORDS};
    for word in RESERVED_ROLE_WORDS
        .iter()
        .chain(RESERVED_TITLE_WORDS)
        .chain(RESERVED_NUMBERS)
    {
        assert!(
            text.contains(&format!("`{word}`")),
            "reserved word `{word}` not listed"
        );
    }
}
