"""The overlay merge and the views built on it, against a dict model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from supervm.memory import MemoryStorage
from supervm.state import OverlayView, StorageView, merge, pending_under

keys = st.sampled_from([b"a", b"ab", b"abc", b"b", b"ba", b"\x00", b"\xff", b"a\xff", b"b\x00"])
values = st.binary(max_size=4)
base_maps = st.dictionaries(keys, values, max_size=8)
pending_maps = st.dictionaries(keys, st.none() | values, max_size=8)
prefixes = st.sampled_from([b"", b"a", b"ab", b"b", b"\xff", b"z"])


def model(base: dict[bytes, bytes], pending: dict[bytes, bytes | None], prefix: bytes):
    merged = dict(base)
    for key, value in pending.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return sorted((k, v) for k, v in merged.items() if k.startswith(prefix))


@settings(max_examples=300, deadline=None)
@given(base_maps, pending_maps, prefixes)
def test_merge_matches_a_dict_model(base, pending, prefix) -> None:
    base_pairs = sorted((k, v) for k, v in base.items() if k.startswith(prefix))
    got = list(merge(base_pairs, pending_under(pending, prefix)))
    assert got == model(base, pending, prefix)


@settings(max_examples=200, deadline=None)
@given(base_maps, pending_maps, prefixes)
def test_overlay_view_over_a_store(base, pending, prefix) -> None:
    store = MemoryStorage()
    for key, value in base.items():
        store.set(key, value)
    view = OverlayView(StorageView(store), dict(pending))
    assert list(view.scan(prefix)) == model(base, pending, prefix)
    for key in set(base) | set(pending):
        expected = pending[key] if key in pending else base.get(key)
        assert view.get(key) == expected


def test_pending_none_hides_and_base_is_read_lazily() -> None:
    consumed = []

    def base():
        for pair in [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]:
            consumed.append(pair[0])
            yield pair

    merged = merge(base(), [(b"a", None), (b"aa", b"new")])
    assert next(merged) == (b"aa", b"new")
    assert consumed == [b"a", b"b"]  # nothing past what the caller asked for
    assert list(merged) == [(b"b", b"2"), (b"c", b"3")]


def test_merge_is_generic_over_tagged_values() -> None:
    base = [(b"k1", ("base", b"x")), (b"k3", ("base", b"z"))]
    pending = [(b"k1", ("tx", b"y")), (b"k2", ("tx", None))]
    assert list(merge(base, pending)) == [
        (b"k1", ("tx", b"y")),
        (b"k2", ("tx", None)),
        (b"k3", ("base", b"z")),
    ]
