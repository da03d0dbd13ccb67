from flexiai.cli import main

raise SystemExit(main())
