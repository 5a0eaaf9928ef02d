//! The twelve edge cases of "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko,
//! SSR 2020; the ed25519-speccheck set, numbered 0–11), built here from curve points
//! over the hub's real signing bytes, and checked against the verification the server
//! runs (`SignedEnvelope::verify`, i.e. `decode_key` + ed25519-dalek `verify_strict`).
//!
//! No vector is copied from anywhere: every key, `R` and `S` below is constructed from
//! the published description of its case, with curve25519-dalek, and the construction
//! is asserted to have the property the case is about (so a wrong construction fails
//! loudly instead of passing vacuously).
//!
//! Notation: `B` the base point, `L` its prime order, `A` the key, `R ‖ S` the
//! signature, `k = SHA-512(R ‖ A ‖ M) mod L` with `M` our signing bytes. "small" = of
//! order dividing 8; "mixed" = a nonzero prime-order part plus a nonzero torsion part;
//! "prime" = in `<B>`, not the identity. Cofactorless: `[S]B = R + [k]A`. Cofactored:
//! `[8]([S]B - R - [k]A) = 0`.
//!
//! | # | S         | A      | R      | cof-ed | cof-less | expected     | why `verify_strict` answers so                              |
//! |---|-----------|--------|--------|--------|----------|--------------|-------------------------------------------------------------|
//! | 0 | 0         | small  | small  | holds  | holds    | bad_key      | A is small-order: `decode_key` refuses the weak key         |
//! | 1 | 0<S<L     | small  | mixed  | holds  | holds    | bad_key      | A is small-order (weak key)                                 |
//! | 2 | 0<S<L     | mixed  | small  | holds  | holds    | bad_signature| R is small-order                                            |
//! | 3 | 0<S<L     | mixed  | mixed  | holds  | holds    | ACCEPT       | no small point, S canonical, cofactorless equation exact    |
//! | 4 | 0<S<L     | mixed  | mixed  | holds  | fails    | bad_signature| only the cofactored equation holds                          |
//! | 5 | 0<S<L     | mixed  | prime  | holds* | fails    | bad_signature| only the cofactored equation holds (*fails if 8k pre-reduced)|
//! | 6 | L<=S<2^253| prime  | prime  | holds  | holds    | bad_signature| S >= L (non-canonical scalar, malleability)                 |
//! | 7 | S>=2^255  | prime  | prime  | holds  | holds    | bad_signature| S >= L (far out of range, top bit set)                      |
//! | 8 | 0<S<L     | mixed  | small~ | holds  | holds    | bad_signature| R small-order (and non-canonical); k over canonical R bytes |
//! | 9 | 0<S<L     | mixed  | small~ | holds  | holds    | bad_signature| R small-order (and non-canonical); k over R bytes as sent   |
//! |10 | 0<S<L     | small~ | mixed  | holds  | holds    | bad_key      | A small-order (weak key); k over canonical A bytes          |
//! |11 | 0<S<L     | small~ | mixed  | holds  | holds    | bad_key      | A small-order (weak key); k over A bytes as sent            |
//!
//! `~` = given with a non-canonical encoding. For 6 and 7 the equations hold with S
//! reduced mod L. For 8–11 they hold with the `k` the case names (the published
//! "reduced for hash" / "not reduced for hash" distinction).
//!
//! Notes against the published descriptions (README and generator of
//! ed25519-speccheck, read through the search tool; nothing copied):
//!
//! - 8/9 and 10/11 differ not by *which* non-canonical encoding is used but by what
//!   the hash is computed over: 8 and 10 hash the canonical re-encoding of the point,
//!   9 and 11 hash the non-canonical bytes as sent. The published vectors use one
//!   encoding each; we run every non-canonical encoding of a small-order point there is
//!   (six: `y >= p` with either sign, and `x = 0` with the sign bit set), except that
//!   10/11 need a non-identity `A` (a mixed `R` whose torsion cancels `[k]A` needs
//!   `[k]A != 0`), which leaves three encodings for them.
//! - 7: published as "S ≫ L, so large it cannot be serialised with a clear high bit";
//!   we build `S = s + nL` with the largest `n` that fits in 256 bits and assert bit
//!   255 is set. 6 is `S = s + L`, asserted to stay below 2^253 so that only a full
//!   comparison with `L` (not the legacy "top three bits clear" test) refuses it.
//! - Every case, including case 0's `S = 0`, is reproduced exactly over our messages:
//!   the relation a case needs between `k` and the torsion parts (e.g. `R = -[k]A`) is
//!   met by a deterministic search over the candidate torsion points and the payload's
//!   `counter`, so nothing needs a hash inversion.

#![allow(
    clippy::unwrap_used,
    reason = "tests may unwrap; allow-unwrap-in-tests does not reach helpers outside #[test] fns"
)]

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use peerhub_protocol::encoding::{PublicKey, SignatureBytes};
use peerhub_protocol::envelope::{decode_key, signing_bytes, Kind, SignedEnvelope};
use peerhub_protocol::payload::{PostPayload, ReportPayload};
use peerhub_protocol::{GroupId, ProtocolError};
use sha2::{Digest, Sha512};

// ---------------------------------------------------------------------------------
// The table

/// What the server answers an envelope with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accept,
    BadKey,
    BadSignature,
}

use Outcome::{Accept, BadKey, BadSignature};

