"""Checkpoints: our file format, and official StyleGAN2-ADA / QC-StyleGAN files -> our networks.

One entry point, ``load_network(path)``, accepts:
  * our format (``save_checkpoint``): a ``torch.save`` dict read with ``weights_only=True``;
  * an official ``network-snapshot-*.pkl`` (StyleGAN2-ADA or QC-StyleGAN), read through the
    restricted unpickler (``torch_utils/safe_pickle.py``): module source is never executed, our
    classes are built from the records' constructor arguments and filled by parameter name;
  * an official QC-StyleGAN teacher file (``G_teacher_*.pth.tar``): a plain state_dict of a
    StyleGAN2-ADA generator whose architecture is inferred from the tensor shapes.

Our format (``FORMAT_TAG``, ``FORMAT_VERSION``)::

    {'format': 'qc-stylegan-checkpoint', 'version': 1,
     'networks': {name: {'class': 'Generator'|'Discriminator', 'kwargs': {...}, 'state_dict': {...}}},
     'training_state': {...} | None,     # optimisers, counters, RNG, augment p (resume)
     'metadata': {...}}                  # free-form plain data (e.g. training options)

A *slim* network entry (``slim_checkpoint``: a resumable run small enough to keep in git) stores
only the tensors that differ from a base network in another file, exactly, plus
``'base': {'file': name beside this file, 'network': 'G_ema', 'sha256': digest of its tensors}``;
an entry may also hold its tensors as bfloat16 (``'stored_dtype'``), widened to float32 on load.
"""
from __future__ import annotations

import copy
import io
import os
import re
import zipfile
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from dnnlib.util import BadFileError, UserError, atomic_write, is_url, open_url
from torch_utils.misc import load_torch_file
from torch_utils.safe_pickle import ModuleRecord, UnsafePickleError, load_pickle

from .discriminator import Discriminator
from .networks import Generator

FORMAT_TAG = "qc-stylegan-checkpoint"
FORMAT_VERSION = 1
NETWORK_CLASSES = {"Generator": Generator, "Discriminator": Discriminator}
NETWORK_KEYS = ("G", "G_ema", "D", "D_degraded", "G_teacher")

# StyleGAN2-ADA's training configs all use these; a bare state_dict cannot tell them.
INFERRED_DEFAULTS = dict(conv_clamp=256, mapping_lr_multiplier=0.01, num_fp16_res=4)


# ---------------------------------------------------------------------------------------------
# Copying tensors by name.

