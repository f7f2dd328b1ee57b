"""Every edge of the table is driven end to end by the suite: through the real worker
(``consume`` subprocesses, the CLI in process, ``Worker`` threads) and the CLI, as the
stores of those tests counted it (tests/edges.py). Runs after every other test, and judges
only a run of the whole suite: a partial run drives a part of the table by design."""

from __future__ import annotations

import os

import pytest

from statemachine.edges import ALL_EDGES, KNOWN_EDGES
from tests import edges

pytestmark = pytest.mark.after_all


def test_every_edge_of_the_table_is_driven_end_to_end() -> None:
    if not edges.FULL_SUITE and os.environ.get("HEALTHFSM_EDGE_COVERAGE") != "1":
        pytest.skip(
            "judges the whole suite's end-to-end runs: run every test (python -m pytest),"
            " or set HEALTHFSM_EDGE_COVERAGE=1 to judge this partial run"
        )
    missing = [edge for edge in ALL_EDGES if not edges.DRIVEN[edge]]
    unknown = sorted(edge for edge in edges.DRIVEN if edge not in KNOWN_EDGES)
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} of {len(ALL_EDGES)} edges of the table no end-to-end test drives:"
            + "".join(f"\n  {edge}" for edge in missing)
        )
    if unknown:
        problems.append(
            "the stores counted edges the table does not have:"
            + "".join(f"\n  {edge} ({edges.DRIVEN[edge]}x)" for edge in unknown)
        )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
