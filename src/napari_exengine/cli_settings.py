"""``exengine acquire``'s settings, from its options and its files, turned into an
:class:`~napari_exengine.acquisition_setup.AcquisitionRequest`.

A settings file is YAML or JSON: either this command's own settings (the options' names, see
:data:`SETTINGS`) or a useq-schema ``MDASequence`` (as pymmcore-widgets writes them), which gives
the multi-D settings as they are. Options given on the command line override the file's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from exengine.events import MultiDSettings
from exengine.events.plan_checks import finite_number

from .acquisition_setup import AcquisitionRequest, ContributedPlan, ProcessorChoice
from .contributions import DEFAULT_PLAN, DEFAULT_STORAGE
from .device_sets import DeviceSet, load_device_set

__all__ = ["MULTI_D_SETTINGS", "SETTINGS", "UsageError", "load_settings_file", "request_from"]


class UsageError(Exception):
    """Bad arguments: reported in one line with exit status 2."""


#: Settings of ``exengine acquire`` (options and acquisition-file keys).
SETTINGS = (
    "time",
    "interval",
    "until_stopped",
    "z",
    "channels",
    "exposures",
    "exposure",
    "positions",
    "labels",
    "order",
    "sequence",
    "camera",
    "storage",
    "out",
    "name",
    "backend",
    "mm_config",
    "processor",
    "processing",
    "plan",
    "plan_settings",
)
#: The settings that describe a multi-D plan (refused beside another ``--plan``).
MULTI_D_SETTINGS = (
    "time",
    "interval",
    "until_stopped",
    "z",
    "channels",
    "exposures",
    "positions",
    "labels",
    "order",
    "sequence",
)
_USEQ_FIELDS = {"time_plan", "z_plan", "stage_positions", "axis_order", "grid_plan"}


def request_from(args: argparse.Namespace) -> AcquisitionRequest:
    """The acquisition ``exengine acquire`` was asked for: the file's settings, then the options;
    the devices of ``--backend`` loaded. Raises :class:`UsageError` naming a bad value."""
    if getattr(args, "resume", None) is not None:
        return _resume_request(args)
    settings, sequence = _settings(args)
    devices = _devices(settings)
    plan = _plan(settings, sequence, devices)
    out = _text(settings, "out", os.getcwd(), "a folder or a store URL")
    name = _text(settings, "name", "acquisition", "text")
    storage = _text(settings, "storage", DEFAULT_STORAGE, "a storage id (see 'exengine list')")
    processing = _text(
        settings, "processing", "local", "'local', 'cluster:N' or a scheduler address"
    )
    exposure = settings.get("exposure")
    return AcquisitionRequest(
        plan=plan,
        devices=devices,
        destination=out if "://" in out else os.path.abspath(out),
        name=name,
        storage=storage,
        processors=_processors(settings.get("processor")),
        processing=processing,
        exposure_ms=None if exposure is None else _number(exposure, "exposure"),
        software="exengine acquire",
    )


def _resume_request(args: argparse.Namespace) -> AcquisitionRequest:
    """``--resume DATASET``: the dataset's own plan and devices; only the backend may be given."""
    from .acquisition_setup import SetupError
    from .resume_setup import open_resumable, resume_request

    given = [
        "the KEY=VALUE settings" if key == "plan_settings" else f"--{key.replace('_', '-')}"
        for key in (*SETTINGS, "file")
        if key not in ("backend", "mm_config") and getattr(args, key, None) not in (None, False, [])
    ]
    if given:
        raise UsageError(
            f"--resume continues the dataset's own plan, devices and storage: drop "
            f"{', '.join(given)}"
        )
    try:
        return resume_request(
            open_resumable(args.resume),
            backend=args.backend,
            mm_config=args.mm_config,
            software="exengine acquire",
        )
    except SetupError as e:
        raise UsageError(str(e)) from None


#: The largest settings file read (bytes), and the most values it may hold once YAML aliases are
#: expanded: a few hundred bytes of nested aliases otherwise stand for gigabytes of values.
MAX_SETTINGS_BYTES = 1024**2
MAX_SETTINGS_VALUES = 100_000


