"""Run whole ONNX networks on cppconv: ``cppconv.onnx.load(model)`` gives a :class:`cppconv.Network`.

The ``onnx`` package parses the model (``pip install "cppconv[onnx]"``); cppconv itself does
not need it.  The convolutions run on cppconv's kernels, with BatchNormalization folded into
their weights and the activation that follows fused; the other operators run in NumPy for now.
"""

from __future__ import annotations

from typing import Any, Optional

from ._network import SUPPORTED_OPERATORS, ModelError, Network

__all__ = ["ModelError", "Network", "SUPPORTED_OPERATORS", "load"]


def load(model: Any, *, num_threads: Optional[int] = None, precision: Optional[str] = None,
         compute_dtype: Optional[str] = None, sub_batch: Optional[int] = None,
         lanes: Optional[int] = None) -> Network:
    """Load an ONNX model and plan it once for cppconv.

    Args:
        model: a path to a ``.onnx`` file, its bytes, or an ``onnx.ModelProto``.
        num_threads: threads for the convolutions (default None: ``cppconv.get_num_threads()``
            at each call).
        precision: float32 precision of the convolutions, ``"highest"`` or ``"high"`` (default
            None: ``cppconv.get_float32_precision()`` at each call).
        compute_dtype: ``"bfloat16"`` runs the float model's convolutions in bfloat16 (weights
            rounded once, activations rounded at each convolution, float32 accumulation, as the
            layers' ``compute_dtype``); None or ``"float32"``: float32.
        sub_batch: the most images one pass of the network takes: a larger batch runs as
            consecutive sub-batches of at most that many (sizes differing by at most one), each
            through the program recorded for its size, with the same results as a whole batch.
            None (default): as many as the largest layer's input and output fit in the CPU's
            last-level cache; ``explain()["sub_batch"]`` and ``["sub_batch_rule"]`` say which.
            A network whose images are not computed apart (an operator along the batch axis)
            runs batches whole, and refuses an int.
        lanes: how many parts of a batch run side by side, each on its share of the threads
            (its images through every step with no thread waiting for the others at each
            step's end), each through its own sub-batches in turn.  None (default): one a
            thread, at least one image a lane, and the auto sub-batch shares the cache between
            them; 1: the whole batch goes through each step on all the threads.  The results
            are the same bit for bit.  A network whose images are not computed apart runs one
            lane, and refuses more.

    Returns:
        A :class:`cppconv.Network`: ``net(x)`` for one input and output, ``net.run(feeds)`` in
        general, ``net.summary()`` for the plan.  The batch size is free.

    Raises:
        ModelError: (a ValueError) an operator or attribute cppconv does not support, or a
            malformed model (an undefined input, a cycle, mismatched shapes), naming the node.
        ValueError: a ``sub_batch`` or ``lanes`` below 1, or given (lanes above 1) for a network
            that cannot run in parts.
        ImportError: the ``onnx`` package is not installed.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError('cppconv.onnx.load needs the onnx package: pip install "cppconv[onnx]"') from None
    return Network(model, num_threads=num_threads, precision=precision, compute_dtype=compute_dtype,
                   sub_batch=sub_batch, lanes=lanes)
