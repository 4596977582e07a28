"""Ed25519 keys, libp2p peer ids, key files, and signatures over canonical JSON.

A household's key is also its libp2p node key, so its account id is its libp2p peer id:
base58btc of the identity multihash of the protobuf-encoded public key, which for Ed25519
always starts ``12D3KooW`` (libp2p specs, peer-ids/peer-ids.md).

Key files hold the libp2p protobuf ``PrivateKey`` (the form go-libp2p's
``crypto.MarshalPrivateKey`` writes): ``08 01 12 40`` + 32-byte seed + 32-byte public key,
68 bytes. The embedded public key lets :func:`load_key` detect a corrupted seed, which a
bare 32-byte seed file could not: any 32 bytes are a valid, different key.
"""

from __future__ import annotations

import functools
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .canonical import CanonicalError, canonical
from .errors import WattmeshError

__all__ = [
    "Ed25519PrivateKey",
    "KeyFileError",
    "generate_key",
    "load_key",
    "peer_id",
    "peer_id_of",
    "public_key_from_peer_id",
    "read_key_file",
    "save_key",
    "sign",
    "verify",
    "verify_bytes",
]

# multihash identity (0x00), length 36 (0x24); protobuf PublicKey{Type=Ed25519, Data=<32>}
_PEER_ID_PREFIX = bytes.fromhex("002408011220")
_PRIVATE_PREFIX = bytes.fromhex("08011240")  # protobuf PrivateKey{Type=Ed25519, Data=<64>}
_KEY_FILE_SIZE = len(_PRIVATE_PREFIX) + 64
_SIG_HEX_LEN = 128

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # bitcoin alphabet
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def _b58encode(data: bytes) -> str:
    # Big-integer conversion; fine for the 38-byte ids we encode. Each leading zero byte
    # is one leading "1", which is why every Ed25519 peer id starts with "1".
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        digit = _B58_INDEX.get(c)
        if digit is None:
            raise ValueError(f"{c!r} is not a base58btc character")
        n = n * 58 + digit
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


def _raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def peer_id(public_key_bytes: bytes) -> str:
    """The libp2p peer id (``12D3KooW…``) of a raw 32-byte Ed25519 public key."""
    if type(public_key_bytes) is not bytes or len(public_key_bytes) != 32:
        raise ValueError("an Ed25519 public key is exactly 32 raw bytes")
    return _b58encode(_PEER_ID_PREFIX + public_key_bytes)


