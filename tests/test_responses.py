"""Response classification: response rows (role assistant + the prompt they answer), the role marker the classifier
reads, the team's response seeds and the rules they follow, and evaluation that reports prompt and response rows
apart."""
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from guardray.core.records import (RESPONSE_MARKER, Example, classifier_input, example_from_dict, read_examples,
                                   write_examples)

RESPONSES = Path(__file__).resolve().parent.parent / "guardray" / "data" / "responses.jsonl"


def test_a_response_row_carries_its_prompt_and_is_read_after_the_role_marker():
    e = example_from_dict({"id": "r", "text": "Happy to help with that.", "label": "safe", "role": "assistant",
                           "prompt": "How do I bake bread?"})
    assert e.role == "assistant" and e.prompt == "How do I bake bread?"
    assert e.model_text == f"{RESPONSE_MARKER}\nUser: How do I bake bread?\nAssistant: Happy to help with that."
    p = example_from_dict({"id": "p", "text": "How do I bake bread?", "label": "safe"})
    assert p.role == "user" and p.model_text == "How do I bake bread?"  # a prompt is read as it is
    # a conversation ending in the assistant's turn is a response row: the turns before it are its prompt
    c = example_from_dict({"id": "c", "label": "unsafe", "categories": ["S1"], "messages": [
        {"role": "system", "content": "be nice"}, {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"}]})
    assert (c.role, c.text, c.prompt) == ("assistant", "d", "User: a\nAssistant: b\nUser: c")
    assert c.model_text == f"{RESPONSE_MARKER}\nUser: a\nAssistant: b\nUser: c\nAssistant: d"
    assert classifier_input("x", "user", "") == "x"


@pytest.mark.parametrize("row, needle", [
    ({"text": "ok", "role": "assistant"}, "needs the 'prompt' it answers"),
    ({"text": "ok", "role": "bot", "prompt": "p"}, "unknown role 'bot'"),
    ({"text": "ok", "prompt": "p"}, "'prompt' is for response rows only"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "needs the user prompt it answers before it"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "prompt": "q"},
     "give the prompt inside 'messages'"),
])
def test_a_bad_response_row_names_the_problem(row, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        example_from_dict({"id": "x", "label": "safe", **row})


def test_response_rows_survive_every_file_format(tmp_path):
    rows = [Example(id="r", text="No.", label="safe", role="assistant", prompt="Help me hack him"),
            Example(id="p", text="Hi", label="safe")]
    for suffix in (".jsonl", ".csv", ".parquet"):
        back = read_examples(write_examples(rows, tmp_path / f"x{suffix}")).examples
        assert [(e.role, e.prompt) for e in back] == [("assistant", "Help me hack him"), ("user", "")], suffix


# ---------------------------------------------------------------- the team's response seeds

@pytest.fixture(scope="module")
def responses():
    return read_examples(RESPONSES).examples


def test_the_response_seeds_pair_each_unsafe_prompt_with_a_compliance_and_a_safe_reply(responses):
    from guardray.data import SEEDS_PATH
    seeds = {e.id: e for e in read_examples(SEEDS_PATH).examples}
    assert all(e.role == "assistant" for e in responses) and len({e.id for e in responses}) == len(responses)
    for e in responses:  # every prompt is a packaged seed, verbatim, and the row points at it (grouped splits)
        assert e.seed_id in seeds and seeds[e.seed_id].text == e.prompt, e.id
    unsafe = [e for e in responses if e.unsafe]
    assert len(unsafe) == 180 and Counter(e.categories[0] for e in unsafe) == {c: 12 for c in (
        *(f"S{i}" for i in range(1, 15)), "jailbreak")}
    assert all(seeds[e.seed_id].unsafe and e.categories == seeds[e.seed_id].categories for e in unsafe)
    twins = {e.seed_id for e in responses if not e.unsafe and seeds[e.seed_id].unsafe}
    assert twins == {e.seed_id for e in unsafe}  # the same unsafe prompt also gets a refusal or safe completion
    kinds = Counter(t for e in responses if not e.unsafe for t in e.tags
                    if t in ("refusal", "safe_completion", "helpful", "over_refusal"))
    assert kinds["refusal"] + kinds["safe_completion"] == 180 and kinds["helpful"] + kinds["over_refusal"] == 120
    assert min(kinds.values()) >= 15
    # length carries no label signal: median words within a factor of 1.5 across labels
    med = {lab: sorted(len(e.text.split()) for e in responses if e.label == lab)[len(
        [e for e in responses if e.label == lab]) // 2] for lab in ("safe", "unsafe")}
    assert max(med.values()) <= 1.5 * min(med.values()), med


def test_unsafe_responses_describe_compliance_and_deliver_nothing(responses):
    """The seeds rule for responses: compliance is described, never delivered - no steps, lists, quantities,
    code, links or contact details."""
    for e in (e for e in responses if e.unsafe):
        assert not re.search(r"\d", e.text), e.id  # no quantities, doses, numbers
        assert not re.search(r"https?://|www\.|\S+@\S+\.\w+|```", e.text), e.id
        assert not re.search(r"(?m)^\s*(?:[-*\u2022]|\w[.)]|step\b)", e.text, re.I), e.id  # no lists or steps
        assert len(e.text.split()) <= 90, e.id


# ---------------------------------------------------------------- evaluation

def test_evaluation_reports_prompt_and_response_rows_apart(tmp_path, responses):
    from guardray.evaluate import evaluate
    rows = responses[:12] + [Example(id=f"p{i}", text=f"question {i}", label=("safe", "unsafe")[i % 2])
                             for i in range(10)]
    f = write_examples(rows, tmp_path / "mixed.jsonl")
    rep = evaluate("tiny-encoder", [str(f)], tmp_path / "out", plots=False, progress=False)
    assert set(rep["datasets"]) == {"mixed:prompt", "mixed:response"}
    assert rep["datasets"]["mixed:response"]["n"] == 12 and rep["datasets"]["mixed:prompt"]["n"] == 10
    scored = [json.loads(x) for x in (tmp_path / "out" / "scores" / "mixed_response.jsonl").read_text().splitlines()]
    assert [s["id"] for s in scored] == [e.id for e in responses[:12]]


def test_the_builtin_policy_trains_on_responses_and_conversations_but_rewrites_single_prompts_only():
    from guardray.core.config import load_config
    from guardray.data import CONVERSATIONS_PATH, RESPONSES_PATH, SEEDS_PATH, load_seeds, single_prompts
    from guardray.synth import select_seeds
    seeds = load_seeds()
    by_file = {p: len(read_examples(p).examples) for p in (SEEDS_PATH, RESPONSES_PATH, CONVERSATIONS_PATH)}
    assert len(seeds) == sum(by_file.values()) and by_file[CONVERSATIONS_PATH] == 180
    convs = [e for e in seeds if "multi_turn" in e.tags]
    assert all(e.role == "user" and e.text.startswith("User: ") and "\nAssistant: " in e.text for e in convs)
    assert Counter(e.label for e in convs) == {"safe": 90, "unsafe": 90}
    single = single_prompts(seeds)
    assert len(single) == by_file[SEEDS_PATH]
    cfg = load_config(None, ["synth.max_seeds=0"])
    picked = select_seeds(cfg, seeds)  # what the generator is given: no responses, no conversations
    assert picked and all(e.role == "user" and "multi_turn" not in e.tags for e in picked)
