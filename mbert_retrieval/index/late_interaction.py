"""Where and in what precision the token indexes compute late interaction (torch, CPU or CUDA).

`resolve_device("auto")` is CUDA when torch sees a GPU, else the CPU. `resolve_dtype("auto", device)` is
bfloat16 where matmuls in it are native and fast (CUDA with bf16 support; CPUs with AVX512-BF16 or AMX,
where MKL's float32 GEMM is the slow path), else float32. Inputs are rounded to that dtype and products
are accumulated in float32; "float32" keeps full precision (exact search, tests). Importing this module does not import torch (the
settings are checked when an index is opened by `mbret info` / `delete`, which never search).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["cpu_has_native_bf16", "check_device_name", "resolve_device", "resolve_dtype", "as_tensor", "token_positions",
           "padded_positions", "DEVICES", "DTYPES"]  # fmt: skip

DEVICES = ("auto", "cpu", "cuda")  # or "cuda:N"
DTYPES = ("float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo; False elsewhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_device_name(name: str) -> None:
    """A clear ValueError for a device setting that is not auto / cpu / cuda / cuda:N."""
    base, _, idx = str(name).partition(":")
    if base not in DEVICES or (idx and (base != "cuda" or not idx.isdigit())):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda when available else cpu; an explicit CUDA device without CUDA is an error."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device_name(name)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but torch sees no CUDA device (use device='cpu' or 'auto')")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA with bf16 and on CPUs with native bf16, else float32; or a name of `DTYPES`."""
    import torch

    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def as_tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A numpy array (possibly a read-only memory map) as a tensor on `device`: shared, not copied, on the
    CPU when the dtype matches (torch only reads it)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(np.ascontiguousarray(array))
    return t.to(device=device, dtype=dtype or t.dtype)


def token_positions(offsets: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of `items` in a packed layout with `offsets` (n + 1,): (row positions concatenated, the item
    (0..len(items)-1) each row belongs to, per-item lengths)."""
    import torch

    starts = offsets[items]
    lengths = offsets[items + 1] - starts
    seg = torch.repeat_interleave(torch.arange(len(items), device=items.device), lengths)
    first = torch.cumsum(lengths, 0) - lengths
    pos = (starts - first)[seg] + torch.arange(len(seg), device=items.device)
    return pos, seg, lengths


def padded_positions(offsets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Rows of `items` (each with at least one row) as an (n, max length) matrix of positions in a packed
    layout with `offsets`; a short item repeats its last row, which leaves any max over the row unchanged:
    per-item maxima become one gather and one `amax`, with no scatter and no mask."""
    import torch

    starts = offsets[items]
    lengths = offsets[items + 1] - starts
    if len(items) == 0:
        return torch.zeros((0, 1), dtype=torch.int64, device=items.device)
    steps = torch.arange(int(lengths.max()), device=items.device)
    return starts[:, None] + torch.minimum(steps[None, :], (lengths - 1).clamp_min(0)[:, None])
