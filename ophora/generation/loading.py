"""Load the Ophora pipeline: from the hub, a local folder, or a base pipeline plus a fine-tuned transformer.

Why this module exists: the published sampler loads the whole pipeline in fp16 onto one big GPU. Surgeons
run it on whatever workstation they have, so loading here also chooses precision, 8-bit weights
(bitsandbytes on CUDA, optimum-quanto where bitsandbytes cannot run), CPU offload and VAE slicing/tiling
from the hardware it finds, and says what it chose and why (``LoadedPipeline.report``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError

from ophora.generation.options import (DEFAULT_MODEL, MEMORY_MODES, PRECISIONS, QUANTIZATIONS, SCHEDULERS,
                                       LoadOptions, ModelLoadError)
from ophora.generation.preflight import (ModelSource, check_model_files, check_weight_files, hub_model_missing_message,
                                         resolve_model_source)
from ophora.generation.speed import MAGCACHE_FILE
from ophora.generation.tiny import TINY_NOTICE

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "MEMORY_MODES", "PRECISIONS", "QUANTIZATIONS", "SCHEDULERS", "LoadOptions",
           "ModelLoadError", "Hardware", "LoadPlan", "LoadedPipeline", "plan_loading", "load_pipeline",
           "fingerprint_folder", "quantized_load_device", "set_determinism", "runtime_versions"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_GIB = 1024**3


@dataclass
class Hardware:
    device: str
    name: str
    total_memory_gib: float | None  # GPU memory; None on CPU

    @classmethod
    def detect(cls, device: str | None = None) -> "Hardware":
        use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
        if use_cuda:
            if not torch.cuda.is_available():
                raise ModelLoadError(f"Device {device!r} was asked for but CUDA is not available on this machine. "
                                     "Install the CUDA build of torch, or run with --device cpu.")
            index = torch.device(device or "cuda").index or 0
            props = torch.cuda.get_device_properties(index)
            return cls(device=f"cuda:{index}", name=props.name, total_memory_gib=props.total_memory / _GIB)
        return cls(device="cpu", name="CPU", total_memory_gib=None)


@dataclass
class LoadPlan:
    """Resolved settings, each with the reason it was chosen."""

    device: str
    precision: str
    quantization: str  # "none" | "int8-bitsandbytes" | "int8-quanto"
    memory: str
    vae_slicing: bool
    vae_tiling: bool
    reasons: list[str] = field(default_factory=list)


def plan_loading(options: LoadOptions, hardware: Hardware) -> LoadPlan:
    """Choose precision, 8-bit and offload from GPU memory.

    Anchors for CogVideoX-2b at 49x480x720 (diffusers docs and our measurements): fp16 without offload peaks
    near 25 GB; int8 weights (T5 4.4 GiB + transformer 1.6 GiB) bring that under 19 GB; model CPU offload
    keeps one component on the GPU at a time (about 11 GB with VAE tiling); sequential offload under 4 GB
    but many times slower.
    """
    for name, value, allowed in (("precision", options.precision, PRECISIONS),
                                 ("quantization", options.quantization, QUANTIZATIONS),
                                 ("memory", options.memory, MEMORY_MODES),
                                 ("scheduler", options.scheduler, SCHEDULERS)):
        if value not in allowed:
            raise ValueError(f"Unknown {name} {value!r}; choose one of: {', '.join(allowed)}.")
    reasons: list[str] = []
    on_cuda = hardware.device.startswith("cuda")
    vram = hardware.total_memory_gib

    precision = options.precision
    if precision == "auto":
        precision = "fp16" if on_cuda else "fp32"
        reasons.append("fp16: the precision CogVideoX-2b was trained and published in" if on_cuda
                       else "fp32 on CPU: half precision is slow or unsupported for several CPU kernels")

    quant = options.quantization
    memory = options.memory
    if on_cuda and vram is not None:
        if quant == "auto":
            quant = "none" if vram >= 30 else "int8"
            reasons.append(f"{vram:.0f} GiB GPU: " + ("full-precision weights fit" if quant == "none"
                                                       else "8-bit weights for the T5 encoder and transformer"))
        if memory == "auto":
            if vram >= 20:
                memory = "none"
            elif vram >= 8:
                memory = "model_offload"
            else:
                memory = "sequential_offload"
            reasons.append(f"{vram:.0f} GiB GPU: memory mode {memory}")
    else:
        if quant == "auto":
            quant = "none"
            reasons.append("CPU: no 8-bit by default (ask for int8 to use optimum-quanto)")
        if memory == "auto" or memory != "none":
            if memory not in ("auto", "none"):
                reasons.append(f"CPU: offload {memory!r} is meaningless without a GPU; ignored")
            memory = "none"
    if quant == "int8":
        quant = "int8-bitsandbytes" if on_cuda else "int8-quanto"
        if not on_cuda:
            reasons.append("int8 through optimum-quanto: bitsandbytes 8-bit needs CUDA in diffusers")
            if precision != "fp32":
                # Seen here (torch 2.13, quanto 0.2.7): the int8 CPU matmul kernel segfaults on bf16 activations.
                precision = "fp32"
                reasons.append("fp32 activations: optimum-quanto's int8 CPU kernel crashes with half precision")
    if quant == "int8-bitsandbytes" and memory == "sequential_offload":
        # bitsandbytes modules cannot be moved layer by layer; model offload is the low-memory mode for 8-bit.
        memory = "model_offload"
        reasons.append("sequential offload does not work with bitsandbytes 8-bit: using model offload")
    return LoadPlan(device=hardware.device, precision=precision, quantization=quant, memory=memory,
                    vae_slicing=options.vae_slicing, vae_tiling=options.vae_tiling, reasons=reasons)


@dataclass
class LoadedPipeline:
    """A ready ``CogVideoXPipeline`` and everything provenance needs to know about it."""

    pipe: "object"
    options: LoadOptions
    plan: LoadPlan
    hardware: Hardware
    model_path: str  # where the weights were read from
    model_fingerprint: str  # hub commit hash, or a hash of the local folder (see ``fingerprint_folder``)
    is_tiny: bool

    @property
    def execution_device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def report(self) -> str:
        """One paragraph for the CLI and the app banner: which model, precision and device, and why."""
        quant = {"none": "no 8-bit", "int8-bitsandbytes": "8-bit (bitsandbytes)",
                 "int8-quanto": "8-bit (optimum-quanto)"}[self.plan.quantization]
        memory_gib = f", {self.hardware.total_memory_gib:.0f} GiB" if self.hardware.total_memory_gib else ""
        text = (f"Model {self.options.model}" + (f" + transformer {self.options.transformer}" if self.options.transformer else "")
                + f" on {self.hardware.name} ({self.plan.device}{memory_gib}): {self.plan.precision}, {quant}, "
                f"memory mode {self.plan.memory}.")
        if self.plan.reasons:
            text += " Why: " + "; ".join(self.plan.reasons) + "."
        if self.is_tiny:
            text += " " + TINY_NOTICE
        return text

    def describe(self) -> dict:
        """Machine-readable summary recorded in every clip's provenance."""
        return {
            "id": self.options.model,
            "revision": self.options.revision,
            "path": self.model_path,
            "fingerprint": self.model_fingerprint,
            "transformer": self.options.transformer,
            "tiny_random_weights": self.is_tiny,
            "precision": self.plan.precision,
            "quantization": self.plan.quantization,
            "memory": self.plan.memory,
            "vae_slicing": self.plan.vae_slicing,
            "vae_tiling": self.plan.vae_tiling,
            "device": self.plan.device,
            "device_name": self.hardware.name,
            "deterministic": self.options.deterministic,
        }


