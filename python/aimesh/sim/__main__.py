"""``python -m aimesh.sim``: run the upstream simulator."""

from aimesh.sim.app import main

raise SystemExit(main())
