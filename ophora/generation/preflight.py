"""Everything that can be checked before the weights load: the model folder, its configs, its weight files'
integrity and the output paths. No torch import: a mistake costs a second, not a 20 GB load.

``preflight`` is what the CLI, the batch runner and the app call first; ``load_pipeline`` repeats the model
checks, so a library caller who skips this still gets the same messages.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ophora.generation.options import DEFAULT_MODEL, LoadOptions, ModelLoadError
from ophora.generation.request import GenerationInputError, GenerationRequest, ModelSpec, check_request, resolve_request

TINY_MODEL_NAME = "tiny"
WEIGHT_COMPONENTS = ("text_encoder", "transformer", "vae")
PIPELINE_COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "transformer", "vae")
# The keys without which a config is not the file it claims to be (a truncated download, another model's file):
# each class's defining sizes. Loading would otherwise fill in library defaults and fail, or worse run, later.
CONFIG_KEYS = {
    "transformer/config.json": ("_class_name", "num_attention_heads", "attention_head_dim", "num_layers"),
    "vae/config.json": ("_class_name", "block_out_channels", "latent_channels"),
    "scheduler/scheduler_config.json": ("_class_name", "num_train_timesteps"),
    "text_encoder/config.json": ("model_type", "d_model", "vocab_size"),
    "tokenizer/tokenizer_config.json": (),
}
TOKENIZER_VOCABULARIES = ("tokenizer.json", "spiece.model")  # the fast tokenizer's file, or T5's SentencePiece


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: a local folder (``local``), the tiny preview model, or a hub id."""

    path: str  # folder or hub id, as given to ``from_pretrained``
    local: bool
    is_tiny: bool


def looks_like_path(model: str) -> bool:
    """A path, not a hub id. Hub ids are exactly ``owner/name``; anything else (a leading ``.``, ``/`` or ``~``,
    no slash or several, a backslash) or an ``owner`` that is a folder here (``models/Ophora``) is a path."""
    if model.startswith((".", "/", "~")) or model.count("/") != 1 or "\\" in model:
        return True
    return Path(model.split("/")[0]).expanduser().is_dir()


def resolve_model_source(options: LoadOptions, build_tiny: bool = True) -> ModelSource:
    """The folder or hub id ``options.model`` names; a path-like name that does not exist is an error here."""
    if options.model == TINY_MODEL_NAME:
        from ophora.generation.tiny import default_tiny_dir, ensure_tiny_pipeline

        folder = ensure_tiny_pipeline() if build_tiny else default_tiny_dir()
        return ModelSource(str(folder), local=True, is_tiny=True)
    local = Path(options.model).expanduser()
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise ModelLoadError(
                f"{local} is not a diffusers pipeline folder (no model_index.json). Point --model at the folder "
                f"that holds model_index.json, tokenizer/, text_encoder/, transformer/, vae/ and scheduler/ "
                f"(for example a download of {DEFAULT_MODEL}).")
        readme = local / "README.md"
        tiny = readme.is_file() and "Ophora Studio tiny model" in readme.read_text(errors="ignore")
        return ModelSource(str(local.resolve()), local=True, is_tiny=tiny)
    if looks_like_path(options.model):
        raise ModelLoadError(f"No such folder: {local}. Check the path (the folder must hold model_index.json), "
                             f"or use `--model tiny` to try the tools without weights.")
    return ModelSource(options.model, local=False, is_tiny=False)


def hub_model_missing_message(model: str, details: str) -> str:
    """What to do when a hub id is neither a folder here nor loadable from the hub or the local cache."""
    here = Path(model).expanduser().resolve()
    repo = model if model == DEFAULT_MODEL else f"{DEFAULT_MODEL} (the published model)"
    return (
        f"No such folder {here}, and {model!r} could not be loaded as a hub id either: it is not in the local "
        f"Hugging Face cache and the hub could not be reached or does not have it.\n"
        f"To get the weights:\n"
        f"  1. on a machine with internet: `hf download {DEFAULT_MODEL} --local-dir models/Ophora` "
        f"(about 20 GB; `huggingface-cli download` on older hubs) for {repo}, then copy the folder here;\n"
        f"  2. run with `--model models/Ophora` (or set HF_HOME to a cache that already holds it).\n"
        f"To try the app without weights, use `--model tiny` (random weights: the clips are noise).\n"
        f"(Details: {details})"
    )


