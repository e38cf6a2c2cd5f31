"""One model, one loss, one epoch: the torch pieces of classifier training, shared by the Ray Train workers
(guardray.trainer), the S2L proxy (guardray.selection) and the benchmarks. No Ray here.

`build_model` loads the backbone (or a warm start) with guardray's 16-output head, LoRA-wrapped if asked;
`guard_loss` is BCE on the unsafe output plus the weighted category BCE; `encode` makes head + tail token features;
`epoch_batches` groups by length; `fit_head` is LP-FT's head-only stage; `train_epoch` / `predict` run them;
`WiseFT` interpolates the encoder back towards the backbone; `val_metrics` calibrates the threshold on
validation predictions; `trainable_state` / `load_trainable` move the trained weights in and out of checkpoints.
"""
from __future__ import annotations

import math

from guardray.classifier import LABEL_NAMES, head_tail_features
from guardray.core.config import TrainerConfig
from guardray.precision import autocast


def build_model(cfg: TrainerConfig, seed: int = 0, label_names=LABEL_NAMES):
    """(model, tokenizer): the backbone or `cfg.warm_start` with the head for `label_names` ("unsafe" + the
    policy's codes), LoRA-wrapped if asked."""
    import torch
    from guardray.classifier import load_backbone
    from guardray.models import resolve
    torch.manual_seed(seed)  # the new head's init is the same on every worker (DDP also broadcasts rank 0's)
    # fp32 master weights whatever dtype the folder stores (SmolLM2's cache and most decoder releases are bf16, and
    # transformers keeps a folder's dtype): bf16 compute is autocast's job (trainer.precision); AdamW on bf16
    # weights loses small updates, and a bf16 head met fp32 LP-FT features with a dtype error
    model, tok = load_backbone(resolve(cfg.warm_start or cfg.model), pooling=cfg.pooling,
                               label_names=tuple(label_names), dtype=torch.float32)
    if cfg.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known
        target = known.get(model.config.model_type, "all-linear")
        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, target_modules=target))
    return model, tok


def check_warm_start(cfg: TrainerConfig, label_names=LABEL_NAMES) -> None:
    """A warm start continues a checkpoint as it was trained: its recorded pooling must be `cfg.pooling`, and
    its head must be the one for `label_names` (the same policy)."""
    if not cfg.warm_start:
        return
    from guardray.classifier import read_meta
    from guardray.core.config import ConfigError
    from guardray.models import resolve
    meta = read_meta(resolve(cfg.warm_start))
    had = tuple(meta.get("label_names") or LABEL_NAMES)
    if meta and had != tuple(label_names):
        raise ConfigError(f"trainer.warm_start {cfg.warm_start} was trained for the categories {list(had[1:])}, "
                          f"but the policy has {list(label_names)[1:]}: warm-start from a checkpoint of this policy, "
                          "or train from the backbone (trainer.warm_start='')")
    was = (meta.get("scoring") or {}).get("pooling", "cls")
    if was != cfg.pooling:
        raise ConfigError(f"trainer.warm_start {cfg.warm_start} was trained with pooling={was}, but "
                          f"trainer.pooling={cfg.pooling}: set trainer.pooling={was} to continue it")


def guard_loss(logits, y, cat_mask, pos_weight: float, category_weight: float, reduction: str = "mean",
               cat_pos_weight=None):
    """BCE on output 0 (pos_weight on unsafe) + category_weight * mean BCE over the category outputs of rows in
    `cat_mask` (unsafe rows with categories; `cat_pos_weight` per category). reduction="none" gives the
    per-example loss (used by S2L)."""
    import torch
    import torch.nn.functional as F
    pw = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    binary = F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0], pos_weight=pw, reduction="none")
    cpw = None if cat_pos_weight is None else torch.as_tensor(cat_pos_weight, dtype=logits.dtype,
                                                               device=logits.device)
    cat = F.binary_cross_entropy_with_logits(logits[:, 1:], y[:, 1:], reduction="none", pos_weight=cpw).mean(1)
    m = cat_mask.to(logits.dtype)
    if reduction == "none":
        return binary + category_weight * cat * m
    # the category term averages over the rows that have one; `* 0` keeps the graph identical when none do
    cat_term = (cat * m).sum() / m.sum() if bool(m.sum() > 0) else cat.sum() * 0.0
    return binary.mean() + category_weight * cat_term


def encode(tok, rows: list[dict], max_length: int) -> list[dict]:
    """Token features per row. A text longer than `max_length` keeps its first quarter and its last three quarters
    of the budget (head + tail), not just the head: harm at the end of a long benign message must reach training,
    as the serving path's windows see it."""
    return head_tail_features(tok, [r["text"] for r in rows], max_length)


