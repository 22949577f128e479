"""Segments built in parallel: the rows an index committed but no segment holds yet (a sharded build, a
build whose structure was deferred) are split into groups of whole chunk files, and each group becomes one
segment, built by its own worker process (a local process pool, or Ray tasks on the cluster that encoded the
shards) from the chunk files and the trained template file. The driver then adopts the segment files, and
the next manifest it writes is the commit point: a worker that dies leaves an orphan file at most, and its
rows are still in the chunk files, so the build can be finished again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .storage import FileRecord, load_arrays

__all__ = ["build_segments", "build_segment"]

logger = logging.getLogger(__name__)


def build_segment(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: one segment file from whole chunk files (rows `iids` of each), with the trained template.
    Module-level and given plain data only, so it runs in a spawned process or as a Ray task."""
    from .structures import make_structure
    from .vectors import take_docs

    folder = Path(job["path"])
    structure = make_structure(job["kind"], job["index_type"], job["quantization"], job["dim"], job["params"], None)
    template_path = folder / job["template"] if job["template"] else None
    structure.template.load_template(template_path, job["state"])
    segment = structure.template.empty_like()
    for chunk_file, wanted in job["chunks"]:
        arrays = load_arrays(folder / "chunks" / chunk_file, mmap=True)
        ids = np.asarray(arrays["ids"], dtype=np.int64)
        rows = np.flatnonzero(np.isin(ids, np.asarray(wanted, dtype=np.int64)))
        if not len(rows):
            continue
        offsets = np.asarray(arrays["offsets"]) if "offsets" in arrays else None
        vectors, new_offsets = take_docs(arrays["vectors"], offsets, rows)
        segment.add(ids[rows], vectors, new_offsets)
    segment.consolidate()
    record = segment.save_segment(folder / job["file"])
    return {"id": job["id"], "file": job["file"], "record": {"sha256": record.sha256, "bytes": record.bytes}, "rows": len(segment)}


def build_segments(index: Any, workers: int, backend: str = "local") -> int:
    """Build the rows of `index` that no segment holds into at most `workers` new segments, in parallel
    (`backend` "local": a process pool; "ray": Ray tasks, for an index folder the cluster shares). Returns the
    number of segments adopted (0 when there is nothing to do or the structure is not made of segments)."""
    from .segments import SegmentSet, segment_file

    structure = index.structure
    if not isinstance(structure, SegmentSet) or not structure.template.persists_rows or not structure.is_trained:
        return 0
    live = index.docstore.live_row_ids()
    missing = live[~np.isin(live, structure.ids())]
    if len(missing) == 0:
        return 0
    found, seqs, _ = index.store.locate(missing)
    if not found.all():
        return 0  # the facade's reconcile reports what is missing
    generation = index.manifest.generation + 1
    structure.write_template(index.path, generation)
    by_chunk = {int(s): missing[seqs == s] for s in np.unique(seqs)}
    groups = _groups(list(by_chunk.items()), max(1, workers))
    jobs = []
    prefix, suffix = structure.file_prefix, structure.template.segment_suffix
    for group in groups:
        seg_id = structure.reserve_id()
        jobs.append({
            "path": str(index.path), "kind": index.manifest.kind, "index_type": index.manifest.index_type,
            "quantization": index.manifest.quantization, "dim": index.manifest.dim, "params": structure_params(index),
            "template": structure.template_name, "state": structure.template.state(), "id": seg_id,
            "file": segment_file(seg_id, prefix, suffix),
            "chunks": [(index.store.chunk_name(seq), rows.tolist()) for seq, rows in group],
        })  # fmt: skip
    logger.info("%s: building %d segments in parallel (%d rows)", index.path, len(jobs), len(missing))
    results = _run(jobs, backend)
    for res in results:
        structure.adopt(res["id"], res["file"], FileRecord(**res["record"]), int(res["rows"]), index.path)
    return len(results)


def structure_params(index: Any) -> dict[str, Any]:
    """The structure settings of an index (manifest params less the index's own and the session's)."""
    from .sync import BUILD_PARAMS, INDEX_PARAMS, OWNER_PARAMS

    skip = (*BUILD_PARAMS, *OWNER_PARAMS, *INDEX_PARAMS, "state")
    return {k: v for k, v in index.manifest.params.items() if k not in skip}


def _groups(chunks: list[tuple[int, np.ndarray]], n: int) -> list[list[tuple[int, np.ndarray]]]:
    """Whole chunks in `n` contiguous groups of about the same number of rows (fewer when there are fewer chunks)."""
    total = sum(len(rows) for _, rows in chunks)
    target = total / min(n, len(chunks))
    groups: list[list[tuple[int, np.ndarray]]] = [[]]
    filled = 0
    for seq, rows in chunks:
        if groups[-1] and filled >= target * len(groups) and len(groups) < n:
            groups.append([])
        groups[-1].append((seq, rows))
        filled += len(rows)
    return groups


def _run(jobs: list[dict[str, Any]], backend: str) -> list[dict[str, Any]]:
    if len(jobs) == 1:
        return [build_segment(jobs[0])]
    if backend == "ray":
        import ray

        task = ray.remote(build_segment)
        return list(ray.get([task.remote(job) for job in jobs]))
    return _run_processes(jobs)


def _run_processes(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `python -m mbert_retrieval.index.parallel_build` process per job (a fresh interpreter: no fork of a
    process with torch's threads, no re-import of the caller's script), at most one per CPU at a time."""
    import subprocess
    import sys
    import tempfile

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=".mbret-segments-") as tmp:
        pending = list(enumerate(jobs))
        running: list[tuple[subprocess.Popen, Path, Path]] = []
        limit = max(1, min(len(jobs), os.cpu_count() or 1))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        while pending or running:
            while pending and len(running) < limit:
                i, job = pending.pop(0)
                job_file, out_file = Path(tmp) / f"job{i}.json", Path(tmp) / f"out{i}.json"
                job_file.write_text(json.dumps(job))
                proc = subprocess.Popen([sys.executable, "-m", __name__, str(job_file), str(out_file)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
                running.append((proc, job_file, out_file))
            proc, job_file, out_file = running.pop(0)
            _, stderr = proc.communicate()
            if proc.returncode != 0:
                for other, _, _ in running:
                    other.kill()
                raise RuntimeError(f"a segment-building worker failed (exit code {proc.returncode}): {stderr.strip()[-2000:]}")
            results.append(json.loads(out_file.read_text()))
    return results


if __name__ == "__main__":  # a worker process: python -m mbert_retrieval.index.parallel_build JOB OUT
    import sys

    job_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    out_path.write_text(json.dumps(build_segment(json.loads(job_path.read_text()))))
