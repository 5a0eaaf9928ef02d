//! The server's admission of signed commands (the checks every command passes
//! before it runs: kind, key, strict signature, payload, group, time, replay), fed
//! with any frame. Signed as the worked example's key, so seeds built from valid
//! frames reach deep; mutations must be refused with a code, never panic.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use peerhub_protocol::envelope::Kind;
use peerhub_protocol::frame::decode_client_frame;
use peerhub_protocol::payload::*;
use peerhub_protocol::{ClientFrame, GroupId, PublicKey};
use peerhub_server::admission::{admit, ReplayGuard, Signer};
use peerhub_server::store::Store;

/// RFC 8032 test 1: the key of PROTOCOL.md's worked example.
const SEED: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];

struct World {
    _dir: tempfile::TempDir,
    guard: ReplayGuard,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("store");
        World { guard: ReplayGuard::new(store), _dir: dir }
    })
}

fn check(env: &peerhub_protocol::SignedEnvelope, kind: Kind, group: Option<&GroupId>) {
    let signing = SigningKey::from_bytes(&SEED);
    let verifying = signing.verifying_key();
    let key = PublicKey(verifying.to_bytes());
    let signer = Signer { key: &key, verifying: &verifying };
    // The worked example's time, so seeds are fresh.
    let now = 1_764_000_000_000;
    let guard = &world().guard;
    let result = match kind {
        Kind::Post => admit::<PostPayload>(guard, &signer, env, kind, group, now).map(|_| ()),
        Kind::Join => admit::<JoinPayload>(guard, &signer, env, kind, group, now).map(|_| ()),
        Kind::Control => admit::<ControlPayload>(guard, &signer, env, kind, group, now).map(|_| ()),
        Kind::Flag => admit::<FlagPayload>(guard, &signer, env, kind, group, now).map(|_| ()),
        Kind::Agree => admit::<AgreePayload>(guard, &signer, env, kind, group, now).map(|_| ()),
        Kind::Record => admit::<RecordPayload>(guard, &signer, env, kind, group, now).map(|_| ()),
        Kind::Escalation => admit::<EscalationActPayload>(guard, &signer, env, kind, None, now).map(|_| ()),
        Kind::Rota => admit::<RotaPayload>(guard, &signer, env, kind, None, now).map(|_| ()),
        _ => admit::<RedeemPayload>(guard, &signer, env, Kind::Redeem, None, now).map(|_| ()),
    };
    if let Err(error) = result {
        let _ = (error.code(), error.frame(None).to_json());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_client_frame(&String::from_utf8_lossy(data)) else { return };
    match &frame {
        ClientFrame::Post { group, env, .. } => check(env, Kind::Post, Some(group)),
        ClientFrame::Join { group, env, .. } => check(env, Kind::Join, Some(group)),
        ClientFrame::Control { group, env, .. } => check(env, Kind::Control, Some(group)),
        ClientFrame::Flag { group, env, .. } => check(env, Kind::Flag, Some(group)),
        ClientFrame::Agree { group, env, .. } => check(env, Kind::Agree, Some(group)),
        ClientFrame::Record { group, env, .. } => check(env, Kind::Record, Some(group)),
        ClientFrame::Escalation { env, .. } => check(env, Kind::Escalation, None),
        ClientFrame::SetRota { env, .. } => check(env, Kind::Rota, None),
        ClientFrame::Redeem { env, .. } => check(env, Kind::Redeem, None),
        _ => {}
    }
});
