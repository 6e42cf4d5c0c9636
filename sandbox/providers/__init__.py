"""Sandbox providers: docker (docker SDK) and bwrap (bubblewrap, daemonless)."""
