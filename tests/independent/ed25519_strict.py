"""Strict Ed25519 verification (RFC 8032 §5.1.7, as PROTOCOL.md §4.4 states it),
in plain Python with the standard library only.

Written from the RFC and PROTOCOL.md alone, not from peerhub's code, so the checkers
beside it are an independent second implementation. Slow (a few ms a signature), which
is fine for checking an audit chain or a pager notice.
"""

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1, 1, 0)


def _add(a, b):
    # Extended twisted Edwards coordinates (RFC 8032 §5.1.4).
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(s, point):
    out = IDENTITY
    while s > 0:
        if s & 1:
            out = _add(out, point)
        point = _add(point, point)
        s >>= 1
    return out


def _neg(point):
    x, y, z, t = point
    return (-x % P, y, z, -t % P)


def _is_identity(point):
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def _decode(data):
    """A point from its 32-byte encoding, or None (RFC 8032 §5.1.3)."""
    if len(data) != 32:
        return None
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        if sign:
            return None
        x = 0
    else:
        x = pow(x2, (P + 3) // 8, P)
        if (x * x - x2) % P != 0:
            x = x * SQRT_M1 % P
        if (x * x - x2) % P != 0:
            return None
        if (x & 1) != sign:
            x = P - x
    return (x, y, 1, x * y % P)


def _encode(point):
    x, y, z, _ = point
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _small_order(point):
    return _is_identity(_mul(8, point))


_GY = 4 * pow(5, P - 2, P) % P
B = _decode(_GY.to_bytes(32, "little"))


def verify_strict(public_key, message, signature):
    """True when `signature` (64 bytes) by `public_key` (32 bytes) over `message`
    passes every rule of PROTOCOL.md §4.4."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decode(public_key)
    if a is None or _small_order(a):
        return False
    r_bytes, s_bytes = signature[:32], signature[32:]
    s = int.from_bytes(s_bytes, "little")
    if s >= L:
        return False
    r = _decode(r_bytes)
    if r is None or _small_order(r):
        return False
    k = int.from_bytes(hashlib.sha512(r_bytes + public_key + message).digest(), "little") % L
    check = _add(_mul(s, B), _neg(_mul(k, a)))
    return _encode(check) == r_bytes


def b64url_decode(text):
    """Strict unpadded base64url (PROTOCOL.md §2)."""
    import base64

    if "=" in text or "+" in text or "/" in text:
        raise ValueError("not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != text:
        raise ValueError("non-canonical base64url")
    return raw


def verify_envelope(env):
    """Verifies a peerhub signed envelope (a dict with kind, key, payload, sig) under
    the signing rule of PROTOCOL.md §4.3."""
    key = b64url_decode(env["key"])
    sig = b64url_decode(env["sig"])
    message = ("peerhub/1/" + env["kind"] + "\n" + env["payload"]).encode("utf-8")
    return verify_strict(key, message, sig)
