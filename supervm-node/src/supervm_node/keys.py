"""Ed25519 keys (PyNaCl), SuperVM addresses, and key files.

An address is the first 20 bytes of ``SHA-256(b"supervm/address/v1" + public_key)``:
the domain prefix keeps it distinct from any other hash of a public key, and ``v1`` lets a
later derivation coexist with this one.

A key file is one JSON object, written with mode 0600::

    {"format": 1, "kind": "supervm-ed25519-key",
     "public_key": "<64 hex>", "address": "<40 hex>", "seed": "<64 hex>"}

The seed is the secret (RFC 8032's 32-byte private key); the public key and address are
there for people and tools to read, and :func:`load_key` checks both against the seed.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from supervm.chain.accounts import (
    ADDRESS_DOMAIN,
    ADDRESS_SIZE,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    address_of,
)
from supervm.errors import SuperVMError

__all__ = [
    "ADDRESS_DOMAIN",
    "ADDRESS_SIZE",
    "KEY_FILE_FORMAT",
    "KEY_FILE_KIND",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "KeyFileError",
    "KeyPair",
    "address_of",
    "load_key",
    "save_key",
    "verify",
]

SEED_SIZE = 32
KEY_FILE_FORMAT = 1
KEY_FILE_KIND = "supervm-ed25519-key"
#: A key file is about 250 bytes; anything much larger is not one.
_MAX_KEY_FILE_SIZE = 64 * 1024


class KeyFileError(SuperVMError):
    """A key file is missing, malformed, inconsistent or readable by others."""


def _check_bytes(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    data = bytes(value)
    if len(data) != size:
        raise ValueError(f"{what} must be {size} bytes, not {len(data)}")
    return data


class KeyPair:
    """An ed25519 signing key with its public key and address."""

    __slots__ = ("_address", "_public_key", "_signing_key")

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing_key = signing_key
        self._public_key = bytes(signing_key.verify_key)
        self._address = address_of(self._public_key)

    @classmethod
    def generate(cls) -> KeyPair:
        """A new key pair from the operating system's random source."""
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """The key pair of a 32-byte seed (RFC 8032's private key); deterministic."""
        return cls(SigningKey(_check_bytes(seed, SEED_SIZE, "seed")))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed."""
        return bytes(self._signing_key)

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key."""
        return self._public_key

    @property
    def address(self) -> bytes:
        """The 20-byte address (:func:`address_of` the public key)."""
        return self._address

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(f"message must be bytes, not {type(message).__name__}")
        return bytes(self._signing_key.sign(bytes(message)).signature)

    def __repr__(self) -> str:  # never the seed
        return f"KeyPair(address={self._address.hex()})"


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of ``message``.

    A wrong signature gives False; a public key that is not 32 bytes or a signature
    that is not 64 raises ``ValueError`` (not bytes: ``TypeError``).
    """
    key = _check_bytes(public_key, PUBLIC_KEY_SIZE, "public key")
    sig = _check_bytes(signature, SIGNATURE_SIZE, "signature")
    if not isinstance(message, bytes | bytearray | memoryview):
        raise TypeError(f"message must be bytes, not {type(message).__name__}")
    try:
        VerifyKey(key).verify(bytes(message), sig)
    except BadSignatureError:
        return False
    return True


def _key_json(key: KeyPair) -> dict[str, Any]:
    return {
        "format": KEY_FILE_FORMAT,
        "kind": KEY_FILE_KIND,
        "public_key": key.public_key.hex(),
        "address": key.address.hex(),
        "seed": key.seed.hex(),
    }


def save_key(path: str | os.PathLike[str], key: KeyPair) -> None:
    """Write ``key`` to a new key file at ``path``, mode 0600.

    The file is written as ``PATH.partial``, flushed to disk and then linked into place
    (renamed where the file system has no hard links), so ``path`` either does not exist
    or holds the whole key. An existing ``path`` is never overwritten (``KeyFileError``),
    nor is a leftover ``PATH.partial``.
    """
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    if target.exists() or target.is_symlink():
        raise KeyFileError(f"{target}: the file exists; a key file is never overwritten")
    data = (json.dumps(_key_json(key), indent=2) + "\n").encode()
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{partial} exists (an unfinished save?); remove it and save again"
        ) from None
    except FileNotFoundError:
        raise KeyFileError(f"{target}: the directory {target.parent} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"{target}: cannot create the key file ({exc.strerror})") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        _link_into_place(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _link_into_place(partial: Path, target: Path) -> None:
    """Move ``partial`` to ``target`` atomically, failing if ``target`` exists."""
    try:
        os.link(partial, target)
    except FileExistsError:
        raise KeyFileError(f"{target}: the file exists; a key file is never overwritten") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # No hard links here: rename, after a last check.
        if target.exists() or target.is_symlink():
            raise KeyFileError(
                f"{target}: the file exists; a key file is never overwritten"
            ) from None
        os.rename(partial, target)
        return
    partial.unlink()


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _read_key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open the key file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise KeyFileError(f"{path}: is a directory, not a key file")
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: the key file is accessible by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        data = b""
        while len(data) <= _MAX_KEY_FILE_SIZE:
            chunk = os.read(fd, _MAX_KEY_FILE_SIZE + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE_SIZE:
        raise KeyFileError(f"{path}: not a SuperVM key file (over {_MAX_KEY_FILE_SIZE} bytes)")
    return data


def _hex_field(path: Path, document: dict[str, Any], name: str, size: int) -> bytes:
    if name not in document:
        raise KeyFileError(f"{path}: the key file has no {name!r}")
    text = document[name]
    if not isinstance(text, str):
        raise KeyFileError(f"{path}: {name!r} must be a hex string")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"{path}: {name!r} is not hexadecimal") from None
    if value.hex() != text.lower():  # fromhex skips whitespace
        raise KeyFileError(f"{path}: {name!r} is not hexadecimal")
    if len(value) != size:
        raise KeyFileError(f"{path}: {name!r} must be {size} bytes, not {len(value)}")
    return value


def load_key(path: str | os.PathLike[str]) -> KeyPair:
    """The key pair in the key file at ``path``.

    Raises ``KeyFileError``, naming the file, when it is missing, accessible by group or
    others, not JSON, not a format-1 ``supervm-ed25519-key``, has a field that is not hex
    of the right length, or has a public key or address that is not the seed's.
    """
    source = Path(path)
    data = _read_key_file(source)
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"{source}: not a SuperVM key file (not JSON: {exc})") from None
    if not isinstance(document, dict):
        raise KeyFileError(f"{source}: not a SuperVM key file (not a JSON object)")
    if document.get("kind") != KEY_FILE_KIND:
        raise KeyFileError(
            f"{source}: not a SuperVM key file (kind {document.get('kind')!r}, "
            f"expected {KEY_FILE_KIND!r})"
        )
    version = document.get("format")
    if type(version) is not int or version != KEY_FILE_FORMAT:
        raise KeyFileError(
            f"{source}: unsupported key file format {version!r} (this version reads "
            f"format {KEY_FILE_FORMAT})"
        )
    seed = _hex_field(source, document, "seed", SEED_SIZE)
    public_key = _hex_field(source, document, "public_key", PUBLIC_KEY_SIZE)
    address = _hex_field(source, document, "address", ADDRESS_SIZE)
    key = KeyPair.from_seed(seed)
    if public_key != key.public_key:
        raise KeyFileError(f"{source}: the public key is not the seed's (a damaged key file?)")
    if address != key.address:
        raise KeyFileError(f"{source}: the address is not the seed's (a damaged key file?)")
    return key
