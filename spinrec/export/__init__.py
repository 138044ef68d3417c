"""From a checkpoint to what the server loads: the ONNX export and its checks (:mod:`.onnx_export`), INT8
quantization and its accuracy gate (:mod:`.quantize`), the model repository builder (:mod:`.repository`)."""
