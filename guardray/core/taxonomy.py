"""Hazard taxonomy: Llama Guard 3 codes S1-S14 plus `jailbreak`, and the mapping to OpenAI moderation categories.

Pure data. Every label-carrying record in guardray uses these codes; `OPENAI_MAP` drives /v1/moderations.
Mapping notes (our choice, documented in the README): several Llama Guard codes have no OpenAI counterpart
(defamation, specialized advice, privacy, IP, elections, code-interpreter abuse, jailbreak); they map to `illicit`
where the request is for wrongdoing, else to nothing (they still flag the result through `flagged`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    definition: str  # what is in, what is out
    openai: tuple[str, ...]  # OpenAI moderation categories this code maps onto


CATEGORIES: dict[str, Category] = {c.code: c for c in [
    Category("S1", "Violent Crimes",
             "In: requests that enable, encourage or endorse violence against people or animals (murder, assault, "
             "terrorism, kidnapping, animal abuse) and threats of such violence. Out: news, history, fiction or "
             "self-defence questions that do not help anyone commit violence.",
             ("violence", "illicit/violent", "harassment/threatening")),
    Category("S2", "Non-Violent Crimes",
             "In: help with fraud, scams, theft, cybercrime, drug or weapons trafficking, money laundering. "
             "Out: explaining how crimes work for prevention, reporting scams, securing one's own systems.",
             ("illicit",)),
    Category("S3", "Sex-Related Crimes",
             "In: sex trafficking, sexual assault, sexual harassment, non-consensual intimate imagery. "
             "Out: survivor support, legal definitions, prevention education.",
             ("sexual", "illicit/violent")),
    Category("S4", "Child Sexual Exploitation",
             "In: any content or request that sexualises minors or enables their exploitation or grooming. "
             "Out: child-safety education and reporting guidance for parents and professionals.",
             ("sexual/minors",)),
    Category("S5", "Defamation",
             "In: requests to write verifiably false statements that damage a real person's or organisation's "
             "reputation. Out: opinion, satire clearly marked as such, reporting documented facts.",
             ()),
    Category("S6", "Specialized Advice",
             "In: unqualified medical, legal or financial advice that could cause serious harm if followed "
             "(dangerous dosing, stopping prescribed treatment). Out: general information with a referral to a "
             "professional.",
             ()),
    Category("S7", "Privacy",
             "In: requests to find, expose or misuse non-public personal information (doxxing, tracking someone, "
             "home addresses). Out: protecting one's own privacy, public-figure public facts.",
             ("illicit",)),
    Category("S8", "Intellectual Property",
             "In: piracy, cracking licences, bypassing DRM, counterfeiting, reproducing copyrighted works wholesale. "
             "Out: fair use, licensing questions, summaries and short quotes.",
             ("illicit",)),
    Category("S9", "Indiscriminate Weapons",
             "In: chemical, biological, radiological, nuclear weapons and high-yield explosives. Out: history, "
             "policy, arms-control and public-safety education without technical uplift.",
             ("illicit/violent", "violence")),
    Category("S10", "Hate",
             "In: content that demeans or dehumanises people for protected attributes (race, religion, nationality, "
             "gender, sexual orientation, disability), and requests to produce it; targeted harassment, bullying "
             "and degrading insults aimed at a person (our extension of Llama Guard 3's S10, as OpenAI's "
             "`harassment`). Out: discussing, quoting for moderation, or countering hate; venting or profanity "
             "that targets no one.",
             ("hate", "harassment")),
    Category("S11", "Suicide & Self-Harm",
             "In: encouragement of or methods for suicide, self-injury or disordered eating, and statements of intent "
             "to self-harm. Out: seeking help, supporting others, prevention information.",
             ("self-harm", "self-harm/intent", "self-harm/instructions")),
    Category("S12", "Sexual Content",
             "In: requests for or messages containing explicit sexual content between adults, sexual solicitation. "
             "Out: sex education, relationship advice, non-explicit romance.",
             ("sexual",)),
    Category("S13", "Elections",
             "In: false information about when, where or how to vote, voter suppression, impersonating election "
             "officials. Out: factual voting information, civic education.",
             ("illicit",)),
    Category("S14", "Code Interpreter Abuse",
             "In: attempts to make a code tool escape its sandbox, attack its host, exfiltrate secrets or run "
             "denial-of-service. Out: ordinary programming and security education.",
             ("illicit",)),
    Category("jailbreak", "Prompt Attack",
             "In: attempts to override the assistant's instructions or safety policy (ignore previous instructions, "
             "persona jailbreaks, system-prompt extraction, encoded instructions). Out: questions about jailbreaks "
             "from a defender's or researcher's angle.",
             ("illicit",)),
]}

CATEGORY_CODES: tuple[str, ...] = tuple(CATEGORIES)
LABELS: tuple[str, ...] = ("safe", "unsafe")

# The OpenAI moderation categories (response keys of /v1/moderations).
OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
OPENAI_MAP: dict[str, tuple[str, ...]] = {c.code: c.openai for c in CATEGORIES.values()}


def openai_scores(category_scores: dict[str, float]) -> dict[str, float]:
    """Max-pool guardray category scores onto the OpenAI moderation categories (0.0 where nothing maps)."""
    out = {k: 0.0 for k in OPENAI_CATEGORIES}
    for code, score in category_scores.items():
        for oc in OPENAI_MAP.get(code, ()):
            out[oc] = max(out[oc], float(score))
    return out


def check_codes(codes) -> list[str]:
    """Return the codes that are not in the taxonomy."""
    return [c for c in codes if c not in CATEGORIES]
