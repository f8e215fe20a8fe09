"""TensorFlow Serving's model server config (``models.config``): read, write, and this project's.

``tensorflow_model_server --model_config_file=FILE`` reads a ``ModelServerConfig`` protobuf in
text format (``tensorflow_serving/config/model_server_config.proto``)::

    model_config_list {
      config {
        name: "ra_vnet"                       # the NAME of /v1/models/NAME
        base_path: "/models/ra_vnet"          # holds numbered versions: 1/saved_model.pb, ...
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 } }   # or latest { num_versions: N }, all {}
        version_labels { key: "stable" value: 1 }           # optional: /labels/stable
      }
    }

:func:`read_models_config` parses that text with a small reader of the protobuf text format
(fields ``name: value`` and ``name { ... }``, ``#`` comments, quoted strings, repeated fields),
so the loopback test server (:mod:`keras_liver.serving.testing`) needs no
``tensorflow-serving-api``; the tests check it against ``google.protobuf.text_format`` and
``model_server_config_pb2`` when the ``serving`` extra is installed. Only the
``model_config_list`` form is read (not ``custom_model_config``); a field TF Serving would
reject, or one this reader does not know, is an error naming the file and line.

:data:`PROJECT_MODELS` lists every model the experiments export, with the run directory of
the experiment's default ``--out``; :func:`project_models_config` writes ``serving/models.config``
from it, and :func:`write_models_config` writes one for a folder of exports
(``BASE/NAME/VERSION/saved_model.pb``), e.g. ``python -m keras_liver.serving write-config BASE``.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from typing import Iterable

from keras_liver.fileio import write_atomically

#: Where the server sees the models: ``docker run -v HOST_DIR:/models`` (TF Serving's image
#: convention), so every ``base_path`` is ``/models/NAME``.
DEFAULT_ROOT = "/models"
POLICIES = ("latest", "specific", "all")


class ModelConfigError(ValueError):
    """A ``models.config`` text TF Serving would not load. ``str(err)`` names the file and line."""


@dataclass
class ModelConfig:
    """One ``config { ... }`` entry of a ``model_config_list``.

    ``policy`` is the ``model_version_policy`` kind: ``"latest"`` (the ``num_versions``
    highest versions; TF Serving's default, with 1), ``"specific"`` (``versions``) or ``"all"``.
    """

    name: str
    base_path: str
    platform: str = "tensorflow"
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)
    comment: str = ""

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"model {self.name!r}: version policy must be one of {POLICIES}, "
                             f"received {self.policy!r}")
        self.versions = tuple(sorted(int(v) for v in self.versions))
        if self.policy == "specific" and not self.versions:
            raise ValueError(f"model {self.name!r}: the 'specific' version policy needs versions")
        if self.policy == "latest" and int(self.num_versions) < 1:
            raise ValueError(f"model {self.name!r}: latest {{ num_versions }} must be >= 1, "
                             f"received {self.num_versions}")
        self.num_versions = int(self.num_versions)
        self.labels = {str(k): int(v) for k, v in self.labels.items()}

    def select_versions(self, available: Iterable[int]) -> list[int]:
        """The versions TF Serving serves out of those found on disk (ascending)."""
        available = sorted(set(int(v) for v in available))
        if self.policy == "all":
            return available
        if self.policy == "latest":
            return available[-self.num_versions:]
        return [v for v in self.versions if v in available]


# --------------------------------------------------------------------------- text format reader

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+) | (?P<newline>\n) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>:;,\[\]])
  | (?P<word>[A-Za-z0-9_.+\-]+)
""", re.VERBOSE)

_CLOSE = {"{": "}", "<": ">"}


