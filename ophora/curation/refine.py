"""Narrative Information Refining: turn a narrated caption into one concise generation instruction.

Why this shape: Ophora-160K's captions came from narrated teaching videos ("This video describes ...,
especially in cases with ..."), while the generator wants one imperative instruction (action, instrument or
tissue, goal). The paper used Qwen2.5-72B-Instruct; here any OpenAI-compatible server or a local transformers
model can do it, or an offline rule-based refiner (labelled ``rules-v1``, a fallback, not the paper's method).
Every answer is validated; valid answers are cached keyed on prompt version, backend, model and caption, so a
rerun costs nothing; the prompt version is recorded in every row so data sets can say how they were made.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from functools import lru_cache
from pathlib import Path

from .chat_client import ChatEndpoint, MalformedAnswer
from .stages import RetryableError

PROMPT_VERSION = "ophora-refine-v1"

SYSTEM_PROMPT = """You turn the narration of an ophthalmic (cataract) surgery video clip into ONE concise \
instruction for a surgical video generator.
Rules:
- One imperative sentence, 6 to 30 words, ending with a period.
- Keep: the surgical action, the instrument or tissue, and the goal of the action.
- Remove: meta-narration ("this video", "we", "the surgeon explains", "as you can see"), conditional asides \
("especially in cases with ..."), consequences ("which could lead to ..."), names, dates, patient details.
- Do not invent instruments or steps that the narration does not mention.
Answer with the instruction only: no quotes, no label, no explanation."""

FEW_SHOT = [
    ("In this part of the video the surgeon is showing how we use the phaco tip to sculpt a central groove in "
     "the nucleus, which, as you can see, has to be deep enough, otherwise cracking will be difficult later.",
     "Sculpt a deep central groove in the nucleus with the phaco tip to prepare for cracking."),
]

NARRATION_PATTERNS = [
    r"\b(this|the|in the|in this) (video|clip|footage|recording)\b", r"\bas (you can see|shown)\b",
    r"\b(we|you|us|our|let's)\b", r"(^|\s)i (am|will|have|think|can|would)\b", r"\bnarrat", r"\bthe (surgeon|speaker|presenter) (explains|describes|says|shows)\b",
]

ACTION_WORDS = (
    "incision", "incise", "capsule", "capsular", "capsulorhexis", "rhexis", "cortex", "cortical", "nucleus",
    "nuclear", "lens", "iol", "phaco", "phacoemulsification", "aspirat", "irrigat", "viscoelastic", "ovd",
    "hydrodissect", "hydrodelineat", "forceps", "cannula", "cystotome", "keratome", "chopper", "hook", "blade",
    "zonul", "chamber", "cornea", "iris", "pupil", "sculpt", "chop", "crack", "insert", "implant", "remove",
    "polish", "inject", "rotate", "position", "suture", "stain", "trypan", "tip", "groove", "flap",
)

_NOMINAL_TO_VERB = {
    "removal": "remove", "insertion": "insert", "implantation": "implant", "aspiration": "aspirate",
    "irrigation": "irrigate", "injection": "inject", "rotation": "rotate", "positioning": "position",
    "polishing": "polish", "sculpting": "sculpt", "chopping": "chop", "cracking": "crack",
    "hydrodissection": "perform hydrodissection of", "staining": "stain", "suturing": "suture",
    "creation": "create", "placement": "place", "filling": "fill", "emulsification": "emulsify",
}
_ADJ_TO_NOUN = {"cortical": "cortex", "nuclear": "nucleus", "capsular": "capsule", "corneal": "cornea",
                "lens": "lens", "epinuclear": "epinucleus", "iris": "iris"}
_META_PREFIXES = [
    r"^(in )?(this|the) (part of the )?(video|clip)( here)?,?\s*",
    r"^(describes|shows|demonstrates|illustrates|explains|presents|covers)( us)?\s+(how\s+(to\s+)?|that\s+)?",
    r"^(here|now|next|then|first|finally),?\s*",
    r"^(we|the surgeon|the speaker|i)\s+((will|is|are|am|now|then|can|should|must|need to|have to)\s+)*"
    r"(going to\s+)?(showing|shows|show|explaining|explains|explain|describing|describes|describe|demonstrating|demonstrates)?"
    r"\s*(us\s+)?(how\s+(to\s+)?|that\s+)?",
    r"^(as you can see|you can see( that)?|note that|notice that|remember to|it is important to),?\s*",
]
_ASIDE = re.compile(r",?\s*\b(especially|particularly|which (could|can|may|might|would|will)|because|since|"
                    r"otherwise|as this|in cases? (with|of|where)|if (the|there|you))\b.*$", re.IGNORECASE)
_GERUND_FIX = {"using": "use", "making": "make", "taking": "take", "placing": "place", "removing": "remove",
               "creating": "create", "managing": "manage", "rotating": "rotate", "injecting": "inject"}


class InvalidInstruction(ValueError):
    """The backend answered, but the text is not a usable instruction (empty, too long, narration)."""


def clean_answer(text: str) -> str:
    """Strip what models add around an answer: labels, quotes, extra lines."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    answer = lines[0] if lines else ""
    answer = re.sub(r"^(instruction|answer|output|refined instruction)\s*:\s*", "", answer, flags=re.IGNORECASE)
    return answer.strip().strip("\"'`“”‘’").strip()


