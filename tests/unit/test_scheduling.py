"""How `pytest -n` groups the tests (tests/scheduling.py): by the shared fixtures they name."""

from __future__ import annotations

from pathlib import Path

from tests.scheduling import group_of_file

CONFTEST = """
import pytest

@pytest.fixture(scope="package")
def loop(): ...

@pytest.fixture(scope="module")
def ingest(): ...

@pytest.fixture
def cheap(): ...
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_tests_group_by_the_widest_shared_fixture_they_name(tmp_path: Path) -> None:
    write(tmp_path / "tests" / "e2e" / "conftest.py", CONFTEST)
    e2e = tmp_path / "tests" / "e2e"
    uses_loop = write(e2e / "test_a.py", "def test_x(loop, ingest): ...\n")
    through_a_fixture = write(
        e2e / "test_b.py", "import pytest\n@pytest.fixture\ndef mine(loop): ...\ndef test_y(mine): ...\n"
    )
    uses_ingest = write(e2e / "test_c.py", "async def test_z(ingest, cheap): ...\n")
    a_helper_only = write(e2e / "test_d.py", "def _helper(loop): ...\ndef test_w(cheap, tmp_path): ...\n")
    outside = write(tmp_path / "tests" / "unit" / "test_e.py", "def test_v(loop): ...\n")

    assert group_of_file(uses_loop, tmp_path) == "tests/e2e::loop"
    assert group_of_file(through_a_fixture, tmp_path) == "tests/e2e::loop"
    assert group_of_file(uses_ingest, tmp_path) == "tests/e2e/test_c.py"
    assert group_of_file(a_helper_only, tmp_path) is None
    assert group_of_file(outside, tmp_path) is None  # that conftest is not in its reach


def test_a_file_s_own_module_fixture_groups_its_tests(tmp_path: Path) -> None:
    own = write(
        tmp_path / "tests" / "test_f.py",
        'import pytest\n@pytest.fixture(scope="module")\ndef server(): ...\ndef test_u(server): ...\n',
    )
    assert group_of_file(own, tmp_path) == "tests/test_f.py"


def test_a_file_may_ask_for_its_own_copy_of_a_package_fixture(tmp_path: Path) -> None:
    write(tmp_path / "tests" / "e2e" / "conftest.py", CONFTEST)
    e2e = tmp_path / "tests" / "e2e"
    first = write(e2e / "test_g.py", 'FIXTURE_COPY = "browser"\ndef test_t(loop): ...\n')
    second = write(e2e / "test_h.py", 'FIXTURE_COPY = "browser"\nasync def test_s(loop): ...\n')
    default = write(e2e / "test_i.py", "def test_r(loop): ...\n")
    module_only = write(e2e / "test_j.py", 'FIXTURE_COPY = "browser"\ndef test_q(ingest): ...\n')

    assert group_of_file(first, tmp_path) == group_of_file(second, tmp_path) == "tests/e2e::loop::browser"
    assert group_of_file(default, tmp_path) == "tests/e2e::loop"
    assert group_of_file(module_only, tmp_path) == "tests/e2e/test_j.py"  # a module fixture is per file anyway