def _tokens(text: str, where: str):
    line, pos, out = 1, 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ModelConfigError(f"{where}: line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind == "newline":
            line += 1
        elif kind not in ("space", "comment"):
            out.append((kind, m.group(), line))
        pos = m.end()
    return out


class _Reader:
    """Recursive-descent reader: a message is ``{field: [value, ...]}``, a value a str, a
    number (as its text) or a nested message."""

    def __init__(self, text: str, where: str):
        self.where = where
        self.toks = _tokens(text, where)
        self.i = 0

    def error(self, message: str, line: int | None = None):
        if line is None:
            line = self.toks[min(self.i, len(self.toks) - 1)][2] if self.toks else 1
        raise ModelConfigError(f"{self.where}: line {line}: {message}")

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None, None)

    def take(self):
        tok = self.peek()
        if tok[0] is None:
            self.error("unexpected end of file (a '}' is missing)")
        self.i += 1
        return tok

    def message(self, close: str | None):
        fields: dict[str, list] = {}
        while True:
            kind, text, line = self.peek()
            if kind is None:
                if close is not None:
                    self.error(f"unexpected end of file: expected {close!r}")
                return fields
            if kind == "punct" and text == close:
                self.i += 1
                return fields
            if kind != "word":
                self.error(f"expected a field name, found {text!r}", line)
            self.i += 1
            fields.setdefault(text, []).append(self.value(text))
            kind, text, _ = self.peek()
            if kind == "punct" and text in ",;":
                self.i += 1

    def value(self, name: str):
        kind, text, line = self.take()
        colon = kind == "punct" and text == ":"
        if colon:
            kind, text, line = self.take()
        if kind == "punct" and text in _CLOSE:
            return self.message(_CLOSE[text])
        if not colon:
            self.error(f"expected ':' or '{{' after {name!r}, found {text!r}", line)
        if kind == "punct" and text == "[":
            self.error(f"list values ('{name}: [...]') are not supported; repeat the field", line)
        if kind == "string":
            return _Scalar(ast.literal_eval(text), line, quoted=True)
        if kind == "word":
            return _Scalar(text, line, quoted=False)
        self.error(f"expected a value for {name!r}, found {text!r}", line)


@dataclass
class _Scalar:
    value: str
    line: int
    quoted: bool


def _only(fields: dict, name: str, reader: _Reader, kind: type):
    values = fields.get(name, [])
    if len(values) > 1:
        reader.error(f"field {name!r} given {len(values)} times", _line(values[-1]))
    if not values:
        return None
    value = values[0]
    if kind is dict and not isinstance(value, dict):
        reader.error(f"field {name!r} must be a message ({name} {{ ... }})", _line(value))
    if kind is not dict and isinstance(value, dict):
        reader.error(f"field {name!r} must be a value ({name}: ...), not a message")
    return value


def _line(value):
    return value.line if isinstance(value, _Scalar) else None


def _string(value: _Scalar, name: str, reader: _Reader) -> str:
    if not value.quoted:
        reader.error(f"field {name!r} must be a quoted string, found {value.value}", value.line)
    return value.value


def _int(value: _Scalar, name: str, reader: _Reader) -> int:
    try:
        if value.quoted:
            raise ValueError
        return int(value.value, 0)
    except ValueError:
        reader.error(f"field {name!r} must be an integer, found {value.value!r}", value.line)


def _check_fields(fields: dict, allowed: Iterable[str], where: str, reader: _Reader):
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        first = fields[unknown[0]][0]
        reader.error(f"unknown field {unknown[0]!r} in {where}; expected {sorted(allowed)}",
                     _line(first))


def _model_config(fields: dict, reader: _Reader) -> ModelConfig:
    _check_fields(fields, ("name", "base_path", "model_platform", "model_version_policy",
                           "version_labels", "logging_config", "model_type"), "config", reader)
    name = _only(fields, "name", reader, str)
    base_path = _only(fields, "base_path", reader, str)
    if name is None or base_path is None:
        reader.error("every config needs a name and a base_path")
    name = _string(name, "name", reader)
    base_path = _string(base_path, "base_path", reader)
    platform = _only(fields, "model_platform", reader, str)
    platform = _string(platform, "model_platform", reader) if platform else "tensorflow"
    policy, num_versions, versions = "latest", 1, ()
    pol = _only(fields, "model_version_policy", reader, dict)
    if pol:
        _check_fields(pol, POLICIES, "model_version_policy", reader)
        if len(pol) != 1:
            reader.error(f"model {name!r}: model_version_policy takes one of {POLICIES}, "
                         f"found {sorted(pol)}")
        policy = next(iter(pol))
        body = _only(pol, policy, reader, dict)
        if policy == "latest":
            _check_fields(body, ("num_versions",), "latest", reader)
            n = _only(body, "num_versions", reader, str)
            num_versions = _int(n, "num_versions", reader) if n else 1
        elif policy == "specific":
            _check_fields(body, ("versions",), "specific", reader)
            versions = tuple(_int(v, "versions", reader) for v in body.get("versions", []))
            if not versions:
                reader.error(f"model {name!r}: 'specific' lists no versions")
        else:
            _check_fields(body, (), "all", reader)
    labels = {}
    for entry in fields.get("version_labels", []):
        if not isinstance(entry, dict):
            reader.error("version_labels must be a message { key: ... value: ... }")
        _check_fields(entry, ("key", "value"), "version_labels", reader)
        key, value = _only(entry, "key", reader, str), _only(entry, "value", reader, str)
        if key is None or value is None:
            reader.error(f"model {name!r}: version_labels needs a key and a value")
        labels[_string(key, "key", reader)] = _int(value, "value", reader)
    try:
        return ModelConfig(name=name, base_path=base_path, platform=platform, policy=policy,
                           num_versions=num_versions, versions=versions, labels=labels)
    except ValueError as err:
        reader.error(str(err))


