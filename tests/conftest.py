"""Shared fixtures: offline HF, a session-scoped local Ray cluster, tiny models."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray cluster shared by the tests (4 logical CPUs on a 2-core machine: actors mostly wait)."""
    import ray
    from guardray.ray_utils import init_ray
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_lm():
    from guardray.models import resolve
    return resolve("tiny-causal-lm")


@pytest.fixture(scope="session")
def tiny_encoder():
    from guardray.models import resolve
    return resolve("tiny-encoder")


@pytest.fixture(scope="session")
def seeds():
    from guardray.data import SEEDS_PATH, load_seeds
    return load_seeds([SEEDS_PATH])  # the prompt seeds (the built-in policy also lists responses, conversations)