def load_settings_file(path: str) -> dict[str, Any]:
    """The mapping in a YAML or JSON settings file (at most ``MAX_SETTINGS_BYTES``, holding at
    most ``MAX_SETTINGS_VALUES`` values with YAML aliases expanded)."""
    try:
        with open(path) as f:
            text = f.read(MAX_SETTINGS_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not text"
        raise UsageError(f"Cannot read {path!r}: {reason}") from None
    if len(text) > MAX_SETTINGS_BYTES:
        raise UsageError(
            f"{path!r} is larger than {MAX_SETTINGS_BYTES // 1024**2} MB; a settings file is small"
        )
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(
                f"{path!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
            ) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or e
            raise UsageError(f"{path!r} is not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path!r} must hold a mapping of settings")
    if _expanded_size(data, {}) > MAX_SETTINGS_VALUES:
        raise UsageError(
            f"{path!r} holds more than {MAX_SETTINGS_VALUES:,} values once its aliases are "
            "expanded; a settings file is small"
        )
    return data


def _expanded_size(value: Any, sizes: dict[int, int]) -> int:
    """How many values ``value`` holds with shared (aliased) parts counted each time they appear;
    ``sizes`` remembers shared parts, so that this takes time for the distinct parts only."""
    if not isinstance(value, (dict, list)):
        return 1
    known = sizes.get(id(value))
    if known is None:
        items = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
        known = sizes[id(value)] = 1 + sum(_expanded_size(item, sizes) for item in items)
    return known


def _is_sequence(data: Mapping[str, Any]) -> bool:
    """True for a useq-schema ``MDASequence``'s fields (not this command's settings)."""
    channels = data.get("channels")
    listed = isinstance(channels, list) and bool(channels) and isinstance(channels[0], dict)
    return bool(_USEQ_FIELDS & set(data)) or listed


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], MultiDSettings | None]:
    """The settings: a file's (this command's, or a useq-schema sequence's), then the options."""
    settings: dict[str, Any] = {}
    sequence = None
    if args.file:
        data = load_settings_file(args.file)
        if _is_sequence(data):
            try:
                sequence = MultiDSettings.from_sequence(data)
            except ValueError as e:
                raise UsageError(f"{args.file!r}: {e}") from None
        else:
            unknown = sorted(set(data) - set(SETTINGS))
            if unknown:
                raise UsageError(
                    f"{args.file!r}: unknown setting {', '.join(map(repr, unknown))}; "
                    f"valid: {', '.join(SETTINGS)}"
                )
            settings = data
    for key in SETTINGS:
        value = getattr(args, key, None)
        if value is not None and value is not False and value != []:
            settings[key] = value
    if sequence is not None:
        given = [k for k in MULTI_D_SETTINGS if settings.get(k) is not None]
        if given:
            raise UsageError(
                f"{args.file!r} is a useq-schema sequence, which sets the multi-D settings; "
                f"{', '.join(given)} cannot be given beside it (edit the file instead)"
            )
    return settings, sequence


def _devices(settings: Mapping[str, Any]) -> DeviceSet:
    backend = settings.get("backend", "simulated")
    mm_config = settings.get("mm_config")
    if mm_config is not None and not (isinstance(mm_config, str) and mm_config.strip()):
        raise UsageError(
            f"--mm-config needs the path of a Micro-Manager configuration file, got {mm_config!r}"
        )
    cameras = settings.get("camera")
    names = None if cameras is None else [str(c) for c in _names(cameras, "camera")]
    try:
        return load_device_set(backend, mm_config, cameras=names)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _plan(
    settings: Mapping[str, Any], sequence: MultiDSettings | None, devices: DeviceSet
) -> MultiDSettings | ContributedPlan:
    plan_id = settings.get("plan") or DEFAULT_PLAN
    if not isinstance(plan_id, str):
        raise UsageError(f"plan must be a plan id (see 'exengine list'), got {plan_id!r}")
    if plan_id == DEFAULT_PLAN and not settings.get("plan_settings"):
        if sequence is not None:
            return sequence
        try:
            return MultiDSettings.from_event_arguments(**_multi_d_arguments(settings, devices))
        except ValueError as e:
            raise UsageError(str(e)) from None
    given = [k for k in MULTI_D_SETTINGS if settings.get(k) is not None and k != "order"]
    if given or sequence is not None:
        belongs = ", ".join(given) if given else "a useq-schema sequence file"
        raise UsageError(
            f"--plan {plan_id} takes its own settings (key=value); {belongs} belong to the "
            "multi-D plan"
        )
    return ContributedPlan(plan_id, _key_values(settings.get("plan_settings"), "plan settings"))


def _multi_d_arguments(settings: Mapping[str, Any], devices: DeviceSet) -> dict[str, Any]:
    """ExEngine's ``multi_d_acquisition_events`` arguments for the multi-D ``settings``."""
    kwargs: dict[str, Any] = {"order": settings.get("order", "tpcz")}
    until_stopped = settings.get("until_stopped")
    if until_stopped is not None and not isinstance(until_stopped, bool):
        raise UsageError(f"until_stopped must be true or false, got {until_stopped!r}")
    if until_stopped:
        if settings.get("time") is not None:
            raise UsageError(
                "Give either a number of time points (--time) or --until-stopped, not both"
            )
        kwargs["num_time_points"] = math.inf
    elif settings.get("time") is not None:
        kwargs["num_time_points"] = _whole(settings["time"], "time")
    interval = settings.get("interval")
    if interval is not None:
        kwargs["time_interval_s"] = (
            [_number(v, "interval") for v in interval]
            if isinstance(interval, list)
            else _number(interval, "interval")
        )
    if settings.get("z") is not None:
        kwargs["z_start"], kwargs["z_end"], kwargs["z_step"] = _z_range(settings["z"])
    if settings.get("channels") is not None:
        kwargs["channels"] = _names(settings["channels"], "channels")
        kwargs["channel_group"] = devices.channel
    exposures = settings.get("exposures")
    if exposures is not None:
        kwargs["channel_exposures_ms"] = [
            _number(e, "exposures") for e in _names(exposures, "exposures")
        ]
    positions = settings.get("positions")
    if positions is not None:
        rows = _positions(positions)
        kwargs["xyz_positions" if len(rows[0]) == 3 else "xy_positions"] = rows
    if settings.get("labels") is not None:
        kwargs["position_labels"] = _names(settings["labels"], "labels")
    if settings.get("sequence"):
        kwargs["sequence"] = settings["sequence"]
    return kwargs


