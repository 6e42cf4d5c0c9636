"""Memory safety of the C fast path (``astraforge._native``) where Python code can run mid-call.

Each case runs in a child process under ``PYTHONMALLOC=debug`` (freed memory is overwritten at
once, so a use after free crashes every time instead of reading stale bytes now and then), and
the C writer must give the bytes the generated Python gives."""

import subprocess
import sys
import textwrap

from astraforge.schemas.compiled import _native

HOSTILE_KEY = textwrap.dedent(
    """
    from astraforge.schemas import Envelope, default_codec
    from astraforge.schemas.compiled import envelope_writer

    registry = default_codec().registry


    def encode(accelerated):
        payload = {"command_id": "c"}

        class DropsTheRecord:  # its __eq__ runs while the nested record's fields are looked up
            def __hash__(self):
                return hash("key")

            def __eq__(self, other):
                payload.pop("artifact", None)  # the payload held the record's last reference
                return False

        payload["artifact"] = {
            DropsTheRecord(): 0, "artifact_id": "a" * 100, "key": "k" * 1000, "sha256": "s" * 5000,
            "size": 12345678901, "content_type": "c" * 300, "name": "n" * 700,
        }
        fixed = {"event_id": "e", "occurred_at": 1}  # the same bytes from both writers
        e = Envelope(type="artifact.stored", stream_id="s", tenant_id="t", actor="a", payload=payload, **fixed)
        out = bytearray()
        envelope_writer(registry.current, accelerated)(e, registry.version, "astraforge.ArtifactStored", out)
        return out.hex()


    print(encode(True) == encode(False))
    """
)


def run_debug(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "dev", "-c", script],
        env={"PYTHONMALLOC": "debug", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_record_whose_last_reference_goes_while_it_is_written_is_written_as_python_does() -> None:
    assert _native is not None
    done = run_debug(HOSTILE_KEY)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