def validate_instruction(text: str, cfg: dict) -> str:
    """Return the cleaned instruction or raise ``InvalidInstruction`` saying what is wrong with it."""
    answer = clean_answer(text)
    if not answer:
        raise InvalidInstruction("empty instruction")
    words = len(answer.split())
    if words < cfg["min_words"]:
        raise InvalidInstruction(f"instruction too short ({words} words < {cfg['min_words']}): {answer!r}")
    if words > cfg["max_words"] or len(answer) > cfg["max_chars"]:
        raise InvalidInstruction(f"instruction too long ({words} words, {len(answer)} chars; limits "
                                 f"{cfg['max_words']} words, {cfg['max_chars']} chars)")
    for pattern in NARRATION_PATTERNS:
        if re.search(pattern, answer, flags=re.IGNORECASE):
            raise InvalidInstruction(f"instruction still contains narration ({pattern!r}): {answer!r}")
    if answer[-1] not in ".!":
        answer += "."
    return answer[0].upper() + answer[1:]


def build_messages(caption: str) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for narration, instruction in FEW_SHOT:
        messages += [{"role": "user", "content": f"Narration: {narration}"},
                     {"role": "assistant", "content": instruction}]
    messages.append({"role": "user", "content": f"Narration: {caption.strip()}"})
    return messages


def _relevance(sentence: str) -> int:
    lowered = sentence.lower()
    return sum(word in lowered for word in ACTION_WORDS)


def _base_form(verb: str) -> str:
    """Third person to base form: injects -> inject, polishes -> polish, carries -> carry."""
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("ches", "shes", "sses", "xes", "zes")):
        return verb[:-2]
    return verb[:-1]


def _imperative(clause: str) -> str:
    clause = clause.strip(" ,;:.-…").replace("...", " ").replace("…", " ")
    clause = re.sub(r"\s+", " ", clause)
    had_subject = False
    for pattern in _META_PREFIXES:
        stripped = re.sub(pattern, "", clause, flags=re.IGNORECASE).strip()
        had_subject = had_subject or (pattern is _META_PREFIXES[3] and stripped != clause)
        clause = stripped
    clause = _ASIDE.sub("", clause).strip(" ,;:.")
    words = clause.split(" ")
    verb_at = 1 if len(words) > 1 and words[0].lower().endswith("ly") else 0  # "carefully removes"
    if had_subject and re.fullmatch(r"[a-z]+s", words[verb_at]) and not words[verb_at].endswith("ss"):
        words[verb_at] = _base_form(words[verb_at])  # "the surgeon injects ..." -> "inject ..."
        clause = " ".join(words)
    match = re.match(r"^(?:the\s+)?(?:(\w+)\s+)?(" + "|".join(_NOMINAL_TO_VERB) + r")\b(?:\s+of)?\s*(.*)$",
                     clause, flags=re.IGNORECASE)
    if match:
        adjective, nominal, rest = match.group(1), match.group(2).lower(), match.group(3)
        obj = _ADJ_TO_NOUN.get((adjective or "").lower(), adjective or "")
        clause = " ".join(part for part in (_NOMINAL_TO_VERB[nominal], obj, rest) if part)
    first, _, rest = clause.partition(" ")
    if first.lower() in _GERUND_FIX:
        clause = f"{_GERUND_FIX[first.lower()]} {rest}".strip()
    return clause[:1].upper() + clause[1:] if clause else clause


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[str]:
    """Sentences by pysbd (abbreviations such as "Mr.", "St.", "e.g." do not end a sentence)."""
    return list(_segmenter().segment(text.strip())) if text.strip() else []