def copy_state(dst: nn.Module, src: Mapping[str, torch.Tensor], what: str = "network",
               allow_widen: bool = False) -> None:
    """Copy ``src`` tensors into ``dst``'s parameters and buffers by name, checking shapes.

    With ``allow_widen``, a source tensor that is shorter along dim 0 fills the first rows (a
    stock conv1 going into a widened QC conv1); the destination's other rows keep their values.
    Every destination tensor must be covered, except ``resample_filter`` buffers (constants) and,
    with ``allow_widen``, DegradBlock parameters (``convq``).
    """
    dst_tensors = dict(dst.named_parameters())
    dst_tensors.update(dict(dst.named_buffers()))
    unknown = [k for k in src if k not in dst_tensors]
    if unknown:
        raise BadFileError(f"{what}: the file has tensors this architecture lacks: {', '.join(unknown[:5])}"
                        + (" ..." if len(unknown) > 5 else ""))
    missing = [k for k in dst_tensors if k not in src and not k.endswith("resample_filter")
               and not (allow_widen and ".convq." in k)]
    if missing:
        raise BadFileError(f"{what}: the file lacks tensors: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    with torch.no_grad():
        for name, value in src.items():
            target = dst_tensors[name]
            value = torch.as_tensor(value)
            if tuple(value.shape) == tuple(target.shape):
                target.copy_(value)
            elif (allow_widen and value.ndim == target.ndim and value.ndim >= 1
                  and value.shape[1:] == target.shape[1:] and value.shape[0] < target.shape[0]):
                target[: value.shape[0]].copy_(value)
            else:
                raise BadFileError(f"{what}: shape mismatch for '{name}': file has {tuple(value.shape)}, "
                                f"network expects {tuple(target.shape)}")


def build_network(class_name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Instantiate one of our network classes from its constructor arguments."""
    if class_name not in NETWORK_CLASSES:
        raise BadFileError(f"unsupported network class '{class_name}' (supported: {', '.join(NETWORK_CLASSES)})")
    try:
        return NETWORK_CLASSES[class_name](**copy.deepcopy(dict(kwargs)))
    except TypeError as exc:
        raise BadFileError(f"cannot build {class_name} from the file's arguments: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Our format.

def network_entry(module: nn.Module) -> dict:
    """The plain-data record of one network in our format."""
    class_name = type(module).__name__
    if class_name not in NETWORK_CLASSES or not hasattr(module, "init_kwargs"):
        raise TypeError(f"cannot save a {class_name}: not one of {', '.join(NETWORK_CLASSES)}")
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return {"class": class_name, "kwargs": copy.deepcopy(module.init_kwargs), "state_dict": state}


def save_checkpoint(path: str, nets: Mapping[str, Optional[nn.Module]], training_state: Optional[dict] = None,
                    metadata: Optional[dict] = None) -> None:
    """Write our checkpoint atomically (a crash never leaves a partial file under ``path``)."""
    payload = {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "networks": {name: network_entry(m) for name, m in nets.items() if m is not None},
        "training_state": training_state,
        "metadata": dict(metadata or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def state_digest(module: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a network's tensors (a slim entry's base check)."""
    import hashlib
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def slim_entry(module: nn.Module, base: Optional[nn.Module] = None, base_file: Optional[str] = None,
               base_network: str = "G_ema", half: bool = False) -> dict:
    """``network_entry`` of ``module`` keeping only the tensors that differ from ``base`` (same
    class and arguments; exact float32 values), or (``half``) every tensor as bfloat16."""
    entry = network_entry(module)
    if base is not None:
        if type(base) is not type(module) or base.init_kwargs != module.init_kwargs:
            raise UserError(f"the base {base_network} of {base_file} has another architecture")
        ref = base.state_dict()
        entry["state_dict"] = {k: v for k, v in entry["state_dict"].items() if not torch.equal(v, ref[k].cpu())}
        entry["base"] = {"file": base_file, "network": base_network, "sha256": state_digest(base)}
    if half:
        entry["state_dict"] = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                               for k, v in entry["state_dict"].items()}
        entry["stored_dtype"] = "bfloat16"
    return entry


def _entry_network(entry: dict, path: str, name: str) -> nn.Module:
    """Build one network of our format; a slim entry starts from its base file's network."""
    what = f"{path}:{name}"
    base = entry.get("base")
    if base is None:
        net = build_network(entry["class"], entry["kwargs"])
        copy_state(net, entry["state_dict"], what=what)
        return net
    base_path = os.path.join(os.path.dirname(os.path.abspath(path)), base["file"])
    if not os.path.isfile(base_path):
        raise BadFileError(f"{what}: its base {base['file']} must lie beside it ({base_path} not found)")
    net = load_network(base_path).get(base["network"])
    if net is None or type(net).__name__ != entry["class"] or net.init_kwargs != entry["kwargs"]:
        raise BadFileError(f"{what}: {base['file']} holds no matching {base['network']}")
    if state_digest(net) != base["sha256"]:
        raise BadFileError(f"{what}: {base['file']} changed since this file was written (its tensors differ)")
    tensors = dict(net.named_parameters())
    tensors.update(dict(net.named_buffers()))
    unknown = [k for k in entry["state_dict"] if k not in tensors]
    if unknown:
        raise BadFileError(f"{what}: tensors this architecture lacks: {', '.join(unknown[:5])}")
    with torch.no_grad():
        for k, v in entry["state_dict"].items():
            tensors[k].copy_(torch.as_tensor(v))
    return net.train()


def _load_ours(payload: dict, path: str) -> Dict[str, Any]:
    version = payload.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BadFileError(f"{path}: checkpoint version {version} is newer than this code supports ({FORMAT_VERSION})")
    out: Dict[str, Any] = {"source": "qc-stylegan-checkpoint", "config": {}}
    for name, entry in payload.get("networks", {}).items():
        net = _entry_network(entry, path, name)
        out[name] = net
        out["config"][name] = copy.deepcopy(entry["kwargs"])
    out["training_state"] = payload.get("training_state")
    out["metadata"] = payload.get("metadata") or {}
    return out


# ---------------------------------------------------------------------------------------------
# Official pickles.

def _plain(value: Any) -> Any:
    """Records' kwargs -> plain Python data (EasyDict -> dict, numpy scalars -> numbers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    return value


def _network_from_record(record: ModuleRecord, what: str) -> nn.Module:
    if record.init_args:
        raise BadFileError(f"{what}: positional constructor arguments are not supported")
    net = build_network(record.class_name, _plain(record.init_kwargs))
    copy_state(net, record.state_dict(), what=what)
    return net


def _load_official_pickle(data: Any, path: str) -> Dict[str, Any]:
    if not isinstance(data, dict) or not any(k in data for k in NETWORK_KEYS):
        raise BadFileError(f"{path}: not a network pickle (expected a dict with G/G_ema/D)")
    out: Dict[str, Any] = {"source": "official-pickle", "config": {}, "training_state": None, "metadata": {}}
    for name in NETWORK_KEYS:
        record = data.get(name)
        if record is None:
            continue
        if not isinstance(record, ModuleRecord):
            raise BadFileError(f"{path}: entry '{name}' is not a network record")
        out[name] = _network_from_record(record, f"{path}:{name}")
        out["config"][name] = _plain(record.init_kwargs)
    aug = data.get("augment_pipe")
    if isinstance(aug, ModuleRecord):
        out["augment_pipe"] = {"class_name": aug.class_name, "kwargs": _plain(aug.init_kwargs),
                               "state_dict": aug.state_dict()}
    if isinstance(data.get("training_set_kwargs"), dict):
        out["metadata"]["training_set_kwargs"] = _plain(dict(data["training_set_kwargs"]))
    return out


# ---------------------------------------------------------------------------------------------
# Plain generator state_dicts (official QC-StyleGAN teacher files).

def infer_generator_kwargs(state: Mapping[str, torch.Tensor], **overrides) -> dict:
    """Constructor arguments of a generator from its state_dict's tensor shapes.

    What shapes cannot tell (conv_clamp, the mapping lr multiplier, FP16 layers) takes
    StyleGAN2-ADA's training defaults (``INFERRED_DEFAULTS``) unless given in ``overrides``.
    """
    keys = list(state)
    if not any(k.startswith("synthesis.") for k in keys) or "mapping.fc0.weight" not in state:
        raise BadFileError("not a generator state_dict (no mapping.fc0 / synthesis.* tensors)")
    fc_ids = sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    num_layers = len(fc_ids)
    w_dim = state[f"mapping.fc{num_layers - 1}.weight"].shape[0]
    c_dim = state["mapping.embed.weight"].shape[1] if "mapping.embed.weight" in state else 0
    embed = state["mapping.embed.weight"].shape[0] if c_dim else 0
    z_dim = state["mapping.fc0.weight"].shape[1] - embed
    layer_features = state["mapping.fc0.weight"].shape[0] if num_layers > 1 else None
    resolutions = sorted({int(m.group(1)) for k in keys if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    img_resolution = resolutions[-1]
    img_channels = state[f"synthesis.b{img_resolution}.torgb.weight"].shape[0]
    degrad = [r for r in resolutions if f"synthesis.b{r}.convq.0.weight" in state]
    q_dim = degrad_channels = degrad_layers = 0
    channels = {}
    for r in resolutions:
        rows = state[f"synthesis.b{r}.conv1.weight"].shape[0]
        if r in degrad:
            ch = state[f"synthesis.b{r}.convq.0.weight"].shape[0]
            degrad_channels = state[f"synthesis.b{r}.convq.0.weight"].shape[1]
            degrad_layers = len({k for k in keys if re.fullmatch(rf"synthesis\.b{r}\.convq\.\d+\.weight", k)})
            q_dim = (rows - ch) // degrad_channels
            rows = ch
        channels[r] = rows
    channel_max = max(channels.values())
    below_max = [r for r in resolutions if channels[r] < channel_max]
    channel_base = channels[below_max[-1]] * below_max[-1] if below_max else channel_max * img_resolution
    for r in resolutions:
        if min(channel_base // r, channel_max) != channels[r]:
            raise BadFileError(f"cannot infer channel_base/channel_max: b{r} has {channels[r]} channels")
    has_torgb_below = any(f"synthesis.b{r}.torgb.weight" in state for r in resolutions[:-1])
    has_skip = any(f"synthesis.b{r}.skip.weight" in state for r in resolutions)
    architecture = "resnet" if has_skip else ("skip" if has_torgb_below else "orig")
    defaults = dict(INFERRED_DEFAULTS)
    defaults.update(overrides)
    synthesis_kwargs = dict(channel_base=channel_base, channel_max=channel_max,
                            num_fp16_res=defaults["num_fp16_res"], conv_clamp=defaults["conv_clamp"],
                            architecture=architecture)
    if q_dim:
        synthesis_kwargs.update(degrad_blocks=len(degrad), degrad_channels=degrad_channels,
                                degrad_layers=degrad_layers)
    mapping_kwargs = dict(num_layers=num_layers, lr_multiplier=defaults["mapping_lr_multiplier"])
    if layer_features is not None and layer_features != w_dim:
        mapping_kwargs["layer_features"] = layer_features
    if c_dim and embed != w_dim:
        mapping_kwargs["embed_features"] = embed
    return dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                img_channels=img_channels, q_dim=q_dim, mapping_kwargs=mapping_kwargs,
                synthesis_kwargs=synthesis_kwargs)


def _load_state_dict_file(payload: Any, path: str) -> Dict[str, Any]:
    state = payload
    for key in ("state_dict", "G_ema", "g_ema", "G"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadFileError(f"{path}: not a network file (neither our checkpoint, an official pickle, "
                        f"nor a generator state_dict)")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    kwargs = infer_generator_kwargs(state)
    G = Generator(**kwargs)
    copy_state(G, state, what=path)
    return {"source": "state-dict", "G": G, "G_ema": G, "config": {"G": kwargs, "G_ema": kwargs},
            "training_state": None, "metadata": {}}


# ---------------------------------------------------------------------------------------------
# Entry point.

def load_network(path: str, device: Any = "cpu") -> Dict[str, Any]:
    """Load any supported network file (see module docstring).

    Returns a dict with the networks present among ``G``, ``G_ema``, ``D``, ``D_degraded`` (in
    eval mode, on ``device``), ``config`` (constructor kwargs per network), ``training_state``
    (ours only, else None), ``metadata`` and ``source``. Raises ``UserError`` with a one-line
    reason for missing, corrupt, unsafe or wrong-kind files.
    """
    path = os.fspath(path)
    if is_url(path):
        with open_url(path) as f:        # offline: served from the cache or a clear error
            path = f.name
    if not os.path.isfile(path):
        raise UserError(f"network file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) == 0:
        raise BadFileError(f"{path}: empty file")
    try:
        if zipfile.is_zipfile(path) or head[:1] != b"\x80":
            out = _load_torch_file(path)
        else:
            data = load_pickle(path)
            if isinstance(data, int):             # legacy (non-zip) torch.save: starts with a magic number
                out = _load_torch_file(path)
            else:
                out = _load_official_pickle(data, path)
    except UnsafePickleError as exc:
        raise BadFileError(f"{path}: {exc}") from None
    except BadFileError:
        raise
    except UserError as exc:                 # corrupt pickle bytes and the like: the file is wrong
        raise BadFileError(f"{path}: {exc}") from None
    for name in NETWORK_KEYS:
        if isinstance(out.get(name), nn.Module):
            out[name] = out[name].eval().requires_grad_(False).to(device)
    return out


def load_generator(path: str, device: Any = "cpu", require_qc: bool = False) -> Generator:
    """The generator every script uses from any supported file: ``G_ema`` when present, else
    ``G`` (eval mode, on ``device``). ``BadFileError`` (exit status 2) for a file without a
    generator (e.g. a discriminator-only pickle) and, with ``require_qc``, for a plain StyleGAN2
    generator where a QC-StyleGAN one is needed."""
    return pick_generator(load_network(path, device=device), path, require_qc)


def pick_generator(nets: Dict[str, Any], path: str, require_qc: bool = False) -> Generator:
    """``load_generator``'s rule on an already loaded ``load_network`` result."""
    G = nets.get("G_ema") if nets.get("G_ema") is not None else nets.get("G")
    if G is None:
        have = [k for k in NETWORK_KEYS if k in nets]
        raise BadFileError(f"{path}: holds no generator (it has {', '.join(have) or 'no networks'}); "
                           f"pass a file with G or G_ema")
    if require_qc and G.q_dim == 0:
        raise BadFileError(f"{path}: a plain StyleGAN2 generator (q_dim=0) where a QC-StyleGAN one is needed; "
                           f"widen it (python convert_network.py SRC DST --widen-q-dim 16) and fine-tune it with "
                           f"train.py --resume DST, or train a QC model first")
    return G


def is_complete_checkpoint(path: str) -> bool:
    """True when ``path`` is a whole file of our format: a readable ZIP whose members all pass
    their CRC check (a file cut short or damaged fails; the networks are not built)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None and any(n.endswith("data.pkl") for n in zf.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError):
        return False


def check_network_file(path: str) -> None:
    """Cheap up-front check of a network file (before a run folder is made): ``BadFileError`` for an
    empty file or a ZIP-format torch file that is cut short or damaged (pickles are checked when
    loaded)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise BadFileError(f"{path}: empty file")
    if head[:1] != b"\x80" and not is_complete_checkpoint(path):
        raise BadFileError(f"{path}: corrupt or truncated network file (not a complete ZIP archive)")


def _load_torch_file(path: str) -> Dict[str, Any]:
    payload = load_torch_file(path, "network file")
    if isinstance(payload, dict) and payload.get("format") == FORMAT_TAG:
        return _load_ours(payload, path)
    return _load_state_dict_file(payload, path)


# ---------------------------------------------------------------------------------------------
# Stock StyleGAN2 -> QC-StyleGAN.

# The last convq layer of a widened generator starts at this fraction of its default
# initialisation. At 1 the fresh residual drowns the image (the shipped teacher widened: G(w, q)
# 7 dB PSNR from G(w, 0), q ~ N(0, I)); at 0.03 the degraded mode starts 36 dB from the sharp one,
# a faint change that D_degraded then grows into degradations.
WIDEN_RESIDUAL_GAIN = 0.03


def widen_generator(G: Generator, q_dim: int = 16, degrad_blocks: int = 2, degrad_channels: int = 16,
                    degrad_layers: int = 3, seed: Optional[int] = 0,
                    residual_gain: float = WIDEN_RESIDUAL_GAIN) -> Generator:
    """A QC generator initialised from a plain StyleGAN2 generator (Sec. 3.3, fine-tuning).

    Matching tensors are copied by name; in the DegradBlock blocks the stock conv1 weight/bias
    fill the first ``out_channels`` rows of the widened conv1, while its extra rows and ``convq``
    keep a fresh initialisation, the last ``convq`` layer scaled by ``residual_gain`` (see
    ``WIDEN_RESIDUAL_GAIN``). At q = 0 the result renders exactly the stock image.
    """
    if G.q_dim != 0:
        raise UserError("widen_generator expects a plain StyleGAN2 generator (q_dim=0)")
    kwargs = copy.deepcopy(G.init_kwargs)
    kwargs["q_dim"] = q_dim
    kwargs["synthesis_kwargs"].update(degrad_blocks=degrad_blocks, degrad_channels=degrad_channels,
                                      degrad_layers=degrad_layers)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            G_qc = Generator(**kwargs)
    else:
        G_qc = Generator(**kwargs)
    copy_state(G_qc, G.state_dict(), what="widen_generator", allow_widen=True)
    with torch.no_grad():
        for res in G_qc.synthesis.degrad_resolutions:
            getattr(G_qc.synthesis, f"b{res}").convq[-1].weight.mul_(residual_gain)
    return G_qc.to(next(G.parameters()).device).train(G.training)


def convert_network(src: str, dst: str, widen_q_dim: Optional[int] = None, only: Optional[Sequence[str]] = None,
                    metadata: Optional[dict] = None) -> Dict[str, Any]:
    """Convert any supported network file to our format (optionally widening a plain generator
    into a QC one with ``widen_q_dim``; ``only`` keeps just these networks, e.g. ``['G_ema']`` for
    a release file; ``metadata`` is merged into the file's). Training state is never copied.
    Returns what was written: {name: class}."""
    nets = load_network(src)
    out = {name: nets[name] for name in NETWORK_KEYS if name in nets}
    if only:
        missing = [name for name in only if name not in out]
        if missing:
            raise BadFileError(f"{src} has no {', '.join(missing)} (it has {', '.join(out) or 'no networks'})")
        out = {name: out[name] for name in only}
    if widen_q_dim:
        for name in ("G", "G_ema"):
            if name in out and out[name].q_dim == 0:
                out[name] = widen_generator(out[name], q_dim=widen_q_dim)
    metadata = dict(nets.get("metadata") or {}, converted_from=os.path.basename(src), source=nets["source"],
                    **(metadata or {}))
    save_checkpoint(dst, out, training_state=None, metadata=metadata)
    return {name: type(net).__name__ for name, net in out.items()}


def slim_checkpoint(src: str, dst: str, base: str, only: Sequence[str] = ("G", "G_ema", "D_degraded"),
                    half: Sequence[str] = ("D", "D_degraded")) -> Dict[str, int]:
    """A resumable copy of the training snapshot ``src`` small enough for git (the model campaign's
    hand-over between machines, pretrained/README.md): generators as the tensors that differ from
    ``base``'s ``G_ema`` (a file that must stay beside ``dst``; exact), the networks in ``half`` as
    bfloat16, the training state without the optimisers' moments (Adam restarts from zero moments;
    counters, augmentation p and running means are kept). Returns bytes per network."""
    nets = load_network(src)
    if nets.get("training_state") is None:
        raise UserError(f"{src}: not a training snapshot (no training state)")
    if os.path.dirname(os.path.abspath(base)) != os.path.dirname(os.path.abspath(dst)):
        raise UserError(f"the base {base} must lie in the same folder as {dst}")
    base_G = load_network(base).get("G_ema")
    if base_G is None:
        raise UserError(f"{base} holds no G_ema")
    entries, sizes = {}, {}
    for name in only:
        if name not in nets:
            raise BadFileError(f"{src} has no {name}")
        is_g = name in ("G", "G_ema")
        entries[name] = slim_entry(nets[name], base_G if is_g else None, os.path.basename(base), "G_ema",
                                   half=name in half)
        sizes[name] = sum(v.numel() * v.element_size() for v in entries[name]["state_dict"].values())
    state = dict(nets["training_state"], optimizers={})
    payload = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "networks": entries, "training_state": state,
               "metadata": dict(nets.get("metadata") or {}, slim_of=os.path.basename(src),
                                note="optimiser moments dropped; Adam restarts from zero moments")}
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_write(dst, "wb") as f:
        f.write(buf.getvalue())
    return sizes