/// Expected answer of `SignedEnvelope::verify` (and of `verify_strict`: accept or not)
/// for each case, with the reason.
const EXPECTED: [(Outcome, &str); 12] = [
    (
        BadKey,
        "0: A is small-order, a weak key refused by decode_key",
    ),
    (
        BadKey,
        "1: A is small-order, a weak key refused by decode_key",
    ),
    (
        BadSignature,
        "2: R is small-order, refused by verify_strict",
    ),
    (
        Accept,
        "3: no small point, S < L, cofactorless equation exact",
    ),
    (BadSignature, "4: only the cofactored equation holds"),
    (
        BadSignature,
        "5: only the (unreduced) cofactored equation holds",
    ),
    (BadSignature, "6: S >= L is a non-canonical scalar"),
    (BadSignature, "7: S >= 2^255, far above L"),
    (BadSignature, "8: R is small-order (non-canonical too)"),
    (BadSignature, "9: R is small-order (non-canonical too)"),
    (
        BadKey,
        "10: A is small-order (non-canonical too), a weak key",
    ),
    (
        BadKey,
        "11: A is small-order (non-canonical too), a weak key",
    ),
];

/// The range `S` is built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SRange {
    /// `S = 0`.
    Zero,
    /// `0 < S < L`.
    Canonical,
    /// `L <= S < 2^253`: passes the legacy "top three bits clear" test.
    AboveL,
    /// `S >= 2^255`.
    FarAboveL,
}

/// The order class of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Small,
    Mixed,
    Prime,
}

/// Which bytes of a non-canonically encoded point the case's `k` is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashOver {
    /// The bytes as sent (what RFC 8032 and dalek do).
    Sent,
    /// The canonical re-encoding of the decoded point.
    Canonical,
}

/// The published properties of a case, re-checked on the final bytes.
#[derive(Debug, Clone, Copy)]
struct Props {
    s: SRange,
    a: Order,
    r: Order,
    a_canonical: bool,
    r_canonical: bool,
    hash_over: HashOver,
    cofactored: bool,
    cofactorless: bool,
    /// `[8S]B = [8]R + [8k mod L]A`, when the case is about it.
    prereduced: Option<bool>,
}

const fn props(s: SRange, a: Order, r: Order, cofactored: bool, cofactorless: bool) -> Props {
    Props {
        s,
        a,
        r,
        a_canonical: true,
        r_canonical: true,
        hash_over: HashOver::Sent,
        cofactored,
        cofactorless,
        prereduced: None,
    }
}

const PROPS: [Props; 12] = {
    use Order::{Mixed, Prime, Small};
    use SRange::{AboveL, Canonical, FarAboveL, Zero};
    let mut p = [
        props(Zero, Small, Small, true, true),
        props(Canonical, Small, Mixed, true, true),
        props(Canonical, Mixed, Small, true, true),
        props(Canonical, Mixed, Mixed, true, true),
        props(Canonical, Mixed, Mixed, true, false),
        props(Canonical, Mixed, Prime, true, false),
        props(AboveL, Prime, Prime, true, true),
        props(FarAboveL, Prime, Prime, true, true),
        props(Canonical, Mixed, Small, true, true),
        props(Canonical, Mixed, Small, true, true),
        props(Canonical, Small, Mixed, true, true),
        props(Canonical, Small, Mixed, true, true),
    ];
    p[5].prereduced = Some(false);
    p[8].r_canonical = false;
    p[8].hash_over = HashOver::Canonical;
    p[9].r_canonical = false;
    p[10].a_canonical = false;
    p[10].hash_over = HashOver::Canonical;
    p[11].a_canonical = false;
    p
};

// ---------------------------------------------------------------------------------
// The messages: real signed payloads of the hub

/// Two message families, so that no construction is tied to one `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Post,
    Report,
}

const MESSAGES: [Message; 2] = [Message::Post, Message::Report];

impl Message {
    fn kind(self) -> Kind {
        match self {
            Self::Post => Kind::Post,
            Self::Report => Kind::Report,
        }
    }

    /// The payload JSON, varied only by its `counter`.
    fn payload(self, counter: u64) -> String {
        let group = GroupId::parse("taming-eddsa").unwrap();
        let ts = 1_760_000_000_000;
        match self {
            Self::Post => serde_json::to_string(&PostPayload {
                group,
                body: "hello from the edge of the curve".into(),
                to: None,
                counter,
                ts,
            }),
            Self::Report => serde_json::to_string(&ReportPayload {
                group,
                seq: 7,
                reason: "small-order points".into(),
                counter,
                ts,
            }),
        }
        .unwrap()
    }

    /// The exact bytes the signature covers.
    fn bytes(self, counter: u64) -> Vec<u8> {
        signing_bytes(self.kind(), &self.payload(counter))
    }

    /// Checks the payload is one the hub parses as its kind.
    fn assert_real(self, payload: &str) {
        let env = SignedEnvelope {
            kind: self.kind(),
            key: PublicKey([0; 32]),
            payload: payload.to_string(),
            sig: SignatureBytes([0; 64]),
        };
        match self {
            Self::Post => drop(env.payload_as::<PostPayload>().unwrap()),
            Self::Report => drop(env.payload_as::<ReportPayload>().unwrap()),
        }
    }
}

// ---------------------------------------------------------------------------------
// Curve arithmetic helpers

fn identity() -> EdwardsPoint {
    EdwardsPoint::identity()
}

fn base() -> EdwardsPoint {
    ED25519_BASEPOINT_POINT
}

fn scalar(n: u64) -> Scalar {
    Scalar::from(n)
}

fn wide(digest: &[u8]) -> Scalar {
    let mut w = [0u8; 64];
    w.copy_from_slice(digest);
    Scalar::from_bytes_mod_order_wide(&w)
}

