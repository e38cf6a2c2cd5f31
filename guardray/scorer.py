"""Scorer: the Ray actor that turns adversarial rollouts into rewards (formula: guardray.core.adversarial).

    scorer = Scorer.options(num_cpus=0.5).remote(ckpt_round0, cfg.attack, embedder="minilm")
    batch_ref = scorer.score.remote(rollouts)            # -> RewardBatch, every component logged
    learner.update.remote(rollouts, batch_ref)           # the learner receives the RewardBatch itself
    scorer.set_classifier.remote(ckpt_round1)            # the next round attacks the retrained classifier
    scorer.record_successes.remote(texts)                # novelty memory: later rewrites near these earn less

Texts are compared in canonical form (guardray.core.normalize): the meaning and novelty embeddings read the
normalised rewrite and seed, and every GuardClassifier (attacked and judge) normalises what it scores.

Holds: the current guardrail classifier (`GuardClassifier`, a guardray checkpoint or registry name), the sentence
embedder (meaning preservation and novelty), the validity judge, and the memory of earlier successful rewrites.
Resources: what the controller gives it (`resources.scorer_cpus/gpus`); CUDA when it sees a GPU.

Validity judges (`attack.validity`):
- "reference": a reference classifier must still give x' the seed's label. It is `validity_model` when given (a
  separate judge checkpoint), else the classifier loaded at construction - the round-0 classifier, fixed for the
  whole attack while `set_classifier` swaps the attacked one. Caveat: on round 0 that judge *is* the attacked
  classifier, so fooling it and passing the judge contradict each other; on tiny budgets this is circular. Give a
  separate `validity_model` (or validity "none" for a first round) where that matters.
- "knn": a similarity-weighted k-NN vote over the labelled seeds (`judge_seeds`; the rollout's own seed left out)
  must give x' the seed's label - the same judge as the curation label round (guardray.core.fidelity). It is never
  the attacked classifier, and costs one embedding per rewrite, which the meaning check computes anyway.
- "none": every rewrite counts as valid (meaning preservation is then the only guard).
- "llm": an LLM rubric judge is not built in the Scorer yet; constructing one raises UsageError.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import ray

from guardray.core import fidelity as F
from guardray.core.adversarial import adversarial_rewards, form_validity, novelty, reference_validity
from guardray.core.config import AttackConfig
from guardray.core.normalize import normalize
from guardray.core.records import Example, RewardBatch, Rollout
from guardray.errors import UsageError


@ray.remote
class Scorer:
    """Inputs: list[Rollout]. Output: RewardBatch with components classifier_score, p_wrong, fooled, similarity,
    meaning, valid, novelty, success, reward (one value per rollout, same order)."""

    def __init__(self, classifier: str, attack: AttackConfig, embedder: str = "minilm",
                 validity_model: str | None = None, judge_seeds: list[Example] = ()):
        import torch
        from guardray.classifier import GuardClassifier
        from guardray.embed import Embedder
        if attack.validity == "llm":
            raise UsageError("attack.validity=llm: the LLM rubric judge is not implemented in the Scorer; use "
                             "'reference' (a judge classifier) or 'none'")
        self.attack = attack
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.classifier = GuardClassifier.load(classifier, device=self.device)
        self.reference = None
        if attack.validity == "reference":
            if not validity_model:
                raise UsageError("attack.validity=reference needs attack.validity_model (a judge checkpoint that is "
                                 "not the attacked classifier); or use validity=knn (a vote over the seeds)")
            if validity_model == "seeds":
                raise UsageError("attack.validity_model=seeds names the pipeline's seeds-only judge, which `guardray "
                                 "run` and `guardray attack` train first (guardray.pipeline.seeds_judge); a Scorer "
                                 "built directly needs a checkpoint path")
            if Path(validity_model).resolve() == Path(classifier).resolve():
                raise UsageError(f"attack.validity_model: {validity_model} is the attacked classifier; a validity "
                                 "judge must be another checkpoint (validity_model=seeds: the seeds-only judge)")
            self.reference = GuardClassifier.load(validity_model, device=self.device)
        if attack.validity == "knn" and not judge_seeds:
            raise UsageError("attack.validity=knn needs labelled seeds to vote (judge_seeds)")
        self.embedder = Embedder(embedder, device=self.device)
        self.judge_ids = {e.id: i for i, e in enumerate(judge_seeds)}
        self.judge_emb = self.embedder.encode([e.text for e in judge_seeds]) if attack.validity == "knn" else None
        self.judge_unsafe = np.array([e.unsafe for e in judge_seeds])
        self._seed_scores: dict[str, float] = {}  # seed text -> the current classifier's unsafe score
        self.memory = np.zeros((0, self.embedder.model.config.hidden_size), dtype=np.float32)
        self._seed_emb: dict[str, np.ndarray] = {}

    def set_classifier(self, path: str) -> None:
        """Attack a new classifier checkpoint from now on (the reference judge stays as it was)."""
        from guardray.classifier import GuardClassifier
        self.classifier = GuardClassifier.load(path, device=self.device)
        self._seed_scores = {}

    def spread(self, groups: dict[str, list[str]]) -> dict[str, float | None]:
        """Embedding spread (mean pairwise cosine distance) of each group of texts: attack diversity."""
        from guardray.core.adversarial import embedding_spread
        return {k: embedding_spread(self.embedder.encode(list(v))) if v else None for k, v in groups.items()}

    def score_against(self, path: str, rollouts: list[Rollout]) -> RewardBatch:
        """Score `rollouts` against another checkpoint (e.g. the control arm's) without changing the attacked one."""
        keep = (self.classifier, self._seed_scores)
        try:
            self.set_classifier(path)
            return self.score(rollouts)
        finally:
            self.classifier, self._seed_scores = keep

    def classifier_info(self) -> dict:
        return {"classifier": self.classifier.name, "threshold": self.classifier.threshold,
                "validity": self.attack.validity,
                "reference": None if self.reference is None else self.reference.name,
                "judge_seeds": len(self.judge_ids), "memory": int(len(self.memory))}

    def record_successes(self, texts: list[str]) -> int:
        """Add successful rewrites to the novelty memory; returns its size."""
        if texts:
            self.memory = np.concatenate([self.memory, self.embedder.encode([normalize(t) for t in texts])])
        return int(len(self.memory))

    def score(self, rollouts: list[Rollout]) -> RewardBatch:
        if not rollouts:
            return RewardBatch((), {}, 0)
        texts = [r.generation.text for r in rollouts]
        labels = [r.seed.label for r in rollouts]
        # meaning and novelty compare canonical forms (guardray.core.normalize), as the classifiers score them: a
        # "b0mb" rewrite keeps its seed's meaning, which a MiniLM embedding of the raw text does not see
        x_emb = self.embedder.encode([normalize(t) for t in texts])
        missing = list(dict.fromkeys(r.seed.text for r in rollouts if r.seed.text not in self._seed_emb))
        if missing:
            for t, e in zip(missing, self.embedder.encode([normalize(x) for x in missing])):
                self._seed_emb[t] = e
        s_emb = np.stack([self._seed_emb[r.seed.text] for r in rollouts])
        similarity = (x_emb * s_emb).sum(1)
        cls = self.classifier.score(texts).unsafe
        unseen = list(dict.fromkeys(r.seed.text for r in rollouts if r.seed.text not in self._seed_scores))
        if unseen:  # the seed itself must be classified correctly for a rewrite of it to count
            self._seed_scores.update(zip(unseen, map(float, self.classifier.score(unseen).unsafe)))
        seed_scores = [self._seed_scores[r.seed.text] for r in rollouts]
        if self.reference is not None:
            valid = reference_validity(labels, self.reference.score(texts).unsafe, self.reference.threshold)
        elif self.judge_emb is not None:
            p = F.knn_unsafe_vote(x_emb, self.judge_emb, self.judge_unsafe,
                                  exclude=[self.judge_ids.get(r.seed.seed_id or r.seed.id) for r in rollouts])
            valid = np.where(np.asarray(labels) == "unsafe", p >= 0.5, p < 0.5).astype(np.float32)
        else:
            valid = np.ones(len(rollouts), dtype=np.float32)
        valid = valid * form_validity(texts)  # meta-text is no attack, whatever the judge says
        nov = novelty(x_emb, self.memory)
        rewards, comps = adversarial_rewards(labels, cls, self.classifier.threshold, similarity, valid, nov,
                                             self.attack, seed_scores=seed_scores)
        return RewardBatch(rewards=tuple(float(x) for x in rewards),
                           components={k: tuple(float(x) for x in v) for k, v in comps.items()},
                           policy_version=min(r.policy_version for r in rollouts))
