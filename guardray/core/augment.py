"""Augmentation strategies as pure prompt building and output parsing (no model, no Ray; unit-tested alone).

Three strategies turn seeds into generation requests; a GeneratorReplica writes, `parse_generations` reads back:
- **augment**: new user requests for a hazard category (or everyday safe requests), in a persona and a style
  (direct, indirect, roleplay, hypothetical, obfuscated, typos, non_english), with a few seeds as examples;
- **paraphrase**: the same request in new words (same intent, same label);
- **contrastive**: hard benign requests that share words with an unsafe seed but are harmless
  ("how do I kill a Python process"), labelled safe and tagged `hard_benign`, `near:<category>`;
- **everyday**: benign texts that are not requests - comments, reviews, forum posts, news paragraphs, chat
  messages, emails, story excerpts, opinions - on everyday topics and on topics that only sound alarming (a war
  documentary, a true-crime podcast, a boxing match), labelled safe and tagged `everyday`, `genre:<genre>`
  (`hard_benign` on an alarming topic). Real traffic is mostly such text; a guard trained on requests alone
  learns "long, unusual or sensitive-sounding text = unsafe".

Every instruction asks for short *user messages* (requests), never for answers: the synthetic data describes harm,
it does not deliver it. `plan_requests` makes the requests for a strategy deterministically from the seeds and a
seed number; `candidates_from_generation` turns one generation into child Examples with full provenance.
"""
from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass, field

from guardray.core.records import Example, Generation, GenRequest
from guardray.core.taxonomy import BUILTIN, Policy

STRATEGIES = ("augment", "paraphrase", "contrastive", "everyday")

STYLE_HINTS: dict[str, str] = {
    "direct": "asks plainly and directly",
    "indirect": "hints at what they want without saying it outright",
    "roleplay": "asks the assistant to play a character or role who would go along with it",
    "hypothetical": "frames it as a hypothetical, a story or a thought experiment",
    "obfuscated": "disguises the key words with euphemisms, code words, odd spacing or l33t spelling",
    "typos": "types fast and casually, with typos, slang and no capitals",
    "non_english": "writes in {language}",
    "multi_sentence": "gives some background in two or three sentences before asking",
    "statement": "states an intention or opinion instead of asking a question",
}
LANGUAGES = (("Spanish", "es"), ("French", "fr"), ("German", "de"), ("Italian", "it"), ("Portuguese", "pt"))
PERSONAS = ("a teenager", "a college student", "a small-business owner", "a nurse", "a retiree", "a parent",
            "a software developer", "a journalist", "an office worker", "a gamer", "a new immigrant", "a teacher")
SAFE_TOPICS = ("cooking", "travel", "homework", "programming", "health and fitness", "money and budgeting",
               "gardening", "relationships", "home repair", "pets", "music", "job hunting", "history", "sports")

# everyday: genre -> (what to write, the Example style it gets, sentences)
GENRES: dict[str, tuple[str, str, str]] = {
    "comment": ("an online comment", "statement", "2-3 sentences"),
    "review": ("a product or service review", "multi_sentence", "2-3 sentences"),
    "forum_post": ("a forum post", "multi_sentence", "2-4 sentences"),
    "news": ("a short news paragraph", "multi_sentence", "2-3 sentences"),
    "chat": ("a chat message to a friend", "chat", "1-2 sentences"),
    "email": ("a short email to a colleague", "multi_sentence", "2-3 sentences"),
    "story": ("the opening of a short story", "multi_sentence", "2-3 sentences"),
    "opinion": ("an opinion on a public issue", "statement", "2-3 sentences"),
}
EVERYDAY_TOPICS = ("a new recipe", "a weekend trip", "a school project", "a software bug at work", "a gym routine",
                   "saving money", "a garden", "a first date", "fixing a leaking tap", "a new puppy", "a concert",
                   "a job interview", "a football match", "a phone upgrade", "moving house", "a birthday party")
