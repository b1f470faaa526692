"""The mutation check (benchmarks/mutants.py) stays in step with the code it breaks. Not among the
tests the mutation check runs: in a mutated copy this test fails by construction."""


def test_every_mutant_of_the_mutation_check_applies_to_the_current_code():
    """benchmarks/mutants.py breaks these formulas on purpose; a mutant whose text no longer occurs once
    would silently test nothing."""
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("mutants", root / "benchmarks" / "mutants.py")
    mutants = sys.modules["mutants"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutants)
    assert len(mutants.MUTANTS) >= 25 and len({m.id for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
    for m in mutants.MUTANTS:
        assert m.apply((root / m.path).read_text()) != (root / m.path).read_text()
