"""Run the longest test files first (the unit suite and the harness smoke tests).

With ``--dist loadfile`` (pyproject.toml) pytest-xdist hands whole files to its two
workers in collection order; a long file collected last leaves one worker idle while
the other finishes it. The order comes from ``pytest --durations=0`` at load 10
(2026-12-02); two fresh CI runs with it took 746 s and 791 s for the unit suite, so its gain
is within the run-to-run noise: re-profile on a quiet machine before relying on it.
"""

LONGEST_FIRST = [
    # tests/
    "test_fast_path.py", "test_resets.py", "test_loop.py", "test_grads.py", "test_unroll.py",
    "test_parallel.py", "test_diagonal_rtrl.py", "test_snap.py", "test_zoneout.py",
    "test_reliability.py", "test_kf_rtrl.py", "test_train.py",
    # experiments/ and benchmarks/ (the harness smoke tests of .ci/run)
    "test_marschall_add.py", "test_regularisation.py", "test_bptt_variants.py",
    "test_cost_scripts.py", "test_zucchet_copy.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept
