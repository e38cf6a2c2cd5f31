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
