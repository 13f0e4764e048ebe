"""The channel between the clean checker process and the sandboxed student process: plain data only.

The grader runs the student's exercise cell in one process (sandboxed, :mod:`.child`) and the checking
code in another (:mod:`.checker`), which never imports, unpickles or executes anything of the student.
They talk over one Unix socket, in length-prefixed JSON frames::

    checker -> student   {"op": "call", "h": 0, "args": ..., "kwargs": ..., "ctx": {rng, dtype, grad}}
    student -> checker   {"re": "ok", "value": ...}  or  {"re": "raise", "type": "ValueError", ...}

What crosses from the student to the checker is *plain data* (:func:`encode_plain`): ``None``, bools,
numbers, strings, lists / tuples / dicts of those, tensors and numpy arrays (dtype from a fixed list,
raw bytes checked against the shape), ``torch.dtype`` / ``torch.Size`` / ``torch.device``, e3nn
``Irreps`` (as their string) and named tuples (rebuilt as named tuples made by the checker). Everything
else stays in the student process and is seen by the checker as a *handle*: a :class:`Remote`
proxy whose calls, attribute reads, ``len``, iteration and indexing are requests to the student
process. :func:`decode_plain` accepts nothing else; a malformed or oversized frame ends the exchange
with a :class:`ProtocolError`.

What crosses from the checker to the student (trusted data going to the untrusted side) may be more:
tensors (with their ``requires_grad``), library objects (a model, a graph batch) pickled with their
tensors sent separately, and callables as *callback* handles that the student's code can call (the
call runs in the checker, on plain arguments: that is how a checker counts force evaluations).

Gradients: a call whose checker-side inputs (tensors, parameters of a pickled model) require gradients
and whose outputs require gradients in the student process returns outputs attached to the checker's
autograd graph by :class:`_RemoteCall`; ``backward()`` sends the output gradients to the student
process, which computes the input gradients there (``torch.autograd.grad``) and sends them back as
plain tensors: first derivatives only. In-place changes the student's code makes to the checker's
tensors (their values, ``requires_grad``) are copied back after each call, so "your function
modified its input in place" is still seen.

Training a student's module from the checker: :meth:`Remote.remote_functional_call` calls it with its parameters
replaced by the checker's tensors (``torch.func.functional_call`` in the student process), so the outputs are
attached to the checker's parameters and the optimiser runs in the checker; the student process forgets the
autograd graph of such a call after its first ``backward`` (a training loop keeps no graph of earlier steps).

The random state, the default dtype and whether gradients are enabled are sent with every call, so a
checker that seeds ``torch`` before building the student's module gets the same weights as in one
process.

The student side (:class:`StudentEnd`) is loaded by file path in the student process before the
student's code runs and needs only the standard library and torch.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import keyword
import math
import pickle
import socket
import struct
import sys
import traceback

__all__ = ["ProtocolError", "RemoteError", "RemoteNotImplementedError", "Remote", "CheckerEnd", "StudentEnd",
           "send_frame", "recv_frame", "encode_plain", "decode_plain", "MAX_FRAME"]

MAX_FRAME = 64 * 1024 * 1024  # bytes of one frame
MAX_ITEMS = 200_000  # containers' entries in one value, all levels together
MAX_DEPTH = 32
MAX_ELEMENTS = 20_000_000  # elements of one array
MAX_TEXT = 100_000  # characters of one string
DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
          "complex64", "complex128")
#: modules whose classes a handle may claim to be an instance of (``isinstance`` on the checker side)
TRUSTED_MODULES = ("torch", "e3nn", "course_lib", "torch_geometric", "numpy", "builtins", "collections", "types",
                   "functools")


class ProtocolError(Exception):
    """The other side sent something that is not a valid frame or plain value."""


class RemoteError(Exception):
    """An exception raised by the student's code in the student process (type name, message, its line)."""

    def __init__(self, type_name: str, message: str, where: str = ""):
        super().__init__(message)
        self.remote_type = type_name
        self.student_where = where

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


class RemoteNotImplementedError(RemoteError, NotImplementedError):
    """The student's code raised ``NotImplementedError`` (the exercise is not done)."""


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------


