"""Built-in recommenders. Importing this package registers them; `get_model_class(name)` finds one."""

from genrec.models.base import MODELS, Recommendations, Recommender, get_model_class, register
from genrec.models.popularity import Popularity

__all__ = ["MODELS", "Popularity", "Recommendations", "Recommender", "get_model_class", "register"]
