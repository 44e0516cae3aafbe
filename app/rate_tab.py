"""The Rate tab: a rater's blinded queue, one clip at a time, resumable, with keyboard shortcuts.

Everything a rater sees comes from ``StudyStore``'s rater-facing calls (``BlindItem``: opaque clip id,
blinded copy, the instruction only where a criterion needs it). The access code is checked by the store on
every call; the reading on screen is kept server-side in ``RaterSession``, so a client can neither pick
another rater's reading nor learn anything about a clip beyond its blinded picture.
"""

from __future__ import annotations

import time

import gradio as gr

from app.security import RaterSession, require_rater, stage_file
from app.wording import quiet
from ophora.study.store import StudyError

MAX_CRITERIA = 8

SHORTCUTS = ("Keys: **1-9** score the next unscored criterion · **Space** play/pause · **,** / **.** one frame "
             "back/forward · **L** loop on/off · **R** / **S** real / synthetic · **Ctrl+Enter** submit · "
             "**Alt+←** previous clip")


def _choices(scale: dict) -> list[tuple[str, int]]:
    anchors = {int(k): v for k, v in (scale.get("anchors") or {}).items()}
    return [(f"{v} – {anchors[v]}" if v in anchors else str(v), v) for v in range(scale["min"], scale["max"] + 1)]


def _is_rated(store, session: RaterSession) -> bool:
    progress = store.rater_progress(session.code)
    return progress.next_position is None or session.position < progress.next_position


def build_rate_tab(store_getter) -> None:
    with gr.Tab("Rate", id="rate"):
        session = gr.State(RaterSession())
        with gr.Row():
            code = gr.Textbox(label="Access code", type="password", elem_id="rate-code", scale=3,
                              placeholder="the code your study lead gave you")
            sign_in = gr.Button("Start / resume", variant="primary", elem_id="rate-signin", scale=1)
        status = gr.Markdown(elem_id="rate-status")
        with gr.Column(visible=False, elem_id="rate-panel") as panel:
            about = gr.Markdown()
            with gr.Row():
                with gr.Column(scale=3):
                    video = gr.Video(label="Clip", loop=True, autoplay=True, interactive=False, elem_id="rate-video",
                                     buttons=[])
                    instruction = gr.Markdown(elem_id="rate-instruction")
                    gr.Markdown(SHORTCUTS)
                with gr.Column(scale=2):
                    radios = [gr.Radio([], label=f"criterion {i + 1}", visible=False, elem_id=f"crit-{i}",
                                       elem_classes=["criterion"]) for i in range(MAX_CRITERIA)]
                    phase = gr.Dropdown([], label="Which surgical phase is shown?", visible=False, elem_id="rate-phase")
                    turing = gr.Radio([("Real recording", "real"), ("Synthetic (generated)", "synthetic")],
                                      label="Is this clip real or synthetic?", visible=False, elem_id="rate-turing")
                    confidence = gr.Radio([], label="How sure are you?", visible=False, elem_id="rate-confidence")
                    comment = gr.Textbox(label="Comment (optional)", lines=1)
                    reason = gr.Textbox(label="Reason for changing your earlier answer (required)", visible=False,
                                        elem_id="rate-reason")
                    with gr.Row():
                        back = gr.Button("← Previous", elem_id="rate-back")
                        submit = gr.Button("Submit", variant="primary", elem_id="rate-submit")
                        forward = gr.Button("Next →", elem_id="rate-next")

    outputs = [session, status, panel, about, video, instruction, *radios, phase, turing, confidence, comment, reason]

    def render(sess: RaterSession, message: str = ""):
        """All outputs for the reading at ``sess.position`` (or the finished screen)."""
        store = store_getter()
        progress = store.rater_progress(sess.code)
        head = f"Signed in as **{sess.name}** · {progress.done}/{progress.total} rated"
        if message:
            head = f"{message}\n\n{head}"
        if sess.position is None:
            sess.clip_id, sess.rated = None, False
            done = "All clips are rated: thank you! You can go back to change an answer." if progress.finished else ""
            hidden = [gr.update(visible=False, value=None) for _ in radios]
            return (sess, f"{head}\n\n{done}", gr.update(visible=True), "", None, "", *hidden,
                    gr.update(visible=False), gr.update(visible=False), gr.update(visible=False), "",
                    gr.update(visible=False, value=""))
        item = store.item_at(sess.code, sess.position)
        sess.clip_id, sess.shown_at = item.clip_id, time.time()
        sess.rated = _is_rated(store, sess)
        updates = []
        for i, radio in enumerate(radios):
            if i < len(item.criteria):
                c = item.criteria[i]
                label = c["name"].replace("_", " ").capitalize() + (f": {c['description']}" if c["description"] else "")
                updates.append(gr.update(visible=True, choices=_choices(c), label=label, value=None))
            else:
                updates.append(gr.update(visible=False, choices=[], value=None))
        state = ("You already answered this clip. To change your answer, set only what you want to change "
                 "(anything left empty keeps your earlier answer), give a reason and submit." if sess.rated else "")
        about_text = f"### {item.study_title}\n{item.study_instructions}\n\n**Clip {item.position} of {item.total}**"
        conf = item.turing_confidence or {"min": 1, "max": 5}
        return (sess, f"{head}\n\n{state}", gr.update(visible=True), about_text,
                stage_file(item.video_path, name=f"{item.clip_id}.mp4"),
                f"**Instruction:** {item.instruction}" if item.instruction else "", *updates,
                gr.update(visible=item.ask_phase, choices=list(item.phases), value=None),
                gr.update(visible=item.turing_test, value=None),
                gr.update(visible=item.turing_test, choices=_choices(conf), value=None), "",
                gr.update(visible=sess.rated, value=""))

    def guarded(fn):
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except StudyError as error:
                raise quiet(gr.Error(str(error))) from None
            except gr.Error as error:
                raise quiet(error) from None
        wrapper.__name__ = fn.__name__
        return wrapper

    @guarded
    def on_sign_in(access_code: str):
        store = store_getter()
        name = store.rater_name(access_code or "")
        item = store.next_item(access_code)
        sess = RaterSession(code=access_code.strip(), name=name, position=item.position if item else None)
        return render(sess, "Welcome back: you continue where you stopped." if item and item.position > 1 else "")

    @guarded
    def on_submit(sess: RaterSession, *values):
        sess = require_rater(sess)
        if sess.clip_id is None:
            raise gr.Error("There is no clip on screen to answer.")
        store = store_getter()
        scores_raw, (ph, tu, conf, note, why) = values[:MAX_CRITERIA], values[MAX_CRITERIA:]
        item = store.item_at(sess.code, sess.position)
        names = [c["name"] for c in item.criteria]
        scores = {n: v for n, v in zip(names, scores_raw) if v is not None}
        seconds = round(time.time() - sess.shown_at, 1) if sess.shown_at else None
        if sess.rated:
            if not (why or "").strip():
                raise gr.Error("You already answered this clip: say why you change the answer (Reason box).")
            store.change_rating(sess.code, sess.clip_id, reason=why, scores=scores or None,
                                phase=ph or None, turing=tu or None, confidence=conf,
                                comment=note or None, position=sess.position)
            message = f"Changed your answer for clip {sess.position}."
        else:
            missing = [n for n in names if n not in scores]
            if missing:
                raise gr.Error(f"Score every criterion before submitting; missing: {', '.join(missing)}.")
            store.submit_rating(sess.code, sess.clip_id, scores, phase=ph or None, turing=tu or None,
                                confidence=conf, comment=note or None, seconds=seconds, position=sess.position)
            message = f"Saved clip {sess.position}."
        nxt = store.next_item(sess.code)
        sess.position = nxt.position if nxt else None
        return render(sess, message)

    @guarded
    def on_back(sess: RaterSession):
        sess = require_rater(sess)
        total = store_getter().rater_progress(sess.code).total
        current = sess.position if sess.position is not None else total + 1
        if current <= 1:
            raise gr.Error("This is the first clip.")
        sess.position = current - 1
        return render(sess)

    @guarded
    def on_forward(sess: RaterSession):
        sess = require_rater(sess)
        progress = store_getter().rater_progress(sess.code)
        if sess.position is None or (progress.next_position is not None and sess.position >= progress.next_position):
            raise gr.Error("Answer this clip first: clips are rated in order.")
        nxt = sess.position + 1
        sess.position = nxt if nxt <= progress.total and (progress.next_position is None or nxt <= progress.next_position) else None
        return render(sess)

    sign_in.click(on_sign_in, code, outputs, api_name="rate_sign_in", show_progress="minimal")
    code.submit(on_sign_in, code, outputs, api_visibility="undocumented", show_progress="minimal")
    submit.click(on_submit, [session, *radios, phase, turing, confidence, comment, reason], outputs,
                 api_name="rate_submit", show_progress="minimal")
    back.click(on_back, session, outputs, api_name="rate_back", show_progress="minimal")
    forward.click(on_forward, session, outputs, api_name="rate_next", show_progress="minimal")


