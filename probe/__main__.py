"""`python -m probe` is `milvus-probe`."""

from probe.cli import main

raise SystemExit(main())
