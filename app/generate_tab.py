"""Generate and History tabs (studio mode) and the generation call shared with the kiosk.

Seeds are text, not a number box: browsers hold numbers as doubles, which would silently round seeds above
2**53 while the engine accepts the full 0..2**63-1 range.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import gradio as gr

from app import glossary as words
from app.fields import optional_number, optional_number_box
from app.history import ROW_HEADERS, History, HistoryError
from app.security import AdminSession, require_admin, stage_file
from app.service import GenerationService, explain_error, format_step
from app.wording import user_error
from ophora.generation.engine import MAX_SEED, GenerationCancelled, GenerationRequest
from ophora.generation.options import SPEED_LABELS, SPEEDS
from ophora.generation.preflight import check_output_folder
from ophora.generation.request import GenerationInputError
from ophora.vocabulary import find_phase, load_phases

NATIVE = "native"
FRAME_CHOICES = [(words.FRAMES_NATIVE, NATIVE)] + [(str(n), n) for n in (9, 17, 25, 33, 41, 49)]
GPU = "gpu"  # the one concurrency group every GPU event joins (limit 1)


def parse_seed(text) -> int:
    try:
        seed = int(str(text).strip())
    except (TypeError, ValueError):
        raise user_error(f"Seed must be a whole number from 0 to {MAX_SEED}; got {text!r}. Press the dice for a "
                         f"random one.") from None
    if not 0 <= seed <= MAX_SEED:
        raise user_error(f"Seed must be between 0 and {MAX_SEED}; got {seed}.")
    return seed


def _whole_or_native(value, name: str) -> int | None:
    """Empty (or "native") means the model's native value; anything else must be a whole number (0 is an
    error, reported by the request checks with the valid values)."""
    return None if value == NATIVE else optional_number(value, name, whole=True)


def random_seed() -> str:
    return str(secrets.randbelow(MAX_SEED + 1))


def template_choices() -> list[tuple[str, str]]:
    return [(f"{phase.name}: {t[:70]}", t) for phase in load_phases() for t in phase.templates]


def phase_of_prompt(prompt: str) -> str | None:
    """The phase a prompt shows: the phase whose template it is, else a phase named in it; ``None`` if unsure.
    Recorded in the clip's provenance so a study can score "phase named correctly" for generated clips."""
    text = (prompt or "").strip()
    for phase in load_phases():
        if text in phase.templates:
            return phase.id
    found = find_phase(text)
    return found.id if found else None


def build_request(prompt, negative, seed, steps, guidance, frames, height=None, width=None, fps=8,
                  speed="exact") -> GenerationRequest:
    return GenerationRequest(prompt=str(prompt or ""), negative_prompt=str(negative or ""), seed=parse_seed(seed),
                             num_inference_steps=_whole_or_native(steps, "Steps") or 0,
                             guidance_scale=float(guidance if guidance is not None else "nan"),
                             num_frames=_whole_or_native(frames, "Frames"), height=_whole_or_native(height, "Height"),
                             width=_whole_or_native(width, "Width"), fps=_whole_or_native(fps, "fps") or 8,
                             speed=speed or "exact")


def run_generation(service: GenerationService, request: GenerationRequest, key: str, progress: gr.Progress,
                   out_folder: Path | None = None):
    """Run one clip with a Gradio progress bar. A cancel is a notice (``gr.Warning``, not a red error) and
    ``GenerationCancelled`` goes on to the caller, which keeps its outputs; every other failure becomes an error
    message, and the app stays usable."""
    try:
        if out_folder is not None:
            check_output_folder(out_folder, "clip folder")  # before the GPU is spent, not after
        service.check(request)
    except GenerationInputError as error:
        raise user_error(str(error), duration=None) from None
    progress(0, desc="Waiting for the GPU" if service.busy() else "Starting")

    def on_step(step):
        progress((step.step, step.total), desc=format_step(step), unit="steps")

    try:
        return service.generate(request, key=key, on_step=on_step)
    except GenerationCancelled as error:
        gr.Warning(explain_error(error))
        raise
    except Exception as error:  # noqa: BLE001 - every failure is shown to the user, the server lives on
        raise user_error(explain_error(error), duration=None) from None


def history_table(history: History):
    return [entry.row() for entry in history.entries(limit=200)]


