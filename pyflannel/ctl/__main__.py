"""`python -m pyflannel.ctl`: the flannelctl console script, as a module."""

from pyflannel.ctl import main

if __name__ == "__main__":
    raise SystemExit(main())
