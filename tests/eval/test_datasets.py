"""Dataset resolution: local folders, BEIR names (download monkeypatched), CoIR hub sets (load_dataset
monkeypatched). Nothing here touches the network."""

from __future__ import annotations

import shutil

import pytest

import mbert_retrieval.eval.datasets as dsmod
from mbert_retrieval.data import BeirDataset, DataError
from mbert_retrieval.eval.datasets import DatasetUnavailable, ResolvedDataset, resolve_dataset


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MBERT_RETRIEVAL_DATA", raising=False)
    monkeypatch.delenv("MBERT_RETRIEVAL_OFFLINE", raising=False)
    monkeypatch.setenv("MBERT_RETRIEVAL_CACHE", str(tmp_path / "default-cache"))


def test_local_folder(toy_beir):
    ds = resolve_dataset(toy_beir)
    assert isinstance(ds, ResolvedDataset) and ds.source == "local" and ds.name == "toy"
    assert ds.task_name == "toy" and ds.revision is None and ds.languages == ["eng-Latn"]
    assert set(ds.data.queries) == {"q1", "q2"}
    assert len(ds.fingerprint) == 64 and ds.fingerprint == resolve_dataset(str(toy_beir)).fingerprint
    # a folder holding exactly one BEIR folder (what unzipping a BEIR archive gives)
    assert resolve_dataset(toy_beir.parent).name == "toy"


def test_local_real_scifact_gets_mteb_name(shared_data):
    ds = resolve_dataset(shared_data / "scifact")
    assert ds.task_name == "SciFact" and len(ds.data.queries) == 300
    code = resolve_dataset(shared_data / "cosqa")
    assert code.task_name == "cosqa"  # not CoIR's CosQA: a different corpus
    assert "python-Code" in code.languages


def test_fingerprint_changes_with_content(toy_beir):
    before = resolve_dataset(toy_beir).fingerprint
    text = (toy_beir / "corpus.jsonl").read_text().replace("red apples", "green apples")
    (toy_beir / "corpus.jsonl").write_text(text)
    assert resolve_dataset(toy_beir).fingerprint != before


def test_beir_name_from_data_dirs(monkeypatch, shared_data):
    monkeypatch.setenv("MBERT_RETRIEVAL_DATA", str(shared_data))
    for spec in ("scifact", "beir/SciFact"):
        ds = resolve_dataset(spec)
        assert ds.source == "local" and ds.task_name == "SciFact" and ds.location == str(shared_data / "scifact")


def test_beir_download(monkeypatch, tmp_path, toy_beir):
    calls = []

    def fake_download(url, out_dir, chunk_size=1024):
        calls.append((url, out_dir))
        shutil.copytree(toy_beir, f"{out_dir}/nfcorpus")
        return f"{out_dir}/nfcorpus"

    monkeypatch.setattr("beir.util.download_and_unzip", fake_download)
    ds = resolve_dataset("nfcorpus", cache_dir=tmp_path / "cache")
    assert calls == [("https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/nfcorpus.zip",
                      str(tmp_path / "cache" / "beir"))]
    assert ds.source == "beir" and ds.task_name == "NFCorpus" and ds.name == "nfcorpus"
    resolve_dataset("nfcorpus", cache_dir=tmp_path / "cache")  # second time from the cache
    assert len(calls) == 1


def test_beir_download_offline(monkeypatch, tmp_path):
    def offline(url, out_dir, chunk_size=1024):
        (tmp_path / "cache" / "beir").mkdir(parents=True, exist_ok=True)
        (tmp_path / "cache" / "beir" / "fiqa.zip").write_bytes(b"partial")
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr("beir.util.download_and_unzip", offline)
    with pytest.raises(DatasetUnavailable, match="could not download BEIR dataset 'fiqa'.*offline"):
        resolve_dataset("fiqa", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "beir" / "fiqa.zip").exists()  # no truncated zip left behind
    monkeypatch.setenv("MBERT_RETRIEVAL_OFFLINE", "1")
    with pytest.raises(DatasetUnavailable, match="MBERT_RETRIEVAL_OFFLINE"):
        resolve_dataset("fiqa", cache_dir=tmp_path / "cache")


