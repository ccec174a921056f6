"""The spawned child that ModelOpt runs in: huge-page malloc in its environment, the parent's untouched."""
from __future__ import annotations

import os

import pytest

from utils.child_process import HUGE_PAGE_MALLOC, child_tunables, run_in_spawned_child


def _child_view(name: str) -> tuple[str | None, int]:
    return os.environ.get(name), os.getpid()


def _fails() -> None:
    raise ValueError("from the child")


def test_tunables_keep_the_users_own():
    assert child_tunables(None) == HUGE_PAGE_MALLOC
    assert child_tunables("glibc.malloc.arena_max=2") == f"glibc.malloc.arena_max=2:{HUGE_PAGE_MALLOC}"
    assert child_tunables("glibc.malloc.hugetlb=0") == "glibc.malloc.hugetlb=0"  # the user's choice wins


def test_child_gets_huge_page_malloc_and_the_parent_keeps_its_environment(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    tunables, pid = run_in_spawned_child(_child_view, "GLIBC_TUNABLES")
    assert tunables == HUGE_PAGE_MALLOC and pid != os.getpid()
    assert "GLIBC_TUNABLES" not in os.environ
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert run_in_spawned_child(_child_view, "GLIBC_TUNABLES")[0] == f"glibc.malloc.arena_max=2:{HUGE_PAGE_MALLOC}"
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"


def test_child_exception_reaches_the_caller():
    with pytest.raises(ValueError, match="from the child"):
        run_in_spawned_child(_fails)
