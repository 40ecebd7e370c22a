"""The opsets each op is read at, against onnx's own operator schemas: an op is never read at an
opset whose definition changed beyond the one its type follows."""

from __future__ import annotations

import onnx
import onnx.defs
import pytest

import oxiquant
from oxiquant._native import REGISTERED_OPS

# Attributes that newer definitions add and the engine handles: each op reads it (or refuses
# the values it does not implement), with why.
HANDLED_NEW_ATTRIBUTES = {
    # Cast-24 / CastLike-25 add `round_mode`, which only applies to casts to float8/float4
    # (refused).
    "Cast": {"round_mode"},
    "CastLike": {"round_mode"},
    # Range-27 adds `stash_type`; its default is the older behaviour, other values are refused.
    "Range": {"stash_type"},
    # SpaceToDepth-28 adds `mode` (DCR, the older behaviour, or CRD): both implemented.
    "SpaceToDepth": {"mode"},
}


# Ops whose type implements definitions newer than its first one at or after opset 23 itself
# (it reads `cx.opset`; its node cases at those opsets check it): the newest such opset.
IMPLEMENTED_THROUGH = {"Attention": 25}


def _signature(schema: onnx.defs.OpSchema) -> tuple:
    ignored = HANDLED_NEW_ATTRIBUTES.get(schema.name, set())
    attrs = tuple(
        sorted(
            (n, a.type, a.required, a.default_value.SerializeToString())
            for n, a in schema.attributes.items()
            if n not in ignored
        )
    )
    ios = tuple((p.name, p.option, p.is_homogeneous, p.min_arity) for p in [*schema.inputs, *schema.outputs])
    return attrs, ios


def _domain(d: str) -> str:
    return "" if d in ("", "ai.onnx") else d


ONNX_OPS = [(op, since, until) for d, op, since, until in REGISTERED_OPS if _domain(d) == ""]


def test_the_loader_reads_the_newest_opset_onnx_defines():
    assert oxiquant.MAX_OPSET <= onnx.defs.onnx_opset_version()
    assert oxiquant.MAX_OPSET >= 23


@pytest.mark.parametrize("op, since, until", ONNX_OPS, ids=[f"{o}-{s}-{u}" for o, s, u in ONNX_OPS])
def test_op_is_read_only_where_its_definition_holds(op, since, until):
    top = min(until, oxiquant.MAX_OPSET)
    # An op defined only after opset 23 (CumProd-26) follows its first definition.
    first = min(top, max(23, since, IMPLEMENTED_THROUGH.get(op, 0)))
    try:
        base = onnx.defs.get_schema(op, first)
    except onnx.defs.SchemaError:
        pytest.fail(f"{op} has no ONNX schema at or below opset {first}")
    # Every definition of the op introduced after the version the engine follows at opset 23
    # (new versions before that are the op's own business: it reads `cx.opset`) must differ
    # only in element types.
    for v in range(first + 1, top + 1):
        s = onnx.defs.get_schema(op, v)
        if s.since_version <= first:
            continue
        assert _signature(s) == _signature(base), (
            f"{op}-{s.since_version} changed its inputs or attributes, but the registry reads {op} "
            f"up to opset {until}: implement the new version or end the entry at {s.since_version - 1}"
        )
