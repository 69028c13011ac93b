"""Resolve the ``device`` argument of standard events: an object, a registered name, or None."""

from __future__ import annotations

from typing import Any, TypeVar

from ..kernel.device import Device
from ..kernel.executor import ExecutionEngine

D = TypeVar("D", bound=Device)


def resolve_device(device: Any, kind: type[D] | tuple[type, ...], role: str) -> D:
    """Return ``device`` as a ``kind``: the object itself, the device registered under that name,
    or, when ``None``, the only registered device of that kind."""
    kind_name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
    if device is None:
        matches = [d for d in ExecutionEngine.get_devices().values() if isinstance(d, kind)]
        if len(matches) != 1:
            found = [d.name for d in matches]
            raise ValueError(
                f"No {role} given and {len(matches)} registered {kind_name} devices {found}; pass "
                "one explicitly"
            )
        return matches[0]  # type: ignore[return-value]
    if isinstance(device, str):
        device = ExecutionEngine.get_device(device)
    if not isinstance(device, kind):
        raise TypeError(
            f"The {role} must be a {kind_name} (or its registered name), got {device!r}"
        )
    return device
