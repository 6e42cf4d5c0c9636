"""Stream processors: commands in, provider calls, events out (sandbox lifecycle, runs, reaper, pool)."""
