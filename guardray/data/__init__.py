"""The packaged human-curated seed set (see SEEDS.md), and the seeds of a policy."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

SEEDS_PATH = Path(__file__).with_name("seeds.jsonl")  # the prompt seeds (single user messages)
RESPONSES_PATH = SEEDS_PATH.with_name("responses.jsonl")  # assistant responses to seed prompts
CONVERSATIONS_PATH = SEEDS_PATH.with_name("conversations.jsonl")  # multi-turn chats (last user turn)
# benign filler for the padding operators: everyday posts, emails, code, chats (350-1400 characters; PADDING.md)
PADDING_PATH = SEEDS_PATH.with_name("padding.jsonl")


def single_prompts(seeds) -> list:
    """The seeds the generator, the operators and the attacker rewrite: single user messages (not response
    rows, not multi-turn conversations, which train as they are)."""
    return [e for e in seeds if e.role == "user" and "multi_turn" not in e.tags]


def load_seeds(paths=(), skip_bad: bool = False, policy=None):
    """The given seed files, else the policy's (`seeds:` in its YAML), else the packaged set. Rows must use the
    policy's category codes (default: the built-in policy), and every category needs at least one unsafe seed:
    a DataError names the file, the row and the fix otherwise."""
    from guardray.core.records import DataError, read_many
    from guardray.core.taxonomy import BUILTIN
    policy = policy or BUILTIN
    files = [Path(p) for p in paths] or [Path(p) for p in policy.seeds] or [SEEDS_PATH]
    seeds = read_many(files, skip_bad=skip_bad, codes=policy.codes).examples
    have = Counter(c for e in seeds if e.unsafe for c in e.categories)
    missing = [c for c in policy.codes if not have[c]] if policy.path != BUILTIN.path else []
    if missing:
        raise DataError(f"{', '.join(map(str, files))}: policy {policy.name!r} has categories with no unsafe seed: "
                        f"{missing}; add seeds for them (categories: [{missing[0]!r}]) or remove them from the "
                        f"policy{' (' + policy.path + ')' if policy.path else ''}")
    return seeds


def load_padding(source: str = "packaged") -> tuple[str, ...]:
    """Benign filler texts for the padding operators (`synth.padding`): "builtin" = () (the operators' own 18 short
    sentences, guardray.core.operators.DEFAULT_PADDING, padded children up to PAD_CAP characters), "packaged" =
    guardray/data/padding.jsonl, else a JSONL file of {"text": ...} rows (a pool: children up to POOL_PAD_CAP).
    A bad file raises DataError naming the line and the fix."""
    import json
    from guardray.core.records import DataError
    if source == "builtin":
        return ()
    path = PADDING_PATH if source == "packaged" else Path(source)
    if not path.is_file():
        raise DataError(f"synth.padding: {path} is not a file; use packaged, builtin or a JSONL file of "
                        '{"text": ...} rows')
    texts = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not JSON ({e.msg}); each line must be {{\"text\": \"...\"}}") from None
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise DataError(f'{path}:{i}: needs a non-empty string "text" field (a benign filler text)')
            texts.append(text.strip())
    if not texts:
        raise DataError(f"{path}: no filler texts; add {{\"text\": ...}} rows or use synth.padding: builtin")
    return tuple(texts)
