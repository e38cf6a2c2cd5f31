"""The packaged human-curated seed set (see SEEDS.md), and the seeds of a policy."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

SEEDS_PATH = Path(__file__).with_name("seeds.jsonl")  # the prompt seeds (single user messages)
RESPONSES_PATH = SEEDS_PATH.with_name("responses.jsonl")  # assistant responses to seed prompts
CONVERSATIONS_PATH = SEEDS_PATH.with_name("conversations.jsonl")  # multi-turn chats (last user turn)


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
