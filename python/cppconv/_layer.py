"""What the layer classes share: pickling and copying by constructor arguments, and (for the
layers with weights) ``weight`` and ``bias`` attributes that assignment replaces whole."""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Type, TypeVar

import numpy as np

from . import _args


def read_only(getter: Callable[[Any], Any]) -> Any:
    """A layer setting as a property, like a PyTorch module's attribute, that refuses assignment:
    the settings are checked and baked into the layer's plans when it is built."""
    name = getter.__name__

    def refuse(self: Any, value: Any) -> None:
        cls = type(self).__name__
        raise AttributeError(
            f"{cls}.{name} is read-only (fixed when the layer is built): make a new {cls} with {name}={value!r}"
        )

    return property(getter, refuse, doc=getter.__doc__)


def spec_setting(name: str, doc: Optional[str] = None) -> Any:
    """A read-only setting that reads back the constructor keyword `name` as the layer's spec
    normalised it (``self._spec.kwargs()[name]``)."""

    def getter(self: Any) -> Any:
        return self._spec.kwargs()[name]

    getter.__name__, getter.__doc__ = name, doc
    return read_only(getter)


LayerT = TypeVar("LayerT", bound="Layer")


class Layer:
    """A layer's state is its constructor arguments (see _init_kwargs): pickle, copy.copy and
    copy.deepcopy carry those and build the layer anew, so the native plans it caches (weights
    packed for this CPU, not picklable) are never shipped and are rebuilt on first use.
    Its repr shows `_repr_positional` bare, then every name in `_repr_settings` as name=value."""

    _repr_positional: Tuple[str, ...] = ()
    _repr_settings: Tuple[str, ...] = ()
    # The attributes of the torch.nn module of the same class name that are constructor
    # arguments of the same name, and whether its weight and bias are (see from_torch).
    _torch_settings: Tuple[str, ...] = ()
    _torch_weighted = False

    @classmethod
    def from_torch(cls: Type[LayerT], module: Any, **kwargs: Any) -> LayerT:
        """The layer that computes what ``module``, the ``torch.nn`` module of the same class
        name, computes: its weight and bias (copied) and its settings (stride, padding, string
        paddings, padding_mode, groups, dilation, ceil_mode, ...).  Keyword arguments add the
        settings the module does not have (``layout``, ``activation``, ``precision``).  A module
        of another class, lazy parameters not yet initialised, or weights of another dtype than
        float16/32/64 raise TypeError or ValueError.  PyTorch is imported by this call only.

        >>> import torch, cppconv
        >>> cppconv.Conv2d.from_torch(torch.nn.Conv2d(3, 8, 3, padding="same", bias=False))
        Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding='same', dilation=(1, 1), groups=1, bias=False, padding_mode='zeros', padding_value=0.0, layout='NCHW', activation=None, precision=None)
        """  # noqa: E501 - the doctest shows the repr as printed
        from . import _from_torch

        return cls(**_from_torch.layer_arguments(cls, module, cls._torch_settings, cls._torch_weighted, kwargs))

    def _init_kwargs(self) -> Dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        parts = [repr(getattr(self, name)) for name in self._repr_positional]
        for name in self._repr_settings:
            value = getattr(self, name)
            # The bias array as PyTorch's repr shows it: whether there is one.
            parts.append(f"{name}={value is not None if name == 'bias' else value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __getstate__(self) -> Dict[str, Any]:
        return self._init_kwargs()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


class Weights(NamedTuple):
    """One consistent snapshot of a layer's weights.  A call reads the layer's snapshot once and
    assignment replaces it in one store, so a call racing with an assignment computes with the
    old weights or the new ones, never a mix (nor a plan of the other)."""

    # The weight's shape and dtype: the read-only private copy itself, or a stand-in of no bytes
    # (_args.stand_in) where `held` holds the values.
    like: np.ndarray
    bias: Optional[np.ndarray]
    plans: Dict[np.dtype, Any]  # the native plan per compute dtype, made on first use
    forward: Optional[Tuple[Any, Tuple[Any, ...]]] = None  # a conv layer's one-step path: (plan, its arguments)
    # The native plan whose copy of the weight is the only one (keeps_source=False: its packs
    # stand for it), or None.
    held: Any = None

    @property
    def weight(self) -> np.ndarray:
        """The values, read-only: the private copy, or a new one from the plan that holds them,
        immutable as _args.frozen_copy's."""
        if self.held is None:
            return self.like
        return np.frombuffer(self.held.weight_bytes(), self.like.dtype).reshape(self.like.shape)


class WeightedLayer(Layer):
    """``layer.weight = w`` and ``layer.bias = b`` go through the constructor's checks against
    the other one and the layer's settings, and drop the plans built from the old weights.
    The arrays read back are read-only copies: in-place changes raise."""

    _weights: Weights
    _torch_weighted = True
    _rank = 2  # spatial axes of the weight
    _weight_axes = ""  # the weight's axes, for messages: "(K, C/groups, kh, kw)"
    _rounding: Optional[str] = None  # compute_dtype="bfloat16" (_args.layer_rounding): operands rounded to it

    def _check_weights(self, weight: np.ndarray, bias: Optional[np.ndarray]) -> None:
        """The checks of weight and bias that need no input (beyond _args.layer_operands')."""
        raise NotImplementedError

    def _snapshot(self, weight: np.ndarray, bias: Optional[np.ndarray]) -> Weights:
        """The layer's Weights for checked operands, copied (a subclass adds its fast path)."""
        return Weights(_args.frozen_copy(weight), _args.frozen_copy(bias), {})

    def _set_weights(self, weight: Any, bias: Any) -> None:
        weight, bias = _args.layer_operands(weight, bias, self._weight_axes, self._rank)
        self._check_weights(weight, bias)
        self._weights = self._snapshot(weight, bias)

    @property
    def weight(self) -> np.ndarray:
        return self._weights.weight

    @weight.setter
    def weight(self, value: Any) -> None:
        self._set_weights(value, self._weights.bias)

    @property
    def bias(self) -> Optional[np.ndarray]:
        return self._weights.bias

    @bias.setter
    def bias(self, value: Any) -> None:
        self._set_weights(self._weights.weight, value)

    @read_only
    def compute_dtype(self) -> Optional[str]:
        """None (as the operands come) or "bfloat16" (weights and activations rounded to it)."""
        return self._rounding

    @read_only
    def kernel_size(self) -> Tuple[int, ...]:
        """(kh, kw) (one size per spatial axis), from the weight."""
        return tuple(self._weights.like.shape[-self._rank:])

    def _weight_kwargs(self) -> Dict[str, Any]:
        weights = self._weights  # read once: a racing assignment must not give a mixed pair
        return {"weight": weights.weight, "bias": weights.bias}
