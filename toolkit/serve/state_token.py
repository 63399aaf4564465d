"""A stream's whole state as an opaque token the client holds: h, c, the next logits and the
random generator's state, bound to one model file by its sha256 and signed.

Any replica serving the same model file (and, where set, the same --state-secret) continues a
stream from its token exactly where it stopped. Layout, before base64url:

    version      u8                        TOKEN_VERSION
    model        32 bytes                  sha256 of the model file the state belongs to
    layers       u16, units u32, vocab u32
    h, c         float32 [layers, units] each
    logits       float32 [vocab]           the distribution of the next character
    rng          PCG64: state u128, inc u128, has_uint32 u8, uinteger u32
    mac          16 bytes                  HMAC-SHA256 of everything above, truncated

Without a secret the key is derived from the model's sha256: the MAC then catches corruption
and edits, but anyone with the model can make a token; set --state-secret on every replica
to make tokens unforgeable. Either way a token's numbers must be finite and within what a
step produces (STATE_LIMITS), so a made-up one cannot steer a stream into garbage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

TOKEN_VERSION = 1
PREFIX = "cls1."
MAC_BYTES = 16
_HEADER = struct.Struct("<B32sHII")
_RNG = struct.Struct("<16s16sBI")


class StateTokenError(ValueError):
    """A token that cannot be continued from (HTTP 422): its message says why, in a line."""


@dataclass(frozen=True)
class StreamState:
    h: np.ndarray  # float32 [layers, units]
    c: np.ndarray  # float32 [layers, units]
    logits: np.ndarray  # float32 [vocab]
    rng_state: dict[str, Any]  # numpy's PCG64 state dict


class StateCodec:
    """Encodes and checks the tokens of one model file."""

    def __init__(
        self, model_sha256: str, layers: int, units: int, vocab: int, secret: str | None = None
    ) -> None:
        self.model = bytes.fromhex(model_sha256)
        self.layers, self.units, self.vocab = layers, units, vocab
        seed = secret.encode() if secret else b"toolkit-state:" + self.model
        self.key = hashlib.sha256(seed).digest()
        floats = 2 * layers * units + vocab
        self.payload_bytes = _HEADER.size + 4 * floats + _RNG.size
        self.token_chars = len(PREFIX) + len(_b64(bytes(self.payload_bytes + MAC_BYTES)))

    def encode(self, state: StreamState) -> str:
        rng = state.rng_state
        if rng.get("bit_generator") != "PCG64":
            raise StateTokenError(f"cannot save a {rng.get('bit_generator')} random generator")
        payload = b"".join(
            (
                _HEADER.pack(TOKEN_VERSION, self.model, self.layers, self.units, self.vocab),
                np.ascontiguousarray(state.h, "<f4").tobytes(),
                np.ascontiguousarray(state.c, "<f4").tobytes(),
                np.ascontiguousarray(state.logits, "<f4").tobytes(),
                _RNG.pack(
                    int(rng["state"]["state"]).to_bytes(16, "little"),
                    int(rng["state"]["inc"]).to_bytes(16, "little"),
                    int(rng["has_uint32"]),
                    int(rng["uinteger"]),
                ),
            )
        )
        return PREFIX + _b64(payload + self._mac(payload))

    def decode(self, token: str) -> StreamState:
        if len(token) > self.token_chars:
            raise StateTokenError(
                f"state token is {len(token)} characters; this model's are {self.token_chars}"
            )
        if not token.startswith(PREFIX):
            raise StateTokenError(f"not a state token (expected it to start with {PREFIX!r})")
        try:
            body = token[len(PREFIX) :]
            data = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise StateTokenError("state token is not valid base64url") from None
        if len(data) < _HEADER.size + MAC_BYTES:
            raise StateTokenError("state token is truncated")
        version, model, layers, units, vocab = _HEADER.unpack_from(data)
        if version != TOKEN_VERSION:
            raise StateTokenError(
                f"state token version {version}; this server reads version {TOKEN_VERSION}"
            )
        if model != self.model:
            raise StateTokenError(
                f"state token belongs to another model (sha256 {model.hex()[:12]}...); this "
                f"server runs {self.model.hex()[:12]}..."
            )
        if len(data) != self.payload_bytes + MAC_BYTES:
            raise StateTokenError("state token has the wrong length for this model")
        payload, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise StateTokenError("state token failed its integrity check (altered or corrupted)")
        if (layers, units, vocab) != (self.layers, self.units, self.vocab):
            raise StateTokenError("state token's sizes do not match this model")
        floats = np.frombuffer(payload, "<f4", 2 * layers * units + vocab, _HEADER.size)
        state_size = layers * units
        h = floats[:state_size].reshape(layers, units).astype(np.float32)
        c = floats[state_size : 2 * state_size].reshape(layers, units).astype(np.float32)
        logits = floats[2 * state_size :].astype(np.float32)
        check_ranges(h, c, logits)
        rng_state, inc, has_uint32, uinteger = _RNG.unpack_from(payload, len(payload) - _RNG.size)
        return StreamState(
            h,
            c,
            logits,
            {
                "bit_generator": "PCG64",
                "state": {
                    "state": int.from_bytes(rng_state, "little"),
                    "inc": int.from_bytes(inc, "little"),
                },
                "has_uint32": has_uint32,
                "uinteger": uinteger,
            },
        )

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:MAC_BYTES]


# What a model's step can give: h is a tanh (|h| <= 1); c and the logits are sums that a
# trained model keeps within a few hundred. A token outside these is not one a step made.
STATE_LIMITS = {"h": 1.0, "c": 1e4, "logits": 1e4}


def check_ranges(h: np.ndarray, c: np.ndarray, logits: np.ndarray) -> None:
    """A StateTokenError for numbers that are not finite or far outside what the model
    produces (a made-up token would otherwise make the stream write garbage)."""
    for name, values in (("h", h), ("c", c), ("logits", logits)):
        limit = STATE_LIMITS[name]
        if not np.isfinite(values).all():
            raise StateTokenError(f"state token's {name} has numbers that are not finite")
        if np.abs(values).max(initial=0.0) > limit:
            raise StateTokenError(f"state token's {name} is outside what the model produces")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
