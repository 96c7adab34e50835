from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Discriminator, StringConstraints, Tag
from typing_extensions import TypeAliasType

T = TypeVar("T")


NO_NUL = r"^[^\x00]*$"

Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
"""The type of every string the API accepts (body, form and query fields, JSON option keys and
values).

PostgreSQL ``text``/``varchar`` and JSONB cannot hold NUL (``\\x00``): one in a name, a search
term or a tag reached the database and answered 500 there (SQLite stored it). ``Text`` refuses
it in validation instead, on every database: a 422 ``validation_error`` naming the field, type
``string_pattern_mismatch``, message "must not contain NUL characters" (the API's handler,
:mod:`app.api.errors`, words pydantic's "String should match pattern ..." for this pattern).

A pattern rather than an ``AfterValidator``: it stays a plain string constraint, so it composes
with the others (``Annotated[Text, StringConstraints(strip_whitespace=True, max_length=...)]``,
``Query(max_length=...)`` on ``Text | None``) in one schema, in the usual order (strip, length,
pattern), with their usual messages; the OpenAPI schema shows it as a ``pattern`` too.
"""


_JSON_KINDS = {str: "str", bool: "bool", int: "int", float: "float", type(None): "null"}


def _json_kind(value: Any) -> str | None:
    if isinstance(value, list | dict):
        return type(value).__name__
    return _JSON_KINDS.get(type(value))


if TYPE_CHECKING:  # mypy resolves the recursive alias; pydantic needs a TypeAliasType
    TextJSON = Union[Text, bool, int, float, None, list["TextJSON"], dict[Text, "TextJSON"]]  # noqa: UP007
else:  # tagged by the value's type (as pydantic's JsonValue), so an error names one branch
    TextJSON = TypeAliasType(
        "TextJSON",
        Annotated[
            Annotated[Text, Tag("str")]
            | Annotated[bool, Tag("bool")]
            | Annotated[int, Tag("int")]
            | Annotated[float, Tag("float")]
            | Annotated[None, Tag("null")]
            | Annotated[list["TextJSON"], Tag("list")]
            | Annotated[dict[Text, "TextJSON"], Tag("dict")],
            Discriminator(
                _json_kind,
                custom_error_type="invalid_json_value",
                custom_error_message="must be a JSON value",
            ),
        ],
    )
"""Free-form JSON (e.g. learn options) whose keys and strings are :data:`Text`: it is stored in
JSONB on PostgreSQL, which refuses NUL as well."""


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, object] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
