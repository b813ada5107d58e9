"""Small API types shared by several domains."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ApiModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class ErrorInfo(BaseModel):
    code: str
    message: str


class BatchResult(BaseModel):
    id: str
    ok: bool
    error: ErrorInfo | None = None


class BatchResponse(BaseModel):
    results: list[BatchResult]


class IdList(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=1000)


def paging(offset: int, limit: int) -> tuple[int, int]:
    return max(0, min(offset, 2_000_000)), max(1, min(limit, 200))
