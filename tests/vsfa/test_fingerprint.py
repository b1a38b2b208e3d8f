"""model_fingerprint: whole files hashed, big ones once (digest cache by path, size, mtime), old keys kept."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

import vsfa.io as vio
from vsfa.io import fingerprint_matches, model_fingerprint

BIG = 4096  # the lowered "big file" threshold of these tests (256 MB in use)


@pytest.fixture
def big(monkeypatch, tmp_path):
    """Files over 4 KB count as big; the legacy sampling reads 512 bytes at each end; the cache is in tmp."""
    monkeypatch.setattr(vio, "DIGEST_CACHE_MIN_BYTES", BIG)
    monkeypatch.setattr(vio, "_LEGACY_SAMPLE", 512)
    monkeypatch.setenv("VSFA_CACHE", str(tmp_path / "cache"))
    reads: list[str] = []
    real = vio.sha256_file

    def counting(path, *args, **kwargs):
        reads.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(vio, "sha256_file", counting)
    return reads


def _model(folder, middle: bytes):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"h" * 2048 + middle + b"t" * 2048)
    return folder


def _legacy_fingerprint(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and (p.suffix == ".safetensors" or p.name == "config.json"):
            h.update(p.name.encode())
            h.update(vio._legacy_digest(p).encode())
    return h.hexdigest()


def test_small_model_fingerprints_are_unchanged(tiny_model):
    """Files up to the threshold take the same path as before: name + SHA-256 of the whole file."""
    folder = tiny_model("llava")
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and (p.suffix in {".safetensors", ".bin", ".gguf", ".pt"} or p.name == "config.json"):
            h.update(p.name.encode())
            h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode())
    assert model_fingerprint(folder) == h.hexdigest()


def test_big_files_differing_in_the_middle_do_not_collide(big, tmp_path):
    a = _model(tmp_path / "a", b"A" * 4096)
    b = _model(tmp_path / "b", b"B" * 4096)
    assert _legacy_fingerprint(a) == _legacy_fingerprint(b)  # the old sampled rule collides
    assert model_fingerprint(a) != model_fingerprint(b)


def test_big_file_is_read_once_then_again_when_touched(big, tmp_path):
    a = _model(tmp_path / "a", b"A" * 4096)
    first = model_fingerprint(a)
    assert big.count("model.safetensors") == 1
    cache = json.loads((tmp_path / "cache" / vio.DIGEST_CACHE_FILE).read_text())
    assert list(cache) == [str((a / "model.safetensors").resolve())]
    assert model_fingerprint(a) == first
    assert big.count("model.safetensors") == 1  # served from the cache
    weights = a / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert model_fingerprint(a) == first
    assert big.count("model.safetensors") == 2  # touched: hashed again
    weights.write_bytes(b"h" * 2048 + b"C" * 4096 + b"t" * 2048)  # same size, new content
    assert model_fingerprint(a) != first


def test_a_broken_or_unwritable_cache_only_costs_a_rehash(big, tmp_path, monkeypatch):
    a = _model(tmp_path / "a", b"A" * 4096)
    want = model_fingerprint(a)
    (tmp_path / "cache" / vio.DIGEST_CACHE_FILE).write_text("{not json")
    assert model_fingerprint(a) == want
    assert json.loads((tmp_path / "cache" / vio.DIGEST_CACHE_FILE).read_text())  # rewritten whole
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("VSFA_CACHE", str(blocked))  # the cache cannot be written at all
    assert model_fingerprint(a) == want


def test_concurrent_writers_never_leave_a_partial_cache(big, tmp_path):
    folders = [_model(tmp_path / f"m{i}", bytes([65 + i]) * 4096) for i in range(6)]
    cache = tmp_path / "cache" / vio.DIGEST_CACHE_FILE
    errors: list[BaseException] = []

    def work(folder):
        try:
            for _ in range(5):
                model_fingerprint(folder)
                if cache.exists():
                    json.loads(cache.read_text())  # always whole JSON, never half-written
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(json.loads(cache.read_text())) <= {str((f / "model.safetensors").resolve()) for f in folders}
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]


def test_manifests_with_the_old_sampled_fingerprint_still_match(big, tmp_path):
    a = _model(tmp_path / "a", b"A" * 4096)
    b = _model(tmp_path / "b", b"B" * 4096)
    assert fingerprint_matches(model_fingerprint(a), a)
    assert fingerprint_matches(_legacy_fingerprint(a), a)  # recorded before whole-file hashing
    assert not fingerprint_matches(model_fingerprint(a), b)
