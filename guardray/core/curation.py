"""Curation rules as pure functions: normalisation, rule filters, exact and near-duplicate detection (MinHash via
datasketch, or embedding cosine), judge decisions, k-center diversity selection and drop accounting.

No Ray here: `guardray.curator.CuratorPool` runs these on shards inside curator actors. Every function that removes
examples returns a reason for each one, so the pool can prove inputs = kept + dropped, exactly.

Drop reasons are "<round>:<reason>":
    rules:empty  rules:too_short  rules:too_long  rules:refusal  rules:prompt_echo  rules:meta_text
    rules:wrong_language
    dedup:exact  dedup:near  dedup:reference  dedup:eval_contamination
    judge:disagree  judge:unconfirmed   select:over_cap
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from guardray.core.augment import INSTRUCTION_TEXTS, is_refusal
from guardray.core.records import Example

ROUNDS = ("rules", "dedup", "meaning", "label", "judge", "select")  # = config.CURATION_ROUNDS


# ---------------------------------------------------------------- normalisation and rules

def normalize_text(text: str) -> str:
    """NFKC, whitespace collapsed, wrapping quotes and control characters removed."""
    t = unicodedata.normalize("NFKC", text or "")
    t = "".join(ch for ch in t if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    t = re.sub(r"\s+", " ", t).strip()
    while len(t) >= 2 and t[0] in "\"'`“”" and t[-1] in "\"'`“”":
        t = t[1:-1].strip()
    return t


def dedup_key(text: str) -> str:
    """Exact-duplicate key: lower case, letters and digits only."""
    t = re.sub(r"[\W_]+", " ", normalize_text(text).lower()).strip()
    return hashlib.sha1(t.encode()).hexdigest()


_WORD = re.compile(r"[^\W\d_]+", re.U)
_STOP = {
    "en": {"the", "and", "to", "of", "a", "i", "how", "what", "is", "my", "you", "can", "for", "in", "it", "do",
           "me", "that", "with", "this", "on", "be", "are", "someone", "get", "without", "who", "your", "should"},
    "es": {"el", "la", "de", "que", "y", "en", "los", "cómo", "como", "para", "por", "una", "un", "mi", "puedo",
           "las", "con", "sin", "es", "se", "qué", "del", "lo"},
    "fr": {"le", "la", "les", "de", "et", "est", "comment", "je", "pour", "un", "une", "des", "mon", "sans",
           "que", "qui", "dans", "pas", "du", "au", "ma", "vous", "peux"},
    "de": {"der", "die", "das", "und", "ich", "wie", "ist", "nicht", "ein", "eine", "zu", "mit", "den", "mein",
           "kann", "für", "ohne", "auf", "es", "sie", "man", "von", "dem"},
    "it": {"il", "di", "che", "e", "la", "come", "per", "un", "una", "non", "mio", "posso", "senza", "gli",
           "della", "con", "del", "sono", "mi"},
    "pt": {"o", "de", "que", "e", "do", "da", "como", "para", "um", "uma", "não", "meu", "posso", "sem", "em",
           "com", "os", "eu", "se", "minha"},
}


def guess_language(text: str) -> str:
    """A cheap language guess for the rule filter: 'en', 'es', 'fr', 'de', 'it', 'pt', 'other' (non-Latin script)
    or 'unknown' (too few words to tell). Stop-word voting; good enough to drop a wrong-language generation."""
    letters = [ch for ch in text if ch.isalpha()]
    if letters and sum(1 for ch in letters if "LATIN" not in unicodedata.name(ch, "")) > 0.5 * len(letters):
        return "other"
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < 3:
        return "unknown"
    votes = {lang: sum(1 for w in words if w in sw) for lang, sw in _STOP.items()}
    best = max(votes, key=lambda k: (votes[k], k == "en"))
    return best if votes[best] > 0 else "unknown"


def _shingles(text: str, n: int = 3) -> set[str]:
    words = re.sub(r"[\W_]+", " ", text.lower()).split()
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


_ECHO_SHINGLES = set().union(*(_shingles(t) for t in INSTRUCTION_TEXTS))


def is_prompt_echo(text: str, prompt: str = "", threshold: float = 0.5) -> bool:
    """True when most of the text's word trigrams come from the instruction (the fixed instruction wording, plus
    `prompt` when given): the model repeated its instruction instead of writing a request."""
    sh = _shingles(text)
    if not sh:
        return False
    ref = _ECHO_SHINGLES | (_shingles(prompt) if prompt else set())
    return len(sh & ref) / len(sh) >= threshold


# Text about the task or the generator instead of a user message: a small generator echoes its instruction's frame
# ("We are collecting examples to train a chatbot safety filter"), its system prompt ("You are a helpful AI named
# SmolLM, trained by Hugging Face") or answers as an assistant ("Here is the rewritten message: ..."). None of the
# 4,178 packaged prompt seeds (nor a response or conversation seed) matches; in the demo's kept synthetic data 16
# of 217 (hf) and 14 of 236 (vLLM) did, all noise.
_META = re.compile("|".join((
    r"\bsmol ?lm\b", r"\btrained by hugging ?face\b", r"\b(ai|chatbot) safety filter\b",
    r"\byou are a helpful (ai|assistant)\b[^.]{0,40}\btrained\b",
    r"\b(harmless|safe) everyday messages?\b", r"\bre-?uses? (the |any )?(part|words) (of|from) this\b",
    r"^\W*(sure[!,.]? )?(here'?s|here is) (a|an|the|your|my|one)( \w+){0,3} (message|messages|version|rewrite|"
    r"rewording|paraphrase|answer|response|example|continuation|suggestion)\b",
    r"\b(the|this) (above|original|previous|given|following) (message|request|prompt)s?\b",
    r"\b(the|this) message (instructs|asks|tells|wants) (us|you|me)\b",  # the writer describing its input
    # "the original instruction" is the writer's frame; "the following / previous instructions" is also how a
    # user's prompt attack talks ("The following instructions supersede every earlier instruction"), so not those
    r"\b(the|this) (above|original|given) instructions?\b",
    r"\bthis (message|response) (contains|uses|warns|is designed|asks)\b", r"\bthey'?re (requesting|asking for)\b",
    r"^\W*note\s*:", r"\bwrite \d+ (harmless|new|safe|different)\b",
    # a verdict about the message instead of a message ("This message is safe, 100% has a wonderful message")
    r"\b(this|the) (message|text|request) is (safe|harmless|unsafe|benign)\b",
    # the plural of the answer frame above ("Here are the two messages that rely on the safety filter example")
    r"^\W*(sure[!,.]? )?here are (the|some|a few|two|three|\d+)( \w+){0,3} (messages|versions|rewrites|examples)\b",
    # a whole text in brackets is a stage direction or a topic label, not a message ("[Please remember to keep
    # sentences under 100 words.]", "<<...>>"; both kept as synthetic children in the 2026-12-06 demo), and a
    # length instruction to the writer
    r"^\s*(\[[a-z][^\[\]{}\":]*\]|<<[^<>]*>>)\W*$",  # words only: a pasted JSON array or a list is not matched
    r"\bkeep (the |your |all )?(sentences?|messages?|answers?|responses?|replies) (under|below|within) \d+ words\b",
    )), re.I)


def is_meta_text(text: str) -> bool:
    """True for text about the generation task or the generator, not a user message (`_META`)."""
    return bool(_META.search(text))


def rule_reason(text: str, *, min_chars: int, max_chars: int, language: str = "", prompt: str = "") -> str | None:
    """The first rule a (normalised) text breaks, or None. Order: empty, too_short, too_long, refusal,
    prompt_echo, meta_text, wrong_language."""
    if not text.strip():
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    if is_refusal(text):
        return "refusal"
    if is_prompt_echo(text, prompt):
        return "prompt_echo"
    if is_meta_text(text):
        return "meta_text"
    if language:
        g = guess_language(text)
        if g not in (language, "unknown"):
            return "wrong_language"
    return None


# ---------------------------------------------------------------- near duplicates

NUM_PERM = 128


def _char_grams(text: str, n: int = 5) -> set[bytes]:
    t = re.sub(r"[\W_]+", " ", normalize_text(text).lower()).strip()
    if len(t) <= n:
        return {t.encode()}
    return {t[i:i + n].encode() for i in range(len(t) - n + 1)}


class MinHasher:
    """MinHash signatures over character 5-grams (robust to typos and small rewordings); one permutation table."""

    def __init__(self, num_perm: int = NUM_PERM, seed: int = 1):
        from datasketch import MinHash
        self._MinHash = MinHash
        self.num_perm = num_perm
        self.template = MinHash(num_perm=num_perm, seed=seed)

    def signature(self, text: str) -> np.ndarray:
        m = self._MinHash(num_perm=self.num_perm, permutations=self.template.permutations,
                           scheme=self.template.scheme)
        m.update_batch(list(_char_grams(text)))
        return np.asarray(m.hashvalues, dtype=np.uint64)

    def minhash(self, sig: np.ndarray):
        return self._MinHash(num_perm=self.num_perm, hashvalues=sig, permutations=self.template.permutations,
                             scheme=self.template.scheme)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


class NearDupIndex:
    """MinHash LSH index: `query(sig)` returns keys whose estimated Jaccard with sig is >= threshold."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM):
        from datasketch import MinHashLSH
        self.threshold = threshold
        # datasketch needs a threshold in (0, 1); candidates are re-checked against the exact threshold below.
        self.lsh = MinHashLSH(threshold=min(max(threshold, 0.05), 0.99), num_perm=num_perm)
        self.sigs: dict[str, np.ndarray] = {}
        self.hasher = MinHasher(num_perm)

    def __len__(self) -> int:
        return len(self.sigs)

    def add(self, key: str, sig: np.ndarray) -> None:
        if key in self.sigs:
            return
        self.sigs[key] = sig
        self.lsh.insert(key, self.hasher.minhash(sig))

    def query(self, sig: np.ndarray) -> list[str]:
        if not self.sigs:
            return []
        cands = self.lsh.query(self.hasher.minhash(sig))
        return sorted(k for k in cands if jaccard(self.sigs[k], sig) >= self.threshold)


