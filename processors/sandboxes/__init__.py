"""The sandbox processor: ``state`` (pure decide/evolve), ``effects``, ``warm_pool``, ``reconcile``,
and ``processor`` (the partition loop on the shared runtime)."""

from astraforge.processors.sandboxes.processor import SandboxProcessor

__all__ = ["SandboxProcessor"]
