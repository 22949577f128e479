"""Resolve a dataset spec to a `BeirDataset` plus what the results files need (task name, revision, languages).

Specs, tried in this order:
- a local BEIR folder (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), or a folder holding exactly one;
- a BEIR name (`scifact`, `beir/nfcorpus`, `cqadupstack/android`): first looked up in the folders named by
  `$MBERT_RETRIEVAL_DATA` (os.pathsep-separated) and in the cache, else downloaded from the standard BEIR URL
  with `beir.util.download_and_unzip` into `<cache>/beir/`;
- a CoIR set: `coir/stackoverflow-qa`, `CoIR-Retrieval/stackoverflow-qa`, a bare CoIR name (`stackoverflow-qa`),
  `coir/codesearchnet-python`, `coir/codesearchnet-ccr-go`;
- any other `owner/name` hub dataset in the same (MTEB/CoIR) layout.

Hub layout (MTEB's, which CoIR follows): config `corpus` split `corpus` (`_id`, `title`?, `text`), config
`queries` split `queries` (`_id`, `text`), config `default` split `<split>` (`query-id`, `corpus-id`, `score`).
CodeSearchNet(-ccr) use per-language configs `<lang>-corpus`, `<lang>-queries`, `<lang>-qrels`. When those
configs are missing, the older CoIR layout is tried: `<path>-queries-corpus` (splits `corpus`, `queries`) and
`<path>-qrels` (split `<split>`). CoIR sets are pinned to the revisions MTEB uses where known.

Results files name each dataset's revision: the hub revision loaded, or for the BEIR sets (read from BEIR's
zips or local copies) the revision of MTEB's hub copy of that task (`task_revision`), so MTEB's loaders and
leaderboard can compare them; other local folders have none (their content fingerprint stands in).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mbert_retrieval.data import BeirDataset, DataError, Document, document_text, read_beir_folder

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetUnavailable",
    "ResolvedDataset",
    "resolve_dataset",
    "default_cache_dir",
    "corpus_fingerprint",
    "dataset_fingerprint",
    "BEIR_URL",
    "BEIR_TASKS",
    "COIR_TASKS",
    "MTEB_REVISIONS",
    "task_revision",
    "load_dataset",
    "clear_download",
]

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
BEIR_TASKS: dict[str, str] = {  # BEIR name -> MTEB task name
    "scifact": "SciFact", "nfcorpus": "NFCorpus", "arguana": "ArguAna", "fiqa": "FiQA2018",
    "trec-covid": "TRECCOVID", "scidocs": "SCIDOCS", "quora": "QuoraRetrieval", "nq": "NQ",
    "hotpotqa": "HotpotQA", "fever": "FEVER", "climate-fever": "ClimateFEVER", "dbpedia-entity": "DBPedia",
    "msmarco": "MSMARCO", "webis-touche2020": "Touche2020",
}
CQADUPSTACK = ("android", "english", "gaming", "gis", "mathematica", "physics", "programmers", "stats", "tex",
               "unix", "webmasters", "wordpress")
BEIR_TASKS.update({f"cqadupstack/{s}": f"CQADupstack{s.capitalize()}Retrieval" for s in CQADUPSTACK})

# MTEB task name -> dataset revision of MTEB's hub copy of the BEIR set (mteb/<name>, converted from the same
# BEIR zips; MTEB's scores on it match ours). Copied from the task metadata of mteb 2.26.24
# (`mteb.get_task(name).metadata.dataset["revision"]`); `task_revision` asks mteb itself when it is installed.
MTEB_REVISIONS: dict[str, str] = {
    "SciFact": "d56462d0e63a25450459c4f213e49ffdb866f7f9",  # mteb/scifact
    "NFCorpus": "ec0fa4fe99da2ff19ca1214b7966684033a58814",  # mteb/nfcorpus
    "ArguAna": "c22ab2a51041ffd869aaddef7af8d8215647e41a",  # mteb/arguana
    "FiQA2018": "27a168819829fe9bcd655c2df245fb19452e8e06",  # mteb/fiqa
    "TRECCOVID": "bb9466bac8153a0349341eb1b22e06409e78ef4e",  # mteb/trec-covid
    "SCIDOCS": "f8c2fcf00f625baaa80f62ec5bd9e1fff3b8ae88",  # mteb/scidocs
    "QuoraRetrieval": "e4e08e0b7dbe3c8700f0daef558ff32256715259",  # mteb/quora
    "NQ": "b774495ed302d8c44a3a7ea25c90dbce03968f31",  # mteb/nq
    "HotpotQA": "ab518f4d6fcca38d87c25209f94beba119d02014",  # mteb/hotpotqa
    "FEVER": "bea83ef9e8fb933d90a2f1d5515737465d613e12",  # mteb/fever
    "ClimateFEVER": "47f2ac6acb640fc46020b02a5b59fdda04d39380",  # mteb/climate-fever
    "DBPedia": "c0f706b76e590d620bd6618b3ca8efdd34e2d659",  # mteb/dbpedia
    "MSMARCO": "c5a29a104738b98a9e76336939199e264163d4a0",  # mteb/msmarco
    "Touche2020": "a34f9a33db75fa0cbb21bb5cfc3dae8dc8bec93f",  # mteb/touche2020
    "CQADupstackAndroidRetrieval": "9be4c0e46342e8e3aff577a89b9a1ec9bc6b4af3",  # mteb/CQADupstackAndroidRetrieval
    "CQADupstackEnglishRetrieval": "ad9991cb51e31e31e430383c75ffb2885547b5f0",  # mteb/cqadupstack-english
    "CQADupstackGamingRetrieval": "4885aa143210c98657558c04aaf3dc47cfb54340",  # mteb/cqadupstack-gaming
    "CQADupstackGisRetrieval": "5003b3064772da1887988e05400cf3806fe491f2",  # mteb/cqadupstack-gis
    "CQADupstackMathematicaRetrieval": "90fceea13679c63fe563ded68f3b6f06e50061de",  # mteb/cqadupstack-mathematica
    "CQADupstackPhysicsRetrieval": "79531abbd1fb92d06c6d6315a0cbbbf5bb247ea4",  # mteb/cqadupstack-physics
    "CQADupstackProgrammersRetrieval": "6184bc1440d2dbc7612be22b50686b8826d22b32",  # mteb/cqadupstack-programmers
    "CQADupstackStatsRetrieval": "65ac3a16b8e91f9cee4c9828cc7c335575432a2a",  # mteb/cqadupstack-stats
    "CQADupstackTexRetrieval": "46989137a86843e03a6195de44b09deda022eec7",  # mteb/cqadupstack-tex
    "CQADupstackUnixRetrieval": "6c6430d3a6d36f8d2a829195bc5dc94d7e063e53",  # mteb/cqadupstack-unix
    "CQADupstackWebmastersRetrieval": "160c094312a0e1facb97e55eeddb698c0abe3571",  # mteb/cqadupstack-webmasters
    "CQADupstackWordpressRetrieval": "4ffe81d471b1924886b33c7567bfb200e9eec5c4",  # mteb/cqadupstack-wordpress
}


@dataclass(frozen=True)
class HubTask:
    path: str
    task_name: str
    revision: str | None
    languages: tuple[str, ...]
    hf_subset: str = "default"
    configs: tuple[str, str, str] = ("corpus", "queries", "default")


# CoIR sets on the hub, pinned to the revisions of the same repositories in mteb 2.26.24's task metadata. (mteb
# 2.x moved StackOverflowQA to mteb/StackOverflowQA @ 7b46f5eb; this loads CoIR's copy at the revision mteb 1.x
# pinned, and results files name the revision loaded.)
COIR_TASKS: dict[str, HubTask] = {
    "apps": HubTask("CoIR-Retrieval/apps", "AppsRetrieval", "f22508f96b7a36c2415181ed8bb76f76e04ae2d5",
                    ("eng-Latn", "python-Code")),
    "cosqa": HubTask("CoIR-Retrieval/cosqa", "CosQA", "bc5efb7e9d437246ce393ed19d772e08e4a79535", ("eng-Latn", "python-Code")),
    "synthetic-text2sql": HubTask("CoIR-Retrieval/synthetic-text2sql", "SyntheticText2SQL",
                                  "686b87296c3a0191b5d9415a00526c62db9fce09", ("eng-Latn", "sql-Code")),
    "codetrans-dl": HubTask("CoIR-Retrieval/codetrans-dl", "CodeTransOceanDL",
                            "281562cb8a1265ab5c0824bfa6ddcd9b0a15618f", ("python-Code",)),
    "codetrans-contest": HubTask("CoIR-Retrieval/codetrans-contest", "CodeTransOceanContest",
                                 "20da4eb20a4b17300c0986ee148c90867a7f2a4d",
                                 ("python-Code", "c++-Code")),
    "stackoverflow-qa": HubTask("CoIR-Retrieval/stackoverflow-qa", "StackOverflowQA",
                                "db8f169f3894c14a00251061f957b2063eef2bd5", ("eng-Latn",)),
    "codefeedback-st": HubTask("CoIR-Retrieval/codefeedback-st", "CodeFeedbackST",
                                "d213819e87aab9010628da8b73ab4eb337c89340", ("eng-Latn",)),
    "codefeedback-mt": HubTask("CoIR-Retrieval/codefeedback-mt", "CodeFeedbackMT",
                                "b0f12fa0c0dd67f59c95a5c33d02aeeb4c398c5f", ("eng-Latn",)),
}
for _lang in ("go", "java", "javascript", "php", "python", "ruby"):
    _cfg = (f"{_lang}-corpus", f"{_lang}-queries", f"{_lang}-qrels")
    COIR_TASKS[f"codesearchnet-{_lang}"] = HubTask(
        "CoIR-Retrieval/CodeSearchNet", "COIRCodeSearchNetRetrieval", "4adc7bc41202b5c13543c9c886a25f340634dab3",
        (f"{_lang}-Code", "eng-Latn"), _lang, _cfg)
    COIR_TASKS[f"codesearchnet-ccr-{_lang}"] = HubTask(
        "CoIR-Retrieval/CodeSearchNet-ccr", "CodeSearchNetCCRetrieval", "6e1effa2c03723c5fde48ee912b5ee08d4f211e8",
        (f"{_lang}-Code",), _lang, _cfg)

# languages of local copies (folder name -> MTEB language codes)
LOCAL_LANGUAGES = {"cosqa": ("eng-Latn", "python-Code"), "codesearchnet-ruby": ("eng-Latn", "ruby-Code")}


class DatasetUnavailable(RuntimeError):
    """A dataset could not be found locally and could not be downloaded (offline, no such dataset...)."""


class UnknownDataset(DatasetUnavailable, ValueError):
    """A dataset argument that names no folder, BEIR/CoIR dataset or hub dataset (bad input, exit code 2)."""


@dataclass
class ResolvedDataset:
    """A loaded dataset and its provenance."""

    name: str  # short, filesystem-safe name (output folder)
    data: BeirDataset
    task_name: str  # MTEB task name when known, else `name`
    split: str = "test"
    source: str = "local"  # "local" | "beir" | "hub" | "memory"
    revision: str | None = None  # hub revision; None for local data (see `fingerprint`)
    languages: list[str] = field(default_factory=lambda: ["eng-Latn"])
    hf_subset: str = "default"
    location: str | None = None  # folder or hub path
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        """Content hash of corpus, queries and qrels (stable across machines and paths)."""
        if self._fingerprint is None:
            self._fingerprint = dataset_fingerprint(self.data)
        return self._fingerprint


def task_revision(task_name: str) -> str | None:
    """The dataset revision MTEB uses for a BEIR task (`MTEB_REVISIONS` names them): from mteb's own task
    metadata when mteb is importable, else from `MTEB_REVISIONS`; None for any other task."""
    if task_name not in MTEB_REVISIONS:
        return None
    try:
        import mteb

        revision = mteb.get_task(task_name).metadata.dataset["revision"]
        if isinstance(revision, str) and revision:
            return revision
    except Exception as e:  # noqa: BLE001 - mteb absent, or a version without this task
        logger.debug("mteb has no revision for %s (%s: %s); using the pinned one", task_name, type(e).__name__, e)
    return MTEB_REVISIONS[task_name]


def default_cache_dir() -> Path:
    """`$MBERT_RETRIEVAL_CACHE`, else `~/.cache/mbert_retrieval`."""
    env = os.environ.get("MBERT_RETRIEVAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mbert_retrieval"


def corpus_fingerprint(doc_ids: Iterable[str], texts: Iterable[str]) -> str:
    """sha256 over (id, encoded text) pairs in order: identifies what a corpus embedding cache holds."""
    h = hashlib.sha256()
    n = 0
    for doc_id, text in zip(doc_ids, texts, strict=True):
        for part in (doc_id, text):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        n += 1
    h.update(n.to_bytes(8, "little"))
    return h.hexdigest()


def dataset_fingerprint(data: BeirDataset) -> str:
    """sha256 over corpus (ids, encoded texts), queries and qrels."""
    h = hashlib.sha256(corpus_fingerprint(data.corpus.keys(), map(document_text, data.corpus.values())).encode())
    h.update(corpus_fingerprint(data.queries.keys(), data.queries.values()).encode())
    for qid in sorted(data.qrels):
        for did in sorted(data.qrels[qid]):
            h.update(f"{qid}\t{did}\t{data.qrels[qid][did]}\n".encode())
    return h.hexdigest()


def load_dataset(*args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset`, imported lazily (the `datasets` package is the optional [hub] extra).
    Tests monkeypatch this module attribute."""
    try:
        from datasets import load_dataset as hf_load_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DatasetUnavailable("loading hub datasets needs the `datasets` package: pip install "
                                 "'mbert-retrieval[hub]'") from e
    return hf_load_dataset(*args, **kwargs)