def build_generate_tab(service: GenerationService, history: History, store_getter, gallery_dir: Path,
                       admin_state: gr.State, banner: gr.Markdown, tabs: gr.Tabs, demo: gr.Blocks) -> gr.Dropdown:
    """The Generate tab and the History tab (operator only: they show provenance). Returns the History
    tab's study picker, which the Studies tab refreshes when a study is created."""
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=3):
                template = gr.Dropdown(template_choices(), label="Phase template (fills the instruction)",
                                       value=None, elem_id="template")
                prompt = gr.Textbox(label=words.INSTRUCTION, lines=3, elem_id="prompt",
                                    placeholder="e.g. Inject balanced salt solution under the capsule rim with a cannula")
                negative = gr.Textbox(label=words.NEGATIVE, lines=1)
                with gr.Row():
                    seed = gr.Textbox(value="12345", label=words.SEED, elem_id="seed", scale=4,
                                      info=words.SEED_INFO)
                    dice = gr.Button("Random seed", scale=1, min_width=80, elem_id="dice")
                with gr.Row():
                    steps = gr.Slider(1, 500, value=50, step=1, label=words.STEPS, elem_id="steps")
                    guidance = gr.Slider(1, 15, value=6, step=0.5, label=words.GUIDANCE)
                    frames = gr.Dropdown(FRAME_CHOICES, value=NATIVE, label=words.FRAMES, elem_id="frames")
                with gr.Accordion(words.ADVANCED, open=False, elem_id="advanced"):
                    with gr.Row():
                        # Text boxes: an empty field is sent empty (the model's size), never 0 (see app.fields).
                        height = optional_number_box(words.HEIGHT, words.NATIVE_PLACEHOLDER, "height")
                        width = optional_number_box(words.WIDTH, words.NATIVE_PLACEHOLDER, "width")
                        fps = optional_number_box(words.FPS, "empty: 8", "fps", value=8)
                        speed = gr.Dropdown([(SPEED_LABELS[name], name) for name in SPEEDS], value="exact",
                                            label=words.SPEED, elem_id="speed")
                    opts = service.option_values()
                    with gr.Row():
                        memory = gr.Dropdown(words.MEMORY_CHOICES, value=opts["memory"], label=words.MEMORY)
                        quant = gr.Dropdown(words.EIGHT_BIT_CHOICES, value=opts["quantization"], label=words.EIGHT_BIT)
                        precision = gr.Dropdown(words.PRECISION_CHOICES, value=opts["precision"],
                                                label=words.PRECISION)
                        slicing = gr.Checkbox(opts["vae_slicing"], label=words.SLICING)
                        tiling = gr.Checkbox(opts["vae_tiling"], label=words.TILING)
                    reload_btn = gr.Button("Apply (reloads the model)", size="sm")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
            with gr.Column(scale=2):
                video = gr.Video(label="Clip", loop=True, autoplay=True, elem_id="gen-video", interactive=False,
                                 show_label=False)  # a label would cover the clip's SYNTHETIC mark
                warnings = gr.Markdown()
                download = gr.File(label="Download (MP4 + provenance JSON)", file_count="multiple")
                with gr.Accordion("Provenance: the technical record kept with the clip", open=False):
                    provenance = gr.JSON(show_label=False)

    with gr.Tab("History", id="history"):
        gr.Markdown("Every clip generated here, newest first; kept on disk across restarts. Select an id to "
                    "view it, run it again with the same settings, or add it to a study (study lead).")
        table = gr.Dataframe(headers=ROW_HEADERS, value=history_table(history), interactive=False,
                             elem_id="history-table", wrap=True,
                             column_widths=["14%", "14%", "34%", "12%", "6%", "7%", "6%", "7%"])
        with gr.Row():
            entry_id = gr.Dropdown(choices=[e.id for e in history.entries(limit=200)], label="History id",
                                   allow_custom_value=True, elem_id="history-id")
            refresh = gr.Button("Refresh", size="sm")
        with gr.Row():
            show = gr.Button("Show")
            rerun = gr.Button("Re-run with same settings (fills Generate)")
            to_demo = gr.Button("Add to kiosk gallery")
        with gr.Row():
            study = gr.Dropdown(choices=[], label="Study", allow_custom_value=True, elem_id="history-study")
            to_study = gr.Button("Add to study (study lead)", elem_id="add-to-study")
        history_msg = gr.Markdown()
        with gr.Row():
            history_video = gr.Video(label="Clip", loop=True, interactive=False)
            with gr.Accordion("Provenance: the technical record kept with the clip", open=False):
                history_prov = gr.JSON(show_label=False)

    # ------------------------------------------------------------------ handlers
    def on_generate(p, n, s, st, g, f, h, w, r, sp, request: gr.Request, progress=gr.Progress()):
        req = build_request(p, n, s, st, g, f, h, w, r, speed=sp)
        try:
            result = run_generation(service, req, request.session_hash or "anonymous", progress, history.root)
        except GenerationCancelled as cancelled:  # a notice was shown; the page keeps what it had
            return (gr.update(), explain_error(cancelled), gr.update(), gr.update(), gr.update(), gr.update())
        phase = phase_of_prompt(req.prompt)
        entry = history.add(result.frames, result.provenance, fps=result.request.fps,
                            extra={"phase": phase} if phase else None)
        note = "\n".join(f"- ⚠️ {w_}" for w_ in result.warnings)
        message = f"Saved to history as **{entry.id}** (made in {words.duration(result.seconds)}).\n{note}"
        ids = [e.id for e in history.entries(limit=200)]
        return (stage_file(entry.path), message, [stage_file(entry.path), stage_file(entry.path.with_suffix(".json"))],
                entry.provenance, history_table(history), gr.update(choices=ids, value=entry.id))

    go.click(on_generate, [prompt, negative, seed, steps, guidance, frames, height, width, fps, speed],
             [video, warnings, download, provenance, table, entry_id], api_name="generate",
             show_progress_on=[video], concurrency_limit=1, concurrency_id=GPU)

    def on_cancel(request: gr.Request):
        found = service.cancel(request.session_hash or "anonymous")
        return "Cancelling after the current step…" if found else "Nothing to cancel."

    cancel.click(on_cancel, None, warnings, api_name="cancel", queue=False)
    dice.click(random_seed, None, seed, api_name="random_seed")
    template.change(lambda t: t or gr.update(), template, prompt, api_visibility="undocumented")

    def on_reload(m, q, pr, sl, ti):
        return service.reload(memory=m, quantization=q, precision=pr, vae_slicing=bool(sl), vae_tiling=bool(ti))

    reload_btn.click(on_reload, [memory, quant, precision, slicing, tiling], banner, api_name="reload_model",
                     concurrency_limit=1, concurrency_id=GPU)

    def on_refresh():
        ids = [e.id for e in history.entries(limit=200)]
        return history_table(history), gr.update(choices=ids), gr.update(choices=_study_choices(store_getter))

    refresh.click(on_refresh, None, [table, entry_id, study], api_name="history_refresh")
    demo.load(on_refresh, None, [table, entry_id, study], api_visibility="undocumented")  # fresh on every page load

    def load_entry(eid):
        try:
            return history.get(eid)
        except HistoryError as error:
            raise user_error(str(error)) from None

    def on_show(eid):
        entry = load_entry(eid)
        return stage_file(entry.path), entry.provenance

    show.click(on_show, entry_id, [history_video, history_prov], api_name="history_show")

    def on_rerun(eid):
        p = load_entry(eid).provenance
        frames_value = p.get("num_frames") if p.get("num_frames") in dict(FRAME_CHOICES).values() else NATIVE
        return (p.get("prompt", ""), p.get("negative_prompt", ""), str(p.get("seed", 12345)),
                p.get("num_inference_steps", 50), p.get("guidance_scale", 6.0), frames_value,
                p.get("height"), p.get("width"), p.get("fps", 8), gr.Tabs(selected="generate"))

    rerun.click(on_rerun, entry_id, [prompt, negative, seed, steps, guidance, frames, height, width, fps, tabs],
                api_name="history_rerun")

    def on_to_demo(eid):
        entry = load_entry(eid)
        gallery_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.path, gallery_dir / entry.path.name)
        return f"{entry.id} added to the kiosk gallery ({gallery_dir})."

    to_demo.click(on_to_demo, entry_id, history_msg, api_name="history_to_gallery")

    def on_to_study(eid, slug, admin: AdminSession):
        require_admin(admin)
        from app.studies_tab import import_history_clips
        from ophora.study.store import ParityError, StudyError

        entry = load_entry(eid)
        try:
            added = import_history_clips(store_getter(), slug, [entry])
        except StudyError as error:
            raise gr.Error(f"{error}\n(Import from the Studies tab to see this as a table and accept differences.)"
                           if isinstance(error, ParityError) else str(error), duration=None) from None
        return f"{entry.id}: {'added to' if added else 'already in'} study **{slug}** (blinded copy made)."

    to_study.click(on_to_study, [entry_id, study, admin_state], history_msg, api_name="history_add_to_study")
    return study


def _study_choices(store_getter) -> list[str]:
    try:
        return store_getter().studies()
    except Exception:  # noqa: BLE001 - an unreachable database must not break the History tab
        return []