def scoring_length(tok, cfg: TrainerConfig) -> int:
    """Tokens per scored input: `score_max_length`, capped by the tokenizer's (model's) maximum."""
    cap = getattr(tok, "model_max_length", None)
    return min(cfg.score_max_length, cap) if cap and cap < 1_000_000 else cfg.score_max_length


def collate(tok, feats: list[dict], rows: list[dict], idx) -> dict:
    import torch
    batch = dict(tok.pad([feats[i] for i in idx], return_tensors="pt"))
    batch["y"] = torch.tensor([rows[i]["y"] for i in idx], dtype=torch.float32)
    batch["cat"] = torch.tensor([rows[i]["cat"] for i in idx], dtype=torch.bool)
    return batch


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world: int = 1,
                  lengths: list[int] | None = None, group: int = 50) -> list[list[int]]:
    """This rank's batches for one epoch: a seeded shuffle, padded (by wrapping) so every rank gets the same number
    of steps, as DDP needs, then strided across ranks like DistributedSampler. With `lengths`, batches are
    length-grouped (as transformers' LengthGroupedSampler): each run of `group` batches is sorted by length before
    it is cut, and the batches are shuffled, so a batch pads to similar lengths and one long text does not make 31
    short ones pay for its padding."""
    import torch
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per_rank = math.ceil(n / world)
    perm += perm[: per_rank * world - n]
    mine = perm[rank::world]
    if lengths is None:
        return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    mega = batch_size * group
    out = []
    for s in range(0, len(mine), mega):
        chunk = sorted(mine[s:s + mega], key=lambda i: -lengths[i])
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(out), generator=g).tolist()
    return [out[i] for i in order]


def lr_lambda(total_steps: int, warmup_ratio: float):
    warm = int(warmup_ratio * total_steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return f


def make_optimizer(model, cfg: TrainerConfig, total_steps: int):
    import torch
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in n.lower() else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, cfg.warmup_ratio))
    return opt, sched