def _z_range(z: Any) -> tuple[float, float, float]:
    """``START:STOP:STEP``, or a mapping of start, stop and step (µm)."""
    if isinstance(z, str):
        parts = z.split(":")
        if len(parts) != 3:
            raise UsageError(f"--z takes START:STOP:STEP (e.g. 0:10:2), got {z!r}")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise UsageError(f"--z takes numbers START:STOP:STEP, got {z!r}") from None
        return start, stop, step
    if isinstance(z, dict):
        missing = [k for k in ("start", "stop", "step") if k not in z]
        if missing or set(z) - {"start", "stop", "step"}:
            lacking = f"; missing {', '.join(missing)}" if missing else ""
            raise UsageError(f"z takes start, stop and step (µm), got {z!r}{lacking}")
        start, stop, step = (_number(z[k], f"z {k}") for k in ("start", "stop", "step"))
        return start, stop, step
    raise UsageError(f"z takes START:STOP:STEP or a mapping of start, stop, step; got {z!r}")


def _positions(value: Any) -> list[list[float]]:
    """``'X,Y;X,Y'`` or ``'X,Y,Z;X,Y,Z'`` (µm), or a list of such lists."""
    if isinstance(value, str):
        rows = [_floats(p, "--positions") for p in value.split(";") if p.strip()]
    else:
        rows = [
            [_number(v, "positions") for v in _names(p, "positions")]
            for p in _names(value, "positions")
        ]
    if not rows or len({len(p) for p in rows}) != 1 or len(rows[0]) not in (2, 3):
        raise UsageError(f"--positions takes 'X,Y;X,Y' or 'X,Y,Z;X,Y,Z', got {value!r}")
    return rows


def _processors(specs: Any) -> tuple[ProcessorChoice, ...]:
    """``ID`` or ``ID:key=value,...`` words, or mappings with ``id`` and ``params``."""
    choices = []
    if specs is not None and not isinstance(specs, (str, dict, list)):
        raise UsageError(
            f"processor takes 'ID:key=value,...', a mapping with 'id' and 'params', or a list of "
            f"them; got {specs!r}"
        )
    for spec in [specs] if isinstance(specs, (str, dict)) else specs or []:
        if isinstance(spec, str):
            identifier, _, rest = spec.partition(":")
            words = [item for item in rest.split(",") if item]
            choices.append(ProcessorChoice(identifier, _key_values(words, "--processor settings")))
        elif isinstance(spec, dict) and "id" in spec:
            params = spec.get("params", {})
            if not isinstance(params, dict):
                raise UsageError(f"processor params must be a mapping, got {params!r}")
            choices.append(ProcessorChoice(str(spec["id"]), params))
        else:
            raise UsageError(
                "processor takes 'ID:key=value,...' or a mapping with 'id' and 'params', got "
                f"{spec!r}"
            )
    return tuple(choices)


def _key_values(given: Any, what: str) -> dict[str, Any]:
    """``key=value`` words (values parsed as JSON when possible), or a file's mapping."""
    if not given:
        return {}
    if isinstance(given, dict):
        return dict(given)
    if not isinstance(given, list):
        raise UsageError(f"{what} are key=value words or a mapping, got {given!r}")
    parsed: dict[str, Any] = {}
    for item in given:
        key, eq, value = str(item).partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"{what} are key=value, got {item!r}")
        if key in parsed:
            raise UsageError(f"{what}: {key} is given twice ({item!r} again); give it once")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def _text(settings: Mapping[str, Any], key: str, default: str, what: str) -> str:
    """The setting ``key``: non-empty text (``default`` when not given)."""
    value = settings.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{key} must be {what}, got {value!r}")
    return value


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated numbers, got {text!r}") from None


def _whole(value: Any, key: str) -> int:
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise UsageError(f"{key} must be a whole number of at least 1, got {value!r}")
    return number


def _number(value: Any, key: str) -> float:
    try:
        return finite_number(value, key)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _names(value: Any, key: str) -> list[Any]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise UsageError(f"{key} takes a comma-separated list, got {value!r}")
    return [item.strip() if isinstance(item, str) else item for item in items]