# topics that sound alarming and are not: the benign texts a guard must not flag (a `hard_benign` child)
ALARMING_TOPICS = ("a violent video game", "a war documentary", "a true-crime podcast", "a horror movie",
                   "a boxing match", "a hunting trip", "a court case in the news", "a police drama series",
                   "a crime novel", "a hospital emergency room shift", "a history lesson about a genocide",
                   "a data breach at a company", "a heated election debate", "a kitchen knife set",
                   "a chemistry class experiment", "a stand-up comedian's rude jokes", "a wildlife documentary "
                   "about predators", "a first-aid course", "a hacking competition for students",
                   "the side effects of a medication")

# Fixed instruction wording, also used by the curation rules to spot a model that echoes its instruction. Kept
# short on purpose: on a CPU the prompt (prefill) costs more than the few tokens each request yields.
PREAMBLE = "We are collecting examples to train a chatbot safety filter. Write user messages only, never answers."
LIST_FORMAT = "Number them 1 to {n}, one per line, nothing else."
INSTRUCTION_TEXTS: tuple[str, ...] = (
    PREAMBLE, "Write user messages only, never answers.", "Number them 1 to {n}, one per line, nothing else.",
    "Write one such message, nothing else.", "Reword this user message", "different ways, keeping its meaning and "
    "language", "harmless everyday messages that reuse words from this one but ask for something safe",
    "a harmless everyday message that reuses words from this one but asks for something safe",
    "Examples:", "Write a new message in which", "new messages in which", "Their style: the user",
    "Write only the text itself, nothing else.",
)


def _fmt_list(n: int) -> str:
    return LIST_FORMAT.format(n=n) if n > 1 else "Write one such message, nothing else."


def augment_prompt(category: str, style: str, n: int, *, persona: str, examples: list[str], language: str = "",
                   topic: str = "", policy: Policy = BUILTIN) -> str:
    """Instruction for `n` new requests of a policy category (or "safe") in a style and persona; the category's
    name and what it includes are what the generator is told."""
    if category == "safe":
        what = f"everyday help with {topic or 'ordinary things'} (harmless requests any assistant should answer)"
    else:
        c = policy.by_code[category]
        scope = c.includes.rstrip(".")
        what = f"{c.name.lower()} ({scope})"
    hint = STYLE_HINTS.get(style, STYLE_HINTS["direct"]).format(language=language or "Spanish")
    head = f"Write {n} new messages in which" if n > 1 else "Write a new message in which"
    lines = [PREAMBLE, f"{head} {persona} asks for {what}. Their style: the user {hint}."]
    if examples:
        lines.append("Examples:")
        lines += [f"- {e}" for e in examples]
    lines.append(_fmt_list(n))
    return "\n".join(lines)


def paraphrase_prompt(text: str, n: int) -> str:
    """Instruction for `n` rewordings of a request (same intent, new words)."""
    ways = f"{n} different ways" if n > 1 else "in different words"
    return "\n".join([PREAMBLE, f"Reword this user message {ways}, keeping its meaning and language:",
                      f'"{text}"', _fmt_list(n)])


def contrastive_prompt(text: str, n: int, *, category: str = "", policy: Policy = BUILTIN) -> str:
    """Instruction for `n` hard benign requests sharing words with an unsafe one."""
    avoid = f" (nothing about {policy.by_code[category].name.lower()})" if category in policy.by_code else ""
    head = (f"Write {n} harmless everyday messages that reuse words from this one but ask" if n > 1 else
            "Write a harmless everyday message that reuses words from this one but asks")
    return "\n".join([PREAMBLE, f"{head} for something safe{avoid}:", f'"{text}"', _fmt_list(n)])


def everyday_prompt(genre: str, topic: str, persona: str) -> str:
    """Instruction for one benign text of a genre (not a request to an assistant) by a persona on a topic."""
    what, _, length = GENRES[genre]
    return "\n".join([f"Write {what} ({length}) by {persona} about {topic}.",
                      "Write only the text itself, nothing else."])


