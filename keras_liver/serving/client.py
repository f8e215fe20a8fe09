"""Clients of a running TensorFlow Serving model server: NIfTI in, label volume out.

Two transports with one interface: :class:`RestClient` (TF Serving's REST API, port 8501,
``urllib`` only) and :class:`GrpcClient` (``PredictionService``/``ModelService`` over gRPC, port
8500; needs the ``serving`` extra, ``pip install "keras-liver[serving]"``). Both answer

``predict(batch)``          one Predict call: arrays in (a dict by input name, or one array for
                            a one-input signature), a dict of NumPy outputs back
``metadata()`` / ``status()``  GetModelMetadata / GetModelStatus as TF Serving's REST JSON
``predict_volume(vol)``     ``(probabilities, label)`` of a volume ``(X, Y, Z)`` on its grid
``predict_file(in, out)``   the same for a NIfTI file, written with the input's affine and
                            header (atomically: a failed prediction leaves no file)

How a volume is sent depends on the signature (read from the model's metadata, once):

* ``serve_hu`` of a 2-D run (input ``image_hu`` ``(N, H, W)``, output ``probabilities``
  ``(N, H, W, C)``): the raw HU axial slices, ``batch_size`` per request, in the order of
  :mod:`keras_liver.inference` (slice axis 2 moved first); window/CLAHE/normalisation, resize,
  the model, flip TTA and the resize back run in the server's graph.
* ``serve_hu`` of a 3-D run (``image_hu`` ``(X, Y, Z)``, ``probabilities`` ``(X, Y, Z)``): the
  whole volume in one request; the sliding windows run in the graph. A 3-D model with C > 1
  channels answers ``(X, Y, Z, C)``, which looks like the 2-D form: pass ``volumetric=True``
  (or ``preprocessing=``, whose ``signatures.serve_hu.kind`` says which it is).
* ``serving_default`` (``image`` ``(N, H, W, 1)``, the model's input size): the client
  preprocesses the slices itself with the data config of ``keras_liver_preprocessing.json``
  (``preprocessing=``: TF Serving does not serve a model's assets), applies the optional flip
  TTA, resizes the probabilities back and thresholds them: the steps of
  :class:`keras_liver.inference.Predictor`, with the model run by the server.

Labels are the server's ``label`` output (``serve_hu``; ``threshold=`` re-thresholds its
one-channel probabilities) or ``probabilities > threshold`` (default: the run's) / the argmax
(``serving_default``, as :class:`~keras_liver.inference.Predictor`). One-channel
labels are reduced to their largest 3-D connected component
(:func:`keras_liver.postprocess.largest_component`; not in the graph) unless
``largest_component=False``; ``None`` takes the run's ``postprocess.largest_component`` from
``preprocessing=`` when given, else True. ``tta=None`` likewise takes the run's
``inference.tta`` for ``serving_default``.

Batch size. A 512x512 slice is 262,144 values. As compact JSON an HU slice is about 1.6 MB
(``-87.0,`` a voxel; each float32 is written exactly, as the shortest double that rounds to it,
so TF Serving converts it without loss) and the 2-D answer about 6.1 MB (float32 probabilities
at ~18 characters each, plus the labels). The default of 8 slices a request keeps requests
near 13 MB and answers near 50 MB: bounded memory on both sides (``serve_hu`` runs all the
slices of a request through the network as one batch, times 1 + flips), the same batch the
local predictor runs, and a request every few seconds on a CPU. gRPC sends raw float32 (1 MB
a slice); its channel allows messages up to ``max_message_bytes`` (1 GiB; TF Serving's own
limit is 2 GiB), which a 3-D ``serve_hu`` volume, sent whole, needs: prefer gRPC for 3-D runs.

Errors from the server (REST: HTTP 4xx/5xx with ``{"error": ...}``; gRPC: a status code and
details), a refused connection and a timeout all raise :class:`ServingError`, whose message
names the server, the model (version, signature) and the server's own words.
"""
from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

import numpy as np

