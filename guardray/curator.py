"""CuratorPool: several curator actors that put candidate examples through the curation rounds.

    pool = CuratorPool(cfg.curator, cfg.resources, reference_texts=[s.text for s in seeds], judge_model="")
    result = pool.curate(candidates, stage="synth", round=0)   # -> CurationResult(kept, report, dropped_samples)
    pool.shutdown()

Rounds (`curator.rounds`, in that order, each optional):
  rules   normalise, then drop empty / too short / too long / refusals / prompt echo / meta-text / wrong language
  dedup   exact and near duplicates (MinHash Jaccard, or embedding cosine) within the batch - across all shards,
          first occurrence wins - and against the reference texts (seeds, earlier data) and the decontamination
          texts (evaluation sets): a synthetic text close to an evaluation text is dropped as eval_contamination
  meaning fidelity: a child's MiniLM cosine to its parent seed must lie in [meaning_min, meaning_max] (off-intent
          children and near-copies dropped) and its length in [length_ratio_min, length_ratio_max] times its
          parent's (fragments and rambles dropped); a child with no parent seed must be close to the seeds of its
          intended label and category (guardray.core.fidelity)
  label   fidelity: a k-NN vote over the labelled seeds (its own root seed left out) must not disagree with the
          child's label by `label_margin` (contrastive children, which share an unsafe parent's words by design,
          and everyday texts, half of them on alarming topics, are exempt); keep, relabel or drop
          (`label_policy`); `keep_per_parent` keeps the best-agreeing children of each parent (generate many,
          keep few). Both fidelity rounds need the labelled seeds (`label_reference`); without them they keep
          everything and say so
  judge   label verification: a trained guardray classifier (`judge_model`) and/or an LLM answering a SAFE/UNSAFE
          rubric (`judge_llm`); on disagreement keep, relabel or drop (`judge_policy`); an unsafe child the
          classifier judge scores less than `judge_confirm` above its threshold is dropped. With judge=classifier and
          no judge_model the round keeps everything and says so in the report. The pipeline resolves
          judge_model=seeds to its seeds-only judge (guardray.pipeline.seeds_judge) before a pool starts
  select  diversity and balance: at most `per_category_max` per category, chosen by k-center on embeddings

Each actor (`Curator`, resources `resources.curator_cpus`) holds only what its constructor arguments determine
(reference indexes; a judge or embedder loaded on first use), and each task is a pure function of its shard, so a
restarted actor (`max_restarts`) re-running a lost task (`max_task_retries`) gives the same answer. Shards travel
as ObjectRefs from round to round (actor to actor); only this controller calls ray.wait / ray.get. Every drop is
counted with its reason: inputs = kept + dropped, exactly (checked before a report is returned).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import ray

from guardray.core import curation as C
from guardray.core import fidelity as F
from guardray.core.augment import judge_prompt, parse_judge_verdict
from guardray.core.config import CuratorConfig, GeneratorConfig, ResourcesConfig
from guardray.core.records import Example, GenRequest
from guardray.core.taxonomy import BUILTIN, Policy
from guardray.generator import was_restarted

# stages whose children have no parent meaning: compared with the seeds of their label and category, not a parent
PARENTLESS = ("augment", "everyday")


@dataclass
class CurationResult:
    kept: list[Example]
    report: dict  # inputs, kept, dropped per reason, per round, per category (see CurationCounts.report)
    dropped_samples: dict[str, list[str]]  # reason -> a few dropped texts


@dataclass
class Shard:
    """One shard between rounds: survivors plus every drop so far (reasons carry their round)."""
    index: int
    kept: list[Example]
    drops: list[C.Drop] = field(default_factory=list)
    sigs: np.ndarray | None = None  # dedup: MinHash signatures (or embeddings) of `kept`, for the cross-shard pass
    emb: np.ndarray | None = None  # meaning: sentence embeddings of `kept`, reused by the label round
    relabelled: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Reference:
    """Texts to dedup against, prepared once by the pool and shared by every actor through one ObjectRef."""
    keys: dict[str, str]  # exact key -> "reference" | "eval"
    sigs: np.ndarray  # [n, num_perm] MinHash signatures
    kinds: list[str]  # per signature row: "reference" | "eval"
    texts: list[str]  # for embedding dedup
    # fidelity rounds: the labelled seeds (empty when the pool got no label_reference)
    seed_index: dict[str, int] = field(default_factory=dict)  # seed id -> row of seed_emb
    seed_emb: np.ndarray | None = None  # [n, d] L2-normalised sentence embeddings
    seed_unsafe: np.ndarray | None = None  # [n] bool
    seed_key: list[str] = field(default_factory=list)  # category_key per seed (label + primary category)
    seed_chars: np.ndarray | None = None  # [n] characters per seed (a child's length band)


def prepare_reference(reference_texts: list[str], decontam_texts: list[str]) -> Reference:
    hasher = C.MinHasher()
    keys: dict[str, str] = {}
    texts, kinds = [], []
    for kind, ts in (("eval", decontam_texts), ("reference", reference_texts)):  # eval wins a tie
        for t in ts:
            k = C.dedup_key(t)
            if k not in keys:
                keys[k] = kind
                texts.append(t)
                kinds.append(kind)
    sigs = np.stack([hasher.signature(t) for t in texts]) if texts else np.zeros((0, C.NUM_PERM), np.uint64)
    return Reference(keys, sigs, kinds, texts)


def add_label_reference(ref: Reference, seeds: list[Example], embed_model: str) -> Reference:
    """The labelled seeds the fidelity rounds judge against, embedded once here (the driver) for every curator."""
    from guardray.embed import Embedder
    emb = Embedder(embed_model).encode([e.text for e in seeds])
    return dataclasses.replace(ref, seed_index={e.id: i for i, e in enumerate(seeds)}, seed_emb=emb,
                               seed_unsafe=np.array([e.unsafe for e in seeds]),
                               seed_chars=np.array([len(e.text) for e in seeds]),
                               seed_key=[C.category_key(e).replace("safe:hard_benign", "safe") for e in seeds])


@ray.remote
class Curator:
    """One curator actor; see the module docstring. Methods take and return `Shard`s (ObjectRefs in between)."""

    def __init__(self, cfg: CuratorConfig, ref: Reference, judge_model: str, index: int,
                 policy: Policy = BUILTIN):
        self.cfg, self.ref, self.judge_model, self.index, self.policy = cfg, ref, judge_model, index, policy
        self.hasher = C.MinHasher()
        self.index_lsh = None  # reference MinHash LSH, built on first dedup
        self._classifier = self._llm = self._embedder = None
        self._ref_emb = None

    def ping(self) -> dict:
        import os
        return {"index": self.index, "pid": os.getpid(),
                "restarted": was_restarted()}

    # ---------------------------------------------------------------- rules
    def rules(self, shard: Shard) -> Shard:
        kept, drops = [], list(shard.drops)
        for e in shard.kept:
            text = C.normalize_text(e.text)
            why = C.rule_reason(text, min_chars=self.cfg.min_chars, max_chars=self.cfg.max_chars,
                                language=self.cfg.language)
            if why:
                drops.append(C.Drop(e.id, C.category_key(e), f"rules:{why}", e.text))
            else:
                kept.append(e if text == e.text else dataclasses.replace(e, text=text))
        return dataclasses.replace(shard, kept=kept, drops=drops)

    # ---------------------------------------------------------------- dedup
    def _lsh(self) -> C.NearDupIndex:
        if self.index_lsh is None:
            self.index_lsh = C.NearDupIndex(self.cfg.near_dup_threshold)
            for i, s in enumerate(self.ref.sigs):
                self.index_lsh.add(str(i), s)
        return self.index_lsh

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            from guardray.embed import Embedder
            self._embedder = Embedder(self.cfg.embed_model)
        return self._embedder.encode(texts)

    def dedup(self, shard: Shard) -> Shard:
        """Within the shard and against reference/eval texts; keeps signatures for `dedup_merge`."""
        kept, drops = [], list(shard.drops)
        if self.cfg.dedup_method == "embedding":
            emb = self._embed([e.text for e in shard.kept])
            if self._ref_emb is None:
                self._ref_emb = self._embed(self.ref.texts)
            kinds = np.array(self.ref.kinds)
            keep_rows = []
            seen: set[str] = set()
            for i, e in enumerate(shard.kept):
                k = C.dedup_key(e.text)
                why = None
                if k in self.ref.keys:
                    why = "eval_contamination" if self.ref.keys[k] == "eval" else "reference"
                elif k in seen:
                    why = "exact"
                elif len(self._ref_emb):
                    sims = self._ref_emb @ emb[i]
                    hit = sims >= self.cfg.embed_dup_threshold
                    if hit.any():
                        why = "eval_contamination" if (kinds[hit] == "eval").any() else "reference"
                if why is None and keep_rows and float((emb[keep_rows] @ emb[i]).max()) >= self.cfg.embed_dup_threshold:
                    why = "near"
                if why:
                    drops.append(C.Drop(e.id, C.category_key(e), f"dedup:{why}", e.text))
                else:
                    seen.add(k)
                    keep_rows.append(i)
                    kept.append(e)
            sigs = emb[keep_rows] if keep_rows else np.zeros((0, emb.shape[1] if emb.ndim == 2 else 1), np.float32)
            return dataclasses.replace(shard, kept=kept, drops=drops, sigs=sigs)
        lsh = self._lsh()
        local = C.NearDupIndex(self.cfg.near_dup_threshold)
        seen = set()
        sigs = []
        for e in shard.kept:
            k = C.dedup_key(e.text)
            sig = self.hasher.signature(e.text)
            why = None
            if k in self.ref.keys:
                why = "eval_contamination" if self.ref.keys[k] == "eval" else "reference"
            elif k in seen:
                why = "exact"
            else:
                hits = lsh.query(sig)
                if hits:
                    why = ("eval_contamination" if any(self.ref.kinds[int(h)] == "eval" for h in hits)
                           else "reference")
                elif local.query(sig):
                    why = "near"
            if why:
                drops.append(C.Drop(e.id, C.category_key(e), f"dedup:{why}", e.text))
            else:
                seen.add(k)
                local.add(e.id, sig)
                sigs.append(sig)
                kept.append(e)
        arr = np.stack(sigs) if sigs else np.zeros((0, C.NUM_PERM), np.uint64)
        return dataclasses.replace(shard, kept=kept, drops=drops, sigs=arr)

    def dedup_merge(self, *shards: Shard) -> tuple[Shard, ...] | Shard:
        """Cross-shard pass, in shard order (first occurrence wins). Returns the shards, same boundaries."""
        out = []
        seen: set[str] = set()
        if self.cfg.dedup_method == "embedding":
            kept_emb: list[np.ndarray] = []
        else:
            index = C.NearDupIndex(self.cfg.near_dup_threshold)
        for sh in shards:
            kept, drops = [], list(sh.drops)
            for e, sig in zip(sh.kept, sh.sigs if sh.sigs is not None else [None] * len(sh.kept)):
                k = C.dedup_key(e.text)
                why = None
                if k in seen:
                    why = "exact"
                elif self.cfg.dedup_method == "embedding":
                    if kept_emb and float((np.stack(kept_emb) @ sig).max()) >= self.cfg.embed_dup_threshold:
                        why = "near"
                elif index.query(sig):
                    why = "near"
                if why:
                    drops.append(C.Drop(e.id, C.category_key(e), f"dedup:{why}", e.text))
                    continue
                seen.add(k)
                if self.cfg.dedup_method == "embedding":
                    kept_emb.append(sig)
                else:
                    index.add(e.id, sig)
                kept.append(e)
            out.append(dataclasses.replace(sh, kept=kept, drops=drops, sigs=None))
        return tuple(out) if len(out) > 1 else out[0]

    # ---------------------------------------------------------------- fidelity: meaning, label
    def _root(self, e: Example) -> int | None:
        """Row of the child's parent seed (or root seed) in the reference, None if it has none there."""
        idx = self.ref.seed_index
        return idx.get(e.parent_id, idx.get(e.seed_id))

    def meaning(self, shard: Shard) -> Shard:
        """Drop children outside the cosine band to their parent seed (off-intent, near-copy) and parentless
        children far from the seeds of their intended label and category."""
        if not shard.kept or self.ref.seed_emb is None:
            return shard
        emb = self._embed([e.text for e in shard.kept])
        kept, rows, drops = [], [], list(shard.drops)
        keys = np.array(self.ref.seed_key)
        for i, e in enumerate(shard.kept):
            # an augment child's parent is only one of the seeds shown as examples, an everyday child's a seed of
            # its style: neither has a parent meaning
            j = None if e.stage in PARENTLESS else self._root(e)
            cos_parent = float(emb[i] @ self.ref.seed_emb[j]) if j is not None else None
            ratio = None  # rewrites of one parent only (an adversarial rewrite may legitimately grow)
            if j is not None and self.ref.seed_chars is not None and e.stage in ("paraphrase", "contrastive"):
                ratio = len(e.text) / max(1, int(self.ref.seed_chars[j]))
            cos_near = None
            if j is None:
                same = np.flatnonzero(keys == C.category_key(e).replace("safe:hard_benign", "safe"))
                if len(same) == 0:
                    same = np.flatnonzero(self.ref.seed_unsafe == e.unsafe)
                cos_near = float(F.nearest_mean(emb[i:i + 1], self.ref.seed_emb[same])[0])
            why = F.meaning_reason(cos_parent, cos_near, lo=self.cfg.meaning_min, hi=self.cfg.meaning_max,
                                   contrastive=e.stage == "contrastive", lo_topic=self.cfg.topic_min,
                                   length_ratio=ratio, ratio_lo=self.cfg.length_ratio_min,
                                   ratio_hi=self.cfg.length_ratio_max, contrastive_hi=self.cfg.contrastive_max)
            if why:
                drops.append(C.Drop(e.id, C.category_key(e), f"meaning:{why}", e.text))
            else:
                kept.append(e)
                rows.append(i)
        return dataclasses.replace(shard, kept=kept, drops=drops, emb=emb[rows])

    def label(self, shard: Shard) -> Shard:
        """k-NN vote over the seeds (root seed excluded) per child; disagreement -> `label_policy`; then the best
        `keep_per_parent` children of each parent by agreement."""
        if not shard.kept or self.ref.seed_emb is None:
            return shard
        emb = shard.emb if shard.emb is not None and len(shard.emb) == len(shard.kept) else \
            self._embed([e.text for e in shard.kept])
        p = F.knn_unsafe_vote(emb, self.ref.seed_emb, self.ref.seed_unsafe, k=self.cfg.label_k,
                              exclude=[self._root(e) for e in shard.kept])
        drops, relabelled, notes = list(shard.drops), shard.relabelled, list(shard.notes)
        cand, agree = [], []
        n_dis = 0
        for i, e in enumerate(shard.kept):
            verdict = F.label_verdict(e.label, float(p[i]), margin=self.cfg.label_margin)
            # a contrastive child shares its unsafe parent's words by design, so the seeds' vote calls it unsafe:
            # the team's audit found 92% of the ones this round dropped were labelled right (benchmarks/
            # synth_audit.md). It is exempt; its parent's meaning band still applies. So is an everyday text: half
            # are on topics that only sound alarming (a war documentary), which the seeds' vote calls unsafe by topic
            if verdict == "disagree" and e.stage not in ("contrastive", "everyday"):
                n_dis += 1
                if self.cfg.label_policy == "drop":
                    drops.append(C.Drop(e.id, C.category_key(e), "label:disagree", e.text))
                    continue
                if self.cfg.label_policy == "relabel":
                    near = [t.split(":", 1)[1] for t in e.tags if t.startswith("near:")]
                    new = "safe" if e.unsafe else "unsafe"
                    e = dataclasses.replace(e, label=new, categories=() if new == "safe" else tuple(near[:1]),
                                            tags=tuple(t for t in e.tags if t != "hard_benign") + ("relabelled",))
                    relabelled += 1
            cand.append(e)
            agree.append(float(p[i]) if e.unsafe else 1.0 - float(p[i]))
        if n_dis and self.cfg.label_policy == "keep":
            notes.append(f"label: k-NN vote disagreed on {n_dis} (kept: label_policy=keep)")
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(cand):  # an everyday text is its own group (its parent is provenance only)
            groups.setdefault(e.id if e.stage == "everyday" else e.parent_id or e.id, []).append(i)
        keep = F.best_of(groups, np.array(agree), self.cfg.keep_per_parent)
        kept = []
        for i, e in enumerate(cand):
            if i in keep:
                kept.append(e)
            else:
                drops.append(C.Drop(e.id, C.category_key(e), "label:best_of", e.text))
        return dataclasses.replace(shard, kept=kept, drops=drops, relabelled=relabelled, notes=notes, emb=None)

    # ---------------------------------------------------------------- judge
    def _classifier_scores(self, texts: list[str]):
        if self._classifier is None:
            from guardray.classifier import GuardClassifier
            self._classifier = GuardClassifier.load(self.judge_model)
        return self._classifier.score(texts), self._classifier.threshold

    def _llm_verdicts(self, texts: list[str]) -> list[str | None]:
        if self._llm is None:
            from guardray.backends import HFBackend
            self._llm = HFBackend(GeneratorConfig(model=self.cfg.judge_llm, temperature=0.0, max_new_tokens=6,
                                                  batch_size=16), seed=0)
        gens = self._llm.generate([GenRequest(f"judge-{i}", judge_prompt(t, self.policy)) for i, t in enumerate(texts)])
        return [parse_judge_verdict(g.text) for g in gens]

    def judge(self, shard: Shard) -> Shard:
        use_clf = self.cfg.judge in ("classifier", "both") and bool(self.judge_model)
        use_llm = self.cfg.judge in ("llm", "both") and bool(self.cfg.judge_llm)
        if not shard.kept or not (use_clf or use_llm):
            return shard
        texts = [e.text for e in shard.kept]
        disagree = [False] * len(texts)
        unconfirmed = [False] * len(texts)
        cats: list[tuple[str, ...]] = [()] * len(texts)
        if use_clf:
            scores, thr = self._classifier_scores(texts)
            for i, e in enumerate(shard.kept):
                verdict = C.judge_verdict(e.label, float(scores.unsafe[i]), threshold=thr,
                                          margin=self.cfg.judge_margin, confirm=self.cfg.judge_confirm)
                disagree[i] = verdict == "disagree"
                unconfirmed[i] = verdict == "unconfirmed"
                cats[i] = (self._classifier.codes[int(np.argmax(scores.categories[i]))],)
        unclear = 0
        if use_llm:
            for i, (e, v) in enumerate(zip(shard.kept, self._llm_verdicts(texts))):
                if v is None:
                    unclear += 1
                elif v != e.label:
                    disagree[i] = True  # with judge=both, either judge disagreeing is a disagreement
        kept, drops, relabelled = [], list(shard.drops), shard.relabelled
        for i, e in enumerate(shard.kept):
            if unconfirmed[i] and not disagree[i]:  # too weak to keep as unsafe, too close to call it safe
                drops.append(C.Drop(e.id, C.category_key(e), "judge:unconfirmed", e.text))
            elif not disagree[i] or self.cfg.judge_policy == "keep":
                kept.append(e)
            elif self.cfg.judge_policy == "drop":
                drops.append(C.Drop(e.id, C.category_key(e), "judge:disagree", e.text))
            else:  # relabel
                new = "safe" if e.unsafe else "unsafe"
                near = [t.split(":", 1)[1] for t in e.tags if t.startswith("near:")]
                new_cats = () if new == "safe" else (cats[i] or tuple(near[:1]))
                kept.append(dataclasses.replace(e, label=new, categories=new_cats,
                                                tags=tuple(t for t in e.tags if t != "hard_benign") + ("relabelled",)))
                relabelled += 1
        notes = list(shard.notes)
        if unclear:
            notes.append(f"llm judge gave no verdict for {unclear} (kept)")
        if self.cfg.judge_policy == "keep" and any(disagree):
            notes.append(f"judge disagreed on {sum(disagree)} (kept: judge_policy=keep)")
        return dataclasses.replace(shard, kept=kept, drops=drops, relabelled=relabelled, notes=notes)

    # ---------------------------------------------------------------- select
    def select(self, examples: list[Example], cap: int) -> tuple[list[Example], list[C.Drop]]:
        """k-center on embeddings: the `cap` most spread-out examples of one category group."""
        if len(examples) <= cap:
            return examples, []
        emb = self._embed([e.text for e in examples])
        picks = set(C.k_center(emb, cap))
        kept = [e for i, e in enumerate(examples) if i in picks]
        drops = [C.Drop(e.id, C.category_key(e), "select:over_cap", e.text)
                 for i, e in enumerate(examples) if i not in picks]
        return kept, drops