# ------------------------------------------------------------------------------------------ resolution
def _beir_folder(path: Path) -> Path | None:
    if (path / "corpus.jsonl").is_file() or (path / "corpus.jsonl.gz").is_file():
        return path
    if path.is_dir():
        subs = [p for p in path.iterdir() if p.is_dir() and (p / "corpus.jsonl").is_file()]
        if len(subs) == 1:
            return subs[0]
    return None


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "dataset"


def _data_dirs(cache_dir: Path) -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("MBERT_RETRIEVAL_DATA", "").split(os.pathsep) if p]
    return dirs + [cache_dir / "beir"]


def _local(folder: Path, split: str, name: str | None = None) -> ResolvedDataset:
    data = read_beir_folder(folder, split)
    key = name or folder.name
    task = BEIR_TASKS.get(key.lower(), key)
    langs = list(LOCAL_LANGUAGES.get(key.lower(), ("eng-Latn",)))
    return ResolvedDataset(name=_safe_name(key), data=data, task_name=task, split=split, source="local",
                           languages=langs, location=str(folder))


def _download_beir(name: str, cache_dir: Path) -> Path:
    archive = name.split("/")[0]
    url = BEIR_URL.format(name=archive)
    out = cache_dir / "beir"
    try:
        from beir import util as beir_util

        beir_util.download_and_unzip(url, str(out))
    except Exception as e:  # network errors, truncated zips...
        partial = out / f"{archive}.zip"
        if partial.exists() and not (out / archive).is_dir():
            partial.unlink()  # do not leave a truncated zip that the next call would try to unzip
        raise DatasetUnavailable(
            f"could not download BEIR dataset {name!r} from {url} ({type(e).__name__}: {e}). If this machine is "
            f"offline, download and unzip that file elsewhere and pass the folder path, or put it under "
            f"{out} or a folder listed in $MBERT_RETRIEVAL_DATA.") from e
    folder = out / name
    if _beir_folder(folder) is None:
        raise DatasetUnavailable(f"downloaded {url} but found no BEIR folder at {folder}")
    return _beir_folder(folder)  # type: ignore[return-value]


