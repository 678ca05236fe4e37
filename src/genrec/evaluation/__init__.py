"""Full-ranking evaluation: `evaluate(model, holdout, ks, train=...)` and the metric functions; sampled metrics,
labelled as such, only through `evaluate_sampled`."""

from genrec.evaluation.evaluate import Results, evaluate, evaluate_topk
from genrec.evaluation.sampled import evaluate_sampled

__all__ = ["Results", "evaluate", "evaluate_sampled", "evaluate_topk"]
