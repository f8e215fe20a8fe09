"""TensorFlow Serving: clients, the model server config, and a loopback test server.

``keras_liver.serving.client``   :class:`RestClient` (REST, port 8501) and :class:`GrpcClient`
                                 (gRPC, port 8500, ``serving`` extra): NIfTI in, labels out
``keras_liver.serving.config``   ``models.config`` reader/writer; :data:`PROJECT_MODELS`
``keras_liver.serving.testing``  :class:`LoopbackServer`, TF Serving's REST/gRPC answers from
                                 exported SavedModels (for tests; imports TensorFlow)

``python -m keras_liver.serving {predict,write-config,serve-test} ...`` runs them from a shell.
See ``docs/serving.md``.
"""
from keras_liver.serving.client import (DEFAULT_BATCH_SIZE, GrpcClient, RestClient, ServingError,
                                        load_preprocessing)
from keras_liver.serving.config import (PROJECT_MODELS, ModelConfig, ModelConfigError,
                                        models_config_text, parse_models_config,
                                        project_models_config, read_models_config, scan_exports,
                                        write_models_config)

__all__ = ["DEFAULT_BATCH_SIZE", "GrpcClient", "RestClient", "ServingError", "load_preprocessing",
           "PROJECT_MODELS", "ModelConfig", "ModelConfigError", "models_config_text",
           "parse_models_config", "project_models_config", "read_models_config", "scan_exports",
           "write_models_config"]
