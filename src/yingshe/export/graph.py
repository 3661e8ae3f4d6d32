"""The module that leaves yingshe: raw uint8 pixels in, logits out, normalisation and TTA inside.

Putting `Normalize` and the run's TTA views (mirror, shifted copies) inside the exported graph
means a consumer of the file (ONNX Runtime, TorchScript, a plain `onnxruntime` session with no
yingshe code) only has to give it the decoded pixels `data.images.decode_image` makes; nothing
about preprocessing can be forgotten.
"""

from __future__ import annotations

from torch import Tensor, nn

from yingshe.inference import Classifier
from yingshe.models.tta import tta_forward

INPUT_NAME = "image"  # uint8 (N, H, W, C), channels last, as decode_image returns it
OUTPUT_NAME = "logits"  # float32 (N, K)


class DeployModule(nn.Module):
    """The classifier as one graph: (N, H, W, C) uint8 → (N, K) float32 logits."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.model = classifier.model.to("cpu").eval()
        self.normalize = classifier.normalize.to("cpu")
        self.tta_flip = classifier.tta_flip  # the run's TTA decisions, fixed into the graph
        self.tta_translate = classifier.tta_translate
        # eval at the root: torch.onnx.export restores the root's mode recursively afterwards, and
        # a root left in train mode would put the shared model's BatchNorm into batch statistics
        self.eval()

    def forward(self, image: Tensor) -> Tensor:
        x = self.normalize(image.permute(0, 3, 1, 2))
        return tta_forward(self.model, x, self.tta_flip, self.tta_translate).float()
