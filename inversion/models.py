"""What every application starts from: the networks of a run, read once, on the picked device.

    models = load_models(network, encoder, device)     # None: the shipped model (and its encoder)
    models.G, models.E, models.device                  # generator, encoder or None, torch.device
    faces = models.face_pipeline(align, max_faces, min_face)   # None = inputs are aligned crops

The rules live below and are only called here: the generator of a file is
``training.checkpoint.pick_generator`` (``G_ema`` when present, else ``G``; a file without a
generator, or a plain StyleGAN2 one where a QC generator is needed, is a ``BadFileError``: exit
status 2, nothing written); the device is ``torch_utils.misc.resolve_device`` (``auto``: CUDA
when available; ``cuda`` without a GPU is an error); the defaults for omitted files are
``training.pretrained``'s. Every file is checked before the face pipeline is built, so a wrong
file stops a run before anything is detected or written.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import torch
from torch import nn

from faces.pipeline import FacePipeline, build_face_pipeline
from torch_utils.misc import resolve_device
from training.checkpoint import load_network, pick_generator
from inversion.pretrained import resolve_encoder, resolve_network

from .encoders import load_encoder


@dataclasses.dataclass
class Models:
    G: nn.Module                    # the generator (eval, gradients off) on ``device``
    E: Optional[nn.Module]          # the w/q encoder, or None (inversion optimises from w_avg)
    network: Optional[str]          # path of the network file (the shipped one when omitted); None: made in memory
    encoder: Optional[str]          # path of the encoder file, or None
    device: torch.device
    meta: Dict[str, Any]            # the network file's ``metadata`` and ``source`` (face template)

    @classmethod
    def of(cls, G: nn.Module, E: Optional[nn.Module] = None, device: Any = None) -> "Models":
        """Networks already in memory (tests, reports): ``device`` None = where ``G`` is."""
        dev = torch.device(device) if device is not None else next(G.parameters()).device
        return cls(G=G, E=E, network=None, encoder=None, device=dev, meta={})

    def face_pipeline(self, align: str, max_faces: Optional[int] = None,
                      min_face: Optional[int] = None) -> Optional[FacePipeline]:
        """``--align``'s face pipeline for this generator (``faces.pipeline.build_face_pipeline``)."""
        return build_face_pipeline(align, self.G, self.network, self.meta, max_faces=max_faces, min_face=min_face)


def load_models(network: Optional[str] = None, encoder: Optional[str] = None, device: Any = "auto",
                require_qc: bool = True, with_encoder: bool = True, announce: bool = True) -> Models:
    """Read the network file once (generator and face-template metadata) and, with
    ``with_encoder``, the encoder (``encoder``, else the shipped one when ``network`` is the shipped
    model); ``device``: a name for ``resolve_device`` or a ``torch.device``. ``announce``: say on
    stderr when the shipped files stand in for omitted options."""
    dev = device if isinstance(device, torch.device) else resolve_device(device or "auto")
    encoder_path = resolve_encoder(encoder, network, announce=announce) if with_encoder else None
    network_path = resolve_network(network, announce=announce)
    nets = load_network(network_path, device="cpu")
    G = pick_generator(nets, network_path, require_qc=require_qc).to(dev)
    meta = {k: nets.get(k) for k in ("metadata", "source")}
    E = load_encoder(encoder_path, device=dev, generator=G) if encoder_path else None
    return Models(G=G, E=E, network=network_path, encoder=encoder_path, device=dev, meta=meta)