def _rows(ds: Any, where: str) -> Iterable[tuple[int, dict]]:
    for i, row in enumerate(ds):
        if not isinstance(row, dict):
            raise DataError(f"row {i}: expected a mapping, got {type(row).__name__}", where)
        yield i, row


def _pick(row: dict, names: tuple[str, ...], where: str, i: int) -> Any:
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    raise DataError(f"row {i}: missing field (one of {', '.join(names)})", where, field=names[0])


def _convert_hub(corpus_ds: Any, queries_ds: Any, qrels_ds: Any, where: str) -> BeirDataset:
    corpus: dict[str, Document] = {}
    w = f"{where} [corpus]"
    for i, row in _rows(corpus_ds, w):
        did = str(_pick(row, ("_id", "id", "corpus-id", "doc_id"), w, i))
        if did in corpus:
            raise DataError(f"row {i}: duplicate document id {did!r}", w, field="_id")
        text = _pick(row, ("text", "contents", "content"), w, i)
        corpus[did] = Document(id=did, text=str(text), title=str(row.get("title") or ""))
    all_queries: dict[str, str] = {}
    w = f"{where} [queries]"
    for i, row in _rows(queries_ds, w):
        all_queries[str(_pick(row, ("_id", "id", "query-id", "query_id"), w, i))] = str(
            _pick(row, ("text", "query"), w, i))
    qrels: dict[str, dict[str, int]] = {}
    w = f"{where} [qrels]"
    for i, row in _rows(qrels_ds, w):
        qid = str(_pick(row, ("query-id", "query_id", "qid"), w, i))
        did = str(_pick(row, ("corpus-id", "corpus_id", "doc_id", "docid"), w, i))
        score = _pick(row, ("score", "relevance", "label"), w, i)
        try:
            if float(score) != int(float(score)):
                raise ValueError
            score = int(float(score))
        except (TypeError, ValueError):
            raise DataError(f"row {i}: score must be an integer, got {score!r}", w, field="score") from None
        if qid not in all_queries:
            raise DataError(f"row {i}: query id {qid!r} is not among the queries", w, field="query-id")
        qrels.setdefault(qid, {})[did] = score
    if not qrels:
        raise DataError("no relevance judgments", w)
    return BeirDataset(corpus=corpus, queries={q: all_queries[q] for q in qrels}, qrels=qrels)


