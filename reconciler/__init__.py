"""reconciler: GitOps for LLM agent configuration."""

__version__ = "0.1.0"