/// A fixed secret scalar, derived from a label.
fn secret(label: &str) -> Scalar {
    let s = wide(&Sha512::digest(label.as_bytes()));
    assert_ne!(s, Scalar::ZERO);
    s
}

/// `k = SHA-512(R ‖ A ‖ M) mod L`.
fn challenge(r: &[u8; 32], a: &[u8; 32], msg: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(msg);
    wide(&h.finalize())
}

fn decompress(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    CompressedEdwardsY(*bytes).decompress()
}

/// `[L]P`, as `[L-1]P + P` (a `Scalar` cannot hold `L` itself).
fn times_l(p: &EdwardsPoint) -> EdwardsPoint {
    p * (-Scalar::ONE) + p
}

/// The torsion component of `P`: `[5L]P`, since `5L ≡ 1 (mod 8)` and `5L ≡ 0 (mod L)`.
fn torsion_part(p: &EdwardsPoint) -> EdwardsPoint {
    times_l(p) * scalar(5)
}

/// The order of a small-order point (1, 2, 4 or 8); panics on any other point.
fn small_order(p: &EdwardsPoint) -> u64 {
    let mut q = *p;
    for n in 1..=8 {
        if q == identity() {
            return n;
        }
        q += p;
    }
    panic!("not a small-order point: {:?}", p.compress());
}

fn order_class(p: &EdwardsPoint) -> Order {
    if p.is_small_order() {
        Order::Small
    } else if p.is_torsion_free() {
        Order::Prime
    } else {
        Order::Mixed
    }
}

/// `[S]B = R + [k]A`.
fn cofactorless(a: &EdwardsPoint, r: &EdwardsPoint, s: &Scalar, k: &Scalar) -> bool {
    EdwardsPoint::mul_base(s) == r + a * k
}

/// `[8]([S]B - R - [k]A) = 0`.
fn cofactored(a: &EdwardsPoint, r: &EdwardsPoint, s: &Scalar, k: &Scalar) -> bool {
    (EdwardsPoint::mul_base(s) - r - a * k).mul_by_cofactor() == identity()
}

/// The faulty cofactored check: `[8S mod L]B = [8]R + [8k mod L]A`.
fn prereduced_cofactored(a: &EdwardsPoint, r: &EdwardsPoint, s: &Scalar, k: &Scalar) -> bool {
    let eight = scalar(8);
    EdwardsPoint::mul_base(&(s * eight)) == r.mul_by_cofactor() + a * (k * eight)
}

// 256-bit little-endian integers, for S outside the scalar field and for field elements.

