"""`python -m pyflannel` runs the daemon, like the `flanneld` console script."""

from pyflannel.daemon import main

raise SystemExit(main())
