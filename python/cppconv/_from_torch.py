"""Layers from PyTorch modules: ``Conv2d.from_torch(module)`` and the same classmethod on every
layer class.  PyTorch is imported only here, when from_torch is called, never at package import."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # a torch module cannot exist without torch: the argument is something else
        raise TypeError("from_torch takes a torch.nn module, and PyTorch is not installed") from None
    return torch


def _array(torch: Any, tensor: Any, name: str) -> Optional[np.ndarray]:
    """A module's parameter as a NumPy array of its values (detached, on the CPU)."""
    if tensor is None:
        return None
    if isinstance(tensor, torch.nn.parameter.UninitializedParameter):
        raise ValueError(f"the module's {name} is not initialised (a lazy module): call it once first")
    if tensor.dtype not in (torch.float16, torch.float32, torch.float64):
        raise TypeError(f"the module's {name} has dtype {tensor.dtype}; cppconv's layers take float16, float32 or "
                        f"float64 weights: convert the module first (module.float())")
    return np.asarray(tensor.detach().cpu().numpy())


def _setting(value: Any) -> Any:
    """A module attribute as a plain constructor argument (PyTorch keeps some as lists)."""
    return tuple(value) if isinstance(value, list) else value


def layer_arguments(cls: type, module: Any, settings: Tuple[str, ...], weighted: bool,
                    overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The constructor arguments of cppconv layer `cls` that give torch.nn module's computation:
    its attributes named in `settings` (those it has), its weight and bias when `weighted`, and
    `overrides` for the settings PyTorch's module does not have (layout, activation, ...)."""
    torch = _torch()
    name = cls.__name__
    expected = getattr(torch.nn, name)
    if not isinstance(module, expected):
        raise TypeError(f"{name}.from_torch takes a torch.nn.{name}, got {type(module).__module__}."
                        f"{type(module).__qualname__}")
    args = {s: _setting(getattr(module, s)) for s in settings if hasattr(module, s)}
    if weighted:
        args["weight"] = _array(torch, module.weight, "weight")
        args["bias"] = _array(torch, module.bias, "bias")
        mode = getattr(module, "padding_mode", "zeros")
        if "padding_mode" not in settings and mode != "zeros":
            raise ValueError(f"{name}.from_torch: padding_mode={mode!r} is not supported here (only 'zeros')")
    clash = sorted(set(args) & set(overrides))
    if clash:
        raise TypeError(f"{name}.from_torch: the module sets {', '.join(clash)}; pass only settings it does "
                        f"not have (such as layout or activation)")
    return {**args, **overrides}
