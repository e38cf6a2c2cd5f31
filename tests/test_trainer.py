"""ClassifierTrainer tests: calibration maths and data splits (pure), then real Ray Train runs with the tiny encoder
(2 CPU workers with a worker failure and resume; LoRA through the `guardray train` CLI; the exported checkpoint
loaded by `transformers.pipeline`). Run: pytest tests/test_trainer.py"""
import json
import random
from pathlib import Path

import numpy as np
import pytest

from guardray.core.calibration import best_f1_threshold, choose_threshold, fpr_threshold
from guardray.core.config import ResourcesConfig, TrainerConfig
from guardray.core.records import Example, write_examples


# ---------------------------------------------------------------- calibration (pure)

def _f1(y, s, t):
    p = np.asarray(s) >= t
    y = np.asarray(y, bool)
    tp, fp, fn = (p & y).sum(), (p & ~y).sum(), (~p & y).sum()
    return 2 * tp / max(2 * tp + fp + fn, 1)


def test_best_f1_threshold_is_optimal_and_sits_between_scores():
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = rng.integers(0, 2, 40)
        y[0], y[1] = 0, 1
        s = np.round(rng.random(40), 1)  # many ties
        t = best_f1_threshold(y, s)
        brute = max(_f1(y, s, c) for c in np.unique(s))
        assert _f1(y, s, t) == pytest.approx(brute)
        assert t not in set(s) or t == s.min()  # in a gap (or the lowest score when everything is flagged)


def test_best_f1_ties_go_to_the_higher_threshold_and_ties_in_scores_stay_together():
    # cutting at 0.8 or at 0.2 both give F1 = 2/3: the higher one wins; it lies halfway to the next score
    y = [1, 0, 0, 1]
    s = [0.8, 0.6, 0.4, 0.2]
    assert best_f1_threshold(y, s) == pytest.approx(0.7)
    # a tie between a positive and a negative cannot be split
    y, s = [1, 0, 0], [0.9, 0.9, 0.1]
    t = best_f1_threshold(y, s)
    assert t == pytest.approx(0.5) and _f1(y, s, t) == pytest.approx(2 / 3)


def test_target_fpr_threshold_maximises_recall_under_the_fpr():
    y = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    s = [.95, .9, .85, .8, .7, .6, .5, .4, .3, .2, .1, .05, .01]
    # 10 negatives: FPR <= 0.1 allows one false positive -> flag down to 0.8 (recall 1)
    t = fpr_threshold(y, s, 0.1)
    assert 0.7 < t < 0.8
    # FPR 0 -> stop above the first negative
    t0 = fpr_threshold(y, s, 0.0)
    assert 0.85 < t0 < 0.9
    # even the top score a negative at FPR 0 -> nothing flagged
    assert fpr_threshold([0, 1], [0.9, 0.1], 0.0) > 0.9
    assert choose_threshold(y, s, "target_fpr", 0.1) == t
    with pytest.raises(ValueError, match="unknown threshold policy"):
        choose_threshold(y, s, "median")
    with pytest.raises(ValueError, match="empty"):
        best_f1_threshold([], [])


