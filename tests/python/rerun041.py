"""rerun-sdk 0.41's dataloader (``rerun.experimental.dataloader``), the reference of the YUV and pooled
batch tests, importable here.

Importing it imports rerun's ImageDecoder, which imports torchvision; torchvision cannot be imported
in this environment (a CUDA build next to CPU torch), so a stand-in with the one function rerun uses
(``pil_to_tensor``) is installed first when the real one fails. Importing this module installs it,
so spawned DataLoader workers that unpickle something defined here get it too.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import torch
from torch.utils.data import Dataset


def _install_torchvision_stand_in() -> None:
    try:
        import torchvision.transforms.functional  # noqa: F401

        return
    except Exception:  # noqa: BLE001 - a broken build raises RuntimeError/OSError, not ImportError
        pass
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]

    def pil_to_tensor(pic):
        img = torch.as_tensor(np.array(pic, copy=True))
        return img.view(pic.size[1], pic.size[0], len(pic.getbands())).permute((2, 0, 1))

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.pil_to_tensor = pil_to_tensor
    transforms.functional = functional
    tv.transforms = transforms
    tv.__version__ = "stand-in"
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )


_install_torchvision_stand_in()

import rerun.experimental.dataloader as ref  # noqa: E402

assert ref.__name__ == "rerun.experimental.dataloader"


class ToRgbInWorker(Dataset):
    """One item: the exception type name (or "ok") of ``to_rgb("cuda")`` on a frame of each class,
    called inside a DataLoader worker."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> list[str]:
        from rrloader._loader._yuv import Yuv420Frame

        out = []
        for cls in (Yuv420Frame, ref.Yuv420Frame):
            frame = cls(
                torch.zeros(1, 4, 4, dtype=torch.uint8),
                torch.zeros(2, 2, 2, dtype=torch.uint8),
                "bt601",
                "full",
            )
            try:
                frame.to_rgb("cuda")
                out.append("ok")
            except Exception as e:  # noqa: BLE001 - the type is the result
                out.append(type(e).__name__)
        return out
