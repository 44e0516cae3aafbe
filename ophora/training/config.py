"""Stage configs (YAML) for the training loop: one dataclass, strict keys, clear errors.

Why strict: a typo such as ``learning_rte: 5e-5`` in a YAML file would otherwise be ignored silently and a
multi-day run would train with the default. Unknown keys stop the run with the closest valid name.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

TRAINING_MODES = ("full", "lora")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("cosine_with_restarts", "cosine", "linear", "constant", "constant_with_warmup", "polynomial")


class ConfigError(ValueError):
    """The stage config cannot run; the message says which key to fix."""


@dataclass
class LoraSettings:
    """peft LoRA on the transformer's attention projections (cogvideox-factory's defaults)."""

    rank: int = 64
    alpha: int = 64
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class StageConfig:
    """One training stage. Defaults are the published Ophora recipe (see docs/training.md)."""

    stage: str = "tpt"
    base_model: str = "THUDM/CogVideoX-2b"  # pipeline folder or hub id; P2FT points at the TPT output's model/
    data: list[str] = field(default_factory=list)  # folders written by `python -m ophora train encode`
    output_dir: str = "outputs/ophora-tpt"
    training: str = "full"  # "full" fine-tune of the transformer, or "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    seed: int = 42
    max_train_steps: int = 65_000
    # Clips per optimizer step = train_batch_size x processes x gradient_accumulation_steps. The published runs:
    # 8 per process x 16 GPUs x 1 = 128. With global_batch_size set, the accumulation is derived at launch from
    # the number of processes (8 GPUs -> 2, 1 GPU -> 16); null keeps gradient_accumulation_steps (default 1).
    global_batch_size: int | None = 128
    train_batch_size: int = 8  # per process
    gradient_accumulation_steps: int | None = None  # None: derived from global_batch_size; set: must agree
    learning_rate: float = 1e-4
    lr_scheduler: str = "cosine_with_restarts"
    lr_warmup_steps: int = 800
    lr_num_cycles: int = 1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_weight_decay: float = 1e-3
    adam_epsilon: float = 1e-8
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0
    mixed_precision: str = "fp16"
    gradient_checkpointing: bool = True
    allow_tf32: bool = True
    save_dtype: str = "fp16"  # precision of the exported transformer (CogVideoX-2b is published in fp16)
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    validation_steps: int = 500  # 0 disables validation
    validation_prompts: list[str] = field(default_factory=list)
    validation_num_inference_steps: int = 50
    validation_guidance_scale: float = 6.0
    validation_use_dynamic_cfg: bool = False
    validation_seed: int = 42
    validation_num_frames: int | None = None  # None: the first bucket's frames
    validation_height: int | None = None
    validation_width: int | None = None
    validation_fps: int = 8
    logging_steps: int = 1
    dataloader_num_workers: int = 0

    def validate(self) -> StageConfig:
        """Raise ``ConfigError`` listing every problem at once."""
        problems = []
        if self.training not in TRAINING_MODES:
            problems.append(f"training: {self.training!r} is not one of {', '.join(TRAINING_MODES)}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            problems.append(f"mixed_precision: {self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISIONS)}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            problems.append(f"lr_scheduler: {self.lr_scheduler!r} is not one of {', '.join(LR_SCHEDULERS)}")
        if self.save_dtype not in ("fp16", "bf16", "fp32"):
            problems.append(f"save_dtype: {self.save_dtype!r} is not one of fp16, bf16, fp32")
        if not self.data:
            problems.append("data: list at least one folder written by `python -m ophora train encode`")
        for name in ("max_train_steps", "train_batch_size", "checkpointing_steps", "logging_steps", "lr_num_cycles"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name}: must be a whole number >= 1, got {getattr(self, name)!r}")
        for name in ("global_batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                problems.append(f"{name}: must be a whole number >= 1 or null, got {value!r}")
        if (isinstance(self.global_batch_size, int) and isinstance(self.train_batch_size, int)
                and self.train_batch_size >= 1 and self.global_batch_size % self.train_batch_size):
            problems.append(f"global_batch_size {self.global_batch_size} is not a multiple of train_batch_size "
                            f"{self.train_batch_size} (the per-process batch)")
        if not isinstance(self.validation_steps, int) or self.validation_steps < 0:
            problems.append(f"validation_steps: must be a whole number >= 0, got {self.validation_steps!r}")
        if not isinstance(self.lr_warmup_steps, int) or self.lr_warmup_steps < 0:
            problems.append(f"lr_warmup_steps: must be a whole number >= 0, got {self.lr_warmup_steps!r}")
        if not float(self.learning_rate) > 0:
            problems.append(f"learning_rate: must be > 0, got {self.learning_rate!r}")
        if self.validation_steps and not self.validation_prompts:
            problems.append("validation_prompts: give at least one instruction, or set validation_steps: 0")
        if self.training == "lora" and (self.lora.rank < 1 or not self.lora.target_modules):
            problems.append("lora: rank must be >= 1 and target_modules non-empty")
        if problems:
            raise ConfigError(f"Stage config {self.stage!r} has problems:\n  - " + "\n  - ".join(problems))
        self.learning_rate = float(self.learning_rate)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def batch_plan(self, num_processes: int) -> BatchPlan:
        """Per-process batch, accumulation and global batch for a launch with ``num_processes`` processes.

        Raises ``ConfigError`` when ``global_batch_size`` cannot be reached exactly with this many processes, or
        disagrees with an explicit ``gradient_accumulation_steps``: a silently different global batch is a
        different recipe (learning rate, warm-up and step counts were tuned for it).
        """
        per_process = self.train_batch_size
        if self.global_batch_size is None:
            accumulation = self.gradient_accumulation_steps or 1
            return BatchPlan(per_process, num_processes, accumulation, per_process * num_processes * accumulation)
        per_step = per_process * num_processes
        if self.global_batch_size % per_step:
            fits = [n for n in range(1, self.global_batch_size // per_process + 1)
                    if self.global_batch_size % (per_process * n) == 0]
            raise ConfigError(
                f"global_batch_size {self.global_batch_size} cannot be split into {num_processes} processes x "
                f"train_batch_size {per_process} x a whole number of accumulation steps. Launch with a process count "
                f"in {fits}, or change train_batch_size (e.g. --set train_batch_size=1) or global_batch_size.")
        accumulation = self.global_batch_size // per_step
        if self.gradient_accumulation_steps is not None and self.gradient_accumulation_steps != accumulation:
            raise ConfigError(
                f"gradient_accumulation_steps {self.gradient_accumulation_steps} disagrees with global_batch_size "
                f"{self.global_batch_size} = {num_processes} processes x train_batch_size {per_process} x "
                f"{accumulation}. Remove gradient_accumulation_steps (it is derived), or set "
                f"global_batch_size: null to use it as given.")
        return BatchPlan(per_process, num_processes, accumulation, self.global_batch_size)


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step's global batch is split at this launch."""

    per_process: int
    processes: int
    accumulation: int
    global_batch: int

    def describe(self) -> str:
        return (f"global batch {self.global_batch} per optimizer step = {self.per_process} per process x "
                f"{self.processes} processes x {self.accumulation} accumulation steps")


