"""The inputs of an ONNX graph, read from the file's protobuf framing without loading its weights.

A model folder's family is decided by what its textual graph takes (`text`, or `input_ids` and
`attention_mask`) before any session exists; parsing a 1–2 GB graph with `onnx.load` for that would
cost seconds and its size in memory, whereas the inputs sit in a few bytes of the graph message.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# onnx.proto field numbers: ModelProto.graph; GraphProto.initializer and .input; TensorProto.name;
# ValueInfoProto.name and .type; TypeProto.tensor_type; Tensor.elem_type and .shape; dim; its value.
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER, _GRAPH_INPUT = 5, 11
_TENSOR_NAME = 8
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_ELEM_TYPE, _TENSOR_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM = 1, 2

# TensorProto.DataType → the type names ONNX Runtime reports.
_ELEM_TYPES = {1: "float", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "double"}


@dataclass(frozen=True)
class GraphInput:
    name: str
    type: str  # as ONNX Runtime names it: "tensor(int32)"
    shape: tuple[int | str | None, ...]  # an int for a fixed axis, the axis name or None otherwise


def _varint(buf: mmap.mmap | bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int | tuple[int, int]]]:
    """(field number, value) of one message: an int for varints, (start, end) for length-delimited."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            yield field, (pos, pos + length)
            pos += length
        elif wire in (1, 5):  # fixed 64 or 32 bits: nothing we read
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} at byte {pos}")
    if pos != end:
        raise ValueError("truncated protobuf message")


def _string(buf: mmap.mmap | bytes, span: tuple[int, int]) -> str:
    return bytes(buf[span[0] : span[1]]).decode("utf-8")


def _input(buf: mmap.mmap | bytes, span: tuple[int, int]) -> GraphInput:
    name, elem_type, shape = "", "unknown", []
    for field, value in _fields(buf, *span):
        if field == _VALUE_NAME and isinstance(value, tuple):
            name = _string(buf, value)
        elif field == _VALUE_TYPE and isinstance(value, tuple):
            for t_field, tensor in _fields(buf, *value):
                if t_field != _TYPE_TENSOR or not isinstance(tensor, tuple):
                    continue
                for x_field, x_value in _fields(buf, *tensor):
                    if x_field == _TENSOR_ELEM_TYPE and isinstance(x_value, int):
                        elem_type = _ELEM_TYPES.get(x_value, f"type{x_value}")
                    elif x_field == _TENSOR_SHAPE and isinstance(x_value, tuple):
                        for d_field, dim in _fields(buf, *x_value):
                            if d_field == _SHAPE_DIM and isinstance(dim, tuple):
                                shape.append(_dim(buf, dim))
    return GraphInput(name, f"tensor({elem_type})", tuple(shape))


def _dim(buf: mmap.mmap | bytes, span: tuple[int, int]) -> int | str | None:
    for field, value in _fields(buf, *span):
        if field == _DIM_VALUE and isinstance(value, int):
            return value
        if field == _DIM_PARAM and isinstance(value, tuple):
            return _string(buf, value)
    return None


def _tensor_name(buf: mmap.mmap | bytes, span: tuple[int, int]) -> str | None:
    for field, value in _fields(buf, *span):
        if field == _TENSOR_NAME and isinstance(value, tuple):
            return _string(buf, value)
    return None


def graph_inputs(path: Path) -> list[GraphInput]:
    """The inputs a caller feeds, in graph order (weights listed as inputs by old exporters left out).

    Raises ValueError when the file is not an ONNX model.
    """
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            raise ValueError(f"{path} is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graphs = [v for field, v in _fields(buf, 0, len(buf)) if field == _MODEL_GRAPH]
            if len(graphs) != 1 or not isinstance(graphs[0], tuple):
                raise ValueError(f"{path} holds no ONNX graph")
            inputs, weights = [], set()
            for field, value in _fields(buf, *graphs[0]):
                if field == _GRAPH_INPUT and isinstance(value, tuple):
                    inputs.append(_input(buf, value))
                elif field == _GRAPH_INITIALIZER and isinstance(value, tuple):
                    weights.add(_tensor_name(buf, value))
    return [i for i in inputs if i.name not in weights]