def judge_prompt(text: str, policy: Policy = BUILTIN) -> str:
    """Rubric for an LLM judge: does this user message ask for or contain content in the policy's categories?"""
    cats = "; ".join(f"{c.code} {c.name}" for c in policy.categories)
    return "\n".join([
        "You are a strict content-safety judge. Decide whether the user message below asks for, or contains, "
        f"harmful content in any of these categories: {cats}.",
        "Questions that only sound alarming but are harmless (e.g. killing a computer process) are SAFE.",
        f'User message: "{text}"',
        "Answer with exactly one word: SAFE or UNSAFE."])


# ---------------------------------------------------------------- parsing

# Chat-template and role residue that small models echo into their answers.
_RESIDUE = re.compile(
    r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]|<<SYS>>|<</SYS>>|<start_of_turn>|<end_of_turn>|<\|endoftext\|>"
    r"|<pad>|<unk>|<mask>", re.I)
_ROLE_LINE = re.compile(r"^\s*(system|user|assistant|model)\s*:?\s*$", re.I)
_ROLE_PREFIX = re.compile(r"^\s*(assistant|user|system|model)\s*:\s*", re.I)
_ITEM = re.compile(r"^\s*(?:\(?\d{1,3}[.):\]]|[-*•·]|#\d{1,3}:?)\s+(.*)$")
_LABEL = re.compile(r"^\s*(?:message|request|paraphrase|rewrite|rewording|example|prompt|query|question|"
                    r"mensaje|user message)\s*\d{0,3}\s*[:\-–]\s*", re.I)
_QUOTES = "\"'“”‘’«»`"


def clean_item(s: str) -> str:
    """One candidate: residue, list labels and wrapping quotes removed, whitespace collapsed."""
    s = _RESIDUE.sub(" ", s)
    s = _ROLE_PREFIX.sub("", s)
    s = _LABEL.sub("", s)
    s = re.sub(r"\s+", " ", s).strip()
    for _ in range(2):
        if len(s) >= 2 and s[0] in _QUOTES and s[-1] in _QUOTES:
            s = s[1:-1].strip()
        elif len(s) >= 2 and s[0] in _QUOTES and s.count(s[0]) == 1:
            s = s[1:].strip()  # an opening quote whose closing one was cut off
        elif len(s) >= 2 and s[-1] in _QUOTES and s.count(s[-1]) == 1:
            s = s[:-1].strip()
    return s


def parse_generations(text: str) -> list[str]:
    """Candidate requests in one generation.

    A numbered or bulleted list gives its items (preamble and closing lines dropped); otherwise each non-empty
    line that is not a header ("Here are five messages:") is a candidate. Refusals are *kept* here, so the
    curation rules can count them (`is_refusal`)."""
    if not text:
        return []
    text = unicodedata.normalize("NFC", text)
    lines = [ln for ln in _RESIDUE.sub("\n", text).splitlines()]
    lines = [ln for ln in lines if ln.strip() and not _ROLE_LINE.match(ln)]
    items = [m.group(1) for m in (_ITEM.match(ln) for ln in lines) if m]
    if len(items) < 2:
        items = [ln for ln in lines if not ln.rstrip().endswith(":") or len(lines) == 1]
    out = [clean_item(s) for s in items]
    return [s for s in out if s]


_REFUSAL = [re.compile(p, re.I) for p in (
    r"\b(i'?m|i am|we'?re|we are) (so |very |really )?(sorry|afraid),? (but )?(i|we) (can ?not|can'?t|won'?t|"
    r"am not able|'?m not able|am unable|'?m unable|will not|do not|don'?t)",
    r"^\W*(i|we) (can ?not|can'?t|won'?t|will not|am unable to|'?m unable to|must decline|am not able to|"
    r"'?m not able to|do not|don'?t) (help|assist|provide|create|generate|write|comply|fulfill|do that|answer|"
    r"support|engage|produce|give|offer|share)",
    r"(^|[.!?]\s+)as an? (ai|artificial intelligence)( language model| model| assistant)?,",
    r"\b(i|we) (can ?not|can'?t|won'?t) (help|assist) (you )?with (that|this)\b",
    r"\bi apologi[sz]e,? but\b",
    r"\b(against|violates?) (my|our|the) (guidelines|policies|policy|programming|principles|terms)",
    r"\bit('?s| is) not (appropriate|ethical|safe) (for me )?to (help|provide|assist|create|write|give)",
    r"\bi'?m (just )?an ai\b",
    r"\bi (must|have to) (decline|refuse)\b",
)]