class FakeHub:
    """Stands in for datasets.load_dataset with the MTEB/CoIR layout (lists of row dicts)."""

    def __init__(self, layout: str = "configs", qrels_rows=None):
        self.calls: list[tuple] = []
        self.layout = layout
        self.corpus = [{"_id": "c1", "title": "", "text": "how to sort a list"}, {"_id": 2, "text": "use sorted()"}]
        self.queries = [{"_id": "q1", "text": "sort list python"}, {"_id": "q2", "text": "train query"}]
        self.qrels = qrels_rows or [{"query-id": "q1", "corpus-id": "2", "score": 1}]

    def __call__(self, path, name=None, split=None, revision=None, cache_dir=None, **kw):
        self.calls.append((path, name, split, revision))
        if self.layout == "legacy":
            if path.endswith("-queries-corpus"):
                return {"corpus": self.corpus, "queries": self.queries}
            if path.endswith("-qrels"):
                return self.qrels
            raise ValueError(f"BuilderConfig '{name}' not found. Available: ['default']")
        if name in ("corpus", "python-corpus"):
            return self.corpus
        if name in ("queries", "python-queries"):
            return self.queries
        if name in ("default", "python-qrels") and split == "test":
            return self.qrels
        raise ValueError(f"Unknown split {split!r}")


@pytest.mark.parametrize("spec", ["coir/stackoverflow-qa", "CoIR-Retrieval/stackoverflow-qa", "stackoverflow-qa"])
def test_coir_hub_layout(monkeypatch, tmp_path, spec):
    hub = FakeHub()
    monkeypatch.setattr(dsmod, "load_dataset", hub)
    ds = resolve_dataset(spec, cache_dir=tmp_path)
    rev = "db8f169f3894c14a00251061f957b2063eef2bd5"
    assert hub.calls == [("CoIR-Retrieval/stackoverflow-qa", "corpus", "corpus", rev),
                         ("CoIR-Retrieval/stackoverflow-qa", "queries", "queries", rev),
                         ("CoIR-Retrieval/stackoverflow-qa", "default", "test", rev)]
    assert ds.source == "hub" and ds.task_name == "StackOverflowQA" and ds.revision == rev
    assert ds.name == "stackoverflow-qa" and ds.hf_subset == "default"
    assert set(ds.data.corpus) == {"c1", "2"} and ds.data.corpus["2"].text == "use sorted()"
    assert ds.data.queries == {"q1": "sort list python"}  # filtered to the split's qrels
    assert ds.data.qrels == {"q1": {"2": 1}}


def test_coir_sets_are_pinned():
    """Every CoIR set loads a fixed hub commit, so a results file names the data it was computed on."""
    import re

    unpinned = [name for name, task in dsmod.COIR_TASKS.items()
                if not (task.revision and re.fullmatch(r"[0-9a-f]{40}", task.revision))]
    assert unpinned == []


def test_coir_codesearchnet_language_configs(monkeypatch, tmp_path):
    hub = FakeHub()
    monkeypatch.setattr(dsmod, "load_dataset", hub)
    ds = resolve_dataset("coir/codesearchnet-python", cache_dir=tmp_path, revision="main")
    assert [c[:2] for c in hub.calls] == [("CoIR-Retrieval/CodeSearchNet", "python-corpus"),
                                          ("CoIR-Retrieval/CodeSearchNet", "python-queries"),
                                          ("CoIR-Retrieval/CodeSearchNet", "python-qrels")]
    assert hub.calls[0][3] == "main" and ds.hf_subset == "python" and "python-Code" in ds.languages


