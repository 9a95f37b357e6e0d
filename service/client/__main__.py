"""`python -m service.client`: see `service.client.cli`."""

from service.client.cli import main

raise SystemExit(main())
