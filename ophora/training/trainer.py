"""One training loop for every stage: TPT and P2FT are two configs of ``fit``.

Read top to bottom: ``fit`` splits the stage's global batch over the launched processes (deriving gradient
accumulation), loads the base transformer (full fine-tune, or LoRA through peft), builds AdamW (optionally 8-bit)
and the cosine-with-restarts schedule, and lets accelerate handle devices, mixed precision, DDP / DeepSpeed
ZeRO-2/3 and gradient accumulation. Every clip's posterior sample, timestep and noise come from a generator
seeded by its position in the run, and the data order is a pure function of seed, epoch and global batch, so
any split of the same global batch trains on the same numbers and a resumed run reproduces an uninterrupted
one. At the end the transformer (gathered whole under ZeRO-3) is exported with the base pipeline's frozen
parts as ``<output_dir>/model``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ophora.training.config import BatchPlan, ConfigError, StageConfig, check_model_available
from ophora.training.dataset import BucketBatchSampler, DataError, EncodedClips, collate
from ophora.training.objective import diffusion_loss, sample_generators, sample_latents

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "ophora_state.json"
# Settings a resumed run must share with the run that wrote the checkpoint (and the global batch, checked apart:
# its split into processes, per-process batch and accumulation may change), or the data order would differ.
RESUME_KEYS = ("seed", "training", "data")


@dataclass
class FitResult:
    output_dir: Path
    model_dir: Path | None  # the exported pipeline; None when the run stopped before max_train_steps
    losses: dict[int, float] = field(default_factory=dict)  # optimizer step -> mean loss over the global batch
    learning_rates: dict[int, float] = field(default_factory=dict)  # optimizer step -> lr used by that step
    batch: BatchPlan | None = None
    global_step: int = 0
    resumed_from: Path | None = None
    seconds_per_step: float | None = None
    peak_memory_bytes: int | None = None
    frozen_check: dict = field(default_factory=dict)
    validation_clips: list[Path] = field(default_factory=list)
    is_main_process: bool = True


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    """``resume`` is "latest" or a checkpoint folder."""
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise ConfigError(f"{path} is not a complete training checkpoint (no {STATE_FILE}).")
        return path
    candidates = [p for p in (output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file()]
    if not candidates:
        raise ConfigError(f"--resume latest: no checkpoint under {output_dir / 'checkpoints'}.")
    return max(candidates, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def check_base_model(base_model: str) -> None:
    """A local ``base_model`` must be a pipeline folder; say so before accelerate or any weights are loaded.

    Why: P2FT's base is the TPT run's ``model/`` folder, which exists only once TPT reached max_train_steps;
    without this check diffusers would treat the missing path as a hub id and fail with a network error.
    """
    path = Path(base_model).expanduser()
    if path.is_dir():
        missing = [name for name in ("model_index.json", "transformer", "scheduler", "vae") if not (path / name).exists()]
        if missing:
            raise ConfigError(f"base_model {path} is not a complete diffusers pipeline folder (no "
                              f"{', '.join(missing)}). Point it at a pipeline folder such as a finished run's model/.")
        return
    if base_model.startswith((".", "/", "~")) or base_model.count("/") != 1:
        raise ConfigError(f"base_model {base_model} does not exist. For P2FT it is the TPT run's model/ folder, "
                          f"written when TPT reaches max_train_steps: finish TPT first (or resume it with "
                          f"--resume latest), or give a hub id such as THUDM/CogVideoX-2b.")


def _weight_dtype(mixed_precision: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def _check_hardware(config: StageConfig, use_cuda: bool) -> None:
    if config.mixed_precision == "fp16" and not use_cuda:
        raise ConfigError("mixed_precision fp16 needs a CUDA GPU. On CPU set mixed_precision: no (or bf16), e.g. "
                          "`--set mixed_precision=no`.")
    if config.use_8bit_adam and not use_cuda:
        raise ConfigError("use_8bit_adam needs a CUDA GPU (bitsandbytes' 8-bit AdamW has no CPU kernels). Set "
                          "use_8bit_adam: false on CPU.")


def load_transformer(config: StageConfig, weight_dtype: torch.dtype, local_files_only: bool = False):
    """The base transformer, made trainable in full or wrapped with LoRA adapters (base weights frozen)."""
    from diffusers import CogVideoXTransformer3DModel

    transformer = CogVideoXTransformer3DModel.from_pretrained(config.base_model, subfolder="transformer",
                                                              torch_dtype=torch.float32,
                                                              local_files_only=local_files_only)
    if config.training == "full":
        transformer.requires_grad_(True)  # fp32 master weights; autocast runs the forward in fp16/bf16
    else:
        from peft import LoraConfig

        transformer.requires_grad_(False)
        transformer.to(weight_dtype)  # frozen base weights in the training precision save memory
        transformer.add_adapter(LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha,
                                           lora_dropout=config.lora.dropout, init_lora_weights=True,
                                           target_modules=list(config.lora.target_modules)))
        for param in transformer.parameters():
            if param.requires_grad:
                param.data = param.data.float()  # LoRA weights train in fp32
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    return transformer


def trainable_parameters(transformer, training: str) -> list[torch.nn.Parameter]:
    """The parameters the optimizer gets, checked: all of them (full) or exactly the LoRA weights."""
    named = [(n, p) for n, p in transformer.named_parameters() if p.requires_grad]
    if not named:
        raise RuntimeError("No trainable parameters in the transformer.")
    if training == "lora":
        stray = [n for n, _ in named if "lora_" not in n]
        if stray:
            raise RuntimeError(f"LoRA training would also update base weights: {stray[:3]}")
    return [p for _, p in named]


def _make_optimizer(config: StageConfig, params):
    kwargs = {"lr": config.learning_rate, "betas": (config.adam_beta1, config.adam_beta2),
                  "weight_decay": config.adam_weight_decay, "eps": config.adam_epsilon}
    if config.use_8bit_adam:
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def _check_data(dataset: EncodedClips, transformer_config) -> None:
    """The first clip of every data folder must match the transformer's latent channels and text width."""
    firsts = {}
    for i, sample in enumerate(dataset.samples):
        firsts.setdefault(sample.folder, i)
    for i in firsts.values():
        _check_sample(dataset[i], transformer_config)


