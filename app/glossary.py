"""Every word the app shows a clinician, in one place: form labels, result column names with a one-line
explanation, numbers and plurals written for people.

Why one module: a surgeon reads "how closely the clip follows the instruction", not "guidance_scale";
"standard error", not "se". The tabs ask this module for their words, so the same idea is named the same way
on every screen, and a statistician's names (method, degrees of freedom, variance components) stay in the
"Details for statisticians" tables and the exports.
"""

from __future__ import annotations

import math
import re

# ---------------------------------------------------------------------------------------------- Generate form
INSTRUCTION = "Instruction"
NEGATIVE = "What the clip should not show (optional)"
SEED = "Seed (variation number)"
SEED_INFO = "The same seed with the same settings gives the same clip again; the dice picks a new one."
STEPS = "Refinement steps (published: 50)"
GUIDANCE = "Follow the instruction (published: 6)"
FRAMES = "Clip length (frames)"
FRAMES_NATIVE = "the model's usual length"
HEIGHT = "Height in pixels"
WIDTH = "Width in pixels"
FPS = "Frames per second"
NATIVE_PLACEHOLDER = "empty: the model's usual size"
ADVANCED = "Advanced: size, speed and memory"
SPEED = "Speed (exact: as published)"
MEMORY = "GPU memory saving"
MEMORY_CHOICES = [("Automatic", "auto"), ("None (fastest)", "none"), ("Move parts to the CPU", "model_offload"),
                  ("Move every layer to the CPU (slowest)", "sequential_offload")]
EIGHT_BIT = "Smaller weights (8-bit)"
EIGHT_BIT_CHOICES = [("Automatic", "auto"), ("Off", "none"), ("On", "int8")]
PRECISION = "Number precision"
PRECISION_CHOICES = [("Automatic", "auto"), ("Half (fp16)", "fp16"), ("Half (bf16)", "bf16"), ("Full", "fp32")]
SLICING = "Decode the video one clip at a time"
TILING = "Decode the video in tiles"

# ---------------------------------------------------------------------------------------------- Study form
WASHOUT_PLACEHOLDER = "empty: after all first readings"
SECONDS_PLACEHOLDER = "empty: no trimming"

# ---------------------------------------------------------------------------------------------- result tables
# Column -> (plain name, one-line explanation). Columns not named here are for statisticians only.
COLUMNS: dict[str, tuple[str, str]] = {
    "criterion": ("Question", "what raters scored"),
    "question": ("Question", "what raters answered"),
    "model": ("Clips from", "real recordings or a generating model"),
    "modality": ("Clips from", "real recordings or a generating model"),
    "clip_set": ("Clip set", "a group of clips imported together"),
    "phase": ("Surgical phase", "the step of the operation shown"),
    "comparison": ("Comparison", "first minus second"),
    "rater": ("Rater", "who rated"),
    "n": ("Answers", "how many answers the row uses"),
    "raters": ("Raters", "how many raters the row uses"),
    "clips": ("Clips", "how many clips the row uses"),
    "pairs": ("Repeat pairs", "first and repeat reading of the same clip by the same rater"),
    "mean": ("Mean score", "the average over raters and clips"),
    "estimate": ("Difference", "difference of the mean scores (or of the AUCs)"),
    "auc": ("AUC", "0.5: raters could not tell real from synthetic; 1: always could"),
    "se": ("Standard error", "how much the figure would vary in a new study with other raters and clips"),
    "ci_low": ("95% interval from", "lower end of the range that holds the true value 95 times in 100"),
    "ci_high": ("95% interval to", "upper end of that range"),
    "p": ("p-value", "chance of a difference this large if there were none"),
    "p_holm": ("p-value, corrected", "the same, corrected for making several comparisons at once"),
    "accuracy": ("Correct", "share of answers that were right"),
    "called_synthetic": ("Called synthetic", "share of answers 'synthetic'"),
    "mean_confidence": ("Mean sureness", "how sure raters were, on their scale"),
    "phase_accuracy": ("Phase named correctly", "share of answers naming the right phase"),
    "sensitivity": ("Synthetic found", "share of synthetic clips called synthetic"),
    "specificity": ("Real found", "share of real clips called real"),
    "n_real": ("Real clips", "how many real clips"),
    "n_generated": ("Synthetic clips", "how many synthetic clips"),
    "exact_agreement": ("Same answer", "share of repeat readings with the same score"),
    "weighted_kappa_quadratic": ("Agreement (kappa)", "1: same answers; 0: no better than chance"),
    "kripp_alpha_ordinal": ("Agreement (alpha)", "1: raters agree; 0: no better than chance"),
    "fleiss_kappa": ("Agreement (kappa)", "1: raters agree; 0: no better than chance"),
    "icc2": ("Agreement (ICC)", "1: raters agree; 0: no better than chance"),
    "icc_A1": ("Agreement (ICC)", "1: the same rater agrees with themself; 0: no better than chance"),
    "alpha": ("Agreement (alpha)", "1: raters agree; 0: no better than chance"),
    "note": ("Note", ""),
    "var_rater": ("Raters variance", "how much raters differ from each other"),
    "var_clip": ("Clips variance", "how much clips differ from each other"),
    "var_error": ("Readers x cases variance", "what is left: a rater's view of one clip"),
    "df": ("Degrees of freedom", "the statistician's measure of how much data the interval rests on"),
    "analysis": ("Method", "which of raters and clips are treated as a sample of many"),
}
# What a clinician's table leaves out (kept in "Details for statisticians" and in the exports).
FOR_STATISTICIANS = {"df", "var_rater", "var_clip", "var_error", "analysis", "a", "b", "f", "ndf", "ddf", "f_p",
                     "icc_A1_ci95", "icc2_ci95", "kappa_clips", "kappa_raters", "note"}
