"""The nuclei structures the other rooms share: label images and COCO run-length encodings
(:mod:`.rle`), instances cropped and painted into a label image (:mod:`.instance_painting`), and
the interior / boundary target of the semantic models (:mod:`.interior_boundary`)."""
from .instance_painting import CroppedMask, crop_masks, paint_instances
from .interior_boundary import interior_boundary_target, nuclei_from_interior_boundary
from .rle import label_image_to_rles, mask_to_annotation_fields, mask_to_rle

__all__ = [
    "CroppedMask",
    "crop_masks",
    "interior_boundary_target",
    "label_image_to_rles",
    "mask_to_annotation_fields",
    "mask_to_rle",
    "nuclei_from_interior_boundary",
    "paint_instances",
]