def check_hub_model_reachable(source: ModelSource, options: LoadOptions) -> None:
    """Offline (``--local-files-only`` or ``HF_HUB_OFFLINE``) a hub model must already be in the local cache:
    say so now, not after torch and diffusers have been imported and asked."""
    from huggingface_hub import constants

    if source.local or not (options.local_files_only or constants.HF_HUB_OFFLINE):
        return
    if _cached_hub_file(source.path, "model_index.json", options.revision) is None:
        raise ModelLoadError(hub_model_missing_message(options.model, "offline, and model_index.json is not in the "
                                                                      "local Hugging Face cache"))


def _read_json(path: Path) -> dict:
    config, problem = _json_problem(path)
    if problem:
        raise ModelLoadError(f"{path}: {problem}. Re-download this file.")
    return config


def _json_problem(path: Path, keys: tuple[str, ...] = ()) -> tuple[dict, str | None]:
    """A JSON object file's content, or why it is unusable (missing, empty, not JSON, required keys absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, "missing"
    except (OSError, UnicodeDecodeError) as error:
        return {}, f"cannot be read ({error})"
    if not text.strip():
        return {}, "empty (0 bytes of settings)"
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        return {}, f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    if not isinstance(config, dict):
        return {}, "not a JSON object"
    missing = [key for key in keys if key not in config]
    if missing:
        return config, f"lacks {', '.join(missing)}"
    return config, None


def _damaged(what: str, problems: list[str]) -> ModelLoadError:
    return ModelLoadError(f"Damaged or incomplete {what}:\n  " + "\n  ".join(problems)
                          + "\nRe-download this file (each file listed) from where the folder came from; "
                            "the other files can stay.")


def check_model_files(folder: str | Path) -> None:
    """Every config and tokenizer file of a local pipeline folder is whole, before any weight loads: each JSON
    file parses and holds its required keys, each component ``model_index.json`` names has its config, and
    the tokenizer has a non-empty vocabulary. One message names every bad file."""
    root = Path(folder)
    index, problem = _json_problem(root / "model_index.json", ("_class_name",))
    problems = [f"{root / 'model_index.json'}: {problem}"] if problem else []
    if not problem:
        lacking = [c for c in PIPELINE_COMPONENTS if not (isinstance(index.get(c), list) and len(index[c]) == 2)]
        if lacking:
            problems.append(f"{root / 'model_index.json'}: lacks the component entries {', '.join(lacking)}")
    for name, keys in CONFIG_KEYS.items():
        _, problem = _json_problem(root / name, keys)
        if problem:
            problems.append(f"{root / name}: {problem}")
    tokenizer = root / "tokenizer"
    if not any((tokenizer / name).is_file() for name in TOKENIZER_VOCABULARIES):
        problems.append(f"{tokenizer}: no vocabulary (expected {' or '.join(TOKENIZER_VOCABULARIES)})")
    for file in sorted(tokenizer.glob("*")) if tokenizer.is_dir() else []:
        if not file.is_file() or file.name == "tokenizer_config.json":  # checked above with the configs
            continue
        if file.stat().st_size == 0:
            problems.append(f"{file}: empty (0 bytes)")
        elif file.suffix == ".json":
            _, problem = _json_problem(file)
            if problem:
                problems.append(f"{file}: {problem}")
    if problems:
        raise _damaged("model files (settings and vocabulary)", list(dict.fromkeys(problems)))


def _cached_hub_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """A file of a hub repo if it is already in the local Hugging Face cache; never downloads."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def transformer_config_path(options: LoadOptions) -> Path | None:
    if not options.transformer:
        return None
    folder = Path(options.transformer).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"Transformer folder {folder} does not exist: pass the `model/` folder of a training "
                             f"run (output_dir/model) or a folder holding transformer/config.json.")
    for candidate in (folder / "config.json", folder / "transformer" / "config.json"):
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"{folder} holds no transformer: expected config.json and diffusion_pytorch_model*.safetensors "
                         f"(a folder saved by `python -m ophora train`, or a pipeline folder with transformer/).")


