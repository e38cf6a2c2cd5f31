"""Scorer: the Ray actor that turns adversarial rollouts into rewards (formula: guardray.core.adversarial).

    scorer = Scorer.options(num_cpus=0.5).remote(ckpt_round0, cfg.attack, embedder="minilm")
    batch_ref = scorer.score.remote(rollouts)            # -> RewardBatch, every component logged
    learner.update.remote(rollouts, batch_ref)           # the learner receives the RewardBatch itself
    scorer.set_classifier.remote(ckpt_round1)            # the next round attacks the retrained classifier
    scorer.record_successes.remote(texts)                # novelty memory: later rewrites near these earn less

Holds: the current guardrail classifier (`GuardClassifier`, a guardray checkpoint or registry name), the sentence
embedder (meaning preservation and novelty), the validity judge, and the memory of earlier successful rewrites.
Resources: what the controller gives it (`resources.scorer_cpus/gpus`); CUDA when it sees a GPU.

Validity judges (`attack.validity`):
- "reference": a reference classifier must still give x' the seed's label. It is `validity_model` when given (a
  separate judge checkpoint), else the classifier loaded at construction - the round-0 classifier, fixed for the
  whole attack while `set_classifier` swaps the attacked one. Caveat: on round 0 that judge *is* the attacked
  classifier, so fooling it and passing the judge contradict each other; on tiny budgets this is circular. Give a
  separate `validity_model` (or validity "none" for a first round) where that matters.
- "none": every rewrite counts as valid (meaning preservation is then the only guard).
- "llm": an LLM rubric judge is not built in the Scorer yet; constructing one raises UsageError.
"""
from __future__ import annotations

import numpy as np
import ray

from guardray.core.adversarial import adversarial_rewards, novelty, reference_validity
from guardray.core.config import AttackConfig
from guardray.core.records import RewardBatch, Rollout
from guardray.errors import UsageError


@ray.remote
class Scorer:
    """Inputs: list[Rollout]. Output: RewardBatch with components classifier_score, p_wrong, fooled, similarity,
    meaning, valid, novelty, success, reward (one value per rollout, same order)."""

    def __init__(self, classifier: str, attack: AttackConfig, embedder: str = "minilm",
                 validity_model: str | None = None):
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
            self.reference = (GuardClassifier.load(validity_model, device=self.device) if validity_model
                              else self.classifier)
        self.embedder = Embedder(embedder, device=self.device)
        self.memory = np.zeros((0, self.embedder.model.config.hidden_size), dtype=np.float32)
        self._seed_emb: dict[str, np.ndarray] = {}

    def set_classifier(self, path: str) -> None:
        """Attack a new classifier checkpoint from now on (the reference judge stays as it was)."""
        from guardray.classifier import GuardClassifier
        self.classifier = GuardClassifier.load(path, device=self.device)

    def classifier_info(self) -> dict:
        return {"classifier": self.classifier.name, "threshold": self.classifier.threshold,
                "reference": None if self.reference is None else self.reference.name,
                "memory": int(len(self.memory))}

    def record_successes(self, texts: list[str]) -> int:
        """Add successful rewrites to the novelty memory; returns its size."""
        if texts:
            self.memory = np.concatenate([self.memory, self.embedder.encode(list(texts))])
        return int(len(self.memory))

    def score(self, rollouts: list[Rollout]) -> RewardBatch:
        if not rollouts:
            return RewardBatch((), {}, 0)
        texts = [r.generation.text for r in rollouts]
        labels = [r.seed.label for r in rollouts]
        x_emb = self.embedder.encode(texts)
        missing = list(dict.fromkeys(r.seed.text for r in rollouts if r.seed.text not in self._seed_emb))
        if missing:
            for t, e in zip(missing, self.embedder.encode(missing)):
                self._seed_emb[t] = e
        s_emb = np.stack([self._seed_emb[r.seed.text] for r in rollouts])
        similarity = (x_emb * s_emb).sum(1)
        cls = self.classifier.score(texts).unsafe
        if self.reference is None:
            valid = np.ones(len(rollouts), dtype=np.float32)
        else:
            ref = cls if self.reference is self.classifier else self.reference.score(texts).unsafe
            valid = reference_validity(labels, ref, self.reference.threshold)
        nov = novelty(x_emb, self.memory)
        rewards, comps = adversarial_rewards(labels, cls, self.classifier.threshold, similarity, valid, nov,
                                             self.attack)
        return RewardBatch(rewards=tuple(float(x) for x in rewards),
                           components={k: tuple(float(x) for x in v) for k, v in comps.items()},
                           policy_version=min(r.policy_version for r in rollouts))
