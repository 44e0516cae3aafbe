"""De-identification of every released text: find PHI, remove whole sentences, fail closed.

Why this shape: Ophora's second stage is privacy-preserving fine-tuning, so released text (instructions,
captions, phase labels, reasons, the card) must carry no names, dates, ages, record or phone numbers,
e-mails, addresses or hospital names. Names are the hard part: without a reliable NER model, a recogniser
that looks for names misses the ones it did not expect ("mrs okafor", "señora núñez", "Mark Chang", "flown
in from Bonn"). So the screen works the other way round, recall first: a word passes only when it is known
to be harmless, i.e.

- common English: the lower-case word, or its stem, is an entry of a dictionary (english-words' Webster's
  list) and frequent enough in wordfreq; a word that is also a first or last name (the US census lists of
  the ``names`` package) or only a proper noun in the dictionary must be very frequent ("mark", "white"),
- or a surgical term of ``deid_vocabulary.yaml`` (plus the phase and instrument lists in assets/);
- an eponym there (Sinskey, Bowman, Simcoe, ...) passes only where the context makes it a thing ("Sinskey
  hook", "Bowman's layer", "the Simcoe", "zonules of Zinn"), never after a title ("Dr Bowman"), alone ("home
  to Simcoe") or as the owner of anything but its own head noun ("Simcoe's cataract");
- a capitalised word inside a sentence passes only when it is a surgical term; a token mixing letters and
  digits only when it is a measurement or a suture size; the word after a title is always a name.

Presidio (a maintained de-identification library) runs all of this: its predefined pattern recognizers
(dates, phones, e-mails, ids), ``deid_recognizers.yaml`` (titled names, ages and dates in words or short
forms, record numbers, obfuscated e-mails, addresses, hospitals) and the word rule above as a recognizer of
its own; a spaCy NER model, where one is installed, adds recall; an optional local LLM gives a second opinion
on sentences all of these passed. A sentence with any finding is removed whole; a text with no clean
sentence left is reported empty and the caller drops the clip with the reason.

Measured recall and its limits: tests/curation/test_deid.py and docs/curation.md ("Text PHI screen").
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import yaml

RECOGNIZERS_PATH = Path(__file__).with_name("deid_recognizers.yaml")
VOCABULARY_PATH = Path(__file__).with_name("deid_vocabulary.yaml")
MEASURED_PATH = Path(__file__).with_name("deid_measured.json")  # written by bench/bench_deid.py --write
NER_MODELS = ("en_core_web_trf", "en_core_web_lg", "en_core_web_md", "en_core_web_sm")

# wordfreq Zipf frequencies (log10 of uses per billion words; "the" 7.7, "capsule" 3.6, "okafor" 2.6).
DICTIONARY_ZIPF = 1.5  # a dictionary word rarer than this is treated as unknown (archaic entries)
NAME_ZIPF = 4.2        # a word that is also a name passes only from here ("mark" 5.1, "bowman" 3.5)
FREQUENT_ZIPF = 4.8    # a word outside the dictionary passes only from here (contractions, "okay")
CENSUS_SURNAMES = 5000  # the census surnames most frequent in the US count as names (all first names do)

# Presidio entity -> the kind reported in counts and on the dataset card.
KIND_OF_ENTITY = {
    "PERSON": "name", "NRP": "name",
    "DATE_TIME": "date", "AGE": "age",
    "MEDICAL_RECORD": "record_number", "ID_NUMBER": "record_number", "US_SSN": "record_number",
    "UK_NHS": "record_number", "US_DRIVER_LICENSE": "record_number", "US_PASSPORT": "record_number",
    "US_BANK_NUMBER": "record_number", "US_ITIN": "record_number", "MEDICAL_LICENSE": "record_number",
    "CODE": "record_number",
    "PHONE_NUMBER": "phone", "EMAIL_ADDRESS": "email",
    "ADDRESS": "address", "LOCATION": "address", "GPE": "address",
    "HOSPITAL": "hospital", "ORGANIZATION": "hospital", "ORG": "hospital",
    "URL": "url", "IP_ADDRESS": "url",
    "UNKNOWN_WORD": "unknown_word", "LLM": "llm_opinion",
}
KINDS = ("name", "date", "age", "record_number", "phone", "email", "address", "hospital", "url", "unknown_word",
         "llm_opinion", "other_id")

# A token: letters, digits and the marks that join them ("I/A", "Weck-Cel", "o'clock", "2.2mm", "Dr.").
TOKEN = re.compile(r"[^\W_](?:[\w'’.\-/+&]*[^\W_])?\.?")
MEASUREMENT = re.compile(
    r"\d+(?:[.,]\d+)?(?:-?(?:mm|cm|µm|um|nm|ml|µl|ul|mg|mcg|µg|g|kg|cc|d|ds|dpt|x|s|sec|secs|min|mins|h|hr|hrs|"
    r"mmhg|ga|gauge|hz|khz|mhz|w|mw|v|k|p|fps|deg|degrees?|microns?|°)|(?:st|nd|rd|th))|x\d+(?:[.,]\d+)?|\d+x\d+|\d+-0|[0-9]+d|[0-9]+g")
STOPWORDS = frozenset("the a an and or of is was has had to in on at for with who said says will but "
                      "this that then also".split())
ARTICLES = frozenset("the a an this that each its our their".split())
SENTENCE_OPENERS = ":;(\"“‘'[-–—•*"


@dataclass(frozen=True)
class Finding:
    kind: str
    entity: str
    start: int
    end: int
    score: float
    recognizer: str


@dataclass
class Screened:
    """The text with every PHI-bearing sentence removed ("" when none is clean) and what was found."""
    text: str
    findings: list[Finding] = field(default_factory=list)
    sentences: int = 0
    removed_sentences: int = 0

    @property
    def kinds(self) -> dict[str, int]:
        """PHI items per kind. Overlapping findings (two recognizers on one name, "MRN 123456" seen as a record
        number and as a long number) count once, as the kind of the most confident, then longest, finding."""
        counts: Counter = Counter()
        taken: list[tuple[int, int]] = []
        for finding in sorted(self.findings, key=lambda f: (-f.score, f.start - f.end, f.start)):
            if all(finding.end <= start or finding.start >= end for start, end in taken):
                counts[finding.kind] += 1
                taken.append((finding.start, finding.end))
        return dict(counts)


def normalise(text: str) -> str:
    """One line: a word broken by a hyphen at a line end is joined, every run of white space is one space
    (a name split by a line break is then judged as the two words it is)."""
    text = re.sub(r"(?<=[^\W\d_])-[ \t]*\r?\n\s*(?=[^\W\d_])", "", text or "")
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Lexicon:
    """What the word rule knows: surgical vocabulary (``deid_vocabulary.yaml`` + assets/), English words and
    their frequency, and which words are also names."""
    terms: frozenset[str]       # surgical terms and the eponyms' head nouns, not the eponyms themselves
    eponyms: frozenset[str]
    heads: frozenset[str]
    titles: frozenset[str]
    title_words: frozenset[str]
    dictionary: frozenset[str]  # lower-case entries of the english-words "web2" list (Webster's 2nd)
    proper: frozenset[str]      # entries of that list that exist only capitalised (proper nouns), lower-cased
    names: frozenset[str]       # US census first and last names (``names`` package), lower-cased
    phrases: frozenset[tuple[str, ...]] = frozenset()  # terms of several words ("vision blue")

    @staticmethod
    def stems(word: str) -> list[str]:
        """The word and its plausible stems (steps -> step, emulsified -> emulsify, rotating -> rotate)."""
        out = [word]
        for british, american in (("isation", "ization"), ("ise", "ize"), ("ising", "izing"), ("ised", "ized"),
                                  ("our", "or"), ("tre", "ter"), ("aes", "es"), ("ae", "e"), ("oe", "e")):
            if british in word:
                out.append(word.replace(british, american))  # the dictionary spells American English
        for suffix, repl in (("'s", ""), ("s'", "s"), ("ies", "y"), ("ied", "y"), ("es", ""), ("s", ""),
                             ("ed", ""), ("ed", "e"), ("d", ""), ("ing", ""), ("ing", "e"), ("er", ""),
                             ("ers", ""), ("ly", ""), ("ally", ""), ("est", "")):
            if word.endswith(suffix) and len(word) - len(suffix) >= 2:
                out.append(word[: len(word) - len(suffix)] + repl)
        for stem in list(out):
            if len(stem) >= 4 and stem[-1] == stem[-2]:  # "stopped" -> "stopp" -> "stop"
                out.append(stem[:-1])
        return out

    def is_term(self, word: str) -> bool:
        """A surgical term (an eponym's head nouns included), or a compound of them ("cc/min")."""
        return word in self.terms or (bool(re.search(r"[-/]", word))
                                      and all(p in self.terms or not p for p in re.split(r"[-/]", word)))

    def is_name(self, word: str) -> bool:
        return word in self.names or word in self.proper

    def is_common(self, word: str) -> bool:
        """Common English: in the dictionary (or a stem is) and frequent enough; a name must be frequent."""
        from wordfreq import zipf_frequency

        if word in self.terms:
            return True
        zipf = zipf_frequency(word, "en")
        in_dictionary = any(stem in self.dictionary for stem in self.stems(word))
        if self.is_name(word):  # "mark", "white" pass; "patel", "chang", "james" do not; "held" is no entry
            if word in self.proper:
                return False
            return zipf >= (NAME_ZIPF if in_dictionary else FREQUENT_ZIPF)
        return (in_dictionary and zipf >= DICTIONARY_ZIPF) or (zipf >= FREQUENT_ZIPF and word.isascii())


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    """Read the vocabulary file, the shipped phase and instrument lists, the dictionary and the name lists."""
    import names
    from english_words import get_english_words_set

    from ophora.vocabulary import load_instruments, load_phases

    data = yaml.safe_load(VOCABULARY_PATH.read_text(encoding="utf-8"))
    terms = {str(t).lower() for t in data["terms"] if " " not in str(t)}
    phrases = frozenset(tuple(str(t).lower().split()) for t in data["terms"] if " " in str(t))
    phases = load_phases()
    texts = [p.name for p in phases] + [t for p in phases for t in p.templates] + [p.id for p in phases]
    texts += [i["name"] for i in load_instruments()] + [i["id"] for i in load_instruments()]
    for text in texts:
        terms.update(re.findall(r"[a-z][a-z'’/-]*[a-z]", text.lower()))
    web2 = get_english_words_set(["web2"], lower=False, alpha=True)
    dictionary = frozenset(w for w in web2 if w.islower())
    proper = frozenset(w.lower() for w in web2 if not w.islower()) - dictionary
    census = set()
    for path in sorted(Path(names.__file__).parent.glob("dist.*")):  # each list is sorted by frequency
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        census.update(line.split(" ", 1)[0].lower() for line in lines[:CENSUS_SURNAMES])
    eponyms = frozenset(str(w).lower() for w in data["eponyms"])
    heads = frozenset(str(w).lower() for w in data["heads"])
    return Lexicon(frozenset(terms | heads) - eponyms, eponyms, heads,
                   frozenset(str(w).lower() for w in data["titles"]),
                   frozenset(str(w).lower() for w in data["title_words"]), dictionary, proper,
                   frozenset(census), phrases)


@dataclass
class _Token:
    text: str        # as written, without a trailing full stop
    word: str        # lower case, ’ -> ', possessive 's removed
    start: int
    end: int
    initial: bool    # first word of a sentence (or after a colon, bracket, quote or dash)
    possessive: bool


def _tokens(text: str, sentence_starts: set[int]) -> list[_Token]:
    tokens, previous_end = [], None
    for match in TOKEN.finditer(text):
        raw = match.group(0).rstrip(".")
        between = text[previous_end:match.start()] if previous_end is not None else ""
        initial = (previous_end is None or match.start() in sentence_starts or any(c in SENTENCE_OPENERS for c in between)
                   or any(previous_end <= s <= match.start() for s in sentence_starts))
        lowered = raw.lower().replace("’", "'")
        possessive = bool(re.search(r"[^s]'s$|s'$", lowered))
        word = re.sub(r"'s$|'$", "", lowered)
        tokens.append(_Token(raw, word, match.start(), match.start() + len(raw), initial, possessive))
        previous_end = match.end()
    return tokens


def word_rule_findings(text: str, sentence_starts: set[int], lexicon: Lexicon) -> list[tuple[str, int, int, str]]:
    """(entity, start, end, why) for every token the word rule does not know to be harmless."""
    tokens = _tokens(text, sentence_starts)
    out: list[tuple[str, int, int, str]] = []
    flagged: set[int] = set()

    def flag(i: int, entity: str, why: str) -> None:
        if i not in flagged:
            flagged.add(i)
            out.append((entity, tokens[i].start, tokens[i].end, why))

    in_phrase: set[int] = set()
    for phrase in lexicon.phrases:
        for i in range(len(tokens) - len(phrase) + 1):
            if tuple(t.word for t in tokens[i:i + len(phrase)]) == phrase:
                in_phrase.update(range(i, i + len(phrase)))

    for i, token in enumerate(tokens):
        if i in in_phrase:
            continue
        word, prev = token.word, tokens[i - 1] if i else None
        nxt = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].initial else None
        has_letter, has_digit = bool(re.search(r"[^\W\d_]", word)), bool(re.search(r"\d", word))
        bare = word.rstrip(".")
        if bare in lexicon.titles and nxt is None and i + 1 < len(tokens):
            nxt = tokens[i + 1]  # "Dr - White", "Mrs. (Green)": punctuation after a title does not end the name
        if bare in lexicon.titles or (bare in lexicon.title_words and nxt is not None and
                                      (nxt.text[:1].isupper() or not lexicon.is_common(nxt.word))):
            if nxt is not None and (nxt.word not in STOPWORDS or bare in lexicon.title_words):
                flag(i + 1, "PERSON", "name after a title")
            continue
        if not has_letter:
            continue
        if has_digit:
            if not (lexicon.is_term(word) or MEASUREMENT.fullmatch(word)):
                flag(i, "CODE", "letters mixed with digits")
            continue
        capitalised = token.text[:1].isupper()
        parts = [p for p in re.split(r"[-/]", word) if p]
        if word in lexicon.eponyms or (len(parts) > 1 and parts[0] in lexicon.eponyms):
            if capitalised or not lexicon.is_common(word):
                after = nxt.word if nxt is not None else ""
                thing = (after in lexicon.heads or (not token.possessive and (lexicon.is_term(after) or
                                                                                after in lexicon.eponyms))
                         or any(p in lexicon.heads for p in parts[1:])
                         or (prev is not None and not token.initial and prev.word in ARTICLES)
                         or (prev is not None and prev.word == "of" and i >= 2 and
                             (tokens[i - 2].word in lexicon.heads or lexicon.is_term(tokens[i - 2].word))))
                if not thing:
                    flag(i, "PERSON", "eponym used as a name")
            continue
        if lexicon.is_term(word) or word == "i":
            continue
        if capitalised and not token.initial:
            flag(i, "PERSON", "capitalised word inside a sentence")
            continue
        if token.possessive and capitalised and lexicon.is_name(word):
            flag(i, "PERSON", "name in a possessive")
            continue
        if not all(lexicon.is_common(p) for p in parts):
            flag(i, "PERSON" if capitalised or lexicon.is_name(word) else "UNKNOWN_WORD",
                 "neither common English nor a surgical term")
    return out