def fingerprint_folder(path: str | Path, full_hash_limit: int = 64 * 1024**2) -> str:
    """A sha256 that changes when a local model folder's configs or weights change.

    Files up to ``full_hash_limit`` bytes are hashed whole; larger weight files contribute their size, their
    safetensors header (tensor names, dtypes, shapes, offsets) and their first and last MiB, so a 20 GB
    checkpoint is identified in well under a second.
    """
    root = Path(path)
    digest = hashlib.sha256()
    # Skip caches *inside* the folder (huggingface_hub's .cache/ download metadata), judged relative to the
    # folder: a model kept under ~/.cache must still be hashed.
    # The MagCache ratios saved beside the weights describe them; they must not change the weights' fingerprint.
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts
                   and p.name != MAGCACHE_FILE)
    if not files:
        raise ModelLoadError(f"{root} holds no files to fingerprint; point --model at a pipeline folder.")
    for file in files:
        rel = file.relative_to(root).as_posix()
        size = file.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= full_hash_limit:
                digest.update(handle.read())
                continue
            head = handle.read(1024**2)
            digest.update(head)
            if file.suffix == ".safetensors" and len(head) >= 8:
                header_len = int.from_bytes(head[:8], "little")
                handle.seek(8)
                digest.update(handle.read(min(header_len, 100 * 1024**2)))
            handle.seek(max(0, size - 1024**2))
            digest.update(handle.read())
    return "sha256:" + digest.hexdigest()


