"""Write the trained model as a complete pipeline folder and prove the frozen parts did not change.

Why copy rather than re-save the frozen parts: the T5 encoder and VAE never train, so their folders are copied
byte for byte from the base pipeline (no dtype round-trip, no re-sharding), and only ``transformer/`` is
written from the trained weights. The result has the layout ``CogVideoXPipeline.save_pretrained`` writes
(``model_index.json``, ``tokenizer/``, ``text_encoder/``, ``vae/``, ``scheduler/``, ``transformer/``), so the
generation engine, the app and the next training stage load it directly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

FROZEN_COMPONENTS = ("text_encoder", "vae")
COPIED_COMPONENTS = ("tokenizer", "scheduler", "text_encoder", "vae")
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_pipeline_folder(model: str, local_files_only: bool = False) -> Path:
    """A local folder for ``model``: itself when local, else the hub snapshot (downloaded once, then cached)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path} is not a diffusers pipeline folder (no model_index.json).")
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, local_files_only=local_files_only))


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(16 * 1024**2), b""):
                digest.update(block)
    return digest.hexdigest()


def export_pipeline(transformer, base_model: str, model_dir: Path, save_dtype: str = "fp16",
                    provenance: dict | None = None, local_files_only: bool = False) -> dict:
    """Save ``transformer`` with the base pipeline's other components into ``model_dir``; return the frozen check.

    Raises ``RuntimeError`` if a copied frozen component differs from the base (disk corruption, a race with
    another writer): a model whose encoder silently changed must never be handed to the engine.
    """
    base = resolve_pipeline_folder(base_model, local_files_only)
    model_dir = Path(model_dir)
    partial = model_dir.with_name(model_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    shutil.copy2(base / "model_index.json", partial / "model_index.json")
    for name in COPIED_COMPONENTS:
        if (base / name).is_dir():
            shutil.copytree(base / name, partial / name)
    transformer.to(SAVE_DTYPES[save_dtype]).save_pretrained(partial / "transformer", safe_serialization=True)
    check = {name: {"base": folder_digest(base / name), "output": folder_digest(partial / name)}
             for name in FROZEN_COMPONENTS if (base / name).is_dir()}
    for name, digests in check.items():
        digests["identical"] = digests["base"] == digests["output"]
        if not digests["identical"]:
            raise RuntimeError(f"The exported {name} differs from the base model's: refusing to publish {model_dir}.")
    readme = base / "README.md"
    notes = readme.read_text(errors="ignore") if readme.is_file() else ""
    stage = (provenance or {}).get("stage", "training")
    (partial / "README.md").write_text(
        f"# Ophora Studio trained model ({stage})\n\nTransformer trained by `python -m ophora train fit`; T5 "
        f"encoder and VAE copied unchanged from `{base_model}`.\n\n## Base model notes\n\n{notes}\n")
    (partial / "ophora_training.json").write_text(json.dumps({**(provenance or {}), "frozen_check": check},
                                                             indent=2, default=str))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    partial.rename(model_dir)
    return check
