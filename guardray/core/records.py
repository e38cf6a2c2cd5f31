"""Typed records passed between actors (`Example`, `Generation`, `Rollout`, `RewardBatch`) and Example file I/O.

Pure: imports neither ray nor vllm. Examples are read from and written to JSONL, CSV, Parquet and Hugging Face
`datasets` folders. Every invalid row is reported with file, line and reason; `read_examples` either raises
`DataError` listing them, or (``skip_bad=True``) skips them and returns every skipped row in `LoadResult.skipped`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from guardray.core.taxonomy import CATEGORY_CODES, LABELS

STYLES = ("direct", "indirect", "roleplay", "hypothetical", "multi_sentence", "typos", "obfuscated",
          "non_english", "statement", "chat", "long", "code", "")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Example:
    """One labelled text with its provenance (where it came from, which stage/round/generator made it)."""
    id: str
    text: str
    label: str  # "safe" | "unsafe"
    categories: tuple[str, ...] = ()  # taxonomy codes (empty for safe)
    source: str = ""  # e.g. guardray-seeds-v1, synth, adversarial
    style: str = ""  # direct, indirect, roleplay, ... ("" when unknown)
    tags: tuple[str, ...] = ()  # free tags, e.g. hard_benign, near:S1, lang:es
    seed_id: str = ""  # root seed this example descends from ("" for seeds themselves: their own id)
    parent_id: str = ""  # the example it was derived from
    stage: str = "seed"  # seed | operator | augment | paraphrase | contrastive | adversarial
    round: int = 0  # adversarial round (0 = before the adversarial game)
    generator: str = ""  # model name@version that wrote it
    created_at: str = ""
    role: str = "user"  # what the text is: a "user" prompt, or an "assistant" response to `prompt`
    prompt: str = ""  # role=assistant: the prompt (or "User: ... / Assistant: ..." context) the response answers

    @property
    def unsafe(self) -> bool:
        return self.label == "unsafe"

    @property
    def model_text(self) -> str:
        """What the classifier reads (`classifier_input`)."""
        return classifier_input(self.text, self.role, self.prompt)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["categories"] = list(self.categories)
        d["tags"] = list(self.tags)
        return d

    def derive(self, *, id: str, text: str, stage: str, generator: str, round: int | None = None,
               **changes) -> "Example":
        """A child example: same label/categories, provenance pointing back here."""
        return dataclasses.replace(
            self, id=id, text=text, stage=stage, generator=generator, parent_id=self.id,
            seed_id=self.seed_id or self.id, round=self.round if round is None else round, created_at=now(),
            source=changes.pop("source", "synth"), **changes)


EXAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("label", pa.string()),
    ("categories", pa.list_(pa.string())), ("source", pa.string()), ("style", pa.string()),
    ("tags", pa.list_(pa.string())), ("seed_id", pa.string()), ("parent_id", pa.string()),
    ("stage", pa.string()), ("round", pa.int32()), ("generator", pa.string()), ("created_at", pa.string()),
    ("role", pa.string()), ("prompt", pa.string()),
])
ROLES = ("user", "assistant")
# The role marker: one classifier, one head, two tasks. A response is read as this line, then the conversation as a
# "User: ... / Assistant: ..." transcript ending in the reply to judge; a prompt is read as its bare text (or, for a
# conversation, the transcript ending in the user's turn, unmarked). The marker leads the input, so head + tail
# truncation (guardray.classifier.head_tail_features) always keeps it.
RESPONSE_MARKER = "[classify the assistant's last reply]"


def classifier_input(text: str, role: str = "user", prompt: str = "") -> str:
    """The text the classifier reads for a prompt (`role` "user": the text itself) or for an assistant response to
    `prompt` (the marker, then the transcript). `prompt` may be a bare prompt or an already rendered
    "User: ..." context."""
    if role != "assistant":
        return text
    ctx = prompt if prompt.startswith(("User: ", "Assistant: ")) else f"User: {prompt}"
    return f"{RESPONSE_MARKER}\n{ctx}\nAssistant: {text}"
_FIELDS = {f.name: f for f in dataclasses.fields(Example)}


@dataclass(frozen=True)
class GenRequest:
    """One prompt for a GeneratorReplica. `prompt` is the user instruction; the backend applies the chat template."""
    prompt_id: str
    prompt: str
    max_new_tokens: int | None = None  # None = the replica's GeneratorConfig value
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None  # per-request sampling seed (deterministic under a seed)
    want_logprobs: bool = False  # return completion token ids and their logprobs (for RL)


@dataclass(frozen=True)
class Generation:
    """One completion from a GeneratorReplica."""
    prompt_id: str  # id of the request (usually the parent example id + suffix)
    text: str
    prompt_token_ids: tuple[int, ...] = ()
    token_ids: tuple[int, ...] = ()  # completion tokens (when asked)
    logprobs: tuple[float, ...] = ()  # per completion token, under the sampling policy
    finish_reason: str = ""
    sampling: dict = field(default_factory=dict)
    model_version: int = 0  # policy version that produced it
    generator: str = ""  # replica/model name


@dataclass(frozen=True)
class Rollout:
    """A generation aimed at the classifier, tied to the seed it attacks."""
    seed: Example
    generation: Generation
    policy_version: int


@dataclass(frozen=True)
class RewardBatch:
    """Rewards for a list of rollouts (same order) with every component logged."""
    rewards: tuple[float, ...]
    components: dict[str, tuple[float, ...]]  # name -> per-rollout values
    policy_version: int


# ---------------------------------------------------------------- reading and writing

@dataclass(frozen=True)
class RowError:
    file: str
    line: int  # 1-based line (JSONL/CSV: physical record number incl. header; Parquet/datasets: row index + 1)
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class DataError(ValueError):
    """A data file could not be loaded; `errors` lists every bad row."""

    def __init__(self, message: str, errors: list[RowError] | None = None):
        self.errors = errors or []
        lines = [message] + [f"  {e}" for e in self.errors[:50]]
        if len(self.errors) > 50:
            lines.append(f"  ... and {len(self.errors) - 50} more")
        super().__init__("\n".join(lines))


@dataclass
class LoadResult:
    examples: list[Example]
    skipped: list[RowError]


def _as_list(v, name: str) -> tuple[str, ...]:
    if v is None or v == "":
        return ()
    if isinstance(v, str):  # CSV: "S1;S10" or a JSON list
        v = v.strip()
        if v.startswith("["):
            v = json.loads(v)
        else:
            return tuple(x.strip() for x in v.replace(",", ";").split(";") if x.strip())
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"'{name}' must be a list of strings, got {v!r}")
    return tuple(v)


def render_chat(messages) -> str:
    """A conversation as the classifier reads it: "User: ...\nAssistant: ..." lines, the format the `transcript`
    operator trains on, so a conversation is scored as its last user turn in context. System messages are the
    operator's instructions, not user content: they are left out. `messages`: (role, content) pairs."""
    names = {"user": "User", "assistant": "Assistant"}
    return "\n".join(f"{names[r]}: {c}" for r, c in messages if r in names)


