"""``Device``: base class of hardware and software devices, made thread-safe by rerouting.

Every public method call, property access and public attribute get/set made outside the device's
executor thread is run on that thread (the device's ``@on_thread`` thread, else any executor thread
with the main one as target) and the caller waits for the result. Calls already on the right thread,
and calls from threads that code on executor threads started, run directly.
"""

from __future__ import annotations

import functools
import itertools
import threading
from abc import ABCMeta
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .ex_event_base import ExecutorEvent
from .executor import EXECUTOR_THREADS, MAIN_THREAD_NAME, ExecutionEngine
from .threading_decorator import THREAD_NAME_ATTR

_oga = object.__getattribute__
_osa = object.__setattr__
_get_ident = threading.get_ident
_executor_thread_of = EXECUTOR_THREADS.get
_WRAPPED = "_exengine_wrapped"
_DIRECT = "_exengine_direct_method"
_SPAWNED = "_exengine_spawned"
_name_counter = itertools.count(1)


# ----------------------------------------------------------------- thread origin tracking
def _install_thread_origin_hook() -> None:
    """Mark threads started from executor threads (or their descendants) so they are never
    rerouted."""
    if getattr(threading.Thread, "_exengine_origin_hook", False):
        return
    original_start = threading.Thread.start

    @functools.wraps(original_start)
    def start(self: threading.Thread) -> None:
        if not hasattr(self, _SPAWNED):
            spawned = _get_ident() in EXECUTOR_THREADS or getattr(
                threading.current_thread(), _SPAWNED, False
            )
            setattr(self, _SPAWNED, spawned)
        original_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]
    threading.Thread._exengine_origin_hook = True  # type: ignore[attr-defined]


_install_thread_origin_hook()


