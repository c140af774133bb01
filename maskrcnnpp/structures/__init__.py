"""The nuclei structures the other rooms share: label images made from masks, semantic
foregrounds and COCO segmentations (:mod:`.label_image`), COCO run-length encodings
(:mod:`.rle`), instances cropped and painted into a label image (:mod:`.instance_painting`), and
the interior / boundary target of the semantic models (:mod:`.interior_boundary`)."""

from .instance_painting import CroppedMask, crop_masks, paint_instances
from .interior_boundary import interior_boundary_target, nuclei_from_interior_boundary
from .label_image import (
    coco_segmentations_to_label_image,
    label_image_to_instances,
    masks_to_label_image,
    semantic_to_label_image,
)
from .rle import (
    coco_segmentation_to_rle,
    decode_coco_segmentation,
    label_image_to_rles,
    mask_to_annotation_fields,
    mask_to_rle,
)

__all__ = [
    "CroppedMask",
    "coco_segmentation_to_rle",
    "coco_segmentations_to_label_image",
    "decode_coco_segmentation",
    "label_image_to_instances",
    "masks_to_label_image",
    "semantic_to_label_image",
    "crop_masks",
    "interior_boundary_target",
    "label_image_to_rles",
    "mask_to_annotation_fields",
    "mask_to_rle",
    "nuclei_from_interior_boundary",
    "paint_instances",
]
