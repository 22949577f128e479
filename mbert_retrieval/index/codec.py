"""`ResidualCodec`: the PLAID token compression (nearest centroid + an `nbits`-per-dimension residual code).

The residual code is one byte per `8 // nbits` consecutive dimensions, in one of two forms: a product quantizer
(each byte one of 256 codewords of its sub-vector, k-means-trained by FAISS: the default) or per-dimension
buckets (the PLAID / ColBERTv2 codec: each dimension's `nbits` bits one of 2^nbits levels). Both decode
through the same (byte position, byte value) -> sub-vector table, so search is the same code for either.

Training and compression run in numpy/FAISS at build time. Decompression is torch (CPU or CUDA), in two
forms: `decompress_torch` gives the approximate vectors; `residuals_torch` only the residual part, so that a
search can add the centroid part as a looked-up centroid score (q . (c + r) = q . c + q . r) and divide by
the token norm (`inverse_norms`) instead of materialising and normalising every candidate token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["ResidualCodec"]

_BLOCK = 65536
_SCORE_BLOCK = 1 << 25  # token x centroid scores computed at once by `assign` (64 MB in bf16, 128 MB in float32)
# Lloyd-Max iterations of the residual buckets (from quantile cutoffs); eval/bench_codec.py measures the gain
_LLOYD_ITERS = 10
# the numpy dtypes whose item size equals 2, 4, 8 bytes: one gather moves a whole packed byte's residual values
_INT_OF_SIZE = {2: "int16", 4: "int32", 8: "int64"}
_CODEWORDS = 256  # product quantizer: one byte per sub-vector
_PQ_ITERS = 20  # k-means iterations of each sub-vector's codewords
# fewer sample tokens: buckets. FAISS's least for a k-means it does not warn about (39 a codeword); under it the
# codewords are fitted to too few points, and on a corpus that small their table (float16, 64 KB at 128 dims)
# would outweigh what they save
_MIN_PQ_SAMPLE = 39 * _CODEWORDS


def _half(x: np.ndarray) -> np.ndarray:
    """`x` rounded to float16, as float32: what a float16 file stores, so that codes are fitted to that."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class ResidualCodec:
    """Centroids + the residual code: `codebooks` (n_bytes, 256, 8 // nbits), a product quantizer of the
    residual sub-vectors, or (`codebooks` None) per-dimension buckets (cutoffs (dim, B-1), weights (dim, B),
    B = 2^nbits). At 2 bits both spend one byte on 4 dimensions; the 256 codewords are fitted to the joint
    distribution of the 4 values instead of being the grid of 4 independent levels, so the product quantizer
    decodes closer (`eval/bench_codec.py`). Codecs written before it have buckets.

    `scaled`: the code quantizes each residual's direction (the residual divided by its norm) and every token
    row ends with a float16 scale, the least-squares factor from the decoded direction back to the residual
    (2 more bytes a token). Residual norms vary widely between tokens, so one set of buckets for all of them
    wastes levels on both the short and the long ones (`eval/bench_codec.py` measures each variant's error).
    Codecs written before it have `scaled=False` and rows of only the packed buckets."""

    centroids: np.ndarray
    cutoffs: np.ndarray
    weights: np.ndarray
    nbits: int
    scaled: bool = False
    codebooks: np.ndarray | None = None
    _table: np.ndarray | None = field(default=None, repr=False, compare=False)
    _torch_tables: dict = field(default_factory=dict, repr=False, compare=False)
    _pq: Any = field(default=None, repr=False, compare=False)  # faiss.ProductQuantizer of `codebooks`, made once

    @classmethod
    def train(cls, sample: np.ndarray, n_centroids: int, nbits: int, niter: int = 20, seed: int = 0,
              progress: Callable[[int], None] | None = None, scaled: bool = True, quantizer: str = "product") -> ResidualCodec:
        """Spherical k-means centroids, then the residual code from `sample`: a product quantizer
        (`quantizer="product"`; buckets when the sample is under `_MIN_PQ_SAMPLE` tokens) or per-dimension buckets
        ("scalar"). k-means runs one iteration per FAISS call (each starting from the previous centroids), so
        `progress(1)` can report each."""
        import faiss

        sample = np.ascontiguousarray(sample, dtype=np.float32)
        dim = sample.shape[1]
        if dim % (8 // nbits):
            raise ValueError(f"dim {dim} must be divisible by {8 // nbits} to pack {nbits}-bit residuals")
        # min_points_per_centroid=1: the sample size is the index's choice (train_sample_size), no FAISS warning about it
        km = faiss.Kmeans(dim, n_centroids, niter=1, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1)
        for it in range(max(1, niter)):
            km.train(sample, init_centroids=None if it == 0 else km.centroids)
            if progress is not None:
                progress(1)
        # stored as float16 (half the table, ~5 bytes a token at the default count): residuals are taken from what is stored
        codec = cls(_half(_normalize(km.centroids.astype(np.float32))), np.zeros((dim, 0), np.float32), np.zeros((dim, 0), np.float32), nbits, scaled)
        if quantizer == "product" and len(sample) >= _MIN_PQ_SAMPLE:
            codec.fit_codebooks(sample, seed=seed)
        else:
            codec.fit_buckets(sample)
        return codec

    def fit_codebooks(self, sample: np.ndarray, niter: int = _PQ_ITERS, seed: int = 0) -> None:
        """Fit the product quantizer to `sample` with the current centroids: FAISS k-means of 256 codewords per
        sub-vector of `8 // nbits` dimensions, over the residuals (or, scaled, their directions)."""
        import faiss

        residuals = self._sample_residuals(sample)
        pq = faiss.ProductQuantizer(self.dim, self.n_bytes, 8)
        pq.cp.niter, pq.cp.seed, pq.cp.min_points_per_centroid = niter, seed, 1  # few tokens: train quietly
        pq.train(np.ascontiguousarray(residuals, dtype=np.float32))
        # stored as float16 (half the file; their error is far below the quantizer's): encode with what is stored
        codebooks = faiss.vector_to_array(pq.centroids).reshape(self.n_bytes, _CODEWORDS, 8 // self.nbits)
        self.codebooks = _half(codebooks)
        self._table, self._torch_tables, self._pq = None, {}, None

    def _sample_residuals(self, sample: np.ndarray) -> np.ndarray:
        """What the residual code is fitted to: each sample token minus its centroid (scaled: its direction)."""
        return self._directions(sample - self.centroids[self.assign(sample)])

    @property
    def quantizer(self) -> str:
        """Which residual code: "product" (codebooks) or "scalar" (per-dimension buckets)."""
        return "scalar" if self.codebooks is None else "product"

    def arrays(self) -> dict[str, np.ndarray]:
        """What a codec file stores (`from_arrays` reads it back)."""
        code = {"cutoffs": self.cutoffs, "weights": self.weights} if self.codebooks is None else {"codebooks": self.codebooks.astype(np.float16)}
        lossless = np.array_equal(_half(self.centroids), self.centroids)  # trained here; codecs written before: float32
        return {"centroids": self.centroids.astype(np.float16) if lossless else self.centroids, **code}

    def metadata(self) -> dict[str, str]:
        return {"nbits": str(self.nbits), "residual_scale": "1" if self.scaled else "0", "residual_quantizer": self.quantizer}

    @classmethod
    def from_arrays(cls, read: Callable[[list[str]], dict[str, Any]], metadata: dict[str, str], nbits: int) -> ResidualCodec:
        """The codec `arrays` and `metadata` wrote (`read(names)`: those arrays). Files written before the
        scale or the product quantizer lack their flags: unscaled, buckets."""
        scaled = metadata.get("residual_scale") == "1"
        if metadata.get("residual_quantizer", "scalar") == "product":
            a = read(["centroids", "codebooks"])
            dim = a["centroids"].shape[1]
            empty = np.zeros((dim, 0), np.float32)
            return cls(np.array(a["centroids"], dtype=np.float32), empty, empty, nbits, scaled, np.array(a["codebooks"], dtype=np.float32))
        a = read(["centroids", "cutoffs", "weights"])
        return cls(np.array(a["centroids"], dtype=np.float32), np.array(a["cutoffs"]), np.array(a["weights"]), nbits, scaled)

    def fit_buckets(self, sample: np.ndarray, lloyd_iters: int = _LLOYD_ITERS) -> None:
        """Fit the residual buckets to `sample` with the current centroids: quantile cutoffs to start, then
        `lloyd_iters` Lloyd-Max steps (each weight the mean of its bucket, each cutoff halfway between two
        weights; 1 step: quantile cutoffs with mean weights, the codec before Lloyd-Max)."""
        residuals = self._sample_residuals(sample)
        n_buckets = 2**self.nbits
        self.cutoffs = np.quantile(residuals, np.arange(1, n_buckets) / n_buckets, axis=0).T.astype(np.float32)
        self.weights = np.quantile(residuals, (np.arange(n_buckets) + 0.5) / n_buckets, axis=0).T.astype(np.float32)
        for it in range(max(1, lloyd_iters)):
            self.weights = self._bucket_means(residuals)
            if it + 1 < lloyd_iters:
                self.cutoffs = ((self.weights[:, 1:] + self.weights[:, :-1]) / 2).astype(np.float32)
        self._table, self._torch_tables = None, {}

    def _bucket_means(self, residuals: np.ndarray) -> np.ndarray:
        """(dim, B) mean residual of each dimension's buckets (the previous weight where a bucket is empty)."""
        dim, n_buckets = self.weights.shape
        flat = (np.arange(dim)[None, :] * n_buckets + self._bucketize(residuals)).ravel()
        sums = np.bincount(flat, weights=residuals.ravel(), minlength=dim * n_buckets)
        counts = np.bincount(flat, minlength=dim * n_buckets)
        return np.where(counts > 0, sums / np.maximum(counts, 1), self.weights.ravel()).reshape(dim, n_buckets).astype(np.float32)

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def n_bytes(self) -> int:
        """Bytes of packed buckets per token."""
        return self.dim * self.nbits // 8

    @property
    def row_bytes(self) -> int:
        """Bytes per token row: the packed buckets, then (scaled) the float16 scale."""
        return self.n_bytes + (2 if self.scaled else 0)

    def _directions(self, residuals: np.ndarray) -> np.ndarray:
        """What the buckets quantize: the residuals, or (scaled) their directions."""
        if not self.scaled:
            return residuals
        return residuals / np.maximum(np.linalg.norm(residuals, axis=1, keepdims=True), 1e-12)

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """Nearest centroid (inner product) of each vector: torch matmuls, in bf16 on CPUs with native bf16
        (a near-tie may then pick the other of two almost equally close centroids: the residual absorbs it)."""
        import torch

        from .late_interaction import as_tensor, resolve_dtype

        cpu = torch.device("cpu")
        dtype = resolve_dtype("auto", cpu)
        centroids = torch.from_numpy(self.centroids).to(dtype)  # not from torch_tables: assign runs while training
        out = np.empty(len(vectors), dtype=np.int64)
        with torch.no_grad():
            step = self.assign_block_rows()
            for s in range(0, len(vectors), step):
                block = as_tensor(np.asarray(vectors[s : s + step], dtype=np.float32), cpu, dtype)
                out[s : s + step] = (block @ centroids.T).argmax(dim=1).numpy()
        return out

    def assign_block_rows(self) -> int:
        """Tokens `assign` scores at once: their scores against every centroid stay within `_SCORE_BLOCK` values
        (65,536 tokens x 16,384 centroids would be 2 GB in bf16: the peak memory of a build)."""
        return int(min(_BLOCK, max(256, _SCORE_BLOCK // max(1, len(self.centroids)))))

    def _bucketize(self, residuals: np.ndarray) -> np.ndarray:
        buckets = np.zeros(residuals.shape, dtype=np.uint8)
        for j in range(self.cutoffs.shape[1]):
            buckets += residuals > self.cutoffs[:, j]
        return buckets

    def pack(self, buckets: np.ndarray) -> np.ndarray:
        per = 8 // self.nbits
        shifts = (self.nbits * np.arange(per - 1, -1, -1)).astype(np.uint8)
        grouped = buckets.reshape(len(buckets), -1, per).astype(np.uint8)
        return np.bitwise_or.reduce(grouped << shifts, axis=2).astype(np.uint8)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        per = 8 // self.nbits
        shifts = (self.nbits * np.arange(per - 1, -1, -1)).astype(np.uint8)
        return ((packed[:, :, None] >> shifts) & (2**self.nbits - 1)).reshape(len(packed), -1)

    def compress(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centroid codes (n,), token rows (n, `row_bytes`) uint8: the residual code [+ float16 scale])."""
        codes = self.assign(vectors)
        rows = np.empty((len(vectors), self.row_bytes), dtype=np.uint8)
        for s in range(0, len(vectors), _BLOCK):
            residuals = np.asarray(vectors[s : s + _BLOCK], dtype=np.float32) - self.centroids[codes[s : s + _BLOCK]]
            packed = self._encode(self._directions(residuals))
            rows[s : s + _BLOCK, : self.n_bytes] = packed
            if self.scaled:  # least squares: the factor that brings the decoded direction closest to the residual
                decoded = self._byte_table()[np.arange(self.n_bytes), packed].reshape(len(packed), self.dim)
                scale = (residuals * decoded).sum(1) / np.maximum((decoded * decoded).sum(1), 1e-12)
                rows[s : s + _BLOCK, self.n_bytes :] = scale.astype("<f2").reshape(-1, 1).view(np.uint8)
        return codes, rows

    def _encode(self, residuals: np.ndarray) -> np.ndarray:
        """(n, n_bytes) uint8 codes of residuals (or directions): codeword ids, or packed buckets."""
        if self.codebooks is None:
            return self.pack(self._bucketize(residuals))
        if self._pq is None:
            import faiss

            self._pq = faiss.ProductQuantizer(self.dim, self.n_bytes, 8)
            faiss.copy_array_to_vector(np.ascontiguousarray(self.codebooks, dtype=np.float32).ravel(), self._pq.centroids)
        return self._pq.compute_codes(np.ascontiguousarray(residuals, dtype=np.float32))

    def _byte_table(self) -> np.ndarray:
        """(n_bytes, 256, 8 // nbits) residual values decoded by each packed byte at each byte position."""
        if self._table is None and self.codebooks is not None:
            self._table = np.ascontiguousarray(self.codebooks, dtype=np.float32)
        if self._table is None:
            per = 8 // self.nbits
            buckets = self.unpack(np.arange(256, dtype=np.uint8)[:, None])  # (256, per)
            weights = self.weights.reshape(-1, per, self.weights.shape[1])  # (n_bytes, per, B)
            self._table = np.stack([w[np.arange(per)[None, :], buckets] for w in weights]).astype(np.float32)
        return self._table

    def decompress(self, codes: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """Approximate (L2-normalised) token vectors, float32 numpy."""
        import torch

        from .late_interaction import as_tensor

        cpu = torch.device("cpu")
        return self.decompress_torch(as_tensor(codes, cpu, torch.int64), as_tensor(packed, cpu), torch.float32).numpy()

    # ----------------------------------------------------------------- torch
    def torch_tables(self, device: Any, dtype: Any) -> tuple[Any, Any]:
        """(centroids (C, dim), residual byte table) as torch tensors on `device` in `dtype`, made once.
        The byte table has one row per (byte position, byte value) holding that byte's `8 // nbits`
        residual values; when those fit one integer (bf16/fp16: 2-bit -> 8 bytes, 4-bit -> 4 bytes) the
        rows are viewed as integers, so decoding a token is one integer gather per byte, not per value."""
        import torch

        key = (str(device), dtype)
        if key not in self._torch_tables:
            table = torch.from_numpy(self._byte_table().reshape(-1, 8 // self.nbits)).to(device=device, dtype=dtype)
            width = table.shape[1] * table.element_size()
            if width in _INT_OF_SIZE:
                table = table.contiguous().view(getattr(torch, _INT_OF_SIZE[width])).reshape(-1)
            centroids = torch.from_numpy(self.centroids).to(device=device, dtype=dtype)
            self._torch_tables[key] = (centroids, table)
        return self._torch_tables[key]

    def residuals_torch(self, packed: Any, dtype: Any) -> Any:
        """Residual vectors (n, dim) in `dtype` of token rows (n, `row_bytes`) uint8, on their device."""
        directions, scales = self.residual_parts(packed, dtype)
        return directions if scales is None else directions.mul_(scales)

    def residual_parts(self, packed: Any, dtype: Any) -> tuple[Any, Any]:
        """(decoded buckets (n, dim), scales (n, 1) or None when unscaled) in `dtype`: a search multiplies the
        scale into q . r (n x query tokens) rather than into r (n x dim)."""
        import torch

        _, table = self.torch_tables(packed.device, dtype)
        n_bytes = self.n_bytes
        # int32 indices (uint8 + int32 promotes in one pass): a quarter of int64's memory traffic
        index = packed[:, :n_bytes] + torch.arange(0, n_bytes * 256, 256, dtype=torch.int32, device=packed.device)
        if table.dim() == 1:  # integer view: one gather per byte, then reinterpret as `dtype` values
            out = table.index_select(0, index.view(-1)).view(dtype).reshape(len(packed), self.dim)
        else:
            out = table.index_select(0, index.view(-1)).reshape(len(packed), self.dim)
        if not self.scaled:
            return out, None
        return out, packed[:, n_bytes:].contiguous().view(torch.float16).to(dtype)  # the row's last two bytes

    def decompress_torch(self, codes: Any, packed: Any, dtype: Any) -> Any:
        """Approximate L2-normalised vectors (n, dim) in `dtype`, computed in float32."""
        import torch

        centroids, _ = self.torch_tables(packed.device, dtype)
        vectors = centroids[codes.long()].float() + self.residuals_torch(packed, dtype).float()
        return torch.nn.functional.normalize(vectors, dim=-1).to(dtype)

    def inverse_norms(self, codes: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """1 / |centroid + residual| of each token (float32): decompressed scores are divided by it."""
        import torch

        from .late_interaction import as_tensor

        out = np.empty(len(codes), dtype=np.float32)
        cpu = torch.device("cpu")
        with torch.no_grad():
            centroids, _ = self.torch_tables(cpu, torch.float32)
            for s in range(0, len(codes), _BLOCK):
                c = as_tensor(codes[s : s + _BLOCK], cpu, torch.int64)
                r = self.residuals_torch(as_tensor(packed[s : s + _BLOCK], cpu), torch.float32)
                out[s : s + _BLOCK] = (1.0 / (centroids[c] + r).norm(dim=1).clamp_min(1e-12)).numpy()
        return out