def _check_sample(sample: dict, transformer_config) -> None:
    channels = sample["latent_dist"].shape[0] // 2
    if channels != transformer_config.in_channels:
        raise DataError(f"The encoded latents have {channels} channels but the transformer takes "
                        f"{transformer_config.in_channels}: the data was encoded with another model's VAE.")
    text_dim = sample["prompt_embeds"].shape[-1]
    if text_dim != transformer_config.text_embed_dim:
        raise DataError(f"The encoded T5 embeddings have dimension {text_dim} but the transformer expects "
                        f"{transformer_config.text_embed_dim}: the data was encoded with another text encoder.")


def _tracker_config(config: StageConfig) -> dict:
    flat = {}
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in value.items()})
        else:
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def fit(config: StageConfig, resume: str | None = None, stop_at_step: int | None = None, cpu: bool = False,
        local_files_only: bool = False, checkpoint_on_stop: bool = True) -> FitResult:
    """Train one stage as ``config`` says.

    ``stop_at_step`` ends early with a checkpoint (e.g. to fit a job's time slot) unless ``checkpoint_on_stop``
    is False (benchmarks). The model is exported only once ``max_train_steps`` is reached.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    output_dir = Path(config.output_dir)
    use_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    _check_hardware(config, use_cuda=torch.cuda.is_available() and (use_deepspeed or not cpu))
    check_base_model(config.base_model)
    dataset = EncodedClips(config.data)  # missing shards stop the run before any model is loaded
    check_model_available(config.base_model, "base_model", local_files_only)  # offline: say so in 1 s, not 30
    if not resume and any((output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*/{STATE_FILE}")):
        raise ConfigError(f"{output_dir} already holds checkpoints of a run. Continue it with --resume latest, "
                          f"or set another output_dir to start over.")
    handlers = []
    if use_deepspeed and not torch.cuda.is_available():
        # accelerate picks no process-group backend for DeepSpeed without an accelerator; DeepSpeed's CPU
        # accelerator talks gloo. This is how the ZeRO-2/3 code paths are tested on CPU.
        from accelerate.utils import InitProcessGroupKwargs

        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, log_with="tensorboard", cpu=cpu and not use_deepspeed,
        step_scheduler_with_optimizer=False, kwargs_handlers=handlers,  # the LR schedule counts optimizer steps
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")))
    try:
        plan = _match_launch_settings(accelerator, config)
        return _train(accelerator, config, plan, dataset, output_dir, resume, stop_at_step, local_files_only,
                      checkpoint_on_stop)
    finally:
        accelerator.end_training()
        # accelerate keeps one process-wide state; reset it so a later fit() in this process (a benchmark,
        # the next stage) may choose another precision.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


def _match_launch_settings(accelerator, config: StageConfig) -> BatchPlan:
    """Split the stage's global batch over the launched processes; stop before any model is loaded if it cannot.

    Why: the global batch is the recipe, the process count is the hardware. The accumulation is derived here
    (``StageConfig.batch_plan``) and given to accelerate and DeepSpeed. A launch file that fixes another
    accumulation (``accelerate launch`` exports it, and accelerate would let it win silently) stops the run.
    DeepSpeed also needs the per-GPU and global batch sizes, which accelerate otherwise reads from a prepared
    DataLoader; ours is not prepared (the bucket sampler shards the data itself), so we set them.
    """
    plan = config.batch_plan(accelerator.num_processes)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    ds_config = plugin.deepspeed_config if plugin is not None else {}
    for source, value in (("The accelerate launch config",
                           os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")),
                          ("The DeepSpeed config", ds_config.get("gradient_accumulation_steps"))):
        if value not in (None, "auto") and int(value) != plan.accumulation:
            raise ConfigError(
                f"{source} sets gradient_accumulation_steps {value} but the stage config needs {plan.accumulation} "
                f"({plan.describe()}). Remove gradient_accumulation_steps from the launch config (the stage "
                f"derives it), or change the stage's batch settings.")
    accelerator.gradient_accumulation_steps = plan.accumulation
    if accelerator.is_main_process:
        logger.info("%s", plan.describe())
        print(f"Batch: {plan.per_process} per process x {plan.processes} processes x {plan.accumulation} "
              f"accumulation = global batch {plan.global_batch} (published recipe: 8 x 16 GPUs x 1 = 128)",
              flush=True)
    if plugin is None:
        return plan
    clipping = ds_config.get("gradient_clipping", "auto")
    if clipping != "auto" and float(clipping) != config.max_grad_norm:
        raise ConfigError(f"The DeepSpeed config clips gradients at {clipping} but the stage config's max_grad_norm "
                          f"is {config.max_grad_norm}. Make them equal.")
    ds_config["gradient_clipping"] = config.max_grad_norm
    ds_config["gradient_accumulation_steps"] = plan.accumulation
    ds_config["train_micro_batch_size_per_gpu"] = plan.per_process
    ds_config["train_batch_size"] = plan.global_batch
    return plan


def _zero_stage(accelerator) -> int | None:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)


def whole_transformer(accelerator, transformer, config: StageConfig):
    """The trained transformer with whole weights on the main process (None on the others).

    Every process must call it: under DeepSpeed ZeRO-3 each weight is sharded across processes, so the
    validation pipeline and the exported folder need them gathered. accelerate's ``get_state_dict`` does that
    collectively (16-bit weights, as ``zero3_save_16bit_model: true`` asks) and hands the whole state to the main
    process, which loads it into a plain copy of the model. Without ZeRO-3 the trained module itself is whole.
    """
    if _zero_stage(accelerator) != 3:
        return accelerator.unwrap_model(transformer) if accelerator.is_main_process else None
    try:
        state = accelerator.get_state_dict(transformer)
    except ValueError as error:  # zero3_save_16bit_model false: accelerate cannot gather
        raise ConfigError(f"ZeRO-3 needs zero3_save_16bit_model: true in the accelerate config to gather the "
                          f"weights for validation and export ({error}).") from error
    if not accelerator.is_main_process:
        return None
    from diffusers import CogVideoXTransformer3DModel

    sharded = accelerator.unwrap_model(transformer)
    whole = CogVideoXTransformer3DModel.from_config(sharded.config)
    if config.training == "lora":
        from peft import LoraConfig

        whole.add_adapter(LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha,
                                     lora_dropout=config.lora.dropout, init_lora_weights=True,
                                     target_modules=list(config.lora.target_modules)))
    whole.load_state_dict(state, strict=True)
    whole.to(device=accelerator.device, dtype=next(iter(state.values())).dtype)
    return whole.train(sharded.training)


def _train(accelerator, config: StageConfig, plan: BatchPlan, dataset: EncodedClips, output_dir: Path,
           resume: str | None, stop_at_step: int | None, local_files_only: bool, checkpoint_on_stop: bool) -> FitResult:
    from accelerate.utils import set_seed
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
    from diffusers.optimization import get_scheduler

    use_cuda = accelerator.device.type == "cuda"
    if use_cuda and config.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    set_seed(config.seed)  # same LoRA init on every process; training noise is drawn per clip (sample_generators)
    weight_dtype = _weight_dtype(config.mixed_precision)

    scheduler = CogVideoXDDIMScheduler.from_pretrained(config.base_model, subfolder="scheduler",
                                                       local_files_only=local_files_only)
    vae_config = AutoencoderKLCogVideoX.load_config(config.base_model, subfolder="vae",
                                                    local_files_only=local_files_only)
    scaling_factor = float(vae_config.get("scaling_factor", 1.15258426))
    transformer = load_transformer(config, weight_dtype, local_files_only)
    transformer_config = transformer.config
    _check_data(dataset, transformer_config)
    params = trainable_parameters(transformer, config.training)
    optimizer = _make_optimizer(config, params)
    # Stepped once per optimizer step (step_scheduler_with_optimizer=False), so warm-up and length are counted
    # in optimizer steps whatever the process count: 800 warm-up steps of 65,000, as published.
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_train_steps, num_cycles=config.lr_num_cycles)
    from ophora.training.validation import FrozenParts, run_validation

    frozen = FrozenParts(config.base_model, accelerator.device, weight_dtype, local_files_only)
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)

    sampler = BucketBatchSampler(dataset.buckets(), plan.per_process, config.seed, num_replicas=plan.processes,
                                 rank=accelerator.process_index, accumulation=plan.accumulation)
    steps_per_epoch = sampler.steps_per_epoch()

    result = FitResult(output_dir=output_dir, model_dir=None, is_main_process=accelerator.is_main_process,
                       batch=plan)
    global_step = 0
    if resume:
        checkpoint = find_checkpoint(output_dir, resume)
        saved = json.loads((checkpoint / STATE_FILE).read_text())
        _check_resumable(checkpoint, saved, config, plan, _zero_stage(accelerator))
        accelerator.load_state(str(checkpoint))
        global_step = int(saved["global_step"])
        result.resumed_from = checkpoint
        if accelerator.is_main_process:
            logger.info("resumed from %s at step %d", checkpoint, global_step)
    accelerator.step = global_step * plan.accumulation  # accumulation boundaries line up

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "stage_config.json").write_text(json.dumps({**config.to_dict(), "launch": {
            "batch": asdict(plan), "distributed_type": str(accelerator.distributed_type),
            "zero_stage": _zero_stage(accelerator)}}, indent=2))
    accelerator.init_trackers(project_name=config.stage, config={
        **_tracker_config(config), **{f"batch.{k}": v for k, v in asdict(plan).items()}})

    first_bucket = dataset.samples[0].bucket.split("x")
    end_step = min(config.max_train_steps, stop_at_step or config.max_train_steps)
    epoch, position = divmod(global_step, steps_per_epoch)
    sampler.set_position(epoch, position)
    # DeepSpeed holds fp16/bf16 weights and does not autocast: the transformer's inputs are cast to match.
    deepspeed_half = accelerator.state.deepspeed_plugin is not None and config.mixed_precision != "no"
    input_dtype = weight_dtype if deepspeed_half else None
    micro = 0  # micro-batch within the current optimizer step
    step_losses: list[torch.Tensor] = []
    step_times: list[float] = []
    if use_cuda:
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    tick = time.perf_counter()

    while global_step < end_step:
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=config.dataloader_num_workers)
        for batch in loader:
            # Each clip's random draws follow from its slot in the global batch of this optimizer step.
            first = global_step * plan.global_batch + (micro * plan.processes + accelerator.process_index) * \
                plan.per_process
            generators = sample_generators(config.seed, range(first, first + len(batch["index"])))
            with accelerator.accumulate(transformer):
                latents = sample_latents(batch["latent_dist"], scaling_factor, generators)
                latents = latents.to(accelerator.device)
                prompt_embeds = batch["prompt_embeds"].to(accelerator.device, torch.float32)
                loss = diffusion_loss(transformer, scheduler, latents, prompt_embeds, generators,
                                      transformer_config, input_dtype=input_dtype)
                accelerator.backward(loss)
                step_losses.append(accelerator.gather(loss.detach()).mean())
                grad_norm = None
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                step_lr = lr_scheduler.get_last_lr()[0]
                if accelerator.sync_gradients and not optimizer.step_was_skipped:
                    lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                micro += 1
                continue
            micro = 0
            global_step += 1
            step_loss = torch.stack(step_losses).mean().item()
            step_losses.clear()
            result.losses[global_step] = step_loss
            result.learning_rates[global_step] = step_lr
            now = time.perf_counter()
            step_times.append(now - tick)
            tick = now
            if global_step % config.logging_steps == 0 or global_step == end_step:
                logs = {"loss": step_loss, "lr": step_lr}
                if grad_norm is not None:
                    logs["grad_norm"] = float(grad_norm)
                accelerator.log(logs, step=global_step)
                if accelerator.is_main_process:
                    logger.info("step %d/%d loss %.5f lr %.3g", global_step, config.max_train_steps, step_loss,
                                logs["lr"])
            if global_step % config.checkpointing_steps == 0 or (
                    global_step == end_step and (checkpoint_on_stop or end_step == config.max_train_steps)):
                save_checkpoint(accelerator, config, plan, output_dir, global_step)
            if config.validation_steps and (global_step % config.validation_steps == 0
                                            or global_step == config.max_train_steps):
                whole = whole_transformer(accelerator, transformer, config)  # every process: ZeRO-3 gathers
                if accelerator.is_main_process:
                    clips = run_validation(
                        whole, frozen, config.validation_prompts,
                        output_dir / "validation", global_step,
                        run={"stage": config.stage, "run_dir": str(output_dir), "base_model": config.base_model},
                        num_frames=config.validation_num_frames or int(first_bucket[0]),
                        height=config.validation_height or int(first_bucket[1]),
                        width=config.validation_width or int(first_bucket[2]),
                        num_inference_steps=config.validation_num_inference_steps,
                        guidance_scale=config.validation_guidance_scale,
                        use_dynamic_cfg=config.validation_use_dynamic_cfg, seed=config.validation_seed,
                        fps=config.validation_fps, autocast=accelerator.autocast)
                    result.validation_clips += clips
                    _log_validation(accelerator, clips, global_step)
                del whole
                accelerator.wait_for_everyone()
                tick = time.perf_counter()  # validation time is not training time
            if global_step >= end_step:
                break
        else:
            epoch += 1
            sampler.set_position(epoch, 0)

    result.global_step = global_step
    if step_times:
        timed = step_times[1:] or step_times  # the first step pays for warm-up
        result.seconds_per_step = sum(timed) / len(timed)
    if use_cuda:
        result.peak_memory_bytes = torch.cuda.max_memory_allocated(accelerator.device)
    accelerator.wait_for_everyone()
    if global_step >= config.max_train_steps:
        result.model_dir, result.frozen_check = _export(accelerator, transformer, config, output_dir, result,
                                                        local_files_only)
    frozen.verify()
    return result


def _check_resumable(checkpoint: Path, saved: dict, config: StageConfig, plan: BatchPlan,
                     zero_stage: int | None) -> None:
    """Refuse a resume that could not continue the checkpointed run exactly, saying why.

    The data order and every random draw depend only on seed, data and global batch, and without DeepSpeed
    the checkpoint holds whole weights and optimizer states, so the number of processes, the per-process batch
    and the accumulation may change (a job resumed on fewer GPUs). DeepSpeed shards its checkpoint per process:
    there the process count must stay.
    """
    for key in RESUME_KEYS:
        if saved["config"].get(key) != getattr(config, key):
            raise ConfigError(f"Cannot resume from {checkpoint}: {key} was {saved['config'].get(key)!r}, now "
                              f"{getattr(config, key)!r}. Resume with the same settings or start a new run.")
    batch = saved.get("batch")
    if batch is None:
        raise ConfigError(f"Cannot resume exactly from {checkpoint}: it was written by an earlier version of the "
                          f"trainer that drew training noise per process. Start a new run.")
    if batch["global_batch"] != plan.global_batch:
        raise ConfigError(f"Cannot resume from {checkpoint}: its global batch was {batch['global_batch']}, this "
                          f"launch has {plan.global_batch} ({plan.describe()}). Keep the global batch (the "
                          f"accumulation adapts to the process count when global_batch_size is set).")
    if (saved.get("zero_stage") is not None or zero_stage is not None) and (
            saved.get("zero_stage") != zero_stage or saved["num_processes"] != plan.processes):
        raise ConfigError(f"Cannot resume from {checkpoint}: it was written by {saved['num_processes']} processes "
                          f"with DeepSpeed ZeRO stage {saved.get('zero_stage')}, this launch has {plan.processes} "
                          f"with {zero_stage if zero_stage is not None else 'no DeepSpeed'}. DeepSpeed checkpoints "
                          f"are sharded per process: resume with the same launch config and process count.")


def save_checkpoint(accelerator, config: StageConfig, plan: BatchPlan, output_dir: Path, global_step: int) -> Path:
    """Model, optimizer, LR schedule, grad scaler, RNG states, and the step (which fixes the data position)."""
    checkpoint = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{global_step}"
    accelerator.save_state(str(checkpoint))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (checkpoint / STATE_FILE).write_text(json.dumps({
            "global_step": global_step, "num_processes": accelerator.num_processes, "batch": asdict(plan),
            "zero_stage": _zero_stage(accelerator), "config": config.to_dict()}, indent=2))
        limit = config.checkpoints_total_limit
        if limit:
            existing = sorted((output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"),
                              key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))
            for old in existing[:-limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return checkpoint


def _log_validation(accelerator, clips: list[Path], step: int) -> None:
    """First, middle and last frame of each validation clip as TensorBoard images."""
    from ophora.generation.video import read_clip

    try:
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
    except (ValueError, KeyError):
        return
    for i, clip in enumerate(clips):
        frames, _ = read_clip(clip)
        picked = frames[[0, len(frames) // 2, len(frames) - 1]]
        writer.add_images(f"validation/prompt-{i:02d}", torch.from_numpy(picked).permute(0, 3, 1, 2), step)


def _export(accelerator, transformer, config: StageConfig, output_dir: Path, result: FitResult,
            local_files_only: bool):
    from ophora.training.export import export_pipeline

    model_dir = output_dir / "model"
    check: dict = {}
    model = whole_transformer(accelerator, transformer, config)  # every process: ZeRO-3 gathers
    if accelerator.is_main_process:
        if config.training == "lora":
            from diffusers import CogVideoXPipeline
            from peft.utils import get_peft_model_state_dict

            CogVideoXPipeline.save_lora_weights(str(output_dir / "lora"),
                                                transformer_lora_layers=get_peft_model_state_dict(model))
            model.fuse_lora()
            model.unload_lora()
        last = result.losses.get(result.global_step)
        provenance = {"stage": config.stage, "base_model": config.base_model, "data": config.data,
                      "steps": result.global_step, "final_loss": last if last is None or math.isfinite(last) else None,
                      "config": config.to_dict()}
        check = export_pipeline(model, config.base_model, model_dir, save_dtype=config.save_dtype,
                                provenance=provenance, local_files_only=local_files_only)
        logger.info("trained pipeline written to %s (load it with `--model %s`)", model_dir, model_dir)
    accelerator.wait_for_everyone()
    return model_dir, check
