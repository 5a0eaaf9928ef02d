//! Criterion micro-benchmarks of the hub's per-message hot path, on the bytes the
//! hub handles for one post (see `peerhub_bench::sample`):
//!
//! - `verify/*` — building the signing bytes; `verify_strict` with a cached key
//!   (the hub's path) and with the key decoded each time; `verify_batch` per
//!   signature, to show where batching would pay.
//! - `decode/*` — parsing the client's `post` frame and its payload.
//! - `store/*` — appending the event record, and the hub's whole write set for one
//!   post (counter, event, group state), unflushed; a flush after one record.
//! - `fanout/*` — serialising the `event` frame once, and sharing its bytes with 30
//!   outboxes.
//!
//! Run: `cargo bench -p peerhub-bench --bench hot_path` (scripts/perf.sh runs it
//! with shorter times). Like the `peerhub` binary, the benches run on jemalloc.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::{Signature, VerifyingKey};
use peerhub_bench::identity::Identity;
use peerhub_bench::sample;
use peerhub_protocol::envelope::{decode_key, signing_bytes, Kind};
use peerhub_protocol::frame::{decode_client_frame, Channel};
use peerhub_protocol::payload::PostPayload;
use peerhub_protocol::ClientFrame;
use peerhub_server::store::Store;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The `peerhub` binary's allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn verify(c: &mut Criterion) {
    let (_, env) = sample::post_envelope(sample::DEFAULT_BODY_BYTES);
    let key = decode_key(&env.key).expect("key");
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));
    group.bench_function("signing_bytes", |b| {
        b.iter(|| signing_bytes(black_box(Kind::Post), black_box(&env.payload)))
    });
    group.bench_function("verify_strict_cached_key", |b| {
        b.iter(|| black_box(&env).verify_with(black_box(&key)))
    });
    group.bench_function("verify_strict_decode_key", |b| {
        b.iter(|| black_box(&env).verify())
    });
    for n in [8usize, 64] {
        // n signers, n posts: what a batch of one group's mailbox would hold.
        let signed: Vec<(Vec<u8>, Signature, VerifyingKey)> = (0..n)
            .map(|i| {
                let mut me = Identity::from_seed([i as u8 + 1; 32]);
                let env = me.post(&sample::group(), &sample::body(i as u32, 64), 1);
                (
                    signing_bytes(Kind::Post, &env.payload),
                    Signature::from_bytes(&env.sig.0),
                    decode_key(&env.key).expect("key"),
                )
            })
            .collect();
        let messages: Vec<&[u8]> = signed.iter().map(|s| s.0.as_slice()).collect();
        let signatures: Vec<Signature> = signed.iter().map(|s| s.1).collect();
        let keys: Vec<VerifyingKey> = signed.iter().map(|s| s.2).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("verify_batch", n), &n, |b, _| {
            b.iter(|| ed25519_dalek::verify_batch(&messages, &signatures, &keys))
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let (_, env) = sample::post_envelope(sample::DEFAULT_BODY_BYTES);
    let text = sample::post_frame(7, env);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("post_frame_and_payload", |b| {
        b.iter(|| {
            let frame = decode_client_frame(black_box(&text)).expect("frame");
            let ClientFrame::Post { env, .. } = frame else {
                unreachable!("a post")
            };
            env.payload_as::<PostPayload>().expect("payload")
        })
    });
    group.finish();
}

fn store(c: &mut Criterion) {
    let (_, env) = sample::post_envelope(sample::DEFAULT_BODY_BYTES);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let group_id = sample::group();
    let event = sample::stored_event(0, env.clone());
    let mut seq = 0u64;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_event_unflushed", |b| {
        b.iter_batched(
            || {
                seq += 1;
                let mut e = event.clone();
                e.seq = seq;
                e
            },
            |e| store.put_event(&group_id, &Channel::Main, &e).expect("put"),
            BatchSize::SmallInput,
        )
    });
    let mut state = peerhub_server::groups::room::initial_state(None);
    let signer = env.key;
    let other = peerhub_protocol::GroupId::parse("g1").expect("id");
    let mut seq2 = 0u64;
    group.bench_function("post_write_set_unflushed", |b| {
        b.iter_batched(
            || {
                seq2 += 1;
                let mut e = event.clone();
                e.seq = seq2;
                e
            },
            |e| {
                store.raise_counter(&signer, e.seq).expect("counter");
                store.put_event(&other, &Channel::Main, &e).expect("put");
                state.heads = vec![(Channel::Main, e.seq)];
                store.put_group_state(&other, &state).expect("state");
            },
            BatchSize::SmallInput,
        )
    });
    let third = peerhub_protocol::GroupId::parse("g2").expect("id");
    let mut seq3 = 0u64;
    group.bench_function("put_event_and_flush", |b| {
        b.iter_batched(
            || {
                seq3 += 1;
                let mut e = event.clone();
                e.seq = seq3;
                e
            },
            |e| {
                store.put_event(&third, &Channel::Main, &e).expect("put");
                store.flush().expect("flush");
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let (_, env) = sample::post_envelope(sample::DEFAULT_BODY_BYTES);
    let frame = sample::event_frame(1, env);
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(1));
    group.bench_function("event_frame_to_json", |b| {
        b.iter(|| Utf8Bytes::from(black_box(&frame).to_json()))
    });
    let bytes = Utf8Bytes::from(frame.to_json());
    group.throughput(Throughput::Elements(30));
    group.bench_function("share_bytes_30_outboxes", |b| {
        b.iter(|| {
            let shared: Vec<Utf8Bytes> = (0..30).map(|_| black_box(&bytes).clone()).collect();
            shared
        })
    });
    group.finish();
}

criterion_group!(hot_path, verify, decode, store, fanout);
criterion_main!(hot_path);
