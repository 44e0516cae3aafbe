"""Find, fetch and fingerprint extractor weights, so every report names exactly which weights produced it.

FID and FVD are only comparable between runs that used the same network weights, and no PyPI package ships
them: each reference implementation downloads them on first use. We take a local file first, then our cache,
then (unless offline) the usual public URL; a missing file is an error that says where to get it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path


class MissingWeightsError(FileNotFoundError):
    """Extractor weights are not on disk and could not be downloaded; the message says where to get them."""


@dataclass(frozen=True)
class WeightsInfo:
    """What a report says about one extractor's weights."""

    role: str  # "fid", "fvd" or "clipscore"
    name: str  # e.g. "pt_inception-2015-12-05 (TF Inception, pytorch-fid port)"
    location: str  # local path, hub id, or "random init"
    sha256: str | None  # of the weight file(s); None for random init
    random_init: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def default_cache_dir() -> Path:
    """``$OPHORA_EVAL_CACHE`` or ``~/.cache/ophora/eval``: where downloaded extractor weights are kept."""
    return Path(os.environ.get("OPHORA_EVAL_CACHE", Path.home() / ".cache" / "ophora" / "eval"))


def sha256_file(path: str | Path, chunk_size: int = 8 * 1024**2) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One hash over several files (name and content), for multi-file checkpoints such as a CLIP folder."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode())
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def weights_problem(path: str | Path | None, *, what: str, filename: str, url: str, flag: str,
                    offline: bool = False, cache_dir: str | Path | None = None) -> str | None:
    """Why ``resolve_weights_file`` could not return a file without downloading where downloads are off, or
    ``None``. Said as what to do: where to get the file and where it goes."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            return f"{what} weights not found at {path}. Download them from {url} and pass the file with {flag}."
        return None
    cached = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / filename
    if not cached.is_file() and offline:
        return (f"{what} weights are not cached at {cached} and downloads are off. Download {url} on a machine with "
                f"network access, then pass the file with {flag} (or put it at {cached}).")
    return None


def resolve_weights_file(path: str | Path | None, *, what: str, filename: str, url: str, flag: str,
                         offline: bool = False, cache_dir: str | Path | None = None) -> Path:
    """Return a local weight file: ``path`` if given, else the cached download, else download ``url``."""
    problem = weights_problem(path, what=what, filename=filename, url=url, flag=flag, offline=offline,
                              cache_dir=cache_dir)
    if problem:
        raise MissingWeightsError(problem)
    if path is not None:
        return Path(path).expanduser()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache / filename
    if cached.is_file():
        return cached
    import torch

    cache.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=True)
    except Exception as error:  # noqa: BLE001 - any network failure gets the same advice
        cached.unlink(missing_ok=True)
        raise MissingWeightsError(f"{what} weights could not be downloaded from {url} ({type(error).__name__}: "
                                  f"{error}). Download the file elsewhere and pass it with {flag} (or put it at "
                                  f"{cached}).") from error
    return cached


def hub_model_problem(model: str, offline: bool, *, what: str, saved_with: str, flag: str) -> str | None:
    """Why a transformers model (local folder or hub id) cannot be had without a download where downloads are
    off, or ``None``; the same advice for every extractor that comes from the Hugging Face hub."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return None
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        return f"{what} folder {folder} does not exist; pass a folder saved with {saved_with} with {flag}."
    if offline:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            return (f"{what} {model!r} is not in the local Hugging Face cache and downloads are off. Run "
                    f"`hf download {model}` where the hub is reachable, then pass the folder with {flag} "
                    f"(or copy the cache here).")
    return None


def resolve_hub_folder(model: str, offline: bool, *, what: str, flag: str) -> Path:
    """A local folder as is, else the hub snapshot (from the cache only when ``offline``)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=offline,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, no network all get the same advice
        raise MissingWeightsError(
            f"{what} {model!r} is not a local folder and could not be fetched from the Hugging Face hub "
            f"({type(error).__name__}: {error}). Download it where the hub is reachable (`hf download {model}`) "
            f"and pass the folder with {flag}.") from error


def folder_weight_files(folder: Path, hint: str) -> list[Path]:
    """The weight files of a transformers model folder (safetensors first); ``MissingWeightsError`` naming
    ``hint`` (what to pass instead) when it has none."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise MissingWeightsError(f"{folder} has no weights (*.safetensors or *.bin); {hint}")
    return files


def init_random_weights(model, seed: int = 0):
    """He-normal convolutions, so activations neither vanish nor explode through a deep random network.

    PyTorch's default init shrinks the signal at every layer; after Inception's 90+ layers the features of all
    inputs are equal to 1e-8, which makes every covariance degenerate. Tests need features that vary.
    """
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()
    return model.eval()


def load_state_dict_exactly(model, state: dict, file: Path, hint: str):
    """Load ``state`` into ``model`` strictly, the one leniency being BatchNorm's ``num_batches_tracked``
    buffers, which older ports of the TF networks predate (they do not affect inference). A state dict of any
    other shape means the wrong file: say so, with ``hint`` on where to get the right one."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        problems = [f"{len(names)} {what} (e.g. {names[0]})" for what, names in
                    (("missing tensors", missing), ("unexpected tensors", unexpected),
                     ("tensors of the wrong shape", mismatched)) if names]
        raise MissingWeightsError(f"{file} does not hold the expected weights: {'; '.join(problems)}. {hint}")
    model.load_state_dict(state, strict=True)
    return model.eval()
