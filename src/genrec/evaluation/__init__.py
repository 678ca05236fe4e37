"""Full-ranking evaluation: `evaluate(model, holdout, ks, train=...)` and the metric functions."""

from genrec.evaluation.evaluate import Results, evaluate, evaluate_topk

__all__ = ["Results", "evaluate", "evaluate_topk"]