def _load_error_message(options: LoadOptions, source: ModelSource, error: Exception) -> str:
    """What to do when ``from_pretrained`` fails: for a local folder, the damaged file (never hub advice); for a
    hub id, how to get the weights."""
    if source.local:
        try:
            check_weight_files(source.path)
        except ModelLoadError as damaged:
            return str(damaged)
        return (f"Could not load the model folder {source.path}: {error}\nA file in it is damaged or missing: "
                f"re-download this file (the one named above) from where the folder came from.")
    text = str(error)
    if any(word in text for word in ("safetensors", "header", "deserializ", "incomplete", "truncat")):
        return (f"Could not load the model {options.model!r}: {error}\nA file in the Hugging Face cache is damaged: "
                f"re-download this file with `hf download {options.model} --force-download` (or delete it from "
                f"the cache and load again).")
    return hub_model_missing_message(options.model, f"{type(error).__name__}: {error}")


def _hub_fingerprint(pipe, options: LoadOptions) -> str:
    """For hub loads the snapshot folder is named after the commit hash: the exact revision in use."""
    name_or_path = str(getattr(pipe.config, "_name_or_path", "") or "")
    parts = Path(name_or_path).parts
    if "snapshots" in parts:
        return "commit:" + parts[parts.index("snapshots") + 1]
    return f"revision:{options.revision or 'main'}"


def _load_transformer(path: str, dtype: torch.dtype, quantization_config, local_files_only: bool):
    from diffusers import CogVideoXTransformer3DModel

    from ophora.generation.preflight import transformer_config_path

    config = transformer_config_path(LoadOptions(transformer=path))
    folder = Path(path).expanduser()
    return CogVideoXTransformer3DModel.from_pretrained(
        str(folder), subfolder=None if config.parent == folder else "transformer", dtype=dtype,
        quantization_config=quantization_config, local_files_only=local_files_only)


def quantized_load_device(plan: LoadPlan) -> int | None:
    """The CUDA index to make current while bitsandbytes weights load, or ``None`` when no context is needed.

    Why: diffusers and transformers place bitsandbytes-quantized modules on ``torch.cuda.current_device()``
    (a pipeline's ``device_map`` takes only "cuda" or "balanced"), so ``--device cuda:1`` would otherwise put
    the 8-bit T5 and transformer on GPU 0 and the VAE on GPU 1."""
    if plan.quantization != "int8-bitsandbytes" or not plan.device.startswith("cuda"):
        return None
    return torch.device(plan.device).index or 0


def _load_placement(plan: LoadPlan):
    index = quantized_load_device(plan)
    return torch.cuda.device(index) if index is not None else contextlib.nullcontext()


