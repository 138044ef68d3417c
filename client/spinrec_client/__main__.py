import sys

from spinrec_client.cli import main

sys.exit(main())
