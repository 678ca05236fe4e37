"""Interaction data: the canonical table, loaders for public formats, cleaning, splits and synthetic data."""

from genrec.data.interactions import DataError, Histories, IdMap, Interactions
from genrec.data.loaders import load_lightgcn, load_movielens, load_sequences, load_table

__all__ = ["DataError", "Histories", "IdMap", "Interactions", "load_lightgcn", "load_movielens", "load_sequences",
           "load_table"]