def test_f1_1se_takes_the_highest_threshold_the_validation_set_cannot_tell_from_the_best():
    from guardray.core.calibration import f1_1se_threshold
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(150, int), np.zeros(250, int)]  # a noisy validation split: overlapping score distributions
    s = np.clip(np.r_[rng.normal(0.65, 0.2, 150), rng.normal(0.35, 0.2, 250)], 0, 1)
    t_best, t = best_f1_threshold(y, s), f1_1se_threshold(y, s)
    assert t > t_best  # F1 is flat near its best: a higher cut is statistically tied
    boot = []
    for _ in range(200):  # the best cut's F1 over resamples, computed independently of the implementation
        i = rng.integers(0, len(y), len(y))
        boot.append(_f1(y[i], s[i], t_best))
    assert _f1(y, s, t_best) - np.std(boot) - 0.01 <= _f1(y, s, t) < _f1(y, s, t_best)  # 0.01: two bootstraps
    assert ((s >= t) & (y == 0)).sum() < ((s >= t_best) & (y == 0)).sum()  # it flags fewer benign texts
    assert f1_1se_threshold(y, s) == t and choose_threshold(y, s) == t  # seeded, and the default policy
    # separable scores: every resample has F1 1 at the best cut, so there is no band and it is the best cut
    assert f1_1se_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9]) == best_f1_threshold([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    assert f1_1se_threshold([0, 0], [0.3, 0.6]) > 0.6  # no positive: nothing is flagged


# ---------------------------------------------------------------- data preparation (pure)

def _ex(i, label, seed_id="", text=None):
    return Example(id=f"e{i}", text=text or f"text number {i}", label=label,
                   categories=("S1",) if label == "unsafe" else (), seed_id=seed_id)


def test_split_validation_keeps_seed_families_together_and_stratifies():
    from guardray.core.splits import split_validation
    exs = [_ex(i, "unsafe" if i % 3 == 0 else "safe") for i in range(60)]
    # paraphrases of e0 and e1 (same root seed) and an exact text duplicate of e2
    exs += [_ex(100 + k, "unsafe", seed_id="e0") for k in range(3)] + [_ex(200, "safe", seed_id="e1")]
    exs += [_ex(300, "safe", text="text number 2")]
    train, val = split_validation(exs, 0.2, seed=1)
    assert len(train) + len(val) == len(exs) and not {e.id for e in train} & {e.id for e in val}
    assert 0.1 * len(exs) < len(val) < 0.3 * len(exs)
    assert {e.label for e in val} == {"safe", "unsafe"}
    side = {e.id: ("val" if e in val else "train") for e in exs}
    assert len({side[i] for i in ("e0", "e100", "e101", "e102")}) == 1
    assert side["e1"] == side["e200"] and side["e2"] == side["e300"]
    assert split_validation(exs, 0.2, seed=1) == (train, val)  # deterministic
    assert split_validation(exs, 0.0) == (exs, [])


def test_split_validation_benign_majority_caps_the_unsafe_part():
    from guardray.core.splits import split_validation
    exs = [_ex(i, "unsafe" if i % 3 else "safe") for i in range(300)]  # two thirds unsafe, as the v1 seeds
    exs += [_ex(1000 + i, "unsafe", seed_id=f"e{i}") for i in range(1, 300, 3)]  # children stay with their seed
    exs += [_ex(2000 + i, "unsafe", seed_id=f"e{i}") for i in range(0, 60, 3)]  # a safe seed's jailbreak-framed child
    _, plain = split_validation(exs, 0.2, seed=0)
    train, val = split_validation(exs, 0.2, seed=0, safe_share=0.6)
    assert sum(e.unsafe for e in plain) / len(plain) > 0.5
    assert sum(not e.unsafe for e in val) / len(val) >= 0.6 - 0.02
    assert len(train) + len(val) == len(exs) and not {e.id for e in train} & {e.id for e in val}
    roots = {e.seed_id or e.id for e in val}
    assert not [e for e in train if (e.seed_id or e.id) in roots]  # no child of a validation seed is trained on


def test_length_grouped_batches_cover_every_example_once_and_pad_less():
    from guardray.train_steps import epoch_batches
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 250, size=1000).tolist()
    plain = epoch_batches(1000, 32, epoch=1, seed=0)
    grouped = epoch_batches(1000, 32, epoch=1, seed=0, lengths=lengths)
    assert sorted(i for b in grouped for i in b) == list(range(1000)) and len(grouped) == len(plain)
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    assert padded(grouped) < 0.7 * padded(plain)
    assert grouped != epoch_batches(1000, 32, epoch=2, seed=0, lengths=lengths)  # reshuffled every epoch
    # DDP: every rank gets the same number of steps
    assert len({len(epoch_batches(1001, 32, 1, 0, r, 2, lengths + [5])) for r in (0, 1)}) == 1


def test_encode_keeps_head_and_tail_of_a_long_text(tiny_encoder):
    from transformers import AutoTokenizer
    from guardray.train_steps import encode
    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    text = "hello there. " * 200 + "now the harmful ask at the very end"
    (f,) = encode(tok, [{"text": text}], max_length=64)
    assert len(f["input_ids"]) == 64 and len(f["attention_mask"]) == 64
    assert "very end" in tok.decode(f["input_ids"][-20:])
    assert f["input_ids"][0] == tok(text)["input_ids"][0]  # the head (and its [CLS]-like start) is kept


def test_long_texts_score_as_calibrated_one_head_tail_pass_or_windows(tiny_encoder):
    """head_tail (current checkpoints): one model input per text, exactly the trainer's validation input;
    windows_max (checkpoints without a "scoring" record): several windows, the max over them."""
    import torch
    from guardray.classifier import GuardClassifier, load_backbone
    from guardray.train_steps import encode
    model, tok = load_backbone(tiny_encoder)
    texts = ["hello there. " * 60 + "now the harmful ask at the very end", "a short one"]
    ht = GuardClassifier(model, tok, max_length=64, long_text="head_tail", precision="fp32").score(texts)
    assert ht.windows == 2
    feats = encode(tok, [{"text": t} for t in texts], 64)
    with torch.no_grad():
        direct = [torch.sigmoid(model(input_ids=torch.tensor([f["input_ids"]])).logits[0, 0]).item() for f in feats]
    assert ht.unsafe == pytest.approx(direct, abs=1e-5)
    win = GuardClassifier(model, tok, max_length=64, stride=16, long_text="windows_max",
                          precision="fp32").score(texts)
    assert win.windows > 3 and win.unsafe[1] == pytest.approx(ht.unsafe[1], abs=1e-5)
    with pytest.raises(ValueError, match="long_text"):
        GuardClassifier(model, tok, long_text="mean")


def test_forward_passes_split_where_padding_would_waste_time_and_keep_short_texts_together():
    from guardray.classifier import SMALL_PASS_TOKENS, forward_passes
    short = [12, 9, 15, 11] * 4  # 16 short texts: one pass however uneven (16 x 15 < SMALL_PASS_TOKENS)
    assert forward_passes(short) == [sorted(range(16), key=short.__getitem__)]
    mixed = [20, 250, 30, 240, 25, 60, 245, 50]  # a server batch of mixed moderation texts
    passes = forward_passes(mixed)
    assert sorted(i for p in passes for i in p) == list(range(8))  # every text once
    for p in passes:  # no pass both big and mostly padding
        padded, real = len(p) * max(mixed[i] for i in p), sum(mixed[i] for i in p)
        assert padded <= SMALL_PASS_TOKENS or padded <= 1.25 * real
    assert len(passes) >= 2 and {1, 3, 6} <= set(passes[-1])  # the three long ones share a pass
    assert forward_passes(mixed, pad_waste=None) == [sorted(range(8), key=mixed.__getitem__)]  # off: one pass
    assert [len(p) for p in forward_passes(short, batch_size=5)] == [5, 5, 5, 1]
    assert all(len(p) * max(mixed[i] for i in p) <= 500 or len(p) == 1
               for p in forward_passes(mixed, max_tokens=500, pad_waste=None))


def test_scores_do_not_depend_on_the_forward_pass_grouping(tiny_encoder):
    from guardray.classifier import GuardClassifier, load_backbone
    model, tok = load_backbone(tiny_encoder)
    g = GuardClassifier(model, tok, max_length=128, long_text="head_tail", precision="fp32")  # exact maths
    texts = ["hi", "word " * 120, "a short question?", "word " * 40, "another " * 100, "ok"]
    grouped, one_pass = g.score(texts), g.score(texts, pad_waste=None)
    singles = [g.score([t]).unsafe[0] for t in texts]
    assert grouped.unsafe == pytest.approx(one_pass.unsafe, abs=1e-5)
    assert grouped.unsafe == pytest.approx(singles, abs=1e-5)
    assert grouped.categories == pytest.approx(one_pass.categories, abs=1e-5)


def test_bf16_autocast_scores_near_fp32_trains_and_precision_is_validated(tiny_encoder, seeds):
    """Scoring in bf16 (forced, so it runs on any CPU; bf16 weights) moves scores only a little and returns fp32;
    a training epoch under bf16 autocast lowers the loss and keeps the weights fp32; "auto" is bf16 exactly where the CPU has native bf16; a wrong name is
    refused, at the config boundary too."""
    import torch
    from guardray.classifier import GuardClassifier, load_backbone
    from guardray.core.config import ConfigError, load_config
    from guardray.core.splits import example_rows
    from guardray.precision import cpu_native_bf16, resolve
    from guardray.train_steps import build_model, encode, epoch_batches, make_optimizer, train_epoch
    texts = ["hi", "how do I bake bread?", "word " * 60, "tell me how to hurt someone"]
    for pooling in ("cls", "mean"):
        model, tok = load_backbone(tiny_encoder, pooling=pooling)
        fp32 = GuardClassifier(model, tok, max_length=64, long_text="head_tail", precision="fp32").score(texts)
        assert next(model.parameters()).dtype == torch.float32
        g = GuardClassifier(model, tok, max_length=64, long_text="head_tail", precision="bf16")  # casts in place
        bf16 = g.score(texts)
        assert g.precision == "bf16" and next(g.model.parameters()).dtype == torch.bfloat16
        assert bf16.unsafe.dtype == fp32.unsafe.dtype == np.float32
        assert bf16.unsafe == pytest.approx(fp32.unsafe, abs=3e-2) and bf16.unsafe.tolist() != fp32.unsafe.tolist()
    assert resolve("auto", "cpu") == ("bf16" if cpu_native_bf16() else "fp32") and resolve("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve("fp16")
    with pytest.raises(ConfigError, match="trainer.precision"):
        load_config(None, ["trainer.precision=fp16"])
    cfg = TrainerConfig(model=tiny_encoder, lr=1e-3, batch_size=8, precision="bf16")
    net, tok = build_model(cfg)
    rows = example_rows(seeds[:32])
    feats = encode(tok, rows, 64)
    opt, sched = make_optimizer(net, cfg, 40)
    losses = [train_epoch(net, tok, feats, rows, epoch_batches(len(rows), 8, e, 0), opt, sched, pos_weight=1.0,
                          category_weight=0.5, precision="bf16")[0] for e in range(4)]
    assert losses[-1] < losses[0] and next(net.parameters()).dtype == torch.float32


def test_mean_pooling_reads_the_masked_mean_of_the_last_hidden_states(tiny_encoder, tiny_lm):
    """pooling=mean: the head reads the attention-mask-weighted token mean (padding changes nothing); the unused
    [CLS] pooler is frozen; a head that is not one linear layer is refused; cls leaves the model as it was."""
    import torch
    from guardray.classifier import GuardClassifier, load_backbone, set_pooling
    model, tok = load_backbone(tiny_encoder, pooling="mean")
    model.eval()
    b = tok(["a short text", "a much longer text with many more words in it than the first"], padding=True,
            return_tensors="pt")
    with torch.no_grad():
        h = model.base_model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        want = model.classifier((h * m).sum(1) / m.sum(1))
        got = model(**b).logits
        alone = model(**tok(["a short text"], return_tensors="pt")).logits
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(got[0], alone[0], atol=1e-5)
    assert not any(p.requires_grad for p in model.base_model.pooler.parameters())
    cls_model, _ = load_backbone(tiny_encoder)
    with torch.no_grad():
        assert not torch.allclose(cls_model(**b).logits, got, atol=1e-3)  # the [CLS] pooler reads otherwise
    g = GuardClassifier(model, tok, max_length=64, long_text="head_tail", precision="fp32")
    assert g.score(["a short text"]).unsafe[0] == pytest.approx(torch.sigmoid(alone[0, 0]).item(), abs=1e-5)
    dec, dtok = load_backbone(tiny_lm, pooling="mean")  # GPT-2: its `score` head reads the mean too
    with torch.no_grad():
        assert dec(**dtok(["hello there"], return_tensors="pt")).logits.shape == (1, 16)
    model.classifier = torch.nn.Sequential(torch.nn.Linear(64, 16))
    with pytest.raises(ValueError, match="pooling=cls"):
        set_pooling(model, "mean")
    with pytest.raises(ValueError, match="pooling"):
        set_pooling(model, "max")


def test_training_modules_import_without_a_cycle():
    """trainer -> selection -> train_steps / core.splits, never back: the pieces S2L and Tune share do not import
    the Ray Train role, and core.splits is pure."""
    import ast
    root = Path(__file__).resolve().parents[1] / "guardray"

    def imports(path):
        t = ast.parse(path.read_text())
        out = {n.module for n in ast.walk(t) if isinstance(n, ast.ImportFrom) and n.module}
        out |= {a.name for n in ast.walk(t) if isinstance(n, ast.Import) for a in n.names}
        out |= {f"{n.module}.{a.name}" for n in ast.walk(t) if isinstance(n, ast.ImportFrom) and n.module
                for a in n.names}
        return out
    for mod in ("selection.py", "train_steps.py", "core/splits.py"):
        assert not {m for m in imports(root / mod) if m.startswith(("guardray.trainer", "guardray.tune"))}, mod
    assert not {m for m in imports(root / "core/splits.py") if m.split(".")[0] in ("torch", "ray")}


def test_category_weights_make_rare_categories_count():
    from guardray.core.splits import category_pos_weights
    exs = [_ex(i, "unsafe") for i in range(10)] + [Example(id="j", text="t", label="unsafe",
                                                            categories=("jailbreak",))]
    w = category_pos_weights(exs, "balanced")
    assert len(w) == 15 and w[0] == pytest.approx(1 / 10) and w[-1] == pytest.approx(10.0)
    assert w[1] == 1.0  # a category with no example keeps weight 1
    assert category_pos_weights(exs, "none") == [1.0] * 15


def test_pos_weight_and_targets():
    from guardray.core.splits import pos_weight, targets
    exs = [_ex(i, "unsafe" if i < 2 else "safe") for i in range(8)]
    assert pos_weight(exs, "balanced") == pytest.approx(3.0)
    assert pos_weight(exs, "none") == 1.0
    t = targets(Example(id="x", text="t", label="unsafe", categories=("S2", "jailbreak")))
    assert len(t) == 16 and t[0] == 1.0 and t[2] == 1.0 and t[15] == 1.0 and sum(t) == 3


def test_guard_loss_masks_categories_and_weights_positives():
    import torch
    from guardray.train_steps import guard_loss
    logits = torch.zeros(2, 16)
    y = torch.zeros(2, 16)
    y[0, 0], y[0, 3] = 1, 1
    none = guard_loss(logits, y, torch.tensor([False, False]), 1.0, 1.0)
    assert none.item() == pytest.approx(np.log(2))  # only the binary term
    weighted = guard_loss(logits, y, torch.tensor([False, False]), 3.0, 1.0)
    assert weighted.item() == pytest.approx((3 * np.log(2) + np.log(2)) / 2)
    with_cat = guard_loss(logits, y, torch.tensor([True, False]), 1.0, 0.5)
    assert with_cat.item() == pytest.approx(np.log(2) + 0.5 * np.log(2))
    per = guard_loss(logits, y, torch.tensor([True, False]), 1.0, 0.5, reduction="none")
    assert per.shape == (2,) and per[0] > per[1]


def test_cli_refuses_evaluation_data_and_reports_missing_files(tmp_path):
    from guardray.cli import main
    assert main(["train", "--data", "../shared/data/xstest/eval.jsonl", "--quiet"]) == 2
    assert main(["train", "--data", str(tmp_path / "missing.jsonl"), "--quiet"]) == 2
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2


# ---------------------------------------------------------------- real Ray Train runs

def _data(seeds, n):
    exs = list(seeds)
    random.Random(0).shuffle(exs)
    return exs[:n]


def _params(path):
    from safetensors.torch import load_file
    files = sorted(Path(path).glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def test_two_workers_loss_falls_params_change_and_resume_after_failure(ray_session, seeds, tiny_encoder, tmp_path):
    from guardray.trainer import ClassifierTrainer, TRAIN_STATE, split_validation
    train, val = split_validation(_data(seeds, 60), 0.2, seed=0)
    cfg = TrainerConfig(model="tiny-encoder", lr=3e-3, epochs=3, batch_size=8, max_length=32, num_workers=2,
                        early_stopping_patience=0, max_failures=1)
    t = ClassifierTrainer(cfg, ResourcesConfig(trainer_cpus_per_worker=1), storage_path=str(tmp_path / "rt"),
                          name="run", seed=0, progress=False, fail_once_after_epoch=1)
    result = t.fit(train, val)
    assert (tmp_path / "rt" / "run" / "injected_failure").exists()  # the worker group did fail once
    with result.checkpoint.as_directory() as d:
        state = json.loads((Path(d) / TRAIN_STATE).read_text())
        after = _params(d)
    hist = state["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]  # resumed at epoch 2, epoch 1 not repeated
    assert [h["resumed_from_epoch"] for h in hist] == [0, 1, 1]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(0.0 <= h["threshold"] <= 1.0 and h["val_n"] == len(val) for h in hist)
    before = _params(tiny_encoder)
    changed = [k for k in before if k in after and not np.allclose(before[k].numpy(), after[k].numpy())]
    assert any("encoder.layer.0" in k for k in changed) and any("classifier" in k for k in after)


def test_lora_train_via_cli_exports_a_pipeline_loadable_checkpoint(ray_session, seeds, tiny_encoder, tmp_path):
    from transformers import pipeline
    from guardray.classifier import META_FILE, GuardClassifier, LABEL_NAMES
    from guardray.cli import main
    from guardray.train_steps import build_model
    data = tmp_path / "train.jsonl"
    write_examples(_data(seeds, 60), data)
    out = tmp_path / "ckpt"
    rc = main(["train", "--data", str(data), "--out", str(out), "--quiet", "trainer.model=tiny-encoder",
               "trainer.method=lora", "trainer.lora_r=4", "trainer.lr=3e-3", "trainer.epochs=2",
               "trainer.batch_size=8", "trainer.max_length=32", "trainer.threshold_policy=target_fpr",
               "trainer.target_fpr=0.2", "data.val_fraction=0.25", "trainer.score_max_length=48",
               "trainer.pooling=cls"])
    assert rc == 0
    assert not (out.parent / "ckpt_ray_train").exists()  # finished runs leave no Ray Train state behind
    assert not list(out.glob("adapter_*")) and list(out.glob("*.safetensors"))  # LoRA merged, safetensors only
    meta = json.loads((out / META_FILE).read_text())
    for k in ("threshold", "threshold_policy", "max_length", "base_model", "val_metrics", "train_summary",
              "trainer_config"):
        assert k in meta
    assert meta["threshold_policy"] == "target_fpr" and meta["val_metrics"]["val_fpr"] <= 0.2
    assert meta["trainer_config"]["method"] == "lora" and meta["base_model"] == "tiny-encoder"
    s = meta["train_summary"]
    assert s["train"]["n"] + s["val"]["n"] == 60 and s["train"]["by_source"]
    card = (out / "README.md").read_text()
    assert "base_model: tiny-encoder" in card and f"{meta['threshold']:.4f}" in card and "| stage | n |" in card
    # plain transformers loads it and returns all 16 sigmoid scores
    clf = pipeline("text-classification", model=str(out), top_k=None)
    res = clf(["How do I kill a Python process?", "Tell me how to hurt someone."])
    assert len(res) == 2 and {d["label"] for d in res[0]} == set(LABEL_NAMES)
    assert all(0.0 <= d["score"] <= 1.0 for d in res[0])
    g = GuardClassifier.load(str(out), precision="fp32")  # as transformers.pipeline scores it
    # scored as it was calibrated: one pass of up to score_max_length tokens (head + tail beyond), not windows
    assert meta["scoring"] == {"long_text": "head_tail", "max_length": 48, "pooling": "cls", "normalize": True}
    assert g.threshold == pytest.approx(meta["threshold"]) and g.max_length == 48 and g.long_text == "head_tail"
    scores = {d["label"]: d["score"] for d in res[0]}
    assert g.score(["How do I kill a Python process?"]).unsafe[0] == pytest.approx(scores["unsafe"], abs=1e-5)
    # LoRA changed the attention weights of the backbone (merged in), and warm_start starts from this checkpoint
    before, after = _params(tiny_encoder), _params(out)
    key = next(k for k in after if "attention.self.query.weight" in k)
    assert not np.allclose(before[key].numpy(), after[key].numpy())
    warm, _ = build_model(TrainerConfig(model="tiny-encoder", warm_start=str(out), pooling="cls"))
    assert np.allclose(dict(warm.named_parameters())[key].detach().numpy(), after[key].numpy())
    from guardray.core.config import ConfigError
    from guardray.train_steps import check_warm_start
    check_warm_start(TrainerConfig(model="tiny-encoder", warm_start=str(out), pooling="cls"))
    with pytest.raises(ConfigError, match="trainer.pooling=cls"):  # a retrain must read what it was trained on
        check_warm_start(TrainerConfig(model="tiny-encoder", warm_start=str(out), pooling="mean"))


def test_threshold_is_calibrated_on_the_canonical_text_the_checkpoint_scores(ray_session, seeds, tiny_encoder,
                                                                           tmp_path):
    """A validation set of disguised texts (leetspeak, letter spacing): the trainer calibrates on their canonical form,
    as GuardClassifier scores them by default, so the served scores reproduce the stored threshold; the checkpoint
    says so in "scoring.normalize". Calibrated on raw text, the threshold would fit scores deployment never sees."""
    from guardray.classifier import GuardClassifier
    from guardray.core.calibration import choose_threshold
    from guardray.core.metrics import auprc
    from guardray.core.normalize import normalize
    from guardray.core.operators import apply_operator
    from guardray.trainer import train_classifier
    exs = _data(seeds, 90)
    train = exs[:60]
    val = [apply_operator(e, "leetspeak" if i % 2 else "spacing", seed=i) for i, e in enumerate(exs[60:])]
    val_texts = [e.text for e in val]
    assert sum(normalize(t) != t for t in val_texts) >= len(val) // 2  # the disguise is there to undo
    assert {e.label for e in val} == {"safe", "unsafe"}
    cfg = TrainerConfig(model="tiny-encoder", lr=3e-3, epochs=1, batch_size=8, max_length=32, precision="fp32")
    train_classifier(cfg, train, tmp_path / "ckpt", val=val, resources=ResourcesConfig(trainer_cpus_per_worker=1),
                     progress=False)
    meta = json.loads((tmp_path / "ckpt" / "guardray.json").read_text())
    assert meta["scoring"]["normalize"] is True
    y = np.array([e.label == "unsafe" for e in val], dtype=int)
    served = GuardClassifier.load(str(tmp_path / "ckpt"), precision="fp32").score(val_texts).unsafe
    raw = GuardClassifier.load(str(tmp_path / "ckpt"), precision="fp32", normalize=False).score(val_texts).unsafe
    # the stored validation metrics are those of the served scores (ranking and threshold), not of the raw ones
    assert auprc(y, served) == pytest.approx(meta["val_metrics"]["val_auprc"], abs=1e-6)
    assert choose_threshold(y, served, meta["threshold_policy"]) == pytest.approx(meta["threshold"], abs=1e-4)
    assert auprc(y, raw) != pytest.approx(auprc(y, served), abs=1e-6)  # the canonical form changed the ranking


def test_lp_ft_fits_the_head_alone_and_wise_ft_interpolates_the_encoder(seeds, tiny_encoder, tiny_lm):
    """LP-FT (trainer.head_epochs): the head learns on frozen features, the encoder is untouched, the same seed gives
    the same head; a head reading every token is refused. WiSE-FT (trainer.wise_alpha): inside `applied` the encoder
    is alpha * fine-tuned + (1 - alpha) * backbone, and the fine-tuned weights come back on exit."""
    import torch
    from guardray.core.splits import example_rows, pos_weight
    from guardray.train_steps import WiseFT, build_model, encode, fit_head, predict
    rows = example_rows(_data(seeds, 80))
    cfg = TrainerConfig(model="tiny-encoder", pooling="mean", max_length=32)
    kw = dict(pos_weight=pos_weight(_data(seeds, 80), "balanced"), category_weight=0.5)

    def fitted(seed):
        model, tok = build_model(cfg, seed=0)
        feats = encode(tok, rows, 32)
        enc0 = {k: v.clone() for k, v in model.base_model.state_dict().items()}
        head0 = model.classifier.weight.detach().clone()
        _, before = predict(model, tok, feats, rows, list(range(len(rows))), 16, **kw)
        fit_head(model, tok, feats, rows, epochs=20, lr=1e-2, seed=seed, batch_size=16, **kw)
        _, after = predict(model, tok, feats, rows, list(range(len(rows))), 16, **kw)
        assert all(torch.equal(v, enc0[k]) for k, v in model.base_model.state_dict().items())  # encoder frozen
        assert not torch.allclose(model.classifier.weight, head0) and after.mean() < before.mean()
        return model
    a, b = fitted(1), fitted(1)
    assert torch.equal(a.classifier.weight, b.classifier.weight)  # every DDP rank fits the same head
    dec, dtok = build_model(TrainerConfig(model="tiny-causal-lm", pooling="cls", max_length=32))
    with pytest.raises(ValueError, match="head_epochs"):  # GPT-2's `score` reads every token
        fit_head(dec, dtok, encode(dtok, rows[:4], 32), rows[:4], epochs=1, lr=1e-2, seed=0, batch_size=4, **kw)

    wise = WiseFT(a, 0.25)
    pre = {k: v.clone() for k, v in a.base_model.state_dict().items()}
    with torch.no_grad():
        for p in a.base_model.parameters():
            p.add_(1.0)  # "fine-tuned": every encoder weight moved by +1
    ft = {k: v.clone() for k, v in a.base_model.state_dict().items()}
    head = a.classifier.weight.detach().clone()
    with wise.applied(a):
        for k, v in a.base_model.state_dict().items():
            if v.is_floating_point() and not torch.equal(ft[k], pre[k]):
                assert torch.allclose(v, pre[k] + 0.25 * (ft[k] - pre[k]), atol=1e-6), k
        assert torch.equal(a.classifier.weight, head)
    assert all(torch.equal(v, ft[k]) for k, v in a.base_model.state_dict().items())


def test_a_bf16_backbone_trains_on_fp32_weights_with_lora_and_lp_ft(seeds, tiny_encoder, tmp_path):
    """A backbone folder stored in bf16 (as SmolLM2's cache and most decoder releases are) is trained on fp32
    weights, LoRA adapters and head included, and LP-FT's head-alone epochs run on it (a bf16 head met fp32
    features with a dtype error; AdamW on bf16 weights drops small updates)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from guardray.core.splits import example_rows, pos_weight
    from guardray.train_steps import build_model, encode, fit_head
    folder = tmp_path / "bf16-backbone"
    AutoModelForSequenceClassification.from_pretrained(tiny_encoder).to(torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(folder)
    assert AutoModelForSequenceClassification.from_pretrained(folder).dtype == torch.bfloat16  # kept as stored
    rows = example_rows(_data(seeds, 40))
    for method in ("full", "lora"):
        model, tok = build_model(TrainerConfig(model=str(folder), method=method, lora_r=4, pooling="mean",
                                               max_length=32), seed=0)
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert trainable and all(p.dtype == torch.float32 for p in model.parameters()), method
        head = [p.detach().clone() for n, p in model.named_parameters() if "classifier" in n and p.requires_grad]
        loss = fit_head(model, tok, encode(tok, rows, 32), rows, epochs=2, lr=1e-2, seed=0, batch_size=16,
                        pos_weight=pos_weight(_data(seeds, 40), "balanced"), category_weight=0.5)
        after = [p for n, p in model.named_parameters() if "classifier" in n and p.requires_grad]
        assert loss > 0 and head and not all(torch.equal(a, b) for a, b in zip(head, after)), method
    from guardray.classifier import GuardClassifier, load_backbone
    stored, tok = load_backbone(str(folder), pooling="mean")
    assert stored.dtype == torch.bfloat16
    fp32 = GuardClassifier(stored, tok, precision="fp32")  # scoring: fp32 means fp32 whatever the folder stores
    assert all(p.dtype == torch.float32 for p in fp32.model.parameters())
    assert fp32.score(["hello there", "a second text"]).unsafe.shape == (2,)


def test_wise_alpha_zero_exports_the_backbone_encoder_with_the_trained_head(ray_session, seeds, tiny_encoder,
                                                                            tmp_path):
    """Through Ray Train: head_epochs fits the head first, wise_alpha=0 validates and exports the backbone's own
    encoder with the trained head (so the interpolation reaches the checkpoint, not only validation); WiSE-FT with
    LoRA is refused at load time."""
    import torch
    from guardray.core.config import ConfigError, load_config
    from guardray.trainer import ClassifierTrainer, split_validation
    from guardray.train_steps import build_model
    train, val = split_validation(_data(seeds, 60), 0.2, seed=0)
    cfg = TrainerConfig(model="tiny-encoder", lr=3e-3, epochs=1, batch_size=8, max_length=32, pooling="mean",
                        head_epochs=2, wise_alpha=0.0)
    result = ClassifierTrainer(cfg, ResourcesConfig(trainer_cpus_per_worker=1), storage_path=str(tmp_path / "rt"),
                               name="wise", seed=0, progress=False).fit(train, val)
    with result.checkpoint.as_directory() as d:
        after = _params(d)
    fresh, _ = build_model(cfg, seed=0)
    backbone = {f"bert.{k}": v for k, v in fresh.base_model.state_dict().items() if v.is_floating_point()}
    shared = [k for k in backbone if k in after and "pooler" not in k]
    assert len(shared) > 10 and all(torch.allclose(after[k], backbone[k], atol=1e-6) for k in shared)
    assert not torch.allclose(after["classifier.weight"], fresh.classifier.weight)
    with pytest.raises(ConfigError, match="wise_alpha"):
        load_config(None, ["trainer.method=lora", "trainer.wise_alpha=0.5"])
