"""The trained weights as an ONNX graph, built node by node: its bytes depend on the weights alone.

``torch.onnx.export`` would do, but it stamps the exporter's version into the file and its
output changes between torch releases; a validator on another torch would derive another model
hash. Writing the five nodes with ``onnx.helper`` (fixed producer, opset 13, IR version 8) gives
the same bytes everywhere for the same weights::

    x[1, F] ── MatMul(w1) ── Add(b1) ── Relu ── MatMul(w2) ── Add(b2) ──> scores[1, C]
"""

from __future__ import annotations

from agora.zk.dataset import Weights

__all__ = ["OPSET", "onnx_bytes"]

OPSET = 13
IR_VERSION = 8


def onnx_bytes(weights: Weights, name: str) -> bytes:
    """The serialized ONNX model of ``weights`` (batch of one row), checked by onnx's checker."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width, classes = weights.w1.shape[0], weights.w2.shape[1]
    initializers = [numpy_helper.from_array(array, key) for key, array in weights.arrays().items()]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["s0"]),
        helper.make_node("Add", ["s0", "b2"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, classes])],
        initializers,
    )
    model = helper.make_model(
        graph, producer_name="agora.zk", opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString(deterministic=True))