fn add_le(x: &[u8; 32], y: &[u8; 32]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(x[i]) + u16::from(y[i]) + carry;
        out[i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    (carry == 0).then_some(out)
}

fn ge_le(x: &[u8; 32], y: &[u8; 32]) -> bool {
    x.iter().rev().cmp(y.iter().rev()) != std::cmp::Ordering::Less
}

fn one_le() -> [u8; 32] {
    let mut one = [0u8; 32];
    one[0] = 1;
    one
}

/// `L`, as the canonical encoding of `-1` plus one.
fn group_order() -> [u8; 32] {
    add_le(&(-Scalar::ONE).to_bytes(), &one_le()).unwrap()
}

/// `2^255 - n`, for `1 <= n <= 256`.
fn two_255_minus(n: u16) -> [u8; 32] {
    assert!((1..=256).contains(&n));
    let mut out = [0xff; 32];
    out[31] = 0x7f;
    out[0] = u8::try_from(0xff - (n - 1)).unwrap();
    out
}

/// The field prime `p = 2^255 - 19`.
fn field_prime() -> [u8; 32] {
    two_255_minus(19)
}

/// The eight torsion points `[i]T` for `i` in `0..8`, `T` of order 8, found as the
/// torsion part of the first decodable small `y`.
fn torsion_points() -> Vec<EdwardsPoint> {
    for y in 2u8..=255 {
        let mut enc = [0u8; 32];
        enc[0] = y;
        let Some(p) = decompress(&enc) else { continue };
        let t = torsion_part(&p);
        if small_order(&t) == 8 {
            return (0..8).map(|i| t * scalar(i)).collect();
        }
    }
    panic!("no point with an order-8 torsion part among small y");
}

/// A non-canonical encoding of a small-order point.
#[derive(Debug, Clone, Copy)]
struct NonCanonical {
    enc: [u8; 32],
    what: &'static str,
}

/// Every non-canonical encoding of a small-order point: `y >= p` (either sign bit) and
/// `x = 0` with the sign bit set, found by enumeration rather than listed.
fn non_canonical_small_encodings() -> Vec<NonCanonical> {
    let p = field_prime();
    let mut found = Vec::new();
    // y in [p, 2^255): y = 2^255 - n for n in 1..=19.
    for n in 1..=19u16 {
        for sign in [false, true] {
            let mut enc = two_255_minus(n);
            if sign {
                enc[31] |= 0x80;
            }
            if let Some(pt) = decompress(&enc) {
                if pt.is_small_order() {
                    let what = match (n, sign) {
                        (19, false) => "y = p (0)",
                        (19, true) => "y = p (0), sign set",
                        (18, false) => "y = p+1 (1)",
                        (18, true) => "y = p+1 (1), sign set",
                        _ => panic!("y = 2^255 - {n} decodes to a small-order point"),
                    };
                    found.push(NonCanonical { enc, what });
                }
            }
        }
    }
    // x = 0 happens for y = 1 and y = p - 1 (the identity and (0, -1)).
    for (y, what) in [
        (one_le(), "y = 1, x = 0, sign set"),
        (two_255_minus(20), "y = p-1, x = 0, sign set"),
    ] {
        let mut enc = y;
        enc[31] |= 0x80;
        found.push(NonCanonical { enc, what });
    }
    for nc in &found {
        let pt = decompress(&nc.enc).expect("non-canonical encoding decodes");
        assert!(pt.is_small_order(), "{nc:?}");
        assert_ne!(pt.compress().0, nc.enc, "{nc:?} is canonical");
        let mut y = nc.enc;
        y[31] &= 0x7f;
        let sign = nc.enc[31] & 0x80 != 0;
        assert!(
            ge_le(&y, &p) || (sign && pt == -pt),
            "{nc:?} is neither y >= p nor x = 0 with the sign set"
        );
    }
    assert_eq!(found.len(), 6, "six non-canonical small-order encodings");
    found
}

// ---------------------------------------------------------------------------------
// Building the cases

struct Curve {
    /// `[i]T`, `T` of order 8.
    t: Vec<EdwardsPoint>,
    /// Prime-order part of a mixed `A`: `[a]B`.
    a: Scalar,
    /// Prime-order part of `R`: `[r]B`.
    r: Scalar,
}

fn curve() -> Curve {
    Curve {
        t: torsion_points(),
        a: secret("peerhub eddsa edge cases: a"),
        r: secret("peerhub eddsa edge cases: r"),
    }
}

/// One built case: what goes in the envelope.
#[derive(Debug, Clone)]
struct Built {
    case: usize,
    variant: &'static str,
    message: Message,
    counter: u64,
    key: [u8; 32],
    sig: [u8; 64],
}

impl Built {
    fn new(
        case: usize,
        message: Message,
        counter: u64,
        key: [u8; 32],
        r: [u8; 32],
        s: [u8; 32],
    ) -> Self {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice(&s);
        Self {
            case,
            variant: "",
            message,
            counter,
            key,
            sig,
        }
    }

    fn r(&self) -> [u8; 32] {
        self.sig[..32].try_into().unwrap()
    }

    fn s(&self) -> [u8; 32] {
        self.sig[32..].try_into().unwrap()
    }

    fn msg(&self) -> Vec<u8> {
        self.message.bytes(self.counter)
    }

    fn envelope(&self) -> SignedEnvelope {
        SignedEnvelope {
            kind: self.message.kind(),
            key: PublicKey(self.key),
            payload: self.message.payload(self.counter),
            sig: SignatureBytes(self.sig),
        }
    }
}

const MAX_COUNTER: u64 = 4096;

/// The first payload counter (from 1, so the search is deterministic) whose signing
/// bytes let `attempt` find what a case needs.
fn search_msg<T>(m: Message, what: &str, mut attempt: impl FnMut(&[u8]) -> Option<T>) -> (u64, T) {
    (1..=MAX_COUNTER)
        .find_map(|counter| attempt(&m.bytes(counter)).map(|t| (counter, t)))
        .unwrap_or_else(|| panic!("no counter up to {MAX_COUNTER} gives {what} over {m:?}"))
}

/// Case 0: `S = 0`, `A` small (order 8), `R` small, `R = -[k]A` so that both
/// equations hold. `R` is searched among the seven non-identity torsion points.
fn case_0(c: &Curve, m: Message) -> Built {
    let a = c.t[1];
    let a_enc = a.compress().0;
    let (counter, r) = search_msg(m, "R = -[k]A with S = 0", |msg| {
        c.t[1..].iter().copied().find(|r| {
            let k = challenge(&r.compress().0, &a_enc, msg);
            *r == -(a * k)
        })
    });
    assert_eq!(small_order(&a), 8);
    assert_ne!(r, identity(), "R is a non-trivial small point");
    Built::new(0, m, counter, a_enc, r.compress().0, [0; 32])
}

/// Case 1: `A` small (order 8), `R = [r]B + t` mixed with `t = -[k]A`, `S = r`.
fn case_1(c: &Curve, m: Message) -> Built {
    let a = c.t[1];
    let a_enc = a.compress().0;
    let r_prime = EdwardsPoint::mul_base(&c.r);
    let (counter, r) = search_msg(m, "torsion of R = -[k]A", |msg| {
        c.t[1..].iter().find_map(|t| {
            let r = r_prime + t;
            let k = challenge(&r.compress().0, &a_enc, msg);
            (*t == -(a * k)).then_some(r)
        })
    });
    assert_ne!(torsion_part(&r), identity());
    Built::new(1, m, counter, a_enc, r.compress().0, c.r.to_bytes())
}

/// `A = [a]B + T`, mixed with an order-8 torsion part.
fn mixed_key(c: &Curve) -> (EdwardsPoint, [u8; 32]) {
    let a = EdwardsPoint::mul_base(&c.a) + c.t[1];
    assert_eq!(torsion_part(&a), c.t[1]);
    assert_eq!(a - torsion_part(&a), EdwardsPoint::mul_base(&c.a));
    (a, a.compress().0)
}

/// Case 2: `A = [a]B + T` mixed, `R = -[k]T` small and not the identity, `S = ka`.
fn case_2(c: &Curve, m: Message) -> Built {
    let (_, a_enc) = mixed_key(c);
    let (counter, (r, k)) = search_msg(m, "small R = -[k]T", |msg| {
        c.t[1..].iter().find_map(|r| {
            let k = challenge(&r.compress().0, &a_enc, msg);
            (*r == -(c.t[1] * k)).then_some((*r, k))
        })
    });
    Built::new(2, m, counter, a_enc, r.compress().0, (k * c.a).to_bytes())
}

/// Cases 3 and 4: `A = [a]B + T`, `R = [r]B + t` both mixed, `S = r + ka`. Case 3
/// searches `t = -[k]T` (both equations hold); case 4 takes the first `t != -[k]T`
/// (only the cofactored one does).
fn case_mixed_mixed(c: &Curve, m: Message, cofactorless_holds: bool) -> Built {
    let (_, a_enc) = mixed_key(c);
    let r_prime = EdwardsPoint::mul_base(&c.r);
    let (counter, (r, k)) = search_msg(m, "the torsion relation of case 3/4", |msg| {
        c.t[1..].iter().find_map(|t| {
            let r = r_prime + t;
            let k = challenge(&r.compress().0, &a_enc, msg);
            ((*t == -(c.t[1] * k)) == cofactorless_holds).then_some((r, k))
        })
    });
    let case = if cofactorless_holds { 3 } else { 4 };
    Built::new(
        case,
        m,
        counter,
        a_enc,
        r.compress().0,
        (c.r + k * c.a).to_bytes(),
    )
}

/// Case 5: `A = [a]B + T` mixed, `R = [r]B` prime, `S = r + ka`, with `[k]T != 0` (so
/// the cofactorless equation fails) and `8k >= L` (so that `[8k mod L]A` keeps a
/// torsion part and the pre-reduced cofactored check fails).
fn case_5(c: &Curve, m: Message) -> Built {
    let (a, a_enc) = mixed_key(c);
    let r = EdwardsPoint::mul_base(&c.r);
    let r_enc = r.compress().0;
    let (counter, k) = search_msg(m, "[k]T != 0 and 8k >= L", |msg| {
        let k = challenge(&r_enc, &a_enc, msg);
        let s = c.r + k * c.a;
        (c.t[1] * k != identity() && !prereduced_cofactored(&a, &r, &s, &k)).then_some(k)
    });
    Built::new(5, m, counter, a_enc, r_enc, (c.r + k * c.a).to_bytes())
}

/// Cases 6 and 7: an ordinary signature by a real key (prime-order `A` and `R`), with
/// `S` replaced by `s + L` (6) or `s + nL` for the largest `n` that fits in 256 bits (7).
fn case_big_s(m: Message, far: bool) -> Built {
    let signer = SigningKey::from_bytes(&[0x42; 32]);
    let counter = 1;
    let sig = signer.sign(&m.bytes(counter)).to_bytes();
    let r: [u8; 32] = sig[..32].try_into().unwrap();
    let s: [u8; 32] = sig[32..].try_into().unwrap();
    let l = group_order();
    let mut big = add_le(&s, &l).unwrap();
    if far {
        while let Some(next) = add_le(&big, &l) {
            big = next;
        }
    }
    let case = if far { 7 } else { 6 };
    Built::new(case, m, counter, signer.verifying_key().to_bytes(), r, big)
}

/// Cases 8 and 9: `A = [a]B + T` mixed, `R` a small point sent with the non-canonical
/// encoding `nc`, `R = -[k]T`, `S = ka`, where `k` hashes the canonical re-encoding of
/// `R` (8) or the bytes as sent (9).
fn case_nc_r(c: &Curve, m: Message, nc: NonCanonical, hash_over: HashOver) -> Built {
    let (_, a_enc) = mixed_key(c);
    let r = decompress(&nc.enc).unwrap();
    let hashed = match hash_over {
        HashOver::Canonical => r.compress().0,
        HashOver::Sent => nc.enc,
    };
    let (counter, k) = search_msg(m, "small R = -[k]T", |msg| {
        let k = challenge(&hashed, &a_enc, msg);
        (r == -(c.t[1] * k)).then_some(k)
    });
    let case = if hash_over == HashOver::Canonical {
        8
    } else {
        9
    };
    let mut built = Built::new(case, m, counter, a_enc, nc.enc, (k * c.a).to_bytes());
    built.variant = nc.what;
    built
}

/// Cases 10 and 11: `A` a small, non-identity point sent with the non-canonical
/// encoding `nc`, `R = [r]B + t` mixed with `t = -[k]A`, `S = r`, where `k` hashes the
/// canonical re-encoding of `A` (10) or the bytes as sent (11).
fn case_nc_a(c: &Curve, m: Message, nc: NonCanonical, hash_over: HashOver) -> Built {
    let a = decompress(&nc.enc).unwrap();
    assert_ne!(a, identity(), "a mixed R cannot cancel [k]A = 0");
    let hashed = match hash_over {
        HashOver::Canonical => a.compress().0,
        HashOver::Sent => nc.enc,
    };
    let r_prime = EdwardsPoint::mul_base(&c.r);
    let (counter, r) = search_msg(m, "torsion of R = -[k]A", |msg| {
        c.t[1..].iter().find_map(|t| {
            let r = r_prime + t;
            let k = challenge(&r.compress().0, &hashed, msg);
            (*t == -(a * k)).then_some(r)
        })
    });
    let case = if hash_over == HashOver::Canonical {
        10
    } else {
        11
    };
    let mut built = Built::new(case, m, counter, nc.enc, r.compress().0, c.r.to_bytes());
    built.variant = nc.what;
    built
}

/// Every variant of `case` over message family `m`.
fn build(c: &Curve, case: usize, m: Message) -> Vec<Built> {
    let non_canonical = non_canonical_small_encodings;
    match case {
        0 => vec![case_0(c, m)],
        1 => vec![case_1(c, m)],
        2 => vec![case_2(c, m)],
        3 => vec![case_mixed_mixed(c, m, true)],
        4 => vec![case_mixed_mixed(c, m, false)],
        5 => vec![case_5(c, m)],
        6 => vec![case_big_s(m, false)],
        7 => vec![case_big_s(m, true)],
        8 | 9 => {
            let over = if case == 8 {
                HashOver::Canonical
            } else {
                HashOver::Sent
            };
            non_canonical()
                .into_iter()
                .map(|nc| case_nc_r(c, m, nc, over))
                .collect()
        }
        10 | 11 => {
            let over = if case == 10 {
                HashOver::Canonical
            } else {
                HashOver::Sent
            };
            let usable: Vec<_> = non_canonical()
                .into_iter()
                .filter(|nc| decompress(&nc.enc).unwrap() != identity())
                .collect();
            assert_eq!(usable.len(), 3);
            usable
                .into_iter()
                .map(|nc| case_nc_a(c, m, nc, over))
                .collect()
        }
        _ => unreachable!("cases are 0..12"),
    }
}

// ---------------------------------------------------------------------------------
// Checking

/// Re-derives, from the final bytes only, every property the case claims.
fn assert_props(b: &Built) {
    let p = PROPS[b.case];
    let ctx = format!("case {} {} over {:?}", b.case, b.variant, b.message);
    b.message.assert_real(&b.message.payload(b.counter));
    let (r_enc, s_enc, a_enc) = (b.r(), b.s(), b.key);
    let a = decompress(&a_enc).unwrap_or_else(|| panic!("{ctx}: A decodes"));
    let r = decompress(&r_enc).unwrap_or_else(|| panic!("{ctx}: R decodes"));

    assert_eq!(order_class(&a), p.a, "{ctx}: order of A");
    assert_eq!(order_class(&r), p.r, "{ctx}: order of R");
    for (pt, class, what) in [(a, p.a, "A"), (r, p.r, "R")] {
        let tors = torsion_part(&pt);
        match class {
            Order::Small => {
                assert_eq!(tors, pt, "{ctx}: {what} is all torsion");
                assert!(small_order(&pt) <= 8);
            }
            Order::Mixed => {
                assert_ne!(tors, identity(), "{ctx}: {what} has a torsion part");
                assert_ne!(pt - tors, identity(), "{ctx}: {what} has a prime part");
            }
            Order::Prime => {
                assert_eq!(tors, identity(), "{ctx}: {what} is torsion-free");
                assert_ne!(pt, identity(), "{ctx}: {what} is not the identity");
            }
        }
    }
    assert_eq!(a.compress().0 == a_enc, p.a_canonical, "{ctx}: canonical A");
    assert_eq!(r.compress().0 == r_enc, p.r_canonical, "{ctx}: canonical R");

    let l = group_order();
    let canonical_s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_enc));
    match p.s {
        SRange::Zero => assert_eq!(s_enc, [0; 32], "{ctx}: S = 0"),
        SRange::Canonical => {
            assert!(canonical_s.is_some(), "{ctx}: S < L");
            assert_ne!(s_enc, [0; 32], "{ctx}: S > 0");
        }
        SRange::AboveL => {
            assert!(canonical_s.is_none() && ge_le(&s_enc, &l), "{ctx}: S >= L");
            assert_eq!(s_enc[31] & 0xe0, 0, "{ctx}: S < 2^253");
        }
        SRange::FarAboveL => {
            assert!(canonical_s.is_none(), "{ctx}: S >= L");
            assert_ne!(s_enc[31] & 0x80, 0, "{ctx}: S >= 2^255");
        }
    }
    let s = Scalar::from_bytes_mod_order(s_enc);

    let msg = b.msg();
    let k = match p.hash_over {
        HashOver::Sent => challenge(&r_enc, &a_enc, &msg),
        HashOver::Canonical => challenge(&r.compress().0, &a.compress().0, &msg),
    };
    assert_eq!(
        cofactored(&a, &r, &s, &k),
        p.cofactored,
        "{ctx}: cofactored"
    );
    assert_eq!(
        cofactorless(&a, &r, &s, &k),
        p.cofactorless,
        "{ctx}: cofactorless"
    );
    if let Some(pre) = p.prereduced {
        assert_eq!(
            prereduced_cofactored(&a, &r, &s, &k),
            pre,
            "{ctx}: pre-reduced cofactored"
        );
    }
}