def set_determinism(enabled: bool) -> None:
    """``--deterministic``: torch's deterministic algorithms (error on ops that have none), deterministic cuDNN,
    no cuDNN autotuning, and the cuBLAS workspace setting that deterministic matmuls need. Process-wide by
    nature (torch keeps these flags globally), so it is applied once, at load, and recorded in provenance."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def runtime_versions() -> dict:
    """torch, CUDA and cuDNN versions and the determinism flags in force: what a seed's reproducibility depends on."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def bitsandbytes_configs(options: LoadOptions):
    """8-bit (LLM.int8) configs for the T5 encoder and the transformer: (pipeline config, transformer config).

    A separately loaded fine-tuned transformer gets its own config; the pipeline's then covers T5 only.
    """
    from diffusers import BitsAndBytesConfig as DiffusersBnbConfig
    from diffusers import PipelineQuantizationConfig

    components = ["text_encoder"] + ([] if options.transformer else ["transformer"])
    pipeline_quant = PipelineQuantizationConfig(quant_backend="bitsandbytes_8bit", quant_kwargs={"load_in_8bit": True},
                                                components_to_quantize=components)
    return pipeline_quant, (DiffusersBnbConfig(load_in_8bit=True) if options.transformer else None)


def quantize_int8_quanto(module: torch.nn.Module) -> torch.nn.Module:
    """Replace the Linear weights of ``module`` by int8 ones in place (optimum-quanto, weights only; activations
    stay in the module's dtype) and freeze them, so the float weights are freed."""
    from optimum.quanto import freeze, qint8, quantize

    quantize(module, weights=qint8)
    freeze(module)
    release_freed_memory()
    return module


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS. Why: after quantizing on CPU the float weights are freed, but
    glibc keeps the fragmented heap, so the process stayed at its fp32 size (measured: 2.06 GiB before, 1.06
    GiB after trimming a 6-block transformer). No-op where glibc is absent."""
    import ctypes
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
            pass


def load_pipeline(options: LoadOptions | None = None, **overrides) -> LoadedPipeline:
    """Load a ``CogVideoXPipeline`` as ``options`` (or keyword overrides) ask, ready to generate."""
    options = options or LoadOptions()
    if overrides:
        options = LoadOptions(**{**asdict(options), **overrides})
    hardware = Hardware.detect(options.device)
    plan = plan_loading(options, hardware)
    source = resolve_model_source(options)  # a missing folder fails here, before diffusers is imported
    if source.local:
        check_model_files(source.path)  # a damaged config or tokenizer file is named now, not after 20 s of loading
    from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline

    set_determinism(options.deterministic)
    dtype = _DTYPES[plan.precision]
    pipeline_quant, transformer_quant = (bitsandbytes_configs(options)
                                         if plan.quantization == "int8-bitsandbytes" else (None, None))

    extra = {}
    try:
        with _load_placement(plan):
            if options.transformer:
                extra["transformer"] = _load_transformer(options.transformer, dtype, transformer_quant,
                                                         options.local_files_only)
            pipe = CogVideoXPipeline.from_pretrained(
                source.path, dtype=dtype, revision=options.revision, quantization_config=pipeline_quant,
                local_files_only=options.local_files_only, **extra)
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:  # missing files, no hub, a damaged file
        raise ModelLoadError(_load_error_message(options, source, error)) from error

    if plan.quantization == "int8-quanto":
        for component in (pipe.text_encoder, pipe.transformer):
            quantize_int8_quanto(component)

    if options.scheduler == "dpm":
        pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")

    if plan.memory == "model_offload":
        pipe.enable_model_cpu_offload(device=plan.device)
    elif plan.memory == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=plan.device)
    elif plan.quantization != "int8-bitsandbytes":
        pipe.to(plan.device)
    else:  # bitsandbytes modules were placed on plan.device at load time (see quantized_load_device); move the rest
        for name in ("vae",) + (("transformer",) if options.transformer and transformer_quant is None else ()):
            getattr(pipe, name).to(plan.device)
    if plan.vae_slicing:
        pipe.vae.enable_slicing()
    if plan.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)  # the engine reports progress itself

    fingerprint = fingerprint_folder(source.path) if source.local else _hub_fingerprint(pipe, options)
    if options.transformer and Path(options.transformer).is_dir():
        fingerprint += " transformer:" + fingerprint_folder(options.transformer)
    loaded = LoadedPipeline(pipe=pipe, options=options, plan=plan, hardware=hardware, model_path=source.path,
                            model_fingerprint=fingerprint, is_tiny=source.is_tiny)
    logger.info(loaded.report)
    return loaded
