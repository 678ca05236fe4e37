"""Experiment files: every mistake is one line naming the file and the key path; paths expand and resolve."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genrec.config import ConfigError, load_config
from genrec.experiment import demo_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

MINIMAL = {
    "name": "tiny",
    "data": {"format": "csv", "path": "data/events.csv", "columns": {"user": "u", "item": "i"}},
    "split": {"protocol": "strong_generalization", "n_heldout": 20},
    "models": {"pop": {"model": "popularity"}},
}


def write(folder: Path, doc, name: str = "x.yaml") -> Path:
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def with_(**changes) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    return doc


def test_a_valid_file_fills_in_defaults_and_resolves_the_data_path(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.seed == 0 and cfg.split.fold_in == 0.8 and cfg.evaluation.ks == [10, 20]
    assert cfg.data.path == str(tmp_path / "data" / "events.csv")
    assert cfg.clean.is_noop


def test_an_unknown_hyperparameter_names_the_file_model_and_key(tmp_path):
    doc = with_(models={"vae": {"model": "multvae", "params": {"latnt_dim": 200}}})
    path = write(tmp_path, doc)
    assert error_of(path) == f"{path}: models.vae.params.latnt_dim: unknown hyperparameter of multvae"


def test_a_hyperparameter_of_the_wrong_type_names_the_key_and_value(tmp_path):
    message = error_of(write(tmp_path, with_(models={"pop": {"model": "popularity", "params": {"by": 3}}})))
    assert "models.pop.params.by:" in message and "popularity" in message and "3" in message


def test_a_typo_in_training_options_names_the_option(tmp_path):
    doc = with_(models={"vae": {"model": "multvae", "params": {"train_options": {"pationce": 3}}}})
    assert error_of(write(tmp_path, doc)).endswith("models.vae.params.train_options.pationce: unknown training option")


def test_an_unknown_model_lists_the_known_ones(tmp_path):
    message = error_of(write(tmp_path, with_(models={"m": {"model": "multvea"}})))
    assert "models.m.model: unknown model 'multvea'" in message and "popularity" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"nmae": "x"}, "nmae: unknown key"),
        ({"split__fold_inn": 0.5}, "split.fold_inn: unknown key"),
        ({"split__fold_in": 1.5}, "split.fold_in: Input should be less than 1"),
        ({"split": {"protocol": "strong"}}, "split: unknown protocol 'strong'"),
        ({"split": {"n_heldout": 3}}, "split: protocol is required"),
        ({"clean__k_cor": 5}, "clean.k_cor: unknown key"),
        ({"evaluation__metrics": ["ndcg", "recal"]}, "evaluation.metrics: unknown metric 'recal'"),
        ({"evaluation__ks": [0]}, "evaluation.ks.0: Input should be greater than or equal to 1"),
        ({"evaluation__sampled": {"negatives": 100, "metrics": ["coverage"]}},
         "evaluation.sampled.metrics: unknown sampled metric 'coverage'"),
        ({"evaluation__sampled": {"negatives": 0}}, "evaluation.sampled.negatives: Input should be greater than"),
        ({"data": {"format": "csv"}}, "data.path: required for format csv"),
        ({"data": {"format": "movielens", "path": "x", "columns": {"user": "u"}}}, "data.columns: only for csv"),
        ({"data": {"format": "tsv", "path": "x"}}, "data.format: Input should be"),
        ({"models": {}}, "models: Dictionary should have at least 1 item"),
    ],
)
def test_a_wrong_key_or_value_is_one_line_naming_its_path(tmp_path, changes, expected):
    path = write(tmp_path, with_(**changes))
    message = error_of(path)
    assert message.startswith(f"{path}: {expected}"), message


def test_a_missing_required_section_is_named(tmp_path):
    doc = dict(MINIMAL)
    del doc["split"]
    assert error_of(write(tmp_path, doc)).endswith("split: Field required")


def test_yaml_syntax_errors_give_the_line(tmp_path):
    path = write(tmp_path, "name: x\ndata:\n  format: csv\n  path: [a, b\nsplit: {}\n")
    message = error_of(path)
    assert message.startswith(f"{path}: line ") and "YAML syntax error" in message


def test_a_file_that_is_not_a_mapping_is_rejected(tmp_path):
    assert "expected a mapping" in error_of(write(tmp_path, "- a\n- b\n"))


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_data_paths_expand_environment_variables_with_defaults(tmp_path, monkeypatch):
    doc = with_(data__path="${GENREC_TEST_DATA:-../shared}/events.csv")
    path = write(tmp_path, doc)
    monkeypatch.delenv("GENREC_TEST_DATA", raising=False)
    assert load_config(path).data.path == str((tmp_path.parent / "shared" / "events.csv").resolve())
    monkeypatch.setenv("GENREC_TEST_DATA", "/srv/data")
    assert load_config(path).data.path == "/srv/data/events.csv"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENREC_TEST_DATA", "relative")  # relative values come from the shell: the cwd
    assert load_config(path).data.path == str(tmp_path / "relative" / "events.csv")


def test_an_unset_variable_without_default_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("GENREC_TEST_DATA", raising=False)
    path = write(tmp_path, with_(data__path="${GENREC_TEST_DATA}/events.csv"))
    assert error_of(path) == f"{path}: data.path: environment variable GENREC_TEST_DATA is not set " \
                             "(or write ${GENREC_TEST_DATA:-default})"


def test_the_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    again = load_config(write(tmp_path, cfg.to_yaml(), "resolved.yaml"))
    assert again == cfg


@pytest.mark.parametrize("name", ["synthetic", "ml100k", "gowalla", "beauty"])
def test_the_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert "popularity" in {spec.model for spec in cfg.models.values()}
    if name != "synthetic":
        assert cfg.data.path.startswith(str(CONFIGS.parents[1])) or cfg.data.path.startswith("/")


def test_the_demo_runs_exactly_configs_synthetic_yaml():
    assert demo_config() == load_config(CONFIGS / "synthetic.yaml")