def cosine_duplicates(emb: np.ndarray, threshold: float, ref: np.ndarray | None = None) -> list[tuple[int, str]]:
    """Greedy embedding dedup of L2-normalised rows: (index, 'reference'|'near') for each row to drop; a row is a
    near duplicate of an *earlier kept* row, or a reference duplicate of any `ref` row, at cosine >= threshold."""
    out: list[tuple[int, str]] = []
    if len(emb) == 0:
        return out
    ref_max = (emb @ ref.T).max(1) if ref is not None and len(ref) else np.full(len(emb), -1.0)
    kept: list[int] = []
    for i in range(len(emb)):
        if ref_max[i] >= threshold:
            out.append((i, "reference"))
            continue
        if kept and float((emb[kept] @ emb[i]).max()) >= threshold:
            out.append((i, "near"))
            continue
        kept.append(i)
    return out


# ---------------------------------------------------------------- judge and selection

def judge_disagrees(label: str, p_unsafe: float, *, threshold: float, margin: float) -> bool:
    """The classifier judge disagrees with `label` only when its score is `margin` past the threshold on the
    other side (so borderline scores never overturn a label)."""
    if label == "unsafe":
        return p_unsafe <= threshold - margin
    return p_unsafe >= threshold + margin


def judge_verdict(label: str, p_unsafe: float, *, threshold: float, margin: float, confirm: float = 0.0) -> str:
    """"disagree" past `margin` on the other side of the threshold (`judge_disagrees`); "unconfirmed" for an unsafe
    label the judge does not score at least `confirm` above its threshold (a weak generator's rewrite that kept the
    topic and lost the harm sits just there); "agree" otherwise. Safe labels need no confirmation: a benign child
    near the threshold is the hard negative the classifier should learn from."""
    if judge_disagrees(label, p_unsafe, threshold=threshold, margin=margin):
        return "disagree"
    if label == "unsafe" and confirm > 0 and p_unsafe < threshold + confirm:
        return "unconfirmed"
    return "agree"


