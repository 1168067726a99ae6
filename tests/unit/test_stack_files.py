"""The files of managed stacks: written whole by rename, the .env private, names that cannot lead
out of the stacks directory, files edited by hand that are not what the gateway writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nekzus.stacks.files import COMPOSE_FILE, ENV_FILE, StackFiles, services_of

COMPOSE = "services:\n  web:\n    image: x\n  db:\n    image: y\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_read_and_get_a_stack(tmp_path: Path) -> None:
    files = StackFiles(tmp_path / "stacks")
    assert files.all() == [] and files.get("shop") is None and files.read("shop") is None
    files.write("shop", COMPOSE, "TOKEN=s3cret\n")
    folder = tmp_path / "stacks" / "shop"
    assert (folder / COMPOSE_FILE).read_text() == COMPOSE
    assert mode(folder / ENV_FILE) == 0o600 and mode(folder) == 0o700
    assert files.read("shop") == (COMPOSE, "TOKEN=s3cret\n")
    stack = files.get("shop")
    assert stack is not None and stack.services == ("web", "db") and stack.has_env
    assert stack.updated_at == int((folder / COMPOSE_FILE).stat().st_mtime)
    project = stack.project()
    assert project.files == (folder / COMPOSE_FILE,) and project.env_file == folder / ENV_FILE
    assert project.directory == folder and project.name == "shop"
    # No temporary file is left beside the stack's own.
    assert sorted(os.listdir(folder)) == [ENV_FILE, COMPOSE_FILE]


def test_env_none_removes_it_and_delete_removes_the_stack(tmp_path: Path) -> None:
    files = StackFiles(tmp_path)
    files.write("shop", COMPOSE, "A=1\n")
    files.write("shop", COMPOSE, None)
    assert files.read("shop") == (COMPOSE, None)
    stack = files.get("shop")
    assert stack is not None and not stack.has_env and stack.project().env_file is None
    assert files.delete("shop") and not (tmp_path / "shop").exists()
    assert not files.delete("shop")


def test_a_failed_write_leaves_the_old_files(tmp_path: Path) -> None:
    files = StackFiles(tmp_path)
    files.write("shop", COMPOSE, "A=1\n")
    with pytest.raises(UnicodeEncodeError):
        files.write("shop", "services: {}\n\ud800", "B=2\n")
    # The .env goes first, whole; the compose file that failed never replaced the old one.
    assert files.read("shop") == (COMPOSE, "B=2\n")
    assert sorted(os.listdir(tmp_path / "shop")) == [ENV_FILE, COMPOSE_FILE]


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "A", "-a", "", "a" * 64, ".hidden"])
def test_no_path_is_built_from_a_name_that_is_not_a_stacks(tmp_path: Path, name: str) -> None:
    files = StackFiles(tmp_path)
    for call in (files.get, files.read, files.delete, files.directory):
        with pytest.raises(ValueError):
            call(name)
    with pytest.raises(ValueError):
        files.write(name, COMPOSE, None)


def test_the_list_passes_over_what_is_not_a_stack(tmp_path: Path) -> None:
    files = StackFiles(tmp_path)
    files.write("shop", COMPOSE, None)
    (tmp_path / "empty").mkdir()
    (tmp_path / "Upper").mkdir()
    (tmp_path / "Upper" / COMPOSE_FILE).write_text(COMPOSE)
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir-compose" / COMPOSE_FILE).mkdir(parents=True)
    with files.staging("shop") as folder:
        (Path(folder) / COMPOSE_FILE).write_text(COMPOSE)
        assert mode(Path(folder)) == 0o700 and Path(folder).parent == tmp_path
        assert [s.name for s in files.all()] == ["shop"]
    assert sorted(os.listdir(tmp_path)) == ["Upper", "dir-compose", "empty", "file", "shop"]


def test_files_edited_by_hand_are_read_as_far_as_they_can_be(tmp_path: Path) -> None:
    files = StackFiles(tmp_path)
    folder = tmp_path / "hand"
    folder.mkdir()
    (folder / COMPOSE_FILE).write_bytes(b"services:\n  caf\xe9:\n    image: x\n")
    (folder / ENV_FILE).write_bytes(b"A=\xff\n")
    stack = files.get("hand")
    assert stack is not None and stack.services == ("caf\ufffd",)
    assert files.read("hand") == ("services:\n  caf\ufffd:\n    image: x\n", "A=\ufffd\n")


@pytest.mark.parametrize(
    "compose",
    [
        "services: [",
        "just text",
        "services: [web, db]",
        "- a\n- b",
        "",
        "x-deep: " + "[" * 5000 + "]" * 5000 + "\nservices:\n  web: {}\n",
    ],
)
def test_a_file_whose_services_cannot_be_read_names_none(compose: str) -> None:
    assert services_of(compose) == ()


def test_services_keep_the_files_order() -> None:
    assert services_of("services:\n  z: {}\n  a: {}\n  1: {}\n") == ("z", "a", "1")
