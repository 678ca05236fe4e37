"""Request and response bodies of the HTTP API, with the limits every request is held to.

Ids are JSON integers or non-empty strings (at most 256 characters, no control characters); both are
matched against the model's ids by their text form. Limits: k in 1..1000, a history of at most 10,000 items,
at most 10,000 events per request, at most 32 filter keys of at most 1,000 values each.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints

MAX_K = 1000
MAX_HISTORY = 10_000
MAX_EVENTS = 10_000
MAX_EXPLAINED = 10  # explanations are given for the first 10 recommendations at most


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return text


Text = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"),
                 AfterValidator(_utf8)]
Id = Annotated[StrictInt | Text, Field(description="a raw id: integer or string")]
Scalar = StrictBool | StrictInt | Annotated[float, Field(allow_inf_nan=False)] | Text
FilterValue = Scalar | Annotated[list[Scalar], Field(min_length=1, max_length=1000)]
Strategy = Literal["known_user", "fold_in", "popularity_fallback"]


class ApiError(Exception):
    """A request the service refuses: answered with `status` and {"message": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def id_key(raw: int | str) -> str:
    """The text form under which ids are matched and stored."""
    return str(raw)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendationRequest(_Strict):
    """By `user_id` (a known user: their training history plus events recorded since), by `history` (a new
    user: fold-in), or both (the history is added to the known user's). With neither known, the most popular
    items (popularity_fallback)."""

    user_id: Id | None = None
    history: list[Id] | None = Field(None, max_length=MAX_HISTORY,
                                     description="item ids, oldest first; unknown ids are ignored and counted")
    k: int = Field(10, ge=1, le=MAX_K, description="number of items to return")
    exclude_seen: bool = Field(True, description="leave out the items of the user's history")
    filters: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], FilterValue] | None = Field(
        None, max_length=32, examples=[{"category": ["drama", "comedy"], "price_band": "low"}],
        description="only items whose attribute equals the value (or one of the values), for every key")
    explain: StrictBool = Field(False, description=f"explain the first {MAX_EXPLAINED} items, when available")


class RecommendedItem(BaseModel):
    item_id: int | str
    score: float
    explanation: dict | None = None


class RecommendationResponse(BaseModel):
    strategy: Strategy
    user_id: int | str | None
    items: list[RecommendedItem]
    history_length: int = Field(description="items the model scored this user from")
    unknown_history_items: int = Field(description="ids in the request's history the model does not know")
    model: str
    explanations: str | None = Field(None, description="why explanations are missing, when they were asked for")


class SimilarItemsResponse(BaseModel):
    item_id: int | str
    items: list[RecommendedItem]
    model: str


class EventIn(_Strict):
    user_id: Id
    item_id: Id
    value: Annotated[float, Field(allow_inf_nan=False, ge=-1e9, le=1e9)] = 1.0
    timestamp: Annotated[int, Field(ge=0, le=10**11, description="seconds since the epoch; default: now")] | None \
        = None


class EventsRequest(_Strict):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    written: int = Field(description="events committed to the store")
    unknown_items: int = Field(description="of which the served model does not know the item (kept for later)")


class ReloadRequest(_Strict):
    model_dir: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        None, description="bundle folder to load; default: the folder the server was started with")


class ReloadResponse(BaseModel):
    model: dict
    overlay_users: int


class DeleteUserResponse(BaseModel):
    user_id: str
    deleted_events: int


class Health(BaseModel):
    status: Literal["ok"]
    model: dict
    scoring: Literal["thread", "process"]
    store: str
    overlay_users: int


class ErrorResponse(BaseModel):
    message: str
    errors: list[dict] | None = None
