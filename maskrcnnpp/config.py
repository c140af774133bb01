"""Config keys added by maskrcnnpp. Every key has a one-line comment."""
from detectron2.config import CfgNode as CN


def add_maskrcnnpp_config(cfg):
    """
    Add every config key maskrcnnpp defines to ``cfg`` (in place). Safe to call twice.
    """
    _C = cfg

    # ---------------------------------------------------------------------------------------
    # Mask R-CNN++: nested-dense FPN (maskrcnnpp/modeling/backbone/nested_fpn.py).
    # Every MODEL.FPN.* key keeps its meaning; only the new knobs live here.
    # ---------------------------------------------------------------------------------------
    _C.MODEL.NESTED_FPN = CN()
    # Skip design between pyramid levels: "fpn" (same-scale only, the ablation point),
    # "unet+" (each node sees its left neighbour) or "unet++" (each node sees all nodes on its left).
    _C.MODEL.NESTED_FPN.SKIP = "unet++"
    # How a node merges its inputs: "concat" (the paper: concatenate, then the node conv) or
    # "sum" (element-wise sum, then the node conv; cheaper).
    _C.MODEL.NESTED_FPN.FUSION = "concat"
    # Node conv block: "plain" (3x3 conv) or "separable" (depthwise 3x3 + pointwise 1x1).
    _C.MODEL.NESTED_FPN.NODE_CONV = "plain"
    # Normalization inside node conv blocks: "", "BN", "GN", "SyncBN", ... (get_norm names).
    _C.MODEL.NESTED_FPN.NORM = ""
    # Registry name of the bottom-up network for build_nested_fpn_backbone; any backbone in
    # BACKBONE_REGISTRY whose MODEL.FPN.IN_FEATURES outputs have log2-contiguous strides.
    _C.MODEL.NESTED_FPN.BOTTOM_UP = "build_resnet_backbone"

    # ---------------------------------------------------------------------------------------
    # Nuclei evaluation (maskrcnnpp/evaluation/nuclei_evaluator.py).
    # ---------------------------------------------------------------------------------------
    _C.TEST.NUCLEI = CN()
    # Predicted instances with score >= this value count for IoU / Dice / DSB score / AJI / PQ
    # (COCO AP always uses every detection).
    _C.TEST.NUCLEI.SCORE_THRESH = 0.5
    # Write side-by-side ground truth | prediction pictures of the N images with the lowest
    # DSB score into OUTPUT_DIR/inference/worst_images (0: none).
    _C.TEST.NUCLEI.NUM_VIS = 0
    return cfg