ANALYSIS_NAMES = {"rrrc": "raters and clips vary (the main result)", "frrc": "these raters only",
                  "rrfc": "these clips only"}


def column_name(column) -> str:
    """The plain name of a results column ('se' -> 'Standard error'); unknown columns in words."""
    known = COLUMNS.get(str(column))
    if known:
        return known[0]
    text = re.sub(r"[_\s]+", " ", str(column)).strip()
    return text[:1].upper() + text[1:]


def explanations(columns) -> str:
    """One line under a table: 'Standard error: how much ... · 95% interval from: ...'."""
    parts = [f"*{COLUMNS[c][0]}*: {COLUMNS[c][1]}" for c in columns if c in COLUMNS and COLUMNS[c][1]]
    return " · ".join(dict.fromkeys(parts))


def for_clinicians(columns) -> list[str]:
    return [c for c in columns if c not in FOR_STATISTICIANS]


# ---------------------------------------------------------------------------------------------- numbers, plurals
def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 rater', '2 raters', '1 real clip', '3 real clips'."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def duration(seconds: float) -> str:
    """'12 s', '2 min', '1 h 5 min': whole units a person reads at a glance."""
    seconds = max(1, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60} min"


def number(value, digits: int = 2) -> str:
    """A float for a sentence: at most ``digits`` decimals, no trailing zeros ('1.125' -> '1.13', '8.0' -> '8')."""
    if isinstance(value, float) and not math.isfinite(value):
        return "not available"
    text = f"{float(value):.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def phase_name(phase_id) -> str:
    """A phase id ('capsule-polishing') as its name in assets/phases.yaml ('Capsule polishing')."""
    from ophora.vocabulary import load_phases

    for phase in load_phases():
        if phase.id == phase_id or phase.name == phase_id:
            return phase.name
    return str(phase_id)


# ---------------------------------------------------------------------------------------------- study messages
# Study-file keys and CLI flags as the Studies tab names them (the same checks serve the YAML file and the CLI).
FORM_FIELDS = {
    "blinding.max_seconds": "Length in seconds", "blinding.width": "Width in pixels",
    "blinding.height": "Height in pixels", "blinding.fps": "Frames per second", "blinding.fit": "Other shapes",
    "blinding": "What raters see", "repeats.after_days": "Days before a repeat reading",
    "repeats.count": "Repeat readings per rater", "repeats": "Repeat readings per rater",
    "instruction_source": "Instruction shown to raters", "criteria": "Criteria", "raters": "Raters",
    "title": "Title", "slug": "Short name",
}


def in_app_words(message: str) -> str:
    """A study check's message as the Studies tab says it: field names instead of study-file keys, 'accept this
    difference below' instead of a CLI flag, the length to set in Study settings in seconds a person reads."""
    text = re.sub(r"^study form: ", "", str(message))
    text = re.sub(r"set blinding\.max_seconds to (?:at most )?(\d+(?:\.\d+)?)",
                  lambda m: f"set Length in seconds to {math.floor(float(m.group(1)) * 10) / 10:g} in Study "
                            f"settings", text)
    text = re.sub(r",? or accept it with --accept-difference \w+", ", or tick \"accept this difference\" below",
                  text)
    text = re.sub(r"use instruction_source: phase_template",
                  "choose \"The phase's wording, for every clip\" under Instruction shown to raters", text)
    for key in sorted(FORM_FIELDS, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.]){re.escape(key)}(?![\w.])", FORM_FIELDS[key], text)
    text = text.replace("Input should be greater than 0", "must be more than 0")
    text = re.sub(r" \(got (\{.*?\}|\[.*?\])\)", "", text)  # a whole structure echoed back says nothing more
    text = re.sub(r"(\d+\.\d{3,})", lambda m: number(float(m.group(1))), text)
    return text[:1].upper() + text[1:]