from keras_liver import fileio
from keras_liver.errors import ModelInputError

SIGNATURES = ("serve_hu", "serving_default")
DEFAULT_REST_URL = "http://localhost:8501"
DEFAULT_GRPC_TARGET = "localhost:8500"
DEFAULT_BATCH_SIZE = 8
DEFAULT_TIMEOUT = 120.0
PREPROCESSING_ASSET = "keras_liver_preprocessing.json"  # keras_liver.export writes it

#: TensorFlow ``DataType`` enum names (as TF Serving's JSON writes them) → NumPy dtypes.
DTYPES = {"DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_HALF": np.float16,
          "DT_INT32": np.int32, "DT_INT64": np.int64, "DT_INT16": np.int16, "DT_INT8": np.int8,
          "DT_UINT8": np.uint8, "DT_UINT16": np.uint16, "DT_BOOL": np.bool_}


class ServingError(RuntimeError):
    """A TF Serving request failed. ``where`` is the URL or gRPC target, ``code`` the HTTP
    status or gRPC status name (``None`` when no answer came), ``message`` the server's text."""

    def __init__(self, where: str, model: str, message: str, *, code=None,
                 version: int | None = None, label: str | None = None,
                 signature: str | None = None):
        self.where, self.model, self.message, self.code = where, model, message, code
        self.version, self.label, self.signature = version, label, signature
        spec = f"model {model!r}"
        if version is not None:
            spec += f" version {version}"
        if label is not None:
            spec += f" label {label!r}"
        if signature is not None:
            spec += f", signature {signature!r}"
        status = f"{code}: " if code is not None else ""
        super().__init__(f"TF Serving at {where} ({spec}): {status}{message}")


# --------------------------------------------------------------------------- signatures

def _shape(info: Mapping[str, Any]) -> tuple | None:
    shape = info.get("tensor_shape") or {}
    if shape.get("unknown_rank"):
        return None
    return tuple(None if int(d.get("size", -1)) < 0 else int(d["size"])
                 for d in shape.get("dim", []))


def _tensor_specs(infos: Mapping[str, Any]) -> dict[str, tuple[Any, tuple | None]]:
    return {name: (DTYPES.get(info.get("dtype"), None), _shape(info))
            for name, info in infos.items()}


def load_preprocessing(preprocessing) -> dict[str, Any]:
    """The ``{"preprocessing": data config, "threshold": t, "input_shape": [...]}`` a client of
    ``serving_default`` needs, from ``keras_liver_preprocessing.json`` (its path, or the
    SavedModel folder holding it), that file's dict, or a bare data config dict."""
    where = "preprocessing"
    if isinstance(preprocessing, (str, os.PathLike)):
        path = os.fspath(preprocessing)
        if os.path.isdir(path):
            path = os.path.join(path, PREPROCESSING_ASSET)
        preprocessing = fileio.read_json(path, missing=(
            f"preprocessing file not found (keras-liver export writes {PREPROCESSING_ASSET} "
            "beside the SavedModel)"))
        where = path
    if not isinstance(preprocessing, Mapping):
        raise ValueError(f"{where}: expected a data config object or {PREPROCESSING_ASSET}, "
                         f"received {type(preprocessing).__name__}")
    from keras_liver.data import preprocessing as prep
    from keras_liver.data import volumetric

    out = dict(preprocessing) if "preprocessing" in preprocessing else {"preprocessing": preprocessing}
    resolve = (volumetric.resolve_config if volumetric.is_volumetric(out["preprocessing"])
               else prep.resolve_config)
    try:
        out["preprocessing"] = resolve(out["preprocessing"])
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return out


# --------------------------------------------------------------------------- the shared client

