"""Policies: the categories a guard enforces, what each includes and excludes, and how they map onto the OpenAI
moderation categories.

A policy is a YAML file (format below; README "Bring your own policy"). The built-in one,
`guardray/policies/llama-guard-3.yaml` (Llama Guard 3 codes S1-S14 plus `jailbreak`), is the default; the config's
`policy:` names another by path. Everything the taxonomy drives reads the policy: the category head's size and
names (guardray.trainer), the generator's instructions (guardray.core.augment), the curation judge, the model card,
the `categories` of /v1/classify and /v1/moderations (guardray.serve) and the evaluation report.

    name: bank-support                       # required: a short id (letters, digits, - _ .)
    description: what the policy is for      # optional
    seeds: [seeds.jsonl]                     # seed files, relative to the YAML file (jsonl/csv/parquet)
    categories:                              # required, >= 1
      - code: account_takeover               # required, unique; what seed rows carry in `categories`
        name: Account Takeover               # required
        in: what the category includes       # required
        out: what it does not include        # optional (hard-benign neighbours)
        openai: [illicit]                    # optional: OpenAI moderation categories it maps onto

`/v1/moderations` reports the OpenAI categories when the policy maps any of its codes onto them (unmapped codes
still flag a text through `flagged`), and the policy's own codes when it maps none.

Pure data (PyYAML only). `load_policy` validates the file and names the field and the fix; the seed files are
checked against the policy where they are read (guardray.data.load_seeds).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
DEFAULT_POLICY = "llama-guard-3"
LABELS: tuple[str, ...] = ("safe", "unsafe")

# The OpenAI moderation categories (response keys of /v1/moderations).
OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,47}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_RESERVED = {"safe", "unsafe"}  # the label names; output 0 of the head is "unsafe"


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    definition: str  # "In: ... Out: ..." (what is in, what is out)
    openai: tuple[str, ...]  # OpenAI moderation categories this code maps onto

    @property
    def includes(self) -> str:
        return self.definition.split(" Out: ")[0].removeprefix("In: ")

    @property
    def excludes(self) -> str:
        return self.definition.partition(" Out: ")[2]


@dataclass(frozen=True)
class Policy:
    """A loaded policy (hashable, picklable: it travels to Ray workers as is)."""
    name: str
    categories: tuple[Category, ...]
    description: str = ""
    seeds: tuple[str, ...] = ()  # absolute paths of its seed files
    path: str = ""  # the YAML file it was read from

    @cached_property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    @cached_property
    def by_code(self) -> dict[str, Category]:
        return {c.code: c for c in self.categories}

    @property
    def uses_openai(self) -> bool:
        """True when any code maps onto an OpenAI category: /v1/moderations then reports the OpenAI names."""
        return any(c.openai for c in self.categories)

    @property
    def moderation_keys(self) -> tuple[str, ...]:
        """The keys of /v1/moderations' `categories` and `category_scores`."""
        return OPENAI_CATEGORIES if self.uses_openai else self.codes

    def moderation_scores(self, category_scores: dict[str, float]) -> dict[str, float]:
        """Category scores -> scores per moderation key: max-pooled onto the OpenAI categories (0.0 where nothing
        maps) for a policy that maps onto them, else the policy's own codes."""
        if not self.uses_openai:
            return {k: float(category_scores.get(k, 0.0)) for k in self.codes}
        out = {k: 0.0 for k in OPENAI_CATEGORIES}
        by = self.by_code
        for code, score in category_scores.items():
            for oc in (by[code].openai if code in by else ()):
                out[oc] = max(out[oc], float(score))
        return out

    def to_meta(self) -> dict:
        """What a checkpoint records (guardray.json "policy"), enough to serve and describe it without the YAML."""
        return {"name": self.name, "description": self.description, "path": self.path,
                "categories": [{"code": c.code, "name": c.name, "in": c.includes, "out": c.excludes,
                                "openai": list(c.openai)} for c in self.categories]}

    @classmethod
    def from_meta(cls, d: dict) -> "Policy":
        return cls(name=d["name"], description=d.get("description", ""), path=d.get("path", ""),
                   categories=tuple(_category(c) for c in d["categories"]))


def _category(c: dict) -> Category:
    out = (c.get("out") or "").strip()
    return Category(c["code"], c["name"], f"In: {c['in'].strip()}" + (f" Out: {out}" if out else ""),
                    tuple(c.get("openai") or ()))


