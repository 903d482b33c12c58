"""The types of the public API's arguments and results, for annotations: arrays as
``numpy.typing.NDArray`` and string options as ``Literal`` types of their canonical spellings
(other spellings in any case work at run time; typed code names the canonical ones)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Tuple, Union

import numpy.typing as npt

Array = npt.NDArray[Any]
# max pools with return_indices=True: the values and their flat int64 indices.
ArrayAndIndices = Tuple[Array, Array]
Layout1d = Literal["NCW", "NWC"]
Layout2d = Literal["NCHW", "NHWC"]
Layout3d = Literal["NCDHW", "NDHWC"]
PaddingMode = Literal["zeros", "reflect", "replicate", "circular", "symmetric", "constant"]
ActivationName = Literal["relu", "relu6", "leaky_relu", "sigmoid", "tanh", "silu"]
# None, a name, or an activation with its parameter: ("leaky_relu", negative_slope).
Activation = Union[None, ActivationName, Tuple[Literal["leaky_relu"], float]]
Precision = Optional[Literal["highest", "high"]]
Mode = Literal["full", "same", "valid"]
Boundary = Literal["fill", "wrap", "symm"]
