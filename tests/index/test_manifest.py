import json

import pytest

from mbert_retrieval.index.errors import IndexManifestError, IndexMismatchError
from mbert_retrieval.index.manifest import IndexManifest

from .conftest import FakeColbertModel, FakeDenseModel


def _m(**kw):
    return IndexManifest(**{"kind": "dense", "index_type": "flat", "model_id": "fake/dense", "dim": 32, **kw})


def test_roundtrip(tmp_path):
    m = _m(quantization="int8", params={"a": 1}, files={"dense.000001.faiss": {"sha256": "ab", "bytes": 3}})
    m.save(tmp_path)
    back = IndexManifest.load(tmp_path)
    assert back.to_dict() == m.to_dict()
    assert not [p for p in tmp_path.iterdir() if p.name != "manifest.json"]


@pytest.mark.parametrize(
    "field,value",
    [("dim", -3), ("dim", "32"), ("kind", "sparse"), ("index_type", "plaid"), ("metric", "l2"), ("quantization", "int4"),
     ("n_documents", -1), ("state", "done"), ("created_at", "yesterday"), ("files", {"x": {"sha256": 1}}),
     ("files", {"../dense.000001.faiss": {"sha256": "ab", "bytes": 3}}), ("index_id", "not-a-uuid"), ("model_fingerprint", 3)],
)  # fmt: skip
def test_invalid_fields_are_named(tmp_path, field, value):
    data = _m().to_dict()
    data[field] = value
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(IndexManifestError, match=field):
        IndexManifest.load(tmp_path)


def test_missing_unknown_and_corrupt(tmp_path):
    data = _m().to_dict()
    del data["dim"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(IndexManifestError, match="dim"):
        IndexManifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**_m().to_dict(), "bogus": 1}))
    with pytest.raises(IndexManifestError, match="bogus"):
        IndexManifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(_m().to_dict())[:40])
    with pytest.raises(IndexManifestError, match="corrupt or truncated"):
        IndexManifest.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        IndexManifest.load(tmp_path / "nothing")


def test_newer_format_rejected():
    with pytest.raises(IndexMismatchError, match="format_version"):
        _m(format_version=99)


def test_check_compatible():
    m = _m()
    m.check_compatible(FakeDenseModel(dim=32))
    with pytest.raises(IndexMismatchError, match="dim"):
        m.check_compatible(FakeDenseModel(dim=16))
    with pytest.raises(IndexMismatchError, match="other/model"):
        m.check_compatible(FakeDenseModel(model_id="other/model"))
    with pytest.raises(IndexMismatchError, match="colbert"):
        m.check_compatible(FakeColbertModel(dim=32, model_id="fake/dense"))


def test_format_1_manifest_still_loads(tmp_path):
    """Folders written before index ids and model fingerprints existed open as they are."""
    data = _m().to_dict()
    del data["index_id"], data["model_fingerprint"]
    data["format_version"] = 1
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    m = IndexManifest.load(tmp_path)
    assert m.index_id is None and m.model_fingerprint is None and m.format_version == 1
    m.check_compatible(FakeDenseModel(dim=32))


def test_model_fingerprint_mismatch():
    built = FakeDenseModel(dim=32)
    built.fingerprint = "sha256:aaa"
    other = FakeDenseModel(dim=32)
    other.fingerprint = "sha256:bbb"
    m = _m(model_fingerprint="sha256:aaa")
    m.check_compatible(built)
    m.check_compatible(FakeDenseModel(dim=32))  # a model that gives no fingerprint is not refused
    _m().check_compatible(other)  # nor an index that recorded none
    with pytest.raises(IndexMismatchError, match=r"different weights of fake/dense \(fingerprint sha256:aaa != sha256:bbb\); re-index"):
        m.check_compatible(other)
