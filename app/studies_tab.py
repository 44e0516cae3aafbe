"""The Studies tab (study lead only): create studies, import clips, issue rater codes, watch progress, results.

Every handler starts with ``require_admin``: the tab is not merely hidden, its endpoints refuse callers
who have not given the admin password in this session. The studio never shows raters' screens; raters
use a rater station (``launch.py --mode rater``) on the same study database.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
import yaml

from app.history import History, HistoryEntry, HistoryError
from app.security import AdminSession, SignInGuard, client_key, require_admin, stage_file, stage_text
from app import glossary as words
from app.fields import optional_number, optional_number_box
from app.wording import quiet, readable_table, yaml_problem
from ophora.study.definition import VIDEO_SUFFIXES, ClipSpec, StudyDefinitionError, parse_definition
from ophora.study.parity import FILE_PROBLEMS, SETTING_PROBLEMS, WAIVABLE
from ophora.study.store import ParityError, StudyError
from ophora.vocabulary import load_phases

PAPER_CRITERIA = [
    {"name": "phase_matching", "description": "Does the clip show what the instruction asks for?",
     "shows_instruction": True,
     "scale": {"min": 1, "max": 5, "anchors": {1: "does not match at all", 3: "partly matches", 5: "matches exactly"}}},
    {"name": "construction_realism", "description": "Are the eye, tissues and instruments plausible?",
     "scale": {"min": 1, "max": 5, "anchors": {1: "clearly implausible", 3: "some artefacts",
                                               5: "indistinguishable from real"}}},
    {"name": "action_realism", "description": "Are instrument movements and tissue responses those of a real surgery?",
     "scale": {"min": 1, "max": 5, "anchors": {1: "clearly implausible", 3: "some odd motion",
                                               5: "indistinguishable from real"}}},
]
RATER_STATION_NOTE = ("Raters rate at a **rater station**: `python launch.py --mode rater --db <this database>` "
                      "(it has only the Rate tab; history, provenance and this tab do not exist there).")


def phase_options(phases) -> list[tuple[str, str]]:
    """Phase choices shown by name ('Capsule polishing'), sent by id ('capsule-polishing')."""
    return [(words.phase_name(p), p) for p in phases]


def import_history_clips(store, slug: str, entries: list[HistoryEntry], accept=(), phase: str | None = None) -> int:
    """Blind and add generated history clips to a study (their provenance stays in the study database).
    A clip's phase comes from its provenance or prompt, else from ``phase`` (the lead's choice for free-text
    prompts). ``accept`` names parity differences the study lead accepted (see ``ophora.study.parity``)."""
    definition = store.definition(slug)
    fallback = definition.match_phase(phase) if phase else None
    if phase and fallback is None:
        raise StudyError(f"phase {phase!r} is not one of the study's phases {list(definition.phases)}")
    specs = []
    for entry in entries:
        phase = (definition.match_phase(entry.provenance.get("phase")) or definition.match_phase(entry.prompt)
                 or fallback)
        specs.append(ClipSpec(path=entry.study_master, source="generated", model=entry.model_id, phase=phase,
                              instruction=entry.prompt or None, clip_set="studio-history"))
    return store.import_clips(slug, specs, accept_differences=accept or ())


def real_clip_specs(definition, paths: list[Path], phase: str | None, clip_set: str) -> list[ClipSpec]:
    """Real clips from a folder or an upload; the phase comes from the form, else from each file name."""
    specs = []
    for path in paths:
        matched = definition.match_phase(phase) if phase else definition.match_phase(path.stem)
        specs.append(ClipSpec(path=path, source="real", model="real", phase=matched, instruction=None,
                              clip_set=clip_set))
    return specs


def yaml_definition(data, raw: str, bases: list[Path]):
    """Parse an uploaded study file. An upload has lost its folder, so relative clip folders are tried from
    each of ``bases`` in turn; the first base where every folder exists wins (else the first error)."""
    first_error = None
    for base in bases:
        try:
            return parse_definition(data, where="uploaded study file", base_dir=base, source_text=raw)
        except StudyDefinitionError as error:
            first_error = first_error or error
    raise first_error


def codes_download(slug: str, codes: dict[str, str], action: str):
    """The access codes issued by one click, as a CSV to download (and nothing else: earlier codes are never
    stored in clear)."""
    if not codes:
        return gr.update(value=None, visible=False)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study", "rater", "access_code"])
    writer.writerows([slug, name, code] for name, code in codes.items())
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return gr.update(value=stage_text(buffer.getvalue(), f"{slug}-codes-{action}-{stamp}.csv"), visible=True)



def form_definition(slug, title, instructions, criteria_yaml, ask_phase, turing, raters, repeats, seed, folder: Path,
                    blinding: dict | None = None, instruction_source: str | None = None,
                    washout_days: float | None = None):
    """A study definition from the form; clips are added afterwards from the history or folders. ``blinding``
    holds the form's picture settings (width, height, fps, max_seconds, fit); empty fields keep the defaults.
    ``washout_days``: a repeat reading is offered only that many days after the first one."""
    try:
        criteria = yaml.safe_load(criteria_yaml) if criteria_yaml and criteria_yaml.strip() else PAPER_CRITERIA
    except yaml.YAMLError as error:
        raise gr.Error(f"Criteria are not valid YAML at {yaml_problem(error)}", print_exception=False) from None
    data = {"slug": slug, "title": title, "instructions": instructions, "criteria": criteria,
            "phases": "cataract", "ask_phase": bool(ask_phase), "turing_test": bool(turing),
            "clip_sets": [{"name": "studio-history", "source": "generated", "model": "ophora", "folder": str(folder)}],
            "raters": [r.strip() for r in (raters or "").replace("\n", ",").split(",") if r.strip()],
            "repeats": ({"count": int(repeats or 0), "after_days": float(washout_days)} if washout_days
                        else int(repeats or 0)),
            "seed": int(seed or 0)}
    settings = {k: v for k, v in (blinding or {}).items() if v is not None and v != ""}
    if settings:
        data["blinding"] = settings
    if instruction_source:
        data["instruction_source"] = instruction_source
    return parse_definition(data, where="study form", check_paths=False)


def build_studies_tab(store_getter, history: History | None, config, admin_state: gr.State,
                      history_study: gr.Dropdown | None) -> None:
    password = config.admin_password
    with gr.Tab("Studies", id="studies"):
        gr.Markdown("Study lead only. " + RATER_STATION_NOTE)
        with gr.Row() as login_row:
            pw = gr.Textbox(label="Admin password", type="password", elem_id="admin-password", scale=3)
            login = gr.Button("Sign in", variant="primary", elem_id="admin-signin", scale=1)
        admin_msg = gr.Markdown(elem_id="admin-status")
        with gr.Column(visible=False, elem_id="admin-panel") as panel:
            with gr.Row():
                study = gr.Dropdown([], label="Study", allow_custom_value=True, elem_id="study-pick", scale=3)
                refresh = gr.Button("Refresh", scale=1, size="sm")
            with gr.Accordion("Study settings: create a study, or change a draft", open=False,
                              elem_id="create-accordion"):
                with gr.Tab("From a form"):
                    with gr.Row():
                        f_slug = gr.Textbox(label="Short name (letters, digits and dashes; empty: from the title)",
                                            placeholder="realism-2026", elem_id="f-slug")
                        f_title = gr.Textbox(label="Title", elem_id="f-title")
                    f_instr = gr.Textbox(label="Instructions for raters", lines=2,
                                         value="Rate each clip on every criterion. Your answers are saved as you go.")
                    f_criteria = gr.Code(yaml.safe_dump(PAPER_CRITERIA, sort_keys=False), language="yaml",
                                         label="Criteria (YAML; default: the paper's three)")
                    with gr.Row():
                        f_phase = gr.Checkbox(True, label="Ask raters to name the phase")
                        f_turing = gr.Checkbox(True, label="Ask real or synthetic (visual Turing test)")
                        f_repeats = gr.Number(0, label="Repeat readings per rater", precision=0)
                        f_washout = optional_number_box("Days before a repeat reading", words.WASHOUT_PLACEHOLDER,
                                                        "f-washout")
                        f_seed = gr.Number(0, label="Order seed", precision=0)
                    f_raters = gr.Textbox(label="Raters (comma-separated names)", elem_id="f-raters")
                    gr.Markdown("**What raters see**: every clip, real or generated, is re-encoded to these "
                                "settings, so size, rate and length cannot tell the source.")
                    with gr.Row():
                        f_width = optional_number_box("Width in pixels", "empty: 720", "f-width", value=720)
                        f_height = optional_number_box("Height in pixels", "empty: 480", "f-height", value=480)
                        f_fps = optional_number_box("Frames per second", "empty: 8", "f-fps", value=8)
                        f_seconds = optional_number_box("Length in seconds", words.SECONDS_PLACEHOLDER, "f-seconds")
                        f_fit = gr.Radio([("Crop to the study's shape (no bars)", "crop"),
                                          ("Letterbox every clip", "letterbox")], value="crop",
                                         label="Other shapes", elem_id="f-fit")
                        f_instruction_source = gr.Radio(
                            [("The phase's wording, for every clip", "phase_template"),
                             ("Each clip's own text", "per_clip")], value="phase_template",
                            label="Instruction shown to raters", elem_id="f-instruction-source")
                    with gr.Row():
                        create = gr.Button("Create study", variant="primary", elem_id="create-study")
                        load_draft = gr.Button("Show the picked draft's settings here", elem_id="load-draft")
                        save_draft = gr.Button("Save these settings to the picked draft", elem_id="save-draft")
                    create_msg = gr.Markdown(elem_id="create-message")
                with gr.Tab("From a YAML file"):
                    gr.Markdown("A study file as in `studies/example_cataract.yaml`; relative folders are read "
                                "from the folder the app was started in, else from its `studies/` folder (where "
                                "the project's study files and example clips are).")
                    y_file = gr.File(label="Study YAML", file_types=[".yaml", ".yml"], type="filepath")
                    y_text = gr.Code(language="yaml", label="…or paste it here")
                    create_yaml = gr.Button("Create from YAML", variant="primary", elem_id="create-yaml")
                    create_yaml_msg = gr.Markdown(elem_id="create-yaml-message")
                with gr.Row():
                    codes = gr.Dataframe(headers=["rater", "access code (shown once)"], interactive=False,
                                         elem_id="rater-codes", scale=3)
                    codes_csv = gr.File(label="These codes as CSV", elem_id="rater-codes-csv", scale=1, height=70,
                                        visible=False)
            with gr.Accordion("Import clips", open=False):
                hist_ids = gr.Dropdown([], multiselect=True, label="Generated clips from the history",
                                       elem_id="import-history-ids")
                with gr.Row():
                    hist_phase = gr.Dropdown(phase_options(p.id for p in load_phases()), value=None, allow_custom_value=True,
                                             label="Phase for clips whose prompt names none",
                                             elem_id="import-history-phase", scale=2)
                    import_hist = gr.Button("Import selected history clips", elem_id="import-history", scale=1)
                with gr.Row():
                    real_folder = gr.Textbox(label="Folder of real clips on this machine", scale=3,
                                             elem_id="import-real-folder")
                    real_phase = gr.Dropdown([], label="Phase (empty: from file names)", allow_custom_value=True)
                real_upload = gr.File(label="…or upload real clips", file_count="multiple", type="filepath",
                                      file_types=list(VIDEO_SUFFIXES))
                import_real = gr.Button("Import real clips", elem_id="import-real")
                import_msg = gr.Markdown(elem_id="import-message")
                parity_note = gr.Markdown(visible=False, elem_id="parity-note")
                parity_table = gr.Dataframe(visible=False, interactive=False, wrap=True, elem_id="parity-table",
                                            label="Clip sets as raters would see them")
                accept = gr.CheckboxGroup([], visible=False, elem_id="parity-accept",
                                          label="Tick a difference to accept it, then import again (recorded in the "
                                                "study, the audit log and every report)")
            with gr.Column(variant="panel", elem_id="raters-panel"):
                gr.Markdown("**Raters**: codes issued here appear beside the buttons, shown once; "
                            "download them as CSV to hand out.", padding=True)
                with gr.Row():
                    with gr.Column(scale=2):
                        rater_name = gr.Textbox(label="Rater names (comma-separated)", elem_id="rater-name")
                        with gr.Row():
                            add_rater = gr.Button("Add: issue access codes", elem_id="add-rater")
                            reissue = gr.Button("Issue new codes (old ones stop working)", elem_id="reissue-code")
                        rater_msg = gr.Markdown(elem_id="rater-message")
                    with gr.Column(scale=3):
                        issued = gr.Dataframe(headers=["rater", "access code (shown once)"], interactive=False,
                                              elem_id="issued-codes")
                        issued_csv = gr.File(label="These codes as CSV", elem_id="issued-codes-csv", height=70,
                                             visible=False)
            with gr.Column(variant="panel", elem_id="lifecycle-panel"):
                lifecycle = gr.Markdown("**Life cycle**: draft (set up) → open (raters rate) → locked (analysis).",
                                        padding=True, elem_id="study-status")
                with gr.Row():
                    open_btn = gr.Button("Open for rating", elem_id="open-study", scale=1)
                    confirm = gr.Textbox(label="To lock or delete, type the study's short name", scale=2,
                                         elem_id="confirm-slug")
                    lock_reason = gr.Textbox(label="Reason for locking (audit log)", scale=2, elem_id="lock-reason")
                    lock_btn = gr.Button("Lock for analysis", variant="stop", elem_id="lock-study", scale=1)
                    delete_btn = gr.Button("Delete draft study", variant="stop", elem_id="delete-study", scale=1)
                life_msg = gr.Markdown(elem_id="lifecycle-message")
                gr.Markdown("**Correct a clip nobody has rated yet** (its id is in the clip key; the change and "
                            "the reason go to the audit log):", padding=True)
                with gr.Row():
                    fix_clip = gr.Textbox(label="Clip id", placeholder="c0123456789abcdef", elem_id="fix-clip-id")
                    fix_reason = gr.Textbox(label="Reason (required)", elem_id="fix-reason", scale=2)
                    fix_phase = gr.Dropdown(phase_options(p.id for p in load_phases()), value=None, allow_custom_value=True,
                                            label="New phase (relabel)", elem_id="fix-phase")
                    fix_set = gr.Textbox(label="New clip set (relabel)", elem_id="fix-set")
                    relabel_btn = gr.Button("Relabel clip", elem_id="relabel-clip")
                    remove_btn = gr.Button("Remove clip", variant="stop", elem_id="remove-clip")
                fix_msg = gr.Markdown(elem_id="fix-message")
                with gr.Row():
                    key_btn = gr.Button("Download the clip key (which clip is which: keep it from raters)",
                                        elem_id="clip-key", scale=2)
                    key_file = gr.File(label="Clip key (CSV)", elem_id="clip-key-file", scale=1, height=70,
                                       visible=False)
            with gr.Accordion("Progress and results", open=True):
                show_results = gr.Button("Update progress and results", variant="primary", elem_id="show-results")
                summary = gr.Markdown(elem_id="study-summary")
                progress_table = gr.Dataframe(headers=["rater", "done", "total", "next position"], interactive=False,
                                              elem_id="progress-table")
                with gr.Row():
                    fig_criterion = gr.Plot(label="Scores by criterion")
                    fig_phase = gr.Plot(label="Scores by phase")
                scores_table = gr.Dataframe(label="Mean scores, with the range that holds the true mean 95 times "
                                                  "in 100", interactive=False, elem_id="scores-table", visible=False)
                differences_table = gr.Dataframe(label="Differences between clip sources", interactive=False,
                                                 elem_id="differences-table", visible=False)
                auc_table = gr.Dataframe(label="Could raters tell real from synthetic? (AUC per source)",
                                         interactive=False, elem_id="auc-table", visible=False)
                reliability = gr.Dataframe(label="Do raters agree with each other?", interactive=False,
                                           visible=False, elem_id="reliability-table")
                intra_table = gr.Dataframe(label="Does a rater agree with themself on a second look?",
                                           interactive=False, visible=False)
                turing_table = gr.Dataframe(label="Real or synthetic: answers by source", interactive=False,
                                            visible=False)
                phase_table = gr.Dataframe(label="Phase named correctly", interactive=False, visible=False)
                columns_note = gr.Markdown(elem_id="columns-note")
                with gr.Accordion("Details for statisticians", open=False, elem_id="statistician-details"):
                    gr.Markdown("Full precision, with the methods: mean scores from a crossed random-effects model "
                                "(raters and clips random) with a generalized confidence interval cut at the "
                                "scale's ends (none with fewer than 3 raters or 3 clips); differences with "
                                "Satterthwaite t intervals and Holm-adjusted p-values; AUC from the Obuchowski-Rockette analysis, three ways "
                                "(rrrc: raters and clips random; frrc: these raters only; rrfc: these clips "
                                "only); ICC and Krippendorff's alpha for agreement. The exports hold the same.")
                    detail_scores = gr.Dataframe(label="Mean scores with variance components", interactive=False,
                                                 visible=False, elem_id="detail-scores")
                    detail_differences = gr.Dataframe(label="Differences", interactive=False, visible=False)
                    detail_auc = gr.Dataframe(label="AUC, all three analyses", interactive=False, visible=False,
                                              elem_id="detail-auc")
                    detail_reliability = gr.Dataframe(label="Agreement, all measures", interactive=False,
                                                      visible=False)
                results_msg = gr.Markdown(elem_id="results-message")
                export = gr.Button("Export (HTML report, CSV tables, unblinding key)", elem_id="export")
                export_files = gr.File(label="Exports", file_count="multiple", elem_id="export-files")
            with gr.Accordion("Plan a study", open=False, elem_id="plan-accordion"):
                gr.Markdown("Raters x clips needed, from pilot variance components: the selected study's ratings, "
                            "or a CSV of scores (rater, clip, model, criterion, score) and/or of MRMC ratings "
                            "(reader, modality, case, truth, rating).")
                with gr.Row():
                    plan_scores = gr.File(label="Pilot scores CSV (optional)", file_types=[".csv"], type="filepath")
                    plan_mrmc = gr.File(label="Pilot MRMC CSV (optional)", file_types=[".csv"], type="filepath")
                with gr.Row():
                    plan_half = gr.Number(0.25, label="Mean score: target 95% CI half-width")
                    plan_diff = gr.Number(0.05, label="AUC difference between models to detect")
                    plan_margin = gr.Number(0.05, label="Show AUC below 0.5 + margin")
                    plan_power = gr.Number(0.8, label="Power")
                plan_button = gr.Button("Plan", elem_id="plan-button")
                plan_text = gr.Markdown(elem_id="plan-text")
                plan_score_table = gr.Dataframe(label="Mean scores: clips per model for each number of raters",
                                                interactive=False, visible=False)
                plan_auc_table = gr.Dataframe(label="AUC: clips (real + generated) for each number of readers",
                                              interactive=False, visible=False)

    def store():
        return store_getter()

    def near(event, elem_id: str):
        """Scroll the message beside the control that caused it into view (the panel is taller than a screen)."""
        return event.then(None, js=f"() => document.getElementById('{elem_id}')?.scrollIntoView("
                                    f"{{block: 'nearest', behavior: 'smooth'}})")

    def studies_update(selected=None):
        names = store().studies()
        value = selected if selected in names else (names[-1] if names else None)
        return gr.update(choices=names, value=value)

    def guarded(fn):
        def wrapper(admin, *args):
            require_admin(admin)
            try:
                return fn(*args)
            except gr.Error as error:
                raise quiet(error) from None
            except (StudyError, StudyDefinitionError, HistoryError, RuntimeError, OSError, ValueError) as error:
                raise quiet(gr.Error(words.in_app_words(str(error)), duration=None)) from None
        wrapper.__name__ = fn.__name__
        return wrapper

    guard = SignInGuard()

    def on_login(given, request: gr.Request):
        if not guard.check(given, password, client_key(request)):
            raise quiet(gr.Error("Wrong admin password."))
        ids = [e.id for e in history.entries(limit=500)] if history else []
        phases = phase_options(store().definition(store().studies()[-1]).phases if store().studies()
                               else (p.id for p in load_phases()))
        return (AdminSession(signed_in=True), "Signed in as study lead.", gr.update(visible=True), studies_update(),
                gr.update(choices=ids), gr.update(choices=phases), gr.update(choices=phases), "",
                gr.update(visible=False))

    login.click(on_login, pw, [admin_state, admin_msg, panel, study, hist_ids, real_phase, hist_phase, pw, login_row],
                api_name="admin_sign_in", show_progress="hidden")

    def after_create(definition, clips=()):
        blind_dir = config.studies_dir / definition.slug / "blinded"
        codes_ = store().create_study(definition, blind_dir=blind_dir)
        refused = ""
        try:  # the study and its codes exist now: a refused import must not lose the codes (shown once)
            added = store().import_clips(definition.slug, list(clips)) if clips else 0
        except StudyError as error:
            added = 0
            why = ("\n".join(f"- {words.in_app_words(p)}" for p in error.report.problems)
                   if isinstance(error, ParityError) else f"- {words.in_app_words(str(error))}")
            refused = (f"\n\n**Its clips were not imported:**\n{why}\n\nChange the clips or the study settings, "
                       f"then import them under *Import clips* (where an acceptable difference can be accepted), "
                       f"or delete this draft and create it again.")
        rows = [[name, code] for name, code in codes_.items()]
        note = (f"Created **{definition.slug}** (a draft) with {words.plural(len(rows), 'rater')} and "
                f"{words.plural(added, 'clip')}. Copy or download "
                f"the codes now: they are not shown again. Open the study for rating when it is set up.{refused}")
        return (note, rows, studies_update(definition.slug), studies_update(definition.slug),
                codes_download(definition.slug, codes_, "created"))

    @guarded
    def on_create(slug, title, instr, crit, ask_phase, turing, raters, repeats, seed, width, height, fps, seconds,
                  fit, instruction_source, washout_days):
        if not (title or "").strip():
            raise gr.Error("Give the study a title (raters see it at the top of every clip).")
        slug = (slug or "").strip() or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:63] or "study"
        blinding = {"width": optional_number(width, "Width", whole=True),
                    "height": optional_number(height, "Height", whole=True),
                    "fps": optional_number(fps, "Frames per second", whole=True),
                    "max_seconds": optional_number(seconds, "Length in seconds"), "fit": fit or None}
        washout_days = optional_number(washout_days, "Days before a repeat reading")
        definition = form_definition(slug, title, instr, crit, ask_phase, turing, raters, repeats, seed,
                                     config.studies_dir / str(slug or "study") / "incoming", blinding=blinding,
                                     instruction_source=instruction_source, washout_days=washout_days)
        return after_create(definition)

    hist_out = history_study if history_study is not None else gr.State()
    create_event = create.click(on_create, [admin_state, f_slug, f_title, f_instr, f_criteria, f_phase, f_turing, f_raters, f_repeats,
                             f_seed, f_width, f_height, f_fps, f_seconds, f_fit, f_instruction_source, f_washout],
                 [create_msg, codes, study, hist_out, codes_csv], api_name="study_create")
    near(create_event, "create-message")

    draft_fields = [f_slug, f_title, f_instr, f_criteria, f_phase, f_turing, f_raters, f_width, f_height, f_fps,
                    f_seconds, f_fit, f_instruction_source]

    @guarded
    def on_load_draft(slug):
        slug = need_study(slug)
        if store().status(slug) != "draft":
            raise gr.Error(f"{slug} is {store().status(slug)}: only a draft's settings can change.")
        d = store().definition(slug)
        b = d.blinding
        criteria = yaml.safe_dump([c.model_dump(exclude_none=True) for c in d.criteria], sort_keys=False)
        return (slug, d.title, d.instructions, criteria, d.ask_phase, d.turing_test, ", ".join(d.raters),
                str(b.width), str(b.height), str(b.fps), "" if b.max_seconds is None else f"{b.max_seconds:g}",
                b.fit, d.instruction_source,
                f"Settings of the draft **{slug}** are shown above. Change them, then save them to the draft "
                f"(repeat readings and the order seed stay as they are).")

    near(load_draft.click(on_load_draft, [admin_state, study], [*draft_fields, create_msg],
                          api_name="study_load_draft"), "create-message")

    @guarded
    def on_save_draft(picked, title, instr, crit, ask_phase, turing, raters, width, height, fps, seconds, fit,
                      instruction_source):
        import dataclasses

        slug = need_study(picked)
        old = store().definition(slug)
        blinding = {"width": optional_number(width, "Width", whole=True),
                    "height": optional_number(height, "Height", whole=True),
                    "fps": optional_number(fps, "Frames per second", whole=True),
                    "max_seconds": optional_number(seconds, "Length in seconds"), "fit": fit or None}
        new = form_definition(slug, title, instr, crit, ask_phase, turing, raters, 0, old.seed,
                              config.studies_dir / slug / "incoming", blinding=blinding,
                              instruction_source=instruction_source)
        # What the form does not show is kept as the study file set it (confidence scale, Turing margin).
        new = dataclasses.replace(new, clip_sets=old.clip_sets, repeats=old.repeats, phases=old.phases,
                                  raters=tuple(dict.fromkeys([*old.raters, *new.raters])),
                                  turing_confidence=old.turing_confidence or new.turing_confidence,
                                  turing_margin=old.turing_margin)
        added = store().update_draft(slug, new)
        note = (f" Access codes for {words.plural(len(added), 'new rater')} are beside this message (shown once)."
                if added else "")
        return (f"Saved the settings of the draft **{slug}**; imported clips now show as raters will see them."
                + note, [[n, c] for n, c in added.items()], codes_download(slug, added, "added"))

    near(save_draft.click(on_save_draft, [admin_state, study, *draft_fields[1:]], [create_msg, codes, codes_csv],
                          api_name="study_save_draft"), "create-message")

    @guarded
    def on_create_yaml(file, text):
        try:
            raw = Path(file).read_text(encoding="utf-8") if file else (text or "")
        except UnicodeDecodeError:
            raise gr.Error(f"{Path(file).name} is not a text (UTF-8) YAML file; upload a study file like "
                           "studies/example_cataract.yaml.") from None
        if not raw.strip():
            raise gr.Error("Upload a study YAML file or paste one.")
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise gr.Error(f"Not valid YAML at {yaml_problem(error)}", print_exception=False) from None
        definition = yaml_definition(data, raw, [Path.cwd(), Path.cwd() / "studies"])
        return after_create(definition, definition.clips())

    near(create_yaml.click(on_create_yaml, [admin_state, y_file, y_text],
                           [create_yaml_msg, codes, study, hist_out, codes_csv], api_name="study_create_yaml"),
         "create-yaml-message")

    def need_study(slug):
        if not slug:
            raise gr.Error("Pick a study first.")
        return slug

    def parity_refusal(error: ParityError, accepted) -> tuple:
        """The refusal as the lead sees it: what differs, the table per clip set, and a checkbox per
        difference that may be accepted."""
        report = error.report
        props = [p.split(":", 1)[0] for p in report.problems]
        waivable = [p for p in props if p in WAIVABLE]
        kinds = {p: p.split(":", 1)[0] for p in report.problems}
        groups = [("These clips cannot be shown to raters", [p for p in report.problems if kinds[p] in FILE_PROBLEMS]),
                  ("The study's settings do not fit these clips",
                   [p for p in report.problems if kinds[p] in SETTING_PROBLEMS]),
                  ("Raters could tell these clip sets apart after blinding",
                   [p for p in report.problems if kinds[p] not in FILE_PROBLEMS + SETTING_PROBLEMS])]
        fixed_only = [p for p in groups[2][1] if kinds[p] not in WAIVABLE]
        lines = ["**Import refused.** Nothing was imported."]
        for heading, problems in groups:
            if problems:
                lines.append(f"{heading}:")
                lines += [f"- {words.in_app_words(p)}" for p in problems]
        if fixed_only:
            lines.append("Length and instruction differences cannot be accepted: change the clips, or change this "
                         "draft under *Study settings* (Show the picked draft's settings, change, save), then "
                         "import again.")
        if waivable:
            lines.append("To go ahead anyway, tick the differences you accept below and import again.")
        choices = [(f"Accept this difference: {WAIVABLE[prop]}", prop) for prop in waivable]
        return ("Import refused: what differs and what to do are just below.",
                gr.update(visible=True, value="\n".join(lines)),
                gr.update(visible=True, value=report.table),
                gr.update(visible=bool(choices), choices=choices, value=[a for a in accepted or [] if a in waivable]))

    def with_earlier_waivers(slug, accepted) -> list[str]:
        """A difference the lead accepted at an earlier import of this study stays accepted (it is recorded)."""
        earlier = [w["property"] for w in store().accepted_differences(slug)]
        return list(dict.fromkeys([*(accepted or []), *earlier]))

    def imported(text: str, accepted) -> tuple:
        waived = f" Accepted differences: {', '.join(accepted)} (recorded)." if accepted else ""
        return (text + waived, gr.update(visible=False, value=""), gr.update(visible=False, value=None),
                gr.update(visible=False, choices=[], value=[]))

    @guarded
    def on_import_history(slug, ids, phase, accepted):
        if history is None or not ids:
            raise gr.Error("Select one or more history clips.")
        try:
            added = import_history_clips(store(), need_study(slug), [history.get(i) for i in ids],
                                         accept=with_earlier_waivers(slug, accepted), phase=phase or None)
        except ParityError as error:
            return parity_refusal(error, accepted)
        return imported(f"Imported {added} of {words.plural(len(ids), 'clip')} into **{slug}** (blinded copies; "
                        f"clips imported before are skipped).", accepted)

    parity_outputs = [import_msg, parity_note, parity_table, accept]
    near(import_hist.click(on_import_history, [admin_state, study, hist_ids, hist_phase, accept], parity_outputs,
                           api_name="study_import_history"), "import-message")

    @guarded
    def on_import_real(slug, folder, phase, uploads, accepted):
        definition = store().definition(need_study(slug))
        paths: list[Path] = []
        if folder and folder.strip():
            root = Path(folder).expanduser()
            if not root.is_dir():
                raise gr.Error(f"Folder {root} does not exist on this machine.")
            paths += sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        paths += [Path(u) for u in uploads or []]
        if not paths:
            raise gr.Error(f"No video files ({', '.join(VIDEO_SUFFIXES)}) to import.")
        bad = [p.name for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES]
        if bad:
            raise gr.Error(f"Not video files: {', '.join(bad)}. Upload {', '.join(VIDEO_SUFFIXES)} clips.")
        try:
            added = store().import_clips(slug, real_clip_specs(definition, paths, phase, "studio-real"),
                                         accept_differences=with_earlier_waivers(slug, accepted))
        except ParityError as error:
            return parity_refusal(error, accepted)
        return imported(f"Imported {words.plural(added, 'real clip')} into **{slug}**.", accepted)

    near(import_real.click(on_import_real, [admin_state, study, real_folder, real_phase, real_upload, accept],
                           parity_outputs, api_name="study_import_real"), "import-message")

    def rater_names(text) -> list[str]:
        names = [n.strip() for n in (text or "").replace("\n", ",").split(",") if n.strip()]
        if not names:
            raise gr.Error("Type one or more rater names (comma-separated).")
        return names

    @guarded
    def on_add_rater(slug, names):
        issued_ = store().add_raters(need_study(slug), rater_names(names))
        return (f"Access codes for **{', '.join(issued_)}** issued (shown once).", [[n, c] for n, c in issued_.items()],
                codes_download(slug, issued_, "added"))

    near(add_rater.click(on_add_rater, [admin_state, study, rater_name], [rater_msg, issued, issued_csv],
                         api_name="study_add_rater"), "raters-panel")

    @guarded
    def on_reissue(slug, names):
        issued_ = store().reissue_codes(need_study(slug), rater_names(names))
        return (f"New access codes for **{', '.join(issued_)}**; their old codes no longer work.",
                [[n, c] for n, c in issued_.items()], codes_download(slug, issued_, "reissued"))

    near(reissue.click(on_reissue, [admin_state, study, rater_name], [rater_msg, issued, issued_csv],
                       api_name="study_reissue_code"), "raters-panel")

    def status_text(slug) -> str:
        stage = store().status(slug)
        what = {"draft": "being set up: raters cannot rate yet. Open it once clips and raters are in.",
                "open": "raters can rate now. Lock it before the analysis you report.",
                "locked": "no rating can be added or changed; the results are final."}[stage]
        return f"**Life cycle**: study **{slug}** is **{stage}**: {what}"

    @guarded
    def on_status(slug):
        if not slug:  # e.g. the last study was deleted
            return "**Life cycle**: no study picked.", gr.update(), gr.update()
        phases = phase_options(store().definition(slug).phases)
        return status_text(slug), gr.update(choices=phases), gr.update(choices=phases)

    study.change(on_status, [admin_state, study], [lifecycle, real_phase, hist_phase], api_name="study_status",
                 show_progress="hidden")

    @guarded
    def on_open(slug):
        store().open_study(need_study(slug))
        return f"Opened **{slug}**: raters can sign in at a rater station now.", status_text(slug)

    near(open_btn.click(on_open, [admin_state, study], [life_msg, lifecycle], api_name="study_open"),
         "lifecycle-panel")

    def confirmed(slug, typed) -> str:
        """Lock and delete cannot be undone: the lead types the study's short name, as on code hosting sites."""
        slug = need_study(slug)
        if (typed or "").strip() != slug:
            raise gr.Error(f"Type the study's short name ({slug}) in the confirmation box first; "
                           f"this cannot be undone.")
        return slug

    @guarded
    def on_lock(slug, typed, reason):
        store().lock_study(confirmed(slug, typed), reason=(reason or "").strip() or None)
        return (f"Locked **{slug}**: ratings are frozen for analysis (recorded in the audit log).", status_text(slug),
                "")

    near(lock_btn.click(on_lock, [admin_state, study, confirm, lock_reason], [life_msg, lifecycle, confirm],
                        api_name="study_lock"), "lifecycle-panel")

    @guarded
    def on_delete(slug, typed):
        removed = store().delete_study(confirmed(slug, typed))
        return (f"Deleted the draft study **{slug}** and its {removed} blinded files.", "", studies_update(),
                studies_update())

    near(delete_btn.click(on_delete, [admin_state, study, confirm], [life_msg, confirm, study, hist_out],
                          api_name="study_delete"), "lifecycle-panel")

    def clip_fix(clip_id, reason) -> tuple[str, str]:
        clip_id = (clip_id or "").strip()
        if not clip_id:
            raise gr.Error("Give the clip id (from the clip key) of the clip to correct.")
        if not (reason or "").strip():
            raise gr.Error("Say why (the reason is kept in the audit log).")
        return clip_id, reason.strip()

    @guarded
    def on_relabel(slug, clip_id, reason, phase, clip_set):
        clip_id, reason = clip_fix(clip_id, reason)
        record = store().relabel_clip(need_study(slug), clip_id, reason=reason, phase=phase or None,
                                      clip_set=(clip_set or "").strip() or None)
        return (f"Relabelled clip {clip_id}: phase {words.phase_name(record.get('phase'))}, clip set "
                f"{record.get('clip_set')} (recorded in the audit log).")

    near(relabel_btn.click(on_relabel, [admin_state, study, fix_clip, fix_reason, fix_phase, fix_set], fix_msg,
                           api_name="study_relabel_clip"), "fix-message")

    @guarded
    def on_remove(slug, clip_id, reason):
        clip_id, reason = clip_fix(clip_id, reason)
        store().remove_clip(need_study(slug), clip_id, reason=reason)
        return f"Removed clip {clip_id} from **{slug}** and from every rater's order (audited)."

    near(remove_btn.click(on_remove, [admin_state, study, fix_clip, fix_reason], fix_msg,
                          api_name="study_remove_clip"), "fix-message")

    @guarded
    def on_clip_key(slug):
        slug = need_study(slug)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = stage_text(store().clips_frame(slug).to_csv(index=False), f"{slug}-clip-key-{stamp}.csv")
        return gr.update(value=path, visible=True)

    key_btn.click(on_clip_key, [admin_state, study], key_file, api_name="study_clip_key")

    @guarded
    def on_results(slug):
        from ophora.study.analysis import figure_by_criterion, figure_by_phase, results_for_study
        from ophora.study.narrative import readable_labels, summary_markdown

        slug = need_study(slug)
        progress = store().progress(slug)
        rows = [[p.rater, p.done, p.total, p.next_position] for p in progress]
        results = results_for_study(store(), slug)
        finished = sum(p.finished for p in progress)
        note = ("" if finished == len(progress) else
                f"Under way: {finished} of {len(progress)} raters finished; the results use the ratings so far.")
        # What the figures came from: the record check and its chain head (a failed check is said first).
        check = results.record['check']
        note = f"{check[:1].upper()}{check[1:]}. {note}".strip()
        if results.ratings.empty:
            hidden = readable_table(None)
            return (rows, "No ratings yet.", None, None, *[hidden] * 11, "", "No ratings yet.")

        def shown(table):
            return readable_table(readable_labels(table), clinician=True)

        def full(table):
            return readable_table(readable_labels(table), digits=6)

        auc = results.turing_auc
        main_auc = auc[auc["analysis"] == "rrrc"] if "analysis" in auc else auc
        clinician_tables = [results.by_model_criterion, results.score_differences.drop(columns=["a", "b"]), main_auc,
                            results.reliability, results.intra_rater, results.turing_by_model,
                            results.phase_accuracy]
        shown_columns = [c for t in clinician_tables if len(t) for c in t.columns]
        return (rows, summary_markdown(results), figure_by_criterion(results.ratings),
                figure_by_phase(results.ratings), *[shown(t) for t in clinician_tables],
                full(results.by_model_criterion), full(results.score_differences.drop(columns=["a", "b"])),
                full(auc), full(results.reliability), words.explanations(words.for_clinicians(shown_columns)), note)

    show_results.click(on_results, [admin_state, study],
                       [progress_table, summary, fig_criterion, fig_phase, scores_table, differences_table, auc_table,
                        reliability, intra_table, turing_table, phase_table, detail_scores, detail_differences,
                        detail_auc, detail_reliability, columns_note, results_msg],
                       api_name="study_results")

    @guarded
    def on_plan(slug, scores_csv, mrmc_csv, half_width, difference, margin, power):  # < 1 s: no progress bar
        import pandas as pd

        from ophora.study.analysis import turing_mrmc
        from ophora.study.mrmc import complete_readers
        from ophora.study.planning import make_plan

        score_pilot = pd.read_csv(scores_csv) if scores_csv else None
        mrmc_pilot = pd.read_csv(mrmc_csv) if mrmc_csv else None
        if slug and (score_pilot is None and mrmc_pilot is None):
            ratings = store().ratings_frame(slug)
            score_pilot = ratings if not ratings.empty else None
            data = complete_readers(turing_mrmc(ratings)[0])[0] if not ratings.empty else None
            mrmc_pilot = data if data is not None and not data.empty else None
        if score_pilot is None and mrmc_pilot is None:
            raise gr.Error("No pilot data: pick a study with ratings or upload a scores or MRMC CSV.")
        plan = make_plan(score_pilot=score_pilot, mrmc_pilot=mrmc_pilot, half_width=half_width or None,
                         auc_difference=difference or None, auc_margin=margin or None, power=power or 0.8)
        return plan.text, readable_table(plan.scores), readable_table(plan.auc)

    plan_button.click(on_plan, [admin_state, study, plan_scores, plan_mrmc, plan_half, plan_diff, plan_margin,
                                plan_power], [plan_text, plan_score_table, plan_auc_table], api_name="study_plan")

    @guarded
    def on_export(slug):
        from ophora.study.analysis import export_csv, export_html

        slug = need_study(slug)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        folder = config.exports_dir / f"{slug}-{stamp}"
        from ophora.study.analysis import results_for_study

        results = results_for_study(store(), slug)
        report = export_html(results, folder / f"{slug}-report.html")
        csvs = export_csv(results, folder / "tables")
        store().clips_frame(slug).to_csv(folder / "tables" / "unblinding_key.csv", index=False)
        archive = folder / f"{slug}-tables.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in [*csvs, folder / "tables" / "unblinding_key.csv"]:
                zf.write(path, path.name)
        return [stage_file(report), stage_file(archive)]

    export.click(on_export, [admin_state, study], export_files, api_name="study_export")

    @guarded
    def on_refresh():
        ids = [e.id for e in history.entries(limit=500)] if history else []
        return studies_update(), gr.update(choices=ids)

    refresh.click(on_refresh, [admin_state], [study, hist_ids], api_name="study_refresh")
