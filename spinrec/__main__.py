from spinrec.cli import main

raise SystemExit(main())
