"""Leaderboard files: the `mteb/<model>/<revision>/<Task>.json` layout, written with or without mteb installed,
names the model by its hub id (never a local path) and the task's dataset revision, and loads with mteb's own
loaders (those tests skip when mteb is not installed)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil

import pytest

from mbert_retrieval.eval.datasets import MTEB_REVISIONS, task_revision
from mbert_retrieval.eval.evaluate import evaluate_model
from mbert_retrieval.eval.results import MTEB_FORMAT_VERSION, NO_REVISION, model_identity, mteb_version

QUIET = {"show_progress": False}
SHA = re.compile(r"[0-9a-f]{40}")


@pytest.fixture
def without_mteb(monkeypatch):
    """Make the installed mteb (if any) invisible to `importlib.metadata.version`, as on a machine without it."""
    real = importlib.metadata.version

    def version(name):
        if name.lower() == "mteb":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)


@pytest.fixture
def two_tasks(tmp_path, make_toy_beir):
    """A local copy named like a BEIR set (task SciFact) and a plain local folder."""
    corpus = {"d1": "red apples and green pears", "d2": "fast cars on the road", "d3": "apples grow on trees",
              "d4": "python code for sorting lists"}
    queries = {"q1": "apples", "q2": "sorting lists in python"}
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d4": 1}}
    return [make_toy_beir(tmp_path / "data" / "scifact", corpus, queries, qrels),
            make_toy_beir(tmp_path / "data" / "toy", corpus, queries, qrels)]


def _task_files(folder):
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json") if p.name != "model_meta.json"}


def test_mteb_version_written_without_mteb(tmp_path, two_tasks, fake_models, without_mteb):
    assert mteb_version() == MTEB_FORMAT_VERSION
    rep = evaluate_model(fake_models["bow"](), two_tasks, k=10, output_dir=tmp_path / "out", **QUIET)
    for task, res in _task_files(rep.files["mteb"]).items():
        assert res["mteb_version"] == MTEB_FORMAT_VERSION, task
    for dr in rep.datasets.values():
        assert json.loads(dr.files["results"].read_text())["mteb_version"] == MTEB_FORMAT_VERSION


def test_dataset_revisions(tmp_path, two_tasks, fake_models):
    rep = evaluate_model(fake_models["bow"](), two_tasks, k=10, output_dir=tmp_path / "out", **QUIET)
    files = _task_files(rep.files["mteb"])
    assert set(files) == {"SciFact", "toy"}
    # a BEIR set: the revision of MTEB's copy of the task (mteb's metadata, else the pinned table)
    assert files["SciFact"]["dataset_revision"] == task_revision("SciFact")
    assert SHA.fullmatch(files["SciFact"]["dataset_revision"])
    assert rep.datasets["scifact"].dataset_revision == task_revision("SciFact")
    # any other local folder has no hub revision: its content fingerprint stands in (a string, as mteb requires)
    assert files["toy"]["dataset_revision"] == rep.datasets["toy"].dataset_revision
    assert files["toy"]["dataset_revision"] not in MTEB_REVISIONS.values()
    assert len(files["toy"]["dataset_revision"]) == 64


def test_task_revision_table_without_mteb(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mteb", None)  # `import mteb` raises ImportError
    assert task_revision("SciFact") == MTEB_REVISIONS["SciFact"]
    assert task_revision("CQADupstackGamingRetrieval") == MTEB_REVISIONS["CQADupstackGamingRetrieval"]
    assert task_revision("toy") is None


def test_local_model_is_named_by_folder_not_path(tmp_path, two_tasks, fake_models, caplog):
    folder = tmp_path / "runs" / "tuned" / "final"
    folder.mkdir(parents=True)
    model = fake_models["bow"](model_id=str(folder), revision=None)
    rep = evaluate_model(model, two_tasks, k=10, output_dir=tmp_path / "out", **QUIET)
    assert rep.model_name == "local/final"
    assert rep.files["mteb"] == tmp_path / "out" / "mteb" / "local__final" / NO_REVISION
    meta = json.loads((rep.files["mteb"] / "model_meta.json").read_text())
    assert meta["name"] == "local/final" and meta["revision"] == NO_REVISION
    for res in _task_files(rep.files["mteb"]).values():
        assert res["model_name"] == "local/final" and str(folder) not in json.dumps(res)
    assert "local folder with no hub id" in caplog.text  # the user is told why
    # a name chosen by the user wins
    named = evaluate_model(fake_models["bow"](model_id=str(folder), revision=None), two_tasks[:1], k=10,
                           output_dir=tmp_path / "out2", model_name="me/my-model", model_revision="v1", **QUIET)
    assert named.files["mteb"] == tmp_path / "out2" / "mteb" / "me__my-model" / "v1"


def test_model_identity(tmp_path, fake_models):
    # a folder in the Hugging Face cache names its hub id and commit
    snap = tmp_path / "hub" / "models--org--some-model" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    ident = model_identity(fake_models["bow"](model_id=str(snap), revision=None))
    assert (ident.name, ident.revision, ident.note) == ("org/some-model", "a" * 40, None)
    # a hub id stays as it is; the snapshot it was loaded from gives the commit
    hub = fake_models["bow"](model_id="org/some-model", revision=None)
    hub.resolved = type("Resolved", (), {"path": str(snap)})()
    assert (model_identity(hub).name, model_identity(hub).revision) == ("org/some-model", "a" * 40)
    assert model_identity(fake_models["bow"](model_id="org/other", revision="r9")).revision == "r9"
    # a folder saved by this package from a hub model records that model as `adapted_from`, not as its name
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "mbert_retrieval.json").write_text(json.dumps({"kind": "dense", "source_model_id": "org/base"}))
    ident = model_identity(fake_models["bow"](model_id=str(saved), revision=None))
    assert (ident.name, ident.adapted_from, ident.location) == ("local/saved", "org/base", str(saved))


def test_packaged_model_folder_is_named_by_its_hub_id(minilm_path, fake_models):
    from mbert_retrieval.hub import FALLBACK_MODEL_ID

    ident = model_identity(fake_models["bow"](model_id=minilm_path, revision=None))
    assert ident.name == FALLBACK_MODEL_ID and ident.note is None


# ------------------------------------------------------------------------------ with mteb's own loaders
def test_files_load_with_mteb(tmp_path, two_tasks, fake_models, without_mteb, monkeypatch):
    """The files, written as on a machine without mteb, load with mteb's `TaskResult.from_disk` and its results
    cache (`ResultCache.load_results`), with the same scores."""
    mteb = pytest.importorskip("mteb", reason="mteb is not installed (pip install mteb to check the files with it)")
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))
    from mteb import TaskResult

    model = fake_models["bow"](model_id="org/hashed-bow", revision="r1")
    rep = evaluate_model(model, two_tasks, k=10, output_dir=tmp_path / "out", **QUIET)
    scores = {dr.task_name: dr.result["ndcg_at_10"] for dr in rep.datasets.values()}
    for path in rep.files["mteb"].glob("*.json"):
        if path.name == "model_meta.json":
            continue
        res = TaskResult.from_disk(path)
        assert res.task_name == path.stem
        assert res.get_score() == pytest.approx(scores[path.stem])
        assert res.mteb_version == MTEB_FORMAT_VERSION
    scifact = TaskResult.from_disk(rep.files["mteb"] / "SciFact.json").validate_and_filter_scores()
    assert scifact.dataset_revision == mteb.get_task("SciFact").metadata.dataset["revision"]
    assert scifact.get_score() == pytest.approx(scores["SciFact"])
    # model_meta.json validates as mteb's ModelMeta
    from mteb.models.model_meta import ModelMeta

    meta = ModelMeta.model_validate(json.loads((rep.files["mteb"] / "model_meta.json").read_text()))
    assert (meta.name, meta.revision) == ("org/hashed-bow", "r1")
    # the layout mteb's results cache reads: results/<model>/<revision>/<Task>.json
    cache = tmp_path / "cache"
    shutil.copytree(tmp_path / "out" / "mteb", cache / "results")
    loaded = mteb.ResultCache(cache_path=cache).load_results(include_remote=False)
    (model_result,) = loaded.model_results
    assert (model_result.model_name, model_result.model_revision) == ("org/hashed-bow", "r1")
    assert {t.task_name: t.get_score() for t in model_result.task_results} == pytest.approx(scores)


def test_local_model_files_load_with_mteb(tmp_path, two_tasks, fake_models, monkeypatch):
    pytest.importorskip("mteb", reason="mteb is not installed (pip install mteb to check the files with it)")
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))
    from mteb.models.model_meta import ModelMeta

    folder = tmp_path / "runs" / "final"
    folder.mkdir(parents=True)
    rep = evaluate_model(fake_models["bow"](model_id=str(folder), revision=None), two_tasks[:1], k=10,
                         output_dir=tmp_path / "out", **QUIET)
    meta = ModelMeta.model_validate(json.loads((rep.files["mteb"] / "model_meta.json").read_text()))
    assert meta.name == "local/final" and meta.model_name_as_path() == rep.files["mteb"].parent.name

