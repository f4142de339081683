"""YUV 4:2:0 video frames and their collation (rerun-sdk 0.41's ``Yuv420Frame`` / ``Yuv420Collator``).

A video field decoded with ``output_format="yuv420p"`` yields a :class:`Yuv420Frame`: the Y plane
``[..., 1, H, W]`` and the U/V planes ``[..., 2, ceil(H/2), ceil(W/2)]`` exactly as libavcodec decoded
them (half the bytes of RGB), with the stream's colour metadata. They stay YUV through the worker,
the shuffle buffer and the process boundary; :meth:`Yuv420Frame.to_rgb` converts them where the
model runs (usually on the GPU, after a pinned, non-blocking copy).

``to_rgb`` gives exactly rerun-sdk 0.41's values for every dtype, matrix and range: the chroma
terms are computed at chroma resolution and then repeated to the luma grid (nearest neighbour),
which commutes with the per-element arithmetic, so the result is bit for bit the same as
repeating the chroma first, with a quarter of the chroma arithmetic.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree
from torch.utils.data import default_collate, get_worker_info

ColorSpace = Literal["bt601", "bt709", "bt2020", "unspecified"]
ColorRange = Literal["limited", "full", "unspecified"]

_COLOR_SPACES = ("bt601", "bt709", "bt2020", "unspecified")
_COLOR_RANGES = ("limited", "full", "unspecified")

# Luma weights (Kr, Kb) of each matrix, as ITU-R BT.601 / BT.709 / BT.2020 define them.
_KR_KB = {"bt601": (0.2990, 0.1140), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}


def _chroma_coefficients(space: str) -> tuple[float, float, float, float]:
    """(R from Cr, G from Cb, G from Cr, B from Cb) of a matrix, in the order 0.41 rounds them."""
    kr, kb = _KR_KB[space]
    kg = 1.0 - kr - kb
    return (2.0 - 2.0 * kr, kb * (2.0 - 2.0 * kb) / kg, kr * (2.0 - 2.0 * kr) / kg, 2.0 - 2.0 * kb)


@dataclass(frozen=True, slots=True)
class Yuv420Frame:
    """One frame, a window of frames or a batch of them, as planar YUV 4:2:0 ``uint8``.

    ``y`` is ``[..., 1, H, W]`` and ``uv`` is ``[..., 2, ceil(H/2), ceil(W/2)]`` (U then V), with the
    same leading dimensions (time for a window, batch after collation) on the same device.
    ``color_space`` is ``"bt601" | "bt709" | "bt2020" | "unspecified"``, ``color_range``
    ``"limited" | "full" | "unspecified"``. PyTorch's ``default_collate`` cannot stack it: use
    :meth:`stack` in a collate function, :class:`Yuv420Collator`, or ``PooledBatchCollator``.
    """

    y: torch.Tensor
    uv: torch.Tensor
    color_space: ColorSpace
    color_range: ColorRange

    def __post_init__(self) -> None:
        y, uv = self.y, self.uv
        if y.dtype is not torch.uint8 or uv.dtype is not torch.uint8:
            raise TypeError(f"Yuv420Frame planes must be torch.uint8, got y {y.dtype} and uv {uv.dtype}")
        if y.device != uv.device:
            raise ValueError(
                f"Yuv420Frame planes must be on one device, got y on {y.device} and uv on {uv.device}"
            )
        if y.ndim < 3 or uv.ndim != y.ndim:
            raise ValueError(
                f"Yuv420Frame planes must be [..., C, H, W] of one rank, got y {tuple(y.shape)} and uv {tuple(uv.shape)}"
            )
        if y.shape[:-3] != uv.shape[:-3] or y.shape[-3] != 1 or uv.shape[-3] != 2:
            raise ValueError(
                "Yuv420Frame planes must share their leading dimensions and have 1 Y and 2 UV channels, "
                f"got y {tuple(y.shape)} and uv {tuple(uv.shape)}"
            )
        height, width = y.shape[-2:]
        chroma = (math.ceil(height / 2), math.ceil(width / 2))
        if tuple(uv.shape[-2:]) != chroma:
            raise ValueError(
                f"Yuv420Frame chroma planes of a {height}x{width} frame must be {chroma[0]}x{chroma[1]} "
                f"(ceil(H/2) x ceil(W/2)), got {uv.shape[-2]}x{uv.shape[-1]}"
            )
        if self.color_space not in _COLOR_SPACES:
            raise ValueError(
                f"Unsupported YUV color space {self.color_space!r}; expected one of {_COLOR_SPACES}"
            )
        if self.color_range not in _COLOR_RANGES:
            raise ValueError(
                f"Unsupported YUV color range {self.color_range!r}; expected one of {_COLOR_RANGES}"
            )

    def _with_planes(self, y: torch.Tensor, uv: torch.Tensor) -> Yuv420Frame:
        return Yuv420Frame(y=y, uv=uv, color_space=self.color_space, color_range=self.color_range)

    @classmethod
    def stack(cls, frames: Sequence[Yuv420Frame]) -> Yuv420Frame:
        """Stack frames (or windows) of one shape and one colour metadata along a new first dimension.

        The result owns new memory (window views of a shared frame bank are copied out).
        """
        if len(frames) == 0:
            raise ValueError("Yuv420Frame.stack needs at least one frame")
        metadata = {(f.color_space, f.color_range) for f in frames}
        if len(metadata) > 1:
            raise ValueError(f"A YUV420 batch must have one color space and range, got {sorted(metadata)!r}")
        first = frames[0]
        return cls(
            y=torch.stack([f.y for f in frames]),
            uv=torch.stack([f.uv for f in frames]),
            color_space=first.color_space,
            color_range=first.color_range,
        )

    def clone(self) -> Yuv420Frame:
        """A copy whose planes share no memory with this frame's."""
        return self._with_planes(self.y.clone(), self.uv.clone())

    def pin_memory(self) -> Yuv420Frame:
        """Both planes in pinned host memory (what ``DataLoader(pin_memory=True)`` calls)."""
        return self._with_planes(self.y.pin_memory(), self.uv.pin_memory())

    def to_rgb(
        self,
        device: torch.device | str | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        normalize: bool = True,
        non_blocking: bool = False,
        color_space: Literal["bt601", "bt709", "bt2020"] | None = None,
        color_range: Literal["limited", "full"] | None = None,
    ) -> torch.Tensor:
        """RGB ``[..., 3, H, W]`` of floating ``dtype`` on ``device`` (default: the planes' device).

        Values are in ``[0, 1]`` with ``normalize`` (default), else in ``[0, 255]``. Chroma is repeated
        to the luma grid (nearest neighbour, close to FFmpeg's default ``rgb24`` conversion, which
        rounds in integers and so may differ by a few levels). ``color_space`` / ``color_range``
        override the frame's metadata; unspecified metadata means BT.601 limited range, with a
        warning. A CUDA target inside a DataLoader worker is a RuntimeError: collate YUV on the CPU
        and convert in the training process.
        """
        if not dtype.is_floating_point:
            raise TypeError(f"Yuv420Frame.to_rgb needs a floating-point dtype, got {dtype}")
        target = torch.device(device) if device is not None else self.y.device
        if target.type == "cuda" and get_worker_info() is not None:
            raise RuntimeError(
                "Yuv420Frame.to_rgb cannot convert on CUDA inside a DataLoader worker; collate the YUV planes "
                "(pinned, on the CPU) and call to_rgb in the training process"
            )
        space, full_range = _resolve(self.color_space, self.color_range, color_space, color_range)

        y = self.y.to(device=target, dtype=dtype, non_blocking=non_blocking)
        uv = self.uv.to(device=target, dtype=dtype, non_blocking=non_blocking)
        height, width = y.shape[-2:]
        lead = y.shape[:-3]
        if full_range:
            luma = y
            chroma = uv - 128.0
        else:
            luma = (y - 16.0) * (255.0 / 219.0)
            chroma = (uv - 128.0) * (255.0 / 224.0)
        r_cr, g_cb, g_cr, b_cb = _chroma_coefficients(space)
        cb, cr = chroma[..., 0:1, :, :], chroma[..., 1:2, :, :]
        # The four chroma terms at chroma resolution, then repeated to the luma grid in one call.
        terms = torch.cat((r_cr * cr, g_cb * cb, g_cr * cr, b_cb * cb), dim=-3)
        terms = F.interpolate(terms.reshape(-1, 4, *terms.shape[-2:]), size=(height, width), mode="nearest")
        terms = terms.reshape(*lead, 4, height, width)

        rgb = torch.empty((*lead, 3, height, width), dtype=dtype, device=target)
        torch.add(luma, terms[..., 0:1, :, :], out=rgb[..., 0:1, :, :])
        green = rgb[..., 1:2, :, :]
        torch.sub(luma, terms[..., 1:2, :, :], out=green)
        green.sub_(terms[..., 2:3, :, :])
        torch.add(luma, terms[..., 3:4, :, :], out=rgb[..., 2:3, :, :])
        rgb.clamp_(0.0, 255.0)
        if normalize:
            rgb.mul_(1.0 / 255.0)
        return rgb


