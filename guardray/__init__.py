"""guardray: lightweight safety guardrails via synthetic data and RL-guided adversarial training, on Ray."""
__version__ = "0.1.0"
