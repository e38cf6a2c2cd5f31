r"""Deploy the guardrail onto a running Ray cluster with Ray Serve, then exit (the app keeps running).

Laptop (local Ray, CPU):
    ray start --head --node-ip-address 127.0.0.1 && RAY_AUTH_MODE=token \
        ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/serve.py configs/serve.yaml model=runs/default/classifier
Cluster:
    RAY_AUTH_MODE=token ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/serve.py configs/serve.yaml model=/shared/ckpt/final num_replicas=4 resources.serve_gpus=1
Arguments: CONFIG [key=value ...]. CONFIG is a Ray Serve config (configs/serve.yaml: the args of its guardray
app) or a guardray config (its serve and resources blocks); keys are ServeConfig fields (model=..., port=...,
quantize=int8) or resources.*. HTTP binds the config's host (127.0.0.1 unless set); a cluster's clients reach
it through a host you choose deliberately (host=0.0.0.0 with api_key_env set). Exits non-zero on failure.
`serve shutdown` (or `serve delete guardray`) removes it.
"""
import sys

from guardray.errors import run_cli


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from guardray.serve import load_settings, run_server
    cfg, res, address = load_settings(argv[0], argv[1:])
    run_server(cfg, blocking=False, resources=res, ray_address=address or "auto")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(lambda: main(sys.argv[1:])))