def _load_split(path: str, config: str, split: str, kw: dict[str, Any]) -> Any:
    """Split `split` of a hub config, or its only split when it has one of another name (MTEB 2.x corpus and
    queries configs may name theirs after the evaluation split)."""
    try:
        return load_dataset(path, config, split=split, **kw)
    except ValueError as exc:
        if "split" not in str(exc).lower():
            raise
        whole = load_dataset(path, config, **kw)
        if hasattr(whole, "values") and len(whole) == 1:
            return next(iter(whole.values()))
        raise


def _load_hub(task: HubTask, split: str, revision: str | None, cache_dir: Path) -> BeirDataset:
    kw = {"revision": revision, "cache_dir": str(cache_dir / "hub")}
    c_cfg, q_cfg, r_cfg = task.configs
    where = f"hf://datasets/{task.path}"
    try:
        try:
            corpus = _load_split(task.path, c_cfg, "corpus", kw)
            queries = _load_split(task.path, q_cfg, "queries", kw)
            qrels = load_dataset(task.path, r_cfg, split=split, **kw)
        except ValueError as first:  # config or split not found: try the older CoIR layout
            if "config" not in str(first).lower() and "split" not in str(first).lower():
                raise
            logger.info("%s: %s; trying the <path>-queries-corpus / <path>-qrels layout", task.path, first)
            try:
                both = load_dataset(f"{task.path}-queries-corpus", revision=None, cache_dir=kw["cache_dir"])
                corpus, queries = both["corpus"], both["queries"]
                qrels = load_dataset(f"{task.path}-qrels", split=split, revision=None, cache_dir=kw["cache_dir"])
                where = f"hf://datasets/{task.path}-queries-corpus"
            except Exception as second:
                raise DatasetUnavailable(f"{task.path}: {first}; older layout also failed: {second}") from second
    except (DataError, DatasetUnavailable):
        raise
    except Exception as e:  # offline, unknown repo, auth...
        raise DatasetUnavailable(
            f"could not load {task.path!r} (split {split!r}) from the Hugging Face hub ({type(e).__name__}: {e}). "
            "If offline: download it once while online (it is then read from the cache with HF_DATASETS_OFFLINE=1), "
            "or convert it to a BEIR folder and pass that path.") from e
    return _convert_hub(corpus, queries, qrels, where)


