"""FastAPI app: REST + SSE over the projections; writes only by appending records."""