def parse_models_config(text: str, where: str = "<models.config>") -> list[ModelConfig]:
    """The entries of a ``model_config_list`` text; :class:`ModelConfigError` on bad text."""
    reader = _Reader(text, where)
    top = reader.message(None)
    if "custom_model_config" in top:
        reader.error("custom_model_config is not supported; use model_config_list")
    _check_fields(top, ("model_config_list",), "the model server config", reader)
    lst = _only(top, "model_config_list", reader, dict)
    if lst is None:
        reader.error("no model_config_list { ... } found")
    _check_fields(lst, ("config",), "model_config_list", reader)
    models = []
    for entry in lst.get("config", []):
        if not isinstance(entry, dict):
            reader.error("config must be a message (config { ... })", _line(entry))
        models.append(_model_config(entry, reader))
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        reader.error(f"model names must be unique; repeated: {dupes}")
    return models


def read_models_config(path: str) -> list[ModelConfig]:
    """Read a ``models.config`` file (see :func:`parse_models_config`)."""
    path = str(path)
    if not os.path.isfile(path):
        raise ModelConfigError(f"{path}: model config file not found")
    with open(path, encoding="utf-8") as f:
        return parse_models_config(f.read(), where=path)


# --------------------------------------------------------------------------- writing

def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def models_config_text(models: Iterable[ModelConfig], header: str = "") -> str:
    """``models`` as a ``model_config_list`` text; ``header`` and each model's ``comment``
    become ``#`` lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("model_config_list {")
    for m in models:
        lines += [f"  # {line}".rstrip() for line in m.comment.splitlines()]
        lines += ["  config {", f"    name: {_quote(m.name)}", f"    base_path: {_quote(m.base_path)}",
                  f"    model_platform: {_quote(m.platform)}"]
        if m.policy == "latest":
            lines.append(f"    model_version_policy {{ latest {{ num_versions: {m.num_versions} }} }}")
        elif m.policy == "specific":
            versions = " ".join(f"versions: {v}" for v in m.versions)
            lines.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        else:
            lines.append("    model_version_policy { all {} }")
        for key, value in sorted(m.labels.items()):
            lines.append(f"    version_labels {{ key: {_quote(key)} value: {value} }}")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_config_text(path: str, text: str) -> str:
    """Write a config text at ``path`` atomically (temporary file, then rename)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write_atomically(path, write, suffix=".config")


def find_versions(base_path: str) -> list[int]:
    """Numbered version folders of a model's base path that hold a ``saved_model.pb``."""
    if not os.path.isdir(base_path):
        return []
    return sorted(int(d) for d in os.listdir(base_path)
                  if d.isdigit() and os.path.isfile(os.path.join(base_path, d, "saved_model.pb")))


def scan_exports(base_dir: str) -> dict[str, list[int]]:
    """``{NAME: versions}`` of every ``BASE/NAME/VERSION/saved_model.pb`` under ``base_dir``."""
    if not os.path.isdir(base_dir):
        raise FileNotFoundError(f"{base_dir}: no such folder of exported models")
    found = {}
    for name in sorted(os.listdir(base_dir)):
        versions = find_versions(os.path.join(base_dir, name))
        if versions:
            found[name] = versions
    return found


