from whatsapp_operator.cli import main

raise SystemExit(main())