def peer_id_of(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The peer id (= account id) of a private or public Ed25519 key."""
    return peer_id(_raw_public(key))


def public_key_from_peer_id(peer_id_text: str) -> bytes:
    """The raw 32-byte Ed25519 public key inside an identity peer id.

    Raises ValueError for anything else: other key types, hashed (sha256) peer ids, CIDs,
    non-canonical spellings.
    """
    if type(peer_id_text) is not str:
        raise ValueError(f"a peer id is a str, got {type(peer_id_text).__name__}")
    # An Ed25519 identity peer id is 52 characters; the bound also keeps the big-int
    # decoder cheap on hostile input.
    if not 40 <= len(peer_id_text) <= 60:
        raise ValueError(f"{peer_id_text!r:.70} is not an Ed25519 peer id (wrong length)")
    try:
        raw = _b58decode(peer_id_text)
    except ValueError as exc:
        raise ValueError(f"{peer_id_text!r} is not an Ed25519 peer id: {exc}") from None
    if len(raw) != len(_PEER_ID_PREFIX) + 32 or not raw.startswith(_PEER_ID_PREFIX):
        raise ValueError(
            f"{peer_id_text!r} is not an Ed25519 peer id (expected an identity multihash "
            "of an Ed25519 public key, which starts 12D3KooW)"
        )
    return raw[len(_PEER_ID_PREFIX) :]


@functools.lru_cache(maxsize=4096)
def _verifier(owner_peer_id: str) -> Ed25519PublicKey:
    # A community has few members but they sign millions of orders; cache parsed keys.
    return Ed25519PublicKey.from_public_bytes(public_key_from_peer_id(owner_peer_id))


def generate_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def _encode_key(key: Ed25519PrivateKey) -> bytes:
    seed = key.private_bytes_raw()
    return _PRIVATE_PREFIX + seed + _raw_public(key)


def save_key(
    path: str | os.PathLike[str], key: Ed25519PrivateKey, *, overwrite: bool = False
) -> None:
    """Write ``key`` to ``path`` with mode 0600, atomically.

    The bytes go to a temporary file in the same directory, created 0600 from the start
    (never readable by others, even briefly) and fsynced, which then takes ``path``'s
    place. Raises FileExistsError if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    data = _encode_key(key)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have taken away owner bits; make it exact
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() fails if path exists, so "check, then create" has no race window.
            os.link(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:  # already renamed into place by os.replace
            pass
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    # Make the new directory entry durable, so a power cut cannot lose a key we reported saved.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class KeyFileError(WattmeshError, ValueError):
    """A key file that cannot be used: missing, unreadable, too open, or not a key."""


def read_key_file(path: str | os.PathLike[str], what: str) -> Ed25519PrivateKey:
    """:func:`load_key`, with one error that names ``what`` asked for it (an option such
    as ``--key``, or a setting) and the file: the one way the commands read a key."""
    try:
        return load_key(path)
    except FileNotFoundError:
        raise KeyFileError(f"{what}: no key file {path}") from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{what}: {path}: {getattr(exc, 'strerror', None) or exc}") from None


def load_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a key written by :func:`save_key`.

    Raises ValueError if the file grants any permission to group or others (like ssh, it
    must be 0600 or stricter), is not a regular file, or is not a well-formed key file.
    """
    path = Path(path)
    # O_NONBLOCK: a FIFO planted at the path must not hang us; no effect on regular files.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        # fstat the open file, not the path, so the file checked is the file read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"key file {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ValueError(
                f"key file {path} has mode {mode:04o}, open to group or others; "
                f"a private key must be 0600 (run: chmod 600 {path})"
            )
        data = os.read(fd, _KEY_FILE_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) != _KEY_FILE_SIZE or not data.startswith(_PRIVATE_PREFIX):
        raise ValueError(
            f"key file {path} is malformed: expected {_KEY_FILE_SIZE} bytes, a libp2p "
            "Ed25519 PrivateKey (08 01 12 40, seed, public key)"
        )
    seed = data[4:36]
    key = Ed25519PrivateKey.from_private_bytes(seed)
    if _raw_public(key) != data[36:]:
        raise ValueError(f"key file {path} is corrupt: its seed does not match its public key")
    return key


def sign(key: Ed25519PrivateKey, body: dict) -> str:
    """Hex Ed25519 signature of ``canonical(body)``."""
    return key.sign(canonical(body)).hex()


def verify(owner_peer_id: str, body: dict, sig_hex: str) -> bool:
    """True iff ``sig_hex`` is ``owner_peer_id``'s signature of ``canonical(body)``.

    Never raises for bad input: a malformed peer id, signature or body is simply False.
    """
    try:
        message = canonical(body)
    except (CanonicalError, TypeError):
        return False
    return verify_bytes(owner_peer_id, message, sig_hex)


def verify_bytes(owner_peer_id: str, message: bytes, sig_hex: str) -> bool:
    """:func:`verify` for a body already in canonical bytes (so a caller that also hashes
    them encodes them once)."""
    if type(sig_hex) is not str or len(sig_hex) != _SIG_HEX_LEN:
        return False
    try:
        sig = bytes.fromhex(sig_hex)
        # fromhex also takes upper case and spaces; only one spelling of a signature counts.
        if sig.hex() != sig_hex:
            return False
        _verifier(owner_peer_id).verify(sig, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