def messages_text(messages, target: str = "prompt") -> str:
    """A row's OpenAI-style `messages` ([{"role", "content"}, ...]) -> the text to classify: the last user turn
    in its context (`target` "prompt"), or the last assistant turn (`target` "response": classifier_input with the
    earlier turns as its prompt); ValueError naming the problem otherwise (the same rules as /v1/classify)."""
    pairs = _message_pairs(messages, target)
    if target == "response":
        return classifier_input(pairs[-1][1], "assistant", render_chat(pairs[:-1]))
    return render_chat(pairs)


def _message_pairs(messages, target: str | None = None) -> list[tuple[str, str]]:
    """Validated (role, content) pairs; `target` None: the last turn says what is classified."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    pairs = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]: expected an object with a 'role' and a string 'content'")
        if m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"messages[{i}].role: {m.get('role')!r}; expected 'system', 'user' or 'assistant'")
        if not m["content"].strip():
            raise ValueError(f"messages[{i}].content is empty")
        pairs.append((m["role"], m["content"]))
    last = pairs[-1][0]
    if last == "assistant" and target in (None, "response"):
        if not any(r == "user" for r, _ in pairs[:-1]):
            raise ValueError("messages: an assistant reply to classify needs the user prompt it answers before it")
        return pairs
    if target == "response":
        raise ValueError(f"messages: target 'response' classifies the last turn, which must be the assistant's; "
                         f"got {last!r}")
    if last != "user":
        raise ValueError(f"messages: the last turn must be the user message (or assistant reply) to classify; "
                         f"got {last!r}")
    return pairs


def example_from_dict(row: dict, *, strict_categories: bool = True, default_source: str = "",
                      codes: tuple[str, ...] | None = None) -> Example:
    """Validate one row; raise ValueError with the reason. A row may give `messages` (a conversation, rendered
    by `messages_text`) instead of `text`. `codes`: the policy's category codes (default: the built-in policy's),
    which `categories` must come from unless not `strict_categories`."""
    if not isinstance(row, dict):
        raise ValueError(f"row is not an object: {type(row).__name__}")
    unknown = set(row) - set(_FIELDS) - {"messages"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(set(_FIELDS) | {'messages'})}")
    text = row.get("text")
    role, prompt = row.get("role") or "user", row.get("prompt") or ""
    if row.get("messages") is not None:
        if text:
            raise ValueError("give either 'text' or 'messages', not both")
        if row.get("prompt"):
            raise ValueError("give the prompt inside 'messages' (the turns before the reply), not as 'prompt'")
        pairs = _message_pairs(row["messages"])
        if pairs[-1][0] == "assistant":  # a response row: the reply, with the turns before it as its prompt
            role, text, prompt = "assistant", pairs[-1][1], render_chat(pairs[:-1])
        else:
            text = render_chat(pairs)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected 'user' (a prompt) or 'assistant' (a response)")
    if not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    if role == "assistant" and not prompt.strip():
        raise ValueError("a response row (role 'assistant') needs the 'prompt' it answers")
    if role == "user" and prompt:
        raise ValueError("'prompt' is for response rows only (role 'assistant')")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'text' (or 'messages')")
    label = row.get("label")
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected 'safe' or 'unsafe'")
    cats = _as_list(row.get("categories"), "categories")
    if strict_categories:
        known = CATEGORY_CODES if codes is None else codes
        bad = [c for c in cats if c not in known]
        if bad:
            raise ValueError(f"unknown category {bad}; expected the policy's codes {list(known)}")
    rid = row.get("id")
    if rid is None or str(rid).strip() == "":
        raise ValueError("missing 'id'")
    style = row.get("style") or ""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {[s for s in STYLES if s]}")
    rnd = row.get("round") or 0
    try:
        rnd = int(rnd)
    except (TypeError, ValueError):
        raise ValueError(f"'round' must be an integer, got {rnd!r}") from None
    return Example(
        id=str(rid), text=text, label=label, categories=cats, source=str(row.get("source") or default_source),
        style=style, tags=_as_list(row.get("tags"), "tags"), seed_id=str(row.get("seed_id") or ""),
        parent_id=str(row.get("parent_id") or ""), stage=str(row.get("stage") or "seed"), round=rnd,
        generator=str(row.get("generator") or ""), created_at=str(row.get("created_at") or ""), role=role,
        prompt=prompt)


def _iter_rows(path: Path) -> Iterable[tuple[int, Any]]:
    """Yield (line, row-or-Exception) for every record of a supported file."""
    suffix = path.suffix.lower()
    if path.is_dir() and (path / "data.parquet").is_file():  # a guardray data folder (synth/v*/curated, ...)
        yield from _iter_rows(path / "data.parquet")
    elif path.is_dir():  # Hugging Face datasets folder (save_to_disk)
        import datasets
        if not any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
            raise DataError(f"{path}: a folder holding neither data.parquet (a guardray data folder) nor a Hugging "
                            "Face datasets folder (save_to_disk); pass a .jsonl, .csv or .parquet file, or such a "
                            "folder")
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{path}: a DatasetDict; pass one split's folder")
        for i, row in enumerate(ds):
            yield i + 1, row
    elif suffix == ".parquet":
        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield i + 1, row
    elif suffix in (".jsonl", ".json", ".csv"):
        raw = path.read_bytes()
        if suffix == ".csv":
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                yield 1, ValueError(f"bad encoding (not UTF-8): {e}")
                return
            reader = csv.DictReader(io.StringIO(text, newline=""))
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None and v not in (None,)}
        else:
            for i, line in enumerate(raw.split(b"\n")):
                if not line.strip():
                    continue
                try:
                    s = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield i + 1, ValueError(f"bad encoding (not UTF-8): {e.reason} at byte {e.start}")
                    continue
                try:
                    yield i + 1, json.loads(s)
                except json.JSONDecodeError as e:
                    yield i + 1, ValueError(f"invalid JSON: {e.msg}")
    else:
        raise DataError(f"{path}: unsupported format '{suffix}'; use .jsonl, .csv, .parquet or a datasets folder")


def read_examples(path: str | Path, *, skip_bad: bool = False, strict_categories: bool = True,
                  allow_duplicate_ids: bool = False, codes: tuple[str, ...] | None = None,
                  prepare: Callable[[Any, Path, int], Any] | None = None) -> LoadResult:
    """Load Examples from a file. Bad rows raise `DataError` (all of them listed) unless ``skip_bad``.
    `prepare(row, path, line)`, where given, rewrites each parsed row before it is validated (raise ValueError to
    reject it): `guardray calibrate` reads exports of logged traffic that way."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    examples, errors, seen = [], [], set()
    for line, row in _iter_rows(path):
        try:
            if isinstance(row, Exception):
                raise row
            if prepare is not None:
                row = prepare(row, path, line)
            ex = example_from_dict(row, strict_categories=strict_categories, default_source=path.stem, codes=codes)
            if not allow_duplicate_ids and ex.id in seen:
                raise ValueError(f"duplicate id {ex.id!r}")
            seen.add(ex.id)
            examples.append(ex)
        except ValueError as e:
            errors.append(RowError(str(path), line, str(e)))
    if errors and not skip_bad:
        raise DataError(f"{path}: {len(errors)} invalid row(s) (pass skip_bad / --skip-bad to skip them)", errors)
    if not examples and not errors:
        raise DataError(f"{path}: no rows")
    return LoadResult(examples, errors)


def examples_to_table(examples: list[Example]) -> pa.Table:
    return pa.Table.from_pylist([e.to_dict() for e in examples], schema=EXAMPLE_SCHEMA)


def write_examples(examples: list[Example], path: str | Path) -> Path:
    """Write by extension (.jsonl, .csv, .parquet) or, for a path without extension, a datasets folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq.write_table(examples_to_table(examples), path)
    elif suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for e in examples:
                f.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
    elif suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(_FIELDS))
            w.writeheader()
            for e in examples:
                d = e.to_dict()
                d["categories"] = ";".join(d["categories"])
                d["tags"] = ";".join(d["tags"])
                w.writerow(d)
    elif suffix == "":
        import datasets
        datasets.Dataset(examples_to_table(examples)).save_to_disk(str(path))
    else:
        raise DataError(f"{path}: unsupported format '{suffix}'; use .jsonl, .csv, .parquet or no suffix")
    return path


def read_many(paths, **kw) -> LoadResult:
    out = LoadResult([], [])
    for p in paths:
        r = read_examples(p, **kw)
        out.examples += r.examples
        out.skipped += r.skipped
    return out
