"""Parsing of storage URLs such as ``rocksdb:///var/lib/supervm?compression=zstd``."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from supervm.errors import InvalidURLError

__all__ = ["StorageURL", "mask_password", "parse_url"]

_N = TypeVar("_N", int, float)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE = re.compile(r"(\d+(?:\.\d+)?) *([a-z]*)", re.ASCII)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}  # fmt: skip


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL. ``options`` holds the query string."""

    raw: str
    scheme: str
    host: str | None
    port: int | None
    username: str | None
    password: str | None
    path: str
    netloc: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def safe(self) -> str:
        """The URL with any password replaced by ``***``, for messages and logs."""
        return mask_password(self.raw)

    @property
    def backend(self) -> str:
        """The scheme without a ``+driver`` suffix (``postgresql+psycopg`` -> ``postgresql``)."""
        return self.scheme.split("+", 1)[0]

    def file_path(self) -> str:
        """Filesystem path of a file back end: ``x:///abs/dir`` or ``x://relative/dir``."""
        if self.username or self.password or self.port is not None:
            raise InvalidURLError(
                f"{self.scheme}:// names a local path and takes no user or port, got {self.safe!r}"
            )
        path = unquote(self.netloc) + self.path
        if not path or path == "/":
            raise InvalidURLError(f"{self.scheme}:// URL needs a database path, got {self.safe!r}")
        return path

    def bool_option(self, name: str, default: bool) -> bool:
        """Boolean query option (``1/0``, ``true/false``, ``yes/no``, ``on/off``)."""
        value = self.options.get(name)
        if value is None:
            return default
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise InvalidURLError(f"option {name}={value!r} in {self.safe!r} is not a boolean")

    def int_option(self, name: str, default: int, *, minimum: int = 0) -> int:
        """Integer query option no smaller than ``minimum``."""
        return self._number_option(name, default, minimum, int, "an integer")

    def float_option(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        """Finite number query option no smaller than ``minimum``."""
        return self._number_option(name, default, minimum, float, "a number")

    def _number_option(
        self, name: str, default: _N, minimum: _N, convert: Callable[[str], _N], what: str
    ) -> _N:
        value = self.options.get(name)
        if value is None:
            return default
        number: _N | None
        try:
            number = convert(value)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number):
            raise InvalidURLError(f"option {name}={value!r} in {self.safe!r} is not {what}")
        if number < minimum:
            raise InvalidURLError(f"option {name}={value!r} in {self.safe!r} must be >= {minimum}")
        return number

    def size_option(self, name: str, default: int) -> int:
        """Size query option in bytes: ``1000``, ``512KB``, ``64MB``, ``1GB`` (powers of 1000)
        or ``64MiB`` (powers of 1024), in any case."""
        value = self.options.get(name)
        if value is None:
            return default
        match = _SIZE.fullmatch(value.strip().lower())
        unit = _SIZE_UNITS.get(match.group(2)) if match else None
        if match is None or unit is None:
            raise InvalidURLError(
                f"option {name}={value!r} in {self.safe!r} is not a size "
                "(bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            )
        return int(Fraction(match.group(1)) * unit)

    def choice_option(self, name: str, default: str, choices: Iterable[str]) -> str:
        """Query option restricted to ``choices``."""
        allowed = list(choices)
        value = self.options.get(name, default).lower()
        if value not in allowed:
            raise InvalidURLError(
                f"option {name}={value!r} in {self.safe!r} must be one of {', '.join(allowed)}"
            )
        return value

    def with_option(self, name: str, value: str) -> StorageURL:
        """This URL with query option ``name`` set to ``value`` (``raw`` is kept as given)."""
        return replace(self, options={**self.options, name: value})

    def without_option(self, name: str) -> StorageURL:
        """This URL without query option ``name`` (``raw`` is kept as given)."""
        return replace(self, options={k: v for k, v in self.options.items() if k != name})

    def reject_unknown_options(self, known: Iterable[str]) -> None:
        """Raise :class:`InvalidURLError` for any query option not in ``known``."""
        allowed = set(known)
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            hint = ", ".join(sorted(allowed)) or "none"
            raise InvalidURLError(
                f"unknown option(s) {', '.join(unknown)} in {self.safe!r}; "
                f"{self.scheme}:// accepts: {hint}"
            )


def mask_password(url: str) -> str:
    """``url`` with any password (``user:password@`` or a ``password`` query option)
    replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    path, question, query = tail.partition("?")
    if "password" in query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True)
        except ValueError:
            return "<unparsable URL>"
        query = urlencode([(k, "***" if "password" in k else v) for k, v in pairs], safe="*/:,")
    return f"{scheme}://{netloc}{slash}{path}{question}{query}"


def parse_url(url: str) -> StorageURL:
    """Parse a storage URL, raising :class:`InvalidURLError` when malformed."""
    if not isinstance(url, str):
        raise TypeError(f"storage URL must be a str, not {type(url).__name__}")
    if "://" not in url:
        raise InvalidURLError(
            f"not a storage URL: {url!r} (expected SCHEME://..., e.g. memory:// or rocksdb:///path)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURLError(f"malformed storage URL {mask_password(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURLError(f"storage URL {mask_password(url)!r} has no scheme")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise InvalidURLError(f"malformed query string in {mask_password(url)!r}: {exc}") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise InvalidURLError(f"option {key!r} given twice in {mask_password(url)!r}")
        options[key] = value
    return StorageURL(
        raw=url,
        scheme=scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        path=unquote(parts.path),
        netloc=parts.netloc,
        options=options,
    )