def _offline_email_recognizer():
    """Presidio's e-mail recognizer validates the domain with tldextract, which fetches the public suffix
    list over the network; this subclass uses the snapshot tldextract ships instead (no network, no delay)."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str):
            return extractor(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _word_rule_recognizer(lexicon: Lexicon, segmenter):
    """The word rule as a Presidio recognizer, so its findings are scored and reported like any other."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class WordRuleRecognizer(EntityRecognizer):
        def load(self) -> None:
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            starts = {span.start + len(span.sent) - len(span.sent.lstrip()) for span in segmenter.segment(text)}
            return [RecognizerResult(entity, start, end, 0.5,
                                     recognition_metadata={"recognizer_name": "WordRuleRecognizer", "why": why})
                    for entity, start, end, why in word_rule_findings(text, starts, lexicon)]

    return WordRuleRecognizer(supported_entities=["PERSON", "UNKNOWN_WORD", "CODE"], name="WordRuleRecognizer")


def _needs_torch(spacy_model: str | None) -> bool:
    """Whether the spaCy model this screen would load runs on torch (a transformer pipeline, ``*_trf``)."""
    import importlib.util

    if spacy_model in (None, "auto"):
        return importlib.util.find_spec("en_core_web_trf") is not None  # auto takes it first when installed
    return str(spacy_model).endswith("_trf")


