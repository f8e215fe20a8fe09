"""A loopback stand-in for ``tensorflow_model_server``, for tests and for trying the clients.

TF Serving itself cannot be installed here, so :class:`LoopbackServer` answers its REST API
(``tensorflow_serving/g3doc/api_rest.md``; paths, JSON forms and error mapping as in
``model_servers/http_rest_api_handler.cc`` and ``http_rest_api_util.cc``) and, when the
``serving`` extra is installed, its gRPC ``PredictionService`` (Predict, GetModelMetadata) and
``ModelService`` (GetModelStatus), from the SavedModels a ``models.config`` names:

``GET  /v1/models/NAME[/versions/N|/labels/L]``            ``{"model_version_status": [...]}``
``GET  /v1/models/NAME[/versions/N|/labels/L]/metadata``   ``{"model_spec", "metadata":
                                                          {"signature_def": {...}}}``
``POST /v1/models/NAME[/versions/N|/labels/L]:predict``    ``{"signature_name", "inputs"}`` →
                                                          ``{"outputs"}``; ``"instances"`` →
                                                          ``{"predictions"}``

Errors are ``{"error": "..."}`` with TF Serving's HTTP status for the error's code
(INVALID_ARGUMENT and FAILED_PRECONDITION 400, NOT_FOUND 404, UNIMPLEMENTED 501, INTERNAL 500);
messages follow TF Serving's where known ("Servable not found for request: Latest(NAME)").

Each servable is ``BASE/NAME/VERSION/`` loaded with ``tf.saved_model.load`` and called through
its signature functions: plain TensorFlow, nothing from this project in the request path (the
SavedModel must stand alone, as it does in TF Serving). Signature defs for metadata are read
from ``saved_model.pb`` (the ``serve`` meta graph) and written as TF Serving's JSON. Versions
follow the config's ``model_version_policy`` over the numbered folders present at start-up
(no polling); a configured model with no version on disk is listed in ``missing`` and answers
NOT_FOUND, as a model TF Serving has not loaded.

Not TF Serving: one process, no batching, no config reload, no ``classify``/``regress``
(UNIMPLEMENTED), no ``b64`` binary values. The servers bind 127.0.0.1; port 0 picks a free one::

    with LoopbackServer("serving/models.config", mounts={"/models": "exports"}) as server:
        RestClient(server.rest_url, model="ra_vnet").predict_file("in.nii.gz", "out.nii.gz")
"""
from __future__ import annotations

import json
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from keras_liver.serving.config import ModelConfig, find_versions, read_models_config

DEFAULT_SIGNATURE = "serving_default"
#: TF Serving's error code → HTTP status (``ToHTTPStatusCode`` in ``http_server.cc``).
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
               "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "ABORTED": 409, "PERMISSION_DENIED": 403,
               "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501,
               "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "INTERNAL": 500, "UNKNOWN": 500}

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
_SIGNATURE_KW = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


class ServingStatus(Exception):
    """A failed request: a TF Serving error code name and its message."""

    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