class CuratorPool:
    """`cfg.workers` Curator actors and the controller logic that fans shards out to them round by round."""

    def __init__(self, cfg: CuratorConfig, res: ResourcesConfig, *, reference_texts: list[str],
                 judge_model: str | None, decontam_texts: list[str] = (), progress: bool = True,
                 label_reference: list[Example] = (), policy: Policy = BUILTIN):
        self.cfg, self.res = cfg, res
        self.judge_model = judge_model or ""
        if self.judge_model == "seeds":
            from guardray.errors import UsageError
            raise UsageError("curator.judge_model=seeds names the pipeline's seeds-only judge, which `guardray run` "
                             "and `guardray synth` train first (guardray.pipeline.seeds_judge); a CuratorPool built "
                             "directly needs a checkpoint path")
        self.progress = progress
        ref = prepare_reference(list(reference_texts), list(decontam_texts))
        self.n_label_reference = 0
        if label_reference and {"meaning", "label"} & set(cfg.rounds):
            ref = add_label_reference(ref, list(label_reference), cfg.embed_model)
            self.n_label_reference = len(label_reference)
        self.ref_ref = ray.put(ref)  # put once
        self.n_reference, self.n_decontam = len(reference_texts), len(decontam_texts)
        opts = dict(num_cpus=res.curator_cpus, max_restarts=cfg.max_restarts, max_task_retries=cfg.max_task_retries,
                    resources=res.ray_resources("curator"))
        self.workers = [Curator.options(**opts).remote(cfg, self.ref_ref, self.judge_model, i, policy)
                        for i in range(cfg.workers)]

    def __enter__(self) -> "CuratorPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []

    def _wait(self, refs: list, desc: str) -> None:
        """Wait for all refs (without fetching them here), with a progress bar."""
        pending = list(refs)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(refs), desc=desc, unit="shard", leave=False)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, fetch_local=False)
            if bar:
                bar.update(len(done))
        if bar:
            bar.close()

    def _skip_note(self) -> str:
        if self.cfg.judge == "none":
            return "skipped (judge=none)"
        if self.cfg.judge == "classifier" and not self.judge_model:
            return "skipped (no judge_model)"
        if self.cfg.judge == "llm" and not self.cfg.judge_llm:
            return "skipped (no judge_llm)"
        return ""

    def curate(self, examples: list[Example], stage: str, round: int = 0) -> CurationResult:
        """Run the configured rounds over `examples`; every input ends up kept or dropped with one reason."""
        if not self.workers:
            raise RuntimeError("CuratorPool.curate after shutdown()")
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"curate: duplicate example id {dup!r}; ids must be unique to be accounted for")
        counts = C.CurationCounts.start(examples)
        W, size = len(self.workers), self.cfg.shard_size
        # one put per shard; from here on shards move between actors as ObjectRefs
        shards = [ray.put(Shard(i, examples[s:s + size])) for i, s in enumerate(range(0, len(examples), size))]
        timings: list[tuple[str, float, str]] = []
        for name in self.cfg.rounds:
            t0 = time.perf_counter()
            note = ""
            if name == "rules":
                shards = [self.workers[i % W].rules.remote(ref) for i, ref in enumerate(shards)]
            elif name == "dedup":
                shards = [self.workers[i % W].dedup.remote(ref) for i, ref in enumerate(shards)]
                self._wait(shards, f"curate {stage} r{round}: dedup (per shard)")
                # the cross-shard pass runs on one curator, which receives the other curators' shard refs
                merged = self.workers[0].dedup_merge.options(num_returns=len(shards)).remote(*shards)
                shards = list(merged) if len(shards) > 1 else [merged]
                note = (f"{self.cfg.dedup_method} against {self.n_reference} reference and {self.n_decontam} "
                        "decontamination texts")
            elif name in ("meaning", "label"):
                if not self.n_label_reference:
                    note = "skipped (no labelled seeds given: label_reference)"
                else:
                    shards = [getattr(self.workers[i % W], name).remote(ref) for i, ref in enumerate(shards)]
                    note = (f"cosine to the parent seed in [{self.cfg.meaning_min}, {self.cfg.meaning_max}]; "
                            f"no parent: >= {self.cfg.topic_min} to the nearest seeds of its label/category"
                            if name == "meaning" else
                            f"{self.cfg.label_k}-NN vote over {self.n_label_reference} seeds, margin "
                            f"{self.cfg.label_margin}, policy={self.cfg.label_policy}, keep_per_parent="
                            f"{self.cfg.keep_per_parent or 'all'}")
            elif name == "judge":
                note = self._skip_note()
                if not note:
                    shards = [self.workers[i % W].judge.remote(ref) for i, ref in enumerate(shards)]
                    note = f"{self.cfg.judge} judge, policy={self.cfg.judge_policy}"
            elif name == "select":
                shards, note = self._select(shards)
            self._wait(shards, f"curate {stage} r{round}: {name}")
            timings.append((name, time.perf_counter() - t0, note))
        got = self._fetch(shards)
        kept = [e for s in got for e in s.kept]
        all_drops = [d for s in got for d in s.drops]
        n_in = len(examples)
        for name, secs, note in timings:
            drops = [d for d in all_drops if d.reason.split(":", 1)[0] == name]
            counts.add_round(name, n_in, n_in - len(drops), drops, secs, note=note)
            n_in -= len(drops)
        # the books: every input id is kept or dropped, exactly once
        out_ids = [e.id for e in kept] + [d.id for d in all_drops]
        if len(out_ids) != len(ids) or set(out_ids) != set(ids):
            raise AssertionError(f"curation lost or duplicated examples: {len(ids)} in, {len(kept)} kept + "
                                 f"{len(all_drops)} dropped")
        counts.relabelled = sum(s.relabelled for s in got)
        for s in got:
            counts.notes += [n for n in s.notes if n not in counts.notes]
        report = counts.report(kept, stage=stage, round=round)
        return CurationResult(kept, report, counts.samples)

    def _fetch(self, refs: list) -> list[Shard]:
        return list(ray.get(refs))

    def _select(self, shards: list) -> tuple[list, str]:
        cap = self.cfg.per_category_max
        if cap <= 0:
            return shards, "no cap (curator.per_category_max=0)"
        got = self._fetch(shards)
        groups: dict[str, list[Example]] = {}
        for s in got:
            for e in s.kept:
                groups.setdefault(C.category_key(e), []).append(e)
        big = sorted(k for k, v in groups.items() if len(v) > cap)
        refs = [self.workers[i % len(self.workers)].select.remote(groups[k], cap) for i, k in enumerate(big)]
        self._wait(refs, "select: k-center")
        chosen = dict(zip(big, ray.get(refs)))
        keep_ids = set()
        drops_by_shard: dict[str, C.Drop] = {}
        for k, v in groups.items():
            if k in chosen:
                keep_ids |= {e.id for e in chosen[k][0]}
                drops_by_shard.update({d.id: d for d in chosen[k][1]})
            else:
                keep_ids |= {e.id for e in v}
        out = []
        for s in got:
            out.append(dataclasses.replace(
                s, kept=[e for e in s.kept if e.id in keep_ids],
                drops=list(s.drops) + [drops_by_shard[e.id] for e in s.kept if e.id in drops_by_shard]))
        return [ray.put(s) for s in out], f"k-center, at most {cap} per category ({len(big)} groups capped)"
