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
from app.glossary import phase_name
from app.wording import quiet
from ophora.study.store import StudyError

MAX_CRITERIA = 8

SHORTCUTS = ("Keys: **1-9** score the next unanswered question · the **letter** beside a phase picks it · "
             "**R** / **S** real / synthetic · **Enter** submit · **P** play/pause · **,** / **.** one frame "
             "back/forward · **Alt+←** previous clip · **Tab** next question, **arrows** or **Space** choose")
# Keys for the phases: letters that no other shortcut uses (L: loop, P: play, R/S: real/synthetic).
PHASE_KEYS = "abcdefghijkmnoqtuvwxyz"
MISSING = "Please choose an answer here."


PHASE_QUESTION = "Which surgical phase is shown?"
TURING_QUESTION = "Real or synthetic?"
SURE_QUESTION = "How sure are you?"


def criterion_label(criterion: dict) -> str:
    """'Construction realism: Are the eye, tissues and instruments plausible?' (never the criterion's id)."""
    name = criterion["name"].replace("_", " ").capitalize()
    return name + (f": {criterion['description']}" if criterion["description"] else "")


def normalize_code(text: str) -> str:
    """An access code as issued ('1a2b3c-4d5e6f-...'), whatever case or dashes the rater typed: raters read
    codes off paper and phones; the code's 96 random bits make the loose spelling safe."""
    raw = "".join(ch for ch in (text or "").lower() if ch.isalnum())
    if len(raw) == 24 and all(ch in "0123456789abcdef" for ch in raw):
        return "-".join(raw[i:i + 6] for i in range(0, 24, 6))
    return (text or "").strip()


def phase_choices(phases) -> list[tuple[str, str]]:
    """'A · Incision' -> 'incision': the key to press, then the phase's name (never its id)."""
    return [(f"{PHASE_KEYS[i].upper()} · {phase_name(p)}" if i < len(PHASE_KEYS) else phase_name(p), p)
            for i, p in enumerate(phases)]


def _choices(scale: dict) -> list[tuple[str, int]]:
    return [(str(v), v) for v in range(scale["min"], scale["max"] + 1)]


def _anchors(scale: dict) -> str:
    """The scale's anchors as one line under the question, so each group of choices fits on one row."""
    anchors = {int(k): v for k, v in (scale.get("anchors") or {}).items()}
    return " · ".join(f"{k} = {v}" for k, v in sorted(anchors.items()))


def _answered(store, code: str, position: int) -> bool:
    return store.latest_answer(code, store.item_at(code, position).clip_id, position=position) is not None


def _step(store, code: str, start: int, stop: int, step: int, also: int | None = None) -> int | None:
    """The first position from ``start`` towards ``stop`` that is answered (or is ``also``, the next open
    reading): moving back and forth skips repeat readings still in their washout."""
    for position in range(start, stop, step):
        if position == also or _answered(store, code, position):
            return position
    return None