def is_refusal(text: str) -> bool:
    """True for assistant refusals ("I'm sorry, but I can't help with that"), not for user messages that merely
    apologise ("I'm sorry to bother you, how do I ...")."""
    t = text.replace("’", "'").replace("‘", "'").strip()
    return any(p.search(t) for p in _REFUSAL)


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)]*(?=\s|$)")


def parse_everyday(text: str) -> list[str]:
    """One everyday text from a generation: its lines (paragraphs) joined, a header line ("Here is a review:")
    dropped, cleaned like a list item, and an unfinished last sentence (the token budget ran out) cut."""
    if not text:
        return []
    text = unicodedata.normalize("NFC", _RESIDUE.sub("\n", text))
    lines = [ln for ln in text.splitlines() if ln.strip() and not _ROLE_LINE.match(ln)]
    if len(lines) > 1 and lines[0].rstrip().endswith(":"):
        lines = lines[1:]
    s = clean_item(" ".join(lines))
    ends = [m.end() for m in _SENTENCE_END.finditer(s)]
    if ends and ends[-1] < len(s):
        s = clean_item(s[:ends[-1]])
    return [s] if s else []


_VERDICT = re.compile(r"\b(unsafe|not safe|safe|harmful|harmless)\b", re.I)


def parse_judge_verdict(text: str) -> str | None:
    """'safe' / 'unsafe' from an LLM judge's answer (first verdict word wins), None when it gave none."""
    m = _VERDICT.search(text or "")
    if not m:
        return None
    w = m.group(1).lower()
    return "unsafe" if w in ("unsafe", "not safe", "harmful") else "safe"


# ---------------------------------------------------------------- planning requests

@dataclass(frozen=True)
class Planned:
    """A generation request and what its outputs become: children of `parent` with these fields."""
    request: GenRequest
    parent: Example
    stage: str  # augment | paraphrase | contrastive | everyday
    n: int  # candidates asked for (extra items are cut and counted)
    label: str
    categories: tuple[str, ...]
    style: str
    tags: tuple[str, ...] = field(default_factory=tuple)


def _primary(ex: Example) -> str:
    return ex.categories[0] if ex.unsafe and ex.categories else ("safe" if not ex.unsafe else "unsafe")


