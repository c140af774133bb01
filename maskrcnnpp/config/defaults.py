"""Config keys added by maskrcnnpp. Every key has a one-line comment."""

import copy

from detectron2.config import CfgNode as CN


def add_maskrcnnpp_config(cfg):
    """
    Add every config key maskrcnnpp defines to ``cfg`` (in place), with its default value. Keys
    ``cfg`` already has keep their values, so calling it twice, or on a config that already
    holds merged values, changes nothing.
    """
    _C = CN()
    for node in ("MODEL", "TEST", "INPUT", "SOLVER", "DATASETS", "DATALOADER"):
        _C[node] = CN()

    # ---------------------------------------------------------------------------------------
    # Datasets (maskrcnnpp/data/label_folder.py).
    # ---------------------------------------------------------------------------------------
    # Folders prepared by datasets/prepare_label_folder.py, each "NAME=FOLDER": setup_cfg
    # registers NAME_<split> and NAME_sem_seg_<split> for every split of FOLDER, for
    # DATASETS.TRAIN / TEST to name (docs/own_nuclei.md).
    _C.DATASETS.LABEL_FOLDERS = []

    # ---------------------------------------------------------------------------------------
    # Mask R-CNN++: nested-dense FPN (maskrcnnpp/modeling/backbone/nested_fpn.py).
    # Every MODEL.FPN.* key keeps its meaning; only the new knobs live here.
    # ---------------------------------------------------------------------------------------
    _C.MODEL.NESTED_FPN = CN()
    # Skip design (maskrcnnpp/modeling/nested_graph.py): "top_down" (the top-down chain,
    # X(i,L-1-i) = H(X(i,0), U(X(i+1,L-2-i))), no intermediate nodes; the ablation point; unlike
    # FPN a conv block at every merge; its old name "fpn" is accepted with a warning),
    # "unet+" (every X(i,j), each fed by its left neighbour X(i,j-1)) or "unet++" (every X(i,j),
    # each fed by all of X(i,0..j-1)); every node X(i,j) also gets the up-sampled X(i+1,j-1).
    _C.MODEL.NESTED_FPN.SKIP = "unet++"
    # How a node merges its inputs: "concat" (the paper: concatenate, then the node conv) or
    # "sum" (element-wise sum, then the node conv; cheaper; MODEL.FPN.FUSE_TYPE "avg" makes it
    # the mean; "avg" is rejected with "concat"). Default "sum" with "separable" nodes: the
    # project's measured choice (README, "Mask R-CNN++"); the paper is "concat" + "plain".
    _C.MODEL.NESTED_FPN.FUSION = "sum"
    # Node conv block, followed by norm and ReLU: "plain" (3x3 conv) or "separable"
    # (depthwise 3x3 + norm, then pointwise 1x1).
    _C.MODEL.NESTED_FPN.NODE_CONV = "separable"
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
    # DSB score into OUTPUT_DIR/inference/<dataset>/worst_images (0: none).
    _C.TEST.NUCLEI.NUM_VIS = 0

    # ---------------------------------------------------------------------------------------
    # Prediction on users' images (tools/predict.py, maskrcnnpp/inference/).
    # ---------------------------------------------------------------------------------------
    _C.TEST.PREDICT = CN()
    # Images whose height or width exceeds this many pixels are predicted tile by tile.
    _C.TEST.PREDICT.MAX_UNTILED_SIZE = 1024
    # Side of the square tiles, in pixels of the original image.
    _C.TEST.PREDICT.TILE_SIZE = 512
    # Minimum overlap of neighbouring tiles, in pixels; must be at least the diameter of the
    # largest nucleus, so that every nucleus lies whole inside the tile that keeps it.
    _C.TEST.PREDICT.TILE_OVERLAP = 128
    # Instance models: detections kept from different tiles whose masks overlap with IoU >= this
    # are one nucleus seen twice, and only the higher score stays (> 1: off).
    _C.TEST.PREDICT.TILE_MERGE_IOU = 0.5
    # Nuclei with score >= this value are written (label image, CSV, COCO results).
    _C.TEST.PREDICT.SCORE_THRESH = 0.5
    # The channel holding the nuclei (tools/predict.py --channel): of a multi-channel TIFF
    # (CYX or YXC, ImageJ hyperstack, OME-TIFF), a 0-based index or a channel name (OME
    # channel name, ImageJ label); of an RGB image, a colour (0 or "red", 1 "green", 2
    # "blue"); grayscale images are read as they are. None: a multi-channel TIFF is refused
    # with a list of its channels, RGB images are read in colour.
    _C.TEST.PREDICT.CHANNEL = None
    # Number format of inference (evaluation and tools/predict.py): "float32", or "bfloat16"
    # through torch.autocast (maskrcnnpp/utils/inference_precision.py): about 2x faster on CPUs
    # with AVX512-BF16 / AMX and on recent GPUs, probabilities within the tolerance that
    # docs/benchmark.md states.
    _C.TEST.PRECISION = "float32"

    # ---------------------------------------------------------------------------------------
    # Test-time caps of Mask R-CNN(++) that follow the image's area
    # (maskrcnnpp/modeling/detection_caps.py): each of MODEL.RPN.PRE_NMS_TOPK_TEST,
    # MODEL.RPN.POST_NMS_TOPK_TEST and TEST.DETECTIONS_PER_IMAGE is the floor of a cap
    # max(KEY, KEY_PER_MEGAPIXEL x megapixels of the model input: the image or tile after
    # INPUT.SCALE_FACTOR_TEST), in evaluation and tools/predict.py; a reached cap is named in a
    # warning. Exported models keep the floors (export_info.json says so).
    # ---------------------------------------------------------------------------------------
    _C.MODEL.RPN = CN()
    # Proposals kept per pyramid level before the RPN's NMS, per megapixel (the NMS's time
    # grows with it: up to quadratically on the CPU).
    _C.MODEL.RPN.PRE_NMS_TOPK_TEST_PER_MEGAPIXEL = 4000
    # Proposals kept after the RPN's NMS, per megapixel.
    _C.MODEL.RPN.POST_NMS_TOPK_TEST_PER_MEGAPIXEL = 4000
    # Detections kept per image, per megapixel (2,000: one nucleus per 22 x 22 pixels of model
    # input).
    _C.TEST.DETECTIONS_PER_MEGAPIXEL = 2000

    # ---------------------------------------------------------------------------------------
    # Pixel scale of instance models (maskrcnnpp/data/pixel_scale.py): images are resized by a
    # factor, never to a size, so that nuclei keep one size in pixels whatever the image size.
    # Used by training, evaluation, tools/predict.py (every image and tile) and export; replaces
    # Detectron2's INPUT.MIN_SIZE_* / MAX_SIZE_* (ResizeShortestEdge), which are not read for
    # instance models. Semantic models see images as they are: both must stay 1 for them.
    # ---------------------------------------------------------------------------------------
    # Every test-time image and tile is resized by this one factor (1: as it is).
    _C.INPUT.SCALE_FACTOR_TEST = 1.0
    # Training: each image is resized by a factor drawn log-uniformly from (min, max), then
    # cropped (INPUT.CROP) and flipped; (1.0, 1.0): as it is.
    _C.INPUT.SCALE_FACTOR_TRAIN = (1.0, 1.0)
    # Replaced by INPUT.SCALE_FACTOR_TEST; in a config (e.g. an older run's config.yaml) it is
    # ignored with a warning.
    if not cfg.key_is_deprecated("TEST.PREDICT.REFERENCE_SIZE"):
        cfg.register_deprecated_key("TEST.PREDICT.REFERENCE_SIZE")

    # ---------------------------------------------------------------------------------------
    # VGG-style encoder of the UNet++ paper (maskrcnnpp/modeling/backbone/vgg.py), registered
    # as "build_vgg_backbone": stage k = 2x2 max-pool (k > 0) + two 3x3 conv + norm + ReLU,
    # output "vgg{k}" at stride 2**k.
    # ---------------------------------------------------------------------------------------
    _C.MODEL.VGG = CN()
    # Output channels of stages vgg0, vgg1, ... (the paper's UNet++: 32, 64, 128, 256, 512).
    _C.MODEL.VGG.STAGE_CHANNELS = [32, 64, 128, 256, 512]
    # Normalization after each conv: "", "BN", "GN", "SyncBN", ... (get_norm names).
    _C.MODEL.VGG.NORM = "BN"
    # Stage outputs to return; stages deeper than the deepest one listed are not built.
    _C.MODEL.VGG.OUT_FEATURES = ["vgg0", "vgg1", "vgg2", "vgg3", "vgg4"]
    # ---------------------------------------------------------------------------------------
    # Semantic UNet++ (maskrcnnpp/modeling/meta_arch/semantic_unetpp.py), meta-architecture
    # "SemanticUNetPlusPlus". Decoder nodes X(i,j) = two 3x3 conv + norm + ReLU over the
    # concatenated same-level nodes and the 2x2-transposed-conv up-sampled X(i+1,j-1).
    # ---------------------------------------------------------------------------------------
    _C.MODEL.UNETPP = CN()
    # Registry name (BACKBONE_REGISTRY) of the encoder: "build_vgg_backbone" (the paper's,
    # MODEL.VGG.*), "build_resnet_encoder_backbone" (Detectron2's ResNet, MODEL.RESNETS.*, plus
    # "res1" at stride 2) or any backbone whose IN_FEATURES strides double level to level.
    _C.MODEL.UNETPP.ENCODER = "build_vgg_backbone"
    # Encoder outputs X(0..L-1, 0), finest first; L - 1 decoder columns (the paper: L = 5).
    _C.MODEL.UNETPP.IN_FEATURES = ["vgg0", "vgg1", "vgg2", "vgg3", "vgg4"]
    # "unet" (U-Net's decoder), "unet+" (nested nodes, each fed by its left neighbour) or
    # "unet++" (nested nodes fed by all nodes on their left). Wide U-Net: "unet" with wider
    # MODEL.VGG.STAGE_CHANNELS.
    _C.MODEL.UNETPP.SKIP = "unet++"
    # Output channels of the decoder nodes of levels 0..L-2; empty: the encoder's channels of
    # each level (the paper).
    _C.MODEL.UNETPP.DECODER_CHANNELS = []
    # Normalization in the decoder nodes ("", "BN", "GN", ...: get_norm names).
    _C.MODEL.UNETPP.NORM = "BN"
    # Classes including the background (class 0). 2: one sigmoid logit per head (the paper).
    # TARGET "interior_boundary" needs 3.
    _C.MODEL.UNETPP.NUM_CLASSES = 2
    # What the network learns: "semantic" (the dataset's sem_seg labels; nuclei at inference
    # are 8-connected foreground components) or "interior_boundary" (3 classes made from the
    # instance masks of the dataset's instance twin: background, nucleus interior, nucleus
    # boundary; inference also returns "instances", interiors grown into the foreground,
    # which separates touching nuclei; maskrcnnpp/structures/interior_boundary.py).
    _C.MODEL.UNETPP.TARGET = "semantic"
    # Heads on every top-row node X(0,1..L-1), each trained with the hybrid loss (needs
    # "unet+" or "unet++"); False: one head on X(0,L-1).
    _C.MODEL.UNETPP.DEEP_SUPERVISION = True
    # Loss weight of each head in column order; empty: 1 for every head.
    _C.MODEL.UNETPP.LOSS_WEIGHTS = []
    # Weight of the cross-entropy term in the hybrid loss CE_WEIGHT * CE + (1 - Dice); the
    # paper's 0.5.
    _C.MODEL.UNETPP.CE_WEIGHT = 0.5
    # Target value of unlabelled pixels (and of the padding added in training).
    _C.MODEL.UNETPP.IGNORE_VALUE = 255
    # Inference: 0 averages the probabilities of all heads (ensemble); k in 1..L-1 runs only
    # the sub-network feeding X(0,k) (pruned UNet++ L_k: encoder levels > k are not computed).
    _C.MODEL.UNETPP.TEST_LEVEL = 0
    # Inference on images with a side above this many pixels runs on overlapping windows of
    # this size, averaged where they overlap (0: whole images always). Smaller images run
    # whole: the network is fully convolutional, and windows repeat work where they overlap
    # (512 windows with overlap 0.25 cover a 1024x1024 image with 2.25x its pixels).
    _C.MODEL.UNETPP.SLIDING_WINDOW_SIZE = 2048
    # Fraction of a window shared with its neighbour, in [0, 1).
    _C.MODEL.UNETPP.SLIDING_WINDOW_OVERLAP = 0.25
    # Inference: average the class probabilities of the image's 8 flips and 90-degree
    # rotations, each mapped back (test-time augmentation; 8x the inference time).
    _C.MODEL.UNETPP.TEST_DIHEDRAL_MEAN = False

    # ---------------------------------------------------------------------------------------
    # Training inputs of semantic models (maskrcnnpp/data/semantic_patch_mapper.py).
    # ---------------------------------------------------------------------------------------
    _C.INPUT.SEMANTIC_PATCH = CN()
    # Side of the random square patches cut from training images (the paper: 96); smaller
    # images are padded (ignored label). Flips and 90-degree rotations are always applied.
    _C.INPUT.SEMANTIC_PATCH.SIZE = 96
    # Brightness and contrast are each scaled by a random factor in [1 - J, 1 + J] (0: off).
    _C.INPUT.SEMANTIC_PATCH.INTENSITY_JITTER = 0.2
    # Training patches get their colour channels in a random order (stain colours vary).
    _C.INPUT.SEMANTIC_PATCH.SHUFFLE_CHANNELS = False
    # Probability that a training patch is inverted (255 - x), so that nuclei darker and
    # brighter than their background are both seen (bright-field / histology vs fluorescence).
    _C.INPUT.SEMANTIC_PATCH.INVERT_PROB = 0.0
    # Decoded training images and labels each data-loader worker keeps in memory, in MB
    # (10**6 bytes; first come, first kept; the rest are decoded at every visit). DSB2018's
    # training split takes about 200 MB decoded (50 megapixels). 0: decode every patch's image again.
    _C.INPUT.SEMANTIC_PATCH.CACHE_MB = 1000

    # ---------------------------------------------------------------------------------------
    # Training (maskrcnnpp/engine/optimizer.py, maskrcnnpp/data/build.py). The LR schedule is
    # Detectron2's SOLVER.LR_SCHEDULER_NAME ("WarmupMultiStepLR", "WarmupCosineLR", ...).
    # DATALOADER.SAMPLER_TRAIN also takes "PixelAreaTrainingSampler": images drawn with
    # probability proportional to their pixel area to the power below.
    # ---------------------------------------------------------------------------------------
    # 1.0: every training pixel equally likely to be in a patch; 0.0: every image equally
    # likely; 0.5: between the two (large images get more patches, not in proportion).
    _C.DATALOADER.PIXEL_AREA_POWER = 1.0
    # "SGD" (Detectron2's: SOLVER.MOMENTUM, NESTEROV) or "AdamW" (SOLVER.ADAMW_BETAS);
    # both use SOLVER.BASE_LR, WEIGHT_DECAY and CLIP_GRADIENTS.
    _C.SOLVER.OPTIMIZER = "SGD"
    # AdamW's (beta1, beta2): decay rates of its running means of the gradient and its square.
    _C.SOLVER.ADAMW_BETAS = (0.9, 0.999)
    _add_missing(cfg, _C)
    return cfg


def _add_missing(cfg, defaults):
    """Copy into ``cfg`` every key of ``defaults`` that ``cfg`` lacks, node by node."""
    for key, value in defaults.items():
        if key not in cfg:
            cfg[key] = copy.deepcopy(value)
        elif isinstance(value, CN) and isinstance(cfg[key], CN):
            _add_missing(cfg[key], value)
