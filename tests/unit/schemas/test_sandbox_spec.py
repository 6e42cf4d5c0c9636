"""The sandbox spec travels as one typed record (``astraforge.RequestedSandbox``), written by
``RequestedSandbox.record`` and read by ``RequestedSandbox.read``; records of schema v6, which
carried it as flat fields and a string map, still read as the same spec."""

import io

import pytest
from fastavro import parse_schema, schemaless_writer

from astraforge.sandbox.profile import OVERRIDABLE
from astraforge.schemas import Codec, Envelope, default_codec
from astraforge.schemas.codec import ENVELOPE_FIELDS, MARKER
from astraforge.schemas.registry import schema_fingerprint
from astraforge.schemas.sandbox_spec import LIMITS, RequestedSandbox

CODEC = default_codec()
REFERENCE = Codec(CODEC.registry, compiled=False)  # fastavro all the way
SPEC = RequestedSandbox(
    image="astraforge/sandbox:bookworm",
    limits={"memory_mb": 300, "cpus": 1.5, "workspace_mb": 100},
    idle_timeout_s=60,
    ttl_s=600,
    egress_allow=("pypi.org", "GET files.pythonhosted.org"),
    platform_upstreams=("model-gateway",),
    restore_snapshot="snap-1",
)
V6_CREATE = {
    "image": SPEC.image,
    "profile": {"memory_mb": "300", "cpus": "1.5", "workspace_mb": "100"},
    "cpus": None,
    "memory_mb": None,
    "pids": None,
    "idle_timeout_s": 60,
    "ttl_s": 600,
    "egress_allow": ["pypi.org", "GET files.pythonhosted.org"],
    "restore_snapshot": "snap-1",
    "platform_upstreams": ["model-gateway"],
}
V6_REQUESTED = {
    "state": "requested",
    "reason": None,
    "provider": None,
    "image": SPEC.image,
    "details": {
        "idle_timeout_s": "60",
        "ttl_s": "600",
        "profile.memory_mb": "300",
        "profile.cpus": "1.5",
        "profile.workspace_mb": "100",
        "restore_snapshot": "snap-1",
        "egress_allow": "pypi.org\nGET files.pythonhosted.org",
        "platform_upstreams": "model-gateway",
    },
}


def envelope(type_: str, payload: dict) -> Envelope:
    return Envelope(type=type_, stream_id="sb-1", tenant_id="acme", actor="a", sandbox_id="sb-1", payload=payload)


def written_by_v6(e: Envelope) -> bytes:
    """``e`` as a v6 release wrote it: its schema, its fingerprint."""
    v6 = CODEC.registry.releases[6]
    datum = {name: getattr(e, name) for name in ENVELOPE_FIELDS}
    datum |= {"schema_version": 6, "payload": (CODEC.registry.types[e.type].payload, e.payload)}
    buf = io.BytesIO()
    schemaless_writer(buf, v6, datum)
    return MARKER + schema_fingerprint(v6) + buf.getvalue()


def test_the_limits_are_the_profile_overrides_and_the_avro_record_fields() -> None:
    named: dict = {}
    parse_schema(CODEC.registry.current, named, _force=True)
    avro_fields = [f["name"] for f in named["astraforge.SandboxLimits"]["fields"]]
    assert list(LIMITS) == avro_fields and set(LIMITS) == set(OVERRIDABLE)


@pytest.mark.parametrize("codec", [CODEC, REFERENCE], ids=["compiled", "fastavro"])
def test_the_spec_travels_typed_in_the_create_command(codec: Codec) -> None:
    create = envelope("sandbox.create", SPEC.create_payload())
    decoded = codec.decode(codec.encode(create)).payload
    assert RequestedSandbox.read(decoded) == SPEC
    assert decoded["spec"]["limits"] == dict.fromkeys(LIMITS) | {"memory_mb": 300, "cpus": 1.5, "workspace_mb": 100}
    # nothing in the string-map or flat v6 form: the writer writes the typed record only
    assert decoded["profile"] == {} and decoded["egress_allow"] == [] and decoded["restore_snapshot"] is None


def test_the_fast_path_and_fastavro_write_the_same_bytes() -> None:
    for payload in (SPEC.create_payload(), RequestedSandbox(image="img").create_payload()):
        create = envelope("sandbox.create", payload)
        assert CODEC.encode(create) == REFERENCE.encode(create)


def test_a_v6_create_command_reads_as_the_same_spec() -> None:
    decoded = CODEC.decode(written_by_v6(envelope("sandbox.create", V6_CREATE)))
    assert decoded.schema_version == 6 and decoded.payload["spec"] is None
    assert RequestedSandbox.read(decoded.payload) == SPEC


def test_a_v6_sandbox_requested_reads_as_the_same_spec() -> None:
    decoded = CODEC.decode(written_by_v6(envelope("sandbox.requested", V6_REQUESTED)))
    assert decoded.payload["spec"] is None
    assert RequestedSandbox.read(decoded.payload) == SPEC
    bare = {"state": "requested", "reason": None, "provider": None, "image": None, "details": {}}
    assert RequestedSandbox.read(bare) == RequestedSandbox(image="")  # defaults: 900 s idle, 3600 s TTL


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"memory_mb": 256.5}, "memory_mb"),
        ({"pids": True}, "pids"),
        ({"cpus": float("nan")}, "cpus"),
        ({"memory_mb": "512"}, "memory_mb"),
        ({"uid": 0}, "uid"),
    ],
)
def test_a_limit_that_does_not_fit_the_record_is_refused_not_rounded(limits: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RequestedSandbox(image="img", limits=limits).record()
    assert RequestedSandbox(image="img", limits={"memory_mb": 256.0}).record()["limits"]["memory_mb"] == 256
