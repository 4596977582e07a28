"""Ed25519 keys: libp2p peer ids, key files, signatures over canonical JSON."""

import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from wattmesh.settlement import keys
from wattmesh.settlement.keys import (
    generate_key,
    load_key,
    peer_id,
    peer_id_of,
    public_key_from_peer_id,
    save_key,
    sign,
    verify,
)

# libp2p specs, peer-ids/peer-ids.md "Test vectors": an Ed25519 PrivateKey protobuf
# (seed then public key) and the PublicKey protobuf it derives.
SPEC_PRIVATE_PB = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
SPEC_PUBLIC = bytes.fromhex("1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
# The peer ids go-libp2p derives for that key and for the all-zero seed (asserted in
# go-libp2p's p2p/http/auth/internal/handshake tests, the HTTP peer-id-auth walkthrough).
SPEC_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
ZERO_SEED_PEER_ID = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"

BODY = {"type": "order", "market": "energy", "side": "bid", "price": 230_000, "qty": 500}


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return keys._raw_public(key)


# --- peer ids ------------------------------------------------------------------------


def test_known_peer_ids():
    assert peer_id(SPEC_PUBLIC) == SPEC_PEER_ID
    spec_key = Ed25519PrivateKey.from_private_bytes(SPEC_PRIVATE_PB[4:36])
    assert peer_id_of(spec_key) == SPEC_PEER_ID
    assert peer_id_of(spec_key.public_key()) == SPEC_PEER_ID
    assert peer_id_of(Ed25519PrivateKey.from_private_bytes(bytes(32))) == ZERO_SEED_PEER_ID
    assert public_key_from_peer_id(SPEC_PEER_ID) == SPEC_PUBLIC


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_round_trip(raw):
    pid = peer_id(raw)
    assert pid.startswith("12D3KooW")
    assert len(pid) == 52
    assert public_key_from_peer_id(pid) == raw


@pytest.mark.parametrize("raw", [b"", bytes(31), bytes(33), bytearray(32), "a" * 32, None])
def test_peer_id_needs_32_raw_bytes(raw):
    with pytest.raises(ValueError, match="32 raw bytes"):
        peer_id(raw)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12D3KooW",
        SPEC_PEER_ID[:-1],  # truncated
        SPEC_PEER_ID + "1",  # trailing digit: 39 bytes
        "1" + SPEC_PEER_ID,  # extra leading zero byte
        SPEC_PEER_ID[:-1] + "0",  # "0" is not in the base58 alphabet
        SPEC_PEER_ID[:-1] + "l",  # nor is "l"
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # sha256 multihash (RSA key)
        keys._b58encode(bytes.fromhex("002508021221") + b"\x02" * 33),  # secp256k1
        keys._b58encode(bytes.fromhex("002408021220") + bytes(32)),  # wrong key type
        "bafzaajaiaejcb6jyr4zhrdqvz7bjtqnrwfwkrvygy6cgqvgqjyffd6zcgkbxtqum",  # CIDv1
        SPEC_PEER_ID.lower(),
        "z" * 52,
    ],
)
def test_public_key_from_peer_id_refuses_other_ids(text):
    with pytest.raises(ValueError, match="not an Ed25519 peer id"):
        public_key_from_peer_id(text)


@pytest.mark.parametrize("value", [None, 5, b"12D3KooW"])
def test_public_key_from_peer_id_refuses_non_str(value):
    with pytest.raises(ValueError, match="a peer id is a str"):
        public_key_from_peer_id(value)


# --- key files ------------------------------------------------------------------------


def test_save_then_load(tmp_path):
    key = generate_key()
    path = tmp_path / "node.key"
    save_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert raw_public(load_key(path)) == raw_public(key)
    assert os.listdir(tmp_path) == ["node.key"]  # no temporary file left behind


def test_file_format_is_libp2p_private_key_protobuf(tmp_path):
    path = tmp_path / "spec.key"
    save_key(path, Ed25519PrivateKey.from_private_bytes(SPEC_PRIVATE_PB[4:36]))
    assert path.read_bytes() == SPEC_PRIVATE_PB
    assert peer_id_of(load_key(path)) == SPEC_PEER_ID


def test_mode_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        save_key(tmp_path / "a.key", generate_key())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.key").st_mode) == 0o600


