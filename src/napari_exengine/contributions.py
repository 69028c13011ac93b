"""Processor and storage contributions of any installed plugin, found through npe2 (no napari
needed).

A plugin declares a command whose ``python_name`` is a factory and lists it in the menu
``napari-exengine/processors`` or ``napari-exengine/storage`` of its own ``napari.yaml``. A
processor factory returns a ``DataProcessor`` or a process function; its menu item's ``group`` says
whether it is ``stateless`` (may run on many workers at once) or ``stateful`` (the default: frames
one at a time, in order), unless the ``DataProcessor`` declares it itself. A storage factory takes
(any of) ``directory``, ``name`` and ``summary_metadata`` and returns a ``DataStorage``. The
factory's other typed parameters are the contribution's settings. A plan (menu
``napari-exengine/plans``) is a command that returns the plan callable: keyword settings in, a lazy
stream of events out (``exengine.plans``); the plan's typed parameters, less the data handler and
devices it may take, are its settings.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from exengine.data import DataProcessor, DataStorage

#: The storage the panel and the command line use unless told otherwise.
DEFAULT_STORAGE = "napari-exengine.storage.ndtiff"
PROCESSOR_MENU = "napari-exengine/processors"
STORAGE_MENU = "napari-exengine/storage"
PLAN_MENU = "napari-exengine/plans"
#: The plan the panel and the command line use unless told otherwise (today's multi-D form).
DEFAULT_PLAN = "napari-exengine.plan.multi_d"
STORAGE_ARGUMENTS = ("directory", "name", "summary_metadata")
Kind = Literal["processor", "storage", "plan"]


class ContributionError(RuntimeError):
    """A contribution that cannot be used: it failed to import, its factory raised or returned the
    wrong type."""


@dataclass
class Contribution:
    """One contributed processor, storage backend or plan."""

    id: str
    title: str
    plugin: str
    kind: Kind
    python_name: str
    error: str | None = None
    stateful: bool | None = None  # a processor's menu group: "stateful", "stateless" or undeclared
    _factory: Callable[..., Any] | None = field(default=None, repr=False)
    _plan: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def available(self) -> bool:
        """False when the factory could not be imported (see ``error``)."""
        return self.error is None

    def factory(self) -> Callable[..., Any]:
        """The factory callable (imported on first use)."""
        if self._factory is None:
            from npe2.manifest.utils import import_python_name

            try:
                self._factory = import_python_name(self.python_name)
            except Exception as e:
                self.error = f"cannot import {self.python_name}: {e}"
                raise ContributionError(
                    f"{self.title} ({self.id}) is unavailable: {self.error}"
                ) from e
        return self._factory

    def settings_callable(self) -> Callable[..., Any]:
        """What the settings are passed to: the factory, or for a plan the plan callable it
        returns."""
        factory = self.factory()
        if self.kind != "plan":
            return factory
        if self._plan is None:
            try:
                plan = factory()
            except Exception as e:
                self.error = f"{self.python_name}() raised {e!r}"
                raise ContributionError(
                    f"{self.title} ({self.id}) is unavailable: {self.error}"
                ) from e
            if not callable(plan):
                self.error = (
                    f"{self.python_name}() returned {type(plan).__name__}, not a plan callable"
                )
                raise ContributionError(f"{self.title} ({self.id}) is unavailable: {self.error}")
            self._plan = plan
        return self._plan

    def parameters(self) -> list[inspect.Parameter]:
        """The settings (for storage, without directory/name/summary_metadata; for plans, without
        the data handler and devices)."""
        from exengine.plan_helpers import PLAN_ARGUMENTS

        hidden = {"storage": STORAGE_ARGUMENTS, "plan": PLAN_ARGUMENTS}.get(self.kind, ())
        signature = inspect.signature(self.settings_callable())
        return [
            p
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and not p.name.startswith("_")
            and p.name not in hidden
        ]

    def build(self, **kwargs: Any) -> Any:
        """Call the factory; a ``DataProcessor`` (processors), a ``DataStorage`` (storage), or for a
        plan the plan's events (``kwargs``: its settings plus any of the data handler and devices it
        takes)."""
        if self.kind == "plan":
            return self._build_plan(kwargs)
        factory = self.factory()
        if self.kind == "storage":
            try:
                accepted = inspect.signature(factory).parameters
            except (TypeError, ValueError):
                accepted = {}  # type: ignore[assignment]
            kwargs = {
                k: v for k, v in kwargs.items() if k not in STORAGE_ARGUMENTS or k in accepted
            }
        try:
            result = factory(**kwargs)
        except Exception as e:
            raise ContributionError(f"{self.title} ({self.id}) failed: {e}") from e
        if self.kind == "processor":
            if callable(result) and not isinstance(result, DataProcessor):
                result = DataProcessor(result)
            if isinstance(result, DataProcessor):
                if self.stateful is not None and not result.stateful_declared:
                    result.stateful, result.stateful_declared = self.stateful, True
                return result
            raise ContributionError(
                f"{self.title} ({self.id}) returned {type(result).__name__}; expected a "
                "DataProcessor or function"
            )
        if not isinstance(result, DataStorage):
            raise ContributionError(
                f"{self.title} ({self.id}) returned {type(result).__name__}; expected a DataStorage"
            )
        return result

    def _build_plan(self, kwargs: dict[str, Any]) -> Iterable[Any]:
        from exengine.plan_helpers import PLAN_ARGUMENTS, check_plan_settings

        plan = self.settings_callable()
        accepted = inspect.signature(plan).parameters
        settings = {k: v for k, v in kwargs.items() if k not in PLAN_ARGUMENTS}
        check_plan_settings(plan, settings)
        arguments = {k: v for k, v in kwargs.items() if k in PLAN_ARGUMENTS and k in accepted}
        result = plan(**settings, **arguments)
        if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
            raise ContributionError(
                f"{self.title} ({self.id}) returned {type(result).__name__}; expected an iterable "
                "of events"
            )
        return result


def list_contributions(
    kind: Kind | None = None, check: bool = True, manager: Any = None
) -> list[Contribution]:
    """Every contributed processor and/or storage backend of the installed plugins.

    With ``check``, each factory is imported and failures are recorded as ``error`` (never raised).
    ``manager`` is an npe2 ``PluginManager`` (default: the global one, discovering plugins if
    needed).
    """
    if manager is None:
        from npe2 import PluginManager

        manager = PluginManager.instance()
        if not any(True for _ in manager.iter_manifests()):
            manager.discover()
    menus = {"processor": PROCESSOR_MENU, "storage": STORAGE_MENU, "plan": PLAN_MENU}
    found: list[Contribution] = []
    for manifest in list(manager.iter_manifests()):
        menu_map = manifest.contributions.menus if manifest.contributions else None
        for wanted, menu in menus.items():
            if kind is not None and wanted != kind:
                continue
            for item in (menu_map or {}).get(menu, []):
                command_id = getattr(item, "command", None)
                if command_id is None:
                    continue
                try:
                    command = manager.get_command(command_id)
                except KeyError:
                    found.append(
                        Contribution(
                            command_id,
                            command_id,
                            manifest.name,
                            wanted,
                            "",  # type: ignore[arg-type]
                            error=f"command {command_id!r} is not declared",
                        )
                    )
                    continue
                contribution = Contribution(
                    command.id,
                    command.title,
                    manifest.name,
                    wanted,  # type: ignore[arg-type]
                    command.python_name or "",
                )
                group = (getattr(item, "group", None) or "").split("@")[0]
                contribution.stateful = {"stateful": True, "stateless": False}.get(group)
                if not contribution.python_name:
                    contribution.error = "the command has no python_name"
                elif check:
                    with contextlib.suppress(ContributionError):
                        contribution.settings_callable()
                found.append(contribution)
    return found


def get_contribution(
    contribution_id: str, kind: Kind | None = None, manager: Any = None
) -> Contribution:
    """The contribution with ``contribution_id`` (its command id, or a unique title)."""
    candidates = list_contributions(kind, manager=manager)
    for contribution in candidates:
        if contribution.id == contribution_id:
            return contribution
    by_title = [
        c
        for c in candidates
        if c.title.lower() == contribution_id.lower() or c.id.rsplit(".", 1)[-1] == contribution_id
    ]
    if len(by_title) == 1:
        return by_title[0]
    known = ", ".join(c.id for c in candidates)
    raise KeyError(f"No {kind or 'contribution'} named {contribution_id!r}; available: {known}")


def build_processor(contribution_id: str, **parameters: Any) -> DataProcessor:
    """Build a contributed processor by id with its settings."""
    return get_contribution(contribution_id, "processor").build(**parameters)


def build_plan(contribution_id: str, **arguments: Any) -> Iterable[Any]:
    """The events of a contributed plan by id: its settings plus any data handler and devices it
    takes."""
    return get_contribution(contribution_id, "plan").build(**arguments)


def build_storage(
    contribution_id: str,
    directory: str,
    name: str | None = None,
    summary_metadata: dict[str, Any] | None = None,
    **parameters: Any,
) -> DataStorage:
    """Build a contributed storage backend by id for ``directory``/``name``."""
    return get_contribution(contribution_id, "storage").build(
        directory=directory, name=name, summary_metadata=summary_metadata, **parameters
    )
