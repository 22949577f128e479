"""The training loop: AdamW + linear warmup/decay, gradient caching, checkpoints and exact resume.

Single process on CPU or GPU, or several processes under `torchrun` / `accelerate launch`: accelerate's
`PartialState` sets up the process group and device; embeddings are gathered across processes for
in-batch negatives and gradients are averaged explicitly (see `dist.py` for why not DDP).

Layout of `output_dir`:
    checkpoint-<step>/model/              the model in its own format (sentence-transformers / PyLate)
    checkpoint-<step>/optimizer.safetensors + trainer_state.json (optimizer scalars, scheduler, step)
    checkpoint-<step>/rng-<rank>.safetensors   torch RNG states (dropout) per process
    final/                                the trained model (sentence-transformers / PyLate format)
    train_config.json, train_log.jsonl
Nothing is pickled; there is no torch.load anywhere in the trainer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .config import ConfigError, TrainConfig
from .data import epoch_batches, load_examples, num_batches
from .dist import all_reduce_gradients, all_reduce_mean, rank_and_world
from .gradcache import grad_cache_step
from .losses import RetrievalLoss
from .models import TrainEncoder, load_model, parameter_groups

__all__ = ["Trainer", "train", "latest_checkpoint"]

logger = logging.getLogger(__name__)
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def train(config: TrainConfig, show_progress: bool = True) -> Path:
    """Fine-tune `config.model` on `config.data`; returns the directory of the final model."""
    return Trainer(config).run(show_progress=show_progress)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in `output_dir` (None if there is none)."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _CKPT.match(p.name)) and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


def _linear_schedule(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))
    return fn


class Trainer:
    """Holds model, optimizer, scheduler and data for one run; `run()` trains to the end (or `stop_after`)."""

    def __init__(self, config: TrainConfig):
        from accelerate import PartialState

        config.validate()
        if not config.model:
            raise ConfigError("model", "required: a hub id or local path of the model to fine-tune")
        if not config.data:
            raise ConfigError("data", "required: BEIR folder(s) and/or JSONL file(s)")
        self.config = config
        # cpu=True on a machine without CUDA: otherwise accelerate does not join a torchrun launch's gloo
        # group and every process would train alone on the same batches, each writing the outputs
        self.state = PartialState(cpu=not torch.cuda.is_available())
        self.rank, self.world = self.state.process_index, self.state.num_processes
        if (self.rank, self.world) != rank_and_world() and torch.distributed.is_initialized():
            raise RuntimeError(f"accelerate sees rank {self.rank} of {self.world}, torch.distributed "
                               f"{rank_and_world()}: launch with torchrun or accelerate launch")
        self.device = self.state.device
        self.output_dir = Path(config.output_dir)
        self.examples = load_examples(config.data, config.split)
        self.drop_last = config.drop_last or self.world > 1
        self.steps_per_epoch = num_batches(len(self.examples), config.batch_size, self.world, self.drop_last)
        if self.steps_per_epoch == 0:
            raise ConfigError("batch_size", f"{config.batch_size} x {self.world} processes exceeds the "
                                            f"{len(self.examples)} training examples")
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.step = 0
        self.history: list[dict] = []

        resume_from = latest_checkpoint(self.output_dir) if config.resume else None
        if config.resume and resume_from is None:
            logger.warning("resume: no checkpoint in %s; starting from %s", self.output_dir, config.model)
        torch.manual_seed(config.seed + self.rank)
        self.model = load_model(str(resume_from / "model") if resume_from else config.model, config.kind,
                                self.device, config.max_query_length, config.max_doc_length, config.colbert_dim)
        if getattr(self.model, "kind", config.kind) != config.kind:
            raise ConfigError("kind", f"{config.model} loaded as {self.model.kind!r}, not {config.kind!r}")
        bf16 = config.bf16
        if bf16 is None:
            bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.encoder = TrainEncoder(self.model, config.max_query_length, config.max_doc_length, autocast=bool(bf16))
        self.loss_fn = RetrievalLoss(kind=config.kind, loss=config.loss, temperature=config.resolved_temperature,
                                     matryoshka_dims=config.matryoshka_dims,
                                     gather_across_devices=config.gather_across_devices,
                                     distill_normalize=config.resolved_distill_normalize)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, config.weight_decay), lr=config.lr)
        warmup = math.ceil(config.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _linear_schedule(warmup, self.total_steps))
        if resume_from is not None:
            self._load_checkpoint(resume_from)

    # ------------------------------------------------------------------ loop
    def run(self, show_progress: bool = True, stop_after: int | None = None) -> Path:
        """Train until `total_steps` (or until step `stop_after`, for tests / time-boxed jobs)."""
        cfg = self.config
        end = self.total_steps if stop_after is None else min(stop_after, self.total_steps)
        if self.state.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {cfg.kind}", unit="step",
                   disable=not (show_progress and self.state.is_main_process))
        try:
            while self.step < end:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                batches = epoch_batches(self.examples, cfg.batch_size, cfg.n_hard_negatives, cfg.seed, epoch,
                                        self.rank, self.world, self.drop_last, need_scores=cfg.loss == "distill")
                for batch in batches[offset:]:
                    loss = self._train_step(batch)
                    self.step += 1
                    lr = self.scheduler.get_last_lr()[0]
                    self.history.append({"step": self.step, "epoch": epoch, "loss": loss, "lr": lr})
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                    bar.update(1)
                    self._log(self.history[-1])
                    if cfg.save_steps and self.step % cfg.save_steps == 0 and self.step < self.total_steps:
                        self.save_checkpoint()
                    if self.step >= end:
                        break
        finally:
            bar.close()
        self.model.eval()
        if self.step < self.total_steps:  # stopped early: leave a checkpoint to resume from
            return self.save_checkpoint()
        final = self.output_dir / "final"
        if self.state.is_main_process:  # temp folder, then rename: a crash never leaves half a model
            tmp = self.output_dir / ".final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self.model.save_pretrained(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        self.state.wait_for_everyone()
        return final

    def _train_step(self, batch) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = grad_cache_step(self.encoder, batch.queries, batch.documents,
                               lambda q, d: self.loss_fn(q, d, batch), self.config.mini_batch_size)
        all_reduce_gradients(self.params)
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(all_reduce_mean(loss))

    def _log(self, record: dict) -> None:
        if self.state.is_main_process:
            with open(self.output_dir / "train_log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write checkpoint-<step> atomically (temp dir + rename); prune old ones."""
        final = self.output_dir / f"checkpoint-{self.step}"
        tmp = self.output_dir / f".checkpoint-{self.step}.tmp"
        if self.state.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.state.wait_for_everyone()
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        save_file(rng, str(tmp / f"rng-{self.rank}.safetensors"))
        if self.state.is_main_process:
            self.model.save_pretrained(tmp / "model")
            tensors, meta = _optimizer_to_files(self.optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            state = {"step": self.step, "world_size": self.world, "optimizer": meta,
                     "scheduler": self.scheduler.state_dict(), "config": asdict(self.config)}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
        self.state.wait_for_everyone()
        if self.state.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self._prune()
        self.state.wait_for_everyone()
        return final

    def _prune(self) -> None:
        limit = self.config.save_total_limit
        if not limit:
            return
        found = sorted((int(m.group(1)), p) for p in self.output_dir.iterdir() if (m := _CKPT.match(p.name)))
        for _, path in found[:-limit]:
            shutil.rmtree(path, ignore_errors=True)

    def _load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / "trainer_state.json").read_text())
        if state.get("world_size", 1) != self.world:
            raise ConfigError("resume", f"{path} was written by {state['world_size']} processes, now {self.world}")
        old = state.get("config", {})
        for key in ("batch_size", "seed", "n_hard_negatives", "data", "split", "kind", "loss"):
            if key in old and old[key] != getattr(self.config, key):
                logger.warning("resume: %s changed from %r to %r; the run will not match an uninterrupted one",
                               key, old[key], getattr(self.config, key))
        _optimizer_from_files(self.optimizer, load_file(str(path / "optimizer.safetensors"), device=str(self.device)),
                              state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        rng_file = path / f"rng-{self.rank}.safetensors"
        if rng_file.is_file():
            rng = load_file(str(rng_file))
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        logger.info("resumed from %s at step %d of %d", path, self.step, self.total_steps)


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat tensors (for safetensors) plus JSON metadata (param groups, non-tensor values)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, object] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
