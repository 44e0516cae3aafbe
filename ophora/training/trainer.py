"""One training loop for every stage: TPT and P2FT are two configs of ``fit``.

Read top to bottom: ``fit`` loads the base transformer (full fine-tune, or LoRA through peft), builds AdamW
(optionally 8-bit) and the cosine-with-restarts schedule, and lets accelerate handle devices, mixed precision,
DDP / DeepSpeed and gradient accumulation. Each optimizer step draws posterior samples, timesteps and noise
from one CPU ``torch.Generator`` that is checkpointed with the optimizer, scheduler, global RNG states and the
data position, so a resumed run reproduces an uninterrupted one step for step. At the end the transformer is
exported with the base pipeline's frozen parts as ``<output_dir>/model``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ophora.training.config import ConfigError, StageConfig
from ophora.training.dataset import BucketBatchSampler, DataError, EncodedClips, collate
from ophora.training.objective import diffusion_loss, sample_latents

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "ophora_state.json"
# Settings a resumed run must share with the run that wrote the checkpoint, or the data order would differ.
RESUME_KEYS = ("seed", "train_batch_size", "gradient_accumulation_steps", "training", "data")


@dataclass
class FitResult:
    output_dir: Path
    model_dir: Path | None  # the exported pipeline; None when the run stopped before max_train_steps
    losses: dict[int, float] = field(default_factory=dict)  # optimizer step -> mean loss over the global batch
    global_step: int = 0
    resumed_from: Path | None = None
    seconds_per_step: float | None = None
    peak_memory_bytes: int | None = None
    frozen_check: dict = field(default_factory=dict)
    validation_clips: list[Path] = field(default_factory=list)
    is_main_process: bool = True


class NoiseGenerator:
    """The training RNG, as an object accelerate can checkpoint (``state_dict`` / ``load_state_dict``)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


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
    _check_hardware(config, use_cuda=torch.cuda.is_available() and not cpu)
    check_base_model(config.base_model)
    dataset = EncodedClips(config.data)  # missing shards stop the run before any model is loaded
    if not resume and any((output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*/{STATE_FILE}")):
        raise ConfigError(f"{output_dir} already holds checkpoints of a run. Continue it with --resume latest, "
                          f"or set another output_dir to start over.")
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard", cpu=cpu,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")))
    try:
        _match_launch_settings(accelerator, config)
        return _train(accelerator, config, dataset, output_dir, resume, stop_at_step, local_files_only,
                      checkpoint_on_stop)
    finally:
        accelerator.end_training()
        # accelerate keeps one process-wide state; reset it so a later fit() in this process (a benchmark,
        # the next stage) may choose another precision.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)


def _match_launch_settings(accelerator, config: StageConfig) -> None:
    """Make the accelerate launch config agree with the stage config, or stop before any model is loaded.

    Why: ``accelerate launch`` exports the launch file's ``gradient_accumulation_steps`` and accelerate lets it
    override the stage config silently, which would change the global batch and break exact resume. DeepSpeed
    also needs the per-GPU batch size, which accelerate otherwise reads from a prepared DataLoader; ours is not
    prepared (the bucket sampler shards the data itself), so we set it as diffusers' training scripts do.
    """
    if accelerator.gradient_accumulation_steps != config.gradient_accumulation_steps:
        raise ConfigError(
            f"The accelerate launch config sets gradient_accumulation_steps {accelerator.gradient_accumulation_steps} "
            f"but the stage config says {config.gradient_accumulation_steps}. Make them equal (edit the accelerate "
            f"config file, or --set gradient_accumulation_steps={accelerator.gradient_accumulation_steps}).")
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds_config = plugin.deepspeed_config
    clipping = ds_config.get("gradient_clipping", "auto")
    if clipping != "auto" and float(clipping) != config.max_grad_norm:
        raise ConfigError(f"The DeepSpeed config clips gradients at {clipping} but the stage config's max_grad_norm "
                          f"is {config.max_grad_norm}. Make them equal.")
    ds_config["gradient_clipping"] = config.max_grad_norm
    ds_config["train_micro_batch_size_per_gpu"] = config.train_batch_size