def build_rate_tab(store_getter, intro: str = "") -> None:
    """The rater's page. Sign-in collapses once the code is accepted, so that one clip, all its questions and
    Submit fit a 1280x800 screen without scrolling."""
    with gr.Column(elem_id="rate-page"):
        session = gr.State(RaterSession())
        with gr.Column(elem_id="rate-signin-box") as signin_box:
            if intro:
                gr.Markdown(intro)
            with gr.Row():
                code = gr.Textbox(label="Access code", type="password", elem_id="rate-code", scale=3,
                                  placeholder="the code your study lead gave you")
                sign_in = gr.Button("Start / resume", variant="primary", elem_id="rate-signin", scale=1)
        status = gr.Markdown(elem_id="rate-status")
        with gr.Column(visible=False, elem_id="rate-panel") as panel:
            with gr.Row(equal_height=False):
                with gr.Column(scale=5, min_width=400):
                    about = gr.Markdown(elem_id="rate-about")
                    video = gr.Video(label="Clip", loop=True, autoplay=True, interactive=False, elem_id="rate-video",
                                     buttons=[], height=380, show_label=False)
                    instruction = gr.Markdown(elem_id="rate-instruction")
                    with gr.Row(equal_height=True):  # beside the clip, so all questions and Submit fit the screen
                        comment = gr.Textbox(label="Comment (optional; Ctrl+Enter submits)", lines=1, max_lines=3,
                                             elem_id="rate-comment")
                        reason = gr.Textbox(label="Why change your earlier answer? (required)", visible=False,
                                            elem_id="rate-reason")
                    gr.Markdown(SHORTCUTS, elem_id="rate-keys")
                with gr.Column(scale=4, min_width=380, elem_id="rate-questions"):
                    radios = [gr.Radio([], label=f"criterion {i + 1}", visible=False, elem_id=f"crit-{i}",
                                       elem_classes=["criterion"]) for i in range(MAX_CRITERIA)]
                    phase = gr.Radio([], label=PHASE_QUESTION, visible=False, elem_id="rate-phase")
                    with gr.Row(equal_height=False):
                        turing = gr.Radio([("Real", "real"), ("Synthetic", "synthetic")],
                                          label=TURING_QUESTION, visible=False, elem_id="rate-turing",
                                          scale=2, min_width=150)
                        confidence = gr.Radio([], label=SURE_QUESTION, visible=False, elem_id="rate-confidence",
                                              scale=3, min_width=250)
                    with gr.Row():
                        back = gr.Button("← Previous", elem_id="rate-back", min_width=80)
                        submit = gr.Button("Submit", variant="primary", elem_id="rate-submit", min_width=80)
                        forward = gr.Button("Next →", elem_id="rate-next", min_width=80)

    outputs = [session, status, signin_box, panel, about, video, instruction, *radios, phase, turing, confidence,
               comment, reason]

    def render(sess: RaterSession, message: str = ""):
        """All outputs for the reading at ``sess.position`` (or the finished screen). A reading answered
        before shows the rater's latest answer, so going back shows what they chose."""
        store = store_getter()
        progress = store.rater_progress(sess.code)
        head = f"Signed in as **{sess.name}** · {progress.done}/{progress.total} rated"
        if message:
            head = f"{message} · {head}"
        if sess.position is None:
            sess.clip_id, sess.rated = None, False
            # The finished screen says thank you and shows nothing else (no player, no Submit).
            done = (f"**All {progress.total} clips are rated. Thank you!**" if progress.finished
                    else progress.message)  # only repeat readings in their washout are left: when they unlock
            hidden = [gr.update(visible=False, value=None) for _ in radios]
            return (sess, f"{message}. {done}" if message else done, gr.update(visible=False), gr.update(visible=False), "", None, "",
                    *hidden, gr.update(visible=False), gr.update(visible=False), gr.update(visible=False), "",
                    gr.update(visible=False, value=""))
        item = store.item_at(sess.code, sess.position)
        sess.clip_id, sess.shown_at = item.clip_id, time.time()
        earlier = store.latest_answer(sess.code, item.clip_id, position=sess.position)
        sess.rated = earlier is not None
        earlier = earlier or {}
        scores = earlier.get("scores") or {}
        updates = []
        for i, radio in enumerate(radios):
            if i < len(item.criteria):
                c = item.criteria[i]
                updates.append(gr.update(visible=True, choices=_choices(c), label=criterion_label(c),
                                         info=_anchors(c) or None,
                                         value=scores.get(c["name"]), elem_classes=["criterion"]))
            else:
                updates.append(gr.update(visible=False, choices=[], value=None))
        state = (" · You answered this clip before: your answers are filled in. To change them, edit what you "
                 "want, give a reason and submit." if sess.rated else "")
        about_text = (f"**{item.study_title}** · Clip {item.position} of {item.total}"
                      + (f" · {item.study_instructions}" if item.study_instructions else ""))
        conf = item.turing_confidence or {"min": 1, "max": 5}
        return (sess, f"{head}{state}", gr.update(visible=False), gr.update(visible=True), about_text,
                stage_file(item.video_path, name=f"{item.clip_id}.mp4"),
                f"**Instruction:** {item.instruction}" if item.instruction else "", *updates,
                gr.update(visible=item.ask_phase, choices=phase_choices(item.phases), value=earlier.get("phase"),
                          label=PHASE_QUESTION, elem_classes=[]),
                gr.update(visible=item.turing_test, value=earlier.get("turing"), label=TURING_QUESTION,
                          elem_classes=[]),
                gr.update(visible=item.turing_test, choices=_choices(conf), info=_anchors(conf) or None,
                          value=earlier.get("confidence"), label=SURE_QUESTION, elem_classes=[]),
                earlier.get("comment") or "",
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
        access_code = normalize_code(access_code)
        name = store.rater_name(access_code)
        item = store.next_item(access_code)
        sess = RaterSession(code=access_code, name=name, position=item.position if item else None)
        return render(sess, "Welcome back: you continue where you stopped" if item and item.position > 1 else "")

    def changes(earlier: dict, scores: dict, ph, tu, conf, note) -> dict:
        """What differs from the earlier answer (the form shows it filled in, so the rest is unchanged)."""
        out: dict = {}
        changed_scores = {n: v for n, v in scores.items() if earlier["scores"].get(n) != v}
        if changed_scores:
            out["scores"] = changed_scores
        for key, new in (("phase", ph), ("turing", tu), ("confidence", conf)):
            if new is not None and new != earlier.get(key):
                out[key] = new
        if (note or "") != (earlier.get("comment") or ""):
            out["comment"] = note or ""
        return out

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
            earlier = store.latest_answer(sess.code, sess.clip_id, position=sess.position) or {"scores": {}}
            diff = changes(earlier, scores, ph or None, tu or None, conf, note)
            if not diff:
                raise gr.Error("Nothing changed: your earlier answer is kept. Use Next → to move on.")
            if not (why or "").strip():
                raise gr.Error("You already answered this clip: say why you change the answer (Reason box).")
            store.change_rating(sess.code, sess.clip_id, reason=why, position=sess.position, **diff)
            message = f"Changed your answer for clip {sess.position}"
        else:
            missing = [(radios[i], criterion_label(c)) for i, c in enumerate(item.criteria) if c["name"] not in scores]
            missing += [(component, label) for component, label, asked, value in (
                (phase, PHASE_QUESTION, item.ask_phase, ph), (turing, TURING_QUESTION, item.turing_test, tu),
                (confidence, SURE_QUESTION, item.turing_test, conf)) if asked and value in (None, "")]
            if missing:  # shown once, beside each unanswered question (no toast, no red badges); JS focuses it
                keep = [gr.update() for _ in outputs]
                for component, label in missing:
                    keep[outputs.index(component)] = gr.update(label=f"{MISSING} {label}",
                                                               elem_classes=[*component.elem_classes, "missing"])
                return tuple(keep)
            store.submit_rating(sess.code, sess.clip_id, scores, phase=ph or None, turing=tu or None,
                                confidence=conf, comment=note or None, seconds=seconds, position=sess.position)
            message = f"Saved clip {sess.position}"
        nxt = store.next_item(sess.code)
        sess.position = nxt.position if nxt else None
        return render(sess, message)

    @guarded
    def on_back(sess: RaterSession):
        sess = require_rater(sess)
        store = store_getter()
        current = sess.position if sess.position is not None else store.rater_progress(sess.code).total + 1
        previous = _step(store, sess.code, current - 1, 0, -1)
        if previous is None:
            raise gr.Error("This is the first clip.")
        sess.position = previous
        return render(sess)

    @guarded
    def on_forward(sess: RaterSession):
        sess = require_rater(sess)
        store = store_getter()
        progress = store.rater_progress(sess.code)
        if sess.position is None:
            raise gr.Error("There is no further clip to show now.")
        if not sess.rated:
            raise gr.Error("Answer this clip first: clips are rated in order.")
        sess.position = _step(store, sess.code, sess.position + 1, progress.total + 1, 1, also=progress.next_position)
        return render(sess)

    # After every screen change, focus goes where the rater continues: the first unanswered question marked
    # missing, else the first question of the clip (Tab-free keyboard rating).
    for event in (sign_in.click(on_sign_in, code, outputs, api_name="rate_sign_in", show_progress="minimal"),
                  code.submit(on_sign_in, code, outputs, api_visibility="undocumented", show_progress="minimal"),
                  # preprocess=False: Gradio's own choice check would print a traceback holding whatever a
                  # hostile client sent; the store checks every answer against the study and says so in one line.
                  submit.click(on_submit, [session, *radios, phase, turing, confidence, comment, reason], outputs,
                               api_name="rate_submit", show_progress="minimal", preprocess=False),
                  back.click(on_back, session, outputs, api_name="rate_back", show_progress="minimal"),
                  forward.click(on_forward, session, outputs, api_name="rate_next", show_progress="minimal")):
        event.then(None, js=FOCUS_JS)


# Compact spacing on the rater page only, so a clip and all its questions fit 1280x800 after sign-in.
RATE_CSS = """
#rate-page {gap: 6px}
h1 {font-size: 1.4rem !important; margin: 0 !important}
#rate-panel .block {padding: 4px 8px}
#rate-panel fieldset .wrap {gap: 4px}
#rate-panel fieldset label {padding: 3px 9px}
#rate-panel [data-testid="block-info"] {margin-bottom: 2px}
#rate-keys, #rate-keys p {font-size: 0.8rem}
#rate-panel .missing {outline: 2px solid #c0392b; border-radius: 6px}
#rate-phase .wrap {gap: 2px 3px}
#rate-phase label {padding: 1px 6px !important; font-size: 0.78rem}
"""

FOCUS_JS = """
() => {
  // The page re-renders over a few frames: keep placing the focus for a moment, until the rater presses a key.
  const started = Date.now();
  let typed = false;
  const stop = () => { typed = true; };
  document.addEventListener('keydown', stop, {once: true, capture: true});
  const place = () => {
    if (typed || Date.now() - started > 2000) { document.removeEventListener('keydown', stop, true); return; }
    const visible = (el) => el && el.offsetParent !== null;
    const groups = [...document.querySelectorAll('#rate-panel fieldset')].filter(visible);
    const target = groups.find(g => g.closest('.missing')) || groups[0];
    if (target && !target.contains(document.activeElement)) {
      (target.querySelector('input:checked') || target.querySelector('input'))?.focus();
      target.scrollIntoView({block: 'nearest'});
    }
    setTimeout(place, 100);
  };
  place();
}
"""

RATE_JS = """
<script>
(() => {
  const PHASE_KEYS = '%s';
  const q = (sel) => document.querySelector(sel);
  const choose = (input) => { if (input) { input.click(); input.focus(); } };
  // Native radio groups: Gradio names every option differently, which makes each option its own tab stop
  // and disables the arrow keys. One shared name per question gives one tab stop and arrows inside.
  const groupRadios = () => {
    document.querySelectorAll('#rate-panel input[type=radio]').forEach((input) => {
      const group = input.closest('[id]');
      const name = group ? `group-${group.id}` : input.name;
      if (input.name !== name) input.name = name;
    });
  };
  new MutationObserver(groupRadios).observe(document.documentElement,
    {subtree: true, childList: true, attributes: true, attributeFilter: ['name']});
  document.addEventListener('keydown', (ev) => {
    const panel = q('#rate-panel');
    if (!panel || panel.offsetParent === null) return;
    // Ctrl+Enter submits from anywhere on the page, the comment and reason boxes included.
    if (ev.ctrlKey && ev.key === 'Enter') { q('#rate-submit')?.click(); ev.preventDefault(); return; }
    const tag = (ev.target && ev.target.tagName) || '';
    if (['INPUT', 'TEXTAREA', 'SELECT'].includes(tag) && ev.target.type !== 'radio') return;
    const video = q('#rate-video video');
    if (ev.altKey && ev.key === 'ArrowLeft') { q('#rate-back')?.click(); ev.preventDefault(); return; }
    if (ev.ctrlKey || ev.altKey || ev.metaKey) return;
    // Space and Enter choose the focused answer; Enter on a chosen answer (keys move the focus to what they
    // choose) or outside the questions submits. The video has its own key (P).
    if (ev.target.type === 'radio' && (ev.key === ' ' || (ev.key === 'Enter' && !ev.target.checked))) {
      ev.target.click(); ev.preventDefault(); return;
    }
    if (ev.key === 'Enter' && tag !== 'BUTTON') { q('#rate-submit')?.click(); ev.preventDefault(); return; }
    if (ev.key === ' ' && tag !== 'BUTTON') { ev.preventDefault(); return; }
    if (video && (ev.key === 'p' || ev.key === 'P')) { video.paused ? video.play() : video.pause(); return; }
    if (video && (ev.key === ',' || ev.key === '.')) {
      video.pause(); video.currentTime = Math.max(0, video.currentTime + (ev.key === '.' ? 1 : -1) / 8);
      ev.preventDefault(); return;
    }
    if (video && (ev.key === 'l' || ev.key === 'L')) { video.loop = !video.loop; return; }
    if (ev.key === 'r' || ev.key === 'R' || ev.key === 's' || ev.key === 'S') {
      const value = (ev.key.toLowerCase() === 'r') ? 'real' : 'synthetic';
      choose(q(`#rate-turing input[value="${value}"]`)); return;
    }
    if (/^[a-z]$/i.test(ev.key)) {
      const index = PHASE_KEYS.indexOf(ev.key.toLowerCase());
      const options = [...document.querySelectorAll('#rate-phase input[type=radio]')];
      if (index >= 0 && options[index] && q('#rate-phase').offsetParent !== null) { choose(options[index]); return; }
    }
    if (/^[0-9]$/.test(ev.key)) {
      const groups = [...document.querySelectorAll('.criterion')].filter(g => g.offsetParent !== null);
      groups.push(q('#rate-confidence'));
      const open = groups.find(g => g && g.offsetParent !== null && !g.querySelector('input:checked'));
      choose(open?.querySelector(`input[value="${ev.key}"]`));
    }
  });
})();
</script>
""" % PHASE_KEYS