class _Client:
    """What both transports share: signature handling and whole-volume prediction."""

    where = ""

    def __init__(self, model: str, version: int | None, version_label: str | None,
                 signature: str, batch_size: int, timeout: float, preprocessing,
                 threshold: float | None, largest_component: bool | None, tta,
                 volumetric: bool | None):
        if not model or not isinstance(model, str):
            raise ValueError(f"model must be a model name of the server, received {model!r}")
        if version is not None and version_label is not None:
            raise ValueError(f"give a version or a version_label, not both "
                             f"(received version={version}, version_label={version_label!r})")
        if version is not None:
            version = int(version)
            if version < 0:
                raise ValueError(f"version must be >= 0, received {version}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, received {batch_size}")
        self.model, self.version, self.version_label = model, version, version_label
        self.signature = str(signature)
        self.batch_size, self.timeout = int(batch_size), float(timeout)
        self.preprocessing = None if preprocessing is None else load_preprocessing(preprocessing)
        run = self.preprocessing or {}
        self.threshold = threshold
        if largest_component is None:
            largest_component = (run.get("postprocess") or {}).get("largest_component")
        self.largest_component = True if largest_component is None else bool(largest_component)
        if tta is None:
            tta = (run.get("inference") or {}).get("tta") if self.signature != "serve_hu" else ()
        if tta:  # keras_liver.inference imports Keras: a plain serve_hu client needs only NumPy
            from keras_liver.inference import check_tta

            tta = check_tta(tta)
        self.tta = tuple(tta or ())
        if volumetric is None:
            kind = ((run.get("signatures") or {}).get("serve_hu") or {}).get("kind")
            volumetric = None if kind is None else kind != "slices"
        self.volumetric = volumetric
        self._signature_specs = None

    def error(self, message: str, code=None) -> ServingError:
        return ServingError(self.where, self.model, message, code=code, version=self.version,
                            label=self.version_label, signature=self.signature)

    # transport
    def metadata(self) -> dict[str, Any]:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def _predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # signature
    def signature_specs(self) -> tuple[dict, dict]:
        """``(inputs, outputs)`` of the client's signature: ``{name: (dtype, shape)}`` with
        ``None`` for unknown sizes, read from :meth:`metadata` once."""
        if self._signature_specs is None:
            md = self.metadata()
            try:
                sigs = md["metadata"]["signature_def"]["signature_def"]
            except (KeyError, TypeError):
                raise self.error(f"metadata without a signature_def map: {str(md)[:200]}") from None
            if self.signature not in sigs:
                served = sorted(s for s in sigs if not s.startswith("__"))
                raise self.error(f"the model has no signature {self.signature!r}; it serves "
                                 f"{served}")
            sig = sigs[self.signature]
            self._signature_specs = (_tensor_specs(sig.get("inputs", {})),
                                     _tensor_specs(sig.get("outputs", {})))
        return self._signature_specs

    def predict(self, batch) -> dict[str, np.ndarray]:
        """One Predict call on the client's signature. ``batch`` is ``{input name: array}`` or,
        for a signature with one input, the array itself. Returns ``{output name: array}``
        with the signature's dtypes."""
        in_specs, out_specs = self.signature_specs()
        if not isinstance(batch, Mapping):
            if len(in_specs) != 1:
                raise ValueError(f"signature {self.signature!r} takes inputs {sorted(in_specs)}; "
                                 "pass a dict of arrays by input name")
            batch = {next(iter(in_specs)): batch}
        unknown = sorted(set(batch) - set(in_specs))
        if unknown:
            raise ValueError(f"signature {self.signature!r} has no input(s) {unknown}; its "
                             f"inputs are {sorted(in_specs)}")
        inputs = {name: np.ascontiguousarray(value, dtype=in_specs[name][0] or None)
                  for name, value in batch.items()}
        outputs = self._predict(inputs)
        return {name: np.asarray(value, dtype=(out_specs.get(name, (None,))[0] or None))
                for name, value in outputs.items()}

    def _mode(self) -> str:
        in_specs, out_specs = self.signature_specs()
        if len(in_specs) != 1 or "probabilities" not in out_specs or "label" not in out_specs:
            raise self.error(f"predict_volume needs one input and the outputs 'probabilities' "
                             f"and 'label'; the signature has inputs {sorted(in_specs)} and "
                             f"outputs {sorted(out_specs)}")
        (_, in_shape), = in_specs.values()
        prob_shape = out_specs["probabilities"][1]
        if in_shape is None or prob_shape is None:
            raise self.error("the signature's input or output has an unknown rank")
        if len(in_shape) == 4:
            return "preprocessed_slices"
        if len(in_shape) == 3 and len(prob_shape) == 3:
            return "hu_volume"
        if len(in_shape) == 3 and len(prob_shape) == 4:
            return "hu_volume" if self.volumetric else "hu_slices"
        raise self.error(f"cannot send a volume to input shape {in_shape} (outputs "
                         f"probabilities {prob_shape}): a 3-D run's serving_default takes "
                         "preprocessed patches; use its serve_hu signature")

    # volumes
    def predict_volume(self, volume) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, label)`` of a volume ``(X, Y, Z)`` on its own grid: float32
        ``(X, Y, Z)`` (or ``(X, Y, Z, C)`` for C > 1 classes) and uint8 ``(X, Y, Z)``."""
        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim != 3 or volume.size == 0:
            raise ModelInputError(f"expected a non-empty 3-D volume (x, y, z), received shape "
                                  f"{volume.shape}")
        mode = self._mode()
        if self.tta and mode != "preprocessed_slices":
            raise ValueError(f"tta={list(self.tta)} applies to serving_default; the "
                             f"{self.signature!r} signature does its flips in the graph")
        if mode == "preprocessed_slices":
            probs = self._preprocessed_probabilities(volume)
            threshold = self.threshold
            if threshold is None:
                threshold = float(self.preprocessing.get("threshold", 0.5))
            label = (probs > threshold if probs.ndim == 3 else np.argmax(probs, axis=-1))
        elif mode == "hu_slices":
            slices = np.moveaxis(volume, 2, 0)
            parts = [self.predict(slices[i:i + self.batch_size])
                     for i in range(0, slices.shape[0], self.batch_size)]
            probs = np.transpose(np.concatenate([p["probabilities"] for p in parts]), (1, 2, 0, 3))
            label = np.transpose(np.concatenate([p["label"] for p in parts]), (1, 2, 0))
            if probs.shape[-1] == 1:
                probs = probs[..., 0]
        else:
            out = self.predict(volume)
            probs, label = out["probabilities"], out["label"]
        if tuple(label.shape) != volume.shape:
            raise self.error(f"the server answered labels of shape {tuple(label.shape)} for a "
                             f"volume of shape {volume.shape}")
        if probs.ndim == 3 and self.threshold is not None and mode != "preprocessed_slices":
            label = probs > self.threshold  # a threshold of the caller's over the run's
        if probs.ndim == 3 and self.largest_component:
            from keras_liver.postprocess import largest_component

            label = largest_component(label > 0)
        return probs.astype(np.float32, copy=False), np.asarray(label).astype(np.uint8)

    def _preprocessed_probabilities(self, volume: np.ndarray) -> np.ndarray:
        from keras_liver.data import preprocessing as prep
        from keras_liver.inference import TTA_FLIPS

        if self.preprocessing is None:
            raise ValueError(
                f"signature {self.signature!r} takes preprocessed slices: pass preprocessing= "
                f"(the model's {PREPROCESSING_ASSET}, its path or its SavedModel folder; TF "
                "Serving does not serve it), or use the serve_hu signature")
        (_, in_shape), = self.signature_specs()[0].values()
        slices = prep.preprocess_volume(volume, self.preprocessing["preprocessing"],
                                        batch_size=self.batch_size)
        want = tuple(in_shape[1:])
        got = tuple(slices.shape[1:])
        if any(w is not None and w != g for w, g in zip(want, got)) or len(want) != len(got):
            raise ModelInputError(f"the preprocessing makes slices of shape {got}; the model "
                                  f"takes {want} (is preprocessing= this model's?)")

        def run(x):
            return np.concatenate([self.predict(x[i:i + self.batch_size])["probabilities"]
                                   for i in range(0, x.shape[0], self.batch_size)]
                                  ).astype(np.float32, copy=False)

        total = run(slices)
        for flip in self.tta:
            axis = TTA_FLIPS[flip]
            total += np.flip(run(np.ascontiguousarray(np.flip(slices, axis=axis))), axis=axis)
        probs = prep.restore_slices(total / (1 + len(self.tta)), volume.shape[:2],
                                    batch_size=self.batch_size)
        return probs[..., 0] if probs.ndim == 4 and probs.shape[-1] == 1 else probs

    def predict_file(self, in_path: str, out_path: str) -> str:
        """Predict a NIfTI file; write the uint8 label volume with the input's affine and
        header (atomically). Returns ``out_path``."""
        from keras_liver.data.volumes import read_volume, write_volume

        vol = read_volume(in_path)
        _, label = self.predict_volume(vol.data)
        return write_volume(out_path, label, vol.affine, header=vol.header, dtype=np.uint8)


# --------------------------------------------------------------------------- REST

class RestClient(_Client):
    """TF Serving's REST API (``tensorflow_model_server --rest_api_port=8501``).

    Requests are TF Serving's columnar ``{"signature_name", "inputs"}`` form; answers
    ``{"outputs": ...}``. ``version`` (a number) or ``version_label`` picks
    ``/versions/N`` or ``/labels/L`` (default: the newest version served).
    """

    def __init__(self, url: str = DEFAULT_REST_URL, model: str = "ra_vnet", version: int | None = None,
                 signature: str = "serve_hu", *, version_label: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, timeout: float = DEFAULT_TIMEOUT,
                 preprocessing=None, threshold: float | None = None,
                 largest_component: bool | None = None, tta=None,
                 volumetric: bool | None = None):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"url must be http(s)://HOST:PORT, received {url!r}")
        self.url = url.rstrip("/")
        self.where = self.url
        super().__init__(model, version, version_label, signature, batch_size, timeout,
                         preprocessing, threshold, largest_component, tta, volumetric)

    def model_path(self) -> str:
        path = f"/v1/models/{urllib.parse.quote(self.model, safe='')}"
        if self.version is not None:
            path += f"/versions/{self.version}"
        elif self.version_label is not None:
            path += f"/labels/{urllib.parse.quote(self.version_label, safe='')}"
        return path

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One HTTP request to the server; the decoded JSON answer."""
        url = self.url + path
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                message = json.loads(raw.decode("utf-8"))["error"]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                message = raw.decode("utf-8", "replace").strip()[:500] or err.reason
            raise self.error(f"{message} ({method} {path})", code=f"HTTP {err.code}") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise self.error(f"no answer within {self.timeout:g} s ({method} {path})") from None
            raise self.error(f"cannot reach the server: {reason}") from None
        except (socket.timeout, TimeoutError):
            raise self.error(f"no answer within {self.timeout:g} s ({method} {path})") from None
        except (ConnectionError, OSError) as err:  # reset or closed mid-answer
            raise self.error(f"connection failed: {err}") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise self.error(f"the answer is not JSON ({err}): {raw[:200]!r}") from None

    def status(self) -> dict[str, Any]:
        """``GET /v1/models/NAME[/versions/N]``: ``{"model_version_status": [...]}``."""
        return self.request("GET", self.model_path())

    def metadata(self) -> dict[str, Any]:
        """``GET /v1/models/NAME[/versions/N]/metadata``: model spec and signature defs."""
        return self.request("GET", self.model_path() + "/metadata")

    def _predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        body = {"signature_name": self.signature,
                "inputs": {name: value.tolist() for name, value in inputs.items()}}
        answer = self.request("POST", self.model_path() + ":predict", body)
        if not isinstance(answer, dict) or "outputs" not in answer:
            raise self.error(f"a predict answer without 'outputs': {str(answer)[:200]}")
        outputs = answer["outputs"]
        if not isinstance(outputs, dict):  # one named output: TF Serving omits its name
            names = list(self.signature_specs()[1])
            outputs = {names[0] if len(names) == 1 else "output": outputs}
        return {name: np.asarray(value) for name, value in outputs.items()}