def direct_access(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a device method as safe to run on the calling thread (it never touches hardware)."""
    setattr(func, _DIRECT, True)
    return func


class _DeviceCallEvent(ExecutorEvent):
    """Runs one device call on an executor thread."""

    __slots__ = ("args", "func", "instance", "kwargs")

    def __init__(
        self, func: Callable[..., Any], instance: Device, args: tuple, kwargs: dict
    ) -> None:
        self.func = func
        self.instance = instance
        self.args = args
        self.kwargs = kwargs

    def execute(self) -> Any:
        return self.func(self.instance, *self.args, **self.kwargs)

    def __repr__(self) -> str:
        return (
            f"<device call {getattr(self.func, '__name__', self.func)} on {self.instance._name!r}>"
        )


def _runs_here(thread_name: str | None) -> bool:
    """True when a call pinned to ``thread_name`` (any executor thread when None) may run on this
    thread."""
    current = _executor_thread_of(_get_ident())
    if current is not None:
        return thread_name is None or current == thread_name
    return getattr(threading.current_thread(), _SPAWNED, False)


def _reroute(
    device: Device, thread_name: str | None, func: Callable[..., Any], args: tuple, kwargs: dict
) -> Any:
    engine = ExecutionEngine._instance or ExecutionEngine()
    future = engine.submit(
        _DeviceCallEvent(func, device, args, kwargs), thread_name=thread_name or MAIN_THREAD_NAME
    )
    try:
        return future.await_execution()  # type: ignore[union-attr]
    finally:
        # the event and its future refer to each other: without this, what the call returned (a
        # camera's frame, whose buffer the camera would reuse) lives on until Python's cyclic
        # garbage collection
        future.event = None  # type: ignore[union-attr]


def _wrap(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(func, _WRAPPED, False) or getattr(func, _DIRECT, False):
        return func
    method_thread = getattr(func, THREAD_NAME_ATTR, None)

    @functools.wraps(func)
    def rerouted(self: Device, *args: Any, **kwargs: Any) -> Any:
        if _oga(self, "_exengine_bypass"):
            return func(self, *args, **kwargs)
        thread_name = method_thread or type(self)._thread_name
        if _runs_here(thread_name) or name in _oga(self, "_no_executor_attrs"):
            return func(self, *args, **kwargs)
        return _reroute(self, thread_name, func, args, kwargs)

    setattr(rerouted, _WRAPPED, True)
    return rerouted


def _wrap_member(name: str, value: Any) -> Any:
    if isinstance(value, property):
        if value.fget is not None and getattr(value.fget, _DIRECT, False):
            return value
        return property(
            _wrap(name, value.fget) if value.fget else None,
            _wrap(name, value.fset) if value.fset else None,
            _wrap(name, value.fdel) if value.fdel else None,
            value.__doc__,
        )
    if callable(value) and not isinstance(value, (type, staticmethod, classmethod)):
        return _wrap(name, value)
    return value


class DeviceMetaclass(ABCMeta):
    """Wraps public methods and properties of device classes for rerouting, and registers
    instances."""

    def __new__(
        mcs, name: str, bases: tuple, namespace: dict[str, Any], **kwargs: Any
    ) -> DeviceMetaclass:
        for attr, value in list(namespace.items()):
            if not attr.startswith("_"):
                namespace[attr] = _wrap_member(attr, value)
        # Public methods inherited from plain (non-Device) mix-ins are wrapped too.
        for base in bases:
            if isinstance(base, DeviceMetaclass):
                continue
            for klass in base.__mro__:
                if klass in (object,) or isinstance(klass, DeviceMetaclass):
                    continue
                for attr, value in vars(klass).items():
                    if (
                        not attr.startswith("_")
                        and attr not in namespace
                        and (isinstance(value, property) or callable(value))
                    ):
                        namespace[attr] = _wrap_member(attr, value)
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        cls._attr_kinds = {}  # type: ignore[attr-defined]
        return cls

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = (
            cls.__new__(cls) if cls.__new__ is object.__new__ else cls.__new__(cls, *args, **kwargs)
        )
        _osa(instance, "_exengine_bypass", True)  # construction runs on the calling thread
        instance.__init__(*args, **kwargs)
        instance_dict = _oga(instance, "__dict__")
        if "_name" not in instance_dict:
            Device.__init__(instance)
        _osa(instance, "_exengine_bypass", bool(_oga(instance, "_no_executor")))
        ExecutionEngine.register_device(_oga(instance, "_name"), instance)
        return instance


class Device(metaclass=DeviceMetaclass):
    """Base class of all devices.

    ``name`` registers the device with the engine (``ExecutionEngine.get_device(name)``); a unique
    name is made from the class name when omitted. ``no_executor=True`` turns rerouting off for the
    whole device, ``no_executor_attrs`` for the listed attributes and methods.

    Subclasses describe their properties for user interfaces by overriding the metadata hooks
    (allowed values, limits, read-only, hardware-triggerable sequences).
    """

    _thread_name: str | None = None
    _exengine_bypass = True
    _no_executor = False
    _no_executor_attrs: frozenset[str] = frozenset()

    def __init__(
        self,
        name: str | None = None,
        no_executor: bool = False,
        no_executor_attrs: Sequence[str] = (),
    ) -> None:
        if name is None:
            name = f"{type(self).__name__}{next(_name_counter)}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"A device name must be a non-empty string, got {name!r}")
        _osa(self, "_name", name)
        _osa(self, "_no_executor", bool(no_executor))
        _osa(self, "_no_executor_attrs", frozenset(no_executor_attrs))

    def __getattribute__(self, name: str) -> Any:
        if name[0] == "_" or _oga(self, "_exengine_bypass"):
            return _oga(self, name)
        cls = type(self)
        if (
            _member_kind(cls, name)
            or _runs_here(cls._thread_name)
            or name in _oga(self, "_no_executor_attrs")
        ):
            return _oga(self, name)
        return _reroute(self, cls._thread_name, _oga, (name,), {})

    def __setattr__(self, name: str, value: Any) -> None:
        if name[0] == "_" or _oga(self, "_exengine_bypass"):
            return _osa(self, name, value)
        cls = type(self)
        if (
            _member_kind(cls, name)
            or _runs_here(cls._thread_name)
            or name in _oga(self, "_no_executor_attrs")
        ):
            return _osa(self, name, value)
        _reroute(self, cls._thread_name, _osa, (name, value), {})

    @property
    @direct_access
    def name(self) -> str:
        """The name under which the device is registered."""
        return _oga(self, "_name")

    @direct_access
    def get_property_names(self) -> list[str]:
        """Names of the device's properties: public data attributes and Python properties."""
        names = [n for n in _oga(self, "__dict__") if not n.startswith("_")]
        for klass in type(self).__mro__:
            for attr, value in vars(klass).items():
                if (
                    isinstance(value, property)
                    and not attr.startswith("_")
                    and attr != "name"
                    and attr not in names
                ):
                    names.append(attr)
        return names

    def get_allowed_property_values(self, property_name: str) -> list[Any] | None:
        """The finite set of values ``property_name`` accepts, or None when any value is allowed."""
        return None

    def is_property_read_only(self, property_name: str) -> bool:
        """True when ``property_name`` cannot be set."""
        prop = getattr(type(self), property_name, None)
        return isinstance(prop, property) and prop.fset is None

    def get_property_limits(self, property_name: str) -> tuple[float | None, float | None]:
        """``(low, high)`` bounds of a numeric property; ``None`` for an open side."""
        return (None, None)

    def is_property_hardware_triggerable(self, property_name: str) -> bool:
        """True when ``property_name`` can step through a loaded sequence on hardware triggers."""
        return False

    def get_triggerable_sequence_max_length(self, property_name: str) -> int:
        """The longest sequence ``property_name`` accepts."""
        raise NotImplementedError(
            f"{self._name}: {property_name!r} has no hardware-triggerable sequences"
        )

    def load_triggerable_sequence(
        self, property_name: str, event_sequence: Iterable[str | float | int]
    ) -> None:
        """Load a sequence of values for ``property_name`` to step through on triggers."""
        raise NotImplementedError(
            f"{self._name}: {property_name!r} has no hardware-triggerable sequences"
        )

    def start_triggerable_sequence(self, property_name: str) -> None:
        """Start stepping ``property_name`` through its loaded sequence."""
        raise NotImplementedError(
            f"{self._name}: {property_name!r} has no hardware-triggerable sequences"
        )

    def stop_triggerable_sequence(self, property_name: str) -> None:
        """Stop the running sequence of ``property_name``."""
        raise NotImplementedError(
            f"{self._name}: {property_name!r} has no hardware-triggerable sequences"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {_oga(self, '_name')!r}>"


def _member_kind(cls: type, name: str) -> bool:
    """True when ``name`` is a class member that handles its own rerouting (methods, properties)."""
    kinds: dict[str, bool] = cls._attr_kinds  # type: ignore[attr-defined]
    kind = kinds.get(name)
    if kind is None:
        member = getattr(cls, name, None)
        kind = kinds[name] = isinstance(member, property) or (
            callable(member) and not isinstance(member, type)
        )
    return kind