def _import_presidio(keep_torch: bool = False) -> None:
    """Import Presidio without Hugging Face transformers or torch when nothing has imported them yet.

    Why: ``presidio_analyzer`` imports ``transformers.pipeline`` (and with it torch) at import time for its
    optional transformers NER engine, and spaCy's thinc imports torch for its optional torch layers; this
    screen uses neither (spaCy's CPU pipeline and pattern recognizers). Those imports were about 4.5 s of every
    curation process's start-up (each worker's included); hidden, both fall back to their documented
    "not installed" paths. A process that already holds them keeps them; they import normally afterwards.
    ``keep_torch``: a transformer spaCy model will be loaded, and thinc must see torch."""
    import sys

    if "presidio_analyzer" in sys.modules or "transformers" in sys.modules:
        import presidio_analyzer  # noqa: F401
        return
    hidden = [name for name in ("transformers",) + (() if keep_torch else ("torch",)) if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import torch" raises ImportError
    try:
        import presidio_analyzer  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]


def _nlp_engine(spacy_model: str | None):
    """(engine, description): a spaCy model with NER when one is installed, else a blank spaCy pipeline."""
    import spacy
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    candidates = NER_MODELS if spacy_model in (None, "auto") else (spacy_model,)
    for name in candidates:
        if spacy.util.is_package(name):
            engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": name}])
            engine.load()
            return engine, f"spaCy NER model {name} {spacy.util.get_package_version(name)} (adds recall)"
    if spacy_model not in (None, "auto", "blank"):
        raise ValueError(f"privacy.deid.spacy_model {spacy_model!r} is not installed; install it "
                         f"(pip install {spacy_model}) or set it to auto")

    class BlankSpacyNlpEngine(SpacyNlpEngine):
        """Tokeniser only: Presidio's pattern recognizers run, its NER-based PERSON/LOCATION do not."""

        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankSpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    return engine, "no spaCy NER model installed"