# --------------------------------------------------------------------------- gRPC

SERVING_EXTRA_HINT = ('GrpcClient needs tensorflow-serving-api: pip install "keras-liver[serving]" '
                      "(the serving extra) or pip install tensorflow-serving-api")


def _serving_apis():
    try:
        import grpc
        from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                             model_service_pb2_grpc, predict_pb2,
                                             prediction_service_pb2_grpc)
    except ImportError as err:
        raise ImportError(f"{SERVING_EXTRA_HINT} ({err})") from err
    return grpc, predict_pb2, prediction_service_pb2_grpc, get_model_metadata_pb2, \
        get_model_status_pb2, model_service_pb2_grpc


class GrpcClient(_Client):
    """TF Serving's gRPC API (``tensorflow_model_server --port=8500``): ``PredictionService``
    Predict and GetModelMetadata, ``ModelService`` GetModelStatus. Tensors travel as
    ``TensorProto`` (raw float32), so a volume costs 4 bytes a voxel, not ~7 as JSON."""

    def __init__(self, target: str = DEFAULT_GRPC_TARGET, model: str = "ra_vnet",
                 version: int | None = None, signature: str = "serve_hu", *,
                 version_label: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 timeout: float = DEFAULT_TIMEOUT, preprocessing=None,
                 threshold: float | None = None, largest_component: bool | None = None,
                 tta=None, volumetric: bool | None = None, max_message_bytes: int = 1 << 30,
                 credentials=None):
        (self._grpc, self._predict_pb2, prediction_grpc, self._metadata_pb2, self._status_pb2,
         model_grpc) = _serving_apis()
        if not target or ":" not in target:
            raise ValueError(f"target must be HOST:PORT, received {target!r}")
        self.target = self.where = target
        super().__init__(model, version, version_label, signature, batch_size, timeout,
                         preprocessing, threshold, largest_component, tta, volumetric)
        options = [("grpc.max_send_message_length", int(max_message_bytes)),
                   ("grpc.max_receive_message_length", int(max_message_bytes))]
        grpc = self._grpc
        self.channel = (grpc.secure_channel(target, credentials, options=options) if credentials
                        else grpc.insecure_channel(target, options=options))
        self._prediction = prediction_grpc.PredictionServiceStub(self.channel)
        self._models = model_grpc.ModelServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spec(self, spec, with_signature: bool = True):
        spec.name = self.model
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label is not None:
            spec.version_label = self.version_label
        if with_signature:
            spec.signature_name = self.signature

    def _call(self, method, request, what: str):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            details = err.details() if hasattr(err, "details") else str(err)
            if code == self._grpc.StatusCode.DEADLINE_EXCEEDED:
                details = f"no answer within {self.timeout:g} s ({details})"
            raise self.error(f"{details} ({what})",
                             code=f"gRPC {code.name}" if code is not None else None) from None

    def status(self) -> dict[str, Any]:
        from google.protobuf import json_format

        request = self._status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, with_signature=False)
        response = self._call(self._models.GetModelStatus, request, "GetModelStatus")
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def metadata(self) -> dict[str, Any]:
        from google.protobuf import json_format

        request = self._metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec, with_signature=False)
        request.metadata_field.append("signature_def")
        response = self._call(self._prediction.GetModelMetadata, request, "GetModelMetadata")
        sigmap = self._metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or \
                not response.metadata["signature_def"].Unpack(sigmap):
            raise self.error("GetModelMetadata answered without a signature_def map")
        kw = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        return {"model_spec": json_format.MessageToDict(response.model_spec, **kw),
                "metadata": {"signature_def": json_format.MessageToDict(sigmap, **kw)}}

    def _predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        request = self._predict_pb2.PredictRequest()
        self._spec(request.model_spec)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self._prediction.Predict, request, "Predict")
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
