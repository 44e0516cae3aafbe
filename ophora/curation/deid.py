"""De-identification of captions: Presidio finds PHI, pysbd splits sentences, sentences with PHI are removed.

Why this shape: Ophora's second stage is privacy-preserving fine-tuning, so a released caption must carry no
names, dates, ages, record or phone numbers, e-mails, addresses or hospital names. Presidio (a maintained
de-identification library) supplies the analyzer and its pattern recognizers (dates, phones, e-mails, URLs,
national ids ...); ``deid_recognizers.yaml`` adds, in Presidio's own YAML format, the PHI surgical narration
carries (titled names, ages, MRNs, written dates, street addresses, hospitals). Person names need NER: when a
spaCy model with NER is installed it is used; otherwise (the default here: spaCy models are not downloaded)
a fail-closed rule treats every capitalised word outside the surgical vocabulary as a possible name. A
sentence with any finding is removed whole (a half-redacted sentence is a poor training caption); a text with
no clean sentence left is reported empty, and the caller drops the clip with the reason.

Limitation (documented in docs/curation.md): without NER, a name written in lower case ("patient john smith")
is only caught when a title or a record label stands next to it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import yaml

RECOGNIZERS_PATH = Path(__file__).with_name("deid_recognizers.yaml")
VOCABULARY_PATH = Path(__file__).with_name("deid_vocabulary.yaml")
NER_MODELS = ("en_core_web_trf", "en_core_web_lg", "en_core_web_md", "en_core_web_sm")

# Presidio entity -> the kind reported in counts and on the dataset card.
KIND_OF_ENTITY = {
    "PERSON": "name", "NRP": "name",
    "DATE_TIME": "date", "AGE": "age",
    "MEDICAL_RECORD": "record_number", "ID_NUMBER": "record_number", "US_SSN": "record_number",
    "UK_NHS": "record_number", "US_DRIVER_LICENSE": "record_number", "US_PASSPORT": "record_number",
    "US_BANK_NUMBER": "record_number", "US_ITIN": "record_number", "MEDICAL_LICENSE": "record_number",
    "PHONE_NUMBER": "phone", "EMAIL_ADDRESS": "email",
    "ADDRESS": "address", "LOCATION": "address", "GPE": "address",
    "HOSPITAL": "hospital", "ORGANIZATION": "hospital", "ORG": "hospital",
    "URL": "url", "IP_ADDRESS": "url",
}
KINDS = ("name", "date", "age", "record_number", "phone", "email", "address", "hospital", "url", "other_id")


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


@lru_cache(maxsize=1)
def allowed_capitalised() -> frozenset[str]:
    """Words that may be capitalised without being a name: the YAML list plus the shipped surgical vocabulary."""
    words = set(yaml.safe_load(VOCABULARY_PATH.read_text(encoding="utf-8"))["words"])
    from ophora.vocabulary import load_instruments, load_phases

    texts = [p.name for p in load_phases()] + [t for p in load_phases() for t in p.templates]
    texts += [i["name"] for i in load_instruments()] + [p.id for p in load_phases()]
    for text in texts:
        words.update(re.findall(r"[a-z][a-z'’/-]*", text.lower()))
    return frozenset(str(w).lower() for w in words)


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


def _capitalised_name_recognizer(vocabulary: frozenset[str], segmenter):
    """A Presidio recognizer for names when no NER model is installed: every capitalised word (sentence
    starts included) and every all-capitals token not in ``vocabulary`` is a possible person name."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    token = re.compile(r"(?<![\w/])[A-Z][\w'’/-]*")

    class CapitalisedNameRecognizer(EntityRecognizer):
        def load(self) -> None:
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            results = []
            for match in token.finditer(text):
                word = re.sub(r"['’]s$", "", match.group(0).lower()).strip("'’-/")
                if len(word) <= 1 and match.group(0) in ("A", "I"):
                    continue
                if word in vocabulary or re.sub(r"[-/].*$", "", word) in vocabulary:
                    continue
                results.append(RecognizerResult("PERSON", match.start(), match.end(), 0.5))
            return results

    return CapitalisedNameRecognizer(supported_entities=["PERSON"], name="CapitalisedNameRecognizer")


def _nlp_engine(spacy_model: str | None):
    """(engine, description): a spaCy model with NER when one is installed, else a blank spaCy pipeline."""
    import spacy
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    candidates = NER_MODELS if spacy_model in (None, "auto") else (spacy_model,)
    for name in candidates:
        if spacy.util.is_package(name):
            engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": name}])
            engine.load()
            return engine, f"spaCy NER model {name} {spacy.util.get_package_version(name)}"
    if spacy_model not in (None, "auto", "blank"):
        raise ValueError(f"privacy.deid.spacy_model {spacy_model!r} is not installed; install it "
                         f"(pip install {spacy_model}) or set it to auto")

    class BlankSpacyNlpEngine(SpacyNlpEngine):
        """Tokeniser only: Presidio's pattern recognizers run, its NER-based PERSON/LOCATION do not."""

        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankSpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    return engine, f"no NER model installed: blank spaCy {spacy.__version__} pipeline + capitalised-word name rule"


class Deidentifier:
    """Find PHI with Presidio and remove the sentences (pysbd) that carry it."""

    def __init__(self, cfg: dict | None = None):
        import presidio_analyzer
        import pysbd
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

        cfg = cfg or {}
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
        self.name_rule = bool(cfg.get("capitalised_names", True)) or not self.ner.startswith("spaCy NER")
        if self.name_rule:
            registry.add_recognizer(_capitalised_name_recognizer(allowed_capitalised(), self.segmenter))
        self.analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])
        self.method = (f"Presidio analyzer {presidio_analyzer.__version__ if hasattr(presidio_analyzer, '__version__') else _version('presidio-analyzer')} "
                       f"(predefined pattern recognizers + ophora/curation/deid_recognizers.yaml; {self.ner}"
                       f"{'; fail-closed capitalised-word name rule' if self.name_rule else ''}), score >= "
                       f"{self.score_threshold:g}; sentences split with pysbd {_version('pysbd')}; every sentence "
                       f"with a finding is removed, a caption with no clean sentence drops the clip")

    def findings(self, text: str) -> list[Finding]:
        results = self.analyzer.analyze(text=text, language="en", score_threshold=self.score_threshold)
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

    def screen(self, text: str) -> Screened:
        """Remove every sentence that overlaps a finding. Each sentence is analysed on its own as well, so a
        capitalised name at a sentence start is judged the same wherever the sentence stands."""
        text = (text or "").strip()
        if not text:
            return Screened("")
        kept, findings, spans = [], [], self.sentences(text)
        whole = self.findings(text)
        for start, end in spans:
            inside = [f for f in whole if f.start < end and f.end > start]
            if not inside:
                inside = [replace(f, start=f.start + start, end=f.end + start) for f in self.findings(text[start:end])]
            if inside:
                findings += inside
            else:
                kept.append(text[start:end])
        return Screened(" ".join(kept), findings, len(spans), len(spans) - len(kept))


@lru_cache(maxsize=4)
def _shared(score_threshold: float, spacy_model: str | None, capitalised_names: bool) -> "Deidentifier":
    return Deidentifier({"score_threshold": score_threshold, "spacy_model": spacy_model,
                         "capitalised_names": capitalised_names})


def shared_deidentifier(cfg: dict) -> "Deidentifier":
    """One analyzer per process and settings: building one imports spaCy and Presidio (seconds), and it is
    read-only afterwards, so curators, workers' stages and the release share it."""
    return _shared(float(cfg.get("score_threshold", 0.3)), cfg.get("spacy_model", "auto"),
                   bool(cfg.get("capitalised_names", True)))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


__all__ = ["Deidentifier", "shared_deidentifier", "Finding", "KINDS", "KIND_OF_ENTITY", "Screened"]