def read_model_spec(source: ModelSource, options: LoadOptions) -> ModelSpec | None:
    """The model's sizes from its config files; ``None`` for a hub model not yet in the local cache."""
    override = transformer_config_path(options)
    if source.local:
        root = Path(source.path)
        transformer, vae = root / "transformer" / "config.json", root / "vae" / "config.json"
        for path in (transformer, vae):
            if not path.is_file():
                raise ModelLoadError(f"{path} is missing: {root} is an incomplete pipeline folder. Re-download "
                                     f"this file (or the whole folder).")
    else:
        transformer = _cached_hub_file(source.path, "transformer/config.json", options.revision)
        vae = _cached_hub_file(source.path, "vae/config.json", options.revision)
        if transformer is None or vae is None:
            return None
    return ModelSpec.from_configs(_read_json(override or transformer), _read_json(vae))


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unusable (truncated, bad header), or ``None``. Reads the header only."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"{size} bytes, too short to hold a header"
            header_len = int.from_bytes(head, "little")
            if header_len > min(size - 8, 100 * 1024**2):
                return f"its header claims {header_len} bytes but the file has {size}"
            header = json.loads(handle.read(header_len))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"unreadable header ({error})"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return f"truncated: {size} of {expected} bytes"
    return None


def check_weight_files(folder: str | Path, components=WEIGHT_COMPONENTS) -> None:
    """Every weight file of a local pipeline folder is present and whole; one message names every bad file."""
    root = Path(folder)
    problems: list[str] = []
    for component in components:
        sub = root / component
        if not sub.is_dir():
            problems.append(f"{sub}: missing folder")
            continue
        files = sorted(sub.glob("*.safetensors"))
        for index in sub.glob("*.safetensors.index.json"):
            shards = set(_read_json(index).get("weight_map", {}).values())
            problems += [f"{sub / s}: missing (listed in {index.name})" for s in sorted(shards) if not (sub / s).is_file()]
        if not files and not list(sub.glob("*.bin")):
            problems.append(f"{sub}: no weight file (*.safetensors)")
        for file in files:
            why = safetensors_problem(file)
            if why:
                problems.append(f"{file}: {why}")
    if problems:
        raise _damaged("model weights", problems)


def check_output_folder(folder: str | Path, what: str = "output folder") -> None:
    """Create ``folder`` (with its parents) now and write a file in it: tried, not guessed, because root,
    read-only mounts and pseudo file systems such as /proc defeat permission bits. Before generation, so an
    unusable folder never costs a clip."""
    folder = Path(folder).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise GenerationInputError(f"The {what} {folder} cannot be created: {existing} is a file, not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GenerationInputError(f"The {what} {folder} cannot be created ({error.strerror}). Choose a folder you "
                                   f"can write to.") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ophora-write-test-"):
            pass
    except OSError as error:
        raise GenerationInputError(f"The {what} {folder} is not writable ({error.strerror}). Choose a folder you can "
                                   f"write to.") from None


def check_output_file(path: str | Path, suffix: str = ".mp4") -> None:
    """An output clip path: the right suffix, not a folder, and writable (with its ``.json`` sidecar)."""
    path = Path(path).expanduser()
    if path.suffix.lower() != suffix:
        raise GenerationInputError(f"--out must end in {suffix}; got {path}.")
    for target in (path, path.with_suffix(".json")):
        if target.is_dir():
            raise GenerationInputError(f"{target} is a folder; give a file name such as {target / ('clip' + suffix)}.")
        if target.exists() and not os.access(target, os.W_OK):
            raise GenerationInputError(f"{target} exists and is not writable; choose another --out.")
    check_output_folder(path.parent)


def preflight(options: LoadOptions, request: GenerationRequest | None = None) -> tuple[ModelSource, ModelSpec | None,
                                                                                      GenerationRequest | None]:
    """Check the model folder, its configs and weight files and the request, before anything loads.

    Returns the model source, its spec (``None`` for a hub model not in the cache: the size checks then run
    again after loading) and the request with native sizes filled in."""
    source = resolve_model_source(options, build_tiny=False)
    if source.is_tiny and not (Path(source.path) / "model_index.json").is_file():
        if request is not None:
            check_request(request)  # the model's own rules follow once built: a bad request costs no 20 s build
        source = resolve_model_source(options)
    if source.local:
        check_model_files(source.path)
    check_hub_model_reachable(source, options)
    spec = read_model_spec(source, options)
    if request is not None:
        request = resolve_request(spec, request) if spec is not None else request
        check_request(request, spec)  # before the weight files: the quickest mistakes to fix come first
    if source.local:
        check_weight_files(source.path, [c for c in WEIGHT_COMPONENTS
                                         if not (c == "transformer" and options.transformer)])
    if options.transformer:
        config = transformer_config_path(options)
        check_weight_files(config.parent.parent, [config.parent.name])
    return source, spec, request