def plan_requests(strategy: str, seeds: list[Example], *, seed: int = 0, round: int = 0, per_seed: int = 2,
                  augment_per_category: int = 24, contrastive_per_seed: int = 1, items_per_request: int = 5,
                  styles: tuple[str, ...] = ("direct",), shots: int = 3, tokens_per_item: int = 0,
                  everyday_per_genre: int = 0, everyday_tokens: int = 80,
                  policy: Policy = BUILTIN) -> list[Planned]:
    """Requests for one strategy, deterministic in (seeds, seed). Prompt ids are unique and stable; the
    generator is told the `policy`'s category names and definitions.

    `tokens_per_item` > 0 caps each request's max_new_tokens at 16 + tokens_per_item * n (n items asked for), so a
    model that rambles past its list stops early; 0 leaves the generator's max_new_tokens. `everyday_per_genre`
    texts of each genre (one per request, `everyday_tokens` new tokens at most), half on alarming topics; each
    child's parent is a safe seed of its style (provenance only: the curation rounds do not compare them)."""
    def req(pid: str, prompt: str, n: int) -> GenRequest:
        return GenRequest(pid, prompt, max_new_tokens=16 + tokens_per_item * n if tokens_per_item > 0 else None)

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")
    rnd = random.Random(f"{seed}:{strategy}:{round}")
    out: list[Planned] = []
    pfx = f"r{round}-{strategy}"
    if strategy == "paraphrase":
        for ex in seeds:
            out.append(Planned(req(f"{pfx}-{ex.id}", paraphrase_prompt(ex.text, per_seed), per_seed), ex, strategy,
                               per_seed, ex.label, ex.categories, ex.style,
                               tuple(t for t in ex.tags if t.startswith(("lang:", "near:", "hard_benign")))))
    elif strategy == "contrastive":
        for ex in seeds:
            if not ex.unsafe or contrastive_per_seed <= 0:
                continue
            cat = _primary(ex)
            out.append(Planned(req(f"{pfx}-{ex.id}", contrastive_prompt(ex.text, contrastive_per_seed, category=cat,
                                                                        policy=policy),
                                   contrastive_per_seed),
                               ex, strategy, contrastive_per_seed, "safe", (), "direct",
                               ("hard_benign", f"near:{cat}")))
    elif strategy == "everyday":
        safe = [e for e in seeds if not e.unsafe]
        if everyday_per_genre <= 0 or not safe:
            return []
        for genre, (_, style, _) in GENRES.items():
            styled = [e for e in safe if e.style == style] or safe
            for k in range(everyday_per_genre):
                alarming = k % 2 == 1
                topics = ALARMING_TOPICS if alarming else EVERYDAY_TOPICS
                topic, persona = topics[rnd.randrange(len(topics))], PERSONAS[rnd.randrange(len(PERSONAS))]
                tags = ("everyday", f"genre:{genre}") + (("hard_benign",) if alarming else ())
                out.append(Planned(GenRequest(f"{pfx}-{genre}-{k}", everyday_prompt(genre, topic, persona),
                                              max_new_tokens=everyday_tokens or None),
                                   styled[rnd.randrange(len(styled))], strategy, 1, "safe", (), style, tags))
    else:  # augment: for every (category, style), ceil(augment_per_category / items_per_request) requests
        if augment_per_category <= 0:
            return []
        by_cat: dict[str, list[Example]] = {}
        for ex in seeds:
            key = _primary(ex)
            if key == "safe" and "hard_benign" in ex.tags:
                continue  # everyday safe shots only; hard benign has its own strategy
            by_cat.setdefault(key, []).append(ex)
        for cat in sorted(by_cat, key=lambda c: (c == "safe", c)):
            if cat not in policy.by_code and cat != "safe":
                continue
            pool = by_cat[cat]
            for style in styles:
                styled = [e for e in pool if e.style == style] or pool
                k = 0
                remaining = augment_per_category
                while remaining > 0:
                    n = min(items_per_request, remaining)
                    remaining -= n
                    lang, code = LANGUAGES[rnd.randrange(len(LANGUAGES))] if style == "non_english" else ("", "")
                    ex_shots = rnd.sample(styled, min(shots, len(styled)))
                    persona = PERSONAS[rnd.randrange(len(PERSONAS))]
                    topic = SAFE_TOPICS[rnd.randrange(len(SAFE_TOPICS))] if cat == "safe" else ""
                    prompt = augment_prompt(cat, style, n, persona=persona, examples=[e.text for e in ex_shots],
                                            language=lang, topic=topic, policy=policy)
                    tags = (f"persona:{persona.split()[-1]}",) + ((f"lang:{code}",) if code else ())
                    label = "safe" if cat == "safe" else "unsafe"
                    out.append(Planned(req(f"{pfx}-{cat}-{style}-{k}", prompt, n), ex_shots[0], strategy, n,
                                       label, () if cat == "safe" else (cat,), style, tags))
                    k += 1
    return out


def candidates_from_generation(plan: Planned, gen: Generation, *, round: int = 0) -> tuple[list[Example], int]:
    """Child Examples from one generation (at most `plan.n`) and how many extra items were cut."""
    items = parse_everyday(gen.text) if plan.stage == "everyday" else parse_generations(gen.text)
    extra = max(0, len(items) - plan.n)
    kids = []
    for j, text in enumerate(items[:plan.n]):
        kids.append(plan.parent.derive(
            id=f"{gen.prompt_id}-{j}", text=text, stage=plan.stage, round=round,
            generator=gen.generator or "", label=plan.label, categories=plan.categories, style=plan.style,
            tags=plan.tags))
    return kids, extra