# Long-document retrieval: MLDR's English subset as MTEB 2.x hosts it (configs <lang>-corpus / -queries / -qrels,
# revision from mteb 2.26.24's task metadata). Documents run to thousands of tokens: index them with windows.
LONG_DOC_TASKS: dict[str, HubTask] = {
    "mldr": HubTask("mteb/MultiLongDocRetrieval", "MultiLongDocRetrieval", "837028901907a7d419b4ab906f28e011ce1cc824",
                    ("eng-Latn",), hf_subset="en", configs=("en-corpus", "en-queries", "en-qrels")),
}
LONG_DOC_TASKS["mldr-en"] = LONG_DOC_TASKS["mldr"]


def _hub_task(spec: str) -> HubTask | None:
    low = spec.lower()
    if low in LONG_DOC_TASKS:
        return LONG_DOC_TASKS[low]
    for prefix in ("coir/", "coir-retrieval/"):
        if low.startswith(prefix):
            name = low[len(prefix):]
            if name in COIR_TASKS:
                return COIR_TASKS[name]
            if prefix == "coir/":
                raise DatasetUnavailable(f"unknown CoIR dataset {name!r}; known: {', '.join(sorted(COIR_TASKS))}")
    if low in COIR_TASKS:
        return COIR_TASKS[low]
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return HubTask(spec, spec.split("/")[1], None, ("eng-Latn",))
    return None


