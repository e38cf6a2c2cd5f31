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
    sys.exit(main(["run", "--config", *sys.argv[1:2], *sys.argv[2:]] if len(sys.argv) > 1 else ["run", "--help"]))
