"""Sandbox providers (docker, bwrap) applying one security profile, and the in-sandbox supervisor."""