def test_file_is_created_private_then_moved_into_place(tmp_path, monkeypatch):
    calls = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        calls.append((str(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    save_key(tmp_path / "node.key", generate_key())
    created = [c for c in calls if c[1] & os.O_CREAT]
    assert len(created) == 1
    path, flags, mode = created[0]
    assert path != str(tmp_path / "node.key")  # written elsewhere, then renamed/linked
    assert os.path.dirname(path) == str(tmp_path)  # same filesystem, so the move is atomic
    assert flags & os.O_EXCL
    assert mode == 0o600


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "node.key"
    first = generate_key()
    save_key(path, first)
    with pytest.raises(FileExistsError):
        save_key(path, generate_key())
    assert raw_public(load_key(path)) == raw_public(first)
    assert os.listdir(tmp_path) == ["node.key"]


def test_overwrite_when_asked(tmp_path):
    path = tmp_path / "node.key"
    save_key(path, generate_key())
    second = generate_key()
    save_key(path, second, overwrite=True)
    assert raw_public(load_key(path)) == raw_public(second)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["node.key"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_load_refuses_key_open_to_group_or_others(tmp_path, mode):
    path = tmp_path / "node.key"
    save_key(path, generate_key())
    os.chmod(path, mode)
    with pytest.raises(ValueError, match=f"mode {mode:04o}"):
        load_key(path)


def test_load_accepts_read_only_owner_file(tmp_path):
    path = tmp_path / "node.key"
    key = generate_key()
    save_key(path, key)
    os.chmod(path, 0o400)
    assert raw_public(load_key(path)) == raw_public(key)


def write_private(path, data: bytes):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "malformed"),
        (SPEC_PRIVATE_PB[4:36], "malformed"),  # a bare 32-byte seed
        (SPEC_PRIVATE_PB + b"\n", "malformed"),
        (SPEC_PRIVATE_PB[:-1], "malformed"),
        (b"\x08\x02" + SPEC_PRIVATE_PB[2:], "malformed"),  # another key type
        (SPEC_PRIVATE_PB[:10] + bytes([SPEC_PRIVATE_PB[10] ^ 1]) + SPEC_PRIVATE_PB[11:], "corrupt"),
        (SPEC_PRIVATE_PB[:-1] + bytes([SPEC_PRIVATE_PB[-1] ^ 1]), "corrupt"),
    ],
)
def test_load_refuses_malformed_files(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        load_key(write_private(tmp_path / "bad.key", data))


def test_load_refuses_a_directory(tmp_path):
    os.chmod(tmp_path, 0o700)
    with pytest.raises(ValueError, match="not a regular file"):
        load_key(tmp_path)


# --- signatures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def key():
    return generate_key()


@pytest.fixture(scope="module")
def owner(key):
    return peer_id_of(key)


def test_sign_verify_round_trip(key, owner):
    sig = sign(key, BODY)
    assert len(sig) == 128 and sig == sig.lower()
    assert verify(owner, BODY, sig)
    assert sign(key, BODY) == sig  # Ed25519 is deterministic
    assert verify(owner, dict(reversed(list(BODY.items()))), sig)  # key order is irrelevant


@pytest.mark.parametrize(
    "change",
    [
        {"qty": 501},
        {"price": 230_001},
        {"side": "ask"},
        {"market": "energz"},
        {"extra": None},
    ],
)
def test_changed_body_fails(key, owner, change):
    sig = sign(key, BODY)
    assert not verify(owner, {**BODY, **change}, sig)


def test_dropped_field_fails(key, owner):
    sig = sign(key, BODY)
    assert not verify(owner, {k: v for k, v in BODY.items() if k != "qty"}, sig)


@pytest.mark.parametrize("index", [0, 17, 31, 32, 63])
def test_one_byte_change_in_signature_fails(key, owner, index):
    sig = bytearray(bytes.fromhex(sign(key, BODY)))
    sig[index] ^= 0x01
    assert not verify(owner, BODY, sig.hex())


def test_other_key_fails(key, owner):
    other = generate_key()
    assert not verify(owner, BODY, sign(other, BODY))
    assert not verify(peer_id_of(other), BODY, sign(key, BODY))


@pytest.mark.parametrize(
    "bad_sig",
    [None, 5, b"", "", "00" * 63, "00" * 65, "zz" * 64, " " * 128, "00" * 64],
)
def test_malformed_signature_is_false_not_an_error(key, owner, bad_sig):
    assert verify(owner, BODY, bad_sig) is False


def test_upper_case_signature_is_not_accepted(key, owner):
    # Same bytes, other spelling: only the canonical lower-case hex counts.
    assert verify(owner, BODY, sign(key, BODY).upper()) is False


@pytest.mark.parametrize("bad_owner", [None, 5, "", "alice", "Qm" + "a" * 44, ["x"], SPEC_PEER_ID])
def test_bad_owner_is_false_not_an_error(key, bad_owner):
    assert verify(bad_owner, BODY, sign(key, BODY)) is False


@pytest.mark.parametrize("bad_body", [{"qty": 1.5}, {"b": b"x"}, [1, (2,)], None, "text"])
def test_bad_body_is_false_not_an_error(key, owner, bad_body):
    assert verify(owner, bad_body, "00" * 64) is False
