"""Reading untrusted pickles (raw BridgeData's `policy_out.pkl`): numpy arrays and plain builtins, nothing else.

`pickle.load` runs whatever callable a pickle names (`os.system`, `subprocess.Popen`, …), so a pickle from a
dataset download is code from a stranger. `loads` resolves every global the pickle asks for against a fixed
allow-list and raises `UnsafePickleError` — before anything runs — for any other name. Allowed: the containers and
scalars of builtins, and what numpy needs to rebuild arrays and scalars (under both the numpy-1.x names real
BridgeData pickles carry, `numpy.core.multiarray.*`, and the numpy-2 names). Python-2 pickles load with latin-1
strings, numpy's documented way to read them.
"""

from __future__ import annotations

import builtins
import codecs
import io
import pickle

import numpy as np

try:  # numpy 2 moved the implementation; the old module name still appears in pickles written by numpy 1.x
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float",
                       "complex", "bool"})
_NUMPY = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(module, "_reconstruct"): _multiarray._reconstruct
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _multiarray.scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    # protocol 5 rebuilds arrays from a buffer
    **{(module, "_frombuffer"): _numeric._frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing it names was imported or called."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"); only that spelling is accepted.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"pickle asks _codecs.encode for {encoding!r}; only latin-1 is allowed")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return getattr(builtins, name)
        if (module, name) in _NUMPY:
            return _NUMPY[(module, name)]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(f"pickle refers to {module}.{name}; only numpy arrays and plain builtins are allowed "
                                "(nothing was imported or run)")

    def persistent_load(self, pid):
        raise UnsafePickleError("pickle uses persistent ids; they are not allowed")


def loads(data: bytes):
    """Unpickles `data` with the allow-list; raises UnsafePickleError or pickle.UnpicklingError (and friends)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
