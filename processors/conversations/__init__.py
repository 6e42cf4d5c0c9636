"""Hosted DeepAgent conversations: state (pure), the recorded sandbox backend, the agent runner, the processor."""
