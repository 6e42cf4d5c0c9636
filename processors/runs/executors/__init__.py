"""Agents a run's driver can run: each turns its work into sandbox commands, never records of its own."""
