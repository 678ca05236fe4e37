"""Experiment files: one YAML document says which data, how to clean and split it, which models with which
hyperparameters, and how to evaluate them. `load_config(path)` validates the whole file up front, models'
hyperparameters included (against each model's `config_model()`), so a typo fails in one line that names the
file and the key path, before any data is read:

    configs/x.yaml: models.vae.params.latnt_dim: unknown hyperparameter of multvae

Data paths may use environment variables, `${NAME}` or `${NAME:-default}`; a relative path (after expansion)
is resolved against the config file's folder, a relative value taken from the environment against the current
directory. So `path: ${GENREC_DATA:-../../shared/data}/movielens-100k` reads $GENREC_DATA when it is set and
otherwise the shared data folder two levels above the config file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from genrec.evaluation.evaluate import DEFAULT_METRICS
from genrec.evaluation.metrics import RANKING_METRICS
from genrec.evaluation.sampled import SAMPLED_METRICS


class ConfigError(ValueError):
    """A bad experiment file. The message is one line naming the file and the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Columns(_Strict):
    """Column names of a CSV/Parquet table."""

    user: str = "user"
    item: str = "item"
    value: str | None = None
    timestamp: str | None = None


class SyntheticData(_Strict):
    """Parameters of `genrec.data.synthetic.make_synthetic` (seed: the experiment's seed when unset)."""

    n_users: int = Field(2000, ge=2)
    n_items: int = Field(1500, ge=2)
    n_tastes: int = Field(12, ge=1)
    mean_history: float = Field(40.0, gt=0)
    implicit: bool = False
    seed: int | None = None


class DataConfig(_Strict):
    """format: movielens (u.data, ratings.dat, ratings.csv), lightgcn (train.txt/test.txt, or a folder holding
    them), sequence (`user i1 i2 ...`), csv, parquet or synthetic. path: file or folder."""

    format: Literal["movielens", "lightgcn", "sequence", "csv", "parquet", "synthetic"]
    path: str | None = None
    test_path: str | None = None
    columns: Columns | None = None
    sep: str | None = None
    synthetic: SyntheticData | None = None

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if self.format == "synthetic":
            if self.path is not None:
                raise ValueError("path: synthetic data has no path")
            self.synthetic = self.synthetic or SyntheticData()
        elif self.path is None:
            raise ValueError(f"path: required for format {self.format}")
        if self.synthetic is not None and self.format != "synthetic":
            raise ValueError(f"synthetic: only for format synthetic, not {self.format}")
        if self.columns is not None and self.format not in ("csv", "parquet"):
            raise ValueError(f"columns: only for csv and parquet, not {self.format}")
        if self.test_path is not None and self.format != "lightgcn":
            raise ValueError("test_path: only for format lightgcn")
        return self


class CleanConfig(_Strict):
    """Applied in this order: min_value (keep value >= min_value, then 1.0 everywhere if binarize), dedup
    (keep the first or last event of a repeated user-item pair), k-core (k for both sides, or user_k/item_k),
    then minimum counts per user and item."""

    min_value: float | None = None
    binarize: bool = True
    dedup: Literal["first", "last"] | None = None
    k_core: int | None = Field(None, ge=1)
    user_k: int | None = Field(None, ge=1)
    item_k: int | None = Field(None, ge=1)
    min_user: int = Field(1, ge=1)
    min_item: int = Field(1, ge=1)

    @property
    def is_noop(self) -> bool:
        return self == CleanConfig()


class StrongGeneralization(_Strict):
    """Held-out users (Liang et al. 2018): n_heldout users (count, or share if < 1) for test and as many for
    validation; fold_in of each held-out user's events is the history, the rest the targets."""

    protocol: Literal["strong_generalization"]
    n_heldout: int | float = Field(0.1, gt=0)
    fold_in: float = Field(0.8, gt=0, lt=1)
    validation: bool = True


class FixedSplit(_Strict):
    """Given train and test files (LightGCN format)."""

    protocol: Literal["fixed"]


class LeaveOneOut(_Strict):
    """Per user by time: last event test, second-to-last validation; users shorter than min_length train only."""

    protocol: Literal["leave_one_out"]
    validation: bool = True
    min_length: int = Field(3, ge=2)


class TemporalSplit(_Strict):
    """One global time cut: the latest test_fraction of events are test targets, validation_fraction before."""

    protocol: Literal["temporal"]
    test_fraction: float = Field(0.2, gt=0, lt=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1)


class RandomHoldout(_Strict):
    """Per user, a random share of events are test targets and another share validation targets."""

    protocol: Literal["random_holdout"]
    test_fraction: float = Field(0.2, gt=0, lt=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1)


SplitConfig = Annotated[
    StrongGeneralization | FixedSplit | LeaveOneOut | TemporalSplit | RandomHoldout,
    Field(discriminator="protocol"),
]


class ModelSpec(_Strict):
    """model: a registry name (genrec.models.get_model_class); params: its constructor arguments."""

    model: str
    params: dict[str, Any] = Field(default_factory=dict)


