"""The official QC-StyleGAN pSp encoder file (``ffhq_psp.pt`` / ``afhq_psp.pt``) as a drop-in encoder.

QC-StyleGAN inverts an image in two stages (Sec. 4.2-4.3): a pSp encoder (Richardson et al., CVPR
2021) gives the pivot (w, q), PTI tunes the generator around it. The release's encoder is a
"DoubleEncoder": two ResNet-34 branches of the same structure, content -> w [512] and quality ->
q [16]. Each branch (names as in the file, under ``encoder.content_encoder.`` / ``encoder.quality_encoder.``):

    conv1 7x7/2 (no bias) -> bn1 -> relu (a PReLU, one slope per channel) -> body.0 ... body.15
    (ResNet-34 BasicBlocks, stages of 3, 4, 6, 3 blocks of width 64, 128, 256, 512; no max-pool)
    -> global average pool [N, 512] -> linear (equalized learning rate: weight / sqrt(512))

Inference (the release's ``scripts/inference.py``; ``preprocess`` and ``forward`` below):

    x = PIL image .convert('RGB') .resize((256, 256), BILINEAR)   # the original image, any size
    x = (uint8 / 255 - 0.5) / 0.5                                 # [N, 3, 256, 256], RGB
    codes = cat(content(x), quality(x)) + latent_avg              # [N, 528], BatchNorm in eval mode
    w = codes[:, :512] for every layer of G,  q = codes[:, 512:]

The file also holds ``decoder.*`` (a whole generator) and the optimiser state (hundreds of MB):
``inversion.encoders.read_encoder_file`` maps the file (``torch.load(mmap=True)``) and
``extract_encoder`` copies only ``encoder.*`` and ``latent_avg`` out of it: the rest is never read. The tensors of the real file are tagged ``cuda:0``:
it is read with ``map_location='cpu'`` and ``weights_only=True`` (no code runs).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dnnlib.image_io import as_hwc, match_channels
from dnnlib.util import BadFileError
from torch_utils.misc import assert_shape

ARCHITECTURE = "official-psp"          # the 'architecture' tag of the file once converted to our format
INPUT_SIZE = 256                       # the release resizes every input to 256 x 256, whatever G's resolution
ENCODER_TYPE = "DoubleEncoder"         # opts['encoder_type'] of the QC-StyleGAN release files
PREFIX = "encoder."
BRANCHES = ("content_encoder", "quality_encoder")
RESNET34_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))   # (blocks, width) per stage
FEATURES = 512                         # pooled features of the last stage
BN_EPS = 1e-5
W_AVG_REL_TOL = 1e-4                   # latent_avg[:w_dim] vs G's w_avg: relative to max |w_avg| (float32 copies agree exactly)


# ---------------------------------------------------------------------------------------------
# The network.

class ResidualBlock(nn.Module):
    """ResNet BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is
    ``downsample`` (1x1/2 conv + BN) where the block halves the resolution, else the identity."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels, eps=BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class EqualizedLinear(nn.Module):
    """y = x W^T / sqrt(in_features) + b (StyleGAN's equalized learning rate, lr multiplier 1)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros([out_features, in_features]))
        self.bias = nn.Parameter(torch.zeros([out_features]))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class Branch(nn.Module):
    """One branch of the DoubleEncoder: image [N, 3, 256, 256] -> [N, out_features]."""

    def __init__(self, out_features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.relu = nn.PReLU(64)                        # the file's name for the stem's PReLU
        blocks, c_in = [], 64
        for stage, (n, c) in enumerate(RESNET34_STAGES):
            for j in range(n):
                blocks.append(ResidualBlock(c_in, c, 2 if (stage > 0 and j == 0) else 1))
                c_in = c
        self.body = nn.Sequential(*blocks)
        self.linear = EqualizedLinear(FEATURES, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.relu(self.bn1(self.conv1(x))))          # [N, 512, 16, 16] for 256 x 256
        return self.linear(x.mean(dim=[2, 3]))                     # [N, out_features]


class OfficialPSPEncoder(nn.Module):
    """The release's DoubleEncoder with its ``latent_avg``, behind our encoder interface.

    ``forward(x)``: x [N, 3, 256, 256], the official preprocessing of the original images
    (``preprocess``), -> (ws [N, num_ws, w_dim], the same w in every row; q [N, q_dim]).
    ``encode_images(images, prepared)`` is what the inversion calls: the originals, any size and
    mode, go through ``preprocess`` (G's resolution plays no part), never the copy the inversion
    resized to G's resolution.
    """

    reads_originals = True             # inversion.api hands it the original images

    def __init__(self,
                 w_dim: int = 512,                 # content branch outputs (the generator's w_dim)
                 q_dim: int = 16,                  # quality branch outputs (the generator's q_dim)
                 num_ws: int = 14,                 # rows of ws (the generator's num_ws; 14 = 256 x 256)
                 img_resolution: Optional[int] = None):   # G's resolution it was loaded for (information only)
        super().__init__()
        self.init_kwargs = dict(w_dim=w_dim, q_dim=q_dim, num_ws=num_ws, img_resolution=img_resolution)
        self.w_dim, self.q_dim, self.num_ws, self.img_resolution = w_dim, q_dim, num_ws, img_resolution
        self.content_encoder = Branch(w_dim)
        self.quality_encoder = Branch(q_dim)
        self.register_buffer("latent_avg", torch.zeros([w_dim + q_dim]))   # [w_avg, q offset]

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, 256, 256] -> codes [N, w_dim + q_dim] = encoder(x) + latent_avg."""
        assert_shape(x, [None, 3, INPUT_SIZE, INPUT_SIZE])
        x = x.to(self.latent_avg.dtype)
        return torch.cat([self.content_encoder(x), self.quality_encoder(x)], dim=1) + self.latent_avg

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        codes = self.codes(x)                                       # [N, w_dim + q_dim]
        w, q = codes[:, :self.w_dim], codes[:, self.w_dim:]         # [N, w_dim], [N, q_dim]
        return w.unsqueeze(1).repeat(1, self.num_ws, 1), q          # ws [N, num_ws, w_dim]

    def encode_images(self, images: Sequence[np.ndarray], prepared: Optional[torch.Tensor] = None):
        """uint8 originals (``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]``, any size) -> (ws, q) on this
        encoder's device; ``prepared`` (the inversion's copy at G's resolution) is not used."""
        return self(preprocess(images).to(self.latent_avg.device))

    def check_generator(self, G: nn.Module, what: str = "encoder") -> None:
        """``BadFileError`` unless G's w_dim, q_dim and num_ws are this encoder's (load it with
        ``generator=G`` to take G's num_ws)."""
        for attr in ("w_dim", "q_dim", "num_ws"):
            if getattr(self, attr) != getattr(G, attr):
                raise BadFileError(f"{what} does not fit this generator: {attr} {getattr(self, attr)} "
                                   f"(encoder), {getattr(G, attr)} (network)")


def preprocess(images: Sequence[np.ndarray]) -> torch.Tensor:
    """The release's input transform on uint8 originals -> float32 [N, 3, 256, 256] in [-1, 1].

    Grey ([H, W] or [H, W, 1]) is replicated to RGB (PIL's ``convert('RGB')``), the image is
    resized to 256 x 256 by PIL's bilinear filter (antialiased when shrinking; aspect ratio not
    kept; a 256 x 256 image is unchanged) and rounded to uint8 as the release does, then
    ``(u8 / 255 - 0.5) / 0.5``.
    """
    out = []
    for arr in images:
        arr = match_channels(as_hwc(arr), 3)
        img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
        if img.size != (INPUT_SIZE, INPUT_SIZE):
            img = img.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
        out.append(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1))   # [3, 256, 256]
    x = torch.stack(out).to(torch.float32) / 255.0
    return (x - 0.5) / 0.5


