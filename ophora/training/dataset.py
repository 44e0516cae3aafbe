"""Read encoded folders and batch them by bucket, deterministically and resumably.

Why our own batch sampler: every batch must hold one bucket shape, and an exact resume needs the data order to
be a pure function of (seed, epoch, position). Each epoch shuffles every bucket with ``seed + epoch``, pads it
(by repeating its own clips) to whole global batches, shuffles the order of the batches, and hands process
``rank`` its slice of every global batch. Position ``n`` of the stream is therefore known without replaying
anything, on one GPU or on many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


class DataError(ValueError):
    """Encoded data is missing or inconsistent; the message says what to run."""


@dataclass(frozen=True)
class Sample:
    folder: Path
    shard: str
    key: str
    bucket: str
    instruction: str


class EncodedClips(torch.utils.data.Dataset):
    """Clips of one or more folders written by ``python -m ophora train encode``."""

    def __init__(self, folders: list[str | Path]):
        self.samples: list[Sample] = []
        missing: list[str] = []
        for folder in map(Path, folders):
            index_path = folder / "index.json"
            if not index_path.is_file():
                hint = (" Encoding is unfinished: run the same `python -m ophora train encode` command again."
                        if (folder / "encode.json").is_file() else
                        " Run `python -m ophora train encode --manifest ... --output FOLDER` first.")
                raise DataError(f"{folder} has no index.json.{hint}")
            index = json.loads(index_path.read_text())
            for entry in index["clips"]:
                if not (folder / entry["shard"]).is_file():
                    missing.append(str(folder / entry["shard"]))
                self.samples.append(Sample(folder, entry["shard"], entry["key"], entry["bucket"],
                                           entry.get("instruction", "")))
        if missing:
            unique = sorted(set(missing))
            raise DataError(f"{len(unique)} shard file(s) listed in index.json are missing, e.g. {unique[0]}. "
                            f"Copy them back, or re-run `python -m ophora train encode` with the same arguments "
                            f"after deleting their shards/*.json to encode them again.")
        if not self.samples:
            raise DataError(f"No clips in {', '.join(map(str, folders))}.")
        self._handles: dict[Path, object] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _open(self, path: Path):
        from safetensors import safe_open

        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="pt")
        return self._handles[path]

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        handle = self._open(sample.folder / sample.shard)
        return {"latent_dist": handle.get_tensor(f"{sample.key}/latent_dist"),
                "prompt_embeds": handle.get_tensor(f"{sample.key}/prompt_embeds"), "index": i}

    def buckets(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, sample in enumerate(self.samples):
            groups.setdefault(sample.bucket, []).append(i)
        return groups

    def __getstate__(self):  # safe_open handles do not pickle (dataloader workers reopen them)
        return {**self.__dict__, "_handles": {}}


def collate(items: list[dict]) -> dict:
    return {"latent_dist": torch.stack([it["latent_dist"] for it in items]),
            "prompt_embeds": torch.stack([it["prompt_embeds"] for it in items]),
            "index": torch.tensor([it["index"] for it in items])}


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This process's micro-batches, all of one bucket; ``set_position(epoch, step)`` resumes mid-epoch.

    The unit is the optimizer step's global batch (``batch_size x num_replicas x accumulation`` clips). Micro-batch
    ``m`` of a step gives process ``rank`` the slice ``(m * num_replicas + rank) * batch_size`` onwards, so every
    split of the same global batch (processes, per-process batch, accumulation) trains on the same clips per step.
    """

    def __init__(self, buckets: dict[str, list[int]], batch_size: int, seed: int, num_replicas: int = 1,
                 rank: int = 0, accumulation: int = 1):
        self.buckets = {name: list(ids) for name, ids in sorted(buckets.items())}
        self.batch_size, self.seed = batch_size, seed
        self.num_replicas, self.rank, self.accumulation = num_replicas, rank, accumulation
        self.epoch, self.start_step = 0, 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas * self.accumulation

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every optimizer step's clips of ``epoch``: a pure function of seed, epoch and the global batch size."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        size = self.global_batch_size
        batches = []
        for ids in self.buckets.values():
            order = [ids[j] for j in torch.randperm(len(ids), generator=generator).tolist()]
            while len(order) % size:
                order += order[: size - len(order) % size]
            batches += [order[j:j + size] for j in range(0, len(order), size)]
        return [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]

    def steps_per_epoch(self) -> int:
        size = self.global_batch_size
        return sum(-(-len(ids) // size) for ids in self.buckets.values())

    def __len__(self) -> int:  # micro-batches of this process per epoch
        return self.steps_per_epoch() * self.accumulation

    def set_position(self, epoch: int, step: int) -> None:
        self.epoch, self.start_step = epoch, step

    def __iter__(self):
        for batch in self.global_batches(self.epoch)[self.start_step:]:
            for micro in range(self.accumulation):
                start = (micro * self.num_replicas + self.rank) * self.batch_size
                yield batch[start:start + self.batch_size]