def _train(accelerator, config: StageConfig, dataset: EncodedClips, output_dir: Path, resume: str | None,
           stop_at_step: int | None, local_files_only: bool, checkpoint_on_stop: bool) -> FitResult:
    from accelerate.utils import set_seed
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
    from diffusers.optimization import get_scheduler

    use_cuda = accelerator.device.type == "cuda"
    if use_cuda and config.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    set_seed(config.seed)  # same LoRA init on every process; training noise has its own per-process generator
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
    lr_scheduler = get_scheduler(
        config.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
        num_cycles=config.lr_num_cycles)
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    noise = NoiseGenerator(config.seed * 1000 + accelerator.process_index)

    sampler = BucketBatchSampler(dataset.buckets(), config.train_batch_size, config.seed,
                                 num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    batches_per_epoch = len(sampler)
    if accelerator.is_main_process:
        logger.info("global batch %d per optimizer step = %d per process x %d processes x %d accumulation "
                    "(the published recipe used 8)", config.train_batch_size * accelerator.num_processes *
                    config.gradient_accumulation_steps, config.train_batch_size, accelerator.num_processes,
                    config.gradient_accumulation_steps)

    result = FitResult(output_dir=output_dir, model_dir=None, is_main_process=accelerator.is_main_process)
    global_step = 0
    if resume:
        checkpoint = find_checkpoint(output_dir, resume)
        saved = json.loads((checkpoint / STATE_FILE).read_text())
        for key in RESUME_KEYS:
            if saved["config"].get(key) != getattr(config, key):
                raise ConfigError(f"Cannot resume from {checkpoint}: {key} was {saved['config'].get(key)!r}, now "
                                  f"{getattr(config, key)!r}. Resume with the same settings or start a new run.")
        if saved["num_processes"] != accelerator.num_processes:
            raise ConfigError(f"Cannot resume exactly from {checkpoint}: it was written by {saved['num_processes']} "
                              f"processes, this run has {accelerator.num_processes}.")
        accelerator.load_state(str(checkpoint))
        noise.load_state_dict(torch.load(checkpoint / f"noise_state_{accelerator.process_index}.pt"))
        global_step = int(saved["global_step"])
        result.resumed_from = checkpoint
        if accelerator.is_main_process:
            logger.info("resumed from %s at step %d", checkpoint, global_step)
    accelerator.step = global_step * config.gradient_accumulation_steps  # accumulation boundaries line up

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "stage_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    accelerator.init_trackers(project_name=config.stage, config=_tracker_config(config))

    from ophora.training.validation import FrozenParts, run_validation

    frozen = FrozenParts(config.base_model, accelerator.device, weight_dtype, local_files_only)
    first_bucket = dataset.samples[0].bucket.split("x")
    end_step = min(config.max_train_steps, stop_at_step or config.max_train_steps)
    micro = global_step * config.gradient_accumulation_steps
    epoch, position = divmod(micro, batches_per_epoch)
    sampler.set_position(epoch, position)
    # DeepSpeed keeps the weights in bf16 without autocast (its fp16 mode casts inputs itself).
    deepspeed_bf16 = accelerator.state.deepspeed_plugin is not None and config.mixed_precision == "bf16"
    input_dtype = torch.bfloat16 if deepspeed_bf16 else None
    step_losses: list[torch.Tensor] = []
    step_times: list[float] = []
    if use_cuda:
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    tick = time.perf_counter()

    while global_step < end_step:
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=config.dataloader_num_workers)
        for batch in loader:
            with accelerator.accumulate(transformer):
                latents = sample_latents(batch["latent_dist"], scaling_factor, noise.generator)
                latents = latents.to(accelerator.device)
                prompt_embeds = batch["prompt_embeds"].to(accelerator.device, torch.float32)
                loss = diffusion_loss(transformer, scheduler, latents, prompt_embeds, noise.generator,
                                      transformer_config, input_dtype=input_dtype)
                accelerator.backward(loss)
                step_losses.append(accelerator.gather(loss.detach()).mean())
                grad_norm = None
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            step_loss = torch.stack(step_losses).mean().item()
            step_losses.clear()
            result.losses[global_step] = step_loss
            now = time.perf_counter()
            step_times.append(now - tick)
            tick = now
            if global_step % config.logging_steps == 0 or global_step == end_step:
                logs = {"loss": step_loss, "lr": lr_scheduler.get_last_lr()[0]}
                if grad_norm is not None:
                    logs["grad_norm"] = float(grad_norm)
                accelerator.log(logs, step=global_step)
                if accelerator.is_main_process:
                    logger.info("step %d/%d loss %.5f lr %.3g", global_step, config.max_train_steps, step_loss,
                                logs["lr"])
            if global_step % config.checkpointing_steps == 0 or (
                    global_step == end_step and (checkpoint_on_stop or end_step == config.max_train_steps)):
                save_checkpoint(accelerator, config, output_dir, global_step, noise)
            if config.validation_steps and (global_step % config.validation_steps == 0
                                            or global_step == config.max_train_steps):
                if accelerator.is_main_process:
                    clips = run_validation(
                        accelerator.unwrap_model(transformer), frozen, config.validation_prompts,
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


def save_checkpoint(accelerator, config: StageConfig, output_dir: Path, global_step: int,
                    noise: NoiseGenerator) -> Path:
    """Model, optimizer, LR schedule, grad scaler, RNG states, every process's noise generator, data position.

    The noise generators are saved per process by us: accelerate's custom-object checkpointing keeps only the
    main process's copy, which would make a resumed multi-GPU run diverge.
    """
    checkpoint = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{global_step}"
    accelerator.save_state(str(checkpoint))
    torch.save(noise.state_dict(), checkpoint / f"noise_state_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (checkpoint / STATE_FILE).write_text(json.dumps({
            "global_step": global_step, "num_processes": accelerator.num_processes, "config": config.to_dict()},
            indent=2))
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
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(transformer)
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