def send_frame(sock: socket.socket, message: dict) -> None:
    body = json.dumps(message, allow_nan=True).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"a message of {len(body)} bytes is larger than the limit ({MAX_FRAME})")
    sock.sendall(struct.pack(">I", len(body)) + body)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ProtocolError("the other process closed the channel")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def recv_frame(sock: socket.socket) -> dict:
    (n,) = struct.unpack(">I", _recv_exact(sock, 4))
    if n > MAX_FRAME:
        raise ProtocolError(f"a message of {n} bytes is larger than the limit ({MAX_FRAME})")
    try:
        message = json.loads(_recv_exact(sock, n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"an unreadable message ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message that is not an object")
    return message


# --------------------------------------------------------------------------------------------
# plain values (both directions) and tensors
# --------------------------------------------------------------------------------------------


def _torch():
    return sys.modules.get("torch") or __import__("torch")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError("array data that is not a string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ProtocolError("array data that is not base64") from None


def _tensor_bytes(t) -> tuple[str, list[int], bytes]:
    torch = _torch()
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = torch.Tensor.as_subclass(t, torch.Tensor).resolve_conj().resolve_neg().contiguous()
    dtype = str(t.dtype).replace("torch.", "")
    if dtype not in DTYPES:
        raise TypeError(f"tensors of dtype {dtype} cannot be sent")
    shape = [int(s) for s in t.shape]
    if dtype == "bfloat16":
        data = t.view(torch.int16).numpy().tobytes()
    else:
        data = t.numpy().tobytes()
    return dtype, shape, data


def _tensor_from(entry: dict):
    torch = _torch()
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if dtype not in DTYPES:
        raise ProtocolError(f"an array of unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > 16 or not all(type(s) is int and 0 <= s for s in shape):
        raise ProtocolError("an array with an invalid shape")
    numel = math.prod(shape)
    if numel > MAX_ELEMENTS:
        raise ProtocolError(f"an array of {numel} elements (limit {MAX_ELEMENTS})")
    data = _unb64(entry.get("data"))
    tdtype = getattr(torch, dtype)
    size = torch.empty((), dtype=tdtype).element_size()
    if len(data) != numel * size:
        raise ProtocolError("array data of the wrong length for its shape")
    if numel == 0:
        return torch.empty(shape, dtype=tdtype)
    buf = bytearray(data)
    if dtype == "bfloat16":
        return torch.frombuffer(buf, dtype=torch.int16).view(torch.bfloat16).reshape(shape).clone()
    return torch.frombuffer(buf, dtype=tdtype).reshape(shape).clone()


class _Budget:
    def __init__(self):
        self.items = 0

    def spend(self, n: int = 1) -> None:
        self.items += n
        if self.items > MAX_ITEMS:
            raise ProtocolError(f"a value with more than {MAX_ITEMS} entries")


def encode_plain(value, handle=None, tensor=None, depth: int = 0, budget: _Budget | None = None):
    """``value`` as JSON-ready plain data; ``handle(obj)`` encodes what is not plain (default: refuse) and
    ``tensor(t)`` a tensor (default: its bytes, dtype, shape and ``requires_grad``)."""
    budget = budget or _Budget()
    budget.spend()
    if depth > MAX_DEPTH:
        raise TypeError("a value nested too deeply")
    rec = lambda v: encode_plain(v, handle, tensor, depth + 1, budget)  # noqa: E731
    kind = type(value)
    if value is None or kind in (bool, str):
        if kind is str and len(value) > MAX_TEXT:
            value = value[:MAX_TEXT]
        return value
    if kind is int:
        return value if abs(value) < 2**63 else {"$": "bigint", "v": str(value)[:4000]}
    if kind is float:
        return value if math.isfinite(value) else {"$": "float", "v": repr(value)}
    if kind is complex:
        return {"$": "complex", "v": [rec(value.real), rec(value.imag)]}
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    if torch is not None:
        if issubclass(kind, torch.Tensor):
            if tensor is not None:
                return tensor(value)
            dtype, shape, data = _tensor_bytes(value)
            return {"$": "tensor", "dtype": dtype, "shape": shape, "data": _b64(data),
                    "rg": bool(value.requires_grad)}
        if kind is torch.dtype:
            return {"$": "dtype", "v": str(value).replace("torch.", "")}
        if kind is torch.Size:
            return {"$": "size", "v": [int(s) for s in value]}
        if kind is torch.device:
            return {"$": "device", "v": str(value)}
    if np is not None:
        if kind is np.ndarray and value.dtype.name in DTYPES:
            arr = np.ascontiguousarray(value)
            return {"$": "ndarray", "dtype": arr.dtype.name, "shape": list(arr.shape), "data": _b64(arr.tobytes())}
        if isinstance(value, np.generic) and value.dtype.name in DTYPES:
            return rec(value.item())
    if kind.__module__.startswith("e3nn") and kind.__name__ == "Irreps":
        return {"$": "irreps", "v": str(value)}
    if isinstance(value, tuple) and hasattr(kind, "_fields") and kind.__module__ != "torch.return_types":
        return {"$": "namedtuple", "name": kind.__name__, "fields": [str(f) for f in kind._fields],
                "v": [rec(v) for v in value]}
    if kind in (list, tuple) or (torch is not None and kind.__module__ == "torch.return_types"):
        budget.spend(len(value))
        items = [rec(v) for v in value]
        return items if kind is list else {"$": "tuple", "v": items}
    if kind is dict:
        budget.spend(len(value))
        return {"$": "dict", "v": [[rec(k), rec(v)] for k, v in value.items()]}
    if kind is slice:
        return {"$": "slice", "v": [rec(value.start), rec(value.stop), rec(value.step)]}
    if value is Ellipsis:
        return {"$": "ellipsis"}
    if handle is not None:
        return handle(value)
    raise TypeError(f"a {kind.__name__} cannot be sent as plain data")


_NAMEDTUPLES: dict = {}


def _namedtuple(name, fields):
    ok = lambda s: isinstance(s, str) and s.isidentifier() and not keyword.iskeyword(s) and not s.startswith("_")  # noqa: E731
    if not ok(name) or not isinstance(fields, list) or len(fields) > 64 or not all(ok(f) for f in fields) \
            or len(set(fields)) != len(fields):
        raise ProtocolError("a named tuple with invalid names")
    key = (name, tuple(fields))
    if key not in _NAMEDTUPLES:
        _NAMEDTUPLES[key] = collections.namedtuple(name, fields)
    return _NAMEDTUPLES[key]


def decode_plain(data, handle=None, tensor=None, depth: int = 0, budget: _Budget | None = None):
    """The value encoded by :func:`encode_plain`; ``handle(entry)`` decodes entries with other tags
    (default: refuse), ``tensor(entry)`` tensors (default: a new tensor from the bytes)."""
    budget = budget or _Budget()
    budget.spend()
    if depth > MAX_DEPTH:
        raise ProtocolError("a value nested too deeply")
    rec = lambda v: decode_plain(v, handle, tensor, depth + 1, budget)  # noqa: E731
    kind = type(data)
    if data is None or kind in (bool, str, float):
        return data
    if kind is int:
        return data
    if kind is list:
        budget.spend(len(data))
        return [rec(v) for v in data]
    if kind is not dict:
        raise ProtocolError(f"an unexpected {kind.__name__} in a message")
    tag = data.get("$")
    if tag == "tensor":
        return tensor(data) if tensor is not None else _tensor_from(data)
    if tag == "ndarray":
        return _tensor_from(data).numpy()
    if tag == "tuple":
        return tuple(rec(v) for v in _list(data.get("v")))
    if tag == "dict":
        out = {}
        for pair in _list(data.get("v")):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ProtocolError("a dict entry that is not a pair")
            key = rec(pair[0])
            if not isinstance(key, (str, int, float, bool, tuple)) and key is not None:
                raise ProtocolError("a dict key that is not a plain value")
            out[key] = rec(pair[1])
        return out
    if tag == "namedtuple":
        cls = _namedtuple(data.get("name"), data.get("fields"))
        values = [rec(v) for v in _list(data.get("v"))]
        if len(values) != len(cls._fields):
            raise ProtocolError("a named tuple with the wrong number of values")
        return cls(*values)
    if tag == "bigint":
        try:
            return int(str(data.get("v"))[:4000])
        except ValueError:
            raise ProtocolError("an invalid integer") from None
    if tag == "float":
        if data.get("v") not in ("nan", "inf", "-inf"):
            raise ProtocolError("an invalid float")
        return float(data["v"])
    if tag == "complex":
        re_im = _list(data.get("v"))
        if len(re_im) != 2:
            raise ProtocolError("an invalid complex number")
        return complex(*(float(rec(v)) for v in re_im))
    if tag in ("dtype", "size", "device", "irreps"):
        return _decode_library_value(tag, data)
    if tag == "slice":
        parts = [rec(v) for v in _list(data.get("v"))]
        if len(parts) != 3 or not all(p is None or type(p) is int for p in parts):
            raise ProtocolError("an invalid slice")
        return slice(*parts)
    if tag == "ellipsis":
        return Ellipsis
    if handle is not None:
        return handle(data)
    raise ProtocolError(f"an unknown value tag {str(tag)[:40]!r}")


def _decode_library_value(tag: str, data: dict):
    """``torch.dtype`` / ``torch.Size`` / ``torch.device`` / e3nn ``Irreps``, built here from their plain form."""
    torch = _torch()
    if tag == "dtype":
        if data.get("v") not in DTYPES:
            raise ProtocolError("an unknown dtype")
        return getattr(torch, data["v"])
    if tag == "size":
        values = _list(data.get("v"))
        if not all(type(v) is int and v >= 0 for v in values) or len(values) > 16:
            raise ProtocolError("an invalid torch.Size")
        return torch.Size(values)
    if tag == "device":
        if data.get("v") not in ("cpu", "cuda", "mps") and not str(data.get("v")).startswith("cuda:"):
            raise ProtocolError("an unknown device")
        return torch.device(str(data["v"])[:16])
    if tag == "irreps":
        from e3nn import o3

        text = data.get("v")
        if not isinstance(text, str) or len(text) > 2000:
            raise ProtocolError("an invalid Irreps")
        try:
            return o3.Irreps(text)
        except (ValueError, AssertionError, TypeError):
            raise ProtocolError("an invalid Irreps") from None
    raise ProtocolError(f"an unknown value tag {tag!r}")


def _list(value) -> list:
    if not isinstance(value, list):
        raise ProtocolError("a list was expected")
    return value


def _context() -> dict:
    """What the student's call should see of the checker's torch state."""
    torch = _torch()
    return {"rng": _b64(torch.get_rng_state().numpy().tobytes()),
            "dtype": str(torch.get_default_dtype()).replace("torch.", ""), "grad": torch.is_grad_enabled()}


# --------------------------------------------------------------------------------------------
# the checker's end
# --------------------------------------------------------------------------------------------


class _Resolver:
    """Classes a handle may claim (for ``isinstance``): trusted library classes importable here."""

    def __init__(self):
        self.cache: dict = {}

    def resolve(self, mro) -> type:
        if not isinstance(mro, list):
            mro = []
        for entry in mro[:40]:
            if not isinstance(entry, str) or entry in self.cache and self.cache[entry] is None:
                continue
            if entry in self.cache:
                return self.cache[entry]
            cls = self._load(entry)
            self.cache[entry] = cls
            if cls is not None:
                return cls
        return object

    @staticmethod
    def _load(entry: str):
        module, _, qualname = entry.rpartition(":")
        if not module or module.split(".")[0] not in TRUSTED_MODULES or module not in sys.modules:
            return None  # only classes of trusted modules already imported by the checker
        obj = sys.modules[module]
        for part in qualname.split("."):
            if not part.isidentifier():
                return None
            obj = getattr(obj, part, None)
        if not isinstance(obj, type) or _is_value_type(obj):
            return None
        return obj


def _is_value_type(cls: type) -> bool:
    """Classes whose instances always cross as plain values: a handle never claims to be one (a checker's
    ``isinstance(out, torch.Tensor)`` must mean the values are here)."""
    plain = (int, float, complex, str, bytes, bool, list, tuple, dict, set, frozenset)
    if issubclass(cls, plain):
        return True
    torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
    return bool((torch is not None and issubclass(cls, torch.Tensor))
                or (np is not None and issubclass(cls, np.ndarray)))


class Remote:
    """The checker's view of an object that lives in the student process (see the module doc)."""

    __slots__ = ("_end", "_id", "_meta", "__weakref__")

    def __init__(self, end: CheckerEnd, hid: int, meta: dict):
        object.__setattr__(self, "_end", end)
        object.__setattr__(self, "_id", hid)
        object.__setattr__(self, "_meta", meta)

    @property
    def __class__(self):  # isinstance(remote, nn.Module) follows the student's class, if it is a library one
        return self._end.resolver.resolve(self._meta.get("mro"))

    @property
    def __name__(self) -> str:
        return str(self._meta.get("name", "object"))[:200]

    def __call__(self, *args, **kwargs):
        return self._end.call(self, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._end.request({"op": "getattr", "h": self._id, "name": name})

    def __setattr__(self, name, value):
        raise AttributeError("the checker does not change the student's objects")

    def __len__(self) -> int:
        n = self._end.request({"op": "len", "h": self._id})
        if type(n) is not int or n < 0:
            raise TypeError("len() of the student's object is not an integer")
        return n

    def __iter__(self):
        values = self._end.request({"op": "list", "h": self._id})
        if not isinstance(values, list):
            raise TypeError("the student's object did not iterate to a list")
        return iter(values)

    def __getitem__(self, key):
        return self._end.request({"op": "getitem", "h": self._id, "key": self._end.encode(key)[0]})

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<student object {self.__name__}>"

    def remote_type_name(self) -> str:
        """The name of the student's class (``type(obj).__name__`` in the student's process)."""
        mro = self._meta.get("mro") or ["?:object"]
        return str(mro[0]).rpartition(":")[2].rpartition(".")[2][:100] or "object"

    def remote_functional_call(self, params: dict, args: tuple, kwargs: dict | None = None):
        """``torch.func.functional_call(module, params, args, kwargs)`` in the student process: the student's
        module with its parameters (and buffers) named in ``params`` replaced by the checker's tensors; the outputs
        are attached to them for ``backward`` (see the module doc)."""
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise TypeError("params must be a dict name -> tensor")
        return self._end.call(self, tuple(args), dict(kwargs or {}), params=params)

    def remote_source(self) -> str:
        """The source code of the student's function, as the student process reports it ("" if none)."""
        text = self._end.request({"op": "source", "h": self._id})
        return text if isinstance(text, str) else ""


class CheckerEnd:
    """The checker's end of the channel: requests to the student process, answers to its callbacks."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.resolver = _Resolver()
        self.remotes: dict[int, Remote] = {}
        self.callbacks: list = []
        self.closed = False
        self.flags: list[str] = []  # tampering the student process reported while answering (evidence only)

    # values the student sent
    def remote(self, entry: dict) -> Remote:
        if entry.get("$") != "handle" or type(entry.get("id")) is not int:
            raise ProtocolError(f"an unknown value tag {str(entry.get('$'))[:40]!r}")
        hid = entry["id"]
        if hid not in self.remotes:
            meta = {"name": str(entry.get("name", ""))[:200], "mro": entry.get("mro") if isinstance(
                entry.get("mro"), list) else []}
            self.remotes[hid] = Remote(self, hid, meta)
        return self.remotes[hid]

    def decode(self, data, tensor=None):
        return decode_plain(data, handle=self.remote, tensor=tensor)

    # values going to the student
    def encode(self, value) -> tuple:
        """``(data, tensors)``: ``value`` for the student; the checker tensors it holds, in the order of
        their ``"i"`` indices (pickled objects refer to them by index)."""
        torch = _torch()
        tensors: list = []
        index: dict[int, int] = {}

        def tensor(t):
            key = id(t)
            if key not in index:
                index[key] = len(tensors)
                tensors.append(t)
                dtype, shape, data = _tensor_bytes(t)
                return {"$": "tensor", "dtype": dtype, "shape": shape, "data": _b64(data), "rg": bool(t.requires_grad),
                        "param": isinstance(t, torch.nn.Parameter), "i": index[key]}
            return {"$": "tref", "i": index[key]}

        def handle(obj):
            if isinstance(obj, Remote):
                if obj._end is not self:
                    raise TypeError("a handle of another channel")
                return {"$": "ref", "id": obj._id}
            if isinstance(obj, torch.Generator):
                return {"$": "generator", "state": _b64(obj.get_state().numpy().tobytes())}
            if not getattr(type(obj), "__grader_callback__", False):
                buf = io.BytesIO()
                pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
                pickler.persistent_id = lambda o: ("t", tensor(o)) if isinstance(o, torch.Tensor) else None
                try:
                    pickler.dump(obj)  # a library object, or a function by its importable name: it runs there
                    return {"$": "pickle", "data": _b64(buf.getvalue())}
                except (pickle.PicklingError, TypeError, AttributeError):
                    if not callable(obj):
                        raise
            # a lambda, a closure, or an object that must see the calls (it counts them): it runs here
            self.callbacks.append(obj)
            return {"$": "callback", "id": len(self.callbacks) - 1,
                    "name": str(getattr(obj, "__name__", type(obj).__name__))[:100]}

        data = encode_plain(value, handle=handle, tensor=tensor)
        return data, tensors

    def request(self, message: dict):
        """Send ``message`` and serve the student's callbacks until its answer; the decoded value."""
        reply = self._exchange(message)
        return self.decode(reply.get("value"))

    def _exchange(self, message: dict) -> dict:
        if self.closed:
            raise ProtocolError("the channel to the student process is closed")
        send_frame(self.sock, message)
        while True:
            reply = recv_frame(self.sock)
            flags = reply.get("flags")
            if isinstance(flags, list) and len(self.flags) < 200:
                self.flags += [f[:2000] for f in flags[:50] if isinstance(f, str)]
            kind = reply.get("re")
            if kind == "callback":
                self._serve_callback(reply)
                continue
            if kind == "raise":
                raise _remote_error(reply)
            if kind != "ok":
                raise ProtocolError("an answer of an unknown kind")
            return reply

    def _serve_callback(self, message: dict) -> None:
        cid = message.get("id")
        if type(cid) is not int or not 0 <= cid < len(self.callbacks):
            send_frame(self.sock, {"re": "raise", "type": "LookupError", "message": "no such callback"})
            return
        try:
            args = self.decode(message.get("args", []))
            kwargs = self.decode(message.get("kwargs", {"$": "dict", "v": []}))
            if not (isinstance(args, list) and isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs)):
                raise ProtocolError("invalid callback arguments")
            value = self.callbacks[cid](*args, **kwargs)
            data, _ = self.encode(value)
        except ProtocolError:
            raise
        except Exception as exc:  # noqa: BLE001 - the checker's callable raised: the student's code sees it
            send_frame(self.sock, {"re": "raise", "type": type(exc).__name__, "message": str(exc)[:2000]})
            return
        send_frame(self.sock, {"re": "ok", "value": data})

    def call(self, remote: Remote, args: tuple, kwargs: dict, params: dict | None = None):
        """``remote(*args, **kwargs)`` in the student process (see the module doc for gradients); with ``params``
        the call is ``torch.func.functional_call(remote, params, args, kwargs)``."""
        torch = _torch()
        message = {"op": "call", "h": remote._id, "ctx": _context()}
        if params is None:
            data, tensors = self.encode([list(args), dict(kwargs)])
        else:
            data, tensors = self.encode([list(args), dict(kwargs), dict(params)])
            message["functional"] = True
        message["args"] = data
        reply = self._exchange(message)
        self._apply_changes(tensors, reply.get("changed"))
        outputs: list = []

        def tensor(entry):
            t = _tensor_from(entry)
            if entry.get("rg") is True and type(entry.get("k")) is int and (t.is_floating_point() or t.is_complex()):
                outputs.append((entry["k"], t))
            return t

        value = self.decode(reply.get("value"), tensor=tensor)
        if not outputs:
            return value
        inputs = [t for t in tensors if t.requires_grad and (t.is_floating_point() or t.is_complex())]
        if not inputs or not torch.is_grad_enabled():
            for _, t in outputs:
                t.requires_grad_(True)  # it depends on the student's own parameters: a leaf here
            return value
        call_id = reply.get("call")
        attached = _RemoteCall.apply(self, call_id, [t for _, t in outputs], [k for k, _ in outputs], *inputs)
        swap = {id(t): a for (_, t), a in zip(outputs, attached, strict=True)}
        return _replace(value, swap)

    def backward(self, call_id, keys: list, grads: list, inputs: list) -> list:
        torch = _torch()
        sent = [None if g is None else self.encode(g.detach())[0] for g in grads]
        reply = self._exchange({"op": "backward", "call": call_id, "keys": keys, "grads": sent})
        got = self.decode(reply.get("value"))
        if not isinstance(got, list) or len(got) != len(inputs):
            raise ProtocolError("gradients of the wrong length")
        out = []
        for g, t in zip(got, inputs, strict=True):
            if g is None:
                out.append(None)
            elif isinstance(g, torch.Tensor) and g.shape == t.shape:
                out.append(g.to(t.dtype))
            else:
                raise ProtocolError("a gradient of the wrong shape")
        return out

    def _apply_changes(self, tensors: list, changed) -> None:
        torch = _torch()
        if not isinstance(changed, list):
            return
        for entry in changed[: len(tensors)]:
            if not isinstance(entry, dict) or type(entry.get("i")) is not int or not 0 <= entry["i"] < len(tensors):
                raise ProtocolError("an invalid in-place change")
            t = tensors[entry["i"]]
            if entry.get("data") is not None:
                new = _tensor_from(entry["data"])
                if new.shape == t.shape:
                    with torch.no_grad():
                        t.copy_(new.to(t.dtype))
            if type(entry.get("rg")) is bool and t.is_leaf and entry["rg"] != t.requires_grad:
                if not entry["rg"] or t.is_floating_point() or t.is_complex():
                    t.requires_grad_(entry["rg"])

    def close(self) -> None:
        if not self.closed:
            try:
                send_frame(self.sock, {"op": "done"})
            except OSError:
                pass
            self.closed = True


def _replace(value, swap: dict):
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return swap.get(id(value), value)
    if isinstance(value, tuple) and hasattr(type(value), "_fields"):
        return type(value)(*(_replace(v, swap) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_replace(v, swap) for v in value)
    if isinstance(value, dict):
        return {k: _replace(v, swap) for k, v in value.items()}
    return value


def _remote_error(reply: dict) -> RemoteError:
    name = str(reply.get("type", "Exception"))[:100]
    message = str(reply.get("message", ""))[:2000]
    where = str(reply.get("where", ""))[:500]
    cls = RemoteNotImplementedError if name == "NotImplementedError" else RemoteError
    return cls(name, message, where)


def _make_remote_call():
    torch = _torch()

    class RemoteCall(torch.autograd.Function):
        """Outputs computed in the student process, attached to the checker's inputs for ``backward``."""

        @staticmethod
        def forward(ctx, end, call_id, outputs, keys, *inputs):
            ctx.end, ctx.call_id, ctx.keys, ctx.n_inputs = end, call_id, keys, len(inputs)
            ctx.save_for_backward(*inputs)
            return tuple(o.clone() for o in outputs)

        @staticmethod
        def backward(ctx, *grads):
            inputs = ctx.saved_tensors
            got = ctx.end.backward(ctx.call_id, ctx.keys, list(grads), list(inputs))
            return (None, None, None, None, *got)

    return RemoteCall


class _LazyRemoteCall:
    fn = None

    def apply(self, end, call_id, outputs, keys, *inputs):
        if self.fn is None:
            self.fn = _make_remote_call()
        return self.fn.apply(end, call_id, outputs, keys, *inputs)


_RemoteCall = _LazyRemoteCall()


# --------------------------------------------------------------------------------------------
# the student's end
# --------------------------------------------------------------------------------------------


class StudentEnd:
    """The student process's end: holds the student's objects, answers the checker's requests.

    Runs in the untrusted process: nothing it sends is believed by the checker beyond being the
    student's answer; it keeps the student's objects alive (handles) and the autograd graphs of the
    calls whose outputs require gradients.
    """

    def __init__(self, sock: socket.socket, cell_files: tuple[str, ...] = ("<exercise cell",),
                 events: list | None = None):
        self.sock = sock
        self.events = events if events is not None else []  # the audit hook's records (tampering seen here)
        self.reported = len(self.events)
        self.objects: dict[int, object] = {}
        self.ids: dict[int, int] = {}
        self.graphs: dict[int, tuple] = {}
        self.calls = 0
        self.cell_files = cell_files

    def handle(self, obj) -> dict:
        key = id(obj)
        if key not in self.ids:
            self.ids[key] = len(self.objects)
            self.objects[self.ids[key]] = obj
        cls = type(obj)
        mro = []
        for c in getattr(cls, "__mro__", (cls,)):
            mro.append(f"{getattr(c, '__module__', '?')}:{getattr(c, '__qualname__', '?')}")
        name = getattr(obj, "__name__", None)
        return {"$": "handle", "id": self.ids[key], "mro": mro[:40],
                "name": name if isinstance(name, str) else cls.__name__}

    def encode(self, value, outputs: list | None = None):
        def tensor(t):
            dtype, shape, data = _tensor_bytes(t)
            entry = {"$": "tensor", "dtype": dtype, "shape": shape, "data": _b64(data), "rg": bool(t.requires_grad)}
            if outputs is not None and t.requires_grad:
                entry["k"] = len(outputs)
                outputs.append(t)
            return entry

        return encode_plain(value, handle=self.handle, tensor=tensor)

    def decode_args(self, data):
        """The checker's arguments: tensors (as leaves, with ``requires_grad``), pickled objects, callbacks."""
        torch = _torch()
        table: dict[int, object] = {}

        def tensor(entry):
            t = _tensor_from(entry)
            if entry.get("rg"):
                t.requires_grad_(True)
            if entry.get("param"):
                t = torch.nn.Parameter(t, requires_grad=bool(entry.get("rg")))
            table[entry["i"]] = t
            return t

        def other(entry):
            tag = entry.get("$")
            if tag == "tref":
                return table[entry["i"]]
            if tag == "ref":
                return self.objects[entry["id"]]
            if tag == "generator":
                g = torch.Generator()
                g.set_state(torch.frombuffer(bytearray(_unb64(entry["state"])), dtype=torch.uint8).clone())
                return g
            if tag == "callback":
                return _Callback(self, entry["id"], entry.get("name", "callback"))
            if tag == "pickle":
                unpickler = pickle.Unpickler(io.BytesIO(_unb64(entry["data"])))
                unpickler.persistent_load = lambda pid: (table[pid[1]["i"]] if pid[1].get("$") == "tref"
                                                         else tensor(pid[1]))
                return unpickler.load()
            raise ProtocolError(f"unknown tag {tag!r}")

        return decode_plain(data, handle=other, tensor=tensor), table

    def serve(self) -> None:
        """Answer requests until the checker says ``done`` or closes the channel."""
        while True:
            try:
                message = recv_frame(self.sock)
            except (ProtocolError, OSError):
                return
            if message.get("op") == "done":
                return
            self.answer(message)

    def answer(self, message: dict) -> None:
        try:
            reply = self._answer(message)
        except ProtocolError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the student's exception goes to the checker as text
            reply = {"re": "raise", "type": type(exc).__name__, "message": _safe_str(exc), "where": self._where(exc)}
        if len(self.events) > self.reported:  # what the audit hook refused during this request
            reply["flags"] = [str(e)[:2000] for e in self.events[self.reported:self.reported + 50]]
            self.reported = len(self.events)
        send_frame(self.sock, reply)

    def _answer(self, message: dict) -> dict:
        op = message.get("op")
        torch = _torch()
        if op == "call":
            fn = self.objects[message["h"]]
            functional = message.get("functional") is True
            decoded, table = self.decode_args(message["args"])
            if not isinstance(decoded, list) or len(decoded) != (3 if functional else 2):
                raise ProtocolError("invalid call arguments")
            args, kwargs = decoded[0], decoded[1]
            if functional and not (isinstance(fn, torch.nn.Module) and isinstance(decoded[2], dict)):
                raise TypeError(f"a {type(fn).__name__} is not a torch.nn.Module: its parameters cannot be replaced")
            versions = {i: (t._version, t.requires_grad) for i, t in table.items()}
            ctx = message.get("ctx") or {}
            if "rng" in ctx:
                torch.set_rng_state(torch.frombuffer(bytearray(_unb64(ctx["rng"])), dtype=torch.uint8).clone())
            if ctx.get("dtype") in ("float32", "float64"):
                torch.set_default_dtype(getattr(torch, ctx["dtype"]))
            with torch.set_grad_enabled(bool(ctx.get("grad", True))):
                if functional:
                    result = torch.func.functional_call(fn, decoded[2], tuple(args), kwargs)
                else:
                    result = fn(*args, **kwargs)
            outputs: list = []
            value = self.encode(result, outputs)
            changed = []
            for i, t in table.items():
                version, rg = versions[i]
                if t._version != version or t.requires_grad != rg:
                    changed.append({"i": i, "rg": bool(t.requires_grad),
                                    "data": self.encode(t.detach()) if t._version != version else None})
            call_id = self.calls
            self.calls += 1
            if outputs:
                inputs = [table[i] for i in sorted(table) if table[i].requires_grad
                          and (table[i].is_floating_point() or table[i].is_complex())]
                self.graphs[call_id] = (outputs, inputs, functional)
            return {"re": "ok", "value": value, "changed": changed, "call": call_id}
        if op == "backward":
            if message.get("call") not in self.graphs:
                raise KeyError("backward of an unknown call (a training step's graph is used once)")
            outputs, inputs, once = self.graphs[message["call"]]
            if once:  # a training step: its graph is not needed again
                del self.graphs[message["call"]]
            grads = [None if g is None else _tensor_from(g) for g in message["grads"]]
            pairs = [(outputs[k], g) for k, g in zip(message["keys"], grads, strict=True) if g is not None]
            if not pairs or not inputs:
                return {"re": "ok", "value": self.encode([None] * len(inputs))}
            got = torch.autograd.grad([o for o, _ in pairs], inputs, [g.to(o.dtype) for o, g in pairs],
                                      allow_unused=True, retain_graph=True)
            return {"re": "ok", "value": self.encode([None if g is None else g.detach() for g in got])}
        obj = self.objects[message["h"]]
        if op == "getattr":
            name = message["name"]
            if not isinstance(name, str):
                raise TypeError("attribute names are strings")
            return {"re": "ok", "value": self.encode(getattr(obj, name))}
        if op == "len":
            return {"re": "ok", "value": len(obj)}
        if op == "list":
            items = []
            for k, item in enumerate(obj):
                if k >= 10_000:
                    break
                items.append(item)
            return {"re": "ok", "value": self.encode(items)}
        if op == "getitem":
            key, _ = self.decode_args(message["key"])
            return {"re": "ok", "value": self.encode(obj[key])}
        if op == "source":
            import inspect

            try:
                return {"re": "ok", "value": inspect.getsource(obj)[:MAX_TEXT]}
            except (OSError, TypeError):
                return {"re": "ok", "value": ""}
        raise ProtocolError(f"unknown request {op!r}")

    def _where(self, exc: BaseException) -> str:
        frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if fr.filename.startswith(self.cell_files)]
        if not frames:
            return ""
        fr = frames[-1]
        return f" (line {fr.lineno}: `{(fr.line or '').strip()[:200]}`)"

    def callback(self, cid: int, args: tuple, kwargs: dict):
        send_frame(self.sock, {"re": "callback", "id": cid, "args": self.encode(list(args)),
                               "kwargs": self.encode(dict(kwargs))})
        while True:
            message = recv_frame(self.sock)
            if message.get("re") == "ok":
                value, _ = self.decode_args(message.get("value"))
                return value
            if message.get("re") == "raise":
                raise RuntimeError(f"{message.get('type')}: {message.get('message')}")
            if message.get("op") == "done":
                raise SystemExit(0)
            self.answer(message)  # the checker calls the student's code again from inside its callable


class _Callback:
    """A checker callable as the student's code sees it: calling it runs it in the checker."""

    def __init__(self, end: StudentEnd, cid: int, name: str):
        self._end, self._cid, self.__name__ = end, cid, str(name)

    def __call__(self, *args, **kwargs):
        return self._end.callback(self._cid, args, kwargs)

    def __repr__(self) -> str:
        return f"<checker function {self.__name__}>"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)[:2000]
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return "(an exception whose message cannot be shown)"
