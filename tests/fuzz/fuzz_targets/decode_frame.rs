//! Any bytes as a client frame: decoding, every payload parser, names and group ids
//! must answer with a value or an error code — never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerhub_protocol::frame::decode_client_frame;
use peerhub_protocol::payload::*;
use peerhub_protocol::{names, ClientFrame, GroupId, SignedEnvelope};

fn payloads(env: &SignedEnvelope) {
    let _ = env.payload_as::<AuthPayload>();
    let _ = env.payload_as::<RedeemPayload>();
    let _ = env.payload_as::<CreateGroupPayload>();
    let _ = env.payload_as::<JoinPayload>();
    let _ = env.payload_as::<PostPayload>();
    let _ = env.payload_as::<InvitePayload>();
    let _ = env.payload_as::<AgreePayload>();
    let _ = env.payload_as::<ControlPayload>();
    let _ = env.payload_as::<ReportPayload>();
    let _ = env.payload_as::<StepOutPayload>();
    let _ = env.payload_as::<RecordPayload>();
    let _ = env.payload_as::<FlagPayload>();
    let _ = env.payload_as::<EscalationActPayload>();
    let _ = env.payload_as::<RotaPayload>();
    let _ = env.verify();
    if let Ok(join) = env.payload_as::<JoinPayload>() {
        let _ = names::normalise_display_name(&join.name);
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = names::normalise_display_name(&text);
    let _ = GroupId::parse(&text);
    match decode_client_frame(&text) {
        Ok(frame) => {
            let _ = frame.to_json();
            match &frame {
                ClientFrame::Auth { env, .. }
                | ClientFrame::Redeem { env, .. }
                | ClientFrame::CreateGroup { env, .. }
                | ClientFrame::Join { env, .. }
                | ClientFrame::Post { env, .. }
                | ClientFrame::Invite { env, .. }
                | ClientFrame::Agree { env, .. }
                | ClientFrame::Control { env, .. }
                | ClientFrame::Report { env, .. }
                | ClientFrame::StepOut { env, .. }
                | ClientFrame::Record { env, .. }
                | ClientFrame::Flag { env, .. }
                | ClientFrame::Escalation { env, .. }
                | ClientFrame::SetRota { env, .. } => payloads(env),
                _ => {}
            }
        }
        Err(error) => {
            let _ = error.error.code();
        }
    }
});