def fit_head(model, tok, feats, rows, *, epochs: int, lr: float, seed: int, batch_size: int, pos_weight: float,
             category_weight: float, device="cpu", cat_pos_weight=None, precision: str = "auto") -> float:
    """LP-FT's first stage: fit the classification head alone on the frozen encoder's features, so the full
    fine-tune that follows starts from a head that fits them instead of a random one. The features (what the head
    reads: the pooler output, or the masked mean with pooling=mean) are computed once in eval mode, then the head
    trains `epochs` epochs on them with its own dropout, AdamW at a constant `lr`. Returns the last epoch's mean
    loss. The same seed gives the same head on every rank."""
    import torch
    from guardray.classifier import _head
    dropout, head = _head(model)
    n = len(rows)
    seen: list = []
    hook = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    was_training = model.training
    model.eval()
    x = None
    try:
        with torch.no_grad():
            order = sorted(range(n), key=lambda i: len(feats[i]["input_ids"]))
            for s in range(0, n, 64):
                idx = order[s:s + 64]
                b = {k: v.to(device) for k, v in collate(tok, feats, rows, idx).items() if k not in ("y", "cat")}
                with autocast(device, precision):
                    model(**b)
                h = seen.pop().float()
                if h.dim() != 2:
                    raise ValueError("trainer.head_epochs needs a head that reads one vector per text (BERT/MiniLM, "
                                     "or trainer.pooling=mean); set trainer.head_epochs=0 for this backbone")
                if x is None:
                    x = torch.empty(n, h.shape[1], device=device)
                x[idx] = h
    finally:
        hook.remove()
    y = torch.tensor([r["y"] for r in rows], dtype=torch.float32, device=device)
    cat = torch.tensor([r["cat"] for r in rows], dtype=torch.bool, device=device)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed * 100003 + 7)
    dropout.train()
    head.train()
    loss_sum = 0.0
    for _ in range(epochs):
        perm, loss_sum = torch.randperm(n, generator=g).tolist(), 0.0
        for s in range(0, n, batch_size):
            i = perm[s:s + batch_size]
            logits = head(dropout(x[i]))
            loss = guard_loss(logits.float(), y[i], cat[i], pos_weight, category_weight,
                              cat_pos_weight=cat_pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(i)
    model.train(was_training)
    return loss_sum / max(n, 1)


class WiseFT:
    """WiSE-FT: the encoder's weights interpolated between the fine-tuned ones and the backbone's (`alpha` = 1.0
    is the fine-tuned model, 0.0 the backbone; the head is not touched). Capture the backbone with
    `WiseFT(model, alpha)` before training; `with w.applied(model):` swaps the interpolated encoder in (to validate
    or export it) and puts the fine-tuned weights back on exit, so training continues from them."""

    def __init__(self, model, alpha: float):
        self.alpha = alpha
        self.pre = {k: v.detach().clone() for k, v in model.base_model.state_dict().items()}

    def applied(self, model):
        import contextlib

        @contextlib.contextmanager
        def swap():
            enc = model.base_model
            ft = {k: v.detach().clone() for k, v in enc.state_dict().items()}
            a = self.alpha
            enc.load_state_dict({k: (a * v + (1 - a) * self.pre[k].to(v.device)) if v.is_floating_point() else v
                                 for k, v in ft.items()})
            try:
                yield
            finally:
                enc.load_state_dict(ft)
        return swap()


def train_epoch(model, tok, feats, rows, batches, opt, sched, *, pos_weight: float, category_weight: float,
                device="cpu", max_grad_norm: float = 1.0, progress=None, cat_pos_weight=None,
                precision: str = "auto") -> tuple[float, int]:
    """One pass over `batches`; returns (mean loss, examples seen). `precision`: guardray.precision (fp32 weights
    and loss; "auto" = bf16 autocast where the device computes bf16 natively)."""
    import torch
    model.train()
    total, seen = 0.0, 0
    for idx in batches:
        b = collate(tok, feats, rows, idx)
        b = {k: v.to(device) for k, v in b.items()}
        y, cat = b.pop("y"), b.pop("cat")
        with autocast(device, precision):
            logits = model(**b).logits
        loss = guard_loss(logits.float(), y, cat, pos_weight, category_weight, cat_pos_weight=cat_pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(idx)
        seen += len(idx)
        if progress is not None:
            progress.update(1)
    return total / max(seen, 1), seen


def predict(model, tok, feats, rows, idx_list: list[int], batch_size: int, *, pos_weight: float,
            category_weight: float, device="cpu", cat_pos_weight=None, precision: str = "auto"):
    """(probabilities [n, 16], per-example losses [n]) for the examples `idx_list`, length-bucketed."""
    import numpy as np
    import torch
    model.eval()
    order = sorted(idx_list, key=lambda i: len(feats[i]["input_ids"]))
    probs, losses = {}, {}
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            b = {k: v.to(device) for k, v in collate(tok, feats, rows, idx).items()}
            y, cat = b.pop("y"), b.pop("cat")
            with autocast(device, precision):
                logits = model(**b).logits
            logits = logits.float()
            per = guard_loss(logits, y, cat, pos_weight, category_weight, reduction="none",
                             cat_pos_weight=cat_pos_weight)
            for j, i in enumerate(idx):
                probs[i] = torch.sigmoid(logits[j]).cpu().numpy()
                losses[i] = float(per[j])
    return (np.stack([probs[i] for i in idx_list]) if idx_list else np.zeros((0, model.config.num_labels)),
            np.array([losses[i] for i in idx_list]))


def val_metrics(y, probs, losses, threshold_policy: str, target_fpr: float) -> dict:
    """Calibrate the threshold on the validation predictions and return the metrics at it."""
    import numpy as np
    from guardray.core import metrics as M
    from guardray.core.calibration import choose_threshold
    y = np.asarray(y)
    u = probs[:, 0]
    thr = choose_threshold(y[:, 0], u, threshold_policy, target_fpr)
    at = M.binary_metrics(y[:, 0].astype(int), u, thr)
    at05 = M.binary_metrics(y[:, 0].astype(int), u, 0.5)
    out = {"val_loss": float(np.mean(losses)), "threshold": thr,
           "val_auprc": M.auprc(y[:, 0].astype(int), u), "val_roc_auc": M.roc_auc(y[:, 0].astype(int), u),
           "val_recall_at_1pct_fpr": M.recall_at_fpr(y[:, 0].astype(int), u, 0.01),
           "val_f1": at["f1"], "val_precision": at["precision"], "val_recall": at["recall"], "val_fpr": at["fpr"],
           "val_f1_at_0.5": at05["f1"], "val_n": int(len(u)), "val_n_unsafe": at["n_unsafe"]}
    # category head: micro-F1 at 0.5 over unsafe validation rows that carry categories
    rows = y[:, 1:].sum(1) > 0
    if rows.any():
        t, p = y[rows, 1:] > 0.5, probs[rows, 1:] >= 0.5
        tp, fp, fn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum()
        out["val_category_micro_f1"] = float(2 * tp / max(2 * tp + fp + fn, 1))
    # None (undefined) metrics become NaN so Ray/Tune can still aggregate them
    return {k: (float("nan") if v is None else v) for k, v in out.items()}


def trainable_state(model) -> dict:
    """Trainable parameters (all for full fine-tuning, LoRA + head for LoRA), detached on CPU."""
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, state: dict) -> None:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, extra = names - set(state), set(state) - names
    if missing or extra:
        raise RuntimeError(f"checkpoint does not match the model: missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(extra)[:3]} (was it written with another model or method?)")
    model.load_state_dict(state, strict=False)