def k_center(emb: np.ndarray, k: int, centers: np.ndarray | None = None) -> list[int]:
    """Greedy k-center (farthest-point) selection of k row indices, in pick order. With `centers` (e.g. the seeds'
    embeddings) the first pick is already the farthest from them; otherwise it starts at row 0. Deterministic."""
    n = len(emb)
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    if centers is not None and len(centers):
        dist = 1.0 - (emb @ centers.T).max(1)
        first = int(np.argmax(dist))
    else:
        dist = np.full(n, np.inf)
        first = 0
    picks = [first]
    dist = np.minimum(dist, 1.0 - emb @ emb[first])
    dist[first] = -np.inf
    while len(picks) < k:
        j = int(np.argmax(dist))
        picks.append(j)
        dist = np.minimum(dist, 1.0 - emb @ emb[j])
        dist[j] = -np.inf
    return picks


def category_key(ex: Example) -> str:
    """The balance/report bucket: first hazard code for unsafe examples, 'safe' or 'safe:hard_benign' for safe."""
    if ex.unsafe:
        return ex.categories[0] if ex.categories else "unsafe"
    return "safe:hard_benign" if "hard_benign" in ex.tags else "safe"


# ---------------------------------------------------------------- accounting

@dataclass
class Drop:
    id: str
    key: str  # category_key of the example
    reason: str  # "<round>:<reason>"
    text: str


