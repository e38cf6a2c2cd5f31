"""cluster.yaml validates against Ray's own cluster-launcher schema and installs guardray[gpu]."""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_validates_against_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))  # what `ray up` does; raises jsonschema.ValidationError when bad
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"]["GPU"] == 0
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
    assert any("guardray[gpu" in c for c in cfg["setup_commands"])


def test_schema_check_rejects_a_broken_cluster_yaml():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["available_node_types"]["head"]["resources"] = {"CPU": "eight"}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(cfg))


def test_gpu_cluster_config_fits_the_cluster_node_types():
    """Every role of configs/gpu_cluster.yaml fits on some node type of cluster.yaml: the custom resources it is
    pinned to (resources.custom) are declared there with enough CPUs/GPUs beside them, so nothing pends forever."""
    from guardray.core.config import load_config
    cfg = load_config(ROOT / "configs" / "gpu_cluster.yaml")
    types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    res = cfg.resources
    asks = {"generator": (res.generator_cpus, res.generator_gpus), "learner": (res.learner_cpus, res.learner_gpus),
            "scorer": (res.scorer_cpus, res.scorer_gpus),
            "trainer": (res.trainer_cpus_per_worker, res.trainer_gpus_per_worker),
            "curator": (res.curator_cpus, 0), "serve": (res.serve_cpus, res.serve_gpus)}
    assert res.custom, "the GPU config pins no role to a node type"
    for role, (cpus, gpus) in asks.items():
        need = {"CPU": cpus, "GPU": gpus, **res.ray_resources(role)}
        fits = [n for n, t in types.items() if all(t["resources"].get(k, 0) >= v for k, v in need.items())]
        assert fits, f"{role} asks for {need}; no node type in cluster.yaml has that"
    assert res.ray_resources("trainer") and not set(res.ray_resources("trainer")) & set(res.ray_resources("generator"))


def test_custom_resources_place_actors_only_where_declared(ray_session):
    """A role pinned to a resource that no node has does not start (Ray keeps it pending); pinned to one that
    exists, it starts. Real actors on the local cluster (which declares no custom resources)."""
    import ray
    from guardray.core.config import GeneratorConfig, ResourcesConfig
    from guardray.generator import make_replicas
    gen = GeneratorConfig(model="tiny-causal-lm", replicas=1, max_new_tokens=4)
    [pinned] = make_replicas(gen, ResourcesConfig(generator_cpus=0.1, custom={"generator": {"no_such_node": 1}}),
                             seed=0)
    [free] = make_replicas(gen, ResourcesConfig(generator_cpus=0.1), seed=0)
    try:
        assert ray.get(free.info.remote(), timeout=120)["backend"] == "hf"
        ready, _ = ray.wait([pinned.info.remote()], timeout=3)
        assert not ready, "an actor pinned to an undeclared resource was scheduled"
    finally:
        ray.kill(pinned)
        ray.kill(free)
