"""Schema contracts: the repo's exported versions, and the compatibility modes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pytest
from pydantic import Field
from typer.testing import CliRunner

from eddyline.cli import app
from eddyline.schemas import contracts
from eddyline.schemas.annotations import RandomizedResponse
from eddyline.schemas.errors import SchemaError
from eddyline.schemas.events import BaseEvent
from eddyline.schemas.registry import SchemaRegistry


def test_the_repos_published_schemas_are_exported_and_unchanged() -> None:
    assert contracts.check() == []


def _exec(source: str, ns: dict[str, object]) -> None:
    # dont_inherit: this file's `from __future__ import annotations` would make the fixture's
    # annotations strings that pydantic cannot resolve outside a module.
    exec(compile(source, "<fixture>", "exec", dont_inherit=True), ns)


def _models(registry: SchemaRegistry, mode: str, v2_fields: str) -> None:
    """Define checkout v1 and a v2 with ``v2_fields`` on ``registry``."""
    ns: dict[str, object] = {
        "BaseEvent": BaseEvent,
        "ClassVar": ClassVar,
        "registry": registry,
        "Annotated": Annotated,
        "Field": Field,
        "Literal": Literal,
    }
    _exec(
        f"""
class CheckoutV1(BaseEvent):
    event_name: ClassVar[str] = "checkout"
    event_version: ClassVar[int] = 1
    compatibility: ClassVar[str] = "{mode}"
    event_registry: ClassVar[object] = registry
    amount: float
    currency: Literal["EUR", "USD"]
""",
        ns,
    )
    _exec(
        f"""
class CheckoutV2(BaseEvent):
    event_name: ClassVar[str] = "checkout"
    event_version: ClassVar[int] = 2
    compatibility: ClassVar[str] = "{mode}"
    event_registry: ClassVar[object] = registry
{v2_fields}
""",
        ns,
    )


def _check(tmp_path: Path, mode: str, v2_fields: str) -> list[str]:
    registry = SchemaRegistry()
    _models(registry, mode, v2_fields)
    contracts.export(tmp_path, registry)
    return contracts.check(tmp_path, registry)


COMPATIBLE_OPTIONAL_FIELD = """
    amount: float
    currency: Literal["EUR", "USD"]
    coupon: str | None = None
"""
BREAKING_REQUIRED_FIELD = """
    amount: float
    currency: Literal["EUR", "USD"]
    country: str
"""
NARROWED_ENUM = """
    amount: float
    currency: Literal["EUR"]
"""


def test_backward_accepts_a_new_optional_field(tmp_path: Path) -> None:
    assert _check(tmp_path, "BACKWARD", COMPATIBLE_OPTIONAL_FIELD) == []


def test_backward_rejects_a_new_required_field(tmp_path: Path) -> None:
    [problem] = _check(tmp_path, "BACKWARD", BREAKING_REQUIRED_FIELD)
    assert "checkout:2" in problem and "country" in problem and "BACKWARD" in problem


def test_forward_rejects_a_widened_enum_but_backward_accepts_it(tmp_path: Path) -> None:
    widened = COMPATIBLE_OPTIONAL_FIELD.replace(
        'Literal["EUR", "USD"]', 'Literal["EUR", "USD", "GBP"]'
    )
    assert _check(tmp_path / "b", "BACKWARD", widened) == []
    assert any("currency" in p for p in _check(tmp_path / "f", "FORWARD", widened))


def test_full_rejects_a_narrowed_enum_in_one_direction(tmp_path: Path) -> None:
    problems = _check(tmp_path, "FULL", NARROWED_ENUM)
    assert [p for p in problems if "BACKWARD" in p] and not [p for p in problems if "FORWARD" in p]


def test_transitive_modes_check_every_earlier_version(tmp_path: Path) -> None:
    v1 = {"properties": {"a": {"type": "integer"}}, "required": ["a"]}
    v2 = {"properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "required": ["a"]}
    v3 = {"properties": {"b": {"type": "string"}}, "required": ["b"]}  # b required, absent in v1
    docs = {
        v: {"compatibility": m, "schema": s}
        for v, s, m in [(1, v1, "BACKWARD"), (2, v2, "BACKWARD"), (3, v3, "BACKWARD_TRANSITIVE")]
    }
    problems = contracts._against_history(docs, 3)
    assert any(p.startswith("vs v1") for p in problems)
    docs[3]["compatibility"] = "BACKWARD"  # only against v2, where b exists
    assert contracts._against_history(docs, 3) == []


def test_editing_a_published_version_is_caught(tmp_path: Path) -> None:
    published = SchemaRegistry()
    _models(published, "BACKWARD", COMPATIBLE_OPTIONAL_FIELD)
    contracts.export(tmp_path, published)
    edited = SchemaRegistry()  # the same v2, edited in place after publication
    _models(edited, "BACKWARD", COMPATIBLE_OPTIONAL_FIELD.replace("coupon", "voucher"))
    problems = contracts.check(tmp_path, edited)
    assert [p for p in problems if "checkout:2" in p and "changed since it was exported" in p]


def test_cli_check_exits_1_on_a_breaking_fixture(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["schemas", "check", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "not exported" in result.stdout
    assert runner.invoke(app, ["schemas", "export", "--dir", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["schemas", "check", "--dir", str(tmp_path)]).exit_code == 0


def test_randomized_response_categories_must_match_a_literal() -> None:
    with pytest.raises(SchemaError, match="differ from the field's values"):

        class Bad(BaseEvent):
            event_name: ClassVar[str] = "bad_rr"
            event_registry: ClassVar[SchemaRegistry] = SchemaRegistry()
            plan: Annotated[Literal["free", "pro"], RandomizedResponse(("free", "gold"), 1.0)]
