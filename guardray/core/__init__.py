"""Pure core of guardray: records, config, taxonomy, metrics, curation rules, rewards, PPO maths.

Nothing here imports ray or vllm (tests/test_foundation.py enforces it), so it is testable without a cluster.
"""
