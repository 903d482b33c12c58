"""Networks as plain torch modules (random weights, no downloads) for the network benchmark
(`cppconv bench --networks`) and the tests: vision_models, the real architectures at any
resolution; onnx_networks, small networks that run in milliseconds, and the ONNX export."""
