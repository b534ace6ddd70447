"""starx's Gluon kernels under Triton's CPU interpreter, so that CI (no GPU) checks their arithmetic.

Triton's interpreter (TRITON_INTERPRET=1) runs ``@triton.jit`` kernels with numpy, one program
at a time, but not ``@gluon.jit`` ones. A Gluon kernel is Triton with explicit layouts and shared
memory; what it computes does not depend on the layouts. ``interpreted(module, name)`` gives the
kernel ``name`` of ``module`` as the interpreter runs a Triton kernel: the same source, its
``gl`` bound to ``GL`` below, which forwards to ``triton.language`` (the functions the
interpreter patches) and drops the layouts: ``convert_layout`` is the identity, a layout object
is inert, and shared memory is a numpy array of the program (each program runs to the end before
the next starts, so one buffer a launch is enough).

What this checks: every index, pointer, mask, loop bound and formula of the kernel, against the
fp64 reference, in CI. What it cannot: layouts, shared-memory banks, atomics racing, register
pressure; the GPU tests (``-m gpu``) and bench/sass_fingerprint.py cover those on the device.
"""

from __future__ import annotations

import types

import numpy as np
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction, TensorHandle


class _Layout:
    """Any Gluon layout: accepted and ignored."""

    def __init__(self, *args, **kwargs):
        pass


class _SharedBuffer:
    """gl.allocate_shared_memory's descriptor: ``.index(i)`` a slice, ``.store(x)``, ``.load(layout)``."""

    def __init__(self, dtype, shape, data=None):
        self.dtype, self.shape = dtype, list(shape)
        self.data = np.zeros(self.shape, np.float32 if dtype == tl.float32 else np.float64) if data is None else data

    def index(self, i):
        return _SharedBuffer(self.dtype, self.shape[1:], self.data[int(i)])

    def store(self, x):
        self.data[...] = x.handle.data

    def load(self, layout=None):
        handle = TensorHandle(self.data.copy(), self.dtype)
        return tl.core.tensor(handle, tl.block_type(self.dtype, self.shape))


class _GluonOnTriton(types.SimpleNamespace):
    """``gl`` for the interpreter: Gluon's names as triton.language's, layouts dropped. Looked up at
    each call, so that the interpreter's patched functions are the ones called."""

    BlockedLayout = SliceLayout = SwizzledSharedLayout = _Layout

    @staticmethod
    def arange(start, end, layout=None):
        return tl.arange(start, end)

    @staticmethod
    def zeros(shape, dtype, layout=None):
        return tl.zeros(shape, dtype)

    @staticmethod
    def convert_layout(x, layout, assert_trivial=False):
        return x

    @staticmethod
    def allocate_shared_memory(dtype, shape, layout, value=None):
        return _SharedBuffer(dtype, shape)

    @staticmethod
    def fdiv(x, y, ieee_rounding=False):
        return tl.math.fdiv(x, y, ieee_rounding)

    def __getattr__(self, name):
        return getattr(tl, name)


GL = _GluonOnTriton()


class _Interpreted(InterpretedFunction):
    """The interpreter compiles the rewritten kernel under its own ``from __future__ import
    annotations``, so its parameters' annotations are strings, and it recognises the constexpr
    ones by the spelling ``tl.constexpr``: Gluon's ``gl.constexpr`` is respelled."""

    def rewrite(self):
        fn = super().rewrite()
        fn.__annotations__ = {k: v.replace("gl.", "tl.", 1) if isinstance(v, str) and v.startswith("gl.") else v
                              for k, v in fn.__annotations__.items()}
        return fn


def interpreted(module: types.ModuleType, name: str) -> InterpretedFunction:
    """Kernel ``name`` of the Gluon ``module``, runnable under TRITON_INTERPRET=1 (``k[grid](...)``).

    Every ``@gluon.jit`` function of the module is rebuilt from its Python function with globals
    in which ``gl`` is GL and the module's other Gluon functions are their rebuilt selves."""
    scope = dict(vars(module), gl=GL, tl=tl)  # (the interpreter looks for triton.language in the globals)
    gluon_fns = {k: v.fn for k, v in vars(module).items() if getattr(v, "is_gluon", lambda: False)()}
    for k, fn in gluon_fns.items():
        scope[k] = _Interpreted(types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__))
    return scope[name]
