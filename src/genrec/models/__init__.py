"""Built-in recommenders. Importing this package registers them; `get_model_class(name)` finds one."""

from genrec.models.als import BPR, IALS
from genrec.models.base import MODELS, Recommendations, Recommender, get_model_class, register
from genrec.models.bert4rec import BERT4Rec
from genrec.models.cfgan import CFGAN
from genrec.models.ease import EASE
from genrec.models.gru4rec import GRU4Rec
from genrec.models.itemknn import ItemKNN
from genrec.models.lda import LDA
from genrec.models.multvae import MultDAE, MultVAE
from genrec.models.popularity import Popularity
from genrec.models.recvae import RecVAE
from genrec.models.sasrec import SASRec

__all__ = [
    "BPR", "BERT4Rec", "CFGAN", "EASE", "GRU4Rec", "IALS", "ItemKNN", "LDA", "MODELS", "MultDAE", "MultVAE",
    "Popularity", "RecVAE", "Recommendations", "Recommender", "SASRec", "get_model_class", "register",
]
