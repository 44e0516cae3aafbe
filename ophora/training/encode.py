"""Pre-encode a curation manifest once: VAE posterior and T5 embeddings per clip, in sharded safetensors.

Why ahead of training: the T5-XXL encoder (4.8 B parameters) and the 3D VAE stay frozen, so running them at
every step would only burn GPU time and memory; the published runs encoded once (fp32, 49 frames, 480x720,
226 tokens). We store the VAE *posterior* (mean and log-variance, ``latent_dist.parameters``) rather than one
sample, so training draws a fresh posterior sample times the VAE scaling factor at every step, as the
released training code does.

Layout of an encoded folder::

    encode.json                    what was encoded with what (checked on resume)
    shards/shard-00000.safetensors tensors "<key>/latent_dist" (2C, F, h, w) and "<key>/prompt_embeds" (226, D)
    shards/shard-00000.json        the shard's clips (key, video, instruction, bucket) and skipped clips
    index.json                     all shards' clips; written when every shard is done

Resumable: shards are written atomically and skipped when present. Data-parallel: under
``accelerate launch`` each process encodes the shards ``i % num_processes == process_index``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ophora.training.frames import (
    Bucket,
    choose_bucket,
    frames_to_tensor,
    read_video_frames,
)
from ophora.training.manifest import ClipRecord, read_manifest

logger = logging.getLogger(__name__)

INDEX_VERSION = 1
STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
MAX_TEXT_TOKENS = 226


class EncodeError(RuntimeError):
    """Encoding cannot start or continue; the message says what to do."""


@dataclass
class EncodeOptions:
    manifest: str
    model: str  # pipeline folder or hub id whose VAE and T5 the training will pair with
    output: str
    buckets: tuple[str, ...] = ("49x480x720",)
    shard_size: int = 64
    storage_dtype: str = "float16"
    max_text_tokens: int = MAX_TEXT_TOKENS
    vae_tiling: bool = True
    device: str | None = None
    local_files_only: bool = False


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def _plan_fingerprint(records: list[ClipRecord], options: EncodeOptions) -> str:
    digest = hashlib.sha256()
    for record in records:
        fields = (record.key, record.video, record.start_s, record.end_s, record.instruction)
        digest.update("\0".join(map(str, fields)).encode() + b"\n")
    digest.update(json.dumps([options.model, list(options.buckets), options.shard_size, options.storage_dtype,
                              options.max_text_tokens]).encode())
    return digest.hexdigest()


def _load_encoders(options: EncodeOptions, device: torch.device):
    """The pipeline without its transformer: only the tokenizer, T5 and VAE are needed here (fp32 encode)."""
    from diffusers import CogVideoXPipeline

    from ophora.training.config import ConfigError, check_model_available

    try:
        check_model_available(options.model, "--model", options.local_files_only)  # offline: say so before loading
    except ConfigError as error:
        raise EncodeError(str(error)) from None

    try:
        pipe = CogVideoXPipeline.from_pretrained(options.model, transformer=None, torch_dtype=torch.float32,
                                                 local_files_only=options.local_files_only)
    except (OSError, ValueError) as error:  # a missing folder, an id the hub or its cache does not have
        raise EncodeError(f"Could not load the VAE and T5 of {options.model!r}: {error}") from error
    pipe.text_encoder.requires_grad_(False).eval().to(device)
    pipe.vae.requires_grad_(False).eval().to(device)
    pipe.vae.enable_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    return pipe


def _write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(payload, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


@torch.no_grad()
def _encode_shard(pipe, records: list[ClipRecord], buckets: list[Bucket], options: EncodeOptions,
                  device: torch.device, shard_path: Path) -> dict:
    dtype = STORAGE_DTYPES[options.storage_dtype]
    tensors: dict[str, torch.Tensor] = {}
    entries, skipped = [], []
    for record in records:
        try:
            frames = read_video_frames(record.video, record.start_s, record.end_s)
        except Exception as error:  # noqa: BLE001 - a corrupt clip is reported and skipped, not fatal
            skipped.append({"key": record.key, "video": str(record.video), "reason": f"unreadable: {error}"})
            continue
        bucket = choose_bucket(buckets, len(frames), frames.shape[1], frames.shape[2]) if len(frames) else None
        if bucket is None:
            skipped.append({"key": record.key, "video": str(record.video),
                            "reason": f"{len(frames)} frames, fewer than every bucket"})
            continue
        video = frames_to_tensor(frames, bucket).unsqueeze(0).to(device)
        posterior = pipe.vae.encode(video).latent_dist
        n_tokens = len(pipe.tokenizer(record.instruction, truncation=False).input_ids)
        prompt_embeds, _ = pipe.encode_prompt(record.instruction, do_classifier_free_guidance=False,
                                              max_sequence_length=options.max_text_tokens, device=device,
                                              dtype=torch.float32)
        tensors[f"{record.key}/latent_dist"] = posterior.parameters[0].to("cpu", dtype).contiguous()
        tensors[f"{record.key}/prompt_embeds"] = prompt_embeds[0].to("cpu", dtype).contiguous()
        entry = {"key": record.key, "video": str(record.video), "start_s": record.start_s, "end_s": record.end_s,
                 "instruction": record.instruction,
                 "bucket": str(bucket), "latent_shape": list(posterior.parameters.shape[1:]),
                 "text_tokens": n_tokens}
        if n_tokens > options.max_text_tokens:
            entry["truncated"] = True
            logger.warning("%s: instruction is %d T5 tokens; only %d are encoded", record.video, n_tokens,
                           options.max_text_tokens)
        entries.append(entry)
    return save_shard(shard_path, tensors, entries, skipped)


def save_shard(shard_path: Path, tensors: dict[str, torch.Tensor], entries: list[dict], skipped: list[dict]) -> dict:
    """Write one shard's tensors, then its JSON (the JSON's presence marks the shard done)."""
    from safetensors.torch import save_file

    tmp = shard_path.with_name(shard_path.name + ".partial")
    if tensors:
        save_file(tensors, str(tmp), metadata={"format": "pt", "ophora": "encoded-clips"})
        os.replace(tmp, shard_path)
    payload = {"file": shard_path.name if tensors else None, "clips": entries, "skipped": skipped}
    _write_json_atomic(shard_path.with_suffix(".json"), payload)
    return payload


def encode_manifest(options: EncodeOptions) -> dict:
    """Encode every kept clip of ``options.manifest`` into ``options.output``; returns the index (main process)."""
    from accelerate import PartialState

    state = PartialState(cpu=options.device == "cpu")
    if options.storage_dtype not in STORAGE_DTYPES:
        raise EncodeError(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}; got {options.storage_dtype!r}")
    buckets = [Bucket.parse(text).check() for text in options.buckets]
    if options.shard_size < 1:
        raise EncodeError("--shard-size must be >= 1")
    records = read_manifest(options.manifest)
    output = Path(options.output)
    shard_dir = output / "shards"
    fingerprint = _plan_fingerprint(records, options)
    plan = {"version": INDEX_VERSION, "manifest": str(Path(options.manifest).resolve()), "model": options.model,
            "buckets": [str(b) for b in buckets], "shard_size": options.shard_size,
            "storage_dtype": options.storage_dtype, "max_text_tokens": options.max_text_tokens,
            "num_clips": len(records), "fingerprint": fingerprint}
    plan_path = output / "encode.json"
    # A plan binds the folder only once a shard was written with it: a run that failed before (a mistyped
    # --model, an offline hub) never blocks its corrected rerun.
    if plan_path.is_file() and any(shard_dir.glob("*.json")):
        previous = json.loads(plan_path.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise EncodeError(f"{output} holds an encode of a different manifest, model or settings. Use a new "
                              f"--output folder (or delete {output} to start over).")

    shards = [records[i:i + options.shard_size] for i in range(0, len(records), options.shard_size)]
    mine = [i for i in range(len(shards)) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if not (shard_dir / f"{_shard_name(i)}.json").is_file()]
    if len(todo) < len(mine):
        logger.info("process %d: %d of %d shards already encoded, resuming", state.process_index,
                    len(mine) - len(todo), len(mine))
    device = torch.device(options.device) if options.device else state.device
    pipe = _load_encoders(options, device) if todo else None
    state.wait_for_everyone()
    if state.is_main_process:  # written only after the encoders loaded (see above)
        shard_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(plan_path, plan)
    state.wait_for_everyone()
    if todo:
        for i in todo:
            payload = _encode_shard(pipe, shards[i], buckets, options, device,
                                    shard_dir / f"{_shard_name(i)}.safetensors")
            logger.info("shard %d/%d: %d clips encoded, %d skipped", i + 1, len(shards), len(payload["clips"]),
                        len(payload["skipped"]))
    state.wait_for_everyone()
    index = None
    if state.is_main_process:
        index = write_index(output, num_shards=len(shards), plan=plan)
    state.wait_for_everyone()
    return index


def write_index(output: Path, num_shards: int, plan: dict) -> dict:
    """Merge the shard files into ``index.json`` once all shards exist."""
    clips, skipped = [], []
    for i in range(num_shards):
        meta_path = output / "shards" / f"{_shard_name(i)}.json"
        if not meta_path.is_file():
            raise EncodeError(f"{meta_path} is missing: a process did not finish. Run the same command again to "
                              f"encode the missing shards.")
        meta = json.loads(meta_path.read_text())
        for entry in meta["clips"]:
            clips.append({**entry, "shard": f"shards/{meta['file']}"})
        skipped += meta["skipped"]
    if not clips:
        raise EncodeError(f"No clip could be encoded into {output}: every clip was skipped "
                          f"({skipped[0]['reason'] if skipped else 'empty manifest'}).")
    index = {**plan, "clips": clips, "skipped": skipped}
    _write_json_atomic(output / "index.json", index)
    return index
