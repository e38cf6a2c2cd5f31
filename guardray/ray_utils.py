"""Starting or joining Ray the same way everywhere (CLI, jobs, tests)."""
from __future__ import annotations

import os


def init_ray(address: str = "", num_cpus: int | None = None) -> None:
    """Join `address` ("auto" inside `ray job submit`), else start a local Ray (dashboard on 127.0.0.1).

    Under `ray job submit` RAY_ADDRESS is set, so "" also joins that cluster."""
    import ray
    if ray.is_initialized():
        return
    env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                        "TOKENIZERS_PARALLELISM": "false",
                        **({"GUARDRAY_CACHE": os.environ["GUARDRAY_CACHE"]} if "GUARDRAY_CACHE" in os.environ
                           else {})}}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, runtime_env=env, log_to_driver=True)
    else:
        # The pipeline's actors mostly wait on one another (generate, then score, then update, then train), so a
        # local cluster advertises at least 4 logical CPUs even on a 2-core laptop.
        num_cpus = num_cpus or max(4, os.cpu_count() or 1)
        # Ray 2.60 turns on token authentication for a local cluster, so its ports need the session's token
        # The dashboard hosts the State API; without it Ray Train's placement-group cleaner logs a warning every
        # few seconds for the whole of a training run ("Failed to query Ray Train Controller actor state").
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", runtime_env=env,
                 log_to_driver=True, configure_logging=False)
