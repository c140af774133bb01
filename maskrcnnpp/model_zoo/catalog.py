"""The shipped models: one entry a name, with the files inside the package that make it."""

from dataclasses import dataclass

__all__ = ["ZooModel", "MODELS"]


@dataclass(frozen=True)
class ZooModel:
    """
    A shipped model. Its files lie in ``maskrcnnpp/model_zoo/``: ``configs/<name>.yaml`` (the
    whole config; its ``MODEL.WEIGHTS`` is ``maskrcnnpp://<name>``) and ``weights/<name>.pth``
    (the model's state dict in float16, loaded into float32).

    Attributes:
        name (str): what users type (``--model NAME``, ``maskrcnnpp://NAME``).
        sha256 (str): hex SHA-256 of the weights file; loading refuses any other content.
        summary (str): one line for listings.
    """

    name: str
    sha256: str
    summary: str

    @property
    def config_file(self) -> str:
        return f"configs/{self.name}.yaml"

    @property
    def weights_file(self) -> str:
        return f"weights/{self.name}.pth"


# The card of each model (data, recipe, scores, limits) is docs/models.md.
MODELS = {
    model.name: model
    for model in (
        ZooModel(
            name="mask_rcnnpp_nuclei",
            sha256="61e69238be9a2425f78d0326d698cfc11c127577769454efca80495fca679258",
            summary="Mask R-CNN++ (ResNet-18, the paper's nested node), DSB2018 nuclei of every type",
        ),
        ZooModel(
            name="unet_nuclei",
            sha256="3e6fe022709ca341754d382a43cb396e4c2dda22200682e75b3801b81aaa17ba",
            summary="U-Net (VGG-style), the nuclei foreground of every DSB2018 type; touching nuclei not separated",
        ),
    )
}
