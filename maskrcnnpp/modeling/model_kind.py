"""
Which kind of model a config builds, read from its registered meta-architecture class.

A semantic model takes ``{"image", "sem_seg"}`` inputs (the semantic patch mapper), sees images
at their own pixel scale and returns ``"sem_seg"`` (and, with an interior/boundary target,
``"instances"`` made from it); an instance model (Detectron2's ``GeneralizedRCNN`` and the
like) takes ``{"image", "instances"}`` inputs and returns ``"instances"``. A meta-architecture
says it is semantic with the class attribute ``model_kind = "semantic"``, so a user's own
registered semantic meta-architecture is treated as one; a class without the attribute is an
instance model.
"""

from detectron2.modeling import META_ARCH_REGISTRY

__all__ = ["INSTANCE", "SEMANTIC", "is_semantic_model", "model_kind"]

INSTANCE = "instance"
SEMANTIC = "semantic"


def model_kind(cfg) -> str:
    """
    Returns:
        str: :data:`SEMANTIC` or :data:`INSTANCE`, the ``model_kind`` class attribute of the
        meta-architecture registered as ``cfg.MODEL.META_ARCHITECTURE`` (:data:`INSTANCE`
        without one). A name that is not registered counts as an instance model here: the
        config checks report it by name before anything is built.
    """
    try:
        meta_architecture = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError:
        return INSTANCE
    kind = getattr(meta_architecture, "model_kind", INSTANCE)
    if kind not in (INSTANCE, SEMANTIC):
        raise ValueError(
            f"{cfg.MODEL.META_ARCHITECTURE}.model_kind must be '{SEMANTIC}' or '{INSTANCE}'; got {kind!r}"
        )
    return kind


def is_semantic_model(cfg) -> bool:
    """``model_kind(cfg) == SEMANTIC``."""
    return model_kind(cfg) == SEMANTIC