def _check_keys(values: dict, cls, where: str) -> None:
    known = [f.name for f in fields(cls)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Valid keys: {', '.join(known)}."
            raise ConfigError(f"Unknown key {key!r} in {where}.{hint}")


def _check_types(values: dict, cls, where: str) -> dict:
    """Coerce YAML 1.1's string reading of ``1e-4`` to float; refuse values of the wrong type with the key's name.

    Why: PyYAML reads ``adam_weight_decay: 1e-3`` (no dot) as the string "1e-3", which would otherwise fail deep
    inside torch's AdamW with an error that names neither the key nor the file.
    """
    hints = typing.get_type_hints(cls)
    problems, checked = [], dict(values)
    for key, value in values.items():
        hint = hints.get(key)
        optional = type(None) in typing.get_args(hint)
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
        if value is None and optional:
            continue
        if base is float:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    pass
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"{key}: expected a number, got {value!r}")
                continue
            checked[key] = float(value)
        elif base is int and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{key}: expected a whole number, got {value!r}")
        elif base is bool and not isinstance(value, bool):
            problems.append(f"{key}: expected true or false, got {value!r}")
        elif base is str and not isinstance(value, str):
            problems.append(f"{key}: expected text, got {value!r}")
        elif typing.get_origin(base) is list and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            problems.append(f"{key}: expected a list of text items, got {value!r}")
    if problems:
        raise ConfigError(f"{where} has values of the wrong type:\n  - " + "\n  - ".join(problems))
    return checked


