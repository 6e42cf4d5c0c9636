"""A sandbox image whose supervisor waits, at start-up, for the test to let it go.

``python3`` (the command the docker provider starts as pid 1) resolves to a shell script ahead on
PATH that waits for a file in the sandbox's control directory (a host tmpfs only the host and the
supervisor's uid reach), then execs the real python3. So a test can hold the real provider's
create at a known point (container made, supervisor not answering) for as long as it needs, e.g.
to kill -9 a processor in the middle of a provision for certain. The provider's create gives up
after its ``wait_ready`` timeout (20 s): release before that, or the provision fails.
"""

import io
import tarfile

from astraforge.sandbox.profile import CONTROL_MOUNT
from astraforge.sandbox.providers.docker import LABEL

GATED_IMAGE = "astraforge/sandbox-gated:test"
RELEASE = "release"
GATE = f"""#!/bin/sh
# test image only: hold the supervisor until the test drops {RELEASE} into the control directory
while [ ! -e {CONTROL_MOUNT}/{RELEASE} ]; do sleep 0.05; done
exec /usr/bin/python3 "$@"
"""


def build_gated_image(client, base: str) -> str:
    """``base`` plus the gate (COPY only: the build needs no network); cached by the engine."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in (("Dockerfile", f"FROM {base}\nCOPY python3 /usr/local/bin/python3\n", 0o644),
                                 ("python3", GATE, 0o755)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data.encode()))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=GATED_IMAGE, rm=True)
    return GATED_IMAGE


def release(provider, sandbox_id: str) -> None:
    """Let the held supervisor of ``sandbox_id`` start."""
    (provider.control_root / sandbox_id / RELEASE).touch()


def containers_of(provider, sandbox_id: str) -> list[str]:
    """Every container (running or not) labelled with this sandbox, whatever its name."""
    labelled = {"label": f"{LABEL}={sandbox_id}"}
    return [
        c.id for c in provider.client.containers.list(all=True, sparse=True, filters=labelled)
    ]  # no inspect: no 404 race
