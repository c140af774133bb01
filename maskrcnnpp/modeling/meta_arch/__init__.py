"""Meta-architectures: the semantic UNet++."""

from .semantic_unetpp import SemanticUNetPlusPlus

__all__ = ["SemanticUNetPlusPlus"]
