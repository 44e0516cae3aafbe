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
    """Per-process batches of one bucket; ``set_position(epoch, batch)`` resumes mid-epoch."""

    def __init__(self, buckets: dict[str, list[int]], batch_size: int, seed: int, num_replicas: int = 1,
                 rank: int = 0):
        self.buckets = {name: list(ids) for name, ids in sorted(buckets.items())}
        self.batch_size, self.seed = batch_size, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.start_batch = 0, 0

    def global_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        size = self.batch_size * self.num_replicas
        batches = []
        for ids in self.buckets.values():
            order = [ids[j] for j in torch.randperm(len(ids), generator=generator).tolist()]
            while len(order) % size:
                order += order[: size - len(order) % size]
            batches += [order[j:j + size] for j in range(0, len(order), size)]
        return [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]

    def __len__(self) -> int:
        size = self.batch_size * self.num_replicas
        return sum(-(-len(ids) // size) for ids in self.buckets.values())

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.start_batch = epoch, batch

    def __iter__(self):
        batches = self.global_batches(self.epoch)
        for batch in batches[self.start_batch:]:
            yield batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
