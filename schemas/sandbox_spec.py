"""A sandbox's spec, typed: the ``astraforge.RequestedSandbox`` record and the one writer and the
one reader of it.

The spec travels whole in the ``spec`` field of ``sandbox.create`` and of the ``sandbox.requested``
the processor answers it with. ``RequestedSandbox.record()`` is the only code that writes that
field; ``RequestedSandbox.read(payload)`` the only code that reads it. Records written before the
typed spec existed (schema v6 and older) are read too, so an old history still folds: a create
command kept the spec in flat fields with the limits as text (``profile: {"memory_mb": "512"}``),
and a ``sandbox.requested`` in its ``details`` string map (``"profile.memory_mb": "512"``,
``egress_allow`` joined by newlines). Nothing writes those forms any more.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LIMITS: dict[str, type] = {
    "memory_mb": int,
    "cpus": float,
    "pids": int,
    "workspace_mb": int,
    "tmp_mb": int,
    "home_mb": int,
}
"""The fields of ``astraforge.SandboxLimits`` and their Python types (``SecurityProfile``'s overridable ones)."""

IDLE_TIMEOUT_S = 900  # what a v6 sandbox.requested without the key meant
TTL_S = 3600


@dataclass(frozen=True)
class RequestedSandbox:
    """What a sandbox is created with. ``limits`` holds only the profile overrides asked for
    (``SecurityProfile.with_overrides`` takes it as it is); the platform bounds were checked before."""

    image: str
    limits: Mapping[str, int | float] = field(default_factory=dict)
    idle_timeout_s: int = IDLE_TIMEOUT_S
    ttl_s: int = TTL_S
    egress_allow: tuple[str, ...] = ()
    platform_upstreams: tuple[str, ...] = ()  # granted by the platform, never by the tenant
    restore_snapshot: str | None = None

    def record(self) -> dict[str, Any]:
        """The ``astraforge.RequestedSandbox`` record (the value of a ``spec`` field)."""
        unknown = sorted(set(self.limits) - set(LIMITS))
        if unknown:  # only a hand-made v6 record can hold one: the processor dead-letters its create
            raise ValueError(f"not a sandbox limit: {', '.join(unknown)}")
        return {
            "image": self.image,
            "limits": {name: _typed(name, self.limits.get(name)) for name in LIMITS},
            "idle_timeout_s": self.idle_timeout_s,
            "ttl_s": self.ttl_s,
            "egress_allow": list(self.egress_allow),
            "platform_upstreams": list(self.platform_upstreams),
            "restore_snapshot": self.restore_snapshot,
        }

    def create_payload(self) -> dict[str, Any]:
        """A ``sandbox.create`` payload: the spec, and ``image`` beside it (a v6 reader requires it)."""
        return {"image": self.image, "spec": self.record()}

    @classmethod
    def read(cls, payload: Mapping[str, Any]) -> "RequestedSandbox":
        """The spec a ``sandbox.create`` or ``sandbox.requested`` payload carries, of any release."""
        spec = payload.get("spec")
        if spec is not None:
            return cls(
                image=spec["image"],
                limits={k: v for k, v in spec["limits"].items() if v is not None},
                idle_timeout_s=spec["idle_timeout_s"],
                ttl_s=spec["ttl_s"],
                egress_allow=tuple(spec["egress_allow"]),
                platform_upstreams=tuple(spec["platform_upstreams"]),
                restore_snapshot=spec["restore_snapshot"],
            )
        if "state" in payload:  # a lifecycle record: sandbox.requested
            return cls._from_v6_requested(payload)
        return cls._from_v6_create(payload)

    @classmethod
    def _from_v6_create(cls, p: Mapping[str, Any]) -> "RequestedSandbox":
        # cpus/memory_mb/pids were always null and never read: the limits were in ``profile``
        return cls(
            image=p["image"],
            limits=limits_from_text(p.get("profile") or {}),
            idle_timeout_s=p.get("idle_timeout_s", IDLE_TIMEOUT_S),
            ttl_s=p.get("ttl_s", TTL_S),
            egress_allow=tuple(p.get("egress_allow") or ()),
            platform_upstreams=tuple(p.get("platform_upstreams") or ()),
            restore_snapshot=p.get("restore_snapshot"),
        )

    @classmethod
    def _from_v6_requested(cls, p: Mapping[str, Any]) -> "RequestedSandbox":
        details = p.get("details") or {}
        return cls(
            image=p.get("image") or "",
            limits=limits_from_text(
                {k.removeprefix("profile."): v for k, v in details.items() if k.startswith("profile.")}
            ),
            idle_timeout_s=int(details.get("idle_timeout_s", IDLE_TIMEOUT_S)),
            ttl_s=int(details.get("ttl_s", TTL_S)),
            restore_snapshot=details.get("restore_snapshot"),
            egress_allow=_lines(details.get("egress_allow")),
            platform_upstreams=_lines(details.get("platform_upstreams")),
        )


def limits_from_text(overrides: Mapping[str, str]) -> dict[str, int | float | str]:
    """Limits a v6 record kept as text (``str()`` of a number the API had checked) as numbers.
    Text that is no number stays text: ``SecurityProfile.with_overrides`` refuses it, as it did."""
    return {name: _number(text) for name, text in overrides.items()}


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _typed(name: str, value: object) -> int | float | None:
    """``value`` as the limit's Avro type; a value that does not fit is refused, never rounded."""
    if value is None:
        return None
    kind = LIMITS[name]
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or kind(value) != value:
        raise ValueError(f"sandbox limit {name}: {value!r} is not {'an integer' if kind is int else 'a number'}")
    return kind(value)


def _lines(joined: str | None) -> tuple[str, ...]:
    return tuple(line for line in (joined or "").split("\n") if line)