LLM_PROMPT = ("You check surgical video narration for personal information before it is published. Answer "
              "PHI if the text contains anything that could identify a patient or a person: a name (of anyone), "
              "a date, an age, a place, a hospital, a phone or record number, an e-mail. Eponymous instruments "
              "and anatomy (Sinskey hook, Descemet's membrane) are not personal information. Answer with one "
              "word: PHI or CLEAN.")


class Deidentifier:
    """Find PHI with Presidio (pattern recognizers + the word rule) and remove the sentences that carry it."""

    def __init__(self, cfg: dict | None = None, breaker_path: str | Path | None = None):
        import pysbd

        cfg = cfg or {}
        _import_presidio(keep_torch=_needs_torch(cfg.get("spacy_model", "auto")))
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

        self.score_threshold = float(cfg.get("score_threshold", 0.3))
        engine, self.ner = _nlp_engine(cfg.get("spacy_model", "auto"))
        registry = RecognizerRegistry(supported_languages=["en"])
        presidio_log = logging.getLogger("presidio-analyzer")
        level = presidio_log.level
        presidio_log.setLevel(logging.ERROR)  # one warning per non-English recognizer otherwise
        try:
            registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
        finally:
            presidio_log.setLevel(level)
        registry.remove_recognizer("EmailRecognizer")
        registry.add_recognizer(_offline_email_recognizer())
        registry.add_recognizers_from_yaml(RECOGNIZERS_PATH)
        self.segmenter = pysbd.Segmenter(language="en", clean=False, char_span=True)
        self.lexicon = load_lexicon()
        registry.add_recognizer(_word_rule_recognizer(self.lexicon, self.segmenter))
        self.analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
        llm = cfg.get("llm") or {}
        self.llm = None
        if llm.get("enabled"):
            from .chat_client import ChatEndpoint

            self.llm = ChatEndpoint.from_config(llm, breaker_path)
            self.llm_model = llm["model"]
        self.method = (
            f"Presidio analyzer {version('presidio-analyzer')} with its pattern recognizers and "
            f"ophora/curation/deid_recognizers.yaml ({self.ner}), plus a word rule: every word that is "
            f"neither common English (english-words {version('english-words')} dictionary, wordfreq "
            f"{version('wordfreq')} frequency; names from the US census lists must be very frequent) nor in "
            f"the surgical vocabulary ({len(self.lexicon.terms) + len(self.lexicon.eponyms)} terms, eponyms "
            f"only where the context makes them a thing), every capitalised word inside a sentence that is not "
            f"a surgical term, every letter-digit code that is not a measurement, and the word after a title "
            f"counts as PHI"
            + (f"; a local LLM ({self.llm_model}) is asked about every sentence the rules passed" if self.llm else "")
            + f"; sentences split with pysbd {version('pysbd')}; every sentence with a finding is removed whole")

    def findings(self, text: str) -> list[Finding]:
        """Every finding in ``text`` (normalised first: one line, single spaces)."""
        results = self.analyzer.analyze(text=normalise(text), language="en", score_threshold=self.score_threshold)
        return [Finding(KIND_OF_ENTITY.get(r.entity_type, "other_id"), r.entity_type, r.start, r.end, float(r.score),
                        (r.recognition_metadata or {}).get("recognizer_name", "")) for r in results]

    def sentences(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the sentences (pysbd), without surrounding whitespace."""
        spans = []
        for span in self.segmenter.segment(text):
            start, end = span.start, span.end
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end > start:
                spans.append((start, end))
        return spans

    def _llm_says_phi(self, sentence: str) -> bool:
        answer = self.llm.complete([{"role": "system", "content": LLM_PROMPT},
                                    {"role": "user", "content": sentence}], max_tokens=4, temperature=0.0)
        return not answer.strip().upper().startswith("CLEAN")  # anything but a clear CLEAN counts as PHI

    def screen(self, text: str) -> Screened:
        """Remove every sentence that overlaps a finding (and, with the LLM on, every one it calls PHI)."""
        text = normalise(text)
        if not text:
            return Screened("")
        kept, findings, spans = [], [], self.sentences(text)
        whole = self.findings(text)
        for start, end in spans:
            inside = [f for f in whole if f.start < end and f.end > start]
            if not inside and self.llm is not None and self._llm_says_phi(text[start:end]):
                inside = [Finding("llm_opinion", "LLM", start, end, 1.0, "LLM second opinion")]
            if inside:
                findings += inside
            else:
                kept.append(text[start:end])
        return Screened(" ".join(kept), findings, len(spans), len(spans) - len(kept))

    def release_text(self, text: str | None) -> str | None:
        """The one check every released text field goes through: the text itself when the screen finds
        nothing in it, else None (the caller withholds the field or the clip, never a part of it)."""
        if text is None:
            return None
        from .chat_client import EndpointDown, MalformedAnswer
        from .stages import RetryableError

        try:
            screened = self.screen(str(text))
        except (RetryableError, MalformedAnswer, EndpointDown):  # the optional LLM did not answer: withhold
            return None
        return screened.text if not screened.findings else None


def _exact_interval(successes: int, trials: int) -> list[float] | None:
    """Clopper-Pearson 95% interval of a proportion (a small corpus leaves a wide one; the card says so)."""
    from scipy.stats import binomtest

    if not trials:
        return None
    interval = binomtest(successes, trials).proportion_ci(0.95, method="exact")
    return [round(float(interval.low), 4), round(float(interval.high), 4)]


def measure(deid: Deidentifier, phi_rows: list[dict], clean_rows: list[dict]) -> dict:
    """Recall over annotated PHI items and the share of clean narrations kept unchanged.

    ``phi_rows``: ``{"text", "phi": [{"text", "kind", "sentence"}]}``; an item is caught when the sentence
    that holds it is not in the screened text. ``clean_rows``: ``{"text"}``; kept when nothing is removed.
    Returns counts (caught, items, per kind, clean kept) and the items missed, for the card and the tests."""
    caught, items, missed = 0, 0, []
    per_kind: dict[str, list[int]] = {}
    for row in phi_rows:
        released = deid.screen(row["text"]).text
        for item in row["phi"]:
            hit = normalise(item["sentence"]) not in released
            caught, items = caught + hit, items + 1
            per_kind.setdefault(item["kind"], [0, 0])
            per_kind[item["kind"]][0] += hit
            per_kind[item["kind"]][1] += 1
            if not hit:
                missed.append(item["text"])
    kept = sum(deid.screen(row["text"]).text == normalise(row["text"]) for row in clean_rows)
    return {"phi_narrations": len(phi_rows), "phi_items": items, "phi_caught": caught,
            "recall": round(caught / items, 4) if items else None, "recall_ci95": _exact_interval(caught, items),
            "per_kind": {kind: {"caught": c, "items": n} for kind, (c, n) in sorted(per_kind.items())},
            "clean_narrations": len(clean_rows), "clean_kept": kept,
            "clean_kept_share": round(kept / len(clean_rows), 4) if clean_rows else None, "missed": missed}


def measured_figures(deid: Deidentifier, corpus: Path) -> dict:
    """The figures the card prints, per part of the team's corpus (``deid_{phi,clean}_{dev,heldout}.jsonl`` in
    ``corpus``) and in total. Missed items are left out: they are (synthetic) PHI."""
    def load(name: str) -> list[dict]:
        return [json.loads(line) for line in (corpus / name).read_text(encoding="utf-8").splitlines() if line.strip()]

    figures = {"corpus": "synthetic narrations written by the Ophora team: a development part written before "
                         "the screen was tuned, a held-out part written after it was finished"}
    for part in ("dev", "heldout"):
        result = measure(deid, load(f"deid_phi_{part}.jsonl"), load(f"deid_clean_{part}.jsonl"))
        figures[part] = {k: v for k, v in result.items() if k != "missed"}
    dev, held = figures["dev"], figures["heldout"]
    total = {key: dev[key] + held[key] for key in ("phi_narrations", "phi_items", "phi_caught", "clean_narrations",
                                                   "clean_kept")}
    kinds = sorted(set(dev["per_kind"]) | set(held["per_kind"]))
    empty = {"caught": 0, "items": 0}
    figures["total"] = {
        **total, "recall": round(total["phi_caught"] / total["phi_items"], 4),
        "recall_ci95": _exact_interval(total["phi_caught"], total["phi_items"]),
        "per_kind": {kind: {k: dev["per_kind"].get(kind, empty)[k] + held["per_kind"].get(kind, empty)[k]
                            for k in empty} for kind in kinds},
        "clean_kept_share": round(total["clean_kept"] / total["clean_narrations"], 4)}
    return figures


@lru_cache(maxsize=4)
def _shared(score_threshold: float, spacy_model: str | None, llm: tuple) -> "Deidentifier":
    return Deidentifier({"score_threshold": score_threshold, "spacy_model": spacy_model, "llm": dict(llm)})


def shared_deidentifier(cfg: dict) -> "Deidentifier":
    """One analyzer per process and settings: building one imports spaCy and Presidio (seconds), and it is
    read-only afterwards, so curators, workers' stages and the release share it."""
    return _shared(float(cfg.get("score_threshold", 0.3)), cfg.get("spacy_model", "auto"),
                   tuple(sorted((cfg.get("llm") or {}).items())))


__all__ = ["Deidentifier", "shared_deidentifier", "Finding", "KINDS", "KIND_OF_ENTITY", "Screened", "Lexicon",
           "load_lexicon", "measure", "measured_figures", "normalise", "word_rule_findings"]
