"""`guardray` command line. Each subcommand lives in its own module and exposes `cli(argv) -> int`;
modules are imported only when their subcommand runs, so `guardray --help` is instant."""
from __future__ import annotations

import importlib
import os
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "data": ("guardray.data_cli", "validate a data file or print its statistics"),
    "synth": ("guardray.synth", "seed data -> augmentation and paraphrasing -> curated dataset (Ray actors)"),
    "train": ("guardray.trainer", "fine-tune the classifier with Ray Train; writes an HF checkpoint"),
    "tune": ("guardray.tune", "Ray Tune hyper-parameter search over the trainer"),
    "attack": ("guardray.pipeline", "one adversarial phase: PPO generator vs the current classifier"),
    "run": ("guardray.pipeline", "the whole pipeline: augment, curate, train, adversarial rounds, evaluate"),
    "eval": ("guardray.evaluate", "score a model or baseline on evaluation sets; report + plots"),
    "calibrate": ("guardray.calibrate", "set a checkpoint's threshold on a labelled sample of your own traffic"),
    "serve": ("guardray.serve", "serve a checkpoint on Ray Serve (/v1/classify, /v1/moderations)"),
}


def usage() -> str:
    lines = ["usage: guardray <command> [options]   (guardray <command> --help for its options)", "",
             "commands:"]
    lines += [f"  {k:<9} {h}" for k, (_, h) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in SUBCOMMANDS:
        print(f"guardray: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    module = importlib.import_module(SUBCOMMANDS[cmd][0])
    from guardray.errors import run_cli
    return run_cli(lambda: module.cli(rest) if cmd not in ("attack", "run") else module.cli(rest, cmd))


if __name__ == "__main__":
    sys.exit(main())
