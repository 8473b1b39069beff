from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import supervm
from supervm.errors import BackendNotFoundError, InvalidURLError
from supervm.hooks import SuperVMSpec, hookimpl, plugin_manager
from supervm.memory import MemoryStorage
from supervm.registry import available_backends, load_backend, register_backend, unregister_backend

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


class TaggedMemory(MemoryStorage):
    schemes = ("tagged",)
    url_form = "tagged://"


@pytest.fixture
def cleanup_schemes() -> Iterator[list[str]]:
    schemes: list[str] = []
    yield schemes
    for scheme in schemes:
        unregister_backend(scheme)


def test_memory_url_opens_memory_storage() -> None:
    with supervm.open_storage("memory://") as store:
        assert isinstance(store, MemoryStorage)


def test_unknown_scheme_lists_installed_backends() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        supervm.open_storage("nosuchdb:///x")
    message = str(info.value)
    assert "'nosuchdb'" in message
    assert "memory" in message
    assert "supervm.backends" in message
    assert info.value.scheme == "nosuchdb"
    assert "memory" in info.value.installed


def test_missing_first_party_backend_names_the_extra(cleanup_schemes: list[str]) -> None:
    # A registration that cannot import behaves like a back end whose extra is absent.
    register_backend("lmdb", "supervm_lmdb_not_installed:LMDBStorage")
    cleanup_schemes.append("lmdb")
    with pytest.raises(BackendNotFoundError, match=re.escape("pip install 'supervm[lmdb]'")):
        supervm.open_storage("lmdb:///tmp/x")


def test_in_process_registration_by_class_and_by_string(cleanup_schemes: list[str]) -> None:
    register_backend("tagged", TaggedMemory)
    register_backend("tagged2", f"{__name__}:TaggedMemory")
    cleanup_schemes += ["tagged", "tagged2"]
    assert isinstance(supervm.open_storage("tagged://"), TaggedMemory)
    assert load_backend("tagged2") is TaggedMemory
    assert available_backends()["tagged"].source == "registered"


def test_driver_suffix_falls_back_to_base_scheme(cleanup_schemes: list[str]) -> None:
    register_backend("tagged", TaggedMemory)
    cleanup_schemes.append("tagged")
    assert load_backend("tagged+fastdriver") is TaggedMemory
    assert load_backend("TAGGED") is TaggedMemory


def test_registration_must_be_a_storage_class() -> None:
    with pytest.raises(TypeError):
        register_backend("bad", object)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        register_backend("", TaggedMemory)


def test_registered_target_that_is_not_storage(cleanup_schemes: list[str]) -> None:
    register_backend("notstore", "collections:OrderedDict")
    cleanup_schemes.append("notstore")
    with pytest.raises(BackendNotFoundError, match=r"not a supervm\.storage\.Storage subclass"):
        supervm.open_storage("notstore://")


def test_entry_points_are_listed_without_importing() -> None:
    infos = available_backends()
    assert infos["memory"].distribution == "supervm-core"
    assert infos["memory"].target == "supervm.memory:MemoryStorage"
    assert infos["memory"].version == supervm.__version__


def test_bad_urls_are_clear() -> None:
    for url in ["", "memory", "rocksdb:/no-slashes", "://x"]:
        with pytest.raises(InvalidURLError):
            supervm.open_storage(url)
    with pytest.raises(TypeError):
        supervm.open_storage(b"memory://")  # type: ignore[arg-type]
    with pytest.raises(InvalidURLError, match="unknown option"):
        supervm.open_storage("memory://?colour=blue")
    with pytest.raises(InvalidURLError, match="no host or path"):
        supervm.open_storage("memory://somewhere/else")


class _Recorder:
    def __init__(self) -> None:
        self.opened: list[str] = []

    @hookimpl
    def supervm_storage_opened(self, storage: supervm.Storage, url: supervm.StorageURL) -> None:
        self.opened.append(url.scheme)


def test_storage_opened_hook_sees_every_open() -> None:
    recorder = _Recorder()
    manager = plugin_manager()
    manager.register(recorder)
    try:
        supervm.open_storage("memory://").close()
    finally:
        manager.unregister(recorder)
    assert recorder.opened == ["memory"]


def test_register_backends_hook_registers(cleanup_schemes: list[str]) -> None:
    import supervm.registry as registry

    class Plugin:
        @hookimpl
        def supervm_register_backends(self, register):  # type: ignore[no-untyped-def]
            register("hooked", TaggedMemory)

    manager = plugin_manager()
    plugin = Plugin()
    manager.register(plugin)
    cleanup_schemes.append("hooked")
    saved = registry._hooks_loaded
    registry._hooks_loaded = False
    try:
        assert load_backend("hooked") is TaggedMemory
    finally:
        manager.unregister(plugin)
        registry._hooks_loaded = saved


def test_every_hook_is_documented() -> None:
    text = DOCS.read_text()
    hooks = [name for name in dir(SuperVMSpec) if name.startswith("supervm_")]
    assert hooks, "no hook specifications found"
    for name in hooks:
        assert f"### `{name}(" in text, f"hook {name} is not documented in docs/plugins.md"


def test_open_storage_without_create() -> None:
    assert supervm.StoreNotFoundError.__mro__[1] is supervm.StorageError
    with supervm.open_storage("memory://", create=False) as store:
        assert isinstance(store, MemoryStorage)
    with supervm.open_storage("memory://?create=false") as store:
        assert list(store.scan()) == []
    with pytest.raises(InvalidURLError, match="create"):
        supervm.open_storage("memory://?create=perhaps")


def test_create_false_reaches_the_back_end_as_an_option(cleanup_schemes: list[str]) -> None:
    seen: list[dict[str, str]] = []

    class Recording(MemoryStorage):
        schemes = ("recording",)

        @classmethod
        def from_url(cls, url: supervm.StorageURL) -> Recording:
            seen.append(dict(url.options))
            return cls()

    register_backend("recording", Recording)
    cleanup_schemes.append("recording")
    supervm.open_storage("recording://?create=true", create=False).close()
    supervm.open_storage("recording://").close()
    assert seen == [{"create": "false"}, {}]
