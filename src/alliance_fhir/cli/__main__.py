"""``python -m alliance_fhir.cli``: the same command as the ``alliance-fhir`` script."""

from alliance_fhir.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
