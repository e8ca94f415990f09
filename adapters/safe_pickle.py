"""Reading untrusted pickles (raw BridgeData's `policy_out.pkl`): numpy arrays and plain builtins, nothing else.

`pickle.load` runs whatever callable a pickle names (`os.system`, `subprocess.Popen`, …), so a pickle from a
dataset download is code from a stranger. `loads` resolves every global the pickle asks for against a fixed
allow-list and raises `UnsafePickleError` — before anything runs — for any other name. Allowed: the containers and
scalars of builtins, and what numpy needs to rebuild arrays and scalars (under both the numpy-1.x names real
BridgeData pickles carry, `numpy.core.multiarray.*`, and the numpy-2 names). Python-2 pickles load with latin-1
strings, numpy's documented way to read them.

Allocation is bounded too: the callables that allocate by a size argument (`bytes(n)`, `bytearray(n)`, numpy's
`ndarray(shape)` and `_reconstruct(cls, shape, dtype)`) are checked against a budget of `MAX_BYTES` for the whole
pickle *before* they allocate — a 34-byte pickle asking for `bytearray(3 << 30)` is refused, not obeyed.
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


MAX_BYTES = 256 << 20  # what one pickle may allocate by size arguments: far above a trajectory's few kilobytes


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list, or asks for more memory than `MAX_BYTES`; nothing it names
    was imported, called or allocated."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"); only that spelling is accepted.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"pickle asks _codecs.encode for {encoding!r}; only latin-1 is allowed")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, *args, max_bytes: int = MAX_BYTES, **kwargs):
        super().__init__(*args, **kwargs)
        self._budget = max_bytes
        self._ndarray = self._array(np.ndarray, 0, 1, "numpy.ndarray")  # what the pickle gets for numpy.ndarray

    def _spend(self, nbytes: int, what: str) -> None:
        if nbytes > self._budget:
            raise UnsafePickleError(f"pickle asks {what} for {nbytes:,} bytes, over what is left of its "
                                    f"{MAX_BYTES:,}-byte budget (nothing was allocated)")
        self._budget -= nbytes

    def _sized(self, make, what: str):
        """`make`, with an integer size argument charged to the budget first."""
        def call(*args, **kwargs):
            if args and isinstance(args[0], int) and not isinstance(args[0], bool):
                self._spend(max(0, args[0]), what)
            return make(*args, **kwargs)
        return call

    def _array(self, make, shape_at: int, dtype_at: int | None, what: str):
        """A numpy constructor, with prod(shape) × itemsize charged to the budget first."""
        def call(*args, **kwargs):
            shape = args[shape_at] if len(args) > shape_at else kwargs.get("shape", ())
            dims = (shape,) if isinstance(shape, int) else tuple(shape or ())
            try:
                itemsize = np.dtype(args[dtype_at] if dtype_at is not None and len(args) > dtype_at
                                    else kwargs.get("dtype", float)).itemsize
                count = int(np.prod([int(d) for d in dims], dtype=object)) if dims else 1
            except (TypeError, ValueError) as e:
                raise UnsafePickleError(f"pickle gives {what} a malformed shape or dtype: {e}") from None
            self._spend(max(0, count) * max(1, itemsize), what)
            return make(*args, **kwargs)
        return call

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            if name in ("bytes", "bytearray"):
                return self._sized(getattr(builtins, name), name)
            return getattr(builtins, name)
        if (module, name) in _NUMPY:
            found = _NUMPY[(module, name)]
            if found is np.ndarray:
                return self._ndarray
            if name == "_reconstruct":
                checked = self._array(found, 1, 2, "numpy _reconstruct")
                # Its first argument is the array type, which this pickle got from us as the checked constructor.
                return lambda cls, *rest: checked(np.ndarray if cls is self._ndarray else cls, *rest)
            return found
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(f"pickle refers to {module}.{name}; only numpy arrays and plain builtins are allowed "
                                "(nothing was imported or run)")

    def persistent_load(self, pid):
        raise UnsafePickleError("pickle uses persistent ids; they are not allowed")


def loads(data: bytes):
    """Unpickles `data` with the allow-list; raises UnsafePickleError or pickle.UnpicklingError (and friends)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