/// PROTOCOL.md §4.4, re-implemented on curve25519-dalek from the text.
fn strict_rules(key: &[u8; 32], sig: &[u8; 64], msg: &[u8]) -> Outcome {
    let Some(a) = decompress(key) else {
        return BadKey;
    };
    if a.is_small_order() {
        return BadKey;
    }
    let s_enc: [u8; 32] = sig[32..].try_into().unwrap();
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_enc)) else {
        return BadSignature;
    };
    let r_enc: [u8; 32] = sig[..32].try_into().unwrap();
    match decompress(&r_enc) {
        Some(r) if !r.is_small_order() => {}
        _ => return BadSignature,
    }
    let k = challenge(&r_enc, key, msg);
    if (EdwardsPoint::mul_base(&s) - a * k).compress().0 == r_enc {
        Accept
    } else {
        BadSignature
    }
}

/// What the server answers.
fn envelope_outcome(env: &SignedEnvelope) -> Outcome {
    match env.verify() {
        Ok(_) => Accept,
        Err(ProtocolError::BadKey) => BadKey,
        Err(ProtocolError::BadSignature) => BadSignature,
        Err(other) => panic!("verify answered {other:?}"),
    }
}

/// `verify_strict` called directly; every constructed key decodes to a point.
fn direct_verify_strict(b: &Built) -> bool {
    let key = VerifyingKey::from_bytes(&b.key).expect("every constructed key decodes");
    key.verify_strict(&b.msg(), &Signature::from_bytes(&b.sig))
        .is_ok()
}