def test_coir_legacy_layout_fallback(monkeypatch, tmp_path):
    hub = FakeHub(layout="legacy")
    monkeypatch.setattr(dsmod, "load_dataset", hub)
    ds = resolve_dataset("coir/codetrans-dl", cache_dir=tmp_path)
    assert ("CoIR-Retrieval/codetrans-dl-queries-corpus", None, None, None) in hub.calls
    assert ("CoIR-Retrieval/codetrans-dl-qrels", None, "test", None) in hub.calls
    assert ds.data.qrels == {"q1": {"2": 1}} and ds.task_name == "CodeTransOceanDL"


def test_hub_offline_and_bad_rows(monkeypatch, tmp_path):
    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(dsmod, "load_dataset", offline)
    with pytest.raises(DatasetUnavailable, match="CoIR-Retrieval/apps.*offline"):
        resolve_dataset("coir/apps", cache_dir=tmp_path)
    monkeypatch.setattr(dsmod, "load_dataset", FakeHub(qrels_rows=[{"query-id": "q1", "corpus-id": "c1", "score": "x"}]))
    with pytest.raises(DataError, match=r"row 0.*integer") as exc:
        resolve_dataset("coir/apps", cache_dir=tmp_path)
    assert "hf://datasets/CoIR-Retrieval/apps [qrels]" in str(exc.value)
    monkeypatch.setattr(dsmod, "load_dataset", FakeHub(qrels_rows=[{"query-id": "q7", "corpus-id": "c1", "score": 1}]))
    with pytest.raises(DataError, match="q7"):
        resolve_dataset("coir/apps", cache_dir=tmp_path)


def test_unknown_specs(tmp_path):
    with pytest.raises(DatasetUnavailable, match="unknown CoIR dataset"):
        resolve_dataset("coir/nope", cache_dir=tmp_path)
    with pytest.raises(DatasetUnavailable, match="unknown dataset"):
        resolve_dataset("definitely-not-a-dataset", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a BEIR folder"):
        resolve_dataset(tmp_path / "empty")


def test_in_memory_dataset():
    data = BeirDataset(corpus={}, queries={"q": "x"}, qrels={"q": {"d": 1}}, name="mem set")
    ds = resolve_dataset(data)
    assert ds.source == "memory" and ds.name == "mem_set" and ds.data is data


def test_mldr_by_name(monkeypatch, tmp_path):
    """MLDR (English) by name: MTEB 2.x's copy, pinned, with its <lang>-corpus / -queries / -qrels configs.
    (Offline here: this checks what is asked of the hub, not the hub itself.)"""
    calls = []
    corpus = [{"_id": "d1", "text": "a very long document " * 50}, {"_id": "d2", "text": "another"}]
    queries = [{"_id": "q1", "text": "long document"}]
    qrels = [{"query-id": "q1", "corpus-id": "d1", "score": 1}]

    def hub(path, name=None, split=None, revision=None, cache_dir=None, **kw):
        calls.append((path, name, split, revision))
        if name == "en-corpus":
            return corpus if split in (None, "corpus") else _raise(f"Unknown split {split!r}")
        if name == "en-queries":
            return {"test": queries} if split is None else _raise(f"Unknown split {split!r}. Should be one of ['test']")
        if name == "en-qrels" and split == "test":
            return qrels
        raise ValueError(f"BuilderConfig {name!r} not found")

    def _raise(msg):
        raise ValueError(msg)

    monkeypatch.setattr(dsmod, "load_dataset", hub)
    ds = resolve_dataset("mldr", cache_dir=tmp_path)
    rev = "837028901907a7d419b4ab906f28e011ce1cc824"
    assert calls[0] == ("mteb/MultiLongDocRetrieval", "en-corpus", "corpus", rev)
    assert ("mteb/MultiLongDocRetrieval", "en-queries", None, rev) in calls  # its only split, named "test"
    assert ds.task_name == "MultiLongDocRetrieval" and ds.hf_subset == "en" and ds.revision == rev
    assert ds.data.queries == {"q1": "long document"} and ds.data.qrels == {"q1": {"d1": 1}}