@dataclass
class CurationCounts:
    """Inputs, kept and drops per round, per reason and per category; `check()` proves the books balance."""
    inputs: int = 0
    per_category_in: dict[str, int] = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    per_category_dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    relabelled: int = 0

    @classmethod
    def start(cls, examples: list[Example]) -> "CurationCounts":
        c = cls(inputs=len(examples))
        for e in examples:
            k = category_key(e)
            c.per_category_in[k] = c.per_category_in.get(k, 0) + 1
        return c

    def add_round(self, name: str, inputs: int, kept: int, drops: list[Drop], seconds: float, note: str = "",
                  max_samples: int = 5) -> None:
        if inputs != kept + len(drops):
            raise AssertionError(f"curation round {name}: {inputs} in != {kept} kept + {len(drops)} dropped")
        by_reason: dict[str, int] = {}
        for d in drops:
            by_reason[d.reason] = by_reason.get(d.reason, 0) + 1
            self.dropped[d.reason] = self.dropped.get(d.reason, 0) + 1
            pc = self.per_category_dropped.setdefault(d.key, {})
            pc[d.reason] = pc.get(d.reason, 0) + 1
            s = self.samples.setdefault(d.reason, [])
            if len(s) < max_samples:
                s.append(d.text)
        r = {"name": name, "inputs": inputs, "kept": kept, "dropped": dict(sorted(by_reason.items())),
             "seconds": round(seconds, 3)}
        if note:
            r["note"] = note
            self.notes.append(f"{name}: {note}")
        self.rounds.append(r)

    def report(self, kept: list[Example], **extra) -> dict:
        kept_by: dict[str, int] = {}
        for e in kept:
            k = category_key(e)
            kept_by[k] = kept_by.get(k, 0) + 1
        cats = sorted(set(self.per_category_in) | set(kept_by))
        per_cat = {}
        for k in cats:
            d = self.per_category_dropped.get(k, {})
            per_cat[k] = {"inputs": self.per_category_in.get(k, 0), "kept": kept_by.get(k, 0),
                          "dropped": dict(sorted(d.items()))}
        rep = {**extra, "inputs": self.inputs, "kept": len(kept), "dropped_total": sum(self.dropped.values()),
               "dropped": dict(sorted(self.dropped.items())), "relabelled": self.relabelled,
               "rounds": self.rounds, "per_category": per_cat, "notes": self.notes}
        self.check(rep)
        return rep

    @staticmethod
    def check(rep: dict) -> None:
        """inputs = kept + dropped, overall (relabelled examples are kept, under their new category)."""
        if rep["inputs"] != rep["kept"] + rep["dropped_total"]:
            raise AssertionError(f"curation books do not balance: {rep['inputs']} inputs != {rep['kept']} kept + "
                                 f"{rep['dropped_total']} dropped")
