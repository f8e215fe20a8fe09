"""``python -m keras_liver.serving``: TF Serving client, config writer and loopback server.

    python -m keras_liver.serving predict IN.nii.gz OUT.nii.gz --model NAME
        [--url http://localhost:8501 | --grpc localhost:8500] [--version N | --label L]
        [--signature serve_hu|serving_default] [--preprocessing keras_liver_preprocessing.json]
        [--batch-size 8] [--tta vflip,hflip|none] [--no-largest-component] [--timeout S]
    python -m keras_liver.serving write-config BASE_DIR [--out FILE] [--root /models]
        [--policy specific|latest|all]
    python -m keras_liver.serving project-config [--out serving/models.config]
    python -m keras_liver.serving serve-test CONFIG [--mount /models=DIR] [--rest-port 8501]
        [--grpc-port 8500 | --no-grpc]

Bad input ends with one line ``keras-liver serving: error: <problem>`` and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _cmd_predict(args):
    from keras_liver.serving.client import GrpcClient, RestClient

    kw = dict(model=args.model, version=args.version, signature=args.signature,
              version_label=args.label, batch_size=args.batch_size, timeout=args.timeout,
              preprocessing=args.preprocessing,
              largest_component=False if args.no_largest_component else None,
              tta=None if args.tta is None else [t for t in args.tta.split(",") if t != "none"])
    client = GrpcClient(args.grpc, **kw) if args.grpc else RestClient(args.url, **kw)
    start = time.perf_counter()
    out = client.predict_file(args.input, args.output)
    print(f"wrote {out} ({client.where}, model {args.model!r}, {args.signature}, "
          f"{time.perf_counter() - start:.1f} s)")


def _cmd_write_config(args):
    from keras_liver.serving.config import write_models_config

    print(write_models_config(args.base_dir, args.out, root=args.root, policy=args.policy))


def _cmd_project_config(args):
    from keras_liver.serving.config import project_models_config, write_config_text

    print(write_config_text(args.out, project_models_config(root=args.root)))


def _mount(text: str) -> tuple[str, str]:
    prefix, sep, local = text.partition("=")
    if not sep or not prefix.startswith("/") or not local:
        raise argparse.ArgumentTypeError(f"expected SERVER_PATH=LOCAL_DIR (e.g. /models=exports), "
                                         f"received {text!r}")
    return prefix, local


def _cmd_serve_test(args):
    from keras_liver.serving.testing import LoopbackServer

    mounts = dict(args.mount or [])
    server = LoopbackServer(args.config, mounts, rest_port=args.rest_port,
                            grpc_port=args.grpc_port, grpc=None if not args.no_grpc else False)
    for line in server.missing:
        print(f"not served: {line}", file=sys.stderr)
    with server:
        print(f"loopback TF Serving: REST {server.rest_url}"
              + (f", gRPC {server.grpc_target}" if server.grpc_target else "")
              + f"; models {sorted(m for m, s in server.registry.models.items() if s.versions)}"
              + " (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def build_parser() -> argparse.ArgumentParser:
    from keras_liver.serving.client import DEFAULT_BATCH_SIZE, DEFAULT_REST_URL, DEFAULT_TIMEOUT
    from keras_liver.serving.config import DEFAULT_ROOT, POLICIES

    p = argparse.ArgumentParser(prog="python -m keras_liver.serving",
                                description="TensorFlow Serving client, config and loopback server")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("predict", help="predict a NIfTI volume with a running TF Serving")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--model", required=True, help="model name in the server's models.config")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--url", default=DEFAULT_REST_URL, help="REST API (default %(default)s)")
    where.add_argument("--grpc", metavar="HOST:PORT", help="use gRPC at HOST:PORT instead")
    ver = s.add_mutually_exclusive_group()
    ver.add_argument("--version", type=int, default=None)
    ver.add_argument("--label", default=None, help="a version label of the config")
    s.add_argument("--signature", default="serve_hu", choices=("serve_hu", "serving_default"))
    s.add_argument("--preprocessing", default=None,
                   help="keras_liver_preprocessing.json (or its SavedModel folder); "
                        "needed by serving_default")
    s.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="slices per request (default %(default)s)")
    s.add_argument("--tta", default=None,
                   help="serving_default only: flips, e.g. vflip,hflip, or none (default: the "
                        "run's, from --preprocessing)")
    s.add_argument("--no-largest-component", action="store_true")
    s.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds per request (default %(default)s)")
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("write-config", help="write models.config for a folder of exports")
    s.add_argument("base_dir", help="folder of NAME/VERSION/saved_model.pb")
    s.add_argument("--out", default=None, help="default BASE_DIR/models.config")
    s.add_argument("--root", default=DEFAULT_ROOT, help="where the server sees BASE_DIR")
    s.add_argument("--policy", default="specific", choices=POLICIES)
    s.set_defaults(func=_cmd_write_config)

    s = sub.add_parser("project-config", help="write the config of every experiment's model")
    s.add_argument("--out", default=os.path.join("serving", "models.config"))
    s.add_argument("--root", default=DEFAULT_ROOT)
    s.set_defaults(func=_cmd_project_config)

    s = sub.add_parser("serve-test", help="run the loopback TF Serving stand-in (for testing)")
    s.add_argument("config", help="models.config")
    s.add_argument("--mount", type=_mount, action="append",
                   help="SERVER_PATH=LOCAL_DIR, as docker -v LOCAL_DIR:SERVER_PATH")
    s.add_argument("--rest-port", type=int, default=8501)
    s.add_argument("--grpc-port", type=int, default=8500)
    s.add_argument("--no-grpc", action="store_true")
    s.set_defaults(func=_cmd_serve_test)
    return p


def main(argv=None) -> int:
    from keras_liver.errors import DataError, ModelInputError
    from keras_liver.serving.client import ServingError
    from keras_liver.serving.config import ModelConfigError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ServingError, ModelConfigError, DataError, ModelInputError, FileNotFoundError,
            ValueError, ImportError) as err:
        print(f"keras-liver serving: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