RATE_JS = """
<script>
(() => {
  const q = (sel) => document.querySelector(sel);
  document.addEventListener('keydown', (ev) => {
    const panel = q('#rate-panel');
    if (!panel || panel.offsetParent === null) return;
    const tag = (ev.target && ev.target.tagName) || '';
    if (['INPUT', 'TEXTAREA', 'SELECT'].includes(tag) && ev.target.type !== 'radio') return;
    const video = q('#rate-video video');
    if (ev.ctrlKey && ev.key === 'Enter') { q('#rate-submit')?.click(); ev.preventDefault(); return; }
    if (ev.altKey && ev.key === 'ArrowLeft') { q('#rate-back')?.click(); ev.preventDefault(); return; }
    if (ev.ctrlKey || ev.altKey || ev.metaKey) return;
    if (video && ev.key === ' ') { video.paused ? video.play() : video.pause(); ev.preventDefault(); return; }
    if (video && (ev.key === ',' || ev.key === '.')) {
      video.pause(); video.currentTime = Math.max(0, video.currentTime + (ev.key === '.' ? 1 : -1) / 8);
      ev.preventDefault(); return;
    }
    if (video && (ev.key === 'l' || ev.key === 'L')) { video.loop = !video.loop; return; }
    if (ev.key === 'r' || ev.key === 'R' || ev.key === 's' || ev.key === 'S') {
      const value = (ev.key.toLowerCase() === 'r') ? 'real' : 'synthetic';
      q(`#rate-turing input[value="${value}"]`)?.click(); return;
    }
    if (/^[0-9]$/.test(ev.key)) {
      const groups = [...document.querySelectorAll('.criterion')].filter(g => g.offsetParent !== null);
      groups.push(q('#rate-confidence'));
      const open = groups.find(g => g && g.offsetParent !== null && !g.querySelector('input:checked'));
      open?.querySelector(`input[value="${ev.key}"]`)?.click();
    }
  });
})();
</script>
"""