def _resolve(
    frame_space: str, frame_range: str, space: str | None, color_range: str | None
) -> tuple[str, bool]:
    """The matrix and whether full range, from the overrides or the frame, unspecified -> BT.601 limited."""
    space = frame_space if space is None else space
    color_range = frame_range if color_range is None else color_range
    defaulted = []
    if space == "unspecified":
        space = "bt601"
        defaulted.append("color space to BT.601")
    if color_range == "unspecified":
        color_range = "limited"
        defaulted.append("color range to limited")
    if defaulted:
        warnings.warn(
            f"YUV frame metadata is unspecified; defaulting {' and '.join(defaulted)}. "
            "Pass color_space=/color_range= to to_rgb if the video uses other values.",
            stacklevel=3,
        )
    if space not in _KR_KB:
        raise ValueError(f"Unsupported YUV color space {space!r}; expected one of {tuple(_KR_KB)}")
    if color_range not in ("limited", "full"):
        raise ValueError(f"Unsupported YUV color range {color_range!r}; expected 'limited' or 'full'")
    return space, color_range == "full"


class Yuv420Collator:
    """``collate_fn`` for samples (mappings) holding :class:`Yuv420Frame` values.

    Each YUV field is stacked with :meth:`Yuv420Frame.stack` (planes stay compact ``uint8`` on the
    CPU, ready for ``pin_memory=True`` and ``to_rgb`` in the training process); every other field
    goes through PyTorch's ``default_collate``. All samples must have the same fields; a missing
    (``None``) value is a ValueError: filter or replace those samples first.
    """

    def __call__(self, samples: Sequence[Mapping[str, object]]) -> dict[str, object]:
        if not samples:
            return {}
        keys = samples[0].keys()
        for sample in samples[1:]:
            if sample.keys() != keys:
                raise ValueError(
                    f"All samples must have the same fields: {sorted(keys)} vs {sorted(sample.keys())}"
                )
        return {key: _collate_field(key, [sample[key] for sample in samples]) for key in keys}