/// Checks one built case end to end and returns the observed outcome.
fn check(b: &Built) -> Outcome {
    assert_props(b);
    let (expected, why) = EXPECTED[b.case];
    let ctx = format!("case {} {} over {:?} ({why})", b.case, b.variant, b.message);
    let env = b.envelope();
    let observed = envelope_outcome(&env);
    assert_eq!(observed, expected, "{ctx}: SignedEnvelope::verify");
    assert_eq!(
        direct_verify_strict(b),
        expected == Accept,
        "{ctx}: verify_strict"
    );
    assert_eq!(
        strict_rules(&b.key, &b.sig, &b.msg()),
        expected,
        "{ctx}: PROTOCOL.md §4.4 rules"
    );
    let decoded = decode_key(&PublicKey(b.key));
    match expected {
        BadKey => assert_eq!(decoded.err(), Some(ProtocolError::BadKey), "{ctx}"),
        _ => {
            let key = decoded.unwrap_or_else(|e| panic!("{ctx}: decode_key: {e:?}"));
            let strict = env.verify_with(&key);
            assert_eq!(strict.is_ok(), expected == Accept, "{ctx}: verify_with");
        }
    }
    observed
}

/// Builds and checks `case` over both message families, and checks the two runs
/// really used different messages (so different `k`).
fn run_case(case: usize) {
    let c = curve();
    let mut challenges = Vec::new();
    for m in MESSAGES {
        let built = build(&c, case, m);
        assert!(!built.is_empty());
        for b in &built {
            check(b);
            challenges.push((b.variant, b.msg()));
        }
    }
    let per_message = challenges.len() / 2;
    for i in 0..per_message {
        assert_ne!(challenges[i].1, challenges[i + per_message].1);
    }
}

