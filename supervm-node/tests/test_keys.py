from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from supervm.errors import SuperVMError
from supervm_node import KeyFileError, KeyPair, address_of, load_key, save_key, verify

# RFC 8032, section 7.1, TEST 1.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
#: address_of(RFC_PUBLIC), pinned: a change to the derivation changes every address.
RFC_ADDRESS = bytes.fromhex("d07abc446ab6d6b59ed9532ec8b5e97b698c4654")


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_rfc8032_test_1_vector() -> None:
    key = KeyPair.from_seed(RFC_SEED)
    assert key.seed == RFC_SEED
    assert key.public_key == RFC_PUBLIC
    assert key.sign(b"") == RFC_SIGNATURE
    assert verify(RFC_PUBLIC, b"", RFC_SIGNATURE)
    assert key.address == RFC_ADDRESS


def test_address_derivation() -> None:
    expected = hashlib.sha256(b"supervm/address/v1" + RFC_PUBLIC).digest()[:20]
    assert address_of(RFC_PUBLIC) == expected == RFC_ADDRESS
    with pytest.raises(ValueError, match="32 bytes"):
        address_of(RFC_PUBLIC[:31])
    with pytest.raises(TypeError):
        address_of(RFC_PUBLIC.hex())  # type: ignore[arg-type]


def test_generate_sign_verify() -> None:
    key, other = KeyPair.generate(), KeyPair.generate()
    assert key.public_key != other.public_key and len(key.address) == 20
    message = b"transfer 5 to bob"
    signature = key.sign(message)
    assert len(signature) == 64
    assert verify(key.public_key, message, signature)
    assert not verify(other.public_key, message, signature)
    for bit in (0, 7, len(message) * 8 - 1):
        assert not verify(key.public_key, flip(message, bit), signature)
    for bit in (0, 255, 256, 511):
        assert not verify(key.public_key, message, flip(signature, bit))
    assert not verify(key.public_key, message + b"\x00", signature)


def test_verify_refuses_malformed_lengths() -> None:
    key = KeyPair.from_seed(RFC_SEED)
    with pytest.raises(ValueError, match="signature must be 64 bytes, not 63"):
        verify(key.public_key, b"", RFC_SIGNATURE[:63])
    with pytest.raises(ValueError, match="public key must be 32 bytes, not 33"):
        verify(key.public_key + b"\x00", b"", RFC_SIGNATURE)
    with pytest.raises(ValueError, match="seed must be 32 bytes"):
        KeyPair.from_seed(RFC_SEED[:16])
    with pytest.raises(TypeError):
        verify(key.public_key, "text", RFC_SIGNATURE)  # type: ignore[arg-type]


def test_repr_hides_the_seed() -> None:
    key = KeyPair.from_seed(RFC_SEED)
    assert RFC_SEED.hex() not in repr(key) and RFC_ADDRESS.hex() in repr(key)


def test_key_file_round_trip_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = KeyPair.from_seed(RFC_SEED)
    save_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "node.key.partial").exists()
    assert json.loads(path.read_text()) == {
        "format": 1,
        "kind": "supervm-ed25519-key",
        "public_key": RFC_PUBLIC.hex(),
        "address": RFC_ADDRESS.hex(),
        "seed": RFC_SEED.hex(),
    }
    loaded = load_key(str(path))
    assert (loaded.seed, loaded.public_key, loaded.address) == (RFC_SEED, RFC_PUBLIC, RFC_ADDRESS)


def test_save_key_is_0600_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_key(tmp_path / "k", KeyPair.generate())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_save_key_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_text("precious")
    with pytest.raises(KeyFileError, match="exists") as info:
        save_key(path, KeyPair.generate())
    assert str(path) in str(info.value)
    assert path.read_text() == "precious"
    assert not (tmp_path / "node.key.partial").exists()


def test_save_key_refuses_a_leftover_partial(tmp_path: Path) -> None:
    (tmp_path / "node.key.partial").write_text("left over")
    with pytest.raises(KeyFileError, match="unfinished"):
        save_key(tmp_path / "node.key", KeyPair.generate())
    assert not (tmp_path / "node.key").exists()
    assert (tmp_path / "node.key.partial").read_text() == "left over"


def write_key_file(path: Path, document: Any, mode: int = 0o600) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    path.chmod(mode)
    return path


def good_document() -> dict[str, Any]:
    return {
        "format": 1,
        "kind": "supervm-ed25519-key",
        "public_key": RFC_PUBLIC.hex(),
        "address": RFC_ADDRESS.hex(),
        "seed": RFC_SEED.hex(),
    }


def test_load_key_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such key file") as info:
        load_key(tmp_path / "nope.key")
    assert str(tmp_path / "nope.key") in str(info.value)
    assert isinstance(info.value, SuperVMError)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_key_refuses_a_file_others_can_read(tmp_path: Path, mode: int) -> None:
    path = write_key_file(tmp_path / "node.key", good_document(), mode)
    with pytest.raises(KeyFileError, match=f"chmod 600 {path}") as info:
        load_key(path)
    assert f"{mode:04o}" in str(info.value)


def test_load_key_accepts_0400(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "node.key", good_document(), 0o400)
    assert load_key(path).address == RFC_ADDRESS


def changed(**fields: Any) -> dict[str, Any]:
    document = good_document()
    for name, value in fields.items():
        if value is None:
            del document[name]
        else:
            document[name] = value
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json {", "not JSON"),
        ("\xff\xfe", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (changed(kind="ssh-key"), "kind 'ssh-key'"),
        (changed(kind=None), "kind None"),
        (changed(format=2), "unsupported key file format 2"),
        (changed(format="1"), "unsupported key file format '1'"),
        (changed(format=True), "unsupported key file format True"),
        (changed(seed=None), "has no 'seed'"),
        (changed(seed="zz" * 32), "'seed' is not hexadecimal"),
        (changed(seed=RFC_SEED.hex()[:-2]), "'seed' must be 32 bytes, not 31"),
        (changed(seed=" ".join([RFC_SEED.hex()[:2], RFC_SEED.hex()[2:]])), "not hexadecimal"),
        (changed(seed=32), "'seed' must be a hex string"),
        (changed(public_key="00" * 33), "'public_key' must be 32 bytes, not 33"),
        (changed(address="00" * 32), "'address' must be 20 bytes, not 32"),
        (changed(public_key=None), "has no 'public_key'"),
        (changed(public_key=flip(RFC_PUBLIC, 3).hex()), "public key is not the seed's"),
        (changed(address=flip(RFC_ADDRESS, 3).hex()), "address is not the seed's"),
    ],
)
def test_load_key_refusals_name_the_file(tmp_path: Path, document: Any, message: str) -> None:
    path = write_key_file(tmp_path / "node.key", document)
    with pytest.raises(KeyFileError, match=message) as info:
        load_key(path)
    assert str(info.value).startswith(f"{path}: ")


def test_load_key_accepts_upper_case_hex(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "node.key", changed(seed=RFC_SEED.hex().upper()))
    assert load_key(path).public_key == RFC_PUBLIC


def test_load_key_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="directory"):
        load_key(tmp_path)


def test_save_key_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist") as info:
        save_key(tmp_path / "nope" / "node.key", KeyPair.generate())
    assert str(tmp_path / "nope" / "node.key") in str(info.value)


def test_save_key_renames_where_there_are_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "node.key"
    save_key(path, KeyPair.from_seed(RFC_SEED))
    assert load_key(path).seed == RFC_SEED
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "node.key.partial").exists()