@dataclass
class Servable:
    """One loaded version of a model."""

    name: str
    version: int
    path: str
    loaded: Any
    signature_defs: Any                 # the meta graph's map<string, SignatureDef>

    def signature(self, name: str | None):
        name = name or DEFAULT_SIGNATURE
        if name not in self.signature_defs or name not in self.loaded.signatures:
            raise ServingStatus("INVALID_ARGUMENT",
                                f'Serving signature name: "{name}" not found in signature def')
        return name, self.signature_defs[name], self.loaded.signatures[name]

    def signature_def_json(self) -> dict:
        """The SignatureDefMap as TF Serving's metadata JSON writes it."""
        return {"signature_def": {k: json_format.MessageToDict(v, **_SIGNATURE_KW)
                                  for k, v in sorted(self.signature_defs.items())}}

    def predict(self, signature: str | None, inputs: Mapping[str, np.ndarray]
                ) -> tuple[str, dict[str, np.ndarray]]:
        """Run one signature on NumPy inputs (already of the signature's dtypes)."""
        name, sigdef, fn = self.signature(signature)
        expected = sorted(sigdef.inputs)
        unknown = sorted(set(inputs) - set(expected))
        if unknown:
            raise ServingStatus("INVALID_ARGUMENT",
                                f"input tensor alias not found in signature: {unknown[0]}. "
                                f"Inputs expected to be in the set {{{','.join(expected)}}}.")
        missing = sorted(set(expected) - set(inputs))
        if missing:
            raise ServingStatus("INVALID_ARGUMENT",
                                f"Request inputs do not match required inputs for model "
                                f"`{self.name}`. Missing inputs: {{{','.join(missing)}}}.")
        try:
            outputs = fn(**{k: tf.convert_to_tensor(v) for k, v in inputs.items()})
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as err:
            raise ServingStatus("INVALID_ARGUMENT", err.message) from None
        except (TypeError, ValueError) as err:  # shape or dtype not accepted by the signature
            raise ServingStatus("INVALID_ARGUMENT", " ".join(str(err).split())[:2000]) from None
        except tf.errors.OpError as err:
            raise ServingStatus("INTERNAL", err.message) from None
        return name, {k: v.numpy() for k, v in outputs.items()}


def _signature_defs(saved_model_dir: str):
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags:
            return mg.signature_def
    raise ValueError(f"{saved_model_dir}: no meta graph tagged 'serve' (TF Serving loads that one)")


@dataclass
class ServedModel:
    config: ModelConfig
    base_path: str                       # on this machine, after mounts
    versions: dict[int, Servable] = field(default_factory=dict)