def _known(names: list[str], known, what: str) -> list[str]:
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {what} {name!r}; known: {', '.join(known)}")
    return names


class SampledConfig(_Strict):
    """Also rank each user's targets among `negatives` sampled items (keys labelled e.g. uni100:hr@10), to compare
    with papers that report sampled metrics; the full-ranking metrics stay the headline."""

    negatives: int = Field(100, ge=1)
    sampling: Literal["uniform", "popularity"] = "uniform"
    metrics: list[str] = Field(default_factory=lambda: ["hr", "ndcg"], min_length=1)

    @pydantic.field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        return _known(metrics, SAMPLED_METRICS, "sampled metric")


class EvaluationConfig(_Strict):
    """ks: cut-offs; metrics: ranking metrics (genrec.evaluation.metrics.RANKING_METRICS); buckets: also
    report metrics per user-activity bucket (user_buckets quantiles) and item-popularity group (item_shares);
    sampled: sampled metrics as well (off unless given)."""

    ks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [10, 20], min_length=1)
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS), min_length=1)
    buckets: bool = True
    user_buckets: int = Field(4, ge=1)
    item_shares: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [0.2, 0.3, 0.5])
    sampled: SampledConfig | None = None

    @pydantic.field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        return _known(metrics, RANKING_METRICS, "metric")


class ExperimentConfig(_Strict):
    name: str
    seed: int = 0
    data: DataConfig
    clean: CleanConfig = Field(default_factory=CleanConfig)
    split: SplitConfig
    models: dict[str, ModelSpec] = Field(min_length=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    def to_yaml(self) -> str:
        """The resolved configuration (absolute data paths, every default written out)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# loading ------------------------------------------------------------------------------------------------------
def load_config(path: str | Path) -> ExperimentConfig:
    """Read, expand and validate an experiment file; every problem is a ConfigError of one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: {where}YAML syntax error: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    return config_from_dict(raw, source=str(path), base_dir=path.parent)


def config_from_dict(raw: Any, source: str = "<config>", base_dir: str | Path = ".") -> ExperimentConfig:
    """Validate a parsed config (a dict, as from YAML); relative data paths are resolved against base_dir."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys (name, data, split, models, ...), "
                          f"got {type(raw).__name__}")
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ConfigError(f"{source}: {_first_error(e)}") from None
    for key in ("path", "test_path"):
        value = getattr(cfg.data, key)
        if value is not None:
            setattr(cfg.data, key, _resolve_path(value, Path(base_dir), f"{source}: data.{key}"))
    for name, spec in cfg.models.items():
        _validate_model(spec, f"{source}: models.{name}")
    return cfg


def _first_error(e: pydantic.ValidationError) -> str:
    """'key.path: message' for the first error; the split protocol's tag is left out of the path."""
    err = e.errors()[0]
    loc = [str(x) for x in err["loc"]]
    if len(loc) >= 2 and loc[0] == "split":
        loc = [loc[0]] + loc[2:]
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "union_tag_invalid":
        msg = f"unknown protocol {err['input'].get('protocol')!r}; known: {err['ctx']['expected_tags']}"
    elif err["type"] == "union_tag_not_found":
        msg = "protocol is required"
    msg = msg.removeprefix("Value error, ")
    if msg.split(":", 1)[0] in {"path", "synthetic", "columns", "test_path"} and ":" in msg:
        sub, msg = msg.split(":", 1)  # a model validator naming its field
        loc, msg = loc + [sub], msg.strip()
    return f"{'.'.join(loc) or '(top level)'}: {msg}"


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _resolve_path(value: str, base_dir: Path, where: str) -> str:
    """Expand ${NAME} / ${NAME:-default}; relative results resolve against base_dir (env values: the cwd)."""

    def expand(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        env = os.environ.get(name)
        if env:
            return env if os.path.isabs(env) else os.path.abspath(env)
        if default is None:
            raise ConfigError(f"{where}: environment variable {name} is not set (or write ${{{name}:-default}})")
        return default

    expanded = os.path.expanduser(_VAR.sub(expand, value))
    p = Path(expanded)
    return str((p if p.is_absolute() else base_dir / p).resolve())


def _validate_model(spec: ModelSpec, where: str) -> None:
    from genrec.models import get_model_class

    try:
        cls = get_model_class(spec.model)
    except KeyError as e:
        raise ConfigError(f"{where}.model: {e.args[0]}") from None
    try:
        cls.config_model().model_validate(spec.params)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        msg = f"unknown hyperparameter of {spec.model}" if err["type"] == "extra_forbidden" else \
            f"{err['msg']} ({spec.model}, got {err.get('input')!r})"
        raise ConfigError(f"{where}.params.{key}: {msg}") from None
    options = spec.params.get("train_options")
    if isinstance(options, dict):
        from genrec.training.trainer import TrainOptions

        try:
            TrainOptions.model_validate(options)
        except pydantic.ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"])
            msg = "unknown training option" if err["type"] == "extra_forbidden" else err["msg"]
            raise ConfigError(f"{where}.params.train_options.{key}: {msg}") from None
