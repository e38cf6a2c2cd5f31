"""The packaged human-curated seed set (see SEEDS.md)."""
from __future__ import annotations

from pathlib import Path

SEEDS_PATH = Path(__file__).with_name("seeds.jsonl")


def load_seeds(paths=(), skip_bad: bool = False):
    """The packaged seeds, or the given seed files."""
    from guardray.core.records import read_many
    return read_many([Path(p) for p in paths] or [SEEDS_PATH], skip_bad=skip_bad).examples
