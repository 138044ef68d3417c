import sys

from spinrec.client.cli import main

sys.exit(main())
