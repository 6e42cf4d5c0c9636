"""The run orchestrator: a spec becomes a tested, reviewed patch (``state`` decides, ``driver`` acts,
``orchestrator`` runs them on the processor runtime). Nothing is imported here, so the API can use
``guardrails`` without loading the runtime."""