# ---------------------------------------------------------------------------------------------
# The file.

def is_official_file(obj: Any) -> bool:
    """Whether a loaded ``.pt`` object has the release's layout: a dict with ``state_dict`` holding
    ``encoder.*`` entries (any encoder type) and ``latent_avg``."""
    return (isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "latent_avg" in obj
            and any(isinstance(k, str) and k.startswith(PREFIX) for k in obj["state_dict"]))


@dataclasses.dataclass
class OfficialEncoderFile:
    """What ``extract_encoder`` keeps of an official file: the encoder and nothing else."""
    state_dict: Dict[str, torch.Tensor]    # OfficialPSPEncoder's names: content_encoder.*, quality_encoder.*, latent_avg
    w_dim: int
    q_dim: int
    num_ws: int                            # the release's n_styles (the generator it was trained with)
    opts: Dict[str, Any]                   # the plain-data training options (encoder_type, output_size, ...)


def expected_shapes(w_dim: int, q_dim: int) -> Dict[str, Tuple[int, ...]]:
    """Names and shapes of an OfficialPSPEncoder's state (its ``state_dict`` without building one)."""
    with torch.device("meta"):
        E = OfficialPSPEncoder(w_dim, q_dim)
    return {k: tuple(v.shape) for k, v in E.state_dict().items()}