def _parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE (YAML value), got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def config_from_dict(values: dict, where: str = "config") -> StageConfig:
    """Build and validate a ``StageConfig`` from plain values (a parsed YAML mapping)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a YAML mapping of keys to values.")
    values = dict(values)
    _check_keys(values, StageConfig, where)
    lora = values.pop("lora", None) or {}
    if not isinstance(lora, dict):
        raise ConfigError(f"lora in {where} must be a mapping (rank, alpha, dropout, target_modules).")
    _check_keys(lora, LoraSettings, f"{where} (lora)")
    if values.get("mixed_precision") is False:  # YAML 1.1 reads a bare `no` as false
        values["mixed_precision"] = "no"
    if isinstance(values.get("data"), str):
        values["data"] = [values["data"]]
    values = _check_types(values, StageConfig, where)
    lora = _check_types(lora, LoraSettings, f"{where} (lora)")
    return StageConfig(**values, lora=LoraSettings(**lora)).validate()


def load_stage_config(path: str | Path, overrides: list[str] | None = None) -> StageConfig:
    """Read a stage YAML; ``overrides`` are ``KEY=VALUE`` strings (``lora.rank=16``) applied on top.

    Relative paths in ``data``, ``output_dir`` and a local ``base_model`` are resolved against the current
    folder, as a user typing them at the shell expects.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Stage config {path} does not exist. Start from ophora/training/configs/tpt.yaml.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must be a YAML mapping of keys to values.")
    for text in overrides or []:
        keys, value = _parse_override(text)
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {text}: {key} is not a mapping")
        target[keys[-1]] = value
    return config_from_dict(values, where=str(path))


def check_model_available(model: str, key: str, local_files_only: bool, timeout_s: float = 10) -> None:
    """Raise ``ConfigError`` at once when a hub model is neither in this machine's Hugging Face cache nor
    reachable. Why: offline, diffusers fails only after half a minute, naming a config file
    ("... does not appear to have a file named scheduler_config.json") instead of the fix."""
    from huggingface_hub import constants, model_info, snapshot_download

    if Path(model).expanduser().is_dir() or model.startswith(("/", ".", "~")) or model.count("/") > 1:
        return  # a folder (or a path that names one): the loader says what is missing there
    try:
        snapshot_download(model, local_files_only=True, allow_patterns=["model_index.json"])
        return  # in the local cache
    except Exception:  # noqa: BLE001 - not cached (or not a valid id): decided below
        pass
    offline = local_files_only or constants.HF_HUB_OFFLINE
    if not offline:
        try:
            model_info(model, timeout=timeout_s)
            return
        except Exception:  # noqa: BLE001 - no network, no such repository, no access
            pass
    folder = f"models/{model.rsplit('/', 1)[-1]}"
    raise ConfigError(
        f"The model {model!r} is not available offline: it is not in this machine's Hugging Face cache"
        + ("" if offline else " and the hub could not be reached") + f". On a connected machine run "
        f"`hf download {model} --local-dir {folder}`, copy that folder here, and point {key} at it"
        + (f" (`base_model: {folder}` in the stage config, or `--set base_model={folder}`)." if key == "base_model"
           else f" (`--model {folder}`)."))
