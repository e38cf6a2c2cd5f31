"""The whole guardray pipeline as a Ray job: augment -> curate -> train -> adversarial rounds -> evaluate -> export.

Laptop (local Ray, CPU, offline models):
    python jobs/pipeline.py configs/demo.yaml
    ray start --head --node-ip-address 127.0.0.1 && RAY_AUTH_MODE=token \
        ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/pipeline.py configs/demo.yaml
Cluster (see cluster.yaml and the README's "Run on a cluster"):
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/pipeline.py configs/gpu_cluster.yaml run.name=prod-1
Arguments: CONFIG [dotted.key=value ...]; exits non-zero on failure.
"""
import sys

from guardray.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):  # --help, or no config given
        sys.exit(main(["run", "--help"]) if not args or args[0] in ("-h", "--help") else main(["run", *args]))
    sys.exit(main(["run", "--config", args[0], *args[1:]]))
