"""One adversarial phase as a Ray job: the PPO learner trains the generator replicas to fool CLASSIFIER, then fresh
attacks on held-out seeds measure the attack success rate; the successful rewrites are written (no retraining; the
pipeline job does the retraining rounds). The same `run_attack()` as `guardray attack`.

    python jobs/attack.py CONFIG CLASSIFIER [dotted.key=value ...]

Laptop (local Ray, CPU, offline models):
    python jobs/attack.py configs/demo.yaml runs/demo/classifier/round-0
    ray start --head --node-ip-address 127.0.0.1 && RAY_AUTH_MODE=token \\
        ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/attack.py configs/demo.yaml $PWD/runs/demo/classifier/round-0
Cluster (see cluster.yaml; give paths every node sees):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/attack.py configs/gpu_cluster.yaml /mnt/shared/guardray-runs/prod-1/classifier/round-4
Exit code 0 on success, 2 on a configuration or data error, non-zero on any other failure.
"""
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from guardray.cli import main
    args = sys.argv[1:]
    if len(args) < 2 or args[0].startswith("-") or args[1].startswith("-"):  # --help, or missing arguments
        print(__doc__)
        sys.exit(0 if args[:1] in (["-h"], ["--help"]) else 2)
    sys.exit(main(["attack", "--config", args[0], "--classifier", args[1], *args[2:]]))
