"""keras_liver.fileio: atomic writes and JSON reads that name the file and the problem."""
import json
import os

import pytest

from keras_liver import cascade, fileio, linked, training
from keras_liver.data import schema
from keras_liver.serving import client


def test_write_atomically_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")

    def fail(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        fileio.write_atomically(str(path), fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.json"]      # no partial file left beside it


def test_read_json_names_the_file_and_what_is_wrong(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"a": [1, 2]}))
    assert fileio.read_json(str(good)) == {"a": [1, 2]}
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": [1, ')                     # truncated
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON \(.*line 1 column"):
        fileio.read_json(str(bad))
    with pytest.raises(FileNotFoundError, match=r"none\.json: what it should be"):
        fileio.read_json(str(tmp_path / "none.json"), missing="what it should be")
    with pytest.raises(FileNotFoundError):
        fileio.read_json(str(tmp_path / "none.json"))


def test_run_directory_readers_say_which_run_file_is_missing_or_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json: not a training run directory"):
        training.read_run_config(str(tmp_path))
    (tmp_path / linked.LINKED_FILE).write_text("{")
    with pytest.raises(ValueError, match=rf"{linked.LINKED_FILE}: not valid JSON"):
        linked.read_linked(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a cascade run directory"):
        cascade.read_cascade(str(tmp_path))


def test_manifest_and_serving_preprocessing_readers_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest\.json: no manifest; convert a dataset"):
        schema.load_manifest(str(tmp_path))
    (tmp_path / schema.MANIFEST).write_text('{"format_version": ')
    with pytest.raises(ValueError, match=r"manifest\.json: not valid JSON"):
        schema.load_manifest(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="preprocessing file not found"):
        client.load_preprocessing(str(tmp_path))
    (tmp_path / client.PREPROCESSING_ASSET).write_text("[1,")
    with pytest.raises(ValueError, match=rf"{client.PREPROCESSING_ASSET}: not valid JSON"):
        client.load_preprocessing(str(tmp_path))


def test_experiment_and_resume_config_readers_name_the_file(tmp_path, monkeypatch):
    from keras_liver.experiments import common
    monkeypatch.setenv(common.ENV_EXPERIMENTS, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"bada\.json: no experiment file for 'bada'"):
        common.load_experiment("bada")
    (tmp_path / "bada.json").write_text('{"presets": {')
    with pytest.raises(ValueError, match=r"bada\.json: not valid JSON"):
        common.load_experiment("bada")
    run = tmp_path / "run"
    run.mkdir()
    (run / training.CONFIG_FILE).write_text('{"model": ')
    with pytest.raises(ValueError, match=rf"{training.CONFIG_FILE}: not valid JSON"):
        training._changed_keys(str(run), {"model": {}}, ("model",))
