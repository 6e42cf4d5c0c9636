"""Alerts: Sentry/GlitchTip webhook intake records -> deduplicated, rate-limited remediation runs."""
