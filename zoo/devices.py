"""Where and in what precision a model lives: device names and dtypes checked before torch sees them.

torch's own messages for a device that is not there ("Found no NVIDIA driver on your system") or a
misspelt one name neither the devices that exist nor the way out; :func:`check_device` says both, and
that ``"auto"`` picks the best one. :func:`resolve_dtype` also takes dtypes by name (``"bfloat16"``).
"""

from __future__ import annotations

import torch

from zoo.errors import ConfigError

#: dtype names accepted where a floating-point dtype is expected (``zoo.load(..., dtype="bf16")``).
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}


def available_devices() -> list[str]:
    """The devices torch can use on this machine: ``cpu``, then ``cuda:0``... and ``mps`` where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` if this machine has it, else a ConfigError naming the devices it
    has and ``"auto"`` (``"auto"`` itself is resolved by the caller)."""
    here = available_devices()
    way_out = (f"available: {', '.join(here)}; use 'auto' (--device auto) to pick the best one, or one of "
               f"those listed")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {str(device)!r} is not a device name: write 'cpu', 'cuda', 'cuda:1' or 'mps' "
                          f"({way_out})") from None
    if resolved.type == "cpu":
        available = True
    elif resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        available = count > 0 and (resolved.index is None or resolved.index < count)
    elif resolved.type == "mps":
        available = "mps" in here
    else:  # another accelerator torch knows (xpu, ...) where its module says it is there; never meta
        backend = getattr(torch, resolved.type, None)
        available = bool(getattr(backend, "is_available", lambda: False)())
    if available:
        return resolved
    raise ConfigError(f"device {str(device)!r} is not available on this machine ({way_out})")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> cuda when available, else cpu; anything else as given if this machine has it
    (:func:`check_device`). Under torchrun on GPUs, ``"auto"``/``"cuda"`` is this process's own GPU,
    ``cuda:LOCAL_RANK``."""
    from zoo.distributed import local_device

    device = local_device(device)
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A floating-point ``torch.dtype`` from a dtype or its name (``"bfloat16"``, ``"bf16"``, ``"fp16"``...);
    None stays None. Anything else is a ConfigError listing the names."""
    if dtype is None:
        return None
    resolved = DTYPES.get(dtype.lower().removeprefix("torch.")) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(f"dtype {dtype!r} is not a floating-point dtype a model can hold; use one of "
                          f"{', '.join(map(repr, DTYPES))} or a torch dtype such as torch.bfloat16")
    return resolved
