"""Facts declared once in the core, and every copy of them checked against it: the SDK's
error codes (curve-client's ``SDK_CODES``) and the client.conf keys (``client_conf!``)."""

from __future__ import annotations

import ast
import errno
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import curvefs
from curvefs import _core, exceptions
from curvefs.client import ClientOptions

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "stubs" / "curvefs" / "_core.pyi"


def _stub_constants() -> dict[str, int]:
    consts: dict[str, int] = {}
    for node in ast.parse(STUB.read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, int)
        ):
            consts[node.target.id] = node.value.value
    return consts


def test_the_stubs_error_constants_are_the_cores_table() -> None:
    stub = {k: v for k, v in _stub_constants().items() if k.startswith("CURVE_ERROR_")}
    table = {f"CURVE_ERROR_{name}": code for name, code, *_ in _core.SDK_CODES}
    assert stub == {"CURVE_ERROR_OK": 0, **table}


def test_the_binding_constants_are_the_cores_table() -> None:
    for name, code, *_ in _core.SDK_CODES:
        assert getattr(_core, f"CURVE_ERROR_{name}") == code
        assert getattr(curvefs, f"CURVE_ERROR_{name}", code) == code
        assert _core.ERROR_NAMES[code] == name


@pytest.mark.parametrize("row", _core.SDK_CODES, ids=[r[0] for r in _core.SDK_CODES])
def test_each_code_raises_the_class_errno_and_builtin_of_the_table(
    row: tuple[str, int, str, str, str, str],
) -> None:
    name, code, message, errno_name, class_name, builtin = row
    exc = exceptions.from_code(-code, "why")
    assert type(exc) is getattr(exceptions, class_name)
    assert class_name in exceptions.__all__
    assert exc.errno == getattr(errno, errno_name)
    assert exc.code == -code and exc.code_name == name
    assert type(exc).__doc__ == f"{name} (-{code}): {message}."
    bases = {b.__name__ for b in type(exc).__mro__[1:]} - {"CurveError", "OSError"}
    expected = {builtin} if builtin else set()
    assert bases - {"Exception", "BaseException", "object"} == expected


def test_every_exception_class_has_a_row() -> None:
    classes = {
        n
        for n in exceptions.__all__
        if isinstance(getattr(exceptions, n), type) and n != "CurveError"
    }
    assert classes == {row[4] for row in _core.SDK_CODES}


def test_session_and_deleting_codes_carry_their_upstream_meaning() -> None:
    # DELETING: the volume is in a transition that refuses the call. No session at the MDS
    # for an open file: the file exists, the handle is stale (as EPOCH_TOO_OLD).
    assert exceptions.from_code(-5).errno == errno.EBUSY
    assert exceptions.from_code(-14).errno == errno.ESTALE
    assert exceptions.from_code(-25).errno == errno.ESTALE


_KIND_TYPES: dict[str, object] = {
    "int": int,
    "bool": bool,
    "transport": typing.Literal["baidu_std", "grpc"],
}


def test_client_options_type_is_the_cores_declaration() -> None:
    hints = typing.get_type_hints(ClientOptions)
    declared = {
        field: kind
        for field, key, kind, *_ in _core.ClientHandle.conf_keys()
        if key != "mds.listen.addr"
    }
    assert set(hints) == set(declared)
    for field, kind in declared.items():
        assert hints[field] == _KIND_TYPES[kind], field
    assert set(curvefs.conf_options()) == {*declared, "mds_addrs"}


def test_every_option_of_the_declaration_is_accepted_at_its_default(tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    conf.write_text("mds.listen.addr=127.0.0.1:1\n", encoding="utf-8")
    options: dict[str, object] = {}
    for field, key, kind, default, *_ in _core.ClientHandle.conf_keys():
        if key == "mds.listen.addr":
            continue
        if kind == "int":
            options[field] = int(default)
        elif kind == "bool":
            options[field] = default == "true"
        else:
            options[field] = default
    client = curvefs.Client(conf, user="u", **options)  # type: ignore[arg-type]
    client.close()


def test_the_docs_tables_are_generated_from_the_core() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs_tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