def _collate_field(key: str, values: list[object]) -> object:
    if any(v is None for v in values):
        raise ValueError(
            f"Field {key!r} is missing (None) in some samples; filter or replace them before collation"
        )
    frames = [v for v in values if isinstance(v, Yuv420Frame)]
    if not frames:
        return default_collate(values)
    if len(frames) != len(values):
        raise TypeError(f"Field {key!r} mixes Yuv420Frame values with other types")
    return Yuv420Frame.stack(frames)


def frame_from_planes(y: Any, uv: Any, color_space: str, color_range: str) -> Yuv420Frame:
    """A :class:`Yuv420Frame` over the planes ``_core.decode_video_packets(..., output_format="yuv420p")``
    returns (numpy arrays, wrapped without copying)."""
    return Yuv420Frame(
        y=torch.from_numpy(y),
        uv=torch.from_numpy(uv),
        color_space=color_space,  # type: ignore[arg-type]
        color_range=color_range,  # type: ignore[arg-type]
    )


# A pytree node: torch.utils._pytree (and PooledBatchCollator) see the two planes as leaves and
# the colour metadata as the node's context.
def _flatten(frame: Yuv420Frame) -> tuple[list[torch.Tensor], tuple[str, str]]:
    return [frame.y, frame.uv], (frame.color_space, frame.color_range)


def _unflatten(leaves: Iterable[torch.Tensor], context: tuple[str, str]) -> Yuv420Frame:
    y, uv = leaves
    return Yuv420Frame(y=y, uv=uv, color_space=context[0], color_range=context[1])  # type: ignore[arg-type]


if Yuv420Frame not in pytree.SUPPORTED_NODES:
    pytree.register_pytree_node(Yuv420Frame, _flatten, _unflatten)
