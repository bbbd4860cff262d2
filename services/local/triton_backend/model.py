"""Generic Triton python-backend model: runs one ONNX file with ONNX Runtime on the CPU, once
per dynamic batch Triton hands over.

`services/local/triton.py` copies this file into every version folder of the CPU repository it
derives from model_repository/; the model's config.pbtxt names the ONNX file and the thread
count (parameters onnx_model_path and onnx_intra_op_threads). It runs inside Triton's
`triton_python_backend_stub` with the Triton environment's packages (numpy, onnxruntime), not
the project's, so it imports nothing from this repository."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

PATH_PARAMETER = "onnx_model_path"
THREADS_PARAMETER = "onnx_intra_op_threads"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config["parameters"]
        path = parameters[PATH_PARAMETER]["string_value"].replace("{version}", args["model_version"])
        if not Path(path).is_file():
            raise pb_utils.TritonModelException(f"ONNX file {path} not found: run the export first")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters[THREADS_PARAMETER]["string_value"])
        options.inter_op_num_threads = 1
        # Idle ORT threads spin by default, stealing the cores clients and other models need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.batching = config.get("max_batch_size", 0) > 0
        self.inputs = [(i["name"], pb_utils.triton_string_to_numpy(i["data_type"])) for i in config["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]
        # Triton hands over requests of different shapes only for inputs marked
        # allow_ragged_batch; those are zero-padded to one shape. Padding would change outputs
        # with a variable non-batch dim (per-token outputs), so such models group by shape.
        self.pad = all(-1 not in o["dims"] for o in config["output"])

    def execute(self, requests):
        try:
            arrays = [
                {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name, _ in self.inputs}
                for request in requests
            ]
            if not self.batching:
                groups = [[index] for index in range(len(requests))]
            elif self.pad:
                groups = [list(range(len(requests)))]
            else:
                by_shape = {}
                for index, request_arrays in enumerate(arrays):
                    key = tuple(a.shape[1:] for a in request_arrays.values())
                    by_shape.setdefault(key, []).append(index)
                groups = list(by_shape.values())
            responses = [None] * len(requests)
            for group in groups:
                try:
                    results = self._run([arrays[i] for i in group])
                except Exception:
                    if len(group) == 1:
                        raise
                    # A malformed request must fail alone, not the requests it was merged with.
                    results = [self._run_alone(arrays[i]) for i in group]
                for index, result in zip(group, results):
                    failed = isinstance(result, pb_utils.InferenceResponse)
                    responses[index] = result if failed else self._response(result)
            return responses
        except Exception as error:  # an exception here would take the stub down with the model
            return [_error_response(error) for _ in requests]

    def _run_alone(self, request):
        try:
            return self._run([request])[0]
        except Exception as error:
            return _error_response(error)

    def _response(self, outputs):
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, outputs[name]) for name, _ in self.outputs]
        )

    def _run(self, requests):
        """Runs ONNX Runtime once on all `requests` (dicts of input arrays), split back per request."""
        if not self.batching:
            results = self.session.run([name for name, _ in self.outputs], requests[0])
            return [{name: np.ascontiguousarray(r, dtype=dtype) for (name, dtype), r in zip(self.outputs, results)}]
        feed = {name: _pad_and_concatenate([request[name] for request in requests]) for name, _ in self.inputs}
        results = self.session.run([name for name, _ in self.outputs], feed)
        sizes = np.cumsum([next(iter(request.values())).shape[0] for request in requests])[:-1]
        split = [np.split(result, sizes, axis=0) for result in results]
        return [
            {name: np.ascontiguousarray(split[k][i], dtype=dtype) for k, (name, dtype) in enumerate(self.outputs)}
            for i in range(len(requests))
        ]

    def finalize(self):
        self.session = None


def _error_response(error):
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(f"{type(error).__name__}: {error}")
    )


def _pad_and_concatenate(parts):
    """One batch from per-request arrays: non-batch dims zero-padded to the largest among them.

    Token ids 0 under attention mask 0 leave a mean-pooled embedding as it was, which is what lets
    requests from different length buckets share one run; fixed-size inputs are left untouched.
    """
    target = tuple(max(sizes) for sizes in zip(*(part.shape[1:] for part in parts)))
    padded = [
        np.pad(part, [(0, 0)] + [(0, t - s) for t, s in zip(target, part.shape[1:])])
        if part.shape[1:] != target else part
        for part in parts
    ]
    return np.concatenate(padded, axis=0)