#[test]
fn case_00_s_zero_small_a_small_r() {
    run_case(0);
}

#[test]
fn case_01_small_a_mixed_r() {
    run_case(1);
}

#[test]
fn case_02_mixed_a_small_r() {
    run_case(2);
}

#[test]
fn case_03_mixed_a_mixed_r_cofactorless_holds() {
    run_case(3);
}

#[test]
fn case_04_mixed_a_mixed_r_only_cofactored_holds() {
    run_case(4);
}

#[test]
fn case_05_mixed_a_prime_r_fails_if_8k_prereduced() {
    run_case(5);
}

#[test]
fn case_06_s_above_l() {
    run_case(6);
}

#[test]
fn case_07_s_far_above_l() {
    run_case(7);
}

#[test]
fn case_08_non_canonical_small_r_hashed_canonically() {
    run_case(8);
}

#[test]
fn case_09_non_canonical_small_r_hashed_as_sent() {
    run_case(9);
}

#[test]
fn case_10_non_canonical_small_a_hashed_canonically() {
    run_case(10);
}

#[test]
fn case_11_non_canonical_small_a_hashed_as_sent() {
    run_case(11);
}

/// Prints the expected/observed table (`cargo test -- --nocapture` to see it).
#[test]
fn table_of_outcomes() {
    let c = curve();
    println!("case | variant                  | message | counter | expected     | observed");
    for (case, (expected, _)) in EXPECTED.iter().enumerate() {
        for m in MESSAGES {
            for b in build(&c, case, m) {
                let observed = check(&b);
                println!(
                    "{:>4} | {:<24} | {:<7} | {:>7} | {:<12} | {:?}",
                    case,
                    b.variant,
                    format!("{m:?}"),
                    b.counter,
                    format!("{expected:?}"),
                    observed
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The checker can fail

/// An ordinary signature verifies, and flipping any one of its 512 bits (or one bit of
/// the key) is refused, by the envelope, by `verify_strict` and by the rules.
#[test]
fn ordinary_signature_verifies_and_every_bit_flip_is_refused() {
    let signer = SigningKey::from_bytes(&[7; 32]);
    let m = Message::Post;
    let env = SignedEnvelope::sign(&signer, m.kind(), m.payload(1));
    let good = Built::new(
        3,
        m,
        1,
        env.key.0,
        env.sig.0[..32].try_into().unwrap(),
        env.sig.0[32..].try_into().unwrap(),
    );
    assert_eq!(envelope_outcome(&good.envelope()), Accept);
    assert!(direct_verify_strict(&good));
    assert_eq!(strict_rules(&good.key, &good.sig, &good.msg()), Accept);
    for bit in 0..512 {
        let mut bad = good.clone();
        bad.sig[bit / 8] ^= 1 << (bit % 8);
        assert_ne!(envelope_outcome(&bad.envelope()), Accept, "sig bit {bit}");
        assert!(!direct_verify_strict(&bad), "sig bit {bit}");
        assert_ne!(strict_rules(&bad.key, &bad.sig, &bad.msg()), Accept);
    }
    let mut other_key = good.clone();
    other_key.key[0] ^= 1;
    assert_ne!(envelope_outcome(&other_key.envelope()), Accept);
}

/// Case 3 is accepted only because of its construction: `S ± 1`, another kind, a
/// shifted torsion part or a torsion-free key are refused, and across every choice of
/// `R`'s torsion part and many payloads, acceptance is exactly the relation
/// `t_R = -[k]t_A`.
#[test]
fn case_3_acceptance_depends_on_its_construction() {
    let c = curve();
    for m in MESSAGES {
        let [case3] = build(&c, 3, m).try_into().unwrap();
        assert_eq!(check(&case3), Accept);
        let s = Scalar::from_canonical_bytes(case3.s()).unwrap();
        for tweak in [s + Scalar::ONE, s - Scalar::ONE] {
            let mut bad = case3.clone();
            bad.sig[32..].copy_from_slice(&tweak.to_bytes());
            assert_eq!(envelope_outcome(&bad.envelope()), BadSignature);
            assert!(!direct_verify_strict(&bad));
            let a = decompress(&bad.key).unwrap();
            let r = decompress(&bad.r()).unwrap();
            let k = challenge(&bad.r(), &bad.key, &bad.msg());
            assert!(!cofactorless(&a, &r, &tweak, &k));
            assert!(!cofactored(&a, &r, &tweak, &k));
        }
        // The same signature under another kind.
        let mut env = case3.envelope();
        env.kind = Kind::Join;
        assert_eq!(env.verify(), Err(ProtocolError::BadSignature));
        // R's torsion part moved by T: the cofactored equation still holds, the strict
        // one does not.
        let mut shifted = case3.clone();
        let r = decompress(&case3.r()).unwrap() + c.t[1];
        shifted.sig[..32].copy_from_slice(&r.compress().0);
        assert_eq!(envelope_outcome(&shifted.envelope()), BadSignature);
        // The key without its torsion part.
        let mut clean = case3.clone();
        clean.key = EdwardsPoint::mul_base(&c.a).compress().0;
        assert_eq!(envelope_outcome(&clean.envelope()), BadSignature);
    }

    let (a, a_enc) = mixed_key(&c);
    let r_prime = EdwardsPoint::mul_base(&c.r);
    let m = Message::Post;
    let (mut accepted, mut refused) = (0, 0);
    for counter in 1..=8 {
        let msg = m.bytes(counter);
        for t in &c.t[1..] {
            let r = r_prime + t;
            let r_enc = r.compress().0;
            let k = challenge(&r_enc, &a_enc, &msg);
            let s = c.r + k * c.a;
            let b = Built::new(3, m, counter, a_enc, r_enc, s.to_bytes());
            let relation = *t == -(c.t[1] * k);
            assert!(cofactored(&a, &r, &s, &k));
            assert_eq!(cofactorless(&a, &r, &s, &k), relation);
            let outcome = envelope_outcome(&b.envelope());
            assert_eq!(outcome == Accept, relation, "counter {counter}");
            assert_eq!(direct_verify_strict(&b), relation, "counter {counter}");
            if relation {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// The helpers that classify points and check equations give both answers.
#[test]
fn the_property_checks_can_fail() {
    let c = curve();
    let b = base();
    assert_eq!(order_class(&b), Order::Prime);
    assert_eq!(order_class(&identity()), Order::Small);
    assert_eq!(order_class(&c.t[1]), Order::Small);
    assert_eq!(order_class(&(b + c.t[4])), Order::Mixed);
    assert_eq!(torsion_part(&(b * c.a + c.t[3])), c.t[3]);
    assert_eq!(torsion_part(&(b * c.a)), identity());

    // An honest signature equation, then a broken one.
    let a = b * c.a;
    let r = b * c.r;
    let k = secret("k");
    let s = c.r + k * c.a;
    assert!(cofactorless(&a, &r, &s, &k) && cofactored(&a, &r, &s, &k));
    assert!(prereduced_cofactored(&a, &r, &s, &k));
    let s1 = s + Scalar::ONE;
    assert!(!cofactorless(&a, &r, &s1, &k) && !cofactored(&a, &r, &s1, &k));
    // A torsion difference only the cofactorless equation sees.
    assert!(cofactored(&a, &(r + c.t[2]), &s, &k));
    assert!(!cofactorless(&a, &(r + c.t[2]), &s, &k));
}

/// The constants the constructions rest on.
#[test]
fn group_order_field_prime_and_torsion_are_what_we_think() {
    let l = group_order();
    let mut expected = [0u8; 32];
    expected[..16]
        .copy_from_slice(&27_742_317_777_372_353_535_851_937_790_883_648_493u128.to_le_bytes());
    expected[31] = 0x10;
    assert_eq!(
        l, expected,
        "L = 2^252 + 27742317777372353535851937790883648493"
    );
    assert!(Option::<Scalar>::from(Scalar::from_canonical_bytes(l)).is_none());
    assert_eq!(
        Scalar::from_bytes_mod_order(l),
        Scalar::ZERO,
        "L reduces to 0"
    );
    assert_eq!(times_l(&base()), identity(), "[L]B = 0");

    let p = field_prime();
    assert_eq!(p[0], 0xed);
    assert_eq!(p[31], 0x7f);
    // y = p encodes y = 0 (the order-4 points), y = p + 1 encodes y = 1 (the identity).
    let four = decompress(&p).unwrap();
    assert_eq!(small_order(&four), 4);
    assert_eq!(decompress(&two_255_minus(18)).unwrap(), identity());

    let t = torsion_points();
    assert_eq!(t.len(), 8);
    assert_eq!(small_order(&t[1]), 8);
    for (i, ti) in t.iter().enumerate() {
        assert!(ti.is_small_order());
        for tj in &t[..i] {
            assert_ne!(ti, tj, "the eight torsion points are distinct");
        }
    }
}

/// Every non-canonical encoding of a small-order point, offered as a key, is a weak key.
#[test]
fn non_canonical_small_keys_are_bad_keys() {
    for nc in non_canonical_small_encodings() {
        assert_eq!(
            decode_key(&PublicKey(nc.enc)).err(),
            Some(ProtocolError::BadKey),
            "{nc:?}"
        );
        assert!(
            VerifyingKey::from_bytes(&nc.enc).unwrap().is_weak(),
            "{nc:?}"
        );
    }
}