class ModelRegistry:
    """The models of a ``models.config`` (a path or :class:`ModelConfig` list), loaded.

    ``mounts`` maps a path prefix of the config's ``base_path`` to a local folder, as
    ``docker run -v LOCAL:/models`` does: ``{"/models": "exports"}``.
    """

    def __init__(self, config, mounts: Mapping[str, str] | None = None):
        self.config_path = config if isinstance(config, (str, os.PathLike)) else None
        configs = read_models_config(config) if self.config_path else list(config)
        self.mounts = {k.rstrip("/") or "/": os.path.abspath(v) for k, v in (mounts or {}).items()}
        self.models: dict[str, ServedModel] = {}
        self.missing: list[str] = []
        for cfg in configs:
            if cfg.platform != "tensorflow":
                raise ValueError(f"model {cfg.name!r}: platform {cfg.platform!r}; the loopback "
                                 "server loads tensorflow SavedModels only")
            local = self.local_path(cfg.base_path)
            served = ServedModel(cfg, local)
            for v in cfg.select_versions(find_versions(local)):
                path = os.path.join(local, str(v))
                served.versions[v] = Servable(cfg.name, v, path, tf.saved_model.load(path),
                                              _signature_defs(path))
            lacking = sorted(set(cfg.versions) - set(served.versions))
            if cfg.policy == "specific" and lacking:
                self.missing.append(f"{cfg.name}: version(s) {lacking} not found in {local}")
            elif not served.versions:
                self.missing.append(f"{cfg.name}: no version found in {local}")
            self.models[cfg.name] = served

    def local_path(self, base_path: str) -> str:
        for prefix in sorted(self.mounts, key=len, reverse=True):
            if base_path == prefix or base_path.startswith(prefix.rstrip("/") + "/"):
                rest = base_path[len(prefix):].lstrip("/")
                return os.path.join(self.mounts[prefix], rest)
        if self.config_path and not os.path.isabs(base_path):
            return os.path.join(os.path.dirname(os.path.abspath(self.config_path)), base_path)
        return base_path

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names (TF Serving's ``ServerCore::GetServableHandle``)."""
        if version is not None and label is not None:
            raise ServingStatus("INVALID_ARGUMENT", f"Both model version ({version}) and model "
                                f"version label ({label}) cannot be supplied.")
        served = self.models.get(name)
        if label is not None:
            if served is None or label not in served.config.labels:
                raise ServingStatus("INVALID_ARGUMENT",
                                    f"Unrecognized servable version label: {label}")
            version = served.config.labels[label]
        request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
        if served is None or not served.versions or (version is not None
                                                     and version not in served.versions):
            raise ServingStatus("NOT_FOUND", f"Servable not found for request: {request}")
        return served.versions[version if version is not None else max(served.versions)]

    def status_json(self, name: str, version: int | None = None, label: str | None = None) -> dict:
        if not name:
            raise ServingStatus("INVALID_ARGUMENT", "Missing model name in request.")
        if version is not None or label is not None:
            versions = [self.resolve(name, version, label).version]
        else:
            self.resolve(name)
            versions = sorted(self.models[name].versions, reverse=True)
        return {"model_version_status": [
            {"version": str(v), "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}} for v in versions]}

    def metadata_json(self, name: str, version: int | None = None, label: str | None = None) -> dict:
        if not name:
            raise ServingStatus("INVALID_ARGUMENT", "Missing model name in request.")
        servable = self.resolve(name, version, label)
        return {"model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": servable.signature_def_json()}}


# --------------------------------------------------------------------------- JSON tensors

def _np_dtype(tensor_info) -> np.dtype:
    return tf.dtypes.as_dtype(tensor_info.dtype).as_numpy_dtype


def _json_tensor(value, name: str, tensor_info) -> np.ndarray:
    dtype = _np_dtype(tensor_info)
    if isinstance(value, dict) and "b64" in value:
        raise ServingStatus("UNIMPLEMENTED", f"input {name!r}: b64 values are not supported here")
    try:
        arr = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as err:
        raise ServingStatus("INVALID_ARGUMENT",
                            f"Failed to process element: 0 key: {name} of 'inputs' field: {err}"
                            f" (expected {tf.dtypes.as_dtype(tensor_info.dtype).name} values in "
                            "a rectangular nested list)") from None
    return arr


def parse_predict_body(body: bytes, servable: Servable) -> tuple[str | None, dict, str]:
    """``(signature name, {input: array}, "columnar"|"row")`` of a REST predict body."""
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ServingStatus("INVALID_ARGUMENT", f"JSON Parse error: {err}") from None
    if not isinstance(request, dict):
        raise ServingStatus("INVALID_ARGUMENT", "JSON Value: is not an object")
    signature = request.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise ServingStatus("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
    _, sigdef, _ = servable.signature(signature)
    infos = dict(sigdef.inputs)
    if ("inputs" in request) == ("instances" in request):
        raise ServingStatus("INVALID_ARGUMENT",
                            "Missing 'inputs' or 'instances' key" if "inputs" not in request else
                            "Not both 'instances' and 'inputs' can be specified in the request")
    if "inputs" in request:
        value = request["inputs"]
        if isinstance(value, dict) and not (len(value) == 1 and "b64" in value):
            arrays = {}
            for k, v in value.items():
                if k not in infos:
                    raise ServingStatus("INVALID_ARGUMENT",
                                        f"input tensor alias not found in signature: {k}. Inputs "
                                        f"expected to be in the set {{{','.join(sorted(infos))}}}.")
                arrays[k] = _json_tensor(v, k, infos[k])
            return signature, arrays, "columnar"
        if len(infos) != 1:
            raise ServingStatus("INVALID_ARGUMENT",
                                f"'inputs' holds one tensor but the signature takes "
                                f"{len(infos)} inputs {sorted(infos)}; give an object by name")
        (k, info), = infos.items()
        return signature, {k: _json_tensor(value, k, info)}, "columnar"
    rows = request["instances"]
    if not isinstance(rows, list) or not rows:
        raise ServingStatus("INVALID_ARGUMENT", "'instances' must be a non-empty list")
    named = isinstance(rows[0], dict) and not (len(rows[0]) == 1 and "b64" in rows[0])
    if not named:
        if len(infos) != 1:
            raise ServingStatus("INVALID_ARGUMENT",
                                f"instances must be objects naming the inputs {sorted(infos)}")
        (k, info), = infos.items()
        return signature, {k: _json_tensor(rows, k, info)}, "row"
    columns: dict[str, list] = {k: [] for k in infos}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) != set(infos):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ServingStatus("INVALID_ARGUMENT", f"instance {i}: expected an object with the "
                                f"inputs {sorted(infos)}, received {got}")
        for k in infos:
            columns[k].append(row[k])
    return signature, {k: _json_tensor(v, k, infos[k]) for k, v in columns.items()}, "row"


def predict_json(outputs: Mapping[str, np.ndarray], form: str) -> dict:
    """TF Serving's answer for ``outputs`` (``MakeJsonFromTensors``): columnar → ``outputs``
    (the bare tensor for one output), row → ``predictions`` (one item per batch row)."""
    if form == "columnar":
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ServingStatus("INVALID_ARGUMENT",
                            f"Tensors of a row ('instances') answer need one batch size; the "
                            f"outputs have 0-th dimensions {sizes}. Use the 'inputs' form.")
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    n = next(iter(sizes.values()))
    return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]}


# --------------------------------------------------------------------------- REST server

class _RestHandler(BaseHTTPRequestHandler):
    server_version = "keras-liver-loopback-tfserving"
    protocol_version = "HTTP/1.1"
    registry: ModelRegistry                      # set on the subclass made per server

    def log_message(self, format, *args):  # quiet: tests read the JSON, not the log
        pass

    def _reply(self, status: int, payload: dict):
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _spec(self, m):
        name = urllib.parse.unquote(m.group(1)) if m.group(1) else ""
        version = int(m.group(2)) if m.group(2) else None
        label = urllib.parse.unquote(m.group(3)) if m.group(3) else None
        return name, version, label

    def _handle(self, method: str):
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not path.lower().startswith("/v1/"):
            return self._reply(404, {"error": f"Not found: {path}"})
        try:
            if method == "POST" and (m := _PREDICT_PATH.fullmatch(path)):
                name, version, label = self._spec(m)
                if m.group(4).lower() != "predict":
                    raise ServingStatus("UNIMPLEMENTED", f"{m.group(4)} is not served by the "
                                        "loopback server (predict only)")
                servable = self.registry.resolve(name, version, label)
                signature, inputs, form = parse_predict_body(body, servable)
                _, outputs = servable.predict(signature, inputs)
                return self._reply(200, predict_json(outputs, form))
            if method == "GET" and (m := _STATUS_PATH.fullmatch(path)):
                name, version, label = self._spec(m)
                if m.group(4):
                    return self._reply(200, self.registry.metadata_json(name, version, label))
                return self._reply(200, self.registry.status_json(name, version, label))
            raise ServingStatus("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
        except ServingStatus as err:
            return self._reply(err.http_status, {"error": err.message})
        except Exception as err:  # noqa: BLE001 - the server answers, as TF Serving does
            return self._reply(500, {"error": f"{type(err).__name__}: {err}"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")


# --------------------------------------------------------------------------- gRPC server

def _grpc_servicers(registry: ModelRegistry):
    """PredictionService and ModelService servicers over ``registry`` (serving extra)."""
    import grpc
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                         model_service_pb2_grpc, predict_pb2,
                                         prediction_service_pb2_grpc)

    def spec_of(model_spec):
        version = model_spec.version.value if model_spec.HasField("version") else None
        return model_spec.name, version, (model_spec.version_label or None)

    def aborting(fn):
        def wrapper(self, request, context):
            try:
                return fn(self, request, context)
            except ServingStatus as err:
                context.abort(getattr(grpc.StatusCode, err.code, grpc.StatusCode.UNKNOWN),
                              err.message)
        return wrapper

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        @aborting
        def Predict(self, request, context):
            servable = registry.resolve(*spec_of(request.model_spec))
            name, sigdef, _ = servable.signature(request.model_spec.signature_name or None)
            inputs = {}
            for key, proto in request.inputs.items():
                if key in sigdef.inputs and proto.dtype != sigdef.inputs[key].dtype:
                    want = tf.dtypes.as_dtype(sigdef.inputs[key].dtype).name
                    got = tf.dtypes.as_dtype(proto.dtype).name
                    raise ServingStatus("INVALID_ARGUMENT",
                                        f"Expects arg {key} to be {want} but {got} is provided")
                inputs[key] = tf.make_ndarray(proto)
            _, outputs = servable.predict(name, inputs)
            wanted = list(request.output_filter) or sorted(outputs)
            unknown = sorted(set(wanted) - set(outputs))
            if unknown:
                raise ServingStatus("INVALID_ARGUMENT",
                                    f"output tensor alias not found in signature: {unknown[0]}")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = name
            for key in wanted:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
            return response

        @aborting
        def GetModelMetadata(self, request, context):
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingStatus("INVALID_ARGUMENT",
                                    "Metadata field signature_def is the only one supported; "
                                    f"received {list(request.metadata_field)}")
            servable = registry.resolve(*spec_of(request.model_spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            sigmap = get_model_metadata_pb2.SignatureDefMap()
            for key, sigdef in servable.signature_defs.items():
                sigmap.signature_def[key].CopyFrom(sigdef)
            response.metadata["signature_def"].Pack(sigmap)
            return response

    class Models(model_service_pb2_grpc.ModelServiceServicer):
        @aborting
        def GetModelStatus(self, request, context):
            status = registry.status_json(*spec_of(request.model_spec))
            response = get_model_status_pb2.GetModelStatusResponse()
            for entry in status["model_version_status"]:
                item = response.model_version_status.add()
                item.version = int(entry["version"])
                item.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
                item.status.SetInParent()  # error_code OK, error_message "": written as REST does
            return response

    return Prediction(), Models(), prediction_service_pb2_grpc, model_service_pb2_grpc


def grpc_available() -> bool:
    """Whether ``tensorflow-serving-api`` (the ``serving`` extra) and ``grpcio`` import."""
    try:
        import grpc  # noqa: F401
        from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- the server

class LoopbackServer:
    """REST (and, with ``grpc=True``, gRPC) answers of TF Serving on 127.0.0.1, in threads.

    ``config``: a ``models.config`` path or a list of :class:`ModelConfig`; ``mounts`` as in
    :class:`ModelRegistry`. ``rest_port``/``grpc_port`` 0 take free ports; ``rest_url`` and
    ``grpc_target`` say where. ``grpc=None`` serves gRPC when the serving extra is installed.
    Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, config, mounts: Mapping[str, str] | None = None, *, rest_port: int = 0,
                 grpc_port: int = 0, grpc: bool | None = False, host: str = "127.0.0.1",
                 max_message_bytes: int = 1 << 30):
        self.registry = ModelRegistry(config, mounts)
        self.host, self._rest_port, self._grpc_port = host, int(rest_port), int(grpc_port)
        self.use_grpc = grpc_available() if grpc is None else bool(grpc)
        if self.use_grpc and not grpc_available():
            from keras_liver.serving.client import SERVING_EXTRA_HINT

            raise ImportError(SERVING_EXTRA_HINT.replace("GrpcClient", "a gRPC loopback server"))
        self.max_message_bytes = int(max_message_bytes)
        self._http = self._thread = self._grpc = None
        self.rest_url = self.grpc_target = None

    @property
    def missing(self) -> list[str]:
        return self.registry.missing

    def start(self) -> "LoopbackServer":
        handler = type("Handler", (_RestHandler,), {"registry": self.registry})
        self._http = ThreadingHTTPServer((self.host, self._rest_port), handler)
        self._http.daemon_threads = True
        self.rest_url = f"http://{self.host}:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, name="loopback-rest",
                                        daemon=True)
        self._thread.start()
        if self.use_grpc:
            import grpc
            from concurrent import futures

            prediction, models, pgrpc, mgrpc = _grpc_servicers(self.registry)
            options = [("grpc.max_send_message_length", self.max_message_bytes),
                       ("grpc.max_receive_message_length", self.max_message_bytes)]
            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
            pgrpc.add_PredictionServiceServicer_to_server(prediction, self._grpc)
            mgrpc.add_ModelServiceServicer_to_server(models, self._grpc)
            port = self._grpc.add_insecure_port(f"{self.host}:{self._grpc_port}")
            self._grpc.start()
            self.grpc_target = f"{self.host}:{port}"
        return self

    def stop(self):
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._thread.join(timeout=10)
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