def rule_refine(caption: str, max_words: int = 40) -> str:
    """Offline rule-based refiner: keep the most surgical sentence, drop meta-narration and asides.

    A fallback for runs without an LLM; it does not paraphrase, so its output is rougher than an LLM's."""
    sentences = [s.strip() for s in split_sentences(caption) if s.strip()]
    candidates = [(_relevance(s), -i, _imperative(s)) for i, s in enumerate(sentences)]
    candidates = [c for c in candidates if c[2]]
    if not candidates:
        return ""
    relevance, _, best = max(candidates)
    if relevance == 0:  # nothing surgical to keep: better no instruction than a wrong one
        return ""
    words = best.split()
    return " ".join(words[:max_words]).rstrip(",;:") + "."


class RefineCache:
    """SQLite cache of valid instructions; safe for several worker processes on one file system."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._enable_wal()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS refine (key TEXT PRIMARY KEY, instruction TEXT NOT NULL)")

    def _enable_wal(self, attempts: int = 50) -> None:
        """WAL is a property of the file, so it is set once here and not on every connection.

        Switching the journal mode needs an exclusive lock and SQLite answers "database is locked"
        at once, without waiting out the busy timeout, when several worker processes start together;
        so retry briefly instead of failing the worker."""
        for attempt in range(attempts):
            db = sqlite3.connect(self.path, timeout=60)
            try:
                if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                    return
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
            finally:
                db.close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT instruction FROM refine WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, instruction: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO refine (key, instruction) VALUES (?, ?)", (key, instruction))


class Refiner:
    """Refines captions with the configured backend, validating and caching every answer."""

    def __init__(self, cfg: dict, cache_path: str | Path | None = None, breaker_path: str | Path | None = None):
        self.cfg = cfg
        self.backend = cfg["backend"]
        if self.backend not in ("rules", "openai", "transformers"):
            raise ValueError(f"refine.backend {self.backend!r} unknown; use rules, openai or transformers")
        self.endpoint = ChatEndpoint.from_config(cfg, breaker_path) if self.backend == "openai" else None
        self._local = None
        self.cache = RefineCache(cache_path) if cache_path is not None and cfg.get("cache", True) else None

    @property
    def label(self) -> str:
        if self.backend == "rules":
            return "rules-v1 (offline rule-based)"
        if self.backend == "openai":
            return f"openai:{self.cfg['model']}@{self.cfg['base_url']}"
        return f"transformers:{self.cfg['model_path']}"

    def cache_key(self, caption: str) -> str:
        identity = [PROMPT_VERSION, self.backend, self.cfg.get("model") if self.backend == "openai" else
                    self.cfg.get("model_path"), self.cfg.get("temperature"), self.cfg.get("max_tokens"), caption]
        return hashlib.sha256(json.dumps(identity).encode("utf-8")).hexdigest()

    def _ask(self, caption: str) -> str:
        if self.backend == "rules":
            return rule_refine(caption, self.cfg["max_words"])
        if self.backend == "openai":
            return self.endpoint.complete(build_messages(caption), int(self.cfg["max_tokens"]),
                                          float(self.cfg["temperature"]))
        return self._local_generate(build_messages(caption))

    def _local_generate(self, messages: list[dict]) -> str:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self._local is None:
            path = self.cfg.get("model_path")
            if not path or not Path(path).is_dir():
                raise ValueError(f"refine.model_path {path!r} is not a local model folder")
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path).eval()
            self._local = (tokenizer, model)
        tokenizer, model = self._local
        import torch

        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=int(self.cfg["max_tokens"]), do_sample=False)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def refine(self, caption: str) -> dict:
        """Return ``{"instruction", "refine_backend", "refine_prompt_version", "refine_cached"}``.

        Raises ``RetryableError`` (endpoint down), ``MalformedAnswer`` (not a completion) or
        ``InvalidInstruction`` (answer fails validation), each after one more attempt."""
        key = self.cache_key(caption)
        base = {"refine_backend": self.label, "refine_prompt_version": PROMPT_VERSION}
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return {"instruction": hit, "refine_cached": True, **base}
        error: Exception | None = None
        for _ in range(2 if self.backend != "rules" else 1):
            try:
                instruction = validate_instruction(self._ask(caption), self.cfg)
            except (MalformedAnswer, InvalidInstruction) as caught:
                error = caught
                continue
            if self.cache is not None:
                self.cache.put(key, instruction)
            return {"instruction": instruction, "refine_cached": False, **base}
        assert error is not None
        raise error


__all__ = ["Refiner", "RefineCache", "InvalidInstruction", "MalformedAnswer", "RetryableError", "PROMPT_VERSION",
           "SYSTEM_PROMPT", "build_messages", "rule_refine", "validate_instruction"]
