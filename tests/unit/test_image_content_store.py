import hashlib
import os
import threading

import pytest

from imageservice.content_store import ContentStore, SharedWork
from imageservice.unpack import LayerRefused, split_name
from pycri_common.errors import Cancelled, InvalidArgument


def _d(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_blob_is_verified_and_written_atomically(tmp_path):
    cs = ContentStore(tmp_path)
    data = b"hello" * 1000
    cs.ingest(_d(data), len(data), [data[:10], data[10:]])
    assert cs.read(_d(data)) == data
    with pytest.raises(InvalidArgument) as exc:
        cs.ingest(_d(b"other"), 5, [b"evil!"])
    assert "does not match" in str(exc.value)
    with pytest.raises(InvalidArgument):
        cs.ingest(_d(b"abc"), 2, [b"abc"])       # larger than the descriptor says
    with pytest.raises(InvalidArgument):
        cs.ingest(_d(b"abc"), 4, [b"abc"])       # shorter
    assert not cs.exists(_d(b"other")) and list(cs.ingest_dir.iterdir()) == []
    assert cs.all_digests() == {_d(data)}
    with pytest.raises(InvalidArgument):
        cs.path("sha256:../../etc")


def test_shared_work_runs_once_and_shares_the_result():
    sw = SharedWork()
    started, release = threading.Event(), threading.Event()
    calls = []

    def work():
        calls.append(1)
        started.set()
        release.wait(5)
        return 42
    results = []
    t1 = threading.Thread(target=lambda: results.append(sw.run("k", work)))
    t1.start()
    started.wait(5)
    t2 = threading.Thread(target=lambda: results.append(sw.run("k", work)))
    t2.start()
    while True:   # t2 is waiting on t1's future
        with sw._lock:
            if sw._running["k"]._condition._waiters:
                break
    release.set()
    t1.join()
    t2.join()
    assert results == [42, 42] and len(calls) == 1 and sw.in_progress() == 0


def test_shared_work_waiter_retries_when_the_owner_was_cancelled():
    sw = SharedWork()
    started, release = threading.Event(), threading.Event()

    def cancelled():
        started.set()
        release.wait(5)
        raise Cancelled("owner went away")
    errors, results = [], []

    def owner():
        try:
            sw.run("k", cancelled)
        except Cancelled as e:
            errors.append(e)
    t1 = threading.Thread(target=owner)
    t1.start()
    started.wait(5)
    t2 = threading.Thread(target=lambda: results.append(sw.run("k", lambda: 7,
                                                               retry_on=(Cancelled,))))
    t2.start()
    while True:
        with sw._lock:
            if sw._running["k"]._condition._waiters:
                break
    release.set()
    t1.join()
    t2.join()
    assert len(errors) == 1 and results == [7]


@pytest.mark.parametrize("name,parts", [
    ("a/b", ["a", "b"]), ("./a//b/", ["a", "b"]), ("./", []), (".", []),
])
def test_split_name(name, parts):
    assert split_name(name) == parts


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a/.."])
def test_split_name_refuses_escapes(name):
    with pytest.raises(LayerRefused):
        split_name(name)


def test_oversized_image_config_is_refused_before_download(tmp_path):
    """The config blob is read whole into memory (and stored in sqlite): a descriptor
    announcing a huge one is refused before anything is fetched."""
    import json

    from imageservice.manager import MAX_CONFIG_BYTES, ImageManager
    fetched = []
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + "a" * 64, "size": MAX_CONFIG_BYTES + 1},
        "layers": []}).encode()
    mgr = ImageManager(tmp_path / "images")
    try:
        with pytest.raises(InvalidArgument, match="larger than"):
            mgr.install_local(manifest, "sha256:" + hashlib.sha256(manifest).hexdigest(),
                              ["example.com/big:1"],
                              fetch=lambda d: fetched.append(d.digest) or iter([b"x"]))
        assert fetched == []
        assert mgr.content.all_digests() == set()
    finally:
        mgr.close()


def test_a_writer_left_without_commit_removes_its_partial_file(tmp_path):
    cs = ContentStore(tmp_path)
    data = b"partial blob"
    with cs.writer(_d(data), len(data)) as w:
        w.write(data[:5])
        assert len(os.listdir(tmp_path / "ingest")) == 1
    assert os.listdir(tmp_path / "ingest") == [] and not cs.exists(_d(data))
    with cs.writer(_d(data), len(data)) as w:
        w.write(data)
        w.verify()
        assert w.commit() == cs.path(_d(data))
    assert cs.read(_d(data)) == data and os.listdir(tmp_path / "ingest") == []
    with pytest.raises(InvalidArgument, match="does not match its digest"):
        with cs.writer(_d(b"other"), len(data)) as w:
            w.write(data)
            w.commit()
    assert os.listdir(tmp_path / "ingest") == []
