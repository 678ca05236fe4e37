"""genrec: personalised top-N recommendations from deep generative models, beside honest baselines."""

__version__ = "0.1.0"

from genrec.data.interactions import DataError, Histories, IdMap, Interactions  # noqa: E402

__all__ = ["DataError", "Histories", "IdMap", "Interactions", "__version__"]