def extract_encoder(raw: dict, path: str) -> OfficialEncoderFile:
    """The encoder of a loaded official file (``is_official_file``), copied out of the (mapped) file
    so the file's other entries can be released; ``BadFileError`` for another encoder type or a
    layout that is not the DoubleEncoder's."""
    opts = raw.get("opts") if isinstance(raw.get("opts"), dict) else {}
    kind = opts.get("encoder_type", ENCODER_TYPE)
    if kind != ENCODER_TYPE:
        raise BadFileError(f"{path}: a pSp file with encoder_type '{kind}'; only the QC-StyleGAN release's "
                           f"'{ENCODER_TYPE}' (ffhq_psp.pt, afhq_psp.pt) is supported")
    if not opts.get("learn_in_w", True) or not opts.get("start_from_latent_avg", True):
        raise BadFileError(f"{path}: a pSp file trained without learn_in_w / start_from_latent_avg; only the "
                           f"release's W-space DoubleEncoder is supported")
    src = raw["state_dict"]
    try:
        w_dim = int(src[f"{PREFIX}content_encoder.linear.weight"].shape[0])
        q_dim = int(src[f"{PREFIX}quality_encoder.linear.weight"].shape[0])
    except (KeyError, AttributeError, IndexError):
        raise BadFileError(f"{path}: a pSp file without the DoubleEncoder's linear heads; only the release's "
                           f"'{ENCODER_TYPE}' is supported") from None
    state: Dict[str, torch.Tensor] = {}
    for name, shape in expected_shapes(w_dim, q_dim).items():
        v = raw["latent_avg"] if name == "latent_avg" else src.get(PREFIX + name)
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != shape:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else "missing"
            raise BadFileError(f"{path}: not the DoubleEncoder layout ({name}: {got}, expected {list(shape)})")
        state[name] = v.detach().to("cpu", copy=True)              # out of the mapped file
    extra = [k for k in src if k.startswith(PREFIX) and k[len(PREFIX):] not in state]
    if extra:
        raise BadFileError(f"{path}: not the DoubleEncoder layout (unexpected {extra[0]})")
    num_ws = int(opts.get("n_styles") or 2 * int(math.log2(int(opts.get("output_size") or INPUT_SIZE))) - 2)
    keep = {k: v for k, v in opts.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return OfficialEncoderFile(state_dict=state, w_dim=w_dim, q_dim=q_dim, num_ws=num_ws, opts=keep)


def build_encoder(state: Dict[str, torch.Tensor], w_dim: int, q_dim: int, num_ws: int,
                  img_resolution: Optional[int] = None) -> OfficialPSPEncoder:
    """An ``OfficialPSPEncoder`` holding ``state`` (float32; its tensors are taken, not copied)."""
    with torch.device("meta"):                    # no throw-away initialisation of 2 x 21 M parameters
        E = OfficialPSPEncoder(w_dim, q_dim, num_ws, img_resolution)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    E.load_state_dict(state, assign=True)
    return E.eval().requires_grad_(False)


def w_avg_mismatch(E: OfficialPSPEncoder, G: nn.Module) -> Optional[float]:
    """max |latent_avg[:w_dim] - G.mapping.w_avg| when it exceeds ``W_AVG_REL_TOL`` of max |w_avg|
    (the encoder was trained against another generator), else None."""
    w_avg = getattr(getattr(G, "mapping", None), "w_avg", None)
    if w_avg is None or w_avg.numel() != E.w_dim:
        return None
    mine = E.latent_avg[:E.w_dim].detach().float().cpu()
    theirs = w_avg.detach().float().cpu()
    diff = float((mine - theirs).abs().max())
    return diff if diff > W_AVG_REL_TOL * max(float(theirs.abs().max()), 1e-12) else None