def write_models_config(base_dir: str, out: str | None = None, *, root: str = DEFAULT_ROOT,
                        policy: str = "specific") -> str:
    """Write a ``models.config`` serving every model exported under ``base_dir``.

    Each ``BASE/NAME/`` with numbered SavedModel versions becomes one entry named NAME with
    ``base_path`` ``ROOT/NAME`` (``root``: where the server sees ``base_dir``; ``/models`` in
    the ``tensorflow/serving`` image). ``policy`` "specific" pins the versions found,
    "latest" serves the newest, "all" every version. ``out`` defaults to
    ``BASE/models.config``. Returns the path written (atomically).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, received {policy!r}")
    found = scan_exports(base_dir)
    if not found:
        raise FileNotFoundError(f"{base_dir}: no exported models (expected NAME/VERSION/saved_model.pb)")
    root = root.rstrip("/") or "/"
    models = [ModelConfig(name=name, base_path=f"{root}/{name}", policy=policy,
                          versions=versions if policy == "specific" else (),
                          comment=f"versions on disk: {', '.join(map(str, versions))}")
              for name, versions in found.items()]
    out = out or os.path.join(base_dir, "models.config")
    header = (f"TensorFlow Serving model config for the exports in {os.path.abspath(base_dir)}\n"
              f"(served as {root}/NAME/VERSION; written by keras_liver.serving.write_models_config)")
    return write_config_text(out, models_config_text(models, header=header))


# --------------------------------------------------------------------------- this project's models

@dataclass(frozen=True)
class ProjectModel:
    """An exported model of an experiment: its serving name and the run directory that
    ``python -m keras_liver.experiments.<experiment>`` trains it in (default ``--out``)."""

    name: str
    experiment: str
    run_dir: str
    description: str


#: Every model the experiments train and export (default ``--out runs/<experiment>``; demo
#: preset). RA-UNet's paper preset trains the 3-D stages 5-fold: ``stage2_liver/foldK`` and
#: ``stage3_tumour/foldK``, served as ``ra_unet_liver_foldK`` / ``ra_unet_tumour_foldK``.
PROJECT_MODELS: tuple[ProjectModel, ...] = (
    ProjectModel("ra_vnet", "ra_vnet", "runs/ra_vnet", "RA V-Net, 2-D liver"),
    ProjectModel("ra_unet_localiser", "ra_unet", "runs/ra_unet/stage1_localiser",
                 "RA-UNet-I, 2-D liver localiser (cascade stage 1)"),
    ProjectModel("ra_unet_liver", "ra_unet", "runs/ra_unet/stage2_liver",
                 "RA-UNet-II, 3-D liver (cascade stage 2)"),
    ProjectModel("ra_unet_tumour", "ra_unet", "runs/ra_unet/stage3_tumour",
                 "RA-UNet-II, 3-D tumour (cascade stage 3)"),
    ProjectModel("msa_unet", "msa_unet", "runs/msa_unet", "MSA-UNet, 2-D liver (flip TTA)"),
    ProjectModel("bada", "bada", "runs/bada", "BADA, 2-D Couinaud segments (10 classes)"),
    ProjectModel("arunet_liver", "arunet", "runs/arunet/liver",
                 "Attention Residual UNet, liver model"),
    ProjectModel("arunet_vessel", "arunet", "runs/arunet/vessel",
                 "Attention Residual UNet, hepatic vessel model"),
)

PROJECT_HEADER = """\
TensorFlow Serving model config for every model the keras-liver experiments export.
  tensorflow_model_server --port=8500 --rest_api_port=8501 --model_config_file=/models/models.config
  docker run --rm -p 8500:8500 -p 8501:8501 -v "$MODELS:/models" tensorflow/serving \\
      --model_config_file=/models/models.config
/models is the folder the server sees ($MODELS on the host, mounted at /models): export each
run into it as the comment above each entry says (version 1), and copy this file to
$MODELS/models.config. RA-UNet's paper preset trains the 3-D stages 5-fold (RUN/foldK):
export each fold as its own model (ra_unet_liver_fold0 ...), or let
`python -m keras_liver.serving write-config $MODELS` write this file from what is there.
Written by keras_liver.serving.config.project_models_config(); tests check the two agree."""


def project_models_config(version: int = 1, root: str = DEFAULT_ROOT) -> str:
    """The ``serving/models.config`` text: every :data:`PROJECT_MODELS` entry at
    ``ROOT/NAME``, pinned to ``version``, with the export command that writes it."""
    root = root.rstrip("/") or "/"
    models = [ModelConfig(
        name=m.name, base_path=f"{root}/{m.name}", policy="specific", versions=(version,),
        comment=(f"{m.description} (python -m keras_liver.experiments.{m.experiment})\n"
                 f"  keras-liver export {m.run_dir} --out {root}/{m.name} --version {version}"))
        for m in PROJECT_MODELS]
    return models_config_text(models, header=PROJECT_HEADER)