def resolve_dataset(spec: str | os.PathLike | ResolvedDataset | BeirDataset, split: str = "test",
                    cache_dir: str | os.PathLike | None = None, revision: str | None = None) -> ResolvedDataset:
    """Load a dataset from a local folder, a BEIR name or a hub name (see the module docstring).
    `revision` overrides the pinned hub revision. Raises DatasetUnavailable / DataError."""
    if isinstance(spec, ResolvedDataset):
        return spec
    if isinstance(spec, BeirDataset):
        name = _safe_name(spec.name or "dataset")
        return ResolvedDataset(name=name, data=spec, task_name=spec.name or name, split=split, source="memory")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = Path(spec)
    if path.exists():
        folder = _beir_folder(path)
        if folder is None:
            raise DataError("not a BEIR folder (no corpus.jsonl)", path)
        return _local(folder, split)
    text = str(spec).strip()
    low = text.lower()
    beir_name = low[len("beir/"):] if low.startswith("beir/") else low
    if beir_name in BEIR_TASKS:
        for d in _data_dirs(cache):
            folder = _beir_folder(d / beir_name)
            if folder is not None:
                return _local(folder, split, beir_name)
        if os.environ.get("MBERT_RETRIEVAL_OFFLINE") == "1":
            raise DatasetUnavailable(f"BEIR dataset {beir_name!r} is not cached under {cache / 'beir'} and "
                                     "MBERT_RETRIEVAL_OFFLINE=1")
        folder = _download_beir(beir_name, cache)
        res = _local(folder, split, beir_name)
        res.source = "beir"
        return res
    task = _hub_task(text)
    if task is None:
        raise UnknownDataset(
            f"unknown dataset {text!r}: not a folder, not a BEIR name ({', '.join(sorted(BEIR_TASKS)[:6])}, ...), "
            f"not a CoIR name (coir/{', coir/'.join(sorted(COIR_TASKS)[:4])}, ...) nor an owner/name hub dataset")
    rev = revision if revision is not None else task.revision
    data = _load_hub(task, split, rev, cache)
    short = text.split("/")[-1].lower()
    data.name = short
    return ResolvedDataset(name=_safe_name(short), data=data, task_name=task.task_name, split=split, source="hub",
                           revision=rev, languages=list(task.languages), hf_subset=task.hf_subset,
                           location=task.path)


def clear_download(name: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Remove a downloaded BEIR dataset (folder and zip) from the cache."""
    out = (Path(cache_dir) if cache_dir else default_cache_dir()) / "beir"
    archive = name.split("/")[0]
    shutil.rmtree(out / archive, ignore_errors=True)
    (out / f"{archive}.zip").unlink(missing_ok=True)