def _policy_file(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        return p
    builtin = POLICY_DIR / f"{name_or_path}.yaml"
    if builtin.exists():
        return builtin
    names = sorted(f.stem for f in POLICY_DIR.glob("*.yaml"))
    raise PolicyError(f"policy: {name_or_path!r} is neither a policy file (.yaml) nor a built-in policy "
                      f"({', '.join(names)}); pass the path of your policy YAML")


def parse_policy(data, where: str, base: Path) -> Policy:
    """Validate a policy mapping (a parsed YAML file); PolicyError naming the field otherwise."""
    if not isinstance(data, dict):
        raise PolicyError(f"{where}: expected a mapping with 'name' and 'categories', got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "description", "seeds", "categories"})
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r}; allowed: name, description, seeds, categories")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PolicyError(f"{where}: name: {name!r}; give a short id (letters, digits, '-', '_', '.')")
    desc = data.get("description") or ""
    if not isinstance(desc, str):
        raise PolicyError(f"{where}: description: expected a string")
    seeds = data.get("seeds") or []
    if isinstance(seeds, str):
        seeds = [seeds]
    if not isinstance(seeds, list) or not all(isinstance(s, str) and s for s in seeds):
        raise PolicyError(f"{where}: seeds: expected a list of file paths (relative to the policy file)")
    seed_paths = []
    for s in seeds:
        sp = (base / s).resolve() if not Path(s).is_absolute() else Path(s)
        if not sp.exists():
            raise PolicyError(f"{where}: seeds: {s} ({sp}) does not exist; paths are relative to the policy file")
        seed_paths.append(str(sp))
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise PolicyError(f"{where}: categories: expected a non-empty list of {{code, name, in, out}} entries")
    seen: dict[str, int] = {}
    out = []
    for i, c in enumerate(cats):
        at = f"{where}: categories[{i}]"
        if not isinstance(c, dict):
            raise PolicyError(f"{at}: expected a mapping with code, name, in (and optionally out, openai)")
        bad = sorted(set(c) - {"code", "name", "in", "out", "openai"})
        if bad:
            raise PolicyError(f"{at}: unknown key {bad[0]!r}; allowed: code, name, in, out, openai")
        code = c.get("code")
        if not isinstance(code, str) or not _CODE.match(code) or code.lower() in _RESERVED:
            raise PolicyError(f"{at}.code: {code!r}; a code is a letter then letters, digits, '_' or '-' (at most "
                              "48), and not 'safe' or 'unsafe'")
        if code in seen:
            raise PolicyError(f"{at}.code: {code!r} is a duplicate of categories[{seen[code]}]; codes must be unique")
        seen[code] = i
        for key in ("name", "in"):
            v = c.get(key)
            if not isinstance(v, str) or not v.strip():
                what = "a display name" if key == "name" else "a definition of what the category includes"
                raise PolicyError(f"{at}.{key}: missing; category {code!r} needs {what}")
        if c.get("out") is not None and not isinstance(c["out"], str):
            raise PolicyError(f"{at}.out: expected a string (what the category does not include)")
        oa = c.get("openai") or []
        if isinstance(oa, str):
            oa = [oa]
        if not isinstance(oa, list) or any(x not in OPENAI_CATEGORIES for x in oa):
            wrong = [x for x in oa if x not in OPENAI_CATEGORIES] if isinstance(oa, list) else oa
            raise PolicyError(f"{at}.openai: {wrong!r} is not an OpenAI moderation category; use any of "
                              f"{list(OPENAI_CATEGORIES)} (or leave it out)")
        out.append(_category({**c, "openai": oa}))
    return Policy(name=name, description=desc.strip(), categories=tuple(out), seeds=tuple(seed_paths),
                  path=str(Path(where).resolve()) if Path(where).exists() else where)


@lru_cache(maxsize=32)
def _load(path: str, mtime: float) -> Policy:
    import yaml
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PolicyError(f"{p}: not valid YAML ({e})") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{p}: not UTF-8 text") from None
    return parse_policy(data, str(p), p.resolve().parent)


def load_policy(name_or_path: str = DEFAULT_POLICY) -> Policy:
    """A built-in policy by name (`llama-guard-3`) or a policy YAML by path, validated."""
    p = _policy_file(name_or_path or DEFAULT_POLICY)
    if not p.is_file():
        raise PolicyError(f"policy: {p} does not exist (or is not a file); pass the path of your policy YAML")
    return _load(str(p.resolve()), p.stat().st_mtime)


BUILTIN: Policy = load_policy(DEFAULT_POLICY)

# The built-in policy's codes, for code that predates policies (and the default everywhere).
CATEGORIES: dict[str, Category] = BUILTIN.by_code
CATEGORY_CODES: tuple[str, ...] = BUILTIN.codes
OPENAI_MAP: dict[str, tuple[str, ...]] = {c.code: c.openai for c in BUILTIN.categories}


def policy_of(meta: dict | None) -> Policy:
    """The policy a checkpoint was trained for (guardray.json "policy"); the built-in one for checkpoints that
    record none (trained before policies existed, or an untrained backbone)."""
    d = (meta or {}).get("policy")
    return Policy.from_meta(d) if d else BUILTIN


def openai_scores(category_scores: dict[str, float]) -> dict[str, float]:
    """Max-pool built-in category scores onto the OpenAI moderation categories (0.0 where nothing maps)."""
    return BUILTIN.moderation_scores(category_scores)


def check_codes(codes, policy: Policy = BUILTIN) -> list[str]:
    """Return the codes that are not in the policy."""
    return [c for c in codes if c not in policy.by_code]
