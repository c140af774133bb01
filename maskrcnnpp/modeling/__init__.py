"""Models: the nested-dense FPN backbone (Mask R-CNN++)."""
from .backbone import nested_fpn  # noqa: F401  registers the nested FPN backbone builders
